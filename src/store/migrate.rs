//! `authgate store migrate`: copies what an embedded store holds into a Redis store.

use super::{RedisStore, Store, StoreError, TokenRef};

/// How many records a migration copied, and how many the target had already.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Migrated {
    /// Tokens copied (revoked ones too, revoked in the target as well).
    pub tokens: usize,
    /// Users copied.
    pub users: usize,
    /// Signing keys copied (those still published).
    pub keys: usize,
    /// Records left alone because the target holds one of that id, hash or name.
    pub already_there: usize,
}

/// Copies tokens, users and the key ring from `from` into `to`. Idempotent: a record the
/// target already holds is left as it is (and counted in `already_there`), so a migration
/// that stopped half-way can run again.
pub async fn migrate(from: &dyn Store, to: &RedisStore, now: i64) -> Result<Migrated, StoreError> {
    let mut done = Migrated::default();
    for user in from.list_users().await? {
        match to.insert_user(&user).await {
            Ok(()) => done.users += 1,
            Err(StoreError::Exists(_)) => done.already_there += 1,
            Err(e) => return Err(e),
        }
    }
    let mut uses = Vec::new();
    for token in from.list_tokens(None).await? {
        let revoked_at = token.revoked_at;
        let live = super::TokenRecord {
            revoked_at: None,
            ..token.clone()
        };
        match to.insert_token(&live).await {
            Ok(()) => done.tokens += 1,
            Err(StoreError::Exists(_)) => {
                done.already_there += 1;
                continue;
            }
            Err(e) => return Err(e),
        }
        // Revoked through the store's own path, so that its indexes and the other
        // replicas hear of it as of any revocation.
        if let Some(at) = revoked_at {
            to.revoke_token(TokenRef::Id(&token.id), at).await?;
        }
        if let Some(at) = token.last_used_at {
            uses.push((token.id.clone(), at));
        }
    }
    to.record_last_used(&uses).await?;
    // Oldest first, so that keys activating in the same second keep their order.
    let mut keys = from.keys(now).await?;
    keys.reverse();
    for key in &keys {
        if to.import_key(key).await? {
            done.keys += 1;
        } else {
            done.already_there += 1;
        }
    }
    Ok(done)
}
