//! `policy`: the rules as written in the configuration, before [`super::Policy`] parses them.

use serde::Deserialize;

/// What an unmatched request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DefaultAction {
    /// 403 for every identity (401 without one).
    #[default]
    Deny,
    /// Any valid identity passes.
    AllowAuthenticated,
}

/// `policy`: ordered rules and the default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// What unmatched requests get.
    pub default: DefaultAction,
    /// Rules, first match wins.
    pub rules: Vec<RuleConfig>,
    /// How rule paths compare with request paths.
    pub path_case: PathCase,
}

/// `policy.path_case`: whether letter case counts when rule paths are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PathCase {
    /// Byte for byte: `/admin` does not cover `/ADMIN`.
    #[default]
    Sensitive,
    /// ASCII letters compare case-insensitively (`/admin` covers `/ADMIN/x`), for upstreams
    /// that route paths that way; otherwise `/ADMIN` would reach them past an `/admin` rule.
    Insensitive,
}

/// One policy rule as written in the config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Name shown in logs, 403 bodies and `policy check`.
    pub name: String,
    /// `api.example.org` or `*.example.org` (exactly one label in front); no port; absent
    /// matches every host.
    pub host: Option<String>,
    /// Path prefix (`/data`) or glob (`/files/*/raw`, `/static/**`); absent matches all.
    pub path: Option<String>,
    /// Methods; empty matches all.
    pub methods: Vec<String>,
    /// What the identity must hold.
    pub require: RequireConfig,
    /// `anonymous`: pass without a credential.
    pub allow: Option<AllowConfig>,
    /// `aud` of the JWT minted for this rule.
    pub audience: Option<String>,
    /// Identity headers for this rule (default: the top-level `headers`).
    pub headers: Option<HeaderMode>,
    /// Answer 200 with `X-Identity-Status: Invalid` instead of 401, for services that decide
    /// themselves (keystonemiddleware's `delay_auth_decision`).
    pub delay_auth_decision: bool,
}

/// `allow:` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowConfig {
    /// No credential needed.
    Anonymous,
}

/// `require:` of a rule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RequireConfig {
    /// Every one of these roles.
    pub roles: Vec<String>,
    /// At least one of these roles.
    pub any_roles: Vec<String>,
    /// Every one of these scopes.
    pub scopes: Vec<String>,
    /// At least one of these scopes.
    pub any_scopes: Vec<String>,
    /// Attribute name -> accepted values (one must match).
    pub attributes: std::collections::BTreeMap<String, OneOrMany>,
}

/// A string or a list of strings in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `key: value`
    One(String),
    /// `key: [a, b]`
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(v) => vec![v.clone()],
            Self::Many(vs) => vs.clone(),
        }
    }
}

/// Which identity headers a 200 carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HeaderMode {
    /// The JWT and `X-Auth-Request-User/-Email/-Roles/-Scopes/-Attributes`.
    #[default]
    Default,
    /// Also the keystonemiddleware set (`X-Identity-Status`, `X-User-Id`, `X-Roles`, ...).
    Keystone,
    /// Also the names oauth2-proxy's `set_xauthrequest` answers with, for code written for
    /// it: `X-Auth-Request-Groups` (the roles) and `X-Auth-Request-Preferred-Username`.
    #[serde(rename = "oauth2-proxy")]
    Oauth2Proxy,
}
