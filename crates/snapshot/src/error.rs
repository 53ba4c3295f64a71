//! Why a snapshot cannot be built, written or opened.

use std::io;
use std::path::PathBuf;

/// A snapshot that cannot be used. Every variant names the file (or `<memory>`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file does not start with the snapshot magic.
    #[error("{}: not a cccgate snapshot (bad magic bytes)", path.display())]
    BadMagic {
        /// The file.
        path: PathBuf,
    },
    /// The file is of a format version this build does not read.
    #[error("{}: snapshot format version {found}, this build reads version {expected}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
    /// The file is shorter or longer than its header says: truncated or appended to.
    #[error("{}: truncated or padded: the header says {expected} bytes, the file has {actual}", path.display())]
    Length {
        /// The file.
        path: PathBuf,
        /// Length the header promises.
        expected: u64,
        /// Actual length.
        actual: u64,
    },
    /// The archive's checksum does not match: the content was altered or is corrupt.
    #[error("{}: checksum mismatch: the file was altered or is corrupt", path.display())]
    Checksum {
        /// The file.
        path: PathBuf,
    },
    /// The checksum matches but the archive does not validate or disagrees with its header.
    #[error("{}: invalid archive: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What validation found.
        message: String,
    },
    /// The builder could not serialise the archive.
    #[error("cannot serialise snapshot: {0}")]
    Serialize(String),
}
