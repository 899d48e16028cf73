//! The key ring: which published key signs, which one is next and which are retiring,
//! computed from the stored records and the time alone, so that every replica reading the
//! same store agrees. A rotated key is published first and signs `mint.rotation_lead` later;
//! the key it replaces stays published until every JWT it signed has expired.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::{Algorithm, KEY_RELOAD_INTERVAL, KeyError, MintConfig, MintError, SigningKey};
use crate::store::{KeyRecord, Store, StoreError};

/// Allowance for verifiers' clocks when deciding how long a retired key stays published.
const CLOCK_SKEW: i64 = 60;

/// Where a key stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published; signs from its activation on.
    Next,
    /// Signs.
    Active,
    /// Signs no more; published until every JWT it signed has expired.
    Retiring,
}

impl KeyState {
    /// The name `keys list` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Next => "next",
            Self::Active => "active",
            Self::Retiring => "retiring",
        }
    }
}

/// One published key.
#[derive(Debug)]
pub struct RingKey {
    /// The key.
    pub key: Arc<SigningKey>,
    /// Its state when the ring was loaded.
    pub state: KeyState,
    /// When it signs (or signed) first; `None` for keys from files.
    pub activates_at: Option<i64>,
    /// Until when it stays published; `None` while it has no successor.
    pub publish_until: Option<i64>,
    /// base64url of the JWS header of the JWTs it signs.
    pub(super) header_b64: String,
}

/// The keys in use: one signs (a next one takes over at its activation), all are published.
#[derive(Debug)]
pub struct KeyRing {
    /// Next first, then the active one, then the retiring ones, newest first.
    keys: Vec<RingKey>,
    active: usize,
    /// Pre-serialised JWKS document.
    jwks: Bytes,
}

/// Where keys come from.
#[derive(Debug, Clone)]
pub(super) enum KeySource {
    Files(Vec<PathBuf>),
    Store,
}

/// What [`rotate`] did.
#[derive(Debug, Clone)]
pub struct Rotation {
    /// The new key's id.
    pub kid: String,
    /// The new key's algorithm.
    pub algorithm: Algorithm,
    /// When it starts signing.
    pub activates_at: i64,
    /// Until when the key it replaces stays published.
    pub previous_published_until: i64,
}

/// The states at `now` of keys activating at `activations`, in the same order: the key
/// activated last by `now` signs, keys activating later are next, the others retire. When
/// none has activated yet (a clock behind the one that stored them), the earliest signs.
pub fn states(activations: &[i64], now: i64) -> Vec<KeyState> {
    let active = activations
        .iter()
        .enumerate()
        .filter(|(_, at)| **at <= now)
        .max_by_key(|(i, at)| (**at, std::cmp::Reverse(*i)))
        .or_else(|| activations.iter().enumerate().min_by_key(|(_, at)| **at))
        .map(|(i, _)| i);
    activations
        .iter()
        .enumerate()
        .map(|(i, at)| match active {
            Some(a) if a == i => KeyState::Active,
            Some(a) if *at > activations[a] => KeyState::Next,
            _ => KeyState::Retiring,
        })
        .collect()
}

impl KeyRing {
    fn new(mut keys: Vec<RingKey>) -> Result<Self, MintError> {
        keys.sort_by_key(|k| std::cmp::Reverse(k.activates_at));
        let active = keys
            .iter()
            .position(|k| k.state == KeyState::Active)
            .ok_or(MintError::NoKeys)?;
        let jwks: Vec<_> = keys.iter().map(|k| k.key.jwk.clone()).collect();
        let jwks = Bytes::from(json!({ "keys": jwks }).to_string());
        Ok(Self { keys, active, jwks })
    }

    /// The key that signed when the ring was loaded.
    pub fn active(&self) -> &RingKey {
        &self.keys[self.active]
    }

    /// The key that signs at `now`: the loaded active one, or the next one once its
    /// activation has come (every replica switches then, without waiting for a reload).
    pub fn signing(&self, now: i64) -> &RingKey {
        self.keys[..self.active]
            .iter()
            .rev()
            .take_while(|k| k.activates_at.is_some_and(|at| at <= now))
            .last()
            .unwrap_or(self.active())
    }

