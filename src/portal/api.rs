//! `/api/tokens`: `GET` the caller's tokens (an admin: `?owner=<subject>`, or `?owner=*`
//! for everyone's), `POST` a new one (`{"name", "scopes", "expires_in"}`; the secret comes
//! back once), `DELETE /api/tokens/<id>` to revoke. A token is shown without its secret or
//! hash. Errors are `{"error", "reason"}` with the status of [`PortalError::status`].

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::csrf::check_same_origin;
use super::tokens::{Context, NewToken, Via, status};
use super::{Caller, PortalError, Route, media_type, read_body, secure_headers};
use crate::reply::{Body, json_response};
use crate::store::TokenRecord;

/// The body of a `POST`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    /// Seconds, or a duration such as `"30d"`; absent: `portal.max_lifetime`.
    #[serde(default)]
    expires_in: Option<Lifetime>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Lifetime {
    Seconds(u64),
    Text(String),
}

/// Answers one API request.
pub(super) async fn handle<B>(
    ctx: &Context<'_>,
    route: &Route,
    caller: &Caller<'_>,
    parts: &http::request::Parts,
    body: B,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let answer = match answer(ctx, route, caller, parts, body).await {
        Ok(a) => a,
        Err(e) => error(&e),
    };
    let mut response = answer;
    secure_headers(response.headers_mut());
    response
}

async fn answer<B>(
    ctx: &Context<'_>,
    route: &Route,
    caller: &Caller<'_>,
    parts: &http::request::Parts,
    body: B,
) -> Result<Response<Body>, PortalError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    ctx.may_manage(caller)?;
    let changes = !matches!(parts.method, Method::GET | Method::HEAD);
    if changes && caller.ambient {
        check_same_origin(&parts.headers, &caller.origin)?;
    }
    let query = parts.uri.query().unwrap_or("");
    match (route, &parts.method) {
        (Route::Tokens, &Method::GET | &Method::HEAD) => {
            let owner = listed_owner(ctx, caller, query)?;
            let tokens = ctx.list(owner.as_deref()).await?;
            let now = crate::unix_now();
            let rows: Vec<Value> = tokens.iter().map(|t| token_json(t, now)).collect();
            Ok(json_response(
                StatusCode::OK,
                json!({"owner": owner.as_deref().unwrap_or("*"), "tokens": rows}),
            ))
        }
        (Route::Tokens, &Method::POST) => {
            if form_value(query, "owner").is_some() {
                return Err(PortalError::BadRequest(
                    "tokens are created for the caller only; owner is not taken here".to_owned(),
                ));
            }
            if media_type(&parts.headers).as_deref() != Some("application/json") {
                return Err(PortalError::UnsupportedMediaType("application/json"));
            }
            let bytes = read_body(body).await?;
            // An object only: serde would also read a struct from an array.
            let request: CreateRequest = match serde_json::from_slice::<Value>(&bytes) {
                Ok(v @ Value::Object(_)) => serde_json::from_value(v),
                Ok(_) => Err(serde::de::Error::custom("expected a JSON object")),
                Err(e) => Err(e),
            }
            .map_err(|e| {
                PortalError::BadRequest(format!("the body is not a token request: {e}"))
            })?;
            let lifetime = match request.expires_in {
                None => None,
                Some(Lifetime::Seconds(s)) => Some(Duration::from_secs(s)),
                Some(Lifetime::Text(t)) => Some(humantime::parse_duration(&t).map_err(|e| {
                    PortalError::BadRequest(format!("expires_in '{t}' is not a duration: {e}"))
                })?),
            };
            let new = NewToken {
                name: request.name,
                scopes: request.scopes,
                lifetime,
            };
            let (record, secret) = ctx.create(caller, new, Via::Api).await?;
            let mut token = token_json(&record, crate::unix_now());
            token["secret"] = Value::from(secret.expose());
            Ok(json_response(StatusCode::CREATED, token))
        }
        (Route::Tokens, _) => Err(PortalError::MethodNotAllowed("GET, HEAD, POST")),
        (Route::Token(id), &Method::DELETE) => {
            let token = ctx.revoke(caller, id, Via::Api).await?;
            Ok(json_response(
                StatusCode::OK,
                token_json(&token, crate::unix_now()),
            ))
        }
        (Route::Token(id), &Method::GET | &Method::HEAD) => {
            let token = ctx.find(caller, id).await?;
            Ok(json_response(
                StatusCode::OK,
                token_json(&token, crate::unix_now()),
            ))
        }
        (Route::Token(_), _) => Err(PortalError::MethodNotAllowed("GET, HEAD, DELETE")),
        _ => Err(PortalError::NotFound),
    }
}

/// Whose tokens a `GET` lists: the caller's; an admin's `?owner=` (`*`: everyone's).
fn listed_owner(
    ctx: &Context<'_>,
    caller: &Caller<'_>,
    query: &str,
) -> Result<Option<String>, PortalError> {
    let own = &caller.identity.subject;
    let owners: Vec<String> = form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "owner")
        .map(|(_, v)| v.into_owned())
        .collect();
    match owners.as_slice() {
        [] => Ok(Some(own.clone())),
        [one] if one == own => Ok(Some(own.clone())),
        [_] if !ctx.is_admin(caller.identity) => Err(PortalError::Forbidden(
            "only an admin (portal.admin_role) may list another owner's tokens".to_owned(),
        )),
        [one] if one == "*" => Ok(None),
        [one] => Ok(Some(one.clone())),
        _ => Err(PortalError::BadRequest(
            "owner is given more than once".to_owned(),
        )),
    }
}

/// The first value of `name` in a query string.
fn form_value(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A token as the API shows it: never its secret or hash.
pub(super) fn token_json(t: &TokenRecord, now: i64) -> Value {
    json!({
        "id": t.id,
        "owner": t.owner,
        "name": t.name,
        "scopes": t.scopes,
        "created_at": t.created_at,
        "expires_at": t.expires_at,
        "last_used_at": t.last_used_at,
        "revoked_at": t.revoked_at,
        "status": status(t, now),
    })
}

/// The JSON answer of an error.
fn error(e: &PortalError) -> Response<Body> {
    let mut r = json_response(e.status(), json!({"error": e.code(), "reason": e.reason()}));
    if let PortalError::MethodNotAllowed(allow) = e {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    r
}
