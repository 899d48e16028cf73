//! `remote`: opaque tokens validated by asking a who-am-i service (ECMWF's API tokens, EFAS):
//! the token goes percent-encoded into the URL's `{token}` or into a header, and the JSON
//! object of a 2xx answer becomes the identity through the same claim mapping as `jwt`'s.
//! 401/403/404 mean the token is not valid (401); any other status, an answer that is not a
//! JSON object, one without a user name, a timeout or a refused connection fail closed
//! (503). An identity is reused until `cache_ttl` or the answer's `expires`/`exp`, whichever
//! comes first, so a token revoked at the service stops working within `cache_ttl`. The
//! URL with the token in it is never logged (reqwest's errors name their URL: stripped).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::Value;

use super::health::{Health, probe};
use super::oidc::{ClaimMapping, check_url, lookup};
use super::{AuthContext, AuthError, Provider, Unhealthy, parse_iso8601};
use crate::credential::Credential;
use crate::identity::{Identity, qualified_subject};
use crate::secret::Secret;
use crate::setting::ConfigError;

/// Subjects of remote-validated tokens: `remote:<service URL>:<user name>`.
pub const REMOTE: &str = "remote";

/// Where the token goes in the URL: everything but RFC 3986's unreserved characters is
/// percent-encoded, so `&`, `#`, `/`, `?`, `+` or `%` in a token cannot change the request.
const TOKEN_IN_URL: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `type: remote` options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// The who-am-i URL; `{token}` marks where the token goes (percent-encoded), e.g.
    /// `https://api.ecmwf.int/v1/who-am-i?token={token}`. Without it, the token is sent in
    /// `token_header`.
    pub url: String,
    /// `GET` (default) or `POST` (with an empty body).
    #[serde(default)]
    pub method: RemoteMethod,
    /// The header the token is sent in when the URL has no `{token}`: `Authorization`
    /// (sent as `Bearer <token>`) or a header name such as `X-ECMWF-Key` (the bare token).
    #[serde(default)]
    pub token_header: Option<String>,
    /// Which forms of the incoming credential this provider takes: `bearer`
    /// (`Authorization: Bearer`), `x-auth-token` (`X-Auth-Token`), or both (the default).
    #[serde(default = "default_credential")]
    pub credential: Vec<CredentialForm>,
    /// How the answer's fields become the identity (dotted paths, as for `jwt`); the
    /// default user name field is `uid`, then `username`.
    #[serde(default = "default_claims")]
    pub claims: ClaimMapping,
    /// How long an answer is reused (never past its `expires`/`exp`): a token revoked at
    /// the service keeps working for at most this long. Default: `cache.max_ttl`.
    #[serde(default, with = "humantime_serde")]
    pub cache_ttl: Option<Duration>,
    /// Time limit of one call (a slower service is a 503).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// A PEM file of CA certificates trusted for the service's TLS certificate (besides
    /// the system's roots).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// `method` of a `remote` provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RemoteMethod {
    /// `GET`.
    #[default]
    Get,
    /// `POST`, with an empty body.
    Post,
}

/// One incoming credential form a `remote` provider takes: `bearer`, `x-auth-token`, or
/// the name of a header that holds the bare token (`X-ECMWF-Key`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum CredentialForm {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `X-Auth-Token: <token>`.
    XAuthToken,
    /// `<header>: <token>`; the token is then handled as an `X-Auth-Token` one.
    Header(http::HeaderName),
}

impl TryFrom<String> for CredentialForm {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        if value.eq_ignore_ascii_case("bearer") {
            return Ok(Self::Bearer);
        }
        if value.eq_ignore_ascii_case("x-auth-token") {
            return Ok(Self::XAuthToken);
        }
        let name = http::HeaderName::from_bytes(value.as_bytes())
            .map_err(|_| format!("'{value}' is neither bearer, x-auth-token nor a header name"))?;
        // Headers that carry other things (or other credentials) cannot hold the token.
        const TAKEN: &[&str] = &[
            "authorization",
            "cookie",
            "host",
            "x-storage-token",
            "x-service-token",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-uri",
            "x-forwarded-method",
            "x-forwarded-proto",
            "x-original-uri",
            "x-original-url",
            "x-original-method",
        ];
        if TAKEN.contains(&name.as_str()) || name.as_str().starts_with("x-auth-request-") {
            return Err(format!("'{value}' cannot carry the token"));
        }
        Ok(Self::Header(name))
    }
}

