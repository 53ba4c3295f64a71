//! Why a drop is refused.
//!
//! Every error names where the problem is: the file, and for anything inside a CSV file the
//! physical line where the record starts (header = line 1) and the column. Errors that can
//! come in numbers (bad rows, conflicting duplicates) carry up to [`MAX_LISTED`] examples and
//! the total, so one refusal shows the operator the whole shape of the problem.

use std::fmt;
use std::io;
use std::path::PathBuf;

use cccgate_snapshot::SnapshotError;

/// How many bad rows or conflicts a refusal lists; the rest are only counted.
pub const MAX_LISTED: usize = 100;

/// One bad row of a CSV file: where it is and what is wrong with which field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowError {
    /// File name inside the drop, e.g. `certificates.csv`.
    pub file: String,
    /// Physical line where the record starts (header = line 1).
    pub line: u64,
    /// The column at fault, by its header name (e.g. `证书状态`), or `row` for the whole row.
    pub field: String,
    /// What is wrong, e.g. `unknown status "有 效"`.
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {}, {}: {}",
            self.file, self.line, self.field, self.message
        )
    }
}

/// A certificate number that appears twice in one drop with different contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateConflict {
    /// The certificate number (16 digits).
    pub number: String,
    /// File and line of the first occurrence.
    pub first: (String, u64),
    /// File and line of the occurrence that differs from it.
    pub second: (String, u64),
}

impl fmt::Display for DuplicateConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {} and {} line {}, 证书编号: certificate {} appears twice with different contents",
            self.first.0, self.first.1, self.second.0, self.second.1, self.number
        )
    }
}

