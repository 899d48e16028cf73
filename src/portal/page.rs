//! `/portal`: the pages, rendered from askama templates (`templates/portal/`; every value is
//! HTML-escaped by the engine). Forms post without JavaScript; the one script
//! (`/portal/static/portal.js`) only copies to the clipboard, and the CSP allows scripts and
//! styles from this origin alone (no inline code). Revoking goes through a confirmation
//! page. A new token's secret is shown once, on the answer to the form's POST (never in a
//! URL), with `Cache-Control: no-store`.

use askama::Template;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};

use super::csrf::{FormTokens, check_same_origin};
use super::tokens::{Context, NewToken, Via, status};
use super::{Caller, PortalError, Route, media_type, read_body, secure_headers};
use crate::reply::{Body, empty};
use crate::store::TokenRecord;

/// The pages' policy: scripts, styles and form targets from this origin only; no inline
/// code, no framing, no plugins.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLESHEET: &str = include_str!("static/portal.css");
const SCRIPT: &str = include_str!("static/portal.js");

/// One token, as the pages show it.
struct Row {
    id: String,
    name: String,
    scopes: String,
    created: String,
    expires: String,
    last_used: String,
    revoked: Option<String>,
    status: &'static str,
    live: bool,
}

struct ScopeChoice {
    name: String,
    checked: bool,
}

struct LifetimeChoice {
    seconds: u64,
    label: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "portal/index.html")]
struct IndexPage<'a> {
    user: &'a str,
    subject: &'a str,
    csrf: String,
    tokens: Vec<Row>,
    live: usize,
    max_tokens: usize,
    scopes: Vec<ScopeChoice>,
    lifetimes: Vec<LifetimeChoice>,
    name: String,
    notice: Option<String>,
    error: Option<String>,
}

#[derive(Template)]
#[template(path = "portal/created.html")]
struct CreatedPage<'a> {
    user: &'a str,
    name: &'a str,
    id: &'a str,
    scopes: String,
    expires: String,
    secret: &'a str,
    curl: String,
}

#[derive(Template)]
#[template(path = "portal/confirm.html")]
struct ConfirmPage<'a> {
    user: &'a str,
    csrf: String,
    token: Row,
}

#[derive(Template)]
#[template(path = "portal/error.html")]
struct ErrorPage<'a> {
    user: &'a str,
    status: String,
    reason: String,
}

/// What the create form posted, kept to fill the form again after a refusal.
#[derive(Default)]
struct Posted {
    name: String,
    scopes: Vec<String>,
    expires: Option<u64>,
}

/// The static assets (public: the same bytes for everyone).
pub(super) fn asset(route: &Route, method: &Method) -> Response<Body> {
    let (body, kind) = match route {
        Route::Stylesheet => (STYLESHEET, "text/css; charset=utf-8"),
        Route::Script => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return error_page("", &PortalError::NotFound),
    };
    if method != Method::GET && method != Method::HEAD {
        return error_page("", &PortalError::MethodNotAllowed("GET, HEAD"));
    }
    let mut r = Response::new(Body::new(Bytes::from_static(body.as_bytes())));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    r.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    r
}

/// Answers one page request.
pub(super) async fn handle<B>(
    ctx: &Context<'_>,
    forms: &FormTokens,
    route: &Route,
    caller: &Caller<'_>,
    parts: &http::request::Parts,
    body: B,
) -> Response<Body>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let user = caller.identity.username.as_str();
    if let Err(e) = ctx.may_manage(caller) {
        return error_page(user, &e);
    }
    let method = &parts.method;
    let query = parts.uri.query().unwrap_or("");
    let answer = match (route, method) {
        (Route::Page, &Method::GET | &Method::HEAD) => {
            let notice = revoked_notice(ctx, caller, query).await;
            index(ctx, forms, caller, Posted::default(), notice, None).await
        }
        (Route::Create, &Method::POST) => create(ctx, forms, caller, parts, body).await,
        (Route::Revoke, &Method::GET | &Method::HEAD) => {
            let id = form_values(query.as_bytes(), "id").into_iter().next();
            match ctx.find(caller, id.as_deref().unwrap_or("")).await {
                Ok(token) if token.revoked_at.is_none() => Ok(html(
                    StatusCode::OK,
                    ConfirmPage {
                        user,
                        csrf: forms.token_for(&caller.binding),
                        token: row(&token, crate::unix_now()),
                    }
                    .render(),
                )),
                Ok(token) => Err(PortalError::Conflict(format!(
                    "token {} is revoked already",
                    token.id
                ))),
                Err(e) => Err(e),
            }
        }
        (Route::Revoke, &Method::POST) => revoke(ctx, forms, caller, parts, body).await,
        (Route::Page, _) => Err(PortalError::MethodNotAllowed("GET, HEAD")),
        (Route::Revoke, _) => Err(PortalError::MethodNotAllowed("GET, HEAD, POST")),
        (Route::Create, _) => Err(PortalError::MethodNotAllowed("POST")),
        _ => Err(PortalError::NotFound),
    };
    answer.unwrap_or_else(|e| error_page(user, &e))
}

