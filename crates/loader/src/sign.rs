//! Ed25519 signatures of drops: `manifest.json.sig` holds the base64 of the raw 64-byte
//! signature of the exact bytes of `manifest.json`.
//!
//! The manifest holds every data file's SHA-256, so signing it covers the whole drop. Key
//! files are text: the base64 (or hex) of the raw 32 bytes, the public key for `*.pub` files
//! and the secret seed for secret-key files, surrounding white space ignored.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};

/// The signature file's name inside a drop.
pub const SIGNATURE_FILE: &str = "manifest.json.sig";

/// A key file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file does not hold a key.
    #[error("{}: {message}", path.display())]
    Malformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// A signature that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature text is not base64 of 64 bytes.
    #[error("not a signature: expected the base64 of 64 bytes")]
    Malformed,
    /// The signature does not match the manifest under the key.
    #[error("signature does not match manifest.json under the configured public key")]
    Mismatch,
}

fn key_bytes(path: &Path) -> Result<[u8; 32], KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    let t = text.trim();
    let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(t).ok()
    } else {
        STANDARD.decode(t).ok()
    };
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b.as_slice()).ok())
        .ok_or_else(|| KeyError::Malformed {
            path: path.to_owned(),
            message: "expected the base64 (or hex) of a 32-byte Ed25519 key".into(),
        })
}

/// Reads a public key file.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let bytes = key_bytes(path)?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| KeyError::Malformed {
        path: path.to_owned(),
        message: format!("not an Ed25519 public key: {e}"),
    })
}

/// Reads a secret key file (the 32-byte seed).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    Ok(SigningKey::from_bytes(&key_bytes(path)?))
}

/// A new random key pair.
pub fn generate_signing_key() -> SigningKey {
    SigningKey::from_bytes(&rand::random::<[u8; 32]>())
}

/// The text of a secret key file.
pub fn encode_signing_key(key: &SigningKey) -> String {
    format!("{}\n", STANDARD.encode(key.to_bytes()))
}

/// The text of a public key file.
pub fn encode_verifying_key(key: &VerifyingKey) -> String {
    format!("{}\n", STANDARD.encode(key.to_bytes()))
}

/// The text of `manifest.json.sig` for these manifest bytes.
pub fn sign_manifest(manifest: &[u8], key: &SigningKey) -> String {
    format!("{}\n", STANDARD.encode(key.sign(manifest).to_bytes()))
}

/// Checks the text of `manifest.json.sig` against the manifest bytes.
pub fn verify_signature(
    manifest: &[u8],
    signature_text: &[u8],
    key: &VerifyingKey,
) -> Result<(), SignatureError> {
    let text = std::str::from_utf8(signature_text).map_err(|_| SignatureError::Malformed)?;
    let raw = STANDARD
        .decode(text.trim())
        .map_err(|_| SignatureError::Malformed)?;
    let bytes = <[u8; 64]>::try_from(raw.as_slice()).map_err(|_| SignatureError::Malformed)?;
    key.verify(manifest, &Signature::from_bytes(&bytes))
        .map_err(|_| SignatureError::Mismatch)
}

/// Signs the drop in `drop_dir`: writes `manifest.json.sig` next to `manifest.json`, and
/// returns its path.
pub fn sign_drop(drop_dir: &Path, key: &SigningKey) -> io::Result<PathBuf> {
    let manifest = fs::read(drop_dir.join(crate::MANIFEST_FILE))?;
    let path = drop_dir.join(SIGNATURE_FILE);
    fs::write(&path, sign_manifest(&manifest, key))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_verifies_only_the_exact_manifest_bytes() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let sig = sign_manifest(b"{\"a\":1}", &key);
        let public = key.verifying_key();
        assert_eq!(
            verify_signature(b"{\"a\":1}", sig.as_bytes(), &public),
            Ok(())
        );
        assert_eq!(
            verify_signature(b"{\"a\":2}", sig.as_bytes(), &public),
            Err(SignatureError::Mismatch)
        );
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert_eq!(
            verify_signature(b"{\"a\":1}", sig.as_bytes(), &other),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"{\"a\":1}", b"not base64!", &public),
            Err(SignatureError::Malformed)
        );
    }

    #[test]
    fn key_files_round_trip_in_base64_and_hex() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[9; 32]);
        let secret = dir.path().join("feed.key");
        let public = dir.path().join("feed.pub");
        fs::write(&secret, encode_signing_key(&key)).unwrap();
        fs::write(&public, encode_verifying_key(&key.verifying_key())).unwrap();
        assert_eq!(
            read_signing_key(&secret).unwrap().to_bytes(),
            key.to_bytes()
        );
        assert_eq!(read_verifying_key(&public).unwrap(), key.verifying_key());
        fs::write(&public, hex::encode(key.verifying_key().to_bytes())).unwrap();
        assert_eq!(read_verifying_key(&public).unwrap(), key.verifying_key());
        fs::write(&public, "c2hvcnQ=").unwrap();
        assert!(matches!(
            read_verifying_key(&public),
            Err(KeyError::Malformed { .. })
        ));
    }
}
