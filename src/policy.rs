//! Route policy: ordered rules matched on host, path and method, each naming what the
//! identity must hold. [`Policy::evaluate`] is pure: no I/O, no clock. Host and path
//! patterns live in the private modules `host` and `path`.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;

use crate::identity::Identity;

mod config;
mod host;
mod path;

pub use config::{
    AllowConfig, DefaultAction, HeaderMode, OneOrMany, PathCase, PolicyConfig, RequireConfig,
    RuleConfig,
};
pub use host::HostPattern;
use path::PathPattern;

/// The parsed policy. The configuration holds it ready: it is deserialized from a
/// [`PolicyConfig`] and parsed once, so a bad rule fails loading with its key path.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "PolicyConfig")]
pub struct Policy {
    rules: Vec<Rule>,
    default: DefaultAction,
    path_case: PathCase,
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Name, for logs and 403 bodies.
    pub name: Arc<str>,
    host: HostPattern,
    path: PathPattern,
    methods: Vec<Method>,
    access: Access,
    /// `aud` for JWTs minted under this rule.
    pub audience: Option<Arc<str>>,
    /// Identity headers for this rule, when it sets them.
    pub headers: Option<HeaderMode>,
    /// Whether an invalid credential is passed on as `X-Identity-Status: Invalid`.
    pub delay_auth_decision: bool,
}

/// What a rule grants.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Access {
    Anonymous,
    Require(Requirements),
}

/// What an identity must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Requirements {
    all_roles: Vec<String>,
    any_roles: Vec<String>,
    all_scopes: Vec<String>,
    any_scopes: Vec<String>,
    attributes: BTreeMap<String, Vec<String>>,
}

/// The request as the policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Method of the original request.
    pub method: &'a Method,
    /// Lower-case host without port; one trailing dot (`api.example.org.`) is ignored.
    pub host: &'a str,
    /// Normalised path.
    pub path: &'a str,
}

/// The outcome of [`Policy::evaluate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Pass; mint with `audience` (the rule's, or the default when `None`).
    Allow {
        /// Matched rule, `None` for the default.
        rule: Option<Arc<str>>,
        /// Rule audience.
        audience: Option<Arc<str>>,
    },
    /// Pass without identity (an anonymous rule).
    AllowAnonymous {
        /// Matched rule.
        rule: Arc<str>,
    },
    /// A valid credential is needed first (401).
    Unauthenticated,
    /// The identity lacks what the rule needs (403).
    Deny {
        /// Matched rule, or `default`.
        rule: Arc<str>,
        /// What was missing, e.g. `role admin`.
        missing: String,
    },
}

/// A rule that cannot be parsed, with the key path (`policy.rules[2].path`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct PolicyError {
    /// Dotted key path.
    pub key: String,
    /// Why.
    pub reason: String,
}

impl TryFrom<PolicyConfig> for Policy {
    type Error = PolicyError;

    fn try_from(config: PolicyConfig) -> Result<Self, PolicyError> {
        Self::try_from(&config)
    }
}

impl TryFrom<&PolicyConfig> for Policy {
    type Error = PolicyError;

    fn try_from(config: &PolicyConfig) -> Result<Self, PolicyError> {
        let mut rules: Vec<Rule> = Vec::with_capacity(config.rules.len());
        for (i, rc) in config.rules.iter().enumerate() {
            let rule = Rule::parse(rc, &format!("policy.rules[{i}]"))?;
            if rules.iter().any(|r| r.name == rule.name) {
                return Err(PolicyError {
                    key: format!("policy.rules[{i}].name"),
                    reason: format!("'{}' is used by an earlier rule", rule.name),
                });
            }
            rules.push(rule);
        }
        Ok(Self {
            rules,
            default: config.default,
            path_case: config.path_case,
        })
    }
}

impl Rule {
    /// Whether this rule lets a request pass without any credential.
    pub fn is_anonymous(&self) -> bool {
        matches!(self.access, Access::Anonymous)
    }
}

