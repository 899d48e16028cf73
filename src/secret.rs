//! Secret values (tokens, passwords, private keys) and the helpers that keep them secret:
//! a wrapper whose `Debug` never prints the value, token generation and hashing.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// Prefix of every API token authgate issues, so secret scanners can recognise leaked ones.
pub const API_TOKEN_PREFIX: &str = "agt_";
/// Number of random bytes in an API token.
const API_TOKEN_BYTES: usize = 32;
/// Length of the base64url part of an API token (32 bytes, no padding).
pub const API_TOKEN_BODY_LEN: usize = 43;

/// A secret string. `Debug` prints `<redacted>`; the value is reached only with [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Box<str>);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<Box<str>>) -> Self {
        Self(value.into())
    }

    /// The secret value itself. Call sites are the places to audit.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The operating system's random number generator failed: nothing secret can be made.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomError;

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| RandomError)?;
    Ok(buf)
}

/// A new API token secret: `agt_` followed by 32 random bytes in URL-safe base64.
pub fn generate_api_token() -> Result<Secret, RandomError> {
    let body = URL_SAFE_NO_PAD.encode(random_bytes::<API_TOKEN_BYTES>()?);
    Ok(Secret::new(format!("{API_TOKEN_PREFIX}{body}")))
}

/// Whether `value` has the exact shape of an authgate API token.
pub fn is_api_token_format(value: &str) -> bool {
    value.strip_prefix(API_TOKEN_PREFIX).is_some_and(|body| {
        body.len() == API_TOKEN_BODY_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A short random identifier with a readable prefix (`tok_3f9a...`), safe to log.
pub fn random_id(prefix: &str) -> Result<String, RandomError> {
    let bytes = random_bytes::<8>()?;
    let mut id = String::with_capacity(prefix.len() + 16);
    id.push_str(prefix);
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn generated_tokens_have_the_documented_format() {
        let a = generate_api_token().unwrap();
        let b = generate_api_token().unwrap();
        assert!(a.expose().starts_with("agt_"));
        assert_eq!(a.expose().len(), 4 + API_TOKEN_BODY_LEN);
        assert!(is_api_token_format(a.expose()));
        assert_ne!(a, b);
    }

    #[test]
    fn token_format_table() {
        let good = format!("agt_{}", "A".repeat(43));
        let cases: &[(&str, bool)] = &[
            (&good, true),
            ("agt_", false),
            ("agt_short", false),
            (&good[..good.len() - 1], false),
            ("xyz_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", false),
            ("agt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+", false),
            ("agt_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", false),
        ];
        for (value, expected) in cases {
            assert_eq!(is_api_token_format(value), *expected, "{value}");
        }
    }

    #[test]
    fn sha256_and_constant_time_eq() {
        let h = sha256(b"abc");
        assert_eq!(
            h[..4],
            [0xba, 0x78, 0x16, 0xbf],
            "SHA-256(abc) starts with ba7816bf"
        );
        assert!(constant_time_eq(&h, &sha256(b"abc")));
        assert!(!constant_time_eq(&h, &sha256(b"abd")));
        assert!(!constant_time_eq(b"a", b"ab"));
    }
}
