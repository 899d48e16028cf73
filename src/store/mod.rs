//! State: API tokens (by SHA-256 of the secret), local users, signing keys, browser
//! sessions (by SHA-256 of the cookie). The [`Store`]
//! trait is what the rest of authgate sees; `embedded` (SQLite) and `redis` implement it.

mod config;
mod file;
mod migrate;
mod pool;
mod redis;
mod session;
mod sessions_sql;
mod sqlite;
mod sqlite_rows;
#[cfg(test)]
mod suite;

use std::sync::Arc;

use async_trait::async_trait;

pub use self::config::StoreConfig;
pub use self::redis::RedisStore;
pub use file::{held_by_server, lock_path};
pub use migrate::{Migrated, migrate};
pub use session::{SessionMatch, SessionRecord};
pub use sqlite::SqliteStore;

use crate::identity::{Attributes, Names};

/// An API token as stored: never the secret, only its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Public identifier (`tok_...`), safe to log and show.
    pub id: String,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    /// Subject the token acts for.
    pub owner: String,
    /// Human label.
    pub name: String,
    /// Roles granted by the token itself (added to the owner's).
    pub roles: Names,
    /// Attributes set by the token itself (over the owner's).
    pub attributes: Attributes,
    /// `None`: acts with all of the owner's scopes.
    pub scopes: Option<Names>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds; `None` never expires.
    pub expires_at: Option<i64>,
    /// Unix seconds of the last recorded use.
    pub last_used_at: Option<i64>,
    /// Unix seconds of revocation.
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("id", &self.id)
            .field("hash", &"<redacted>")
            .field("owner", &self.owner)
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// A local user.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Login name (also the subject).
    pub username: String,
    /// PHC string of the argon2id hash.
    pub password_hash: String,
    /// E-mail address.
    pub email: Option<String>,
    /// Roles.
    pub roles: Names,
    /// Attributes.
    pub attributes: Attributes,
    /// Unix seconds.
    pub created_at: i64,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("email", &self.email)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// A token and, when the owner is a local user, that user.
#[derive(Debug, Clone)]
pub struct TokenLookup {
    /// The token.
    pub token: TokenRecord,
    /// The owner, when it is a local user.
    pub owner: Option<UserRecord>,
}

/// A signing key as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// `ES256`, `EdDSA`, `RS256`.
    pub algorithm: String,
    /// PKCS#8 DER of the private key.
    pub private_pkcs8: Vec<u8>,
    /// Unix seconds; it is published from then on.
    pub created_at: i64,
    /// When it starts signing (after `created_at` by the rotation lead time, so that
    /// verifiers fetch it before they meet a JWT it signed).
    pub activates_at: i64,
    /// When it stops signing: the activation of its successor, which may lie ahead;
    /// `None` while no successor is scheduled.
    pub retired_at: Option<i64>,
    /// Until when its public key stays in the JWKS (`None`: while it has no successor).
    pub publish_until: Option<i64>,
}

impl std::fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRecord")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("private_pkcs8", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .field("retired_at", &self.retired_at)
            .field("publish_until", &self.publish_until)
            .finish()
    }
}

/// Which token to revoke.
#[derive(Debug, Clone, Copy)]
pub enum TokenRef<'a> {
    /// By its public id.
    Id(&'a str),
    /// By the SHA-256 of its secret.
    Hash(&'a [u8; 32]),
}

/// A store operation that failed (the caller fails closed: 503).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened.
    #[error("cannot open the embedded store at '{path}': {reason}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The Redis store could not be set up (its URL or password file).
    #[error("cannot open the Redis store: {0}")]
    RedisOpen(String),
    /// A query failed.
    #[error("store query failed: {0}")]
    Query(String),
    /// The store file was deleted under the running server (nothing is served from the
    /// deleted file; a file put back at the path is opened).
    #[error("the store file '{path}' is gone")]
    Gone {
        /// The file.
        path: String,
    },
    /// Stored data could not be decoded.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A record that must be unique exists already.
    #[error("{0} exists already")]
    Exists(String),
}

