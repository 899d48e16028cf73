//! What the API and the pages share: listing, creating and revoking tokens, the limits of
//! `portal:` and the audit lines (who, which token id, when; never the secret).

use std::time::Duration;

use crate::cache::DecisionCache;
use crate::identity::{Identity, Names};
use crate::providers::ApiTokenProvider;
use crate::secret::{Secret, generate_api_token, random_id, sha256};
use crate::store::{Store, TokenRecord, TokenRef};

use super::config::{MANAGE_SCOPE, PortalConfig, scope_problem};
use super::{Caller, PortalError};

/// Longest token name, in characters.
pub(super) const MAX_NAME_CHARS: usize = 64;

/// The expiry choices of the create form (seconds, label); those above
/// `portal.max_lifetime` are left out, and the maximum itself is always offered.
const LIFETIMES: [(u64, &str); 5] = [
    (86_400, "1 day"),
    (7 * 86_400, "7 days"),
    (30 * 86_400, "30 days"),
    (90 * 86_400, "90 days"),
    (365 * 86_400, "1 year"),
];

/// Everything an operation needs.
pub(super) struct Context<'a> {
    pub config: &'a PortalConfig,
    pub store: &'a dyn Store,
    pub cache: &'a DecisionCache,
    pub creating: &'a tokio::sync::Mutex<()>,
}

/// What a caller asks to create.
pub(super) struct NewToken {
    pub name: String,
    pub scopes: Vec<String>,
    /// `None`: `portal.max_lifetime`.
    pub lifetime: Option<Duration>,
}

/// Which face of the portal an operation came through (in the audit line).
#[derive(Debug, Clone, Copy)]
pub(super) enum Via {
    Api,
    Page,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Page => "portal",
        }
    }
}

/// `active`, `expired` or `revoked`.
pub(super) fn status(token: &TokenRecord, now: i64) -> &'static str {
    if token.revoked_at.is_some() {
        "revoked"
    } else if token.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