fn default_credential() -> Vec<CredentialForm> {
    vec![CredentialForm::Bearer, CredentialForm::XAuthToken]
}

fn default_claims() -> ClaimMapping {
    ClaimMapping {
        username: vec!["uid".into(), "username".into()],
        ..ClaimMapping::default()
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl RemoteConfig {
    /// The service's URL without query or token: the namespace of its users' subjects, and
    /// what logs and `/readyz` name.
    fn service(&self) -> &str {
        let end = self.url.find(['?', '#', '{']).unwrap_or(self.url.len());
        &self.url[..end]
    }

    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        check_url(&format!("{key}.url"), &self.url)?;
        let filled = self.url.replace("{token}", "t");
        if filled.contains(['{', '}']) || reqwest::Url::parse(&filled).is_err() {
            return Err(ConfigError::invalid(
                format!("{key}.url"),
                "must be a URL with at most one `{token}` placeholder",
            ));
        }
        let placeholders = self.url.matches("{token}").count();
        match (placeholders, &self.token_header) {
            (0, None) => {
                return Err(ConfigError::invalid(
                    format!("{key}.token_header"),
                    "the url has no `{token}`: name the header the token is sent in",
                ));
            }
            (1, Some(_)) => {
                return Err(ConfigError::invalid(
                    format!("{key}.token_header"),
                    "the url already carries the token in `{token}`; remove token_header",
                ));
            }
            (n, _) if n > 1 => {
                return Err(ConfigError::invalid(
                    format!("{key}.url"),
                    "`{token}` may appear once",
                ));
            }
            _ => {}
        }
        if let Some(h) = &self.token_header
            && http::HeaderName::from_bytes(h.as_bytes()).is_err()
        {
            return Err(ConfigError::invalid(
                format!("{key}.token_header"),
                "is not a header name",
            ));
        }
        if self.credential.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.credential"),
                "name at least one of bearer, x-auth-token",
            ));
        }
        if self.claims.username.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.claims.username"),
                "name at least one field holding the user name",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::invalid(
                format!("{key}.timeout"),
                "must be more than 0s",
            ));
        }
        self.client(key, reqwest::Client::new()).map(|_| ())
    }

    /// The shared client, or one that also trusts `ca_file`.
    fn client(&self, key: &str, shared: reqwest::Client) -> Result<reqwest::Client, ConfigError> {
        let Some(path) = &self.ca_file else {
            return Ok(shared);
        };
        let bad = |reason: String| ConfigError::invalid(format!("{key}.ca_file"), reason);
        let pem = std::fs::read(path).map_err(|e| bad(format!("{}: {e}", path.display())))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| bad(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(bad(format!("{}: no certificate in it", path.display())));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .user_agent(concat!("authgate/", env!("CARGO_PKG_VERSION")));
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
        builder
            .build()
            .map_err(|e| bad(format!("cannot build the HTTP client: {e}")))
    }
}

/// The `remote` provider.
pub struct RemoteProvider {
    client: reqwest::Client,
    config: RemoteConfig,
    health: Health,
}

impl RemoteProvider {
    /// Type name.
    pub const KIND: &'static str = "remote";

    /// The headers named in `credential:` that carry a token.
    pub fn token_headers(&self) -> impl Iterator<Item = &http::HeaderName> {
        self.config.credential.iter().filter_map(|f| match f {
            CredentialForm::Header(h) => Some(h),
            _ => None,
        })
    }

