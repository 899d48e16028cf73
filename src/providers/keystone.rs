//! `keystone`: OpenStack Keystone v3 tokens (KEYSTONE.md). authgate holds its own service-user
//! token (password auth; renewed before it expires; re-authenticated once when Keystone says
//! 401) and validates user tokens with `GET /v3/auth/tokens` + `X-Subject-Token`. A token from
//! `X-Service-Token` is validated too and must hold one of `service_token_roles` when
//! required, as keystonemiddleware does.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::health::{Health, probe};
use super::{AuthContext, AuthError, Provider, Unhealthy, parse_iso8601};
use crate::credential::Credential;
use crate::identity::{AttributeValue, Attributes, Identity, KEYSTONE};
use crate::secret::Secret;
use crate::setting::ConfigError;

/// `type: keystone` options.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeystoneConfig {
    /// Keystone v3 URL, e.g. `http://keystone:5000/v3`.
    pub auth_url: String,
    /// authgate's service user.
    pub username: String,
    /// Its password (prefer `password_file`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// A file holding the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Domain of the service user.
    #[serde(default = "default_domain")]
    pub user_domain_name: String,
    /// Project the service token is scoped to.
    #[serde(default = "default_project")]
    pub project_name: String,
    /// Domain of that project.
    #[serde(default = "default_domain")]
    pub project_domain_name: String,
    /// Ask for the service catalog (`X-Service-Catalog`); off: `?nocatalog`.
    #[serde(default)]
    pub include_catalog: bool,
    /// Roles a service token must hold one of.
    #[serde(default = "default_service_roles")]
    pub service_token_roles: Vec<String>,
    /// Whether `service_token_roles` is enforced.
    #[serde(default = "yes")]
    pub service_token_roles_required: bool,
    /// `uri` of `WWW-Authenticate: Keystone` (default: `auth_url`).
    #[serde(default)]
    pub www_authenticate_uri: Option<String>,
    /// Time limit of one call.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

fn default_domain() -> String {
    "Default".into()
}
fn default_project() -> String {
    "service".into()
}
fn default_service_roles() -> Vec<String> {
    vec!["service".into()]
}
fn yes() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

impl KeystoneConfig {
    pub(super) fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !(self.auth_url.starts_with("http://") || self.auth_url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                format!("{key}.auth_url"),
                "must be an http(s) URL",
            ));
        }
        if self.username.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.username"),
                "must not be empty",
            ));
        }
        self.password(key).map(|_| ())
    }

    /// The service user's password, from `password` or `password_file` (exactly one).
    pub(super) fn password(&self, key: &str) -> Result<Secret, ConfigError> {
        crate::setting::from_value_or_file(
            key,
            "password",
            self.password.as_ref(),
            self.password_file.as_deref(),
        )?
        .ok_or_else(|| {
            ConfigError::invalid(
                format!("{key}.password"),
                "give exactly one of password and password_file",
            )
        })
    }
}

/// The service user's token and when it expires.
struct ServiceToken {
    token: Secret,
    expires_at: i64,
    issued_at: i64,
}

/// The `keystone` provider.
pub struct KeystoneProvider {
    client: reqwest::Client,
    config: KeystoneConfig,
    password: Secret,
    base: String,
    service_token: Mutex<Option<ServiceToken>>,
    health: Health,
}

enum Validation {
    Valid(Value),
    Invalid,
    ServiceTokenRejected,
}

impl KeystoneProvider {
    /// Type name.
    pub const KIND: &'static str = "keystone";

    /// Over the shared HTTP client (the password was checked by `validate`).
    pub fn new(config: &KeystoneConfig, password: Secret, client: reqwest::Client) -> Self {
        Self {
            client,
            base: config.auth_url.trim_end_matches('/').to_owned(),
            config: config.clone(),
            password,
            service_token: Mutex::new(None),
            health: Health::default(),
        }
    }

