//! Feed drops in the exact format of `spec/feed.md` (`ccc-feed/1`), written as a stream.
//!
//! Rows go straight from the record iterator through the `csv` writer (so quoting is the
//! crate's) and an optional GBK transcoder into the loader's one drop writer
//! ([`cccgate_loader::DropWriter::stream_file`]: optional gzip, SHA-256 counter, the file):
//! nothing holds a whole file in memory, and the manifest's checksums and row counts come from
//! the bytes as written. The feed's vocabulary (drop kinds, encodings, file kinds, column
//! lists, the manifest) is the loader's, so the generator and the reader cannot drift apart.
//!
//! With [`DropOptions::varied`] on (the default) the writer exercises everything the contract
//! allows, deterministically from [`DropOptions::seed`]: the three date shapes (with and
//! without leading zeros), statuses as words or codes, every model separator including line
//! breaks inside quoted fields, some full-width numbers and models, CRLF or LF line ends. Column
//! order shuffling and an extra ignored column are separate switches.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cccgate_core::{Catalogue, CertificateRecord, Day};
pub use cccgate_loader::{
    CATALOGUE_COLUMNS, CERTIFICATE_COLUMNS, DropHeader, DropKind, Encoding, FileKind,
    WrittenFile as FileSummary,
};
use cccgate_loader::{DropWriter, FileStream};

use crate::error::SynthError;
use crate::names::push_full_width;
use crate::rng::{Rng, derive, mix64};

/// The extra column some drops carry; the loader must ignore it.
pub const EXTRA_COLUMN: &str = "备注";

/// How to write a drop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropOptions {
    /// What the manifest says: source, kind, sequence (and base), `generated_at` (RFC 3339
    /// with `+08:00`), the encoding of every CSV file.
    pub header: DropHeader,
    /// UTF-8 files start with a byte-order mark.
    pub bom: bool,
    /// Gzip the certificate files (names end in `.gz`).
    pub gzip: bool,
    /// Number of certificate files (at least 1); rows go round-robin.
    pub files: usize,
    /// Shuffle the column order of each certificate file (and of the catalogue).
    pub shuffle_columns: bool,
    /// Add an ignored extra column.
    pub extra_column: bool,
    /// Vary date shapes, status words/codes, model separators, full-width text, line ends.
    pub varied: bool,
    /// Seed of every variation.
    pub seed: u64,
}

impl DropOptions {
    /// A full drop with this sequence: UTF-8, one plain file, varied text, columns in order.
    pub fn full(sequence: u64) -> Self {
        DropOptions {
            header: DropHeader {
                generated_at: generated_at(crate::register::default_as_of(), 2),
                ..DropHeader::full(sequence)
            },
            bom: false,
            gzip: false,
            files: 1,
            shuffle_columns: false,
            extra_column: false,
            varied: true,
            seed: sequence,
        }
    }

    /// A delta drop with this sequence on top of `base_sequence`.
    pub fn delta(sequence: u64, base_sequence: u64) -> Self {
        let full = DropOptions::full(sequence);
        DropOptions {
            header: DropHeader {
                kind: DropKind::Delta,
                base_sequence: Some(base_sequence),
                ..full.header.clone()
            },
            ..full
        }
    }
}

impl Default for DropOptions {
    fn default() -> Self {
        DropOptions::full(1)
    }
}

/// `generated_at` for `hour`:00 China time on `day`, e.g. `2026-11-27T02:00:00+08:00`.
pub fn generated_at(day: Day, hour: u32) -> String {
    format!("{day}T{:02}:00:00+08:00", hour.min(23))
}

/// What [`write_drop`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropSummary {
    /// The drop directory.
    pub dir: PathBuf,
    /// Its data files, as listed in the manifest.
    pub files: Vec<FileSummary>,
    /// Certificate rows in all files.
    pub certificates: u64,
    /// Certificate rows per status, indexed by `Status::code() - 1`.
    pub by_status: [u64; 5],
    /// Bytes of all files, the manifest included.
    pub bytes: u64,
}

