//! Configuration: the aggregate of every module's own config type, loading (built-in
//! defaults < YAML file < `AUTHGATE_` environment, `__` between levels) and the checks that
//! span modules. Each section's shape, defaults and checks live with the module that uses
//! it (`server::ServerConfig`, `store::StoreConfig`, `mint::MintConfig`, ...); the policy
//! arrives parsed ([`Policy`]), so a bad rule is a config error naming its key.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Yaml};
use serde::Deserialize;

use crate::admin::AdminConfig;
use crate::astakos_api::AstakosApiConfig;
use crate::augment::AugmentConfig;
use crate::cache::CacheConfig;
use crate::login::LoginConfig;
use crate::mint::MintConfig;
use crate::policy::{HeaderMode, Policy};
use crate::portal::PortalConfig;
use crate::providers::ProvidersConfig;
use crate::server::{ServerConfig, Settings};
pub use crate::setting::ConfigError;
use crate::store::StoreConfig;
use crate::telemetry::LogConfig;

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
    /// Augmenters: roles and attributes added after any provider, in this order.
    pub augment: AugmentConfig,
    /// Route policy, parsed once here.
    pub policy: Policy,
    /// Astakos-compatible validation of authgate's own tokens.
    pub astakos_api: AstakosApiConfig,
    /// Browser sign-in (OpenID Connect sessions).
    pub login: LoginConfig,
    /// Identity headers of a 200: `default` (`X-Auth-Request-*`) or `keystone` (the
    /// keystonemiddleware set as well); a rule may choose its own.
    pub headers: HeaderMode,
    /// Logging.
    pub log: LogConfig,
    /// The self-service token portal and `/api/tokens`.
    pub portal: PortalConfig,
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

    /// The sections the data plane is built from.
    pub fn server_settings(&self) -> Settings<'_> {
        Settings {
            server: &self.server,
            store: &self.store,
            mint: &self.mint,
            cache: &self.cache,
            providers: &self.providers,
            augment: &self.augment,
            policy: &self.policy,
            astakos_api: &self.astakos_api,
            login: &self.login,
            headers: self.headers,
            portal: &self.portal,
        }
    }

    /// Rejects values that parse but make no sense, naming the key: each section's own
    /// checks, then those that span sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        if self.server.listen == self.admin.listen && self.server.listen.port() != 0 {
            return Err(ConfigError::invalid(
                "admin.listen",
                "must differ from server.listen",
            ));
        }
        self.store.validate()?;
        self.mint.validate()?;
        self.cache.validate()?;
        self.providers.validate()?;
        self.augment.validate()?;
        self.astakos_api.validate()?;
        self.login.validate()?;
        self.log.validate()?;
        self.portal.validate()?;
        Ok(())
    }

    /// What `check-config` warns about: values that are valid but will not work as meant.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = self.astakos_api.warnings();
        out.extend(self.login.warnings());
        out
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
            // A section parsed whole (the policy) names its own, more precise key.
            if let figment::error::Kind::Message(message) = &e.kind
                && let Some((inner, reason)) = message.split_once(": ")
                && !key.is_empty()
                && inner.starts_with(&key)
            {
                return format!("config key `{inner}`: {reason}{source}");
            }
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
    use std::time::Duration;

    use super::*;
    use crate::mint::Algorithm;

    #[test]
    fn empty_config_takes_the_defaults() {
        let c = Config::from_yaml("").unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.mint.ttl, Duration::from_secs(300));
        assert_eq!(c.mint.algorithm, Algorithm::ES256);
        assert_eq!(c.mint.profile, crate::mint::Profile::Rfc9068);
        assert_eq!(c.mint.rotation_lead, Duration::from_secs(900));
        assert_eq!(c.mint.nbf_skew, Duration::from_secs(30));
        assert_eq!(c.cache.max_ttl, Duration::from_secs(10));
        assert_eq!(c.providers.0.len(), 2);
        // Default policy: deny, case-sensitive paths, no rules.
        assert_eq!(c.policy, Policy::default());
        assert_eq!(
            format!("{:?}", c.policy),
            "Policy { rules: [], default: Deny, path_case: Sensitive }"
        );
    }

    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../config.example.yaml");
        Config::from_yaml(text).unwrap();
        // Its commented `store: { type: redis }` alternative, put in place of the embedded one.
        let redis: String = text
            .lines()
            .filter(|l| !l.starts_with("  type: embedded") && !l.starts_with("  path: /var/lib"))
            .map(|l| match l.strip_prefix("  # ") {
                Some(rest)
                    if [
                        "type: redis",
                        "url:",
                        "password_file:",
                        "ca_file:",
                        "prefix:",
                        "timeout:",
                        "keepalive:",
                    ]
                    .iter()
                    .any(|k| rest.starts_with(k)) =>
                {
                    format!("  {rest}\n")
                }
                _ => format!("{l}\n"),
            })
            .collect();
        let config = Config::from_yaml(&redis).unwrap();
        assert!(
            matches!(
                config.store,
                StoreConfig::Redis { keepalive, .. } if keepalive == std::time::Duration::from_secs(5)
            ),
            "{:?}",
            config.store
        );
    }

    /// The example's commented `remote` providers and augmenters, each uncommented alone.
    #[test]
    fn the_example_remote_and_augment_entries_are_valid() {
        let text = include_str!("../config.example.yaml");
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("ldap-password");
        std::fs::write(&password, "pw").unwrap();
        let mut blocks: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let uncommented = line.strip_prefix("  # ").map(|rest| format!("  {rest}\n"));
            let starts = ["- type: remote", "- type: static", "- type: ldap"]
                .iter()
                .any(|t| line.strip_prefix("  # ").is_some_and(|r| r.starts_with(t)));
            if starts {
                blocks.extend(current.take());
                current = uncommented;
            } else if let Some(block) = current.as_mut() {
                match uncommented.filter(|_| line.starts_with("  #   ")) {
                    Some(l) => block.push_str(&l),
                    None => blocks.extend(current.take()),
                }
            }
        }
        blocks.extend(current);
        assert_eq!(blocks.len(), 4, "{blocks:?}");
        for block in blocks {
            let block = block.replace(
                "/run/secrets/ldap-password",
                &password.display().to_string(),
            );
            let section = if block.contains("type: remote") {
                "providers"
            } else {
                "augment"
            };
            let config = Config::from_yaml(&format!("{section}:\n{block}"));
            assert!(config.is_ok(), "{block}: {config:?}");
        }
    }

    #[test]
    fn accepted_configs() {
        let cases = [
            "server: { listen: \"127.0.0.1:0\", trusted_proxies: [\"10.0.0.0/8\", \"::1/128\"] }",
            "store: { type: embedded, path: /tmp/x.db }",
            "store: { type: redis, url: \"redis://gate:pw@redis.invalid:6379/2\" }",
            "store: { type: redis, url: \"rediss://redis.invalid\", ca_file: /ca.pem, password_file: /pw, prefix: \"x:\", timeout: 500ms }",
            "mint: { algorithm: EdDSA, ttl: 2m, audience: other }",
            "mint: { profile: legacy, rotation_lead: 0s, nbf_skew: 0s }",
            "mint: { profile: rfc9068, rotation_lead: 1h, nbf_skew: 5m, ttl: 10m }",
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
            "server: { public_url: \"https://gw.example.org/authgate\" }",
            "server: { public_url: \"http://authgate.authgate.svc:8080\" }",
            "headers: oauth2-proxy\npolicy: { rules: [ { name: a, headers: default }, { name: b, headers: oauth2-proxy } ] }",
        ];
        for yaml in cases {
            Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        }
    }

    #[test]
    fn rejected_configs_name_the_key() {
        let cases = [
            ("server: { listen: nowhere }", "server.listen"),
            ("store: { type: redis, url: \"http://x\" }", "store.url"),
            (
                "store: { type: redis, url: \"redis://x\", timeout: 0s }",
                "store.timeout",
            ),
            (
                "store: { type: redis, url: \"redis://x\", ca_file: /ca.pem }",
                "store.ca_file",
            ),
            (
                "store: { type: redis, url: \"redis://x\", path: /x.db }",
                "path",
            ),
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
            ("server: { public_url: /keys }", "server.public_url"),
            (
                "server: { public_url: \"https://gw.example.org/\" }",
                "server.public_url`: must not end with '/'",
            ),
            (
                "server: { public_url: \"https://gw.example.org/x?a=1\" }",
                "server.public_url`: must not hold a query",
            ),
            (
                "server: { public_url: \"https://u@gw.example.org\" }",
                "server.public_url`: must not hold userinfo",
            ),
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
            ("mint: { profile: jwt }", "mint.profile"),
            ("mint: { rotation_lead: 30d }", "mint.rotation_lead"),
            ("mint: { nbf_skew: 10m }", "mint.nbf_skew"),
            ("mint: { ttl: 30s, nbf_skew: 30s }", "mint.nbf_skew"),
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
