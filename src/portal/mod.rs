//! The self-service token portal: people list, create and revoke their own API tokens,
//! as a JSON API (`/api/tokens`, [`api`]) and as server-rendered pages (`/portal`,
//! [`page`]) that work without JavaScript. The operations both share, with the limits of
//! `portal:` and the audit lines, are in [`tokens`]; the CSRF defences in [`csrf`].
//!
//! The caller is whoever the data plane authenticated on the request itself (the same
//! decision as `/auth`, judged on the request's own method, host and path, so the policy
//! decides who reaches these paths): a user (Basic, a browser session) or an API token
//! that holds [`MANAGE_SCOPE`]. The `server` module does that and hands over a [`Caller`].

mod api;
mod config;
mod csrf;
mod page;
mod tokens;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

pub use config::{MANAGE_SCOPE, PortalConfig};
pub use csrf::Origin;

use crate::cache::DecisionCache;
use crate::credential::{self, Credential};
use crate::forward::OriginalRequest;
use crate::identity::Identity;
use crate::reply::Body;
use crate::setting::ConfigError;
use crate::store::{Store, StoreError};
use csrf::{CsrfError, FormTokens};

/// Largest request body the portal reads (a form or a JSON document of a few fields).
const MAX_BODY: usize = 16 * 1024;

/// The portal, built once at start when `portal.enabled`.
pub struct Portal {
    config: PortalConfig,
    forms: FormTokens,
    store: Arc<dyn Store>,
    /// One creation at a time in this process, so that two concurrent requests of one user
    /// cannot both pass `portal.max_tokens_per_user`.
    creating: tokio::sync::Mutex<()>,
}

/// Which portal resource a path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/portal`: the page.
    Page,
    /// `/portal/tokens`: the create form posts here.
    Create,
    /// `/portal/revoke`: the confirmation (GET) and the revocation (POST).
    Revoke,
    /// `/portal/static/portal.css`.
    Stylesheet,
    /// `/portal/static/portal.js` (copy to clipboard).
    Script,
    /// Any other path under `/portal/`.
    Unknown,
    /// `/api/tokens`.
    Tokens,
    /// `/api/tokens/<id>`.
    Token(String),
}

impl Route {
    /// The portal resource `path` names; `None` for paths that are not the portal's.
    pub fn of(path: &str) -> Option<Self> {
        match path {
            "/portal" | "/portal/" => Some(Self::Page),
            "/portal/tokens" => Some(Self::Create),
            "/portal/revoke" => Some(Self::Revoke),
            "/portal/static/portal.css" => Some(Self::Stylesheet),
            "/portal/static/portal.js" => Some(Self::Script),
            "/api/tokens" | "/api/tokens/" => Some(Self::Tokens),
            _ => {
                if let Some(id) = path.strip_prefix("/api/tokens/") {
                    Some(Self::Token(id.to_owned()))
                } else if path.starts_with("/portal/") {
                    Some(Self::Unknown)
                } else {
                    None
                }
            }
        }
    }

    /// Whether the resource is public (the static assets: the same bytes for everyone),
    /// served without a decision.
    pub fn is_public(&self) -> bool {
        matches!(self, Self::Stylesheet | Self::Script)
    }
}

/// Who is calling, as the data plane authenticated them.
pub struct Caller<'a> {
    /// The caller's identity.
    pub identity: &'a Identity,
    /// Whether a browser attaches the credential by itself (Basic, a cookie): then every
    /// state change needs the same-origin check.
    ambient: bool,
    /// What the form token is bound to: the credential's cache key.
    binding: [u8; 32],
    /// The request's own origin.
    origin: Origin,
}

impl<'a> Caller<'a> {
    /// The caller of a request that `original` describes and `identity` was authenticated
    /// from.
    pub fn new(identity: &'a Identity, headers: &HeaderMap, original: &OriginalRequest) -> Self {
        let (ambient, binding) = match credential::extract(headers) {
            Ok(Some(c @ (Credential::Bearer(_) | Credential::AuthToken(_)))) => {
                (false, c.cache_key())
            }
            Ok(Some(c)) => (true, c.cache_key()),
            // A token in the query: bound to the subject; checked as if ambient.
            _ => (
                true,
                crate::secret::sha256(format!("subject\0{}", identity.subject).as_bytes()),
            ),
        };
        Self {
            identity,
            ambient,
            binding,
            origin: Origin {
                scheme: original.scheme.clone(),
                host: original.host.clone(),
                port: original.port,
            },
        }
    }
}

