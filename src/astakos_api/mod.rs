//! Astakos-compatible endpoints served by authgate for its own API tokens and users, so that
//! synnefo-style services can point `ASTAKOS_AUTH_URL` at authgate (ASTAKOS.md): token
//! validation (`POST /identity/v2.0/tokens`, the `access` document, and the 0.13
//! `GET /im/authenticate`) and the user catalogs (`POST /account/v1.0/user_catalogs`,
//! `POST /account/v1.0/service/user_catalogs`, and their 0.13 paths), each under every
//! configured `astakos_api.prefix`. Off unless `astakos_api.enabled`.

mod tokens;
mod user_catalogs;

use std::time::SystemTime;

use bytes::Bytes;
use http::StatusCode;
use http::header::{self, HeaderValue};
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Value, json};

pub use tokens::{authenticate, tokens};
pub use user_catalogs::user_catalogs;

use crate::policy::OneOrMany;
use crate::reply::Body;
use crate::setting::ConfigError;

/// `astakos_api`: the Astakos-compatible endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AstakosApiConfig {
    /// Serve the endpoints.
    pub enabled: bool,
    /// Path prefixes the endpoints are served under (one or a list): `/astakos` serves
    /// `/astakos/identity/v2.0/tokens`, `/astakos/account/v1.0/user_catalogs`, ...; `/` is
    /// the root. Default: the root only.
    pub prefix: OneOrMany,
    /// The public base URL of these endpoints (synnefo's `ASTAKOS_BASE_URL`, e.g.
    /// `https://cloud.example.org/astakos`): the `astakos_account` and `astakos_identity`
    /// entries of the service catalog point there. Unset: no entry is generated.
    pub public_url: Option<String>,
    /// More services for `access.serviceCatalog` (a list, returned as is after the
    /// generated entries); an entry named `astakos_account` or `astakos_identity` replaces
    /// the generated one.
    pub service_catalog: Value,
    /// The scope a scoped API token must hold to be validated here: a service that asks
    /// Astakos treats the token as its owner in full, so a token limited to other scopes
    /// (say `read:data`) is refused. Unscoped tokens act for their owner and pass.
    pub scope: String,
    /// The scope that makes an API token a service token (Astakos's component token), the
    /// one `/account/v1.0/service/user_catalogs` takes. Only a scoped token naming it counts:
    /// an unscoped token acts for a user, never for a service.
    pub service_scope: String,
}

impl Default for AstakosApiConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            prefix: OneOrMany::One("/".to_owned()),
            public_url: None,
            service_catalog: Value::Null,
            scope: "astakos".to_owned(),
            service_scope: "astakos:service".to_owned(),
        }
    }
}

/// Which Astakos endpoint a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/identity/v2.0/tokens`.
    Tokens,
    /// `/im/authenticate` (0.13).
    Authenticate,
    /// `/account/v1.0/user_catalogs` (0.13: `/user_catalogs`), with a user's token.
    UserCatalogs,
    /// `/account/v1.0/service/user_catalogs` (0.13: `/service/api/user_catalogs`), with a
    /// service token.
    ServiceUserCatalogs,
    /// Any other path under `/identity/v2.0` or `/account/v1.0`: 400 "API endpoint not found".
    Unknown,
}

/// The catalog entries generated from `public_url`, by name.
const GENERATED: [&str; 2] = ["astakos_account", "astakos_identity"];

impl AstakosApiConfig {
    /// The prefixes without a trailing `/` (the root is `""`).
    fn prefixes(&self) -> impl Iterator<Item = String> {
        self.prefix
            .to_vec()
            .into_iter()
            .map(|p| p.trim_end_matches('/').to_owned())
    }

