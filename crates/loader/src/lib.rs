//! Regulator feed drops to snapshots: the only door through which outside data reaches the
//! gateway.
//!
//! [`Loader::load`] reads one drop directory as `spec/feed.md` defines it (manifest,
//! signature, catalogue, certificate files in UTF-8 or GBK, plain or gzip), validates every
//! row, applies a delta on the snapshot in force or builds a full drop from scratch, runs the
//! guards, and returns the bytes of the next snapshot. It writes nothing: the caller writes
//! the snapshot with `cccgate_snapshot::write_atomic` (and a reject file, if rows were set
//! aside), so a refused drop changes nothing anywhere.
//!
//! # Design
//!
//! One pass, streaming: every data file is read once, through a reader that hashes the bytes
//! as stored (below the gzip decoder), a CSV splitter that works on raw bytes (`split.rs`:
//! quote-free records cut where they lie, quoted ones through `csv-core`), and a per-field
//! decoder (see `read.rs` for why splitting before decoding is sound for GBK). Records are
//! split and bounded on the calling thread, parsed and validated in batches on one thread per
//! core, and put back in file order on the thread that builds the snapshot (`pipeline.rs`);
//! batches are reused (`batch.rs`: no allocation per record), so memory
//! holds the records and a small per-certificate entry for duplicate detection, never the
//! CSV. Errors are typed ([`LoadError`]) and name the file, the line where the record starts
//! (header = line 1) and the column; refusals of a row class list up to [`MAX_LISTED`] rows.
//! The loader is synchronous and cheap to construct, so the server can call it in-process.

#![deny(missing_docs)]

mod batch;
mod catalogue;
mod certs;
mod error;
mod fields;
mod limits;
mod manifest;
mod pipeline;
mod read;
mod sign;
mod split;
mod writer;

#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cccgate_core::Catalogue;
use cccgate_snapshot::{BuildInfo, Snapshot, SnapshotBuilder, SnapshotBytes};

pub use catalogue::{CATALOGUE_COLUMNS, catalogue_csv};
/// The reject file's name is part of the snapshot directory's layout (`cccgate_snapshot::SnapshotDir`).
pub use cccgate_snapshot::reject_file_name;
pub use certs::{CERTIFICATE_COLUMNS, RejectedRow, certificates_csv};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use error::{DuplicateConflict, LoadError, MAX_LISTED, RowError};
pub use limits::Limits;
pub use manifest::{DropKind, Encoding, FORMAT, FileEntry, FileKind, Manifest};
pub use sign::{
    KeyError, SIGNATURE_FILE, SignatureError, SnapshotIdentity, SnapshotSignatureError,
    encode_signing_key, encode_verifying_key, generate_signing_key, read_signing_key,
    read_verifying_key, sign_drop, sign_manifest, sign_snapshot, snapshot_signature_path,
    verify_signature, verify_snapshot_signature, write_snapshot_signature,
};
pub use writer::{DropHeader, DropWriter, FileStream, WrittenFile};

use read::{CsvFile, FileDigest};

/// The manifest's file name inside a drop.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The default shrink guard: a full drop may have at most 5% fewer valid certificates.
pub const DEFAULT_SHRINK_THRESHOLD: f64 = 0.05;

/// How drops are loaded. Cheap to build and to call; holds no state between loads.
#[derive(Clone, Debug)]
pub struct Loader {
    /// When set, every drop must carry a valid `manifest.json.sig` under this key.
    pub public_key: Option<VerifyingKey>,
    /// Bad certificate rows that may be set aside (reported in [`BuildReport::rejected`])
    /// instead of refusing the drop. Default 0.
    pub max_bad_rows: u64,
    /// The shrink guard: the largest fraction by which a full drop's count of valid
    /// certificates may fall below the snapshot in force. Default 0.05.
    pub shrink_threshold: f64,
    /// Accept a full drop that the shrink guard would refuse.
    pub force: bool,
    /// Bounds on what a drop may make the loader read.
    pub limits: Limits,
}

