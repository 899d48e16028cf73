//! The sharded table: key -> value with an expiry time and a second-chance bit, each shard
//! bounded, and beside the values what is pending for keys not answered yet (the cache's
//! in-flight lookups), under the same lock. It knows nothing of what it holds: the cache
//! gives it values, times (milliseconds on the cache's clock) and time-to-live, and gets
//! back what it evicted.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use foldhash::SharedSeed;
use foldhash::fast::SeedableRandomState;

/// A cache key: the SHA-256 of the credential.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Key(pub(super) [u8; 32]);

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // A SHA-256 is uniform: half of it is plenty for a bucket index.
        let mut half = [0; 16];
        half.copy_from_slice(&self.0[..16]);
        state.write_u128(u128::from_le_bytes(half));
    }
}

/// foldhash keyed with a per-process secret from the operating system. The keys are SHA-256
/// outputs, but the credentials behind them are the client's choice: without a secret,
/// anyone could grind credentials whose keys share a bucket and make every lookup in that
/// shard slow (hash flooding). foldhash's own `RandomState` seeds itself from addresses
/// and the time, which it does not claim resists that; this one seeds from the OS.
type KeyHasher = SeedableRandomState;

fn key_hasher() -> KeyHasher {
    // std's `RandomState` holds keys from the OS's random source; what it hashes to is
    // as unpredictable as they are.
    let random = || std::collections::hash_map::RandomState::new().hash_one(0u8);
    static SHARED: OnceLock<SharedSeed> = OnceLock::new();
    let shared = SHARED.get_or_init(|| SharedSeed::from_u64(random()));
    SeedableRandomState::with_seed(random(), shared)
}

/// The shards, each behind its own lock.
pub(super) struct Table<V, P> {
    shards: Box<[Mutex<Shard<V, P>>]>,
    hasher: KeyHasher,
}

/// One shard: values, and what is pending for keys without one.
pub(super) struct Shard<V, P> {
    ready: HashMap<Key, Slot<V>, KeyHasher>,
    /// What is pending per key (the in-flight lookups); the table only keeps it.
    pub(super) pending: HashMap<Key, P, KeyHasher>,
    /// Values kept before room is made.
    capacity: usize,
    /// When expired values are next swept out (ms).
    next_sweep: u64,
}

/// A value, until `expires` (ms).
struct Slot<V> {
    value: V,
    expires: u64,
    /// Used since room was last made in this shard (second chance).
    visited: bool,
}

/// The longest any value is kept.
const LONGEST: Duration = Duration::from_secs(24 * 3600);

/// How often a shard sweeps out its expired values (on its next insert).
const SWEEP_INTERVAL_MS: u64 = 1000;

/// Shards: enough that the workers rarely meet on one lock, few enough that a small cache
/// still has room in each. A power of two (a shard is picked by masking).
const MAX_SHARDS: usize = 64;
const _: () = assert!(MAX_SHARDS.is_power_of_two());

/// Locks `m`.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; if something did, the data is still whole.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<V: Clone, P> Table<V, P> {
    /// An empty table for `max_entries` values in all, at `now` (ms).
    pub(super) fn new(max_entries: usize, now: u64) -> Self {
        let shards = (max_entries / 1024)
            .clamp(1, MAX_SHARDS)
            .next_power_of_two();
        let capacity = max_entries.div_ceil(shards).max(1);
        let hasher = key_hasher();
        Self {
            shards: (0..shards)
                .map(|_| {
                    Mutex::new(Shard {
                        ready: HashMap::with_hasher(hasher.clone()),
                        pending: HashMap::with_hasher(hasher.clone()),
                        capacity,
                        next_sweep: now.saturating_add(SWEEP_INTERVAL_MS),
                    })
                })
                .collect(),
            hasher,
        }
    }

    /// The shard that holds `key`.
    pub(super) fn shard(&self, key: &Key) -> &Mutex<Shard<V, P>> {
        // Bits the shard's own table does not use for its bucket index or its tags.
        let hash = self.hasher.hash_one(key);
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)]
    }

    /// Every shard.
    pub(super) fn shards(&self) -> &[Mutex<Shard<V, P>>] {
        &self.shards
    }

    /// Number of values (expired ones included until they are swept out).
    pub(super) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).ready.len()).sum()
    }

    /// Removes the value for `key`.
    pub(super) fn remove(&self, key: &Key) -> Option<V> {
        lock(self.shard(key)).ready.remove(key).map(|s| s.value)
    }
}

impl<V: Clone, P> Shard<V, P> {
    /// The value for `key` if it has not expired at `now`, marked as used.
    pub(super) fn get(&mut self, key: &Key, now: u64) -> Option<V> {
        let slot = self.ready.get_mut(key).filter(|slot| slot.expires > now)?;
        slot.visited = true;
        Some(slot.value.clone())
    }

    /// Keeps `value` for `key` for `ttl` (capped at a day; nothing for zero), making room
    /// if the shard is full. What is swept out, evicted or replaced goes into `evicted`.
    pub(super) fn insert(
        &mut self,
        key: Key,
        value: V,
        ttl: Duration,
        now: u64,
        evicted: &mut Vec<V>,
    ) {
        if ttl.is_zero() {
            return;
        }
        if self.ready.len() >= self.capacity {
            self.make_room(now, evicted);
        } else if now >= self.next_sweep {
            self.sweep(now, evicted);
        }
        let slot = Slot {
            value,
            expires: now.saturating_add(ttl.min(LONGEST).as_millis() as u64),
            visited: false,
        };
        if let Some(old) = self.ready.insert(key, slot) {
            evicted.push(old.value);
        }
    }

