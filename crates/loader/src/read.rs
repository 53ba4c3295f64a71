//! Reading one data file of a drop as a stream of CSV records, hashing the bytes as stored.
//!
//! The one decision to know: the CSV is split into records and fields **before** decoding.
//! That is sound for both encodings: in UTF-8 and in GBK (GB 18030) every byte of a multi-byte
//! character is `0x30` or above, so none can be a comma, a quote or a line break. Each field
//! is then decoded on its own, which keeps memory flat (one record at a time), lets an
//! undecodable byte be reported as a bad row naming its line and column instead of a broken
//! file, and costs nothing for ASCII fields. Reading, hashing (the SHA-256 of the bytes as
//! stored, below the gzip decoder) and gunzipping run on a pump thread of their own, so the
//! parser never waits on them and a gzipped drop costs little more than a plain one.
//!
//! Records end at `\n` only (a `\r` before it is dropped from the last field), so the
//! parser's line count is the physical line count in every line ending; a record's first
//! line is the count after it minus the line breaks inside its fields. Bounds
//! ([`crate::Limits`]) are applied as bytes arrive: a record is refused as soon as the bytes
//! read for it pass the cap, before the parser could buffer more, and the file's
//! decompressed bytes are counted as they are handed over.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};

use crate::LoadError;
use crate::limits::{Limits, OpenRefusal, open_regular};
use crate::manifest::{Encoding, FileEntry};
use crate::split::{Fields, Splitter};

/// Buffer of the record splitter: large reads keep system calls few.
const BUFFER: usize = 1 << 20;
/// Size of the chunks the pump thread hands over.
const CHUNK: usize = 256 << 10;
/// Chunks in flight between the pump thread and the parser.
const CHUNKS_IN_FLIGHT: usize = 4;

/// A reader that hashes and counts every byte passing through it; it stops with an error
/// once `abort` is set (the parser refused the file and wants no more of it).
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
    abort: Arc<AtomicBool>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.abort.load(Ordering::Relaxed) {
            return Err(io::Error::other("reading stopped: the file was refused"));
        }
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

type Chunk = io::Result<Vec<u8>>;
type Digest32 = ([u8; 32], u64);

/// Runs on its own thread: reads the file, hashes the bytes as stored, gunzips if asked, and
/// sends the data in chunks. It always reads the file to its end, even after a gzip error or
/// once the parser has gone, so the digest it returns covers the whole file.
fn pump(
    file: File,
    gzip: bool,
    tx: SyncSender<Chunk>,
    back: Receiver<Vec<u8>>,
    abort: Arc<AtomicBool>,
) -> io::Result<Digest32> {
    let mut h = Hashing {
        inner: file,
        hasher: Sha256::new(),
        bytes: 0,
        abort,
    };
    if gzip {
        send_all(&mut MultiGzDecoder::new(&mut h), &tx, &back);
    } else {
        send_all(&mut h, &tx, &back);
    }
    drop(tx);
    io::copy(&mut h, &mut io::sink())?;
    Ok((h.hasher.finalize().into(), h.bytes))
}

