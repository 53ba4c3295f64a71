//! The second stage: tasks that send chunks to the gateways and read the answers.
//!
//! Each caller keeps one call in flight on one target (a `CheckStream` of its own, or unary
//! `CheckBatch`/`Check` calls). A chunk whose call fails for a reason worth retrying goes
//! back to a [`WorkQueue`], first in line, paused by [`backoff`]; whichever caller is free,
//! usually on another target, takes it. The answer is rendered into verdict lines here, on
//! the runtime's threads, so the writer only orders and writes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::{Duration, Instant};

use prost::bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::Status;

use super::read::Chunk;
use super::write::Done;
use super::{ReplayConfig, ReplayError, StopFlag};
use crate::connect::{CheckStream, Credentials, Gateway, RawClient, is_retryable};
use crate::wire::Rpc;

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
pub(super) struct RetryPolicy {
    /// Failed calls of one chunk, over all targets, before giving up.
    pub(super) retries: u32,
    /// Longest time one chunk may keep failing.
    pub(super) retry_for: Duration,
    /// How many targets share the work.
    pub(super) targets: usize,
    /// FAILED_PRECONDITION (snapshot older than asked for) counts as "not yet".
    pub(super) not_yet_is_retryable: bool,
}

/// The pause before retry `attempt` (1-based): 100 ms doubling, at most 5 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    Duration::from_millis(ms.min(5_000))
}

/// The chunks to call: new ones from the reader, and chunks whose call failed, which go first
/// (the writer waits for them) to whichever caller is free, usually on another target.
pub(super) struct WorkQueue {
    fresh: tokio::sync::Mutex<mpsc::Receiver<Chunk>>,
    again: Mutex<VecDeque<Chunk>>,
    /// Chunks taken by a caller and not yet answered or put back.
    in_call: AtomicUsize,
    /// The reader has no more chunks.
    fresh_done: AtomicBool,
    changed: tokio::sync::Notify,
}

impl WorkQueue {
    pub(super) fn new(fresh: mpsc::Receiver<Chunk>) -> Self {
        WorkQueue {
            fresh: tokio::sync::Mutex::new(fresh),
            again: Mutex::new(VecDeque::new()),
            in_call: AtomicUsize::new(0),
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

/// Starts `concurrency` callers per gateway, interleaved so the first calls already spread
/// over every target. They end when every chunk is answered, or when the replay stops.
pub(super) fn spawn_callers(
    gateways: &[Gateway],
    cfg: &ReplayConfig,
    policy: RetryPolicy,
    queue: WorkQueue,
    done: std_mpsc::Sender<Done>,
    stop: &Arc<StopFlag>,
) -> Vec<JoinHandle<()>> {
    let queue = Arc::new(queue);
    let mut tasks = Vec::with_capacity(cfg.concurrency * gateways.len());
    for i in 0..cfg.concurrency {
        for gateway in gateways {
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
                done.clone(),
                stop.clone(),
            )));
        }
    }
    tasks
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
                chunk.first_line(),
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

/// Connects to every target. With one target, failing to connect is an error at once; with
/// several, a target that is down now is connected when it comes back, as long as one is up.
pub(super) async fn connect_all(
    targets: &[String],
    connections: usize,
    credentials: &Credentials,
) -> Result<Vec<Gateway>, ReplayError> {
    if let [one] = targets {
        return Ok(vec![
            Gateway::connect_with(one, connections, credentials).await?,
        ]);
    }
    let mut gateways = Vec::with_capacity(targets.len());
    let mut first_error = None;
    let mut up = 0;
    for t in targets {
        match Gateway::connect_with(t, connections, credentials).await {
            Ok(g) => {
                up += 1;
                gateways.push(g);
            }
            Err(e) => {
                gateways.push(Gateway::connect_lazy_with(t, connections, credentials)?);
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) if up == 0 => Err(e.into()),
        _ => Ok(gateways),
    }
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
}
