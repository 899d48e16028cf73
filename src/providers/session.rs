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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::secret::Secret;
    use crate::store::SqliteStore;

    /// Refreshes by pushing the access token's expiry a minute on, or refuses.
    struct Refresher {
        calls: AtomicUsize,
        refuse: bool,
        store: Arc<dyn Store>,
    }

    #[async_trait]
    impl SessionRefresher for Refresher {
        async fn refresh(
            &self,
            session: &SessionRecord,
        ) -> Result<Option<SessionRecord>, AuthError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.refuse {
                return Ok(None);
            }
            let mut s = session.clone();
            s.access_expires_at = Some(crate::unix_now() + 60);
            self.store.replace_session(&s).await.unwrap();
            Ok(Some(s))
        }
    }

    fn record(cookie: &str, last_seen_ago: i64, expires_in: i64, access_in: i64) -> SessionRecord {
        let now = crate::unix_now();
        SessionRecord {
            hash: Credential::Session(Secret::new(cookie)).cache_key(),
            issuer: "main".into(),
            subject: "alice".into(),
            sid: None,
            claims: r#"{"sub":"alice","preferred_username":"Alice","exp":1}"#.into(),
            id_token: Secret::new("id"),
            refresh_token: Some(Secret::new("rt")),
            access_expires_at: Some(now + access_in),
            created_at: now - 100,
            last_seen_at: now - last_seen_ago,
            expires_at: now + expires_in,
        }
    }

    /// Valid, idle past the timeout, past the absolute end, unknown; a refresh when due
    /// (once), and a refused refresh ends the session.
    #[tokio::test]
    async fn sessions_table() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        let refresher = |refuse| {
            Arc::new(Refresher {
                calls: AtomicUsize::new(0),
                refuse,
                store: store.clone(),
            })
        };
        let ok = refresher(false);
        let provider = |r: Arc<Refresher>| {
            SessionProvider::new(
                store.clone(),
                vec![SessionIssuer {
                    name: "main".into(),
                    issuer: "https://idp.example.org".into(),
                    claims: ClaimMapping::default(),
                }],
                Duration::from_secs(600),
                Duration::from_secs(30),
                Some(r as Arc<dyn SessionRefresher>),
            )
        };
        let p = provider(ok.clone());
        let ctx = AuthContext {
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            service_token: None,
        };
        let cookie = |c: &str| Credential::Session(Secret::new(c));
        for (c, r) in [
            ("valid", record("valid", 10, 3600, 300)),
            ("idle", record("idle", 601, 3600, 300)),
            ("due", record("due", 10, 3600, 10)),
        ] {
            let _ = c;
            store.insert_session(&r).await.unwrap();
        }
        let now = crate::unix_now();
        let identity = p.authenticate(&cookie("valid"), &ctx).await.unwrap();
        assert_eq!(identity.provider, "session");
        assert_eq!(identity.scopes, None);
        assert_eq!(identity.native_id.as_deref(), Some("alice"));
        // Bounded by the refresh time (access token in 300 s, refreshed 30 s before).
        let until = identity.expires_at.unwrap();
        assert!((now + 269..=now + 271).contains(&until), "{until}");
        assert_eq!(ok.calls.load(Ordering::SeqCst), 0);

        assert_eq!(
            p.authenticate(&cookie("idle"), &ctx).await,
            Err(AuthError::Invalid("the session has been idle too long"))
        );
        // Gone for good: not even a later, fresh-looking use revives it.
        assert_eq!(
            p.authenticate(&cookie("idle"), &ctx).await,
            Err(AuthError::Invalid("the session is unknown or has ended"))
        );
        assert_eq!(
            p.authenticate(&cookie("unknown"), &ctx).await,
            Err(AuthError::Invalid("the session is unknown or has ended"))
        );
        let mut ended = record("ended", 10, 3600, 300);
        ended.expires_at = now;
        store.insert_session(&ended).await.unwrap();
        assert!(p.authenticate(&cookie("ended"), &ctx).await.is_err());

        p.authenticate(&cookie("due"), &ctx).await.unwrap();
        assert_eq!(ok.calls.load(Ordering::SeqCst), 1);
        p.authenticate(&cookie("due"), &ctx).await.unwrap();
        assert_eq!(ok.calls.load(Ordering::SeqCst), 1, "refreshed once");

        let refusing = refresher(true);
        let p = provider(refusing.clone());
        store
            .insert_session(&record("refused", 10, 3600, 10))
            .await
            .unwrap();
        assert_eq!(
            p.authenticate(&cookie("refused"), &ctx).await,
            Err(AuthError::Invalid(
                "the identity provider ended the session"
            ))
        );
        assert!(
            store
                .get_session(&cookie("refused").cache_key(), now)
                .await
                .unwrap()
                .is_none()
        );
    }
}
