//! `basic`: local users (the "Local" identity provider of Astakos) with argon2id password
//! hashes. Verification is slow by design, so the decision cache keeps successes and
//! failures are rate-limited per user and client address, per client address, and (much
//! higher) per user from all addresses: guesses from one address cannot lock a user out
//! everywhere else.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHasher, SaltString};
use async_trait::async_trait;
use serde::Deserialize;

use self::pool::PasswordPool;
use super::{AuthContext, AuthError, Provider};
use crate::credential::Credential;
use crate::identity::{Identity, local_user_name};
use crate::secret::{Secret, random_bytes, sha256};
use crate::setting::ConfigError;
use crate::store::{Attempt, Store, StoreError};

mod pool;

/// `type: basic` options.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasicConfig {
    /// Failed attempts allowed per user from one client address, and per client address
    /// for all users, within `failure_window` (attempts still being checked count as
    /// failures until they are decided).
    pub max_failures: u32,
    /// Failed attempts allowed per user from all addresses together within
    /// `failure_window`; default 10 x `max_failures`. Much higher than `max_failures`, so
    /// that guesses from a few addresses do not lock the user out of the others, while a
    /// guesser with many addresses still gets no more than this many tries.
    pub max_failures_per_user: Option<u32>,
    /// The window; after `max_failures` failures, further attempts get 429 until it ends.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
}

impl Default for BasicConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            max_failures_per_user: None,
            failure_window: Duration::from_secs(300),
        }
    }
}

impl BasicConfig {
    /// The per-user limit across addresses: as configured, else 10 x `max_failures`.
    pub fn per_user_limit(&self) -> u32 {
        self.max_failures_per_user
            .unwrap_or(self.max_failures.saturating_mul(10))
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.max_failures == 0 {
            return Err(ConfigError::invalid(
                format!("{key}.max_failures"),
                "must be at least 1",
            ));
        }
        if self.per_user_limit() < self.max_failures {
            return Err(ConfigError::invalid(
                format!("{key}.max_failures_per_user"),
                "must be at least max_failures",
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
    /// One password check per core at a time (running or queued for `pool`): each takes
    /// ~50 ms of CPU, so a burst of Basic attempts waits here.
    checks: Arc<tokio::sync::Semaphore>,
    /// The threads that run the checks, each in argon2 memory (19 MiB) of its own that it
    /// reuses: the memory is bounded by the pool's size, not by the traffic.
    pool: PasswordPool,
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
            limiter: FailureLimiter::new(
                config.max_failures,
                config.per_user_limit(),
                config.failure_window,
            ),
            checks: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            )),
            pool: PasswordPool::new(),
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
        // The stored names are NFKC (`user add`), so the login name is looked up in that form
        // too: `ｒｏｏｔ` is `root`, and shares its failure count. A name that could not be
        // stored is looked up as it is, and found only when stored before names were checked.
        let username = local_user_name(username).unwrap_or_else(|_| username.clone());
        let keys = [
            FailureKey::UserAt(username.clone(), ctx.client_ip),
            FailureKey::Ip(ctx.client_ip),
            FailureKey::User(username.clone()),
        ];
        // Reserved before the check, so that parallel guesses cannot all pass the limit:
        // in this process, then in the counters every replica shares (a shared store).
        let attempt = self.limiter.reserve(&keys)?;
        let shared = self.shared_counters(&keys);
        let unavailable = |e: StoreError| AuthError::Unavailable(e.to_string());
        let shared = match self
            .store
            .reserve_attempt(&shared, self.limiter.window)
            .await
            .map_err(unavailable)?
        {
            Attempt::Refused(wait) => {
                return Err(AuthError::RateLimited {
                    retry_after: wait.max(Duration::from_secs(1)),
                });
            }
            Attempt::Admitted => Some(SharedAttempt {
                store: Arc::clone(&self.store),
                counters: shared.into_iter().map(|(name, _)| name).collect(),
            }),
            Attempt::NotShared => None,
        };
        let user = self.store.get_user(&username).await.map_err(unavailable)?;
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
        let ok = self
            .pool
            .verify(password, phc, permit)
            .await
            .map_err(|e| AuthError::Unavailable(format!("password check failed: {e}")))?;
        match user {
            Some(u) if ok => {
                attempt.succeeded();
                if let Some(shared) = shared {
                    shared.forgive().await;
                }
                Ok(Identity {
                    subject: u.username.clone(),
                    native_id: None,
                    provider: Self::KIND,
                    username: u.username,
                    email: u.email,
                    roles: u.roles,
                    attributes: u.attributes,
                    scopes: None,
                    expires_at: None,
                    credential_id: None,
                    client_id: None,
                })
            }
            _ => {
                attempt.failed();
                // The shared attempt stays counted: it was a failure.
                if let Some(shared) = shared {
                    shared.keep();
                }
                Err(AuthError::Invalid("invalid user name or password"))
            }
        }
    }
}

impl BasicProvider {
    /// The names and limits of `keys` in the store's shared counters: hashed, so that user
    /// names and addresses are not stored as such.
    fn shared_counters(&self, keys: &[FailureKey]) -> Vec<(String, u32)> {
        keys.iter()
            .map(|key| {
                let (kind, text) = match key {
                    FailureKey::UserAt(user, ip) => ("ua", format!("{user}\0{ip}")),
                    FailureKey::Ip(ip) => ("ip", ip.to_string()),
                    FailureKey::User(user) => ("u", user.clone()),
                };
                let digest = sha256(text.as_bytes());
                let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
                (format!("{kind}:{hex}"), self.limiter.limit_of(key))
            })
            .collect()
    }
}

/// An attempt counted in the store's shared counters. Unless kept (a failure) or forgiven
/// (a success), it is taken back when dropped: a store error or a cancelled request is not
/// a failed guess.
struct SharedAttempt {
    store: Arc<dyn Store>,
    counters: Vec<String>,
}

impl SharedAttempt {
    /// The attempt stays counted.
    fn keep(mut self) {
        self.counters.clear();
    }

