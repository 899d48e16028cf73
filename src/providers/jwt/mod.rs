//! `jwt`: OAuth2/OIDC bearer JWTs from a configured issuer, verified against the issuer's
//! JWKS (from `jwks_uri` or OpenID discovery). Algorithms come from a per-issuer allow-list
//! and must fit the key (`kty`, and the key's own `alg` when it has one): never `none`,
//! never HMAC, never an algorithm taken from the token alone; only keys meant for signatures;
//! no JWS extensions (`crit`, `b64`). An unknown `kid` (or the first load) fetches the JWKS
//! at most once per `refetch_interval`, one fetch for all waiting requests: a `kid` absent
//! from a key set fetched within that time is 401, one that could not be checked because the
//! fetch failed is 503. A key set older than its `Cache-Control` max-age (capped by
//! `jwks_max_age`) is refreshed in the background while it keeps answering, and the last
//! good key set is kept when a fetch fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

mod keys;

use super::discovery::Discovery;
use super::health::{Health, probe};
use super::oidc::{ClaimMapping, NumericDates, check_url, get_json};
use super::{AuthContext, AuthError, Provider, Unhealthy};
use crate::credential::Credential;
use crate::identity::Identity;
use crate::setting::ConfigError;
pub use keys::unverified_issuer;
use keys::*;

/// `type: jwt` options: one issuer per entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// Exact `iss`; also where discovery looks (`<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// The key set; absent: from discovery.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Accepted `aud` values (one must match).
    pub audiences: Vec<String>,
    /// Allowed algorithms (asymmetric only).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Required JWT `typ` header (e.g. `at+jwt`), when set.
    #[serde(default)]
    pub typ: Option<String>,
    /// Clock leeway for `exp`, `nbf`, `iat`.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Least time between two key-set fetches caused by unknown `kid`s.
    #[serde(default = "default_refetch", with = "humantime_serde")]
    pub refetch_interval: Duration,
    /// Key sets older than this (or than the JWKS answer's `Cache-Control: max-age`, when
    /// shorter) are refreshed in the background.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub jwks_max_age: Duration,
    /// Time limit of one call to the issuer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How claims become the identity.
    #[serde(default)]
    pub claims: ClaimMapping,
}

fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}
fn default_leeway() -> Duration {
    Duration::from_secs(60)
}
fn default_refetch() -> Duration {
    Duration::from_secs(30)
}
fn default_max_age() -> Duration {
    Duration::from_secs(900)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Asymmetric algorithms only: an HMAC "verified" with a public key is a forgery.
fn parse_algorithm(name: &str) -> Option<Algorithm> {
    match name {
        "RS256" => Some(Algorithm::RS256),
        "RS384" => Some(Algorithm::RS384),
        "RS512" => Some(Algorithm::RS512),
        "PS256" => Some(Algorithm::PS256),
        "PS384" => Some(Algorithm::PS384),
        "PS512" => Some(Algorithm::PS512),
        "ES256" => Some(Algorithm::ES256),
        "ES384" => Some(Algorithm::ES384),
        "EdDSA" => Some(Algorithm::EdDSA),
        _ => None,
    }
}

impl JwtConfig {
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_url(&format!("{key}.issuer"), &self.issuer)?;
        if let Some(uri) = &self.jwks_uri {
            check_url(&format!("{key}.jwks_uri"), uri)?;
        }
        if self.audiences.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.audiences"),
                "at least one audience is needed",
            ));
        }
        if self.algorithms.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.algorithms"),
                "at least one algorithm is needed",
            ));
        }
        for a in &self.algorithms {
            if parse_algorithm(a).is_none() {
                return Err(ConfigError::invalid(
                    format!("{key}.algorithms"),
                    format!(
                        "'{a}' is not an allowed asymmetric JWS algorithm (RS*, PS*, ES256, ES384, EdDSA)"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Parsed keys of one JWKS, by `kid`.
struct KeySet {
    keys: HashMap<String, VerifyingKey>,
    fetched: Instant,
    /// Refresh in the background once older than this.
    max_age: Duration,
}

/// When the key set was last fetched or tried, and how that went.
struct FetchAttempt {
    at: Instant,
    outcome: Result<(), AuthError>,
}

/// The `jwt` provider for one issuer.
pub struct JwtProvider {
    client: reqwest::Client,
    config: JwtConfig,
    allowed: Vec<Algorithm>,
    discovery: Discovery,
    keys: ArcSwapOption<KeySet>,
    /// The last fetch of the key set (or attempt), for the refetch rate limit; held while
    /// a fetch runs, so that concurrent requests wait for that one fetch.
    fetching: Mutex<Option<FetchAttempt>>,
    refreshing: AtomicBool,
    /// How the key-set fetches (and discovery) have been going.
    health: Health,
    me: Weak<Self>,
}

impl JwtProvider {
    /// Type name.
    pub const KIND: &'static str = "jwt";

    /// Over the shared HTTP client (the config was validated).
    pub fn new(config: &JwtConfig, client: reqwest::Client) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            discovery: Discovery::new(
                &config.issuer,
                client.clone(),
                config.timeout,
                config.refetch_interval,
            ),
            client,
            allowed: config
                .algorithms
                .iter()
                .filter_map(|a| parse_algorithm(a))
                .collect(),
            config: config.clone(),
            keys: ArcSwapOption::empty(),
            fetching: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            health: Health::default(),
            me: me.clone(),
        })
    }

    /// The configured issuer.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    async fn jwks_uri(&self) -> Result<String, AuthError> {
        self.discovery
            .endpoint("jwks_uri", self.config.jwks_uri.as_deref())
            .await
    }

    /// Makes sure the key set was fetched within the last `refetch_interval`: fetches it
    /// now unless an attempt was made within that time (single flight: concurrent callers
    /// wait for one fetch and share its outcome). `Ok` means the current key set is that
    /// fresh; an error means the last attempt failed, whether it was this call's or not.
    async fn refresh(&self) -> Result<(), AuthError> {
        let mut last = self.fetching.lock().await;
        if let Some(attempt) = last.as_ref()
            && attempt.at.elapsed() < self.config.refetch_interval
        {
            return attempt.outcome.clone();
        }
        // Discovery and the key set together within one timeout: a waiting request is
        // bounded by it, however slow the issuer.
        let outcome = tokio::time::timeout(self.config.timeout, self.fetch())
            .await
            .unwrap_or_else(|_| {
                Err(AuthError::Unavailable(format!(
                    "identity provider unreachable: no key set within {} ms",
                    self.config.timeout.as_millis()
                )))
            });
        self.health.record(&outcome);
        if let Err(e) = &outcome {
            tracing::warn!(issuer = %self.config.issuer, error = %e, "JWKS fetch failed");
        }
        *last = Some(FetchAttempt {
            at: Instant::now(),
            outcome: outcome.clone(),
        });
        outcome
    }

    /// Whether the next request with an unknown `kid` fetches the key set (for tests).
    #[cfg(test)]
    async fn refetch_due(&self) -> bool {
        self.fetching
            .lock()
            .await
            .as_ref()
            .is_none_or(|a| a.at.elapsed() >= self.config.refetch_interval)
    }

    /// Fetches and installs the key set (no rate limit: see [`Self::refresh`]).
    async fn fetch(&self) -> Result<(), AuthError> {
        let uri = self.jwks_uri().await?;
        let (doc, headers) = get_json(&self.client, &uri, self.config.timeout).await?;
        let keys = parse_key_set(doc)?;
        let max_age = cache_max_age(&headers)
            .map_or(self.config.jwks_max_age, |m| {
                m.min(self.config.jwks_max_age)
            })
            .max(self.config.refetch_interval);
        tracing::info!(issuer = %self.config.issuer, keys = keys.len(), max_age = ?max_age,
            "fetched the issuer's JWKS");
        self.keys.store(Some(Arc::new(KeySet {
            keys,
            fetched: Instant::now(),
            max_age,
        })));
        Ok(())
    }

    /// Starts one background refresh (while it runs, requests keep using the current set).
    fn refresh_in_background(&self) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        tokio::spawn(async move {
            if let Err(e) = me.refresh().await {
                tracing::warn!(issuer = %me.config.issuer, error = %e,
                    "JWKS refresh failed; keeping the last good key set");
            }
            me.refreshing.store(false, Ordering::Release);
        });
    }

    /// The key for `kid`, fetching the key set when missing (rate-limited).
    async fn key_for(&self, kid: &str) -> Result<Option<VerifyingKey>, AuthError> {
        let current = self.keys.load_full();
        if let Some(set) = &current
            && let Some(k) = set.keys.get(kid)
        {
            if set.fetched.elapsed() > set.max_age {
                self.refresh_in_background();
            }
            return Ok(Some(k.clone()));
        }
        // An unknown kid is only unknown to a key set fetched just now (or within
        // `refetch_interval`); when that fetch failed it cannot be decided: 503, not 401.
        self.refresh().await?;
        Ok(self
            .keys
            .load()
            .as_ref()
            .and_then(|s| s.keys.get(kid).cloned()))
    }

    /// The endpoint `name` (`token_endpoint`, `end_session_endpoint`, ...) of the issuer's
    /// discovery document.
    pub async fn discovered(&self, name: &str) -> Result<String, AuthError> {
        self.discovery.endpoint(name, None).await
    }

    /// Verifies `token` (signature, algorithm, `typ`, `iss`, `aud`, `exp`, `nbf`, `iat`) and
    /// returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Value, AuthError> {
        self.verify_requiring(token, &["exp", "iss", "aud", "sub"])
            .await
    }

    /// As [`JwtProvider::verify`], with `required` the claims that must be present (a
    /// back-channel logout token need not name `sub` nor carry `exp`).
    pub async fn verify_requiring(
        &self,
        token: &str,
        required: &[&str],
    ) -> Result<Value, AuthError> {
        check_protected_header(token)?;
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid("malformed JWT"))?;
        if !self.allowed.contains(&header.alg) {
            return Err(AuthError::Invalid("JWT algorithm not allowed"));
        }
        if let Some(required) = &self.config.typ {
            let typ = header.typ.as_deref().unwrap_or("");
            let typ = typ.strip_prefix("application/").unwrap_or(typ);
            if !typ.eq_ignore_ascii_case(required) {
                return Err(AuthError::Invalid("JWT typ not accepted"));
            }
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or(AuthError::Invalid("JWT without kid"))?;
        let Some((key, key_alg, family)) = self.key_for(kid).await? else {
            return Err(AuthError::Invalid("JWT signed by an unknown key"));
        };
        // The key decides which algorithms it may verify, not the token.
        if family_of(header.alg) != Some(family) || key_alg.is_some_and(|a| a != header.alg) {
            return Err(AuthError::Invalid("JWT algorithm does not fit the key"));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&self.config.audiences);
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(required);
        let data = jsonwebtoken::decode::<Value>(token, &key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            AuthError::Invalid(match e.kind() {
                K::ExpiredSignature => "JWT expired",
                K::ImmatureSignature => "JWT not yet valid",
                K::InvalidAudience => "JWT audience not accepted",
                K::InvalidIssuer => "JWT issuer not accepted",
                K::InvalidSignature => "JWT signature invalid",
                K::MissingRequiredClaim(_) => "JWT lacks a required claim",
                _ => "JWT invalid",
            })
        })?;
        // jsonwebtoken rounds fractional dates to the nearest second and ignores an `nbf`
        // that is not a number; these are read again, rounded the conservative way.
        let dates = NumericDates::of(&data.claims)?;
        let latest = crate::unix_now() + self.config.leeway.as_secs() as i64;
        if dates.iat.is_some_and(|iat| iat > latest) {
            return Err(AuthError::Invalid("JWT issued in the future"));
        }
        if dates.nbf.is_some_and(|nbf| nbf > latest) {
            return Err(AuthError::Invalid("JWT not yet valid"));
        }
        Ok(data.claims)
    }

    /// The identity of verified `claims`, as `provider` says it (its subject qualified by
    /// this issuer).
    pub(super) fn identity(
        &self,
        claims: &Value,
        provider: &'static str,
    ) -> Result<Identity, AuthError> {
        self.config
            .claims
            .identity(claims, provider, &self.config.issuer, None)
    }
}

