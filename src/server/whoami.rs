//! `GET /whoami`: the identity a credential stands for, as the policy sees it (after the
//! augmenters), as JSON: what a user or operator runs first when a policy surprises them.
//! It answers from the decision cache like a decision does; never the credential itself, nor
//! a JWT. Without a valid credential: the decision's 401 (403, 503, ...).

use std::net::SocketAddr;

use http::{Method, Response, StatusCode, header};
use serde_json::json;

use super::decide::{Endpoint, Outcome};
use super::respond::Rejection;
use super::{App, Body};
use crate::cache::Verdict;
use crate::providers::AuthContext;
use crate::reply::json_response;

/// The path.
pub(super) const WHOAMI_PATH: &str = "/whoami";

impl App {
    pub(super) async fn whoami(
        &self,
        parts: &http::request::Parts,
        peer: SocketAddr,
    ) -> Response<Body> {
        if parts.method != Method::GET && parts.method != Method::HEAD {
            let mut r = json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "method_not_allowed", "reason": "use GET"}),
            );
            r.headers_mut()
                .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        let rejection = match self.credential_of(&parts.headers) {
            Ok(Some(credential)) => {
                let client_ip = crate::forward::client_ip(&parts.headers, peer.ip(), &self.trusted)
                    .unwrap_or(peer.ip());
                let ctx = AuthContext {
                    client_ip,
                    service_token: None,
                };
                let looked_up = self
                    .cache
                    .get_or_authenticate(
                        credential.cache_key(),
                        self.authenticate(&credential, &ctx),
                    )
                    .await;
                match looked_up {
                    Ok((Verdict::Valid(a), _)) => {
                        let id = &a.identity;
                        if id.expires_at.is_some_and(|e| e <= crate::unix_now()) {
                            Rejection::Expired
                        } else {
                            let mut r = json_response(
                                StatusCode::OK,
                                json!({
                                    "subject": id.subject,
                                    "provider": id.provider,
                                    "username": id.username,
                                    "email": id.email,
                                    "roles": id.roles,
                                    "attributes": id.attributes,
                                    "scopes": id.scopes,
                                    "expires_at": id.expires_at,
                                }),
                            );
                            r.headers_mut().insert(
                                header::CACHE_CONTROL,
                                header::HeaderValue::from_static("no-store"),
                            );
                            return r;
                        }
                    }
                    Ok((Verdict::Invalid(reason), _)) => Rejection::Invalid(reason),
                    Err(e) => Rejection::from(&*e),
                }
            }
            Ok(None) => Rejection::NoCredential,
            Err(e) => Rejection::BadCredential(e),
        };
        self.respond(
            &Outcome::Reject(rejection),
            Endpoint::Auth,
            parts,
            None,
            self.headers,
        )
    }
}
