//! Attempt counters shared by every replica (the Basic provider's brute-force limits).
//!
//! `<p>fail:<name>`: a string counter with a TTL, one per counter name (the caller hashes
//! what it counts: user names and addresses are not stored as such). The first attempt of a
//! window sets the TTL, so windows are fixed from their first attempt, as in one process.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;

use super::RedisStore;
use crate::store::{Attempt, StoreError};

/// ARGV: prefix, window in ms, then counter name / limit pairs. -1 when admitted (every
/// counter incremented), else the milliseconds until the first full counter's window ends.
static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, window = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local k = p .. 'fail:' .. ARGV[i]
  if tonumber(redis.call('GET', k) or '0') >= tonumber(ARGV[i + 1]) then
    local ttl = redis.call('PTTL', k)
    if ttl < 0 then ttl = window end
    return ttl
  end
end
for i = 3, #ARGV, 2 do
  local k = p .. 'fail:' .. ARGV[i]
  if redis.call('INCR', k) == 1 then redis.call('PEXPIRE', k, window) end
end
return -1
"#,
    )
});

/// ARGV: prefix, then counter names. Takes one attempt back from each counter still there
/// (a counter whose window ended in between is gone: nothing to take back).
static FORGIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = ARGV[1]
for i = 2, #ARGV do
  local k = p .. 'fail:' .. ARGV[i]
  if tonumber(redis.call('GET', k) or '0') > 0 then redis.call('DECR', k) end
end
return 1
"#,
    )
});

impl RedisStore {
    pub(super) async fn reserve(
        &self,
        counters: &[(String, u32)],
        window: Duration,
    ) -> Result<Attempt, StoreError> {
        let window_ms = window.as_millis().max(1).to_string();
        let limits: Vec<String> = counters.iter().map(|(_, l)| l.to_string()).collect();
        let mut args = vec![window_ms.as_str()];
        for ((name, _), limit) in counters.iter().zip(&limits) {
            args.push(name);
            args.push(limit);
        }
        let ms: i64 = self.eval(&RESERVE, &args).await?;
        Ok(match u64::try_from(ms) {
            Ok(ms) => Attempt::Refused(Duration::from_millis(ms)),
            Err(_) => Attempt::Admitted,
        })
    }

    pub(super) async fn forgive(&self, counters: &[String]) -> Result<(), StoreError> {
        let args: Vec<&str> = counters.iter().map(String::as_str).collect();
        self.eval::<i64>(&FORGIVE, &args).await.map(drop)
    }
}