    /// The service token, obtained or renewed when missing or in the last third of its
    /// life (at most 5 minutes before expiry). The lock makes concurrent renewals one.
    async fn service_token(&self, force_new: bool) -> Result<Secret, AuthError> {
        let mut held = self.service_token.lock().await;
        let now = crate::unix_now();
        if let Some(t) = held.as_ref()
            && !force_new
        {
            let margin = ((t.expires_at - t.issued_at) / 3).min(300);
            if t.expires_at - now > margin {
                return Ok(t.token.clone());
            }
        }
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": self.config.username,
                "domain": {"name": self.config.user_domain_name},
                "password": self.password.expose()}}},
            "scope": {"project": {"name": self.config.project_name,
                                  "domain": {"name": self.config.project_domain_name}}}}});
        let response = self
            .client
            .post(format!("{}/auth/tokens?nocatalog", self.base))
            .json(&body)
            .timeout(self.config.timeout)
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("Keystone unreachable: {e}")))?;
        if response.status().as_u16() != 201 {
            return Err(AuthError::Unavailable(format!(
                "Keystone refused authgate's service user ({})",
                response.status()
            )));
        }
        let token = response
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(Secret::new)
            .ok_or_else(|| AuthError::Unavailable("Keystone sent no X-Subject-Token".into()))?;
        let doc: Value = response
            .json()
            .await
            .map_err(|e| AuthError::Unavailable(format!("Keystone answer unreadable: {e}")))?;
        let expires_at = doc["token"]["expires_at"]
            .as_str()
            .and_then(parse_iso8601)
            .ok_or_else(|| AuthError::Unavailable("Keystone token without expires_at".into()))?;
        tracing::info!(expires_at, "obtained a Keystone service token");
        *held = Some(ServiceToken {
            token: token.clone(),
            expires_at,
            issued_at: now,
        });
        Ok(token)
    }

    async fn validate_once(
        &self,
        subject: &Secret,
        service: &Secret,
    ) -> Result<Validation, AuthError> {
        let url = if self.config.include_catalog {
            format!("{}/auth/tokens", self.base)
        } else {
            format!("{}/auth/tokens?nocatalog", self.base)
        };
        let response = self
            .client
            .get(url)
            .header("X-Auth-Token", service.expose())
            .header("X-Subject-Token", subject.expose())
            .timeout(self.config.timeout)
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(format!("Keystone unreachable: {e}")))?;
        match response.status().as_u16() {
            200 => response
                .json()
                .await
                .map(Validation::Valid)
                .map_err(|e| AuthError::Unavailable(format!("Keystone answer unreadable: {e}"))),
            404 => Ok(Validation::Invalid),
            401 => Ok(Validation::ServiceTokenRejected),
            s => Err(AuthError::Unavailable(format!("Keystone answered {s}"))),
        }
    }

    /// Validates one token; re-authenticates the service user once on a 401.
    async fn validate(&self, subject: &Secret) -> Result<Option<Value>, AuthError> {
        let service = self.service_token(false).await?;
        match self.validate_once(subject, &service).await? {
            Validation::Valid(v) => return Ok(Some(v)),
            Validation::Invalid => return Ok(None),
            Validation::ServiceTokenRejected => {
                tracing::warn!("Keystone rejected authgate's service token; authenticating again");
            }
        }
        let service = self.service_token(true).await?;
        match self.validate_once(subject, &service).await? {
            Validation::Valid(v) => Ok(Some(v)),
            Validation::Invalid => Ok(None),
            Validation::ServiceTokenRejected => Err(AuthError::Unavailable(
                "Keystone rejects authgate's service token".into(),
            )),
        }
    }
}

#[async_trait]
impl Provider for KeystoneProvider {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn accepts(&self, credential: &Credential) -> bool {
        matches!(credential, Credential::AuthToken(_))
    }

    fn challenge(&self, _realm: &str) -> String {
        let uri = self
            .config
            .www_authenticate_uri
            .as_deref()
            .unwrap_or(&self.config.auth_url);
        format!("Keystone uri=\"{uri}\"")
    }

    async fn authenticate(
        &self,
        credential: &Credential,
        ctx: &AuthContext,
    ) -> Result<Identity, AuthError> {
        let identity = self.identify(credential, ctx).await;
        self.health.record(&identity);
        identity
    }

    fn health(&self) -> Option<&Health> {
        Some(&self.health)
    }

    /// Without a recent failed call: `GET /v3`, which Keystone answers without a token.
    async fn check(&self) -> Result<(), Unhealthy> {
        let request = self.client.get(&self.base).timeout(self.config.timeout);
        self.health
            .check(probe(request, &format!("Keystone at {}", self.base)))
            .await
    }
}

