//! The data plane: routes `/auth`, `/auth/*`, `/forward-auth` and the well-known documents,
//! runs one decision per sub-request, and maps every outcome to its answer in one place
//! (`respond`). Also owns start-up, the listeners and graceful shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use tokio::net::TcpListener;

mod config;
mod respond;
mod signin;

pub use config::ServerConfig;
use respond::document;
pub use respond::json_response;
use signin::SignIn;

use crate::cache::{Authenticated, DecisionCache, Verdict};
use crate::config::Config;
use crate::credential::{self, CredentialError};
use crate::forward::{Family, ForwardError, OriginalRequest, TrustedProxies};
use crate::metrics::Metrics;
use crate::mint::{KEY_RELOAD_INTERVAL, MintError, Minted, Minter};
use crate::policy::HeaderMode;
use crate::policy::{Decision, Policy, Target};
use crate::providers::{AuthContext, AuthError, Chain};
use crate::store::{self, Store, StoreError};
use crate::telemetry::{AccessLog, DecisionRecord};

/// Response body type of every handler.
pub type Body = Full<Bytes>;

/// How often token last-use times are written to the store.
const LAST_USED_FLUSH_INTERVAL: Duration = Duration::from_secs(5);

/// Why authgate could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The signing keys could not be loaded.
    #[error(transparent)]
    Mint(#[from] MintError),
    /// A file the configuration names cannot be used.
    #[error("{0}")]
    Config(String),
    /// The outbound HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({key}): {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The config key.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// Everything a decision needs, built once at start.
pub struct App {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The minter (also serves the JWKS).
    pub minter: Minter,
    /// Metrics.
    pub metrics: Metrics,
    /// The decision cache.
    pub cache: DecisionCache,
    chain: Chain,
    policy: Policy,
    trusted: TrustedProxies,
    /// All challenges in one field: nginx's auth_request passes only the first
    /// `WWW-Authenticate` header of a sub-request on to the client.
    challenge: Option<HeaderValue>,
    /// The browser sign-in redirect, when `server.signin_url` is set.
    signin: Option<SignIn>,
    /// Whether Envoy's path form redirects browsers too (`server.envoy_redirect`).
    envoy_redirect: bool,
    max_header_bytes: usize,
    jwt_header: HeaderName,
    request_ids: RequestIds,
    access: AccessLog,
    headers: HeaderMode,
    astakos_api: crate::astakos_api::AstakosApiConfig,
    api_tokens: crate::providers::ApiTokenProvider,
}

/// Which decision endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// `/auth`, `/ingress-auth`: never a redirect (nginx turns one into a 500).
    Auth,
    /// `/auth/<path>` (Envoy): a redirect only with `server.envoy_redirect`.
    Envoy,
    /// `/forward-auth`: a browser without a credential is redirected to sign in.
    ForwardAuth,
}

/// The outcome of one decision, before it becomes a response.
enum Outcome {
    Allow {
        authenticated: Arc<Authenticated>,
        minted: Arc<Minted>,
        /// A cache hit: the credential was seen before, so what is built for it is kept.
        repeated: bool,
    },
    AllowAnonymous,
    /// No valid credential, on a route with `delay_auth_decision`: 200, status Invalid.
    IdentityInvalid,
    Reject(Rejection),
}

