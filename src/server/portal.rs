//! The token portal's door: `/portal` and `/api/tokens` authenticate their caller through
//! the same decision as `/auth` (credential, cache, providers, policy), judged on the
//! request's own method, host and path (read as Envoy's form reads them: the request's
//! method and `Host`, its own path), so the policy decides who reaches them like any
//! route. An allowed caller goes on to [`crate::portal`]; any other outcome is answered as
//! `/forward-auth` answers it (a browser without a credential is sent to sign in when
//! `server.signin_url` is set; otherwise 401 with every challenge, 403, 400, 503).

use std::net::SocketAddr;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use serde_json::json;

use super::decide::{Endpoint, Outcome};
use super::{App, Body};
use crate::forward::{Family, OriginalRequest};
use crate::policy::Target;
use crate::portal::{Caller, Portal, Route};
use crate::reply::json_response;

use super::respond::Rejection;

impl App {
    /// Answers a portal request.
    pub(super) async fn portal<B>(
        &self,
        portal: &Portal,
        route: Route,
        req: Request<B>,
        peer: SocketAddr,
    ) -> Response<Body>
    where
        B: http_body::Body<Data = bytes::Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if route.is_public() {
            return portal.public(&route, req.method());
        }
        let (parts, body) = req.into_parts();
        let own_target = parts
            .uri
            .path_and_query()
            .map_or("", |pq| pq.as_str())
            .trim_start_matches('/')
            .to_owned();
        let original = OriginalRequest::from_parts(
            &own_request(&parts),
            peer.ip(),
            Family::Envoy,
            Some(&own_target),
            &self.trusted,
        );
        let rule = original.as_ref().ok().and_then(|o| {
            self.policy.matching_rule(&Target {
                method: &o.method,
                host: &o.host,
                path: &o.path,
            })
        });
        let mut provider = "none";
        let outcome = match &original {
            Err(e) => Outcome::Reject(Rejection::BadRequest(e.clone())),
            Ok(o) => self.decide_for(&parts, o, rule, &mut provider).await,
        };
        match (&outcome, &original) {
            (Outcome::Allow { authenticated, .. }, Ok(original)) => {
                let caller = Caller::new(&authenticated.identity, &parts.headers, original);
                portal
                    .handle(route, &caller, &self.cache, &parts, body)
                    .await
            }
            // The portal acts for someone: a rule that lets anyone through gives it nobody.
            (Outcome::AllowAnonymous, _) => {
                let mut r = json_response(
                    StatusCode::UNAUTHORIZED,
                    json!({"error": "unauthorized",
                           "reason": "the token portal needs a credential (its policy rule must not be anonymous)"}),
                );
                self.portal_challenges(&mut r);
                r
            }
            _ => {
                let mut r = self.respond(
                    &outcome,
                    Endpoint::ForwardAuth,
                    &parts,
                    original.as_ref().ok(),
                    self.headers,
                );
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                if r.status() == StatusCode::UNAUTHORIZED {
                    self.portal_challenges(&mut r);
                }
                r
            }
        }
    }

    /// One `WWW-Authenticate` field per scheme: a browser picks Basic out of separate
    /// fields, not out of one that lists several schemes.
    fn portal_challenges(&self, response: &mut Response<Body>) {
        let headers = response.headers_mut();
        headers.remove(header::WWW_AUTHENTICATE);
        for c in &self.portal_challenges {
            headers.append(header::WWW_AUTHENTICATE, c.clone());
        }
    }
}

/// The request as the portal judges it: itself. The headers by which a proxy describes
/// *another* request (`X-Original-*`, `X-Forwarded-Host/-Uri/-Method`) mean nothing here,
/// and reverse proxies such as Caddy and Traefik add `X-Forwarded-Host` to every request
/// they pass on, so they are left out rather than refused as on `/auth/<path>`; `Host`
/// (which those proxies keep) and the path are the request's own.
fn own_request(parts: &http::request::Parts) -> http::request::Parts {
    use crate::forward::names::{
        X_FORWARDED_HOST, X_FORWARDED_METHOD, X_FORWARDED_URI, X_ORIGINAL_METHOD, X_ORIGINAL_URI,
        X_ORIGINAL_URL,
    };
    let mut own = Request::new(());
    *own.method_mut() = parts.method.clone();
    *own.uri_mut() = parts.uri.clone();
    let headers = own.headers_mut();
    *headers = parts.headers.clone();
    for name in [
        &X_ORIGINAL_URL,
        &X_ORIGINAL_URI,
        &X_ORIGINAL_METHOD,
        &X_FORWARDED_URI,
        &X_FORWARDED_METHOD,
        &X_FORWARDED_HOST,
    ] {
        headers.remove(name);
    }
    own.into_parts().0
}
