//! The data plane: routes `/auth`, `/ingress-auth`, `/auth/*`, `/forward-auth`, the
//! well-known documents (the JWKS, and the metadata `discovery` builds), the
//! Astakos-compatible endpoints and the token portal (`portal`: its caller is decided here
//! too), runs one decision per sub-request (`decide`), and maps every outcome to its answer
//! in one place (`respond`).
//! It answers requests only; the `serve` module runs the listeners. Tests drive [`App::handle`]
//! in-process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use serde_json::json;

mod config;
mod decide;
mod discovery;
mod headers;
mod oauth2;
mod portal;
mod respond;
mod signin;
mod whoami;

pub use config::ServerConfig;
use decide::Endpoint;
use discovery::{Discovery, JWKS_PATH};
use signin::SignIn;

use crate::admin::AdminView;
use crate::astakos_api::{self, AstakosApiConfig, Endpoint as AstakosEndpoint};
use crate::augment::{AugmentConfig, Augmenters};
use crate::cache::{CacheConfig, DecisionCache};
use crate::forward::{Family, TrustedProxies};
use crate::login::{Login, LoginConfig};
use crate::metrics::Metrics;
use crate::mint::{MintConfig, MintError, Minter};
use crate::policy::{HeaderMode, Policy};
use crate::portal::{Portal, PortalConfig, Route as PortalRoute};
use crate::providers::{ApiTokenProvider, AuthContext, Chain, ProvidersConfig};
pub use crate::reply::Body;
use crate::reply::{document, json_response};
use crate::setting::ConfigError;
use crate::store::{self, Store, StoreConfig, StoreError};
use crate::telemetry::AccessLog;

/// What the data plane is built from: the sections of the configuration it uses.
#[derive(Debug, Clone, Copy)]
pub struct Settings<'a> {
    /// `server`.
    pub server: &'a ServerConfig,
    /// `store`.
    pub store: &'a StoreConfig,
    /// `mint`.
    pub mint: &'a MintConfig,
    /// `cache`.
    pub cache: &'a CacheConfig,
    /// `providers`.
    pub providers: &'a ProvidersConfig,
    /// `augment`.
    pub augment: &'a AugmentConfig,
    /// `policy`, parsed.
    pub policy: &'a Policy,
    /// `astakos_api`.
    pub astakos_api: &'a AstakosApiConfig,
    /// `login`.
    pub login: &'a LoginConfig,
    /// `headers`.
    pub headers: HeaderMode,
    /// `portal`.
    pub portal: &'a PortalConfig,
}