impl Default for Loader {
    fn default() -> Self {
        Loader {
            public_key: None,
            max_bad_rows: 0,
            shrink_threshold: DEFAULT_SHRINK_THRESHOLD,
            force: false,
            limits: Limits::default(),
        }
    }
}

/// What loading a drop produced.
#[derive(Debug)]
pub enum LoadOutcome {
    /// The next snapshot, ready to be written.
    Built {
        /// The snapshot file's bytes.
        bytes: SnapshotBytes,
        /// What was read and decided.
        report: Box<BuildReport>,
    },
    /// The drop's sequence is not above the one in force: skipped, not an error.
    Stale {
        /// The drop's sequence.
        sequence: u64,
        /// The sequence in force.
        in_force: u64,
    },
}

/// Whether the drop's signature was checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureCheck {
    /// A public key is configured and the signature verified.
    Verified,
    /// No public key is configured; any signature file was not read.
    NotChecked,
}

/// One data file as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    /// File name.
    pub name: String,
    /// What it holds.
    pub kind: FileKind,
    /// Data rows read.
    pub rows: u64,
    /// Size as stored.
    pub bytes: u64,
}

/// What a successful load read and decided.
#[derive(Clone, Debug)]
pub struct BuildReport {
    /// The drop's manifest.
    pub manifest: Manifest,
    /// Signature state.
    pub signature: SignatureCheck,
    /// The sequence the drop was applied on (delta), if any.
    pub applied_on: Option<u64>,
    /// Whether the drop carried a catalogue (a full replacement of the one in force).
    pub catalogue_replaced: bool,
    /// The data files, in manifest order.
    pub files: Vec<FileReport>,
    /// Certificate rows read, header excluded.
    pub rows: u64,
    /// Distinct certificates in the drop.
    pub certificates: u64,
    /// Of them, with status `有效`.
    pub valid: u64,
    /// Rows that repeated an earlier row of the same certificate exactly and were collapsed.
    pub duplicates_collapsed: u64,
    /// Certificates whose number's product digits differ from `产品类别代码` (accepted; the
    /// column is authoritative, see the crate README).
    pub number_code_mismatches: u64,
    /// Bad rows set aside (at most [`Loader::max_bad_rows`]).
    pub rejected: Vec<RejectedRow>,
    /// Valid certificates in the snapshot in force before a full drop, for the shrink guard.
    pub valid_before: Option<u64>,
    /// Whether `force` let through a drop the shrink guard would have refused.
    pub shrink_forced: bool,
    /// Delta only: certificates in force whose validity (`有效` or not) the delta changes.
    pub validity_changes: Option<u64>,
    /// Whether `force` let through a delta the delta guard would have refused.
    pub delta_forced: bool,
    /// Delta only: the numbers of the certificates its rows wrote, sorted, each once. No
    /// other certificate of the base can differ in the built snapshot, so the change feed
    /// compares only these (`cccgate_snapshot::verdict_changes_among`).
    pub delta_numbers: Option<Vec<u64>>,
    /// Certificates in the built snapshot.
    pub total_after: u64,
    /// Time spent reading, validating and building.
    pub elapsed: Duration,
}

