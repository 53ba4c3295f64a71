//! Reading listing events from files: JSON lines or CSV, plain or gzip, a file or stdin.
//!
//! # Records and lines
//!
//! A *record* is one data line: a non-blank line of a JSON-lines file, or a row after the
//! header of a CSV file. Records are what `--skip` counts and what the output has one line
//! each for; blank lines of a JSON-lines file are not records. Every record carries the
//! number of the line it starts on (1-based, the CSV header being line 1), so a record that
//! cannot be read is reported as "line N: why" and skipped, never a reason to stop.
//!
//! # Design
//!
//! The reader lends each record to a closure ([`ListingReader::next_record`]) as six borrowed
//! fields, parsed straight out of its line buffer (JSON strings without escapes are not even
//! copied), so reading a file allocates nothing per record.

use std::borrow::Cow;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::wire::ListingFields;

/// The input columns / JSON keys, in the order of [`ListingFields`].
pub const COLUMNS: [&str; 6] = [
    "listing_id",
    "merchant_id",
    "product_code",
    "certificate_number",
    "model",
    "event_time",
];

/// A field longer than this cannot be sent at all (the spec's limits are far lower and the
/// gateway reports those); such a record is a bad line.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// How the input is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line with the spec's keys.
    Jsonl,
    /// CSV with a header row naming the spec's columns (any order; extra columns ignored).
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "jsonl" | "json" | "ndjson" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            _ => Err(format!("unknown input format {s:?}: expected jsonl or csv")),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Jsonl => "jsonl",
            Format::Csv => "csv",
        })
    }
}

/// The input cannot be read at all (as opposed to one bad record).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file cannot be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading failed (I/O, or a corrupt gzip stream).
    #[error("{name}: line {line}: cannot read: {source}")]
    Read {
        /// The file (or `stdin`).
        name: String,
        /// The line reached.
        line: u64,
        /// Why.
        source: io::Error,
    },
    /// The CSV header lacks a required column or repeats one.
    #[error("{name}: line 1: CSV header: {problem}")]
    Header {
        /// The file.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

/// One record, lent to the caller's closure.
#[derive(Debug)]
pub enum Record<'a> {
    /// A listing event's six fields (empty when absent).
    Listing {
        /// The line it starts on.
        line: u64,
        /// Its fields.
        fields: ListingFields<'a>,
    },
    /// A record that cannot be read as a listing event.
    Bad {
        /// The line it starts on.
        line: u64,
        /// Its `listing_id`, when that much could be read.
        listing_id: Option<String>,
        /// Why it is bad.
        error: String,
    },
}

/// Counts bytes read from the underlying file, for progress and ETA.
#[derive(Debug)]
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

type Source = BufReader<Box<dyn Read + Send>>;

/// Reads records from a file or stdin.
pub struct ListingReader {
    name: String,
    inner: Inner,
    bytes_read: Arc<AtomicU64>,
    total_bytes: Option<u64>,
    format: Format,
}

impl fmt::Debug for ListingReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListingReader")
            .field("name", &self.name)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

enum Inner {
    Jsonl {
        src: Source,
        buf: Vec<u8>,
        line: u64,
    },
    Csv {
        rdr: Box<csv::Reader<Source>>,
        columns: [Option<usize>; 6],
        width: usize,
        record: csv::ByteRecord,
    },
}

impl ListingReader {
    /// Opens `path` (`-` for stdin). The format is `format` if given, else guessed from the
    /// file name (`.jsonl`, `.ndjson`, `.json`, `.csv`, each optionally `.gz`), else from
    /// the first character (`{`: JSON lines). Gzip is recognised by its magic bytes.
    pub fn open(path: &Path, format: Option<Format>) -> Result<ListingReader, InputError> {
        let bytes_read = Arc::new(AtomicU64::new(0));
        let (name, raw, total): (String, Box<dyn Read + Send>, Option<u64>) =
            if path.as_os_str() == "-" {
                let counting = Counting {
                    inner: io::stdin(),
                    count: bytes_read.clone(),
                };
                ("stdin".to_owned(), Box::new(counting), None)
            } else {
                let open_err = |source| InputError::Open {
                    path: path.to_path_buf(),
                    source,
                };
                let file = File::open(path).map_err(open_err)?;
                let meta = file.metadata().map_err(open_err)?;
                let total = meta.is_file().then_some(meta.len());
                let counting = Counting {
                    inner: file,
                    count: bytes_read.clone(),
                };
                (path.display().to_string(), Box::new(counting), total)
            };
        let format = format.or_else(|| format_from_name(path));
        Self::from_reader(name, raw, format, bytes_read, total)
    }

