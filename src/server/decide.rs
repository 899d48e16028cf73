//! One decision: the original request, the credential, the cached or fresh identity, the
//! one policy match, the minted JWT, and the log line and metrics of the outcome.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::Response;

use super::respond::Rejection;
use super::{App, Body};
use crate::cache::{Authenticated, Verdict};
use crate::credential;
use crate::forward::{Family, OriginalRequest};
use crate::mint::Minted;
use crate::policy::{Decision, Rule, Target};
use crate::providers::{AuthContext, AuthError};
use crate::telemetry::DecisionRecord;

/// Which decision endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    /// `/auth`, `/ingress-auth`: never a redirect (nginx turns one into a 500).
    Auth,
    /// `/auth/<path>` (Envoy): a redirect only with `server.envoy_redirect`.
    Envoy,
    /// `/forward-auth`: a browser without a credential is redirected to sign in.
    ForwardAuth,
}

/// The outcome of one decision, before it becomes a response.
pub(super) enum Outcome {
    Allow {
        authenticated: Arc<Authenticated>,
        minted: Arc<Minted>,
        /// A cache hit: the credential was seen before, so what is built for it is kept.
        repeated: bool,
    },
    AllowAnonymous,
    /// No valid credential, on a route with `delay_auth_decision`: 200, status Invalid.
    IdentityInvalid,
    Reject(Rejection),
}

impl App {
    pub(super) async fn decide(
        &self,
        parts: http::request::Parts,
        peer: SocketAddr,
        endpoint: Endpoint,
        family: Family,
        suffix: Option<&str>,
    ) -> Response<Body> {
        let started = Instant::now();
        let request_id = self.request_ids.for_request(&parts.headers);
        let original =
            OriginalRequest::from_parts(&parts, peer.ip(), family, suffix, &self.trusted);
        let mut provider = "none";
        // The one policy match of this request: it decides anonymity, the header set, the
        // delayed decision and the verdict.
        let rule = original.as_ref().ok().and_then(|o| {
            self.policy.matching_rule(&Target {
                method: &o.method,
                host: &o.host,
                path: &o.path,
            })
        });
        let outcome = match &original {
            Err(e) => Outcome::Reject(Rejection::BadRequest(e.clone())),
            Ok(original) => self.decide_for(&parts, original, rule, &mut provider).await,
        };
        let (mode, delay) = match rule {
            Some(rule) => (
                rule.headers.unwrap_or(self.headers),
                rule.delay_auth_decision,
            ),
            None => (self.headers, false),
        };
        let outcome = match outcome {
            Outcome::Reject(r) if delay && r.is_unauthenticated() => Outcome::IdentityInvalid,
            other => other,
        };
        let (status_label, subject) = match &outcome {
            Outcome::Allow { authenticated, .. } => {
                ("allow", authenticated.identity.subject.as_str())
            }
            Outcome::AllowAnonymous => ("allow_anonymous", ""),
            Outcome::IdentityInvalid => ("identity_invalid", ""),
            Outcome::Reject(r) => (r.label(), ""),
        };
        let response = self.respond(&outcome, endpoint, &parts, original.as_ref().ok(), mode);
        let elapsed = started.elapsed();
        self.metrics
            .decision(status_label, provider, elapsed.as_secs_f64());
        let (method, host, path) = match &original {
            Ok(o) => (o.method.as_str(), o.host.as_str(), o.path.as_str()),
            Err(_) => (parts.method.as_str(), "", ""),
        };
        self.access.record(&DecisionRecord {
            request_id: &request_id,
            method,
            host,
            path,
            outcome: status_label,
            status: response.status().as_u16(),
            provider,
            subject,
            latency_us: elapsed.as_micros() as u64,
        });
        response
    }

