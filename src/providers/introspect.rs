//! `introspect`: opaque IdP access tokens, asked at the IdP's RFC 7662 introspection
//! endpoint (from discovery or config) with authgate's client credentials. `active: false`
//! is a 401; an answer that cannot be read, an error status or a timeout is a 503 (fail
//! closed). Answers are cached until the token's `exp`, at most `cache_ttl`. An active
//! refresh token is not an access token: it is handed to the next provider (`offline`).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::discovery::{DISCOVERY_RETRY, Discovery};
use super::health::{Health, probe};
use super::oidc::{
    ClaimMapping, ClientAuth, ClientAuthMethod, ClientConfig, NumericDates, check_url,
};
use super::{AuthContext, AuthError, Provider, Unhealthy};
use crate::credential::Credential;
use crate::identity::Identity;
use crate::secret::Secret;
use crate::setting::ConfigError;

/// `type: introspect` options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectConfig {
    /// The IdP's issuer URL: discovery gives `introspection_endpoint`, an answer's `iss`,
    /// when present, must equal it, and it qualifies the minted `sub` (as `jwt` does; the
    /// endpoint does when no issuer is given).
    #[serde(default)]
    pub issuer: Option<String>,
    /// The endpoint itself (instead of discovery).
    #[serde(default)]
    pub introspection_endpoint: Option<String>,
    /// authgate's client id at the IdP.
    pub client_id: String,
    /// Its secret (prefer `client_secret_file`).
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// A file holding the secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// `client_secret_basic` (default) or `client_secret_post`.
    #[serde(default)]
    pub client_auth: ClientAuthMethod,
    /// Accepted `aud` values of the tokens (one must match).
    pub audiences: Vec<String>,
    /// How long an answer is reused (never past the token's `exp`); `0s` asks every time.
    /// Default: `cache.max_ttl`.
    #[serde(default, with = "humantime_serde")]
    pub cache_ttl: Option<Duration>,
    /// Time limit of one call.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// How the answer's claims become the identity.
    #[serde(default)]
    pub claims: ClaimMapping,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl IntrospectConfig {
    /// What qualifies the subjects of this IdP: the issuer, so that they agree with a `jwt`
    /// provider's for the same issuer; without one, the introspection endpoint.
    fn subject_namespace(&self) -> &str {
        self.issuer
            .as_deref()
            .or(self.introspection_endpoint.as_deref())
            .unwrap_or_default()
    }

    fn client(&self) -> ClientConfig {
        ClientConfig {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            client_secret_file: self.client_secret_file.clone(),
            client_auth: self.client_auth,
        }
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        match (&self.issuer, &self.introspection_endpoint) {
            (None, None) => {
                return Err(ConfigError::invalid(
                    format!("{key}.issuer"),
                    "give issuer (discovery) or introspection_endpoint",
                ));
            }
            (issuer, endpoint) => {
                if let Some(i) = issuer {
                    check_url(&format!("{key}.issuer"), i)?;
                }
                if let Some(e) = endpoint {
                    check_url(&format!("{key}.introspection_endpoint"), e)?;
                }
            }
        }
        if self.client_auth == ClientAuthMethod::None {
            return Err(ConfigError::invalid(
                format!("{key}.client_auth"),
                "introspection needs client_secret_basic or client_secret_post",
            ));
        }
        if self.audiences.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.audiences"),
                "at least one audience is needed",
            ));
        }
        self.client().load(key).map(|_| ())
    }
}

/// The `introspect` provider.
pub struct IntrospectProvider {
    client: reqwest::Client,
    config: IntrospectConfig,
    auth: ClientAuth,
    discovery: Option<Discovery>,
    health: Health,
}

impl IntrospectProvider {
    /// Type name.
    pub const KIND: &'static str = "introspect";

