//! The snapshot: the whole CCC register as one checksummed rkyv archive, built once by the
//! loader and then read in place, memory-mapped, by every check.
//!
//! # Layout
//!
//! A snapshot file is a 64-byte header (magic, format version, archive length, xxh3-128
//! checksum of the archive, sequence) followed by the archive, which therefore starts at a
//! multiple of 16. Opening maps the file, checks length, version and checksum, validates the
//! archive once (bytecheck), and from then on reads it without copying or deserialising.
//!
//! # The hot path
//!
//! Certificates live in an open-addressing hash table keyed by the 16-digit number as a
//! `u64`: one slot holds everything a verdict needs (status, product code, expiry, producer
//! id, where its model keys start), so a lookup is usually one cache miss. Each certificate's
//! models are a sorted run of 64-bit keys ([`cccgate_core::model_key`]), so "is this model
//! covered" is a binary search over integers. Everything else (names, dates of issue, the model
//! texts) sits in a cold table read only by `inspect`, `diff` and deltas.
//!
//! A file on disk is never rewritten: [`write_atomic`] writes a temporary file, syncs it and
//! renames it into place, so a mapped snapshot never changes under a reader. The directory
//! of snapshots (listing, the newest valid one, publishing, pruning, the high-water mark) is
//! [`SnapshotDir`]'s.

#![deny(missing_docs)]

mod builder;
mod changes;
mod data;
mod diff;
mod dir;
mod error;
mod format;
mod snapshot;

pub use builder::{BuildInfo, SnapshotBuilder, name_hashes, prepare_models};
pub use changes::{CertChange, lapsed, verdict_changes, verdict_changes_among};
pub use diff::{Change, SnapshotDiff, diff};
pub use dir::{HIGH_WATER_FILE, Latest, OpenMode, Published, SnapshotDir};
pub use error::SnapshotError;
pub use format::{
    FORMAT_VERSION, HEADER_LEN, SnapshotBytes, file_name, parse_file_name, reject_file_name,
    write_atomic, write_file_atomic, write_through_mappings,
};
pub use snapshot::{CertSummary, Counts, Snapshot, prefetch_line};

/// The decision table over a snapshot: [`cccgate_core::check`] re-exported, so callers of
/// this crate need not name the core crate to decide a listing.
pub use cccgate_core::check;

#[cfg(test)]
mod tests;
