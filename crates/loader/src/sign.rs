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
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

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
    key.verify_strict(manifest, &Signature::from_bytes(&bytes))
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

/// What a snapshot signature covers: the sequence, the content id (xxh3-128 of the archive,
/// which is fast but not cryptographic) and the SHA-256 of the archive (every byte after the
/// header, the bytes served), so a signature binds the exact register and its sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotIdentity {
    /// The feed sequence.
    pub sequence: u64,
    /// The content id, 32 hex digits.
    pub content_id: String,
    /// SHA-256 of the archive.
    pub archive_sha256: [u8; 32],
}

impl SnapshotIdentity {
    /// The identity of built bytes (before they are written).
    pub fn of_bytes(bytes: &cccgate_snapshot::SnapshotBytes) -> Self {
        let (sequence, content_id) = bytes.identity();
        SnapshotIdentity {
            sequence,
            content_id,
            archive_sha256: Sha256::digest(bytes.archive()).into(),
        }
    }

    /// The identity of an open snapshot: hashes the bytes it serves, not the file on disk,
    /// so nothing swapped in after opening can pass.
    pub fn of_snapshot(snapshot: &cccgate_snapshot::Snapshot) -> Self {
        SnapshotIdentity {
            sequence: snapshot.sequence(),
            content_id: snapshot.content_id().to_owned(),
            archive_sha256: Sha256::digest(snapshot.archive()).into(),
        }
    }

    /// The exact bytes signed.
    pub fn message(&self) -> String {
        format!(
            "cccgate-snapshot-signature/1\nsequence {}\ncontent_id {}\narchive_sha256 {}\n",
            self.sequence,
            self.content_id,
            hex::encode(self.archive_sha256)
        )
    }
}

/// The signature file of a snapshot file: `snap-<sequence>.ccc.sig` next to it.
pub fn snapshot_signature_path(snapshot: &Path) -> PathBuf {
    let mut name = snapshot.file_name().unwrap_or_default().to_os_string();
    name.push(".sig");
    snapshot.with_file_name(name)
}

/// The text of a snapshot's signature file: the signed message (for people) and a last line
/// `signature <base64 of the 64-byte Ed25519 signature>`.
pub fn sign_snapshot(identity: &SnapshotIdentity, key: &SigningKey) -> String {
    let message = identity.message();
    let sig = key.sign(message.as_bytes());
    format!("{message}signature {}\n", STANDARD.encode(sig.to_bytes()))
}

/// Why a snapshot's signature does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotSignatureError {
    /// No signature file next to the snapshot.
    #[error("unsigned: no {0}; a snapshot public key is configured")]
    Missing(String),
    /// The signature file cannot be read or is not one.
    #[error("{0}")]
    Malformed(String),
    /// The signature does not verify (strictly) over this snapshot's identity.
    #[error(
        "signature does not match this snapshot (sequence, content id, SHA-256 of its archive) under the snapshot public key"
    )]
    Mismatch,
}

/// Checks the signature file of the snapshot at `snapshot_path` against the identity of the
/// opened snapshot, with Ed25519 strict verification (no malleable or weak-key signatures).
pub fn verify_snapshot_signature(
    snapshot_path: &Path,
    identity: &SnapshotIdentity,
    key: &VerifyingKey,
) -> Result<(), SnapshotSignatureError> {
    let path = snapshot_signature_path(snapshot_path);
    let text = match crate::limits::read_small(&path, 4 << 10) {
        Ok(t) => t,
        Err(crate::limits::OpenRefusal::NotFound) => {
            return Err(SnapshotSignatureError::Missing(path.display().to_string()));
        }
        Err(e) => {
            return Err(SnapshotSignatureError::Malformed(format!(
                "{}: {}",
                path.display(),
                e.message()
            )));
        }
    };
    let malformed = || {
        SnapshotSignatureError::Malformed(format!(
            "{}: no line `signature <base64 of 64 bytes>`",
            path.display()
        ))
    };
    let text = std::str::from_utf8(&text).map_err(|_| malformed())?;
    let b64 = text
        .lines()
        .find_map(|l| l.strip_prefix("signature "))
        .ok_or_else(malformed)?;
    let raw = STANDARD.decode(b64.trim()).map_err(|_| malformed())?;
    let bytes = <[u8; 64]>::try_from(raw.as_slice()).map_err(|_| malformed())?;
    key.verify_strict(
        identity.message().as_bytes(),
        &Signature::from_bytes(&bytes),
    )
    .map_err(|_| SnapshotSignatureError::Mismatch)
}

/// Writes the signature file of the snapshot that will be at `snapshot_path`, atomically
/// (a unique temporary file, then a rename). Written *before* the snapshot, so a gateway
/// that verifies never sees the snapshot without its signature.
pub fn write_snapshot_signature(
    snapshot_path: &Path,
    identity: &SnapshotIdentity,
    key: &SigningKey,
) -> io::Result<PathBuf> {
    let path = snapshot_signature_path(snapshot_path);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(
        ".{name}.tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        io::Write::write_all(&mut f, sign_snapshot(identity, key).as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| path)
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

#[cfg(test)]
mod snapshot_tests {
    use super::*;

    fn identity(sequence: u64) -> SnapshotIdentity {
        SnapshotIdentity {
            sequence,
            content_id: "0123456789abcdef0123456789abcdef".into(),
            archive_sha256: [9; 32],
        }
    }

    #[test]
    fn snapshot_signatures_bind_sequence_content_id_and_sha256() {
        let t = tempfile::tempdir().unwrap();
        let snap = t.path().join("snap-5.ccc");
        let key = SigningKey::from_bytes(&[3; 32]);
        let public = key.verifying_key();
        let id = identity(5);
        assert_eq!(
            verify_snapshot_signature(&snap, &id, &public),
            Err(SnapshotSignatureError::Missing(
                t.path().join("snap-5.ccc.sig").display().to_string()
            ))
        );
        let written = write_snapshot_signature(&snap, &id, &key).unwrap();
        assert!(written.ends_with("snap-5.ccc.sig"));
        assert_eq!(verify_snapshot_signature(&snap, &id, &public), Ok(()));
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
        for other in [
            identity(6),
            SnapshotIdentity {
                content_id: "f".repeat(32),
                ..identity(5)
            },
            SnapshotIdentity {
                archive_sha256: [8; 32],
                ..identity(5)
            },
        ] {
            assert_eq!(
                verify_snapshot_signature(&snap, &other, &public),
                Err(SnapshotSignatureError::Mismatch)
            );
        }
        let stranger = SigningKey::from_bytes(&[4; 32]).verifying_key();
        assert_eq!(
            verify_snapshot_signature(&snap, &id, &stranger),
            Err(SnapshotSignatureError::Mismatch)
        );
        std::fs::write(&written, "signature AAAA\n").unwrap();
        assert!(matches!(
            verify_snapshot_signature(&snap, &id, &public),
            Err(SnapshotSignatureError::Malformed(_))
        ));
    }
}