    /// Reads the client secret; `key` names the entry for errors.
    pub fn new(
        config: &IntrospectConfig,
        key: &str,
        client: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            auth: config.client().load(key)?,
            discovery: config
                .issuer
                .as_deref()
                .map(|i| Discovery::new(i, client.clone(), config.timeout, DISCOVERY_RETRY)),
            client,
            health: Health::default(),
            config: config.clone(),
        })
    }

    async fn endpoint(&self) -> Result<String, AuthError> {
        match (&self.config.introspection_endpoint, &self.discovery) {
            (Some(e), _) => Ok(e.clone()),
            (None, Some(d)) => d.endpoint("introspection_endpoint", None).await,
            (None, None) => Err(AuthError::Unavailable(
                "no introspection endpoint configured".into(),
            )),
        }
    }

    /// Asks the introspection endpoint about `token` and reads the answer.
    async fn introspect(&self, token: &Secret) -> Result<Identity, AuthError> {
        let endpoint = self.endpoint().await?;
        let form = vec![
            ("token", token.expose().to_owned()),
            ("token_type_hint", "access_token".to_owned()),
        ];
        let (status, answer) = self
            .auth
            .post_form(&self.client, &endpoint, form, self.config.timeout)
            .await?;
        self.judge(status, &answer)
    }

    /// Reads an RFC 7662 answer.
    fn judge(&self, status: u16, answer: &Value) -> Result<Identity, AuthError> {
        if status != 200 {
            return Err(AuthError::Unavailable(format!(
                "introspection endpoint answered {status}"
            )));
        }
        let Some(active) = answer["active"].as_bool() else {
            return Err(AuthError::Unavailable(
                "introspection answer without a boolean `active`".into(),
            ));
        };
        if !active {
            return Err(AuthError::Invalid("token is not active"));
        }
        let audience_ok = match &answer["aud"] {
            Value::String(a) => self.config.audiences.contains(a),
            Value::Array(list) => list
                .iter()
                .filter_map(Value::as_str)
                .any(|a| self.config.audiences.iter().any(|c| c == a)),
            _ => false,
        };
        if !audience_ok {
            if is_refresh_token(answer) {
                return Err(AuthError::Declined);
            }
            return Err(AuthError::Invalid("token audience not accepted"));
        }
        if let (Some(want), Some(got)) = (&self.config.issuer, answer["iss"].as_str())
            && want != got
        {
            return Err(AuthError::Invalid("token issuer not accepted"));
        }
        if NumericDates::of(answer)?
            .exp
            .is_some_and(|exp| exp <= crate::unix_now())
        {
            return Err(AuthError::Invalid("token expired"));
        }
        self.config.claims.identity(
            answer,
            Self::KIND,
            self.config.subject_namespace(),
            answer["client_id"].as_str(),
        )
    }
}

/// Whether an active introspection answer describes a refresh token: RFC 7662's
/// `token_type` is an access token's type, so `refresh_token` or none at all (oidc-provider),
/// or Keycloak's `typ` `Refresh`/`Offline`.
fn is_refresh_token(answer: &Value) -> bool {
    let typ = answer["typ"].as_str().unwrap_or("");
    match answer["token_type"].as_str() {
        Some(t) => t.eq_ignore_ascii_case("refresh_token"),
        None => {
            typ.is_empty()
                || typ.eq_ignore_ascii_case("refresh")
                || typ.eq_ignore_ascii_case("offline")
        }
    }
}

#[async_trait]
impl Provider for IntrospectProvider {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn name(&self) -> String {
        match (&self.config.issuer, &self.config.introspection_endpoint) {
            (Some(i), _) => format!("introspect {i}"),
            (None, Some(e)) => format!("introspect {e}"),
            (None, None) => Self::KIND.into(),
        }
    }

    fn accepts(&self, credential: &Credential) -> bool {
        // authgate's own API tokens never go to the IdP.
        matches!(credential, Credential::Bearer(t)
            if !t.expose().starts_with(crate::secret::API_TOKEN_PREFIX))
    }

    fn challenge(&self, realm: &str) -> String {
        format!("Bearer realm=\"{realm}\"")
    }

    fn cache_ttl(&self) -> Option<Duration> {
        self.config.cache_ttl
    }

    async fn authenticate(
        &self,
        credential: &Credential,
        _ctx: &AuthContext,
    ) -> Result<Identity, AuthError> {
        let Some(token) = credential.token() else {
            return Err(AuthError::Invalid("not a bearer token"));
        };
        let answer = self.introspect(token).await;
        self.health.record(&answer);
        answer
    }

    fn health(&self) -> Option<&Health> {
        Some(&self.health)
    }

