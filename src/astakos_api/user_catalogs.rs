//! The user catalogs: `POST /account/v1.0/user_catalogs` (a user's token) and
//! `POST /account/v1.0/service/user_catalogs` (a service token), which translate between
//! user uuids and display names. The directory is authgate's: its local users and the
//! owners of its unrevoked API tokens. A subject is both the uuid and the display name, as
//! in the access document (`user.id`, `user.name`); unknown entries are simply absent.

use std::collections::BTreeSet;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value, json};

use super::tokens::unavailable;
use super::{AstakosApiConfig, api_response, fault, post_only};
use crate::credential::Credential;
use crate::providers::{AuthContext, AuthError, Provider};
use crate::reply::Body;
use crate::secret::Secret;
use crate::store::Store;

/// Largest request body read: a service may ask for thousands of uuids at once.
const MAX_BODY: usize = 1024 * 1024;

/// Which names a request asks for.
enum Wanted {
    /// `null` on the service path: the whole directory.
    All,
    Some(BTreeSet<String>),
}

/// `POST /account/v1.0/user_catalogs` (`service`: false) and
/// `POST /account/v1.0/service/user_catalogs` (`service`: true).
pub async fn user_catalogs<B>(
    config: &AstakosApiConfig,
    provider: &dyn Provider,
    store: &dyn Store,
    service: bool,
    parts: &http::request::Parts,
    body: B,
    ctx: &AuthContext,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if parts.method != Method::POST {
        return post_only();
    }
    if let Err(refusal) = caller(config, provider, service, &parts.headers, ctx).await {
        return refusal;
    }
    let Ok(body) = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
    else {
        return malformed();
    };
    let Ok(Value::Object(doc)) = serde_json::from_slice::<Value>(&body) else {
        return malformed();
    };
    let (Some(uuids), Some(names)) = (
        wanted(doc.get("uuids"), service),
        wanted(doc.get("displaynames"), service),
    ) else {
        return malformed();
    };
    let among: Option<Vec<String>> = match (&uuids, &names) {
        (Wanted::Some(a), Wanted::Some(b)) => Some(a.union(b).cloned().collect()),
        _ => None,
    };
    let known = match store.subjects(among.as_deref()).await {
        Ok(known) => known,
        Err(e) => {
            tracing::error!(error = %e, "user catalogs: the store could not be asked");
            return unavailable();
        }
    };
    let catalog = |wanted: &Wanted| -> Map<String, Value> {
        known
            .iter()
            .filter(|k| match wanted {
                Wanted::All => true,
                Wanted::Some(names) => names.contains(*k),
            })
            .map(|k| (k.clone(), Value::String(k.clone())))
            .collect()
    };
    api_response(
        StatusCode::OK,
        &json!({"uuid_catalog": catalog(&uuids), "displayname_catalog": catalog(&names)}),
    )
}

/// Checks the caller's `X-Auth-Token`: a token valid here (as for `/identity/v2.0/tokens`)
/// on the user path, a service token (one holding `service_scope`) on the service path.
async fn caller(
    config: &AstakosApiConfig,
    provider: &dyn Provider,
    service: bool,
    headers: &HeaderMap,
    ctx: &AuthContext,
) -> Result<(), Response<Body>> {
    let unauthorized = |message| fault(StatusCode::UNAUTHORIZED, "unauthorized", message);
    let Some(token) = headers
        .get(&crate::forward::names::X_AUTH_TOKEN)
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty())
    else {
        return Err(unauthorized("Invalid X-Auth-Token"));
    };
    let identity = match provider
        .authenticate(&Credential::AuthToken(Secret::new(token)), ctx)
        .await
    {
        Ok(identity) => identity,
        Err(AuthError::Expired) => return Err(unauthorized("Authentication expired")),
        Err(AuthError::Invalid(_) | AuthError::Declined | AuthError::Forbidden(_)) => {
            return Err(unauthorized("Invalid X-Auth-Token"));
        }
        Err(AuthError::RateLimited { .. } | AuthError::Unavailable(_)) => {
            return Err(unavailable());
        }
    };
    let holds = |scope: &str| identity.scopes.as_ref().is_some_and(|s| s.contains(scope));
    if service && !holds(&config.service_scope) {
        return Err(fault(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Not a service token",
        ));
    }
    if !service && identity.scopes.is_some() && !holds(&config.scope) {
        return Err(unauthorized("Invalid X-Auth-Token"));
    }
    Ok(())
}

/// The names a request asks for: absent is none, `null` none on the user path and all on
/// the service path (as Astakos has it), a list its strings; `None` for anything else.
fn wanted(value: Option<&Value>, service: bool) -> Option<Wanted> {
    match value {
        None => Some(Wanted::Some(BTreeSet::new())),
        Some(Value::Null) if service => Some(Wanted::All),
        Some(Value::Null) => Some(Wanted::Some(BTreeSet::new())),
        Some(Value::Array(items)) => Some(Wanted::Some(
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
        )),
        Some(_) => None,
    }
}

fn malformed() -> Response<Body> {
    fault(
        StatusCode::BAD_REQUEST,
        "badRequest",
        "Request body should be json formatted.",
    )
}