    /// Builds the provider; reads `ca_file` when there is one (`key` names the entry).
    pub fn new(
        config: &RemoteConfig,
        key: &str,
        client: reqwest::Client,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            client: config.client(key, client)?,
            config: config.clone(),
            health: Health::default(),
        })
    }

    /// The request that asks about `token`.
    fn request(&self, token: &Secret) -> reqwest::RequestBuilder {
        let encoded = utf8_percent_encode(token.expose(), TOKEN_IN_URL).to_string();
        let url = self.config.url.replace("{token}", &encoded);
        let mut request = match self.config.method {
            RemoteMethod::Get => self.client.get(url),
            RemoteMethod::Post => self.client.post(url),
        }
        .header(http::header::ACCEPT, "application/json")
        .timeout(self.config.timeout);
        if let Some(name) = &self.config.token_header {
            request = if name.eq_ignore_ascii_case("authorization") {
                request.bearer_auth(token.expose())
            } else {
                request.header(name.as_str(), token.expose())
            };
        }
        request
    }

    /// Asks the service about `token`.
    async fn ask(&self, token: &Secret) -> Result<Identity, AuthError> {
        let service = self.config.service();
        let response = self.request(token).send().await.map_err(|e| {
            // The error's URL holds the token: never shown.
            let e = e.without_url();
            let why = if e.is_timeout() {
                format!("who-am-i service {service} did not answer in time")
            } else {
                format!("who-am-i service {service} unreachable: {e}")
            };
            AuthError::Unavailable(why)
        })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            AuthError::Unavailable(format!(
                "who-am-i service {service} answer cut short: {}",
                e.without_url()
            ))
        })?;
        self.judge(status, &body)
    }

    /// Reads the service's answer.
    fn judge(&self, status: u16, body: &[u8]) -> Result<Identity, AuthError> {
        let service = self.config.service();
        match status {
            200..=299 => {}
            401 | 403 | 404 => return Err(AuthError::Invalid("the token was not accepted")),
            other => {
                return Err(AuthError::Unavailable(format!(
                    "who-am-i service {service} answered {other}"
                )));
            }
        }
        let answer: Value = match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return Err(AuthError::Unavailable(format!(
                    "who-am-i service {service} answered {status} without a JSON object"
                )));
            }
        };
        let username = self
            .config
            .claims
            .username
            .iter()
            .find_map(|path| lookup(&answer, path).and_then(Value::as_str))
            .filter(|u| !u.is_empty());
        let Some(username) = username else {
            let fields = self.config.claims.username.join(", ");
            tracing::error!(
                service,
                fields,
                "the who-am-i answer names no user: none of the user name fields is a string"
            );
            return Err(AuthError::Unavailable(format!(
                "who-am-i service {service} answer has none of the user name fields ({fields})"
            )));
        };
        // The mapping's subject is the user name (`sub` of an answer is not required), and
        // `exp` (a NumericDate) and `expires` (seconds or ISO 8601) both bound the identity.
        let mut identity =
            self.config
                .claims
                .identity(&answer, Self::KIND, service, Some(username))?;
        identity.native_id = Some(username.to_owned());
        identity.subject = qualified_subject(REMOTE, service, username);
        let expires = match answer.get("expires") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f.floor() as i64)),
            Some(Value::String(s)) => Some(parse_iso8601(s).ok_or(AuthError::Unavailable(
                format!("who-am-i service {service} answer has an unreadable `expires`"),
            ))?),
            Some(_) => {
                return Err(AuthError::Unavailable(format!(
                    "who-am-i service {service} answer has an unreadable `expires`"
                )));
            }
        };
        identity.expires_at = match (identity.expires_at, expires) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if identity.expires_at.is_some_and(|e| e <= crate::unix_now()) {
            return Err(AuthError::Expired);
        }
        Ok(identity)
    }
}

#[async_trait]
impl Provider for RemoteProvider {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn name(&self) -> String {
        format!("remote {}", self.config.service())
    }

    fn accepts(&self, credential: &Credential) -> bool {
        let form =
            match credential {
                Credential::Bearer(t) | Credential::AuthToken(t)
                    if t.expose().starts_with(crate::secret::API_TOKEN_PREFIX) =>
                {
                    // authgate's own API tokens never go to the service.
                    return false;
                }
                Credential::Bearer(_) => CredentialForm::Bearer,
                // A named header's token arrives as an X-Auth-Token one.
                Credential::AuthToken(_) => {
                    return self.config.credential.iter().any(|f| {
                        matches!(f, CredentialForm::XAuthToken | CredentialForm::Header(_))
                    });
                }
                Credential::Basic { .. } | Credential::Session(_) => return false,
            };
        self.config.credential.contains(&form)
    }

    fn challenge(&self, realm: &str) -> String {
        format!("Bearer realm=\"{realm}\"")
    }

    fn cache_ttl(&self) -> Option<Duration> {
        self.config.cache_ttl
    }

    async fn authenticate(
        &self,
        credential: &Credential,
        _ctx: &AuthContext,
    ) -> Result<Identity, AuthError> {
        let Some(token) = credential.token() else {
            return Err(AuthError::Invalid("not a token"));
        };
        let answer = self.ask(token).await;
        self.health.record(&answer);
        answer
    }

