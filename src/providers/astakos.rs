//! `astakos`: tokens of GRNET's Astakos (synnefo), validated as the synnefo services do
//! (ASTAKOS.md): `POST {base}/identity/v2.0/tokens` with `{"auth":{"token":{"id":T}}}`, or in
//! `legacy` mode `GET {base}/im/authenticate` with `X-Auth-Token` (0.13; flat JSON, epoch
//! milliseconds). Retries follow astakosclient: up to `retries` more attempts on 5xx and
//! connection errors, none on 401/404; then 503 (fail closed).

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;

use super::health::{Health, probe};
use super::{AuthContext, AuthError, Provider, Unhealthy};
use crate::credential::Credential;
use crate::identity::{ASTAKOS, AttributeValue, Attributes, Identity};
use crate::setting::ConfigError;

/// `type: astakos` options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AstakosConfig {
    /// Astakos base URL (`ASTAKOS_BASE_URL`, e.g. `https://accounts.example.org/astakos`);
    /// a URL ending in `/identity/v2.0` (an `ASTAKOS_AUTH_URL`) is accepted too.
    pub url: String,
    /// `tokens` (0.14+, default) or `legacy` (`/im/authenticate`, 0.13).
    #[serde(default)]
    pub mode: AstakosMode,
    /// Also take the token from `?X-Auth-Token=` of the original URL, as synnefo services do.
    #[serde(default)]
    pub query_token: bool,
    /// Also take `Authorization: Bearer` tokens (not only `X-Auth-Token`).
    #[serde(default = "yes")]
    pub bearer: bool,
    /// Time limit of one call.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Extra attempts after a 5xx or a connection error (astakosclient: 2).
    #[serde(default = "default_retries")]
    pub retries: u32,
}

/// Which Astakos endpoint generation to call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AstakosMode {
    /// `POST /identity/v2.0/tokens` (0.14 and later).
    #[default]
    Tokens,
    /// `GET /im/authenticate` (0.13).
    Legacy,
}

fn yes() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retries() -> u32 {
    2
}

impl AstakosConfig {
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                format!("{key}.url"),
                "must be an http(s) URL",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(
                format!("{key}.timeout"),
                "must be longer than 0s",
            ));
        }
        if self.retries > 5 {
            return Err(ConfigError::invalid(
                format!("{key}.retries"),
                "must be at most 5",
            ));
        }
        Ok(())
    }
}

/// The `astakos` provider.
pub struct AstakosProvider {
    client: reqwest::Client,
    endpoint: String,
    /// The base URL, which qualifies the subjects (the same for both modes).
    base: String,
    config: AstakosConfig,
    health: Health,
}

/// One attempt's outcome.
enum Attempt {
    Done(Result<Identity, AuthError>),
    Retry(String),
}

impl AstakosProvider {
    /// Type name.
    pub const KIND: &'static str = "astakos";

    /// Over the shared HTTP client.
    pub fn new(config: &AstakosConfig, client: reqwest::Client) -> Self {
        let base = config.url.trim_end_matches('/');
        let base = base.strip_suffix("/identity/v2.0").unwrap_or(base);
        let endpoint = match config.mode {
            AstakosMode::Tokens => format!("{base}/identity/v2.0/tokens"),
            AstakosMode::Legacy => format!("{base}/im/authenticate"),
        };
        Self {
            client,
            endpoint,
            base: base.to_owned(),
            config: config.clone(),
            health: Health::default(),
        }
    }