/// Writes a drop into `dir` (created if needed): `catalogue.csv` when `catalogue` is given
/// (a full drop needs one), the certificate files, then `manifest.json`.
pub fn write_drop<'a>(
    dir: &Path,
    opts: &DropOptions,
    catalogue: Option<&Catalogue>,
    records: impl Iterator<Item = &'a CertificateRecord>,
) -> Result<DropSummary, SynthError> {
    if opts.files == 0 {
        return Err(SynthError::Options(
            "a drop needs at least one certificate file".into(),
        ));
    }
    if opts.header.kind == DropKind::Full && catalogue.is_none() {
        return Err(SynthError::Options("a full drop needs a catalogue".into()));
    }
    let mut drop = DropWriter::create(dir, opts.header.clone()).map_err(|e| io_err(dir, e))?;
    if let Some(c) = catalogue {
        let f = write_catalogue(&drop, opts, c)?;
        drop.add_file(f);
    }
    let ext = if opts.gzip { "csv.gz" } else { "csv" };
    let names: Vec<String> = if opts.files == 1 {
        vec![format!("certificates.{ext}")]
    } else {
        (1..=opts.files)
            .map(|i| format!("certificates-{i:03}.{ext}"))
            .collect()
    };
    let mut writers = names
        .iter()
        .enumerate()
        .map(|(i, name)| CertWriter::create(&drop, name, opts, i as u64))
        .collect::<Result<Vec<_>, _>>()?;
    let mut by_status = [0u64; 5];
    let mut rng = Rng::new(derive(opts.seed, 0xfeed));
    for (i, r) in records.enumerate() {
        by_status[usize::from(r.status.code() - 1)] += 1;
        let n = writers.len();
        writers[i % n].write(r, &mut rng)?;
    }
    for w in writers {
        drop.add_file(w.finish()?);
    }
    let files = drop.files_mut().clone();
    let manifest_len = drop.manifest_json().len() as u64;
    let path = dir.join(cccgate_loader::MANIFEST_FILE);
    drop.finish().map_err(|e| io_err(&path, e))?;
    let certificates = by_status.iter().sum();
    let bytes = files.iter().map(|f| f.bytes).sum::<u64>() + manifest_len;
    Ok(DropSummary {
        dir: dir.to_owned(),
        files,
        certificates,
        by_status,
        bytes,
    })
}

fn io_err(path: &Path, source: io::Error) -> SynthError {
    SynthError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A CSV file being written: the csv writer over the sink, the column order, and reusable
/// buffers for the row's fields (UTF-8 text, then encoded bytes).
struct CsvFile {
    path: PathBuf,
    csv: csv::Writer<FileStream>,
    encoding: Encoding,
    gbk: GbkMemo,
    /// The spec's column names for this kind of file.
    columns: &'static [&'static str],
    /// `order[i]` = index (into `columns`, or `EXTRA`) of the i-th column written.
    order: Vec<usize>,
    text: Vec<String>,
    encoded: Vec<Vec<u8>>,
    rows: u64,
}

/// GBK encoding memoised per character. encoding_rs encodes a hanzi to GBK by searching its
/// tables (it is built for decoding), which made GBK drops five times slower to write than
/// UTF-8 ones; the register's text uses a few hundred distinct characters, so each is
/// encoded once and then looked up.
struct GbkMemo {
    /// Per BMP code point: 0 unknown, `u32::MAX` unencodable, else `len << 16 | bytes`.
    table: Vec<u32>,
    encoder: encoding_rs::Encoder,
}

impl GbkMemo {
    fn new() -> Self {
        GbkMemo {
            table: vec![0; 0x1_0000],
            encoder: encoding_rs::GBK.new_encoder(),
        }
    }

