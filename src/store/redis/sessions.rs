//! The Redis store's sessions: `<p>session:<hash hex>` is a hash (`data`: the fields as
//! JSON, `last_seen`, `issuer`, `sub`, `sid`) that Redis expires at the session's absolute
//! end; `<p>sessions:sub:<issuer>:<sub>` and `<p>sessions:sid:<issuer>:<sid>` are sets of
//! session hashes (hex) for back-channel logout, expiring with their latest session.
//! Ending a session publishes `session <hash hex>` on `<p>events`, so that every replica
//! drops its cached decision at once.

use std::sync::LazyLock;

use redis::Script;

use super::RedisStore;
use super::record::hex;
use crate::store::session::{SessionMatch, SessionRecord, decode, encode};
use crate::store::{StoreError, parse_hex32};

/// ARGV: prefix, hex, data, last_seen, issuer, sub, sid ('' for none), expires_at.
/// 0 when the hash exists.
static INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, hex, data, seen, iss, sub, sid, exp =
  ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local k = p .. 'session:' .. hex
if redis.call('EXISTS', k) == 1 then return 0 end
redis.call('HSET', k, 'data', data, 'last_seen', seen, 'issuer', iss, 'sub', sub, 'sid', sid)
redis.call('EXPIREAT', k, exp)
local function index(set)
  redis.call('SADD', set, hex)
  if redis.call('TTL', set) >= 0 then redis.call('EXPIREAT', set, exp, 'GT')
  else redis.call('EXPIREAT', set, exp) end
end
index(p .. 'sessions:sub:' .. iss .. ':' .. sub)
if sid ~= '' then index(p .. 'sessions:sid:' .. iss .. ':' .. sid) end
return 1
"#,
    )
});

/// ARGV: prefix, hex, data, expires_at. 0 when the session is gone.
static REPLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k = ARGV[1] .. 'session:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('HSET', k, 'data', ARGV[3])
redis.call('EXPIREAT', k, ARGV[4])
return 1
"#,
    )
});

/// ARGV: prefix, hex, at. 1 when a later use was recorded.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k = ARGV[1] .. 'session:' .. ARGV[2]
local seen = redis.call('HGET', k, 'last_seen')
if not seen or tonumber(seen) >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', k, 'last_seen', ARGV[3])
return 1
"#,
    )
});

/// Ends the sessions whose hashes (hex) are ARGV[3..] if they match ARGV[2] = sub ('' for
/// any); publishes each; returns the hashes ended. ARGV[1]: prefix.
static END: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, sub = ARGV[1], ARGV[2]
local ended = {}
for i = 3, #ARGV do
  local hex = ARGV[i]
  local k = p .. 'session:' .. hex
  local f = redis.call('HMGET', k, 'issuer', 'sub', 'sid')
  if f[1] and (sub == '' or f[2] == sub) then
    redis.call('DEL', k)
    redis.call('SREM', p .. 'sessions:sub:' .. f[1] .. ':' .. f[2], hex)
    if f[3] and f[3] ~= '' then
      redis.call('SREM', p .. 'sessions:sid:' .. f[1] .. ':' .. f[3], hex)
    end
    redis.call('PUBLISH', p .. 'events', 'session ' .. hex)
    table.insert(ended, hex)
  end
end
return ended
"#,
    )
});

impl RedisStore {
    pub(super) async fn insert_session_record(
        &self,
        record: &SessionRecord,
    ) -> Result<(), StoreError> {
        let data = encode(record)?;
        let inserted: i64 = self
            .eval(
                &INSERT,
                &[
                    &hex(&record.hash),
                    &data,
                    &record.last_seen_at.to_string(),
                    &record.issuer,
                    &record.subject,
                    record.sid.as_deref().unwrap_or(""),
                    &record.expires_at.to_string(),
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Exists("session".into()));
        }
        Ok(())
    }

    pub(super) async fn get_session_record(
        &self,
        hash: &[u8; 32],
        now: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let key = format!("{}session:{}", self.prefix, hex(hash));
        let key = &key;
        let (data, seen): (Option<String>, Option<i64>) = self
            .call(|mut con| async move {
                ::redis::cmd("HMGET")
                    .arg(key)
                    .arg("data")
                    .arg("last_seen")
                    .query_async(&mut con)
                    .await
            })
            .await?;
        let Some(data) = data else {
            return Ok(None);
        };
        let mut record = decode(*hash, &data)?;
        if let Some(seen) = seen {
            record.last_seen_at = record.last_seen_at.max(seen);
        }
        Ok((record.expires_at > now).then_some(record))
    }

    pub(super) async fn touch_session_record(
        &self,
        hash: &[u8; 32],
        at: i64,
    ) -> Result<bool, StoreError> {
        let n: i64 = self.eval(&TOUCH, &[&hex(hash), &at.to_string()]).await?;
        Ok(n == 1)
    }

    pub(super) async fn replace_session_record(
        &self,
        record: &SessionRecord,
    ) -> Result<bool, StoreError> {
        let data = encode(record)?;
        let n: i64 = self
            .eval(
                &REPLACE,
                &[&hex(&record.hash), &data, &record.expires_at.to_string()],
            )
            .await?;
        Ok(n == 1)
    }

    pub(super) async fn delete_session_record(&self, hash: &[u8; 32]) -> Result<bool, StoreError> {
        let ended: Vec<String> = self.eval(&END, &["", &hex(hash)]).await?;
        Ok(!ended.is_empty())
    }

    pub(super) async fn end_session_records(
        &self,
        which: SessionMatch<'_>,
    ) -> Result<Vec<[u8; 32]>, StoreError> {
        let set = match (which.sid, which.subject) {
            (Some(sid), _) => format!("{}sessions:sid:{}:{sid}", self.prefix, which.issuer),
            (None, Some(sub)) => format!("{}sessions:sub:{}:{sub}", self.prefix, which.issuer),
            (None, None) => return Ok(Vec::new()),
        };
        let members = self.members(set).await?;
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let mut args: Vec<&str> = vec![which.subject.unwrap_or("")];
        args.extend(members.iter().map(String::as_str));
        let ended: Vec<String> = self.eval(&END, &args).await?;
        Ok(ended.iter().filter_map(|h| parse_hex32(h)).collect())
    }
}