fn send_all(r: &mut impl Read, tx: &SyncSender<Chunk>, back: &Receiver<Vec<u8>>) {
    loop {
        // Reuse a chunk the parser is done with: freeing and allocating large buffers across
        // threads costs the allocator more than the copy.
        let mut buf = back.try_recv().unwrap_or_default();
        buf.resize(CHUNK, 0);
        let mut len = 0;
        let end = loop {
            match r.read(&mut buf[len..]) {
                Ok(0) => break true,
                Ok(n) => {
                    len += n;
                    if len == CHUNK {
                        break false;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
        };
        buf.truncate(len);
        if (len > 0 && tx.send(Ok(buf)).is_err()) || end {
            return;
        }
    }
}

/// A bound the source hit; [`CsvFile`] turns it into a [`LoadError::Limit`].
#[derive(Debug)]
pub(crate) enum Hit {
    /// The record being read passed `max_record_bytes`.
    Record,
    /// The file passed its decompressed budget.
    Decompressed,
}

/// The parser's side of the pump: a `Read` over the chunks, which counts the bytes it hands
/// out and refuses to hand out more than the bounds allow.
pub(crate) struct Source {
    rx: Receiver<Chunk>,
    back: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    pos: usize,
    /// Bytes handed to the parser (decompressed).
    handed: u64,
    /// The most bytes the file may produce.
    budget: u64,
    /// Where the record being read started (set by [`CsvFile`] after each record). When the
    /// parser asks for more, it has consumed everything handed out, so `handed - record_start`
    /// is exactly what it holds of the record in progress.
    pub(crate) record_start: u64,
    max_record: u64,
    /// The last byte handed out, so a file that does not end in `\n` gets one (every record
    /// then ends the same way, which keeps line arithmetic exact).
    last: u8,
    ended: bool,
    pub(crate) hit: Option<Hit>,
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.handed.saturating_sub(self.record_start) > self.max_record {
            self.hit = Some(Hit::Record);
            return Err(io::Error::other("record too long"));
        }
        while self.pos == self.chunk.len() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let done = std::mem::replace(&mut self.chunk, chunk);
                    let _ = self.back.try_send(done);
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    self.ended = true;
                    if self.handed > 0 && self.last != b'\n' && !buf.is_empty() {
                        buf[0] = b'\n';
                        self.last = b'\n';
                        self.handed += 1;
                        return Ok(1);
                    }
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        if n == 0 {
            return Ok(0);
        }
        if self.handed + n as u64 > self.budget {
            self.hit = Some(Hit::Decompressed);
            return Err(io::Error::other("decompressed size over budget"));
        }
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        self.handed += n as u64;
        self.last = buf[n - 1];
        Ok(n)
    }
}

#[cfg(test)]
impl Source {
    /// A source handing out `bytes` in chunks of `chunk` bytes, within `max_record`.
    pub(crate) fn of_bytes(bytes: &[u8], chunk: usize, max_record: u64) -> Source {
        let (tx, rx) = std::sync::mpsc::channel();
        for piece in bytes.chunks(chunk.max(1)) {
            tx.send(Ok(piece.to_vec())).unwrap();
        }
        let (back, _) = sync_channel(1);
        Source {
            rx,
            back,
            chunk: Vec::new(),
            pos: 0,
            handed: 0,
            budget: u64::MAX,
            record_start: 0,
            max_record,
            last: b'\n',
            ended: false,
            hit: None,
        }
    }
}

/// What reading a whole file found out about its bytes.
#[derive(Debug)]
pub(crate) struct FileDigest {
    pub sha256: [u8; 32],
    pub bytes: u64,
    /// Data records read.
    pub rows: u64,
    /// An error that stopped reading early (corrupt gzip, I/O); reported after the checksum,
    /// since a truncated or damaged file is best described by its checksum mismatch.
    pub read_error: Option<io::Error>,
}

/// One CSV data file being read.
pub(crate) struct CsvFile {
    pub name: String,
    listed: FileEntry,
    pub path: PathBuf,
    encoding: Encoding,
    reader: Splitter,
    pump: JoinHandle<io::Result<Digest32>>,
    abort: Arc<AtomicBool>,
    record: Fields,
    rows: u64,
    /// Physical line of the first byte after the last record read (1 before any).
    next_line: u64,
    max_field: u64,
    max_record: u64,
    read_error: Option<io::Error>,
    /// A refusal that stopped reading (a bound, too many rows): reported as is, without
    /// reading the rest of the file.
    refusal: Option<LoadError>,
}

impl CsvFile {
    /// Opens the listed file in `dir`, gunzipping when its name ends in `.gz`. Only a regular
    /// file is opened (no link is followed) and its size is checked before it is read.
    pub fn open(
        dir: &Path,
        listed: &FileEntry,
        encoding: Encoding,
        limits: &Limits,
    ) -> Result<CsvFile, LoadError> {
        let name = listed.name.as_str();
        let path = dir.join(name);
        let (file, stored) = open_regular(&path, limits.max_file_bytes).map_err(|r| match r {
            OpenRefusal::NotFound => LoadError::FileMissing {
                drop_dir: dir.to_owned(),
                name: name.to_owned(),
            },
            OpenRefusal::Io(source) => LoadError::Io {
                path: path.clone(),
                source,
            },
            other => LoadError::FileRefused {
                path: path.clone(),
                message: match other {
                    OpenRefusal::TooLarge { .. } => {
                        format!("{} (--[drop-]max-file-bytes)", other.message())
                    }
                    _ => other.message(),
                },
            },
        })?;
        let gzip = listed.is_gzip();
        let budget = if gzip {
            limits.gzip_budget(stored)
        } else {
            limits.max_file_bytes
        };
        let abort = Arc::new(AtomicBool::new(false));
        let (tx, rx) = sync_channel(CHUNKS_IN_FLIGHT);
        let (back, back_rx) = sync_channel(CHUNKS_IN_FLIGHT + 2);
        let pump_abort = abort.clone();
        let pump = std::thread::Builder::new()
            .name(format!("read {name}"))
            .spawn(move || pump(file, gzip, tx, back_rx, pump_abort))
            .map_err(|source| LoadError::Io {
                path: path.clone(),
                source,
            })?;
        let source = Source {
            rx,
            back,
            chunk: Vec::new(),
            pos: 0,
            handed: 0,
            budget,
            record_start: 0,
            max_record: limits.max_record_bytes,
            last: b'\n',
            ended: false,
            hit: None,
        };
        let reader = Splitter::new(source, BUFFER);
        Ok(CsvFile {
            name: name.to_owned(),
            listed: listed.clone(),
            path,
            encoding,
            reader,
            pump,
            abort,
            record: Fields::default(),
            rows: 0,
            next_line: 1,
            max_field: limits.max_field_bytes,
            max_record: limits.max_record_bytes,
            read_error: None,
            refusal: None,
        })
    }

    /// Reads the next record into `self.record`, skipping blank lines (a lone `\r` included),
    /// and returns the physical line it starts on. `Ok(None)` at the end of the file; `Err`
    /// for a refusal (a bound) or a read error, both kept for [`CsvFile::finish`].
    fn read_raw(&mut self) -> Option<u64> {
        loop {
            let line = match self.reader.read_record(&mut self.record) {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(e) => {
                    match self.reader.source_mut().hit.take() {
                        Some(Hit::Record) => {
                            self.refusal = Some(self.limit(
                                Some(self.next_line),
                                None,
                                format!(
                                    "the record starting here is longer than {} bytes (--[drop-]max-record-bytes)",
                                    self.max_record
                                ),
                            ));
                        }
                        Some(Hit::Decompressed) => {
                            let source = self.reader.source();
                            let message = if self.listed.is_gzip() {
                                format!(
                                    "decompresses to more than {} bytes (--[drop-]max-file-bytes, --[drop-]max-gzip-ratio)",
                                    source.budget
                                )
                            } else {
                                format!(
                                    "is longer than {} bytes (--[drop-]max-file-bytes)",
                                    source.budget
                                )
                            };
                            self.refusal = Some(self.limit(None, None, message));
                        }
                        None => self.read_error = Some(e),
                    }
                    return None;
                }
            };
            self.next_line = self.reader.next_line();
            let bytes = self.record.as_slice();
            let blank = self.record.len() == 1 && matches!(bytes, b"" | b"\r");
            if blank {
                continue;
            }
            if bytes.len() as u64 > self.max_record {
                self.refusal = Some(self.limit(
                    Some(line),
                    None,
                    format!(
                        "record of {} bytes, longer than {} bytes (--[drop-]max-record-bytes)",
                        bytes.len(),
                        self.max_record
                    ),
                ));
                return None;
            }
            if bytes.len() as u64 > self.max_field
                && let Some((i, long)) = self
                    .record
                    .iter()
                    .enumerate()
                    .find(|(_, f)| f.len() as u64 > self.max_field)
            {
                self.refusal = Some(self.limit(
                    Some(line),
                    Some(format!("column {}", i + 1)),
                    format!(
                        "field of {} bytes, longer than {} bytes (--[drop-]max-field-bytes)",
                        long.len(),
                        self.max_field
                    ),
                ));
                return None;
            }
            return Some(line);
        }
    }

    fn limit(&self, line: Option<u64>, field: Option<String>, message: String) -> LoadError {
        LoadError::Limit {
            file: self.name.clone(),
            line,
            field,
            message,
        }
    }

    /// Reads the header row, decodes its column names (a UTF-8 BOM is dropped) and maps
    /// `required` to column indexes. Any failure is first checked against the file's checksum:
    /// a damaged file is reported as such, not as a bad header.
    pub fn header(mut self, required: &[&str]) -> Result<(CsvFile, Vec<usize>, usize), LoadError> {
        match self.read_header(required) {
            Ok((cols, width)) => Ok((self, cols, width)),
            Err(e) => Err(self.refuse(e)),
        }
    }

    fn read_header(&mut self, required: &[&str]) -> Result<(Vec<usize>, usize), LoadError> {
        if self.read_raw().is_none() {
            if let Some(refusal) = self.refusal.take() {
                return Err(refusal);
            }
            let Some(e) = self.read_error.take() else {
                return Err(LoadError::Header {
                    file: self.name.clone(),
                    field: "header".into(),
                    message: "the file is empty: no header row".into(),
                });
            };
            let source = if self.listed.is_gzip() {
                io::Error::new(e.kind(), format!("the gzip stream is damaged: {e}"))
            } else {
                e
            };
            return Err(LoadError::Io {
                path: self.path.clone(),
                source,
            });
        }
        let mut names = Vec::with_capacity(self.record.len());
        for (i, raw) in self.record.iter().enumerate() {
            let raw = if i == 0 {
                raw.strip_prefix(b"\xEF\xBB\xBF".as_slice()).unwrap_or(raw)
            } else {
                raw
            };
            let Some(text) = decode(self.encoding, raw) else {
                return Err(LoadError::Header {
                    file: self.name.clone(),
                    field: format!("column {}", i + 1),
                    message: format!(
                        "undecodable bytes in the header (not {}); does the manifest's encoding match the file?",
                        self.encoding.as_str()
                    ),
                });
            };
            names.push(text.trim().to_owned());
        }
        let cols = column_indexes(&self.name, &names, required)?;
        Ok((cols, names.len()))
    }

    /// Turns an error into the refusal to report: a checksum mismatch if the file's bytes
    /// are not the ones the manifest lists, else the error itself. A bound that was passed is
    /// reported as is, without reading the rest of the file.
    fn refuse(self, err: LoadError) -> LoadError {
        if matches!(err, LoadError::Limit { .. }) {
            self.stop();
            return err;
        }
        let listed = self.listed.clone();
        match self.digest() {
            Ok((sha, _)) if sha != listed.sha256 => LoadError::Checksum {
                file: listed.name,
                expected: hex::encode(listed.sha256),
                actual: hex::encode(sha),
            },
            _ => err,
        }
    }

    /// Stops reading at once: the pump is told to stop and joined, nothing more is read.
    fn stop(self) {
        self.abort.store(true, Ordering::Relaxed);
        drop(self.reader);
        let _ = self.pump.join();
    }

    /// Stops parsing and waits for the pump's digest of the whole file.
    fn digest(self) -> Result<Digest32, LoadError> {
        // Dropping the receiving end lets the pump stop sending and hash the rest.
        drop(self.reader);
        let path = self.path;
        match self.pump.join() {
            Ok(r) => r.map_err(|source| LoadError::Io { path, source }),
            Err(_) => Err(LoadError::Internal(format!(
                "the reader thread of {} panicked",
                path.display()
            ))),
        }
    }

    /// Counts the next data record and returns the line it starts on; `None` at the end of
    /// the file, after a read error (kept for [`CsvFile::finish`]) or when the file has more
    /// rows than its manifest lists (refused before the row is parsed).
    fn next_row(&mut self) -> Option<u64> {
        let line = self.read_raw()?;
        self.rows += 1;
        if self.rows > self.listed.rows {
            self.refusal = Some(LoadError::TooManyRows {
                file: self.name.clone(),
                expected: self.listed.rows,
                line,
            });
            return None;
        }
        Some(line)
    }

    /// Reads the next data record; `None` at the end of the file or after a read error
    /// (kept for [`CsvFile::finish`]).
    pub fn next_record(&mut self) -> Option<Record<'_>> {
        let line = self.next_row()?;
        Some(Record {
            bytes: self.record.as_slice(),
            text: None,
            start: 0,
            ends: self.record.ends(),
            line,
            encoding: self.encoding,
        })
    }

    /// Reads the next data record into `batch` (its fields as stored, not yet decoded, for
    /// another thread to parse); `false` where [`CsvFile::next_record`] gives `None`.
    pub fn next_into(&mut self, batch: &mut RawBatch) -> bool {
        match self.next_row() {
            Some(line) => {
                batch.push(&self.record, line);
                true
            }
            None => false,
        }
    }

    /// The drop's text encoding, which this file's fields are in.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Drains the file and returns its digest, size and row count; a refusal met while
    /// reading (a bound, too many rows) is returned at once, without reading the rest.
    pub fn finish(mut self) -> Result<FileDigest, LoadError> {
        if let Some(refusal) = self.refusal.take() {
            self.stop();
            return Err(refusal);
        }
        let (rows, read_error) = (self.rows, self.read_error.take());
        let (sha256, bytes) = self.digest()?;
        Ok(FileDigest {
            sha256,
            bytes,
            rows,
            read_error,
        })
    }
}

/// One data record, its fields still in the file's encoding: a view of fields laid end to
/// end in `bytes`, from `start`, each ending at the next of `ends`.
pub(crate) struct Record<'a> {
    bytes: &'a [u8],
    /// `bytes` as text when the drop is UTF-8 and they were validated as a whole: a field
    /// is then a slice of it (one validation per batch instead of one per field).
    text: Option<&'a str>,
    start: usize,
    ends: &'a [usize],
    /// Physical line where the record starts (header = line 1).
    pub line: u64,
    encoding: Encoding,
}

