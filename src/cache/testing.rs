//! What the cache's tests share: identities, answers, configurations and requests.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::{Authenticated, CacheConfig, DecisionCache, Verdict};
use crate::identity::Identity;
use crate::providers::{Answer, AuthError};

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
