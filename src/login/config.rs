//! `login`: browser sign-in at one or more OpenID Connect issuers, and the session cookie.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::providers::{ClaimMapping, ClientAuthMethod, ClientConfig};
use crate::secret::Secret;
use crate::setting::ConfigError;

/// The cookie name without a domain: `__Host-` makes browsers refuse it unless it is
/// Secure, host-only and for `/`, so that a sibling host cannot plant one.
pub const HOST_COOKIE: &str = "__Host-authgate";
/// The cookie name with a `Domain` (or in development over plain HTTP).
pub const PLAIN_COOKIE: &str = "authgate";

/// `login`: absent or without issuers, browser sign-in is off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoginConfig {
    /// The issuers users may sign in with (a chooser page when there are several).
    pub issuers: Vec<IssuerConfig>,
    /// The absolute URL of authgate's `/oauth2/callback` as the browser reaches it (the
    /// `redirect_uri` registered at every issuer).
    pub redirect_url: Option<String>,
    /// The session cookie.
    pub cookie: CookieConfig,
    /// Absolute lifetime of a session.
    #[serde(with = "humantime_serde")]
    pub lifetime: Duration,
    /// A session unused for this long ends.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// How long a sign-in may take at the IdP (the pre-login cookie's lifetime).
    #[serde(with = "humantime_serde")]
    pub login_timeout: Duration,
    /// How long before the IdP's access token expires it is refreshed (with a refresh
    /// token; ask for `offline_access` to get one).
    #[serde(with = "humantime_serde")]
    pub refresh_before: Duration,
    /// Key of the pre-login cookie's signature (32 bytes or more); every replica needs the
    /// same. Absent: a random key per process (a sign-in must then end at the replica it
    /// started at).
    pub state_secret: Option<Secret>,
    /// A file holding `state_secret`.
    pub state_secret_file: Option<PathBuf>,
    /// Where the browser goes after sign-out (an absolute URL on a host of
    /// `server.redirect_hosts`, or a path). Registered at the IdP as a
    /// `post_logout_redirect_uri` when RP-initiated logout is on.
    pub post_logout_redirect_url: String,
}

impl Default for LoginConfig {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            redirect_url: None,
            cookie: CookieConfig::default(),
            lifetime: Duration::from_secs(24 * 3600),
            idle_timeout: Duration::from_secs(3600),
            login_timeout: Duration::from_secs(600),
            refresh_before: Duration::from_secs(30),
            state_secret: None,
            state_secret_file: None,
            post_logout_redirect_url: "/".into(),
        }
    }
}

/// `login.issuers[]`: one OpenID Connect issuer and authgate's client there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// Short name (`[a-z0-9_-]`): `?issuer=<name>` and what each session records.
    pub name: String,
    /// What the chooser page shows; absent: the name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Exact `iss` (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    /// authgate's client id at the issuer.
    pub client_id: String,
    /// Its secret (prefer `client_secret_file`).
    #[serde(default)]
    pub client_secret: Option<Secret>,
    /// A file holding the secret.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// `client_secret_basic` (default), `client_secret_post` or `none`.
    #[serde(default)]
    pub client_auth: ClientAuthMethod,
    /// Scopes asked for (`openid` is needed; `offline_access` for refresh tokens).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Whether the userinfo endpoint's claims are added to the ID token's.
    #[serde(default)]
    pub userinfo: bool,
    /// Whether sign-out also ends the session at the IdP (RP-initiated logout at its
    /// `end_session_endpoint`, with `id_token_hint`).
    #[serde(default)]
    pub end_session: bool,
    /// Time limit of one call to the issuer.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Clock leeway for the ID token's dates.
    #[serde(default = "default_leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// How the ID token's claims become the identity (as for `jwt`).
    #[serde(default)]
    pub claims: ClaimMapping,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "profile".into(), "email".into()]
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_leeway() -> Duration {
    Duration::from_secs(60)
}

/// `login.cookie`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CookieConfig {
    /// The name; absent: `__Host-authgate`, or `authgate` with a `domain` or without
    /// `secure`.
    pub name: Option<String>,
    /// A parent domain for single sign-on across its sub-domains (drops the `__Host-`
    /// prefix); absent: the host that set it only.
    pub domain: Option<String>,
    /// `Secure` (HTTPS only). `false` is for development over plain HTTP only.
    pub secure: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        Self {
            name: None,
            domain: None,
            secure: true,
        }
    }
}

impl CookieConfig {
    /// The cookie's name.
    pub fn name(&self) -> &str {
        match &self.name {
            Some(n) => n,
            None if self.domain.is_none() && self.secure => HOST_COOKIE,
            None => PLAIN_COOKIE,
        }
    }
}

impl IssuerConfig {
    /// The client as the OIDC helpers take it.
    pub fn client(&self) -> ClientConfig {
        ClientConfig {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            client_secret_file: self.client_secret_file.clone(),
            client_auth: self.client_auth,
        }
    }
}

fn absolute_url(key: &str, url: &str) -> Result<http::Uri, ConfigError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| ConfigError::invalid(key, "must be an absolute http(s) URL"))?;
    let ok = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri
            .authority()
            .is_some_and(|a| !a.host().is_empty() && !a.as_str().contains('@'))
        && !url.contains('#');
    if !ok {
        return Err(ConfigError::invalid(
            key,
            "must be an absolute http(s) URL without userinfo or fragment",
        ));
    }
    Ok(uri)
}

impl LoginConfig {
    /// Whether browser sign-in is on.
    pub fn enabled(&self) -> bool {
        !self.issuers.is_empty()
    }