impl<'a> Record<'a> {
    /// The number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Where field `index` lies in `bytes`.
    fn range(&self, index: usize) -> Option<(usize, usize)> {
        let end = *self.ends.get(index)?;
        let from = match index {
            0 => self.start,
            i => self.ends[i - 1],
        };
        Some((from, end))
    }

    fn raw(&self, index: usize) -> Option<&'a [u8]> {
        let (from, end) = self.range(index)?;
        self.bytes.get(from..end)
    }

    /// The decoded field at `index`; `Ok("")` when the row is too short to have it.
    pub fn field(&self, index: usize) -> Result<Cow<'a, str>, Undecodable> {
        let Some((from, end)) = self.range(index) else {
            return Ok(Cow::Borrowed(""));
        };
        if let Some(text) = self.text {
            let end = if index + 1 == self.len()
                && self.bytes.get(end.wrapping_sub(1)) == Some(&b'\r')
                && end > from
            {
                end - 1
            } else {
                end
            };
            // `get` is `None` unless both ends fall between characters: a field split inside
            // a character is undecodable on its own, whatever the text around it.
            if let Some(field) = text.get(from..end) {
                return Ok(Cow::Borrowed(field));
            }
        }
        let bytes = self.bytes.get(from..end).unwrap_or_default();
        decode(self.encoding, self.strip_cr(index, bytes)).ok_or(Undecodable)
    }

    /// The `\r` of a CRLF line ending is part of the last field (records end at `\n`).
    fn strip_cr<'b>(&self, index: usize, bytes: &'b [u8]) -> &'b [u8] {
        if index + 1 == self.len() {
            bytes.strip_suffix(b"\r").unwrap_or(bytes)
        } else {
            bytes
        }
    }

    /// The whole row, decoded with replacement characters where bytes are undecodable: for
    /// reject files, which must show the row even when it is broken.
    pub fn lossy_fields(&self) -> Vec<String> {
        (0..self.len())
            .filter_map(|i| self.raw(i).map(|b| self.strip_cr(i, b)))
            .map(|b| match self.encoding {
                Encoding::Utf8 => String::from_utf8_lossy(b).into_owned(),
                Encoding::Gbk => encoding_rs::GBK
                    .decode_without_bom_handling(b)
                    .0
                    .into_owned(),
            })
            .collect()
    }
}