    /// The endpoint `path` names, when the endpoints are enabled.
    pub fn route(&self, path: &str) -> Option<Endpoint> {
        if !self.enabled {
            return None;
        }
        self.prefixes().find_map(|prefix| {
            let rest = path.strip_prefix(prefix.as_str())?;
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            match rest {
                "/identity/v2.0/tokens" => Some(Endpoint::Tokens),
                "/im/authenticate" => Some(Endpoint::Authenticate),
                "/account/v1.0/user_catalogs" | "/user_catalogs" => Some(Endpoint::UserCatalogs),
                "/account/v1.0/service/user_catalogs" | "/service/api/user_catalogs" => {
                    Some(Endpoint::ServiceUserCatalogs)
                }
                _ if ["/identity/v2.0", "/account/v1.0"]
                    .iter()
                    .any(|api| rest == *api || rest.starts_with(&format!("{api}/"))) =>
                {
                    Some(Endpoint::Unknown)
                }
                _ => None,
            }
        })
    }

    /// `access.serviceCatalog`: the entries generated from `public_url` that
    /// `service_catalog` does not replace, then `service_catalog`.
    pub fn catalog(&self) -> Value {
        let configured = self.service_catalog.as_array().cloned().unwrap_or_default();
        let mut out = Vec::with_capacity(configured.len() + GENERATED.len());
        if let Some(base) = &self.public_url {
            let base = base.trim_end_matches('/');
            for name in GENERATED {
                if configured.iter().any(|s| s["name"] == name) {
                    continue;
                }
                out.push(match name {
                    "astakos_account" => json!({"name": name, "type": "account",
                        "endpoints_links": [],
                        "endpoints": [{"versionId": "v1.0", "publicURL": format!("{base}/account/v1.0"),
                                       "SNF:uiURL": format!("{base}/ui"), "region": "default"}]}),
                    _ => json!({"name": name, "type": "identity", "endpoints_links": [],
                        "endpoints": [{"versionId": "v2.0", "publicURL": format!("{base}/identity/v2.0"),
                                       "region": "default"}]}),
                });
            }
        }
        out.extend(configured);
        Value::Array(out)
    }

    /// Rejects values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (i, prefix) in self.prefix.to_vec().iter().enumerate() {
            if let Some(why) = prefix_problem(prefix) {
                let key = match self.prefix {
                    OneOrMany::One(_) => "astakos_api.prefix".to_owned(),
                    OneOrMany::Many(_) => format!("astakos_api.prefix[{i}]"),
                };
                return Err(ConfigError::invalid(key, why));
            }
        }
        if let OneOrMany::Many(list) = &self.prefix
            && list.is_empty()
        {
            return Err(ConfigError::invalid(
                "astakos_api.prefix",
                "must name at least one prefix ('/' is the root)",
            ));
        }
        if let Some(url) = &self.public_url
            && !public_url_is_usable(url)
        {
            return Err(ConfigError::invalid(
                "astakos_api.public_url",
                "must be an absolute http(s) URL without query or fragment (https://host/astakos)",
            ));
        }
        match &self.service_catalog {
            Value::Null => {}
            Value::Array(services) => {
                for (i, s) in services.iter().enumerate() {
                    if !s["name"].is_string() {
                        return Err(ConfigError::invalid(
                            format!("astakos_api.service_catalog[{i}]"),
                            "must be a service with a `name`",
                        ));
                    }
                }
            }
            _ => {
                return Err(ConfigError::invalid(
                    "astakos_api.service_catalog",
                    "must be a list of services",
                ));
            }
        }
        for (key, scope) in [
            ("astakos_api.scope", &self.scope),
            ("astakos_api.service_scope", &self.service_scope),
        ] {
            if scope.is_empty() || scope.contains([',', ' ']) {
                return Err(ConfigError::invalid(key, "must be one scope name"));
            }
        }
        Ok(())
    }

    /// What `check-config` (and the server at start) warns about: a catalog without
    /// `astakos_account`, with which every synnefo client fails ("no endpoints") although
    /// authentication succeeds.
    pub fn warnings(&self) -> Vec<String> {
        let lacks_account = !self
            .catalog()
            .as_array()
            .is_some_and(|c| c.iter().any(|s| s["name"] == "astakos_account"));
        if self.enabled && lacks_account {
            vec![
                "astakos_api: the service catalog has no `astakos_account` entry, so synnefo \
                 clients find no account endpoint; set astakos_api.public_url"
                    .to_owned(),
            ]
        } else {
            Vec::new()
        }
    }
}

