//! Minting: the short-lived JWT handed to the upstream, signed with the active key of a
//! key ring that lives in the store (or in PEM files), published at `/.well-known/jwks.json`.
//! The minter only signs; keeping a JWT for reuse is the cache's job (its interned
//! identities keep them), and [`Minter::reusable`] tells it when a kept one must be
//! reissued: shortly before it expires, or once another key signs.

mod config;
mod keys;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
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

    /// The audience a JWT is minted for: `requested`, else `mint.audience`.
    pub fn audience<'a>(&'a self, requested: Option<&'a Arc<str>>) -> &'a Arc<str> {
        requested.unwrap_or(&self.default_audience)
    }

    /// A new JWT for `identity`, for `audience` (the default when `None`), signed with the
    /// active key at `now`.
    pub fn mint(
        &self,
        identity: &Identity,
        audience: Option<&Arc<str>>,
        now: i64,
    ) -> Result<Arc<Minted>, KeyError> {
        let audience = self.audience(audience);
        let ring = self.ring.load();
        let active = &ring.active;
        let (jwt, exp) = self.sign(active, identity, audience, now)?;
        let header = HeaderValue::try_from(format!("{}{jwt}", self.header_prefix))
            .map_err(|_| KeyError::Sign)?;
        Ok(Arc::new(Minted {
            header,
            prefix_len: self.header_prefix.len(),
            kid: active.kid.clone(),
            audience: audience.clone(),
            exp,
        }))
    }

    /// Whether `minted`, kept since it was minted, may still be handed out at `now`: signed
    /// by the active key, and further than the reuse margin from its expiry.
    pub fn reusable(&self, minted: &Minted, now: i64) -> bool {
        minted.kid == self.ring.load().active.kid && minted.exp - now > self.reuse_margin()
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
    /// The audience it was minted for.
    pub fn audience(&self) -> &str {
        &self.audience
    }

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
    async fn expiry_table_reuse_margin_and_rotation() {
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
            let minted = minter.mint(&identity(expires_at), None, now).unwrap();
            assert_eq!(
                minted.header.to_str().unwrap(),
                format!("Bearer {}", minted.jwt())
            );
            let c = decode_claims(minted.jwt());
            assert_eq!(c["exp"], expected, "{expires_at:?}");
            assert_eq!(c["iat"], now);
            assert_eq!(c["nbf"], now);
            assert_eq!(c["aud"], "api");
            assert_eq!(minted.audience(), "api");
            assert_eq!(c["iss"], "http://localhost:8080");
            assert_eq!(c["scopes"], json!(["read:data"]));
        }
        let id = identity(None);
        let a = minter.mint(&id, None, now).unwrap();
        assert_ne!(
            a.jwt(),
            minter.mint(&id, None, now).unwrap().jwt(),
            "each one new"
        );
        let admin: Arc<str> = Arc::from("admin-api");
        let b = minter.mint(&id, Some(&admin), now).unwrap();
        assert_eq!(decode_claims(b.jwt())["aud"], "admin-api");
        assert_eq!(b.audience(), "admin-api");
        assert_eq!(minter.audience(Some(&admin)), &admin);
        assert_eq!(&**minter.audience(None), "api");
        // 300 s of life, reissued once 60 s or less remain.
        assert!(minter.reusable(&a, now + 200), "reusable while fresh");
        assert!(minter.reusable(&a, now + 239));
        assert!(!minter.reusable(&a, now + 240), "reissued near expiry");
        assert!(!minter.reusable(&a, now + 260));
        // A credential expiring soon gets a JWT that is never reused.
        let short = minter.mint(&identity(Some(now + 5)), None, now).unwrap();
        assert!(!minter.reusable(&short, now));

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
        assert!(
            !minter.reusable(&a, now + 1),
            "rotation retires JWTs of the old key"
        );
        let d = minter.mint(&id, None, now + 262).unwrap();
        assert!(minter.reusable(&d, now + 262));
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(d.jwt().split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["kid"], json!(record.kid));
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "JWT");
    }
}