impl Loader {
    /// Loads the drop in `drop_dir` against the snapshot in force (none for a first load).
    ///
    /// Returns the bytes of the next snapshot, or [`LoadOutcome::Stale`] when the drop is not
    /// newer than `in_force`. Reads files only; writes nothing.
    pub fn load(
        &self,
        drop_dir: &Path,
        in_force: Option<&Snapshot>,
    ) -> Result<LoadOutcome, LoadError> {
        let started = Instant::now();
        let manifest_path = drop_dir.join(MANIFEST_FILE);
        let manifest_bytes = read_manifest_bytes(&manifest_path, &self.limits)?;
        let signature = self.check_signature(drop_dir, &manifest_bytes)?;
        let manifest = Manifest::parse(&manifest_bytes, &manifest_path)?;

        if let Some(current) = in_force
            && manifest.sequence <= current.sequence()
        {
            return Ok(LoadOutcome::Stale {
                sequence: manifest.sequence,
                in_force: current.sequence(),
            });
        }
        let base = match (manifest.kind, manifest.base_sequence) {
            (DropKind::Delta, Some(base_sequence)) => match in_force {
                Some(s) if s.sequence() == base_sequence => {
                    if s.source() != manifest.source {
                        return Err(LoadError::SourceMismatch {
                            drop: manifest.source.clone(),
                            in_force: s.source().to_owned(),
                        });
                    }
                    Some(s)
                }
                other => {
                    return Err(LoadError::BaseMismatch {
                        base_sequence,
                        in_force: other.map(Snapshot::sequence),
                    });
                }
            },
            _ => None,
        };
        check_unlisted(drop_dir, &manifest)?;

        let mut files = Vec::with_capacity(manifest.files.len());
        let new_catalogue = match manifest.catalogue() {
            Some(entry) => {
                let file = CsvFile::open(drop_dir, entry, manifest.encoding, &self.limits)?;
                let (catalogue, digest) = catalogue::read_catalogue(file, entry)?;
                files.push(file_report(entry, &digest));
                Some(catalogue)
            }
            None => None,
        };
        let info = BuildInfo {
            sequence: manifest.sequence,
            source: manifest.source.clone(),
            generated_at: manifest.generated_at.clone(),
            built_at_unix_ms: now_unix_ms(),
        };
        let catalogue_replaced = new_catalogue.is_some();
        let (builder, catalogue): (SnapshotBuilder, Catalogue) = match (base, new_catalogue) {
            (Some(base), new) => {
                let b = SnapshotBuilder::from_snapshot(base, info, new);
                let c = b.catalogue().clone();
                (b, c)
            }
            (None, Some(c)) => (SnapshotBuilder::new(info, c.clone()), c),
            (None, None) => {
                // The manifest check guarantees a full drop lists a catalogue.
                return Err(LoadError::ManifestField {
                    path: manifest_path,
                    field: "files".into(),
                    message: "a full drop must list a catalogue file".into(),
                });
            }
        };

        let expected_rows: u64 = manifest.certificate_files().map(|f| f.rows).sum();
        let mut reader = certs::CertReader::new();
        let mut building = pipeline::Building {
            base,
            builder,
            dedup: certs::Dedup::new(expected_rows, base.is_some()),
            bad: certs::BadRows::new(self.max_bad_rows),
            validity_changes: 0,
            delta_numbers: Vec::new(),
        };
        pipeline::read_certificates(
            drop_dir,
            &manifest,
            &self.limits,
            &catalogue,
            &mut reader,
            &mut building,
            &mut files,
        )?;
        let pipeline::Building {
            builder,
            dedup,
            bad,
            validity_changes,
            mut delta_numbers,
            ..
        } = building;
        if let Some(b) = base
            && catalogue_replaced
        {
            check_kept_codes(b, &catalogue, |n| dedup.has(n, &builder))?;
        }
        let tally = reader.finish(bad, dedup)?;

        let mut valid_before = None;
        let mut shrink_forced = false;
        if manifest.kind == DropKind::Full
            && let Some(current) = in_force
        {
            let before = current.counts().valid();
            valid_before = Some(before);
            let allowed_loss = self.shrink_threshold.max(0.0) * before as f64;
            if tally.valid < before && (before - tally.valid) as f64 > allowed_loss {
                if self.force {
                    shrink_forced = true;
                } else {
                    return Err(LoadError::Shrink {
                        valid_before: before,
                        valid_after: tally.valid,
                        threshold: self.shrink_threshold,
                    });
                }
            }
        }

        let mut delta_forced = false;
        if let Some(b) = base {
            let before = b.counts().valid();
            let allowed = self.shrink_threshold.max(0.0) * before as f64;
            if validity_changes as f64 > allowed {
                if self.force {
                    delta_forced = true;
                } else {
                    return Err(LoadError::DeltaGuard {
                        changed: validity_changes,
                        valid_before: before,
                        threshold: self.shrink_threshold,
                    });
                }
            }
        }

        let total_after = builder.len() as u64;
        let bytes = builder.build()?;
        let report = BuildReport {
            applied_on: base.map(Snapshot::sequence),
            manifest,
            signature,
            catalogue_replaced,
            files,
            rows: tally.rows,
            certificates: tally.unique,
            valid: tally.valid,
            duplicates_collapsed: tally.duplicates_collapsed,
            number_code_mismatches: tally.number_code_mismatches,
            rejected: tally.rejected,
            valid_before,
            shrink_forced,
            validity_changes: base.map(|_| validity_changes),
            delta_forced,
            delta_numbers: base.map(|_| {
                delta_numbers.sort_unstable();
                delta_numbers.dedup();
                delta_numbers
            }),
            total_after,
            elapsed: started.elapsed(),
        };
        Ok(LoadOutcome::Built {
            bytes,
            report: Box::new(report),
        })
    }

