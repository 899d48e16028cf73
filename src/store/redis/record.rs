//! How records are kept in Redis: tokens and users as hashes of fields (JSON for roles,
//! attributes and scopes; absent optional fields absent), signing keys as JSON.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::store::{KeyRecord, StoreError, TokenRecord, UserRecord};

/// The fields of a Redis hash.
pub type Fields = HashMap<String, String>;

/// A signing key as kept in `<p>keys` (the fields of [`KeyRecord`], the private key in
/// hex; `seq`: the order of addition, set by the `ADD_KEY` script).
#[derive(Serialize, Deserialize)]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: String,
    pub private_pkcs8: String,
    pub created_at: i64,
    pub activates_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_until: Option<i64>,
    #[serde(default)]
    pub seq: i64,
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("redis: {what}"))
}

/// `value` as JSON.
pub fn to_json<T: Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// A value from stored JSON.
pub fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string.
pub fn unhex(text: &str) -> Result<Vec<u8>, StoreError> {
    if !text.len().is_multiple_of(2) {
        return Err(corrupt("odd hex length"));
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| corrupt("bad hex"))
        })
        .collect()
}

fn field<'a>(f: &'a Fields, name: &str) -> Result<&'a str, StoreError> {
    f.get(name)
        .map(String::as_str)
        .ok_or_else(|| corrupt(&format!("field '{name}' missing")))
}

fn int(f: &Fields, name: &str) -> Result<Option<i64>, StoreError> {
    f.get(name)
        .map(|v| {
            v.parse()
                .map_err(|_| corrupt(&format!("field '{name}' not a number")))
        })
        .transpose()
}

/// The hash fields of a new token (no last use, not revoked), name and value in turn.
pub fn token_fields(t: &TokenRecord) -> Result<Vec<String>, StoreError> {
    let mut out = vec![
        "id".into(),
        t.id.clone(),
        "hash".into(),
        hex(&t.hash),
        "owner".into(),
        t.owner.clone(),
        "name".into(),
        t.name.clone(),
        "roles".into(),
        to_json(&t.roles)?,
        "attributes".into(),
        to_json(&t.attributes)?,
        "created_at".into(),
        t.created_at.to_string(),
    ];
    let optional = [
        ("scopes", t.scopes.as_ref().map(to_json).transpose()?),
        ("expires_at", t.expires_at.map(|v| v.to_string())),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            out.extend([name.to_owned(), value]);
        }
    }
    Ok(out)
}

/// A token from its hash fields.
pub fn token_from(f: &Fields) -> Result<TokenRecord, StoreError> {
    let hash: [u8; 32] = unhex(field(f, "hash")?)?
        .try_into()
        .map_err(|_| corrupt("token hash is not 32 bytes"))?;
    Ok(TokenRecord {
        id: field(f, "id")?.to_owned(),
        hash,
        owner: field(f, "owner")?.to_owned(),
        name: field(f, "name")?.to_owned(),
        roles: from_json(field(f, "roles")?)?,
        attributes: from_json(field(f, "attributes")?)?,
        scopes: f.get("scopes").map(|s| from_json(s)).transpose()?,
        created_at: int(f, "created_at")?.ok_or_else(|| corrupt("created_at missing"))?,
        expires_at: int(f, "expires_at")?,
        last_used_at: int(f, "last_used_at")?,
        revoked_at: int(f, "revoked_at")?,
    })
}

/// The hash fields of a user, name and value in turn.
pub fn user_fields(u: &UserRecord) -> Result<Vec<String>, StoreError> {
    let mut out = vec![
        "username".into(),
        u.username.clone(),
        "password_hash".into(),
        u.password_hash.clone(),
        "roles".into(),
        to_json(&u.roles)?,
        "attributes".into(),
        to_json(&u.attributes)?,
        "created_at".into(),
        u.created_at.to_string(),
    ];
    if let Some(email) = &u.email {
        out.extend(["email".into(), email.clone()]);
    }
    Ok(out)
}

/// A user from their hash fields.
pub fn user_from(f: &Fields) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        username: field(f, "username")?.to_owned(),
        password_hash: field(f, "password_hash")?.to_owned(),
        email: f.get("email").cloned(),
        roles: from_json(field(f, "roles")?)?,
        attributes: from_json(field(f, "attributes")?)?,
        created_at: int(f, "created_at")?.ok_or_else(|| corrupt("created_at missing"))?,
    })
}

/// A signing key, and its order of addition, from its stored form.
pub fn key_from(stored: StoredKey) -> Result<(KeyRecord, i64), StoreError> {
    Ok((
        KeyRecord {
            kid: stored.kid,
            algorithm: stored.algorithm,
            private_pkcs8: unhex(&stored.private_pkcs8)?,
            created_at: stored.created_at,
            activates_at: stored.activates_at,
            retired_at: stored.retired_at,
            publish_until: stored.publish_until,
        },
        stored.seq,
    ))
}