    /// Every published key (next, active, retiring).
    pub fn keys(&self) -> &[RingKey] {
        &self.keys
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Bytes {
        self.jwks.clone()
    }

    /// What a reload compares: a changed ring replaces the current one.
    pub(super) fn same_as(&self, other: &KeyRing) -> bool {
        let shape = |r: &KeyRing| -> Vec<(String, KeyState, Option<i64>, Option<i64>)> {
            r.keys
                .iter()
                .map(|k| (k.key.kid.clone(), k.state, k.activates_at, k.publish_until))
                .collect()
        };
        shape(self) == shape(other)
    }
}

/// A new key record for `algorithm`, published at `now` and signing from `activates_at`.
pub fn generate_key_record(
    algorithm: Algorithm,
    now: i64,
    activates_at: i64,
) -> Result<KeyRecord, KeyError> {
    let (key, der) = SigningKey::generate(algorithm)?;
    Ok(KeyRecord {
        kid: key.kid.clone(),
        algorithm: algorithm.as_str().to_owned(),
        private_pkcs8: der,
        created_at: now,
        activates_at,
        retired_at: None,
        publish_until: None,
    })
}

/// Until when a key that stops signing at `retired_at` must stay published: every JWT it
/// signed has expired, including those signed by replicas that have not reloaded yet.
pub fn publish_until(retired_at: i64, ttl: i64) -> i64 {
    retired_at + ttl + KEY_RELOAD_INTERVAL.as_secs() as i64 + CLOCK_SKEW
}

/// Adds a new key of `config.algorithm` to the store's key ring at `now`: published at
/// once, signing after `mint.rotation_lead`, or at once with `immediate` (then verifiers
/// that cached the JWKS refuse its JWTs until they fetch it again). A scheduled key that
/// has not signed yet is replaced.
pub async fn rotate(
    config: &MintConfig,
    store: &dyn Store,
    now: i64,
    immediate: bool,
) -> Result<Rotation, MintError> {
    if !config.key_files.is_empty() {
        return Err(MintError::FileKeys);
    }
    let lead = if immediate {
        0
    } else {
        config.rotation_lead.as_secs() as i64
    };
    let record = generate_key_record(config.algorithm, now, now + lead)?;
    let until = publish_until(record.activates_at, config.ttl.as_secs() as i64);
    store.add_key(&record, now, until, false).await?;
    Ok(Rotation {
        kid: record.kid,
        algorithm: config.algorithm,
        activates_at: record.activates_at,
        previous_published_until: until,
    })
}

/// Builds the key ring at `now`; with `create_missing`, first generates and stores a key
/// (signing at once) when no key of `algorithm` signs or is scheduled to.
pub(super) async fn load_ring(
    source: &KeySource,
    algorithm: Algorithm,
    typ: &str,
    store: &dyn Store,
    create_missing: bool,
    ttl: i64,
    now: i64,
) -> Result<KeyRing, MintError> {
    let paths = match source {
        KeySource::Files(paths) => paths,
        KeySource::Store => {
            let records = current_records(algorithm, store, create_missing, ttl, now).await?;
            let activations: Vec<i64> = records.iter().map(|r| r.activates_at).collect();
            let mut keys = Vec::with_capacity(records.len());
            for (r, state) in records.iter().zip(states(&activations, now)) {
                let alg = Algorithm::parse(&r.algorithm).ok_or_else(|| {
                    StoreError::Corrupt(format!("key {} has algorithm {}", r.kid, r.algorithm))
                })?;
                let what = format!("stored key {}", r.kid);
                let key = SigningKey::from_der(alg, &r.private_pkcs8, &what)?;
                keys.push(RingKey {
                    header_b64: key.header_b64(typ),
                    key: Arc::new(key),
                    state,
                    activates_at: Some(r.activates_at),
                    publish_until: r.publish_until,
                });
            }
            return KeyRing::new(keys);
        }
    };
    // The first file signs; the others are only published.
    let mut keys = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let key = SigningKey::from_pem_file(algorithm, path)?.0;
        keys.push(RingKey {
            header_b64: key.header_b64(typ),
            key: Arc::new(key),
            state: if i == 0 {
                KeyState::Active
            } else {
                KeyState::Retiring
            },
            activates_at: None,
            publish_until: None,
        });
    }
    KeyRing::new(keys)
}