    /// Appends the GBK bytes of `text` to `out`; false if a character has none.
    fn encode(&mut self, text: &str, out: &mut Vec<u8>) -> bool {
        for c in text.chars() {
            if c.is_ascii() {
                out.push(c as u8);
                continue;
            }
            let Some(slot) = self.table.get_mut(c as usize) else {
                return false; // beyond the BMP: nothing there is in GBK
            };
            if *slot == 0 {
                let mut buf = [0u8; 4];
                let mut bytes = Vec::with_capacity(4);
                let (result, _) = self.encoder.encode_from_utf8_to_vec_without_replacement(
                    c.encode_utf8(&mut buf),
                    &mut bytes,
                    true,
                );
                *slot = match (result, bytes.as_slice()) {
                    (encoding_rs::EncoderResult::InputEmpty, [b]) => 1 << 16 | u32::from(*b),
                    (encoding_rs::EncoderResult::InputEmpty, [a, b]) => {
                        2 << 16 | u32::from(*a) << 8 | u32::from(*b)
                    }
                    _ => u32::MAX,
                };
            }
            match *slot {
                u32::MAX => return false,
                v if v >> 16 == 1 => out.push(v as u8),
                v => out.extend_from_slice(&[(v >> 8) as u8, v as u8]),
            }
        }
        true
    }
}

/// Index standing for the extra column in a column order.
const EXTRA: usize = usize::MAX;

impl CsvFile {
    fn create(
        drop: &DropWriter,
        name: &str,
        kind: FileKind,
        columns: &'static [&'static str],
        opts: &DropOptions,
        stream: u64,
    ) -> Result<Self, SynthError> {
        let path = drop.dir().join(name);
        let mut sink = drop.stream_file(name, kind).map_err(|e| io_err(&path, e))?;
        if opts.bom && opts.header.encoding == Encoding::Utf8 {
            sink.write_all(b"\xEF\xBB\xBF")
                .map_err(|e| io_err(&path, e))?;
        }
        let mut rng = Rng::new(derive(opts.seed, 0xc01 + stream));
        let crlf = opts.varied && rng.chance(0.5);
        let csv = csv::WriterBuilder::new()
            .terminator(if crlf {
                csv::Terminator::CRLF
            } else {
                csv::Terminator::Any(b'\n')
            })
            .from_writer(sink);
        let mut order: Vec<usize> = (0..columns.len()).collect();
        if opts.shuffle_columns {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.index(i + 1));
            }
        }
        if opts.extra_column {
            let at = rng.index(order.len() + 1);
            order.insert(at, EXTRA);
        }
        let mut f = CsvFile {
            path,
            csv,
            encoding: opts.header.encoding,
            gbk: GbkMemo::new(),
            columns,
            text: vec![String::new(); order.len()],
            encoded: vec![Vec::new(); order.len()],
            order,
            rows: 0,
        };
        for (slot, &col) in f.order.iter().enumerate() {
            f.text[slot].clear();
            f.text[slot].push_str(if col == EXTRA {
                EXTRA_COLUMN
            } else {
                columns[col]
            });
        }
        f.emit(0)?;
        Ok(f)
    }

    /// The buffer for spec column `col` in this file's order.
    fn field(&mut self, col: usize) -> &mut String {
        let slot = self.order.iter().position(|&c| c == col).unwrap_or(0);
        &mut self.text[slot]
    }

    /// Writes the current `text` buffers as one CSV record (`line` is the data row, 1-based,
    /// 0 for the header, for error messages).
    fn emit(&mut self, line: u64) -> Result<(), SynthError> {
        let res = if self.encoding == Encoding::Gbk {
            for (slot, text) in self.text.iter().enumerate() {
                let out = &mut self.encoded[slot];
                out.clear();
                if text.is_ascii() {
                    out.extend_from_slice(text.as_bytes());
                    continue;
                }
                out.reserve(text.len() * 2);
                let encoded = self.gbk.encode(text, out);
                if !encoded {
                    let column = match self.order.get(slot) {
                        Some(&c) if c != EXTRA => self.columns.get(c).copied().unwrap_or("?"),
                        _ => EXTRA_COLUMN,
                    };
                    return Err(SynthError::Unencodable {
                        path: self.path.clone(),
                        line: line + 1,
                        column,
                        text: text.clone(),
                    });
                }
            }
            self.csv.write_record(&self.encoded)
        } else {
            self.csv.write_record(&self.text)
        };
        res.map_err(|e| SynthError::Csv {
            path: self.path.clone(),
            source: e,
        })
    }

    fn finish(self) -> Result<FileSummary, SynthError> {
        let path = self.path;
        let sink = self
            .csv
            .into_inner()
            .map_err(|e| io_err(&path, e.into_error()))?;
        sink.finish(self.rows).map_err(|e| io_err(&path, e))
    }
}

