//! `offline`: a client presents a long-lived (`offline_access`) refresh token as its bearer
//! credential. authgate exchanges it at the IdP's token endpoint for an access token,
//! verifies that with the `jwt` provider of the same issuer, and the decision cache keeps the
//! identity until the access token expires; concurrent first requests with one refresh
//! token share one exchange (the cache's single flight).
//!
//! An IdP that rotates refresh tokens answers the exchange with a new one and invalidates
//! the presented one: the client's token then stops working at the next exchange. authgate
//! cannot hand the new token back through a proxy, so it logs a warning when it sees a
//! rotation; turn rotation off for the client these tokens belong to.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::discovery::{DISCOVERY_RETRY, Discovery};
use super::health::{Health, probe};
use super::jwt::JwtProvider;
use super::oidc::{ClientAuth, ClientAuthMethod, ClientConfig, check_url};
use super::{AuthContext, AuthError, Provider, Unhealthy};
use crate::credential::Credential;
use crate::identity::Identity;
use crate::secret::Secret;
use crate::setting::ConfigError;

/// `type: offline` options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflineConfig {
    /// The IdP's issuer: discovery gives `token_endpoint`, and the `jwt` provider configured
    /// for this issuer verifies the access tokens the exchange returns.
    pub issuer: String,
    /// The token endpoint itself (instead of discovery).
    #[serde(default)]
    pub token_endpoint: Option<String>,
    /// The client the refresh tokens were issued to (a refresh token is bound to it).
    pub client_id: String,
    /// Its secret (prefer `client_secret_file`); none for a public client.
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// A file holding the secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// `client_secret_basic` (default), `client_secret_post` or `none` (public client).
    #[serde(default)]
    pub client_auth: ClientAuthMethod,
    /// `scope` sent with the exchange (default: the scopes granted with the token).
    #[serde(default)]
    pub scope: Option<String>,
    /// `resource` (RFC 8707) sent with the exchange, so the access token is for your API.
    #[serde(default)]
    pub resource: Option<String>,
    /// Longest reuse of an identity (never past the access token's `exp`). Default: until
    /// the access token expires.
    #[serde(default, with = "humantime_serde")]
    pub cache_ttl: Option<Duration>,
    /// Time limit of one call.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl OfflineConfig {
    fn client(&self) -> ClientConfig {
        ClientConfig {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            client_secret_file: self.client_secret_file.clone(),
            client_auth: self.client_auth,
        }
    }

    /// `jwt_issuers`: the issuers of the configured `jwt` providers.
    pub(super) fn validate(&self, key: &str, jwt_issuers: &[&str]) -> Result<(), ConfigError> {
        check_url(&format!("{key}.issuer"), &self.issuer)?;
        if let Some(e) = &self.token_endpoint {
            check_url(&format!("{key}.token_endpoint"), e)?;
        }
        if !jwt_issuers.contains(&self.issuer.as_str()) {
            return Err(ConfigError::invalid(
                format!("{key}.issuer"),
                "no `jwt` provider is configured for this issuer; it verifies the access \
                 tokens the exchange returns",
            ));
        }
        self.client().load(key).map(|_| ())
    }
}

/// The `offline` provider.
pub struct OfflineProvider {
    client: reqwest::Client,
    config: OfflineConfig,
    auth: ClientAuth,
    discovery: Discovery,
    verifier: Arc<JwtProvider>,
    health: Health,
}

impl OfflineProvider {
    /// Type name.
    pub const KIND: &'static str = "offline";

    /// Reads the client secret; `verifier` is the `jwt` provider of the same issuer.
    pub fn new(
        config: &OfflineConfig,
        key: &str,
        client: reqwest::Client,
        verifier: Arc<JwtProvider>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            auth: config.client().load(key)?,
            discovery: Discovery::new(
                &config.issuer,
                client.clone(),
                config.timeout,
                DISCOVERY_RETRY,
            ),
            health: Health::default(),
            client,
            config: config.clone(),
            verifier,
        })
    }

    async fn token_endpoint(&self) -> Result<String, AuthError> {
        self.discovery
            .endpoint("token_endpoint", self.config.token_endpoint.as_deref())
            .await
    }

    /// Reads the token endpoint's answer: the access token, or why there is none.
    fn access_token<'a>(
        &self,
        status: u16,
        answer: &'a Value,
        presented: &Secret,
    ) -> Result<&'a str, AuthError> {
        match (status, answer["error"].as_str()) {
            (200, _) => {}
            // The refresh token is expired, revoked, or not this client's.
            (400 | 401, Some("invalid_grant")) => {
                return Err(AuthError::Invalid("refresh token not valid"));
            }
            (_, Some(error)) => {
                return Err(AuthError::Unavailable(format!(
                    "token endpoint answered {status} {error}"
                )));
            }
            (_, None) => {
                return Err(AuthError::Unavailable(format!(
                    "token endpoint answered {status}"
                )));
            }
        }
        if let Some(new) = answer["refresh_token"].as_str()
            && new != presented.expose()
        {
            tracing::warn!(
                issuer = %self.config.issuer,
                client_id = %self.config.client_id,
                "the IdP rotated a refresh token: the client's token stops working at its \
                 next exchange; turn off refresh-token rotation for this client"
            );
        }
        answer["access_token"]
            .as_str()
            .ok_or_else(|| AuthError::Unavailable("token endpoint sent no access_token".into()))
    }
}

