//! Signing keys: generation, PEM loading, the public JWK and RFC 7638 thumbprint `kid`.
//! Each key is parsed once into a ready signer (ring), never per request.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::secret::sha256;

/// JWS algorithm of the minted JWTs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256 (default).
    ES256,
    /// Ed25519.
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (keys from PEM files only).
    RS256,
}

impl Algorithm {
    /// The JWS `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
            Self::RS256 => "RS256",
        }
    }

    /// Parses a JWS `alg` name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::ES256),
            "EdDSA" => Some(Self::EdDSA),
            "RS256" => Some(Self::RS256),
            _ => None,
        }
    }
}

/// A key that cannot be made, read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key file cannot be read.
    #[error("cannot read key file '{path}': {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The key material does not parse as the expected algorithm.
    #[error("{what}: not a usable {algorithm} private key ({reason})")]
    Parse {
        /// The file or `stored key <kid>`.
        what: String,
        /// Expected algorithm.
        algorithm: &'static str,
        /// Why.
        reason: String,
    },
    /// Key generation failed.
    #[error("cannot generate a {0} key")]
    Generate(&'static str),
    /// A signature failed.
    #[error("signing failed")]
    Sign,
}

enum Signer {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Rs256(RsaKeyPair),
}

/// A parsed private key with its public JWK and precomputed JWS header.
pub struct SigningKey {
    /// Key id (RFC 7638 thumbprint of the public key).
    pub kid: String,
    /// Algorithm.
    pub algorithm: Algorithm,
    /// The public JWK (with `kid`, `alg`, `use`).
    pub jwk: Value,
    signer: Signer,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Generates a new key; returns it and its PKCS#8 DER for the store.
    pub fn generate(algorithm: Algorithm) -> Result<(Self, Vec<u8>), KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = match algorithm {
            Algorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| KeyError::Generate("ES256"))?
            }
            Algorithm::EdDSA => {
                Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate("EdDSA"))?
            }
            Algorithm::RS256 => return Err(KeyError::Generate("RS256")),
        };
        let der = pkcs8.as_ref().to_vec();
        let key = Self::from_der(algorithm, &der, "generated key")?;
        Ok((key, der))
    }

    /// Parses PKCS#8 DER (or PKCS#1 DER for RSA). `what` names the source in errors.
    pub fn from_der(algorithm: Algorithm, der: &[u8], what: &str) -> Result<Self, KeyError> {
        let rng = SystemRandom::new();
        let parse_err = |reason: String| KeyError::Parse {
            what: what.to_owned(),
            algorithm: algorithm.as_str(),
            reason,
        };
        let (signer, jwk_core) = match algorithm {
            Algorithm::ES256 => {
                let kp = EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &rng,
                )
                .map_err(|e| parse_err(e.to_string()))?;
                let point = kp.public_key().as_ref();
                let (x, y) = (&point[1..33], &point[33..65]);
                let core = json!({"crv": "P-256", "kty": "EC",
                    "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y)});
                (Signer::Es256(kp), core)
            }
            Algorithm::EdDSA => {
                let kp = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
                    .map_err(|e| parse_err(e.to_string()))?;
                let core = json!({"crv": "Ed25519", "kty": "OKP",
                    "x": URL_SAFE_NO_PAD.encode(kp.public_key().as_ref())});
                (Signer::EdDsa(kp), core)
            }
            Algorithm::RS256 => {
                let kp = RsaKeyPair::from_pkcs8(der)
                    .or_else(|_| RsaKeyPair::from_der(der))
                    .map_err(|e| parse_err(e.to_string()))?;
                let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(kp.public());
                let core = json!({"e": URL_SAFE_NO_PAD.encode(&public.e), "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(&public.n)});
                (Signer::Rs256(kp), core)
            }
        };
        // RFC 7638: SHA-256 over the required members in lexicographic order, no spaces;
        // serde_json's map is ordered, so `to_string` of `core` is exactly that form.
        let kid = URL_SAFE_NO_PAD.encode(sha256(jwk_core.to_string().as_bytes()));
        let mut jwk = jwk_core;
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(algorithm.as_str());
        jwk["use"] = json!("sig");
        Ok(Self {
            kid,
            algorithm,
            jwk,
            signer,
            rng,
        })
    }

    /// base64url of the JWS header `{"alg","kid","typ"}` of the JWTs this key signs.
    pub fn header_b64(&self, typ: &str) -> String {
        let header = json!({"alg": self.algorithm.as_str(), "kid": self.kid, "typ": typ});
        URL_SAFE_NO_PAD.encode(header.to_string())
    }

    /// Reads a PEM private key file (PKCS#8 `PRIVATE KEY`, or `RSA PRIVATE KEY` for RS256).
    pub fn from_pem_file(algorithm: Algorithm, path: &Path) -> Result<(Self, Vec<u8>), KeyError> {
        let what = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| KeyError::Read {
            path: what.clone(),
            reason: e.to_string(),
        })?;
        let block = pem::parse(text.as_bytes()).map_err(|e| KeyError::Parse {
            what: what.clone(),
            algorithm: algorithm.as_str(),
            reason: format!("not PEM: {e}"),
        })?;
        let der = block.contents().to_vec();
        Ok((Self::from_der(algorithm, &der, &what)?, der))
    }

    /// Signs `message`; the JWS signature bytes.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.signer {
            Signer::Es256(kp) => kp
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Sign),
            Signer::EdDsa(kp) => Ok(kp.sign(message).as_ref().to_vec()),
            Signer::Rs256(kp) => {
                let mut sig = vec![0u8; kp.public().modulus_len()];
                kp.sign(&signature::RSA_PKCS1_SHA256, &self.rng, message, &mut sig)
                    .map_err(|_| KeyError::Sign)?;
                Ok(sig)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_verifiably_and_have_thumbprint_kids() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA] {
            let (key, der) = SigningKey::generate(alg).unwrap();
            let again = SigningKey::from_der(alg, &der, "x").unwrap();
            assert_eq!(key.kid, again.kid, "kid is a function of the key");
            assert_eq!(key.kid.len(), 43);
            let sig = key.sign(b"msg").unwrap();
            let jwk = &key.jwk;
            let (verify_alg, public): (&dyn signature::VerificationAlgorithm, Vec<u8>) = match alg {
                Algorithm::ES256 => {
                    let mut p = vec![4u8];
                    p.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
                    p.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
                    (&signature::ECDSA_P256_SHA256_FIXED, p)
                }
                _ => (
                    &signature::ED25519,
                    URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap(),
                ),
            };
            let pk = signature::UnparsedPublicKey::new(verify_alg, public);
            pk.verify(b"msg", &sig).unwrap();
            assert!(pk.verify(b"msh", &sig).is_err());
        }
    }

    #[test]
    fn rfc7638_thumbprint_example() {
        // The RSA example of RFC 7638 section 3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let core = json!({"e": "AQAB", "kty": "RSA", "n": n});
        assert_eq!(
            URL_SAFE_NO_PAD.encode(sha256(core.to_string().as_bytes())),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn bad_key_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = SigningKey::from_pem_file(Algorithm::ES256, &missing).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = SigningKey::from_pem_file(Algorithm::ES256, &garbage).unwrap_err();
        assert!(err.to_string().contains("garbage.pem"), "{err}");
        assert!(err.to_string().contains("ES256"), "{err}");
    }
}
