//! Splitting a CSV byte stream into records, as `csv::Reader` did for the loader (no
//! headers, any number of fields, records ending at `\n`, `"` quoting with doubled quotes),
//! faster for the common record.
//!
//! A record whose line holds no `"` is split where it lies, with `memchr`: its fields are
//! the bytes between commas, exactly what `csv-core` makes of such a line. A record with a
//! quote anywhere in its first line goes through `csv-core` itself (quoted fields may hold
//! commas, doubled quotes and line breaks), from the record's first byte, so both paths give
//! the same fields. Blank lines between records are skipped, as `csv-core` skips them; a
//! record's line is the physical line of its first byte.
//!
//! The splitter owns its buffer. It asks its source for more only when the rest of the
//! buffer is the beginning of a record not yet ended, and it tells the source where that
//! record started first (`Source::record_start`), so the source's bound on a record's bytes
//! is applied, as before, before more of an over-long record is read.

use std::io::{self, Read};

use csv_core::{ReadRecordResult, ReaderBuilder, Terminator};

use crate::read::Source;

/// One record's fields laid end to end, as the CSV stores them (quotes removed).
#[derive(Default, Debug)]
pub(crate) struct Fields {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Fields {
    /// The number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// All fields' bytes, end to end.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// Where each field ends in [`Fields::as_slice`].
    pub fn ends(&self) -> &[usize] {
        &self.ends
    }

