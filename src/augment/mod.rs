//! Augmenters add roles and attributes to an identity after a provider established it and
//! before the policy sees it, whatever the provider: `static` rules (a user name, role or
//! attribute -> more roles and attributes) and `ldap` (the user's groups in a directory).
//! Each entry of `augment:` may be limited to some providers (`providers: [basic, remote]`).
//! They run inside the decision cache's lookup, so what they add is part of the cached
//! identity, lives as long as it, and is in the minted JWT. An augmenter that cannot ask its
//! directory fails the request closed (503), never "no roles".

mod dn;
mod ldap;
mod ldap_config;
mod rules;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

pub use ldap::{LdapAugmenter, LdapConfig, RoleFrom};
pub use rules::{StaticAugmenter, StaticConfig};

use crate::identity::Identity;
use crate::providers::{Answer, AuthError, Health, Unhealthy};
use crate::setting::ConfigError;

/// One entry of `augment:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AugmenterConfig {
    /// Fixed rules.
    Static(StaticConfig),
    /// Groups (and attributes) from an LDAP directory.
    Ldap(LdapConfig),
}

/// `augment`: the list, run in order.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct AugmentConfig(pub Vec<AugmenterConfig>);

impl AugmentConfig {
    /// Rejects bad entries, naming the key (`augment[i]...`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, a) in self.0.iter().enumerate() {
            let key = format!("augment[{i}]");
            match a {
                AugmenterConfig::Static(s) => s.validate(&key)?,
                AugmenterConfig::Ldap(l) => l.validate(&key)?,
            }
        }
        Ok(())
    }
}

/// Which providers' identities an augmenter sees: all when the list is empty.
fn applies(providers: &[String], provider: &str) -> bool {
    providers.is_empty() || providers.iter().any(|p| p == provider)
}

/// A source of extra roles and attributes.
#[async_trait]
pub trait Augmenter: Send + Sync {
    /// Name in `/readyz`, metrics and logs.
    fn name(&self) -> String;
    /// Whether identities of `provider` go through this augmenter.
    fn applies_to(&self, provider: &str) -> bool;
    /// Adds what it knows to `identity`. [`AuthError::Unavailable`] when it could not ask;
    /// [`AuthError::Forbidden`] when the identity must not pass at all.
    async fn augment(&self, identity: &mut Identity) -> Result<(), AuthError>;
    /// How long what it added may be reused (it caps the identity's cache lifetime).
    fn cache_ttl(&self) -> Option<Duration> {
        None
    }
    /// How its outbound calls have been going, for one that makes them.
    fn health(&self) -> Option<&Health> {
        None
    }
    /// Whether its service answers (for `/readyz`).
    async fn check(&self) -> Result<(), Unhealthy> {
        Ok(())
    }
}

/// The configured augmenters, in order.
#[derive(Default)]
pub struct Augmenters {
    list: Vec<Arc<dyn Augmenter>>,
    /// `cache.max_ttl`: a provider's answer without its own limit is kept this long.
    max_ttl: Duration,
}

impl Augmenters {
    /// Builds each entry; reads secret files (the config was validated). `max_ttl` is
    /// `cache.max_ttl`.
    pub fn build(config: &AugmentConfig, max_ttl: Duration) -> Result<Self, ConfigError> {
        let mut list: Vec<Arc<dyn Augmenter>> = Vec::with_capacity(config.0.len());
        for (i, a) in config.0.iter().enumerate() {
            let key = format!("augment[{i}]");
            list.push(match a {
                AugmenterConfig::Static(s) => Arc::new(StaticAugmenter::new(s)),
                AugmenterConfig::Ldap(l) => Arc::new(LdapAugmenter::new(l, &key)?),
            });
        }
        Ok(Self { list, max_ttl })
    }

    /// Whether any augmenter is configured.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// `answer` with every applicable augmenter's additions; its cache lifetime is capped
    /// by theirs.
    pub async fn apply(&self, mut answer: Answer) -> Result<Answer, AuthError> {
        for a in &self.list {
            if !a.applies_to(answer.identity.provider) {
                continue;
            }
            a.augment(&mut answer.identity).await?;
            if let Some(ttl) = a.cache_ttl() {
                let current = answer.cache_ttl.unwrap_or(self.max_ttl);
                answer.cache_ttl = Some(current.min(ttl));
            }
        }
        Ok(answer)
    }

