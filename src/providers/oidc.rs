//! What the OAuth2/OIDC providers (`jwt`, `introspect`, `offline`) share: the issuer's
//! discovery document, calls to the IdP, client authentication at its endpoints, and the
//! mapping from claims to an [`Identity`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::AuthError;
use crate::identity::{
    AttributeValue, Attributes, Identity, OIDC, mapped_user_name, qualified_subject,
};
use crate::secret::Secret;
use crate::setting::ConfigError;

/// Rejects anything but an absolute http(s) URL.
pub(super) fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(ConfigError::invalid(key, "must be an http(s) URL"))
    }
}

/// `GET url` as JSON; anything but a 2xx JSON answer is [`AuthError::Unavailable`].
pub async fn get_json(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<(Value, reqwest::header::HeaderMap), AuthError> {
    let response = client
        .get(url)
        .timeout(timeout)
        .send()
        .await
        .map_err(|e| AuthError::Unavailable(format!("identity provider unreachable: {e}")))?;
    if !response.status().is_success() {
        return Err(AuthError::Unavailable(format!(
            "identity provider answered {} for {url}",
            response.status()
        )));
    }
    let headers = response.headers().clone();
    let doc = response.json().await.map_err(|e| {
        AuthError::Unavailable(format!("identity provider answer is not JSON: {e}"))
    })?;
    Ok((doc, headers))
}

/// How authgate authenticates itself as an OAuth2 client at the IdP's endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// HTTP Basic with the form-encoded id and secret (RFC 6749 §2.3.1).
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
    /// A public client: `client_id` in the form body, no secret.
    None,
}

/// `client_id`, the secret (inline or `client_secret_file`) and the method, as configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// The client id registered at the IdP.
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
}

impl ClientConfig {
    /// The client with its secret read; names the key at fault.
    pub fn load(&self, key: &str) -> Result<ClientAuth, ConfigError> {
        if self.client_id.is_empty() {
            return Err(ConfigError::invalid(
                format!("{key}.client_id"),
                "must not be empty",
            ));
        }
        let secret = crate::setting::from_value_or_file(
            key,
            "client_secret",
            self.client_secret.as_ref(),
            self.client_secret_file.as_deref(),
        )?;
        match (self.client_auth, &secret) {
            (ClientAuthMethod::None, Some(_)) => Err(ConfigError::invalid(
                format!("{key}.client_auth"),
                "`none` sends no secret; remove client_secret or pick client_secret_basic/post",
            )),
            (ClientAuthMethod::ClientSecretBasic | ClientAuthMethod::ClientSecretPost, None) => {
                Err(ConfigError::invalid(
                    format!("{key}.client_secret"),
                    "needed for client_secret_basic and client_secret_post \
                     (or set client_auth: none for a public client)",
                ))
            }
            _ => Ok(ClientAuth {
                id: self.client_id.clone(),
                secret,
                method: self.client_auth,
            }),
        }
    }
}

/// A loaded [`ClientConfig`].
pub struct ClientAuth {
    id: String,
    secret: Option<Secret>,
    method: ClientAuthMethod,
}