    /// The request's credential: `Authorization`, `X-Auth-Token`, or else a header a
    /// provider names (`X-ECMWF-Key`), whose token is handled as an `X-Auth-Token` one.
    pub(super) fn credential_of(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<Option<crate::credential::Credential>, crate::credential::CredentialError> {
        if let Some(c) = credential::extract(headers)? {
            return Ok(Some(c));
        }
        for name in self.chain.token_headers() {
            if let Some(token) = credential::from_named_header(headers, name)? {
                return Ok(Some(crate::credential::Credential::AuthToken(token)));
            }
        }
        Ok(None)
    }

    /// The provider's answer with the augmenters' additions: what the cache keeps.
    pub(super) async fn authenticate(
        &self,
        credential: &crate::credential::Credential,
        ctx: &AuthContext,
    ) -> Result<crate::providers::Answer, AuthError> {
        let answer = self.chain.authenticate(credential, ctx).await?;
        self.augmenters.apply(answer).await
    }

    pub(super) async fn decide_for(
        &self,
        parts: &http::request::Parts,
        original: &OriginalRequest,
        rule: Option<&Rule>,
        provider: &mut &'static str,
    ) -> Outcome {
        let header_bytes: usize = parts
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        if header_bytes > self.max_header_bytes {
            return Outcome::Reject(Rejection::HeadersTooLarge(header_bytes));
        }
        if rule.is_some_and(Rule::is_anonymous) {
            return Outcome::AllowAnonymous;
        }
        let from_query = || match (&original.query, self.chain.takes_query_token()) {
            (Some(q), true) => credential::from_query(q),
            _ => Ok(None),
        };
        let credential = match self.credential_of(&parts.headers) {
            Ok(Some(c)) => c,
            Ok(None) => match from_query() {
                Ok(Some(c)) => c,
                Ok(None) => match self.session_credential(&parts.headers) {
                    Ok(Some(c)) => c,
                    Ok(None) => return Outcome::Reject(Rejection::NoCredential),
                    Err(e) => return Outcome::Reject(Rejection::BadCredential(e)),
                },
                Err(e) => return Outcome::Reject(Rejection::BadCredential(e)),
            },
            Err(e) => return Outcome::Reject(Rejection::BadCredential(e)),
        };
        let service_token = match credential::service_token(&parts.headers) {
            Ok(t) => t,
            Err(e) => return Outcome::Reject(Rejection::BadCredential(e)),
        };
        let key = match &service_token {
            None => credential.cache_key(),
            // A composite answer depends on both tokens.
            Some(s) => {
                let mut both = credential.cache_key().to_vec();
                both.extend_from_slice(&crate::secret::sha256(s.expose().as_bytes()));
                crate::secret::sha256(&both)
            }
        };
        let ctx = AuthContext {
            client_ip: original.client_ip,
            service_token,
        };
        let looked_up = self
            .cache
            .get_or_authenticate(key, self.authenticate(&credential, &ctx))
            .await;
        // Who answered: the identity says so; otherwise the provider asked first (looked up
        // only off the hot path).
        let first_asked = || {
            self.chain
                .provider_for(&credential)
                .map_or("none", |p| p.kind())
        };
        let (authenticated, hit) = match looked_up {
            Ok((verdict, hit)) => {
                self.metrics.cache(hit);
                match verdict {
                    Verdict::Valid(a) => (a, hit),
                    Verdict::Invalid(reason) => {
                        *provider = first_asked();
                        return Outcome::Reject(Rejection::Invalid(reason));
                    }
                }
            }
            Err(e) => {
                self.metrics.cache(false);
                *provider = first_asked();
                if matches!(&*e, AuthError::Unavailable(_)) {
                    self.metrics.provider_unavailable(provider);
                }
                return Outcome::Reject(Rejection::from(&*e));
            }
        };
        *provider = authenticated.identity.provider;
        let identity = &authenticated.identity;
        // A foreign token accepted within the clock-skew leeway may already be past its own
        // expiry: nothing minted may outlive it, so it gets no JWT at all.
        if identity.expires_at.is_some_and(|e| e <= crate::unix_now()) {
            return Outcome::Reject(Rejection::from(&AuthError::Expired));
        }
        match self.policy.evaluate_rule(rule, Some(identity)) {
            Decision::Allow { audience, .. } => {
                match authenticated.minted_for(
                    &self.minter,
                    audience.as_ref(),
                    crate::unix_now(),
                    hit,
                ) {
                    Ok(minted) => Outcome::Allow {
                        authenticated: authenticated.clone(),
                        minted,
                        repeated: hit,
                    },
                    Err(e) => Outcome::Reject(Rejection::Unavailable(e.to_string())),
                }
            }
            Decision::AllowAnonymous { .. } => Outcome::AllowAnonymous,
            Decision::Unauthenticated => Outcome::Reject(Rejection::NoCredential),
            Decision::Deny { rule, missing } => {
                Outcome::Reject(Rejection::Forbidden { rule, missing })
            }
        }
    }
}
