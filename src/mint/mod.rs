//! Minting: the short-lived JWT handed to the upstream, signed with the active key of a
//! key ring that lives in the store (or in PEM files), published at `/.well-known/jwks.json`.
//! A minted JWT is kept with the cached identity ([`Reused`] in `cache::Known`, shared by
//! every cached credential whose identity is equal) and handed out again for the same key
//! and audience until shortly before it expires, so the signature cost is paid once per
//! cached identity, not per request. It is kept only from a credential's second request on:
//! a credential seen once (a crawler's random tokens, a batch of one-shot clients) leaves
//! no JWT behind in memory.

mod config;
mod keys;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::HeaderValue;
use serde::Serialize;
use serde_json::json;

pub use config::MintConfig;
pub use keys::{Algorithm, KeyError, SigningKey};

use crate::identity::{Attributes, Identity};
use crate::secret::random_bytes;
use crate::store::{KeyRecord, Store, StoreError};

/// How often a running server re-reads the key ring from the store (picks up rotations).
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(10);
/// Audiences one cached identity keeps JWTs for (an identity used on more rules with
/// distinct audiences re-signs for the others).
const REUSED_AUDIENCES: usize = 4;
/// Allowance for verifiers' clocks when deciding how long a retired key stays published.
const CLOCK_SKEW: i64 = 60;

/// Why the key ring cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// A key is unusable.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The store has no key to sign with (and this command does not create one).
    #[error(
        "the store holds no active {0} signing key (authgate serve or authgate keys rotate creates one)"
    )]
    NoActiveKey(&'static str),
    /// Keys come from files, so they cannot be rotated in the store.
    #[error("keys come from mint.key_files; rotate them by changing that list")]
    FileKeys,
}

/// The keys in use: one signs, all are published.
pub struct KeyRing {
    /// The key that signs.
    pub active: Arc<SigningKey>,
    /// Every published key (active first).
    pub published: Vec<Arc<SigningKey>>,
    /// Pre-serialised JWKS document.
    pub jwks: Bytes,
}

impl KeyRing {
    fn new(published: Vec<Arc<SigningKey>>) -> Self {
        let active = published[0].clone();
        let keys: Vec<_> = published.iter().map(|k| k.jwk.clone()).collect();
        let jwks = Bytes::from(json!({ "keys": keys }).to_string());
        Self {
            active,
            published,
            jwks,
        }
    }

    fn kids(&self) -> Vec<&str> {
        self.published.iter().map(|k| k.kid.as_str()).collect()
    }
}

/// Where keys come from.
#[derive(Debug, Clone)]
enum KeySource {
    Files(Vec<PathBuf>),
    Store,
}

/// Signs JWTs for identities.
pub struct Minter {
    ring: ArcSwap<KeyRing>,
    source: KeySource,
    algorithm: Algorithm,
    issuer: Arc<str>,
    default_audience: Arc<str>,
    ttl: i64,
    header_prefix: String,
    discovery: Bytes,
}

/// A signed JWT.
pub struct Minted {
    /// `mint.header_prefix` + the JWT, ready to put in the response.
    pub header: HeaderValue,
    prefix_len: usize,
    kid: String,
    audience: Arc<str>,
    exp: i64,
}

/// What a kept JWT costs besides its bytes.
const MINTED_OVERHEAD: usize = 160;

/// The JWTs minted for one cached identity, kept for reuse (one per audience).
#[derive(Default)]
pub struct Reused {
    kept: ArcSwapOption<Vec<Arc<Minted>>>,
    /// Taken to change `kept` (never to read it), so that charges add up.
    change: std::sync::Mutex<()>,
}