    async fn attempt(&self, token: &str, ctx: &AuthContext) -> Attempt {
        let request = match self.config.mode {
            AstakosMode::Tokens => self
                .client
                .post(&self.endpoint)
                .json(&serde_json::json!({"auth": {"token": {"id": token}}})),
            AstakosMode::Legacy => self.client.get(&self.endpoint),
        };
        let response = request
            .header("X-Auth-Token", token)
            .header("X-Client-IP", ctx.client_ip.to_string())
            .timeout(self.config.timeout)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return Attempt::Retry(format!("Astakos unreachable: {e}")),
        };
        let status = response.status().as_u16();
        let body = match response.bytes().await {
            Ok(b) => b,
            Err(e) => return Attempt::Retry(format!("Astakos answer cut short: {e}")),
        };
        match status {
            200 => Attempt::Done(
                match self.config.mode {
                    AstakosMode::Tokens => identity_from_access(&body),
                    AstakosMode::Legacy => identity_from_legacy(&body),
                }
                .and_then(|i| super::foreign_identity(i, ASTAKOS, &self.base)),
            ),
            401 => Attempt::Done(Err(AuthError::Invalid(unauthorized_reason(&body)))),
            400 => Attempt::Done(Err(AuthError::Invalid(
                "Astakos rejected the token request",
            ))),
            404 => Attempt::Done(Err(AuthError::Invalid("token unknown to Astakos"))),
            s => Attempt::Retry(format!("Astakos answered {s}")),
        }
    }
}

#[async_trait]
impl Provider for AstakosProvider {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn accepts(&self, credential: &Credential) -> bool {
        match credential {
            Credential::AuthToken(_) => true,
            Credential::Bearer(_) => self.config.bearer,
            Credential::Basic { .. } | Credential::Session(_) => false,
        }
    }

    fn challenge(&self, realm: &str) -> String {
        format!("Bearer realm=\"{realm}\"")
    }

    async fn authenticate(
        &self,
        credential: &Credential,
        ctx: &AuthContext,
    ) -> Result<Identity, AuthError> {
        let Some(token) = credential.token() else {
            return Err(AuthError::Invalid("not a token"));
        };
        let mut last = String::new();
        for _ in 0..=self.config.retries {
            match self.attempt(token.expose(), ctx).await {
                Attempt::Done(result) => {
                    self.health.record(&result);
                    return result;
                }
                Attempt::Retry(why) => last = why,
            }
        }
        self.health.failure(&last);
        Err(AuthError::Unavailable(last))
    }

    fn health(&self) -> Option<&Health> {
        Some(&self.health)
    }

    /// Without a recent failed call: the cheapest request Astakos answers without a token
    /// (ASTAKOS.md): an empty `POST /identity/v2.0/tokens` ("public mode", 200 with the
    /// service catalog), or in `legacy` mode `GET /im/authenticate` (401 "Access denied").
    async fn check(&self) -> Result<(), Unhealthy> {
        let request = match self.config.mode {
            AstakosMode::Tokens => self.client.post(&self.endpoint),
            AstakosMode::Legacy => self.client.get(&self.endpoint),
        };
        let request = request.timeout(self.config.timeout);
        self.health
            .check(probe(request, &format!("Astakos at {}", self.endpoint)))
            .await
    }
}

/// The reason of a 401, as Astakos words it (both JSON and 0.13's text/plain bodies).
fn unauthorized_reason(body: &[u8]) -> &'static str {
    let text = String::from_utf8_lossy(body);
    let message = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["unauthorized"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.lines().next().unwrap_or("").to_owned());
    match message.as_str() {
        "Invalid token" | "Invalid X-Auth-Token" => "invalid token",
        "User inactive" => "user inactive",
        "Authentication expired" => "authentication expired",
        "Pending approval terms" => "pending approval terms",
        "Access denied" => "access denied",
        _ => "token rejected by Astakos",
    }
}

fn bad_answer(what: &str) -> AuthError {
    AuthError::Unavailable(format!("Astakos answered 200 with {what}"))
}

