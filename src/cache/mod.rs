//! The decision cache: answers per credential (keyed by its SHA-256), bounded by the
//! credential's own expiry and `cache.max_ttl`; invalid credentials for `cache.negative_ttl`.
//! Concurrent misses for one credential share one provider call. It also notes when API
//! tokens were used, so the store is written in batches, not per request.
//!
//! Built for this job rather than taken from a general cache crate, in four parts: `table`
//! (a sharded hash map of key -> answer with an expiry time and a second-chance bit for
//! eviction when full), `inflight` (the lookups in flight beside it), `interned` (identities
//! and what is kept for their reuse) and `uses` (last uses, written in batches). The clock
//! is passed in ([`Clock`]), so tests move time instead of waiting for it.
//!
//! What an entry costs (bench/README.md has the measurements): 64 bytes in the table (the
//! 32-byte key, the 16-byte answer, its expiry and second-chance bit; a test holds it to
//! that), ~82 with the hash table's control bytes and slack, where moka's bookkeeping was
//! ~350; for a valid credential also its `Authenticated` (identity pointer, last use, the
//! JWTs kept for a stored credential: ~80 bytes, and ~32 for an API token's id). Equal
//! identities are stored once (interned): the tokens of one owner, the renewed access tokens
//! of one user, a user's Basic credentials share one `Identity` and what is kept for it
//! (response headers, minted JWTs, charged to `cache.reuse_memory_mib`). A stored
//! credential's id (an API token's) is the entry's, not the identity's: the JWTs minted for
//! it carry it (the `token_id` claim, for upstream audit logs), so the entry keeps those.
//! Memory sizing is in bench/README.md.

mod clock;
mod inflight;
mod interned;
mod table;
#[cfg(test)]
mod testing;
mod uses;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;

pub use clock::{Clock, SystemClock};
pub use interned::{Known, ReuseBudget};

use self::inflight::{FlightShard, InFlight, Landing};
use self::interned::{CredentialJwts, Interned};
use self::table::{Key, Table, lock};
use self::uses::{EndedUses, LastUse, UseWriter};
use crate::mint::{KeyError, Minted, Minter};
use crate::providers::{Answer, AuthError};
use crate::setting::ConfigError;
use crate::store::Store;

/// `cache`: the in-process decision cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Longest time a valid answer is reused (revocations take effect within it).
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// How long an invalid credential's answer is reused.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Most entries kept.
    pub max_entries: u64,
    /// MiB for what cached identities keep for reuse (minted JWTs, response headers); past
    /// it those are rebuilt per request (a signature each).
    pub reuse_memory_mib: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_ttl: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(2),
            max_entries: 100_000,
            reuse_memory_mib: 16,
        }
    }
}

impl CacheConfig {
    /// Rejects values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_entries == 0 {
            return Err(ConfigError::invalid(
                "cache.max_entries",
                "must be at least 1",
            ));
        }
        if self.max_ttl.is_zero() || self.max_ttl > Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                "cache.max_ttl",
                "must be between 1s and 1h (revocations take effect within it)",
            ));
        }
        if self.negative_ttl > self.max_ttl {
            return Err(ConfigError::invalid(
                "cache.negative_ttl",
                "must not exceed cache.max_ttl",
            ));
        }
        Ok(())
    }
}