    /// Reads from any byte source (tests, pipes). `name` appears in errors.
    pub fn from_read(
        name: &str,
        read: Box<dyn Read + Send>,
        format: Option<Format>,
    ) -> Result<ListingReader, InputError> {
        let count = Arc::new(AtomicU64::new(0));
        let read = Box::new(Counting {
            inner: read,
            count: count.clone(),
        });
        Self::from_reader(name.to_owned(), read, format, count, None)
    }

    fn from_reader(
        name: String,
        raw: Box<dyn Read + Send>,
        format: Option<Format>,
        bytes_read: Arc<AtomicU64>,
        total_bytes: Option<u64>,
    ) -> Result<ListingReader, InputError> {
        let read_err = |source| InputError::Read {
            name: name.clone(),
            line: 1,
            source,
        };
        let mut raw = BufReader::with_capacity(1 << 16, raw);
        let gz = raw.fill_buf().map_err(read_err)?.starts_with(&[0x1f, 0x8b]);
        let decoded: Box<dyn Read + Send> = if gz {
            Box::new(flate2::bufread::MultiGzDecoder::new(raw))
        } else {
            Box::new(raw)
        };
        let mut src = BufReader::with_capacity(1 << 16, decoded);
        // A UTF-8 byte order mark is not part of the first line.
        if src
            .fill_buf()
            .map_err(read_err)?
            .starts_with(b"\xef\xbb\xbf")
        {
            src.consume(3);
        }
        let format = match format {
            Some(f) => f,
            None => {
                let head = src.fill_buf().map_err(read_err)?;
                match head.iter().find(|b| !b.is_ascii_whitespace()) {
                    Some(b'{') => Format::Jsonl,
                    _ => Format::Csv,
                }
            }
        };
        let inner = match format {
            Format::Jsonl => Inner::Jsonl {
                src,
                buf: Vec::with_capacity(1024),
                line: 0,
            },
            Format::Csv => csv_inner(&name, src)?,
        };
        Ok(ListingReader {
            name,
            inner,
            bytes_read,
            total_bytes,
            format,
        })
    }

    /// The file's name as errors show it (`stdin` for `-`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The format being read.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Bytes read from the file so far (compressed bytes for a gzip file).
    pub fn bytes_read(&self) -> Arc<AtomicU64> {
        self.bytes_read.clone()
    }

    /// The file's size, when it is a regular file.
    pub fn total_bytes(&self) -> Option<u64> {
        self.total_bytes
    }