/// Why `prefix` cannot be a path prefix, if it cannot.
fn prefix_problem(prefix: &str) -> Option<&'static str> {
    let trimmed = prefix.trim_end_matches('/');
    if !prefix.starts_with('/') {
        Some("must be an absolute path ('/astakos'; '/' is the root)")
    } else if trimmed.contains("//")
        || trimmed
            .bytes()
            .any(|b| b.is_ascii_control() || b" ?#%".contains(&b))
    {
        Some("must be a plain path (no '//', space, '?', '#' or '%')")
    } else if trimmed == "/auth" || trimmed.starts_with("/auth/") {
        // `/auth/<path>` is Envoy's decision endpoint.
        Some("must not be under /auth (Envoy's decision endpoint)")
    } else {
        None
    }
}

fn public_url_is_usable(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some_and(|a| !a.host().is_empty())
        && uri.query().is_none()
        && !url.contains('#')
}

/// `Cache-Control` etc. of every Astakos API answer (Django never-cache + Vary).
fn api_response(status: StatusCode, body: &Value) -> http::Response<Body> {
    let mut r = http::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    never_cache(h);
    r
}

fn never_cache(h: &mut http::HeaderMap) {
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate, max-age=0"),
    );
    // An IMF-fixdate (RFC 9110 5.6.7), as Django's never_cache sends.
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(SystemTime::now())) {
        h.insert(header::EXPIRES, v);
    }
    h.insert(header::VARY, HeaderValue::from_static("X-Auth-Token"));
}

/// snf_django's `render_fault`: `{"<camelCasedFault>": {"code", "message", "details"}}`.
fn fault(status: StatusCode, key: &str, message: &str) -> http::Response<Body> {
    api_response(
        status,
        &json!({ key: {"code": status.as_u16(), "message": message, "details": ""} }),
    )
}