/// A cached answer.
#[derive(Clone)]
pub enum Verdict {
    /// The credential is valid.
    Valid(Arc<Authenticated>),
    /// The credential is not valid; the reason is safe to show the client.
    Invalid(&'static str),
}

/// A valid credential's identity and the time it was last used.
pub struct Authenticated {
    /// Who it is, shared with every entry whose identity is equal (the tokens of one owner
    /// too: the stored credential's id is not part of it).
    pub identity: Arc<Known>,
    /// The stored credential's id (an API token's) and when it was last used.
    last_use: LastUse,
    /// The JWTs minted with the stored credential's id, kept for reuse.
    jwts: CredentialJwts,
}

impl Authenticated {
    /// The JWT for this credential and `audience` (the default when `None`) at `now`: a kept
    /// one while it may be reused, else a new one, kept when `repeated` (a cache hit) and
    /// the reuse budget allows. A stored credential's JWT carries its id (`token_id`), so it
    /// is kept by the entry; any other by the shared identity.
    pub fn minted_for(
        &self,
        minter: &Minter,
        audience: Option<&Arc<str>>,
        now: i64,
        repeated: bool,
    ) -> Result<Arc<Minted>, KeyError> {
        let own = self.last_use.credential_id().map(|id| (id, &self.jwts));
        self.identity
            .minted_for(own, minter, audience, now, repeated)
    }
}

/// See the module documentation.
pub struct DecisionCache {
    table: Table<Verdict, Arc<inflight::Flight<Answered>>>,
    max_ttl: Duration,
    negative_ttl: Duration,
    clock: Arc<dyn Clock>,
    /// Identities shared by the entries that hold equal ones (interned).
    identities: Mutex<Interned>,
    /// Last uses of entries that ended since the last flush.
    ended_uses: EndedUses,
    budget: Arc<ReuseBudget>,
}

/// A lookup's outcome: the verdict and how long it may be kept, or an error not cached.
type Answered = Result<(Verdict, Duration), Arc<AuthError>>;

impl DecisionCache {
    /// An empty cache sized by `config`, on the system's clocks.
    pub fn new(config: &CacheConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock::new()))
    }

    /// An empty cache sized by `config`, on `clock`.
    pub fn with_clock(config: &CacheConfig, clock: Arc<dyn Clock>) -> Self {
        let max_entries = usize::try_from(config.max_entries).unwrap_or(usize::MAX);
        let mib = usize::try_from(config.reuse_memory_mib).unwrap_or(usize::MAX);
        Self {
            table: Table::new(max_entries, clock.now_ms()),
            max_ttl: config.max_ttl,
            negative_ttl: config.negative_ttl,
            clock,
            identities: Mutex::default(),
            ended_uses: EndedUses::default(),
            budget: Arc::new(ReuseBudget::new(mib.saturating_mul(1024 * 1024))),
        }
    }

    /// How long a valid `answer` may be kept: the provider's limit or `cache.max_ttl`,
    /// never past the credential's expiry (and never past a day: see the table).
    fn keep_for(&self, answer: &Answer) -> Duration {
        let max_ttl = answer.cache_ttl.unwrap_or(self.max_ttl);
        match answer.identity.expires_at {
            Some(at) => {
                // Whole seconds: `now` may be late in its second, so one is taken off, or
                // the entry would outlive `at` by that fraction (and its decision would be
                // "expired", not a fresh look).
                let left = (at - self.clock.unix_now() - 1).max(0) as u64;
                max_ttl.min(Duration::from_secs(left))
            }
            None => max_ttl,
        }
    }

    /// The cached answer for `key`, or the answer of `authenticate` (one call for all
    /// concurrent misses, whose error they all get). Errors other than
    /// [`AuthError::Invalid`] are not cached. The boolean is `true` for a cache hit.
    pub async fn get_or_authenticate<F>(
        &self,
        key: [u8; 32],
        authenticate: F,
    ) -> Result<(Verdict, bool), Arc<AuthError>>
    where
        F: Future<Output = Result<Answer, AuthError>>,
    {
        let key = Key(key);
        let shard = self.table.shard(&key);
        let flight = {
            let mut s = lock(shard);
            if let Some(verdict) = s.get(&key, self.clock.now_ms()) {
                drop(s);
                if let Verdict::Valid(a) = &verdict {
                    a.last_use.touch(self.clock.unix_now());
                }
                return Ok((verdict, true));
            }
            InFlight::join(self, shard, &mut s, key)
        };
        let answered = flight
            .answer(async {
                match authenticate.await {
                    Ok(answer) => {
                        let ttl = self.keep_for(&answer);
                        Ok((Verdict::Valid(Arc::new(self.authenticated(answer))), ttl))
                    }
                    Err(AuthError::Invalid(reason)) => {
                        Ok((Verdict::Invalid(reason), self.negative_ttl))
                    }
                    Err(e) => Err(Arc::new(e)),
                }
            })
            .await;
        drop(flight);
        answered.map(|(verdict, _)| (verdict, false))
    }

    fn authenticated(&self, answer: Answer) -> Authenticated {
        let mut identity = answer.identity;
        // The id moves into the entry (its last use, its JWTs' `token_id`), so that the
        // tokens of one owner share one identity.
        let credential_id = identity.credential_id.take().map(Arc::from);
        Authenticated {
            identity: lock(&self.identities).intern(identity, &self.budget),
            last_use: LastUse::new(credential_id, self.clock.unix_now()),
            jwts: CredentialJwts::new(&self.budget),
        }
    }

    /// Sweeps out the shard's expired entries (noting their last uses) and hands the uses
    /// of its live entries since the last time to `live`.
    fn sweep_shard(
        &self,
        shard: &Mutex<FlightShard<Verdict, Answered>>,
        mut live: impl FnMut(&str, i64),
    ) {
        let mut evicted = Vec::new();
        {
            let mut s = lock(shard);
            s.sweep(self.clock.now_ms(), &mut evicted);
            for (id, at) in s.values().filter_map(last_use) {
                live(id, at);
            }
        }
        self.evicted(evicted);
    }

    /// Sweeps out expired entries and writes the uses noted since the last flush to the
    /// store, a few thousand per transaction (so the batch never holds every entry at once).
    pub async fn flush_last_used(&self, store: &dyn Store) {
        let mut writer = UseWriter::new(store, &self.ended_uses);
        for shard in self.table.shards() {
            self.sweep_shard(shard, |id, at| writer.push(id, at));
            writer.write_if_full().await;
        }
        lock(&self.identities).prune();
        // Uses of entries that ended since the last flush, and uses the store refused.
        writer.finish(self.ended_uses.take()).await;
    }

    /// Sweeps every shard and prunes the interned identities (the uses go to the ended
    /// ones), as a flush does.
    #[cfg(test)]
    fn sweep_all(&self) {
        let mut uses = Vec::new();
        for shard in self.table.shards() {
            self.sweep_shard(shard, |id, at| uses.push((Arc::<str>::from(id), at)));
        }
        self.ended_uses.note(uses.iter().map(|(id, at)| (id, *at)));
        lock(&self.identities).prune();
    }

    /// Bytes of the reuse budget in use.
    pub fn reuse_bytes(&self) -> usize {
        self.budget.used()
    }

    /// Number of entries (expired ones included until they are swept out).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the valid entries `matches` picks (every shard is scanned: for changes heard
    /// from the store, not per request); how many went.
    fn remove_valid_where(&self, matches: impl Fn(&Authenticated) -> bool) -> usize {
        let mut removed = 0;
        for shard in self.table.shards() {
            let mut evicted = Vec::new();
            let mut s = lock(shard);
            s.remove_where(
                |v| matches!(v, Verdict::Valid(a) if matches(a)),
                &mut evicted,
            );
            forget_flights(&mut s);
            drop(s);
            removed += evicted.len();
            self.evicted(evicted);
        }
        removed
    }

    /// Removes the entries of the stored credential (API token) of this id; how many went.
    pub fn invalidate_credential_id(&self, id: &str) -> usize {
        self.remove_valid_where(|a| a.last_use.credential_id() == Some(id))
    }

    /// Removes the entries whose identity has this subject (a user's credentials and their
    /// API tokens); how many went.
    pub fn invalidate_subject(&self, subject: &str) -> usize {
        self.remove_valid_where(|a| a.identity.subject == subject)
    }

    /// Removes the entry for `key` (the credential's [`Credential::cache_key`]: a session
    /// that ended); how many went (0 or 1).
    ///
    /// [`Credential::cache_key`]: crate::credential::Credential::cache_key
    pub fn invalidate_key(&self, key: [u8; 32]) -> usize {
        match self.table.remove(&Key(key)) {
            Some(verdict) => {
                self.evicted(vec![verdict]);
                1
            }
            None => 0,
        }
    }

    /// Removes every entry, invalid ones too; how many went.
    pub fn clear(&self) -> usize {
        let mut removed = 0;
        for shard in self.table.shards() {
            let mut evicted = Vec::new();
            let mut s = lock(shard);
            s.remove_where(|_| true, &mut evicted);
            forget_flights(&mut s);
            drop(s);
            removed += evicted.len();
            self.evicted(evicted);
        }
        removed
    }

    /// Removes the entry for `key`.
    #[cfg(test)]
    fn invalidate(&self, key: [u8; 32]) {
        let removed = self.table.remove(&Key(key));
        drop(removed);
    }
}

