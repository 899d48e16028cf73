//! End to end through a real nginx (`deploy/nginx/authgate.conf`) in front of an upstream
//! that echoes the headers it received.

mod common;

use std::time::Duration;

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

async fn upstream_headers(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

fn header<'a>(echo: &'a Value, name: &str) -> Option<&'a str> {
    echo[name].as_array().and_then(|a| {
        assert_eq!(a.len(), 1, "{name} sent {} times: {a:?}", a.len());
        a[0].as_str()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn nginx_auth_request_end_to_end() {
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
            "--attr",
            "dept=physics",
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
            "--expires",
            "30d",
            "--name",
            "ci",
        ],
    );
    let other_scope = create_token(&config, &["--user", "alice", "--scopes", "write:data"]);
    let bob = create_token(&config, &["--user", "bob", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let echo = Echo::start().await;
    let nginx = Nginx::start(
        dir.path(),
        "deploy/nginx/authgate.conf",
        authgate.data,
        echo.addr,
    );
    let http = nginx.client();

    // A valid token: 200 at the client; the upstream sees a JWT that verifies, with the
    // claims of alice and of the token.
    let before = authgate_now();
    let resp = http
        .get(nginx.url("/data/items?x=1"))
        .bearer_auth(&token)
        .header("X-Auth-Request-User", "mallory")
        .header("X-Auth-Request-Roles", "admin")
        .header("X-Auth-Request-Attributes", r#"{"dept":"admin"}"#)
        .header("X-Auth-Request-Groups", "admin")
        .header("X-Auth-Request-Preferred-Username", "mallory")
        .send()
        .await
        .unwrap();
    let echo_seen = upstream_headers(resp).await;
    assert_eq!(echo_seen[":path"], "/data/items?x=1");
    // authgate's attributes; the oauth2-proxy names (not answered in the default mode)
    // removed, never the client's.
    assert_eq!(
        header(&echo_seen, "x-auth-request-attributes"),
        Some(r#"{"dept":"physics"}"#)
    );
    assert_eq!(header(&echo_seen, "x-auth-request-groups"), None);
    assert_eq!(
        header(&echo_seen, "x-auth-request-preferred-username"),
        None
    );
    let authz = header(&echo_seen, "authorization").expect("upstream got Authorization");
    let jwt = authz.strip_prefix("Bearer ").expect("Bearer JWT");
    assert!(!jwt.contains("agt_"));
    let claims = verify_jwt(&authgate, jwt, "api").await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["username"], "alice");
    assert_eq!(claims["email"], "alice@example.org");
    // A scoped token holds the roles named at its creation, not all of alice's.
    assert_eq!(claims["roles"], serde_json::json!(["staff"]));
    // The RFC 9068 profile (the default): `typ: at+jwt`, `scope`, `client_id`.
    assert_eq!(
        jsonwebtoken::decode_header(jwt).unwrap().typ.as_deref(),
        Some("at+jwt")
    );
    assert_eq!(claims["scope"], "read:data");
    assert!(claims.get("scope_all").is_none(), "{claims}");
    assert!(claims["token_id"].as_str().unwrap().starts_with("tok_"));
    assert_eq!(
        claims["client_id"], claims["token_id"],
        "the API token is the client"
    );
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["attributes"], serde_json::json!({"dept": "physics"}));
    assert_eq!(claims["aud"], "api");
    assert_eq!(claims["iss"], "https://authgate.test");
    assert_eq!(claims["provider"], "api_token");
    let exp = claims["exp"].as_i64().unwrap();
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(exp - iat, 300, "default lifetime");
    assert_eq!(claims["nbf"].as_i64().unwrap(), iat - 30, "mint.nbf_skew");
    assert!(iat >= before - 1 && iat <= authgate_now() + 1);
    // Client-sent identity headers never reach the upstream as sent.
    assert_eq!(header(&echo_seen, "x-auth-request-user"), Some("alice"));
    assert_eq!(header(&echo_seen, "x-auth-request-roles"), Some("staff"));
    assert_eq!(
        header(&echo_seen, "x-auth-request-status"),
        Some("authenticated")
    );
    assert_eq!(
        header(&echo_seen, "x-auth-request-scopes"),
        Some("read:data")
    );
    assert_eq!(
        header(&echo_seen, "x-auth-request-email"),
        Some("alice@example.org")
    );

    // The same token as X-Auth-Token: the raw token does not reach the upstream.
    let resp = http
        .get(nginx.url("/data"))
        .header("X-Auth-Token", &token)
        .send()
        .await
        .unwrap();
    let seen = upstream_headers(resp).await;
    assert!(seen.get("x-auth-token").is_none(), "{seen}");
    assert!(
        header(&seen, "authorization")
            .unwrap()
            .starts_with("Bearer ey")
    );

    // Basic auth: a user authenticated directly holds all scopes, said by `scope_all`.
    let resp = http
        .get(nginx.url("/data"))
        .basic_auth("alice", Some("alice-password"))
        .send()
        .await
        .unwrap();
    let seen = upstream_headers(resp).await;
    let claims = verify_jwt(
        &authgate,
        header(&seen, "authorization")
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap(),
        "api",
    )
    .await;
    assert_eq!(claims["provider"], "basic");
    assert_eq!(claims["scope_all"], true, "{claims}");
    assert_eq!(claims["scope"], "");
    assert_eq!(claims["client_id"], "authgate");
    assert!(seen.get("x-auth-request-scopes").is_none(), "{seen}");

    // Per-rule audience.
    let resp = http
        .get(nginx.url("/admin/x"))
        .basic_auth("alice", Some("alice-password"))
        .send()
        .await
        .unwrap();
    let seen = upstream_headers(resp).await;
    let claims = verify_jwt(
        &authgate,
        header(&seen, "authorization")
            .unwrap()
            .strip_prefix("Bearer ")
            .unwrap(),
        "admin-api",
    )
    .await;
    assert_eq!(claims["aud"], "admin-api");

    // No credential: 401 with WWW-Authenticate for both schemes, passed on by nginx
    // (which copies only the first such header, hence one field with both challenges).
    let resp = http.get(nginx.url("/data")).send().await.unwrap();
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

    // A client-sent Authorization that is not valid never reaches the upstream.
    let forged = "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.";
    let resp = http
        .get(nginx.url("/data"))
        .header("Authorization", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    // Wrong scope: 403. Unknown route: 403 (default deny).
    let resp = http
        .get(nginx.url("/data"))
        .bearer_auth(&other_scope)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = http
        .get(nginx.url("/elsewhere"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // A path that climbs out of /data is refused (400), never resolved: the upstream gets
    // the raw target and could route it elsewhere. nginx carries authgate's 400 through.
    // (Sent raw: HTTP clients would normalise it themselves.)
    let served = echo.served_count();
    for path in [
        "/data/../admin",
        "/data/%2e%2e/admin",
        "/data//..//admin/x",
        "/%64ata/../admin",
        "/data/x/../y",
    ] {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: api.example.org\r\nAuthorization: Bearer {bob}\r\nConnection: close\r\n\r\n"
        );
        let (status, _, body) = raw_request(nginx.addr, request.as_bytes()).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    assert_eq!(echo.served_count(), served, "the upstream saw none of them");
    let request = format!(
        "GET /%64ata/y HTTP/1.1\r\nHost: api.example.org\r\nAuthorization: Bearer {bob}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_request(nginx.addr, request.as_bytes()).await.0, 200);
    assert_eq!(
        echo.last_served(),
        Some(("GET".to_owned(), "/%64ata/y".to_owned()))
    );

    // Anonymous route: passes, and a client-sent Authorization is removed.
    let resp = http
        .get(nginx.url("/healthz"))
        .header("Authorization", "Bearer forged")
        .header("X-Auth-Request-User", "mallory")
        .header("X-Auth-Request-Status", "authenticated")
        .send()
        .await
        .unwrap();
    let seen = upstream_headers(resp).await;
    assert!(seen.get("authorization").is_none(), "{seen}");
    assert!(seen.get("x-auth-request-user").is_none(), "{seen}");
    assert_eq!(header(&seen, "x-auth-request-status"), Some("anonymous"));

    // Expired token: 200 while it lives, 401 once its expiry passes. Created here, right
    // before use, so that its life is not spent on the steps above (expiry is stored in
    // whole seconds: `5s` lives at least 4 s).
    let short = create_token(
        &config,
        &[
            "--user",
            "alice",
            "--scopes",
            "read:data",
            "--expires",
            "5s",
        ],
    );
    let short_status = async || {
        http.get(nginx.url("/data"))
            .bearer_auth(&short)
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(short_status().await, 200);
    let expired = eventually(Duration::from_secs(15), async || {
        short_status().await == 401
    })
    .await;
    assert!(expired, "a 5 s token is still accepted after 15 s");

    // Revoked by the CLI while the server runs: 401 within the cache TTL (2 s here).
    let list = authgate.cli(&["token", "list", "--user", "alice", "--json"], None);
    let tokens: Value = serde_json::from_slice(&list.stdout).unwrap();
    let id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = authgate.cli(&["token", "revoke", &id], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let revoked_at = std::time::Instant::now();
    let revoked = eventually(Duration::from_secs(10), async || {
        http.get(nginx.url("/data"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
            == 401
    })
    .await;
    assert!(revoked, "revoked token still accepted after 10 s");
    // Time is the behaviour here: the cache entry (2 s) bounds how long a revoked token
    // lives. The margin covers polling and a slow machine.
    assert!(
        revoked_at.elapsed() <= Duration::from_secs(4),
        "took {:?}",
        revoked_at.elapsed()
    );

    // No secret ever reaches the logs.
    let logs = authgate.stop_and_log_text().await;
    assert!(
        logs.contains("\"outcome\":\"allow\""),
        "decision lines are logged"
    );
    for secret in [&token, &other_scope, &short, "alice-password", jwt] {
        assert!(!logs.contains(secret), "a secret is in the logs");
    }
}

/// The example routes authgate's public documents to it without auth_request: a backend
/// fetches the JWKS through nginx and verifies the JWT nginx handed it; the metadata
/// arrives unchanged; the rest of `/.well-known/` stays the app's, behind auth_request.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_routes_the_public_documents_to_authgate() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECTIONS);
    let token = create_token(&config, &["--user", "alice", "--scopes", "read:data"]);
    let authgate = Authgate::start(&config);
    let echo = Echo::start().await;
    let nginx = Nginx::start(
        dir.path(),
        "deploy/nginx/authgate.conf",
        authgate.data,
        echo.addr,
    );
    let http = nginx.client();
    let seen = upstream_headers(
        http.get(nginx.url("/data"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let jwt = header(&seen, "authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .expect("a JWT upstream")
        .to_owned();

    // No credential needed for the keys.
    let resp = http
        .get(nginx.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let jwks: jsonwebtoken::jwk::JwkSet = resp.json().await.unwrap();
    let claims = verify_with(&jwks, &jwt, "api");
    assert_eq!(claims["sub"], "alice");

    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let resp = http.get(nginx.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let through_nginx: Value = resp.json().await.unwrap();
        let direct: Value = reqwest::get(authgate.url(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(through_nginx, direct, "{path}");
        assert_eq!(
            through_nginx["jwks_uri"],
            "https://authgate.test/.well-known/jwks.json"
        );
    }

    // Any other /.well-known/ path is the app's, and needs a credential like the rest.
    let resp = http
        .get(nginx.url("/.well-known/security.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("www-authenticate").is_some());
}

fn authgate_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

const SIGNIN: &str = "https://auth.example.org/oauth2/start";

/// The decoded `rd` of a sign-in URL; the test fails if it holds more than one.
fn rd_of(location: &str) -> Option<String> {
    let query = location.split_once('?')?.1;
    let rds: Vec<&str> = query
        .split('&')
        .filter_map(|p| p.strip_prefix("rd="))
        .collect();
    assert!(rds.len() <= 1, "{location}");
    rds.first().map(|rd| {
        percent_encoding::percent_decode_str(rd)
            .decode_utf8()
            .unwrap()
            .into_owned()
    })
}

/// authgate, an echo upstream and nginx with `deploy/nginx/authgate-browser.conf`, and a
/// client for it that does not follow redirects.
async fn browser_site(
    dir: &std::path::Path,
    server: &str,
) -> (Authgate, Echo, Nginx, reqwest::Client) {
    let sections = format!(
        "{SECTIONS}    - {{ name: api, host: api.example.org, path: /api }}\n\
         server: {{ listen: \"127.0.0.1:0\", trusted_proxies: [\"127.0.0.1/32\"], signin_url: \"{SIGNIN}\"{server} }}\n"
    );
    let config = write_config(dir, &sections);
    let authgate = Authgate::start(&config);
    let echo = Echo::start().await;
    let nginx = Nginx::start(
        dir,
        "deploy/nginx/authgate-browser.conf",
        authgate.data,
        echo.addr,
    );
    let http = reqwest::Client::builder()
        .resolve("api.example.org", nginx.addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    (authgate, echo, nginx, http)
}

/// Browser sign-in through real nginx with the example's @signin block: a browser
/// navigation without a credential gets a 302 to the sign-in page whose rd is the whole
/// original URL (port and query included); API clients and POSTs get the 401 with
/// authgate's challenge; the app is never reached.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_browser_sign_in() {
    let dir = tempfile::tempdir().unwrap();
    // The rules name api.example.org: the default redirect_hosts allow it.
    let (_authgate, echo, nginx, http) = browser_site(dir.path(), "").await;
    let html = "text/html,application/xhtml+xml";
    let original = nginx.url("/data?x=1&y=2");

    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let resp = http
            .request(method.clone(), &original)
            .header("Accept", html)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 302, "{method}");
        let location = resp.headers()["location"].to_str().unwrap();
        assert!(location.starts_with(&format!("{SIGNIN}?rd=")), "{location}");
        assert_eq!(
            rd_of(location).as_deref(),
            Some(original.as_str()),
            "{method}"
        );
        // One rd parameter and nothing after it: `&y=2` stayed inside.
        assert!(!location.contains('&'), "{location}");
    }
    // An API client, and a browser's POST: 401 with authgate's challenge, no Location.
    for (method, accept) in [
        (reqwest::Method::GET, "application/json"),
        (reqwest::Method::GET, "*/*"),
        (reqwest::Method::POST, html),
    ] {
        let resp = http
            .request(method.clone(), &original)
            .header("Accept", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{method} {accept}");
        let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
        assert!(challenge.contains("realm=\"authgate\""), "{challenge}");
        assert!(
            resp.headers().get("location").is_none(),
            "{method} {accept}"
        );
    }
    // A browser with a credential that is not valid is sent to sign in as well.
    let resp = http
        .get(nginx.url("/api/x"))
        .header("Accept", html)
        .bearer_auth("agt_not-a-real-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(
        rd_of(resp.headers()["location"].to_str().unwrap()).as_deref(),
        Some(nginx.url("/api/x").as_str())
    );
    // Anonymous routes are unaffected.
    let resp = http
        .get(nginx.url("/healthz"))
        .header("Accept", html)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(echo.served_count(), 1, "only /healthz reached the app");
}

/// A host that is not in `server.redirect_hosts` never appears in a Location: the browser
/// is sent to the sign-in start without rd.
#[tokio::test(flavor = "multi_thread")]
async fn nginx_sign_in_never_returns_to_an_unlisted_host() {
    let dir = tempfile::tempdir().unwrap();
    let (_authgate, echo, nginx, http) =
        browser_site(dir.path(), ", redirect_hosts: [www.example.org]").await;
    let resp = http
        .get(nginx.url("/data?x=1&y=2"))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["location"], SIGNIN);
    assert_eq!(echo.served_count(), 0);
}

/// `authgate-browser.conf` is `authgate.conf` with the commented sign-in lines enabled:
/// line for line the same, except comments and those lines.
#[test]
fn browser_conf_is_authgate_conf_with_sign_in_enabled() {
    let read = |name: &str| {
        std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("deploy/nginx")
                .join(name),
        )
        .unwrap()
    };
    let plain = read("authgate.conf");
    let browser = read("authgate-browser.conf");
    let is_comment = |l: &str| l.trim_start().starts_with('#');
    let plain: Vec<&str> = plain.lines().collect();
    let browser: Vec<&str> = browser.lines().collect();
    assert_eq!(plain.len(), browser.len());
    let mut enabled = 0;
    for (p, b) in plain.iter().zip(&browser) {
        if p == b || (is_comment(p) && is_comment(b)) {
            continue;
        }
        let indent = p.len() - p.trim_start().len();
        let uncommented = format!("{}{}", &p[..indent], &p[indent..].trim_start_matches("# "));
        assert_eq!(*b, uncommented, "authgate.conf: {p}");
        enabled += 1;
    }
    assert_eq!(enabled, 8, "the two sign-in lines and the @signin location");
}
