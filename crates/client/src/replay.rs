//! Replay: a file of listing events through the gateway, one verdict line out per record, in
//! input order.
//!
//! # Pipeline
//!
//! ```text
//! reader thread ──chunks──▶ N call tasks (streams or batch calls) ──responses──▶ writer thread
//!   parse + encode             send, await, retry with backoff             reorder, write lines,
//!   (borrowed fields)          (round-trip latency per chunk)              count the summary
//! ```
//!
//! The reader parses records and encodes them straight into request messages of `chunk`
//! records. `concurrency` tasks each keep one call in flight (a `CheckStream` each, or
//! `CheckBatch` calls). The writer puts responses back in input order, reads them in place
//! and writes each verdict as a JSON line, so nothing is allocated per verdict. The writer
//! hands back a permit per chunk written, which bounds the chunks between reader and writer:
//! a slow chunk cannot make memory grow.
//!
//! # Failure and resume
//!
//! A bad record is an error line (with its line number) and a count in the summary, never a
//! reason to stop. A call that fails because the gateway is down, restarting or overloaded is
//! retried with exponential backoff, bounded in count and in time; when that runs out (or the
//! gateway refuses a request outright) the replay stops. Only a contiguous prefix of the input
//! is ever written, one whole chunk at a time, so the output is always the verdicts of the
//! first `skip + written` records and `--skip` with that number resumes exactly where it
//! stopped (appending to the output).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use prost::bytes::Bytes;
use tokio::sync::mpsc;
use tonic::Status;

use crate::connect::{CheckStream, ConnectError, Gateway, RawClient, is_retryable};
use crate::input::{Format, InputError, ListingReader, Record};
use crate::output::{decision_of, put_error, put_result, reason_of};
use crate::progress::{Counters, Mode, Reporter, Total};
use crate::summary::{BadLine, BadRequest, Summary, Tally};
use crate::wire::{ChunkEncoder, Outcome, ResponseView, ResultView, Rpc};

/// What to replay, where, and how.
#[derive(Clone, Debug)]
pub struct ReplayConfig {
    /// The gateways, `http://host:port` (replicas serving the same register). Chunks are
    /// spread over them; a chunk whose gateway fails is sent to another, so every record is
    /// answered exactly once, in input order.
    pub targets: Vec<String>,
    /// The input file; `-` is stdin.
    pub input: PathBuf,
    /// The input format; `None` guesses it (see [`ListingReader::open`]).
    pub format: Option<Format>,
    /// The verdict file; `-` is stdout. Truncated, unless `skip > 0` (then appended to).
    pub out: PathBuf,
    /// Calls in flight per target.
    pub concurrency: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Records per request message.
    pub chunk: usize,
    /// `CheckStream` or `CheckBatch`.
    pub rpc: Rpc,
    /// Records to skip at the start (to resume).
    pub skip: u64,
    /// Sent with every request: refuse to be decided by an older snapshot.
    pub min_snapshot_sequence: u64,
    /// Retries of one failed call before giving up.
    pub retries: u32,
    /// Longest time one call may keep failing before giving up.
    pub retry_for: Duration,
    /// Longest wait for one answer (then the call counts as failed and is retried).
    pub timeout: Duration,
    /// Progress on stderr.
    pub progress: Mode,
    /// `(I, N)`: replay only shard I of N of the input: the records of merchants whose id
    /// hashes to I modulo N, and bad lines whose line number is I modulo N. N runs, one per
    /// shard, together handle every record exactly once; their summaries merge
    /// ([`crate::merge`]) into the whole run's.
    pub shard: Option<(u64, u64)>,
}

impl ReplayConfig {
    /// A configuration with the defaults: 8 streams over 2 connections, 2,000 records a
    /// chunk, 8 retries within 60 s, automatic progress.
    pub fn new(target: &str, input: &Path, out: &Path) -> Self {
        ReplayConfig {
            targets: vec![target.to_owned()],
            input: input.to_path_buf(),
            format: None,
            out: out.to_path_buf(),
            concurrency: 8,
            connections: 2,
            chunk: 2_000,
            rpc: Rpc::Stream,
            skip: 0,
            min_snapshot_sequence: 0,
            retries: 8,
            retry_for: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
            progress: Mode::auto(Duration::from_secs(10)),
            shard: None,
        }
    }
}

