//! The one place where outcomes become HTTP answers: 200 with the JWT and identity headers
//! (`headers`: the header sets), 401 with `WWW-Authenticate` (and, for a browser,
//! a `Location` to sign in, or a 302 there on `/forward-auth` and, with
//! `server.envoy_redirect`, on Envoy's `/auth/<path>`), 403, 400, 429, 431, 503.

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use std::sync::Arc;
use std::time::Duration;

use super::decide::{Endpoint, Outcome};
use super::headers::{
    IDENTITY_HEADERS, KEYSTONE_HEADERS, OAUTH2_PROXY_HEADERS, identity_headers, keystone_headers,
    oauth2_proxy_headers,
};
use super::{App, Body};
use crate::cache::Authenticated;
use crate::credential::CredentialError;
use crate::forward::ForwardError;
use crate::forward::OriginalRequest;
use crate::login::{LoginError, LoginReply};
use crate::mint::Minted;
use crate::policy::HeaderMode;
use crate::providers::AuthError;
use crate::reply::{empty, json_response};

/// Every way a decision can say no.
#[derive(Debug)]
pub(super) enum Rejection {
    HeadersTooLarge(usize),
    BadRequest(ForwardError),
    BadCredential(CredentialError),
    NoCredential,
    Invalid(&'static str),
    Expired,
    RateLimited(Duration),
    Forbidden { rule: Arc<str>, missing: String },
    Unavailable(String),
}

impl Rejection {
    /// Whether this is "no valid credential" (what `delay_auth_decision` passes on).
    pub(super) fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Self::BadCredential(_) | Self::NoCredential | Self::Invalid(_) | Self::Expired
        )
    }

    pub(super) fn label(&self) -> &'static str {
        match self {
            Self::HeadersTooLarge(_) | Self::BadRequest(_) => "bad_request",
            Self::BadCredential(_) | Self::NoCredential | Self::Invalid(_) | Self::Expired => {
                "unauthenticated"
            }
            Self::RateLimited(_) => "rate_limited",
            Self::Forbidden { .. } => "deny",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

/// A sign-in endpoint's answer: a redirect or a page, its cookies, never cached.
pub(super) fn login_reply(reply: LoginReply) -> Response<Body> {
    let mut r = match reply.html {
        Some(html) => html_page(reply.status, html),
        None => empty(reply.status),
    };
    *r.status_mut() = reply.status;
    let h = r.headers_mut();
    if let Some(location) = reply.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
        h.insert(header::LOCATION, location);
    }
    for cookie in reply.cookies {
        h.append(header::SET_COOKIE, cookie);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A failed sign-in endpoint: a readable page for browsers, JSON for the IdP's
/// back-channel call (`json`).
pub(super) fn login_error(error: &LoginError, json: bool) -> Response<Body> {
    if let LoginError::Unavailable(why) = error {
        tracing::warn!(reason = %why, "sign-in unavailable");
    }
    if json {
        let code = match error.status() {
            StatusCode::SERVICE_UNAVAILABLE => "temporarily_unavailable",
            _ => "invalid_request",
        };
        return json_response(
            error.status(),
            json!({"error": code, "error_description": error.to_string()}),
        );
    }
    html_page(error.status(), error.html())
}

fn html_page(status: StatusCode, html: String) -> Response<Body> {
    let mut r = Response::new(http_body_util::Full::new(bytes::Bytes::from(html)));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
    );
    h.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// What a provider's refusal means for the answer.
impl From<&AuthError> for Rejection {
    fn from(error: &AuthError) -> Self {
        match error {
            AuthError::Invalid(reason) => Self::Invalid(reason),
            AuthError::Expired => Self::Expired,
            AuthError::Declined => Self::Invalid("no configured provider accepts this credential"),
            AuthError::RateLimited { retry_after } => Self::RateLimited(*retry_after),
            AuthError::Unavailable(why) => Self::Unavailable(why.clone()),
            AuthError::Forbidden(why) => Self::Forbidden {
                rule: Arc::from("augment"),
                missing: why.clone(),
            },
        }
    }
}

impl App {
    /// The one place where outcomes become responses.
    pub(super) fn respond(
        &self,
        outcome: &Outcome,
        endpoint: Endpoint,
        parts: &http::request::Parts,
        original: Option<&OriginalRequest>,
        mode: HeaderMode,
    ) -> Response<Body> {
        let rejection = match outcome {
            Outcome::Allow {
                authenticated,
                minted,
                repeated,
            } => return self.allow(authenticated, minted, *repeated, mode),
            Outcome::AllowAnonymous => return self.without_identity("anonymous", mode),
            Outcome::IdentityInvalid => {
                let mut r = self.without_identity("invalid", mode);
                r.headers_mut()
                    .insert("x-identity-status", HeaderValue::from_static("Invalid"));
                return r;
            }
            Outcome::Reject(r) => r,
        };
        match rejection {
            Rejection::HeadersTooLarge(n) => json_response(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                json!({"error": "request_header_fields_too_large",
                       "reason": format!("the request headers take {n} bytes; the limit is {}", self.max_header_bytes)}),
            ),
            Rejection::BadRequest(e) => json_response(
                StatusCode::BAD_REQUEST,
                json!({"error": "bad_request", "reason": e.to_string()}),
            ),
            Rejection::BadCredential(e) => {
                self.unauthorized(&e.to_string(), endpoint, parts, original, mode)
            }
            Rejection::NoCredential => self.unauthorized(
                "no credential was presented",
                endpoint,
                parts,
                original,
                mode,
            ),
            Rejection::Invalid(reason) => {
                self.unauthorized(reason, endpoint, parts, original, mode)
            }
            Rejection::Expired => self.unauthorized(
                "the credential has expired",
                endpoint,
                parts,
                original,
                mode,
            ),
            Rejection::RateLimited(retry_after) => {
                let mut r = json_response(
                    StatusCode::TOO_MANY_REQUESTS,
                    json!({"error": "too_many_requests",
                           "reason": "too many failed attempts for this user or address"}),
                );
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_secs().max(1)),
                );
                r
            }
            Rejection::Forbidden { rule, missing } => json_response(
                StatusCode::FORBIDDEN,
                json!({"error": "forbidden", "rule": &**rule, "reason": format!("missing {missing}")}),
            ),
            Rejection::Unavailable(why) => {
                tracing::error!(error = %why, "could not decide: failing closed");
                json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "unavailable", "reason": "the identity backend could not be asked"}),
                )
            }
        }
    }

    fn allow(
        &self,
        authenticated: &Authenticated,
        minted: &Minted,
        repeated: bool,
        mode: HeaderMode,
    ) -> Response<Body> {
        let identity = authenticated
            .identity
            .response_headers(repeated, identity_headers);
        let mut response = empty(StatusCode::OK);
        // Sized once: growing the map as headers go in cost a rehash per doubling.
        *response.headers_mut() = http::HeaderMap::with_capacity(identity.len() + 4);
        let headers = response.headers_mut();
        // The client's Authorization is replaced by the JWT only when the JWT travels in
        // Authorization; with another `mint.header` it must be removed like the rest.
        let remove = if self.jwt_header == header::AUTHORIZATION {
            RAW_CREDENTIAL_HEADERS
        } else {
            ANONYMOUS_HEADERS_TO_REMOVE
        };
        headers.insert(
            HeaderName::from_static(ENVOY_HEADERS_TO_REMOVE),
            HeaderValue::from_static(remove),
        );
        headers.insert(self.jwt_header.clone(), minted.header.clone());
        headers.insert(
            HeaderName::from_static(STATUS_HEADER),
            HeaderValue::from_static("authenticated"),
        );
        for (name, value) in identity.iter() {
            headers.insert(name.clone(), value.clone());
        }
        match mode {
            HeaderMode::Default => {}
            HeaderMode::Keystone => {
                for (name, value) in keystone_headers(&authenticated.identity) {
                    headers.insert(name, value);
                }
            }
            HeaderMode::Oauth2Proxy => {
                for (name, value) in oauth2_proxy_headers(&identity) {
                    headers.insert(name, value);
                }
            }
        }
        response
    }

    /// A 200 without an identity (`status`: `anonymous` route, or `invalid` credential under
    /// `delay_auth_decision`): every identity header is present and empty, because Envoy,
    /// Caddy and Traefik overwrite only the headers an answer carries and would otherwise
    /// pass the client's own on; `X-Auth-Request-Status` says why there is no identity.
    /// In keystone and oauth2-proxy mode that mode's set is there too, empty.
    fn without_identity(&self, status: &'static str, mode: HeaderMode) -> Response<Body> {
        let mut r = empty(StatusCode::OK);
        let headers = r.headers_mut();
        headers.insert(
            HeaderName::from_static(STATUS_HEADER),
            HeaderValue::from_static(status),
        );
        headers.insert(
            HeaderName::from_static(ENVOY_HEADERS_TO_REMOVE),
            HeaderValue::from_static(ANONYMOUS_HEADERS_TO_REMOVE),
        );
        headers.insert(self.jwt_header.clone(), HeaderValue::from_static(""));
        for name in IDENTITY_HEADERS {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static(""));
        }
        let extra: &[&str] = match mode {
            HeaderMode::Default => &[],
            HeaderMode::Keystone => &KEYSTONE_HEADERS,
            HeaderMode::Oauth2Proxy => &OAUTH2_PROXY_HEADERS,
        };
        for name in extra {
            headers.insert(HeaderName::from_static(name), HeaderValue::from_static(""));
        }
        r
    }

    fn unauthorized(
        &self,
        reason: &str,
        endpoint: Endpoint,
        parts: &http::request::Parts,
        original: Option<&OriginalRequest>,
        mode: HeaderMode,
    ) -> Response<Body> {
        let signin = self
            .signin
            .as_ref()
            .zip(original)
            .filter(|(_, o)| is_browser_navigation(parts, o))
            .and_then(|(signin, o)| signin.location(o));
        let redirects = match endpoint {
            Endpoint::ForwardAuth => true,
            Endpoint::Envoy => self.envoy_redirect,
            Endpoint::Auth => false,
        };
        if redirects && let Some(location) = &signin {
            let mut r = empty(StatusCode::FOUND);
            r.headers_mut().insert(header::LOCATION, location.clone());
            return r;
        }
        let body = match mode {
            HeaderMode::Default | HeaderMode::Oauth2Proxy => {
                json!({"error": "unauthorized", "reason": reason})
            }
            // keystonemiddleware's error document: services and clients written for Keystone
            // read `error.message`; authgate's reason is in its log, as Keystone's is.
            HeaderMode::Keystone => {
                tracing::debug!(reason, "unauthenticated (keystone error document)");
                json!({"error": {"code": 401, "title": "Unauthorized",
                                 "message": KEYSTONE_UNAUTHORIZED}})
            }
        };
        let mut r = json_response(StatusCode::UNAUTHORIZED, body);
        if let Some(c) = &self.challenge {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, c.clone());
        }
        if let Some(location) = signin {
            r.headers_mut().insert(header::LOCATION, location);
        }
        r
    }
}

