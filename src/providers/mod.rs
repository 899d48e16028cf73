//! Providers decide who a credential belongs to. Each is a small [`Provider`] chosen from
//! config (a serde enum tagged by `type`); the [`Chain`] holds them in config order and the
//! first one that takes the credential decides.

mod api_token;
mod astakos;
mod basic;
mod discovery;
#[cfg(test)]
mod fake_idp;
mod health;
mod introspect;
mod jwt;
mod keystone;
mod offline;
mod oidc;
mod remote;
mod session;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

pub use api_token::ApiTokenProvider;
pub use astakos::{AstakosConfig, AstakosMode, AstakosProvider, parse_iso8601};
pub use basic::{BasicConfig, BasicProvider, hash_password};
pub use health::Health;
pub use introspect::{IntrospectConfig, IntrospectProvider};
pub use jwt::{JwtConfig, JwtProvider, unverified_issuer};
pub use keystone::{KeystoneConfig, KeystoneProvider};
pub use offline::{OfflineConfig, OfflineProvider};
pub use oidc::{ClaimMapping, ClientAuth, ClientAuthMethod, ClientConfig, EmailVerified, get_json};
pub use remote::{CredentialForm, RemoteConfig, RemoteMethod, RemoteProvider};
pub use session::{SessionIssuer, SessionProvider, SessionRefresher};

use crate::credential::Credential;
use crate::identity::{Identity, mapped_user_name, qualified_subject};
use crate::setting::ConfigError;
use crate::store::Store;

/// One entry of `providers:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProviderConfig {
    /// Opaque API tokens issued by authgate.
    ApiToken(ApiTokenConfig),
    /// Local users with argon2id passwords.
    Basic(BasicConfig),
    /// Tokens of GRNET's Astakos.
    Astakos(AstakosConfig),
    /// OpenStack Keystone v3 tokens.
    Keystone(KeystoneConfig),
    /// OAuth2/OIDC JWTs of one issuer (list several for several issuers).
    Jwt(JwtConfig),
    /// Opaque IdP tokens, asked at an RFC 7662 introspection endpoint.
    Introspect(IntrospectConfig),
    /// Refresh (offline) tokens, exchanged at the IdP's token endpoint.
    Offline(OfflineConfig),
    /// Opaque tokens validated by asking a who-am-i service (ECMWF API tokens).
    Remote(RemoteConfig),
}

/// `type: api_token` (no options yet).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiTokenConfig {}

impl ProviderConfig {
    fn kind(&self) -> &'static str {
        match self {
            Self::ApiToken(_) => ApiTokenProvider::KIND,
            Self::Basic(_) => BasicProvider::KIND,
            Self::Astakos(_) => AstakosProvider::KIND,
            Self::Keystone(_) => KeystoneProvider::KIND,
            Self::Jwt(_) => JwtProvider::KIND,
            Self::Introspect(_) => IntrospectProvider::KIND,
            Self::Offline(_) => OfflineProvider::KIND,
            Self::Remote(_) => RemoteProvider::KIND,
        }
    }
}

/// `providers`: the list, in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct ProvidersConfig(pub Vec<ProviderConfig>);

impl Default for ProvidersConfig {
    fn default() -> Self {
        Self(vec![
            ProviderConfig::ApiToken(Default::default()),
            ProviderConfig::Basic(Default::default()),
        ])
    }
}

impl ProvidersConfig {
    /// Rejects an empty list, duplicates and bad provider options, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate(&self.0)
    }
}

/// Rejects an empty list, duplicates and bad provider options.
pub fn validate(providers: &[ProviderConfig]) -> Result<(), ConfigError> {
    if providers.is_empty() {
        return Err(ConfigError::invalid(
            "providers",
            "at least one provider is needed",
        ));
    }
    let jwt_issuers: Vec<&str> = providers
        .iter()
        .filter_map(|p| match p {
            ProviderConfig::Jwt(j) => Some(j.issuer.as_str()),
            _ => None,
        })
        .collect();
    for (i, p) in providers.iter().enumerate() {
        let duplicate = match p {
            // One jwt entry and one offline entry per issuer.
            ProviderConfig::Jwt(j) => providers[..i]
                .iter()
                .any(|q| matches!(q, ProviderConfig::Jwt(k) if k.issuer == j.issuer)),
            ProviderConfig::Offline(o) => providers[..i]
                .iter()
                .any(|q| matches!(q, ProviderConfig::Offline(k) if k.issuer == o.issuer)),
            _ => providers[..i].iter().any(|q| q.kind() == p.kind()),
        };
        if duplicate {
            return Err(ConfigError::invalid(
                format!("providers[{i}]"),
                format!("provider type '{}' is listed twice", p.kind()),
            ));
        }
        let key = format!("providers[{i}]");
        match p {
            ProviderConfig::Basic(b) => b.validate(&key)?,
            ProviderConfig::Astakos(a) => a.validate(&key)?,
            ProviderConfig::Keystone(k) => k.validate(&key)?,
            ProviderConfig::Jwt(j) => j.validate(&key)?,
            ProviderConfig::Introspect(c) => c.validate(&key)?,
            ProviderConfig::Offline(o) => o.validate(&key, &jwt_issuers)?,
            ProviderConfig::Remote(r) => r.validate(&key)?,
            ProviderConfig::ApiToken(_) => {}
        }
    }
    Ok(())
}

