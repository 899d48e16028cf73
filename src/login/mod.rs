//! Browser sign-in (OpenID Connect authorization code with PKCE S256): `/oauth2/start`
//! sends the browser to its issuer with `state`, `nonce` and a code challenge bound to a
//! signed pre-login cookie; `/oauth2/callback` checks `state` (once), exchanges the code
//! with the verifier, verifies the ID token (signature, `iss`, `aud`, `azp`, `nonce`,
//! `exp`) and creates a new server-side session (a new id at every sign-in); sign-out and
//! back-channel logout end sessions (`logout`). The `session` provider then turns the
//! cookie into an identity on every decision, refreshing the IdP's tokens through
//! [`Login`] as a [`SessionRefresher`].
//!
//! The HTTP client is the one every provider shares (reqwest with rustls); ID and logout
//! tokens are verified by the `jwt` provider's verifier (jsonwebtoken with ring), one per
//! issuer with the client id as audience.

mod callback;
mod config;
mod cookie;
mod logout;
mod page;
mod redirect;
mod refresh;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderValue, StatusCode};

pub use config::{CookieConfig, IssuerConfig, LoginConfig};
pub use cookie::SessionCookie;
pub use logout::{MAX_LOGOUT_BODY, same_origin};
pub use redirect::safe_return;

use crate::policy::HostPattern;
use crate::providers::{
    AuthError, ClientAuth, JwtConfig, JwtProvider, SessionIssuer, SessionProvider, SessionRefresher,
};
use crate::secret::{random_bytes, sha256};
use crate::setting::ConfigError;
use crate::store::Store;
use cookie::PreLogin;

/// What a sign-in endpoint answers: a redirect or a page, with cookies to set.
#[derive(Debug)]
pub struct LoginReply {
    /// 302, 200 or an error status.
    pub status: StatusCode,
    /// `Location` of a redirect.
    pub location: Option<String>,
    /// HTML of a page.
    pub html: Option<String>,
    /// `Set-Cookie` values.
    pub cookies: Vec<HeaderValue>,
    /// Sessions ended (their hashes: the decision cache's keys) to drop from the cache.
    pub ended: Vec<[u8; 32]>,
}

impl LoginReply {
    fn redirect(location: String, cookies: Vec<HeaderValue>) -> Self {
        Self {
            status: StatusCode::FOUND,
            location: Some(location),
            html: None,
            cookies,
            ended: Vec::new(),
        }
    }
}

/// Why a sign-in endpoint failed; `server::respond` turns it into a page.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// A request the endpoint cannot take (400).
    #[error("{0}")]
    BadRequest(&'static str),
    /// The pre-login cookie is missing, forged or expired (400).
    #[error("this sign-in has expired or was started in another browser; please start again")]
    NoLoginState,
    /// `state` does not match, or was used before (400).
    #[error("this sign-in answer is not for this browser or was used already")]
    BadState,
    /// The IdP said no (`error=access_denied`, ...) (403).
    #[error("the identity provider refused the sign-in: {0}")]
    Denied(String),
    /// The IdP's tokens did not verify (400).
    #[error("the identity provider's answer is not acceptable: {0}")]
    BadAnswer(String),
    /// A cross-site request to an endpoint that changes state (403).
    #[error("cross-site requests are refused here")]
    CrossSite,
    /// The IdP or the store could not be asked (503).
    #[error("sign-in is unavailable: {0}")]
    Unavailable(String),
}

impl LoginError {
    /// The status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::NoLoginState | Self::BadState | Self::BadAnswer(_) => {
                StatusCode::BAD_REQUEST
            }
            Self::Denied(_) | Self::CrossSite => StatusCode::FORBIDDEN,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The page that shows it.
    pub fn html(&self) -> String {
        page::error_page("Sign-in failed", &self.to_string())
    }
}

impl From<AuthError> for LoginError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unavailable(why) => Self::Unavailable(why),
            other => Self::BadAnswer(other.to_string()),
        }
    }
}

/// One configured issuer, ready.
struct Issuer {
    config: IssuerConfig,
    client: ClientAuth,
    verifier: Arc<JwtProvider>,
}

/// Browser sign-in, built once at start from `login`.
pub struct Login {
    issuers: Vec<Issuer>,
    redirect_url: String,
    cookie: SessionCookie,
    lifetime: Duration,
    login_timeout: Duration,
    state_key: ring::hmac::Key,
    post_logout: String,
    return_hosts: Vec<HostPattern>,
    used_states: moka::sync::Cache<[u8; 32], ()>,
    used_jtis: moka::sync::Cache<String, ()>,
    store: Arc<dyn Store>,
    http: reqwest::Client,
}

