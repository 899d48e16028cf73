//! `api_token`: opaque tokens issued by authgate (`agt_...`), looked up by the SHA-256 of
//! the secret. The owner's roles and attributes (when a local user) join the token's own.

use std::sync::Arc;

use async_trait::async_trait;

use super::{AuthContext, AuthError, Provider};
use crate::credential::Credential;
use crate::identity::{Attributes, Identity};
use crate::secret::{API_TOKEN_PREFIX, constant_time_eq, is_api_token_format, sha256};
use crate::store::Store;

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
            return Err(AuthError::Invalid("API token expired"));
        }
        let (roles, mut attributes, email) = match found.owner {
            Some(u) if token.roles.is_empty() => (u.roles, u.attributes, u.email),
            Some(u) => (u.roles.union(&token.roles), u.attributes, u.email),
            None => (token.roles, Attributes::new(), None),
        };
        attributes.extend(token.attributes);
        Ok(Identity {
            subject: token.owner.clone(),
            provider: Self::KIND,
            username: token.owner,
            email,
            roles,
            attributes,
            scopes: token.scopes,
            expires_at: token.expires_at,
            credential_id: Some(token.id),
        })
    }
}
