//! `basic`: local users (the "Local" identity provider of Astakos) with argon2id password
//! hashes. Verification is slow by design, so the decision cache keeps successes and
//! failures are rate-limited per user and per client address.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use async_trait::async_trait;
use serde::Deserialize;

use super::{AuthContext, AuthError, Provider};
use crate::config::ConfigError;
use crate::credential::Credential;
use crate::identity::Identity;
use crate::secret::{Secret, random_bytes};
use crate::store::Store;

/// `type: basic` options.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasicConfig {
    /// Failed attempts allowed per user and per client address within `failure_window`.
    pub max_failures: u32,
    /// The window; after `max_failures` failures, further attempts get 429 until it ends.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
}

impl Default for BasicConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            failure_window: Duration::from_secs(300),
        }
    }
}

impl BasicConfig {
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.max_failures == 0 {
            return Err(ConfigError::invalid(
                format!("{key}.max_failures"),
                "must be at least 1",
            ));
        }
        if self.failure_window.is_zero() {
            return Err(ConfigError::invalid(
                format!("{key}.failure_window"),
                "must be longer than 0s",
            ));
        }
        Ok(())
    }
}

/// The `basic` provider.
pub struct BasicProvider {
    store: Arc<dyn Store>,
    limiter: FailureLimiter,
    /// One password check per core at a time: each takes argon2's 19 MiB and ~50 ms of
    /// CPU, so a burst of Basic attempts queues instead of taking memory without bound.
    checks: Arc<tokio::sync::Semaphore>,
}

/// An argon2id hash (default parameters, as [`hash_password`] makes) of a random password
/// nobody kept, verified when the user does not exist so that unknown and known users take
/// the same time. A constant rather than hashed at start-up: hashing takes argon2's 19 MiB
/// and ~50 ms in every process that builds the provider chain. An unknown user is refused
/// whatever this check says.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$uMkOOF3MauL9eV1qDNW6bA$5BlaYEIqZ2jUSxyZ8V4Arbs/cmz0rAyge80p0bPc11E";

impl BasicProvider {
    /// Type name.
    pub const KIND: &'static str = "basic";

    /// Over `store`.
    pub fn new(config: &BasicConfig, store: Arc<dyn Store>) -> Self {
        Self {
            store,
            limiter: FailureLimiter::new(config.max_failures, config.failure_window),
            checks: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
        }
    }
}

/// argon2id PHC hash of `password` with a random salt.
pub fn hash_password(password: &Secret) -> Result<String, argon2::password_hash::Error> {
    let salt = random_bytes::<16>().map_err(|_| argon2::password_hash::Error::Crypto)?;
    let salt = SaltString::encode_b64(&salt)?;
    Ok(Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)?
        .to_string())
}

fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[async_trait]
impl Provider for BasicProvider {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn accepts(&self, credential: &Credential) -> bool {
        matches!(credential, Credential::Basic { .. })
    }

    fn challenge(&self, realm: &str) -> String {
        format!("Basic realm=\"{realm}\", charset=\"UTF-8\"")
    }

    async fn authenticate(
        &self,
        credential: &Credential,
        ctx: &AuthContext,
    ) -> Result<Identity, AuthError> {
        let Credential::Basic { username, password } = credential else {
            return Err(AuthError::Invalid("not a Basic credential"));
        };
        let keys = [
            FailureKey::User(username.clone()),
            FailureKey::Ip(ctx.client_ip),
        ];
        self.limiter.check(&keys)?;
        let user = self
            .store
            .get_user(username)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let phc = user
            .as_ref()
            .map_or_else(|| DUMMY_HASH.to_owned(), |u| u.password_hash.clone());
        let password = password.clone();
        let permit = self
            .checks
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| AuthError::Unavailable(format!("password check failed: {e}")))?;
        let ok = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_password(password.expose(), &phc)
        })
        .await
        .map_err(|e| AuthError::Unavailable(format!("password check failed: {e}")))?;
        match user {
            Some(u) if ok => Ok(Identity {
                subject: u.username.clone(),
                provider: Self::KIND,
                username: u.username,
                email: u.email,
                roles: u.roles,
                attributes: u.attributes,
                scopes: None,
                expires_at: None,
                credential_id: None,
            }),
            _ => {
                self.limiter.record_failure(&keys);
                Err(AuthError::Invalid("invalid user name or password"))
            }
        }
    }
}