/// What the request looks like to a provider (beyond the credential).
#[derive(Debug, Clone)]
pub struct AuthContext {
    /// The end client's address (for rate limits).
    pub client_ip: IpAddr,
    /// An `X-Service-Token` (Keystone composite authentication).
    pub service_token: Option<crate::secret::Secret>,
}

/// Why a provider did not produce an identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The credential is not valid (401); the reason is safe to show the client.
    #[error("{0}")]
    Invalid(&'static str),
    /// The credential was valid and has expired (401; Astakos says "Authentication
    /// expired").
    #[error("the credential has expired")]
    Expired,
    /// Too many failures for this user or client (429).
    #[error("too many failed attempts; retry in {} s", .retry_after.as_secs())]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// The credential is valid, but its identity may not pass anywhere (403): an augmenter
    /// with `required: true` did not find the user. Never cached.
    #[error("{0}")]
    Forbidden(String),
    /// The provider could not be asked (503; fail closed). Never cached.
    #[error("the identity backend is unavailable: {0}")]
    Unavailable(String),
    /// Not this provider's kind of credential after all (an introspected refresh token):
    /// the chain asks the next provider that accepts it. Never leaves the [`Chain`].
    #[error("no configured provider accepts this credential")]
    Declined,
}

/// Why a provider's service does not answer as it should (for `/readyz`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unhealthy(pub String);

impl From<&AuthError> for Unhealthy {
    fn from(error: &AuthError) -> Self {
        Self(error.to_string())
    }
}

/// A source of identities.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Type name, as in config and in the `provider` claim.
    fn kind(&self) -> &'static str;
    /// Name in `/readyz` and logs (the type, and the issuer or URL where there is one).
    fn name(&self) -> String {
        self.kind().to_owned()
    }
    /// Whether this provider takes this kind of credential.
    fn accepts(&self, credential: &Credential) -> bool;
    /// The `WWW-Authenticate` challenge this provider adds to a 401.
    fn challenge(&self, realm: &str) -> String;
    /// Who the credential belongs to.
    async fn authenticate(
        &self,
        credential: &Credential,
        ctx: &AuthContext,
    ) -> Result<Identity, AuthError>;
    /// How long this provider's answers may be reused, replacing `cache.max_ttl` (never past
    /// the credential's expiry); `None`: `cache.max_ttl`.
    fn cache_ttl(&self) -> Option<Duration> {
        None
    }
    /// How this provider's outbound calls have been going, for one that makes them.
    fn health(&self) -> Option<&Health> {
        None
    }
    /// Whether the service behind the provider answers (for `/readyz`): a recent failed
    /// call says no, otherwise a cheap probe answers; discovery is done here when it has
    /// not been yet.
    async fn check(&self) -> Result<(), Unhealthy> {
        Ok(())
    }
}

/// A provider's answer: the identity and how long the decision cache may keep it.
pub struct Answer {
    /// Who it is.
    pub identity: Identity,
    /// See [`Provider::cache_ttl`].
    pub cache_ttl: Option<Duration>,
}

/// A foreign provider's identity as authgate hands it on: its subject qualified by `family`
/// and `namespace` (the provider's own id kept in [`Identity::native_id`]), its user name in
/// NFKC form; a user name that cannot be shown safely (control or invisible characters) is
/// refused.
fn foreign_identity(
    mut identity: Identity,
    family: &str,
    namespace: &str,
) -> Result<Identity, AuthError> {
    identity.username = mapped_user_name(&identity.username).map_err(|e| {
        tracing::debug!(provider = identity.provider, error = %e, "refused the user name");
        AuthError::Invalid("the user name is not acceptable")
    })?;
    let native = std::mem::take(&mut identity.subject);
    identity.subject = qualified_subject(family, namespace, &native);
    identity.native_id = Some(native);
    Ok(identity)
}

/// The configured providers, in order.
pub struct Chain {
    providers: Vec<Arc<dyn Provider>>,
    query_token: bool,
    /// Headers `remote` providers take a token from (`credential: [X-ECMWF-Key]`).
    token_headers: Vec<http::HeaderName>,
}

