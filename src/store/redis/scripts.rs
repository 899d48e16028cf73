//! The Lua scripts of the Redis store: each runs atomically on the server, so that checks
//! and writes that must go together (a token and its indexes, a revocation and the subject
//! directory, the key ring) cannot interleave with another replica's. `ARGV[1]` is always
//! the key prefix, which is also the one declared key (`KEYS[1]`): the keys a script builds
//! from it all lie in its slot when the prefix holds a hash tag, as Redis Cluster requires
//! (see [`super::target`]). Writes that other replicas must hear
//! of publish a message on `<prefix>events` (see [`crate::store::StoreEvent`]).

use std::sync::LazyLock;

use redis::Script;

/// Revokes token `id` at `at` and updates the live-owner indexes; 1 when it was live.
const REVOKE_FN: &str = r#"
local function revoke(p, id, at)
  local k = p .. 'tok:id:' .. id
  if redis.call('EXISTS', k) == 0 or redis.call('HEXISTS', k, 'revoked_at') == 1 then
    return 0
  end
  redis.call('HSET', k, 'revoked_at', at)
  local owner = redis.call('HGET', k, 'owner')
  local live = p .. 'live:' .. owner
  redis.call('SREM', live, id)
  if redis.call('SCARD', live) == 0 then redis.call('SREM', p .. 'owners:live', owner) end
  redis.call('PUBLISH', p .. 'events', 'revoke-token ' .. id)
  return 1
end
"#;

/// ARGV: prefix, id, hash hex, owner, then field/value pairs. 0 when the id or hash exists.
pub static INSERT_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, id, hex, owner = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local k = p .. 'tok:id:' .. id
if redis.call('EXISTS', k) == 1 or redis.call('EXISTS', p .. 'tok:' .. hex) == 1 then
  return 0
end
for i = 5, #ARGV, 2 do redis.call('HSET', k, ARGV[i], ARGV[i + 1]) end
redis.call('SET', p .. 'tok:' .. hex, id)
redis.call('SADD', p .. 'tokens', id)
redis.call('SADD', p .. 'owner:' .. owner, id)
redis.call('SADD', p .. 'live:' .. owner, id)
redis.call('SADD', p .. 'owners:live', owner)
return 1
"#,
    )
});

/// ARGV: prefix, hash hex. The token's and its owner's fields, or nil.
pub static LOOKUP_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = ARGV[1]
local id = redis.call('GET', p .. 'tok:' .. ARGV[2])
if not id then return false end
local k = p .. 'tok:id:' .. id
local owner = redis.call('HGET', k, 'owner')
return {redis.call('HGETALL', k), redis.call('HGETALL', p .. 'user:' .. owner)}
"#,
    )
});

/// ARGV: prefix, "id" or "hash", the id or hash hex, at.
pub static REVOKE_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{REVOKE_FN}
local p, id = ARGV[1], ARGV[3]
if ARGV[2] == 'hash' then
  id = redis.call('GET', p .. 'tok:' .. ARGV[3])
  if not id then return 0 end
end
return revoke(p, id, ARGV[4])
"#
    ))
});

/// ARGV: prefix, the resolution (store::LAST_USE_RESOLUTION_SECS), then (id, at) pairs:
/// a use is written when none is stored or it is that much or more after the stored one.
/// Its source is sent with `SCRIPT LOAD` in the same pipeline as its calls.
pub const RECORD_LAST_USED_SOURCE: &str = r#"
local p, resolution = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local k = p .. 'tok:id:' .. ARGV[i]
  if redis.call('EXISTS', k) == 1 then
    local current = tonumber(redis.call('HGET', k, 'last_used_at') or '')
    local at = tonumber(ARGV[i + 1])
    if current == nil or at - current >= resolution then
      redis.call('HSET', k, 'last_used_at', string.format('%d', at))
    end
  end
end
return 1
"#;

/// [`RECORD_LAST_USED_SOURCE`] as a script (its SHA-1 for `EVALSHA`).
pub static RECORD_LAST_USED: LazyLock<Script> =
    LazyLock::new(|| Script::new(RECORD_LAST_USED_SOURCE));

/// ARGV: prefix, username, then field/value pairs. 0 when the name is taken.
pub static INSERT_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p, name = ARGV[1], ARGV[2]
local k = p .. 'user:' .. name
if redis.call('EXISTS', k) == 1 then return 0 end
for i = 3, #ARGV, 2 do redis.call('HSET', k, ARGV[i], ARGV[i + 1]) end
redis.call('SADD', p .. 'users', name)
return 1
"#,
    )
});

/// ARGV: prefix, username, password hash. 0 when there is no such user.
pub static SET_PASSWORD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k = ARGV[1] .. 'user:' .. ARGV[2]
if redis.call('EXISTS', k) == 0 then return 0 end
redis.call('HSET', k, 'password_hash', ARGV[3])
redis.call('PUBLISH', ARGV[1] .. 'events', 'user ' .. ARGV[2])
return 1
"#,
    )
});

/// ARGV: prefix, username, at. Removes the user and revokes their tokens.
pub static REMOVE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{REVOKE_FN}
local p, name = ARGV[1], ARGV[2]
if redis.call('DEL', p .. 'user:' .. name) == 0 then return 0 end
redis.call('SREM', p .. 'users', name)
for _, id in ipairs(redis.call('SMEMBERS', p .. 'owner:' .. name)) do
  revoke(p, id, ARGV[3])
end
redis.call('PUBLISH', p .. 'events', 'user ' .. name)
return 1
"#
    ))
});

/// ARGV: prefix, new key (JSON), now, publish_until, only_if_none ("1"/"0"). The rules of
/// `Store::add_key`; every key is one JSON field of `<prefix>keys`, with `seq` the order
/// of addition.
pub static ADD_KEY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = ARGV[1]
local ring = p .. 'keys'
local new = cjson.decode(ARGV[2])
local now, publish_until = tonumber(ARGV[3]), tonumber(ARGV[4])
local keys = {}
local all = redis.call('HGETALL', ring)
for i = 1, #all, 2 do keys[all[i]] = cjson.decode(all[i + 1]) end
local function signs(k) return k.retired_at == nil or k.retired_at > now end
if ARGV[5] == '1' then
  for _, k in pairs(keys) do
    if k.algorithm == new.algorithm and signs(k) then return 0 end
  end
end
if keys[new.kid] ~= nil then return redis.error_reply('key ' .. new.kid .. ' exists') end
for kid, k in pairs(keys) do
  if k.activates_at > now then
    -- A scheduled key that never signed is replaced, not kept beside the new one.
    redis.call('HDEL', ring, kid)
  else
    if signs(k) then
      k.retired_at = new.activates_at
      k.publish_until = publish_until
    end
    if k.publish_until ~= nil and k.publish_until <= now then
      redis.call('HDEL', ring, kid)
    else
      redis.call('HSET', ring, kid, cjson.encode(k))
    end
  end
end
new.seq = redis.call('INCR', p .. 'keys:seq')
redis.call('HSET', ring, new.kid, cjson.encode(new))
redis.call('PUBLISH', p .. 'events', 'keys')
return 1
"#,
    )
});