#[async_trait]
impl Provider for JwtProvider {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn name(&self) -> String {
        format!("jwt {}", self.config.issuer)
    }

    fn accepts(&self, credential: &Credential) -> bool {
        matches!(credential, Credential::Bearer(t)
            if unverified_issuer(t.expose()).as_deref() == Some(self.config.issuer.as_str()))
    }

    fn challenge(&self, realm: &str) -> String {
        format!("Bearer realm=\"{realm}\"")
    }

    async fn authenticate(
        &self,
        credential: &Credential,
        _ctx: &AuthContext,
    ) -> Result<Identity, AuthError> {
        let Some(token) = credential.token() else {
            return Err(AuthError::Invalid("not a bearer token"));
        };
        let claims = self.verify(token.expose()).await?;
        self.identity(&claims, Self::KIND)
    }

    fn health(&self) -> Option<&Health> {
        Some(&self.health)
    }

    async fn check(&self) -> Result<(), Unhealthy> {
        self.health
            .check(async {
                if self.keys.load().is_none() {
                    // The first key set, fetched now rather than by the first request.
                    return self.refresh().await.map_err(|e| Unhealthy::from(&e));
                }
                let uri = self.jwks_uri().await.map_err(|e| Unhealthy::from(&e))?;
                probe(self.client.get(&uri).timeout(self.config.timeout), &uri).await
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    #[test]
    fn issuer_peek_and_claim_paths() {
        let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"https://idp.example.org","sub":"x"}"#);
        assert_eq!(
            unverified_issuer(&format!("e30.{payload}.sig")).as_deref(),
            Some("https://idp.example.org")
        );
        assert_eq!(unverified_issuer("a.b"), None);
        assert_eq!(unverified_issuer("a.b.c.d"), None);
        assert_eq!(unverified_issuer(&format!("e30.{payload}")), None);
        let refresh =
            URL_SAFE_NO_PAD.encode(br#"{"iss":"https://idp.example.org","typ":"Offline"}"#);
        assert_eq!(unverified_issuer(&format!("e30.{refresh}.sig")), None);
    }

    #[test]
    fn cache_control_max_age() {
        for (value, want) in [
            ("public, max-age=600", Some(600)),
            ("max-age=\"60\", must-revalidate", Some(60)),
            ("no-store", Some(0)),
            ("public", None),
            ("max-age=soon", None),
        ] {
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::CACHE_CONTROL, value.parse().unwrap());
            assert_eq!(
                cache_max_age(&headers),
                want.map(Duration::from_secs),
                "{value}"
            );
        }
    }

    #[test]
    fn algorithm_allow_list_never_takes_hmac_or_none() {
        for (name, ok) in [
            ("RS256", true),
            ("ES256", true),
            ("EdDSA", true),
            ("HS256", false),
            ("none", false),
            ("", false),
        ] {
            assert_eq!(parse_algorithm(name).is_some(), ok, "{name}");
        }
    }

    use crate::providers::fake_idp::FakeIdp;

    use jsonwebtoken::EncodingKey;
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::json;

    const ISSUER: &str = "https://idp.example.org";

    /// A JWKS endpoint on 127.0.0.1 (see [`FakeIdp`]).
    async fn jwks_server(status: u16, body: String) -> FakeIdp {
        FakeIdp::start(status, body).await
    }

    fn provider(jwks_uri: &str, refetch_interval: Duration) -> Arc<JwtProvider> {
        let config = JwtConfig {
            issuer: ISSUER.into(),
            jwks_uri: Some(jwks_uri.into()),
            audiences: vec!["api".into()],
            algorithms: default_algorithms(),
            typ: None,
            leeway: default_leeway(),
            refetch_interval,
            jwks_max_age: default_max_age(),
            timeout: Duration::from_secs(5),
            claims: ClaimMapping::default(),
        };
        JwtProvider::new(&config, reqwest::Client::new())
    }

    /// An Ed25519 signing key and its public JWK with `extra` members (`kid`, `use`, ...).
    fn ed25519_key(extra: Value) -> (EncodingKey, Value) {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let mut jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        });
        jwk.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        (EncodingKey::from_ed_der(pkcs8.as_ref()), jwk)
    }

