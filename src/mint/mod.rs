//! Minting: the short-lived JWT handed to the upstream, signed with the active key of a
//! key ring that lives in the store (or in PEM files), published at `/.well-known/jwks.json`.
//! The minter only signs; keeping a JWT for reuse is the cache's job (its interned
//! identities keep them), and [`Minter::reusable`] tells it when a kept one must be
//! reissued: shortly before it expires, or once another key signs. The claims follow
//! `mint.profile` (RFC 9068 by default, see `claims`); `ring` owns the key states.

mod claims;
mod config;
mod keys;
mod ring;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::HeaderValue;
use serde_json::json;

pub use claims::DEFAULT_CLIENT_ID;
pub use config::{MintConfig, Profile};
pub use keys::{Algorithm, KeyError, SigningKey};
pub use ring::{
    KeyRing, KeyState, RingKey, Rotation, generate_key_record, publish_until, rotate, states,
};

use crate::identity::Identity;
use crate::secret::random_bytes;
use crate::store::{Store, StoreError};
use claims::{Claims, Envelope};
use ring::{KeySource, load_ring};

/// How often a running server re-reads the key ring from the store (picks up rotations).
pub const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

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
    /// No key is published at all.
    #[error("no signing key is published")]
    NoKeys,
    /// Keys come from files, so they cannot be rotated in the store.
    #[error("keys come from mint.key_files; rotate them by changing that list")]
    FileKeys,
}

