//! authgate behind ingress-nginx: a real nginx runs `tests/peers/ingress-nginx/server.conf`,
//! the server blocks ingress-nginx v1.15.1's template generates for
//! `deploy/ingress-nginx/ingress.yaml`, in front of an upstream that records what it served.
//! The auth sub-request is the controller's (`/ingress-auth`, `X-Original-URL` built from the
//! client's raw Host, the client's other headers passed through), and so is the handling of
//! authgate's answers: 2xx passes, 401 and 403 reach the client, everything else is a 500 —
//! except on `api-statuses.example.org`, the opt-in variant whose snippets carry authgate's
//! 400/429/431/503 through.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const CONF: &str = "tests/peers/ingress-nginx/server.conf";

const SECTIONS: &str = r#"
cache: { max_ttl: 2s, negative_ttl: 1s }
server: { listen: "127.0.0.1:0", trusted_proxies: ["127.0.0.1/32"], max_header_bytes: 4096 }
providers:
  - { type: api_token }
  - { type: basic, max_failures: 3, failure_window: 1m }
  - { type: jwt, issuer: "https://idp.test", jwks_uri: "http://127.0.0.1:9/jwks", audiences: [api], timeout: 1s }
policy:
  default: allow_authenticated
  rules:
    - { name: health, path: /healthz, allow: anonymous }
    - { name: admin, path: /admin, require: { roles: [admin] } }
"#;

/// authgate, the recording upstream and nginx running the ingress-nginx server blocks, with
/// a token of bob (role staff, no admin) and bob's password.
struct Site {
    authgate: Authgate,
    echo: Echo,
    nginx: Nginx,
    token: String,
    _dir: tempfile::TempDir,
}

async fn site() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECTIONS);
    add_user(&config, &["bob", "--roles", "staff"], "bob-password");
    let token = create_token(&config, &["--user", "bob"]);
    let authgate = Authgate::start(&config);
    let echo = Echo::start().await;
    let nginx = Nginx::start(dir.path(), CONF, authgate.data, echo.addr);
    Site {
        authgate,
        echo,
        nginx,
        token,
        _dir: dir,
    }
}

