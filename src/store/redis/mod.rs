//! The Redis store: state shared by every replica in one Redis server (standalone, behind
//! Sentinel, or a Cluster: [`target`]), through the `redis` crate's connection manager or
//! cluster connection (both reconnect by themselves). Every call is bounded by the
//! configured `timeout`; writes whose parts must go together are Lua scripts ([`scripts`]).
//!
//! # Data layout (every key under the configured prefix `<p>`)
//!
//! - `<p>tok:<sha256 hex>`: string, the id of the token with that secret hash
//! - `<p>tok:id:<id>`: hash, the token's fields (`roles`, `attributes`, `scopes` as JSON;
//!   absent optional fields are absent)
//! - `<p>tokens`: set of all token ids
//! - `<p>owner:<owner>`: set of the owner's token ids; `<p>live:<owner>`: those not revoked
//! - `<p>owners:live`: set of owners with a token not revoked (for `subjects`)
//! - `<p>user:<name>`: hash, the user's fields; `<p>users`: set of user names
//! - `<p>keys`: hash, kid -> the signing key as JSON (`private_pkcs8` in hex, `seq` the
//!   order of addition); `<p>keys:seq`: the counter behind `seq`
//! - `<p>fail:<name>`: attempt counters with a TTL ([`attempts`])
//! - `<p>session:<sha256 hex>` and its indexes: see [`sessions`]
//! - `<p>events`: pub/sub channel of changes (`revoke-token <id>`, `user <name>`, `keys`,
//!   `session <hash hex>`), published by the scripts that make them

mod attempts;
mod conn;
mod import;
mod record;
mod scripts;
mod sessions;
mod target;
#[cfg(test)]
mod tests;

use self::conn::Conn;
use self::target::Target;
pub(super) use self::target::sentinel_addr;

use std::collections::BTreeSet;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{ConnectionInfo, FromRedisValue, IntoConnectionInfo, Script};
use async_trait::async_trait;
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::mpsc::{Sender, channel};

use self::record::{
    Fields, StoredKey, from_json, hex, key_from, to_json, token_fields, token_from, user_fields,
    user_from,
};
use super::{
    Attempt, KeyRecord, SessionMatch, SessionRecord, Store, StoreConfig, StoreError, StoreEvent,
    TokenLookup, TokenRecord, TokenRef, UserRecord,
};

/// Last uses written by one script call (a pipeline holds as many calls as needed).
const LAST_USES_PER_SCRIPT: usize = 500;

/// The Redis-backed [`Store`].
pub struct RedisStore {
    target: Arc<Target>,
    prefix: String,
    timeout: Duration,
    /// How often the event subscription is checked.
    keepalive: Duration,
    /// Made on first use, so that opening never connects (nor needs a runtime); replaced
    /// after a call timed out (see [`RedisStore::call`]).
    manager: Mutex<Option<Conn>>,
}

/// Parses a Redis URL without connecting; the reason when it is not one.
pub(super) fn parse_url(url: &str) -> Result<ConnectionInfo, String> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err("must be a redis:// or rediss:// URL".into());
    }
    url.into_connection_info().map_err(|e| e.to_string())
}

