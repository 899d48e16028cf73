//! Copying state into a Redis store as it is (`authgate store migrate`): unlike
//! [`super::Store::add_key`], which rotates, a key is put in the ring with its own times.

use std::sync::LazyLock;

use redis::Script;

use super::RedisStore;
use super::record::{StoredKey, hex, to_json};
use crate::store::{KeyRecord, StoreError};

/// ARGV: prefix, kid, the key as JSON without `seq`. 1 when added, 0 when the kid is
/// already in the ring (left as it is).
static IMPORT_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, kid = ARGV[1], ARGV[2]
local ring = p .. 'keys'
if redis.call('HEXISTS', ring, kid) == 1 then return 0 end
local key = cjson.decode(ARGV[3])
key.seq = redis.call('INCR', p .. 'keys:seq')
redis.call('HSET', ring, kid, cjson.encode(key))
redis.call('PUBLISH', p .. 'events', 'keys')
return 1
"#,
    )
});

impl RedisStore {
    /// Puts `key` into the ring unchanged; `false` when a key of its kid is there already.
    /// Keys imported one after another keep that order among keys activating together.
    pub async fn import_key(&self, key: &KeyRecord) -> Result<bool, StoreError> {
        let stored = to_json(&StoredKey {
            kid: key.kid.clone(),
            algorithm: key.algorithm.clone(),
            private_pkcs8: hex(&key.private_pkcs8),
            created_at: key.created_at,
            activates_at: key.activates_at,
            retired_at: key.retired_at,
            publish_until: key.publish_until,
            seq: 0,
        })?;
        let added: i64 = self.eval(&IMPORT_KEY, &[&key.kid, &stored]).await?;
        Ok(added == 1)
    }
}