    /// Reads the next record and lends it to `f`; `None` at the end of the input.
    pub fn next_record<T>(
        &mut self,
        f: impl FnOnce(Record<'_>) -> T,
    ) -> Result<Option<T>, InputError> {
        match &mut self.inner {
            Inner::Jsonl { src, buf, line } => {
                let Some(at) = next_line(&self.name, src, buf, line)? else {
                    return Ok(None);
                };
                Ok(Some(with_json(at, trim(buf), f)))
            }
            Inner::Csv {
                rdr,
                columns,
                width,
                record,
            } => {
                let more = rdr
                    .read_byte_record(record)
                    .map_err(|e| csv_read_error(&self.name, e))?;
                if !more {
                    return Ok(None);
                }
                let line = record.position().map_or(0, |p| p.line());
                Ok(Some(f(csv_record(line, record, columns, *width))))
            }
        }
    }

    /// Reads past the next record without parsing it; `false` at the end of the input.
    pub fn skip_record(&mut self) -> Result<bool, InputError> {
        match &mut self.inner {
            Inner::Jsonl { src, buf, line } => Ok(next_line(&self.name, src, buf, line)?.is_some()),
            Inner::Csv { rdr, record, .. } => rdr
                .read_byte_record(record)
                .map_err(|e| csv_read_error(&self.name, e)),
        }
    }
}

fn format_from_name(path: &Path) -> Option<Format> {
    let name = path.file_name()?.to_str()?.to_ascii_lowercase();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let ext = name.rsplit_once('.')?.1;
    match ext {
        "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
        "csv" => Some(Format::Csv),
        _ => None,
    }
}

/// Reads the next non-blank line into `buf`; returns its number.
fn next_line(
    name: &str,
    src: &mut Source,
    buf: &mut Vec<u8>,
    line: &mut u64,
) -> Result<Option<u64>, InputError> {
    loop {
        buf.clear();
        let n = src
            .read_until(b'\n', buf)
            .map_err(|source| InputError::Read {
                name: name.to_owned(),
                line: *line + 1,
                source,
            })?;
        if n == 0 {
            return Ok(None);
        }
        *line += 1;
        if !trim(buf).is_empty() {
            return Ok(Some(*line));
        }
    }
}

fn trim(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// A JSON string (or null, read as empty), borrowed from the line when it has no escapes.
#[derive(Debug, Default)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Text<'a>, E> {
                Ok(Text::default())
            }
            fn visit_none<E: de::Error>(self) -> Result<Text<'a>, E> {
                Ok(Text::default())
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The spec's input fields, borrowed from a JSON line; absent keys read as empty, unknown
/// keys are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct EventRef<'a> {
    #[serde(borrow)]
    listing_id: Text<'a>,
    #[serde(borrow)]
    merchant_id: Text<'a>,
    #[serde(borrow)]
    product_code: Text<'a>,
    #[serde(borrow)]
    certificate_number: Text<'a>,
    #[serde(borrow)]
    model: Text<'a>,
    #[serde(borrow)]
    event_time: Text<'a>,
}

/// Parses one JSON line and lends the record to `f`. Strings with escapes were copied into
/// the parsed event, which lives in this frame for the duration of the call.
fn with_json<T>(line: u64, bytes: &[u8], f: impl FnOnce(Record<'_>) -> T) -> T {
    if let Some(fields) = plain_json_fields(bytes) {
        return f(checked(line, fields));
    }
    with_serde_json(line, bytes, f)
}

/// Reads the usual shape of a listing line without serde: one flat JSON object whose values
/// are all strings without escapes, no key twice. Anything else (an escape, a `null`, a
/// number, a nested value, a repeated key, bad UTF-8, trailing bytes) returns `None`, and
/// serde_json reads the line instead, with its exact error messages; so this never accepts a
/// line serde_json would refuse, nor reads one differently (a test holds the two to it).
fn plain_json_fields(b: &[u8]) -> Option<ListingFields<'_>> {
    std::str::from_utf8(b).ok()?;
    let mut out: ListingFields<'_> = [&[]; 6];
    let mut seen = 0u8;
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && matches!(b[*i], b' ' | b'\t' | b'\r' | b'\n') {
            *i += 1;
        }
    };
    // A string without escapes or control characters, starting at the quote at `i`.
    let string = |i: &mut usize| -> Option<&[u8]> {
        if b.get(*i) != Some(&b'"') {
            return None;
        }
        let start = *i + 1;
        let len = find_special(&b[start..])?;
        if b[start + len] != b'"' {
            return None;
        }
        *i = start + len + 1;
        Some(&b[start..start + len])
    };
    skip_ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    skip_ws(&mut i);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            skip_ws(&mut i);
            let key = string(&mut i)?;
            skip_ws(&mut i);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i += 1;
            skip_ws(&mut i);
            let value = string(&mut i)?;
            if let Some(k) = column(key) {
                if seen & (1 << k) != 0 {
                    return None;
                }
                seen |= 1 << k;
                out[k] = value;
            }
            skip_ws(&mut i);
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    skip_ws(&mut i);
    (i == b.len()).then_some(out)
}

/// The index of a spec column name in [`COLUMNS`].
#[inline]
fn column(key: &[u8]) -> Option<usize> {
    match key {
        b"listing_id" => Some(0),
        b"merchant_id" => Some(1),
        b"product_code" => Some(2),
        b"certificate_number" => Some(3),
        b"model" => Some(4),
        b"event_time" => Some(5),
        _ => None,
    }
}