impl Context<'_> {
    /// Whether `identity` holds `portal.admin_role`.
    pub fn is_admin(&self, identity: &Identity) -> bool {
        self.config
            .admin_role
            .as_deref()
            .is_some_and(|r| identity.roles.contains(r))
    }

    /// Whether the caller may manage tokens at all: a user does; an API token only with
    /// [`MANAGE_SCOPE`].
    pub fn may_manage(&self, caller: &Caller<'_>) -> Result<(), PortalError> {
        if caller.identity.has_scope(MANAGE_SCOPE) {
            Ok(())
        } else {
            Err(PortalError::Forbidden(format!(
                "this credential lacks the scope {MANAGE_SCOPE}"
            )))
        }
    }

    /// The scopes `identity` may put on a token: those of `portal.grantable_scopes` that
    /// it holds itself.
    pub fn grantable(&self, identity: &Identity) -> Vec<String> {
        self.config
            .grantable_scopes
            .iter()
            .filter(|s| identity.has_scope(s))
            .cloned()
            .collect()
    }

    /// The form's expiry choices (seconds, label), shortest first.
    pub fn lifetimes(&self) -> Vec<(u64, String)> {
        let max = self.config.max_lifetime.as_secs();
        let mut out: Vec<(u64, String)> = LIFETIMES
            .iter()
            .filter(|(s, _)| *s <= max)
            .map(|(s, l)| (*s, (*l).to_owned()))
            .collect();
        if out.last().is_none_or(|(s, _)| *s != max) {
            let label = humantime::format_duration(self.config.max_lifetime).to_string();
            out.push((max, format!("{label} (the longest)")));
        }
        out
    }

    /// Tokens of `owner` (all owners: `None`), live ones first, newest first.
    pub async fn list(&self, owner: Option<&str>) -> Result<Vec<TokenRecord>, PortalError> {
        let now = crate::unix_now();
        let mut tokens = self.store.list_tokens(owner).await?;
        tokens.sort_by(|a, b| {
            (status(a, now) != "active")
                .cmp(&(status(b, now) != "active"))
                .then(b.created_at.cmp(&a.created_at))
                .then(a.id.cmp(&b.id))
        });
        Ok(tokens)
    }

    /// Creates a token for the caller within the limits; the secret is returned once.
    pub async fn create(
        &self,
        caller: &Caller<'_>,
        new: NewToken,
        via: Via,
    ) -> Result<(TokenRecord, Secret), PortalError> {
        let identity = caller.identity;
        let name = check_name(&new.name)?;
        let scopes = self.check_scopes(identity, &new.scopes)?;
        let now = crate::unix_now();
        let lifetime = self.check_lifetime(identity, new.lifetime, now)?;
        let _one_at_a_time = self.creating.lock().await;
        let owned = self.list(Some(&identity.subject)).await?;
        let live: Vec<_> = owned
            .iter()
            .filter(|t| status(t, now) == "active")
            .collect();
        if live.len() >= self.config.max_tokens_per_user {
            return Err(PortalError::Limit(format!(
                "portal.max_tokens_per_user: you hold {} live tokens, the limit is {}; revoke one first",
                live.len(),
                self.config.max_tokens_per_user
            )));
        }
        if live.iter().any(|t| t.name == name) {
            return Err(PortalError::Conflict(format!(
                "you hold a live token named '{name}' already"
            )));
        }
        let random = |e: crate::secret::RandomError| PortalError::Store(store_err(e));
        let secret = generate_api_token().map_err(random)?;
        let record = TokenRecord {
            id: random_id("tok_").map_err(random)?,
            hash: sha256(secret.expose().as_bytes()),
            owner: identity.subject.clone(),
            name,
            roles: Names::default(),
            attributes: Default::default(),
            scopes: Some(scopes),
            created_at: now,
            expires_at: Some(now + lifetime as i64),
            last_used_at: None,
            revoked_at: None,
        };
        self.store.insert_token(&record).await?;
        // Names and subjects may come from users and IdPs: escaped, so that no value can
        // end a pretty log line.
        tracing::info!(
            target: "authgate::audit",
            action = "token.create",
            via = via.as_str(),
            actor = %identity.subject.escape_debug(),
            owner = %record.owner.escape_debug(),
            token_id = %record.id,
            name = %record.name.escape_debug(),
            scopes = ?record.scopes,
            expires_at = record.expires_at,
            "API token created"
        );
        Ok((record, secret))
    }

    /// The token `id` if the caller may see it: their own, or anyone's for an admin.
    pub async fn find(&self, caller: &Caller<'_>, id: &str) -> Result<TokenRecord, PortalError> {
        if !is_token_id(id) {
            return Err(PortalError::NotFound);
        }
        // Another user's token is "not found" too: its existence is not the caller's.
        self.store
            .get_token(id)
            .await?
            .filter(|t| t.owner == caller.identity.subject || self.is_admin(caller.identity))
            .ok_or(PortalError::NotFound)
    }

    /// Revokes the token `id` (see [`Self::find`]) and drops its decision-cache entries at
    /// once; a shared store tells the other replicas.
    pub async fn revoke(
        &self,
        caller: &Caller<'_>,
        id: &str,
        via: Via,
    ) -> Result<TokenRecord, PortalError> {
        let mut token = self.find(caller, id).await?;
        if token.revoked_at.is_some() {
            return Err(PortalError::Conflict(format!(
                "token {} is revoked already",
                token.id
            )));
        }
        let now = crate::unix_now();
        if !self
            .store
            .revoke_token(TokenRef::Id(&token.id), now)
            .await?
        {
            return Err(PortalError::Conflict(format!(
                "token {} is revoked already",
                token.id
            )));
        }
        let dropped = self.cache.invalidate_credential_id(&token.id);
        token.revoked_at = Some(now);
        tracing::info!(
            target: "authgate::audit",
            action = "token.revoke",
            via = via.as_str(),
            actor = %caller.identity.subject.escape_debug(),
            owner = %token.owner.escape_debug(),
            token_id = %token.id,
            cache_entries_dropped = dropped,
            "API token revoked"
        );
        Ok(token)
    }

    fn check_scopes(&self, identity: &Identity, asked: &[String]) -> Result<Names, PortalError> {
        if asked.is_empty() {
            return Err(PortalError::Limit(
                "scopes: choose at least one scope".to_owned(),
            ));
        }
        for scope in asked {
            if let Some(problem) = scope_problem(scope) {
                return Err(PortalError::BadRequest(format!("scope: {problem}")));
            }
            if !self.config.grantable_scopes.contains(scope) {
                return Err(PortalError::Limit(format!(
                    "portal.grantable_scopes: the scope '{scope}' cannot be granted here"
                )));
            }
            if !identity.has_scope(scope) {
                return Err(PortalError::Limit(format!(
                    "your credential does not hold the scope '{scope}'; a token never holds more than its maker"
                )));
            }
        }
        Ok(asked.iter().map(String::as_str).collect())
    }

    /// The lifetime in seconds: at most `portal.max_lifetime`, and when an API token makes
    /// the token, not past that token's own expiry.
    fn check_lifetime(
        &self,
        identity: &Identity,
        asked: Option<Duration>,
        now: i64,
    ) -> Result<u64, PortalError> {
        let max = self.config.max_lifetime;
        let lifetime = asked.unwrap_or(max);
        if lifetime.is_zero() {
            return Err(PortalError::BadRequest(
                "expires_in must be above zero".to_owned(),
            ));
        }
        if lifetime > max {
            return Err(PortalError::Limit(format!(
                "portal.max_lifetime: a token may live at most {}",
                humantime::format_duration(max)
            )));
        }
        let secs = lifetime.as_secs().max(1);
        if identity.provider == ApiTokenProvider::KIND
            && let Some(until) = identity.expires_at
            && now.saturating_add(secs as i64) > until
        {
            return Err(PortalError::Limit(format!(
                "the new token would outlive the API token that creates it (it expires in {} s)",
                (until - now).max(0)
            )));
        }
        Ok(secs)
    }
}