fn write_catalogue(
    drop: &DropWriter,
    opts: &DropOptions,
    catalogue: &Catalogue,
) -> Result<FileSummary, SynthError> {
    let mut f = CsvFile::create(
        drop,
        "catalogue.csv",
        FileKind::Catalogue,
        &CATALOGUE_COLUMNS,
        opts,
        0xca7,
    )?;
    let mut rng = Rng::new(derive(opts.seed, 0xca7a));
    for e in catalogue.entries() {
        f.text.iter_mut().for_each(String::clear);
        push_code(f.field(0), e.code.get());
        f.field(1).push_str(&e.name);
        push_num2(f.field(2), e.category_code);
        f.field(3).push_str(&e.category_name);
        f.field(4).push_str(e.mode.as_str());
        let style = date_style(&mut rng, opts.varied);
        push_date(f.field(5), e.from, style);
        if let Some(u) = e.until {
            push_date(f.field(6), u, style);
        }
        f.rows += 1;
        let line = f.rows;
        f.emit(line)?;
    }
    f.finish()
}

/// A certificate file being written.
struct CertWriter {
    file: CsvFile,
    varied: bool,
}

impl CertWriter {
    fn create(
        drop: &DropWriter,
        name: &str,
        opts: &DropOptions,
        index: u64,
    ) -> Result<Self, SynthError> {
        Ok(CertWriter {
            file: CsvFile::create(
                drop,
                name,
                FileKind::Certificates,
                &CERTIFICATE_COLUMNS,
                opts,
                index,
            )?,
            varied: opts.varied,
        })
    }

    fn write(&mut self, r: &CertificateRecord, rng: &mut Rng) -> Result<(), SynthError> {
        let varied = self.varied;
        let f = &mut self.file;
        f.text.iter_mut().for_each(String::clear);
        // Per-row variation, fixed by the seed: one draw, its bits spent below.
        let v = if varied { rng.next_u64() } else { 0 };
        let full = varied && v % 50 == 0; // 2% of rows: full-width number and models
        {
            let out = f.field(0);
            let start = out.len();
            push_digits16(out, r.number.get());
            if let Some([a, b]) = r.suffix {
                out.push('(');
                out.push(char::from(a));
                out.push(char::from(b));
                out.push(')');
            }
            if full {
                let plain = out.split_off(start);
                push_full_width(out, &plain);
            }
        }
        let status = f.field(1);
        if varied && (v >> 8) % 10 < 3 {
            push_num2(status, r.status.code());
        } else {
            status.push_str(r.status.as_chinese());
        }
        push_code(f.field(2), r.product_code.get());
        f.field(3).push_str(&r.product_name);
        {
            const SEPARATORS: [&str; 8] = ["；", ";", "、", "，", ",", "\n", "; ", "\r\n"];
            let sep = if varied {
                SEPARATORS[((v >> 16) % SEPARATORS.len() as u64) as usize]
            } else {
                "；"
            };
            let out = f.field(4);
            for (j, m) in r.models.iter().enumerate() {
                if j > 0 {
                    out.push_str(sep);
                }
                if full {
                    push_full_width(out, m);
                } else {
                    out.push_str(m);
                }
            }
        }
        f.field(5).push_str(&r.applicant);
        f.field(6).push_str(&r.producer);
        f.field(7).push_str(&r.factory);
        let style = date_style_bits(v >> 24, varied);
        push_date(f.field(8), r.issued, style);
        let style2 = date_style_bits(v >> 28, varied);
        push_date(f.field(9), r.expires, style2);
        if let Some(d) = r.status_changed {
            push_date(f.field(10), d, style);
        }
        f.field(11).push_str(&r.status_reason);
        f.field(12).push_str(&r.body_name);
        if f.order.contains(&EXTRA) {
            const NOTES: [&str; 4] = ["", "", "换版", "监督抽查批次A"];
            let note = NOTES[(mix64(r.number.get()) % 4) as usize];
            f.field(EXTRA).push_str(note);
        }
        f.rows += 1;
        let line = f.rows;
        f.emit(line)
    }