/// A replay that could not start or could not write.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The input cannot be opened or its header read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The output cannot be opened.
    #[error("cannot open {path} for the verdicts: {source}")]
    Output {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The gateway cannot be reached at the start.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A thread could not be started.
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
    /// `--skip` does not match the output it would append to.
    #[error(
        "--skip {skip} would append to {} which holds {lines} verdict lines{}: the output would \
         not line up with the input. Resume with --skip {lines} (after removing a partial last \
         line), or write to a new file",
        path.display(),
        if *partial { " and a partial line" } else { "" }
    )]
    Resume {
        /// The output file.
        path: PathBuf,
        /// Whole lines in it.
        lines: u64,
        /// Whether it ends in a partial line.
        partial: bool,
        /// The `--skip` given.
        skip: u64,
    },
    /// `chunk` or `concurrency` is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// `shard` is not I of N with I < N, or comes with `skip`.
    #[error("{0}")]
    Shard(String),
}

/// Why a replay stopped before the end of its input, and how to resume it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stopped {
    /// What went wrong.
    pub reason: String,
    /// Records written in this run.
    pub written: u64,
    /// The input line of the last record written (0 if none).
    pub last_line: u64,
    /// The `--skip` that resumes after the last record written.
    pub resume_skip: u64,
    /// The output file.
    pub out: PathBuf,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replay stopped: {}. The verdicts of {} records of this run are in {}{}; they stay \
             valid. To resume, run the same command with --skip {} ({}).",
            self.reason,
            crate::summary::thousands(self.written),
            if self.out.as_os_str() == "-" {
                "stdout".to_owned()
            } else {
                self.out.display().to_string()
            },
            if self.last_line > 0 {
                format!(" (through input line {})", self.last_line)
            } else {
                String::new()
            },
            self.resume_skip,
            if self.out.as_os_str() == "-" {
                "and append its stdout to what this run wrote".to_owned()
            } else {
                format!("it appends to {}", self.out.display())
            }
        )
    }
}

/// The result of a replay: its summary, and why it stopped early if it did.
#[derive(Debug)]
pub struct ReplayOutcome {
    /// The summary of this run.
    pub summary: Summary,
    /// `Some` if the replay stopped before the end of its input.
    pub stopped: Option<Stopped>,
}

/// What the reader hands on: up to `chunk` records, those to send already encoded.
#[derive(Debug)]
struct Chunk {
    index: u64,
    slots: Vec<Slot>,
    request: Bytes,
    listings: usize,
    merchants: Vec<u64>,
    /// Failed calls of this chunk so far (on any target), when the first failed, and when it
    /// may be tried again.
    failures: u32,
    first_failure: Option<Instant>,
    not_before: Option<Instant>,
}

#[derive(Debug)]
enum Slot {
    Listing { line: u64 },
    Bad(Box<BadLine>),
}

/// A chunk and the gateway's answer to it.
#[derive(Debug)]
struct Done {
    chunk: Chunk,
    rpc: Rpc,
    response: Option<Bytes>,
    latency_us: u64,
    /// The chunk's verdict lines and counts, rendered by the call task (so the writer
    /// thread only orders and writes), or why the answer cannot be read.
    rendered: Result<(Vec<u8>, ChunkCounts), String>,
}

impl Done {
    /// Reads the answer to `chunk` and renders its lines.
    fn new(chunk: Chunk, rpc: Rpc, response: Option<Bytes>, latency_us: u64) -> Done {
        let mut d = Done {
            chunk,
            rpc,
            response,
            latency_us,
            rendered: Err(String::new()),
        };
        let mut buf = Vec::with_capacity(d.chunk.slots.len() * 320);
        d.rendered = render(&d, &mut ResponseView::default(), &mut buf).map(|c| (buf, c));
        d
    }
}

/// The first fatal problem of a run.
#[derive(Debug, Default)]
struct StopFlag {
    stop: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl StopFlag {
    fn set(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
    fn is_set(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    fn reason(&self) -> Option<String> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }
}

/// Runs a replay on a runtime of its own (for the command line).
pub fn replay_blocking(cfg: &ReplayConfig) -> Result<ReplayOutcome, ReplayError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ReplayError::Thread)?;
    rt.block_on(replay(cfg))
}