/// What failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FailureKey {
    User(String),
    Ip(IpAddr),
}

/// Fixed-window failure counters, bounded in size and forgotten after the window.
struct FailureLimiter {
    max_failures: u32,
    window: Duration,
    windows: moka::sync::Cache<FailureKey, Arc<Mutex<(Instant, u32)>>>,
}

impl FailureLimiter {
    fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            windows: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
        }
    }

    fn check(&self, keys: &[FailureKey]) -> Result<(), AuthError> {
        let now = Instant::now();
        for key in keys {
            if let Some(w) = self.windows.get(key)
                && let Ok(w) = w.lock()
            {
                let (start, failures) = *w;
                let end = start + self.window;
                if failures >= self.max_failures && now < end {
                    let retry_after = (end - now).max(Duration::from_secs(1));
                    return Err(AuthError::RateLimited { retry_after });
                }
            }
        }
        Ok(())
    }

    fn record_failure(&self, keys: &[FailureKey]) {
        let now = Instant::now();
        for key in keys {
            let w = self
                .windows
                .get_with(key.clone(), || Arc::new(Mutex::new((now, 0))));
            if let Ok(mut w) = w.lock() {
                if now >= w.0 + self.window {
                    *w = (now, 0);
                }
                w.1 += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::identity::Names;

    use super::*;
    use crate::store::{SqliteStore, UserRecord};

    #[test]
    fn argon2_round_trip() {
        let phc = hash_password(&Secret::new("correct horse")).unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct horsf", &phc));
        assert!(!verify_password("x", "not a phc string"));
        let again = hash_password(&Secret::new("correct horse")).unwrap();
        assert_ne!(phc, again, "salted");
        // The unknown-user check costs what a real one does: same algorithm and parameters.
        let params = |phc: &str| phc.split('$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(params(DUMMY_HASH), params(&phc));
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }

    #[tokio::test]
    async fn verifies_and_rate_limits() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("u.db")).unwrap());
        store
            .insert_user(&UserRecord {
                username: "alice".into(),
                password_hash: hash_password(&Secret::new("pw")).unwrap(),
                email: None,
                roles: Names::from(["staff"]),
                attributes: Default::default(),
                created_at: 0,
            })
            .await
            .unwrap();
        let config = BasicConfig {
            max_failures: 2,
            failure_window: Duration::from_secs(60),
        };
        let p = BasicProvider::new(&config, store);
        let ctx = AuthContext {
            client_ip: "192.0.2.1".parse().unwrap(),
            service_token: None,
        };
        let other_ctx = AuthContext {
            client_ip: "192.0.2.2".parse().unwrap(),
            service_token: None,
        };
        let cred = |u: &str, pw: &str| Credential::Basic {
            username: u.into(),
            password: Secret::new(pw),
        };

        let id = p.authenticate(&cred("alice", "pw"), &ctx).await.unwrap();
        assert_eq!(id.subject, "alice");
        assert_eq!(id.roles, Names::from(["staff"]));
        assert_eq!(id.scopes, None);
        let bad = Err(AuthError::Invalid("invalid user name or password"));
        assert_eq!(p.authenticate(&cred("alice", "no"), &ctx).await, bad);
        assert_eq!(p.authenticate(&cred("nobody", "no"), &other_ctx).await, bad);
        assert_eq!(p.authenticate(&cred("alice", "no"), &other_ctx).await, bad);
        // alice has 2 failures now: even the right password waits.
        assert!(matches!(
            p.authenticate(&cred("alice", "pw"), &other_ctx).await,
            Err(AuthError::RateLimited { retry_after }) if retry_after <= Duration::from_secs(60)
        ));
        // 192.0.2.2 has 2 failures: another user from there waits too.
        assert!(matches!(
            p.authenticate(&cred("carol", "pw"), &other_ctx).await,
            Err(AuthError::RateLimited { .. })
        ));
    }
}