/// A change made by any replica (or the CLI) that others must act on, heard through
/// [`Store::events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// The token of this id was revoked.
    TokenRevoked(String),
    /// The user of this name changed (password) or was removed.
    UserChanged(String),
    /// The key ring changed (a rotation).
    KeysChanged,
    /// The session of this hash ended (signed out, or logged out by the IdP).
    SessionEnded([u8; 32]),
    /// The subscription was (re)established: what happened while it was down was not
    /// heard, so everything cached must go.
    Resubscribed,
}

impl StoreEvent {
    /// Parses a message as published (`revoke-token <id>`, `user <name>`, `keys`).
    pub fn parse(message: &str) -> Option<Self> {
        match message.split_once(' ') {
            Some(("revoke-token", id)) => Some(Self::TokenRevoked(id.to_owned())),
            Some(("user", name)) => Some(Self::UserChanged(name.to_owned())),
            Some(("session", hex)) => parse_hex32(hex).map(Self::SessionEnded),
            None if message == "keys" => Some(Self::KeysChanged),
            _ => None,
        }
    }
}

/// The answer of [`Store::reserve_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Counted in every shared counter: go on.
    Admitted,
    /// A shared counter is full until its window ends, this long from now.
    Refused(std::time::Duration),
    /// This store keeps no shared counters.
    NotShared,
}

/// 32 bytes from 64 hex digits.
fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// How precisely a token's last use is recorded: a use less than this after the recorded
/// one is not written again. Without it every first use of a cached token rewrote its row
/// (a page and a WAL frame each): 14% of the samples of bench (b), one new token per
/// request. "Last used" is for spotting tokens no longer in use; a minute is precise enough.
pub const LAST_USE_RESOLUTION_SECS: i64 = 60;