/// Runs a replay on the current tokio runtime (it needs a multi-threaded one).
pub async fn replay(cfg: &ReplayConfig) -> Result<ReplayOutcome, ReplayError> {
    if cfg.chunk == 0 {
        return Err(ReplayError::Zero("chunk"));
    }
    if cfg.concurrency == 0 {
        return Err(ReplayError::Zero("concurrency"));
    }
    if cfg.targets.is_empty() {
        return Err(ReplayError::Zero("the number of targets"));
    }
    if let Some((i, n)) = cfg.shard {
        if i >= n {
            return Err(ReplayError::Shard(format!(
                "shard {i}/{n}: expected I/N with I < N"
            )));
        }
        if cfg.skip > 0 {
            return Err(ReplayError::Shard(
                "--skip cannot resume a sharded replay: run the shard again".into(),
            ));
        }
    }
    let input = cfg.input.clone();
    let format = cfg.format;
    let reader = tokio::task::spawn_blocking(move || ListingReader::open(&input, format))
        .await
        .map_err(|e| ReplayError::Thread(io::Error::other(e)))??;
    if cfg.skip > 0 {
        check_resume(&cfg.out, cfg.skip)?;
    }
    let out = open_output(&cfg.out, cfg.skip > 0)?;
    let gateways = connect_all(&cfg.targets, cfg.connections).await?;
    let callers = cfg.concurrency * gateways.len();

    let counters = Arc::new(Counters {
        done: Default::default(),
        bytes: Some(reader.bytes_read()),
    });
    let total = reader.total_bytes().map_or(Total::Unknown, Total::Bytes);
    let input_name = reader.name().to_owned();
    let reporter = Reporter::start("replay", "records", cfg.progress, total, counters.clone());
    let stop = Arc::new(StopFlag::default());
    let start = Instant::now();

    // Chunks between the reader and the writer: queued, in flight and waiting to be written.
    let ahead = callers * 3 + 2;
    let permits = Arc::new(Permits::new(ahead));
    let (work_tx, work_rx) = mpsc::channel::<Chunk>(callers + 1);
    let (done_tx, done_rx) = std_mpsc::channel::<Done>();

    let reader_thread = {
        let plan = ReadPlan {
            chunk: cfg.chunk,
            rpc: cfg.rpc,
            skip: cfg.skip,
            min_seq: cfg.min_snapshot_sequence,
            shard: cfg.shard,
        };
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("replay-reader".into())
            .spawn({
                let permits = permits.clone();
                move || read_chunks(reader, plan, &permits, &work_tx, &stop)
            })
            .map_err(ReplayError::Thread)?
    };
    let writer_thread = {
        let counters = counters.clone();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("replay-writer".into())
            .spawn({
                let permits = permits.clone();
                move || {
                    let w = write_verdicts(out, done_rx, &permits, &counters, &stop);
                    // Whatever happened, the reader must not wait for permits any more.
                    permits.close();
                    w
                }
            })
            .map_err(ReplayError::Thread)?
    };

    let queue = Arc::new(WorkQueue::new(work_rx));
    let policy = RetryPolicy {
        retries: cfg.retries,
        retry_for: cfg.retry_for,
        targets: gateways.len(),
        // A replica behind the sequence asked for answers FAILED_PRECONDITION: it has not
        // caught up yet, so the chunk waits or goes to another replica.
        not_yet_is_retryable: cfg.min_snapshot_sequence > 0,
    };
    let mut tasks = Vec::new();
    for i in 0..cfg.concurrency {
        // Interleaved, so the first calls already spread over every target.
        for gateway in &gateways {
            let caller = Caller {
                client: gateway.client(i),
                rpc: cfg.rpc,
                stream: None,
                timeout: cfg.timeout,
                target: gateway.target().to_owned(),
            };
            tasks.push(tokio::spawn(call_loop(
                caller,
                policy,
                queue.clone(),
                done_tx.clone(),
                stop.clone(),
            )));
        }
    }
    drop(done_tx);
    drop(queue);
    for t in tasks {
        if let Err(e) = t.await {
            stop.set(format!("a call task failed: {e}"));
        }
    }
    let read = tokio::task::spawn_blocking(move || reader_thread.join())
        .await
        .map_err(|e| ReplayError::Thread(io::Error::other(e)))?;
    let written = tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .map_err(|e| ReplayError::Thread(io::Error::other(e)))?;
    reporter.finish();
    let seconds = start.elapsed().as_secs_f64();

    let read = read.unwrap_or(Err(ReaderStop::Panicked));
    let written = written.unwrap_or_else(|_| Written::panicked());
    if let Err(ReaderStop::Input(e)) = &read {
        stop.set(format!("cannot read the input any further: {e}"));
    }
    if let Some(e) = &written.error {
        stop.set(e.clone());
    }
    let records_read = read.as_ref().ok().copied();
    let complete = !stop.is_set() && records_read == Some(written.tally.records());
    let stopped = (!complete).then(|| Stopped {
        reason: stop
            .reason()
            .unwrap_or_else(|| "the replay ended before its input did".to_owned()),
        written: written.tally.records(),
        last_line: written.last_line,
        resume_skip: cfg.skip + written.tally.records(),
        out: cfg.out.clone(),
    });
    let mut summary = Summary::from_tally(
        &written.tally,
        input_name,
        cfg.targets.join(","),
        cfg.rpc.name(),
        cfg.chunk,
        cfg.concurrency,
        cfg.skip,
        seconds,
        complete,
    );
    summary.shard = cfg.shard.map(|(i, n)| format!("{i}/{n}"));
    Ok(ReplayOutcome { summary, stopped })
}

