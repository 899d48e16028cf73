//! Last uses of stored credentials (API tokens): noted in memory on each request, gathered
//! by the periodic flush (from live entries, and from entries that ended since the last
//! one), and written to the store in batches, not per request. A batch the store refused
//! is kept (the newest use per credential, at most [`MAX_PENDING_USES`] credentials) and
//! written again by the next flush.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use super::table::lock;
use crate::store::Store;

/// Uses written to the store per transaction.
pub(super) const USES_PER_WRITE: usize = 2048;

/// Credentials whose last use waits for a write at most: while the store refuses writes,
/// uses of further credentials are dropped (and counted in the warning) rather than kept
/// without bound.
pub(super) const MAX_PENDING_USES: usize = 100_000;

/// When an entry's stored credential was last used, if it has an id (an API token's).
pub(super) struct LastUse {
    credential_id: Option<Arc<str>>,
    /// Unix seconds; 0 once taken by a flush, until the next use.
    at: AtomicI64,
}

/// The last uses of entries that ended since the last flush, and of writes that failed, by
/// credential id.
#[derive(Default)]
pub(super) struct EndedUses(Mutex<HashMap<Arc<str>, i64>>);

/// Uses on their way to the store, written a few thousand per transaction.
pub(super) struct UseWriter<'a> {
    store: &'a dyn Store,
    /// Where a batch the store refused goes, to be written by the next flush.
    retry: &'a EndedUses,
    batch: Vec<(String, i64)>,
}

impl LastUse {
    /// Used `now` (unix seconds).
    pub(super) fn new(credential_id: Option<Arc<str>>, now: i64) -> Self {
        Self {
            credential_id,
            at: AtomicI64::new(now),
        }
    }

    /// Notes a use at `now`.
    pub(super) fn touch(&self, now: i64) {
        self.at.store(now, Ordering::Relaxed);
    }

    /// Takes the last use since the previous time, if there is an id and it was used.
    pub(super) fn take(&self) -> Option<(&Arc<str>, i64)> {
        let id = self.credential_id.as_ref()?;
        let at = self.at.swap(0, Ordering::Relaxed);
        (at > 0).then_some((id, at))
    }

    /// The stored credential's id.
    pub(super) fn credential_id(&self) -> Option<&str> {
        self.credential_id.as_deref()
    }
}

impl EndedUses {
    /// Adds `uses`, keeping the latest per id.
    pub(super) fn note<'a>(&self, uses: impl IntoIterator<Item = (&'a Arc<str>, i64)>) {
        let mut uses = uses.into_iter();
        let Some(first) = uses.next() else {
            return;
        };
        let mut pending = lock(&self.0);
        for (id, at) in std::iter::once(first).chain(uses) {
            let slot = pending.entry(id.clone()).or_insert(at);
            *slot = (*slot).max(at);
        }
    }

    /// Keeps uses the store refused, for the next flush: the latest per id, and none of a
    /// new id once [`MAX_PENDING_USES`] ids wait. Returns how many were dropped.
    fn keep_for_retry(&self, uses: &[(String, i64)]) -> usize {
        let mut pending = lock(&self.0);
        let mut dropped = 0;
        for (id, at) in uses {
            if let Some(slot) = pending.get_mut(id.as_str()) {
                *slot = (*slot).max(*at);
            } else if pending.len() < MAX_PENDING_USES {
                pending.insert(Arc::from(id.as_str()), *at);
            } else {
                dropped += 1;
            }
        }
        dropped
    }

    /// Takes every use noted so far.
    pub(super) fn take(&self) -> Vec<(Arc<str>, i64)> {
        lock(&self.0).drain().collect()
    }

    /// The use noted for `id`.
    #[cfg(test)]
    pub(super) fn get(&self, id: &str) -> Option<i64> {
        lock(&self.0).get(id).copied()
    }

    /// Credentials with a use noted.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.0).len()
    }
}

impl<'a> UseWriter<'a> {
    /// An empty batch for `store`; what it refuses is kept in `retry`.
    pub(super) fn new(store: &'a dyn Store, retry: &'a EndedUses) -> Self {
        Self {
            store,
            retry,
            batch: Vec::new(),
        }
    }

    /// Adds a use to the batch.
    pub(super) fn push(&mut self, id: &str, at: i64) {
        self.batch.push((id.to_owned(), at));
    }

    /// Writes the batch once it holds a transaction's worth.
    pub(super) async fn write_if_full(&mut self) {
        if self.batch.len() >= USES_PER_WRITE {
            self.write().await;
        }
    }

    /// Writes what is batched, then `ended`, a transaction's worth at a time (so the batch
    /// never holds every entry's use at once).
    pub(super) async fn finish(mut self, ended: Vec<(Arc<str>, i64)>) {
        for chunk in ended.chunks(USES_PER_WRITE) {
            for (id, at) in chunk {
                self.push(id, *at);
            }
            self.write().await;
        }
        self.write().await;
    }

    /// Writes the batch to the store and empties it; a batch the store refused is kept for
    /// the next flush.
    async fn write(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        if let Err(e) = self.store.record_last_used(&self.batch).await {
            let dropped = self.retry.keep_for_retry(&self.batch);
            tracing::warn!(
                error = %e,
                tokens = self.batch.len(),
                dropped,
                "could not record token use; retrying at the next flush"
            );
        }
        self.batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_use_is_taken_once_and_ended_uses_keep_the_latest() {
        let token = LastUse::new(Some("tok_1".into()), 100);
        assert_eq!(token.take(), Some((&Arc::from("tok_1"), 100)));
        assert_eq!(token.take(), None, "not used since");
        token.touch(120);
        let user = LastUse::new(None, 100);
        assert_eq!(user.take(), None, "no stored credential, nothing to record");
        let ended = EndedUses::default();
        let id: Arc<str> = "tok_1".into();
        ended.note([(&id, 130), (&id, 110)]);
        ended.note(token.take());
        assert_eq!((ended.get("tok_1"), ended.len()), (Some(130), 1));
        assert_eq!(ended.take(), vec![(id, 130)]);
        assert_eq!(ended.len(), 0);
    }
}
