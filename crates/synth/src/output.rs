//! Listing files: events as JSON lines or CSV (the spec's field names), optionally gzipped,
//! to a file or stdout, and a file of the reasons they must get.
//!
//! The events are streamed through [`ListingGenerator::fill`] with one reused listing, so a
//! file of any length is written in constant memory.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use cccgate_core::Reason;
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::error::SynthError;
use crate::listings::{GeneratedListing, ListingGenerator};

/// How listing events are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListingFormat {
    /// One JSON object per line, with the spec's six fields.
    JsonLines,
    /// CSV with a header row of the spec's six field names.
    Csv,
}

/// What [`write_listings`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingsSummary {
    /// Listings written.
    pub listings: u64,
    /// Listings per expected reason, indexed by [`Reason::index`].
    pub by_reason: [u64; Reason::COUNT],
    /// Bytes of the events file (before compression), or 0 when not counted.
    pub bytes: u64,
}

/// A place to write to: a file or stdout (`-`), plain or gzipped.
#[derive(Debug)]
pub struct Output {
    path: PathBuf,
    sink: Sink,
    bytes: u64,
}

enum Sink {
    File(BufWriter<File>),
    GzFile(GzEncoder<BufWriter<File>>),
    Stdout(BufWriter<io::Stdout>),
    GzStdout(GzEncoder<BufWriter<io::Stdout>>),
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Sink::File(_) => "File",
            Sink::GzFile(_) => "GzFile",
            Sink::Stdout(_) => "Stdout",
            Sink::GzStdout(_) => "GzStdout",
        })
    }
}

impl Output {
    /// Creates `path` (or stdout for `-`), gzipped if asked.
    pub fn create(path: &Path, gzip: bool) -> Result<Output, SynthError> {
        let sink = if path == Path::new("-") {
            let w = BufWriter::with_capacity(1 << 20, io::stdout());
            if gzip {
                Sink::GzStdout(GzEncoder::new(w, Compression::fast()))
            } else {
                Sink::Stdout(w)
            }
        } else {
            let f = File::create(path).map_err(|e| SynthError::Io {
                path: path.to_owned(),
                source: e,
            })?;
            let w = BufWriter::with_capacity(1 << 20, f);
            if gzip {
                Sink::GzFile(GzEncoder::new(w, Compression::fast()))
            } else {
                Sink::File(w)
            }
        };
        Ok(Output {
            path: path.to_owned(),
            sink,
            bytes: 0,
        })
    }

    /// Where it writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes everything (and ends the gzip stream).
    pub fn finish(self) -> Result<(), SynthError> {
        let path = self.path;
        let err = |e| SynthError::Io {
            path: path.clone(),
            source: e,
        };
        match self.sink {
            Sink::File(mut w) => w.flush().map_err(err),
            Sink::Stdout(mut w) => w.flush().map_err(err),
            Sink::GzFile(g) => g.finish().and_then(|mut w| w.flush()).map_err(err),
            Sink::GzStdout(g) => g.finish().and_then(|mut w| w.flush()).map_err(err),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.sink {
            Sink::File(w) => w.write(buf),
            Sink::GzFile(w) => w.write(buf),
            Sink::Stdout(w) => w.write(buf),
            Sink::GzStdout(w) => w.write(buf),
        }?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::File(w) => w.flush(),
            Sink::GzFile(w) => w.flush(),
            Sink::Stdout(w) => w.flush(),
            Sink::GzStdout(w) => w.flush(),
        }
    }
}

#[derive(serde::Serialize)]
struct ExpectedLine<'a> {
    listing_id: &'a str,
    reason: &'a str,
}