/// Before appending to an existing output, checks that it holds exactly `skip` whole lines,
/// so the verdicts appended line up with the input. A missing or empty file is fine (the
/// tail of an input replayed into a new file).
fn check_resume(path: &Path, skip: u64) -> Result<(), ReplayError> {
    use std::io::Read;
    if path.as_os_str() == "-" {
        return Ok(());
    }
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ReplayError::Output {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut buf = vec![0u8; 1 << 20];
    let (mut lines, mut last, mut len) = (0u64, b'\n', 0u64);
    loop {
        let n = file.read(&mut buf).map_err(|source| ReplayError::Output {
            path: path.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[n - 1];
        len += n as u64;
    }
    if len == 0 {
        return Ok(());
    }
    if last != b'\n' || lines != skip {
        return Err(ReplayError::Resume {
            path: path.to_path_buf(),
            lines,
            partial: last != b'\n',
            skip,
        });
    }
    Ok(())
}

fn open_output(path: &Path, append: bool) -> Result<Box<dyn Write + Send>, ReplayError> {
    if path.as_os_str() == "-" {
        return Ok(Box::new(io::stdout()));
    }
    let file = if append {
        OpenOptions::new().create(true).append(true).open(path)
    } else {
        File::create(path)
    };
    let file = file.map_err(|source| ReplayError::Output {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Box::new(file))
}

#[derive(Debug)]
enum ReaderStop {
    /// The rest of the pipeline went away (the replay is stopping).
    Closed,
    Input(InputError),
    Panicked,
}

/// How the reader cuts and encodes the input.
#[derive(Clone, Copy, Debug)]
struct ReadPlan {
    chunk: usize,
    rpc: Rpc,
    skip: u64,
    min_seq: u64,
    shard: Option<(u64, u64)>,
}

/// Reads, encodes and hands on chunks; returns the number of records read after the skip.
fn read_chunks(
    mut reader: ListingReader,
    plan: ReadPlan,
    permits: &Permits,
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
            let c = Chunk {
                index,
                slots: std::mem::replace(&mut slots, Vec::with_capacity(chunk)),
                request,
                listings,
                merchants: std::mem::replace(&mut merchants, Vec::with_capacity(chunk)),
                failures: 0,
                first_failure: None,
                not_before: None,
            };
            index += 1;
            if !permits.acquire(stop) {
                return Err(ReaderStop::Closed);
            }
            work.blocking_send(c).map_err(|_| ReaderStop::Closed)?;
        }
        if !more {
            return Ok(records);
        }
    }
}

/// A counting semaphore between the reader (which takes a permit per chunk) and the writer
/// (which gives it back once the chunk is written): it bounds the chunks in the pipeline.
#[derive(Debug)]
struct Permits {
    state: Mutex<(usize, bool)>,
    freed: Condvar,
}

impl Permits {
    fn new(n: usize) -> Self {
        Permits {
            state: Mutex::new((n, false)),
            freed: Condvar::new(),
        }
    }

    /// Takes a permit, waiting while there is none; `false` once the replay is stopping or
    /// the writer is gone.
    fn acquire(&self, stop: &StopFlag) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        loop {
            if s.1 || stop.is_set() {
                return false;
            }
            if s.0 > 0 {
                s.0 -= 1;
                return true;
            }
            // A stop sets no condition variable: look again now and then.
            s = match self.freed.wait_timeout(s, Duration::from_millis(20)) {
                Ok((s, _)) => s,
                Err(_) => return false,
            };
        }
    }

    fn release(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.0 += 1;
        }
        self.freed.notify_one();
    }

    fn close(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.1 = true;
        }
        self.freed.notify_all();
    }
}

