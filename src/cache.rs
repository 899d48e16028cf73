//! The decision cache: answers per credential (keyed by its SHA-256), bounded by the
//! credential's own expiry and `cache.max_ttl`; invalid credentials for `cache.negative_ttl`.
//! Concurrent misses for one credential share one provider call. It also notes when API
//! tokens were used, so the store is written in batches, not per request.
//!
//! Built for this job rather than taken from a general cache crate: a sharded hash map of
//! key -> answer with an expiry time, a second-chance bit for eviction when full, and the
//! in-flight lookups beside it. An entry costs ~100 bytes besides the answer it holds
//! (moka's bookkeeping was ~350), and equal identities are stored once (interned): the
//! renewed access tokens of one user, or a user's Basic credentials, share one `Identity`.
//! Stored credentials (API tokens) carry their own id in the identity, so each has its own
//! minted JWT (with its `token_id` claim, for upstream audit logs). Memory sizing is in
//! bench/README.md.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use crate::identity::Identity;
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

/// Memory for what entries keep for reuse (minted JWTs, response headers), bounded by
/// `cache.reuse_memory_mib`: entries charge it for what they keep and give it back when
/// they end.
pub struct ReuseBudget {
    used: AtomicUsize,
    limit: usize,
}

impl ReuseBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            limit,
        }
    }

    fn reserve(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|n| *n <= self.limit)
            })
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes in use.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// What a kept response header costs besides its bytes.
const HEADER_OVERHEAD: usize = 64;

/// A valid credential's identity and the time it was last used.
pub struct Authenticated {
    /// Who it is, shared with every entry whose identity is equal.
    pub identity: Arc<Known>,
    /// The stored credential's id (an API token's), to record its last use.
    credential_id: Option<Arc<str>>,
    used_at: AtomicI64,
}

/// An identity as the cache keeps it: once for all the entries whose identity is equal
/// (the renewed access tokens of one user; not two API tokens, whose ids differ), with what is built
/// for it and reused: minted JWTs and response headers.
pub struct Known {
    identity: Identity,
    /// The identity's response headers, kept from a credential's second request on (a
    /// credential seen once keeps nothing it will not use again).
    headers: OnceLock<Vec<(HeaderName, HeaderValue)>>,
    /// JWTs minted for this identity, kept for reuse from a credential's second request on.
    pub minted: crate::mint::Reused,
    /// Bytes this identity holds of `budget`.
    charged: AtomicUsize,
    budget: Arc<ReuseBudget>,
}

impl std::ops::Deref for Known {
    type Target = Identity;

    fn deref(&self) -> &Identity {
        &self.identity
    }
}

impl Known {
    /// Moves what this identity keeps from `from` to `to` bytes in the reuse budget;
    /// `false` (and nothing charged) when more does not fit.
    pub fn recharge(&self, from: usize, to: usize) -> bool {
        if to > from {
            if !self.budget.reserve(to - from) {
                return false;
            }
            self.charged.fetch_add(to - from, Ordering::AcqRel);
        } else {
            self.budget.release(from - to);
            self.charged.fetch_sub(from - to, Ordering::AcqRel);
        }
        true
    }

    /// The identity's response headers: kept ones when `repeated` (a cache hit) and the
    /// budget allows, else built for this answer alone.
    pub fn response_headers(
        &self,
        repeated: bool,
        build: impl FnOnce(&Identity) -> Vec<(HeaderName, HeaderValue)>,
    ) -> std::borrow::Cow<'_, [(HeaderName, HeaderValue)]> {
        if let Some(kept) = self.headers.get() {
            return kept.as_slice().into();
        }
        let built = build(&self.identity);
        if !repeated {
            return built.into();
        }
        let bytes = built
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + HEADER_OVERHEAD)
            .sum();
        if !self.recharge(0, bytes) {
            return built.into();
        }
        match self.headers.set(built) {
            Ok(()) => self
                .headers
                .get()
                .map_or(Vec::new().into(), |k| k.as_slice().into()),
            // Another request kept them first.
            Err(built) => {
                self.recharge(bytes, 0);
                built.into()
            }
        }
    }
}