/// The first `"`, `\` or control character (below 0x20) in `s`: eight bytes at a time, since
/// this scan is most of the reading of a JSON line. In each mask only bytes above a true match
/// can be flagged falsely (a borrow runs upwards), so the lowest flag is always a true match.
#[inline]
fn find_special(s: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let mut chunks = s.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_le_bytes(w);
        let quote = v ^ (LO * u64::from(b'"'));
        let backslash = v ^ (LO * u64::from(b'\\'));
        let m = (quote.wrapping_sub(LO) & !quote)
            | (backslash.wrapping_sub(LO) & !backslash)
            | (v.wrapping_sub(LO * 0x20) & !v);
        let m = m & HI;
        if m != 0 {
            return Some(at + (m.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
        .map(|p| at + p)
}

/// Reads one JSON line with serde_json (escapes, nulls, errors) and lends the record to `f`.
fn with_serde_json<T>(line: u64, bytes: &[u8], f: impl FnOnce(Record<'_>) -> T) -> T {
    let e = match serde_json::from_slice::<EventRef<'_>>(bytes) {
        Ok(e) => e,
        Err(err) => {
            return f(Record::Bad {
                line,
                listing_id: json_listing_id(bytes),
                error: json_error(&err),
            });
        }
    };
    let fields: ListingFields<'_> = [
        e.listing_id.0.as_bytes(),
        e.merchant_id.0.as_bytes(),
        e.product_code.0.as_bytes(),
        e.certificate_number.0.as_bytes(),
        e.model.0.as_bytes(),
        e.event_time.0.as_bytes(),
    ];
    f(checked(line, fields))
}

/// The record of six fields, or a bad record if one is too long to send.
fn checked(line: u64, fields: ListingFields<'_>) -> Record<'_> {
    match fields.iter().position(|f| f.len() > MAX_FIELD_BYTES) {
        None => Record::Listing { line, fields },
        Some(i) => Record::Bad {
            line,
            listing_id: Some(lossy_cut(fields[0], 128)),
            error: format!(
                "{} is {} bytes, too long to send (at most {MAX_FIELD_BYTES})",
                COLUMNS[i],
                fields[i].len()
            ),
        },
    }
}

/// At most `max` bytes of `b` as text, for an error message.
fn lossy_cut(b: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(max)]);
    s.into_owned()
}

/// The `listing_id` of a line that is JSON but not a valid listing event, if it has one.
fn json_listing_id(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    match v.get("listing_id")? {
        serde_json::Value::String(s) => Some(lossy_cut(s.as_bytes(), 128)),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// serde_json's message without its "at line 1 column N" (the line is ours to number).
fn json_error(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => &msg,
    };
    match e.classify() {
        serde_json::error::Category::Data => {
            format!("not a listing event: {msg} (column {})", e.column())
        }
        _ => format!("not valid JSON: {msg} (column {})", e.column()),
    }
}

fn csv_inner(name: &str, src: Source) -> Result<Inner, InputError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(src);
    let headers = rdr
        .byte_headers()
        .map_err(|e| csv_read_error(name, e))?
        .clone();
    let header_err = |problem: String| InputError::Header {
        name: name.to_owned(),
        problem,
    };
    let mut columns = [None; 6];
    for (i, h) in headers.iter().enumerate() {
        let h = String::from_utf8_lossy(h).trim().to_ascii_lowercase();
        if let Some(c) = COLUMNS.iter().position(|c| *c == h) {
            if columns[c].is_some() {
                return Err(header_err(format!("column {h} appears twice")));
            }
            columns[c] = Some(i);
        }
    }
    for required in 0..2 {
        if columns[required].is_none() {
            return Err(header_err(format!(
                "no column {} (the header must name the spec's columns: {})",
                COLUMNS[required],
                COLUMNS.join(",")
            )));
        }
    }
    Ok(Inner::Csv {
        rdr: Box::new(rdr),
        columns,
        width: headers.len(),
        record: csv::ByteRecord::new(),
    })
}

fn csv_read_error(name: &str, e: csv::Error) -> InputError {
    let line = e.position().map_or(0, |p| p.line());
    let source = match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::new(io::ErrorKind::InvalidData, format!("{other:?}")),
    };
    InputError::Read {
        name: name.to_owned(),
        line,
        source,
    }
}