/// One call slot: a client of one target, and its open stream if it uses one.
struct Caller {
    client: RawClient,
    rpc: Rpc,
    stream: Option<CheckStream>,
    timeout: Duration,
    target: String,
}

impl Caller {
    async fn call_once(&mut self, request: Bytes) -> Result<Bytes, Status> {
        match self.rpc {
            Rpc::Stream => {
                if self.stream.is_none() {
                    self.stream = Some(self.client.open_stream().await?);
                }
                let Some(stream) = self.stream.as_mut() else {
                    return Err(Status::internal("no stream"));
                };
                let r = stream.call(request).await;
                if r.is_err() {
                    // A failed stream is finished; the next call opens a new one.
                    self.stream = None;
                }
                r
            }
            rpc => self.client.unary(rpc, request).await,
        }
    }

    /// One call within the answer timeout: the response and its round trip in µs.
    async fn call(&mut self, request: &Bytes) -> Result<(Bytes, u64), Status> {
        let t = Instant::now();
        match tokio::time::timeout(self.timeout, self.call_once(request.clone())).await {
            Ok(Ok(b)) => Ok((b, t.elapsed().as_micros() as u64)),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                // The stream may still deliver the late answer: start afresh. Dropping the
                // call means its answer, if any, is never read: the chunk is answered once.
                self.stream = None;
                Err(Status::deadline_exceeded(format!(
                    "no answer within {:.1} s",
                    self.timeout.as_secs_f64()
                )))
            }
        }
    }
}

/// When a failed chunk is tried again, and when the replay gives up.
#[derive(Clone, Copy, Debug)]
struct RetryPolicy {
    /// Failed calls of one chunk, over all targets, before giving up.
    retries: u32,
    /// Longest time one chunk may keep failing.
    retry_for: Duration,
    /// How many targets share the work.
    targets: usize,
    /// FAILED_PRECONDITION (snapshot older than asked for) counts as "not yet".
    not_yet_is_retryable: bool,
}

/// The pause before retry `attempt` (1-based): 100 ms doubling, at most 5 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    Duration::from_millis(ms.min(5_000))
}

/// The chunks to call: new ones from the reader, and chunks whose call failed, which go first
/// (the writer waits for them) to whichever caller is free, usually on another target.
struct WorkQueue {
    fresh: tokio::sync::Mutex<mpsc::Receiver<Chunk>>,
    again: Mutex<std::collections::VecDeque<Chunk>>,
    /// Chunks taken by a caller and not yet answered or put back.
    in_call: std::sync::atomic::AtomicUsize,
    /// The reader has no more chunks.
    fresh_done: AtomicBool,
    changed: tokio::sync::Notify,
}