    /// A compact EdDSA JWS with exactly this protected `header` and valid claims.
    fn signed(key: &EncodingKey, header: Value) -> String {
        let now = crate::unix_now();
        let claims =
            json!({"iss": ISSUER, "aud": "api", "sub": "u1", "iat": now, "exp": now + 300});
        signed_claims(key, header, claims)
    }

    /// A compact EdDSA JWS with exactly this protected `header` and these `claims`.
    fn signed_claims(key: &EncodingKey, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature =
            jsonwebtoken::crypto::sign(input.as_bytes(), key, Algorithm::EdDSA).unwrap();
        format!("{input}.{signature}")
    }

    #[tokio::test]
    async fn crit_and_b64_headers_are_refused() {
        let (key, jwk) = ed25519_key(json!({"kid": "k1", "use": "sig"}));
        let server = jwks_server(200, json!({"keys": [jwk]}).to_string()).await;
        let p = provider(&server.url("/jwks"), Duration::from_secs(60));
        // The same key and claims verify with a plain header.
        let plain = signed(&key, json!({"alg": "EdDSA", "kid": "k1", "typ": "JWT"}));
        assert_eq!(p.verify(&plain).await.unwrap()["sub"], "u1");

        let crit = Err(AuthError::Invalid(
            "JWT header has crit: no JWS extension is supported",
        ));
        let b64 = Err(AuthError::Invalid(
            "JWT header has b64: unencoded payloads are not supported",
        ));
        for (header, want) in [
            (
                json!({"alg": "EdDSA", "kid": "k1", "crit": ["exp"], "exp": 1}),
                &crit,
            ),
            (json!({"alg": "EdDSA", "kid": "k1", "crit": []}), &crit),
            (
                json!({"alg": "EdDSA", "kid": "k1", "crit": ["b64"], "b64": false}),
                &crit,
            ),
            (json!({"alg": "EdDSA", "kid": "k1", "b64": false}), &b64),
            (json!({"alg": "EdDSA", "kid": "k1", "b64": true}), &b64),
        ] {
            assert_eq!(
                &p.verify(&signed(&key, header.clone())).await,
                want,
                "{header}"
            );
        }
        // An escaped member name is the same name.
        let escaped = format!(
            "{}.e30.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"EdDSA","kid":"k1","cr\u0069t":["x"]}"#)
        );
        assert_eq!(p.verify(&escaped).await, crit);
        let huge = format!("{}.e30.sig", "A".repeat(MAX_HEADER_SEGMENT + 4));
        assert_eq!(
            p.verify(&huge).await,
            Err(AuthError::Invalid("JWT header too large"))
        );
    }