/// The main page, with the form filled from `posted`, a notice or an error.
async fn index(
    ctx: &Context<'_>,
    forms: &FormTokens,
    caller: &Caller<'_>,
    posted: Posted,
    notice: Option<String>,
    error: Option<&PortalError>,
) -> Result<Response<Body>, PortalError> {
    let identity = caller.identity;
    let now = crate::unix_now();
    let tokens = ctx.list(Some(&identity.subject)).await?;
    let live = tokens.iter().filter(|t| status(t, now) == "active").count();
    let default_lifetime = 30 * 86_400;
    let lifetimes = ctx.lifetimes();
    let chosen = posted.expires.unwrap_or_else(|| {
        lifetimes
            .iter()
            .map(|(s, _)| *s)
            .filter(|s| *s <= default_lifetime)
            .max()
            .unwrap_or(lifetimes[0].0)
    });
    let page = IndexPage {
        user: &identity.username,
        subject: &identity.subject,
        csrf: forms.token_for(&caller.binding),
        tokens: tokens.iter().map(|t| row(t, now)).collect(),
        live,
        max_tokens: ctx.config.max_tokens_per_user,
        scopes: ctx
            .grantable(identity)
            .into_iter()
            .map(|name| ScopeChoice {
                checked: posted.scopes.contains(&name),
                name,
            })
            .collect(),
        lifetimes: lifetimes
            .into_iter()
            .map(|(seconds, label)| LifetimeChoice {
                selected: seconds == chosen,
                seconds,
                label,
            })
            .collect(),
        name: posted.name,
        notice,
        error: error.map(PortalError::reason),
    };
    let status = error.map_or(StatusCode::OK, PortalError::status);
    Ok(html(status, page.render()))
}

/// The create form's POST: the new token's page, or the main page with the refusal.
async fn create<B>(
    ctx: &Context<'_>,
    forms: &FormTokens,
    caller: &Caller<'_>,
    parts: &http::request::Parts,
    body: B,
) -> Result<Response<Body>, PortalError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let form = checked_form(forms, caller, parts, body).await?;
    let expires = match form_values(&form, "expires").first() {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            PortalError::BadRequest("expires must be a number of seconds".to_owned())
        })?),
    };
    let posted = Posted {
        name: form_values(&form, "name")
            .into_iter()
            .next()
            .unwrap_or_default(),
        scopes: form_values(&form, "scope"),
        expires,
    };
    let new = NewToken {
        name: posted.name.clone(),
        scopes: posted.scopes.clone(),
        lifetime: expires.map(std::time::Duration::from_secs),
    };
    let (record, secret) = match ctx.create(caller, new, Via::Page).await {
        Ok(created) => created,
        Err(e @ PortalError::Store(_)) => return Err(e),
        Err(e) => return index(ctx, forms, caller, posted, None, Some(&e)).await,
    };
    let example = ctx
        .config
        .example_url
        .clone()
        .unwrap_or_else(|| format!("{}/", caller.origin.url()));
    let page = CreatedPage {
        user: &caller.identity.username,
        name: &record.name,
        id: &record.id,
        scopes: scopes_text(&record),
        expires: time_or(record.expires_at, "never"),
        secret: secret.expose(),
        curl: format!(
            "curl -H \"Authorization: Bearer {}\" {example}",
            secret.expose()
        ),
    };
    Ok(html(StatusCode::OK, page.render()))
}

/// The confirmation's POST: revokes, then back to the main page (303) with a notice.
async fn revoke<B>(
    ctx: &Context<'_>,
    forms: &FormTokens,
    caller: &Caller<'_>,
    parts: &http::request::Parts,
    body: B,
) -> Result<Response<Body>, PortalError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let form = checked_form(forms, caller, parts, body).await?;
    let id = form_values(&form, "id")
        .into_iter()
        .next()
        .unwrap_or_default();
    let token = ctx.revoke(caller, &id, Via::Page).await?;
    let mut r = empty(StatusCode::SEE_OTHER);
    let location = format!("/portal?revoked={}", token.id);
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure_headers(r.headers_mut());
    Ok(r)
}