impl Chain {
    /// Builds each configured provider; outbound calls share `client`. Fails only when a
    /// secret file named in the config cannot be read (the config was validated).
    pub fn build(
        configs: &[ProviderConfig],
        store: Arc<dyn Store>,
        client: &reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let jwt: Vec<Arc<JwtProvider>> = configs
            .iter()
            .filter_map(|c| match c {
                ProviderConfig::Jwt(j) => Some(JwtProvider::new(j, client.clone())),
                _ => None,
            })
            .collect();
        let mut jwt_left = jwt.iter();
        let mut providers: Vec<Arc<dyn Provider>> = Vec::with_capacity(configs.len());
        let mut token_headers = Vec::new();
        for (i, c) in configs.iter().enumerate() {
            let key = format!("providers[{i}]");
            providers.push(match c {
                ProviderConfig::ApiToken(_) => Arc::new(ApiTokenProvider::new(store.clone())),
                ProviderConfig::Basic(b) => Arc::new(BasicProvider::new(b, store.clone())),
                ProviderConfig::Astakos(a) => Arc::new(AstakosProvider::new(a, client.clone())),
                ProviderConfig::Jwt(_) => match jwt_left.next() {
                    Some(j) => j.clone(),
                    None => return Err(ConfigError::invalid(key, "jwt provider not built")),
                },
                ProviderConfig::Keystone(k) => {
                    let password = k.password(&key)?;
                    Arc::new(KeystoneProvider::new(k, password, client.clone()))
                }
                ProviderConfig::Introspect(c) => {
                    Arc::new(IntrospectProvider::new(c, &key, client.clone())?)
                }
                ProviderConfig::Remote(r) => {
                    let remote = RemoteProvider::new(r, &key, client.clone())?;
                    token_headers.extend(remote.token_headers().cloned());
                    Arc::new(remote)
                }
                ProviderConfig::Offline(o) => {
                    let verifier =
                        jwt.iter().find(|j| j.issuer() == o.issuer).ok_or_else(|| {
                            ConfigError::invalid(
                                format!("{key}.issuer"),
                                "no `jwt` provider is configured for this issuer",
                            )
                        })?;
                    Arc::new(OfflineProvider::new(
                        o,
                        &key,
                        client.clone(),
                        verifier.clone(),
                    )?)
                }
            });
        }
        let query_token = configs
            .iter()
            .any(|c| matches!(c, ProviderConfig::Astakos(a) if a.query_token));
        Ok(Self {
            providers,
            query_token,
            token_headers,
        })
    }

    /// Headers besides `Authorization` and `X-Auth-Token` that may carry a token (read as
    /// an `X-Auth-Token` one).
    pub fn token_headers(&self) -> &[http::HeaderName] {
        &self.token_headers
    }

    /// Adds a provider built outside the `providers` list (the `session` provider of the
    /// `login` section), asked after the configured ones.
    pub fn push(&mut self, provider: Arc<dyn Provider>) {
        self.providers.push(provider);
    }

    /// Whether a token may come from `?X-Auth-Token=` of the original URL.
    pub fn takes_query_token(&self) -> bool {
        self.query_token
    }

