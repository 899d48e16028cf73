//! Providers decide who a credential belongs to. Each is a small [`Provider`] chosen from
//! config (a serde enum tagged by `type`); the [`Chain`] holds them in config order and the
//! first one that takes the credential decides.

mod api_token;
mod astakos;
mod basic;
mod jwt;
mod keystone;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

pub use api_token::ApiTokenProvider;
pub use astakos::{AstakosConfig, AstakosMode, AstakosProvider, parse_iso8601};
pub use basic::{BasicConfig, BasicProvider, hash_password};
pub use jwt::{ClaimMapping, JwtConfig, JwtProvider};
pub use keystone::{KeystoneConfig, KeystoneProvider};

use crate::config::ConfigError;
use crate::credential::Credential;
use crate::identity::Identity;
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
        }
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
    for (i, p) in providers.iter().enumerate() {
        let duplicate = match p {
            // One jwt entry per issuer; the same issuer twice is the mistake.
            ProviderConfig::Jwt(j) => providers[..i]
                .iter()
                .any(|q| matches!(q, ProviderConfig::Jwt(k) if k.issuer == j.issuer)),
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
    /// Too many failures for this user or client (429).
    #[error("too many failed attempts; retry in {} s", .retry_after.as_secs())]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// The provider could not be asked (503; fail closed). Never cached.
    #[error("the identity backend is unavailable: {0}")]
    Unavailable(String),
}

/// A source of identities.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Type name, as in config and in the `provider` claim.
    fn kind(&self) -> &'static str;
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
}

/// The configured providers, in order.
pub struct Chain {
    providers: Vec<Box<dyn Provider>>,
    query_token: bool,
}

impl Chain {
    /// Builds each configured provider; outbound calls share `client`. Fails only when a
    /// secret file named in the config cannot be read.
    pub fn build(
        configs: &[ProviderConfig],
        store: Arc<dyn Store>,
        client: &reqwest::Client,
    ) -> Result<Self, ConfigError> {
        let mut providers: Vec<Box<dyn Provider>> = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            providers.push(match c {
                ProviderConfig::ApiToken(_) => Box::new(ApiTokenProvider::new(store.clone())),
                ProviderConfig::Basic(b) => Box::new(BasicProvider::new(b, store.clone())),
                ProviderConfig::Astakos(a) => Box::new(AstakosProvider::new(a, client.clone())),
                ProviderConfig::Jwt(j) => Box::new(JwtProvider::new(j, client.clone())),
                ProviderConfig::Keystone(k) => {
                    let password = k.password(&format!("providers[{i}]"))?;
                    Box::new(KeystoneProvider::new(k, password, client.clone()))
                }
            });
        }
        let query_token = configs
            .iter()
            .any(|c| matches!(c, ProviderConfig::Astakos(a) if a.query_token));
        Ok(Self {
            providers,
            query_token,
        })
    }

    /// Whether a token may come from `?X-Auth-Token=` of the original URL.
    pub fn takes_query_token(&self) -> bool {
        self.query_token
    }

    /// The provider for `credential`: a JWT from a configured issuer goes to that issuer's
    /// `jwt` provider; anything else to the first provider (in config order) that takes it.
    pub fn provider_for(&self, credential: &Credential) -> Option<&dyn Provider> {
        self.providers
            .iter()
            .find(|p| p.kind() == JwtProvider::KIND && p.accepts(credential))
            .or_else(|| self.providers.iter().find(|p| p.accepts(credential)))
            .map(|p| p.as_ref())
    }

    /// Authenticates with the first provider that accepts the credential.
    pub async fn authenticate(
        &self,
        credential: &Credential,
        ctx: &AuthContext,
    ) -> Result<Identity, AuthError> {
        match self.provider_for(credential) {
            Some(p) => p.authenticate(credential, ctx).await,
            None => Err(AuthError::Invalid(
                "no configured provider accepts this credential",
            )),
        }
    }

    /// One `WWW-Authenticate` challenge per distinct scheme of the configured providers.
    pub fn challenges(&self, realm: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.providers {
            let c = p.challenge(realm);
            if !out.contains(&c) {
                out.push(c);
            }
        }
        out
    }
}