/// A GET or HEAD (of the original request, as judged) that asks for HTML.
fn is_browser_navigation(parts: &http::request::Parts, original: &OriginalRequest) -> bool {
    let method = original.method.as_str().as_bytes();
    let accepts_html = parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("text/html")));
    (method == b"GET" || method == b"HEAD") && accepts_html
}

/// keystonemiddleware's 401 message.
const KEYSTONE_UNAUTHORIZED: &str = "The request you have made requires authentication.";

/// Envoy's ext_authz removes the headers this answer header names from the upstream request.
const ENVOY_HEADERS_TO_REMOVE: &str = "x-envoy-auth-headers-to-remove";
/// The raw credentials that must stay at the edge (the JWT replaces `Authorization`).
const RAW_CREDENTIAL_HEADERS: &str = "x-auth-token, x-storage-token, x-service-token";
/// On a 200 without identity, the client's `Authorization` must not pass either.
const ANONYMOUS_HEADERS_TO_REMOVE: &str =
    "authorization, x-auth-token, x-storage-token, x-service-token";

/// On every 200: `authenticated`, `anonymous` (a rule that needs no credential) or `invalid`
/// (`delay_auth_decision`), so the upstream can tell an anonymous request from a proxy that
/// failed to copy the identity.
const STATUS_HEADER: &str = "x-auth-request-status";