impl Site {
    /// Sends `request_line` and `headers` raw to nginx (Host api.example.org unless given);
    /// (status, head, body).
    async fn raw(&self, request_line: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
        let mut request = format!("{request_line}\r\n");
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            request.push_str("Host: api.example.org\r\n");
        }
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("Connection: close\r\n\r\n");
        raw_request(self.nginx.addr, request.as_bytes()).await
    }

    /// Sends the request with a fresh `X-Request-ID` (ingress-nginx passes the client's on
    /// to the auth service as `$req_id`) and asserts that the client got `status`, that
    /// authgate itself answered `authgate_status` and that the upstream never saw it.
    async fn refused(
        &self,
        request_line: &str,
        headers: &[(&str, &str)],
        status: u16,
        authgate_status: u16,
    ) -> String {
        let id = format!("ingress-test-{}", rand_suffix());
        let mut all = headers.to_vec();
        all.push(("X-Request-ID", &id));
        let before = self.echo.served_count();
        let (got, head, body) = self.raw(request_line, &all).await;
        assert_eq!(got, status, "{request_line} {headers:?}\n{head}\n{body}");
        assert_eq!(
            self.echo.served_count(),
            before,
            "{request_line} {headers:?} reached the upstream"
        );
        assert_eq!(
            self.decision_status(&id).await,
            Some(authgate_status),
            "authgate's own answer to {request_line} {headers:?}"
        );
        head
    }

    /// The status authgate logged for the decision with request id `id`.
    async fn decision_status(&self, id: &str) -> Option<u16> {
        let mut found = None;
        eventually(Duration::from_secs(5), async || {
            found = self
                .authgate
                .log_text()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| v["message"] == "decision" && v["request_id"] == id)
                .and_then(|v| v["status"].as_u64())
                .map(|s| s as u16);
            found.is_some()
        })
        .await;
        found
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A valid token passes; the upstream gets authgate's JWT and identity headers in place of
/// the client's, and none of the raw credential headers (listed in auth-response-headers,
/// absent from authgate's answer, so nginx sets them to "" and drops them).
#[tokio::test(flavor = "multi_thread")]
async fn valid_token_passes_with_authgates_identity_only() {
    let s = site().await;
    let bearer = format!("Bearer {}", s.token);
    let forged = [
        ("X-Auth-Request-User", "admin"),
        ("X-Auth-Request-Email", "admin@example.org"),
        ("X-Auth-Request-Roles", "admin"),
        ("X-Auth-Request-Scopes", "admin:all"),
        ("X-Auth-Request-Attributes", r#"{"dept":"admin"}"#),
        ("X-Auth-Request-Groups", "admin"),
        ("X-Auth-Request-Preferred-Username", "admin"),
    ];
    let mut headers = vec![("Authorization", bearer.as_str())];
    headers.extend_from_slice(&forged);
    let (status, head, body) = s.raw("GET /profile?x=1 HTTP/1.1", &headers).await;
    assert_eq!(status, 200, "{head}\n{body}");
    assert_eq!(
        s.echo.last_served(),
        Some(("GET".to_owned(), "/profile?x=1".to_owned()))
    );
    let seen: Value = serde_json::from_str(&body).unwrap();
    let jwt = seen["authorization"][0]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .expect("a Bearer JWT upstream");
    let claims = verify_jwt(&s.authgate, jwt, "api").await;
    assert_eq!(claims["username"], "bob");
    assert_eq!(claims["roles"], serde_json::json!(["staff"]));
    assert_eq!(seen["authorization"].as_array().unwrap().len(), 1);
    assert_eq!(seen["x-auth-request-user"], serde_json::json!(["bob"]));
    assert_eq!(seen["x-auth-request-roles"], serde_json::json!(["staff"]));
    // bob has no email: authgate sends the header empty, nginx drops it (and the client's).
    assert!(seen.get("x-auth-request-email").is_none(), "{seen}");
    // No attributes, and no oauth2-proxy names in the default mode: none of the client's.
    for gone in [
        "x-auth-request-attributes",
        "x-auth-request-groups",
        "x-auth-request-preferred-username",
    ] {
        assert!(seen.get(gone).is_none(), "{gone}: {seen}");
    }
    assert_ne!(
        seen["x-auth-request-scopes"],
        serde_json::json!(["admin:all"])
    );

    // Every credential form authgate accepts stays at the edge.
    for name in ["X-Auth-Token", "X-Storage-Token"] {
        let (status, head, body) = s
            .raw(
                "GET /profile HTTP/1.1",
                &[(name, &s.token), ("X-Service-Token", "agt_not-a-real-one")],
            )
            .await;
        assert_eq!(status, 200, "{name}\n{head}\n{body}");
        let seen: Value = serde_json::from_str(&body).unwrap();
        for gone in ["x-auth-token", "x-storage-token", "x-service-token"] {
            assert!(
                seen.get(gone).is_none(),
                "{name}: {gone} reached the upstream"
            );
        }
        assert!(
            seen["authorization"][0]
                .as_str()
                .unwrap()
                .starts_with("Bearer ey")
        );
    }
}

/// No credential: authgate's 401 (with WWW-Authenticate) reaches the client; a valid
/// identity the policy refuses: 403.
#[tokio::test(flavor = "multi_thread")]
async fn no_credential_is_401_and_a_refused_identity_403() {
    let s = site().await;
    let head = s.refused("GET /profile HTTP/1.1", &[], 401, 401).await;
    assert!(
        head.to_ascii_lowercase().contains("www-authenticate: "),
        "{head}"
    );
    let bearer = format!("Bearer {}", s.token);
    s.refused(
        "GET /admin/users HTTP/1.1",
        &[("Authorization", &bearer)],
        403,
        403,
    )
    .await;
    // The anonymous route passes without a credential.
    let (status, _, _) = s.raw("GET /healthz HTTP/1.1", &[]).await;
    assert_eq!(status, 200);
}

/// ingress-nginx passes every client header into the auth call and sets X-Original-URI
/// only with auth-method: the client's own X-Original-URI reaches authgate, which refuses
/// it (400) when it disagrees with X-Original-URL. The controller turns that 400 into 500.
#[tokio::test(flavor = "multi_thread")]
async fn client_original_uri_is_refused() {
    let s = site().await;
    let bearer = format!("Bearer {}", s.token);
    s.refused(
        "GET /admin HTTP/1.1",
        &[("X-Original-URI", "/healthz")],
        500,
        400,
    )
    .await;
    s.refused(
        "GET /admin HTTP/1.1",
        &[("X-Original-URI", "/healthz"), ("Authorization", &bearer)],
        500,
        400,
    )
    .await;
    // So are the other families' headers, which the controller does not blank.
    s.refused(
        "GET /admin HTTP/1.1",
        &[
            ("X-Forwarded-Uri", "/healthz"),
            ("X-Forwarded-Method", "GET"),
        ],
        500,
        400,
    )
    .await;
}

/// The controller builds X-Original-URL from the client's raw Host ($http_host): nginx
/// routes `api.example.org:1@www.example.org` to api.example.org, and authgate refuses the
/// userinfo (400, a 500 at the client), on a protected and on an anonymous route.
#[tokio::test(flavor = "multi_thread")]
async fn userinfo_in_host_is_refused() {
    let s = site().await;
    let bearer = format!("Bearer {}", s.token);
    let host = ("Host", "api.example.org:1@www.example.org");
    s.refused("GET /admin/users HTTP/1.1", &[host], 500, 400)
        .await;
    s.refused(
        "GET /admin/users HTTP/1.1",
        &[host, ("Authorization", &bearer)],
        500,
        400,
    )
    .await;
    s.refused("GET /healthz HTTP/1.1", &[host], 500, 400).await;
}

/// X-Original-URL carries the raw $request_uri: dot segments reach authgate unresolved and
/// are refused, never judged as the anonymous /healthz.
#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_are_refused() {
    let s = site().await;
    let bearer = format!("Bearer {}", s.token);
    for target in [
        "/healthz/../admin",
        "/healthz/%2e%2e/admin",
        "/healthz/..;/admin",
    ] {
        let line = format!("GET {target} HTTP/1.1");
        s.refused(&line, &[], 500, 400).await;
        s.refused(&line, &[("Authorization", &bearer)], 500, 400)
            .await;
    }
}