/// Writes the next `count` listings of `generator` to `events` in `format`, and, if given,
/// one `{"listing_id":..,"reason":..}` line per listing to `expected`.
pub fn write_listings(
    generator: &mut ListingGenerator,
    count: u64,
    format: ListingFormat,
    events: &mut Output,
    mut expected: Option<&mut Output>,
) -> Result<ListingsSummary, SynthError> {
    let mut by_reason = [0u64; Reason::COUNT];
    let mut g = GeneratedListing::default();
    let events_path = events.path().to_owned();
    let io_err = |path: &Path, e: io::Error| SynthError::Io {
        path: path.to_owned(),
        source: e,
    };
    let json_err = |path: &Path, e: serde_json::Error| SynthError::Json {
        path: path.to_owned(),
        source: e,
    };
    let start_bytes = events.bytes;
    let mut note = |g: &GeneratedListing| -> Result<(), SynthError> {
        by_reason[g.expected.index()] += 1;
        if let Some(x) = expected.as_deref_mut() {
            let line = ExpectedLine {
                listing_id: &g.event.listing_id,
                reason: g.expected.as_str(),
            };
            serde_json::to_writer(&mut *x, &line).map_err(|e| json_err(&x.path, e))?;
            x.write_all(b"\n").map_err(|e| io_err(&x.path, e))?;
        }
        Ok(())
    };
    match format {
        ListingFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut *events);
            for _ in 0..count {
                generator.fill(&mut g);
                w.serialize(&g.event).map_err(|e| SynthError::Csv {
                    path: events_path.clone(),
                    source: e,
                })?;
                note(&g)?;
            }
            w.into_inner()
                .map_err(|e| io_err(&events_path, e.into_error()))?;
        }
        ListingFormat::JsonLines => {
            for _ in 0..count {
                generator.fill(&mut g);
                serde_json::to_writer(&mut *events, &g.event)
                    .map_err(|e| json_err(&events_path, e))?;
                events
                    .write_all(b"\n")
                    .map_err(|e| io_err(&events_path, e))?;
                note(&g)?;
            }
        }
    }
    Ok(ListingsSummary {
        listings: count,
        by_reason,
        bytes: events.bytes - start_bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use cccgate_core::ListingEvent;

    use super::*;
    use crate::listings::Profile;
    use crate::register::RegisterSpec;

    #[test]
    fn json_and_csv_files_read_back_as_the_generated_events() {
        let reg = RegisterSpec {
            certs: 1_000,
            seed: 2,
            ..RegisterSpec::default()
        }
        .generate();
        let dir = tempfile::tempdir().unwrap();
        let want: Vec<_> = ListingGenerator::new(&reg, Profile::Y2021, 1)
            .take(300)
            .collect();

        let jpath = dir.path().join("l.jsonl.gz");
        let epath = dir.path().join("e.jsonl");
        let mut out = Output::create(&jpath, true).unwrap();
        let mut exp = Output::create(&epath, false).unwrap();
        let mut g = ListingGenerator::new(&reg, Profile::Y2021, 1);
        let s = write_listings(
            &mut g,
            300,
            ListingFormat::JsonLines,
            &mut out,
            Some(&mut exp),
        )
        .unwrap();
        out.finish().unwrap();
        exp.finish().unwrap();
        assert_eq!(s.listings, 300);
        let mut text = String::new();
        flate2::read::GzDecoder::new(File::open(&jpath).unwrap())
            .read_to_string(&mut text)
            .unwrap();
        let got: Vec<ListingEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            got,
            want.iter().map(|g| g.event.clone()).collect::<Vec<_>>()
        );
        let expected = std::fs::read_to_string(&epath).unwrap();
        for (line, g) in expected.lines().zip(&want) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["listing_id"], g.event.listing_id.as_str());
            assert_eq!(v["reason"], g.expected.as_str());
        }

        let cpath = dir.path().join("l.csv");
        let mut out = Output::create(&cpath, false).unwrap();
        let mut g = ListingGenerator::new(&reg, Profile::Y2021, 1);
        write_listings(&mut g, 300, ListingFormat::Csv, &mut out, None).unwrap();
        out.finish().unwrap();
        let mut r = csv::Reader::from_path(&cpath).unwrap();
        assert_eq!(
            r.headers().unwrap(),
            vec![
                "listing_id",
                "merchant_id",
                "product_code",
                "certificate_number",
                "model",
                "event_time"
            ]
        );
        let got: Vec<ListingEvent> = r.deserialize().map(Result::unwrap).collect();
        assert_eq!(
            got,
            want.iter().map(|g| g.event.clone()).collect::<Vec<_>>()
        );
    }
}
