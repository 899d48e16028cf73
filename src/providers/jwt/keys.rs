//! What the `jwt` provider reads before and around verification: the key set of a JWKS
//! (signature keys only, each with the algorithms it may verify), its cache lifetime, and
//! the unverified parts of a token (protected header checks, `kid`, `iss`).

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::parse_algorithm;
use crate::providers::AuthError;

/// A key that may verify signatures: the key, its own `alg` if it names one, its type.
pub(super) type VerifyingKey = (DecodingKey, Option<Algorithm>, KeyFamily);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyFamily {
    Rsa,
    Ec,
    Okp,
}

pub(super) fn family_of(alg: Algorithm) -> Option<KeyFamily> {
    use Algorithm::*;
    match alg {
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Some(KeyFamily::Rsa),
        ES256 | ES384 => Some(KeyFamily::Ec),
        EdDSA => Some(KeyFamily::Okp),
        HS256 | HS384 | HS512 => None,
    }
}

/// The verifying keys of a JWKS document, by `kid`. Keys that cannot verify a JWS here are
/// left out: without a `kid`, symmetric (`oct`), meant for encryption (`use` other than
/// `sig`, `key_ops` without `verify`), or naming an `alg` that is not an asymmetric
/// signature algorithm. A key this crate cannot read is skipped, not fatal to the others.
pub(super) fn parse_key_set(doc: Value) -> Result<HashMap<String, VerifyingKey>, AuthError> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let set: RawSet = serde_json::from_value(doc)
        .map_err(|e| AuthError::Unavailable(format!("JWKS unreadable: {e}")))?;
    let mut keys = HashMap::new();
    for raw in set.keys {
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
            continue;
        };
        let common = &jwk.common;
        if common
            .public_key_use
            .as_ref()
            .is_some_and(|u| *u != PublicKeyUse::Signature)
            || common
                .key_operations
                .as_ref()
                .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
        {
            continue;
        }
        let alg = match common.key_algorithm {
            None => None,
            // An encryption (or HMAC) algorithm: not a signature key.
            Some(a) => match parse_algorithm(&format!("{a:?}")) {
                Some(alg) => Some(alg),
                None => continue,
            },
        };
        let family = match jwk.algorithm {
            AlgorithmParameters::RSA(_) => KeyFamily::Rsa,
            AlgorithmParameters::EllipticCurve(_) => KeyFamily::Ec,
            AlgorithmParameters::OctetKeyPair(_) => KeyFamily::Okp,
            AlgorithmParameters::OctetKey(_) => continue,
        };
        let (Some(kid), Ok(key)) = (common.key_id.clone(), DecodingKey::from_jwk(&jwk)) else {
            continue;
        };
        keys.insert(kid, (key, alg, family));
    }
    Ok(keys)
}

/// Longest JOSE header segment read (base64url); real ones are a few hundred bytes.
pub(super) const MAX_HEADER_SEGMENT: usize = 4096;

/// Rejects a JWS whose protected header asks for something authgate does not do.
/// jsonwebtoken's `Header` drops unknown members, so the header JSON is read here: `crit`
/// names extensions the recipient must understand (RFC 7515 §4.1.11; authgate understands
/// none), and `b64` (RFC 7797) changes what the signature covers.
pub(super) fn check_protected_header(token: &str) -> Result<(), AuthError> {
    let segment = token.split_once('.').map_or(token, |(h, _)| h).as_bytes();
    if segment.len() > MAX_HEADER_SEGMENT {
        return Err(AuthError::Invalid("JWT header too large"));
    }
    let json = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::Invalid("malformed JWT"))?;
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(&json).map_err(|_| AuthError::Invalid("malformed JWT"))?;
    if header.contains_key("crit") {
        return Err(AuthError::Invalid(
            "JWT header has crit: no JWS extension is supported",
        ));
    }
    if header.contains_key("b64") {
        return Err(AuthError::Invalid(
            "JWT header has b64: unencoded payloads are not supported",
        ));
    }
    Ok(())
}

/// `max-age` of a `Cache-Control` header (`no-cache`/`no-store` count as 0).
pub(super) fn cache_max_age(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').map(str::trim).find_map(|d| {
        if d.eq_ignore_ascii_case("no-cache") || d.eq_ignore_ascii_case("no-store") {
            return Some(Duration::ZERO);
        }
        let (name, secs) = d.split_once('=')?;
        name.trim().eq_ignore_ascii_case("max-age").then(|| {
            secs.trim()
                .trim_matches('"')
                .parse()
                .ok()
                .map(Duration::from_secs)
        })?
    })
}

/// What the unverified payload of a compact JWT says, to pick the provider: its `iss`, and
/// whether it is a Keycloak refresh or offline token (`typ` `Refresh`/`Offline`), which
/// belongs to the `offline` provider, not here.
#[derive(Deserialize)]
pub(super) struct Peek {
    iss: Option<String>,
    typ: Option<String>,
}

pub(super) fn peek(token: &str) -> Option<Peek> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `iss` of a compact JWT that is an access token (not a refresh token), unverified.
pub fn unverified_issuer(token: &str) -> Option<String> {
    peek(token)
        .filter(|p| {
            !p.typ.as_deref().is_some_and(|t| {
                t.eq_ignore_ascii_case("refresh") || t.eq_ignore_ascii_case("offline")
            })
        })
        .and_then(|p| p.iss)
}
