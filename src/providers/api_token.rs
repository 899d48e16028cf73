//! `api_token`: opaque tokens issued by authgate (`agt_...`), looked up by the SHA-256 of
//! the secret.
//!
//! A token never holds more than its grant ([`token_roles`]): for a local user, an
//! unscoped token acts for the user (all the user's roles and scopes); a scoped token holds
//! only its scopes and the roles named at its creation, and never a role the user no
//! longer holds. A token of a subject that is not a local user (a service) holds exactly
//! the roles and scopes it was created with. The owner's attributes describe who the token
//! speaks for and always join the token's own.

use std::sync::Arc;

use async_trait::async_trait;

use super::{AuthContext, AuthError, Provider};
use crate::credential::Credential;
use crate::identity::{Attributes, Identity, Names};
use crate::secret::{API_TOKEN_PREFIX, constant_time_eq, is_api_token_format, sha256};
use crate::store::{Store, UserRecord};

/// The `api_token` provider.
pub struct ApiTokenProvider {
    store: Arc<dyn Store>,
}

impl ApiTokenProvider {
    /// Type name.
    pub const KIND: &'static str = "api_token";

    /// Over `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }
}

/// The roles a token holds: see the module documentation.
pub fn token_roles(granted: &Names, scoped: bool, owner: Option<&UserRecord>) -> Names {
    match owner {
        None => granted.clone(),
        Some(user) if granted.is_empty() && !scoped => user.roles.clone(),
        Some(user) => granted.iter().filter(|r| user.roles.contains(r)).collect(),
    }
}

#[async_trait]
impl Provider for ApiTokenProvider {
    fn kind(&self) -> &'static str {
        Self::KIND
    }

    fn accepts(&self, credential: &Credential) -> bool {
        credential
            .token()
            .is_some_and(|t| t.expose().starts_with(API_TOKEN_PREFIX))
    }

    fn challenge(&self, realm: &str) -> String {
        format!("Bearer realm=\"{realm}\"")
    }

    async fn authenticate(
        &self,
        credential: &Credential,
        _ctx: &AuthContext,
    ) -> Result<Identity, AuthError> {
        let Some(secret) = credential.token() else {
            return Err(AuthError::Invalid("not an API token"));
        };
        if !is_api_token_format(secret.expose()) {
            return Err(AuthError::Invalid("malformed API token"));
        }
        let hash = sha256(secret.expose().as_bytes());
        let found = self
            .store
            .lookup_token(&hash)
            .await
            .map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let Some(found) = found.filter(|f| constant_time_eq(&f.token.hash, &hash)) else {
            return Err(AuthError::Invalid("unknown API token"));
        };
        let token = found.token;
        if token.revoked_at.is_some() {
            return Err(AuthError::Invalid("API token revoked"));
        }
        if token.expires_at.is_some_and(|e| e <= crate::unix_now()) {
            return Err(AuthError::Expired);
        }
        let roles = token_roles(&token.roles, token.scopes.is_some(), found.owner.as_ref());
        let (mut attributes, email) = match found.owner {
            Some(u) => (u.attributes, u.email),
            None => (Attributes::new(), None),
        };
        attributes.extend(token.attributes);
        Ok(Identity {
            subject: token.owner.clone(),
            native_id: None,
            provider: Self::KIND,
            username: token.owner,
            email,
            roles,
            attributes,
            scopes: token.scopes,
            expires_at: token.expires_at,
            credential_id: Some(token.id),
            client_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(roles: &[&str]) -> UserRecord {
        UserRecord {
            username: "alice".into(),
            password_hash: String::new(),
            email: None,
            roles: roles.iter().copied().collect(),
            attributes: Attributes::new(),
            created_at: 0,
        }
    }

    #[test]
    fn token_roles_table() {
        let admin = user(&["admin", "staff"]);
        let staff = user(&["staff"]);
        let names = |r: &[&str]| -> Names { r.iter().copied().collect() };
        // (granted at creation, scoped, owner) -> roles held
        let cases: Vec<(Names, bool, Option<&UserRecord>, Names)> = vec![
            // An unscoped token without roles acts for its owner.
            (names(&[]), false, Some(&admin), names(&["admin", "staff"])),
            // A scoped token holds no role it was not given ...
            (names(&[]), true, Some(&admin), names(&[])),
            // ... and the given ones only while the owner holds them.
            (names(&["staff"]), true, Some(&admin), names(&["staff"])),
            (
                names(&["staff", "root"]),
                true,
                Some(&admin),
                names(&["staff"]),
            ),
            (names(&["staff"]), false, Some(&admin), names(&["staff"])),
            (names(&["admin"]), true, Some(&staff), names(&[])),
            // A service subject's token holds what the operator granted.
            (names(&["member"]), true, None, names(&["member"])),
            (names(&[]), false, None, names(&[])),
        ];
        for (granted, scoped, owner, want) in cases {
            assert_eq!(
                token_roles(&granted, scoped, owner),
                want,
                "{granted:?} scoped={scoped}"
            );
        }
    }
}