impl RedisStore {
    /// Prepares the store of a `type: redis` configuration: parses the URL and reads the
    /// password file; connects on first use.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let StoreConfig::Redis {
            url,
            password_file,
            ca_file,
            prefix,
            timeout,
            keepalive,
            sentinels,
            cluster,
        } = config
        else {
            return Err(StoreError::RedisOpen("not a redis configuration".into()));
        };
        let mut info = parse_url(url.expose()).map_err(StoreError::RedisOpen)?;
        if let Some(path) = password_file {
            let password =
                crate::setting::from_value_or_file("store", "password", None, Some(path))
                    .map_err(|e| StoreError::RedisOpen(e.to_string()))?
                    .unwrap_or_else(|| crate::secret::Secret::new(""));
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            info = info.set_redis_settings(settings);
        }
        let target = Target::new(info, ca_file.as_deref(), sentinels, *cluster, *timeout)?;
        Ok(Self {
            target: Arc::new(target),
            prefix: prefix.clone(),
            timeout: *timeout,
            keepalive: *keepalive,
            manager: Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<Conn, StoreError> {
        if let Some(manager) = &*self.manager.lock().unwrap_or_else(PoisonError::into_inner) {
            return Ok(manager.clone());
        }
        if let Some(cluster) = self.target.cluster() {
            let connected = tokio::time::timeout(self.timeout, cluster.get_async_connection());
            let conn = match connected.await {
                Ok(conn) => Conn::Cluster(conn.map_err(redis_err)?),
                Err(_) => {
                    return Err(StoreError::Query(format!(
                        "Redis Cluster not reached within {:?}",
                        self.timeout
                    )));
                }
            };
            let mut slot = self.manager.lock().unwrap_or_else(PoisonError::into_inner);
            return Ok(slot.get_or_insert(conn).clone());
        }
        let client = match tokio::time::timeout(self.timeout, self.target.client()).await {
            Ok(client) => client.map_err(redis_err)?,
            Err(_) => {
                return Err(StoreError::Query(format!(
                    "no Redis master named by the sentinels within {:?}",
                    self.timeout
                )));
            }
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let manager = Conn::Single(
            ConnectionManager::new_lazy_with_config(client, config).map_err(redis_err)?,
        );
        // Two calls may have made one each: the first stored is kept for everyone.
        let mut slot = self.manager.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(slot.get_or_insert(manager).clone())
    }

    /// Drops the connection manager, so that the next call connects anew.
    fn reset(&self) {
        *self.manager.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Runs `f` on a connection, bounded by the timeout.
    ///
    /// A call that failed because its connection had broken (Redis restarted, the
    /// connection reset) is made once more: the manager reconnects meanwhile, so the first
    /// request after a restart is answered instead of failing. A retried write whose first
    /// attempt did reach Redis answers as a repeat does (an insert finds its record there,
    /// a revocation finds the token revoked): it is never lost. A call that timed out is not
    /// retried (Redis may be hung: that is a 503), but its connection is replaced: the
    /// manager does not drop a connection that stopped answering without closing (a cut),
    /// and every later call would wait on it.
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = ::redis::RedisResult<T>>,
    {
        let mut retried = false;
        loop {
            let con = self.connection().await?;
            match tokio::time::timeout(self.timeout, f(con)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e))
                    if !retried
                        && (e.is_io_error()
                            || e.is_connection_dropped()
                            || e.kind()
                                == ::redis::ErrorKind::Server(
                                    ::redis::ServerErrorKind::ReadOnly,
                                )) =>
                {
                    // A new connection (to the new master, after a failover).
                    tracing::debug!(error = %e, "Redis connection broken; trying again");
                    self.reset();
                    retried = true;
                }
                Ok(Err(e)) if e.is_timeout() => {
                    self.reset();
                    return Err(redis_err(e));
                }
                Ok(Err(e)) => return Err(redis_err(e)),
                Err(_) => {
                    self.reset();
                    return Err(StoreError::Query(format!(
                        "Redis did not answer within {:?}",
                        self.timeout
                    )));
                }
            }
        }
    }

    /// Runs `script` with the prefix and then `args` as `ARGV`.
    async fn eval<T: FromRedisValue>(
        &self,
        script: &Script,
        args: &[&str],
    ) -> Result<T, StoreError> {
        self.call(|mut con| async move {
            // The prefix is also the one declared key: a cluster routes the script to the
            // node of its slot, which (the prefix holding a hash tag) is every key's.
            let mut invocation = script.prepare_invoke();
            invocation.key(&self.prefix).arg(&self.prefix);
            for a in args {
                invocation.arg(*a);
            }
            invocation.invoke_async(&mut con).await
        })
        .await
    }

    /// `HGETALL` of each key in one pipeline; absent keys come back empty.
    async fn hashes(&self, keys: Vec<String>) -> Result<Vec<Fields>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let keys = &keys;
        self.call(|mut con| async move {
            let mut pipe = ::redis::pipe();
            for k in keys {
                pipe.hgetall(k);
            }
            pipe.query_async(&mut con).await
        })
        .await
    }

    async fn members(&self, set: String) -> Result<Vec<String>, StoreError> {
        let set = &set;
        self.call(|mut con| async move {
            ::redis::cmd("SMEMBERS")
                .arg(set)
                .query_async(&mut con)
                .await
        })
        .await
    }
}