impl Reused {
    fn weight(kept: &[Arc<Minted>]) -> usize {
        kept.iter().map(|m| m.header.len() + MINTED_OVERHEAD).sum()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    roles: &'a crate::identity::Names,
    attributes: &'a Attributes,
    /// Absent for a directly authenticated user (all scopes).
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<&'a crate::identity::Names>,
    provider: &'a str,
    /// The stored credential (API token id) the JWT was minted for: `jti` names one minted
    /// JWT, which is reused for that credential until shortly before it expires, so it is
    /// not unique per request; this claim tells an owner's tokens apart in audit logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_id: Option<&'a str>,
}

impl Minter {
    /// Builds the minter: loads the key ring, and with `create_missing` generates and
    /// stores a key when the store has no active one of the configured algorithm.
    pub async fn new(
        config: &MintConfig,
        store: &dyn Store,
        create_missing: bool,
    ) -> Result<Self, MintError> {
        let source = if config.key_files.is_empty() {
            KeySource::Store
        } else {
            KeySource::Files(config.key_files.clone())
        };
        let ttl = config.ttl.as_secs() as i64;
        let ring = load_ring(&source, config.algorithm, store, create_missing, ttl).await?;
        let discovery = json!({
            "issuer": config.issuer,
            "jwks_uri": format!("{}/.well-known/jwks.json", config.issuer),
            "id_token_signing_alg_values_supported": [config.algorithm.as_str()],
        });
        Ok(Self {
            ring: ArcSwap::from_pointee(ring),
            source,
            algorithm: config.algorithm,
            issuer: Arc::from(config.issuer.as_str()),
            default_audience: Arc::from(config.audience.as_str()),
            ttl,
            header_prefix: config.header_prefix.clone(),
            discovery: Bytes::from(discovery.to_string()),
        })
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Bytes {
        self.ring.load().jwks.clone()
    }

    /// The OpenID discovery document (issuer and `jwks_uri`).
    pub fn discovery(&self) -> Bytes {
        self.discovery.clone()
    }

    /// The current key ring.
    pub fn ring(&self) -> Arc<KeyRing> {
        self.ring.load_full()
    }

    /// Re-reads the key ring from the store; `true` when it changed.
    pub async fn reload(&self, store: &dyn Store) -> Result<bool, MintError> {
        if matches!(self.source, KeySource::Files(_)) {
            return Ok(false);
        }
        let fresh = load_ring(&self.source, self.algorithm, store, false, self.ttl).await?;
        if fresh.kids() == self.ring.load().kids() {
            return Ok(false);
        }
        tracing::info!(active_kid = %fresh.active.kid, "signing keys reloaded");
        self.ring.store(Arc::new(fresh));
        Ok(true)
    }

    /// The JWT for `identity`, for `audience` (the default when `None`): one kept in
    /// `reused` while it is fresh and signed by the active key, else a new one, which is
    /// kept there when `keep` is given and agrees: it is asked to move the bytes kept from
    /// one figure to another, and answers whether that fits in its budget.
    pub fn mint_for(
        &self,
        reused: &Reused,
        keep: Option<&dyn Fn(usize, usize) -> bool>,
        identity: &Identity,
        audience: Option<&Arc<str>>,
        now: i64,
    ) -> Result<Arc<Minted>, KeyError> {
        let audience = audience.unwrap_or(&self.default_audience);
        let ring = self.ring.load();
        let fresh = |m: &Minted| m.kid == ring.active.kid && m.exp - now > self.reuse_margin();
        if let Some(kept) = &*reused.kept.load()
            && let Some(m) = kept.iter().find(|m| *m.audience == **audience && fresh(m))
        {
            return Ok(m.clone());
        }
        let (jwt, exp) = self.sign(&ring.active, identity, audience, now)?;
        let header = HeaderValue::try_from(format!("{}{jwt}", self.header_prefix))
            .map_err(|_| KeyError::Sign)?;
        let minted = Arc::new(Minted {
            header,
            prefix_len: self.header_prefix.len(),
            kid: ring.active.kid.clone(),
            audience: audience.clone(),
            exp,
        });
        if let Some(charge) = keep
            && let Ok(_changing) = reused.change.lock()
        {
            let before = reused.kept.load_full();
            let before = before.as_deref().map_or(&[][..], Vec::as_slice);
            let mut next: Vec<Arc<Minted>> = before
                .iter()
                .filter(|m| *m.audience != **audience && fresh(m))
                .take(REUSED_AUDIENCES - 1)
                .cloned()
                .collect();
            next.push(minted.clone());
            if charge(Reused::weight(before), Reused::weight(&next)) {
                reused.kept.store(Some(Arc::new(next)));
            }
        }
        Ok(minted)
    }

    /// A JWT is reissued once less than this many seconds of its life remain.
    fn reuse_margin(&self) -> i64 {
        (self.ttl / 5).max(5)
    }

    fn sign(
        &self,
        key: &SigningKey,
        identity: &Identity,
        audience: &str,
        now: i64,
    ) -> Result<(String, i64), KeyError> {
        let exp = match identity.expires_at {
            Some(limit) => (now + self.ttl).min(limit),
            None => now + self.ttl,
        };
        let claims = Claims {
            iss: &self.issuer,
            sub: &identity.subject,
            aud: audience,
            iat: now,
            nbf: now,
            exp,
            jti: URL_SAFE_NO_PAD.encode(random_bytes::<16>().map_err(|_| KeyError::Sign)?),
            username: &identity.username,
            email: identity.email.as_deref(),
            roles: &identity.roles,
            attributes: &identity.attributes,
            scopes: identity.scopes.as_ref(),
            provider: identity.provider,
            token_id: identity.credential_id.as_deref(),
        };
        let payload = serde_json::to_vec(&claims).map_err(|_| KeyError::Sign)?;
        let mut jwt = String::with_capacity(key.header_b64.len() + payload.len() * 4 / 3 + 100);
        jwt.push_str(&key.header_b64);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jwt);
        let signature = key.sign(jwt.as_bytes())?;
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&signature, &mut jwt);
        Ok((jwt, exp))
    }
}