/// A form's body once the request passed the CSRF checks: the same origin (for a
/// credential the browser attaches by itself) and the form token (always).
async fn checked_form<B>(
    forms: &FormTokens,
    caller: &Caller<'_>,
    parts: &http::request::Parts,
    body: B,
) -> Result<Bytes, PortalError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if caller.ambient {
        check_same_origin(&parts.headers, &caller.origin)?;
    }
    if media_type(&parts.headers).as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(PortalError::UnsupportedMediaType(
            "application/x-www-form-urlencoded",
        ));
    }
    let form = read_body(body).await?;
    let tokens = form_values(&form, "csrf");
    let presented = match tokens.as_slice() {
        [one] => Some(one.as_str()),
        _ => None,
    };
    forms.check(&caller.binding, presented)?;
    Ok(form)
}

/// After a revocation: "Token ... was revoked", for a token of the caller's that is.
async fn revoked_notice(ctx: &Context<'_>, caller: &Caller<'_>, query: &str) -> Option<String> {
    let id = form_values(query.as_bytes(), "revoked")
        .into_iter()
        .next()?;
    let token = ctx.find(caller, &id).await.ok()?;
    token
        .revoked_at
        .map(|_| format!("Token {} ({}) was revoked.", token.name, token.id))
}

/// Every value of `name` in a form body or query string.
fn form_values(form: &[u8], name: &str) -> Vec<String> {
    form_urlencoded::parse(form)
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

fn row(t: &TokenRecord, now: i64) -> Row {
    let status = status(t, now);
    Row {
        id: t.id.clone(),
        name: t.name.clone(),
        scopes: scopes_text(t),
        created: time_or(Some(t.created_at), "-"),
        expires: time_or(t.expires_at, "never"),
        last_used: time_or(t.last_used_at, "never"),
        revoked: t.revoked_at.map(|at| time_or(Some(at), "-")),
        status,
        live: status == "active",
    }
}

fn scopes_text(t: &TokenRecord) -> String {
    match &t.scopes {
        None => "all of the owner's".to_owned(),
        Some(s) if s.is_empty() => "none".to_owned(),
        Some(s) => s.iter().collect::<Vec<_>>().join(", "),
    }
}

/// A time as `2026-12-01 09:30:00 UTC`.
fn time_or(at: Option<i64>, none: &str) -> String {
    match at.and_then(|s| u64::try_from(s).ok()) {
        None => none.to_owned(),
        Some(s) => {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(s);
            humantime::format_rfc3339_seconds(t)
                .to_string()
                .replacen('T', " ", 1)
                .replacen('Z', " UTC", 1)
        }
    }
}

/// An HTML answer with the portal's security headers.
fn html(status: StatusCode, rendered: askama::Result<String>) -> Response<Body> {
    let body = match rendered {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "token portal: a template failed to render");
            return error_page(
                "",
                &PortalError::BadRequest("the page could not be rendered".to_owned()),
            );
        }
    };
    let mut r = Response::new(Body::new(Bytes::from(body)));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    secure_headers(headers);
    r
}

/// The page of an error (the status of [`PortalError::status`]).
fn error_page(user: &str, e: &PortalError) -> Response<Body> {
    let status = e.status();
    let page = ErrorPage {
        user,
        status: format!(
            "{} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
        reason: e.reason(),
    };
    let mut r = match page.render() {
        Ok(body) => html(status, Ok(body)),
        Err(_) => {
            let mut r = empty(status);
            secure_headers(r.headers_mut());
            r
        }
    };
    if let PortalError::MethodNotAllowed(allow) = e {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_escapes_what_users_write() {
        let page = ErrorPage {
            user: "<b>alice</b>",
            status: "400".into(),
            reason: "<script>alert(1)</script>\"'&".into(),
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<script>alert(1)"), "{html}");
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{html}"
        );
        assert!(!html.contains("<b>alice"), "{html}");
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(time_or(Some(0), "-"), "1970-01-01 00:00:00 UTC");
        assert_eq!(time_or(None, "never"), "never");
        assert_eq!(time_or(Some(-5), "never"), "never");
    }
}