impl Drop for Known {
    fn drop(&mut self) {
        self.budget.release(*self.charged.get_mut());
    }
}

/// See the module documentation.
pub struct DecisionCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: KeyHasher,
    /// Entries per shard before room is made.
    shard_capacity: usize,
    max_ttl: Duration,
    negative_ttl: Duration,
    /// The clock entries' expiry times count from (milliseconds).
    epoch: Instant,
    /// Identities shared by the entries that hold equal ones (interned).
    identities: Mutex<Interned>,
    pending_uses: Mutex<HashMap<Arc<str>, i64>>,
    budget: Arc<ReuseBudget>,
}

/// A cache key: the SHA-256 of the credential.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u8; 32]);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // A SHA-256 is uniform: half of it is plenty for a bucket index.
        state.write(&self.0[..16]);
    }
}

/// Hashes keys with a per-process secret. The keys are SHA-256 outputs, but the credentials
/// behind them are the client's choice: without a secret, anyone could grind credentials
/// whose keys share a bucket and make every lookup in that shard slow (hash flooding).
#[derive(Clone, Copy)]
struct KeyHasher {
    seed: [u64; 2],
}

impl KeyHasher {
    fn new() -> Self {
        let random = || std::collections::hash_map::RandomState::new().hash_one(0u8);
        Self {
            seed: [random(), random() | 1],
        }
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = KeyHash;

    fn build_hasher(&self) -> KeyHash {
        KeyHash {
            state: self.seed[0],
            multiplier: self.seed[1],
        }
    }
}

/// See [`KeyHasher`]: a folded 64x64->128-bit multiply per 8 bytes, as foldhash does.
struct KeyHash {
    state: u64,
    multiplier: u64,
}

impl Hasher for KeyHash {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            let product =
                u128::from(self.state ^ u64::from_le_bytes(word)) * u128::from(self.multiplier);
            self.state = (product as u64) ^ ((product >> 64) as u64);
        }
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

/// One shard: answers, and the lookups in flight for keys not answered yet.
struct Shard {
    ready: HashMap<Key, Slot, KeyHasher>,
    flights: HashMap<Key, Arc<Flight>, KeyHasher>,
    /// When expired entries are next swept out (ms since the epoch).
    next_sweep: u64,
}

/// A cached answer, until `expires` (ms since the epoch).
struct Slot {
    verdict: Verdict,
    expires: u64,
    /// Used since room was last made in this shard (second chance).
    visited: bool,
}

/// One provider call shared by every request that missed on the same key.
#[derive(Default)]
struct Flight {
    /// The answer and how long it may be kept.
    answer: tokio::sync::OnceCell<Result<(Verdict, Duration), Arc<AuthError>>>,
    /// Requests taking part; changed only under the shard's lock.
    waiting: AtomicUsize,
}

/// A request's part in a [`Flight`]. When it ends, answered or not (the client may go
/// away), the first one back files the answer, and the last one of an abandoned flight
/// removes it.
struct InFlight<'a> {
    cache: &'a DecisionCache,
    shard: &'a Mutex<Shard>,
    key: Key,
    flight: Arc<Flight>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut evicted = Vec::new();
        {
            let mut s = lock(self.shard);
            let last = self.flight.waiting.fetch_sub(1, Ordering::Relaxed) == 1;
            if s.flights
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                match self.flight.answer.get() {
                    Some(answered) => {
                        s.flights.remove(&self.key);
                        if let Ok(filed) = answered {
                            self.cache.file(&mut s, self.key, filed, &mut evicted);
                        }
                    }
                    None if last => {
                        s.flights.remove(&self.key);
                    }
                    None => {}
                }
            }
        }
        self.cache.note_uses(&evicted);
    }
}

/// The longest any entry is kept.
const LONGEST: Duration = Duration::from_secs(24 * 3600);

/// How often a shard sweeps out its expired entries (on its next insert).
const SWEEP_INTERVAL_MS: u64 = 1000;

