//! Writing drops: the other half of the feed contract, and the one drop writer of the
//! project (tests, fixtures, and `cccgate-synth`'s synthetic feeds all write through it).
//!
//! [`DropWriter`] streams each file through an optional gzip encoder (when its name ends in
//! `.gz`) and a SHA-256 counter into the file ([`DropWriter::stream_file`]), records its
//! checksum, size and data row count, and writes the manifest last, to a temporary name
//! renamed into place, so the manifest is always right and a watcher never sees a manifest
//! whose files are still being written. [`DropWriter::csv_file`] encodes UTF-8 text in the
//! drop's encoding first. To write a deliberately broken drop, write raw bytes with
//! [`DropWriter::raw_file`] and state whatever row count or checksum the test needs.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
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
    /// Bytes as stored.
    pub bytes: u64,
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
        let mut f = self.stream_file(name, kind)?;
        f.write_all(content)?;
        let written = f.finish(rows)?;
        self.files.push(written);
        Ok(())
    }

    /// Opens `name` for streaming: what is written goes through gzip (if `name` ends in
    /// `.gz`) and a SHA-256 counter into the file. [`FileStream::finish`] gives the entry to
    /// [`add_file`](Self::add_file).
    pub fn stream_file(&self, name: &str, kind: FileKind) -> io::Result<FileStream> {
        let path = self.dir.join(name);
        let hashing = Hashing {
            inner: BufWriter::with_capacity(1 << 20, File::create(&path)?),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let sink = if name.ends_with(".gz") {
            Sink::Gzip(GzEncoder::new(hashing, Compression::fast()))
        } else {
            Sink::Plain(hashing)
        };
        Ok(FileStream {
            name: name.to_owned(),
            kind,
            sink,
        })
    }

    /// Lists a file written with [`stream_file`](Self::stream_file) in the manifest.
    pub fn add_file(&mut self, file: WrittenFile) {
        self.files.push(file);
    }

    /// The manifest text for the files written so far (pretty-printed, with a final line
    /// break).
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

    /// Writes `manifest.json` (to a temporary name, then renamed) and returns the drop
    /// directory.
    pub fn finish(self) -> io::Result<PathBuf> {
        let tmp = self.dir.join(".manifest.json.tmp");
        fs::write(&tmp, self.manifest_json())?;
        fs::rename(&tmp, self.dir.join(crate::MANIFEST_FILE))?;
        Ok(self.dir)
    }
}

/// A drop file being written (see [`DropWriter::stream_file`]).
#[derive(Debug)]
pub struct FileStream {
    name: String,
    kind: FileKind,
    sink: Sink,
}

impl FileStream {
    /// Finishes the gzip stream if any, flushes and syncs the file, and returns its entry
    /// with `rows` data rows.
    pub fn finish(self, rows: u64) -> io::Result<WrittenFile> {
        let mut hashing = match self.sink {
            Sink::Plain(h) => h,
            Sink::Gzip(g) => g.finish()?,
        };
        hashing.flush()?;
        let file = hashing.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(WrittenFile {
            name: self.name,
            kind: self.kind,
            sha256: hex::encode(hashing.hasher.finalize()),
            rows,
            bytes: hashing.bytes,
        })
    }
}

impl Write for FileStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
        }
    }
}

#[derive(Debug)]
enum Sink {
    Plain(Hashing),
    Gzip(GzEncoder<Hashing>),
}

/// Counts and hashes the bytes on their way to the file.
struct Hashing {
    inner: BufWriter<File>,
    hasher: Sha256,
    bytes: u64,
}

impl std::fmt::Debug for Hashing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hashing")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Write for Hashing {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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