/// `client_secret_basic` (RFC 6749 2.3.1): the client id and secret are each encoded as
/// `application/x-www-form-urlencoded` (a space is `+`) before they go into Basic.
fn form_encoded(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

impl ClientAuth {
    /// `POST url` with `form` and the client's authentication; the answer's status and JSON
    /// body (`Value::Null` when the body is not JSON).
    pub async fn post_form(
        &self,
        client: &reqwest::Client,
        url: &str,
        mut form: Vec<(&'static str, String)>,
        timeout: Duration,
    ) -> Result<(u16, Value), AuthError> {
        let mut request = client.post(url).timeout(timeout);
        match self.method {
            ClientAuthMethod::ClientSecretBasic => {
                request = request.basic_auth(
                    form_encoded(&self.id),
                    self.secret.as_ref().map(|s| form_encoded(s.expose())),
                );
            }
            ClientAuthMethod::ClientSecretPost => {
                form.push(("client_id", self.id.clone()));
                if let Some(s) = &self.secret {
                    form.push(("client_secret", s.expose().to_owned()));
                }
            }
            ClientAuthMethod::None => form.push(("client_id", self.id.clone())),
        }
        let response =
            request.form(&form).send().await.map_err(|e| {
                AuthError::Unavailable(format!("identity provider unreachable: {e}"))
            })?;
        let status = response.status().as_u16();
        let body = response.bytes().await.map_err(|e| {
            AuthError::Unavailable(format!("identity provider answer cut short: {e}"))
        })?;
        Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
    }
}

/// How claims (of a JWT or an introspection answer) become the identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClaimMapping {
    /// Username claims, first present wins; the subject when none is.
    pub username: Vec<String>,
    /// Email claim.
    pub email: String,
    /// Whether the email is taken only when the claims say `email_verified: true` (the
    /// default): an IdP that lets users type any address would otherwise let them claim
    /// someone else's (nOAuth, CVE-2023-3128). `ignore` is for an IdP that only ever
    /// issues verified addresses.
    pub email_verified: EmailVerified,
    /// Claims (dotted paths) holding role lists: `realm_access.roles`,
    /// `resource_access.<client>.roles`, `groups`, `roles`.
    pub roles: Vec<String>,
    /// Claims holding the scopes, first present wins: a space-separated string (`scope`)
    /// or a list (`scp`). A token with none of them holds no scopes.
    pub scopes: Vec<String>,
    /// A claim (dotted path) that, when it is `true`, means the token holds every scope, as
    /// a user who signed in directly does: `scope_all` for another authgate's JWTs. Unset
    /// (the default), no token holds every scope.
    pub scopes_all: Option<String>,
    /// Claims copied into attributes (a string or a list of strings).
    pub attributes: Vec<String>,
    /// Roles and attributes added when a claim has a value.
    pub add: Vec<ClaimRule>,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            username: vec!["preferred_username".into()],
            email: "email".into(),
            email_verified: EmailVerified::Require,
            roles: vec!["realm_access.roles".into(), "groups".into(), "roles".into()],
            scopes: vec!["scope".into(), "scp".into()],
            scopes_all: None,
            attributes: Vec::new(),
            add: Vec::new(),
        }
    }
}

/// `claims.email_verified`: how far an IdP's email claim is trusted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmailVerified {
    /// The email is taken only with `email_verified: true` (a JSON boolean) beside it.
    #[default]
    Require,
    /// The IdP issues only verified addresses: the email is taken as it is.
    Ignore,
}

/// `when` the claim `claim` equals `value` (or, for a list, contains it), add `roles` and
/// `attributes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRule {
    /// The condition.
    pub when: ClaimCondition,
    /// Roles to add.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Attributes to add (replacing a mapped attribute of the same name).
    #[serde(default)]
    pub attributes: Attributes,
}

/// A claim (dotted path) and the value it must hold.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimCondition {
    /// Dotted claim path, e.g. `groups` or `resource_access.gw.roles`.
    pub claim: String,
    /// The value it equals or, when it is a list, contains.
    pub value: Value,
}

impl ClaimCondition {
    fn holds(&self, claims: &Value) -> bool {
        match lookup(claims, &self.claim) {
            Some(Value::Array(items)) => items.contains(&self.value),
            Some(v) => *v == self.value,
            None => false,
        }
    }
}

/// A token's NumericDate claims (RFC 7519 section 2: seconds since the epoch, fractions
/// allowed, so `1700000000.0` as well as `1700000000`), in whole seconds rounded the
/// conservative way: `exp` down, `iat` and `nbf` up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct NumericDates {
    /// Expiry (`exp`).
    pub exp: Option<i64>,
    /// Issued at (`iat`).
    pub iat: Option<i64>,
    /// Not before (`nbf`).
    pub nbf: Option<i64>,
}