    /// Takes the attempt back; a store that cannot be reached leaves it counted (stricter,
    /// never looser).
    async fn forgive(mut self) {
        let counters = std::mem::take(&mut self.counters);
        if let Err(e) = self.store.forgive_attempt(&counters).await {
            tracing::warn!(error = %e, "cannot take back a shared Basic attempt");
        }
    }
}

impl Drop for SharedAttempt {
    fn drop(&mut self) {
        if self.counters.is_empty() {
            return;
        }
        // Dropped without an outcome: taken back in the background (Drop cannot wait).
        let counters = std::mem::take(&mut self.counters);
        let store = Arc::clone(&self.store);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = store.forgive_attempt(&counters).await {
                    tracing::warn!(error = %e, "cannot take back a shared Basic attempt");
                }
            });
        }
    }
}

/// What failures are counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FailureKey {
    /// One user from one client address: `max_failures`.
    UserAt(String, IpAddr),
    /// One client address, whichever users it tries: `max_failures`.
    Ip(IpAddr),
    /// One user from all addresses: `max_failures_per_user`, much higher, so that nobody
    /// locks a user out from everywhere with a handful of guesses.
    User(String),
}

/// One key's fixed window: the failures counted in it, and the attempts whose password
/// check is still running (each of which may yet become a failure).
#[derive(Debug)]
struct Window {
    start: Instant,
    failures: u32,
    pending: u32,
}

type SharedWindow = Arc<Mutex<Window>>;