/// Signs JWTs for identities.
pub struct Minter {
    ring: ArcSwap<KeyRing>,
    source: KeySource,
    algorithm: Algorithm,
    profile: Profile,
    issuer: Arc<str>,
    default_audience: Arc<str>,
    ttl: i64,
    nbf_skew: i64,
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
        let ring = load_ring(
            &source,
            config.algorithm,
            config.profile.typ(),
            store,
            create_missing,
            ttl,
            crate::unix_now(),
        )
        .await?;
        let discovery = json!({
            "issuer": config.issuer,
            "jwks_uri": format!("{}/.well-known/jwks.json", config.issuer),
            "id_token_signing_alg_values_supported": [config.algorithm.as_str()],
        });
        Ok(Self {
            ring: ArcSwap::from_pointee(ring),
            source,
            algorithm: config.algorithm,
            profile: config.profile,
            issuer: Arc::from(config.issuer.as_str()),
            default_audience: Arc::from(config.audience.as_str()),
            ttl,
            nbf_skew: config.nbf_skew.as_secs() as i64,
            header_prefix: config.header_prefix.clone(),
            discovery: Bytes::from(discovery.to_string()),
        })
    }

    /// The JWKS document.
    pub fn jwks(&self) -> Bytes {
        self.ring.load().jwks()
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
        self.reload_at(store, crate::unix_now()).await
    }

    /// [`Self::reload`] as of `now`.
    pub async fn reload_at(&self, store: &dyn Store, now: i64) -> Result<bool, MintError> {
        if matches!(self.source, KeySource::Files(_)) {
            return Ok(false);
        }
        let typ = self.profile.typ();
        let fresh = load_ring(
            &self.source,
            self.algorithm,
            typ,
            store,
            false,
            self.ttl,
            now,
        )
        .await?;
        if fresh.same_as(&self.ring.load()) {
            return Ok(false);
        }
        tracing::info!(active_kid = %fresh.active().key.kid, keys = fresh.keys().len(),
            "signing keys reloaded");
        self.ring.store(Arc::new(fresh));
        Ok(true)
    }

    /// The audience a JWT is minted for: `requested`, else `mint.audience`.
    pub fn audience<'a>(&'a self, requested: Option<&'a Arc<str>>) -> &'a Arc<str> {
        requested.unwrap_or(&self.default_audience)
    }

    /// A new JWT for `identity`, for `audience` (the default when `None`), signed with the
    /// active key at `now`; `token_id` names the stored credential (API token) it is for.
    pub fn mint(
        &self,
        identity: &Identity,
        token_id: Option<&str>,
        audience: Option<&Arc<str>>,
        now: i64,
    ) -> Result<Arc<Minted>, KeyError> {
        let audience = self.audience(audience);
        let ring = self.ring.load();
        let active = ring.signing(now);
        let (jwt, exp) = self.sign(active, identity, token_id, audience, now)?;
        let header = HeaderValue::try_from(format!("{}{jwt}", self.header_prefix))
            .map_err(|_| KeyError::Sign)?;
        Ok(Arc::new(Minted {
            header,
            prefix_len: self.header_prefix.len(),
            kid: active.key.kid.clone(),
            audience: audience.clone(),
            exp,
        }))
    }

    /// Whether `minted`, kept since it was minted, may still be handed out at `now`: signed
    /// by the active key, and further than the reuse margin from its expiry.
    pub fn reusable(&self, minted: &Minted, now: i64) -> bool {
        minted.kid == self.ring.load().signing(now).key.kid
            && minted.exp - now > self.reuse_margin()
    }

    /// A JWT is reissued once less than this many seconds of its life remain.
    fn reuse_margin(&self) -> i64 {
        (self.ttl / 5).max(5)
    }

    fn sign(
        &self,
        key: &RingKey,
        identity: &Identity,
        token_id: Option<&str>,
        audience: &str,
        now: i64,
    ) -> Result<(String, i64), KeyError> {
        let exp = match identity.expires_at {
            Some(limit) => (now + self.ttl).min(limit),
            None => now + self.ttl,
        };
        let envelope = Envelope {
            issuer: &self.issuer,
            audience,
            iat: now,
            // A verifier whose clock runs behind would otherwise refuse a fresh JWT.
            nbf: now - self.nbf_skew,
            exp,
            jti: URL_SAFE_NO_PAD.encode(random_bytes::<16>().map_err(|_| KeyError::Sign)?),
            token_id,
        };
        let claims = Claims::new(self.profile, identity, envelope);
        let payload = serde_json::to_vec(&claims).map_err(|_| KeyError::Sign)?;
        let mut jwt = String::with_capacity(key.header_b64.len() + payload.len() * 4 / 3 + 100);
        jwt.push_str(&key.header_b64);
        jwt.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut jwt);
        let signature = key.key.sign(jwt.as_bytes())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{Attributes, Names};
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
            client_id: None,
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
            let minted = minter.mint(&identity(expires_at), None, None, now).unwrap();
            assert_eq!(
                minted.header.to_str().unwrap(),
                format!("Bearer {}", minted.jwt())
            );
            let c = decode_claims(minted.jwt());
            assert_eq!(c["exp"], expected, "{expires_at:?}");
            assert_eq!(c["iat"], now);
            assert_eq!(c["nbf"], now - 30, "mint.nbf_skew");
            assert_eq!(c["aud"], "api");
            assert_eq!(minted.audience(), "api");
            assert_eq!(c["iss"], "http://localhost:8080");
            assert_eq!(c["scope"], "read:data");
            assert_eq!(c["client_id"], DEFAULT_CLIENT_ID);
        }
        let id = identity(None);
        let a = minter.mint(&id, None, None, now).unwrap();
        assert_ne!(
            a.jwt(),
            minter.mint(&id, None, None, now).unwrap().jwt(),
            "each one new"
        );
        let admin: Arc<str> = Arc::from("admin-api");
        let b = minter.mint(&id, None, Some(&admin), now).unwrap();
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
        let short = minter
            .mint(&identity(Some(now + 5)), None, None, now)
            .unwrap();
        assert!(!minter.reusable(&short, now));

        // Rotation: the new key signs, the old one stays published.
        let old_kid = minter.ring().active().key.kid.clone();
        let real_now = crate::unix_now();
        let rotation = rotate(&config, &store, real_now, false).await.unwrap();
        assert!(minter.reload_at(&store, real_now).await.unwrap());
        assert!(
            !minter.reload_at(&store, real_now).await.unwrap(),
            "unchanged"
        );
        assert_eq!(
            minter.ring().active().key.kid,
            old_kid,
            "published before it signs"
        );
        assert!(minter.reusable(&a, now + 1));
        let record = rotation;
        assert!(minter.reload_at(&store, record.activates_at).await.unwrap());
        let ring = minter.ring();
        assert_eq!(ring.active().key.kid, record.kid);
        let kids: Vec<_> = ring.keys().iter().map(|k| k.key.kid.as_str()).collect();
        assert_eq!(kids, vec![record.kid.as_str(), old_kid.as_str()]);
        assert!(
            !minter.reusable(&a, now + 1),
            "rotation retires JWTs of the old key"
        );
        let d = minter.mint(&id, None, None, now + 262).unwrap();
        assert!(minter.reusable(&d, now + 262));
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(d.jwt().split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["kid"], json!(record.kid));
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["typ"], "at+jwt");

        // The legacy profile: `typ: JWT`, the `scopes` list.
        let legacy = MintConfig {
            profile: Profile::Legacy,
            nbf_skew: Duration::ZERO,
            ..MintConfig::default()
        };
        let minter = Minter::new(&legacy, &store, false).await.unwrap();
        let e = minter.mint(&id, None, None, now).unwrap();
        let header: serde_json::Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(e.jwt().split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["typ"], "JWT");
        let c = decode_claims(e.jwt());
        assert_eq!(c["scopes"], json!(["read:data"]));
        assert_eq!(c["nbf"], now);
        assert!(
            c.get("scope").is_none() && c.get("client_id").is_none(),
            "{c}"
        );
    }
}