/// The name, trimmed: 1 to [`MAX_NAME_CHARS`] characters, no control characters.
fn check_name(name: &str) -> Result<String, PortalError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(PortalError::BadRequest("name must not be empty".to_owned()));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(PortalError::BadRequest(format!(
            "name must be at most {MAX_NAME_CHARS} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(PortalError::BadRequest(
            "name must not contain control characters".to_owned(),
        ));
    }
    Ok(name.to_owned())
}

/// Whether `id` has the shape of a token id (`tok_` and 16 hex digits).
fn is_token_id(id: &str) -> bool {
    id.strip_prefix("tok_")
        .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn store_err(e: crate::secret::RandomError) -> crate::store::StoreError {
    crate::store::StoreError::Query(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids() {
        assert_eq!(check_name("  ci deploy ").unwrap(), "ci deploy");
        assert_eq!(
            check_name("<script>alert(1)</script>").unwrap(),
            "<script>alert(1)</script>"
        );
        for bad in ["", "   ", "a\nb", "x\u{7}", &"n".repeat(65)] {
            assert!(
                matches!(check_name(bad), Err(PortalError::BadRequest(_))),
                "{bad:?}"
            );
        }
        assert!(is_token_id("tok_0123456789abcdef"));
        for bad in [
            "tok_0123",
            "tok_0123456789abcdeg",
            "0123456789abcdef",
            "tok_../../x",
        ] {
            assert!(!is_token_id(bad), "{bad}");
        }
    }

    #[test]
    fn statuses() {
        let t = |expires_at, revoked_at| TokenRecord {
            id: "tok_1".into(),
            hash: [0; 32],
            owner: "a".into(),
            name: "n".into(),
            roles: Names::default(),
            attributes: Default::default(),
            scopes: None,
            created_at: 0,
            expires_at,
            last_used_at: None,
            revoked_at,
        };
        assert_eq!(status(&t(None, None), 100), "active");
        assert_eq!(status(&t(Some(101), None), 100), "active");
        assert_eq!(status(&t(Some(100), None), 100), "expired");
        assert_eq!(status(&t(Some(50), Some(10)), 100), "revoked");
    }
}