    fn finish(self) -> Result<FileSummary, SynthError> {
        self.file.finish()
    }
}

/// How a date is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DateStyle {
    Dash,
    Slash,
    Chinese,
}

fn date_style(rng: &mut Rng, varied: bool) -> (DateStyle, bool) {
    date_style_bits(rng.next_u64(), varied)
}

/// A date style and whether to pad month and day to two digits.
fn date_style_bits(bits: u64, varied: bool) -> (DateStyle, bool) {
    if !varied {
        return (DateStyle::Dash, true);
    }
    let style = match bits % 4 {
        0 | 1 => DateStyle::Dash,
        2 => DateStyle::Slash,
        _ => DateStyle::Chinese,
    };
    (style, !(bits >> 2).is_multiple_of(4))
}

fn push_date(out: &mut String, day: Day, (style, pad): (DateStyle, bool)) {
    let (y, m, d) = day.ymd();
    let width = if pad { 2 } else { 1 };
    let (s1, s2, end) = match style {
        DateStyle::Dash => ('-', '-', None),
        DateStyle::Slash => ('/', '/', None),
        DateStyle::Chinese => ('年', '月', Some('日')),
    };
    // `write!` to a String cannot fail.
    let _ = std::fmt::Write::write_fmt(out, format_args!("{y:04}{s1}{m:0width$}{s2}{d:0width$}"));
    if let Some(e) = end {
        out.push(e);
    }
}

fn push_code(out: &mut String, code: u16) {
    let _ = std::fmt::Write::write_fmt(out, format_args!("{code:04}"));
}

fn push_num2(out: &mut String, n: u8) {
    let _ = std::fmt::Write::write_fmt(out, format_args!("{n:02}"));
}

fn push_digits16(out: &mut String, n: u64) {
    let mut buf = [b'0'; 16];
    let mut x = n;
    for d in buf.iter_mut().rev() {
        *d = b'0' + (x % 10) as u8;
        x /= 10;
    }
    buf.iter().for_each(|&d| out.push(char::from(d)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memoised_gbk_matches_encoding_rs_and_refuses_what_gbk_lacks() {
        let mut memo = GbkMemo::new();
        for text in [
            "深圳市鑫达电子（集团）有限公司",
            "ＡＢＣ－１２３；、，",
            "2026年1月5日 €",
            "中中中",
        ] {
            let mut out = Vec::new();
            assert!(memo.encode(text, &mut out), "{text}");
            let (want, _, bad) = encoding_rs::GBK.encode(text);
            assert!(!bad);
            assert_eq!(out, want.as_ref(), "{text}");
        }
        for bad in ["²", "™", "😀"] {
            assert!(!memo.encode(bad, &mut Vec::new()), "{bad}");
        }
    }

    #[test]
    fn unencodable_text_names_the_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let reg = crate::RegisterSpec {
            certs: 20,
            ..crate::RegisterSpec::default()
        }
        .generate();
        let mut records = reg.records.clone();
        records[3].producer = "Widget™ GmbH".into();
        let mut opts = DropOptions {
            varied: false,
            ..DropOptions::full(1)
        };
        opts.header.encoding = Encoding::Gbk;
        let err = write_drop(dir.path(), &opts, Some(&reg.catalogue), records.iter())
            .unwrap_err()
            .to_string();
        assert!(err.contains("certificates.csv"), "{err}");
        assert!(err.contains("line 5"), "{err}");
        assert!(err.contains("生产者名称"), "{err}");
    }
}