impl WorkQueue {
    fn new(fresh: mpsc::Receiver<Chunk>) -> Self {
        WorkQueue {
            fresh: tokio::sync::Mutex::new(fresh),
            again: Mutex::new(std::collections::VecDeque::new()),
            in_call: std::sync::atomic::AtomicUsize::new(0),
            fresh_done: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// A chunk to call again whose pause is over; else when the next one's pause ends.
    fn pop_again(&self) -> Result<Chunk, Option<Instant>> {
        let Ok(mut q) = self.again.lock() else {
            return Err(None);
        };
        let now = Instant::now();
        match q.iter().position(|c| c.not_before.is_none_or(|t| t <= now)) {
            Some(i) => {
                let c = q.remove(i).ok_or(None)?;
                self.in_call.fetch_add(1, Ordering::SeqCst);
                Ok(c)
            }
            None => Err(q.iter().filter_map(|c| c.not_before).min()),
        }
    }

    /// The next chunk to call, or `None` when every chunk has been answered (or the replay
    /// stops). A caller that is done must still wait while chunks are in calls elsewhere: one
    /// of them may fail and need this caller's target.
    async fn next(&self, stop: &StopFlag) -> Option<Chunk> {
        loop {
            if stop.is_set() {
                return None;
            }
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let again_at = match self.pop_again() {
                Ok(c) => return Some(c),
                Err(at) => at,
            };
            // Woken by a chunk answered or put back, or when a paused chunk may go again; a
            // stop sets no notification, so look again now and then.
            let nap = again_at.map_or(Duration::from_millis(100), |t| {
                t.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100))
            });
            if self.fresh_done.load(Ordering::SeqCst) {
                if self.in_call.load(Ordering::SeqCst) == 0 && again_at.is_none() {
                    // Wake the others: they see the same and end too.
                    self.changed.notify_waiters();
                    return None;
                }
                let _ = tokio::time::timeout(nap, &mut changed).await;
                continue;
            }
            tokio::select! {
                biased;
                () = &mut changed => {}
                () = tokio::time::sleep(nap), if again_at.is_some() => {}
                c = async { self.fresh.lock().await.recv().await } => match c {
                    Some(c) => {
                        self.in_call.fetch_add(1, Ordering::SeqCst);
                        return Some(c);
                    }
                    None => {
                        self.fresh_done.store(true, Ordering::SeqCst);
                        self.changed.notify_waiters();
                    }
                },
            }
        }
    }

