//! Shared in-flight lookups (single flight): requests that miss on the same key join one
//! lookup and all get its answer. The flight sits in the key's shard, beside the values, so
//! that filing its answer and retiring it happen under one lock: the first request back
//! files the answer, and the last request of a flight every client abandoned removes it
//! (a later request starts its own).

use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::table::{Key, Shard, lock};

/// One lookup shared by every request that missed on the same key.
pub(super) struct Flight<T> {
    answer: tokio::sync::OnceCell<T>,
    /// Requests taking part; changed only under the shard's lock.
    waiting: AtomicUsize,
}

impl<T> Default for Flight<T> {
    fn default() -> Self {
        Self {
            answer: Default::default(),
            waiting: AtomicUsize::new(0),
        }
    }
}

/// A shard whose pending entries are flights answering `T`.
pub(super) type FlightShard<V, T> = Shard<V, Arc<Flight<T>>>;

/// Where a flight's answer goes.
pub(super) trait Landing<V, T> {
    /// Files `answer` for `key` in the locked shard; what that evicts goes into `evicted`.
    fn land(&self, shard: &mut FlightShard<V, T>, key: Key, answer: &T, evicted: &mut Vec<V>);

    /// Takes what filing evicted, once the shard's lock is released.
    fn evicted(&self, evicted: Vec<V>);
}

/// A request's part in a [`Flight`]. When it ends, answered or not (the client may go
/// away), the first one back files the answer, and the last one of an abandoned flight
/// removes it.
pub(super) struct InFlight<'a, V, T, L: Landing<V, T>> {
    landing: &'a L,
    shard: &'a Mutex<FlightShard<V, T>>,
    key: Key,
    flight: Arc<Flight<T>>,
}

impl<'a, V, T: Clone, L: Landing<V, T>> InFlight<'a, V, T, L> {
    /// Joins the flight for `key`, or starts one; `locked` is `shard`, locked.
    pub(super) fn join(
        landing: &'a L,
        shard: &'a Mutex<FlightShard<V, T>>,
        locked: &mut FlightShard<V, T>,
        key: Key,
    ) -> Self {
        let flight = locked.pending.entry(key).or_default().clone();
        flight.waiting.fetch_add(1, Ordering::Relaxed);
        Self {
            landing,
            shard,
            key,
            flight,
        }
    }

    /// The flight's answer: `lookup`'s, unless another request's lookup answered first.
    pub(super) async fn answer(&self, lookup: impl Future<Output = T>) -> T {
        self.flight.answer.get_or_init(|| lookup).await.clone()
    }
}

impl<V, T, L: Landing<V, T>> Drop for InFlight<'_, V, T, L> {
    fn drop(&mut self) {
        let mut evicted = Vec::new();
        {
            let mut s = lock(self.shard);
            let last = self.flight.waiting.fetch_sub(1, Ordering::Relaxed) == 1;
            if s.pending
                .get(&self.key)
                .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
            {
                match self.flight.answer.get() {
                    Some(answered) => {
                        s.pending.remove(&self.key);
                        self.landing.land(&mut s, self.key, answered, &mut evicted);
                    }
                    None if last => {
                        s.pending.remove(&self.key);
                    }
                    None => {}
                }
            }
        }
        self.landing.evicted(evicted);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::super::testing::{answer, cached, config, identity, insert, key};
    use super::super::{DecisionCache, Verdict};
    use super::*;
    use crate::providers::{Answer, AuthError};

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

    fn flights(cache: &DecisionCache) -> usize {
        let shards = cache.table.shards();
        shards.iter().map(|s| lock(s).pending.len()).sum()
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_call() {
        let cache = Arc::new(DecisionCache::new(&config(10)));
        let (got, calls) = at_once(&cache, 50, || Ok(answer(identity(None)))).await;
        assert!(got.iter().all(|r| *r == Ok(true)));
        assert_eq!((got.len(), calls), (50, 1));
        assert_eq!((flights(&cache), cache.len()), (0, 1), "filed, and retired");
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_error() {
        let cache = Arc::new(DecisionCache::new(&config(10)));
        let (got, calls) = at_once(&cache, 20, || Err(AuthError::Unavailable("down".into()))).await;
        let down = Arc::new(AuthError::Unavailable("down".into()));
        assert!(got.iter().all(|r| *r == Err(down.clone())));
        assert_eq!((got.len(), calls), (20, 1));
        assert!(cache.is_empty(), "errors are not cached");
        assert_eq!(flights(&cache), 0);
    }

    #[tokio::test]
    async fn an_answer_read_before_an_invalidation_is_not_kept() {
        use tokio::sync::Notify;
        let cache = Arc::new(DecisionCache::new(&config(10)));
        let (read, go) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let lookup = {
            let (cache, read, go) = (cache.clone(), read.clone(), go.clone());
            tokio::spawn(async move {
                let asked = cache.get_or_authenticate(key(1), async move {
                    read.notify_one();
                    go.notified().await;
                    Ok(answer(identity(None)))
                });
                asked.await.map(|(v, _)| matches!(v, Verdict::Valid(_)))
            })
        };
        // The lookup has read tok_1 as valid; then tok_1 is revoked and invalidated.
        read.notified().await;
        assert_eq!(cache.invalidate_credential_id("tok_1"), 0);
        go.notify_one();
        assert_eq!(
            lookup.await.unwrap(),
            Ok(true),
            "the request that asked first"
        );
        assert!(!cached(&cache, key(1)).await, "the answer is not kept");
        assert_eq!(flights(&cache), 0);
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
        assert_eq!(flights(&cache), 0);
        assert!(cache.is_empty());
        // A later request for the same key runs its own lookup.
        insert(&cache, key(3), identity(None)).await;
        assert!(cached(&cache, key(3)).await);
    }
}
