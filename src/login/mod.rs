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

mod config;
mod cookie;
mod logout;
mod page;
mod redirect;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::Value;

pub use config::{CookieConfig, IssuerConfig, LoginConfig};
pub use cookie::SessionCookie;
pub use logout::{MAX_LOGOUT_BODY, same_origin};
pub use redirect::safe_return;

use crate::credential::Credential;
use crate::policy::HostPattern;
use crate::providers::{
    AuthError, ClientAuth, JwtConfig, JwtProvider, SessionIssuer, SessionProvider, SessionRefresher,
};
use crate::secret::{Secret, constant_time_eq, random_bytes, sha256};
use crate::setting::ConfigError;
use crate::store::{SessionRecord, Store};
use cookie::{PreLogin, cookie_value};

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

    /// `/oauth2/callback?code=..&state=..` (or `?error=..`).
    pub async fn callback(
        &self,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Result<LoginReply, LoginError> {
        let mut q: std::collections::HashMap<String, String> = Default::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if q.insert(k.into_owned(), v.into_owned()).is_some() {
                return Err(LoginError::BadRequest("a parameter is repeated"));
            }
        }
        let now = crate::unix_now();
        let pre = cookie_value(headers, self.cookie.prelogin_name())
            .and_then(|v| PreLogin::open(v, &self.state_key, now))
            .ok_or(LoginError::NoLoginState)?;
        let state = q.get("state").ok_or(LoginError::BadState)?;
        if !constant_time_eq(state.as_bytes(), pre.state.as_bytes()) {
            return Err(LoginError::BadState);
        }
        // Single use: a replayed answer (the same state again) is refused.
        if !self
            .used_states
            .entry(sha256(state.as_bytes()))
            .or_insert(())
            .is_fresh()
        {
            return Err(LoginError::BadState);
        }
        if let Some(error) = q.get("error") {
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            return Err(LoginError::Denied(code));
        }
        let issuer = self.issuer(&pre.issuer).ok_or(LoginError::NoLoginState)?;
        // RFC 9207: an issuer named in the answer must be the one asked.
        if q.get("iss").is_some_and(|iss| iss != &issuer.config.issuer) {
            return Err(LoginError::BadAnswer(
                "the answer names another issuer".into(),
            ));
        }
        let code = q.get("code").ok_or(LoginError::BadRequest("no code"))?;
        let token_endpoint = issuer.verifier.discovered("token_endpoint").await?;
        let (status, body) = issuer
            .client
            .post_form(
                &self.http,
                &token_endpoint,
                vec![
                    ("grant_type", "authorization_code".into()),
                    ("code", code.clone()),
                    ("redirect_uri", self.redirect_url.clone()),
                    ("code_verifier", pre.verifier.clone()),
                ],
                issuer.config.timeout,
            )
            .await?;
        if status != 200 {
            let error = body["error"].as_str().unwrap_or("no error code").to_owned();
            tracing::info!(issuer = %issuer.config.name, status, %error, "code exchange refused");
            return Err(LoginError::BadAnswer(format!(
                "the code was refused ({error})"
            )));
        }
        let id_token = body["id_token"]
            .as_str()
            .ok_or_else(|| LoginError::BadAnswer("no ID token".into()))?;
        let mut claims = issuer.verifier.verify(id_token).await?;
        let nonce = claims["nonce"].as_str().unwrap_or("");
        if !constant_time_eq(nonce.as_bytes(), pre.nonce.as_bytes()) {
            return Err(LoginError::BadAnswer(
                "the ID token's nonce is not this sign-in's".into(),
            ));
        }
        check_azp(&claims, &issuer.config.client_id)?;
        let access_token = body["access_token"].as_str().map(str::to_owned);
        if issuer.config.userinfo
            && let Some(token) = &access_token
        {
            self.add_userinfo(issuer, token, &mut claims).await?;
        }
        let sub = claims["sub"].as_str().unwrap_or("").to_owned();
        // The mapping must accept the identity now, not at the first decision.
        issuer.config.claims.identity(
            &claims,
            SessionProvider::KIND,
            &issuer.config.issuer,
            None,
        )?;
        let value = Secret::new(
            URL_SAFE_NO_PAD
                .encode(random_bytes::<32>().map_err(|e| LoginError::Unavailable(e.to_string()))?),
        );
        let record = SessionRecord {
            hash: Credential::Session(value.clone()).cache_key(),
            issuer: issuer.config.name.clone(),
            subject: sub,
            sid: claims["sid"].as_str().map(str::to_owned),
            claims: claims.to_string(),
            id_token: Secret::new(id_token),
            refresh_token: body["refresh_token"].as_str().map(Secret::new),
            access_expires_at: body["expires_in"].as_i64().map(|s| now + s),
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.lifetime.as_secs() as i64,
        };
        self.store
            .insert_session(&record)
            .await
            .map_err(|e| LoginError::Unavailable(e.to_string()))?;
        // A session the browser still held is over: a sign-in never continues one.
        let mut ended = Vec::new();
        if let Ok(Some(old)) = crate::credential::session_cookie(headers, self.cookie.name()) {
            let hash = old.cache_key();
            if self.store.delete_session(&hash).await.unwrap_or(false) {
                ended.push(hash);
            }
        }
        tracing::info!(issuer = %issuer.config.name, "signed in");
        let cookies = [self.cookie.set(&value), self.cookie.clear_prelogin()]
            .into_iter()
            .flatten()
            .collect();
        let mut reply = LoginReply::redirect(pre.return_to, cookies);
        reply.ended = ended;
        Ok(reply)
    }

    async fn add_userinfo(
        &self,
        issuer: &Issuer,
        access_token: &str,
        claims: &mut Value,
    ) -> Result<(), LoginError> {
        let url = issuer.verifier.discovered("userinfo_endpoint").await?;
        let response = self
            .http
            .get(&url)
            .bearer_auth(access_token)
            .timeout(issuer.config.timeout)
            .send()
            .await
            .map_err(|e| LoginError::Unavailable(format!("userinfo: {e}")))?;
        if !response.status().is_success() {
            return Err(LoginError::Unavailable(format!(
                "userinfo answered {}",
                response.status()
            )));
        }
        let info: Value = response
            .json()
            .await
            .map_err(|e| LoginError::BadAnswer(format!("userinfo is not JSON: {e}")))?;
        if info["sub"] != claims["sub"] {
            return Err(LoginError::BadAnswer(
                "userinfo names another subject".into(),
            ));
        }
        if let (Some(into), Some(from)) = (claims.as_object_mut(), info.as_object()) {
            for (k, v) in from {
                // The ID token's own claims (iss, aud, nonce, ...) are kept as signed.
                into.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        Ok(())
    }
}

/// `azp` (OIDC Core 3.1.3.7): when present it must be this client; with several
/// audiences it must be present.
fn check_azp(claims: &Value, client_id: &str) -> Result<(), LoginError> {
    let several = claims["aud"].as_array().is_some_and(|a| a.len() > 1);
    match claims["azp"].as_str() {
        Some(azp) if azp != client_id => Err(LoginError::BadAnswer(
            "the ID token was issued to another client (azp)".into(),
        )),
        None if several => Err(LoginError::BadAnswer(
            "the ID token has several audiences and no azp".into(),
        )),
        _ => Ok(()),
    }
}

#[async_trait]
impl SessionRefresher for Login {
    async fn refresh(&self, session: &SessionRecord) -> Result<Option<SessionRecord>, AuthError> {
        let (Some(issuer), Some(refresh_token)) =
            (self.issuer(&session.issuer), &session.refresh_token)
        else {
            return Ok(Some(session.clone()));
        };
        let token_endpoint = issuer.verifier.discovered("token_endpoint").await?;
        let (status, body) = issuer
            .client
            .post_form(
                &self.http,
                &token_endpoint,
                vec![
                    ("grant_type", "refresh_token".into()),
                    ("refresh_token", refresh_token.expose().to_owned()),
                ],
                issuer.config.timeout,
            )
            .await?;
        if status == 400 || status == 401 {
            tracing::info!(issuer = %issuer.config.name, status, "refresh refused: the session ends");
            return Ok(None);
        }
        if status != 200 {
            return Err(AuthError::Unavailable(format!(
                "the token endpoint answered {status} to a refresh"
            )));
        }
        let now = crate::unix_now();
        let mut updated = session.clone();
        if let Some(rt) = body["refresh_token"].as_str() {
            updated.refresh_token = Some(Secret::new(rt));
        }
        updated.access_expires_at = body["expires_in"].as_i64().map(|s| now + s);
        if let Some(id_token) = body["id_token"].as_str()
            && let Ok(claims) = issuer.verifier.verify(id_token).await
            && claims["sub"].as_str() == Some(session.subject.as_str())
        {
            updated.id_token = Secret::new(id_token);
        }
        match self.store.replace_session(&updated).await {
            Ok(true) => Ok(Some(updated)),
            Ok(false) => Ok(None),
            Err(e) => Err(AuthError::Unavailable(format!("session store: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn azp_table() {
        let cases = [
            (json!({"aud": "gw"}), true),
            (json!({"aud": "gw", "azp": "gw"}), true),
            (json!({"aud": "gw", "azp": "other"}), false),
            (json!({"aud": ["gw", "x"], "azp": "gw"}), true),
            (json!({"aud": ["gw", "x"]}), false),
            (json!({"aud": ["gw"]}), true),
        ];
        for (claims, ok) in cases {
            assert_eq!(check_azp(&claims, "gw").is_ok(), ok, "{claims}");
        }
    }
}