    /// A chunk was answered (or given up).
    fn finished(&self) {
        self.in_call.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// A chunk's call failed: it goes back, first in line.
    fn put_back(&self, chunk: Chunk) {
        if let Ok(mut q) = self.again.lock() {
            q.push_back(chunk);
        }
        self.in_call.fetch_sub(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

async fn call_loop(
    mut caller: Caller,
    policy: RetryPolicy,
    queue: Arc<WorkQueue>,
    done: std_mpsc::Sender<Done>,
    stop: Arc<StopFlag>,
) {
    // Consecutive failures of this caller's target: a target that is down is tried less and
    // less often while the others take its chunks.
    let mut failing = 0u32;
    while let Some(mut chunk) = queue.next(&stop).await {
        if chunk.listings == 0 {
            let _ = done.send(Done::new(chunk, caller.rpc, None, 0));
            queue.finished();
            continue;
        }
        let err = match caller.call(&chunk.request).await {
            Ok((response, latency_us)) => {
                failing = 0;
                let d = Done::new(chunk, caller.rpc, Some(response), latency_us);
                let sent = done.send(d).is_ok();
                queue.finished();
                if !sent {
                    return;
                }
                continue;
            }
            Err(e) => e,
        };
        let retryable = is_retryable(&err)
            || (policy.not_yet_is_retryable && err.code() == tonic::Code::FailedPrecondition);
        if !retryable {
            stop.set(format!(
                "the gateway at {} refused a request: {} ({:?})",
                caller.target,
                err.message(),
                err.code()
            ));
            queue.finished();
            return;
        }
        chunk.failures += 1;
        let first = *chunk.first_failure.get_or_insert_with(Instant::now);
        failing += 1;
        // The chunk pauses as one call retried on one gateway would; any free caller, usually
        // on another target, takes it after the pause.
        let pause = backoff(chunk.failures);
        if chunk.failures > policy.retries || first.elapsed() + pause > policy.retry_for {
            stop.set(format!(
                "{} unreachable: input line {} and the records after it failed {} times over \
                 {:.1} s, the last at {} with {:?}: {}",
                if policy.targets > 1 {
                    "every gateway is"
                } else {
                    "the gateway is"
                },
                chunk_first_line(&chunk),
                chunk.failures,
                first.elapsed().as_secs_f64(),
                caller.target,
                err.code(),
                err.message()
            ));
            queue.finished();
            return;
        }
        chunk.not_before = Some(Instant::now() + pause);
        queue.put_back(chunk);
        // Sleep in short steps so a stop elsewhere ends the wait.
        let end = Instant::now() + backoff(failing);
        while Instant::now() < end {
            if stop.is_set() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50).min(end - Instant::now())).await;
        }
    }
}

fn chunk_first_line(chunk: &Chunk) -> u64 {
    match chunk.slots.first() {
        Some(Slot::Listing { line }) => *line,
        Some(Slot::Bad(b)) => b.line,
        None => 0,
    }
}

/// Connects to every target. With one target, failing to connect is an error at once; with
/// several, a target that is down now is connected when it comes back, as long as one is up.
async fn connect_all(targets: &[String], connections: usize) -> Result<Vec<Gateway>, ReplayError> {
    if let [one] = targets {
        return Ok(vec![Gateway::connect(one, connections).await?]);
    }
    let mut gateways = Vec::with_capacity(targets.len());
    let mut first_error = None;
    let mut up = 0;
    for t in targets {
        match Gateway::connect(t, connections).await {
            Ok(g) => {
                up += 1;
                gateways.push(g);
            }
            Err(e) => {
                gateways.push(Gateway::connect_lazy(t, connections)?);
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if up == 0 => Err(e.into()),
        _ => Ok(gateways),
    }
}

/// What the writer did.
struct Written {
    tally: Tally,
    last_line: u64,
    error: Option<String>,
}

impl Written {
    fn panicked() -> Self {
        Written {
            tally: Tally::default(),
            last_line: 0,
            error: Some("the writer thread failed".to_owned()),
        }
    }
}

fn write_verdicts(
    mut out: Box<dyn Write + Send>,
    done: std_mpsc::Receiver<Done>,
    permits: &Permits,
    counters: &Counters,
    stop: &StopFlag,
) -> Written {
    let mut w = Written {
        tally: Tally::default(),
        last_line: 0,
        error: None,
    };
    let mut waiting = std::collections::BTreeMap::new();
    let mut next = 0u64;
    while let Ok(d) = done.recv() {
        waiting.insert(d.chunk.index, d);
        while let Some(mut d) = waiting.remove(&next) {
            if w.error.is_some() {
                break;
            }
            let records = d.chunk.slots.len() as u64;
            let (buf, counts) = match std::mem::replace(&mut d.rendered, Err(String::new())) {
                Ok(r) => r,
                Err(e) => {
                    stop.set(e.clone());
                    w.error = Some(e);
                    break;
                }
            };
            if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
                let e = format!("cannot write the verdicts: {e}");
                stop.set(e.clone());
                w.error = Some(e);
                break;
            }
            // Only now is the chunk in the output: count it.
            commit(d, counts, &mut w);
            counters.done.fetch_add(records, Ordering::Relaxed);
            permits.release();
            next += 1;
        }
    }
    let _ = out.flush();
    w
}

/// The counts of one chunk, added to the summary once the chunk is in the output.
#[derive(Debug)]
struct ChunkCounts {
    verdicts: [[u64; 3]; cccgate_core::Reason::COUNT],
    unknown: u64,
    bad_requests: Vec<BadRequest>,
    snapshot: Option<(u64, String)>,
    last_line: u64,
}

/// Writes the lines of one chunk into `buf` and counts them.
fn render(d: &Done, view: &mut ResponseView, buf: &mut Vec<u8>) -> Result<ChunkCounts, String> {
    let bytes: &[u8] = d.response.as_deref().unwrap_or_default();
    let mut counts = ChunkCounts {
        verdicts: [[0; 3]; cccgate_core::Reason::COUNT],
        unknown: 0,
        bad_requests: Vec::new(),
        snapshot: None,
        last_line: 0,
    };
    let content_id = if d.response.is_some() {
        view.parse(d.rpc, bytes).map_err(|e| e.to_string())?;
        if view.len() != d.chunk.listings {
            return Err(format!(
                "the gateway answered {} results to a request of {} listings",
                view.len(),
                d.chunk.listings
            ));
        }
        let id = view.content_id(bytes).map_err(|e| e.to_string())?;
        counts.snapshot = Some((view.sequence, id.to_owned()));
        id
    } else {
        ""
    };
    let mut i = 0;
    for slot in &d.chunk.slots {
        match slot {
            Slot::Listing { line } => {
                let r = ResultView::parse(view.result(bytes, i)).map_err(|e| e.to_string())?;
                i += 1;
                put_result(buf, &r, content_id, *line);
                match r.outcome {
                    Outcome::Verdict {
                        decision, reason, ..
                    } => match (decision_of(decision), reason_of(reason)) {
                        (Some(d), Some(r)) => counts.verdicts[r.index()][d as usize] += 1,
                        _ => counts.unknown += 1,
                    },
                    Outcome::Error { field, message } => counts.bad_requests.push(BadRequest {
                        line: *line,
                        listing_id: r.listing_id.to_owned(),
                        field: field.to_owned(),
                        error: message.to_owned(),
                    }),
                    Outcome::Missing => counts.bad_requests.push(BadRequest {
                        line: *line,
                        listing_id: r.listing_id.to_owned(),
                        field: String::new(),
                        error: "the gateway returned neither a verdict nor an error".to_owned(),
                    }),
                }
                counts.last_line = *line;
            }
            Slot::Bad(b) => {
                put_error(buf, b.listing_id.as_deref(), &b.error, None, b.line);
                counts.last_line = b.line;
            }
        }
    }
    Ok(counts)
}

/// Counts one written chunk into the summary.
fn commit(d: Done, counts: ChunkCounts, w: &mut Written) {
    let t = &mut w.tally;
    if d.response.is_some() {
        t.latency_us.saturating_record(d.latency_us.max(1));
    }
    for &m in &d.chunk.merchants {
        t.merchants.insert(m);
    }
    for (row, add) in t.verdicts.iter_mut().zip(counts.verdicts) {
        for (n, a) in row.iter_mut().zip(add) {
            *n += a;
        }
    }
    t.unknown_verdicts += counts.unknown;
    for b in counts.bad_requests {
        t.bad_request(b);
    }
    if let Some(key) = counts.snapshot {
        *t.snapshots.entry(key).or_insert(0) += d.chunk.listings as u64;
    }
    for slot in d.chunk.slots {
        if let Slot::Bad(b) = slot {
            t.bad_line(*b);
        }
    }
    w.last_line = counts.last_line.max(w.last_line);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100_ms_up_to_5_s() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(7), Duration::from_secs(5));
        assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn resuming_needs_an_output_of_exactly_skip_whole_lines() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out.jsonl");
        // No file, or an empty one: a tail replayed into a new file.
        check_resume(&out, 3).unwrap();
        std::fs::write(&out, "").unwrap();
        check_resume(&out, 3).unwrap();
        std::fs::write(&out, "a\nb\nc\n").unwrap();
        check_resume(&out, 3).unwrap();
        let err = check_resume(&out, 5).unwrap_err().to_string();
        assert!(
            err.contains("holds 3 verdict lines") && err.contains("--skip 3"),
            "{err}"
        );
        std::fs::write(&out, "a\nb\nc\n{\"listing_id\":").unwrap();
        let err = check_resume(&out, 3).unwrap_err().to_string();
        assert!(err.contains("a partial line"), "{err}");
    }

    #[test]
    fn the_stop_message_names_the_skip_that_resumes() {
        let s = Stopped {
            reason: "the gateway at http://x is unreachable".into(),
            written: 12_000,
            last_line: 12_003,
            resume_skip: 12_500,
            out: PathBuf::from("v.jsonl"),
        };
        let m = s.to_string();
        assert!(m.contains("12,000 records"), "{m}");
        assert!(m.contains("through input line 12003"), "{m}");
        assert!(m.contains("--skip 12500 (it appends to v.jsonl)"), "{m}");
        let m = Stopped {
            out: PathBuf::from("-"),
            ..s
        }
        .to_string();
        assert!(m.contains("are in stdout"), "{m}");
    }

    #[test]
    fn permits_bound_the_chunks_in_flight_and_a_stop_frees_a_waiting_reader() {
        let p = Arc::new(Permits::new(2));
        let stop = Arc::new(StopFlag::default());
        assert!(p.acquire(&stop));
        assert!(p.acquire(&stop));
        let waiter = {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || p.acquire(&stop))
        };
        p.release();
        assert!(waiter.join().unwrap(), "a released permit is taken");
        let waiter = {
            let (p, stop) = (p.clone(), stop.clone());
            std::thread::spawn(move || p.acquire(&stop))
        };
        stop.set("test".into());
        assert!(!waiter.join().unwrap(), "a stop ends the wait");
        assert_eq!(stop.reason().as_deref(), Some("test"));
        stop.set("second".into());
        assert_eq!(
            stop.reason().as_deref(),
            Some("test"),
            "the first reason is kept"
        );
    }
}
