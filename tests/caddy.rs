//! End to end through a real Caddy (`deploy/caddy/Caddyfile`, forward_auth to authgate's
//! `/forward-auth`) in front of an upstream that echoes the headers it received.

mod common;

use common::caddy::Caddy;
use common::*;
use serde_json::Value;

const SECTIONS: &str = r#"
cache: { max_ttl: 2s, negative_ttl: 1s }
policy:
  default: deny
  rules:
    - { name: health, path: /healthz, allow: anonymous }
    - { name: data-read, path: /data, methods: [GET], require: { scopes: ["read:data"] } }
    - { name: admin, path: /admin, require: { roles: [admin] }, audience: admin-api }
"#;

/// The identity headers authgate answers on a 2xx and the Caddyfile copies upstream.
const IDENTITY: [&str; 6] = [
    "authorization",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-roles",
    "x-auth-request-scopes",
    "x-auth-request-attributes",
];

/// The headers the upstream received, after checking that none of them carries a Caddy
/// placeholder left unreplaced (`{http.reverse_proxy.header.<Name>}`) or an empty identity
/// header.
async fn upstream_headers(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    for (name, values) in seen.as_object().unwrap() {
        let text = values.to_string();
        assert!(
            !text.contains("{http."),
            "placeholder text upstream: {name}: {text}"
        );
        if IDENTITY.contains(&name.as_str()) {
            assert!(
                values.as_array().unwrap().iter().all(|v| v != ""),
                "empty {name} upstream"
            );
        }
    }
    seen
}

fn header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo[name].as_array().and_then(|a| {
        assert_eq!(a.len(), 1, "{name} sent {} times: {a:?}", a.len());
        a[0].as_str()
    })
}

/// The minted JWT the upstream received.
fn upstream_jwt(seen: &Value) -> &str {
    header(seen, "authorization")
        .expect("upstream got Authorization")
        .strip_prefix("Bearer ")
        .expect("a Bearer JWT")
}

/// A client that sends `Host: api.example.org:<port>` to Caddy.
fn site_client(caddy: &Caddy) -> reqwest::Client {
    reqwest::Client::builder()
        .resolve("api.example.org", caddy.addr)
        .build()
        .unwrap()
}

fn site_url(caddy: &Caddy, path: &str) -> String {
    format!("http://api.example.org:{}{path}", caddy.addr.port())
}

