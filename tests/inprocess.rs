//! The decision path without sockets: `App` built from inline YAML and driven through
//! `App::handle` with `http` requests, as nginx's `auth_request` would send them.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use authgate::config::Config;
use authgate::secret::{generate_api_token, random_id, sha256};
use authgate::server::App;
use authgate::store::TokenRecord;
use authgate::telemetry::AccessLog;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use jsonwebtoken::jwk::JwkSet;
use serde_json::Value;

/// The identity headers of an answer: present (empty when anonymous) on every 200.
const IDENTITY: [&str; 5] = [
    "authorization",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-roles",
    "x-auth-request-scopes",
];

/// The proxy's address: inside `trusted_proxies`, so its forwarded headers are read.
fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

/// An app with an embedded store in `dir` and a small policy.
async fn app(dir: &std::path::Path) -> Arc<App> {
    let yaml = format!(
        r#"
store: {{ type: embedded, path: "{}" }}
server: {{ listen: "127.0.0.1:0", trusted_proxies: ["127.0.0.1/32"] }}
admin: {{ listen: "127.0.0.1:0" }}
mint: {{ issuer: "https://authgate.test", audience: api }}
providers: [ {{ type: api_token }} ]
policy:
  default: deny
  rules:
    - {{ name: health, path: /healthz, allow: anonymous }}
    - {{ name: data-read, path: /data, methods: [GET], require: {{ scopes: ["read:data"] }} }}
    - {{ name: data-write, path: /data, methods: [POST], require: {{ scopes: ["write:data"] }} }}
"#,
        dir.join("authgate.db").display()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    App::build(&config.server_settings(), AccessLog::disabled())
        .await
        .unwrap()
}

/// A token for `owner` with `scopes`, stored as `authgate token create` stores it; the
/// secret.
async fn create_token(app: &App, owner: &str, scopes: &[&str]) -> String {
    let secret = generate_api_token().unwrap();
    let now = authgate::unix_now();
    let record = TokenRecord {
        id: random_id("tok_").unwrap(),
        hash: sha256(secret.expose().as_bytes()),
        owner: owner.to_owned(),
        name: "inprocess".to_owned(),
        roles: Default::default(),
        attributes: Default::default(),
        scopes: Some(scopes.iter().copied().collect()),
        created_at: now,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    };
    app.store.insert_token(&record).await.unwrap();
    secret.expose().to_owned()
}

/// nginx's sub-request for `method uri`, with `token` as a Bearer credential.
fn auth_request(method: &str, uri: &str, token: Option<&str>) -> Request<Empty<Bytes>> {
    let mut req = Request::get("/auth")
        .header("host", "api.example.org")
        .header("x-original-method", method)
        .header("x-original-uri", uri);
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    req.body(Empty::new()).unwrap()
}

async fn json_body(resp: Response<Full<Bytes>>) -> Value {
    assert_eq!(resp.headers()["content-type"], "application/json");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

fn header<'a>(resp: &'a Response<Full<Bytes>>, name: &str) -> &'a str {
    resp.headers()[name].to_str().unwrap()
}

/// A valid token: 200 with a JWT that verifies against the app's own JWKS and the identity
/// headers of the token's owner.
#[tokio::test]
async fn valid_token_gets_a_jwt_that_verifies_against_the_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let token = create_token(&app, "alice", &["read:data"]).await;

    let resp = app
        .clone()
        .handle(auth_request("GET", "/data/items", Some(&token)), peer())
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let authorization = header(&resp, "authorization");
    assert!(authorization.starts_with("Bearer ey"), "{authorization}");
    assert_eq!(header(&resp, "x-auth-request-user"), "alice");
    assert_eq!(header(&resp, "x-auth-request-scopes"), "read:data");
    assert_eq!(header(&resp, "x-auth-request-status"), "authenticated");
    let jwt = authorization.strip_prefix("Bearer ").unwrap().to_owned();

    let jwks = app
        .clone()
        .handle(
            Request::get("/.well-known/jwks.json")
                .body(Empty::<Bytes>::new())
                .unwrap(),
            peer(),
        )
        .await;
    assert_eq!(jwks.status(), StatusCode::OK);
    let jwks = json_body(jwks).await;
    assert!(
        jwks["keys"].as_array().is_some_and(|k| !k.is_empty()),
        "{jwks}"
    );
    let jwks: JwkSet = serde_json::from_value(jwks).unwrap();
    let claims = common::verify_with(&jwks, &jwt, "api");
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["provider"], "api_token");
    assert_eq!(claims["scope"], "read:data");
}