/// Fixed-window failure counters, bounded in size and forgotten after the window.
///
/// An attempt is reserved before its password is checked and counts against the limit while
/// the check runs: checking first and counting afterwards would let a burst of parallel
/// guesses all pass the check before the first failure is recorded.
struct FailureLimiter {
    /// The limit of [`FailureKey::UserAt`] and [`FailureKey::Ip`].
    max_failures: u32,
    /// The limit of [`FailureKey::User`].
    max_failures_per_user: u32,
    window: Duration,
    windows: moka::sync::Cache<FailureKey, SharedWindow>,
}

/// An attempt admitted by [`FailureLimiter::reserve`]. Dropped without an outcome (store
/// error, cancelled request) it is released without counting as a failure.
#[must_use]
struct Reservation<'a> {
    limiter: &'a FailureLimiter,
    held: Vec<(FailureKey, SharedWindow)>,
}

impl FailureLimiter {
    fn new(max_failures: u32, max_failures_per_user: u32, window: Duration) -> Self {
        Self {
            max_failures,
            max_failures_per_user,
            window,
            windows: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(window)
                .build(),
        }
    }

    fn window_of(&self, key: &FailureKey, now: Instant) -> SharedWindow {
        self.windows.get_with(key.clone(), || {
            Arc::new(Mutex::new(Window {
                start: now,
                failures: 0,
                pending: 0,
            }))
        })
    }

    /// Starts a new window when the current one has ended.
    fn roll(&self, w: &mut Window, now: Instant) {
        if now >= w.start + self.window {
            w.start = now;
            w.failures = 0;
        }
    }

    fn limit_of(&self, key: &FailureKey) -> u32 {
        match key {
            FailureKey::UserAt(..) | FailureKey::Ip(_) => self.max_failures,
            FailureKey::User(_) => self.max_failures_per_user,
        }
    }

    /// Admits one attempt against every key, or none: refused (429) when a key's failures
    /// and attempts in flight already reach its limit.
    fn reserve(&self, keys: &[FailureKey]) -> Result<Reservation<'_>, AuthError> {
        let now = Instant::now();
        let mut reservation = Reservation {
            limiter: self,
            held: Vec::with_capacity(keys.len()),
        };
        for key in keys {
            let shared = self.window_of(key, now);
            let limit = self.limit_of(key);
            {
                let mut w = lock(&shared);
                self.roll(&mut w, now);
                if w.failures.saturating_add(w.pending) >= limit {
                    // Failures block until the window ends; attempts in flight only until
                    // they are decided.
                    let retry_after = if w.failures >= limit {
                        (w.start + self.window).saturating_duration_since(now)
                    } else {
                        Duration::ZERO
                    };
                    // Dropping `reservation` releases the keys reserved so far.
                    return Err(AuthError::RateLimited {
                        retry_after: retry_after.max(Duration::from_secs(1)),
                    });
                }
                w.pending += 1;
            }
            reservation.held.push((key.clone(), shared));
        }
        Ok(reservation)
    }
}

impl Reservation<'_> {
    /// The password was right: the attempt counts for nothing.
    fn succeeded(mut self) {
        self.release(false);
    }

    /// The password (or user) was wrong: the attempt becomes a failure of every key.
    fn failed(mut self) {
        self.release(true);
    }

    fn release(&mut self, failed: bool) {
        let now = Instant::now();
        for (key, held) in self.held.drain(..) {
            {
                let mut w = lock(&held);
                w.pending = w.pending.saturating_sub(1);
            }
            if failed {
                // The entry may have expired (or been evicted) while the check ran: the
                // failure counts in the key's current window, whichever that is.
                let current = self.limiter.window_of(&key, now);
                let mut w = lock(&current);
                self.limiter.roll(&mut w, now);
                w.failures = w.failures.saturating_add(1);
            }
        }
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.release(false);
    }
}

