//! Token validation: `POST /identity/v2.0/tokens` (the `access` document) and the 0.13
//! `GET /im/authenticate` (flat JSON, epoch milliseconds).

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};

use super::{AstakosApiConfig, api_response, fault, never_cache, post_only};
use crate::credential::Credential;
use crate::identity::{AttributeValue, Identity};
use crate::providers::{AuthContext, AuthError, Provider};
use crate::reply::Body;
use crate::secret::{Secret, sha256};

/// Largest request body read (an Astakos token request is well under 1 KiB).
const MAX_BODY: usize = 64 * 1024;
/// Expiry reported for tokens that never expire: Astakos's own token lifetime (720 h).
const NO_EXPIRY_REPORTED: i64 = 30 * 86_400;

/// 0.13's text/plain errors: `message\n\ndetails`.
fn text_fault(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{message}\n\n"))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    never_cache(r.headers_mut());
    r
}

/// `isoformat()` of a UTC time with microseconds: `2013-06-19T15:23:59.000000+00:00`.
fn isoformat(unix: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    let s = humantime::format_rfc3339_micros(t).to_string();
    format!("{}+00:00", s.trim_end_matches('Z'))
}

fn expiry(identity: &Identity) -> i64 {
    identity
        .expires_at
        .unwrap_or_else(|| crate::unix_now() + NO_EXPIRY_REPORTED)
}

/// The Astakos message for a provider's refusal.
fn refusal(error: &AuthError) -> Result<&'static str, ()> {
    match error {
        AuthError::Expired => Ok("Authentication expired"),
        AuthError::Invalid(_) | AuthError::Declined | AuthError::Forbidden(_) => {
            Ok("Invalid token")
        }
        AuthError::RateLimited { .. } | AuthError::Unavailable(_) => Err(()),
    }
}

async fn check(
    config: &AstakosApiConfig,
    tokens: &dyn Provider,
    token: &str,
    ctx: &AuthContext,
) -> Result<Identity, Result<&'static str, ()>> {
    let identity = tokens
        .authenticate(&Credential::AuthToken(Secret::new(token)), ctx)
        .await
        .map_err(|e| refusal(&e))?;
    match &identity.scopes {
        Some(scopes) if !scopes.contains(&config.scope) => Err(Ok("Invalid token")),
        _ => Ok(identity),
    }
}

pub(super) fn unavailable() -> Response<Body> {
    fault(
        StatusCode::SERVICE_UNAVAILABLE,
        "serviceUnavailable",
        "Service Unavailable",
    )
}

/// `POST /identity/v2.0/tokens`.
pub async fn tokens<B>(
    config: &AstakosApiConfig,
    provider: &dyn Provider,
    method: &Method,
    body: B,
    ctx: &AuthContext,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if method != Method::POST {
        return post_only();
    }
    let Ok(body) = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
    else {
        return fault(StatusCode::BAD_REQUEST, "badRequest", "Malformed request");
    };
    if body.is_empty() {
        // Public mode: the catalog only.
        return api_response(
            StatusCode::OK,
            &json!({"access": {"serviceCatalog": config.catalog()}}),
        );
    }
    let Ok(doc) = serde_json::from_slice::<Value>(&body) else {
        return fault(StatusCode::BAD_REQUEST, "badRequest", "Malformed request");
    };
    let auth = &doc["auth"];
    let (token, claimed) = if let Some(t) = auth.get("token") {
        match t["id"].as_str() {
            Some(id) => (id.to_owned(), None),
            None => {
                return fault(
                    StatusCode::BAD_REQUEST,
                    "badRequest",
                    "Malformed request: missing token",
                );
            }
        }
    } else if let Some(pc) = auth.get("passwordCredentials") {
        match (pc["username"].as_str(), pc["password"].as_str()) {
            (Some(u), Some(p)) => (p.to_owned(), Some(u.to_owned())),
            _ => {
                return fault(
                    StatusCode::BAD_REQUEST,
                    "badRequest",
                    "Malformed request: missing credentials",
                );
            }
        }
    } else {
        return fault(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "Malformed request: missing credentials",
        );
    };
    let identity = match check(config, provider, &token, ctx).await {
        Ok(i) => i,
        Err(Ok(message)) => return fault(StatusCode::UNAUTHORIZED, "unauthorized", message),
        Err(Err(())) => return unavailable(),
    };
    if claimed.is_some_and(|u| u != identity.subject) {
        return fault(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Invalid credentials",
        );
    }
    if let Some(tenant) = auth["tenantName"].as_str()
        && tenant != identity.subject
    {
        return fault(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "Not conforming tenantName",
        );
    }
    let roles: Vec<Value> = identity
        .roles
        .iter()
        .enumerate()
        .map(|(i, r)| json!({"id": (i + 1).to_string(), "name": r}))
        .collect();
    let projects: Vec<String> = match identity.attributes.get("projects") {
        Some(AttributeValue::Many(ps)) => ps.clone(),
        Some(AttributeValue::One(p)) => vec![p.clone()],
        None => Vec::new(),
    };
    api_response(
        StatusCode::OK,
        &json!({"access": {
            "token": {"id": token, "expires": isoformat(expiry(&identity)),
                      "tenant": {"id": identity.subject, "name": identity.username}},
            "user": {"id": identity.subject, "name": identity.username, "roles": roles,
                     "roles_links": [], "projects": projects},
            "serviceCatalog": config.catalog()}}),
    )
}

/// `GET /im/authenticate` (Astakos 0.13).
pub async fn authenticate(
    config: &AstakosApiConfig,
    provider: &dyn Provider,
    method: &Method,
    headers: &http::HeaderMap,
    ctx: &AuthContext,
) -> Response<Body> {
    if method != Method::GET {
        return text_fault(StatusCode::BAD_REQUEST, "Method not allowed.");
    }
    let Some(token) = headers
        .get(&crate::forward::names::X_AUTH_TOKEN)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
    else {
        return text_fault(StatusCode::UNAUTHORIZED, "Access denied");
    };
    let identity = match check(config, provider, token, ctx).await {
        Ok(i) => i,
        Err(Ok("Authentication expired")) => {
            return text_fault(StatusCode::UNAUTHORIZED, "Authentication expired");
        }
        Err(Ok(_)) => return text_fault(StatusCode::UNAUTHORIZED, "Invalid X-Auth-Token"),
        Err(Err(())) => return text_fault(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable"),
    };
    // Astakos's numeric user id has no counterpart here: a stable number from the subject.
    let digest = sha256(identity.subject.as_bytes());
    let numeric_id = u64::from_be_bytes([
        0, 0, digest[0], digest[1], digest[2], digest[3], digest[4], digest[5],
    ]);
    let expires = expiry(&identity);
    let mut r = Response::new(Full::new(Bytes::from(
        json!({
            "id": numeric_id, "username": identity.username, "uuid": identity.subject,
            "email": identity.email.iter().collect::<Vec<_>>(), "name": identity.username,
            "groups": identity.roles, "auth_token": token,
            "auth_token_created": Value::Null,
            "auth_token_expires": expires * 1000,
        })
        .to_string(),
    )));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    never_cache(r.headers_mut());
    r
}