    /// The providers that take `credential`, in the order they are asked: the providers
    /// that recognise their tokens by form (a JWT from a configured issuer, an `agt_` API
    /// token) first, whatever the config order; then the others in config order.
    fn candidates<'a>(
        &'a self,
        credential: &'a Credential,
    ) -> impl Iterator<Item = &'a Arc<dyn Provider>> {
        let by_form =
            |p: &&Arc<dyn Provider>| matches!(p.kind(), JwtProvider::KIND | ApiTokenProvider::KIND);
        let first = self
            .providers
            .iter()
            .find(move |p| by_form(p) && p.accepts(credential));
        first.into_iter().chain(
            self.providers
                .iter()
                .filter(move |p| !by_form(p) && p.accepts(credential)),
        )
    }

    /// The provider asked first for `credential`.
    pub fn provider_for<'a>(&'a self, credential: &'a Credential) -> Option<&'a dyn Provider> {
        self.candidates(credential).next().map(|p| p.as_ref())
    }

    /// Authenticates with the first provider that takes the credential (the next one when
    /// a provider declines it).
    pub async fn authenticate(
        &self,
        credential: &Credential,
        ctx: &AuthContext,
    ) -> Result<Answer, AuthError> {
        for p in self.candidates(credential) {
            match p.authenticate(credential, ctx).await {
                Err(AuthError::Declined) => continue,
                Ok(identity) => {
                    return Ok(Answer {
                        identity,
                        cache_ttl: p.cache_ttl(),
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Err(AuthError::Invalid(
            "no configured provider accepts this credential",
        ))
    }

    /// Each provider's [`Provider::check`], run together within `timeout`.
    pub async fn check(&self, timeout: Duration) -> Vec<(String, Result<(), Unhealthy>)> {
        let mut set = tokio::task::JoinSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let p = p.clone();
            set.spawn(async move {
                let r = match tokio::time::timeout(timeout, p.check()).await {
                    Ok(r) => r,
                    Err(_) => Err(Unhealthy(format!(
                        "no answer within {} ms",
                        timeout.as_millis()
                    ))),
                };
                (i, p.name(), r)
            });
        }
        let mut out: Vec<(usize, String, Result<(), Unhealthy>)> = set.join_all().await;
        out.sort_by_key(|(i, ..)| *i);
        out.into_iter().map(|(_, name, r)| (name, r)).collect()
    }

    /// Hands each provider that records its health its `authgate_provider_up` gauge
    /// (`gauge_of` a provider's name).
    pub fn report_health(
        &self,
        gauge_of: impl Fn(&str) -> prometheus_client::metrics::gauge::Gauge,
    ) {
        for p in &self.providers {
            if let Some(h) = p.health() {
                h.report_to(gauge_of(&p.name()));
            }
        }
    }

    /// One `WWW-Authenticate` challenge per distinct scheme of the configured providers.
    pub fn challenges(&self, realm: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.providers {
            let c = p.challenge(realm);
            // A cookie has no scheme to name.
            if !c.is_empty() && !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{ASTAKOS, KEYSTONE};
    use crate::secret::Secret;

    #[test]
    fn foreign_identities_are_qualified_and_nfkc() {
        let raw = |subject: &str, username: &str| Identity {
            subject: subject.into(),
            native_id: None,
            provider: KeystoneProvider::KIND,
            username: username.into(),
            email: None,
            roles: Default::default(),
            attributes: Default::default(),
            scopes: None,
            expires_at: None,
            credential_id: None,
            client_id: None,
        };
        let id = foreign_identity(raw("root", "ｒｏｏｔ"), KEYSTONE, "http://ks:5000/v3").unwrap();
        assert_eq!(id.subject, "keystone:http%3A//ks%3A5000/v3:root");
        assert_eq!(id.native_id.as_deref(), Some("root"));
        assert_eq!(id.username, "root");
        let id = foreign_identity(raw("c18", "u"), ASTAKOS, "https://a.example.org/astakos");
        assert_eq!(
            id.unwrap().subject,
            "astakos:https%3A//a.example.org/astakos:c18"
        );
        assert_eq!(
            foreign_identity(raw("root", "root\u{202E}"), KEYSTONE, "x").unwrap_err(),
            AuthError::Invalid("the user name is not acceptable")
        );
    }

    #[test]
    fn tokens_recognised_by_form_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(&crate::store::StoreConfig::Embedded {
            path: dir.path().join("t.db"),
        })
        .unwrap();
        let configs: Vec<ProviderConfig> = serde_json::from_value(serde_json::json!([
            {"type": "offline", "issuer": "https://idp.example.org", "client_id": "cli",
             "client_auth": "none"},
            {"type": "introspect", "issuer": "https://idp.example.org", "client_id": "gw",
             "client_secret": "s", "audiences": ["api"]},
            {"type": "jwt", "issuer": "https://idp.example.org", "audiences": ["api"]},
            {"type": "api_token"},
            {"type": "basic"}
        ]))
        .unwrap();
        validate(&configs).unwrap();
        let chain = Chain::build(&configs, store, &reqwest::Client::new()).unwrap();
        let jwt = |payload: &str| {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            format!("e30.{}.c2ln", b64.encode(payload))
        };
        let bearer = |t: &str| Credential::Bearer(Secret::new(t));
        let agt = format!("agt_{}", "A".repeat(43));
        // (credential, providers asked, in order)
        let cases = [
            (bearer(&agt), vec!["api_token"]),
            (
                bearer(&jwt(r#"{"iss":"https://idp.example.org"}"#)),
                vec!["jwt", "offline", "introspect"],
            ),
            // A Keycloak offline token is a JWT of the issuer, but not for `jwt`.
            (
                bearer(&jwt(r#"{"iss":"https://idp.example.org","typ":"Offline"}"#)),
                vec!["offline", "introspect"],
            ),
            (bearer("opaque"), vec!["offline", "introspect"]),
            (
                Credential::Basic {
                    username: "u".into(),
                    password: Secret::new("p"),
                },
                vec!["basic"],
            ),
        ];
        for (credential, want) in cases {
            let got: Vec<&str> = chain.candidates(&credential).map(|p| p.kind()).collect();
            assert_eq!(got, want, "{credential:?}");
        }
    }
}
