//! Browser sign-in sessions as stored: keyed by the SHA-256 of the cookie (the cookie holds
//! only a random id), never the cookie itself. The IdP's tokens stay here, server-side,
//! for refresh and `id_token_hint`; they never reach a cookie, a log line or `Debug`.

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::secret::Secret;

/// One signed-in browser.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// SHA-256 of the session cookie's credential (the decision cache's key, too).
    pub hash: [u8; 32],
    /// The configured name of the issuer the user signed in with.
    pub issuer: String,
    /// The IdP's `sub`.
    pub subject: String,
    /// The IdP's session id (`sid` of the ID token), for back-channel logout.
    pub sid: Option<String>,
    /// The verified claims (ID token, and userinfo when asked), as JSON text.
    pub claims: String,
    /// The raw ID token, for RP-initiated logout's `id_token_hint`.
    pub id_token: Secret,
    /// The IdP's refresh token, when it issued one.
    pub refresh_token: Option<Secret>,
    /// When the IdP's access token expires (unix seconds), when it said.
    pub access_expires_at: Option<i64>,
    /// Unix seconds.
    pub created_at: i64,
    /// Last time a request used the session (unix seconds), for the idle timeout.
    pub last_seen_at: i64,
    /// The absolute end of the session (unix seconds).
    pub expires_at: i64,
}

impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("issuer", &self.issuer)
            .field("subject", &self.subject)
            .field("sid", &self.sid)
            .field("created_at", &self.created_at)
            .field("last_seen_at", &self.last_seen_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Which sessions a back-channel logout ends: those of `issuer` with this `sid`, or with
/// this `sub`, or both (then a session must match both).
#[derive(Debug, Clone, Copy)]
pub struct SessionMatch<'a> {
    /// Configured issuer name.
    pub issuer: &'a str,
    /// The IdP's `sub`.
    pub subject: Option<&'a str>,
    /// The IdP's session id.
    pub sid: Option<&'a str>,
}

impl SessionMatch<'_> {
    /// Whether `record` is one of the matched sessions.
    pub fn matches(&self, record: &SessionRecord) -> bool {
        record.issuer == self.issuer
            && (self.subject.is_some() || self.sid.is_some())
            && self.subject.is_none_or(|s| s == record.subject)
            && self.sid.is_none_or(|s| record.sid.as_deref() == Some(s))
    }
}

/// The stored form of a session's fields (both backends keep it as one JSON text).
#[derive(Serialize, Deserialize)]
struct Stored {
    issuer: String,
    subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    claims: String,
    id_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    access_expires_at: Option<i64>,
    created_at: i64,
    last_seen_at: i64,
    expires_at: i64,
}

/// The session's fields as JSON text (without the hash, which is the key).
pub(super) fn encode(record: &SessionRecord) -> Result<String, StoreError> {
    serde_json::to_string(&Stored {
        issuer: record.issuer.clone(),
        subject: record.subject.clone(),
        sid: record.sid.clone(),
        claims: record.claims.clone(),
        id_token: record.id_token.expose().to_owned(),
        refresh_token: record.refresh_token.as_ref().map(|s| s.expose().to_owned()),
        access_expires_at: record.access_expires_at,
        created_at: record.created_at,
        last_seen_at: record.last_seen_at,
        expires_at: record.expires_at,
    })
    .map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The session stored under `hash` as `text`.
pub(super) fn decode(hash: [u8; 32], text: &str) -> Result<SessionRecord, StoreError> {
    let s: Stored =
        serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("session: {e}")))?;
    Ok(SessionRecord {
        hash,
        issuer: s.issuer,
        subject: s.subject,
        sid: s.sid,
        claims: s.claims,
        id_token: Secret::new(s.id_token),
        refresh_token: s.refresh_token.map(Secret::new),
        access_expires_at: s.access_expires_at,
        created_at: s.created_at,
        last_seen_at: s.last_seen_at,
        expires_at: s.expires_at,
    })
}