impl KeystoneProvider {
    /// Who the token of `credential` (and `ctx`'s service token) belongs to.
    async fn identify(
        &self,
        credential: &Credential,
        ctx: &AuthContext,
    ) -> Result<Identity, AuthError> {
        let Some(token) = credential.token() else {
            return Err(AuthError::Invalid("not a token"));
        };
        let Some(doc) = self.validate(token).await? else {
            return Err(AuthError::Invalid("invalid token"));
        };
        let identity = identity_from_token(&doc["token"], "")
            .ok_or_else(|| AuthError::Unavailable("Keystone token document incomplete".into()))?;
        let mut identity = super::foreign_identity(identity, KEYSTONE, &self.base)?;
        if identity.expires_at.is_some_and(|e| e <= crate::unix_now()) {
            return Err(AuthError::Invalid("token expired"));
        }
        if let Some(service) = &ctx.service_token {
            let Some(doc) = self.validate(service).await? else {
                return Err(AuthError::Invalid("invalid service token"));
            };
            let service_identity =
                identity_from_token(&doc["token"], "service_").ok_or_else(|| {
                    AuthError::Unavailable("Keystone token document incomplete".into())
                })?;
            if self.config.service_token_roles_required
                && !self
                    .config
                    .service_token_roles
                    .iter()
                    .any(|r| service_identity.roles.contains(r))
            {
                return Err(AuthError::Invalid(
                    "the service token holds no service role",
                ));
            }
            // With `service_roles`, in Keystone's order.
            identity.attributes.extend(service_identity.attributes);
            identity.expires_at = match (identity.expires_at, service_identity.expires_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(identity)
    }
}

/// The identity of a validated token; attribute names get `prefix` (`service_` for the
/// service token) so both fit in one identity.
fn identity_from_token(token: &Value, prefix: &str) -> Option<Identity> {
    let user = &token["user"];
    let mut attributes = Attributes::new();
    let mut put = |name: &str, value: &Value| {
        if let Some(v) = value.as_str() {
            attributes.insert(format!("{prefix}{name}"), AttributeValue::One(v.to_owned()));
        }
    };
    put("user_id", &user["id"]);
    put("user_name", &user["name"]);
    put("user_domain_id", &user["domain"]["id"]);
    put("user_domain_name", &user["domain"]["name"]);
    let project = &token["project"];
    put("project_id", &project["id"]);
    put("project_name", &project["name"]);
    put("project_domain_id", &project["domain"]["id"]);
    put("project_domain_name", &project["domain"]["name"]);
    put("domain_id", &token["domain"]["id"]);
    put("domain_name", &token["domain"]["name"]);
    if token["system"]["all"].as_bool() == Some(true) {
        put("system_scope", &Value::String("all".into()));
    }
    if project.is_object() {
        // keystonemiddleware: a project token is for the admin project unless it says not.
        let admin = token["is_admin_project"].as_bool().unwrap_or(true);
        put(
            "is_admin_project",
            &Value::String(if admin { "True" } else { "False" }.into()),
        );
    }
    // The roles in Keystone's order (implied roles after the assigned ones): the identity's
    // roles are a sorted set, and keystonemiddleware passes them on as Keystone lists them.
    let roles: Vec<String> = token["roles"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(catalog) = token.get("catalog") {
        put("service_catalog", &Value::String(catalog.to_string()));
    }
    attributes.insert(
        format!("{prefix}roles"),
        AttributeValue::Many(roles.clone()),
    );
    Some(Identity {
        subject: user["id"].as_str()?.to_owned(),
        native_id: None,
        provider: KeystoneProvider::KIND,
        username: user["name"].as_str()?.to_owned(),
        email: None,
        roles: roles.into_iter().collect(),
        attributes,
        scopes: None,
        expires_at: Some(parse_iso8601(token["expires_at"].as_str()?)?),
        credential_id: None,
        client_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_a_project_scoped_token() {
        let doc: Value = serde_json::from_str(r#"{"methods": ["password"], "user": {"domain": {"id": "default", "name": "Default"}, "id": "e08", "name": "alice", "password_expires_at": null}, "audit_ids": ["x"], "expires_at": "2026-11-22T13:01:51.000000Z", "issued_at": "2026-11-22T12:01:51.000000Z", "project": {"domain": {"id": "default", "name": "Default"}, "id": "de8", "name": "demo"}, "is_domain": false, "roles": [{"id": "a9", "name": "member"}, {"id": "ec", "name": "reader"}]}"#).unwrap();
        let id = identity_from_token(&doc, "").unwrap();
        assert_eq!(id.subject, "e08");
        assert_eq!(id.username, "alice");
        assert_eq!(id.expires_at, Some(1_795_352_511));
        assert_eq!(id.roles.iter().collect::<Vec<_>>(), ["member", "reader"]);
        // Keystone's order is kept beside the sorted set.
        let listed: Value = serde_json::from_str(r#"{"user": {"id": "e08", "name": "alice"}, "expires_at": "2026-11-22T13:01:51.000000Z", "roles": [{"id": "1", "name": "reader"}, {"id": "2", "name": "admin"}, {"id": "3", "name": "member"}]}"#).unwrap();
        let ordered = identity_from_token(&listed, "service_").unwrap();
        assert_eq!(
            ordered.roles.iter().collect::<Vec<_>>(),
            ["admin", "member", "reader"]
        );
        assert_eq!(
            ordered.attributes["service_roles"],
            AttributeValue::Many(vec!["reader".into(), "admin".into(), "member".into()])
        );
        let attr = |k: &str| match id.attributes.get(k) {
            Some(AttributeValue::One(v)) => v.clone(),
            other => panic!("{k}: {other:?}"),
        };
        assert_eq!(attr("project_id"), "de8");
        assert_eq!(attr("project_domain_name"), "Default");
        assert_eq!(attr("user_domain_id"), "default");
        assert_eq!(attr("is_admin_project"), "True");
        assert!(!id.attributes.contains_key("system_scope"));
        let service = identity_from_token(&doc, "service_").unwrap();
        assert!(service.attributes.contains_key("service_project_id"));
    }
}