/// Records read on one thread for another to parse: their fields as stored, laid end to end
/// in one buffer, so a batch allocates nothing once its buffers have grown and an emptied
/// one is sent back to be refilled.
#[derive(Default)]
pub(crate) struct RawBatch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    /// Per record: its line, where its bytes start, and its first field in `ends`.
    rows: Vec<(u64, usize, usize)>,
}

impl RawBatch {
    fn push(&mut self, record: &Fields, line: u64) {
        let start = self.bytes.len();
        self.rows.push((line, start, self.ends.len()));
        self.bytes.extend_from_slice(record.as_slice());
        self.ends
            .extend(record.ends().iter().map(|end| start + end));
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Bytes of field text held.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.rows.clear();
    }

    /// The batch's bytes as text, if the drop is UTF-8 and they are valid as a whole:
    /// validated once, for [`RawBatch::record`].
    pub fn text(&self, encoding: Encoding) -> Option<&str> {
        match encoding {
            Encoding::Utf8 => simdutf8::basic::from_utf8(&self.bytes).ok(),
            Encoding::Gbk => None,
        }
    }

    /// The `i`th record, its fields in `encoding`; `text` is [`RawBatch::text`]'s (or `None`).
    pub fn record<'a>(&'a self, i: usize, encoding: Encoding, text: Option<&'a str>) -> Record<'a> {
        let (line, start, first) = self.rows[i];
        let last = self.rows.get(i + 1).map_or(self.ends.len(), |r| r.2);
        Record {
            bytes: &self.bytes,
            text,
            start,
            ends: &self.ends[first..last],
            line,
            encoding,
        }
    }
}

