//! Configuration: the typed shape, its defaults (in one place: the `Default` impls), loading
//! (built-in defaults < YAML file < `AUTHGATE_` environment, `__` between levels) and
//! validation that names the offending key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use ipnet::IpNet;
use serde::Deserialize;

use crate::mint::Algorithm;
use crate::policy::{HostPattern, Policy};
use crate::providers::ProviderConfig;

/// Everything authgate reads from its configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The data-plane listener.
    pub server: ServerConfig,
    /// The admin listener (metrics, health).
    pub admin: AdminConfig,
    /// Where tokens, users and keys live.
    pub store: StoreConfig,
    /// The JWT authgate mints for the upstream.
    pub mint: MintConfig,
    /// The in-process decision cache.
    pub cache: CacheConfig,
    /// Providers, tried in this order.
    pub providers: ProvidersConfig,
    /// Route policy.
    pub policy: PolicyConfig,
    /// Astakos-compatible validation of authgate's own tokens.
    pub astakos_api: crate::astakos_api::AstakosApiConfig,
    /// Identity headers of a 200: `default` (`X-Auth-Request-*`) or `keystone` (the
    /// keystonemiddleware set as well); a rule may choose its own.
    pub headers: HeaderMode,
    /// Logging.
    pub log: LogConfig,
}

/// `server`: the data-plane listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address of the data-plane listener.
    pub listen: SocketAddr,
    /// Peers whose `X-Forwarded-For` / `X-Real-IP` are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest total size of the request headers; larger requests get 431.
    pub max_header_bytes: usize,
    /// How long in-flight requests may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Sign-in page for browsers (an absolute http(s) URL); `/forward-auth` redirects
    /// there, `/auth` sets `Location`. The original URL goes along as `rd`.
    pub signin_url: Option<String>,
    /// Hosts the sign-in may return to (`rd`): exact names or `*.domain`. Absent: the hosts
    /// the policy rules name. A browser on any other host is sent to sign in without `rd`.
    pub redirect_hosts: Option<Vec<String>>,
    /// Whether Envoy's `/auth/<path>` form sends a browser to sign in with a 302 (Envoy
    /// passes a 3xx through to the client) instead of the 401.
    pub envoy_redirect: bool,
    /// Realm named in `WWW-Authenticate`.
    pub realm: String,
}

/// `admin`: the admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener (`/metrics`, `/livez`, `/readyz`).
    pub listen: SocketAddr,
}

/// `store`: where state lives.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// One SQLite file (WAL mode); nothing to install.
    Embedded {
        /// Path of the database file; its directory is created when missing.
        #[serde(default = "default_store_path")]
        path: PathBuf,
    },
}

/// `mint`: the JWT handed to the upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MintConfig {
    /// `iss` claim; also the base of `jwks_uri` in the discovery document.
    pub issuer: String,
    /// Default `aud` claim (rules may override it).
    pub audience: String,
    /// Signing algorithm.
    pub algorithm: Algorithm,
    /// Lifetime of a minted JWT (never past the credential's own expiry).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// PEM private keys to sign with instead of generated ones; the first one signs.
    pub key_files: Vec<PathBuf>,
    /// Response header that carries the JWT.
    pub header: String,
    /// Text put before the JWT in that header.
    pub header_prefix: String,
}

/// `cache`: the in-process decision cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Longest time a valid answer is reused (revocations take effect within it).
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
    /// How long an invalid credential's answer is reused.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Most entries kept.
    pub max_entries: u64,
    /// MiB for what cached identities keep for reuse (minted JWTs, response headers); past
    /// it those are rebuilt per request (a signature each).
    pub reuse_memory_mib: u64,
}

/// `providers`: the list, in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(transparent)]
pub struct ProvidersConfig(pub Vec<ProviderConfig>);

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
    /// The JWT and `X-Auth-Request-User/-Email/-Roles/-Scopes`.
    #[default]
    Default,
    /// Also the keystonemiddleware set (`X-Identity-Status`, `X-User-Id`, `X-Roles`, ...).
    Keystone,
}

/// `log`: logging.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (one object per line) or `pretty`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `authgate=debug`); `RUST_LOG` overrides it.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Pretty,
}