    /// The fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let field = &self.bytes[start..end];
            start = end;
            field
        })
    }

    /// Fields made of `fields` (tests).
    #[cfg(test)]
    pub fn of(fields: &[&[u8]]) -> Fields {
        let mut f = Fields::default();
        for field in fields {
            f.bytes.extend_from_slice(field);
            f.ends.push(f.bytes.len());
        }
        f
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

/// Splits the bytes of a [`Source`] into records.
pub(crate) struct Splitter {
    source: Source,
    buf: Vec<u8>,
    /// The unread bytes are `buf[lo..hi]`.
    lo: usize,
    hi: usize,
    /// The source has no more bytes.
    eof: bool,
    /// Bytes consumed (skipped blank lines and records, with their `\n`).
    byte: u64,
    /// Physical line of the next unread byte (1-based).
    line: u64,
    core: csv_core::Reader,
    /// csv-core's output for a quoted record, and where its fields end.
    scratch: Vec<u8>,
    scratch_ends: Vec<usize>,
}

impl Splitter {
    /// A splitter over `source`, reading it `capacity` bytes at most at a time.
    pub fn new(source: Source, capacity: usize) -> Self {
        Splitter {
            source,
            buf: vec![0; capacity.max(1)],
            lo: 0,
            hi: 0,
            eof: false,
            byte: 0,
            line: 1,
            core: ReaderBuilder::new()
                .terminator(Terminator::Any(b'\n'))
                .build(),
            scratch: Vec::new(),
            scratch_ends: Vec::new(),
        }
    }

    /// The source.
    pub fn source(&self) -> &Source {
        &self.source
    }

    /// The source, to take what it hit.
    pub fn source_mut(&mut self) -> &mut Source {
        &mut self.source
    }

    /// Physical line of the first byte not yet read (the line after the last record).
    pub fn next_line(&self) -> u64 {
        self.line
    }

    /// Reads the next record into `out` and returns the line it starts on; `Ok(None)` at
    /// the end of the stream. An error is the source's (a bound it applied, or I/O).
    pub fn read_record(&mut self, out: &mut Fields) -> io::Result<Option<u64>> {
        loop {
            // Blank lines before a record are skipped, as csv-core does.
            while self.lo < self.hi && self.buf[self.lo] == b'\n' {
                self.consume(1, 1);
            }
            self.source.record_start = self.byte;
            if self.lo == self.hi {
                if self.eof || !self.refill()? {
                    return Ok(None);
                }
                continue;
            }
            let rest = &self.buf[self.lo..self.hi];
            if let Some(k) = memchr::memchr(b'\n', rest) {
                let line = &rest[..k];
                if memchr::memchr(b'"', line).is_none() {
                    out.clear();
                    let mut start = 0;
                    for comma in memchr::memchr_iter(b',', line) {
                        out.bytes.extend_from_slice(&line[start..comma]);
                        out.ends.push(out.bytes.len());
                        start = comma + 1;
                    }
                    out.bytes.extend_from_slice(&line[start..]);
                    out.ends.push(out.bytes.len());
                    let first = self.line;
                    self.consume(k + 1, 1);
                    return Ok(Some(first));
                }
            } else if memchr::memchr(b'"', rest).is_none() && !self.eof {
                // No quote and no end of line yet: more bytes first.
                self.refill()?;
                continue;
            }
            // A quote in the record: csv-core, from the record's first byte.
            if let Some(first) = self.quoted(out)? {
                return Ok(Some(first));
            }
        }
    }

    /// Parses the record at `buf[lo..]` with csv-core; `Ok(None)` when more bytes were read
    /// and the caller should look again (the record is then parsed again from its start).
    fn quoted(&mut self, out: &mut Fields) -> io::Result<Option<u64>> {
        self.core.reset();
        let (mut nin, mut nout, mut nend) = (0, 0, 0);
        loop {
            // Room for csv-core's output, grown as a record needs it and kept for the next.
            if self.scratch.len() < nout + 64 {
                let grown = (2 * self.scratch.len()).max(nout + 256);
                self.scratch.resize(grown, 0);
            }
            if self.scratch_ends.len() < nend + 8 {
                let grown = (2 * self.scratch_ends.len()).max(nend + 32);
                self.scratch_ends.resize(grown, 0);
            }
            let (result, i, o, e) = self.core.read_record(
                &self.buf[self.lo + nin..self.hi],
                &mut self.scratch[nout..],
                &mut self.scratch_ends[nend..],
            );
            (nin, nout, nend) = (nin + i, nout + o, nend + e);
            match result {
                ReadRecordResult::Record => break,
                ReadRecordResult::OutputFull | ReadRecordResult::OutputEndsFull => {}
                ReadRecordResult::InputEmpty if !self.eof => {
                    self.refill()?;
                    return Ok(None);
                }
                // At the end of the stream, an empty input tells csv-core to end the record
                // (a quote never closed runs to the end of the file).
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::End => {
                    self.lo = self.hi;
                    return Ok(None);
                }
            }
        }
        out.clear();
        out.bytes.extend_from_slice(&self.scratch[..nout]);
        // csv-core counts a record's field ends from where the record started, across calls.
        out.ends.extend_from_slice(&self.scratch_ends[..nend]);
        let breaks = memchr::memchr_iter(b'\n', &self.buf[self.lo..self.lo + nin]).count();
        let first = self.line;
        self.consume(nin, breaks as u64);
        Ok(Some(first))
    }

    fn consume(&mut self, bytes: usize, lines: u64) {
        self.lo += bytes;
        self.byte += bytes as u64;
        self.line += lines;
    }

    /// Moves the unread bytes to the front and reads more after them (the buffer doubles
    /// when a record fills it; the source's record bound stops that growth). `false` at the
    /// end of the stream.
    fn refill(&mut self) -> io::Result<bool> {
        if self.lo > 0 {
            self.buf.copy_within(self.lo..self.hi, 0);
            self.hi -= self.lo;
            self.lo = 0;
        }
        if self.hi == self.buf.len() {
            let grown = self.buf.len() * 2;
            self.buf.resize(grown, 0);
        }
        let n = self.source.read(&mut self.buf[self.hi..])?;
        if n == 0 {
            self.eof = true;
        }
        self.hi += n;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record as csv::Reader (the loader's splitter before this one) reads `text`:
    /// its fields and the line it starts on, blank records left out as the loader leaves
    /// them out.
    fn with_csv(text: &[u8]) -> Vec<(u64, Vec<Vec<u8>>)> {
        // The source ends a file that lacks one with a `\n`, for either splitter.
        let mut text = text.to_vec();
        if text.last().is_some_and(|&b| b != b'\n') {
            text.push(b'\n');
        }
        let mut r = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'))
            .from_reader(text.as_slice());
        let mut rec = csv::ByteRecord::new();
        let mut out = Vec::new();
        while r.read_byte_record(&mut rec).unwrap() {
            let end_line = r.position().line();
            let breaks = rec.as_slice().iter().filter(|&&b| b == b'\n').count() as u64;
            let fields: Vec<Vec<u8>> = rec.iter().map(<[u8]>::to_vec).collect();
            out.push((end_line - 1 - breaks, fields));
        }
        out
    }

    fn with_splitter(text: &[u8], chunk: usize, capacity: usize) -> Vec<(u64, Vec<Vec<u8>>)> {
        let mut s = Splitter::new(Source::of_bytes(text, chunk, u64::MAX), capacity);
        let mut fields = Fields::default();
        let mut out = Vec::new();
        while let Some(line) = s.read_record(&mut fields).unwrap() {
            out.push((line, fields.iter().map(<[u8]>::to_vec).collect()));
        }
        out
    }

    #[test]
    fn records_split_as_csv_core_splits_them_across_every_chunk_and_buffer_size() {
        let texts: [&[u8]; 8] = [
            b"a,b,c\n1,2,3\n",
            b"\n\na,b\n\n\nc,d\n\n",
            b"a,\"b,c\",d\ne,\"f\"\"g\",h\n",
            b"x,\"multi\nline\nfield\",y\nz,w\n",
            b"a,b\r\n\r\nc,d\r\n",
            b"ab\"c,d\"e\n\"q\"tail,x\n,,\n,\n",
            b"no,final,newline",
            b"h\n\"open quote, closed\"\"late\",a\nb\n",
        ];
        for text in texts {
            let expected = with_csv(text);
            assert!(!expected.is_empty());
            for chunk in [1, 2, 3, 7, 64] {
                for capacity in [1, 4, 1 << 10] {
                    assert_eq!(
                        with_splitter(text, chunk, capacity),
                        expected,
                        "{:?}, chunks of {chunk}, buffer {capacity}",
                        String::from_utf8_lossy(text)
                    );
                }
            }
        }
    }

    #[test]
    fn a_quote_never_closed_runs_to_the_end_of_the_file_from_the_line_it_opened_on() {
        // (csv::Reader's line arithmetic put this record on line 1: no terminator ended it.)
        let text = b"h\n\"open quote never closed,a\nb\n";
        for chunk in [1, 5, 64] {
            let records = with_splitter(text, chunk, 4);
            assert_eq!(
                records,
                [
                    (1, vec![b"h".to_vec()]),
                    (2, vec![b"open quote never closed,a\nb\n".to_vec()])
                ]
            );
        }
    }

    #[test]
    fn a_record_over_the_bound_is_refused_before_more_of_it_is_read() {
        let mut text = b"a,b\n".to_vec();
        text.extend(std::iter::repeat_n(b'x', 10_000));
        text.extend_from_slice(b"\nc,d\n");
        let mut s = Splitter::new(Source::of_bytes(&text, 64, 100), 16);
        let mut fields = Fields::default();
        assert_eq!(s.read_record(&mut fields).unwrap(), Some(1));
        assert!(s.read_record(&mut fields).is_err());
        assert!(matches!(
            s.source_mut().hit.take(),
            Some(crate::read::Hit::Record)
        ));
        // It stopped within a chunk and the buffer of the bound, not at the record's end.
        assert!(s.buf.len() <= 256, "buffer grew to {}", s.buf.len());
    }
}
