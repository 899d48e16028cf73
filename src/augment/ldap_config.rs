//! `type: ldap` options: the directory, the bind, the user and group searches, TLS, and
//! their checks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::secret::Secret;
use crate::setting::ConfigError;

/// `type: ldap` options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// Only identities of these providers (all when empty).
    #[serde(default)]
    pub providers: Vec<String>,
    /// `ldap://host:389` or `ldaps://host:636`.
    pub url: String,
    /// Upgrade an `ldap://` connection with StartTLS.
    #[serde(default)]
    pub starttls: bool,
    /// A PEM file of the CA certificates that sign the directory's TLS certificate
    /// (`ldaps://`, StartTLS); default: the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The DN authgate binds as (anonymous when absent).
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// Its password (prefer `bind_password_file`).
    #[serde(default)]
    pub bind_password: Option<Secret>,
    /// A file holding the password.
    #[serde(default)]
    pub bind_password_file: Option<PathBuf>,
    /// Where users are searched.
    pub base_dn: String,
    /// The filter finding one user; `{username}` is replaced by the escaped user name.
    pub user_filter: String,
    /// The user entry's attribute listing its groups' DNs (`memberOf`), used when no
    /// `group_filter` is given.
    #[serde(default = "default_group_attribute")]
    pub group_attribute: String,
    /// Where groups are searched (with `group_filter`), and the base of `role_from: path`.
    #[serde(default)]
    pub group_base_dn: Option<String>,
    /// A group search instead of `group_attribute`: `{user_dn}` is replaced by the escaped
    /// DN of the user (or of a group, to follow nesting), e.g. `(member={user_dn})`.
    #[serde(default)]
    pub group_filter: Option<String>,
    /// Also the groups the user's groups are members of (up to 10 levels).
    #[serde(default)]
    pub nested_groups: bool,
    /// The role a group gives: `cn` (its own RDN value) or `path` (`/TeamA/Admin`, its
    /// RDNs below `group_base_dn`).
    #[serde(default)]
    pub role_from: RoleFrom,
    /// User attributes copied into the identity's attributes.
    #[serde(default)]
    pub attributes: Vec<String>,
    /// A user not in the directory is refused (403) instead of getting no extra roles.
    #[serde(default)]
    pub required: bool,
    /// How long the directory's answer is reused: it caps the cache lifetime of the
    /// identities it augments (group changes take effect within it). Default: the
    /// provider's.
    #[serde(default, with = "humantime_serde")]
    pub cache_ttl: Option<Duration>,
    /// Time limit of one lookup (connect, bind and searches).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Connections kept open.
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
}

/// `role_from` of an `ldap` augmenter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoleFrom {
    /// The group's own RDN value (its `cn`).
    #[default]
    Cn,
    /// The group's RDNs below `group_base_dn`, as `/TeamA/Admin`.
    Path,
}

fn default_group_attribute() -> String {
    "memberOf".into()
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_pool_size() -> usize {
    2
}

impl LdapConfig {
    pub(crate) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let bad =
            |field: &str, reason: &str| ConfigError::invalid(format!("{key}.{field}"), reason);
        let scheme_ok = self.url.starts_with("ldap://") || self.url.starts_with("ldaps://");
        if !scheme_ok || reqwest::Url::parse(&self.url).is_err() {
            return Err(bad("url", "must be an ldap:// or ldaps:// URL"));
        }
        if self.starttls && !self.url.starts_with("ldap://") {
            return Err(bad("starttls", "StartTLS upgrades an ldap:// URL only"));
        }
        if self.base_dn.trim().is_empty() {
            return Err(bad("base_dn", "must not be empty"));
        }
        if self.user_filter.matches("{username}").count() != 1 || !self.user_filter.starts_with('(')
        {
            return Err(bad(
                "user_filter",
                "must be a filter in parentheses with `{username}` once, e.g. (uid={username})",
            ));
        }
        if let Some(f) = &self.group_filter {
            if f.matches("{user_dn}").count() != 1 || !f.starts_with('(') {
                return Err(bad(
                    "group_filter",
                    "must be a filter in parentheses with `{user_dn}` once, e.g. (member={user_dn})",
                ));
            }
            if self.group_base_dn.is_none() {
                return Err(bad("group_base_dn", "is needed with group_filter"));
            }
        }
        if self.role_from == RoleFrom::Path && self.group_base_dn.is_none() {
            return Err(bad("group_base_dn", "is needed with role_from: path"));
        }
        if self.timeout.is_zero() {
            return Err(bad("timeout", "must be more than 0s"));
        }
        self.tls(key)?;
        if !(1..=16).contains(&self.pool_size) {
            return Err(bad("pool_size", "must be between 1 and 16"));
        }
        self.password(key).map(|_| ())
    }

    /// The TLS client configuration trusting `ca_file` only, when one is given.
    pub(super) fn tls(&self, key: &str) -> Result<Option<Arc<rustls::ClientConfig>>, ConfigError> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let bad = |reason: String| {
            ConfigError::invalid(
                format!("{key}.ca_file"),
                format!("{}: {reason}", path.display()),
            )
        };
        let text = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let mut roots = rustls::RootCertStore::empty();
        for block in pem::parse_many(&text).map_err(|e| bad(e.to_string()))? {
            if block.tag() == "CERTIFICATE" {
                roots
                    .add(block.into_contents().into())
                    .map_err(|e| bad(e.to_string()))?;
            }
        }
        if roots.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Some(Arc::new(config)))
    }

    pub(super) fn password(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        let password = crate::setting::from_value_or_file(
            key,
            "bind_password",
            self.bind_password.as_ref(),
            self.bind_password_file.as_deref(),
        )?;
        match (&self.bind_dn, &password) {
            (Some(_), None) => Err(ConfigError::invalid(
                format!("{key}.bind_password_file"),
                "bind_dn needs a password (bind_password_file or bind_password)",
            )),
            (None, Some(_)) => Err(ConfigError::invalid(
                format!("{key}.bind_dn"),
                "a bind password needs bind_dn",
            )),
            _ => Ok(password),
        }
    }
}