/// Shards: enough that the workers rarely meet on one lock, few enough that a small cache
/// still has room in each. A power of two (a shard is picked by masking).
const MAX_SHARDS: usize = 64;
const _: () = assert!(MAX_SHARDS.is_power_of_two());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data is still whole.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shard {
    /// Removes expired entries into `evicted`.
    fn sweep(&mut self, now: u64, evicted: &mut Vec<Verdict>) {
        self.ready.retain(|_, slot| {
            let keep = slot.expires > now;
            if !keep {
                evicted.push(slot.verdict.clone());
            }
            keep
        });
        self.next_sweep = now + SWEEP_INTERVAL_MS;
    }

    /// Brings a full shard down to 31/32 of `capacity`: expired entries first, then those
    /// not used since the last time (second chance), then any. Each call frees a 32nd, so
    /// the cost per insert stays constant (~32 slots looked at).
    fn make_room(&mut self, capacity: usize, now: u64, evicted: &mut Vec<Verdict>) {
        self.sweep(now, evicted);
        let target = capacity - (capacity / 32).max(1);
        for _ in 0..2 {
            let mut excess = self.ready.len().saturating_sub(target);
            if excess == 0 {
                return;
            }
            self.ready.retain(|_, slot| {
                if excess == 0 {
                    return true;
                }
                if std::mem::take(&mut slot.visited) {
                    return true;
                }
                excess -= 1;
                evicted.push(slot.verdict.clone());
                false
            });
        }
    }
}

/// Identities shared between entries: the tokens of one owner, or the access tokens one
/// user's client renews, all keep one [`Known`] and the JWTs minted for it.
#[derive(Default)]
struct Interned {
    set: HashSet<ByIdentity>,
    /// Set size at which identities no entry holds any more are dropped.
    prune_at: usize,
}

/// A [`Known`] in the interned set, found by its identity.
struct ByIdentity(Arc<Known>);

impl PartialEq for ByIdentity {
    fn eq(&self, other: &Self) -> bool {
        self.0.identity == other.0.identity
    }
}

impl Eq for ByIdentity {}

impl Hash for ByIdentity {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.identity.hash(state);
    }
}

impl std::borrow::Borrow<Identity> for ByIdentity {
    fn borrow(&self) -> &Identity {
        &self.0.identity
    }
}

impl Interned {
    fn intern(&mut self, identity: Identity, budget: &Arc<ReuseBudget>) -> Arc<Known> {
        if let Some(found) = self.set.get(&identity) {
            return found.0.clone();
        }
        if self.set.len() >= self.prune_at {
            self.prune();
        }
        let known = Arc::new(Known {
            identity,
            headers: OnceLock::new(),
            minted: Default::default(),
            charged: AtomicUsize::new(0),
            budget: budget.clone(),
        });
        self.set.insert(ByIdentity(known.clone()));
        known
    }

    /// Drops the identities only this set holds (and gives back what they kept).
    fn prune(&mut self) {
        self.set.retain(|k| Arc::strong_count(&k.0) > 1);
        self.prune_at = (self.set.len() * 2).max(1024);
    }
}

