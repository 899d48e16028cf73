//! `portal`: the self-service token portal and `/api/tokens`: off by default, and what a
//! user may put on a token made there.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;
use crate::setting::{ConfigError, from_value_or_file};

/// The scope an API token needs to manage its owner's tokens through `/api/tokens`.
pub const MANAGE_SCOPE: &str = "tokens:manage";

/// `portal`: the token portal (`/portal`) and the token API (`/api/tokens`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PortalConfig {
    /// Serve `/portal` and `/api/tokens` (the policy still decides who reaches them).
    pub enabled: bool,
    /// The scopes a token made in the portal may hold; a user grants only those of them
    /// that their own credential holds.
    pub grantable_scopes: Vec<String>,
    /// The longest lifetime of a token made in the portal (every such token expires).
    #[serde(with = "humantime_serde")]
    pub max_lifetime: Duration,
    /// How many live (neither revoked nor expired) tokens a user may hold; tokens made
    /// with the CLI count too.
    pub max_tokens_per_user: usize,
    /// The role whose holders may list and revoke every user's tokens (`?owner=`).
    /// Absent: nobody.
    pub admin_role: Option<String>,
    /// Key of the portal's form tokens (CSRF), at least 32 bytes. Every replica behind one
    /// load balancer needs the same key. Absent: a random key per process (forms shown
    /// by one process are refused by another, and by the same one after a restart).
    pub csrf_key: Option<Secret>,
    /// A file holding `csrf_key`.
    pub csrf_key_file: Option<PathBuf>,
    /// The URL shown in the `curl` line of a new token (absent: the portal's own origin).
    pub example_url: Option<String>,
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            grantable_scopes: Vec::new(),
            max_lifetime: Duration::from_secs(90 * 86_400),
            max_tokens_per_user: 10,
            admin_role: None,
            csrf_key: None,
            csrf_key_file: None,
            example_url: None,
        }
    }
}

impl PortalConfig {
    /// Rejects values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, scope) in self.grantable_scopes.iter().enumerate() {
            let key = || format!("portal.grantable_scopes[{i}]");
            if let Some(reason) = scope_problem(scope) {
                return Err(ConfigError::invalid(key(), reason));
            }
            if self.grantable_scopes[..i].contains(scope) {
                return Err(ConfigError::invalid(key(), "is listed twice"));
            }
        }
        if self.enabled && self.grantable_scopes.is_empty() {
            return Err(ConfigError::invalid(
                "portal.grantable_scopes",
                "must name at least one scope when the portal is enabled",
            ));
        }
        if self.max_lifetime < Duration::from_secs(60) {
            return Err(ConfigError::invalid(
                "portal.max_lifetime",
                "must be at least 1m",
            ));
        }
        if self.max_lifetime > Duration::from_secs(10 * 365 * 86_400) {
            return Err(ConfigError::invalid(
                "portal.max_lifetime",
                "must be at most 3650d",
            ));
        }
        if self.max_tokens_per_user == 0 {
            return Err(ConfigError::invalid(
                "portal.max_tokens_per_user",
                "must be at least 1",
            ));
        }
        if self.admin_role.as_deref().is_some_and(str::is_empty) {
            return Err(ConfigError::invalid(
                "portal.admin_role",
                "must not be empty (leave it out for no admins)",
            ));
        }
        if let Some(url) = &self.example_url {
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && url.parse::<http::Uri>().is_ok()
                && !url.contains(['"', '\\', '`', '$', ' ']);
            if !ok {
                return Err(ConfigError::invalid(
                    "portal.example_url",
                    "must be an absolute http(s) URL without quotes, '\\', '`', '$' or spaces",
                ));
            }
        }
        self.csrf_key()?;
        Ok(())
    }

    /// The form-token key, read from `csrf_key` or `csrf_key_file` (at least 32 bytes);
    /// `None` when neither is given.
    pub(super) fn csrf_key(&self) -> Result<Option<Secret>, ConfigError> {
        let key = from_value_or_file(
            "portal",
            "csrf_key",
            self.csrf_key.as_ref(),
            self.csrf_key_file.as_deref(),
        )?;
        if key.as_ref().is_some_and(|k| k.expose().len() < 32) {
            let name = if self.csrf_key_file.is_some() {
                "portal.csrf_key_file"
            } else {
                "portal.csrf_key"
            };
            return Err(ConfigError::invalid(
                name,
                "the key must be at least 32 bytes",
            ));
        }
        Ok(key)
    }
}

/// Why `scope` cannot be a scope name (the minted JWT lists scopes space-separated, and the
/// CLI refuses the same characters), or `None`.
pub(super) fn scope_problem(scope: &str) -> Option<&'static str> {
    if scope.is_empty() {
        Some("must not be empty")
    } else if scope.len() > 128 {
        Some("must be at most 128 bytes")
    } else if scope.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("must not contain whitespace or control characters")
    } else if scope.contains(['"', '\\']) {
        Some("must not contain '\"' or '\\'")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<PortalConfig, String> {
        use figment::providers::Format;
        let config: PortalConfig = figment::Figment::new()
            .merge(figment::providers::Yaml::string(yaml))
            .extract()
            .map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn defaults_keep_the_portal_off() {
        let c = parse("").unwrap();
        assert!(!c.enabled);
        assert_eq!(c.max_lifetime, Duration::from_secs(90 * 86_400));
        assert_eq!(c.max_tokens_per_user, 10);
        assert_eq!(c.admin_role, None);
    }

    #[test]
    fn accepted() {
        for yaml in [
            "{ enabled: true, grantable_scopes: [read:data, tokens:manage] }",
            "{ enabled: true, grantable_scopes: [a], max_lifetime: 1m, max_tokens_per_user: 1 }",
            "{ grantable_scopes: [], admin_role: admin, example_url: \"https://api.example.org/data\" }",
            "{ enabled: true, grantable_scopes: [a], csrf_key: \"0123456789abcdef0123456789abcdef\" }",
        ] {
            parse(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        }
    }

    #[test]
    fn rejected_name_the_key() {
        for (yaml, key) in [
            ("{ enabled: true }", "portal.grantable_scopes"),
            (
                "{ grantable_scopes: [a, \"b c\"] }",
                "portal.grantable_scopes[1]",
            ),
            ("{ grantable_scopes: [a, a] }", "portal.grantable_scopes[1]"),
            ("{ grantable_scopes: [\"\"] }", "portal.grantable_scopes[0]"),
            ("{ max_lifetime: 10s }", "portal.max_lifetime"),
            ("{ max_lifetime: 20y }", "portal.max_lifetime"),
            ("{ max_tokens_per_user: 0 }", "portal.max_tokens_per_user"),
            ("{ admin_role: \"\" }", "portal.admin_role"),
            ("{ example_url: \"api.example.org\" }", "portal.example_url"),
            ("{ example_url: \"https://a/$(id)\" }", "portal.example_url"),
            ("{ csrf_key: short }", "portal.csrf_key"),
            ("{ csrf_key: x, csrf_key_file: /x }", "portal.csrf_key"),
            (
                "{ csrf_key_file: /nonexistent/key }",
                "portal.csrf_key_file",
            ),
            ("{ enable: true }", "enable"),
        ] {
            match parse(yaml) {
                Ok(_) => panic!("accepted: {yaml}"),
                Err(e) => assert!(e.contains(key), "{yaml}: {e} lacks {key}"),
            }
        }
    }
}
