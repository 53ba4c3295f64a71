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
//! One module per stage:
//!
//! - [`read`]: the reader parses records and encodes them straight into request messages of
//!   `chunk` records. Each chunk takes a permit of a [`tokio::sync::Semaphore`] to enter the
//!   pipeline and gives it back once it is written, which bounds the chunks between reader and
//!   writer: a slow chunk cannot make memory grow.
//! - [`call`]: `concurrency` tasks per target each keep one call in flight (a `CheckStream`
//!   each, or `CheckBatch` calls), retry failed chunks with backoff, on another target if
//!   there is one, and read each answer in place into its verdict lines.
//! - [`write`]: the writer puts the rendered chunks back in input order, writes them and
//!   counts the summary.
//!
//! This module holds what a caller sees (the configuration, the errors, the outcome) and the
//! run that wires the stages together.
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

mod call;
mod read;
mod write;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};

pub use self::call::backoff;
use self::call::{RetryPolicy, WorkQueue};
use self::read::{Chunk, ReadPlan, ReaderStop};
use self::write::{Done, Written};
use crate::connect::ConnectError;
use crate::input::{Format, InputError, ListingReader};
use crate::progress::{Counters, Mode, Reporter, Total};
use crate::summary::Summary;
use crate::wire::Rpc;

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
    /// TLS settings and caller token for every target (a gateway in production runs with
    /// TLS and `--auth-tokens`).
    pub credentials: crate::connect::Credentials,
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
            credentials: crate::connect::Credentials::default(),
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

/// The first fatal problem of a run. Setting it also closes the run's chunk permits, so a
/// reader waiting for one stops waiting.
#[derive(Debug)]
struct StopFlag {
    stop: AtomicBool,
    reason: Mutex<Option<String>>,
    permits: Arc<Semaphore>,
}

impl StopFlag {
    fn new(permits: Arc<Semaphore>) -> Self {
        StopFlag {
            stop: AtomicBool::new(false),
            reason: Mutex::new(None),
            permits,
        }
    }
    fn set(&self, reason: String) {
        if let Ok(mut r) = self.reason.lock() {
            r.get_or_insert(reason);
        }
        self.stop.store(true, Ordering::SeqCst);
        self.permits.close();
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
        write::check_resume(&cfg.out, cfg.skip)?;
    }
    let out = write::open_output(&cfg.out, cfg.skip > 0)?;
    let gateways = call::connect_all(&cfg.targets, cfg.connections, &cfg.credentials).await?;
    let callers = cfg.concurrency * gateways.len();

    let counters = Arc::new(Counters {
        done: Default::default(),
        bytes: Some(reader.bytes_read()),
    });
    let total = reader.total_bytes().map_or(Total::Unknown, Total::Bytes);
    let input_name = reader.name().to_owned();
    let reporter = Reporter::start("replay", "records", cfg.progress, total, counters.clone());
    let start = Instant::now();

    // Chunks between the reader and the writer: queued, in flight and waiting to be written.
    let permits = Arc::new(Semaphore::new(callers * 3 + 2));
    let stop = Arc::new(StopFlag::new(permits.clone()));
    let (work_tx, work_rx) = mpsc::channel::<Chunk>(callers + 1);
    let (done_tx, done_rx) = std_mpsc::channel::<Done>();

    let plan = ReadPlan {
        chunk: cfg.chunk,
        rpc: cfg.rpc,
        skip: cfg.skip,
        min_seq: cfg.min_snapshot_sequence,
        shard: cfg.shard,
    };
    let reader_thread = read::spawn(reader, plan, permits.clone(), work_tx, stop.clone())
        .map_err(ReplayError::Thread)?;
    let writer_thread = write::spawn(out, done_rx, permits, counters.clone(), stop.clone())
        .map_err(ReplayError::Thread)?;
    let policy = RetryPolicy {
        retries: cfg.retries,
        retry_for: cfg.retry_for,
        targets: gateways.len(),
        // A replica behind the sequence asked for answers FAILED_PRECONDITION: it has not
        // caught up yet, so the chunk waits or goes to another replica.
        not_yet_is_retryable: cfg.min_snapshot_sequence > 0,
    };
    let tasks = call::spawn_callers(
        &gateways,
        cfg,
        policy,
        WorkQueue::new(work_rx),
        done_tx,
        &stop,
    );
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_stop_closes_the_permits_and_frees_a_waiting_reader() {
        let permits = Arc::new(Semaphore::new(1));
        let stop = Arc::new(StopFlag::new(permits.clone()));
        let held = permits.clone().try_acquire_owned().unwrap();
        let waiter = {
            let permits = permits.clone();
            std::thread::spawn(move || futures::executor::block_on(permits.acquire_owned()))
        };
        drop(held);
        let again = waiter.join().unwrap().expect("a released permit is taken");
        let waiter = {
            let permits = permits.clone();
            std::thread::spawn(move || futures::executor::block_on(permits.acquire_owned()))
        };
        stop.set("test".into());
        assert!(waiter.join().unwrap().is_err(), "a stop ends the wait");
        drop(again);
        assert!(
            permits.try_acquire().is_err(),
            "a permit given back after the stop does not reopen the pipeline"
        );
        assert_eq!(stop.reason().as_deref(), Some("test"));
        stop.set("second".into());
        assert_eq!(
            stop.reason().as_deref(),
            Some("test"),
            "the first reason is kept"
        );
    }
}