    fn check_signature(
        &self,
        drop_dir: &Path,
        manifest: &[u8],
    ) -> Result<SignatureCheck, LoadError> {
        let Some(key) = &self.public_key else {
            return Ok(SignatureCheck::NotChecked);
        };
        let path = drop_dir.join(SIGNATURE_FILE);
        let sig = match limits::read_small(&path, self.limits.max_signature_bytes) {
            Ok(s) => s,
            Err(limits::OpenRefusal::NotFound) => {
                return Err(LoadError::SignatureMissing { path });
            }
            Err(limits::OpenRefusal::Io(source)) => return Err(LoadError::Io { path, source }),
            Err(other) => {
                return Err(LoadError::FileRefused {
                    path,
                    message: other.message(),
                });
            }
        };
        verify_signature(manifest, &sig, key).map_err(|e| LoadError::SignatureInvalid {
            path,
            reason: e.to_string(),
        })?;
        Ok(SignatureCheck::Verified)
    }
}

/// Reads and checks only the manifest of a drop (no signature check): enough to see its
/// sequence and kind before deciding to load it.
pub fn read_manifest(drop_dir: &Path, limits: &Limits) -> Result<Manifest, LoadError> {
    let path = drop_dir.join(MANIFEST_FILE);
    let bytes = read_manifest_bytes(&path, limits)?;
    Manifest::parse(&bytes, &path)
}

/// Reads `manifest.json`: a regular file (no link followed) of at most
/// [`Limits::max_manifest_bytes`], refused before it is read otherwise.
fn read_manifest_bytes(path: &Path, limits: &Limits) -> Result<Vec<u8>, LoadError> {
    limits::read_small(path, limits.max_manifest_bytes).map_err(|r| match r {
        limits::OpenRefusal::NotFound => LoadError::Io {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such file"),
        },
        limits::OpenRefusal::Io(source) => LoadError::Io {
            path: path.to_owned(),
            source,
        },
        limits::OpenRefusal::TooLarge { .. } => LoadError::FileRefused {
            path: path.to_owned(),
            message: format!("{} (--[drop-]max-manifest-bytes)", r.message()),
        },
        other => LoadError::FileRefused {
            path: path.to_owned(),
            message: other.message(),
        },
    })
}

/// Compares what reading a file found with what the manifest says: checksum first (a
/// damaged file explains everything else), then a read error, then the row count.
pub(crate) fn check_digest(
    listed: &FileEntry,
    path: &Path,
    digest: &FileDigest,
) -> Result<(), LoadError> {
    if digest.sha256 != listed.sha256 {
        return Err(LoadError::Checksum {
            file: listed.name.clone(),
            expected: hex::encode(listed.sha256),
            actual: hex::encode(digest.sha256),
        });
    }
    if let Some(e) = &digest.read_error {
        let message = if listed.is_gzip() {
            format!("the gzip stream is damaged: {e}")
        } else {
            e.to_string()
        };
        return Err(LoadError::Io {
            path: path.to_owned(),
            source: io::Error::new(e.kind(), message),
        });
    }
    if digest.rows != listed.rows {
        return Err(LoadError::RowCount {
            file: listed.name.clone(),
            expected: listed.rows,
            actual: digest.rows,
        });
    }
    Ok(())
}

