//! The metadata documents that describe authgate as an issuer, built once from the
//! configuration: OpenID Connect discovery (`/.well-known/openid-configuration`) and OAuth
//! 2.0 authorization server metadata (RFC 8414, `/.well-known/oauth-authorization-server`).
//! Strict clients (Authlib, the `openidconnect` crate) refuse a document without the fields
//! both specifications require, so each one is there, with only values that are true.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::ServerConfig;
use crate::mint::{Algorithm, MintConfig};

/// The path of the JWKS under `server.public_url` (or `mint.issuer`).
pub(super) const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The discovery documents, serialised once.
pub(super) struct Discovery {
    document: Bytes,
}

impl Discovery {
    /// From `mint.issuer`, `mint.algorithm`, `server.public_url` and `server.signin_url`.
    pub(super) fn new(server: &ServerConfig, mint: &MintConfig) -> Self {
        Self {
            document: Bytes::from(metadata(server, mint).to_string()),
        }
    }

    /// The body of both well-known documents: one set of fields serves both, as RFC 8414
    /// (section 1) allows, so a client gets the same answer whichever it asks for.
    pub(super) fn document(&self) -> Bytes {
        self.document.clone()
    }
}

/// The metadata object.
fn metadata(server: &ServerConfig, mint: &MintConfig) -> Value {
    let base = server.public_url.as_deref().unwrap_or(&mint.issuer);
    let mut doc = Map::new();
    doc.insert("issuer".into(), json!(mint.issuer));
    doc.insert("jwks_uri".into(), json!(format!("{base}{JWKS_PATH}")));
    // authgate has no authorization endpoint of its own: the browser sign-in is the
    // nearest true value. Without one the field stays out (never an invented URL), and
    // strict OpenID clients refuse the document (README "For backend developers").
    if let Some(signin) = &server.signin_url {
        doc.insert("authorization_endpoint".into(), json!(signin));
    }
    doc.insert("response_types_supported".into(), json!(["code"]));
    // `sub` is the same for every audience (no pairwise subjects).
    doc.insert("subject_types_supported".into(), json!(["public"]));
    doc.insert(
        "id_token_signing_alg_values_supported".into(),
        json!(signing_algorithms(mint.algorithm)),
    );
    Value::Object(doc)
}

/// Every algorithm authgate can sign with, the configured one first. Not only the
/// configured one: a client that cached this document must still take JWTs after
/// `mint.algorithm` changes (each JWK names its `alg`, so a longer list admits nothing
/// the key set does not hold).
pub(super) fn signing_algorithms(configured: Algorithm) -> Vec<&'static str> {
    // A match rather than a list, so that an algorithm added to `mint` cannot be left out.
    let all = std::iter::successors(Some(Algorithm::ES256), |a| match a {
        Algorithm::ES256 => Some(Algorithm::EdDSA),
        Algorithm::EdDSA => Some(Algorithm::RS256),
        Algorithm::RS256 => None,
    });
    std::iter::once(configured)
        .chain(all.filter(|a| *a != configured))
        .map(Algorithm::as_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(signin_url: Option<&str>, public_url: Option<&str>, mint: MintConfig) -> Value {
        let server = ServerConfig {
            signin_url: signin_url.map(str::to_owned),
            public_url: public_url.map(str::to_owned),
            ..ServerConfig::default()
        };
        serde_json::from_slice(&Discovery::new(&server, &mint).document()).unwrap()
    }

    #[test]
    fn metadata_has_the_required_fields_and_only_true_values() {
        let mint = MintConfig {
            issuer: "https://auth.example.org".into(),
            ..MintConfig::default()
        };
        // Without a sign-in URL: no authorization_endpoint, keys under the issuer.
        assert_eq!(
            doc(None, None, mint.clone()),
            json!({
                "issuer": "https://auth.example.org",
                "jwks_uri": "https://auth.example.org/.well-known/jwks.json",
                "response_types_supported": ["code"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["ES256", "EdDSA", "RS256"],
            })
        );
        // With both: the sign-in page, and keys where backends reach them.
        let d = doc(
            Some("https://auth.example.org/oauth2/start"),
            Some("http://authgate.internal:8080"),
            MintConfig {
                algorithm: Algorithm::EdDSA,
                ..mint
            },
        );
        assert_eq!(d["issuer"], "https://auth.example.org");
        assert_eq!(
            d["jwks_uri"],
            "http://authgate.internal:8080/.well-known/jwks.json"
        );
        assert_eq!(
            d["authorization_endpoint"],
            "https://auth.example.org/oauth2/start"
        );
        assert_eq!(
            d["id_token_signing_alg_values_supported"],
            json!(["EdDSA", "ES256", "RS256"])
        );
    }

    #[test]
    fn every_algorithm_is_listed_once_the_configured_one_first() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let list = signing_algorithms(alg);
            assert_eq!(list[0], alg.as_str());
            let mut sorted = list.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, ["ES256", "EdDSA", "RS256"], "{alg:?}");
        }
    }
}