    #[tokio::test]
    async fn numeric_dates_are_read_as_numbers() {
        let (key, jwk) = ed25519_key(json!({"kid": "k1", "use": "sig"}));
        let server = jwks_server(200, json!({"keys": [jwk]}).to_string()).await;
        let p = provider(&server.url("/jwks"), Duration::from_secs(60));
        let now = crate::unix_now();
        let token = |dates: Value| {
            let mut claims = json!({"iss": ISSUER, "aud": "api", "sub": "u1"});
            claims
                .as_object_mut()
                .unwrap()
                .extend(dates.as_object().unwrap().clone());
            signed_claims(&key, json!({"alg": "EdDSA", "kid": "k1"}), claims)
        };
        let verified = |dates: Value| async {
            let claims = p.verify(&token(dates)).await?;
            p.identity(&claims, JwtProvider::KIND)
        };
        // (dates, expected expiry or error); the default leeway is 60 s.
        let cases = [
            // Fractional dates (RFC 7519 section 2): `exp` rounds down.
            (
                json!({"exp": now as f64 + 300.9, "iat": now as f64 - 0.5}),
                Ok(Some(now + 300)),
            ),
            (
                json!({"exp": now as f64 + 300.0, "nbf": now as f64 - 10.5}),
                Ok(Some(now + 300)),
            ),
            // Past `exp` inside the leeway: verified, with the expiry that the server
            // refuses and that caps a minted JWT.
            (json!({"exp": now as f64 - 30.0}), Ok(Some(now - 30))),
            (
                json!({"exp": now + 300, "iat": now as f64 + 3600.5}),
                Err(AuthError::Invalid("JWT issued in the future")),
            ),
            (
                json!({"exp": now + 300, "nbf": now as f64 + 3600.5}),
                Err(AuthError::Invalid("JWT not yet valid")),
            ),
            // A date that is not a number (jsonwebtoken ignores such an `nbf`).
            (
                json!({"exp": now + 300, "nbf": "tomorrow"}),
                Err(AuthError::Invalid("token nbf is not a number")),
            ),
            (
                json!({"exp": now + 300, "iat": "now"}),
                Err(AuthError::Invalid("token iat is not a number")),
            ),
            (
                json!({"exp": now + 300, "iat": null}),
                Err(AuthError::Invalid("token iat is not a number")),
            ),
            (
                json!({"exp": "soon"}),
                Err(AuthError::Invalid("JWT lacks a required claim")),
            ),
        ];
        for (dates, want) in cases {
            let got = verified(dates.clone()).await.map(|id| id.expires_at);
            assert_eq!(got, want, "{dates}");
        }
    }

