//! `jwt`: OAuth2/OIDC bearer JWTs from a configured issuer, verified against the issuer's
//! JWKS (from `jwks_uri` or OpenID discovery). Algorithms come from a per-issuer allow-list
//! and must fit the key (`kty`, and the key's own `alg` when it has one): never `none`,
//! never HMAC, never an algorithm taken from the token alone. An unknown `kid` refetches the
//! JWKS at most once per `refetch_interval`; the last good key set is kept when a fetch fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::{Mutex, OnceCell};

use super::{AuthContext, AuthError, Provider};
use crate::config::ConfigError;
use crate::credential::Credential;
use crate::identity::{AttributeValue, Attributes, Identity};

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
    /// Key sets older than this are refreshed in the background.
    #[serde(default = "default_max_age", with = "humantime_serde")]
    pub jwks_max_age: Duration,
    /// Time limit of one call to the issuer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How claims become the identity.
    #[serde(default)]
    pub claims: ClaimMapping,
}

/// Claim paths (dotted) for the identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimMapping {
    /// Username claims, first present wins; `sub` when none is.
    pub username: Vec<String>,
    /// Email claim.
    pub email: String,
    /// Claims holding role lists (`realm_access.roles`, `resource_access.<client>.roles`, ...).
    pub roles: Vec<String>,
    /// Claims copied into attributes (string or list of strings).
    pub attributes: Vec<String>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            username: vec!["preferred_username".into()],
            email: "email".into(),
            roles: vec!["realm_access.roles".into(), "groups".into(), "roles".into()],
            attributes: Vec::new(),
        }
    }
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
        if !(self.issuer.starts_with("https://") || self.issuer.starts_with("http://")) {
            return Err(ConfigError::invalid(
                format!("{key}.issuer"),
                "must be an http(s) URL",
            ));
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
    jwks_uri: OnceCell<String>,
    keys: ArcSwapOption<KeySet>,
    fetching: Mutex<Option<Instant>>,
}

impl JwtProvider {
    /// Type name.
    pub const KIND: &'static str = "jwt";

    /// Over the shared HTTP client (the config was validated).
    pub fn new(config: &JwtConfig, client: reqwest::Client) -> Self {
        Self {
            client,
            allowed: config
                .algorithms
                .iter()
                .filter_map(|a| parse_algorithm(a))
                .collect(),
            config: config.clone(),
            jwks_uri: OnceCell::new(),
            keys: ArcSwapOption::empty(),
            fetching: Mutex::new(None),
        }
    }

    async fn jwks_uri(&self) -> Result<&str, AuthError> {
        self.jwks_uri
            .get_or_try_init(|| async {
                if let Some(uri) = &self.config.jwks_uri {
                    return Ok(uri.clone());
                }
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    self.config.issuer.trim_end_matches('/')
                );
                let doc: Value = self.get_json(&url).await?;
                if doc["issuer"].as_str() != Some(self.config.issuer.as_str()) {
                    return Err(AuthError::Unavailable(
                        "discovery names another issuer".into(),
                    ));
                }
                doc["jwks_uri"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| AuthError::Unavailable("discovery has no jwks_uri".into()))
            })
            .await
            .map(String::as_str)
    }

    async fn get_json(&self, url: &str) -> Result<Value, AuthError> {
        let response = self
            .client
            .get(url)
            .timeout(self.config.timeout)
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("issuer unreachable: {e}")))?;
        if !response.status().is_success() {
            return Err(AuthError::Unavailable(format!(
                "issuer answered {}",
                response.status()
            )));
        }
        response
            .json()
            .await
            .map_err(|e| AuthError::Unavailable(format!("issuer answer is not JSON: {e}")))
    }

    /// Fetches the key set now, unless another request just did (single flight, and at most
    /// once per `refetch_interval` unless `force`).
    async fn refresh(&self, force: bool) -> Result<(), AuthError> {
        let mut last = self.fetching.lock().await;
        if !force && last.is_some_and(|t| t.elapsed() < self.config.refetch_interval) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let uri = self.jwks_uri().await?.to_owned();
        let doc = self.get_json(&uri).await?;
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
        tracing::info!(issuer = %self.config.issuer, keys = keys.len(), "fetched the issuer's JWKS");
        self.keys.store(Some(Arc::new(KeySet {
            keys,
            fetched: Instant::now(),
        })));
        Ok(())
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
            if set.fetched.elapsed() > self.config.jwks_max_age {
                // Stale but usable: refetch (at most once per refetch_interval); when that
                // fails, the last good key set keeps answering.
                let _ = self.refresh(false).await;
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

    fn identity(&self, claims: &Value) -> Result<Identity, AuthError> {
        let subject = claims["sub"]
            .as_str()
            .ok_or(AuthError::Invalid("the token has no sub"))?;
        let mapping = &self.config.claims;
        let username = mapping
            .username
            .iter()
            .find_map(|path| lookup(claims, path).and_then(Value::as_str))
            .unwrap_or(subject);
        let mut roles = std::collections::BTreeSet::new();
        for path in &mapping.roles {
            if let Some(list) = lookup(claims, path).and_then(Value::as_array) {
                roles.extend(list.iter().filter_map(|r| r.as_str().map(str::to_owned)));
            }
        }
        let scopes = match (&claims["scope"], &claims["scp"]) {
            (Value::String(s), _) => Some(s.split_whitespace().map(str::to_owned).collect()),
            (_, Value::Array(a)) => Some(
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect(),
            ),
            _ => None,
        };
        let mut attributes = Attributes::new();
        for name in &mapping.attributes {
            match lookup(claims, name) {
                Some(Value::String(s)) => {
                    attributes.insert(name.clone(), AttributeValue::One(s.clone()));
                }
                Some(Value::Array(a)) => {
                    let values = a
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect();
                    attributes.insert(name.clone(), AttributeValue::Many(values));
                }
                _ => {}
            }
        }
        Ok(Identity {
            subject: subject.to_owned(),
            provider: Self::KIND,
            username: username.to_owned(),
            email: lookup(claims, &mapping.email)
                .and_then(Value::as_str)
                .map(str::to_owned),
            roles,
            attributes,
            scopes,
            expires_at: claims["exp"].as_i64(),
            credential_id: None,
        })
    }
}

/// `a.b.c` into nested objects.
fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// The `iss` of a compact JWT, read without verifying anything (to pick the provider).
fn unverified_issuer(token: &str) -> Option<String> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v["iss"].as_str().map(str::to_owned)
}

#[async_trait]
impl Provider for JwtProvider {
    fn kind(&self) -> &'static str {
        Self::KIND
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
        let token = token.expose();
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
        self.identity(&data.claims)
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
        let claims: Value = serde_json::json!({"resource_access": {"gw": {"roles": ["x"]}}});
        assert_eq!(
            lookup(&claims, "resource_access.gw.roles"),
            Some(&serde_json::json!(["x"]))
        );
        assert_eq!(lookup(&claims, "resource_access.other.roles"), None);
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
