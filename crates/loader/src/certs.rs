//! Certificate files: rows to certificates ([`CertificateRef`]s borrowing the row), validated, with duplicates resolved.
//!
//! Rows stream through in batches, parsed on several threads and put back in file order
//! (`pipeline.rs`) before duplicate detection and the snapshot builder; what is kept
//! per certificate for the rest of the drop is only its number, where it was seen and a
//! 128-bit hash of its parsed contents, so a second row with the same number can be told
//! identical (collapsed) or conflicting (the drop is refused, naming both lines). Identity is
//! of the parsed record, not of the raw text: `2026-11-27` and `2026/11/27` are the same date.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use cccgate_core::{
    Catalogue, CertNumber, CertificateRecord, CertificateRef, Day, Models, ProductCode, Status,
    split_models,
};

use crate::error::{DuplicateConflict, MAX_LISTED, RowError};
use crate::fields::{UNDECODABLE, parse_date, parse_with_nfkc};
use cccgate_snapshot::SnapshotBuilder;

use crate::batch::Batch;
use crate::read::{CsvFile, RawBatch, Record};
use crate::{Encoding, FileDigest, LoadError};

const NUMBER: &str = "证书编号";
const STATUS: &str = "证书状态";
const CODE: &str = "产品类别代码";
const PRODUCT: &str = "产品名称";
const MODELS: &str = "型号规格";
const APPLICANT: &str = "认证委托人名称";
const PRODUCER: &str = "生产者名称";
const FACTORY: &str = "生产企业名称";
const ISSUED: &str = "发证日期";
const EXPIRES: &str = "证书到期日期";
const CHANGED: &str = "状态变更日期";
const REASON: &str = "状态变更原因";
const BODY: &str = "认证机构";

/// The columns of a certificate file, all required in the header, in contract order.
pub const CERTIFICATE_COLUMNS: [&str; 13] = [
    NUMBER, STATUS, CODE, PRODUCT, MODELS, APPLICANT, PRODUCER, FACTORY, ISSUED, EXPIRES, CHANGED,
    REASON, BODY,
];

/// A bad row set aside instead of refusing the drop (`--max-bad-rows`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedRow {
    /// Where and why.
    pub error: RowError,
    /// The row's fields as read (undecodable bytes shown as U+FFFD).
    pub fields: Vec<String>,
}

#[derive(Clone, Copy)]
struct First {
    file: u32,
    line: u64,
    hash: u128,
}

/// Certificate numbers are already well spread; a multiply-shift is all the hashing needed.
#[derive(Default)]
struct NumberHasher(u64);

impl Hasher for NumberHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// What reading the certificate files found, beyond the records themselves.
#[derive(Debug, Default)]
pub(crate) struct CertTally {
    pub rows: u64,
    pub unique: u64,
    pub valid: u64,
    pub duplicates_collapsed: u64,
    pub number_code_mismatches: u64,
    pub rejected: Vec<RejectedRow>,
}

/// How a certificate file's rows are laid out and where they come from: what a parsing
/// thread needs besides the rows.
#[derive(Clone)]
pub(crate) struct Layout {
    /// The file's name, for row errors.
    pub name: Arc<str>,
    /// Its index, in the order files were read.
    pub file: u32,
    /// Where each of [`CERTIFICATE_COLUMNS`] is.
    pub cols: [usize; 13],
    /// Fields in the header.
    pub width: usize,
    pub encoding: Encoding,
}

/// Reads certificate files one after the other on the calling thread: splits them into
/// records (bounds and row counts applied as they are read) and hands the records on in
/// batches, unparsed, with the file's [`Layout`]; parsing and validating is [`parse_rows`]'s,
/// on other threads.
pub(crate) struct CertReader {
    files: Vec<String>,
    rows: u64,
}

impl CertReader {
    pub fn new() -> Self {
        CertReader {
            files: Vec::new(),
            rows: 0,
        }
    }

