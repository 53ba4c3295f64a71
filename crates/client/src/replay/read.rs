//! The first stage: reads the input, cuts it into chunks of records and encodes each chunk
//! into one request message, on a thread of its own (parsing is CPU work that borrows from
//! the reader's buffer).
//!
//! A chunk may only enter the pipeline with a permit of the run's [`Semaphore`]; the permit
//! travels with the chunk and is given back when the chunk is dropped, which is once the
//! writer has written it. So the chunks between reader and writer (queued, in calls, waiting
//! to be put in order) are bounded, and a slow chunk cannot make memory grow.

use std::sync::Arc;
use std::time::Instant;

use prost::bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::StopFlag;
use crate::input::{InputError, ListingReader, Record};
use crate::summary::BadLine;
use crate::wire::{ChunkEncoder, Rpc};

/// What the reader hands on: up to `chunk` records, those to send already encoded.
#[derive(Debug)]
pub(super) struct Chunk {
    /// Its place in the input, from 0: the writer puts chunks back in this order.
    pub(super) index: u64,
    pub(super) slots: Vec<Slot>,
    /// The encoded request of its listings (empty if it holds only bad lines).
    pub(super) request: Bytes,
    pub(super) listings: usize,
    /// The merchant id hashes of its listings, for the summary's merchant count.
    pub(super) merchants: Vec<u64>,
    /// Failed calls of this chunk so far (on any target), when the first failed, and when it
    /// may be tried again.
    pub(super) failures: u32,
    pub(super) first_failure: Option<Instant>,
    pub(super) not_before: Option<Instant>,
    /// Its place in the pipeline, freed when the chunk is dropped (after it is written).
    _permit: OwnedSemaphorePermit,
}

/// One record of a chunk, in input order.
#[derive(Debug)]
pub(super) enum Slot {
    Listing { line: u64 },
    Bad(Box<BadLine>),
}

impl Chunk {
    /// The input line of its first record (0 if it has none).
    pub(super) fn first_line(&self) -> u64 {
        match self.slots.first() {
            Some(Slot::Listing { line }) => *line,
            Some(Slot::Bad(b)) => b.line,
            None => 0,
        }
    }
}

/// Why the reader stopped before the end of the input.
#[derive(Debug)]
pub(super) enum ReaderStop {
    /// The rest of the pipeline went away (the replay is stopping).
    Closed,
    Input(InputError),
    Panicked,
}

/// How the reader cuts and encodes the input.
#[derive(Clone, Copy, Debug)]
pub(super) struct ReadPlan {
    pub(super) chunk: usize,
    pub(super) rpc: Rpc,
    pub(super) skip: u64,
    pub(super) min_seq: u64,
    pub(super) shard: Option<(u64, u64)>,
}

/// Reads, encodes and hands on chunks; returns the number of records read after the skip.
/// Waits for a permit while the pipeline is full; returns `Closed` once the replay is stopping
/// (the writer closes the semaphore when it ends).
fn read_chunks(
    mut reader: ListingReader,
    plan: ReadPlan,
    permits: &Arc<Semaphore>,
    work: &mpsc::Sender<Chunk>,
    stop: &StopFlag,
) -> Result<u64, ReaderStop> {
    let ReadPlan {
        chunk,
        rpc,
        skip,
        min_seq,
        shard,
    } = plan;
    let mine = |key: u64| shard.is_none_or(|(i, n)| key % n == i);
    for _ in 0..skip {
        if !reader.skip_record().map_err(ReaderStop::Input)? {
            return Ok(0);
        }
    }
    // A unary Check carries one listing; batch and stream carry a chunk.
    let chunk = if rpc == Rpc::Unary { 1 } else { chunk };
    let mut enc = ChunkEncoder::new(rpc);
    let mut records = 0u64;
    let mut index = 0u64;
    let mut slots = Vec::with_capacity(chunk);
    let mut merchants = Vec::with_capacity(chunk);
    loop {
        let mut taken = false;
        let more = reader
            .next_record(|r| match r {
                Record::Listing { line, fields } => {
                    let merchant = xxhash_rust::xxh3::xxh3_64(fields[1]);
                    if mine(merchant) {
                        enc.push(fields);
                        merchants.push(merchant);
                        slots.push(Slot::Listing { line });
                        taken = true;
                    }
                }
                Record::Bad {
                    line,
                    listing_id,
                    error,
                } => {
                    if mine(line) {
                        slots.push(Slot::Bad(Box::new(BadLine {
                            line,
                            listing_id,
                            error,
                        })));
                        taken = true;
                    }
                }
            })
            .map_err(ReaderStop::Input)?
            .is_some();
        if more && taken {
            records += 1;
        }
        if slots.len() >= chunk || (!more && !slots.is_empty()) {
            let listings = enc.len();
            let request = if listings > 0 {
                enc.finish(min_seq)
            } else {
                Bytes::new()
            };
            if stop.is_set() {
                return Err(ReaderStop::Closed);
            }
            // This thread is not a runtime's: waiting here blocks only the reader.
            let permit = futures::executor::block_on(permits.clone().acquire_owned())
                .map_err(|_| ReaderStop::Closed)?;
            let c = Chunk {
                index,
                slots: std::mem::replace(&mut slots, Vec::with_capacity(chunk)),
                request,
                listings,
                merchants: std::mem::replace(&mut merchants, Vec::with_capacity(chunk)),
                failures: 0,
                first_failure: None,
                not_before: None,
                _permit: permit,
            };
            index += 1;
            work.blocking_send(c).map_err(|_| ReaderStop::Closed)?;
        }
        if !more {
            return Ok(records);
        }
    }
}

/// Starts the reader on a thread of its own; it ends at the end of the input, or when the
/// replay stops.
pub(super) fn spawn(
    reader: ListingReader,
    plan: ReadPlan,
    permits: Arc<Semaphore>,
    work: mpsc::Sender<Chunk>,
    stop: Arc<StopFlag>,
) -> std::io::Result<std::thread::JoinHandle<Result<u64, ReaderStop>>> {
    std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || read_chunks(reader, plan, &permits, &work, &stop))
}