/// A configuration that could not be loaded; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file given with `--config` does not exist or cannot be read.
    #[error("cannot read config file '{path}': {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A key has the wrong type, an unknown name, or cannot be parsed.
    #[error("{0}")]
    Parse(String),
    /// A key parsed but its value is not acceptable.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// Why the value is rejected.
        reason: String,
    },
}

impl ConfigError {
    /// Shorthand for [`ConfigError::Invalid`].
    pub fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

fn default_store_path() -> PathBuf {
    PathBuf::from("authgate.db")
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            trusted_proxies: Vec::new(),
            max_header_bytes: 16 * 1024,
            shutdown_timeout: Duration::from_secs(10),
            signin_url: None,
            redirect_hosts: None,
            envoy_redirect: false,
            realm: "authgate".to_owned(),
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::Embedded {
            path: default_store_path(),
        }
    }
}

impl Default for MintConfig {
    fn default() -> Self {
        Self {
            issuer: "http://localhost:8080".to_owned(),
            audience: "api".to_owned(),
            algorithm: Algorithm::ES256,
            ttl: Duration::from_secs(300),
            key_files: Vec::new(),
            header: "Authorization".to_owned(),
            header_prefix: "Bearer ".to_owned(),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_ttl: Duration::from_secs(10),
            negative_ttl: Duration::from_secs(2),
            max_entries: 100_000,
            reuse_memory_mib: 16,
        }
    }
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        Self(vec![
            ProviderConfig::ApiToken(Default::default()),
            ProviderConfig::Basic(Default::default()),
        ])
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Json,
            level: "info".to_owned(),
        }
    }
}

impl Config {
    /// Loads and validates: built-in defaults < `path` (YAML) < `AUTHGATE_*` environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = path {
            std::fs::metadata(path).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            figment = figment.merge(Yaml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed("AUTHGATE_").split("__").ignore(&["config"]));
        Self::from_figment(figment)
    }

    /// Loads from YAML text alone (tests, `check-config` of a snippet).
    pub fn from_yaml(yaml: &str) -> Result<Self, ConfigError> {
        Self::from_figment(Figment::new().merge(Yaml::string(yaml)))
    }

    fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: Config = figment.extract().map_err(describe_figment_error)?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.server.max_header_bytes < 1024 || self.server.max_header_bytes > 1024 * 1024 {
            return Err(ConfigError::invalid(
                "server.max_header_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        if self.server.realm.is_empty() || self.server.realm.contains(['"', '\\']) {
            return Err(ConfigError::invalid(
                "server.realm",
                "must be non-empty and contain no quote or backslash",
            ));
        }
        if let Some(url) = &self.server.signin_url
            && let Some(why) = signin_url_problem(url)
        {
            return Err(ConfigError::invalid("server.signin_url", why));
        }
        for (i, host) in self.server.redirect_hosts.iter().flatten().enumerate() {
            HostPattern::parse_listed(host)
                .map_err(|why| ConfigError::invalid(format!("server.redirect_hosts[{i}]"), why))?;
        }
        if self.server.listen == self.admin.listen && self.server.listen.port() != 0 {
            return Err(ConfigError::invalid(
                "admin.listen",
                "must differ from server.listen",
            ));
        }
        let StoreConfig::Embedded { path } = &self.store;
        if path.as_os_str().is_empty() {
            return Err(ConfigError::invalid("store.path", "must not be empty"));
        }
        self.validate_mint()?;
        if self.cache.max_entries == 0 {
            return Err(ConfigError::invalid(
                "cache.max_entries",
                "must be at least 1",
            ));
        }
        if self.cache.max_ttl.is_zero() || self.cache.max_ttl > Duration::from_secs(3600) {
            return Err(ConfigError::invalid(
                "cache.max_ttl",
                "must be between 1s and 1h (revocations take effect within it)",
            ));
        }
        if self.cache.negative_ttl > self.cache.max_ttl {
            return Err(ConfigError::invalid(
                "cache.negative_ttl",
                "must not exceed cache.max_ttl",
            ));
        }
        crate::providers::validate(&self.providers.0)?;
        Policy::try_from(&self.policy).map_err(|e| ConfigError::invalid(e.key, e.reason))?;
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::invalid(
                "log.level",
                "is not a valid filter (e.g. info, warn, authgate=debug)",
            ));
        }
        Ok(())
    }

    fn validate_mint(&self) -> Result<(), ConfigError> {
        let mint = &self.mint;
        if !(mint.issuer.starts_with("https://") || mint.issuer.starts_with("http://"))
            || mint.issuer.ends_with('/')
        {
            return Err(ConfigError::invalid(
                "mint.issuer",
                "must be an http(s) URL without a trailing slash",
            ));
        }
        if mint.audience.is_empty() {
            return Err(ConfigError::invalid("mint.audience", "must not be empty"));
        }
        if mint.ttl < Duration::from_secs(10) || mint.ttl > Duration::from_secs(86_400) {
            return Err(ConfigError::invalid(
                "mint.ttl",
                "must be between 10s and 24h",
            ));
        }
        if mint.algorithm == Algorithm::RS256 && mint.key_files.is_empty() {
            return Err(ConfigError::invalid(
                "mint.key_files",
                "RS256 keys are not generated by authgate; give a PEM RSA key (e.g. `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`)",
            ));
        }
        if http::HeaderName::from_bytes(mint.header.as_bytes()).is_err() {
            return Err(ConfigError::invalid(
                "mint.header",
                "is not a valid HTTP header name",
            ));
        }
        if http::HeaderValue::from_str(&mint.header_prefix).is_err() {
            return Err(ConfigError::invalid(
                "mint.header_prefix",
                "is not a valid HTTP header value",
            ));
        }
        Ok(())
    }
}

