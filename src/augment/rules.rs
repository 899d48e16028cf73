//! `type: static`: when an identity has one of the listed user names, roles or attribute
//! values, it gets the rule's roles and attributes.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::Deserialize;

use super::{Augmenter, applies};
use crate::identity::{Attributes, Identity};
use crate::providers::AuthError;
use crate::setting::ConfigError;

/// `type: static` options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// Only identities of these providers (all when empty).
    #[serde(default)]
    pub providers: Vec<String>,
    /// The condition: any of it.
    #[serde(default)]
    pub when: StaticCondition,
    /// Roles added.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Attributes added (replacing one of the same name).
    #[serde(default)]
    pub attributes: Attributes,
}

/// What an identity must have (any one of it) for a `static` rule to apply.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticCondition {
    /// One of these user names.
    #[serde(default)]
    pub usernames: Vec<String>,
    /// One of these roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// An attribute holding one of the listed values.
    #[serde(default)]
    pub attributes: BTreeMap<String, Vec<String>>,
}

impl StaticConfig {
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let w = &self.when;
        if w.usernames.is_empty() && w.roles.is_empty() && w.attributes.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.when"),
                "name at least one of usernames, roles, attributes",
            ));
        }
        if self.roles.is_empty() && self.attributes.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.roles"),
                "a rule must add roles or attributes",
            ));
        }
        Ok(())
    }
}

/// The `static` augmenter.
pub struct StaticAugmenter {
    config: StaticConfig,
}

impl StaticAugmenter {
    /// From its (validated) config.
    pub fn new(config: &StaticConfig) -> Self {
        Self {
            config: config.clone(),
        }
    }

    fn holds(&self, identity: &Identity) -> bool {
        let w = &self.config.when;
        w.usernames.contains(&identity.username)
            || w.roles.iter().any(|r| identity.roles.contains(r))
            || w.attributes.iter().any(|(name, values)| {
                identity
                    .attributes
                    .get(name)
                    .is_some_and(|v| values.iter().any(|want| v.contains(want)))
            })
    }
}

#[async_trait]
impl Augmenter for StaticAugmenter {
    fn name(&self) -> String {
        "static".into()
    }

    fn applies_to(&self, provider: &str) -> bool {
        applies(&self.config.providers, provider)
    }

    async fn augment(&self, identity: &mut Identity) -> Result<(), AuthError> {
        if self.holds(identity) {
            identity.roles = identity
                .roles
                .iter()
                .chain(self.config.roles.iter().map(String::as_str))
                .collect();
            identity.attributes.extend(self.config.attributes.clone());
        }
        Ok(())
    }
}