/// Every way a decision can say no.
#[derive(Debug)]
enum Rejection {
    HeadersTooLarge(usize),
    BadRequest(ForwardError),
    BadCredential(CredentialError),
    NoCredential,
    Invalid(&'static str),
    RateLimited(Duration),
    Forbidden { rule: Arc<str>, missing: String },
    Unavailable(String),
}

impl Rejection {
    /// Whether this is "no valid credential" (what `delay_auth_decision` passes on).
    fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Self::BadCredential(_) | Self::NoCredential | Self::Invalid(_)
        )
    }

    fn label(&self) -> &'static str {
        match self {
            Self::HeadersTooLarge(_) | Self::BadRequest(_) => "bad_request",
            Self::BadCredential(_) | Self::NoCredential | Self::Invalid(_) => "unauthenticated",
            Self::RateLimited(_) => "rate_limited",
            Self::Forbidden { .. } => "deny",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// Cheap unique request ids: a random per-process prefix and a counter.
struct RequestIds {
    prefix: String,
    next: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        // Request ids need not be secret: fall back to the process id if the RNG fails.
        let prefix =
            crate::secret::random_id("").unwrap_or_else(|_| format!("{:x}", std::process::id()));
        Self {
            prefix,
            next: AtomicU64::new(1),
        }
    }

    fn for_request(&self, headers: &http::HeaderMap) -> String {
        if let Some(id) = headers
            .get(&crate::forward::names::X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            && !id.is_empty()
            && id.len() <= 128
        {
            return id.to_owned();
        }
        format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl App {
    /// Opens the store, loads (or creates) the signing keys and builds the providers.
    pub async fn build(config: &Config, access: AccessLog) -> Result<Arc<Self>, StartError> {
        let store = store::open(&config.store)?;
        let api_tokens = crate::providers::ApiTokenProvider::new(store.clone());
        let minter = Minter::new(&config.mint, store.as_ref(), true).await?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| StartError::Http(e.to_string()))?;
        let chain = Chain::build(&config.providers.0, store.clone(), &client)
            .map_err(|e| StartError::Config(e.to_string()))?;
        let challenge =
            HeaderValue::from_str(&chain.challenges(&config.server.realm).join(", ")).ok();
        let policy = config.policy.clone();
        let signin = SignIn::new(&config.server, &policy).map_err(StartError::Config)?;
        Ok(Arc::new(Self {
            store,
            minter,
            metrics: Metrics::new(),
            cache: DecisionCache::new(&config.cache),
            chain,
            policy,
            trusted: TrustedProxies::new(config.server.trusted_proxies.clone()),
            challenge,
            signin,
            envoy_redirect: config.server.envoy_redirect,
            max_header_bytes: config.server.max_header_bytes,
            // Both validated by Config::validate.
            jwt_header: HeaderName::from_bytes(config.mint.header.as_bytes())
                .unwrap_or(header::AUTHORIZATION),
            request_ids: RequestIds::new(),
            access,
            headers: config.headers,
            astakos_api: config.astakos_api.clone(),
            api_tokens,
        }))
    }

    /// The configured providers.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Answers one data-plane request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let path = req.uri().path();
        if path == "/auth" {
            self.decide(req, peer, Endpoint::Auth, Family::Nginx, None)
                .await
        } else if path == "/ingress-auth" {
            self.decide(req, peer, Endpoint::Auth, Family::IngressNginx, None)
                .await
        } else if let Some(suffix) = req
            .uri()
            .path_and_query()
            .and_then(|pq| pq.as_str().strip_prefix("/auth/"))
        {
            let suffix = suffix.to_owned();
            self.decide(req, peer, Endpoint::Envoy, Family::Envoy, Some(&suffix))
                .await
        } else if self.astakos_api.enabled
            && (path == "/identity/v2.0/tokens" || path == "/im/authenticate")
        {
            self.astakos_api(req, peer).await
        } else if path == "/forward-auth" {
            self.decide(req, peer, Endpoint::ForwardAuth, Family::ForwardAuth, None)
                .await
        } else if path == "/.well-known/jwks.json" {
            document(req.method(), self.minter.jwks(), "public, max-age=60")
        } else if path == "/.well-known/openid-configuration" {
            document(
                req.method(),
                self.minter.discovery(),
                "public, max-age=3600",
            )
        } else {
            json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"}))
        }
    }

    async fn decide(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        endpoint: Endpoint,
        family: Family,
        suffix: Option<&str>,
    ) -> Response<Body> {
        let started = Instant::now();
        let (parts, _body) = req.into_parts();
        let request_id = self.request_ids.for_request(&parts.headers);
        let original =
            OriginalRequest::from_parts(&parts, peer.ip(), family, suffix, &self.trusted);
        let mut provider = "none";
        let outcome = match &original {
            Err(e) => Outcome::Reject(Rejection::BadRequest(e.clone())),
            Ok(original) => self.decide_for(&parts, original, &mut provider).await,
        };
        let (mode, delay) = match &original {
            Ok(o) => self.route_options(o),
            Err(_) => (self.headers, false),
        };
        let outcome = match outcome {
            Outcome::Reject(r) if delay && r.is_unauthenticated() => Outcome::IdentityInvalid,
            other => other,
        };
        let (status_label, subject) = match &outcome {
            Outcome::Allow { authenticated, .. } => {
                ("allow", authenticated.identity.subject.as_str())
            }
            Outcome::AllowAnonymous => ("allow_anonymous", ""),
            Outcome::IdentityInvalid => ("identity_invalid", ""),
            Outcome::Reject(r) => (r.label(), ""),
        };
        let response = self.respond(&outcome, endpoint, &parts, original.as_ref().ok(), mode);
        let elapsed = started.elapsed();
        self.metrics
            .decision(status_label, provider, elapsed.as_secs_f64());
        let (method, host, path) = match &original {
            Ok(o) => (o.method.as_str(), o.host.as_str(), o.path.as_str()),
            Err(_) => (parts.method.as_str(), "", ""),
        };
        self.access.record(&DecisionRecord {
            request_id: &request_id,
            method,
            host,
            path,
            outcome: status_label,
            status: response.status().as_u16(),
            provider,
            subject,
            latency_us: elapsed.as_micros() as u64,
        });
        response
    }

    async fn decide_for(
        &self,
        parts: &http::request::Parts,
        original: &OriginalRequest,
        provider: &mut &'static str,
    ) -> Outcome {
        let header_bytes: usize = parts
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > self.max_header_bytes {
            return Outcome::Reject(Rejection::HeadersTooLarge(header_bytes));
        }
        let target = Target {
            method: &original.method,
            host: &original.host,
            path: &original.path,
        };
        if self.policy.is_anonymous(&target).is_some() {
            return Outcome::AllowAnonymous;
        }
        let from_query = || match (&original.query, self.chain.takes_query_token()) {
            (Some(q), true) => credential::from_query(q),
            _ => Ok(None),
        };
        let credential = match credential::extract(&parts.headers) {
            Ok(Some(c)) => c,
            Ok(None) => match from_query() {
                Ok(Some(c)) => c,
                Ok(None) => return Outcome::Reject(Rejection::NoCredential),
                Err(e) => return Outcome::Reject(Rejection::BadCredential(e)),
            },
            Err(e) => return Outcome::Reject(Rejection::BadCredential(e)),
        };
        let service_token = match credential::service_token(&parts.headers) {
            Ok(t) => t,
            Err(e) => return Outcome::Reject(Rejection::BadCredential(e)),
        };
        let key = match &service_token {
            None => credential.cache_key(),
            // A composite answer depends on both tokens.
            Some(s) => {
                let mut both = credential.cache_key().to_vec();
                both.extend_from_slice(&crate::secret::sha256(s.expose().as_bytes()));
                crate::secret::sha256(&both)
            }
        };
        let ctx = AuthContext {
            client_ip: original.client_ip,
            service_token,
        };
        let looked_up = self
            .cache
            .get_or_authenticate(key, self.chain.authenticate(&credential, &ctx))
            .await;
        // Who answered: the identity says so; otherwise the provider asked first (looked up
        // only off the hot path).
        let first_asked = || {
            self.chain
                .provider_for(&credential)
                .map_or("none", |p| p.kind())
        };
        let (authenticated, hit) = match looked_up {
            Ok((verdict, hit)) => {
                self.metrics.cache(hit);
                match verdict {
                    Verdict::Valid(a) => (a, hit),
                    Verdict::Invalid(reason) => {
                        *provider = first_asked();
                        return Outcome::Reject(Rejection::Invalid(reason));
                    }
                }
            }
            Err(e) => {
                self.metrics.cache(false);
                *provider = first_asked();
                return Outcome::Reject(match &*e {
                    AuthError::Invalid(reason) => Rejection::Invalid(reason),
                    AuthError::Declined => {
                        Rejection::Invalid("no configured provider accepts this credential")
                    }
                    AuthError::RateLimited { retry_after } => Rejection::RateLimited(*retry_after),
                    AuthError::Unavailable(why) => {
                        self.metrics.provider_unavailable(provider);
                        Rejection::Unavailable(why.clone())
                    }
                });
            }
        };
        *provider = authenticated.identity.provider;
        let identity = &authenticated.identity;
        // A foreign token accepted within the clock-skew leeway may already be past its own
        // expiry: nothing minted may outlive it, so it gets no JWT at all.
        if identity.expires_at.is_some_and(|e| e <= crate::unix_now()) {
            return Outcome::Reject(Rejection::Invalid("the credential has expired"));
        }
        match self.policy.evaluate(&target, Some(identity)) {
            Decision::Allow { audience, .. } => {
                match identity.minted_for(&self.minter, audience.as_ref(), crate::unix_now(), hit) {
                    Ok(minted) => Outcome::Allow {
                        authenticated: authenticated.clone(),
                        minted,
                        repeated: hit,
                    },
                    Err(e) => Outcome::Reject(Rejection::Unavailable(e.to_string())),
                }
            }
            Decision::AllowAnonymous { .. } => Outcome::AllowAnonymous,
            Decision::Unauthenticated => Outcome::Reject(Rejection::NoCredential),
            Decision::Deny { rule, missing } => {
                Outcome::Reject(Rejection::Forbidden { rule, missing })
            }
        }
    }

    /// The Astakos-compatible endpoints (authgate's own API tokens only).
    async fn astakos_api(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let client_ip = crate::forward::client_ip(&parts.headers, peer.ip(), &self.trusted)
            .unwrap_or(peer.ip());
        let ctx = AuthContext {
            client_ip,
            service_token: None,
        };
        if parts.uri.path() == "/im/authenticate" {
            crate::astakos_api::authenticate(
                &self.astakos_api,
                &self.api_tokens,
                &parts.method,
                &parts.headers,
                &ctx,
            )
            .await
        } else {
            crate::astakos_api::tokens(
                &self.astakos_api,
                &self.api_tokens,
                &parts.method,
                body,
                &ctx,
            )
            .await
        }
    }

    /// Identity header mode and `delay_auth_decision` of the route.
    fn route_options(&self, original: &OriginalRequest) -> (HeaderMode, bool) {
        let target = Target {
            method: &original.method,
            host: &original.host,
            path: &original.path,
        };
        match self.policy.matching_rule(&target) {
            Some(rule) => (
                rule.headers.unwrap_or(self.headers),
                rule.delay_auth_decision,
            ),
            None => (self.headers, false),
        }
    }
}

/// Binds a listener, naming the config key when it fails.
async fn bind(addr: SocketAddr, key: &'static str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|e| StartError::Bind {
        addr,
        key,
        reason: e.to_string(),
    })
}