#[tokio::test(flavor = "multi_thread")]
async fn caddy_forward_auth_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECTIONS);
    add_user(
        &config,
        &[
            "alice",
            "--roles",
            "staff,admin",
            "--email",
            "alice@example.org",
        ],
        "alice-password",
    );
    let token = create_token(
        &config,
        &[
            "--user",
            "alice",
            "--scopes",
            "read:data",
            "--roles",
            "staff",
            "--name",
            "ci",
        ],
    );
    let other_scope = create_token(&config, &["--user", "alice", "--scopes", "write:data"]);
    let bob = create_token(&config, &["--user", "bob", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let echo = Echo::start().await;
    let caddy = Caddy::start(
        dir.path(),
        "deploy/caddy/Caddyfile",
        authgate.data,
        echo.addr,
    );
    let http = site_client(&caddy);
    let url = |path: &str| site_url(&caddy, path);

    // A valid token: 200 at the client; the upstream sees a JWT that verifies, and
    // authgate's identity headers instead of the ones the client sent.
    let resp = http
        .get(url("/data/items?x=1"))
        .bearer_auth(&token)
        .header("X-Auth-Request-User", "mallory")
        .header("X-Auth-Request-Roles", "admin")
        .header("X-Auth-Request-Email", "mallory@example.org")
        .send()
        .await
        .unwrap();
    let seen = upstream_headers(resp).await;
    assert_eq!(seen[":path"], "/data/items?x=1");
    let jwt = upstream_jwt(&seen);
    assert!(!jwt.contains("agt_"));
    let claims = verify_jwt(&authgate, jwt, "api").await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["username"], "alice");
    assert_eq!(claims["scope"], "read:data");
    assert_eq!(header(&seen, "x-auth-request-user"), Some("alice"));
    // A scoped token holds the roles named at its creation, not all of alice's.
    assert_eq!(header(&seen, "x-auth-request-roles"), Some("staff"));
    assert_eq!(header(&seen, "x-auth-request-scopes"), Some("read:data"));
    assert_eq!(
        header(&seen, "x-auth-request-status"),
        Some("authenticated")
    );
    assert_eq!(
        header(&seen, "x-auth-request-email"),
        Some("alice@example.org")
    );

    // The raw credential headers reach authgate (which accepts the token from them) but
    // never the upstream.
    for name in ["X-Auth-Token", "X-Storage-Token"] {
        let resp = http
            .get(url("/data"))
            .header(name, &token)
            .send()
            .await
            .unwrap();
        let seen = upstream_headers(resp).await;
        assert!(
            seen.get(name.to_ascii_lowercase()).is_none(),
            "{name}: {seen}"
        );
        assert_eq!(
            verify_jwt(&authgate, upstream_jwt(&seen), "api").await["sub"],
            "alice"
        );
    }
    let resp = http
        .get(url("/data"))
        .bearer_auth(&token)
        .header("X-Service-Token", &other_scope)
        .send()
        .await
        .unwrap();
    let seen = upstream_headers(resp).await;
    assert!(seen.get("x-service-token").is_none(), "{seen}");

    // A token of a user without email or roles: those headers do not reach the upstream
    // at all (neither empty, nor Caddy's placeholder text, nor the client's value).
    let resp = http
        .get(url("/data"))
        .bearer_auth(&bob)
        .header("X-Auth-Request-Email", "mallory@example.org")
        .send()
        .await
        .unwrap();
    let seen = upstream_headers(resp).await;
    assert_eq!(header(&seen, "x-auth-request-user"), Some("bob"));
    assert!(seen.get("x-auth-request-email").is_none(), "{seen}");
    assert!(seen.get("x-auth-request-roles").is_none(), "{seen}");

    // Basic auth: a user authenticated directly holds all scopes: no scopes header.
    let resp = http
        .get(url("/admin/x"))
        .basic_auth("alice", Some("alice-password"))
        .header("X-Auth-Request-Scopes", "everything")
        .send()
        .await
        .unwrap();
    let seen = upstream_headers(resp).await;
    let claims = verify_jwt(&authgate, upstream_jwt(&seen), "admin-api").await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["provider"], "basic");
    assert!(seen.get("x-auth-request-scopes").is_none(), "{seen}");

    // No credential: authgate's 401 with WWW-Authenticate goes back to the client as is.
    let resp = http.get(url("/data")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenges: Vec<_> = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        challenges,
        vec!["Bearer realm=\"authgate\", Basic realm=\"authgate\", charset=\"UTF-8\"".to_owned()]
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"], "unauthorized",
        "authgate's answer, not the app's"
    );

    // A forged Authorization is judged, never passed on.
    let resp = http
        .get(url("/data"))
        .header(
            "Authorization",
            "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Wrong scope: 403. Unknown route: 403 (default deny). Not an admin: 403.
    for (path, credential) in [
        ("/data", &other_scope),
        ("/elsewhere", &token),
        ("/admin", &bob),
    ] {
        let resp = http
            .get(url(path))
            .bearer_auth(credential)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "{path}");
    }

    // The client's own X-Forwarded-Uri/-Method/-Host are overwritten by Caddy, also when
    // the client names them in Connection to have them dropped (CVE-2024-45410 in Traefik).
    let resp = http
        .get(url("/admin"))
        .header("X-Forwarded-Uri", "/healthz")
        .header("X-Forwarded-Method", "GET")
        .header("X-Forwarded-Host", "other.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let request = "GET /admin HTTP/1.1\r\nHost: api.example.org\r\n\
                   Connection: close, X-Forwarded-Uri, X-Forwarded-Method, X-Forwarded-Host\r\n\r\n";
    assert_eq!(raw_request(caddy.addr, request.as_bytes()).await.0, 401);
    // A path that climbs out of /data is judged where it lands. bob may read /data but is
    // no admin.
    for path in ["/data/../admin", "/data/%2e%2e/admin", "/%64ata/../admin"] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: api.example.org\r\nAuthorization: Bearer {bob}\r\nConnection: close\r\n\r\n"
        );
        let (status, _, body) = raw_request(caddy.addr, request.as_bytes()).await;
        assert!(status == 403 || status == 400, "{path}: {status} {body}");
    }

    // on /forward-auth authgate reads only the
    // X-Forwarded-* family; the Caddyfile removes the client's nginx-family headers before
    // forward_auth, and authgate would answer 400 if they reached it. Either way: never 200.
    for (name, value) in [
        ("X-Original-URI", "/healthz"),
        ("X-Original-URL", "http://api.example.org/healthz"),
        ("X-Original-Method", "GET"),
    ] {
        let resp = http
            .get(url("/admin"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert!(status == 400 || status == 401, "{name}: {status}");
    }
    let request = "GET /admin HTTP/1.1\r\nHost: api.example.org\r\nX-Original-URI: /healthz\r\n\
                   X-Original-Method: GET\r\nConnection: close\r\n\r\n";
    let (status, _, body) = raw_request(caddy.addr, request.as_bytes()).await;
    assert!(status == 400 || status == 401, "{status} {body}");

    // An anonymous route passes, and nothing the client sent as identity or credential
    // reaches the upstream (authgate answers the identity headers empty, which the
    // Caddyfile removes), but authgate's explicit anonymous marker does.
    let resp = http
        .get(url("/healthz"))
        .header("Authorization", "Bearer forged")
        .header("X-Auth-Request-User", "mallory")
        .header("X-Auth-Request-Roles", "admin")
        .header("X-Auth-Request-Status", "authenticated")
        .header("X-Auth-Request-Attributes", r#"{"dept":"admin"}"#)
        .header("X-Auth-Request-Groups", "admin")
        .header("X-Auth-Request-Preferred-Username", "mallory")
        .header("X-Auth-Token", "forged")
        .send()
        .await
        .unwrap();
    let seen = upstream_headers(resp).await;
    for name in IDENTITY.iter().chain(&[
        "x-auth-token",
        "x-auth-request-groups",
        "x-auth-request-preferred-username",
    ]) {
        assert!(seen.get(*name).is_none(), "{name}: {seen}");
    }
    assert_eq!(header(&seen, "x-auth-request-status"), Some("anonymous"));

    // Any other Host: Caddy's catch-all answers 421; neither authgate nor the app is asked.
    for host in ["other.example.org", "127.0.0.1", "api.example.org.evil"] {
        let request = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let (status, _, body) = raw_request(caddy.addr, request.as_bytes()).await;
        assert_eq!(status, 421, "{host}: {body}");
        assert!(!body.contains(":path"), "{host} reached the app: {body}");
    }
    let resp = reqwest::get(caddy.url("/healthz")).await.unwrap();
    assert_eq!(resp.status(), 421);

    // No secret ever reaches the logs.
    let logs = authgate.stop_and_log_text().await;
    for secret in [&token, &other_scope, &bob, "alice-password", jwt] {
        assert!(!logs.contains(secret), "a secret is in the logs");
    }
}

/// authgate asked directly the way Caddy asks (`GET /forward-auth` with
/// X-Forwarded-Method/-Uri/-Host/-Proto/-For): the side of the contract the Caddyfile relies
/// on. One test per rule, so that each fails on its own.
struct Direct {
    authgate: Authgate,
    bob: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Direct {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), SECTIONS);
        let bob = create_token(&config, &["--user", "bob", "--scopes", "read:data"]);
        Self {
            authgate: Authgate::start(&config),
            bob,
            http: reqwest::Client::new(),
            _dir: dir,
        }
    }

    /// The sub-request Caddy sends for `GET <uri>` on api.example.org, without `skip`.
    fn ask(&self, uri: &str, skip: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .get(self.authgate.url("/forward-auth"))
            .header("Host", "api.example.org");
        for (name, value) in [
            ("X-Forwarded-Method", "GET"),
            ("X-Forwarded-Uri", uri),
            ("X-Forwarded-Host", "api.example.org"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-For", "192.0.2.7"),
        ] {
            if Some(name) != skip {
                request = request.header(name, value);
            }
        }
        request
    }
}

// Caddy overwrites only the headers the answer
// carries (2.6-2.8 set placeholder text for the others, 2.9.0-2.11.1 keep the client's), so
// every 2xx carries all five, empty where there is no value, on an anonymous route too.
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_2xx_carries_every_identity_header() {
    let d = Direct::start();
    let resp = d
        .ask("/data", None)
        .bearer_auth(&d.bob)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for name in IDENTITY {
        assert!(resp.headers().contains_key(name), "2xx without {name}");
    }
    assert_eq!(resp.headers()["x-auth-request-user"], "bob");
    assert_eq!(resp.headers()["x-auth-request-email"], "");
    assert_eq!(resp.headers()["x-auth-request-roles"], "");
    let resp = d.ask("/healthz", None).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    for name in IDENTITY {
        assert!(
            resp.headers().contains_key(name),
            "anonymous 2xx without {name}"
        );
        assert_eq!(resp.headers()[name], "", "anonymous {name}");
    }
    assert_eq!(resp.headers()["x-auth-request-status"], "anonymous");
}

// a header of the nginx family on /forward-auth is
// 400, never a way to have another path or method judged.
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_refuses_the_nginx_family() {
    let d = Direct::start();
    for (name, value) in [
        ("X-Original-URI", "/healthz"),
        ("X-Original-URL", "https://api.example.org/healthz"),
        ("X-Original-Method", "GET"),
    ] {
        let resp = d
            .ask("/admin", None)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{name}");
        // Also where the family headers agree with it: the mix itself is refused.
        let resp = d
            .ask("/healthz", None)
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{name} on /healthz");
    }
}

// each of the four family headers is required; a
// missing one is 400, never a fallback to the sub-request's own method or Host.
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_requires_every_family_header() {
    let d = Direct::start();
    assert_eq!(d.ask("/healthz", None).send().await.unwrap().status(), 200);
    for missing in [
        "X-Forwarded-Method",
        "X-Forwarded-Uri",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
    ] {
        let resp = d.ask("/healthz", Some(missing)).send().await.unwrap();
        assert_eq!(resp.status(), 400, "without {missing}");
    }
}

/// Request headers whose name holds '_' that reached the upstream.
fn underscored_names(seen: &Value) -> Vec<&str> {
    seen.as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .filter(|name| name.contains('_'))
        .collect()
}

// WSGI, CGI and PHP read `X_Auth_Request_Roles` as X-Auth-Request-Roles, which the
// Caddyfile's `-X-Auth-Request-*` does not match: the client's '_' spellings must never
// reach the app. Caddy removes them before forward_auth (authgate would answer 400), so the
// request goes on cleaned, and a valid request still passes.
#[tokio::test(flavor = "multi_thread")]
async fn caddy_removes_underscore_spellings_of_identity_headers() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECTIONS);
    let bob = create_token(&config, &["--user", "bob", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let echo = Echo::start().await;
    let caddy = Caddy::start(
        dir.path(),
        "deploy/caddy/Caddyfile",
        authgate.data,
        echo.addr,
    );
    let http = site_client(&caddy);
    let url = |path: &str| site_url(&caddy, path);
    let forged = [
        ("X_Auth_Request_Roles", "admin"),
        ("X_Auth_Request_User", "root"),
        ("X_Auth_Request_Email", "root@example.org"),
        ("X-Auth_Request-Scopes", "everything"),
        ("X-Auth-Request_Status", "authenticated"),
        ("X_Auth_Token", "forged"),
        ("X_Forwarded_Uri", "/healthz"),
    ];

    // An anonymous route: authgate answers the identity headers empty and the Caddyfile
    // deletes them, so a '_' copy would be all the app has.
    let mut request = http.get(url("/healthz"));
    for (name, value) in forged {
        request = request.header(name, value);
    }
    let seen = upstream_headers(request.send().await.unwrap()).await;
    assert_eq!(underscored_names(&seen), Vec::<&str>::new(), "{seen}");
    for name in IDENTITY {
        assert!(seen.get(name).is_none(), "{name}: {seen}");
    }
    assert_eq!(header(&seen, "x-auth-request-status"), Some("anonymous"));

    // A valid token passes, with authgate's identity and none of the client's.
    let mut request = http.get(url("/data")).bearer_auth(&bob);
    for (name, value) in forged {
        request = request.header(name, value);
    }
    let seen = upstream_headers(request.send().await.unwrap()).await;
    assert_eq!(underscored_names(&seen), Vec::<&str>::new(), "{seen}");
    assert_eq!(header(&seen, "x-auth-request-user"), Some("bob"));
    assert!(seen.get("x-auth-request-roles").is_none(), "{seen}");
    assert_eq!(
        verify_jwt(&authgate, upstream_jwt(&seen), "api").await["sub"],
        "bob"
    );

    // Upper case, as sent on the wire (hyper would lower-case the names).
    let request = "GET /healthz HTTP/1.1\r\nHost: api.example.org\r\nX_AUTH_REQUEST_ROLES: admin\r\n\
                   x_auth_request_user: root\r\nConnection: close\r\n\r\n";
    let (status, _, body) = raw_request(caddy.addr, request.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(underscored_names(&seen), Vec::<&str>::new(), "{seen}");

    // bob is no admin, whatever he spells.
    let resp = http
        .get(url("/admin"))
        .bearer_auth(&bob)
        .header("X_Auth_Request_Roles", "admin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

// the other side: a '_' spelling of a header authgate or the app believes is 400 on
// /forward-auth, naming the header (Traefik and Envoy pass such headers on by default).
#[tokio::test(flavor = "multi_thread")]
async fn forward_auth_refuses_underscore_spellings() {
    let d = Direct::start();
    for name in [
        "X_Auth_Request_Roles",
        "X_Auth_Request_User",
        "X_Auth_Token",
        "X_Forwarded_Uri",
        "X_Roles",
    ] {
        let resp = d
            .ask("/healthz", None)
            .header(name, "admin")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{name}");
        let body: Value = resp.json().await.unwrap();
        let reason = body["reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!(
                "header {} spells a protected header with '_'",
                name.to_ascii_lowercase()
            )),
            "{name}: {reason}"
        );
    }
    // Other '_' headers are not authgate's business.
    let resp = d
        .ask("/healthz", None)
        .header("X_Trace_Id", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
