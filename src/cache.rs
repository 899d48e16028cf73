//! The decision cache: answers per credential (keyed by its SHA-256), bounded by the
//! credential's own expiry and `cache.max_ttl`; invalid credentials for `cache.negative_ttl`.
//! Concurrent misses for one credential share one provider call (moka's `try_get_with`).
//! It also notes when API tokens were used, so the store is written in batches, not per
//! request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue};

use crate::config::CacheConfig;
use crate::identity::Identity;
use crate::providers::{Answer, AuthError};
use crate::store::Store;

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
    /// Who it is.
    pub identity: Arc<crate::identity::Identity>,
    /// The answering provider's reuse limit (replaces `cache.max_ttl`).
    cache_ttl: Option<Duration>,
    /// The identity's response headers, kept from the credential's second request on
    /// (a credential seen once keeps nothing it will not use again).
    headers: OnceLock<Vec<(HeaderName, HeaderValue)>>,
    /// JWTs minted for this identity, kept for reuse from its second request on.
    pub minted: crate::mint::Reused,
    used_at: AtomicI64,
    /// Bytes this entry holds of `budget`.
    charged: AtomicUsize,
    budget: Arc<ReuseBudget>,
}

impl Authenticated {
    /// Moves what this entry keeps from `from` to `to` bytes in the reuse budget; `false`
    /// (and nothing charged) when more does not fit.
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

impl Drop for Authenticated {
    fn drop(&mut self) {
        self.budget.release(*self.charged.get_mut());
    }
}

/// See the module documentation.
pub struct DecisionCache {
    entries: moka::future::Cache<[u8; 32], Verdict>,
    pending_uses: Arc<Mutex<HashMap<String, i64>>>,
    budget: Arc<ReuseBudget>,
}

/// The longest any entry is kept.
const LONGEST: Duration = Duration::from_secs(24 * 3600);

struct VerdictExpiry {
    max_ttl: Duration,
    negative_ttl: Duration,
}

impl moka::Expiry<[u8; 32], Verdict> for VerdictExpiry {
    fn expire_after_create(&self, _: &[u8; 32], value: &Verdict, _: Instant) -> Option<Duration> {
        Some(match value {
            Verdict::Invalid(_) => self.negative_ttl,
            Verdict::Valid(a) => {
                // Bounded so that moka's clock arithmetic cannot overflow.
                let max_ttl = a.cache_ttl.unwrap_or(self.max_ttl).min(LONGEST);
                match a.identity.expires_at {
                    Some(at) => {
                        let left = (at - crate::unix_now()).max(0) as u64;
                        max_ttl.min(Duration::from_secs(left))
                    }
                    None => max_ttl,
                }
            }
        })
    }
}

impl DecisionCache {
    /// An empty cache sized by `config`.
    pub fn new(config: &CacheConfig) -> Self {
        let pending_uses: Arc<Mutex<HashMap<String, i64>>> = Arc::default();
        let on_evict = pending_uses.clone();
        let entries = moka::future::Cache::builder()
            .max_capacity(config.max_entries)
            .expire_after(VerdictExpiry {
                max_ttl: config.max_ttl,
                negative_ttl: config.negative_ttl,
            })
            .eviction_listener(move |_key, value: Verdict, _cause| {
                if let Verdict::Valid(a) = value {
                    note_use(&on_evict, &a);
                }
            })
            .build();
        let mib = usize::try_from(config.reuse_memory_mib).unwrap_or(usize::MAX);
        Self {
            entries,
            pending_uses,
            budget: Arc::new(ReuseBudget::new(mib.saturating_mul(1024 * 1024))),
        }
    }

