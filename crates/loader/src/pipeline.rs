//! The certificate files of a drop, streamed through threads.
//!
//! ```text
//! pump (read, SHA-256, gunzip) -> splitter (CSV records, bounds, row counts)
//!   -> N parsers (decode, validate, hash, model keys) -> builder (duplicates, guard, snapshot)
//! ```
//!
//! The splitter is the calling thread: it reads each file's records in order, applies every
//! bound before the work it bounds (`read.rs`), and hands the records, unparsed, in batches
//! to the parsing threads in turn (batch `k` to thread `k mod N`). The building thread takes
//! the parsed batches back in the same turn, so it sees every row in file order: duplicate
//! detection keeps the first row of a number, bad rows are listed and set aside in file
//! order, and every error names the file and line it did when one thread did it all. Channels
//! are bounded (at most [`QUEUE`] batches waiting at each stage), so memory holds a few
//! batches of the CSV, never the file; emptied batches travel back to be refilled.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use cccgate_core::{Catalogue, Register, Status};
use cccgate_snapshot::{Snapshot, SnapshotBuilder};

use crate::certs::{BadRows, CertReader, Dedup, Layout, Parsed, parse_rows};
use crate::limits::Limits;
use crate::read::{CsvFile, RawBatch};
use crate::{FileReport, LoadError, Manifest, check_digest, file_report};

/// Batches waiting at each parsing thread, in and out.
const QUEUE: usize = 4;

/// Records ahead whose names' index slots the building thread prefetches.
const SLOTS_AHEAD: usize = 12;
/// Records ahead whose names' bytes it prefetches (their slots fetched by then).
const BYTES_AHEAD: usize = 6;

/// Parsing threads: one per core (at most four); under test at least two, so the tests'
/// drops cross threads.
fn parsers() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cfg!(test) {
        cores.clamp(2, 4)
    } else {
        cores.clamp(1, 4)
    }
}

/// What the building thread owns while the files stream through, and leaves behind.
pub(crate) struct Building<'b> {
    /// The snapshot a delta applies on.
    pub base: Option<&'b Snapshot>,
    pub builder: SnapshotBuilder,
    pub dedup: Dedup,
    pub bad: BadRows,
    /// Delta only: certificates in force whose validity the delta changes.
    pub validity_changes: u64,
    /// Delta only: the numbers its rows wrote.
    pub delta_numbers: Vec<u64>,
}

impl Building<'_> {
    /// Takes one parsed batch; batches must come in file order.
    fn take(&mut self, parsed: &mut Parsed) {
        self.bad.take(parsed);
        let batch = &parsed.batch;
        // The index slots of the records ahead (by number, by name) are prefetched, then the
        // bytes the name slots point at, so the cache misses of several records overlap
        // instead of following one another.
        for i in 0..batch.len().min(SLOTS_AHEAD) {
            let p = batch.prepared(i);
            self.builder.prefetch_names(p.number, p.names);
        }
        for i in 0..batch.len() {
            if i + SLOTS_AHEAD < batch.len() {
                let p = batch.prepared(i + SLOTS_AHEAD);
                self.builder.prefetch_names(p.number, p.names);
            }
            if i + BYTES_AHEAD < batch.len() {
                self.builder
                    .prefetch_name_bytes(batch.prepared(i + BYTES_AHEAD).names);
            }
            let record = batch.get(i);
            let prepared = batch.prepared(i);
            let (file, line) = batch.origin(i);
            if !self
                .dedup
                .accept(&record, prepared.hash, file, line, &self.builder)
            {
                continue;
            }
            if let Some(b) = self.base {
                self.delta_numbers.push(record.number.get());
                if let Some(old) = b.find(record.number)
                    && (b.facts(old).status == Status::Valid) != (record.status == Status::Valid)
                {
                    self.validity_changes += 1;
                }
            }
            self.builder.upsert_prepared(
                &record,
                prepared.keys,
                prepared.model_text,
                prepared.names,
            );
        }
    }
}

/// A batch of records on its way to a parsing thread.
struct Work {
    raw: RawBatch,
    layout: Layout,
}