fn csv_record<'a>(
    line: u64,
    record: &'a csv::ByteRecord,
    columns: &[Option<usize>; 6],
    width: usize,
) -> Record<'a> {
    let listing_id = || {
        columns[0]
            .and_then(|i| record.get(i))
            .map(|b| lossy_cut(b, 128))
    };
    if record.len() != width {
        return Record::Bad {
            line,
            listing_id: listing_id(),
            error: format!("row has {} fields, the header has {width}", record.len()),
        };
    }
    let mut fields: ListingFields<'a> = [&[]; 6];
    for (c, col) in columns.iter().enumerate() {
        if let Some(i) = *col {
            let b = record.get(i).unwrap_or_default();
            if std::str::from_utf8(b).is_err() {
                return Record::Bad {
                    line,
                    listing_id: listing_id(),
                    error: format!("column {} is not valid UTF-8", COLUMNS[c]),
                };
            }
            fields[c] = b;
        }
    }
    checked(line, fields)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// Reads everything as (line, fields as strings) or (line, "BAD: error", id).
    fn read_all(text: &[u8], format: Option<Format>) -> Vec<(u64, Vec<String>)> {
        let mut r =
            ListingReader::from_read("test", Box::new(io::Cursor::new(text.to_vec())), format)
                .unwrap();
        let mut out = Vec::new();
        while let Some(rec) = r
            .next_record(|rec| match rec {
                Record::Listing { line, fields } => (
                    line,
                    fields
                        .iter()
                        .map(|f| String::from_utf8(f.to_vec()).unwrap())
                        .collect(),
                ),
                Record::Bad {
                    line,
                    listing_id,
                    error,
                } => (
                    line,
                    vec![format!("BAD: {error}"), listing_id.unwrap_or_default()],
                ),
            })
            .unwrap()
        {
            out.push(rec);
        }
        out
    }

    #[test]
    fn json_lines_are_records_with_their_line_numbers_and_blank_lines_are_not() {
        let text = "\u{feff}{\"listing_id\":\"L1\",\"merchant_id\":\"M1\",\"product_code\":\"0901\",\"certificate_number\":\"CCC 2021\",\"model\":\"X\",\"event_time\":\"2026-11-27T10:00:00+08:00\",\"extra\":[1,2]}\n\
            \n   \n\
            {\"listing_id\":\"L\\u00e92\\n\",\"merchant_id\":\"M2\",\"model\":null}\r\n\
            {\"listing_id\":\"L3\",\"merchant_id\":\"M3\"}";
        let recs = read_all(text.as_bytes(), None);
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[0].0, 1);
        assert_eq!(
            recs[0].1,
            [
                "L1",
                "M1",
                "0901",
                "CCC 2021",
                "X",
                "2026-11-27T10:00:00+08:00"
            ]
        );
        assert_eq!(recs[1].0, 4);
        assert_eq!(recs[1].1[0], "Lé2\n");
        assert_eq!(recs[1].1[4], "");
        assert_eq!(recs[2].0, 5);
        assert_eq!(recs[2].1[..2], ["L3", "M3"]);
    }

    #[test]
    fn unreadable_json_lines_are_bad_records_naming_why() {
        let text = b"{\"listing_id\":\"L1\",\"merchant_id\":\"M1\"}\n\
            {not json\n\
            [1,2]\n\
            {\"listing_id\":\"L4\",\"merchant_id\":17}\n\
            {\"listing_id\":\"L5\",\"merchant_id\":\"M\xff\"}\n\
            {\"listing_id\":\"L6\",\"merchant_id\":\"M6\"}\n";
        let recs = read_all(text, Some(Format::Jsonl));
        assert_eq!(recs.len(), 6);
        assert!(
            recs[1].1[0].starts_with("BAD: not valid JSON"),
            "{:?}",
            recs[1]
        );
        assert_eq!(recs[1].0, 2);
        assert!(
            recs[2].1[0].starts_with("BAD: not a listing event"),
            "{:?}",
            recs[2]
        );
        assert!(recs[3].1[0].contains("column"), "{:?}", recs[3]);
        assert_eq!(recs[3].1[1], "L4", "the id of a readable object is kept");
        assert!(recs[4].1[0].starts_with("BAD:"), "{:?}", recs[4]);
        assert_eq!(recs[5].1[0], "L6");
    }

    /// A record as comparable text.
    fn show(r: Record<'_>) -> String {
        match r {
            Record::Listing { line, fields } => format!(
                "{line} ok {:?}",
                fields.map(|f| String::from_utf8_lossy(f).into_owned())
            ),
            Record::Bad {
                line,
                listing_id,
                error,
            } => format!("{line} bad {listing_id:?} {error}"),
        }
    }

    #[test]
    fn the_plain_json_path_reads_every_line_as_serde_json_does() {
        let mut lines: Vec<String> = vec![
            r#"{"listing_id":"L1","merchant_id":"M1"}"#.into(),
            r#"  { "listing_id" : "L1" , "merchant_id":"M1", "extra": "x" }  "#.into(),
            r#"{}"#.into(),
            r#"{ }"#.into(),
            r#"{"model":"证书 Ａ１"}"#.into(),
            r#"{"listing_id":"L\"1","merchant_id":"M1"}"#.into(),
            r#"{"listing_id":"L\u00e9","merchant_id":"M1"}"#.into(),
            r#"{"listing_id":null,"merchant_id":"M1"}"#.into(),
            r#"{"listing_id":17,"merchant_id":"M1"}"#.into(),
            r#"{"listing_id":"L1","merchant_id":"M1","x":{"a":"b"}}"#.into(),
            r#"{"listing_id":"L1","merchant_id":"M1","x":[1]}"#.into(),
            r#"{"listing_id":"L1","listing_id":"L2"}"#.into(),
            r#"{"x":"1","x":"2","merchant_id":"M"}"#.into(),
            r#"{"listing_id":"L1"} trailing"#.into(),
            r#"{"listing_id":"L1",}"#.into(),
            r#"{"listing_id":"L1""#.into(),
            r#"{"listing_id" "L1"}"#.into(),
            r#"["listing_id","L1"]"#.into(),
            "{\"listing_id\":\"L\t1\"}".into(),
            r#"{"list\u0069ng_id":"L1"}"#.into(),
            r#""just a string""#.into(),
            r#"{"listing_id":"L1"}{"listing_id":"L2"}"#.into(),
        ];
        let register = cccgate_synth::RegisterSpec {
            certs: 500,
            seed: 2,
            ..cccgate_synth::RegisterSpec::default()
        }
        .generate();
        for g in cccgate_synth::ListingGenerator::new(&register, cccgate_synth::Profile::Y2025, 6)
            .take(3_000)
        {
            lines.push(serde_json::to_string(&g.event).unwrap());
        }
        let mut plain = 0;
        for l in &lines {
            let b = l.trim().as_bytes();
            plain += usize::from(plain_json_fields(b).is_some());
            let fast = with_json(7, b, show);
            let slow = with_serde_json(7, b, show);
            assert_eq!(fast, slow, "{l}");
        }
        assert!(
            plain > 3_000,
            "generated lines take the plain path: {plain}"
        );
        assert!(plain_json_fields(b"{\"listing_id\":\"L\xff\"}").is_none());
    }

    #[test]
    fn the_word_scan_finds_the_first_special_byte_as_a_byte_scan_does() {
        let slow = |s: &[u8]| s.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20);
        let alphabet: &[u8] = b"ab\"\\\x00\x1f\x20\x7f\x80\xff\xe8\xaf\x81!";
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..40 {
            for _ in 0..500 {
                let s: Vec<u8> = (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        // Mostly plain letters, so matches fall at every position.
                        if x.is_multiple_of(5) {
                            alphabet[(x >> 8) as usize % alphabet.len()]
                        } else {
                            b'a' + (x % 26) as u8
                        }
                    })
                    .collect();
                assert_eq!(find_special(&s), slow(&s), "{s:?}");
            }
        }
    }

    #[test]
    fn csv_columns_are_found_by_name_in_any_order() {
        let text = "\u{feff}merchant_id,extra,listing_id,model,certificate_number\n\
            M1,x,L1,\"A,B\",CCC 2021\n\
            M2,y,L2,\"two\nlines\",\n\
            M3,z\n\
            M4,w,L4,,\n";
        let recs = read_all(text.as_bytes(), Some(Format::Csv));
        assert_eq!(recs.len(), 4);
        assert_eq!(
            recs[0],
            (
                2,
                vec![
                    "L1".into(),
                    "M1".into(),
                    "".into(),
                    "CCC 2021".into(),
                    "A,B".into(),
                    "".into()
                ]
            )
        );
        assert_eq!(recs[1].0, 3);
        assert_eq!(recs[1].1[4], "two\nlines");
        assert_eq!(recs[2].0, 5);
        assert!(
            recs[2].1[0].contains("row has 2 fields, the header has 5"),
            "{:?}",
            recs[2]
        );
        assert_eq!(recs[3].0, 6);
        assert_eq!(recs[3].1[0], "L4");
    }

    #[test]
    fn csv_without_required_columns_is_refused_naming_the_file() {
        let err = ListingReader::from_read(
            "in.csv",
            Box::new(io::Cursor::new(b"listing_id,model\nL1,X\n".to_vec())),
            Some(Format::Csv),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("in.csv: line 1: CSV header: no column merchant_id"),
            "{msg}"
        );
    }

    #[test]
    fn csv_field_that_is_not_utf8_is_a_bad_record() {
        let recs = read_all(
            b"listing_id,merchant_id\nL1,M\xff\nL2,M2\n",
            Some(Format::Csv),
        );
        assert!(
            recs[0].1[0].contains("merchant_id is not valid UTF-8"),
            "{:?}",
            recs[0]
        );
        assert_eq!(recs[1].1[0], "L2");
    }

    #[test]
    fn gzip_is_recognised_by_its_magic_and_the_format_by_its_first_byte() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"{\"listing_id\":\"L1\",\"merchant_id\":\"M1\"}\n")
            .unwrap();
        let bytes = gz.finish().unwrap();
        let recs = read_all(&bytes, None);
        assert_eq!(recs[0].1[..2], ["L1", "M1"]);
        let recs = read_all(b"listing_id,merchant_id\nL9,M9\n", None);
        assert_eq!(recs[0].1[..2], ["L9", "M9"]);
    }

    #[test]
    fn skipping_counts_records_not_lines() {
        let text = b"{\"listing_id\":\"L1\",\"merchant_id\":\"M\"}\n\n{bad\n{\"listing_id\":\"L3\",\"merchant_id\":\"M\"}\n";
        let mut r =
            ListingReader::from_read("t", Box::new(io::Cursor::new(text.to_vec())), None).unwrap();
        assert!(r.skip_record().unwrap());
        assert!(r.skip_record().unwrap());
        let line = r
            .next_record(|rec| match rec {
                Record::Listing { line, .. } | Record::Bad { line, .. } => line,
            })
            .unwrap();
        assert_eq!(line, Some(4));
        assert!(!r.skip_record().unwrap());
    }

    #[test]
    fn oversized_field_is_a_bad_record() {
        let big = "x".repeat(MAX_FIELD_BYTES + 1);
        let line = format!("{{\"listing_id\":\"L1\",\"merchant_id\":\"M\",\"model\":\"{big}\"}}\n");
        let recs = read_all(line.as_bytes(), None);
        assert!(recs[0].1[0].contains("model is"), "{}", &recs[0].1[0][..60]);
        assert_eq!(recs[0].1[1], "L1");
    }

    #[test]
    fn format_follows_the_file_name() {
        assert_eq!(
            format_from_name(Path::new("a/b.jsonl.gz")),
            Some(Format::Jsonl)
        );
        assert_eq!(format_from_name(Path::new("b.CSV")), Some(Format::Csv));
        assert_eq!(format_from_name(Path::new("b.txt")), None);
        assert_eq!(format_from_name(Path::new("-")), None);
        assert_eq!("ndjson".parse::<Format>(), Ok(Format::Jsonl));
    }

    #[test]
    fn a_missing_file_names_itself() {
        let err = ListingReader::open(Path::new("/nonexistent/x.jsonl"), None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.jsonl"), "{err}");
    }
}
