//! Sub-requests sent straight to authgate exactly as Traefik's ForwardAuth and Envoy's
//! ext_authz (HTTP service) build them, the client's own headers included where the proxy
//! passes them on. Each test names the proxy source it reproduces.

mod common;

use common::*;
use reqwest::Response;

const SECTIONS: &str = r#"
providers:
  - { type: api_token }
policy:
  default: allow_authenticated
  rules:
    - { name: health, path: /healthz, allow: anonymous }
    - { name: admin, path: /admin, require: { roles: [admin] } }
"#;

/// Every header a 2xx must carry for proxies that copy back only what the answer holds.
const IDENTITY: [&str; 6] = [
    "authorization",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-roles",
    "x-auth-request-scopes",
    "x-auth-request-attributes",
];

struct Setup {
    authgate: Authgate,
    token: String,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), SECTIONS);
    add_user(&config, &["bob", "--roles", "staff"], "bob-password");
    let token = create_token(&config, &["--user", "bob"]);
    let authgate = Authgate::start(&config);
    Setup {
        authgate,
        token,
        _dir: dir,
    }
}

/// The ForwardAuth request of traefik/traefik pkg/middlewares/auth/forward.go (default:
/// trustForwardHeader unset, so `oldWriteHeader`): a GET to the auth address carrying
/// every client header (minus hop-by-hop ones and those named in Connection), with
/// X-Forwarded-For/-Proto/-Method/-Host/-Uri set by Traefik, and X-Forwarded-Port/-Server
/// and X-Real-Ip that the entrypoint's forwardedheaders middleware added before.
/// `drop` names a Traefik header left out; `client` are the client's headers.
async fn traefik(
    authgate: &Authgate,
    method: &str,
    uri: &str,
    client: &[(&str, &str)],
    drop: Option<&str>,
) -> Response {
    let mut req = reqwest::Client::new()
        .get(authgate.url("/forward-auth"))
        .header("Host", authgate.data.to_string())
        .header("User-Agent", "curl/8.5.0")
        .header("Accept", "*/*");
    for (k, v) in client {
        req = req.header(*k, *v);
    }
    for (k, v) in [
        ("X-Forwarded-For", "127.0.0.1"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Method", method),
        ("X-Forwarded-Host", "api.example.org"),
        ("X-Forwarded-Uri", uri),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Server", "traefik-7d9f"),
        ("X-Real-Ip", "127.0.0.1"),
    ] {
        if Some(k) != drop {
            req = req.header(k, v);
        }
    }
    req.send().await.unwrap()
}

/// The check request of envoyproxy/envoy
/// source/extensions/filters/common/ext_authz/ext_authz_http_impl.cc
/// (`RawHttpClientImpl::check`, `ClientConfig::toRequestMatchers`): the original method,
/// `:path` = path_prefix (`/auth`) + the original path, `:authority` (Host), Authorization,
/// `content-length: 0`, and only the client headers that `allowed_headers` lists.
async fn envoy(
    authgate: &Authgate,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    allowed: &[(&str, &str)],
) -> Response {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new()
        .request(method, authgate.url(&format!("/auth{path}")))
        .header("Host", "api.example.org")
        .header("Content-Length", "0");
    if let Some(a) = authorization {
        req = req.header("Authorization", a);
    }
    for (k, v) in allowed {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn assert_identity_headers_empty(resp: &Response) {
    for name in IDENTITY {
        let values: Vec<_> = resp.headers().get_all(name).iter().collect();
        assert_eq!(values.len(), 1, "{name} must be present once: {resp:?}");
        assert_eq!(values[0], "", "{name} must be empty: {resp:?}");
    }
    // The explicit marker: no identity because the route is anonymous.
    assert_eq!(resp.headers()["x-auth-request-status"], "anonymous");
}

/// forward.go copies the client's headers into the auth request (`utils.CopyHeaders`
/// before Traefik sets its own), so a client's X-Original-URI reaches authgate next to the
/// X-Forwarded-* family: 400, never a decision on /healthz.
#[tokio::test(flavor = "multi_thread")]
async fn traefik_passes_the_clients_original_uri_and_gets_400() {
    let s = setup();
    let bearer = format!("Bearer {}", s.token);
    let resp = traefik(
        &s.authgate,
        "GET",
        "/admin",
        &[("X-Original-URI", "/healthz")],
        None,
    )
    .await;
    assert_eq!(resp.status(), 400);
    let resp = traefik(
        &s.authgate,
        "DELETE",
        "/admin",
        &[
            ("X-Original-URI", "/healthz"),
            ("X-Original-Method", "GET"),
            ("Authorization", &bearer),
        ],
        None,
    )
    .await;
    assert_eq!(resp.status(), 400);
    // The same request without the client's extra header is judged: bob is no admin.
    let resp = traefik(
        &s.authgate,
        "DELETE",
        "/admin",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(resp.status(), 403);
}

/// CVE-2024-45410 (fixed in Traefik 2.11.9 / 3.1.3): a client naming X-Forwarded-* headers
/// in `Connection` could make Traefik drop them (today's forward.go calls
/// `RemoveConnectionHeaders` before setting its own). A sub-request lacking one of the
/// family's headers is 400, never a fallback to the sub-request's own GET or Host.
#[tokio::test(flavor = "multi_thread")]
async fn traefik_without_its_method_header_gets_400() {
    let s = setup();
    let bearer = format!("Bearer {}", s.token);
    for drop in [
        "X-Forwarded-Method",
        "X-Forwarded-Host",
        "X-Forwarded-Uri",
        "X-Forwarded-Proto",
    ] {
        let resp = traefik(
            &s.authgate,
            "DELETE",
            "/profile",
            &[("Authorization", &bearer)],
            Some(drop),
        )
        .await;
        assert_eq!(resp.status(), 400, "without {drop}");
    }
    let resp = traefik(
        &s.authgate,
        "DELETE",
        "/profile",
        &[("Authorization", &bearer)],
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
}

/// forward.go copies back only `authResponseHeaders` that the answer holds
/// (`utils.CopyHeaders` of the listed names), so an anonymous 200 must carry every identity
/// header, empty, or the client's own X-Auth-Request-Roles would reach the app.
#[tokio::test(flavor = "multi_thread")]
async fn traefik_anonymous_route_gets_every_identity_header_empty() {
    let s = setup();
    let resp = traefik(
        &s.authgate,
        "GET",
        "/healthz",
        &[
            ("X-Auth-Request-Roles", "admin"),
            ("X-Auth-Request-User", "root"),
        ],
        None,
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_identity_headers_empty(&resp);
}

/// ext_authz_http_impl.cc sends only Authorization, :method, :path and :authority unless
/// `authorization_request.allowed_headers` lists more: a client's X-Auth-Token never
/// reaches authgate, so /auth/admin is a 401 (Envoy passes the 401 on to the client).
#[tokio::test(flavor = "multi_thread")]
async fn envoy_without_allowed_headers_gets_401() {
    let s = setup();
    let resp = envoy(&s.authgate, "GET", "/admin", None, &[]).await;
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    // With allowed_headers listing x-auth-token, the same client is judged: no admin.
    let resp = envoy(
        &s.authgate,
        "GET",
        "/admin",
        None,
        &[("x-auth-token", &s.token)],
    )
    .await;
    assert_eq!(resp.status(), 403);
}

/// ext_authz_http_impl.cc (`toResponse`): on a 200 only, the comma-separated names in
/// `x-envoy-auth-headers-to-remove` are removed from the upstream request, and the header
/// itself is dropped. authgate names every raw credential header there; the JWT replaces
/// Authorization through allowed_upstream_headers.
#[tokio::test(flavor = "multi_thread")]
async fn envoy_200_names_the_raw_credentials_to_remove() {
    let s = setup();
    let bearer = format!("Bearer {}", s.token);
    let resp = envoy(&s.authgate, "POST", "/profile?x=1", Some(&bearer), &[]).await;
    assert_eq!(resp.status(), 200);
    let remove: Vec<String> = resp.headers()["x-envoy-auth-headers-to-remove"]
        .to_str()
        .unwrap()
        .split(',')
        .map(|n| n.trim().to_owned())
        .collect();
    for name in ["x-auth-token", "x-storage-token", "x-service-token"] {
        assert!(remove.iter().any(|n| n == name), "{name} not in {remove:?}");
    }
    let jwt = bearer_jwt(&resp);
    let claims = verify_jwt(&s.authgate, &jwt, "api").await;
    assert_eq!(claims["username"], "bob");
    assert_eq!(resp.headers()["x-auth-request-user"], "bob");
    assert_eq!(resp.headers()["x-auth-request-status"], "authenticated");
    for name in IDENTITY {
        assert!(resp.headers().contains_key(name), "{name} missing");
    }
}

/// An anonymous route through Envoy: 200 with every identity header present and empty
/// (allowed_upstream_headers overwrites only what the answer holds), and the client's
/// Authorization among the headers to remove, since no JWT replaces it.
#[tokio::test(flavor = "multi_thread")]
async fn envoy_anonymous_route_gets_every_identity_header_empty() {
    let s = setup();
    let resp = envoy(&s.authgate, "GET", "/healthz", Some("Bearer forged"), &[]).await;
    assert_eq!(resp.status(), 200);
    assert_identity_headers_empty(&resp);
    let remove = resp.headers()["x-envoy-auth-headers-to-remove"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        remove.split(',').any(|n| n.trim() == "authorization"),
        "{remove}"
    );
}