/// Reads every certificate file of the drop into `building`, adding a report per file to
/// `files`. A refusal (a bound, a checksum, a row count...) is returned as soon as the
/// splitter meets it, as before the work was split.
pub(crate) fn read_certificates(
    drop_dir: &Path,
    manifest: &Manifest,
    limits: &Limits,
    catalogue: &Catalogue,
    reader: &mut CertReader,
    building: &mut Building<'_>,
    files: &mut Vec<FileReport>,
) -> Result<(), LoadError> {
    let n = parsers();
    std::thread::scope(|scope| -> Result<(), LoadError> {
        let mut to_parsers = Vec::with_capacity(n);
        let mut from_parsers = Vec::with_capacity(n);
        let mut pools = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        // Emptied raw batches travel back from the building thread to this one.
        let (raw_back, raw_empty) = sync_channel::<RawBatch>(n * (2 * QUEUE + 2));
        for i in 0..n {
            let (tx, rx) = sync_channel::<Work>(QUEUE);
            let (out_tx, out_rx) = sync_channel::<Parsed>(QUEUE);
            let (pool_tx, pool_rx) = sync_channel::<Parsed>(QUEUE + 2);
            to_parsers.push(tx);
            from_parsers.push(out_rx);
            pools.push(pool_tx);
            let worker = std::thread::Builder::new()
                .name(format!("parse {i}"))
                .spawn_scoped(scope, move || parse(rx, out_tx, pool_rx, catalogue))
                .map_err(|e| LoadError::Internal(format!("starting a parsing thread: {e}")))?;
            workers.push(worker);
        }
        let consumer = std::thread::Builder::new()
            .name("build".into())
            .spawn_scoped(scope, move || {
                build(from_parsers, pools, raw_back, building);
            })
            .map_err(|e| LoadError::Internal(format!("starting the building thread: {e}")))?;

        let mut next = 0usize;
        let mut stopped = false;
        let mut empty = || {
            let mut b = raw_empty.try_recv().unwrap_or_default();
            b.clear();
            b
        };
        let mut send = |raw: RawBatch, layout: &Layout| {
            let work = Work {
                raw,
                layout: layout.clone(),
            };
            // A send fails only if that parsing thread is gone (it panicked), which joining
            // it reports below; nothing more is sent after.
            if !stopped && to_parsers[next % n].send(work).is_err() {
                stopped = true;
            }
            next += 1;
        };
        let read = (|| -> Result<(), LoadError> {
            for entry in manifest.certificate_files() {
                let file = CsvFile::open(drop_dir, entry, manifest.encoding, limits)?;
                let path = file.path.clone();
                let digest = reader.read_file(file, &mut empty, &mut send)?;
                check_digest(entry, &path, &digest)?;
                files.push(file_report(entry, &digest));
            }
            Ok(())
        })();
        // The parsing threads end once their queues are empty, then the building thread.
        drop(to_parsers);
        let mut panicked = false;
        for w in workers {
            panicked |= w.join().is_err();
        }
        panicked |= consumer.join().is_err();
        if panicked {
            return Err(LoadError::Internal(
                "a thread parsing or building the snapshot panicked".into(),
            ));
        }
        read
    })
}

/// A parsing thread: parses the batches it is sent, in the order it is sent them.
fn parse(
    rx: Receiver<Work>,
    tx: SyncSender<Parsed>,
    pool: Receiver<Parsed>,
    catalogue: &Catalogue,
) {
    let mut buf = Vec::with_capacity(1024);
    for work in rx {
        let mut out = pool.try_recv().unwrap_or_default();
        parse_rows(work.raw, &work.layout, catalogue, &mut out, &mut buf);
        if tx.send(out).is_err() {
            return;
        }
    }
}

/// The building thread: takes the parsed batches in the turn they were handed out, so in
/// file order, until the parsing thread whose turn it is has no more.
fn build(
    from: Vec<Receiver<Parsed>>,
    pools: Vec<SyncSender<Parsed>>,
    raw_back: SyncSender<RawBatch>,
    building: &mut Building<'_>,
) {
    let n = from.len();
    let mut next = 0usize;
    while let Ok(mut parsed) = from[next % n].recv() {
        building.take(&mut parsed);
        let raw = std::mem::take(&mut parsed.raw);
        let _ = raw_back.try_send(raw);
        let _ = pools[next % n].try_send(parsed);
        next += 1;
    }
}