    /// Each augmenter's [`Augmenter::check`] within `timeout`, named `augment <name>`.
    pub async fn check(&self, timeout: Duration) -> Vec<(String, Result<(), Unhealthy>)> {
        let mut out = Vec::new();
        for a in &self.list {
            let r = match tokio::time::timeout(timeout, a.check()).await {
                Ok(r) => r,
                Err(_) => Err(Unhealthy(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            };
            out.push((format!("augment {}", a.name()), r));
        }
        out
    }

    /// Hands each augmenter that records its health its `authgate_provider_up` gauge.
    pub fn report_health(
        &self,
        gauge_of: impl Fn(&str) -> prometheus_client::metrics::gauge::Gauge,
    ) {
        for a in &self.list {
            if let Some(h) = a.health() {
                h.report_to(gauge_of(&format!("augment {}", a.name())));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::AttributeValue;

    fn answer(provider: &'static str, username: &str) -> Answer {
        Answer {
            identity: Identity {
                subject: username.into(),
                native_id: None,
                provider,
                username: username.into(),
                email: None,
                roles: ["reader"].into(),
                attributes: [("dept".to_owned(), AttributeValue::One("physics".into()))]
                    .into_iter()
                    .collect(),
                scopes: None,
                expires_at: None,
                credential_id: None,
                client_id: None,
            },
            cache_ttl: None,
        }
    }

    #[tokio::test]
    async fn static_rules_add_roles_per_provider() {
        let config: AugmentConfig = serde_json::from_value(serde_json::json!([
            {"type": "static", "providers": ["basic"], "when": {"usernames": ["alice"]},
             "roles": ["admin"], "attributes": {"tier": "gold"}},
            {"type": "static",
             "when": {"roles": ["reader"], "attributes": {"dept": ["chemistry", "physics"]}},
             "roles": ["lab"]},
            {"type": "static", "when": {"usernames": ["nobody"], "roles": ["none"]},
             "roles": ["never"]}
        ]))
        .unwrap();
        config.validate().unwrap();
        let augmenters = Augmenters::build(&config, Duration::from_secs(10)).unwrap();
        let a = augmenters.apply(answer("basic", "alice")).await.unwrap();
        assert_eq!(
            a.identity.roles.iter().collect::<Vec<_>>(),
            ["admin", "lab", "reader"]
        );
        assert_eq!(
            a.identity.attributes["tier"],
            AttributeValue::One("gold".into())
        );
        // The first rule is for `basic` only.
        let a = augmenters.apply(answer("remote", "alice")).await.unwrap();
        assert_eq!(
            a.identity.roles.iter().collect::<Vec<_>>(),
            ["lab", "reader"]
        );
        assert!(!a.identity.attributes.contains_key("tier"));
    }

    /// An augmenter with its own cache_ttl, failing for one user.
    struct Timed(Duration);

    #[async_trait]
    impl Augmenter for Timed {
        fn name(&self) -> String {
            "timed".into()
        }
        fn applies_to(&self, provider: &str) -> bool {
            provider != "jwt"
        }
        async fn augment(&self, identity: &mut Identity) -> Result<(), AuthError> {
            if identity.username == "down" {
                return Err(AuthError::Unavailable("directory down".into()));
            }
            identity.roles = identity.roles.union(&["timed"].into());
            Ok(())
        }
        fn cache_ttl(&self) -> Option<Duration> {
            Some(self.0)
        }
    }

    #[tokio::test]
    async fn augmenters_cap_the_cache_lifetime_and_fail_closed() {
        let augmenters = |ttl| Augmenters {
            list: vec![Arc::new(Timed(ttl))],
            max_ttl: Duration::from_secs(10),
        };
        let short = augmenters(Duration::from_secs(3));
        // (provider's cache_ttl, augmenter's, kept for)
        let cases = [
            (None, 3, Some(3)),
            (Some(2), 3, Some(2)),
            (Some(60), 3, Some(3)),
            (None, 30, Some(10)),
        ];
        for (provider, augmenter, want) in cases {
            let mut a = answer("basic", "alice");
            a.cache_ttl = provider.map(Duration::from_secs);
            let got = augmenters(Duration::from_secs(augmenter))
                .apply(a)
                .await
                .unwrap();
            assert_eq!(got.cache_ttl, want.map(Duration::from_secs));
            assert!(got.identity.roles.contains("timed"));
        }
        // Not applied: unchanged.
        let a = short.apply(answer("jwt", "alice")).await.unwrap();
        assert_eq!(a.cache_ttl, None);
        assert!(!a.identity.roles.contains("timed"));
        // A failure is the request's failure, never "no roles".
        let err = short.apply(answer("basic", "down")).await.err();
        assert_eq!(err, Some(AuthError::Unavailable("directory down".into())));
    }

    #[test]
    fn bad_entries_name_their_key() {
        use serde_json::json;
        let rule = json!({"type": "static", "when": {"usernames": ["a"]}, "roles": ["x"]});
        for (entries, key) in [
            (
                json!([{"type": "static", "roles": ["a"]}]),
                "augment[0].when",
            ),
            (
                json!([{"type": "static", "when": {"usernames": ["a"]}}]),
                "augment[0].roles",
            ),
            (
                json!([rule, {"type": "ldap", "url": "http://x", "base_dn": "dc=x",
                              "user_filter": "(uid={username})"}]),
                "augment[1].url",
            ),
        ] {
            let config: AugmentConfig = serde_json::from_value(entries).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        }
    }
}
