//! `jwt`: OAuth2/OIDC bearer JWTs from a configured issuer, verified against the issuer's
//! JWKS (from `jwks_uri` or OpenID discovery). Algorithms come from a per-issuer allow-list
//! and must fit the key (`kty`, and the key's own `alg` when it has one): never `none`,
//! never HMAC, never an algorithm taken from the token alone. An unknown `kid` refetches the
//! JWKS at most once per `refetch_interval`; a key set older than its `Cache-Control`
//! max-age (capped by `jwks_max_age`) is refreshed in the background while it keeps
//! answering, and the last good key set is kept when a fetch fails.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::Mutex;

use super::oidc::{ClaimMapping, Discovery, check_url, get_json, probe};
use super::{AuthContext, AuthError, Provider};
use crate::config::ConfigError;
use crate::credential::Credential;
use crate::identity::Identity;

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
    keys: HashMap<String, (DecodingKey, Option<Algorithm>, KeyFamily)>,
    fetched: Instant,
    /// Refresh in the background once older than this.
    max_age: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFamily {
    Rsa,
    Ec,
    Okp,
}

fn family_of(alg: Algorithm) -> Option<KeyFamily> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(KeyFamily::Rsa),
        ES256 | ES384 => Some(KeyFamily::Ec),
        EdDSA => Some(KeyFamily::Okp),
        HS256 | HS384 | HS512 => None,
    }
}

/// The `jwt` provider for one issuer.
pub struct JwtProvider {
    client: reqwest::Client,
    config: JwtConfig,
    allowed: Vec<Algorithm>,
    discovery: Discovery,
    keys: ArcSwapOption<KeySet>,
    /// When the key set was last fetched (or tried), for the refetch rate limit.
    fetching: Mutex<Option<Instant>>,
    refreshing: AtomicBool,
    me: Weak<Self>,
}

impl JwtProvider {
    /// Type name.
    pub const KIND: &'static str = "jwt";

    /// Over the shared HTTP client (the config was validated).
    pub fn new(config: &JwtConfig, client: reqwest::Client) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            discovery: Discovery::new(&config.issuer, client.clone(), config.timeout),
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

    /// Fetches the key set now, unless another request just did (single flight, and at most
    /// once per `refetch_interval` unless `force`).
    async fn refresh(&self, force: bool) -> Result<(), AuthError> {
        let mut last = self.fetching.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < self.config.refetch_interval) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let uri = self.jwks_uri().await?;
        let (doc, headers) = get_json(&self.client, &uri, self.config.timeout).await?;
        let set: JwkSet = serde_json::from_value(doc)
            .map_err(|e| AuthError::Unavailable(format!("JWKS unreadable: {e}")))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk))
            else {
                continue;
            };
            let family = match jwk.algorithm {
                AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
                AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
                AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Okp,
                AlgorithmParameters::OctetKey(_) => continue,
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| parse_algorithm(&format!("{a:?}")));
            keys.insert(kid, (key, alg, family));
        }
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
            if let Err(e) = me.refresh(false).await {
                tracing::warn!(issuer = %me.config.issuer, error = %e,
                    "JWKS refresh failed; keeping the last good key set");
            }
            me.refreshing.store(false, Ordering::Release);
        });
    }

    /// The key for `kid`, fetching the key set when missing (rate-limited).
    async fn key_for(
        &self,
        kid: &str,
    ) -> Result<Option<(DecodingKey, Option<Algorithm>, KeyFamily)>, AuthError> {
        let current = self.keys.load_full();
        if let Some(set) = &current
            && let Some(k) = set.keys.get(kid)
        {
            if set.fetched.elapsed() > set.max_age {
                self.refresh_in_background();
            }
            return Ok(Some(k.clone()));
        }
        // An unknown kid with the issuer unreachable cannot be decided: 503, not 401.
        self.refresh(current.is_none()).await?;
        Ok(self
            .keys
            .load()
            .as_ref()
            .and_then(|s| s.keys.get(kid).cloned()))
    }

    /// Verifies `token` (signature, algorithm, `typ`, `iss`, `aud`, `exp`, `nbf`, `iat`) and
    /// returns its claims.
    pub(super) async fn verify(&self, token: &str) -> Result<Value, AuthError> {
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
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
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
        let now = crate::unix_now();
        if data.claims["iat"]
            .as_i64()
            .is_some_and(|iat| iat > now + self.config.leeway.as_secs() as i64)
        {
            return Err(AuthError::Invalid("JWT issued in the future"));
        }
        Ok(data.claims)
    }

    /// The identity of verified `claims`, as `provider` says it.
    pub(super) fn identity(
        &self,
        claims: &Value,
        provider: &'static str,
    ) -> Result<Identity, AuthError> {
        self.config.claims.identity(claims, provider, None)
    }
}

/// `max-age` of a `Cache-Control` header (`no-cache`/`no-store` count as 0).
fn cache_max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').map(str::trim).find_map(|d| {
        if d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
        let (name, secs) = d.split_once('=')?;
        name.trim().eq_ignore_ascii_case("max-age").then(|| {
            secs.trim()
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs)
        })?
    })
}

/// What the unverified payload of a compact JWT says, to pick the provider: its `iss`, and
/// whether it is a Keycloak refresh or offline token (`typ` `Refresh`/`Offline`), which
/// belongs to the `offline` provider, not here.
#[derive(Deserialize)]
struct Peek {
    iss: Option<String>,
    typ: Option<String>,
}

fn peek(token: &str) -> Option<Peek> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `iss` of a compact JWT that is an access token (not a refresh token), unverified.
fn unverified_issuer(token: &str) -> Option<String> {
    peek(token)
        .filter(|p| {
            !p.typ.as_deref().is_some_and(|t| {
                t.eq_ignore_ascii_case("refresh") || t.eq_ignore_ascii_case("offline")
            })
        })
        .and_then(|p| p.iss)
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

    async fn check(&self) -> Result<(), String> {
        let uri = self.jwks_uri().await.map_err(|e| e.to_string())?;
        probe(&self.client, &uri, self.config.timeout).await?;
        if self.keys.load().is_none() {
            self.refresh(false).await.map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
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
}