    /// The values held, expired ones included.
    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.ready.values().map(|slot| &slot.value)
    }

    /// Removes the values `matches` picks into `evicted`.
    pub(super) fn remove_where(
        &mut self,
        mut matches: impl FnMut(&V) -> bool,
        evicted: &mut Vec<V>,
    ) {
        self.ready.retain(|_, slot| {
            let picked = matches(&slot.value);
            if picked {
                evicted.push(slot.value.clone());
            }
            !picked
        });
    }

    /// Removes expired values into `evicted`.
    pub(super) fn sweep(&mut self, now: u64, evicted: &mut Vec<V>) {
        self.ready.retain(|_, slot| {
            let keep = slot.expires > now;
            if !keep {
                evicted.push(slot.value.clone());
            }
            keep
        });
        self.next_sweep = now + SWEEP_INTERVAL_MS;
    }

    /// Brings a full shard down to 31/32 of its capacity: expired values first, then those
    /// not used since the last time (second chance), then any. Each call frees a 32nd, so
    /// the cost per insert stays constant (~32 slots looked at).
    fn make_room(&mut self, now: u64, evicted: &mut Vec<V>) {
        self.sweep(now, evicted);
        let target = self.capacity - (self.capacity / 32).max(1);
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
                evicted.push(slot.value.clone());
                false
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{cached, config, identity, insert, key};
    use super::super::{CacheConfig, DecisionCache, Verdict};
    use super::*;

    fn capacity<V: Clone, P>(table: &Table<V, P>) -> usize {
        lock(&table.shards[0]).capacity
    }

    #[test]
    fn an_entry_costs_64_bytes_in_the_table() {
        // Besides the hash table's control byte and slack: what bench/README.md counts.
        assert_eq!(std::mem::size_of::<(Key, Slot<Verdict>)>(), 64);
    }

    #[test]
    fn values_expire_and_are_swept_once_a_second() {
        let table: Table<u32, ()> = Table::new(100, 0);
        let shard = &mut *lock(&table.shards[0]);
        let mut evicted = Vec::new();
        shard.insert(Key([1; 32]), 1, Duration::from_millis(500), 0, &mut evicted);
        shard.insert(Key([2; 32]), 2, Duration::from_secs(5), 0, &mut evicted);
        shard.insert(Key([3; 32]), 3, Duration::ZERO, 0, &mut evicted);
        assert_eq!(shard.get(&Key([1; 32]), 499), Some(1));
        assert_eq!(shard.get(&Key([1; 32]), 500), None, "expired");
        assert_eq!(
            shard.get(&Key([3; 32]), 0),
            None,
            "no time to live, not kept"
        );
        // Not swept before the interval is up...
        shard.insert(Key([4; 32]), 4, Duration::from_secs(5), 999, &mut evicted);
        assert_eq!((shard.ready.len(), evicted.len()), (3, 0));
        // ...then on the next insert.
        shard.insert(Key([5; 32]), 5, Duration::from_secs(5), 1000, &mut evicted);
        assert_eq!((shard.ready.len(), &evicted[..]), (3, &[1][..]));
        assert_eq!(shard.next_sweep, 2000);
        // Replacing a value hands back the old one.
        shard.insert(Key([5; 32]), 6, Duration::from_secs(5), 1001, &mut evicted);
        assert_eq!(&evicted[..], &[1, 5]);
        assert_eq!(shard.get(&Key([5; 32]), 1001), Some(6));
    }

    #[tokio::test]
    async fn a_full_cache_evicts_entries_not_used_since_the_last_time() {
        let cache = DecisionCache::new(&config(10)); // 100 entries, one shard
        assert_eq!(cache.table.shards.len(), 1);
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
        assert_eq!((big.table.shards.len(), capacity(&big.table)), (64, 1563));
    }

    #[test]
    fn keys_spread_over_the_shards_differently_per_table() {
        let (a, b): (Table<u32, ()>, Table<u32, ()>) =
            (Table::new(1 << 20, 0), Table::new(1 << 20, 0));
        let index = |t: &Table<u32, ()>, k: &Key| {
            let shard = t.shard(k);
            t.shards
                .iter()
                .position(|s| std::ptr::eq(s, shard))
                .unwrap()
        };
        let keys: Vec<_> = (0..4096u32).map(|i| Key(key(i))).collect();
        let mut per_shard = [0; MAX_SHARDS];
        for k in &keys {
            per_shard[index(&a, k)] += 1;
        }
        // 64 per shard on average: a uniform spread stays well within that.
        assert!(
            per_shard.iter().all(|n| (16..160).contains(n)),
            "{per_shard:?}"
        );
        // Keyed per table: the same keys land elsewhere in another.
        let moved = keys.iter().filter(|k| index(&a, k) != index(&b, k)).count();
        assert!(moved > 3500, "{moved} of 4096 moved");
    }
}