/// Longest wait between two attempts to subscribe again.
const MAX_RESUBSCRIBE_DELAY: Duration = Duration::from_secs(5);

/// Subscribes to `channel` on a dedicated connection and sends what is heard to `tx`,
/// [`StoreEvent::Resubscribed`] first on every (re)subscription; reconnects with a backoff
/// doubling up to [`MAX_RESUBSCRIBE_DELAY`]. The connection is checked with a PING every
/// `keepalive`: one not answered within `timeout` counts as lost (a cut that closed
/// nothing would otherwise leave the replica deaf). Ends when `tx`'s receiver is gone.
async fn listen(
    target: Arc<Target>,
    channel: String,
    timeout: Duration,
    keepalive: Duration,
    tx: Sender<StoreEvent>,
) {
    let first_delay = Duration::from_millis(50);
    let mut delay = first_delay;
    loop {
        let subscribed = tokio::time::timeout(timeout, async {
            let mut pubsub = target.client().await?.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, ::redis::RedisError>(pubsub)
        })
        .await;
        match subscribed {
            Ok(Ok(pubsub)) => {
                tracing::info!(%channel, "subscribed to store events");
                delay = first_delay;
                if tx.send(StoreEvent::Resubscribed).await.is_err() {
                    return;
                }
                match relay(pubsub, timeout, keepalive, &tx).await {
                    Heard::ReceiverGone => return,
                    Heard::Lost(why) => {
                        tracing::warn!(%channel, why, "store event subscription lost; subscribing again");
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot subscribe to store events"),
            Err(_) => tracing::warn!(?timeout, "cannot subscribe to store events: timed out"),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_RESUBSCRIBE_DELAY);
    }
}

/// How a subscription ended.
enum Heard {
    /// Nobody listens any more.
    ReceiverGone,
    /// The connection closed or stopped answering.
    Lost(&'static str),
}

/// Sends the events heard on `pubsub` to `tx`, checking the connection every `keepalive`.
async fn relay(
    pubsub: ::redis::aio::PubSub,
    timeout: Duration,
    keepalive: Duration,
    tx: &Sender<StoreEvent>,
) -> Heard {
    use futures_util::StreamExt;
    let (mut sink, mut messages) = pubsub.split();
    let mut check = tokio::time::interval(keepalive);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.tick().await;
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return Heard::Lost("connection closed");
                };
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
                match StoreEvent::parse(&payload) {
                    Some(event) => {
                        if tx.send(event).await.is_err() {
                            return Heard::ReceiverGone;
                        }
                    }
                    None => tracing::debug!(%payload, "unknown store event ignored"),
                }
            }
            _ = check.tick() => {
                match tokio::time::timeout(timeout, sink.ping::<::redis::Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return Heard::Lost("PING failed"),
                    Err(_) => return Heard::Lost("PING not answered in time"),
                }
            }
        }
    }
}

fn redis_err(e: ::redis::RedisError) -> StoreError {
    StoreError::Query(format!("redis: {e}"))
}