/// `{"access": {"token": {...}, "user": {...}}}` (0.14+).
fn identity_from_access(body: &[u8]) -> Result<Identity, AuthError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| bad_answer("a body that is not JSON"))?;
    let access = &v["access"];
    let user = &access["user"];
    let subject = user["id"]
        .as_str()
        .ok_or_else(|| bad_answer("no access.user.id"))?;
    let expires = access["token"]["expires"]
        .as_str()
        .ok_or_else(|| bad_answer("no access.token.expires"))?;
    let expires_at =
        parse_iso8601(expires).ok_or_else(|| bad_answer("an unreadable token.expires"))?;
    let roles = user["roles"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let mut attributes = Attributes::new();
    if let Some(projects) = user["projects"].as_array() {
        let projects = projects
            .iter()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect();
        attributes.insert("projects".into(), AttributeValue::Many(projects));
    }
    if let Some(tenant) = access["token"]["tenant"]["id"].as_str() {
        attributes.insert(
            "default_project".into(),
            AttributeValue::One(tenant.to_owned()),
        );
    }
    expiry_checked(Identity {
        subject: subject.to_owned(),
        native_id: None,
        provider: AstakosProvider::KIND,
        username: user["name"].as_str().unwrap_or(subject).to_owned(),
        email: None,
        roles,
        attributes,
        scopes: None,
        expires_at: Some(expires_at),
        credential_id: None,
        client_id: None,
    })
}

/// The flat document of 0.13's `/im/authenticate` (epoch milliseconds).
fn identity_from_legacy(body: &[u8]) -> Result<Identity, AuthError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| bad_answer("a body that is not JSON"))?;
    let subject = v["uuid"].as_str().ok_or_else(|| bad_answer("no uuid"))?;
    let expires_ms = v["auth_token_expires"]
        .as_i64()
        .ok_or_else(|| bad_answer("no auth_token_expires"))?;
    let roles = v["groups"]
        .as_array()
        .map(|gs| {
            gs.iter()
                .filter_map(|g| g.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let email = v["email"]
        .as_array()
        .and_then(|e| e.first())
        .and_then(|e| e.as_str())
        .map(str::to_owned);
    expiry_checked(Identity {
        subject: subject.to_owned(),
        native_id: None,
        provider: AstakosProvider::KIND,
        username: v["username"].as_str().unwrap_or(subject).to_owned(),
        email,
        roles,
        attributes: Attributes::new(),
        scopes: None,
        expires_at: Some(expires_ms.div_euclid(1000)),
        credential_id: None,
        client_id: None,
    })
}

fn expiry_checked(identity: Identity) -> Result<Identity, AuthError> {
    if identity.expires_at.is_some_and(|e| e <= crate::unix_now()) {
        return Err(AuthError::Invalid("authentication expired"));
    }
    Ok(identity)
}

/// Unix seconds of an ISO 8601 UTC time as Astakos (`+00:00`, microseconds) and Keystone
/// (`Z`) write it.
pub fn parse_iso8601(value: &str) -> Option<i64> {
    let normalised = match value.strip_suffix("+00:00") {
        Some(rest) => format!("{rest}Z"),
        None if value.ends_with('Z') => value.to_owned(),
        None => return None,
    };
    let t = humantime::parse_rfc3339(&normalised).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_table() {
        let cases = [
            ("2013-06-19T15:23:59.975572+00:00", Some(1_371_655_439)),
            ("2013-06-19T15:23:59+00:00", Some(1_371_655_439)),
            ("2026-11-22T09:35:18.000000Z", Some(1_795_340_118)),
            ("2026-11-22T09:35:18Z", Some(1_795_340_118)),
            ("2013-06-19T15:23:59+02:00", None),
            ("2013-06-19 15:23:59", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_iso8601(text), expected, "{text}");
        }
    }

    #[test]
    fn unauthorized_reasons() {
        let json = br#"{"unauthorized": {"code": 401, "message": "User inactive", "details": ""}}"#;
        assert_eq!(unauthorized_reason(json), "user inactive");
        assert_eq!(
            unauthorized_reason(b"Pending approval terms\n\n"),
            "pending approval terms"
        );
        assert_eq!(
            unauthorized_reason(b"Invalid X-Auth-Token\n\ndetails"),
            "invalid token"
        );
        assert_eq!(unauthorized_reason(b"<html>"), "token rejected by Astakos");
    }
}
