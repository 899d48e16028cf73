//! The `/oauth2/*` endpoints of browser sign-in (see `login`): `start`, `callback`,
//! `sign_out`, `backchannel-logout` and `userinfo`. Ended sessions leave the decision
//! cache here, at once.

use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use serde_json::json;

use super::respond::{login_error, login_reply};
use super::{App, Body};
use crate::cache::Verdict;
use crate::credential;
use crate::login::{Login, LoginError};
use crate::providers::AuthContext;
use crate::reply::json_response;

impl App {
    /// Answers `/oauth2/<rest>`.
    pub(super) async fn oauth2<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let Some(login) = self.login.clone() else {
            return json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"}));
        };
        let (parts, body) = req.into_parts();
        let query = parts.uri.query();
        let get = parts.method == Method::GET || parts.method == Method::HEAD;
        let result = match parts.uri.path() {
            "/oauth2/start" if get => login.start(query).await,
            "/oauth2/callback" if get => login.callback(query, &parts.headers).await,
            "/oauth2/sign_out" => login.sign_out(&parts.method, query, &parts.headers).await,
            "/oauth2/backchannel-logout" if parts.method == Method::POST => {
                return self.backchannel(&login, &parts, body).await;
            }
            "/oauth2/userinfo" if get => return self.userinfo(&login, &parts, peer).await,
            "/oauth2/start"
            | "/oauth2/callback"
            | "/oauth2/backchannel-logout"
            | "/oauth2/userinfo" => Err(LoginError::BadRequest("method not allowed")),
            _ => return json_response(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
        };
        match result {
            Ok(reply) => {
                for hash in &reply.ended {
                    self.cache.invalidate_key(*hash);
                }
                login_reply(reply)
            }
            Err(e) => login_error(&e, false),
        }
    }

    async fn backchannel<B>(
        &self,
        login: &Login,
        parts: &http::request::Parts,
        body: B,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limited = http_body_util::Limited::new(body, crate::login::MAX_LOGOUT_BODY);
        let Ok(collected) = limited.collect().await else {
            return login_error(
                &LoginError::BadRequest("the body is too large or cut short"),
                true,
            );
        };
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        match login
            .backchannel_logout(content_type, &collected.to_bytes())
            .await
        {
            Ok(ended) => {
                for hash in &ended {
                    self.cache.invalidate_key(*hash);
                }
                let mut r = crate::reply::empty(StatusCode::OK);
                r.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    http::HeaderValue::from_static("no-store"),
                );
                r
            }
            Err(e) => {
                tracing::info!(reason = %e, "back-channel logout refused");
                login_error(&e, true)
            }
        }
    }

    /// The signed-in identity as JSON, for single-page apps (same origin only: it reads the
    /// cookie).
    async fn userinfo(
        &self,
        login: &Login,
        parts: &http::request::Parts,
        peer: SocketAddr,
    ) -> Response<Body> {
        let unauthorized = || {
            json_response(
                StatusCode::UNAUTHORIZED,
                json!({"error": "unauthorized", "reason": "not signed in"}),
            )
        };
        let credential = match credential::session_cookie(&parts.headers, login.cookie_name()) {
            Ok(Some(c)) => c,
            _ => return unauthorized(),
        };
        let ctx = AuthContext {
            client_ip: peer.ip(),
            service_token: None,
        };
        let looked_up = self
            .cache
            .get_or_authenticate(
                credential.cache_key(),
                self.chain.authenticate(&credential, &ctx),
            )
            .await;
        match looked_up {
            Ok((Verdict::Valid(a), _)) => {
                let i = &a.identity;
                json_response(
                    StatusCode::OK,
                    json!({
                        "sub": i.subject,
                        "username": i.username,
                        "email": i.email,
                        "roles": i.roles.iter().collect::<Vec<_>>(),
                        "provider": i.provider,
                        "expires_at": i.expires_at,
                    }),
                )
            }
            Ok((Verdict::Invalid(_), _)) => unauthorized(),
            Err(e) => match &*e {
                crate::providers::AuthError::Unavailable(_) => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "unavailable"}),
                ),
                _ => unauthorized(),
            },
        }
    }
}