/// Why a portal request failed; [`PortalError::status`] is its answer's status.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// Malformed input.
    #[error("{0}")]
    BadRequest(String),
    /// The request is refused for this caller.
    #[error("{0}")]
    Forbidden(String),
    /// A CSRF check failed.
    #[error(transparent)]
    Csrf(#[from] CsrfError),
    /// No such token (of this caller).
    #[error("no such token")]
    NotFound,
    /// A method the resource does not take.
    #[error("method not allowed (allowed: {0})")]
    MethodNotAllowed(&'static str),
    /// The state does not allow it (a name taken, a token revoked already).
    #[error("{0}")]
    Conflict(String),
    /// The body is larger than the portal reads.
    #[error("the request body is larger than {MAX_BODY} bytes")]
    TooLarge,
    /// The body is not of the type the resource takes.
    #[error("the body must be {0}")]
    UnsupportedMediaType(&'static str),
    /// A limit of `portal:` (or of the caller's own credential); names it.
    #[error("{0}")]
    Limit(String),
    /// The store failed: nothing was changed (503).
    #[error("the token store could not be reached")]
    Store(#[from] StoreError),
}

impl PortalError {
    /// The status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) | Self::Csrf(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Limit(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The machine-readable error name of the JSON answer.
    fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Forbidden(_) | Self::Csrf(_) => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::Conflict(_) => "conflict",
            Self::TooLarge => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Limit(_) => "limit_exceeded",
            Self::Store(_) => "unavailable",
        }
    }

    /// The reason shown to the caller (the API writes it as JSON, the pages as HTML); a
    /// store failure is logged here, and shown without its details.
    fn reason(&self) -> String {
        if let Self::Store(e) = self {
            tracing::error!(error = %e, "token portal: the store failed");
        }
        self.to_string()
    }
}

impl Portal {
    /// The portal `config` describes, over `store`; `None` when it is disabled.
    pub fn new(config: &PortalConfig, store: Arc<dyn Store>) -> Result<Option<Self>, ConfigError> {
        if !config.enabled {
            return Ok(None);
        }
        let key = config.csrf_key()?;
        let forms = FormTokens::new(key.as_ref())
            .map_err(|e| ConfigError::invalid("portal.csrf_key", e.to_string()))?;
        Ok(Some(Self {
            config: config.clone(),
            forms,
            store,
            creating: tokio::sync::Mutex::new(()),
        }))
    }

    /// A public resource (see [`Route::is_public`]).
    pub fn public(&self, route: &Route, method: &http::Method) -> Response<Body> {
        page::asset(route, method)
    }

    /// Answers an authenticated portal request. `cache` is the decision cache, from which
    /// a revoked token's entries are removed at once.
    pub async fn handle<B>(
        &self,
        route: Route,
        caller: &Caller<'_>,
        cache: &DecisionCache,
        parts: &http::request::Parts,
        body: B,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let ctx = tokens::Context {
            config: &self.config,
            store: self.store.as_ref(),
            cache,
            creating: &self.creating,
        };
        match route {
            Route::Tokens | Route::Token(_) => api::handle(&ctx, &route, caller, parts, body).await,
            _ => page::handle(&ctx, &self.forms, &route, caller, parts, body).await,
        }
    }
}

/// Reads a request body of at most [`MAX_BODY`] bytes.
async fn read_body<B>(body: B) -> Result<Bytes, PortalError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(PortalError::TooLarge),
        Err(e) => Err(PortalError::BadRequest(format!(
            "the request body could not be read: {e}"
        ))),
    }
}

/// The content type of a request without parameters, lower-cased.
fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// Headers of every portal answer: no framing, no sniffing, no referrer; no cache keeps
/// an answer that lists tokens or shows a secret.
fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}