/// A field's bytes are not valid in the drop's encoding.
#[derive(Debug)]
pub(crate) struct Undecodable;

fn decode(encoding: Encoding, bytes: &[u8]) -> Option<Cow<'_, str>> {
    match encoding {
        // simdutf8 validates Chinese text several times faster than `std::str::from_utf8`,
        // which was a tenth of the loader's reading thread.
        Encoding::Utf8 => simdutf8::basic::from_utf8(bytes).ok().map(Cow::Borrowed),
        Encoding::Gbk => {
            if bytes.is_ascii() {
                // ASCII is the same in GBK; skip the decoder (and its allocation).
                simdutf8::basic::from_utf8(bytes).ok().map(Cow::Borrowed)
            } else {
                encoding_rs::GBK.decode_without_bom_handling_and_without_replacement(bytes)
            }
        }
    }
}

/// Maps header names to column indexes for a fixed list of required columns.
pub(crate) fn column_indexes(
    file: &str,
    header: &[String],
    required: &[&str],
) -> Result<Vec<usize>, LoadError> {
    let mut out = Vec::with_capacity(required.len());
    for &name in required {
        let mut found = header
            .iter()
            .enumerate()
            .filter(|(_, h)| h.as_str() == name);
        let Some((index, _)) = found.next() else {
            return Err(LoadError::Header {
                file: file.to_owned(),
                field: name.to_owned(),
                message: "required column is missing".into(),
            });
        };
        if let Some((again, _)) = found.next() {
            return Err(LoadError::Header {
                file: file.to_owned(),
                field: name.to_owned(),
                message: format!(
                    "column appears twice (columns {} and {})",
                    index + 1,
                    again + 1
                ),
            });
        }
        out.push(index);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gbk_multibyte_characters_never_contain_csv_delimiters() {
        // Every character of the BMP that GB 18030 encodes: no byte of its encoding may be a
        // comma, a quote or a line break, or splitting before decoding would be wrong.
        let mut checked = 0;
        for c in (0x80u32..0x1_0000).filter_map(char::from_u32) {
            let mut buf = [0u8; 4];
            let (bytes, _, unmappable) = encoding_rs::GB18030.encode(c.encode_utf8(&mut buf));
            if unmappable {
                continue;
            }
            assert!(bytes[0] >= 0x80, "{c:?} encodes to an ASCII byte");
            for &x in bytes.iter() {
                assert!(!matches!(x, b',' | b'"' | b'\n' | b'\r'), "{c:?}: {x:#x}");
            }
            checked += 1;
        }
        assert!(checked > 60_000);
    }

    #[test]
    fn undecodable_bytes_are_reported_per_field() {
        assert!(decode(Encoding::Utf8, b"\xff").is_none());
        assert_eq!(decode(Encoding::Utf8, "有效".as_bytes()).unwrap(), "有效");
        let (gbk, _, _) = encoding_rs::GBK.encode("有效");
        assert_eq!(decode(Encoding::Gbk, &gbk).unwrap(), "有效");
        // A lead byte with no trail byte.
        assert!(decode(Encoding::Gbk, b"\xd3").is_none());
    }

    #[test]
    fn a_batch_validated_whole_still_refuses_a_field_split_inside_a_character() {
        // `汉` is E6 B1 89: split across two fields, the batch's bytes are valid UTF-8 as a
        // whole (the comma between the fields is not stored) but neither field is.
        let mut batch = RawBatch::default();
        batch.push(&Fields::of(&[&b"a\xE6"[..], b"\xB1\x89b"]), 2);
        batch.push(&Fields::of(&["有效".as_bytes(), "汉\r".as_bytes()]), 3);
        let text = batch.text(Encoding::Utf8);
        assert!(text.is_some(), "valid as a whole");
        for t in [text, None] {
            let split = batch.record(0, Encoding::Utf8, t);
            assert!(split.field(0).is_err() && split.field(1).is_err());
            let good = batch.record(1, Encoding::Utf8, t);
            assert_eq!((good.line, good.len()), (3, 2));
            assert_eq!(good.field(0).unwrap(), "有效");
            // The last field's `\r` (a CRLF line ending) is dropped either way.
            assert_eq!(good.field(1).unwrap(), "汉");
            assert_eq!(good.field(2).unwrap(), "");
        }
        assert_eq!(
            batch.record(0, Encoding::Utf8, text).lossy_fields(),
            ["a\u{FFFD}", "\u{FFFD}\u{FFFD}b"]
        );
    }

    #[test]
    fn missing_and_repeated_columns_are_named() {
        let header: Vec<String> = ["a", "b", "a"].iter().map(|s| s.to_string()).collect();
        assert!(matches!(
            column_indexes("f.csv", &header, &["b", "c"]),
            Err(LoadError::Header { field, .. }) if field == "c"
        ));
        assert!(matches!(
            column_indexes("f.csv", &header, &["a"]),
            Err(LoadError::Header { field, .. }) if field == "a"
        ));
        assert_eq!(column_indexes("f.csv", &header, &["b"]).unwrap(), vec![1]);
    }
}
