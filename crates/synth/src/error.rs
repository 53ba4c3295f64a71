//! What can go wrong writing synthetic files.

use std::io;
use std::path::PathBuf;

/// Writing a drop or a listing file failed. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SynthError {
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The CSV writer failed.
    #[error("{}: {source}", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The CSV error.
        source: csv::Error,
    },
    /// A field has a character GBK cannot encode.
    #[error("{}: line {line}, field {column}: {text:?} cannot be encoded in GBK", path.display())]
    Unencodable {
        /// The file.
        path: PathBuf,
        /// The line of the file (1 is the header).
        line: u64,
        /// The column's name.
        column: &'static str,
        /// The field's text.
        text: String,
    },
    /// Serialising JSON failed.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The options ask for something impossible.
    #[error("invalid options: {0}")]
    Options(String),
}