/// The published records, after making sure (with `create_missing`) that a key of
/// `algorithm` signs or is scheduled to.
async fn current_records(
    algorithm: Algorithm,
    store: &dyn Store,
    create_missing: bool,
    ttl: i64,
    now: i64,
) -> Result<Vec<KeyRecord>, MintError> {
    let records = store.keys(now).await?;
    let has_current = records
        .iter()
        .any(|r| r.algorithm == algorithm.as_str() && r.retired_at.is_none_or(|at| at > now));
    if has_current {
        return Ok(records);
    }
    if !create_missing {
        return Err(MintError::NoActiveKey(algorithm.as_str()));
    }
    let record = generate_key_record(algorithm, now, now)?;
    if store
        .add_key(&record, now, publish_until(now, ttl), true)
        .await?
    {
        tracing::info!(kid = %record.kid, algorithm = algorithm.as_str(), "generated a signing key");
    }
    Ok(store.keys(now).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SqliteStore;
    use KeyState::*;

    #[test]
    fn states_follow_the_activation_times() {
        // (activations, now, expected)
        let cases: &[(&[i64], i64, &[KeyState])] = &[
            (&[100], 50, &[Active]),
            (&[100], 100, &[Active]),
            (&[200, 100], 150, &[Next, Active]),
            (&[200, 100], 199, &[Next, Active]),
            (&[200, 100], 200, &[Active, Retiring]),
            (&[300, 200, 100], 250, &[Next, Active, Retiring]),
            (&[300, 200, 100], 400, &[Active, Retiring, Retiring]),
            // A clock behind the one that stored them: the earliest signs.
            (&[300, 200], 100, &[Next, Active]),
            // Two keys activating in the same second: the first listed (the store lists the
            // one added last first).
            (&[100, 100], 100, &[Active, Retiring]),
            (&[], 100, &[]),
        ];
        for (activations, now, expected) in cases {
            assert_eq!(
                states(activations, *now),
                *expected,
                "{activations:?} at {now}"
            );
        }
    }

    #[tokio::test]
    async fn rotation_publishes_first_signs_later_and_unpublishes_after_the_last_jwt() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("k.db")).unwrap();
        let config = MintConfig::default(); // ttl 300 s, lead 15 min
        let ring = async |create: bool, now: i64| {
            let ring = load_ring(
                &KeySource::Store,
                Algorithm::ES256,
                "at+jwt",
                &store,
                create,
                300,
                now,
            )
            .await
            .unwrap();
            let rows: Vec<(String, KeyState)> = ring
                .keys()
                .iter()
                .map(|k| (k.key.kid.clone(), k.state))
                .collect();
            (ring, rows)
        };
        let t0 = 1_000_000;
        let (first, rows) = ring(true, t0).await;
        let old = first.active().key.kid.clone();
        assert_eq!(rows, [(old.clone(), Active)]);

        let r = rotate(&config, &store, t0 + 100, false).await.unwrap();
        assert_eq!(r.activates_at, t0 + 100 + 900);
        assert_eq!(r.previous_published_until, t0 + 1000 + 300 + 10 + 60);
        // Published at once, the old key still signs until the activation...
        let (ring_a, rows) = ring(false, t0 + 100).await;
        assert_eq!(rows, [(r.kid.clone(), Next), (old.clone(), Active)]);
        assert_eq!(ring_a.signing(t0 + 999).key.kid, old);
        // ... when a replica switches even without reloading.
        assert_eq!(ring_a.signing(t0 + 1000).key.kid, r.kid);
        let jwks: serde_json::Value = serde_json::from_slice(&ring_a.jwks()).unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        let (ring_b, rows) = ring(false, t0 + 1000).await;
        assert_eq!(rows, [(r.kid.clone(), Active), (old.clone(), Retiring)]);
        assert_eq!(ring_b.signing(t0 + 1000).key.kid, r.kid);
        assert!(!ring_a.same_as(&ring_b));
        // The old key is published until its last JWT (signed at t0 + 1000) has expired.
        let (_, rows) = ring(false, t0 + 1369).await;
        assert_eq!(rows.len(), 2);
        let (_, rows) = ring(false, t0 + 1370).await;
        assert_eq!(rows, [(r.kid.clone(), Active)]);

        // `--now` signs at once; it replaces a scheduled key that never signed.
        let t1 = t0 + 2000;
        let scheduled = rotate(&config, &store, t1, false).await.unwrap();
        let now = rotate(&config, &store, t1 + 5, true).await.unwrap();
        assert_eq!(now.activates_at, t1 + 5);
        let (ring_c, rows) = ring(false, t1 + 5).await;
        assert_eq!(rows, [(now.kid.clone(), Active), (r.kid.clone(), Retiring)]);
        assert!(rows.iter().all(|(kid, _)| *kid != scheduled.kid));
        assert_eq!(ring_c.keys()[1].publish_until, Some(t1 + 5 + 370));
        // Key files are rotated by editing mint.key_files.
        let files = MintConfig {
            key_files: vec!["k.pem".into()],
            ..MintConfig::default()
        };
        assert!(matches!(
            rotate(&files, &store, t1, false).await,
            Err(MintError::FileKeys)
        ));
    }
}