impl Rule {
    fn parse(rc: &RuleConfig, key: &str) -> Result<Self, PolicyError> {
        let err = |field: &str, reason: &str| PolicyError {
            key: if field.is_empty() {
                key.to_owned()
            } else {
                format!("{key}.{field}")
            },
            reason: reason.to_owned(),
        };
        if rc.name.is_empty() {
            return Err(err("name", "every rule needs a name"));
        }
        let host = HostPattern::parse(rc.host.as_deref()).map_err(|r| err("host", r))?;
        let path = PathPattern::parse(rc.path.as_deref()).map_err(|r| err("path", r))?;
        let mut methods = Vec::with_capacity(rc.methods.len());
        for m in &rc.methods {
            let m = Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| err("methods", &format!("'{m}' is not an HTTP method")))?;
            methods.push(m);
        }
        let req = &rc.require;
        let requires_something = !(req.roles.is_empty()
            && req.any_roles.is_empty()
            && req.scopes.is_empty()
            && req.any_scopes.is_empty()
            && req.attributes.is_empty());
        let access = match rc.allow {
            Some(AllowConfig::Anonymous) if requires_something => {
                return Err(err(
                    "",
                    "`allow: anonymous` and `require` exclude each other",
                ));
            }
            Some(AllowConfig::Anonymous) => Access::Anonymous,
            None => Access::Require(Requirements {
                all_roles: req.roles.clone(),
                any_roles: req.any_roles.clone(),
                all_scopes: req.scopes.clone(),
                any_scopes: req.any_scopes.clone(),
                attributes: req
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_vec()))
                    .collect(),
            }),
        };
        if rc.audience.as_deref() == Some("") {
            return Err(err("audience", "must not be empty"));
        }
        Ok(Self {
            name: Arc::from(rc.name.as_str()),
            host,
            path,
            methods,
            access,
            audience: rc.audience.as_deref().map(Arc::from),
            headers: rc.headers,
            delay_auth_decision: rc.delay_auth_decision,
        })
    }

    /// Whether the rule covers `target`; the cheap checks first, the path last.
    fn matches(&self, target: &Target<'_>, path_case: PathCase) -> bool {
        (self.methods.is_empty() || self.methods.contains(target.method))
            && self.host.matches(target.host)
            && self.path.matches(target.path, path_case)
    }
}

impl Requirements {
    /// `None` when satisfied, else a description of the first missing item.
    fn missing(&self, id: &Identity) -> Option<String> {
        if let Some(r) = self.all_roles.iter().find(|r| !id.roles.contains(r)) {
            return Some(format!("role {r}"));
        }
        if !self.any_roles.is_empty() && !self.any_roles.iter().any(|r| id.roles.contains(r)) {
            return Some(format!("one of the roles {}", self.any_roles.join(", ")));
        }
        if let Some(s) = self.all_scopes.iter().find(|s| !id.has_scope(s)) {
            return Some(format!("scope {s}"));
        }
        if !self.any_scopes.is_empty() && !self.any_scopes.iter().any(|s| id.has_scope(s)) {
            return Some(format!("one of the scopes {}", self.any_scopes.join(", ")));
        }
        for (name, accepted) in &self.attributes {
            let ok = id
                .attributes
                .get(name)
                .is_some_and(|v| accepted.iter().any(|a| v.contains(a)));
            if !ok {
                return Some(format!("attribute {name} in [{}]", accepted.join(", ")));
            }
        }
        None
    }
}

impl Policy {
    /// The host patterns the rules name (exact names and `*.domain`), in rule order without
    /// repeats; rules without `host` add nothing. The default of `server.redirect_hosts`.
    pub fn named_hosts(&self) -> Vec<HostPattern> {
        let mut hosts: Vec<HostPattern> = Vec::new();
        for rule in &self.rules {
            if rule.host != HostPattern::Any && !hosts.contains(&rule.host) {
                hosts.push(rule.host.clone());
            }
        }
        hosts
    }

    /// The first rule matching `target`, if any.
    pub fn matching_rule(&self, target: &Target<'_>) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.matches(target, self.path_case))
    }

    /// Whether the matching rule lets the request pass without any credential.
    pub fn is_anonymous(&self, target: &Target<'_>) -> Option<Arc<str>> {
        self.matching_rule(target).and_then(|r| match r.access {
            Access::Anonymous => Some(r.name.clone()),
            Access::Require(_) => None,
        })
    }

