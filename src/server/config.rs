//! `server`: the data-plane listener and what the decision endpoints answer with.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::policy::HostPattern;
use crate::setting::ConfigError;

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
    /// After SIGTERM, how long `/readyz` answers 503 while both listeners keep serving, so
    /// that load balancers stop sending before the listeners close.
    #[serde(with = "humantime_serde")]
    pub drain_delay: Duration,
    /// How long in-flight requests may take to finish once the listeners have closed.
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
    /// The base URL under which backends reach authgate's `/.well-known/` documents (an
    /// absolute http(s) URL without a trailing slash): the discovery documents' `jwks_uri`
    /// is `<public_url>/.well-known/jwks.json`. Absent: `mint.issuer`.
    pub public_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            trusted_proxies: Vec::new(),
            max_header_bytes: 16 * 1024,
            drain_delay: Duration::from_secs(5),
            shutdown_timeout: Duration::from_secs(10),
            signin_url: None,
            redirect_hosts: None,
            envoy_redirect: false,
            realm: "authgate".to_owned(),
            public_url: None,
        }
    }
}

impl ServerConfig {
    /// Rejects values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_header_bytes < 1024 || self.max_header_bytes > 1024 * 1024 {
            return Err(ConfigError::invalid(
                "server.max_header_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        if self.realm.is_empty() || self.realm.contains(['"', '\\']) {
            return Err(ConfigError::invalid(
                "server.realm",
                "must be non-empty and contain no quote or backslash",
            ));
        }
        if let Some(url) = &self.signin_url
            && let Some(why) = signin_url_problem(url)
        {
            return Err(ConfigError::invalid("server.signin_url", why));
        }
        if let Some(url) = &self.public_url
            && let Some(why) = public_url_problem(url)
        {
            return Err(ConfigError::invalid("server.public_url", why));
        }
        for (i, host) in self.redirect_hosts.iter().flatten().enumerate() {
            HostPattern::parse_listed(host)
                .map_err(|why| ConfigError::invalid(format!("server.redirect_hosts[{i}]"), why))?;
        }
        Ok(())
    }
}

/// Why `server.public_url` cannot be the base of `jwks_uri`, if it cannot: an absolute
/// `http(s)` URL with a host, and nothing after its path (no query, no fragment, no
/// trailing slash), because `/.well-known/jwks.json` is appended to it as text.
fn public_url_problem(url: &str) -> Option<&'static str> {
    if let Some(why) = signin_url_problem(url) {
        return Some(why);
    }
    if url.contains('?') {
        return Some("must not hold a query ('?')");
    }
    if url.ends_with('/') {
        return Some("must not end with '/' (/.well-known/jwks.json is appended)");
    }
    None
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