/// Why `server.signin_url` cannot be the base of a browser redirect, if it cannot: it must
/// be an absolute `http(s)` URL with a host, no userinfo and no fragment (`rd` is appended
/// to its query).
fn signin_url_problem(url: &str) -> Option<&'static str> {
    const ABSOLUTE: &str = "must be an absolute http(s) URL (https://host/path)";
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Some(ABSOLUTE);
    };
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Some(ABSOLUTE);
    }
    match uri.authority() {
        None => Some(ABSOLUTE),
        Some(a) if a.host().is_empty() => Some(ABSOLUTE),
        Some(a) if a.as_str().contains('@') => Some("must not hold userinfo ('@')"),
        Some(_) if url.contains('#') => Some("must not hold a fragment ('#')"),
        Some(_) => None,
    }
}

/// Turns figment's errors into one message per problem, each naming the key and the source.
fn describe_figment_error(error: figment::Error) -> ConfigError {
    let lines: Vec<String> = error
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref().map(|s| format!(" (from {s})")))
                .unwrap_or_default();
            if key.is_empty() {
                format!("config: {}{source}", e.kind)
            } else {
                format!("config key `{key}`: {}{source}", e.kind)
            }
        })
        .collect();
    ConfigError::Parse(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_takes_the_defaults() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.mint.ttl, Duration::from_secs(300));
        assert_eq!(c.mint.algorithm, Algorithm::ES256);
        assert_eq!(c.cache.max_ttl, Duration::from_secs(10));
        assert_eq!(c.providers.0.len(), 2);
        assert_eq!(c.policy.default, DefaultAction::Deny);
        assert_eq!(c.policy.path_case, PathCase::Sensitive);
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../config.example.yaml");
        Config::from_yaml(text).unwrap();
    }

    #[test]
    fn accepted_configs() {
        let cases = [
            "server: { listen: \"127.0.0.1:0\", trusted_proxies: [\"10.0.0.0/8\", \"::1/128\"] }",
            "store: { type: embedded, path: /tmp/x.db }",
            "mint: { algorithm: EdDSA, ttl: 2m, audience: other }",
            "cache: { max_ttl: 30s, negative_ttl: 1s, max_entries: 10 }",
            "providers: [ { type: basic, max_failures: 3, failure_window: 1m } ]",
            "policy: { default: allow_authenticated, rules: [ { name: a, path: /x, allow: anonymous } ] }",
            "policy: { rules: [ { name: a, host: \"*.example.org\", methods: [get, POST], require: { attributes: { dept: [a, b], site: x } } } ] }",
            "log: { format: pretty, level: \"authgate=debug,warn\" }",
            "policy: { path_case: insensitive, rules: [ { name: a, path: /Admin } ] }",
            "policy: { path_case: sensitive }",
            "policy: { rules: [ { name: a, host: \"api.example.org.\" }, { name: b, host: \"*.Example.org.\" } ] }",
            "policy: { rules: [ { name: a, host: \"10.0.0.1\" } ] }",
            "providers: [ { type: astakos, url: \"https://a.example.org/astakos\", mode: legacy, retries: 0 } ]",
            "providers: [ { type: keystone, auth_url: \"http://k:5000/v3\", username: gw, password: pw } ]",
            "headers: keystone\npolicy: { rules: [ { name: a, headers: default, delay_auth_decision: true } ] }",
            "astakos_api: { enabled: true, service_catalog: [ { name: x, type: compute } ] }",
            "server: { signin_url: \"https://auth.example.org/oauth2/start\" }",
            "server: { signin_url: \"http://127.0.0.1:4180/start?x=1\", envoy_redirect: true }",
            "server: { redirect_hosts: [api.example.org, \"*.Example.net\", \"fq.example.org.\"] }",
            "server: { redirect_hosts: [] }",
        ];
        for yaml in cases {
            Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        }
    }

    #[test]
    fn rejected_configs_name_the_key() {
        let cases = [
            ("server: { listen: nowhere }", "server.listen"),
            ("server: { lisen: \"127.0.0.1:1\" }", "lisen"),
            (
                "server: { trusted_proxies: [\"10.0.0.0/33\"] }",
                "server.trusted_proxies",
            ),
            (
                "server: { max_header_bytes: 10 }",
                "server.max_header_bytes",
            ),
            (
                "server: { signin_url: \"javascript:x\" }",
                "server.signin_url",
            ),
            ("server: { signin_url: /oauth2/start }", "server.signin_url"),
            (
                "server: { signin_url: \"//auth.example.org/x\" }",
                "server.signin_url",
            ),
            (
                "server: { signin_url: \"ftp://auth.example.org/x\" }",
                "server.signin_url",
            ),
            ("server: { signin_url: \"https://\" }", "server.signin_url"),
            (
                "server: { signin_url: \"https://a b/x\" }",
                "server.signin_url",
            ),
            (
                "server: { signin_url: \"https://u@auth.example.org/x\" }",
                "server.signin_url`: must not hold userinfo",
            ),
            (
                "server: { signin_url: \"https://auth.example.org/x#f\" }",
                "server.signin_url`: must not hold a fragment",
            ),
            (
                "server: { redirect_hosts: [api.example.org, \"*\"] }",
                "server.redirect_hosts[1]`: '*' would allow every host",
            ),
            (
                "server: { redirect_hosts: [\"api.example.org:8443\"] }",
                "server.redirect_hosts[0]`: ports are not part",
            ),
            (
                "server: { redirect_hosts: [a.example.org, b.example.org, \"a.*.org\"] }",
                "server.redirect_hosts[2]`: must be a host name",
            ),
            (
                "server: { redirect_hosts: api.example.org }",
                "server.redirect_hosts",
            ),
            (
                "server: { envoy_redirect: sometimes }",
                "server.envoy_redirect",
            ),
            ("store: { type: redis, url: x }", "store"),
            ("store: { type: embedded, path: x, extra: 1 }", "extra"),
            ("mint: { issuer: \"auth.example.org\" }", "mint.issuer"),
            (
                "mint: { issuer: \"https://a.example.org/\" }",
                "mint.issuer",
            ),
            ("mint: { algorithm: HS256 }", "mint.algorithm"),
            ("mint: { algorithm: RS256 }", "mint.key_files"),
            ("mint: { ttl: 1s }", "mint.ttl"),
            ("mint: { ttl: forever }", "mint.ttl"),
            ("mint: { header: \"bad header\" }", "mint.header"),
            ("mint: { audience: \"\" }", "mint.audience"),
            ("cache: { max_entries: 0 }", "cache.max_entries"),
            ("cache: { max_ttl: 0s }", "cache.max_ttl"),
            ("cache: { negative_ttl: 1m }", "cache.negative_ttl"),
            ("providers: []", "providers"),
            ("providers: [ { type: magic } ]", "providers"),
            (
                "providers: [ { type: basic }, { type: basic } ]",
                "providers[1]",
            ),
            (
                "providers: [ { type: basic, max_failures: 0 } ]",
                "providers[0].max_failures",
            ),
            ("policy: { default: maybe }", "policy.default"),
            (
                "policy: { rules: [ { path: /x } ] }",
                "policy.rules[0].name",
            ),
            (
                "policy: { rules: [ { name: a, path: x } ] }",
                "policy.rules[0].path",
            ),
            (
                "policy: { rules: [ { name: a }, { name: a } ] }",
                "policy.rules[1].name",
            ),
            (
                "policy: { rules: [ { name: a, methods: [\"GE T\"] } ] }",
                "policy.rules[0].methods",
            ),
            (
                "policy: { rules: [ { name: a, host: \"a.*.org\" } ] }",
                "policy.rules[0].host",
            ),
            (
                "policy: { rules: [ { name: a }, { name: b, host: \"api.example.org:8443\" } ] }",
                "policy.rules[1].host`: ports are not part of host rules",
            ),
            (
                "policy: { rules: [ { name: a, host: \"*.example.org:443\" } ] }",
                "policy.rules[0].host`: ports are not part of host rules",
            ),
            (
                "policy: { rules: [ { name: a, host: \"[::1]\" } ] }",
                "policy.rules[0].host`: IPv6 literals are not supported",
            ),
            (
                "policy: { rules: [ { name: a, host: \"a..example.org\" } ] }",
                "policy.rules[0].host",
            ),
            (
                "policy: { rules: [ { name: a, host: \"*.\" } ] }",
                "policy.rules[0].host",
            ),
            ("policy: { path_case: ignore }", "policy.path_case"),
            ("policy: { path_cases: sensitive }", "path_cases"),
            (
                "policy: { rules: [ { name: a, allow: anonymous, require: { roles: [x] } } ] }",
                "policy.rules[0]",
            ),
            (
                "policy: { rules: [ { name: a, allow: everyone } ] }",
                "policy.rules",
            ),
            ("log: { format: xml }", "log.format"),
            (
                "providers: [ { type: astakos, url: \"ftp://x\" } ]",
                "providers[0].url",
            ),
            (
                "providers: [ { type: astakos, url: \"http://x\", mode: new } ]",
                "providers",
            ),
            (
                "providers: [ { type: astakos, url: \"http://x\", retries: 9 } ]",
                "providers[0].retries",
            ),
            (
                "providers: [ { type: keystone, auth_url: \"http://k/v3\", username: gw } ]",
                "providers[0].password",
            ),
            (
                "providers: [ { type: keystone, auth_url: \"http://k/v3\", username: gw, password: a, password_file: /x } ]",
                "providers[0].password",
            ),
            (
                "providers: [ { type: keystone, auth_url: \"http://k/v3\", username: gw, password_file: /nonexistent/pw } ]",
                "providers[0].password_file",
            ),
            ("headers: openstack", "headers"),
            (
                "astakos_api: { enabled: yes-please }",
                "astakos_api.enabled",
            ),
            ("log: { level: \"[[[\" }", "log.level"),
        ];
        for (yaml, key) in cases {
            match Config::from_yaml(yaml) {
                Ok(_) => panic!("accepted: {yaml}"),
                Err(e) => {
                    let msg = e.to_string();
                    assert!(msg.contains(key), "{yaml}: message {msg:?} lacks {key}");
                }
            }
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's own error type
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.yaml",
                "server: { listen: \"127.0.0.1:1000\" }\nmint: { audience: file }",
            )?;
            jail.set_env("AUTHGATE_SERVER__LISTEN", "127.0.0.1:2000");
            jail.set_env("AUTHGATE_CACHE__MAX_ENTRIES", "7");
            jail.set_env("AUTHGATE_CONFIG", "c.yaml");
            let c = Config::load(Some(Path::new("c.yaml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.server.listen.to_string(), "127.0.0.1:2000");
            assert_eq!(c.cache.max_entries, 7);
            assert_eq!(c.mint.audience, "file");
            Ok(())
        });
    }

    #[test]
    fn a_missing_file_is_named() {
        let e = Config::load(Some(Path::new("/nonexistent/authgate.yaml"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/authgate.yaml"));
    }
}