impl Landing<Verdict, Answered> for DecisionCache {
    fn land(
        &self,
        shard: &mut FlightShard<Verdict, Answered>,
        key: Key,
        answered: &Answered,
        evicted: &mut Vec<Verdict>,
    ) {
        if let Ok((verdict, ttl)) = answered {
            shard.insert(key, verdict.clone(), *ttl, self.clock.now_ms(), evicted);
        }
    }

    /// Moves the last uses of what ended (if any since the previous flush) to the ended
    /// uses.
    fn evicted(&self, evicted: Vec<Verdict>) {
        self.ended_uses.note(evicted.iter().filter_map(last_use));
    }
}

/// Detaches the shard's lookups in flight: one may have read the store before the change
/// that an invalidation acts on (a revocation), so its answer goes to the requests that
/// wait for it but is not filed; a request arriving now starts a lookup of its own.
fn forget_flights(shard: &mut FlightShard<Verdict, Answered>) {
    shard.pending.clear();
}

/// Takes the credential's last use since the previous time, if it has an id and was used.
fn last_use(verdict: &Verdict) -> Option<(&Arc<str>, i64)> {
    match verdict {
        Verdict::Valid(a) => a.last_use.take(),
        Verdict::Invalid(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Not;

    use super::clock::ManualClock;
    use super::testing::{RefusingStore, answer, cached, config, headers, identity, insert, key};
    use super::*;

    /// A cache on a clock the test moves, and that clock.
    fn on_manual_clock(config: &CacheConfig) -> (DecisionCache, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(1_700_000_000));
        (DecisionCache::with_clock(config, clock.clone()), clock)
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_invalid_answers_are() {
        let (cache, clock) = on_manual_clock(&config(10));
        let r = cache
            .get_or_authenticate([2; 32], async {
                Err(AuthError::Unavailable("down".into()))
            })
            .await;
        assert!(matches!(r, Err(e) if *e == AuthError::Unavailable("down".into())));
        let (v, hit) = cache
            .get_or_authenticate([2; 32], async { Err(AuthError::Invalid("nope")) })
            .await
            .unwrap();
        assert!(matches!(v, Verdict::Invalid("nope")) && !hit);
        let (v, hit) = cache
            .get_or_authenticate([2; 32], async { Ok(answer(identity(None))) })
            .await
            .unwrap();
        assert!(
            matches!(v, Verdict::Invalid("nope")) && hit,
            "negative entry reused"
        );
        // For `cache.negative_ttl` (1 s), no longer.
        clock.advance(Duration::from_millis(999));
        assert!(cached(&cache, [2; 32]).await);
        clock.advance(Duration::from_millis(1));
        let (v, hit) = cache
            .get_or_authenticate([2; 32], async { Ok(answer(identity(None))) })
            .await
            .unwrap();
        assert!(matches!(v, Verdict::Valid(_)) && !hit, "looked up again");
    }

    #[tokio::test]
    async fn entries_end_with_the_credential() {
        // (credential expiry from now, max_ttl, the provider's cache_ttl, cached after 1.5 s?)
        let cases = [
            (Some(1), 10, None, false),
            (Some(100), 1, None, false),
            (None, 10, None, true),
            (Some(100), 10, None, true),
            // offline: until the access token expires, past max_ttl
            (Some(100), 1, Some(Duration::MAX), true),
            (Some(1), 10, Some(Duration::MAX), false),
            // introspect with caching off
            (None, 10, Some(Duration::ZERO), false),
            (Some(100), 10, Some(Duration::from_secs(1)), false),
        ];
        let mut caches = Vec::new();
        for (i, (expires_in, max_ttl, cache_ttl, _)) in cases.into_iter().enumerate() {
            let (cache, clock) = on_manual_clock(&config(max_ttl));
            let id = identity(expires_in.map(|s| clock.unix_now() + s));
            let key = [10 + i as u8; 32];
            let answer = Answer {
                identity: id,
                cache_ttl,
            };
            cache
                .get_or_authenticate(key, async { Ok(answer) })
                .await
                .unwrap();
            caches.push((cache, clock, key));
        }
        for (i, (cache, clock, key)) in caches.into_iter().enumerate() {
            clock.advance(Duration::from_millis(1500));
            let (_, hit) = cache
                .get_or_authenticate(key, async { Ok(answer(identity(None))) })
                .await
                .unwrap();
            assert_eq!(hit, cases[i].3, "case {i}");
        }
    }

    #[tokio::test]
    async fn expired_entries_are_swept_with_their_budget_and_last_use() {
        let (cache, clock) = on_manual_clock(&config(1));
        let inserted_at = clock.unix_now();
        let a = insert(&cache, key(1), identity(None)).await;
        assert!(cached(&cache, key(2)).await.not());
        a.identity.response_headers(true, headers);
        assert!(cache.reuse_bytes() > 0);
        drop(a);
        assert_eq!(cache.len(), 2);
        clock.advance(Duration::from_millis(999));
        assert!(cached(&cache, key(1)).await, "not expired yet");
        clock.advance(Duration::from_millis(1));
        assert!(cached(&cache, key(1)).await.not(), "expired");
        cache.sweep_all();
        assert_eq!(
            cache.len(),
            1,
            "only the new negative entry for key 1 is left"
        );
        assert_eq!(cache.reuse_bytes(), 0, "budget given back");
        assert_eq!(cache.ended_uses.len(), 1);
        assert_eq!(
            cache.ended_uses.get("tok_1"),
            Some(inserted_at),
            "its last use"
        );
    }

    #[tokio::test]
    async fn last_uses_the_store_refused_are_written_by_the_next_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = RefusingStore::new(&dir.path().join("u.db")).await;
        let (cache, clock) = on_manual_clock(&config(10));
        let used_at = clock.unix_now();
        let a = insert(&cache, key(1), identity(None)).await;
        store.refuse_writes(true);
        cache.flush_last_used(&store).await;
        assert_eq!(store.last_used("tok_1").await, None, "the write failed");
        assert_eq!(
            cache.ended_uses.get("tok_1"),
            Some(used_at),
            "kept for retry"
        );
        store.refuse_writes(false);
        cache.flush_last_used(&store).await;
        assert_eq!(store.last_used("tok_1").await, Some(used_at), "retried");
        assert_eq!(cache.ended_uses.len(), 0, "written once, then dropped");
        drop(a);
    }

    #[tokio::test]
    async fn equal_identities_are_stored_once() {
        let cache = DecisionCache::new(&config(10));
        let mut other_token = identity(None);
        other_token.credential_id = Some("tok_2".into());
        let mut other_owner = identity(None);
        other_owner.subject = "t".into();
        let a = insert(&cache, key(1), identity(None)).await;
        let b = insert(&cache, key(2), other_token).await;
        let c = insert(&cache, key(3), other_owner).await;
        let d = insert(&cache, key(4), identity(None)).await;
        // Another credential with an equal identity shares it, and so does another token of
        // the same owner: its id is the entry's, not the identity's.
        assert!(Arc::ptr_eq(&a.identity, &d.identity));
        assert!(Arc::ptr_eq(&a.identity, &b.identity));
        assert!(!Arc::ptr_eq(&a.identity, &c.identity));
        assert_eq!(a.last_use.credential_id(), Some("tok_1"));
        assert_eq!(b.last_use.credential_id(), Some("tok_2"));
        assert_eq!(a.identity.credential_id, None);
        assert_eq!(lock(&cache.identities).len(), 2);
        // What is kept for one credential's identity serves an equal one too, charged once.
        a.identity.response_headers(true, headers);
        let charged = cache.reuse_bytes();
        assert!(charged > 0);
        assert!(matches!(
            d.identity.response_headers(false, headers),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(cache.reuse_bytes(), charged);
        drop((a, b, c, d));
        for i in 1..=4 {
            cache.invalidate(key(i));
        }
        cache.sweep_all();
        assert_eq!(lock(&cache.identities).len(), 0);
        assert_eq!(cache.reuse_bytes(), 0, "given back with the identity");
    }

    #[tokio::test]
    async fn entries_go_by_credential_id_by_subject_or_all() {
        let (cache, _clock) = on_manual_clock(&config(10));
        let with = |subject: &str, id: Option<&str>| {
            let mut i = identity(None);
            i.subject = subject.into();
            i.credential_id = id.map(Into::into);
            answer(i)
        };
        let entries = [
            ([1; 32], with("alice", Some("tok_1"))),
            ([2; 32], with("alice", Some("tok_2"))),
            ([3; 32], with("alice", None)),
            ([4; 32], with("bob", Some("tok_3"))),
        ];
        for (k, a) in entries {
            cache.get_or_authenticate(k, async { Ok(a) }).await.unwrap();
        }
        cache
            .get_or_authenticate([5; 32], async { Err(AuthError::Invalid("nope")) })
            .await
            .unwrap();
        assert_eq!(cache.invalidate_credential_id("tok_1"), 1);
        assert!(!cached(&cache, [1; 32]).await);
        assert!(cached(&cache, [2; 32]).await);
        assert_eq!(cache.invalidate_credential_id("tok_1"), 0);
        assert_eq!(
            cache.invalidate_subject("alice"),
            2,
            "tok_2 and the user's own"
        );
        assert!(cached(&cache, [4; 32]).await && cached(&cache, [5; 32]).await);
        // 1 (invalid since `cached` looked it up again), 4 and 5.
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.clear(), 3, "invalid entries too");
        assert!(cache.is_empty());
    }
}