#[async_trait]
impl Store for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.call(|mut con| async move { ::redis::cmd("PING").query_async::<()>(&mut con).await })
            .await
    }

    async fn insert_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        let fields = token_fields(token)?;
        let hash = hex(&token.hash);
        let mut args = vec![token.id.as_str(), hash.as_str(), token.owner.as_str()];
        args.extend(fields.iter().map(String::as_str));
        match self.eval::<i64>(&scripts::INSERT_TOKEN, &args).await? {
            1 => Ok(()),
            _ => Err(StoreError::Exists(format!("token '{}'", token.id))),
        }
    }

    async fn lookup_token(&self, hash: &[u8; 32]) -> Result<Option<TokenLookup>, StoreError> {
        let found: Option<(Fields, Fields)> =
            self.eval(&scripts::LOOKUP_TOKEN, &[&hex(hash)]).await?;
        let Some((token, owner)) = found else {
            return Ok(None);
        };
        Ok(Some(TokenLookup {
            token: token_from(&token)?,
            owner: (!owner.is_empty()).then(|| user_from(&owner)).transpose()?,
        }))
    }

    async fn list_tokens(&self, owner: Option<&str>) -> Result<Vec<TokenRecord>, StoreError> {
        let p = &self.prefix;
        let set = match owner {
            Some(o) => format!("{p}owner:{o}"),
            None => format!("{p}tokens"),
        };
        let ids = self.members(set).await?;
        let keys = ids.iter().map(|id| format!("{p}tok:id:{id}")).collect();
        let mut tokens = self
            .hashes(keys)
            .await?
            .iter()
            .filter(|f| !f.is_empty())
            .map(token_from)
            .collect::<Result<Vec<_>, _>>()?;
        tokens.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tokens)
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let key = format!("{}tok:id:{id}", self.prefix);
        match self.hashes(vec![key]).await?.first() {
            Some(f) if !f.is_empty() => token_from(f).map(Some),
            _ => Ok(None),
        }
    }

    async fn revoke_token(&self, token: TokenRef<'_>, at: i64) -> Result<bool, StoreError> {
        let at = at.to_string();
        let hash;
        let (by, which) = match token {
            TokenRef::Id(id) => ("id", id),
            TokenRef::Hash(h) => {
                hash = hex(h);
                ("hash", hash.as_str())
            }
        };
        let n: i64 = self.eval(&scripts::REVOKE_TOKEN, &[by, which, &at]).await?;
        Ok(n == 1)
    }

    async fn record_last_used(&self, uses: &[(String, i64)]) -> Result<(), StoreError> {
        if uses.is_empty() {
            return Ok(());
        }
        // One pipeline: the script loaded (a no-op when it is), then one short script per
        // chunk of uses, so that a large batch does not hold Redis in one long script.
        let mut pipe = ::redis::pipe();
        pipe.cmd("SCRIPT")
            .arg("LOAD")
            .arg(scripts::RECORD_LAST_USED_SOURCE)
            .ignore();
        for chunk in uses.chunks(LAST_USES_PER_SCRIPT) {
            let call = pipe
                .cmd("EVALSHA")
                .arg(scripts::RECORD_LAST_USED.get_hash())
                .arg(1)
                .arg(&self.prefix)
                .arg(&self.prefix)
                .arg(super::LAST_USE_RESOLUTION_SECS);
            for (id, at) in chunk {
                call.arg(id).arg(*at);
            }
            call.ignore();
        }
        let pipe = &pipe;
        self.call(|mut con| async move { pipe.query_async::<()>(&mut con).await })
            .await
    }

    async fn insert_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let fields = user_fields(user)?;
        let mut args = vec![user.username.as_str()];
        args.extend(fields.iter().map(String::as_str));
        match self.eval::<i64>(&scripts::INSERT_USER, &args).await? {
            1 => Ok(()),
            _ => Err(StoreError::Exists(format!("user '{}'", user.username))),
        }
    }

    async fn get_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let key = format!("{}user:{username}", self.prefix);
        let found = self.hashes(vec![key]).await?;
        match found.first() {
            Some(f) if !f.is_empty() => Ok(Some(user_from(f)?)),
            _ => Ok(None),
        }
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let p = &self.prefix;
        let names = self.members(format!("{p}users")).await?;
        let keys = names.iter().map(|n| format!("{p}user:{n}")).collect();
        let mut users = self
            .hashes(keys)
            .await?
            .iter()
            .filter(|f| !f.is_empty())
            .map(user_from)
            .collect::<Result<Vec<_>, _>>()?;
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    async fn set_password(&self, username: &str, hash: &str) -> Result<bool, StoreError> {
        let n: i64 = self.eval(&scripts::SET_PASSWORD, &[username, hash]).await?;
        Ok(n == 1)
    }

    async fn remove_user(&self, username: &str, at: i64) -> Result<bool, StoreError> {
        let n: i64 = self
            .eval(&scripts::REMOVE_USER, &[username, &at.to_string()])
            .await?;
        Ok(n == 1)
    }

    async fn subjects(&self, among: Option<&[String]>) -> Result<Vec<String>, StoreError> {
        let (users, live) = (
            format!("{}users", self.prefix),
            format!("{}owners:live", self.prefix),
        );
        let (users, live) = (&users, &live);
        let names: BTreeSet<String> = match among {
            None => self
                .call(|mut con| async move {
                    ::redis::cmd("SUNION")
                        .arg(users)
                        .arg(live)
                        .query_async::<Vec<String>>(&mut con)
                        .await
                })
                .await?
                .into_iter()
                .collect(),
            Some([]) => BTreeSet::new(),
            Some(among) => {
                let (is_user, is_owner): (Vec<bool>, Vec<bool>) = self
                    .call(|mut con| async move {
                        ::redis::pipe()
                            .cmd("SMISMEMBER")
                            .arg(users)
                            .arg(among)
                            .cmd("SMISMEMBER")
                            .arg(live)
                            .arg(among)
                            .query_async(&mut con)
                            .await
                    })
                    .await?;
                among
                    .iter()
                    .zip(is_user.iter().zip(&is_owner))
                    .filter(|(_, (u, o))| **u || **o)
                    .map(|(n, _)| n.clone())
                    .collect()
            }
        };
        Ok(names.into_iter().collect())
    }

    async fn keys(&self, now: i64) -> Result<Vec<KeyRecord>, StoreError> {
        let ring: Fields = self
            .call(|mut con| async move {
                ::redis::cmd("HGETALL")
                    .arg(format!("{}keys", self.prefix))
                    .query_async(&mut con)
                    .await
            })
            .await?;
        let mut keys = ring
            .values()
            .map(|json| key_from(from_json(json)?))
            .collect::<Result<Vec<_>, _>>()?;
        keys.retain(|(k, _)| k.publish_until.is_none_or(|until| until > now));
        keys.sort_by(|(a, a_seq), (b, b_seq)| {
            (b.activates_at, b_seq).cmp(&(a.activates_at, a_seq))
        });
        Ok(keys.into_iter().map(|(k, _)| k).collect())
    }

    async fn add_key(
        &self,
        key: &KeyRecord,
        now: i64,
        publish_until: i64,
        only_if_none: bool,
    ) -> Result<bool, StoreError> {
        let stored = to_json(&StoredKey {
            kid: key.kid.clone(),
            algorithm: key.algorithm.clone(),
            private_pkcs8: hex(&key.private_pkcs8),
            created_at: key.created_at,
            activates_at: key.activates_at,
            retired_at: None,
            publish_until: None,
            seq: 0,
        })?;
        let (now, until) = (now.to_string(), publish_until.to_string());
        let only = if only_if_none { "1" } else { "0" };
        let added: i64 = self
            .eval(&scripts::ADD_KEY, &[&stored, &now, &until, only])
            .await?;
        Ok(added == 1)
    }

    async fn reserve_attempt(
        &self,
        counters: &[(String, u32)],
        window: Duration,
    ) -> Result<Attempt, StoreError> {
        self.reserve(counters, window).await
    }

    async fn forgive_attempt(&self, counters: &[String]) -> Result<(), StoreError> {
        self.forgive(counters).await
    }

    async fn insert_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        self.insert_session_record(session).await
    }

    async fn get_session(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.get_session_record(hash, now).await
    }

    async fn touch_session(&self, hash: &[u8; 32], at: i64) -> Result<bool, StoreError> {
        self.touch_session_record(hash, at).await
    }

    async fn replace_session(&self, session: &SessionRecord) -> Result<bool, StoreError> {
        self.replace_session_record(session).await
    }

    async fn delete_session(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        self.delete_session_record(hash).await
    }

    async fn end_sessions(&self, which: SessionMatch<'_>) -> Result<Vec<[u8; 32]>, StoreError> {
        self.end_session_records(which).await
    }

    fn events(&self) -> Option<tokio::sync::mpsc::Receiver<StoreEvent>> {
        let (tx, rx) = channel(1024);
        let channel = format!("{}events", self.prefix);
        tokio::spawn(listen(
            Arc::clone(&self.target),
            channel,
            self.timeout,
            self.keepalive,
            tx,
        ));
        Some(rx)
    }
}