/// Why a drop was refused. Nothing was written and the snapshot in force is unchanged.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A file of the drop could not be read (missing directory, permissions, corrupt gzip).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// `manifest.json` is not valid JSON.
    #[error("{} line {line} column {column}: not valid JSON: {message}", path.display())]
    ManifestSyntax {
        /// The manifest file.
        path: PathBuf,
        /// Line of the syntax error.
        line: usize,
        /// Column of the syntax error.
        column: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// `format` is not `ccc-feed/1`.
    #[error("{}, format: unknown manifest format {found:?}; this loader reads \"ccc-feed/1\"", path.display())]
    UnknownFormat {
        /// The manifest file.
        path: PathBuf,
        /// The format found (or a description of what was there instead).
        found: String,
    },
    /// A manifest key is missing or has a value the contract does not allow.
    #[error("{}, {field}: {message}", path.display())]
    ManifestField {
        /// The manifest file.
        path: PathBuf,
        /// The key, e.g. `sequence` or `files[1].sha256`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A public key is configured and the drop has no `manifest.json.sig`.
    #[error("{}: missing; a public key is configured, so every drop must be signed", path.display())]
    SignatureMissing {
        /// Where the signature was expected.
        path: PathBuf,
    },
    /// `manifest.json.sig` is present but is not a valid signature of `manifest.json` under
    /// the configured key.
    #[error("{}: {reason}", path.display())]
    SignatureInvalid {
        /// The signature file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file listed in the manifest is not in the drop directory.
    #[error("{name}: listed in manifest.json but not in the drop directory {}", drop_dir.display())]
    FileMissing {
        /// The drop directory.
        drop_dir: PathBuf,
        /// The file name from the manifest.
        name: String,
    },
    /// A CSV file is in the drop directory but not listed in the manifest (so neither its
    /// checksum nor the signature covers it).
    #[error("{name}: data file in the drop directory but not listed in manifest.json")]
    UnlistedFile {
        /// The file name.
        name: String,
    },
    /// A file's SHA-256 differs from the manifest's.
    #[error("{file}: SHA-256 is {actual} but manifest.json says {expected}")]
    Checksum {
        /// The file name.
        file: String,
        /// The manifest's hex digest.
        expected: String,
        /// The digest of the bytes as stored.
        actual: String,
    },
    /// A file's data row count differs from the manifest's.
    #[error("{file}: {actual} data rows but manifest.json says {expected}")]
    RowCount {
        /// The file name.
        file: String,
        /// The manifest's count.
        expected: u64,
        /// The rows read (header excluded).
        actual: u64,
    },
    /// The header row of a CSV file is unusable (a required column missing or repeated,
    /// undecodable bytes, no header at all).
    #[error("{file} line 1, {field}: {message}")]
    Header {
        /// The file name.
        file: String,
        /// The column at fault.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// Rows of `catalogue.csv` are bad, or the catalogue is inconsistent. A catalogue row is
    /// never set aside: the whole catalogue is refused.
    #[error("{}", list("catalogue rows are bad", rows, *total, None))]
    BadCatalogue {
        /// Up to [`MAX_LISTED`] bad rows.
        rows: Vec<RowError>,
        /// How many bad rows there are.
        total: u64,
    },
    /// More certificate rows are bad than may be set aside.
    #[error("{}", list("certificate rows are bad", rows, *total, Some(*allowed)))]
    BadRows {
        /// Up to [`MAX_LISTED`] bad rows.
        rows: Vec<RowError>,
        /// How many bad rows there are.
        total: u64,
        /// How many may be set aside (`--max-bad-rows`).
        allowed: u64,
    },
    /// The same certificate number appears with different contents.
    #[error("{}", list("certificate numbers appear twice with different contents", conflicts, *total, None))]
    Duplicates {
        /// Up to [`MAX_LISTED`] conflicts.
        conflicts: Vec<DuplicateConflict>,
        /// How many conflicts there are.
        total: u64,
    },
    /// A delta whose `base_sequence` is not the sequence in force.
    #[error("{}", base_message(*base_sequence, *in_force))]
    BaseMismatch {
        /// The delta's `base_sequence`.
        base_sequence: u64,
        /// The sequence in force, if any snapshot is.
        in_force: Option<u64>,
    },
    /// A delta from another source than the snapshot in force.
    #[error(
        "manifest.json, source: delta from {drop:?} cannot apply on a snapshot from {in_force:?}; a full drop is needed"
    )]
    SourceMismatch {
        /// The drop's source.
        drop: String,
        /// The source of the snapshot in force.
        in_force: String,
    },
    /// The shrink guard: a full drop with too few valid certificates.
    #[error(
        "shrink guard: the drop has {valid_after} valid (有效) certificates, {:.1}% fewer than the {valid_before} in force (more than {:.1}% looks like a truncated export); use --force if this is real",
        shrink_percent(*valid_before, *valid_after),
        threshold * 100.0
    )]
    Shrink {
        /// Valid certificates in the snapshot in force.
        valid_before: u64,
        /// Valid certificates in the drop.
        valid_after: u64,
        /// The allowed shrink as a fraction (0.05 = 5%).
        threshold: f64,
    },
    /// The delta guard: a delta that changes the validity of more than the allowed share of
    /// the valid certificates in force.
    #[error(
        "delta guard: the delta changes the validity of {changed} certificates, {:.1}% of the {valid_before} valid (有效) in force (more than {:.1}% looks like a broken or hostile export); use --force if this is real",
        percent(*changed, *valid_before),
        threshold * 100.0
    )]
    DeltaGuard {
        /// Certificates valid in force that the delta makes not valid, plus certificates in
        /// force not valid that it makes valid.
        changed: u64,
        /// Valid certificates in force.
        valid_before: u64,
        /// The allowed share (0.05 = 5%, the shrink guard's).
        threshold: f64,
    },
    /// A delta's catalogue leaves out product codes that certificates it keeps from the
    /// snapshot in force still cover.
    #[error(
        "catalogue.csv, 产品类别代码: the delta's catalogue leaves out {}, still covered by {total} certificates in force that the delta does not replace (e.g. {example}); a delta's catalogue must cover every certificate it keeps: send a full drop",
        codes.join(", ")
    )]
    CatalogueDropsCodes {
        /// The product codes left out (up to [`MAX_LISTED`]).
        codes: Vec<String>,
        /// Certificates kept from the base that cover them.
        total: u64,
        /// One of those certificates.
        example: String,
    },
    /// A file of the drop is not a regular file (a symbolic link, a FIFO, a device) or is
    /// larger than its cap: refused before a byte of it is read.
    #[error("{}: {message}", path.display())]
    FileRefused {
        /// The file.
        path: PathBuf,
        /// What it is, or how large.
        message: String,
    },
    /// A bound on what a drop may make the loader read was passed (field, record or
    /// decompressed size): reading stopped there.
    #[error("{}", limit_message(file, *line, field.as_deref(), message))]
    Limit {
        /// The file name inside the drop.
        file: String,
        /// Physical line where the record at fault starts, if known.
        line: Option<u64>,
        /// The column at fault, if one.
        field: Option<String>,
        /// Which bound, and its flag.
        message: String,
    },
    /// A data file has more rows than the manifest lists: refused at the first extra row,
    /// without reading the rest.
    #[error(
        "{file} line {line}: more data rows than the {expected} manifest.json lists; reading stopped at this row"
    )]
    TooManyRows {
        /// The file name.
        file: String,
        /// The manifest's count.
        expected: u64,
        /// Physical line of the first row beyond it.
        line: u64,
    },
    /// A bug in the loader, reported instead of crashing the process.
    #[error("internal error: {0}")]
    Internal(String),
    /// The snapshot could not be built from the drop.
    #[error("building the snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
}