    /// Reads one file, handing each full batch of records to `send` (and the last one,
    /// whatever its size), taking empty ones from `empty`.
    pub fn read_file(
        &mut self,
        file: CsvFile,
        empty: &mut dyn FnMut() -> RawBatch,
        send: &mut dyn FnMut(RawBatch, &Layout),
    ) -> Result<FileDigest, LoadError> {
        let (mut file, cols, width) = file.header(&CERTIFICATE_COLUMNS)?;
        let cols: [usize; 13] = cols.try_into().map_err(|_| LoadError::Header {
            file: file.name.clone(),
            field: "header".into(),
            message: "internal: column count".into(),
        })?;
        let layout = Layout {
            name: Arc::from(file.name.as_str()),
            file: self.files.len() as u32,
            cols,
            width,
            encoding: file.encoding(),
        };
        self.files.push(file.name.clone());
        let mut batch = empty();
        while file.next_into(&mut batch) {
            self.rows += 1;
            if batch.len() == BATCH_ROWS || batch.bytes() >= BATCH_BYTES {
                send(std::mem::replace(&mut batch, empty()), &layout);
            }
        }
        if batch.len() > 0 {
            send(batch, &layout);
        }
        file.finish()
    }

    /// The outcome once every file is read and the building thread has seen every row:
    /// the refusal of the first class of error found (bad rows beyond the allowance, then
    /// conflicting duplicates), or the tally.
    pub fn finish(self, bad: BadRows, dedup: Dedup) -> Result<CertTally, LoadError> {
        if bad.total > bad.max_bad_rows {
            return Err(LoadError::BadRows {
                rows: bad.listed,
                total: bad.total,
                allowed: bad.max_bad_rows,
            });
        }
        let name = |file: u32| self.files.get(file as usize).cloned().unwrap_or_default();
        if dedup.total_conflicts > 0 {
            return Err(LoadError::Duplicates {
                conflicts: dedup
                    .conflicts
                    .into_iter()
                    .map(|c| DuplicateConflict {
                        number: c.number.to_string(),
                        first: (name(c.first.0), c.first.1),
                        second: (name(c.second.0), c.second.1),
                    })
                    .collect(),
                total: dedup.total_conflicts,
            });
        }
        Ok(CertTally {
            rows: self.rows,
            unique: dedup.unique,
            valid: dedup.valid,
            duplicates_collapsed: dedup.duplicates_collapsed,
            number_code_mismatches: dedup.number_code_mismatches,
            rejected: bad.rejected,
        })
    }
}

/// Rows per batch handed from the reading thread to a parsing thread (small under test, so
/// the tests' drops cross batches and parsing threads).
pub(crate) const BATCH_ROWS: usize = if cfg!(test) { 3 } else { 2048 };
/// Bytes of field text at which a batch is handed on before it has [`BATCH_ROWS`] rows.
const BATCH_BYTES: usize = 1 << 20;

/// A batch of rows parsed: the good ones as certificates, the bad ones as errors naming the
/// row (by index in `raw`), and the rows themselves, for reject files and to be reused.
#[derive(Default)]
pub(crate) struct Parsed {
    pub batch: Batch,
    pub errors: Vec<(usize, RowError)>,
    pub raw: RawBatch,
    pub encoding: Option<Encoding>,
}

/// Parses and validates a batch of rows of the file `layout` describes (a parsing thread's
/// work), into `out`: rows independent of each other, so batches are parsed in parallel
/// and put back in file order by whoever reads `out`.
pub(crate) fn parse_rows(
    raw: RawBatch,
    layout: &Layout,
    catalogue: &Catalogue,
    out: &mut Parsed,
    buf: &mut Vec<u8>,
) {
    out.batch.clear();
    out.errors.clear();
    let text = raw.text(layout.encoding);
    for i in 0..raw.len() {
        let rec = raw.record(i, layout.encoding, text);
        match parse_row(&rec, &layout.cols, layout.width, catalogue) {
            Ok(row) => out.batch.push(&row.as_ref(), layout.file, rec.line, buf),
            Err((field, message)) => out.errors.push((
                i,
                RowError {
                    file: layout.name.to_string(),
                    line: rec.line,
                    field: field.to_owned(),
                    message,
                },
            )),
        }
    }
    out.raw = raw;
    out.encoding = Some(layout.encoding);
}