    /// The decision for `identity` (`None`: no valid credential) reaching `target`.
    pub fn evaluate(&self, target: &Target<'_>, identity: Option<&Identity>) -> Decision {
        self.evaluate_rule(self.matching_rule(target), identity)
    }

    /// The decision for `identity` under `rule`, the [`Policy::matching_rule`] of the
    /// request (`None`: the default applies): the request path matches once.
    pub fn evaluate_rule(&self, rule: Option<&Rule>, identity: Option<&Identity>) -> Decision {
        if let Some(Rule {
            name,
            access: Access::Anonymous,
            ..
        }) = rule
        {
            return Decision::AllowAnonymous { rule: name.clone() };
        }
        let Some(identity) = identity else {
            return Decision::Unauthenticated;
        };
        match rule {
            Some(rule) => {
                let Access::Require(req) = &rule.access else {
                    unreachable!("anonymous rules returned above")
                };
                match req.missing(identity) {
                    None => Decision::Allow {
                        rule: Some(rule.name.clone()),
                        audience: rule.audience.clone(),
                    },
                    Some(missing) => Decision::Deny {
                        rule: rule.name.clone(),
                        missing,
                    },
                }
            }
            None => match self.default {
                DefaultAction::AllowAuthenticated => Decision::Allow {
                    rule: None,
                    audience: None,
                },
                DefaultAction::Deny => Decision::Deny {
                    rule: Arc::from("default"),
                    missing: "a rule that matches this request".to_owned(),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::identity::{AttributeValue, Attributes};

    fn policy(yaml: &str) -> Policy {
        let config = Config::from_yaml(yaml).unwrap();
        config.policy.clone()
    }

    fn user(roles: &[&str], scopes: Option<&[&str]>, dept: Option<&str>) -> Identity {
        let mut attributes = Attributes::new();
        if let Some(d) = dept {
            attributes.insert("dept".into(), AttributeValue::One(d.into()));
        }
        Identity {
            subject: "alice".into(),
            native_id: None,
            provider: "api_token",
            username: "alice".into(),
            email: None,
            roles: roles.iter().map(|s| s.to_string()).collect(),
            attributes,
            scopes: scopes.map(|s| s.iter().copied().collect()),
            expires_at: None,
            credential_id: None,
            client_id: None,
        }
    }

    const POLICY: &str = r#"
policy:
  default: deny
  rules:
    - { name: health, path: /healthz, allow: anonymous }
    - { name: data-read, host: api.example.org, path: /data, methods: [GET, HEAD], require: { scopes: ["read:data"] } }
    - { name: data-write, host: api.example.org, path: /data, methods: [POST], require: { scopes: ["write:data"], roles: [editor] } }
    - { name: admin, path: /admin, require: { roles: [admin] }, audience: admin-api }
    - { name: tenants, host: "*.tenants.example.org", require: { any_roles: [owner, member] } }
    - { name: reports, path: "/reports/*/pdf", require: { attributes: { dept: [physics, chemistry] } } }
    - { name: files, path: "/files/**/*.txt", require: { any_scopes: ["files:read", "files:all"] } }
"#;

    #[test]
    fn decision_table() {
        let p = policy(POLICY);
        let alice = user(&["editor"], None, Some("physics"));
        let reader = user(&[], Some(&["read:data"]), None);
        let admin = user(&["admin"], Some(&["other"]), None);
        let member = user(&["member"], Some(&[]), Some("biology"));
        let files = user(&[], Some(&["files:read"]), None);
        let scoped_editor = user(&["editor"], Some(&["read:data"]), None);
        use Decision as D;
        let allow = |rule: &str| D::Allow {
            rule: Some(Arc::from(rule)),
            audience: None,
        };
        let deny = |rule: &str, missing: &str| D::Deny {
            rule: Arc::from(rule),
            missing: missing.into(),
        };
        let cases: Vec<(&str, &str, &str, Option<&Identity>, Decision)> = vec![
            (
                "GET",
                "api.example.org",
                "/healthz",
                None,
                D::AllowAnonymous {
                    rule: "health".into(),
                },
            ),
            (
                "GET",
                "api.example.org",
                "/healthz",
                Some(&alice),
                D::AllowAnonymous {
                    rule: "health".into(),
                },
            ),
            ("GET", "api.example.org", "/data", None, D::Unauthenticated),
            (
                "GET",
                "api.example.org",
                "/data",
                Some(&alice),
                allow("data-read"),
            ),
            (
                "GET",
                "api.example.org",
                "/data/x/y",
                Some(&reader),
                allow("data-read"),
            ),
            (
                "HEAD",
                "api.example.org",
                "/data",
                Some(&reader),
                allow("data-read"),
            ),
            (
                "GET",
                "api.example.org",
                "/database",
                Some(&reader),
                deny("default", "a rule that matches this request"),
            ),
            (
                "POST",
                "api.example.org",
                "/data",
                Some(&reader),
                deny("data-write", "role editor"),
            ),
            (
                "POST",
                "api.example.org",
                "/data",
                Some(&scoped_editor),
                deny("data-write", "scope write:data"),
            ),
            (
                "POST",
                "api.example.org",
                "/data",
                Some(&alice),
                allow("data-write"),
            ),
            (
                "DELETE",
                "api.example.org",
                "/data",
                Some(&alice),
                deny("default", "a rule that matches this request"),
            ),
            (
                "GET",
                "other.example.org",
                "/data",
                Some(&alice),
                deny("default", "a rule that matches this request"),
            ),
            (
                "GET",
                "x",
                "/admin",
                Some(&alice),
                deny("admin", "role admin"),
            ),
            (
                "GET",
                "x",
                "/admin/users",
                Some(&admin),
                D::Allow {
                    rule: Some("admin".into()),
                    audience: Some("admin-api".into()),
                },
            ),
            (
                "GET",
                "a.tenants.example.org",
                "/",
                Some(&member),
                allow("tenants"),
            ),
            (
                "GET",
                "tenants.example.org",
                "/",
                Some(&member),
                deny("default", "a rule that matches this request"),
            ),
            (
                "GET",
                "a.tenants.example.org",
                "/",
                Some(&reader),
                deny("tenants", "one of the roles owner, member"),
            ),
            (
                "GET",
                "x",
                "/reports/2024/pdf",
                Some(&alice),
                allow("reports"),
            ),
            (
                "GET",
                "x",
                "/reports/2024/pdf",
                Some(&member),
                deny("reports", "attribute dept in [physics, chemistry]"),
            ),
            (
                "GET",
                "x",
                "/reports/2024/x/pdf",
                Some(&alice),
                deny("default", "a rule that matches this request"),
            ),
            ("GET", "x", "/files/a/b/c.txt", Some(&files), allow("files")),
            ("GET", "x", "/files/c.txt", Some(&files), allow("files")),
            (
                "GET",
                "x",
                "/files/c.txt",
                Some(&reader),
                deny("files", "one of the scopes files:read, files:all"),
            ),
            (
                "GET",
                "x",
                "/files/c.pdf",
                Some(&files),
                deny("default", "a rule that matches this request"),
            ),
        ];
        for (method, host, path, identity, expected) in cases {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let target = Target {
                method: &method,
                host,
                path,
            };
            assert_eq!(
                p.evaluate(&target, identity),
                expected,
                "{method} {host}{path}"
            );
        }
    }

    #[test]
    fn default_allow_authenticated() {
        let p = policy("policy: { default: allow_authenticated }");
        let t = Target {
            method: &Method::GET,
            host: "h",
            path: "/anything",
        };
        assert_eq!(p.evaluate(&t, None), Decision::Unauthenticated);
        assert_eq!(
            p.evaluate(&t, Some(&user(&[], Some(&[]), None))),
            Decision::Allow {
                rule: None,
                audience: None
            }
        );
    }

    fn rule_for(p: &Policy, host: &str, path: &str) -> Option<String> {
        let target = Target {
            method: &Method::GET,
            host,
            path,
        };
        p.matching_rule(&target).map(|r| r.name.to_string())
    }

    #[test]
    fn path_case_decides_which_rule_covers_a_path() {
        let rules = "rules: [ { name: admin, path: /admin, require: { roles: [admin] } }, \
                     { name: files, path: \"/files/*.txt\" }, \
                     { name: open, path: /, allow: anonymous } ]";
        let cases = [
            ("", "/ADMIN/x", "open"),
            ("path_case: sensitive, ", "/ADMIN/x", "open"),
            ("path_case: sensitive, ", "/admin/x", "admin"),
            ("path_case: insensitive, ", "/ADMIN/x", "admin"),
            ("path_case: insensitive, ", "/Admin", "admin"),
            ("path_case: insensitive, ", "/ADMINS", "open"),
            ("path_case: insensitive, ", "/FILES/A.TXT", "files"),
            ("path_case: sensitive, ", "/FILES/A.TXT", "open"),
        ];
        for (setting, path, expected) in cases {
            let p = policy(&format!("policy: {{ {setting}{rules} }}"));
            assert_eq!(
                rule_for(&p, "h", path).as_deref(),
                Some(expected),
                "{setting}{path}"
            );
        }
    }

    #[test]
    fn hosts_match_one_label_and_ignore_a_trailing_dot() {
        let p = policy(
            "policy: { rules: [ \
               { name: api, host: api.example.org, path: /admin }, \
               { name: fqdn, host: \"fq.example.org.\" }, \
               { name: tenant, host: \"*.tenants.example.org\" }, \
               { name: rest, allow: anonymous } ] }",
        );
        let cases = [
            ("api.example.org", "/admin", "api"),
            ("api.example.org.", "/admin", "api"),
            ("api.example.org..", "/admin", "rest"),
            ("fq.example.org", "/", "fqdn"),
            ("fq.example.org.", "/", "fqdn"),
            ("a.tenants.example.org", "/", "tenant"),
            ("a.tenants.example.org.", "/", "tenant"),
            ("a.b.tenants.example.org", "/", "rest"),
            ("tenants.example.org", "/", "rest"),
        ];
        for (host, path, expected) in cases {
            assert_eq!(
                rule_for(&p, host, path).as_deref(),
                Some(expected),
                "{host}{path}"
            );
        }
    }

    #[test]
    fn named_hosts_are_the_rules_host_patterns_once_each() {
        let p = policy(
            "policy: { rules: [ \
               { name: a, host: API.example.org, path: /a }, \
               { name: b, host: \"*.tenants.example.org\" }, \
               { name: c, host: \"api.example.org.\", path: /c }, \
               { name: d, host: \"*\" }, \
               { name: e, path: /e } ] }",
        );
        let named = p.named_hosts();
        assert_eq!(named.len(), 2, "{named:?}");
        assert!(named[0].matches("api.example.org"));
        assert!(named[1].matches("x.tenants.example.org"));
        assert!(!named.iter().any(|h| h.matches("www.example.org")));
        assert!(
            policy("policy: { rules: [ { name: a } ] }")
                .named_hosts()
                .is_empty()
        );
    }

    #[test]
    fn rule_errors_carry_the_key_path() {
        let cases = [
            (
                "{ name: a }, { name: b }, { name: c, host: \"api.example.org:8443\" }",
                "policy.rules[2].host",
                "ports are not part of host rules",
            ),
            (
                "{ name: a, host: \"[::1]\" }",
                "policy.rules[0].host",
                "IPv6 literals are not supported",
            ),
            (
                "{ name: a, host: \"a.*.org\" }",
                "policy.rules[0].host",
                "must be a host name",
            ),
            (
                "{ name: a }, { name: b, path: x }",
                "policy.rules[1].path",
                "must start with '/'",
            ),
        ];
        for (rules, key, reason) in cases {
            use figment::providers::{Format, Yaml};
            let config: PolicyConfig =
                figment::Figment::from(Yaml::string(&format!("rules: [ {rules} ]")))
                    .extract()
                    .unwrap();
            let e = Policy::try_from(&config).unwrap_err();
            assert_eq!(e.key, key, "{rules}");
            assert!(e.reason.starts_with(reason), "{rules}: {}", e.reason);
        }
    }
}
