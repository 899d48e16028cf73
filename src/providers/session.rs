//! `session`: the browser session cookie. The cookie is an opaque random id; the session
//! it names lives in the store (see `login`, which creates and ends them). A session is
//! valid until its absolute end and while it is used within the idle timeout; its identity
//! comes from the claims the IdP signed at sign-in, through the issuer's claim mapping.
//! When the IdP's access token nears its expiry, the session's [`SessionRefresher`]
//! refreshes it (the decision cache lets one request of a credential through at a time, so
//! a refresh happens once however many requests arrive together); a refused refresh ends
//! the session.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

use super::{AuthContext, AuthError, ClaimMapping, Provider};
use crate::credential::Credential;
use crate::identity::Identity;
use crate::store::{SessionRecord, Store};

/// An issuer users may sign in with, as the session provider needs it.
#[derive(Debug, Clone)]
pub struct SessionIssuer {
    /// The configured name (stored with each session).
    pub name: String,
    /// The issuer URL (qualifies the subject).
    pub issuer: String,
    /// How its claims become the identity.
    pub claims: ClaimMapping,
}

/// What refreshes a session's IdP tokens (the `login` module, which knows the IdP).
#[async_trait]
pub trait SessionRefresher: Send + Sync {
    /// Refreshes `session`'s tokens at its IdP and stores the result: `Ok(Some)` with the
    /// updated session, `Ok(None)` when the IdP refused (the session is over), an error
    /// when the IdP could not be asked.
    async fn refresh(&self, session: &SessionRecord) -> Result<Option<SessionRecord>, AuthError>;
}

/// The `session` provider.
pub struct SessionProvider {
    store: Arc<dyn Store>,
    issuers: Vec<SessionIssuer>,
    idle_timeout: Duration,
    refresh_before: Duration,
    refresher: Option<Arc<dyn SessionRefresher>>,
}

impl SessionProvider {
    /// Type name.
    pub const KIND: &'static str = "session";

    /// Sessions of `issuers` in `store`, ended after `idle_timeout` without use; the IdP's
    /// access token is refreshed through `refresher` `refresh_before` its expiry.
    pub fn new(
        store: Arc<dyn Store>,
        issuers: Vec<SessionIssuer>,
        idle_timeout: Duration,
        refresh_before: Duration,
        refresher: Option<Arc<dyn SessionRefresher>>,
    ) -> Self {
        Self {
            store,
            issuers,
            idle_timeout,
            refresh_before,
            refresher,
        }
    }

    fn unavailable(e: impl std::fmt::Display) -> AuthError {
        AuthError::Unavailable(format!("session store: {e}"))
    }
}

#[async_trait]
impl Provider for SessionProvider {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn accepts(&self, credential: &Credential) -> bool {
        matches!(credential, Credential::Session(_))
    }

    fn challenge(&self, _realm: &str) -> String {
        String::new()
    }

    async fn authenticate(
        &self,
        credential: &Credential,
        _ctx: &AuthContext,
    ) -> Result<Identity, AuthError> {
        let hash = credential.cache_key();
        let now = crate::unix_now();
        let Some(mut session) = self
            .store
            .get_session(&hash, now)
            .await
            .map_err(Self::unavailable)?
        else {
            return Err(AuthError::Invalid("the session is unknown or has ended"));
        };
        let idle = self.idle_timeout.as_secs() as i64;
        if now - session.last_seen_at > idle {
            if let Err(e) = self.store.delete_session(&hash).await {
                tracing::warn!(error = %e, "could not delete an idle session");
            }
            return Err(AuthError::Invalid("the session has been idle too long"));
        }
        let issuer = self
            .issuers
            .iter()
            .find(|i| i.name == session.issuer)
            .ok_or(AuthError::Invalid(
                "the session's issuer is no longer configured",
            ))?;
        if let (Some(refresher), Some(at)) = (&self.refresher, session.access_expires_at)
            && session.refresh_token.is_some()
            && at - (self.refresh_before.as_secs() as i64) <= now
        {
            match refresher.refresh(&session).await? {
                Some(updated) => session = updated,
                None => {
                    if let Err(e) = self.store.delete_session(&hash).await {
                        tracing::warn!(error = %e, "could not delete a refused session");
                    }
                    return Err(AuthError::Invalid(
                        "the identity provider ended the session",
                    ));
                }
            }
        }
        if let Err(e) = self.store.touch_session(&hash, now).await {
            tracing::warn!(error = %e, "could not record a session's use");
        }
        let claims: Value = serde_json::from_str(&session.claims)
            .map_err(|_| AuthError::Invalid("the session's claims are unreadable"))?;
        let mut identity = issuer
            .claims
            .identity(&claims, Self::KIND, &issuer.issuer, None)?;
        // A person signed in: every scope, as for a local user. The session (not the ID
        // token, which lives minutes) bounds what is minted and cached: its absolute end,
        // the idle deadline, and the access token's refresh time.
        identity.scopes = None;
        let mut until = session.expires_at.min(now + idle);
        if let Some(at) = session.access_expires_at
            && session.refresh_token.is_some()
            && self.refresher.is_some()
        {
            until = until.min((at - self.refresh_before.as_secs() as i64).max(now + 1));
        }
        identity.expires_at = Some(until);
        Ok(identity)
    }
}
