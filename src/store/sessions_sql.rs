//! The embedded store's sessions: one row per session, its fields as JSON text beside the
//! columns that are searched (`issuer`, `subject`, `sid`, `expires_at`). Ended and
//! expired rows are deleted, never kept.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use super::pool::query_err;
use super::session::{SessionMatch, SessionRecord, decode, encode};

/// The schema migration that adds the table (idempotent: an older release may have set
/// `user_version` back after this ran).
pub(super) const MIGRATION: &str = r#"
CREATE TABLE IF NOT EXISTS sessions (
    hash       BLOB PRIMARY KEY,
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    sid        TEXT,
    expires_at INTEGER NOT NULL,
    data       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_subject ON sessions (issuer, subject);
CREATE INDEX IF NOT EXISTS sessions_sid ON sessions (issuer, sid);
"#;

pub(super) fn insert(c: &mut Connection, record: &SessionRecord) -> Result<(), StoreError> {
    let data = encode(record)?;
    // Expired sessions go as new ones come, so that the table does not grow forever.
    c.execute(
        "DELETE FROM sessions WHERE expires_at <= ?1",
        params![record.created_at],
    )
    .map_err(query_err)?;
    let n = c
        .execute(
            "INSERT OR IGNORE INTO sessions (hash, issuer, subject, sid, expires_at, data) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                record.hash.to_vec(),
                record.issuer,
                record.subject,
                record.sid,
                record.expires_at,
                data
            ],
        )
        .map_err(query_err)?;
    if n == 0 {
        return Err(StoreError::Exists("session".into()));
    }
    Ok(())
}

pub(super) fn replace(c: &mut Connection, record: &SessionRecord) -> Result<bool, StoreError> {
    let data = encode(record)?;
    let n = c
        .execute(
            "UPDATE sessions SET data = ?2, expires_at = ?3 WHERE hash = ?1",
            params![record.hash.to_vec(), data, record.expires_at],
        )
        .map_err(query_err)?;
    Ok(n > 0)
}

pub(super) fn get(
    c: &mut Connection,
    hash: [u8; 32],
    now: i64,
) -> Result<Option<SessionRecord>, StoreError> {
    let data: Option<String> = c
        .query_row(
            "SELECT data FROM sessions WHERE hash = ?1 AND expires_at > ?2",
            params![hash.to_vec(), now],
            |r| r.get(0),
        )
        .optional()
        .map_err(query_err)?;
    data.map(|d| decode(hash, &d)).transpose()
}

pub(super) fn touch(c: &mut Connection, hash: [u8; 32], at: i64) -> Result<bool, StoreError> {
    let n = c
        .execute(
            "UPDATE sessions SET data = json_set(data, '$.last_seen_at', ?2) \
             WHERE hash = ?1 AND json_extract(data, '$.last_seen_at') < ?2",
            params![hash.to_vec(), at],
        )
        .map_err(query_err)?;
    Ok(n > 0)
}

pub(super) fn delete(c: &mut Connection, hash: [u8; 32]) -> Result<bool, StoreError> {
    let n = c
        .execute(
            "DELETE FROM sessions WHERE hash = ?1",
            params![hash.to_vec()],
        )
        .map_err(query_err)?;
    Ok(n > 0)
}

pub(super) fn end(
    c: &mut Connection,
    which: SessionMatch<'_>,
) -> Result<Vec<[u8; 32]>, StoreError> {
    if which.subject.is_none() && which.sid.is_none() {
        return Ok(Vec::new());
    }
    let tx = c.transaction().map_err(query_err)?;
    let hashes: Vec<Vec<u8>> = {
        let mut stmt = tx
            .prepare(
                "SELECT hash FROM sessions WHERE issuer = ?1 \
                 AND (?2 IS NULL OR subject = ?2) AND (?3 IS NULL OR sid = ?3)",
            )
            .map_err(query_err)?;
        stmt.query_map(params![which.issuer, which.subject, which.sid], |r| {
            r.get(0)
        })
        .map_err(query_err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(query_err)?
    };
    let mut ended = Vec::with_capacity(hashes.len());
    for hash in hashes {
        tx.execute("DELETE FROM sessions WHERE hash = ?1", params![hash])
            .map_err(query_err)?;
        if let Ok(h) = <[u8; 32]>::try_from(hash.as_slice()) {
            ended.push(h);
        }
    }
    tx.commit().map_err(query_err)?;
    Ok(ended)
}