    #[test]
    fn only_signature_keys_are_kept() {
        let (_, base) = ed25519_key(json!({}));
        let with = |extra: Value| {
            let mut k = base.clone();
            k.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            k
        };
        let doc = json!({"keys": [
            with(json!({"kid": "no-use"})),
            with(json!({"kid": "sig", "use": "sig"})),
            with(json!({"kid": "verify", "key_ops": ["verify"]})),
            with(json!({"kid": "sig-alg", "use": "sig", "alg": "EdDSA"})),
            with(json!({"kid": "enc", "use": "enc"})),
            with(json!({"kid": "other-use", "use": "tls"})),
            with(json!({"kid": "ops-encrypt", "key_ops": ["encrypt", "wrapKey"]})),
            with(json!({"kid": "ops-sign", "key_ops": ["sign"]})),
            with(json!({"kid": "ops-empty", "key_ops": []})),
            with(json!({"kid": "sig-but-ops-encrypt", "use": "sig", "key_ops": ["encrypt"]})),
            with(json!({"kid": "enc-alg", "alg": "RSA-OAEP"})),
            with(json!({"kid": "hmac-alg", "alg": "HS256"})),
            {"kid": "unreadable", "kty": "XYZ"},
            {"kid": "oct", "kty": "oct", "k": "c2VjcmV0"},
        ]});
        let keys = parse_key_set(doc).unwrap();
        let mut kids: Vec<&str> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["no-use", "sig", "sig-alg", "verify"]);
        assert!(parse_key_set(json!({"keys": "none"})).is_err());
    }

    #[tokio::test]
    async fn encryption_key_does_not_verify_a_signature() {
        let (key, jwk) = ed25519_key(json!({"kid": "k1", "use": "enc"}));
        let server = jwks_server(200, json!({"keys": [jwk]}).to_string()).await;
        let p = provider(&server.url("/jwks"), Duration::from_secs(60));
        let token = signed(&key, json!({"alg": "EdDSA", "kid": "k1"}));
        assert_eq!(
            p.verify(&token).await,
            Err(AuthError::Invalid("JWT signed by an unknown key"))
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn failed_first_fetch_is_shared_and_answers_unavailable() {
        let server = jwks_server(500, "{}".into()).await;
        let p = provider(&server.url("/jwks"), Duration::from_secs(60));
        let (key, _) = ed25519_key(json!({}));
        let token = signed(&key, json!({"alg": "EdDSA", "kid": "nope"}));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (p, token) = (p.clone(), token.clone());
                tokio::spawn(async move { p.verify(&token).await })
            })
            .collect();
        for t in tasks {
            assert!(
                matches!(t.await.unwrap(), Err(AuthError::Unavailable(_))),
                "a kid that could not be checked is 503"
            );
        }
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
        // Still within refetch_interval: no new fetch, still 503 (never 401).
        assert!(matches!(
            p.verify(&token).await,
            Err(AuthError::Unavailable(_))
        ));
        assert_eq!(server.hits.load(Ordering::SeqCst), 1);
        // Nothing listens: unreachable is 503 too.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}/jwks", l.local_addr().unwrap())
        };
        assert!(matches!(
            provider(&closed, Duration::from_secs(60))
                .verify(&token)
                .await,
            Err(AuthError::Unavailable(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn hanging_first_fetch_fails_all_waiters_together_and_recovers_with_one_fetch() {
        let (key, jwk) = ed25519_key(json!({"kid": "k1"}));
        let idp = FakeIdp::start(200, json!({"keys": [jwk]}).to_string()).await;
        idp.hang.store(true, Ordering::SeqCst);
        let timeout = Duration::from_millis(500);
        let mut config = provider(&idp.url("/jwks"), Duration::from_millis(300))
            .config
            .clone();
        config.timeout = timeout;
        let p = JwtProvider::new(&config, reqwest::Client::new());
        let token = signed(&key, json!({"alg": "EdDSA", "kid": "k1"}));
        let verify_all = || {
            let started = Instant::now();
            (0..12)
                .map(|_| {
                    let (p, token) = (p.clone(), token.clone());
                    tokio::spawn(async move { (p.verify(&token).await, started.elapsed()) })
                })
                .collect::<Vec<_>>()
        };
        for t in verify_all() {
            let (r, took) = t.await.unwrap();
            assert!(matches!(r, Err(AuthError::Unavailable(_))), "{r:?}");
            // Together within the timeout, not one after another (12 x 500 ms).
            assert!(took < timeout * 2, "{took:?}");
        }
        assert_eq!(idp.hits.load(Ordering::SeqCst), 1);
        assert!(p.check().await.is_err(), "the failed fetch is the health");

        // The issuer answers again: after refetch_interval, one fetch for every waiter.
        idp.hang.store(false, Ordering::SeqCst);
        while !p.refetch_due().await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for t in verify_all() {
            assert_eq!(t.await.unwrap().0.unwrap()["sub"], "u1");
        }
        assert_eq!(idp.hits.load(Ordering::SeqCst), 2);
        assert_eq!(p.check().await, Ok(()));
    }

    #[tokio::test]
    async fn unknown_kid_is_invalid_only_against_a_fresh_key_set() {
        let (key, jwk) = ed25519_key(json!({"kid": "k1"}));
        let server = jwks_server(200, json!({"keys": [jwk]}).to_string()).await;
        let interval = Duration::from_millis(300);
        let p = provider(&server.url("/jwks"), interval);
        let known = signed(&key, json!({"alg": "EdDSA", "kid": "k1"}));
        let unknown = signed(&key, json!({"alg": "EdDSA", "kid": "k2"}));
        let absent = Err(AuthError::Invalid("JWT signed by an unknown key"));

        assert_eq!(p.verify(&unknown).await, absent);
        assert_eq!(p.verify(&unknown).await, absent);
        assert_eq!(server.hits.load(Ordering::SeqCst), 1, "rate-limited");
        assert!(p.verify(&known).await.is_ok());

        // The issuer fails: the last good set still verifies its keys, but an unknown kid
        // can no longer be told apart from a new key: 503.
        server.status.store(503, Ordering::SeqCst);
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        assert!(matches!(
            p.verify(&unknown).await,
            Err(AuthError::Unavailable(_))
        ));
        assert_eq!(server.hits.load(Ordering::SeqCst), 2);
        // Within the interval the failed attempt still stands: no fetch, still 503, not a
        // 401 from the old set.
        assert!(matches!(
            p.verify(&unknown).await,
            Err(AuthError::Unavailable(_))
        ));
        assert_eq!(server.hits.load(Ordering::SeqCst), 2);
        assert!(p.verify(&known).await.is_ok());

        // Back again: after the interval the set is fetched anew and k2 is plainly absent.
        server.status.store(200, Ordering::SeqCst);
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        assert_eq!(p.verify(&unknown).await, absent);
        assert_eq!(server.hits.load(Ordering::SeqCst), 3);
    }
}