impl Minted {
    /// The compact JWS (the header value without its prefix).
    pub fn jwt(&self) -> &str {
        self.header
            .to_str()
            .ok()
            .and_then(|h| h.get(self.prefix_len..))
            .unwrap_or("")
    }
}

/// A new key record for `algorithm`, ready to store.
pub fn generate_key_record(algorithm: Algorithm, now: i64) -> Result<KeyRecord, KeyError> {
    let (key, der) = SigningKey::generate(algorithm)?;
    Ok(KeyRecord {
        kid: key.kid.clone(),
        algorithm: algorithm.as_str().to_owned(),
        private_pkcs8: der,
        created_at: now,
        retired_at: None,
        publish_until: None,
    })
}

/// Until when a key retired `now` must stay published: every JWT it signed has expired,
/// including those signed by replicas that have not reloaded yet.
pub fn publish_until(now: i64, ttl: i64) -> i64 {
    now + ttl + KEY_RELOAD_INTERVAL.as_secs() as i64 + CLOCK_SKEW
}

async fn load_ring(
    source: &KeySource,
    algorithm: Algorithm,
    store: &dyn Store,
    create_missing: bool,
    ttl: i64,
) -> Result<KeyRing, MintError> {
    match source {
        KeySource::Files(paths) => {
            let mut keys = Vec::with_capacity(paths.len());
            for path in paths {
                keys.push(Arc::new(SigningKey::from_pem_file(algorithm, path)?.0));
            }
            Ok(KeyRing::new(keys))
        }
        KeySource::Store => {
            let now = crate::unix_now();
            let mut records = store.keys(now).await?;
            let has_active = |rs: &[KeyRecord]| {
                rs.iter()
                    .any(|r| r.retired_at.is_none() && r.algorithm == algorithm.as_str())
            };
            if !has_active(&records) {
                if !create_missing {
                    return Err(MintError::NoActiveKey(algorithm.as_str()));
                }
                let record = generate_key_record(algorithm, now)?;
                store
                    .rotate_key(&record, publish_until(now, ttl), true)
                    .await?;
                tracing::info!(kid = %record.kid, algorithm = algorithm.as_str(), "generated a signing key");
                records = store.keys(now).await?;
            }
            // Active key first, then the retired ones still published.
            records.sort_by_key(|r| (r.retired_at.is_some(), std::cmp::Reverse(r.created_at)));
            let mut keys = Vec::with_capacity(records.len());
            for r in &records {
                let alg = Algorithm::parse(&r.algorithm).ok_or_else(|| {
                    StoreError::Corrupt(format!("key {} has algorithm {}", r.kid, r.algorithm))
                })?;
                let key =
                    SigningKey::from_der(alg, &r.private_pkcs8, &format!("stored key {}", r.kid))?;
                keys.push(Arc::new(key));
            }
            if keys.is_empty() || records[0].retired_at.is_some() {
                return Err(MintError::NoActiveKey(algorithm.as_str()));
            }
            Ok(KeyRing::new(keys))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::identity::Names;
    use crate::store::SqliteStore;

    fn identity(expires_at: Option<i64>) -> Arc<Identity> {
        Arc::new(Identity {
            subject: "alice".into(),
            native_id: None,
            provider: "api_token",
            username: "alice".into(),
            email: Some("a@example.org".into()),
            roles: Names::from(["admin"]),
            attributes: Attributes::new(),
            scopes: Some(Names::from(["read:data"])),
            expires_at,
            credential_id: None,
        })
    }

    fn decode_claims(jwt: &str) -> serde_json::Value {
        let payload = jwt.split('.').nth(1).unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn expiry_table_and_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("k.db")).unwrap();
        let config = MintConfig::default();
        let minter = Minter::new(&config, &store, true).await.unwrap();
        let now = 1_000_000;
        // (credential expiry, expected exp): never past the credential, default 300 s.
        let cases = [
            (None, now + 300),
            (Some(now + 60), now + 60),
            (Some(now + 10_000), now + 300),
        ];
        for (expires_at, expected) in cases {
            let minted = minter
                .mint_for(&Reused::default(), None, &identity(expires_at), None, now)
                .unwrap();
            assert_eq!(
                minted.header.to_str().unwrap(),
                format!("Bearer {}", minted.jwt())
            );
            let c = decode_claims(minted.jwt());
            assert_eq!(c["exp"], expected, "{expires_at:?}");
            assert_eq!(c["iat"], now);
            assert_eq!(c["nbf"], now);
            assert_eq!(c["aud"], "api");
            assert_eq!(c["iss"], "http://localhost:8080");
            assert_eq!(c["scopes"], json!(["read:data"]));
        }
        let id = identity(None);
        let charged = std::sync::atomic::AtomicUsize::new(0);
        let budget = |from: usize, to: usize| {
            charged.fetch_add(to, Ordering::Relaxed);
            charged.fetch_sub(from, Ordering::Relaxed);
            true
        };
        let jwt = |reused: &Reused, keep: bool, audience: Option<&Arc<str>>, at: i64| {
            let keep = keep.then_some(&budget as &dyn Fn(usize, usize) -> bool);
            minter
                .mint_for(reused, keep, &id, audience, at)
                .unwrap()
                .jwt()
                .to_owned()
        };
        let once = Reused::default();
        assert_ne!(
            jwt(&once, false, None, now),
            jwt(&once, false, None, now),
            "not kept for a credential's first request"
        );
        let kept = Reused::default();
        let a = jwt(&kept, true, None, now);
        assert_eq!(a, jwt(&kept, true, None, now + 200), "reused while fresh");
        assert_eq!(
            a,
            jwt(&kept, false, None, now + 200),
            "reused, not replaced"
        );
        let admin: Arc<str> = Arc::from("admin-api");
        let b = jwt(&kept, true, Some(&admin), now);
        assert_eq!(decode_claims(&b)["aud"], "admin-api");
        assert_eq!(
            b,
            jwt(&kept, true, Some(&admin), now + 1),
            "one per audience"
        );
        assert_eq!(
            a,
            jwt(&kept, true, None, now + 1),
            "the first one is still kept"
        );
        let a2 = jwt(&kept, true, None, now + 260);
        assert_ne!(a, a2, "reissued near expiry");
        assert_eq!(
            a2,
            jwt(&kept, true, None, now + 261),
            "and the new one kept"
        );
        let weight = |m: &str| m.len() + "Bearer ".len() + MINTED_OVERHEAD;
        assert_eq!(
            charged.load(Ordering::Relaxed),
            weight(&a2),
            "what is kept is charged; what is replaced or stale (b's) is given back"
        );
        let full = Reused::default();
        let refuse = |_: usize, _: usize| false;
        let first = minter
            .mint_for(&full, Some(&refuse), &id, None, now)
            .unwrap();
        let second = minter
            .mint_for(&full, Some(&refuse), &id, None, now)
            .unwrap();
        assert_ne!(first.jwt(), second.jwt(), "nothing kept past the budget");

        // Rotation: the new key signs, the old one stays published.
        let old_kid = minter.ring().active.kid.clone();
        let record = generate_key_record(Algorithm::ES256, crate::unix_now()).unwrap();
        store
            .rotate_key(&record, publish_until(crate::unix_now(), 300), false)
            .await
            .unwrap();
        assert!(minter.reload(&store).await.unwrap());
        let ring = minter.ring();
        assert_eq!(ring.active.kid, record.kid);
        assert_eq!(ring.kids(), vec![record.kid.as_str(), old_kid.as_str()]);
        let d = jwt(&kept, true, None, now + 262);
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(d.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            header["kid"],
            json!(record.kid),
            "rotation drops reused JWTs of the old key"
        );
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "JWT");
    }
}