/// Runs authgate until SIGTERM or SIGINT, then drains in-flight requests.
pub async fn serve(config: Config, access: AccessLog) -> Result<(), StartError> {
    let app = App::build(&config, access).await?;
    let data = bind(config.server.listen, "server.listen").await?;
    let admin = bind(config.admin.listen, "admin.listen").await?;
    for (name, l) in [("data", &data), ("admin", &admin)] {
        if let Ok(addr) = l.local_addr() {
            tracing::info!(listener = name, %addr, "listening");
        }
    }
    let background = spawn_background(app.clone());
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size((config.server.max_header_bytes * 4).max(16 * 1024));
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, admin_side) = tokio::select! {
            accepted = data.accept() => match accepted {
                Ok((s, p)) => (s, p, false),
                Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
            },
            accepted = admin.accept() => match accepted {
                Ok((s, p)) => (s, p, true),
                Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let service = service_fn(move |req| {
            let app = app.clone();
            async move {
                let response = if admin_side {
                    crate::admin::handle(&app, &req).await
                } else {
                    app.handle(req, peer).await
                };
                Ok::<_, Infallible>(response)
            }
        });
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    tracing::info!("shutting down: draining in-flight requests");
    drop(data);
    drop(admin);
    if tokio::time::timeout(config.server.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown timeout reached; closing the remaining connections");
    }
    background.abort();
    app.cache.flush_last_used(app.store.as_ref()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Key reloads (rotations by the CLI or other replicas) and token last-use flushes.
fn spawn_background(app: Arc<App>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut keys = tokio::time::interval(KEY_RELOAD_INTERVAL);
        let mut uses = tokio::time::interval(LAST_USED_FLUSH_INTERVAL);
        keys.tick().await;
        uses.tick().await;
        loop {
            tokio::select! {
                _ = keys.tick() => {
                    if let Err(e) = app.minter.reload(app.store.as_ref()).await {
                        app.metrics.store_error();
                        tracing::warn!(error = %e, "could not reload signing keys; keeping the current ones");
                    }
                }
                _ = uses.tick() => app.cache.flush_last_used(app.store.as_ref()).await,
            }
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