/// The window, even if a thread panicked while holding it (its counters stay meaningful).
fn lock(w: &Mutex<Window>) -> std::sync::MutexGuard<'_, Window> {
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::identity::Names;

    use super::*;
    use crate::store::{SqliteStore, UserRecord};

    #[test]
    fn argon2_round_trip() {
        let allocated = AtomicUsize::new(0);
        let mut blocks = Vec::new();
        let mut verify =
            |password: &str, phc: &str| pool::verify_into(password, phc, &mut blocks, &allocated);
        let phc = hash_password(&Secret::new("correct horse")).unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify("correct horse", &phc));
        assert!(!verify("correct horsf", &phc));
        assert!(!verify("x", "not a phc string"));
        let again = hash_password(&Secret::new("correct horse")).unwrap();
        assert_ne!(phc, again, "salted");
        assert!(verify("correct horse", &again));
        // The unknown-user check costs what a real one does: same algorithm and parameters,
        // so the same memory (the buffer sized by the real hash is not grown for it).
        let params = |phc: &str| phc.split('$').take(4).collect::<Vec<_>>().join("$");
        assert_eq!(params(DUMMY_HASH), params(&phc));
        assert!(!verify("correct horse", DUMMY_HASH));
        assert_eq!(allocated.load(Ordering::Relaxed), 1);
        assert_eq!(blocks.len(), 19 * 1024);
    }

    /// Right and wrong passwords and unknown users (the dummy hash) all run on the pool,
    /// whose workers allocate their argon2 memory once each, not once per check.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checks_reuse_the_pool_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_alice(&dir).await;
        let p = BasicProvider::new(&config(100, None, Duration::from_secs(60)), store);
        assert_eq!(p.pool.buffers_allocated(), 0);
        // An unknown user: refused, after a full check against the dummy hash.
        assert_eq!(
            p.authenticate(&cred("nobody", "pw"), &ctx("192.0.2.1"))
                .await,
            BAD
        );
        assert_eq!(p.pool.buffers_allocated(), 1);
        for i in 0..12 {
            let id = p
                .authenticate(&cred("alice", "pw"), &ctx("192.0.2.1"))
                .await
                .unwrap();
            assert_eq!(id.subject, "alice");
            assert_eq!(
                p.authenticate(&cred("alice", &format!("no-{i}")), &ctx("192.0.2.1"))
                    .await,
                BAD
            );
        }
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let buffers = p.pool.buffers_allocated();
        assert!(
            buffers <= workers.clamp(1, 4),
            "{buffers} buffers for 25 checks"
        );
    }

    /// A store in `dir` with user `alice`, password `pw`, role `staff`.
    async fn store_with_alice(dir: &tempfile::TempDir) -> Arc<dyn Store> {
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
        store
    }

    fn cred(user: &str, password: &str) -> Credential {
        Credential::Basic {
            username: user.into(),
            password: Secret::new(password),
        }
    }

    fn ctx(ip: &str) -> AuthContext {
        AuthContext {
            client_ip: ip.parse().unwrap(),
            service_token: None,
        }
    }

    fn config(max_failures: u32, per_user: Option<u32>, window: Duration) -> BasicConfig {
        BasicConfig {
            max_failures,
            max_failures_per_user: per_user,
            failure_window: window,
        }
    }

    const BAD: Result<Identity, AuthError> =
        Err(AuthError::Invalid("invalid user name or password"));

    fn limited_for_the_window(r: Result<Identity, AuthError>) -> bool {
        matches!(r, Err(AuthError::RateLimited { retry_after }) if retry_after > Duration::from_secs(50))
    }

    #[tokio::test]
    async fn verifies_and_rate_limits() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_alice(&dir).await;
        let p = BasicProvider::new(&config(2, None, Duration::from_secs(60)), store);

        let id = p
            .authenticate(&cred("alice", "pw"), &ctx("192.0.2.1"))
            .await
            .unwrap();
        assert_eq!(id.subject, "alice");
        assert_eq!(id.roles, Names::from(["staff"]));
        assert_eq!(id.scopes, None);
        assert_eq!(
            p.authenticate(&cred("alice", "no"), &ctx("192.0.2.1"))
                .await,
            BAD
        );
        assert_eq!(
            p.authenticate(&cred("nobody", "no"), &ctx("192.0.2.2"))
                .await,
            BAD
        );
        assert_eq!(
            p.authenticate(&cred("alice", "no"), &ctx("192.0.2.2"))
                .await,
            BAD
        );
        // 192.0.2.2 has 2 failures: every user from there waits, with the right password
        // too.
        for user in ["alice", "carol"] {
            assert!(limited_for_the_window(
                p.authenticate(&cred(user, "pw"), &ctx("192.0.2.2")).await
            ));
        }
        // 192.0.2.1 has one, alice two in all (of 20): she still gets in from there.
        assert_eq!(
            p.authenticate(&cred("alice", "pw"), &ctx("192.0.2.1"))
                .await
                .unwrap()
                .subject,
            "alice"
        );
    }

    /// Five wrong passwords for alice from one address lock that address out, not alice:
    /// she still signs in from her own.
    #[tokio::test]
    async fn an_address_cannot_lock_a_user_out_of_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_alice(&dir).await;
        let config = config(5, None, Duration::from_secs(600));
        let p = BasicProvider::new(&config, store);
        for i in 0..config.max_failures {
            assert_eq!(
                p.authenticate(&cred("alice", &format!("guess-{i}")), &ctx("203.0.113.66"))
                    .await,
                BAD
            );
        }
        assert!(limited_for_the_window(
            p.authenticate(&cred("alice", "pw"), &ctx("203.0.113.66"))
                .await
        ));
        // The per-address limit stays: no other user from there either.
        assert!(limited_for_the_window(
            p.authenticate(&cred("carol", "guess"), &ctx("203.0.113.66"))
                .await
        ));
        let id = p
            .authenticate(&cred("alice", "pw"), &ctx("192.0.2.1"))
            .await
            .unwrap();
        assert_eq!(id.subject, "alice");
    }

    /// 200 parallel guesses for `user`, from one address or each from its own; counts
    /// (checked, limited). Every answer but a 429 is one argon2 verification.
    async fn parallel_guesses(p: &Arc<BasicProvider>, one_address: bool) -> (u32, u32) {
        let start = Arc::new(tokio::sync::Barrier::new(200));
        let tasks: Vec<_> = (0..200u32)
            .map(|i| {
                let (p, start) = (p.clone(), start.clone());
                tokio::spawn(async move {
                    let ip = if one_address {
                        "203.0.113.66".to_owned()
                    } else {
                        format!("10.0.{}.{}", i / 256, i % 256)
                    };
                    start.wait().await;
                    p.authenticate(&cred("alice", &format!("guess-{i}")), &ctx(&ip))
                        .await
                })
            })
            .collect();
        let (mut checked, mut limited) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Err(AuthError::Invalid("invalid user name or password")) => checked += 1,
                Err(AuthError::RateLimited { retry_after }) => {
                    assert!(retry_after >= Duration::from_secs(1), "{retry_after:?}");
                    limited += 1;
                }
                other => panic!("unexpected answer {other:?}"),
            }
        }
        (checked, limited)
    }

    /// 200 parallel wrong passwords for one user from one address: only `max_failures` of
    /// them reach argon2, the others are refused before it; the user still signs in from
    /// elsewhere.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_guesses_cannot_pass_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_alice(&dir).await;
        let config = config(5, None, Duration::from_secs(600));
        let p = Arc::new(BasicProvider::new(&config, store));
        let (checked, limited) = parallel_guesses(&p, true).await;
        assert_eq!(checked, config.max_failures);
        assert_eq!(limited, 200 - config.max_failures);
        // Now the failures are in: even the right password waits there for the window...
        assert!(limited_for_the_window(
            p.authenticate(&cred("alice", "pw"), &ctx("203.0.113.66"))
                .await
        ));
        // ... but not from another address.
        let id = p
            .authenticate(&cred("alice", "pw"), &ctx("192.0.2.9"))
            .await
            .unwrap();
        assert_eq!(id.subject, "alice");
    }

    /// 200 parallel wrong passwords for one user, each from its own address: only
    /// `max_failures_per_user` of them reach argon2; then the user waits everywhere.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_guesses_from_many_addresses_meet_the_per_user_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_alice(&dir).await;
        let config = config(5, Some(12), Duration::from_secs(600));
        let p = Arc::new(BasicProvider::new(&config, store));
        let (checked, limited) = parallel_guesses(&p, false).await;
        assert_eq!(checked, 12);
        assert_eq!(limited, 200 - 12);
        assert!(limited_for_the_window(
            p.authenticate(&cred("alice", "pw"), &ctx("192.0.2.9"))
                .await
        ));
        // Other users are not held back by alice's count.
        assert_eq!(
            p.authenticate(&cred("carol", "no"), &ctx("192.0.2.9"))
                .await,
            BAD
        );
    }

    #[tokio::test]
    async fn right_password_works_again_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_alice(&dir).await;
        let p = BasicProvider::new(&config(1, None, Duration::from_millis(300)), store);
        assert_eq!(
            p.authenticate(&cred("alice", "no"), &ctx("192.0.2.1"))
                .await,
            BAD
        );
        assert!(matches!(
            p.authenticate(&cred("alice", "pw"), &ctx("192.0.2.1"))
                .await,
            Err(AuthError::RateLimited { .. })
        ));
        tokio::time::sleep(Duration::from_millis(400)).await;
        let id = p
            .authenticate(&cred("alice", "pw"), &ctx("192.0.2.1"))
            .await
            .unwrap();
        assert_eq!(id.subject, "alice");
    }

    #[test]
    fn reservations_count_until_decided_and_roll_back_together() {
        let limiter = FailureLimiter::new(2, 3, Duration::from_secs(60));
        let user = |u: &str| FailureKey::User(u.into());
        let ip = |a: &str| FailureKey::Ip(a.parse().unwrap());
        let limited = |r: Result<Reservation<'_>, AuthError>| matches!(r, Err(AuthError::RateLimited { retry_after }) if retry_after == Duration::from_secs(1));

        // Three attempts in flight fill alice's limit; a success gives its place back.
        let a1 = limiter.reserve(&[user("alice"), ip("192.0.2.1")]).unwrap();
        let a2 = limiter.reserve(&[user("alice"), ip("192.0.2.2")]).unwrap();
        let a3 = limiter.reserve(&[user("alice"), ip("192.0.2.8")]).unwrap();
        assert!(limited(limiter.reserve(&[user("alice"), ip("192.0.2.3")])));
        a1.succeeded();
        let a4 = limiter.reserve(&[user("alice"), ip("192.0.2.3")]).unwrap();

        // 192.0.2.2 is full (a2 and b1): bob is refused there, and his own reservation
        // is rolled back, so he still has all three attempts elsewhere.
        let b1 = limiter.reserve(&[user("carol"), ip("192.0.2.2")]).unwrap();
        assert!(limited(limiter.reserve(&[user("bob"), ip("192.0.2.2")])));
        let b2 = limiter.reserve(&[user("bob"), ip("192.0.2.4")]).unwrap();
        let b3 = limiter.reserve(&[user("bob"), ip("192.0.2.5")]).unwrap();
        let b4 = limiter.reserve(&[user("bob"), ip("192.0.2.6")]).unwrap();
        drop((b1, b2, b3, b4));

        // Failures stay for the window; a dropped (undecided) attempt does not count.
        a2.failed();
        a3.failed();
        drop(a4);
        let a5 = limiter.reserve(&[user("alice"), ip("192.0.2.6")]).unwrap();
        a5.failed();
        assert!(matches!(
            limiter.reserve(&[user("alice"), ip("192.0.2.7")]),
            Err(AuthError::RateLimited { retry_after }) if retry_after > Duration::from_secs(50)
        ));
        // One user from one address has the lower limit.
        let at = |u: &str, a: &str| FailureKey::UserAt(u.into(), a.parse().unwrap());
        limiter
            .reserve(&[at("dave", "192.0.2.9")])
            .unwrap()
            .failed();
        limiter
            .reserve(&[at("dave", "192.0.2.9")])
            .unwrap()
            .failed();
        assert!(limiter.reserve(&[at("dave", "192.0.2.9")]).is_err());
        limiter
            .reserve(&[at("dave", "192.0.2.10")])
            .unwrap()
            .failed();
    }

    /// The per-address window and the per-user-and-address one start at different times:
    /// when the address's ends, the user's failures from there still count.
    #[tokio::test]
    async fn a_user_from_one_address_keeps_its_own_count() {
        let limiter = FailureLimiter::new(2, 20, Duration::from_secs(1));
        let keys = |user: &str| {
            let ip: IpAddr = "203.0.113.66".parse().unwrap();
            [
                FailureKey::UserAt(user.into(), ip),
                FailureKey::Ip(ip),
                FailureKey::User(user.into()),
            ]
        };
        // The address's window starts with carol, alice's from there 0.4 s later.
        limiter.reserve(&keys("carol")).unwrap().failed();
        tokio::time::sleep(Duration::from_millis(400)).await;
        limiter.reserve(&keys("alice")).unwrap().failed();
        // The address's window has ended (its count is 0), alice's from there has not.
        tokio::time::sleep(Duration::from_millis(700)).await;
        limiter.reserve(&keys("alice")).unwrap().failed();
        assert!(matches!(
            limiter.reserve(&keys("alice")),
            Err(AuthError::RateLimited { .. })
        ));
        limiter.reserve(&keys("carol")).unwrap().succeeded();
    }

    #[test]
    fn per_user_limit_defaults_to_ten_times_max_failures() {
        use crate::config::Config;
        use crate::providers::ProviderConfig;
        let basic = |yaml: &str| match Config::from_yaml(yaml).unwrap().providers.0.remove(0) {
            ProviderConfig::Basic(b) => b,
            _ => panic!("not basic"),
        };
        let b = basic("providers: [ { type: basic, max_failures: 3 } ]");
        assert_eq!((b.max_failures, b.per_user_limit()), (3, 30));
        let b = basic("providers: [ { type: basic, max_failures: 3, max_failures_per_user: 7 } ]");
        assert_eq!((b.max_failures, b.per_user_limit()), (3, 7));
        assert_eq!(BasicConfig::default().per_user_limit(), 50);
        let err = Config::from_yaml(
            "providers: [ { type: basic, max_failures: 3, max_failures_per_user: 2 } ]",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("providers[0].max_failures_per_user"), "{err}");
    }

    #[tokio::test]
    async fn login_names_are_nfkc() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_alice(&dir).await;
        // The per-user limit as low as the others, so that it is alice's count that holds.
        let p = BasicProvider::new(&config(2, Some(2), Duration::from_secs(60)), store);
        // Fullwidth `ａｌｉｃｅ` is `alice`: her account, her subject, her password.
        let id = p
            .authenticate(&cred("ａｌｉｃｅ", "pw"), &ctx("192.0.2.1"))
            .await
            .unwrap();
        assert_eq!(
            (id.subject.as_str(), id.username.as_str()),
            ("alice", "alice")
        );
        // ...and her failure count: two wrong guesses under look-alike names, from two
        // addresses, lock `alice` from a third.
        for (name, ip) in [("ａｌｉｃｅ", "192.0.2.2"), ("ａlice", "192.0.2.4")] {
            assert_eq!(p.authenticate(&cred(name, "no"), &ctx(ip)).await, BAD);
        }
        assert!(matches!(
            p.authenticate(&cred("alice", "pw"), &ctx("192.0.2.3"))
                .await,
            Err(AuthError::RateLimited { .. })
        ));
    }
}
