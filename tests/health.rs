//! `/readyz` and `authgate_provider_up` follow each provider's own outbound calls: an
//! introspection endpoint, a token endpoint or an Astakos that fails makes decisions 503 and
//! `/readyz` 503 naming the provider, and its recovery makes `/readyz` 200 again without a
//! restart.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use common::astakos::{AstakosUser, FakeAstakos};
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

/// A small OpenID provider: discovery, a JWKS, an introspection endpoint that takes every
/// token for an access token but `refresh-*`, and a token endpoint that exchanges refresh
/// tokens for a signed access token. Each endpoint answers with the status set
/// here (200: as a working IdP would).
struct FakeIdp {
    base: String,
    introspect_status: Arc<AtomicU16>,
    token_status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct IdpState {
    base: String,
    key: EncodingKey,
    jwk: Value,
    introspect_status: Arc<AtomicU16>,
    token_status: Arc<AtomicU16>,
}

impl FakeIdp {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let state = Arc::new(IdpState {
            base: base.clone(),
            key: EncodingKey::from_ed_der(pkcs8.as_ref()),
            jwk: json!({"kty": "OKP", "crv": "Ed25519", "kid": "k1", "use": "sig",
                        "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())}),
            introspect_status: Arc::new(AtomicU16::new(200)),
            token_status: Arc::new(AtomicU16::new(200)),
        });
        let (introspect_status, token_status) =
            (state.introspect_status.clone(), state.token_status.clone());
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = state.clone();
                connections.spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&state, req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        Self {
            base,
            introspect_status,
            token_status,
            task,
        }
    }
}

async fn answer(state: &IdpState, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let now = authgate::unix_now();
    let post = req.method() == hyper::Method::POST;
    let path = req.uri().path().to_owned();
    let form = req.into_body().collect().await.unwrap().to_bytes();
    let refresh =
        form_urlencoded::parse(&form).any(|(k, v)| k == "token" && v.starts_with("refresh-"));
    let (status, body) = match path.as_str() {
        "/.well-known/openid-configuration" => (
            200,
            json!({"issuer": state.base, "jwks_uri": format!("{}/jwks", state.base),
                   "introspection_endpoint": format!("{}/introspect", state.base),
                   "token_endpoint": format!("{}/token", state.base)}),
        ),
        "/jwks" => (200, json!({"keys": [state.jwk]})),
        "/introspect" if post => match state.introspect_status.load(Ordering::SeqCst) {
            // A refresh token names no audience: `introspect` hands it on to `offline`.
            200 if refresh => (
                200,
                json!({"active": true, "sub": "bob", "token_type": "refresh_token"}),
            ),
            200 => (
                200,
                json!({"active": true, "sub": "alice", "aud": "api", "exp": now + 300,
                       "token_type": "Bearer", "iss": state.base}),
            ),
            s => (s, json!({"error": "server_error"})),
        },
        "/token" if post => match state.token_status.load(Ordering::SeqCst) {
            200 => {
                let claims = json!({"iss": state.base, "aud": "api", "sub": "bob",
                                    "iat": now, "exp": now + 300});
                let mut header = Header::new(Algorithm::EdDSA);
                header.kid = Some("k1".into());
                let access = jsonwebtoken::encode(&header, &claims, &state.key).unwrap();
                (200, json!({"access_token": access, "token_type": "Bearer"}))
            }
            s => (s, json!({"error": "temporarily_unavailable"})),
        },
        "/introspect" | "/token" => (405, json!({"error": "invalid_request"})),
        _ => (404, json!({})),
    };
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    r.headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    r
}

async fn decide(authgate: &Authgate, header: &str, value: &str) -> u16 {
    reqwest::Client::new()
        .get(authgate.url("/auth"))
        .header("X-Original-URI", "/anything")
        .header("X-Original-Method", "GET")
        .header(header, value)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `/readyz`'s status and body.
async fn readyz(authgate: &Authgate) -> (u16, Value) {
    let r = reqwest::get(authgate.admin_url("/readyz")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn provider_up(authgate: &Authgate, name: &str) -> f64 {
    authgate
        .metric(&format!("authgate_provider_up{{provider=\"{name}\"}}"))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_introspection_and_token_endpoints_are_not_ready_until_they_recover() {
    let idp = FakeIdp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let issuer = &idp.base;
    let authgate = Authgate::start(&write_config(
        dir.path(),
        &format!(
            "cache: {{ max_ttl: 10s, negative_ttl: 1s }}
providers:
  - {{ type: jwt, issuer: \"{issuer}\", audiences: [api] }}
  - {{ type: introspect, issuer: \"{issuer}\", client_id: gw, client_secret: gw-secret, \
       audiences: [api], cache_ttl: 0s }}
  - {{ type: offline, issuer: \"{issuer}\", client_id: app, client_secret: app-secret }}
policy: {{ default: allow_authenticated }}
"
        ),
    ));
    let (introspect, offline) = (format!("introspect {issuer}"), format!("offline {issuer}"));
    let bearer = |t: &str| format!("Bearer {t}");
    assert_eq!(
        decide(&authgate, "Authorization", &bearer("access-1")).await,
        200
    );
    assert_eq!(readyz(&authgate).await.0, 200);
    assert_eq!(provider_up(&authgate, &introspect).await, 1.0);

    // The introspection endpoint fails: decisions 503, /readyz 503 naming it and why.
    idp.introspect_status.store(500, Ordering::SeqCst);
    assert_eq!(
        decide(&authgate, "Authorization", &bearer("access-1")).await,
        503
    );
    let (status, body) = readyz(&authgate).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not ready");
    assert_eq!(
        body["providers"][&introspect],
        "introspection endpoint answered 500"
    );
    assert_eq!(body["providers"][&offline], "ok");
    assert_eq!(body["providers"][format!("jwt {issuer}")], "ok");
    assert_eq!(provider_up(&authgate, &introspect).await, 0.0);

    // Back: the next call succeeds and /readyz is 200 again, without a restart.
    idp.introspect_status.store(200, Ordering::SeqCst);
    assert_eq!(
        decide(&authgate, "Authorization", &bearer("access-1")).await,
        200
    );
    let (status, body) = readyz(&authgate).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["providers"][&introspect], "ok");
    assert_eq!(provider_up(&authgate, &introspect).await, 1.0);

    // The token endpoint fails: a refresh token (handed on to `offline` by introspection)
    // gets 503, and /readyz names `offline`.
    idp.token_status.store(503, Ordering::SeqCst);
    assert_eq!(
        decide(&authgate, "Authorization", &bearer("refresh-1")).await,
        503
    );
    let (status, body) = readyz(&authgate).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["providers"][&offline],
        "token endpoint answered 503 temporarily_unavailable"
    );
    assert_eq!(body["providers"][&introspect], "ok");
    assert_eq!(provider_up(&authgate, &offline).await, 0.0);

    idp.token_status.store(200, Ordering::SeqCst);
    assert_eq!(
        decide(&authgate, "Authorization", &bearer("refresh-1")).await,
        200
    );
    let (status, body) = readyz(&authgate).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(provider_up(&authgate, &offline).await, 1.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn astakos_refusing_connections_is_not_ready_until_it_is_back() {
    let mut astakos = FakeAstakos::start().await;
    let dir = tempfile::tempdir().unwrap();
    let authgate = Authgate::start(&write_config(
        dir.path(),
        &format!(
            "cache: {{ max_ttl: 10s, negative_ttl: 1s }}\n\
             providers:\n  - {{ type: api_token }}\n  - {{ type: astakos, url: \"{}\", \
             timeout: 1s, retries: 0 }}\n\
             policy: {{ default: allow_authenticated }}\n",
            astakos.base_url()
        ),
    ));
    let now = authgate::unix_now();
    let user = |uuid: &str| AstakosUser {
        uuid: uuid.into(),
        name: "N".into(),
        email: "n@example.org".into(),
        groups: vec!["default".into()],
        projects: vec![],
        default_project: "p".into(),
        active: true,
        signed_terms: true,
        token_expires: now + 120,
    };
    astakos.add_token("tok-1", user("u-1"));
    astakos.add_token("tok-2", user("u-2"));
    // Before any call, the cheap probe (an empty POST to the tokens endpoint) answers.
    let (status, body) = readyz(&authgate).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["providers"]["astakos"], "ok");
    assert_eq!(provider_up(&authgate, "astakos").await, 1.0);
    assert_eq!(decide(&authgate, "X-Auth-Token", "tok-1").await, 200);

    astakos.stop().await;
    assert_eq!(decide(&authgate, "X-Auth-Token", "tok-2").await, 503);
    let (status, body) = readyz(&authgate).await;
    assert_eq!(status, 503, "{body}");
    let reason = body["providers"]["astakos"].as_str().unwrap();
    assert!(reason.starts_with("Astakos unreachable"), "{reason}");
    assert_eq!(body["providers"]["api_token"], "ok");
    assert_eq!(provider_up(&authgate, "astakos").await, 0.0);

    astakos.restart().await;
    let back = eventually(Duration::from_secs(10), async || {
        decide(&authgate, "X-Auth-Token", "tok-2").await == 200
    })
    .await;
    assert!(back, "Astakos answers again but decisions still fail");
    let (status, body) = readyz(&authgate).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["providers"]["astakos"], "ok");
    assert_eq!(provider_up(&authgate, "astakos").await, 1.0);
}