/// No credential: 401 with a challenge.
#[tokio::test]
async fn no_credential_is_401_with_www_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let resp = app
        .clone()
        .handle(auth_request("GET", "/data", None), peer())
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        header(&resp, "www-authenticate"),
        "Bearer realm=\"authgate\""
    );
    assert!(resp.headers().get("authorization").is_none());
}

/// A valid token without the rule's scope: 403 naming the rule.
#[tokio::test]
async fn wrong_scope_is_403_naming_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let token = create_token(&app, "alice", &["read:data"]).await;
    let resp = app
        .clone()
        .handle(auth_request("POST", "/data", Some(&token)), peer())
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(resp.headers().get("authorization").is_none());
    let body = json_body(resp).await;
    assert_eq!(body["rule"], "data-write", "{body}");
}

/// Malformed sub-requests: 400 with a JSON reason, whatever the credential.
#[tokio::test]
async fn dot_segments_and_a_missing_method_are_400() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let token = create_token(&app, "alice", &["read:data"]).await;

    let resp = app
        .clone()
        .handle(auth_request("GET", "/data/../admin", Some(&token)), peer())
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get("authorization").is_none());
    let body = json_body(resp).await;
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );

    let no_method = Request::get("/auth")
        .header("host", "api.example.org")
        .header("x-original-uri", "/data")
        .header("authorization", format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = app.clone().handle(no_method, peer()).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let body = json_body(resp).await;
    assert!(
        body["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}

/// An anonymous route: 200 with every identity header present and empty, so that a proxy
/// copying the answer's headers overwrites whatever the client sent.
#[tokio::test]
async fn anonymous_route_gets_every_identity_header_empty() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let resp = app
        .clone()
        .handle(auth_request("GET", "/healthz", Some("forged")), peer())
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    for name in IDENTITY {
        assert_eq!(header(&resp, name), "", "{name}");
    }
    assert_eq!(header(&resp, "x-auth-request-status"), "anonymous");
}

/// `App::handle` takes any body type: a `Full` body on a decision request is ignored.
#[tokio::test]
async fn a_full_body_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let token = create_token(&app, "bob", &["read:data"]).await;
    let req = Request::get("/auth")
        .header("host", "api.example.org")
        .header("x-original-method", "GET")
        .header("x-original-uri", "/data")
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from_static(b"ignored")))
        .unwrap();
    let resp = app.clone().handle(req, peer()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-auth-request-user"), "bob");
}

/// On a `headers: keystone` route a 401 carries keystonemiddleware's error document and
/// `WWW-Authenticate: Keystone uri=...`; other routes keep authgate's own body.
#[tokio::test]
async fn keystone_routes_answer_401_as_keystonemiddleware() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
store: {{ type: embedded, path: "{}" }}
server: {{ listen: "127.0.0.1:0", trusted_proxies: ["127.0.0.1/32"] }}
admin: {{ listen: "127.0.0.1:0" }}
mint: {{ issuer: "https://authgate.test", audience: api }}
providers:
  - {{ type: api_token }}
  - {{ type: keystone, auth_url: "http://127.0.0.1:9/v3", username: gateway, password: x,
      www_authenticate_uri: "https://keystone.example.org/v3" }}
policy:
  default: allow_authenticated
  rules:
    - {{ name: compute, path: /compute, headers: keystone }}
"#,
        dir.path().join("authgate.db").display()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let app = App::build(&config.server_settings(), AccessLog::disabled())
        .await
        .unwrap();
    for token in [None, Some("agt_not_a_stored_token_at_all_0000000000000000")] {
        let resp = app
            .clone()
            .handle(auth_request("GET", "/compute/servers", token), peer())
            .await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(
            header(&resp, "www-authenticate"),
            "Bearer realm=\"authgate\", Keystone uri=\"https://keystone.example.org/v3\""
        );
        assert_eq!(header(&resp, "content-type"), "application/json");
        assert_eq!(
            json_body(resp).await,
            serde_json::json!({"error": {"code": 401, "title": "Unauthorized",
                "message": "The request you have made requires authentication."}}),
            "{token:?}"
        );
    }
    let resp = app
        .clone()
        .handle(auth_request("GET", "/elsewhere", None), peer())
        .await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        json_body(resp).await,
        serde_json::json!({"error": "unauthorized", "reason": "no credential was presented"})
    );
}