impl NumericDates {
    /// The dates of `claims`. One that is present but not a number makes the token invalid:
    /// read as absent, an `exp` would never expire and an `iat` never be in the future.
    pub(super) fn of(claims: &Value) -> Result<Self, AuthError> {
        let read = |name: &str, round: fn(f64) -> f64, reason: &'static str| {
            match claims.get(name) {
                None => Ok(None),
                // Whole numbers as they are (an f64 loses precision past 2^53); fractions
                // rounded, out-of-range values saturating at i64's ends.
                Some(Value::Number(n)) => {
                    Ok(n.as_i64().or_else(|| n.as_f64().map(|f| round(f) as i64)))
                }
                Some(_) => Err(AuthError::Invalid(reason)),
            }
        };
        Ok(Self {
            exp: read("exp", f64::floor, "token exp is not a number")?,
            iat: read("iat", f64::ceil, "token iat is not a number")?,
            nbf: read("nbf", f64::ceil, "token nbf is not a number")?,
        })
    }
}

/// `a.b.c` into nested objects.
pub(super) fn lookup<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

impl ClaimMapping {
    /// The identity `claims` describe, for the IdP `issuer`. The IdP's subject is `sub`, or
    /// `fallback_subject` (an introspection answer for a client_credentials token names only
    /// `client_id`); the identity's subject is it qualified by the issuer
    /// ([`qualified_subject`]), so that it cannot pass for a local user or another IdP's.
    pub fn identity(
        &self,
        claims: &Value,
        provider: &'static str,
        issuer: &str,
        fallback_subject: Option<&str>,
    ) -> Result<Identity, AuthError> {
        let native = claims["sub"]
            .as_str()
            .or(fallback_subject)
            .filter(|s| !s.is_empty())
            .ok_or(AuthError::Invalid("the token names no subject"))?;
        let username = self
            .username
            .iter()
            .find_map(|path| lookup(claims, path).and_then(Value::as_str))
            .unwrap_or(native);
        let username = mapped_user_name(username).map_err(|e| {
            tracing::debug!(provider, error = %e, "refused the token's user name");
            AuthError::Invalid("the token's user name is not acceptable")
        })?;
        let mut roles = Vec::new();
        for path in &self.roles {
            if let Some(list) = lookup(claims, path).and_then(Value::as_array) {
                roles.extend(list.iter().filter_map(Value::as_str));
            }
        }
        // A token without scopes holds none (it is a token, not a signed-in user), unless
        // its issuer says explicitly that it holds all.
        let all = self
            .scopes_all
            .as_deref()
            .is_some_and(|path| lookup(claims, path) == Some(&Value::Bool(true)));
        let scopes = (!all).then(|| {
            self.scopes
                .iter()
                .find_map(|path| match lookup(claims, path)? {
                    Value::String(s) => Some(s.split_whitespace().map(str::to_owned).collect()),
                    Value::Array(a) => Some(
                        a.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect(),
                    ),
                    _ => None,
                })
                .unwrap_or_default()
        });
        let mut attributes = Attributes::new();
        for name in &self.attributes {
            match lookup(claims, name) {
                Some(Value::String(s)) => {
                    attributes.insert(name.clone(), AttributeValue::One(s.clone()));
                }
                Some(Value::Array(a)) => {
                    let values = a
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect();
                    attributes.insert(name.clone(), AttributeValue::Many(values));
                }
                _ => {}
            }
        }
        for rule in self.add.iter().filter(|r| r.when.holds(claims)) {
            roles.extend(rule.roles.iter().map(String::as_str));
            attributes.extend(rule.attributes.clone());
        }
        Ok(Identity {
            subject: qualified_subject(OIDC, issuer, native),
            native_id: Some(native.to_owned()),
            provider,
            username,
            email: self.email(claims),
            roles: roles.into_iter().collect(),
            attributes,
            scopes,
            expires_at: NumericDates::of(claims)?.exp,
            credential_id: None,
            client_id: ["client_id", "azp"]
                .iter()
                .find_map(|name| claims[*name].as_str())
                .filter(|c| !c.is_empty())
                .map(Box::from),
        })
    }