/// What authgate keeps. Every method is one round trip to the backend.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Adds a new token.
    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError>;
    /// The token with this secret hash, joined with its owner when a local user.
    async fn lookup_token(&self, hash: &[u8; 32]) -> Result<Option<TokenLookup>, StoreError>;
    /// Tokens, of one owner or all.
    async fn list_tokens(&self, owner: Option<&str>) -> Result<Vec<TokenRecord>, StoreError>;
    /// The token of this public id.
    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError>;
    /// Marks a token revoked; `false` when there is no such (unrevoked) token.
    async fn revoke_token(&self, token: TokenRef<'_>, at: i64) -> Result<bool, StoreError>;
    /// Records last-use times in one batch (token id, unix seconds), to the minute: a use is
    /// written only when none is recorded or it is [`LAST_USE_RESOLUTION_SECS`] or more
    /// after the recorded one (never an earlier one).
    async fn record_last_used(&self, uses: &[(String, i64)]) -> Result<(), StoreError>;

    /// Adds a user; [`StoreError::Exists`] when the name is taken.
    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError>;
    /// The user of this name.
    async fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;
    /// All users.
    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError>;
    /// Replaces a user's password hash; `false` when there is no such user.
    async fn set_password(&self, username: &str, hash: &str) -> Result<bool, StoreError>;
    /// Removes a user and revokes their tokens; `false` when there is no such user.
    async fn remove_user(&self, username: &str, at: i64) -> Result<bool, StoreError>;

    /// The directory of subjects: local users and owners of tokens not revoked, in name
    /// order; all of them (`None`), or those of `among` that are known.
    async fn subjects(&self, among: Option<&[String]>) -> Result<Vec<String>, StoreError>;

    /// Keys still published at `now` (all but those past their `publish_until`), the latest
    /// activation first; of two activating in the same second, the one added last first.
    async fn keys(&self, now: i64) -> Result<Vec<KeyRecord>, StoreError>;
    /// Adds `key` to the key ring, in one transaction: keys that never signed (activating
    /// after `now`) are dropped; the keys signing at `now` retire at `key.activates_at` and
    /// stay published until `publish_until`; keys past their `publish_until` are removed.
    /// With `only_if_none`, nothing happens (`false`) when a key of `key`'s algorithm signs
    /// at `now` or is scheduled to (several replicas starting at once).
    async fn add_key(
        &self,
        key: &KeyRecord,
        now: i64,
        publish_until: i64,
        only_if_none: bool,
    ) -> Result<bool, StoreError>;

    /// Counts one attempt against each of `counters` (a name and its limit) in windows of
    /// `window` shared by every replica, or none: refused with the time until the first
    /// full counter's window ends. An attempt counts as a failure from the moment it is
    /// admitted until [`Store::forgive_attempt`] takes it back, so parallel attempts on
    /// several replicas cannot all pass the limit. A store that is not shared between
    /// processes admits everything ([`Attempt::NotShared`]): the process's own limiter
    /// is the whole limit there.
    async fn reserve_attempt(
        &self,
        counters: &[(String, u32)],
        window: std::time::Duration,
    ) -> Result<Attempt, StoreError> {
        let _ = (counters, window);
        Ok(Attempt::NotShared)
    }
    /// Takes back an attempt [`Store::reserve_attempt`] admitted (it succeeded).
    async fn forgive_attempt(&self, counters: &[String]) -> Result<(), StoreError> {
        let _ = counters;
        Ok(())
    }
    /// Adds a new session; [`StoreError::Exists`] when its hash is taken.
    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError>;
    /// The session of this hash, unless it is past its absolute end at `now`.
    async fn get_session(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<SessionRecord>, StoreError>;
    /// Records a use of the session at `at` (for the idle timeout); `false` when there is
    /// no such session or a later use was recorded.
    async fn touch_session(&self, hash: &[u8; 32], at: i64) -> Result<bool, StoreError>;
    /// Replaces the fields of an existing session (after a token refresh); `false` when it
    /// has ended meanwhile.
    async fn replace_session(&self, session: &SessionRecord) -> Result<bool, StoreError>;
    /// Ends one session; `false` when there was none. A shared store tells the other
    /// replicas ([`StoreEvent::SessionEnded`]).
    async fn delete_session(&self, hash: &[u8; 32]) -> Result<bool, StoreError>;
    /// Ends every session `which` matches (back-channel logout) and returns their hashes;
    /// a shared store tells the other replicas of each.
    async fn end_sessions(&self, which: SessionMatch<'_>) -> Result<Vec<[u8; 32]>, StoreError>;

    /// Changes made elsewhere (other replicas, the CLI), for a store shared between
    /// processes; `None` for one that is not (each call starts a subscription, which ends
    /// when the receiver is dropped and the next event is heard). Needs a Tokio runtime.
    fn events(&self) -> Option<tokio::sync::mpsc::Receiver<StoreEvent>> {
        None
    }
}

/// Opens the configured store for a server: an embedded store is created when missing,
/// and its lock file held while open (see [`held_by_server`]).
pub fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    match config {
        StoreConfig::Embedded { path } => Ok(Arc::new(SqliteStore::open_serving(path)?)),
        StoreConfig::Redis { .. } => Ok(Arc::new(RedisStore::open(config)?)),
    }
}

/// Opens the configured store for a command (no lock held).
pub fn open_for_command(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    match config {
        StoreConfig::Embedded { path } => Ok(Arc::new(SqliteStore::open(path)?)),
        StoreConfig::Redis { .. } => Ok(Arc::new(RedisStore::open(config)?)),
    }
}

#[cfg(test)]
mod event_tests {
    use super::StoreEvent;

    #[test]
    fn events_parse_as_published() {
        let cases = [
            (
                "revoke-token tok_1",
                Some(StoreEvent::TokenRevoked("tok_1".into())),
            ),
            ("user alice", Some(StoreEvent::UserChanged("alice".into()))),
            ("keys", Some(StoreEvent::KeysChanged)),
            ("keys now", None),
            (
                "session 00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff",
                Some(StoreEvent::SessionEnded(
                    [[0x00, 0xff]; 16].concat().try_into().unwrap(),
                )),
            ),
            ("session 00ff", None),
            (
                "session zz00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff",
                None,
            ),
            ("flush", None),
            ("", None),
        ];
        for (message, event) in cases {
            assert_eq!(StoreEvent::parse(message), event, "{message}");
        }
    }
}
