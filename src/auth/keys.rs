//! The store's Ed25519 key pair as PEM: PKCS#8 for the private key (kept by whoever issues
//! device tokens, normally the cloud), SubjectPublicKeyInfo for the public key (on every
//! hub, to verify tokens offline).

use std::path::Path;

use base64::Engine;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{SigningKey, VerifyingKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{what} is not an Ed25519 {kind} PEM: {detail}")]
    NotAKey {
        what: String,
        kind: &'static str,
        detail: String,
    },
    #[error("CLUSTER_PUBLIC_KEY_BASE64 is not base64 of a PEM file: {0}")]
    NotBase64(String),
}

/// A fresh key pair: (private key PEM, public key PEM).
pub fn generate() -> Result<(String, String), KeyError> {
    let signing = SigningKey::generate(&mut rand_core::OsRng);
    let private = signing
        .to_pkcs8_pem(Default::default())
        .map_err(|e| KeyError::NotAKey {
            what: "the new key".into(),
            kind: "private",
            detail: e.to_string(),
        })?;
    let public = signing
        .verifying_key()
        .to_public_key_pem(Default::default())
        .map_err(|e| KeyError::NotAKey {
            what: "the new key".into(),
            kind: "public",
            detail: e.to_string(),
        })?;
    Ok((private.to_string(), public))
}

fn read(path: &Path) -> Result<String, KeyError> {
    std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })
}

pub fn signing_key_from_pem(pem: &str, what: &str) -> Result<SigningKey, KeyError> {
    SigningKey::from_pkcs8_pem(pem).map_err(|e| KeyError::NotAKey {
        what: what.to_owned(),
        kind: "private",
        detail: e.to_string(),
    })
}

pub fn verifying_key_from_pem(pem: &str, what: &str) -> Result<VerifyingKey, KeyError> {
    VerifyingKey::from_public_key_pem(pem).map_err(|e| KeyError::NotAKey {
        what: what.to_owned(),
        kind: "public",
        detail: e.to_string(),
    })
}

pub fn load_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    signing_key_from_pem(&read(path)?, &path.display().to_string())
}

pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    verifying_key_from_pem(&read(path)?, &path.display().to_string())
}

/// The spec's `CLUSTER_PUBLIC_KEY_BASE64`: base64 of the public key's PEM file.
pub fn verifying_key_from_base64_pem(encoded: &str) -> Result<VerifyingKey, KeyError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| KeyError::NotBase64(e.to_string()))?;
    let pem = String::from_utf8(bytes).map_err(|e| KeyError::NotBase64(e.to_string()))?;
    verifying_key_from_pem(&pem, "CLUSTER_PUBLIC_KEY_BASE64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_load_back_and_match() {
        let (private, public) = generate().expect("generates");
        let signing = signing_key_from_pem(&private, "private").expect("loads");
        let verifying = verifying_key_from_pem(&public, "public").expect("loads");
        assert_eq!(signing.verifying_key(), verifying);
        let encoded = base64::engine::general_purpose::STANDARD.encode(&public);
        assert_eq!(
            verifying_key_from_base64_pem(&encoded).expect("loads"),
            verifying
        );
    }

    #[test]
    fn a_public_key_is_not_a_private_key_and_garbage_is_neither() {
        let (_, public) = generate().expect("generates");
        let err = signing_key_from_pem(&public, "pub.pem").expect_err("refused");
        assert!(
            err.to_string()
                .contains("pub.pem is not an Ed25519 private PEM"),
            "{err}"
        );
        let err = verifying_key_from_base64_pem("%%%").expect_err("refused");
        assert!(err.to_string().contains("not base64"), "{err}");
    }
}
