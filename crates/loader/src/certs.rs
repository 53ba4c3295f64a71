//! Certificate files: rows to certificates ([`CertificateRef`]s borrowing the row), validated, with duplicates resolved.
//!
//! Rows stream through one at a time and go straight to the snapshot builder; what is kept
//! per certificate for the rest of the drop is only its number, where it was seen and a
//! 128-bit hash of its parsed contents, so a second row with the same number can be told
//! identical (collapsed) or conflicting (the drop is refused, naming both lines). Identity is
//! of the parsed record, not of the raw text: `2026-11-27` and `2026/11/27` are the same date.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};

use cccgate_core::{
    Catalogue, CertNumber, CertificateRecord, CertificateRef, Day, Models, ProductCode, Status,
    split_models,
};

use crate::error::{DuplicateConflict, MAX_LISTED, RowError};
use crate::fields::{UNDECODABLE, parse_date, parse_with_nfkc};
use crate::read::{CsvFile, Record};
use crate::{FileDigest, LoadError};

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
struct Seen {
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

/// Reads certificate files one after the other: parses and validates each row and hands
/// every good one on, with the file and line it came from; duplicate detection is
/// [`Dedup`]'s, on the thread that builds the snapshot, so the two threads share the work.
pub(crate) struct CertReader<'c> {
    catalogue: &'c Catalogue,
    max_bad_rows: u64,
    files: Vec<String>,
    bad: Vec<RowError>,
    total_bad: u64,
    rows: u64,
    rejected: Vec<RejectedRow>,
}

impl<'c> CertReader<'c> {
    pub fn new(catalogue: &'c Catalogue, max_bad_rows: u64) -> Self {
        CertReader {
            catalogue,
            max_bad_rows,
            files: Vec::new(),
            bad: Vec::new(),
            total_bad: 0,
            rows: 0,
            rejected: Vec::new(),
        }
    }

    /// Reads one file, handing each valid row to `sink` as a certificate (borrowed: the
    /// row's fields are not copied into a record of their own) with its file index (in the
    /// order files were read) and line.
    pub fn read_file(
        &mut self,
        file: CsvFile,
        sink: &mut dyn FnMut(&CertificateRef<'_>, u32, u64),
    ) -> Result<FileDigest, LoadError> {
        let (mut file, cols, width) = file.header(&CERTIFICATE_COLUMNS)?;
        let cols: [usize; 13] = cols.try_into().map_err(|_| LoadError::Header {
            file: file.name.clone(),
            field: "header".into(),
            message: "internal: column count".into(),
        })?;
        let file_index = self.files.len() as u32;
        self.files.push(file.name.clone());
        let name = file.name.clone();
        while let Some(rec) = file.next_record() {
            self.rows += 1;
            match parse_row(&rec, &cols, width, self.catalogue) {
                Ok(row) => sink(&row.as_ref(), file_index, rec.line),
                Err((field, message)) => {
                    self.total_bad += 1;
                    let error = RowError {
                        file: name.clone(),
                        line: rec.line,
                        field: field.to_owned(),
                        message,
                    };
                    if self.total_bad <= self.max_bad_rows {
                        self.rejected.push(RejectedRow {
                            error: error.clone(),
                            fields: rec.lossy_fields(),
                        });
                    }
                    if self.bad.len() < MAX_LISTED {
                        self.bad.push(error);
                    }
                }
            }
        }
        file.finish()
    }

    /// The outcome once every file is read and `dedup` has seen every good row: the refusal
    /// of the first class of error found (bad rows beyond the allowance, then conflicting
    /// duplicates), or the tally.
    pub fn finish(self, dedup: Dedup) -> Result<CertTally, LoadError> {
        if self.total_bad > self.max_bad_rows {
            return Err(LoadError::BadRows {
                rows: self.bad,
                total: self.total_bad,
                allowed: self.max_bad_rows,
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
            rejected: self.rejected,
        })
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
    seen: HashMap<u64, Seen, BuildHasherDefault<NumberHasher>>,
    conflicts: Vec<Conflict>,
    total_conflicts: u64,
    unique: u64,
    valid: u64,
    duplicates_collapsed: u64,
    number_code_mismatches: u64,
    buf: Vec<u8>,
}

impl Dedup {
    pub fn new(expected_rows: u64) -> Self {
        let mut seen = HashMap::default();
        // Manifest row counts are untrusted input: cap the reservation.
        seen.reserve(expected_rows.min(4_000_000) as usize);
        Dedup {
            seen,
            conflicts: Vec::new(),
            total_conflicts: 0,
            unique: 0,
            valid: 0,
            duplicates_collapsed: 0,
            number_code_mismatches: 0,
            buf: Vec::with_capacity(1024),
        }
    }

    /// Whether `record` (from `line` of the file of index `file`) is the first of its
    /// number, so it goes into the snapshot; a later row of the same number is collapsed or
    /// counted as a conflict.
    pub fn accept(&mut self, record: &CertificateRef<'_>, file: u32, line: u64) -> bool {
        let hash = record_hash(record, &mut self.buf);
        let key = record.number.get();
        // One probe of the table for both the look-up and the insert: with 1.2M entries,
        // each probe is a cache miss.
        match self.seen.entry(key) {
            Entry::Occupied(first) => {
                let first = *first.get();
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
            Entry::Vacant(v) => {
                v.insert(Seen { file, line, hash });
            }
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

    /// Whether the drop holds a row for this certificate number.
    pub fn has(&self, number: u64) -> bool {
        self.seen.contains_key(&number)
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
    if rec.raw.len() != width {
        return Err((
            "row",
            format!(
                "{} fields but the header has {width} columns",
                rec.raw.len()
            ),
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

/// A 128-bit hash of every field of a record, in a fixed length-prefixed encoding.
fn record_hash(r: &CertificateRef<'_>, buf: &mut Vec<u8>) -> u128 {
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
    buf.extend_from_slice(&(r.models.iter().count() as u32).to_le_bytes());
    for m in r.models.iter() {
        s(buf, m);
    }
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