/// Why the app could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The signing keys could not be loaded.
    #[error(transparent)]
    Mint(#[from] MintError),
    /// A file or value the configuration names cannot be used.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The outbound HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
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
    augmenters: Augmenters,
    policy: Policy,
    trusted: TrustedProxies,
    /// All challenges in one field: nginx's auth_request passes only the first
    /// `WWW-Authenticate` header of a sub-request on to the client.
    challenge: Option<HeaderValue>,
    /// The browser sign-in redirect, when `server.signin_url` is set.
    signin: Option<SignIn>,
    /// The OpenID / RFC 8414 metadata.
    discovery: Discovery,
    /// Whether Envoy's path form redirects browsers too (`server.envoy_redirect`).
    envoy_redirect: bool,
    max_header_bytes: usize,
    jwt_header: HeaderName,
    request_ids: RequestIds,
    access: AccessLog,
    headers: HeaderMode,
    astakos_api: AstakosApiConfig,
    api_tokens: ApiTokenProvider,
    /// The token portal and API, when `portal.enabled`.
    portal: Option<Portal>,
    /// Each challenge in a field of its own, for the portal (browsers, unlike nginx, read
    /// every field, but not several schemes in one).
    portal_challenges: Vec<HeaderValue>,
    /// Browser sign-in, when `login` names issuers.
    login: Option<Arc<Login>>,
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
    pub async fn build(config: &Settings<'_>, access: AccessLog) -> Result<Arc<Self>, BuildError> {
        let store = store::open(config.store)?;
        let api_tokens = ApiTokenProvider::new(store.clone());
        let portal = Portal::new(config.portal, store.clone())?;
        let minter = Minter::new(config.mint, store.as_ref(), true).await?;
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let mut chain = Chain::build(&config.providers.0, store.clone(), &client)?;
        let policy = config.policy.clone();
        let login = if config.login.enabled() {
            let hosts = signin::return_hosts(config.server, &policy)?;
            let login = Login::new(config.login, hosts, store.clone(), client.clone())?;
            chain.push(Arc::new(login.session_provider(config.login)));
            Some(login)
        } else {
            None
        };
        let metrics = Metrics::new();
        chain.report_health(|name| metrics.provider_up(name));
        let augmenters = Augmenters::build(config.augment, config.cache.max_ttl)?;
        augmenters.report_health(|name| metrics.provider_up(name));
        let challenge =
            HeaderValue::from_str(&chain.challenges(&config.server.realm).join(", ")).ok();
        let policy = config.policy.clone();
        let portal_challenges = chain
            .challenges(&config.server.realm)
            .iter()
            .filter_map(|c| HeaderValue::from_str(c).ok())
            .collect();
        let signin = SignIn::new(config.server, &policy)?;
        for warning in config.astakos_api.warnings() {
            tracing::warn!("{warning}");
        }
        Ok(Arc::new(Self {
            store,
            minter,
            metrics,
            cache: DecisionCache::new(config.cache),
            chain,
            augmenters,
            policy,
            trusted: TrustedProxies::new(config.server.trusted_proxies.clone()),
            challenge,
            signin,
            discovery: Discovery::new(config.server, config.mint),
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
            portal,
            portal_challenges,
            login,
        }))
    }

    /// The session cookie's credential in `headers`, when browser sign-in is on.
    fn session_credential(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<Option<crate::credential::Credential>, crate::credential::CredentialError> {
        match &self.login {
            Some(login) => crate::credential::session_cookie(headers, login.cookie_name()),
            None => Ok(None),
        }
    }

    /// The configured providers.
    pub fn chain(&self) -> &Chain {
        &self.chain
    }

    /// Answers one data-plane request.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = req.uri().path();
        if path == "/auth" {
            self.decide(
                req.into_parts().0,
                peer,
                Endpoint::Auth,
                Family::Nginx,
                None,
            )
            .await
        } else if path == "/ingress-auth" {
            self.decide(
                req.into_parts().0,
                peer,
                Endpoint::Auth,
                Family::IngressNginx,
                None,
            )
            .await
        } else if let Some(suffix) = req
            .uri()
            .path_and_query()
            .and_then(|pq| pq.as_str().strip_prefix("/auth/"))
        {
            let suffix = suffix.to_owned();
            self.decide(
                req.into_parts().0,
                peer,
                Endpoint::Envoy,
                Family::Envoy,
                Some(&suffix),
            )
            .await
        } else if let Some(portal) = &self.portal
            && let Some(route) = PortalRoute::of(path)
        {
            self.portal(portal, route, req, peer).await
        } else if let Some(endpoint) = self.astakos_api.route(path) {
            self.astakos_api(endpoint, req, peer).await
        } else if path == "/forward-auth" {
            self.decide(
                req.into_parts().0,
                peer,
                Endpoint::ForwardAuth,
                Family::ForwardAuth,
                None,
            )
            .await
        } else if path.starts_with("/oauth2/") {
            self.oauth2(req, peer).await
        } else if path == JWKS_PATH {
            document(req.method(), self.minter.jwks(), "public, max-age=60")
        } else if path == "/.well-known/openid-configuration"
            || path == "/.well-known/oauth-authorization-server"
        {
            document(
                req.method(),
                self.discovery.document(),
                "public, max-age=3600",
            )
        } else if path == whoami::WHOAMI_PATH {
            self.whoami(&req.into_parts().0, peer).await
        } else {
            json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"}))
        }
    }

    /// What the admin listener reports on.
    pub fn admin_view(&self) -> AdminView<'_> {
        AdminView {
            metrics: &self.metrics,
            cache: &self.cache,
            store: self.store.as_ref(),
            chain: &self.chain,
            augmenters: &self.augmenters,
            minter: &self.minter,
            draining: false,
        }
    }

    /// The Astakos-compatible endpoints (authgate's own API tokens and directory only).
    async fn astakos_api<B>(
        &self,
        endpoint: AstakosEndpoint,
        req: Request<B>,
        peer: SocketAddr,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let client_ip = crate::forward::client_ip(&parts.headers, peer.ip(), &self.trusted)
            .unwrap_or(peer.ip());
        let ctx = AuthContext {
            client_ip,
            service_token: None,
        };
        let config = &self.astakos_api;
        let tokens = &self.api_tokens;
        match endpoint {
            AstakosEndpoint::Tokens => {
                astakos_api::tokens(config, tokens, &parts.method, body, &ctx).await
            }
            AstakosEndpoint::Authenticate => {
                astakos_api::authenticate(config, tokens, &parts.method, &parts.headers, &ctx).await
            }
            AstakosEndpoint::UserCatalogs | AstakosEndpoint::ServiceUserCatalogs => {
                let service = endpoint == AstakosEndpoint::ServiceUserCatalogs;
                astakos_api::user_catalogs(
                    config,
                    tokens,
                    self.store.as_ref(),
                    service,
                    &parts,
                    body,
                    &ctx,
                )
                .await
            }
            AstakosEndpoint::Unknown => astakos_api::unknown_endpoint(),
        }
    }
}
