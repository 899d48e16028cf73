//! The claims of a minted JWT, in the shape `mint.profile` asks for (README "The minted
//! JWT"). "All scopes" (a user who authenticated directly) is said explicitly with
//! `scope_all: true`, never by leaving the scope claim out: every verifier reads a missing
//! claim as no scopes.

use serde::Serialize;

use super::Profile;
use crate::identity::{Attributes, Identity, Names};

/// The `client_id` of a JWT whose credential names no client of its own.
pub const DEFAULT_CLIENT_ID: &str = "authgate";

/// What a JWT says besides its identity.
pub(super) struct Envelope<'a> {
    pub issuer: &'a str,
    pub audience: &'a str,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: String,
    /// The stored credential (API token) the JWT is minted for: its `token_id` claim.
    pub token_id: Option<&'a str>,
}

#[derive(Serialize)]
pub(super) struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: String,
    /// RFC 9068: the client the credential was issued to: a foreign token's client, the
    /// API token, else authgate.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    /// RFC 9068 (RFC 8693 section 4.2): space-separated; empty when the identity holds
    /// all scopes (`scope_all`) or none.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    /// `legacy`: the list; absent for all scopes.
    #[serde(skip_serializing_if = "Option::is_none")]
    scopes: Option<&'a Names>,
    /// `true` for an identity that holds every scope (absent otherwise).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    scope_all: bool,
    username: &'a str,
    /// OIDC's name for `username`.
    #[serde(skip_serializing_if = "Option::is_none")]
    preferred_username: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    /// authgate puts only verified addresses in `email`; verifiers that require this
    /// (authgate's own `jwt` provider among them) take the address then.
    #[serde(skip_serializing_if = "Option::is_none")]
    email_verified: Option<bool>,
    roles: &'a Names,
    attributes: &'a Attributes,
    provider: &'a str,
    /// The stored credential (API token id) the JWT was minted for: `jti` names one minted
    /// JWT, which is reused for that credential until shortly before it expires, so it is
    /// not unique per request; this claim tells an owner's tokens apart in audit logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    token_id: Option<&'a str>,
}

impl<'a> Claims<'a> {
    /// The claims of `identity` in `profile`.
    pub(super) fn new(profile: Profile, identity: &'a Identity, envelope: Envelope<'a>) -> Self {
        let rfc9068 = profile == Profile::Rfc9068;
        let token_id = envelope.token_id;
        // A name with whitespace (an IdP's `scp` list may hold one) would read as several
        // scopes in the space-separated claim: it is left out (RFC 6749 forbids it anyway).
        let scope = rfc9068.then(|| match &identity.scopes {
            Some(scopes) => scopes
                .iter()
                .filter(|s| !s.contains(char::is_whitespace))
                .collect::<Vec<_>>()
                .join(" "),
            None => String::new(),
        });
        Self {
            iss: envelope.issuer,
            sub: &identity.subject,
            aud: envelope.audience,
            iat: envelope.iat,
            nbf: envelope.nbf,
            exp: envelope.exp,
            jti: envelope.jti,
            client_id: rfc9068.then(|| {
                identity
                    .client_id
                    .as_deref()
                    .or(token_id)
                    .unwrap_or(DEFAULT_CLIENT_ID)
            }),
            scope,
            scopes: if rfc9068 {
                None
            } else {
                identity.scopes.as_ref()
            },
            scope_all: identity.scopes.is_none(),
            username: &identity.username,
            preferred_username: rfc9068.then_some(identity.username.as_str()),
            email: identity.email.as_deref(),
            email_verified: (rfc9068 && identity.email.is_some()).then_some(true),
            roles: &identity.roles,
            attributes: &identity.attributes,
            provider: identity.provider,
            token_id,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn identity(scopes: Option<Names>, token: Option<&str>, email: Option<&str>) -> Identity {
        Identity {
            subject: "alice".into(),
            native_id: None,
            provider: "api_token",
            username: "alice".into(),
            email: email.map(Into::into),
            roles: Names::from(["admin"]),
            attributes: Attributes::new(),
            scopes,
            expires_at: None,
            credential_id: token.map(Into::into),
            client_id: None,
        }
    }

    fn claims(profile: Profile, identity: &Identity) -> Value {
        let envelope = Envelope {
            issuer: "https://authgate.test",
            audience: "api",
            iat: 1000,
            nbf: 970,
            exp: 1300,
            jti: "j".into(),
            token_id: identity.credential_id.as_deref(),
        };
        serde_json::to_value(Claims::new(profile, identity, envelope)).unwrap()
    }

    #[test]
    fn rfc9068_claims() {
        let scoped = identity(
            Some(Names::from(["write:data", "read:data"])),
            Some("tok_1"),
            Some("a@example.org"),
        );
        assert_eq!(
            claims(Profile::Rfc9068, &scoped),
            json!({"iss": "https://authgate.test", "sub": "alice", "aud": "api", "iat": 1000,
                "nbf": 970, "exp": 1300, "jti": "j", "client_id": "tok_1",
                "scope": "read:data write:data", "username": "alice",
                "preferred_username": "alice", "email": "a@example.org", "email_verified": true,
                "roles": ["admin"], "attributes": {}, "provider": "api_token", "token_id": "tok_1"})
        );
        // All scopes: said explicitly; `scope` is there, empty, for readers that need it.
        let all = claims(Profile::Rfc9068, &identity(None, None, None));
        assert_eq!(all["scope_all"], true);
        assert_eq!(all["scope"], "");
        assert_eq!(all["client_id"], DEFAULT_CLIENT_ID);
        assert!(
            all.get("scopes").is_none() && all.get("email_verified").is_none(),
            "{all}"
        );
        // A scope name with a space cannot pass for two scopes.
        let spaced = identity(Some(Names::from(["a b", "c"])), None, None);
        assert_eq!(claims(Profile::Rfc9068, &spaced)["scope"], "c");
        // A foreign token's client goes before the API token.
        let mut foreign = identity(Some(Names::default()), Some("tok_1"), None);
        foreign.client_id = Some("gw".into());
        assert_eq!(claims(Profile::Rfc9068, &foreign)["client_id"], "gw");
        // No scopes at all is not all scopes.
        let none = claims(
            Profile::Rfc9068,
            &identity(Some(Names::default()), None, None),
        );
        assert_eq!(none["scope"], "");
        assert!(none.get("scope_all").is_none(), "{none}");
    }

    #[test]
    fn legacy_claims() {
        let scoped = identity(Some(Names::from(["read:data"])), Some("tok_1"), Some("a@x"));
        assert_eq!(
            claims(Profile::Legacy, &scoped),
            json!({"iss": "https://authgate.test", "sub": "alice", "aud": "api", "iat": 1000,
                "nbf": 970, "exp": 1300, "jti": "j", "scopes": ["read:data"],
                "username": "alice", "email": "a@x", "roles": ["admin"], "attributes": {},
                "provider": "api_token", "token_id": "tok_1"})
        );
        let all = claims(Profile::Legacy, &identity(None, None, None));
        assert!(
            all.get("scopes").is_none() && all.get("scope").is_none(),
            "{all}"
        );
        assert_eq!(all["scope_all"], true);
    }
}
