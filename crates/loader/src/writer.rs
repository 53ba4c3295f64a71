//! Writing drops: the other half of the feed contract, for tests, fixtures and synthetic
//! feeds.
//!
//! [`DropWriter`] encodes each file in the drop's encoding, gzips it when its name ends in
//! `.gz`, and records its SHA-256 and data row count, so the manifest it writes last is
//! always right. To write a deliberately broken drop, write raw bytes with
//! [`DropWriter::raw_file`] and state whatever row count or checksum the test needs.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::manifest::{DropKind, Encoding, FORMAT, FileKind};

/// What a drop says about itself, apart from its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropHeader {
    /// Who publishes the feed.
    pub source: String,
    /// Full or delta.
    pub kind: DropKind,
    /// The drop's sequence.
    pub sequence: u64,
    /// Delta only: the sequence it applies on.
    pub base_sequence: Option<u64>,
    /// RFC 3339 with offset.
    pub generated_at: String,
    /// Encoding of the CSV files.
    pub encoding: Encoding,
}

impl DropHeader {
    /// A full drop from `cnca`, UTF-8.
    pub fn full(sequence: u64) -> Self {
        DropHeader {
            source: "cnca".into(),
            kind: DropKind::Full,
            sequence,
            base_sequence: None,
            generated_at: "2026-11-27T02:00:00+08:00".into(),
            encoding: Encoding::Utf8,
        }
    }

    /// A delta from `cnca` on `base_sequence`, UTF-8.
    pub fn delta(sequence: u64, base_sequence: u64) -> Self {
        DropHeader {
            kind: DropKind::Delta,
            base_sequence: Some(base_sequence),
            ..DropHeader::full(sequence)
        }
    }
}

/// One file as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    /// File name.
    pub name: String,
    /// What it holds.
    pub kind: FileKind,
    /// Hex SHA-256 of the bytes as stored.
    pub sha256: String,
    /// Data rows, header excluded.
    pub rows: u64,
}

/// Writes one drop directory.
#[derive(Debug)]
pub struct DropWriter {
    dir: PathBuf,
    header: DropHeader,
    files: Vec<WrittenFile>,
}

impl DropWriter {
    /// Creates the drop directory (and its parents).
    pub fn create(dir: &Path, header: DropHeader) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(DropWriter {
            dir: dir.to_owned(),
            header,
            files: Vec::new(),
        })
    }

    /// The drop directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The files written so far, as the manifest will list them; edit them to break a drop.
    pub fn files_mut(&mut self) -> &mut Vec<WrittenFile> {
        &mut self.files
    }

    /// Writes a CSV file from UTF-8 text: encoded in the drop's encoding (an error if a
    /// character has no GBK form), gzipped if `name` ends in `.gz`. The row count is the
    /// number of CSV records after the header.
    pub fn csv_file(&mut self, name: &str, kind: FileKind, text: &str) -> io::Result<()> {
        let encoded: Vec<u8> = match self.header.encoding {
            Encoding::Utf8 => text.as_bytes().to_vec(),
            Encoding::Gbk => {
                let (bytes, _, unmappable) = encoding_rs::GBK.encode(text);
                if unmappable {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{name}: text has characters with no GBK form"),
                    ));
                }
                bytes.into_owned()
            }
        };
        let rows = count_rows(&encoded)?;
        self.raw_file(name, kind, &encoded, rows)
    }

    /// Writes `content` (gzipped if `name` ends in `.gz`) and lists it with `rows`.
    pub fn raw_file(
        &mut self,
        name: &str,
        kind: FileKind,
        content: &[u8],
        rows: u64,
    ) -> io::Result<()> {
        let stored = if name.ends_with(".gz") {
            let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
            gz.write_all(content)?;
            gz.finish()?
        } else {
            content.to_vec()
        };
        fs::write(self.dir.join(name), &stored)?;
        self.files.push(WrittenFile {
            name: name.to_owned(),
            kind,
            sha256: hex::encode(Sha256::digest(&stored)),
            rows,
        });
        Ok(())
    }

    /// The manifest text for the files written so far.
    pub fn manifest_json(&self) -> String {
        let h = &self.header;
        let mut m = serde_json::Map::new();
        m.insert("format".into(), FORMAT.into());
        m.insert("source".into(), h.source.clone().into());
        m.insert("kind".into(), h.kind.as_str().into());
        m.insert("sequence".into(), h.sequence.into());
        if let Some(b) = h.base_sequence {
            m.insert("base_sequence".into(), b.into());
        }
        m.insert("generated_at".into(), h.generated_at.clone().into());
        m.insert("encoding".into(), h.encoding.as_str().into());
        let files: Vec<serde_json::Value> = self
            .files
            .iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.name, "kind": f.kind.as_str(), "sha256": f.sha256, "rows": f.rows,
                })
            })
            .collect();
        m.insert("files".into(), files.into());
        let mut text =
            serde_json::to_string_pretty(&serde_json::Value::Object(m)).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Writes `manifest.json` and returns the drop directory.
    pub fn finish(self) -> io::Result<PathBuf> {
        fs::write(self.dir.join(crate::MANIFEST_FILE), self.manifest_json())?;
        Ok(self.dir)
    }
}

fn count_rows(bytes: &[u8]) -> io::Result<u64> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes);
    let mut rec = csv::ByteRecord::new();
    let mut n = 0;
    while r.read_byte_record(&mut rec).map_err(io::Error::other)? {
        n += 1;
    }
    Ok(n)
}