impl Login {
    /// From a validated, enabled `login`; `return_hosts` are the hosts `rd` may name.
    pub fn new(
        config: &LoginConfig,
        return_hosts: Vec<HostPattern>,
        store: Arc<dyn Store>,
        http: reqwest::Client,
    ) -> Result<Arc<Self>, ConfigError> {
        let mut issuers = Vec::with_capacity(config.issuers.len());
        for (i, c) in config.issuers.iter().enumerate() {
            let key = format!("login.issuers[{i}]");
            let jwt = JwtConfig {
                issuer: c.issuer.clone(),
                jwks_uri: None,
                audiences: vec![c.client_id.clone()],
                algorithms: vec![
                    "RS256".into(),
                    "ES256".into(),
                    "EdDSA".into(),
                    "PS256".into(),
                ],
                typ: None,
                leeway: c.leeway,
                refetch_interval: Duration::from_secs(30),
                jwks_max_age: Duration::from_secs(900),
                timeout: c.timeout,
                claims: c.claims.clone(),
            };
            issuers.push(Issuer {
                config: c.clone(),
                client: c.client().load(&key)?,
                verifier: JwtProvider::new(&jwt, http.clone()),
            });
        }
        let secret = crate::setting::from_value_or_file(
            "login",
            "state_secret",
            config.state_secret.as_ref(),
            config.state_secret_file.as_deref(),
        )?;
        let key_bytes: Vec<u8> = match secret {
            Some(s) if s.expose().len() >= 32 => s.expose().as_bytes().to_vec(),
            Some(_) => {
                return Err(ConfigError::invalid(
                    "login.state_secret",
                    "must be at least 32 bytes",
                ));
            }
            None => random_bytes::<32>()
                .map_err(|e| ConfigError::invalid("login.state_secret", e.to_string()))?
                .to_vec(),
        };
        Ok(Arc::new(Self {
            issuers,
            redirect_url: config.redirect_url.clone().unwrap_or_default(),
            cookie: SessionCookie::new(&config.cookie, config.lifetime.as_secs()),
            lifetime: config.lifetime,
            login_timeout: config.login_timeout,
            state_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes),
            post_logout: config.post_logout_redirect_url.clone(),
            return_hosts,
            used_states: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(config.login_timeout)
                .build(),
            used_jtis: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            store,
            http,
        }))
    }

    /// The `session` provider for these issuers.
    pub fn session_provider(self: &Arc<Self>, config: &LoginConfig) -> SessionProvider {
        let issuers = self
            .issuers
            .iter()
            .map(|i| SessionIssuer {
                name: i.config.name.clone(),
                issuer: i.config.issuer.clone(),
                claims: i.config.claims.clone(),
            })
            .collect();
        let refresher: Arc<dyn SessionRefresher> = self.clone();
        SessionProvider::new(
            self.store.clone(),
            issuers,
            config.idle_timeout,
            config.refresh_before,
            Some(refresher),
        )
    }

    /// The session cookie's name.
    pub fn cookie_name(&self) -> &str {
        self.cookie.name()
    }

    fn issuer(&self, name: &str) -> Option<&Issuer> {
        self.issuers.iter().find(|i| i.config.name == name)
    }

    /// `/oauth2/start?rd=<url>[&issuer=<name>]`.
    pub async fn start(&self, query: Option<&str>) -> Result<LoginReply, LoginError> {
        let (mut rd, mut issuer) = (None, None);
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match &*k {
                "rd" => &mut rd,
                "issuer" => &mut issuer,
                _ => continue,
            };
            if slot.is_some() {
                return Err(LoginError::BadRequest("a parameter is repeated"));
            }
            *slot = Some(v.into_owned());
        }
        let return_to = safe_return(rd.as_deref().unwrap_or("/"), &self.return_hosts);
        let issuer = match (issuer, self.issuers.as_slice()) {
            (Some(name), _) => self
                .issuer(&name)
                .ok_or(LoginError::BadRequest("no such issuer"))?,
            (None, [only]) => only,
            (None, _) => return Ok(self.chooser(&return_to)),
        };
        let authorize = issuer.verifier.discovered("authorization_endpoint").await?;
        let random = || {
            random_bytes::<32>()
                .map(|b| URL_SAFE_NO_PAD.encode(b))
                .map_err(|e| LoginError::Unavailable(e.to_string()))
        };
        let pre = PreLogin {
            state: random()?,
            nonce: random()?,
            verifier: random()?,
            issuer: issuer.config.name.clone(),
            return_to,
            expires_at: crate::unix_now() + self.login_timeout.as_secs() as i64,
        };
        let challenge = URL_SAFE_NO_PAD.encode(sha256(pre.verifier.as_bytes()));
        let scope = issuer.config.scopes.join(" ");
        let params: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &issuer.config.client_id)
            .append_pair("redirect_uri", &self.redirect_url)
            .append_pair("scope", &scope)
            .append_pair("state", &pre.state)
            .append_pair("nonce", &pre.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        let sep = if authorize.contains('?') { '&' } else { '?' };
        let cookie = self
            .cookie
            .set_prelogin(&pre.seal(&self.state_key), self.login_timeout.as_secs())
            .ok_or(LoginError::BadRequest("the return URL is too long"))?;
        Ok(LoginReply::redirect(
            format!("{authorize}{sep}{params}"),
            vec![cookie],
        ))
    }

    fn chooser(&self, return_to: &str) -> LoginReply {
        let links: Vec<(String, String)> = self
            .issuers
            .iter()
            .map(|i| {
                let q = form_urlencoded::Serializer::new(String::new())
                    .append_pair("issuer", &i.config.name)
                    .append_pair("rd", return_to)
                    .finish();
                let label = i
                    .config
                    .display_name
                    .clone()
                    .unwrap_or(i.config.name.clone());
                (label, format!("/oauth2/start?{q}"))
            })
            .collect();
        LoginReply {
            status: StatusCode::OK,
            location: None,
            html: Some(page::chooser(&links)),
            cookies: Vec::new(),
            ended: Vec::new(),
        }
    }
}