/// 405 with `Allow: POST` (snf_django's `api_method(http_method="POST")`).
fn post_only() -> http::Response<Body> {
    let mut r = fault(
        StatusCode::METHOD_NOT_ALLOWED,
        "notAllowed",
        "Method not allowed",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

/// 400 for a path under the Astakos APIs that names no endpoint.
pub fn unknown_endpoint() -> http::Response<Body> {
    fault(
        StatusCode::BAD_REQUEST,
        "badRequest",
        "API endpoint not found",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> AstakosApiConfig {
        use figment::providers::{Format, Yaml};
        figment::Figment::new()
            .merge(Yaml::string(yaml))
            .extract()
            .unwrap()
    }

    #[test]
    fn routes_under_every_prefix() {
        let root = config("enabled: true");
        let prefixed = config("{ enabled: true, prefix: [/astakos/, /_astakos] }");
        // (path, at the root, under the prefixes)
        let cases = [
            ("/identity/v2.0/tokens", Some(Endpoint::Tokens), None),
            ("/identity/v2.0/tokens/", Some(Endpoint::Tokens), None),
            (
                "/astakos/identity/v2.0/tokens",
                None,
                Some(Endpoint::Tokens),
            ),
            (
                "/_astakos/identity/v2.0/tokens",
                None,
                Some(Endpoint::Tokens),
            ),
            (
                "/astakos/im/authenticate",
                None,
                Some(Endpoint::Authenticate),
            ),
            (
                "/account/v1.0/user_catalogs",
                Some(Endpoint::UserCatalogs),
                None,
            ),
            (
                "/_astakos/account/v1.0/user_catalogs",
                None,
                Some(Endpoint::UserCatalogs),
            ),
            ("/user_catalogs", Some(Endpoint::UserCatalogs), None),
            (
                "/astakos/account/v1.0/service/user_catalogs",
                None,
                Some(Endpoint::ServiceUserCatalogs),
            ),
            (
                "/service/api/user_catalogs",
                Some(Endpoint::ServiceUserCatalogs),
                None,
            ),
            (
                "/astakos/account/v1.0/quotas",
                None,
                Some(Endpoint::Unknown),
            ),
            ("/identity/v2.0", Some(Endpoint::Unknown), None),
            ("/astakosidentity/v2.0/tokens", None, None),
            ("/identity/v2.0x/tokens", None, None),
            ("/astakos", None, None),
            ("/auth", None, None),
        ];
        for (path, at_root, prefixed_want) in cases {
            assert_eq!(root.route(path), at_root, "{path} at the root");
            assert_eq!(prefixed.route(path), prefixed_want, "{path} under prefixes");
        }
        assert_eq!(config("{}").route("/identity/v2.0/tokens"), None);
    }

    #[test]
    fn the_catalog_is_generated_from_the_public_url() {
        let c = config("{ enabled: true, public_url: \"https://cloud.example.org/astakos/\" }");
        assert_eq!(
            c.catalog(),
            json!([
                {"name": "astakos_account", "type": "account", "endpoints_links": [],
                 "endpoints": [{"versionId": "v1.0", "publicURL": "https://cloud.example.org/astakos/account/v1.0",
                                "SNF:uiURL": "https://cloud.example.org/astakos/ui", "region": "default"}]},
                {"name": "astakos_identity", "type": "identity", "endpoints_links": [],
                 "endpoints": [{"versionId": "v2.0", "publicURL": "https://cloud.example.org/astakos/identity/v2.0",
                                "region": "default"}]}
            ])
        );
        assert!(c.warnings().is_empty());
        // Configured entries follow; one of the same name replaces the generated one.
        let c = config(
            "{ enabled: true, public_url: \"https://c.example.org\", service_catalog: [ { name: astakos_identity, type: identity }, { name: cyclades_compute, type: compute } ] }",
        );
        let names: Vec<Value> = c
            .catalog()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].clone())
            .collect();
        assert_eq!(
            names,
            ["astakos_account", "astakos_identity", "cyclades_compute"]
        );
        assert_eq!(
            c.catalog()[1],
            json!({"name": "astakos_identity", "type": "identity"})
        );
        // Without a public URL: no entry, and a warning when enabled.
        assert_eq!(config("enabled: true").catalog(), json!([]));
        assert_eq!(config("enabled: true").warnings().len(), 1);
        assert!(config("enabled: false").warnings().is_empty());
    }

    #[test]
    fn bad_values_name_the_key() {
        let cases = [
            ("prefix: astakos", "astakos_api.prefix"),
            ("prefix: [/ok, \"/a b\"]", "astakos_api.prefix[1]"),
            ("prefix: //x", "astakos_api.prefix"),
            ("prefix: /auth", "astakos_api.prefix"),
            ("prefix: /auth/astakos", "astakos_api.prefix"),
            ("prefix: []", "astakos_api.prefix"),
            ("public_url: cloud.example.org", "astakos_api.public_url"),
            ("public_url: \"https://x/?a=b\"", "astakos_api.public_url"),
            ("service_catalog: { a: b }", "astakos_api.service_catalog"),
            (
                "service_catalog: [ { type: x } ]",
                "astakos_api.service_catalog[0]",
            ),
            ("service_scope: \"\"", "astakos_api.service_scope"),
            ("scope: \"a,b\"", "astakos_api.scope"),
        ];
        for (yaml, key) in cases {
            let err = config(yaml).validate().unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
        for yaml in [
            "prefix: /",
            "prefix: [/, /astakos, /_astakos/]",
            "public_url: \"http://127.0.0.1:8080/astakos\"",
        ] {
            config(yaml).validate().unwrap();
        }
    }
}