/// Bad rows in file order: up to [`MAX_LISTED`] listed for a refusal, up to the allowance
/// set aside with their fields.
pub(crate) struct BadRows {
    max_bad_rows: u64,
    listed: Vec<RowError>,
    total: u64,
    rejected: Vec<RejectedRow>,
}

impl BadRows {
    pub fn new(max_bad_rows: u64) -> Self {
        BadRows {
            max_bad_rows,
            listed: Vec::new(),
            total: 0,
            rejected: Vec::new(),
        }
    }

    /// Takes the bad rows of a parsed batch; batches must come in file order.
    pub fn take(&mut self, parsed: &mut Parsed) {
        let encoding = parsed.encoding.unwrap_or(Encoding::Utf8);
        for (i, error) in parsed.errors.drain(..) {
            self.total += 1;
            if self.total <= self.max_bad_rows {
                self.rejected.push(RejectedRow {
                    error: error.clone(),
                    fields: parsed.raw.record(i, encoding, None).lossy_fields(),
                });
            }
            if self.listed.len() < MAX_LISTED {
                self.listed.push(error);
            }
        }
    }
}

/// Two rows of one number with different contents, by file index and line.
struct Conflict {
    number: CertNumber,
    first: (u32, u64),
    second: (u32, u64),
}

/// Duplicate detection across the certificate files of a drop, and the counts of the
/// certificates kept: a second row with the same number is collapsed when its parsed
/// record is identical and a conflict otherwise.
pub(crate) struct Dedup {
    seen: Seen,
    conflicts: Vec<Conflict>,
    total_conflicts: u64,
    unique: u64,
    valid: u64,
    duplicates_collapsed: u64,
    number_code_mismatches: u64,
}

/// Where the first row of each number was seen.
enum Seen {
    /// A full drop: the builder starts empty, so it holds exactly the certificates of the
    /// drop's rows, and its position of a number (found by the same probe of its index that
    /// inserting it makes, so with the cache line already in) indexes this list.
    ByPosition(Vec<First>),
    /// A delta: the builder also holds the base's certificates, so numbers are looked up
    /// in a table of their own.
    ByNumber(HashMap<u64, First, BuildHasherDefault<NumberHasher>>),
}

impl Dedup {
    /// For a full drop when `delta` is false (the builder is then empty).
    pub fn new(expected_rows: u64, delta: bool) -> Self {
        // Manifest row counts are untrusted input: cap the reservation.
        let reserve = expected_rows.min(4_000_000) as usize;
        let seen = if delta {
            let mut seen = HashMap::default();
            seen.reserve(reserve);
            Seen::ByNumber(seen)
        } else {
            Seen::ByPosition(Vec::with_capacity(reserve))
        };
        Dedup {
            seen,
            conflicts: Vec::new(),
            total_conflicts: 0,
            unique: 0,
            valid: 0,
            duplicates_collapsed: 0,
            number_code_mismatches: 0,
        }
    }

    /// Whether `record` (from `line` of the file of index `file`) is the first of its
    /// number, so it goes into the snapshot (the caller then inserts it into `builder`); a
    /// later row of the same number is collapsed or counted as a conflict. `hash` is
    /// [`record_hash`]'s of it.
    pub fn accept(
        &mut self,
        record: &CertificateRef<'_>,
        hash: u128,
        file: u32,
        line: u64,
        builder: &SnapshotBuilder,
    ) -> bool {
        let key = record.number.get();
        let this = First { file, line, hash };
        let first = match &mut self.seen {
            Seen::ByPosition(list) => match builder.position(key) {
                Some(i) => list.get(i).copied(),
                None => {
                    list.push(this);
                    None
                }
            },
            // One probe of the table for both the look-up and the insert: with 1.2M
            // entries, each probe is a cache miss.
            Seen::ByNumber(table) => match table.entry(key) {
                Entry::Occupied(first) => Some(*first.get()),
                Entry::Vacant(v) => {
                    v.insert(this);
                    None
                }
            },
        };
        if let Some(first) = first {
            if first.hash == hash {
                self.duplicates_collapsed += 1;
            } else {
                self.total_conflicts += 1;
                if self.conflicts.len() < MAX_LISTED {
                    self.conflicts.push(Conflict {
                        number: record.number,
                        first: (first.file, first.line),
                        second: (file, line),
                    });
                }
            }
            return false;
        }
        self.unique += 1;
        if record.status == Status::Valid {
            self.valid += 1;
        }
        if record.number.product_code() != record.product_code {
            self.number_code_mismatches += 1;
        }
        true
    }