    fn health(&self) -> Option<&Health> {
        Some(&self.health)
    }

    async fn check(&self) -> Result<(), Unhealthy> {
        // Any answer of the service's host (even a 401 to a request without a token)
        // shows that it is there.
        self.health
            .check(async {
                let url = self.config.service().to_owned();
                probe(self.client.get(&url).timeout(self.config.timeout), &url).await
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::AttributeValue;
    use serde_json::json;

    fn provider(config: Value) -> RemoteProvider {
        let config: RemoteConfig = serde_json::from_value(config).unwrap();
        config.validate("p").unwrap();
        RemoteProvider::new(&config, "p", reqwest::Client::new()).unwrap()
    }

    fn ecmwf() -> RemoteProvider {
        provider(json!({
            "url": "https://api.example.org/v1/who-am-i?token={token}",
            "claims": {"username": ["uid"], "attributes": ["email"],
                       "add": [{"when": {"claim": "uid", "value": "alice"}, "roles": ["staff"]}]}
        }))
    }

    #[test]
    fn the_token_is_percent_encoded_into_the_url() {
        let p = ecmwf();
        for (token, encoded) in [
            ("abc123", "abc123"),
            ("a&b=c", "a%26b%3Dc"),
            ("a#b/c?d", "a%23b%2Fc%3Fd"),
            ("a b+c%2F", "a%20b%2Bc%252F"),
            ("x-y_z.~", "x-y_z.~"),
        ] {
            let request = p.request(&Secret::new(token)).build().unwrap();
            assert_eq!(
                request.url().as_str(),
                format!("https://api.example.org/v1/who-am-i?token={encoded}"),
                "{token}"
            );
            let pairs: Vec<(String, String)> = request
                .url()
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            assert_eq!(pairs, [("token".to_owned(), token.to_owned())], "{token}");
        }
    }

    #[test]
    fn the_token_goes_in_a_header_when_the_url_has_no_placeholder() {
        let p = provider(
            json!({"url": "https://api.example.org/who", "token_header": "X-ECMWF-Key",
                                "method": "POST"}),
        );
        let r = p.request(&Secret::new("k&1")).build().unwrap();
        assert_eq!(r.method(), http::Method::POST);
        assert_eq!(r.url().as_str(), "https://api.example.org/who");
        assert_eq!(r.headers()["x-ecmwf-key"], "k&1");
        let p = provider(json!({"url": "https://api.example.org/who",
                                "token_header": "Authorization"}));
        let r = p.request(&Secret::new("k1")).build().unwrap();
        assert_eq!(r.headers()["authorization"], "Bearer k1");
    }

    #[test]
    fn answers_table() {
        let p = ecmwf();
        let soon = crate::unix_now() + 100;
        let later = crate::unix_now() + 1000;
        let unavailable = |s: &str| Err(AuthError::Unavailable(s.to_owned()));
        let service = "https://api.example.org/v1/who-am-i";
        let rejected = Err(AuthError::Invalid("the token was not accepted"));
        // (status, body, subject or error)
        let cases: Vec<(u16, String, Result<String, AuthError>)> = vec![
            (
                200,
                r#"{"uid": "alice", "email": "a@example.org"}"#.into(),
                Ok("remote:https%3A//api.example.org/v1/who-am-i:alice".to_owned()),
            ),
            (401, "{}".into(), rejected.clone()),
            (403, "".into(), rejected.clone()),
            (404, "not found".into(), rejected.clone()),
            (
                500,
                r#"{"uid": "alice"}"#.into(),
                unavailable(&format!("who-am-i service {service} answered 500")),
            ),
            (
                302,
                "".into(),
                unavailable(&format!("who-am-i service {service} answered 302")),
            ),
            (
                200,
                "<html>".into(),
                unavailable(&format!(
                    "who-am-i service {service} answered 200 without a JSON object"
                )),
            ),
            (
                200,
                r#"["alice"]"#.into(),
                unavailable(&format!(
                    "who-am-i service {service} answered 200 without a JSON object"
                )),
            ),
            (
                200,
                r#"{"name": "alice"}"#.into(),
                unavailable(&format!(
                    "who-am-i service {service} answer has none of the user name fields (uid)"
                )),
            ),
            (
                200,
                r#"{"uid": ""}"#.into(),
                unavailable(&format!(
                    "who-am-i service {service} answer has none of the user name fields (uid)"
                )),
            ),
            (
                200,
                format!(r#"{{"uid": "alice", "exp": {}}}"#, crate::unix_now() - 5),
                Err(AuthError::Expired),
            ),
            (
                200,
                r#"{"uid": "alice", "expires": "2001-01-01T00:00:00Z"}"#.into(),
                Err(AuthError::Expired),
            ),
            (
                200,
                r#"{"uid": "alice", "expires": true}"#.into(),
                unavailable(&format!(
                    "who-am-i service {service} answer has an unreadable `expires`"
                )),
            ),
        ];
        for (i, (status, body, want)) in cases.into_iter().enumerate() {
            let got = p.judge(status, body.as_bytes()).map(|id| id.subject);
            assert_eq!(got, want, "case {i}");
        }
        // The mapping: the user name, the email as an attribute, rules; the earlier of
        // `exp` and `expires` bounds the identity.
        let body = json!({"uid": "alice", "email": "a@example.org", "exp": later,
                          "expires": soon})
        .to_string();
        let id = p.judge(200, body.as_bytes()).unwrap();
        assert_eq!(id.username, "alice");
        assert_eq!(id.native_id.as_deref(), Some("alice"));
        assert_eq!(id.provider, "remote");
        assert_eq!(id.roles.iter().collect::<Vec<_>>(), ["staff"]);
        assert_eq!(
            id.attributes["email"],
            AttributeValue::One("a@example.org".into())
        );
        assert_eq!(id.expires_at, Some(soon));
        let body = json!({"uid": "bob", "exp": soon, "expires": later}).to_string();
        assert_eq!(
            p.judge(200, body.as_bytes()).unwrap().expires_at,
            Some(soon)
        );
    }

    #[test]
    fn accepts_only_the_configured_forms() {
        let bearer = Credential::Bearer(Secret::new("t"));
        let x_auth = Credential::AuthToken(Secret::new("t"));
        let own = Credential::Bearer(Secret::new(format!("agt_{}", "A".repeat(43))));
        let p = ecmwf();
        assert!(p.accepts(&bearer) && p.accepts(&x_auth) && !p.accepts(&own));
        let p = provider(json!({"url": "https://a.example.org/?t={token}",
                                "credential": ["x-auth-token"]}));
        assert!(!p.accepts(&bearer) && p.accepts(&x_auth));
        let p = provider(json!({"url": "https://a.example.org/?t={token}",
                                "credential": ["X-ECMWF-Key"]}));
        assert!(!p.accepts(&bearer) && p.accepts(&x_auth));
        assert_eq!(
            p.token_headers().map(|h| h.as_str()).collect::<Vec<_>>(),
            ["x-ecmwf-key"]
        );
        // Headers that carry other things cannot be named.
        for bad in [
            "Authorization",
            "Cookie",
            "X-Auth-Request-User",
            "bad header",
            "X-Original-URI",
        ] {
            let config = json!({"url": "https://a.example.org/?t={token}", "credential": [bad]});
            assert!(
                serde_json::from_value::<RemoteConfig>(config).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_configs_name_their_key() {
        let cases = [
            (json!({"url": "ftp://x/{token}"}), "p.url"),
            (json!({"url": "https://x/?a={token}&b={token}"}), "p.url"),
            (json!({"url": "https://x/?a={tok}"}), "p.url"),
            (json!({"url": "https://x/who"}), "p.token_header"),
            (
                json!({"url": "https://x/?t={token}", "token_header": "X-Key"}),
                "p.token_header",
            ),
            (
                json!({"url": "https://x/", "token_header": "bad header"}),
                "p.token_header",
            ),
            (
                json!({"url": "https://x/?t={token}", "credential": []}),
                "p.credential",
            ),
            (
                json!({"url": "https://x/?t={token}", "claims": {"username": []}}),
                "p.claims.username",
            ),
            (
                json!({"url": "https://x/?t={token}", "timeout": "0s"}),
                "p.timeout",
            ),
            (
                json!({"url": "https://x/?t={token}", "ca_file": "/nonexistent/ca.pem"}),
                "p.ca_file",
            ),
        ];
        for (config, key) in cases {
            let config: RemoteConfig = serde_json::from_value(config.clone()).unwrap();
            let err = config.validate("p").unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        }
    }
}