    /// Rejects values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let Some(url) = &self.redirect_url else {
            return Err(ConfigError::invalid(
                "login.redirect_url",
                "needed with login.issuers (the URL of /oauth2/callback)",
            ));
        };
        let uri = absolute_url("login.redirect_url", url)?;
        if uri.path() != "/oauth2/callback" || uri.query().is_some() {
            return Err(ConfigError::invalid(
                "login.redirect_url",
                "must end with the path /oauth2/callback (and no query)",
            ));
        }
        for (key, d) in [
            ("login.lifetime", self.lifetime),
            ("login.idle_timeout", self.idle_timeout),
            ("login.login_timeout", self.login_timeout),
        ] {
            if d.as_secs() == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1s"));
            }
        }
        if self.state_secret.is_some() && self.state_secret_file.is_some() {
            return Err(ConfigError::invalid(
                "login.state_secret",
                "give state_secret or state_secret_file, not both",
            ));
        }
        let p = &self.post_logout_redirect_url;
        if !p.starts_with('/') || p.starts_with("//") || p.contains('\\') {
            absolute_url("login.post_logout_redirect_url", p)?;
        }
        self.validate_cookie()?;
        for (i, issuer) in self.issuers.iter().enumerate() {
            let key = format!("login.issuers[{i}]");
            let name = &issuer.name;
            if name.is_empty()
                || name.len() > 32
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    "must be 1 to 32 of a-z, 0-9, '_' and '-'",
                ));
            }
            if self.issuers[..i].iter().any(|o| &o.name == name) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!("'{name}' is listed twice"),
                ));
            }
            absolute_url(&format!("{key}.issuer"), &issuer.issuer)?;
            if !issuer.scopes.iter().any(|s| s == "openid") {
                return Err(ConfigError::invalid(
                    format!("{key}.scopes"),
                    "must hold openid",
                ));
            }
            if issuer.timeout.is_zero() {
                return Err(ConfigError::invalid(
                    format!("{key}.timeout"),
                    "must be above zero",
                ));
            }
            if issuer.client_id.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{key}.client_id"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }

    fn validate_cookie(&self) -> Result<(), ConfigError> {
        let c = &self.cookie;
        let name = c.name();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(ConfigError::invalid(
                "login.cookie.name",
                "must be letters, digits, '-', '_' and '.'",
            ));
        }
        if name.starts_with("__Host-") && (c.domain.is_some() || !c.secure) {
            return Err(ConfigError::invalid(
                "login.cookie.name",
                "a __Host- cookie needs secure: true and no domain",
            ));
        }
        if name.starts_with("__Secure-") && !c.secure {
            return Err(ConfigError::invalid(
                "login.cookie.name",
                "a __Secure- cookie needs secure: true",
            ));
        }
        if let Some(d) = &c.domain
            && (d.is_empty()
                || !d
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
        {
            return Err(ConfigError::invalid(
                "login.cookie.domain",
                "must be a domain name",
            ));
        }
        Ok(())
    }

    /// What `check-config` warns about.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.enabled() && !self.cookie.secure {
            out.push(
                "login.cookie.secure is false: the session cookie travels over plain HTTP \
                 (development only)"
                    .to_owned(),
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "login: { redirect_url: \"https://auth.example.org/oauth2/callback\", \
        issuers: [ { name: main, issuer: \"https://idp.example.org\", client_id: gw, client_secret: s } ]";

    #[test]
    fn accepted_and_refused() {
        let ok = Config::from_yaml(&format!("{BASE} }}")).unwrap();
        assert_eq!(ok.login.cookie.name(), "__Host-authgate");
        let dev = Config::from_yaml(&format!("{BASE}, cookie: {{ secure: false }} }}")).unwrap();
        assert_eq!(dev.login.cookie.name(), "authgate");
        assert_eq!(dev.login.warnings().len(), 1);
        let sso =
            Config::from_yaml(&format!("{BASE}, cookie: {{ domain: example.org }} }}")).unwrap();
        assert_eq!(sso.login.cookie.name(), "authgate");
        let cases = [
            (
                "login: { issuers: [ { name: main, issuer: \"https://idp\", client_id: gw } ] }",
                "login.redirect_url",
            ),
            (
                "login: { redirect_url: \"https://a.example.org/cb\", issuers: [ { name: main, issuer: \"https://idp\", client_id: gw } ] }",
                "login.redirect_url",
            ),
            (
                &format!("{BASE}, cookie: {{ name: \"__Host-x\", domain: example.org }} }}"),
                "login.cookie.name",
            ),
            (
                &format!("{BASE}, cookie: {{ name: \"__Secure-x\", secure: false }} }}"),
                "login.cookie.name",
            ),
            (
                &format!("{BASE}, idle_timeout: 0s }}"),
                "login.idle_timeout",
            ),
            (
                &format!("{BASE}, post_logout_redirect_url: \"//evil.example\" }}"),
                "login.post_logout_redirect_url",
            ),
            (
                "login: { redirect_url: \"https://a.example.org/oauth2/callback\", issuers: [ { name: Main, issuer: \"https://idp\", client_id: gw } ] }",
                "login.issuers[0].name",
            ),
            (
                "login: { redirect_url: \"https://a.example.org/oauth2/callback\", issuers: [ { name: a, issuer: \"https://idp\", client_id: gw, scopes: [email] } ] }",
                "login.issuers[0].scopes",
            ),
            (
                "login: { redirect_url: \"https://a.example.org/oauth2/callback\", issuers: [ { name: a, issuer: \"https://idp\", client_id: gw }, { name: a, issuer: \"https://idp2\", client_id: gw } ] }",
                "login.issuers[1].name",
            ),
        ];
        for (yaml, key) in cases {
            let e = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(e.contains(key), "{yaml}: {e}");
        }
    }
}