/// A delta that replaces the catalogue keeps the base's certificates it does not replace;
/// each of them must still be covered by the new catalogue (the delta's own rows were checked
/// against it as they were read). Otherwise the delta is refused: the catalogue retires a
/// product with `截止日期`, never by leaving its code out, and a register whose certificates
/// name codes its catalogue lacks would be inconsistent.
fn check_kept_codes(
    base: &Snapshot,
    catalogue: &Catalogue,
    replaced: impl Fn(u64) -> bool,
) -> Result<(), LoadError> {
    let mut codes = Vec::new();
    let mut total = 0u64;
    let mut example = None;
    for s in base.iter() {
        if catalogue.contains(s.product_code) || replaced(s.number.get()) {
            continue;
        }
        total += 1;
        example.get_or_insert(s.number);
        let code = s.product_code.to_string();
        if codes.len() < MAX_LISTED && !codes.contains(&code) {
            codes.push(code);
        }
    }
    match example {
        None => Ok(()),
        Some(n) => {
            codes.sort();
            Err(LoadError::CatalogueDropsCodes {
                codes,
                total,
                example: n.to_string(),
            })
        }
    }
}

fn file_report(entry: &FileEntry, digest: &FileDigest) -> FileReport {
    FileReport {
        name: entry.name.clone(),
        kind: entry.kind,
        rows: digest.rows,
        bytes: digest.bytes,
    }
}

/// A CSV file in the drop that the manifest does not list is refused: neither checksum nor
/// signature covers it, and a forgotten file looks like a silently smaller register.
fn check_unlisted(drop_dir: &Path, manifest: &Manifest) -> Result<(), LoadError> {
    let entries = fs::read_dir(drop_dir).map_err(|source| LoadError::Io {
        path: drop_dir.to_owned(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| LoadError::Io {
            path: drop_dir.to_owned(),
            source,
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let lower = name.to_ascii_lowercase();
        let is_data = lower.ends_with(".csv") || lower.ends_with(".csv.gz");
        if is_data && !manifest.files.iter().any(|f| f.name == name) {
            return Err(LoadError::UnlistedFile { name });
        }
    }
    Ok(())
}

fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Writes rows set aside as CSV (see [`reject_csv`]) to `path`, atomically.
pub fn write_reject_file(path: &Path, rows: &[RejectedRow]) -> io::Result<()> {
    let bytes = reject_csv(rows)?;
    cccgate_snapshot::write_file_atomic(path, &[&bytes]).map_err(io::Error::other)
}

/// Rows set aside as CSV: `file,line,field,reason,row`, where `row` is the original row as
/// one CSV line. What a [`SnapshotDir::publish`](cccgate_snapshot::SnapshotDir::publish)
/// writes beside the snapshot as `reject-<sequence>.csv`.
pub fn reject_csv(rows: &[RejectedRow]) -> io::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["file", "line", "field", "reason", "row"])
        .map_err(io::Error::other)?;
    for r in rows {
        let mut line = csv::WriterBuilder::new()
            .terminator(csv::Terminator::Any(b'\n'))
            .from_writer(Vec::new());
        line.write_record(&r.fields).map_err(io::Error::other)?;
        let row = line.into_inner().map_err(io::Error::other)?;
        let row = String::from_utf8_lossy(&row);
        w.write_record([
            r.error.file.as_str(),
            &r.error.line.to_string(),
            &r.error.field,
            &r.error.message,
            row.trim_end_matches('\n'),
        ])
        .map_err(io::Error::other)?;
    }
    w.into_inner().map_err(io::Error::other)
}