    /// The email claim, when it may be believed (see [`ClaimMapping::email_verified`]).
    fn email(&self, claims: &Value) -> Option<String> {
        let email = lookup(claims, &self.email).and_then(Value::as_str)?;
        let verified = claims["email_verified"] == Value::Bool(true);
        match self.email_verified {
            EmailVerified::Require if !verified => {
                tracing::debug!("email left out: the IdP does not say it is verified");
                None
            }
            _ => Some(email.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_credentials_are_form_encoded_for_basic() {
        for (raw, encoded) in [
            ("gateway", "gateway"),
            ("a b", "a+b"),
            ("a+b/c:d", "a%2Bb%2Fc%3Ad"),
            ("s\u{e9}cret~*", "s%C3%A9cret%7E*"),
        ] {
            assert_eq!(form_encoded(raw), encoded, "{raw}");
        }
    }
    use serde_json::json;

    #[test]
    fn claims_become_an_identity() {
        let mapping: ClaimMapping = serde_json::from_value(json!({
            "roles": ["realm_access.roles", "resource_access.gw.roles", "groups"],
            "attributes": ["tenant", "projects"],
            "add": [
                {"when": {"claim": "groups", "value": "/ops"}, "roles": ["operator"]},
                {"when": {"claim": "tenant", "value": "acme"}, "attributes": {"billing": "acme-1"}},
                {"when": {"claim": "tenant", "value": "other"}, "roles": ["never"]}
            ]
        }))
        .unwrap();
        let claims = json!({
            "sub": "u1", "preferred_username": "alice", "email": "a@example.org",
            "email_verified": true, "realm_access": {"roles": ["reader"]},
            "resource_access": {"gw": {"roles": ["writer"]}, "other": {"roles": ["x"]}},
            "groups": ["/ops"], "tenant": "acme", "projects": ["p1", "p2"],
            "scope": "read:data  write:data", "exp": 2000000000
        });
        let id = mapping
            .identity(&claims, "jwt", "https://idp.example.org", None)
            .unwrap();
        assert_eq!(id.subject, "oidc:https%3A//idp.example.org:u1");
        assert_eq!(id.native_id.as_deref(), Some("u1"));
        assert_eq!(id.username, "alice");
        assert_eq!(id.email.as_deref(), Some("a@example.org"));
        assert_eq!(
            id.roles.iter().collect::<Vec<_>>(),
            ["/ops", "operator", "reader", "writer"]
        );
        assert_eq!(
            id.scopes.unwrap().iter().collect::<Vec<_>>(),
            ["read:data", "write:data"]
        );
        assert_eq!(id.attributes["tenant"], AttributeValue::One("acme".into()));
        assert_eq!(
            id.attributes["projects"],
            AttributeValue::Many(vec!["p1".into(), "p2".into()])
        );
        assert_eq!(
            id.attributes["billing"],
            AttributeValue::One("acme-1".into())
        );
        assert_eq!(id.expires_at, Some(2000000000));
    }

    #[test]
    fn numeric_dates_table() {
        let not_a_number = |reason| Err(AuthError::Invalid(reason));
        let dates = |exp, iat, nbf| Ok(NumericDates { exp, iat, nbf });
        let cases = [
            (json!({}), dates(None, None, None)),
            (
                json!({"exp": 1700000000, "iat": 1699999000, "nbf": 1699999000}),
                dates(Some(1700000000), Some(1699999000), Some(1699999000)),
            ),
            // Fractions: `exp` rounds down, `iat` and `nbf` up (the conservative side).
            (
                json!({"exp": 1700000000.0, "iat": 1699999000.0, "nbf": 1699999000.0}),
                dates(Some(1700000000), Some(1699999000), Some(1699999000)),
            ),
            (
                json!({"exp": 1700000000.9, "iat": 1699999000.1, "nbf": 1699999000.1}),
                dates(Some(1700000000), Some(1699999001), Some(1699999001)),
            ),
            (json!({"exp": -1.5}), dates(Some(-2), None, None)),
            (json!({"exp": 1e300}), dates(Some(i64::MAX), None, None)),
            (json!({"exp": u64::MAX}), dates(Some(i64::MAX), None, None)),
            (
                json!({"exp": "1700000000"}),
                not_a_number("token exp is not a number"),
            ),
            (
                json!({"exp": null}),
                not_a_number("token exp is not a number"),
            ),
            (
                json!({"iat": true}),
                not_a_number("token iat is not a number"),
            ),
            (
                json!({"nbf": [1]}),
                not_a_number("token nbf is not a number"),
            ),
        ];
        for (claims, want) in cases {
            assert_eq!(NumericDates::of(&claims), want, "{claims}");
        }
        // The identity's expiry is the `exp` read so.
        let mapping = ClaimMapping::default();
        let identity =
            |claims: Value| mapping.identity(&claims, "jwt", "https://idp.example.org", None);
        assert_eq!(
            identity(json!({"sub": "u", "exp": 1700000000.5}))
                .unwrap()
                .expires_at,
            Some(1700000000)
        );
        assert_eq!(
            identity(json!({"sub": "u", "exp": "2000000000"})),
            Err(AuthError::Invalid("token exp is not a number"))
        );
    }

    #[test]
    fn subject_scopes_and_username_fallbacks() {
        let mapping = ClaimMapping::default();
        // (claims, fallback subject, subject, username, scopes)
        let cases = [
            (json!({"sub": "s"}), None, Some("s"), "s", vec![]),
            (
                json!({"client_id": "c", "scp": ["a", "b"]}),
                Some("c"),
                Some("c"),
                "c",
                vec!["a", "b"],
            ),
            (json!({"sub": "", "scope": "x"}), None, None, "", vec![]),
            (json!({"scope": "x"}), None, None, "", vec![]),
        ];
        for (claims, fallback, subject, username, scopes) in cases {
            let got = mapping.identity(&claims, "introspect", "https://i", fallback);
            match subject {
                Some(s) => {
                    let id = got.unwrap();
                    assert_eq!(id.subject, format!("oidc:https%3A//i:{s}"));
                    assert_eq!(id.native_id.as_deref(), Some(s));
                    assert_eq!(id.username, username);
                    assert_eq!(id.scopes.unwrap().iter().collect::<Vec<_>>(), scopes);
                }
                None => assert_eq!(
                    got.unwrap_err(),
                    AuthError::Invalid("the token names no subject")
                ),
            }
        }
    }

    #[test]
    fn all_scopes_where_the_mapping_reads_them_and_the_client() {
        let default = ClaimMapping::default();
        let authgate = ClaimMapping {
            scopes_all: Some("scope_all".into()),
            ..ClaimMapping::default()
        };
        let scopes = |mapping: &ClaimMapping, claims: Value| {
            mapping
                .identity(&claims, "jwt", "https://i", None)
                .unwrap()
                .scopes
                .map(|s| s.iter().map(str::to_owned).collect::<Vec<_>>())
        };
        let all = json!({"sub": "u", "scope": "", "scope_all": true});
        assert_eq!(scopes(&default, all.clone()), Some(vec![]), "foreign: none");
        assert_eq!(scopes(&authgate, all), None, "authgate's own: all");
        // Only the JSON `true` means all.
        for value in [json!("true"), json!(false), json!(1), json!([true])] {
            let claims = json!({"sub": "u", "scope": "a", "scope_all": value});
            assert_eq!(scopes(&authgate, claims), Some(vec!["a".into()]), "{value}");
        }
        // The token's client: `client_id` (RFC 9068), else `azp` (OIDC).
        let client = |claims: Value| {
            default
                .identity(&claims, "jwt", "https://i", None)
                .unwrap()
                .client_id
        };
        assert_eq!(
            client(json!({"sub": "u", "client_id": "gw", "azp": "x"})).as_deref(),
            Some("gw")
        );
        assert_eq!(
            client(json!({"sub": "u", "azp": "spa"})).as_deref(),
            Some("spa")
        );
        assert_eq!(client(json!({"sub": "u", "client_id": ""})), None);
        let scoped = json!({"sub": "u", "scope": "read:data write:data"});
        assert_eq!(
            scopes(&authgate, scoped),
            Some(vec!["read:data".into(), "write:data".into()])
        );
    }

    #[test]
    fn subjects_are_qualified_by_the_issuer() {
        let mapping = ClaimMapping::default();
        let claims = json!({"sub": "root", "preferred_username": "root"});
        let a = mapping
            .identity(&claims, "jwt", "https://idp.example.org", None)
            .unwrap();
        // An IdP's `root` is not the local user `root`, nor another IdP's `root`.
        assert_eq!(a.subject, "oidc:https%3A//idp.example.org:root");
        assert_eq!(a.native_id.as_deref(), Some("root"));
        assert_eq!(a.username, "root");
        let b = mapping
            .identity(&claims, "offline", "https://other.example.org", None)
            .unwrap();
        assert_eq!(b.subject, "oidc:https%3A//other.example.org:root");
        // The same issuer's user is the same subject whichever provider kind maps it.
        let c = mapping
            .identity(&claims, "introspect", "https://idp.example.org", None)
            .unwrap();
        assert_eq!(c.subject, a.subject);
    }

    #[test]
    fn email_is_taken_only_when_verified() {
        // (claims.email_verified, the token's email_verified, email taken)
        let cases = [
            ("require", Some(json!(true)), true),
            ("require", Some(json!(false)), false),
            ("require", None, false),
            ("require", Some(json!("true")), false),
            ("require", Some(json!(1)), false),
            ("ignore", Some(json!(false)), true),
            ("ignore", None, true),
        ];
        for (setting, verified, taken) in cases {
            let mapping: ClaimMapping =
                serde_json::from_value(json!({ "email_verified": setting })).unwrap();
            let mut claims = json!({"sub": "u", "email": "victim@example.org"});
            if let Some(v) = &verified {
                claims["email_verified"] = v.clone();
            }
            let id = mapping.identity(&claims, "jwt", "https://i", None).unwrap();
            assert_eq!(
                id.email.as_deref(),
                taken.then_some("victim@example.org"),
                "{setting} {verified:?}"
            );
        }
        // The default requires verification.
        let id = ClaimMapping::default()
            .identity(
                &json!({"sub": "u", "email": "victim@example.org"}),
                "jwt",
                "https://i",
                None,
            )
            .unwrap();
        assert_eq!(id.email, None);
        assert!(serde_json::from_value::<ClaimMapping>(json!({"email_verified": "no"})).is_err());
    }

    #[test]
    fn mapped_user_names_are_nfkc() {
        let mapping = ClaimMapping::default();
        let id = |name: &str| {
            mapping.identity(
                &json!({"sub": "u", "preferred_username": name}),
                "jwt",
                "https://i",
                None,
            )
        };
        assert_eq!(id("ｒｏｏｔ").unwrap().username, "root");
        assert_eq!(id("ﬁnn").unwrap().username, "finn");
        assert_eq!(id("alice").unwrap().username, "alice");
        for bad in ["ro\u{202E}ot", "root\n", " root", ""] {
            assert_eq!(
                id(bad).unwrap_err(),
                AuthError::Invalid("the token's user name is not acceptable"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn client_config_names_the_key() {
        let cases = [
            (json!({"client_id": "gw"}), Some("p.client_secret")),
            (
                json!({"client_id": "gw", "client_secret": "s", "client_auth": "none"}),
                Some("p.client_auth"),
            ),
            (
                json!({"client_id": "", "client_secret": "s"}),
                Some("p.client_id"),
            ),
            (
                json!({"client_id": "gw", "client_secret": "s", "client_secret_file": "/x"}),
                Some("p.client_secret"),
            ),
            (
                json!({"client_id": "gw", "client_secret_file": "/nonexistent/secret"}),
                Some("p.client_secret_file"),
            ),
            (json!({"client_id": "gw", "client_secret": "s"}), None),
            (json!({"client_id": "app", "client_auth": "none"}), None),
        ];
        for (config, key) in cases {
            let config: ClientConfig = serde_json::from_value(config.clone()).unwrap();
            match (config.load("p"), key) {
                (Ok(_), None) => {}
                (Err(ConfigError::Invalid { key: got, .. }), Some(want)) => assert_eq!(got, want),
                (other, _) => panic!("{config:?}: {:?}", other.err()),
            }
        }
    }
}