#[async_trait]
impl Provider for OfflineProvider {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn name(&self) -> String {
        format!("offline {}", self.config.issuer)
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
        Some(self.config.cache_ttl.unwrap_or(Duration::MAX))
    }

    async fn authenticate(
        &self,
        credential: &Credential,
        _ctx: &AuthContext,
    ) -> Result<Identity, AuthError> {
        let Some(refresh) = credential.token() else {
            return Err(AuthError::Invalid("not a bearer token"));
        };
        let identity = self.exchange(refresh).await;
        self.health.record(&identity);
        identity
    }

    fn health(&self) -> Option<&Health> {
        Some(&self.health)
    }

    async fn check(&self) -> Result<(), Unhealthy> {
        self.health
            .check(async {
                let url = self.discovery.url();
                probe(self.client.get(&url).timeout(self.config.timeout), &url).await?;
                self.token_endpoint()
                    .await
                    .map(|_| ())
                    .map_err(|e| Unhealthy::from(&e))
            })
            .await
    }
}

impl OfflineProvider {
    /// Exchanges `refresh` at the token endpoint and verifies the access token it gets.
    async fn exchange(&self, refresh: &Secret) -> Result<Identity, AuthError> {
        let endpoint = self.token_endpoint().await?;
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh.expose().to_owned()),
        ];
        if let Some(scope) = &self.config.scope {
            form.push(("scope", scope.clone()));
        }
        if let Some(resource) = &self.config.resource {
            form.push(("resource", resource.clone()));
        }
        let (status, answer) = self
            .auth
            .post_form(&self.client, &endpoint, form, self.config.timeout)
            .await?;
        let access = self.access_token(status, &answer, refresh)?;
        // The IdP just issued this token: if it does not verify, the configuration (audience,
        // algorithms, an opaque token format) is wrong, not the client's credential.
        let claims = self.verifier.verify(access).await.map_err(|e| match e {
            AuthError::Invalid(why) => AuthError::Unavailable(format!(
                "the access token from the exchange does not verify ({why}); check the jwt \
                 provider of {} and this provider's resource/scope",
                self.config.issuer
            )),
            other => other,
        })?;
        self.verifier.identity(&claims, Self::KIND)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exchange_answers_table() {
        let jwt: super::super::JwtConfig = serde_json::from_value(json!({
            "issuer": "https://idp.example.org", "audiences": ["api"]
        }))
        .unwrap();
        let config: OfflineConfig = serde_json::from_value(json!({
            "issuer": "https://idp.example.org", "client_id": "app", "client_auth": "none"
        }))
        .unwrap();
        let p = OfflineProvider::new(
            &config,
            "p",
            reqwest::Client::new(),
            JwtProvider::new(&jwt, reqwest::Client::new()),
        )
        .unwrap();
        let presented = Secret::new("rt-1");
        let cases: Vec<(u16, Value, Result<&str, AuthError>)> = vec![
            (
                200,
                json!({"access_token": "at", "refresh_token": "rt-1"}),
                Ok("at"),
            ),
            (
                200,
                json!({"access_token": "at", "refresh_token": "rt-2"}),
                Ok("at"),
            ),
            (200, json!({"access_token": "at"}), Ok("at")),
            (
                400,
                json!({"error": "invalid_grant"}),
                Err(AuthError::Invalid("refresh token not valid")),
            ),
            (
                401,
                json!({"error": "invalid_client"}),
                Err(AuthError::Unavailable(
                    "token endpoint answered 401 invalid_client".into(),
                )),
            ),
            (
                502,
                Value::Null,
                Err(AuthError::Unavailable("token endpoint answered 502".into())),
            ),
            (
                200,
                json!({"token_type": "Bearer"}),
                Err(AuthError::Unavailable(
                    "token endpoint sent no access_token".into(),
                )),
            ),
        ];
        for (i, (status, answer, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                p.access_token(status, &answer, &presented),
                want,
                "case {i}"
            );
        }
    }
}