impl LoadError {
    /// The bad rows a refusal lists, if it is of a row class.
    pub fn rows(&self) -> &[RowError] {
        match self {
            LoadError::BadCatalogue { rows, .. } | LoadError::BadRows { rows, .. } => rows,
            _ => &[],
        }
    }
}

fn limit_message(file: &str, line: Option<u64>, field: Option<&str>, message: &str) -> String {
    let mut s = file.to_owned();
    if let Some(l) = line {
        s.push_str(&format!(" line {l}"));
    }
    if let Some(f) = field {
        s.push_str(&format!(", {f}"));
    }
    format!("{s}: {message}")
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        100.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn shrink_percent(before: u64, after: u64) -> f64 {
    if before == 0 {
        0.0
    } else {
        (before.saturating_sub(after)) as f64 * 100.0 / before as f64
    }
}

fn base_message(base: u64, in_force: Option<u64>) -> String {
    match in_force {
        Some(s) => format!(
            "manifest.json, base_sequence: the delta applies on sequence {base} but sequence {s} is in force; a full drop is needed"
        ),
        None => format!(
            "manifest.json, base_sequence: the delta applies on sequence {base} but no snapshot is in force; a full drop is needed"
        ),
    }
}

fn list<T: fmt::Display>(what: &str, items: &[T], total: u64, allowed: Option<u64>) -> String {
    use fmt::Write;
    let mut s = format!("{total} {what}");
    if let Some(a) = allowed {
        let _ = write!(s, " (at most {a} may be set aside; see --max-bad-rows)");
    }
    s.push(':');
    for item in items {
        let _ = write!(s, "\n  {item}");
    }
    let listed = items.len() as u64;
    if total > listed {
        let _ = write!(s, "\n  ... and {} more", total - listed);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_error_names_file_line_and_field() {
        let e = RowError {
            file: "certificates.csv".into(),
            line: 17,
            field: "证书状态".into(),
            message: "unknown status \"有 效\"".into(),
        };
        assert_eq!(
            e.to_string(),
            "certificates.csv line 17, 证书状态: unknown status \"有 效\""
        );
    }

    #[test]
    fn bad_rows_list_says_how_many_more_there_are() {
        let row = RowError {
            file: "c.csv".into(),
            line: 2,
            field: "证书编号".into(),
            message: "x".into(),
        };
        let e = LoadError::BadRows {
            rows: vec![row],
            total: 3,
            allowed: 0,
        };
        let text = e.to_string();
        assert!(text.starts_with("3 certificate rows are bad (at most 0 may be set aside"));
        assert!(text.contains("\n  c.csv line 2, 证书编号: x"));
        assert!(text.ends_with("... and 2 more"));
    }
}
