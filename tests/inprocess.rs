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
const IDENTITY: [&str; 6] = [
    "authorization",
    "x-auth-request-user",
    "x-auth-request-email",
    "x-auth-request-roles",
    "x-auth-request-scopes",
    "x-auth-request-attributes",
];

/// What `headers: oauth2-proxy` adds, also on every 200 of such a route.
const OAUTH2_PROXY: [&str; 2] = ["x-auth-request-groups", "x-auth-request-preferred-username"];

/// The proxy's address: inside `trusted_proxies`, so its forwarded headers are read.
fn peer() -> SocketAddr {
    "127.0.0.1:40000".parse().unwrap()
}

/// An app with an embedded store in `dir` and a small policy.
async fn app(dir: &std::path::Path) -> Arc<App> {
    app_with(dir, "", "").await
}

/// [`app`] with more `server` keys (`, key: value`) and more top-level sections.
async fn app_with(dir: &std::path::Path, server: &str, sections: &str) -> Arc<App> {
    let yaml = format!(
        r#"
store: {{ type: embedded, path: "{}" }}
server: {{ listen: "127.0.0.1:0", trusted_proxies: ["127.0.0.1/32"]{server} }}
admin: {{ listen: "127.0.0.1:0" }}
mint: {{ issuer: "https://authgate.test", audience: api }}
providers: [ {{ type: api_token }} ]
policy:
  default: deny
  rules:
    - {{ name: health, path: /healthz, allow: anonymous }}
    - {{ name: data-read, path: /data, methods: [GET], require: {{ scopes: ["read:data"] }} }}
    - {{ name: data-write, path: /data, methods: [POST], require: {{ scopes: ["write:data"] }} }}
    - {{ name: legacy, path: /legacy, headers: oauth2-proxy }}
{sections}
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

/// The metadata documents: `jwks_uri` under `server.public_url` (backends on another host
/// fetch the keys there), no `authorization_endpoint` without a sign-in URL (never an
/// invented one), and the fields strict clients require, at both well-known paths.
#[tokio::test]
async fn discovery_points_jwks_uri_at_the_public_url() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(
        dir.path(),
        r#", public_url: "http://authgate.internal:8080""#,
        "",
    )
    .await;
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let resp = app
            .clone()
            .handle(
                Request::get(path).body(Empty::<Bytes>::new()).unwrap(),
                peer(),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&resp, "cache-control"), "public, max-age=3600");
        assert_eq!(
            json_body(resp).await,
            serde_json::json!({
                "issuer": "https://authgate.test",
                "jwks_uri": "http://authgate.internal:8080/.well-known/jwks.json",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
            }),
            "{path}"
        );
    }
    // Only those two: RFC 8414's path-inserted form of another issuer is not authgate's.
    let resp = app
        .clone()
        .handle(
            Request::get("/.well-known/oauth-authorization-server/x")
                .body(Empty::<Bytes>::new())
                .unwrap(),
            peer(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

/// `headers: oauth2-proxy` (here on one rule): the oauth2-proxy names beside authgate's
/// own, `-Groups` the encoded roles and `-Preferred-Username` the user; every one present
/// and empty on an anonymous answer of that mode; absent from routes of the default mode.
#[tokio::test]
async fn oauth2_proxy_mode_adds_groups_and_preferred_username() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_with(
        dir.path(),
        "",
        "    - { name: legacy-open, path: /open, allow: anonymous, headers: oauth2-proxy }",
    )
    .await;
    let secret = generate_api_token().unwrap();
    let now = authgate::unix_now();
    let record = TokenRecord {
        id: random_id("tok_").unwrap(),
        hash: sha256(secret.expose().as_bytes()),
        owner: "svc-report".to_owned(),
        name: "inprocess".to_owned(),
        roles: ["viewer,admin", "reporting"].into_iter().collect(),
        attributes: [(
            "team".to_owned(),
            authgate::identity::AttributeValue::One("d\u{e9}v".to_owned()),
        )]
        .into_iter()
        .collect(),
        scopes: Some(["read:data"].into_iter().collect()),
        created_at: now,
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    };
    app.store.insert_token(&record).await.unwrap();
    let token = secret.expose();

    let resp = app
        .clone()
        .handle(auth_request("GET", "/legacy/x", Some(token)), peer())
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-auth-request-user"), "svc-report");
    assert_eq!(
        header(&resp, "x-auth-request-preferred-username"),
        "svc-report"
    );
    assert_eq!(
        header(&resp, "x-auth-request-roles"),
        "reporting,viewer%2Cadmin"
    );
    assert_eq!(
        header(&resp, "x-auth-request-groups"),
        "reporting,viewer%2Cadmin"
    );
    assert_eq!(
        header(&resp, "x-auth-request-attributes"),
        r#"{"team":"d\u00e9v"}"#
    );
    assert_eq!(header(&resp, "x-auth-request-scopes"), "read:data");

    // The default mode: authgate's names only.
    let resp = app
        .clone()
        .handle(auth_request("GET", "/data", Some(token)), peer())
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "x-auth-request-attributes"),
        r#"{"team":"d\u00e9v"}"#
    );
    for name in OAUTH2_PROXY {
        assert!(resp.headers().get(name).is_none(), "{name}");
    }

    // Anonymous in oauth2-proxy mode: every header of both sets, empty.
    let resp = app
        .clone()
        .handle(auth_request("GET", "/open", Some("forged")), peer())
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    for name in IDENTITY.iter().chain(&OAUTH2_PROXY) {
        assert_eq!(header(&resp, name), "", "{name}");
    }
    assert_eq!(header(&resp, "x-auth-request-status"), "anonymous");
}

/// With the JWT in another header than Authorization, the client's Authorization is not
/// replaced, so Envoy is told to remove it too (found in review: it reached the upstream).
#[tokio::test]
async fn envoy_removes_authorization_when_the_jwt_travels_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"
store: {{ type: embedded, path: "{}" }}
server: {{ listen: "127.0.0.1:0" }}
admin: {{ listen: "127.0.0.1:0" }}
mint: {{ issuer: "https://authgate.test", audience: api, header: X-Jwt, header_prefix: "" }}
providers: [ {{ type: api_token }} ]
policy: {{ default: allow_authenticated }}
"#,
        dir.path().join("authgate.db").display()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let app = App::build(&config.server_settings(), AccessLog::disabled())
        .await
        .unwrap();
    let token = create_token(&app, "alice", &["read:data"]).await;
    let resp = app
        .clone()
        .handle(auth_request("GET", "/data", Some(&token)), peer())
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(header(&resp, "x-jwt").starts_with("ey"));
    assert_eq!(
        header(&resp, "x-envoy-auth-headers-to-remove"),
        "authorization, x-auth-token, x-storage-token, x-service-token"
    );
}