    async fn check(&self) -> Result<(), Unhealthy> {
        self.health
            .check(async {
                let url = match &self.discovery {
                    Some(d) => d.url(),
                    None => self.endpoint().await.map_err(|e| Unhealthy::from(&e))?,
                };
                probe(self.client.get(&url).timeout(self.config.timeout), &url).await?;
                self.endpoint()
                    .await
                    .map(|_| ())
                    .map_err(|e| Unhealthy::from(&e))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn provider() -> IntrospectProvider {
        let config: IntrospectConfig = serde_json::from_value(json!({
            "issuer": "https://idp.example.org", "client_id": "gw", "client_secret": "s",
            "audiences": ["api"]
        }))
        .unwrap();
        IntrospectProvider::new(&config, "p", reqwest::Client::new()).unwrap()
    }

    #[test]
    fn answers_table() {
        let p = provider();
        let later = crate::unix_now() + 600;
        let ok = |v: Value| {
            let mut base = json!({"active": true, "aud": "api", "sub": "u", "exp": later,
                                  "token_type": "Bearer", "iss": "https://idp.example.org"});
            base.as_object_mut()
                .unwrap()
                .extend(v.as_object().unwrap().clone());
            base
        };
        // (status, answer, expected)
        let cases: Vec<(u16, Value, Result<&str, AuthError>)> = vec![
            (200, ok(json!({})), Ok("oidc:https%3A//idp.example.org:u")),
            (
                200,
                ok(json!({"aud": ["x", "api"]})),
                Ok("oidc:https%3A//idp.example.org:u"),
            ),
            (
                200,
                ok(json!({"sub": null, "client_id": "machine"})),
                Ok("oidc:https%3A//idp.example.org:machine"),
            ),
            (
                200,
                json!({"active": false}),
                Err(AuthError::Invalid("token is not active")),
            ),
            (
                200,
                ok(json!({"aud": "other"})),
                Err(AuthError::Invalid("token audience not accepted")),
            ),
            (
                200,
                ok(json!({"iss": "https://evil.example"})),
                Err(AuthError::Invalid("token issuer not accepted")),
            ),
            (
                200,
                ok(json!({"exp": 1})),
                Err(AuthError::Invalid("token expired")),
            ),
            // NumericDates may have fractions (RFC 7519 section 2); `exp` rounds down.
            (
                200,
                ok(json!({"exp": 1.0})),
                Err(AuthError::Invalid("token expired")),
            ),
            (
                200,
                ok(json!({"exp": (crate::unix_now() - 30) as f64 + 0.5})),
                Err(AuthError::Invalid("token expired")),
            ),
            (
                200,
                ok(json!({"exp": later as f64 + 0.5, "iat": 1700000000.5})),
                Ok("oidc:https%3A//idp.example.org:u"),
            ),
            // A date that is not a number is not read as "no date".
            (
                200,
                ok(json!({"exp": "1"})),
                Err(AuthError::Invalid("token exp is not a number")),
            ),
            (
                200,
                ok(json!({"exp": null})),
                Err(AuthError::Invalid("token exp is not a number")),
            ),
            (
                200,
                ok(json!({"iat": "yesterday"})),
                Err(AuthError::Invalid("token iat is not a number")),
            ),
            // Refresh tokens go to the next provider.
            (
                200,
                json!({"active": true, "sub": "u", "client_id": "app"}),
                Err(AuthError::Declined),
            ),
            (
                200,
                json!({"active": true, "sub": "u", "typ": "Offline"}),
                Err(AuthError::Declined),
            ),
            (
                200,
                json!({"active": true, "token_type": "refresh_token"}),
                Err(AuthError::Declined),
            ),
            // Anything unreadable fails closed.
            (
                200,
                Value::Null,
                Err(AuthError::Unavailable(
                    "introspection answer without a boolean `active`".into(),
                )),
            ),
            (
                200,
                json!({"active": "true"}),
                Err(AuthError::Unavailable(
                    "introspection answer without a boolean `active`".into(),
                )),
            ),
            (
                401,
                json!({"error": "invalid_client"}),
                Err(AuthError::Unavailable(
                    "introspection endpoint answered 401".into(),
                )),
            ),
            (
                500,
                Value::Null,
                Err(AuthError::Unavailable(
                    "introspection endpoint answered 500".into(),
                )),
            ),
        ];
        for (i, (status, answer, want)) in cases.into_iter().enumerate() {
            let got = p.judge(status, &answer).map(|id| id.subject);
            assert_eq!(got.as_deref().map_err(Clone::clone), want, "case {i}");
        }
        // A fractional `exp` caps the identity (and the JWT minted for it), rounded down.
        let id = p
            .judge(200, &ok(json!({"exp": later as f64 + 0.9})))
            .unwrap();
        assert_eq!(id.expires_at, Some(later));
    }
}
