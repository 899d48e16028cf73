//! The embedded store's rows as records (and records' JSON columns), for `sqlite`.

use rusqlite::Row;

use super::{KeyRecord, StoreError, TokenRecord, UserRecord};
use crate::identity::{Attributes, Names};

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn token_from_row(row: &Row<'_>, offset: usize) -> rusqlite::Result<TokenRecord> {
    let hash: Vec<u8> = row.get(offset + 1)?;
    let hash: [u8; 32] = hash.try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Blob,
            "token hash is not 32 bytes".into(),
        )
    })?;
    let scopes: Option<String> = row.get(offset + 6)?;
    Ok(TokenRecord {
        id: row.get(offset)?,
        hash,
        owner: row.get(offset + 2)?,
        name: row.get(offset + 3)?,
        roles: from_json(&row.get::<_, String>(offset + 4)?)?,
        attributes: from_json(&row.get::<_, String>(offset + 5)?)?,
        scopes: scopes.map(|s| from_json::<Names>(&s)).transpose()?,
        created_at: row.get(offset + 7)?,
        expires_at: row.get(offset + 8)?,
        last_used_at: row.get(offset + 9)?,
        revoked_at: row.get(offset + 10)?,
    })
}

pub(super) fn user_from_row(row: &Row<'_>, offset: usize) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        username: row.get(offset)?,
        password_hash: row.get(offset + 1)?,
        email: row.get(offset + 2)?,
        roles: from_json(&row.get::<_, String>(offset + 3)?)?,
        attributes: from_json::<Attributes>(&row.get::<_, String>(offset + 4)?)?,
        created_at: row.get(offset + 5)?,
    })
}

pub(super) fn key_from_row(row: &Row<'_>) -> rusqlite::Result<KeyRecord> {
    Ok(KeyRecord {
        kid: row.get(0)?,
        algorithm: row.get(1)?,
        private_pkcs8: row.get(2)?,
        created_at: row.get(3)?,
        activates_at: row.get(4)?,
        retired_at: row.get(5)?,
        publish_until: row.get(6)?,
    })
}