    /// Whether the drop holds a row for this certificate number (`builder` is the one
    /// [`Dedup::accept`] was given).
    pub fn has(&self, number: u64, builder: &SnapshotBuilder) -> bool {
        match &self.seen {
            Seen::ByPosition(_) => builder.position(number).is_some(),
            Seen::ByNumber(table) => table.contains_key(&number),
        }
    }
}

type FieldError = (&'static str, String);

/// A row's fields, parsed and validated, borrowing the row's text where it can (UTF-8, or
/// ASCII in GBK): nothing is allocated for a row on the common path.
struct Row<'a> {
    number: CertNumber,
    suffix: Option<[u8; 2]>,
    status: Status,
    product_code: ProductCode,
    product_name: Cow<'a, str>,
    models: Cow<'a, str>,
    applicant: Cow<'a, str>,
    producer: Cow<'a, str>,
    factory: Cow<'a, str>,
    issued: Day,
    expires: Day,
    status_changed: Option<Day>,
    status_reason: Cow<'a, str>,
    body_name: Cow<'a, str>,
}

impl Row<'_> {
    fn as_ref(&self) -> CertificateRef<'_> {
        CertificateRef {
            number: self.number,
            suffix: self.suffix,
            status: self.status,
            product_code: self.product_code,
            product_name: &self.product_name,
            models: Models::Field(&self.models),
            applicant: &self.applicant,
            producer: &self.producer,
            factory: &self.factory,
            issued: self.issued,
            expires: self.expires,
            status_changed: self.status_changed,
            status_reason: &self.status_reason,
            body_name: &self.body_name,
        }
    }
}

/// The text trimmed, still borrowed when it was.
fn trimmed(t: Cow<'_, str>) -> Cow<'_, str> {
    match t {
        Cow::Borrowed(b) => Cow::Borrowed(b.trim()),
        Cow::Owned(o) if o.trim().len() == o.len() => Cow::Owned(o),
        Cow::Owned(o) => Cow::Owned(o.trim().to_owned()),
    }
}

fn parse_row<'a>(
    rec: &Record<'a>,
    cols: &[usize; 13],
    width: usize,
    catalogue: &Catalogue,
) -> Result<Row<'a>, FieldError> {
    if rec.len() != width {
        return Err((
            "row",
            format!("{} fields but the header has {width} columns", rec.len()),
        ));
    }
    let get = |i: usize| -> Result<Cow<'a, str>, FieldError> {
        rec.field(cols[i])
            .map_err(|_| (CERTIFICATE_COLUMNS[i], UNDECODABLE.to_owned()))
    };
    let text = |i: usize| -> Result<Cow<'a, str>, FieldError> {
        let t = trimmed(get(i)?);
        if t.is_empty() {
            return Err((CERTIFICATE_COLUMNS[i], "empty".into()));
        }
        Ok(t)
    };

    let number_text = get(0)?;
    let parsed = CertNumber::parse_feed(&number_text).map_err(|e| {
        (
            NUMBER,
            format!("malformed certificate number {:?}: {e}", &*number_text),
        )
    })?;
    let status_text = get(1)?;
    let status = parse_with_nfkc(&status_text, |t| Status::parse(t).ok()).ok_or_else(|| {
        (
            STATUS,
            format!(
                "unknown status {:?}: expected 有效, 暂停, 撤销, 注销, 过期失效 or 01..05",
                &*status_text
            ),
        )
    })?;
    let code_text = get(2)?;
    let product_code =
        parse_with_nfkc(&code_text, |t| ProductCode::parse(t.trim())).ok_or_else(|| {
            (
                CODE,
                format!("{:?} is not a 4-digit product code", &*code_text),
            )
        })?;
    if !catalogue.contains(product_code) {
        return Err((
            CODE,
            format!("product code {product_code} is not in the catalogue"),
        ));
    }
    let product_name = text(3)?;
    let models = get(4)?;
    if split_models(&models).next().is_none() {
        return Err((MODELS, "no model".into()));
    }
    let applicant = text(5)?;
    let producer = text(6)?;
    let factory = text(7)?;
    let issued = parse_date(&get(8)?).map_err(|m| (ISSUED, m))?;
    let expires = parse_date(&get(9)?).map_err(|m| (EXPIRES, m))?;
    let changed_text = get(10)?;
    let status_changed = if changed_text.trim().is_empty() {
        None
    } else {
        Some(parse_date(&changed_text).map_err(|m| (CHANGED, m))?)
    };
    let status_reason = trimmed(get(11)?);
    let body_name = text(12)?;
    Ok(Row {
        number: parsed.number,
        suffix: parsed.suffix,
        status,
        product_code,
        product_name,
        models,
        applicant,
        producer,
        factory,
        issued,
        expires,
        status_changed,
        status_reason,
        body_name,
    })
}