impl DecisionCache {
    /// An empty cache sized by `config`.
    pub fn new(config: &CacheConfig) -> Self {
        let max_entries = usize::try_from(config.max_entries).unwrap_or(usize::MAX);
        let shards = (max_entries / 1024)
            .clamp(1, MAX_SHARDS)
            .next_power_of_two();
        let hasher = KeyHasher::new();
        let mib = usize::try_from(config.reuse_memory_mib).unwrap_or(usize::MAX);
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        ready: HashMap::with_hasher(hasher),
                        flights: HashMap::with_hasher(hasher),
                        next_sweep: SWEEP_INTERVAL_MS,
                    })
                })
                .collect(),
            hasher,
            shard_capacity: max_entries.div_ceil(shards).max(1),
            max_ttl: config.max_ttl,
            negative_ttl: config.negative_ttl,
            epoch: Instant::now(),
            identities: Mutex::default(),
            pending_uses: Mutex::default(),
            budget: Arc::new(ReuseBudget::new(mib.saturating_mul(1024 * 1024))),
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        // Bits the shard's own table does not use for its bucket index or its tags.
        let hash = self.hasher.hash_one(key);
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)]
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// How long a valid `answer` may be kept: the provider's limit or `cache.max_ttl`,
    /// never past the credential's expiry.
    fn keep_for(&self, answer: &Answer) -> Duration {
        let max_ttl = answer.cache_ttl.unwrap_or(self.max_ttl).min(LONGEST);
        match answer.identity.expires_at {
            Some(at) => {
                let left = (at - crate::unix_now()).max(0) as u64;
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
        let shard = self.shard(&key);
        let flight = {
            let mut s = lock(shard);
            if let Some(slot) = s.ready.get_mut(&key)
                && slot.expires > self.now_ms()
            {
                slot.visited = true;
                let verdict = slot.verdict.clone();
                drop(s);
                if let Verdict::Valid(a) = &verdict {
                    a.used_at.store(crate::unix_now(), Ordering::Relaxed);
                }
                return Ok((verdict, true));
            }
            let flight = s.flights.entry(key).or_default().clone();
            flight.waiting.fetch_add(1, Ordering::Relaxed);
            flight
        };
        let flight = InFlight {
            cache: self,
            shard,
            key,
            flight,
        };
        let answered = flight
            .flight
            .answer
            .get_or_init(|| async {
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
            .await
            .clone();
        drop(flight);
        answered.map(|(verdict, _)| (verdict, false))
    }

    /// Files `verdict` for `key` in the (locked) shard for `ttl`, making room if it is full.
    fn file(
        &self,
        s: &mut Shard,
        key: Key,
        (verdict, ttl): &(Verdict, Duration),
        evicted: &mut Vec<Verdict>,
    ) {
        if ttl.is_zero() {
            return;
        }
        let now = self.now_ms();
        if s.ready.len() >= self.shard_capacity {
            s.make_room(self.shard_capacity, now, evicted);
        } else if now >= s.next_sweep {
            s.sweep(now, evicted);
        }
        let slot = Slot {
            verdict: verdict.clone(),
            expires: now.saturating_add(ttl.as_millis() as u64),
            visited: false,
        };
        if let Some(old) = s.ready.insert(key, slot) {
            evicted.push(old.verdict);
        }
    }

    fn authenticated(&self, answer: Answer) -> Authenticated {
        let identity = answer.identity;
        // The id stays in the identity too: it goes into the minted JWT, so two tokens of
        // one owner are two identities.
        let credential_id = identity.credential_id.as_deref().map(Arc::from);
        Authenticated {
            identity: lock(&self.identities).intern(identity, &self.budget),
            credential_id,
            used_at: AtomicI64::new(crate::unix_now()),
        }
    }

    /// Moves the last uses of `verdicts` (if any since the previous flush) into the
    /// pending batch.
    fn note_uses(&self, verdicts: &[Verdict]) {
        let mut uses = verdicts
            .iter()
            .filter_map(take_use)
            .map(|(id, at)| (id.clone(), at));
        let Some(first) = uses.next() else {
            return;
        };
        let mut pending = lock(&self.pending_uses);
        for (id, at) in std::iter::once(first).chain(uses) {
            let slot = pending.entry(id).or_insert(at);
            *slot = (*slot).max(at);
        }
    }

    /// Sweeps out the shard's expired entries (noting their last uses) and adds the uses
    /// of its live entries since the last time to `uses`.
    fn sweep_shard(&self, shard: &Mutex<Shard>, uses: &mut Vec<(String, i64)>) {
        let mut evicted = Vec::new();
        {
            let mut s = lock(shard);
            s.sweep(self.now_ms(), &mut evicted);
            let live = s.ready.values().filter_map(|slot| take_use(&slot.verdict));
            uses.extend(live.map(|(id, at)| (id.to_string(), at)));
        }
        self.note_uses(&evicted);
    }

    /// Sweeps out expired entries and writes the uses noted since the last flush to the
    /// store, a few thousand per transaction (so the batch never holds every entry at once).
    pub async fn flush_last_used(&self, store: &dyn Store) {
        let mut uses = Vec::new();
        for shard in &self.shards {
            self.sweep_shard(shard, &mut uses);
            if uses.len() >= USES_PER_WRITE {
                write_uses(store, &mut uses).await;
            }
        }
        lock(&self.identities).prune();
        // Uses of entries that ended since the last flush.
        let ended: Vec<_> = lock(&self.pending_uses).drain().collect();
        for chunk in ended.chunks(USES_PER_WRITE) {
            uses.extend(chunk.iter().map(|(id, at)| (id.to_string(), *at)));
            write_uses(store, &mut uses).await;
        }
        write_uses(store, &mut uses).await;
    }

    /// Sweeps every shard and prunes the interned identities (the uses go to the pending
    /// batch), as a flush does.
    #[cfg(test)]
    fn sweep_all(&self) {
        let mut uses = Vec::new();
        for shard in &self.shards {
            self.sweep_shard(shard, &mut uses);
        }
        let mut pending = lock(&self.pending_uses);
        for (id, at) in uses {
            pending.insert(id.into(), at);
        }
        drop(pending);
        lock(&self.identities).prune();
    }

    /// Bytes of the reuse budget in use.
    pub fn reuse_bytes(&self) -> usize {
        self.budget.used()
    }

    /// Number of entries (expired ones included until they are swept out).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).ready.len()).sum()
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes the entry for `key`.
    #[cfg(test)]
    fn invalidate(&self, key: [u8; 32]) {
        let key = Key(key);
        let removed = lock(self.shard(&key)).ready.remove(&key);
        drop(removed);
    }
}

/// Uses written to the store per transaction.
const USES_PER_WRITE: usize = 2048;

/// Takes the credential's last use since the previous time, if it has an id and was used.
fn take_use(verdict: &Verdict) -> Option<(&Arc<str>, i64)> {
    let Verdict::Valid(a) = verdict else {
        return None;
    };
    let id = a.credential_id.as_ref()?;
    let at = a.used_at.swap(0, Ordering::Relaxed);
    (at > 0).then_some((id, at))
}

/// Writes `uses` to the store and empties it.
async fn write_uses(store: &dyn Store, uses: &mut Vec<(String, i64)>) {
    if uses.is_empty() {
        return;
    }
    if let Err(e) = store.record_last_used(uses).await {
        tracing::warn!(error = %e, tokens = uses.len(), "could not record token use");
    }
    uses.clear();
}

#[cfg(test)]
mod tests {
    use std::ops::Not;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn identity(expires_at: Option<i64>) -> Identity {
        Identity {
            subject: "s".into(),
            native_id: None,
            provider: "api_token",
            username: "s".into(),
            email: None,
            roles: Default::default(),
            attributes: Default::default(),
            scopes: None,
            expires_at,
            credential_id: Some("tok_1".into()),
        }
    }

    fn answer(identity: Identity) -> Answer {
        Answer {
            identity,
            cache_ttl: None,
        }
    }

    fn config(max_ttl: u64) -> CacheConfig {
        CacheConfig {
            max_ttl: Duration::from_secs(max_ttl),
            negative_ttl: Duration::from_secs(1),
            max_entries: 100,
            reuse_memory_mib: 1,
        }
    }

    fn headers(id: &Identity) -> Vec<(HeaderName, HeaderValue)> {
        vec![(
            HeaderName::from_static("x-auth-request-user"),
            HeaderValue::from_str(&"u".repeat(id.subject.len() * 1000)).unwrap(),
        )]
    }

    #[tokio::test]
    async fn kept_headers_are_charged_and_given_back() {
        let cache = DecisionCache::new(&config(10));
        let valid = |key: u8, subject: usize| {
            let cache = &cache;
            async move {
                let mut id = identity(None);
                id.subject = "s".repeat(subject);
                match cache
                    .get_or_authenticate([key; 32], async { Ok(answer(id)) })
                    .await
                {
                    Ok((Verdict::Valid(a), _)) => a,
                    _ => panic!("not valid"),
                }
            }
        };
        let a = valid(1, 1).await;
        assert!(matches!(
            a.identity.response_headers(false, headers),
            std::borrow::Cow::Owned(_)
        ));
        assert_eq!(cache.reuse_bytes(), 0, "a first request keeps nothing");
        assert!(matches!(
            a.identity.response_headers(true, headers),
            std::borrow::Cow::Borrowed(_)
        ));
        let one = "x-auth-request-user".len() + 1000 + HEADER_OVERHEAD;
        assert_eq!(cache.reuse_bytes(), one);
        assert!(matches!(
            a.identity.response_headers(true, headers),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(cache.reuse_bytes(), one, "charged once");
        // 1 MiB of budget: an identity whose headers take ~1.1 MB is served, not kept.
        let big = valid(2, 1100).await;
        let built = big.identity.response_headers(true, headers);
        assert!(matches!(built, std::borrow::Cow::Owned(_)));
        assert_eq!(built[0].1.len(), 1_100_000);
        assert_eq!(cache.reuse_bytes(), one);
        drop((a, big));
        cache.invalidate([1; 32]);
        cache.invalidate([2; 32]);
        cache.sweep_all();
        assert_eq!(cache.reuse_bytes(), 0, "given back when the entry ends");
    }

    /// `n` requests for one key at once, each of whose lookups would answer `answer()` after
    /// 50 ms: what each request got, and how many lookups ran.
    async fn at_once(
        cache: &Arc<DecisionCache>,
        n: usize,
        answer: fn() -> Result<Answer, AuthError>,
    ) -> (Vec<Result<bool, Arc<AuthError>>>, usize) {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..n {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_authenticate([1; 32], async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        answer()
                    })
                    .await
                    .map(|(v, _)| matches!(v, Verdict::Valid(_)))
            }));
        }
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap());
        }
        (got, calls.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_call() {
        let cache = Arc::new(DecisionCache::new(&config(10)));
        let (got, calls) = at_once(&cache, 50, || Ok(answer(identity(None)))).await;
        assert!(got.iter().all(|r| *r == Ok(true)));
        assert_eq!((got.len(), calls), (50, 1));
    }

    #[tokio::test]
    async fn errors_are_not_cached_and_invalid_answers_are() {
        let cache = DecisionCache::new(&config(10));
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
            let cache = DecisionCache::new(&config(max_ttl));
            let id = identity(expires_in.map(|s| crate::unix_now() + s));
            let key = [10 + i as u8; 32];
            let answer = Answer {
                identity: id,
                cache_ttl,
            };
            cache
                .get_or_authenticate(key, async { Ok(answer) })
                .await
                .unwrap();
            caches.push((cache, key));
        }
        tokio::time::sleep(Duration::from_millis(1600)).await;
        for (i, (cache, key)) in caches.into_iter().enumerate() {
            let (_, hit) = cache
                .get_or_authenticate(key, async { Ok(answer(identity(None))) })
                .await
                .unwrap();
            assert_eq!(hit, cases[i].3, "case {i}");
        }
    }

    fn key(i: u32) -> [u8; 32] {
        let mut k = [7; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        k
    }

    /// Whether `key` is answered from the cache (a miss leaves a negative entry).
    async fn cached(cache: &DecisionCache, key: [u8; 32]) -> bool {
        let looked_up = cache
            .get_or_authenticate(key, async { Err(AuthError::Invalid("x")) })
            .await;
        looked_up.unwrap().1
    }

    async fn insert(cache: &DecisionCache, key: [u8; 32], id: Identity) -> Arc<Authenticated> {
        match cache
            .get_or_authenticate(key, async { Ok(answer(id)) })
            .await
        {
            Ok((Verdict::Valid(a), false)) => a,
            _ => panic!("not a fresh valid entry"),
        }
    }

    #[tokio::test]
    async fn a_full_cache_evicts_entries_not_used_since_the_last_time() {
        let cache = DecisionCache::new(&config(10)); // 100 entries, one shard
        assert_eq!(cache.shards.len(), 1);
        for i in 0..100 {
            insert(&cache, key(i), identity(None)).await;
        }
        assert_eq!(cache.len(), 100);
        for i in 0..10 {
            assert!(cached(&cache, key(i)).await);
        }
        // One more: room is made for a 32nd (3), never from the ten used ones.
        insert(&cache, key(100), identity(None)).await;
        assert_eq!(cache.len(), 98);
        for i in 0..10 {
            assert!(cached(&cache, key(i)).await, "used entry {i} kept");
        }
        assert!(cached(&cache, key(100)).await);
        // A flood of new keys never takes the cache past its size.
        for i in 1000..1500 {
            insert(&cache, key(i), identity(None)).await;
            assert!(cache.len() <= 100, "{} entries", cache.len());
        }
        // 64 shards for the default size, each bounded the same way.
        let big = DecisionCache::new(&CacheConfig {
            max_entries: 100_000,
            ..config(10)
        });
        assert_eq!((big.shards.len(), big.shard_capacity), (64, 1563));
    }

    #[tokio::test]
    async fn expired_entries_are_swept_with_their_budget_and_last_use() {
        let cache = DecisionCache::new(&config(1));
        let a = insert(&cache, key(1), identity(None)).await;
        assert!(cached(&cache, key(2)).await.not());
        a.identity.response_headers(true, headers);
        assert!(cache.reuse_bytes() > 0);
        drop(a);
        assert_eq!(cache.len(), 2);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert!(cached(&cache, key(1)).await.not(), "expired");
        cache.sweep_all();
        assert_eq!(
            cache.len(),
            1,
            "only the new negative entry for key 1 is left"
        );
        assert_eq!(cache.reuse_bytes(), 0, "budget given back");
        let pending = lock(&cache.pending_uses);
        assert_eq!(pending.len(), 1);
        assert!(pending[&Arc::<str>::from("tok_1")] >= crate::unix_now() - 3);
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
        // Another credential with an equal identity (the same token's id) shares it; another
        // token of the same owner does not: its id is minted into its JWT.
        assert!(Arc::ptr_eq(&a.identity, &d.identity));
        assert!(!Arc::ptr_eq(&a.identity, &b.identity));
        assert!(!Arc::ptr_eq(&a.identity, &c.identity));
        assert_eq!(a.credential_id.as_deref(), Some("tok_1"));
        assert_eq!(b.credential_id.as_deref(), Some("tok_2"));
        assert_eq!(a.identity.credential_id.as_deref(), Some("tok_1"));
        assert_eq!(lock(&cache.identities).set.len(), 3);
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
        assert!(lock(&cache.identities).set.is_empty());
        assert_eq!(cache.reuse_bytes(), 0, "given back with the identity");
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_error() {
        let cache = Arc::new(DecisionCache::new(&config(10)));
        let (got, calls) = at_once(&cache, 20, || Err(AuthError::Unavailable("down".into()))).await;
        let down = Arc::new(AuthError::Unavailable("down".into()));
        assert!(got.iter().all(|r| *r == Err(down.clone())));
        assert_eq!((got.len(), calls), (20, 1));
        assert!(cache.is_empty(), "errors are not cached");
    }

    #[tokio::test]
    async fn abandoned_lookups_leave_nothing_behind() {
        let cache = DecisionCache::new(&config(10));
        for i in 0..10 {
            let slow = cache.get_or_authenticate(key(i), async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(answer(identity(None)))
            });
            // The client goes away before the provider answers.
            let gone = tokio::time::timeout(Duration::from_millis(5), slow).await;
            assert!(gone.is_err());
        }
        assert!(cache.shards.iter().all(|s| lock(s).flights.is_empty()));
        assert!(cache.is_empty());
        // A later request for the same key runs its own lookup.
        insert(&cache, key(3), identity(None)).await;
        assert!(cached(&cache, key(3)).await);
    }
}