/// What the stock template does with authgate's other statuses: nginx's auth_request makes
/// every status but 2xx/401/403 a 500, and the controller has no error_page for it (only
/// custom-http-errors, which sends the 500 to the default backend, or a snippet). The
/// client never sees the 400, 429 (nor its Retry-After) or 431 authgate meant.
#[tokio::test(flavor = "multi_thread")]
async fn other_statuses_become_500() {
    let s = site().await;
    // 400: a method override naming another method.
    s.refused(
        "GET /profile HTTP/1.1",
        &[("X-HTTP-Method-Override", "DELETE")],
        500,
        400,
    )
    .await;
    // 431: headers over authgate's max_header_bytes (4096), well under nginx's own limits.
    let filler = "f".repeat(1000);
    let big: Vec<(String, String)> = (0..5)
        .map(|i| (format!("X-Filler-{i}"), filler.clone()))
        .collect();
    let big: Vec<(&str, &str)> = big.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    s.refused("GET /profile HTTP/1.1", &big, 500, 431).await;
    // 429: too many failed passwords for bob; the 401s pass, the 429 is a 500.
    // (Each guess differs: a repeated one would be answered from the negative cache.)
    let wrong = |i: usize| {
        let pair = format!("bob:guess-{i}");
        format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair)
        )
    };
    for i in 0..3 {
        s.refused(
            "GET /profile HTTP/1.1",
            &[("Authorization", &wrong(i))],
            401,
            401,
        )
        .await;
    }
    let head = s
        .refused(
            "GET /profile HTTP/1.1",
            &[("Authorization", &wrong(3))],
            500,
            429,
        )
        .await;
    assert!(!head.to_ascii_lowercase().contains("retry-after"), "{head}");
    // 503: the IdP's key set cannot be fetched, so a JWT from it cannot be checked. A 500
    // at the client: it fails closed.
    let jwt = format!(
        "Bearer {}.{}.c2ln",
        base64url(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#),
        base64url(br#"{"iss":"https://idp.test","sub":"x","aud":"api","exp":4102444800}"#)
    );
    s.refused(
        "GET /profile HTTP/1.1",
        &[("Authorization", &jwt)],
        500,
        503,
    )
    .await;
}

/// The opt-in variant (Ingress `api-statuses`, host api-statuses.example.org: `api` plus a
/// configuration-snippet and a server-snippet, rendered where the v1.15.1 template puts
/// them): authgate's 400, 429 (with Retry-After), 431 and 503 reach the client as such, 401
/// and 403 as before, a valid token still passes with authgate's identity, and the app's
/// own 500 is the app's, not rewritten.
#[tokio::test(flavor = "multi_thread")]
async fn snippets_carry_authgates_statuses_through() {
    let s = site().await;
    let host = ("Host", "api-statuses.example.org");
    let json = |head: &str| {
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
    };

    // A valid token: 200, with authgate's JWT and identity headers upstream.
    let bearer = format!("Bearer {}", s.token);
    let (status, head, body) = s
        .raw(
            "GET /profile HTTP/1.1",
            &[
                host,
                ("Authorization", &bearer),
                ("X-Auth-Request-User", "admin"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{head}\n{body}");
    let seen: Value = serde_json::from_str(&body).unwrap();
    let jwt = seen["authorization"][0]
        .as_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .expect("a Bearer JWT upstream");
    assert_eq!(verify_jwt(&s.authgate, jwt, "api").await["username"], "bob");
    assert_eq!(seen["x-auth-request-user"], serde_json::json!(["bob"]));
    assert_eq!(seen["x-auth-request-roles"], serde_json::json!(["staff"]));
    assert_eq!(
        seen["x-auth-request-status"],
        serde_json::json!(["authenticated"])
    );

    // 401 (with WWW-Authenticate) and 403 are untouched.
    let head = s.refused("GET /profile HTTP/1.1", &[host], 401, 401).await;
    assert!(
        head.to_ascii_lowercase().contains("www-authenticate: "),
        "{head}"
    );
    s.refused(
        "GET /admin/users HTTP/1.1",
        &[host, ("Authorization", &bearer)],
        403,
        403,
    )
    .await;

    // 400: a dot-segment target, and userinfo in Host (routed to the same server block).
    json(
        &s.refused("GET /healthz/../admin HTTP/1.1", &[host], 400, 400)
            .await,
    );
    s.refused(
        "GET /healthz/%2e%2e/admin HTTP/1.1",
        &[host, ("Authorization", &bearer)],
        400,
        400,
    )
    .await;
    let userinfo = ("Host", "api-statuses.example.org:1@www.example.org");
    json(
        &s.refused("GET /healthz HTTP/1.1", &[userinfo], 400, 400)
            .await,
    );

    // 431: headers over authgate's max_header_bytes (4096), well under nginx's own limits.
    let filler = "f".repeat(1000);
    let big: Vec<(String, String)> = (0..5)
        .map(|i| (format!("X-Filler-{i}"), filler.clone()))
        .collect();
    let mut headers: Vec<(&str, &str)> =
        big.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    headers.push(host);
    json(&s.refused("GET /profile HTTP/1.1", &headers, 431, 431).await);

    // 503: the IdP's key set (a closed port) cannot be fetched.
    let jwt = format!(
        "Bearer {}.{}.c2ln",
        base64url(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#),
        base64url(br#"{"iss":"https://idp.test","sub":"x","aud":"api","exp":4102444800}"#)
    );
    json(
        &s.refused(
            "GET /profile HTTP/1.1",
            &[host, ("Authorization", &jwt)],
            503,
            503,
        )
        .await,
    );

    // 429 with authgate's Retry-After: distinct wrong passwords beyond max_failures (3).
    let wrong = |i: usize| {
        let pair = format!("bob:guess-{i}");
        format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair)
        )
    };
    for i in 0..3 {
        s.refused(
            "GET /profile HTTP/1.1",
            &[host, ("Authorization", &wrong(i))],
            401,
            401,
        )
        .await;
    }
    for i in 3..5 {
        let head = s
            .refused(
                "GET /profile HTTP/1.1",
                &[host, ("Authorization", &wrong(i))],
                429,
                429,
            )
            .await;
        json(&head);
        let retry = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("retry-after").then(|| v.trim())
            })
            .unwrap_or_else(|| panic!("429 without Retry-After\n{head}"));
        assert!(
            retry.parse::<u64>().is_ok_and(|secs| secs > 0),
            "Retry-After {retry:?}"
        );
    }

    // The stock server block of the same nginx still turns them into 500.
    s.refused("GET /healthz/../admin HTTP/1.1", &[], 500, 400)
        .await;

    // The app's own 500 passes as the app sent it (no proxy_intercept_errors): the same
    // configuration in front of an app that always fails.
    let app = failing_app().await;
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path(), CONF, s.authgate.data, app);
    let request = format!(
        "GET /profile HTTP/1.1\r\nHost: api-statuses.example.org\r\n\
         Authorization: {bearer}\r\nConnection: close\r\n\r\n"
    );
    let (status, head, body) = raw_request(nginx.addr, request.as_bytes()).await;
    assert_eq!(status, 500, "{head}\n{body}");
    assert_eq!(body, APP_FAILURE, "{head}");
    assert!(head.contains("X-App: failing"), "{head}");
}

const APP_FAILURE: &str = "the app's own failure\n";

/// An upstream that answers every request with its own 500.
async fn failing_app() -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut chunk = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&chunk[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n\
                     X-App: failing\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{APP_FAILURE}",
                    APP_FAILURE.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

fn base64url(bytes: &[u8]) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, bytes)
}

/// With auth-signin, the controller redirects EVERY 401, an API client's included (hence
/// an Ingress without it for API hosts); 403 still passes as 403.
#[tokio::test(flavor = "multi_thread")]
async fn auth_signin_redirects_every_401() {
    let s = site().await;
    let www = ("Host", "www.example.org");
    let head = s
        .refused(
            "GET /reports?q=1 HTTP/1.1",
            &[www, ("Accept", "application/json")],
            302,
            401,
        )
        .await;
    assert!(
        head.contains(
            "Location: https://auth.example.org/oauth2/start?rd=http://www.example.org/reports?q=1"
        ),
        "{head}"
    );
    let bearer = format!("Bearer {}", s.token);
    s.refused(
        "GET /admin HTTP/1.1",
        &[www, ("Authorization", &bearer)],
        403,
        403,
    )
    .await;
}
