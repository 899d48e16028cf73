//! What the cache's tests share: identities, answers, configurations and requests.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use http::{HeaderName, HeaderValue};

use super::{Authenticated, CacheConfig, DecisionCache, Verdict};
use crate::identity::{Attributes, Identity, Names};
use crate::providers::{Answer, AuthError};
use crate::store::{
    KeyRecord, SessionMatch, SessionRecord, SqliteStore, Store, StoreError, TokenLookup,
    TokenRecord, TokenRef, UserRecord,
};

/// An embedded store holding the token `tok_1` (of `s`), whose last-use writes fail while
/// told to.
pub(super) struct RefusingStore {
    inner: SqliteStore,
    refuse: AtomicBool,
}

impl RefusingStore {
    /// A store at `path` with `tok_1` in it.
    pub(super) async fn new(path: &Path) -> Self {
        let inner = SqliteStore::open(path).unwrap();
        inner
            .insert_token(&TokenRecord {
                id: "tok_1".into(),
                hash: [1; 32],
                owner: "s".into(),
                name: String::new(),
                roles: Names::default(),
                attributes: Attributes::new(),
                scopes: None,
                created_at: 1,
                expires_at: None,
                last_used_at: None,
                revoked_at: None,
            })
            .await
            .unwrap();
        Self {
            inner,
            refuse: AtomicBool::new(false),
        }
    }

    /// Makes last-use writes fail (`true`) or work.
    pub(super) fn refuse_writes(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }

    /// The stored last use of token `id`.
    pub(super) async fn last_used(&self, id: &str) -> Option<i64> {
        let tokens = self.inner.list_tokens(None).await.unwrap();
        tokens.into_iter().find(|t| t.id == id)?.last_used_at
    }
}

#[async_trait]
impl Store for RefusingStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        self.inner.insert_token(token).await
    }
    async fn lookup_token(&self, hash: &[u8; 32]) -> Result<Option<TokenLookup>, StoreError> {
        self.inner.lookup_token(hash).await
    }
    async fn list_tokens(&self, owner: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        self.inner.list_tokens(owner).await
    }
    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        self.inner.get_token(id).await
    }
    async fn revoke_token(&self, token: TokenRef<'_>, at: i64) -> Result<bool, StoreError> {
        self.inner.revoke_token(token, at).await
    }
    async fn record_last_used(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(StoreError::Query("database is locked".into()));
        }
        self.inner.record_last_used(uses).await
    }
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        self.inner.insert_user(user).await
    }
    async fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        self.inner.get_user(username).await
    }
    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.inner.list_users().await
    }
    async fn set_password(&self, username: &str, hash: &str) -> Result<bool, StoreError> {
        self.inner.set_password(username, hash).await
    }
    async fn remove_user(&self, username: &str, at: i64) -> Result<bool, StoreError> {
        self.inner.remove_user(username, at).await
    }
    async fn subjects(&self, among: Option<&[String]>) -> Result<Vec<String>, StoreError> {
        self.inner.subjects(among).await
    }
    async fn keys(&self, now: i64) -> Result<Vec<KeyRecord>, StoreError> {
        self.inner.keys(now).await
    }
    async fn add_key(
        &self,
        key: &KeyRecord,
        now: i64,
        publish_until: i64,
        only_if_none: bool,
    ) -> Result<bool, StoreError> {
        self.inner
            .add_key(key, now, publish_until, only_if_none)
            .await
    }
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.inner.insert_session(session).await
    }
    async fn get_session(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.inner.get_session(hash, now).await
    }
    async fn touch_session(&self, hash: &[u8; 32], at: i64) -> Result<bool, StoreError> {
        self.inner.touch_session(hash, at).await
    }
    async fn replace_session(&self, session: &SessionRecord) -> Result<bool, StoreError> {
        self.inner.replace_session(session).await
    }
    async fn delete_session(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        self.inner.delete_session(hash).await
    }
    async fn end_sessions(&self, which: SessionMatch<'_>) -> Result<Vec<[u8; 32]>, StoreError> {
        self.inner.end_sessions(which).await
    }
}

/// An API token's identity (`tok_1` of `s`).
pub(super) fn identity(expires_at: Option<i64>) -> Identity {
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
        client_id: None,
    }
}

/// A provider's answer for `identity`, with no limit of its own on caching.
pub(super) fn answer(identity: Identity) -> Answer {
    Answer {
        identity,
        cache_ttl: None,
    }
}

/// 100 entries (one shard), 1 MiB of reuse budget.
pub(super) fn config(max_ttl: u64) -> CacheConfig {
    CacheConfig {
        max_ttl: Duration::from_secs(max_ttl),
        negative_ttl: Duration::from_secs(1),
        max_entries: 100,
        reuse_memory_mib: 1,
    }
}

/// One response header of 1000 bytes per character of the subject.
pub(super) fn headers(id: &Identity) -> Vec<(HeaderName, HeaderValue)> {
    vec![(
        HeaderName::from_static("x-auth-request-user"),
        HeaderValue::from_str(&"u".repeat(id.subject.len() * 1000)).unwrap(),
    )]
}

/// A credential key numbered `i`.
pub(super) fn key(i: u32) -> [u8; 32] {
    let mut k = [7; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k
}

/// Whether `key` is answered from the cache (a miss leaves a negative entry).
pub(super) async fn cached(cache: &DecisionCache, key: [u8; 32]) -> bool {
    let looked_up = cache
        .get_or_authenticate(key, async { Err(AuthError::Invalid("x")) })
        .await;
    looked_up.unwrap().1
}

/// Looks `key` up, which must miss and be answered with `id`.
pub(super) async fn insert(
    cache: &DecisionCache,
    key: [u8; 32],
    id: Identity,
) -> Arc<Authenticated> {
    match cache
        .get_or_authenticate(key, async { Ok(answer(id)) })
        .await
    {
        Ok((Verdict::Valid(a), false)) => a,
        _ => panic!("not a fresh valid entry"),
    }
}

/// Looks up `[key; 32]`, answered (on a miss) by an identity whose subject has `subject`
/// characters.
pub(super) async fn valid(cache: &DecisionCache, key: u8, subject: usize) -> Arc<Authenticated> {
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