/// A 128-bit hash of every field of a record, in a fixed length-prefixed encoding. The
/// models are given as `cccgate_snapshot::prepare_models` joins them (`models`): each is
/// trimmed, not empty and holds no `；`, so two lists of models join to the same text only
/// if they are the same list.
pub(crate) fn record_hash(r: &CertificateRef<'_>, models: &str, buf: &mut Vec<u8>) -> u128 {
    fn s(buf: &mut Vec<u8>, t: &str) {
        buf.extend_from_slice(&(t.len() as u32).to_le_bytes());
        buf.extend_from_slice(t.as_bytes());
    }
    buf.clear();
    buf.extend_from_slice(&r.number.get().to_le_bytes());
    buf.extend_from_slice(&r.suffix.unwrap_or([0, 0]));
    buf.push(r.status.code());
    buf.extend_from_slice(&r.product_code.get().to_le_bytes());
    s(buf, r.product_name);
    s(buf, models);
    s(buf, r.applicant);
    s(buf, r.producer);
    s(buf, r.factory);
    buf.extend_from_slice(&r.issued.days().to_le_bytes());
    buf.extend_from_slice(&r.expires.days().to_le_bytes());
    buf.extend_from_slice(
        &r.status_changed
            .map_or(i32::MIN, |d| d.days())
            .to_le_bytes(),
    );
    s(buf, r.status_reason);
    s(buf, r.body_name);
    xxhash_rust::xxh3::xxh3_128(buf)
}

/// Writes records as certificate-file text (UTF-8, the columns in contract order, dates as
/// `YYYY-MM-DD`, models joined with `；`).
pub fn certificates_csv<'a>(records: impl IntoIterator<Item = &'a CertificateRecord>) -> String {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = w.write_record(CERTIFICATE_COLUMNS);
    for r in records {
        let number = match r.suffix {
            Some([a, b]) => format!("{}({}{})", r.number, a as char, b as char),
            None => r.number.to_string(),
        };
        let _ = w.write_record([
            number,
            r.status.as_chinese().to_owned(),
            r.product_code.to_string(),
            r.product_name.clone(),
            r.models.join("；"),
            r.applicant.clone(),
            r.producer.clone(),
            r.factory.clone(),
            r.issued.to_string(),
            r.expires.to_string(),
            r.status_changed.map(|d| d.to_string()).unwrap_or_default(),
            r.status_reason.clone(),
            r.body_name.clone(),
        ]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}