    /// The cached answer for `key`, or the answer of `authenticate` (one call for all
    /// concurrent misses). Errors other than [`AuthError::Invalid`] are not cached.
    /// The boolean is `true` for a cache hit.
    pub async fn get_or_authenticate<F>(
        &self,
        key: [u8; 32],
        authenticate: F,
    ) -> Result<(Verdict, bool), Arc<AuthError>>
    where
        F: Future<Output = Result<Answer, AuthError>>,
    {
        if let Some(verdict) = self.entries.get(&key).await {
            if let Verdict::Valid(a) = &verdict {
                a.used_at.store(crate::unix_now(), Ordering::Relaxed);
            }
            return Ok((verdict, true));
        }
        let verdict = self
            .entries
            .try_get_with(key, async {
                match authenticate.await {
                    Ok(answer) => Ok(Verdict::Valid(Arc::new(Authenticated {
                        identity: Arc::new(answer.identity),
                        cache_ttl: answer.cache_ttl,
                        headers: OnceLock::new(),
                        minted: Default::default(),
                        charged: AtomicUsize::new(0),
                        budget: self.budget.clone(),
                        used_at: AtomicI64::new(crate::unix_now()),
                    }))),
                    Err(AuthError::Invalid(reason)) => Ok(Verdict::Invalid(reason)),
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok((verdict, false))
    }

    /// Writes the uses noted since the last flush to the store, in one batch.
    pub async fn flush_last_used(&self, store: &dyn Store) {
        self.entries.run_pending_tasks().await;
        for (_, verdict) in self.entries.iter() {
            if let Verdict::Valid(a) = verdict {
                note_use(&self.pending_uses, &a);
            }
        }
        let batch: Vec<(String, i64)> = match self.pending_uses.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return,
        };
        if batch.is_empty() {
            return;
        }
        if let Err(e) = store.record_last_used(&batch).await {
            tracing::warn!(error = %e, tokens = batch.len(), "could not record token use");
        }
    }

    /// Bytes of the reuse budget in use.
    pub fn reuse_bytes(&self) -> usize {
        self.budget.used()
    }

    /// Number of entries, after the cache's pending housekeeping (for `/metrics`).
    pub async fn settled_len(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }

    /// Number of entries (approximate).
    pub fn len(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Whether the cache holds no entry (approximate).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Moves an entry's last use (if any since the previous flush) into the pending batch.
fn note_use(pending: &Mutex<HashMap<String, i64>>, a: &Authenticated) {
    let Some(id) = &a.identity.credential_id else {
        return;
    };
    let at = a.used_at.swap(0, Ordering::Relaxed);
    if at > 0
        && let Ok(mut p) = pending.lock()
    {
        let slot = p.entry(id.clone()).or_insert(at);
        *slot = (*slot).max(at);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn identity(expires_at: Option<i64>) -> Identity {
        Identity {
            subject: "s".into(),
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
            a.response_headers(false, headers),
            std::borrow::Cow::Owned(_)
        ));
        assert_eq!(cache.reuse_bytes(), 0, "a first request keeps nothing");
        assert!(matches!(
            a.response_headers(true, headers),
            std::borrow::Cow::Borrowed(_)
        ));
        let one = "x-auth-request-user".len() + 1000 + HEADER_OVERHEAD;
        assert_eq!(cache.reuse_bytes(), one);
        assert!(matches!(
            a.response_headers(true, headers),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(cache.reuse_bytes(), one, "charged once");
        // 1 MiB of budget: an identity whose headers take ~1.1 MB is served, not kept.
        let big = valid(2, 1100).await;
        let built = big.response_headers(true, headers);
        assert!(matches!(built, std::borrow::Cow::Owned(_)));
        assert_eq!(built[0].1.len(), 1_100_000);
        assert_eq!(cache.reuse_bytes(), one);
        drop((a, big));
        cache.entries.invalidate(&[1; 32]).await;
        cache.entries.invalidate(&[2; 32]).await;
        cache.entries.run_pending_tasks().await;
        assert_eq!(cache.reuse_bytes(), 0, "given back when the entry ends");
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_call() {
        let cache = Arc::new(DecisionCache::new(&config(10)));
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_authenticate([1; 32], async {
                        calls.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(answer(identity(None)))
                    })
                    .await
                    .map(|(v, _)| matches!(v, Verdict::Valid(_)))
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Ok(true));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
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
}
