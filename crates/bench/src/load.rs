//! Load generation: sender tasks that generate listings on the fly, send them in chunks (or
//! one by one), and check every verdict against the reason the generator expects.
//!
//! # Design
//!
//! A sender owns a shard of the listing stream ([`ListingGenerator::shards`]), one
//! connection's client and, for `CheckStream`, one stream. Per chunk it fills one reused
//! [`GeneratedListing`] at a time and encodes it straight into the request buffer, so
//! generating a listing allocates nothing; the response is read in place and only the
//! decision and reason numbers of each result are looked at ([`ResultView::decision_and_reason`]).
//! A chunk is sent when its schedule says ([`Schedule`]); latency is the round trip of one
//! call, measured from the scheduled time when the sender is late (so queueing is counted, not
//! hidden) and from the send otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cccgate_core::{CertNumber, Decision, Reason};
use cccgate_synth::{GeneratedListing, ListingGenerator};
use hdrhistogram::Histogram;
use tonic::Status;

use crate::pace::YearCurve;
use crate::swap::{Kind, expected_on, kind_of};
use cccgate_client::connect::{CheckStream, RawClient};
use cccgate_client::output::{decision_of, reason_of};
use cccgate_client::summary::new_histogram;
use cccgate_client::wire::{ChunkEncoder, ResponseView, ResultView, Rpc};

/// Consecutive failed calls after which a sender gives up (and the run stops).
const MAX_CONSECUTIVE_FAILURES: u32 = 3;

/// When a sender sends its chunks.
#[derive(Clone, Debug)]
pub enum Schedule {
    /// As soon as the previous answer is in.
    Max,
    /// Along the year's curve, `speedup` times faster than real time, from `start`: the
    /// part of the year from fraction `window.0` of its checks to `window.1` ((0, 1): the
    /// whole year), its first listing due at `start`.
    Year {
        /// The curve.
        curve: Arc<YearCurve>,
        /// The speed-up.
        speedup: f64,
        /// When the window starts.
        start: Instant,
        /// The window, as fractions of the year's checks.
        window: (f64, f64),
    },
    /// At a fixed rate (listings per second for this sender), from `start`.
    Rate {
        /// Listings per second.
        per_sec: f64,
        /// When the first is due.
        start: Instant,
    },
    /// At a fixed rate shared by all senders: call `j` (counted over all of them) is due at
    /// `start + j * interval`, and a sender that is free takes the next `j`. One slow call
    /// then delays only itself: with a schedule of its own, a sender stuck on one call would
    /// make each of its later calls late too, and the latency of a paced run would measure
    /// the client, not the gateway. Sleeps are tokio's, to the millisecond.
    Shared(Arc<SharedRate>),
}

/// The state of [`Schedule::Shared`].
#[derive(Debug)]
pub struct SharedRate {
    /// The next call to take.
    pub next: AtomicU64,
    /// Calls in all (`u64::MAX`: until the run's end time).
    pub calls: u64,
    /// Time between calls.
    pub interval: Duration,
    /// When call 0 is due.
    pub start: Instant,
}

impl Schedule {
    /// When listing number `sent` (fractional: senders are staggered) of `quota` is due, if
    /// the schedule has a time for it.
    fn due(&self, sent: f64, quota: u64) -> Option<Instant> {
        match self {
            Schedule::Max => None,
            Schedule::Year {
                curve,
                speedup,
                start,
                window: (from, to),
            } => {
                let f = from + (to - from) * sent / quota.max(1) as f64;
                let t = curve.time_of_fraction(f) - curve.time_of_fraction(*from);
                Some(*start + Duration::from_secs_f64(t.max(0.0) / speedup))
            }
            Schedule::Rate { per_sec, start } => {
                Some(*start + Duration::from_secs_f64(sent / per_sec))
            }
            Schedule::Shared(_) => None,
        }
    }
}

/// What one sender is to do.
#[derive(Clone, Debug)]
pub struct SenderPlan {
    /// The RPC (`Unary` sends one listing a call).
    pub rpc: Rpc,
    /// Listings per call (1 for `Unary`).
    pub chunk: usize,
    /// Listings to send in all.
    pub quota: u64,
    /// Stop sending new calls at this time, if set.
    pub until: Option<Instant>,
    /// When to send.
    pub schedule: Schedule,
    /// Where this sender's calls fall between those of the others, as a fraction of one call
    /// (sender `i` of `n`: `i / n`). Without it every sender's call `k` is due at the same
    /// instant and a paced run arrives in bursts of one call per sender.
    pub phase: f64,
    /// Check each verdict against the register of the snapshot that decided it, as the swap
    /// benchmark alternates them ([`crate::swap`]), not against the base register alone;
    /// and check that every verdict names its message's snapshot and that a sender never
    /// sees an older snapshot after a newer one.
    pub by_snapshot: bool,
}

/// When a snapshot swap happened (microseconds since `epoch`), for telling the latency of
/// calls that overlapped one from the others.
#[derive(Debug)]
pub struct SwapWindow {
    /// The time base.
    pub epoch: Instant,
    /// Start of the latest swap window.
    pub from_us: AtomicU64,
    /// End of the latest swap window (`u64::MAX` while a swap is in progress).
    pub until_us: AtomicU64,
}

impl SwapWindow {
    /// No swap yet.
    pub fn new(epoch: Instant) -> Self {
        SwapWindow {
            epoch,
            from_us: AtomicU64::new(u64::MAX),
            until_us: AtomicU64::new(0),
        }
    }

    fn overlaps(&self, start: Instant, end: Instant) -> bool {
        let us = |t: Instant| t.saturating_duration_since(self.epoch).as_micros() as u64;
        let (from, until) = (
            self.from_us.load(Ordering::Acquire),
            self.until_us.load(Ordering::Acquire),
        );
        us(start) <= until && us(end) >= from
    }
}

/// Shared state of a run.
#[derive(Debug)]
pub struct RunShared {
    /// Listings answered so far (for progress and the peak-rate sampler).
    pub done: Arc<AtomicU64>,
    /// Set to stop every sender.
    pub stop: AtomicBool,
    /// Snapshot swaps, if any.
    pub swaps: Option<SwapWindow>,
}

/// What senders counted.
#[derive(Clone, Debug)]
pub struct LoadStats {
    /// Verdicts per reason (table order) and decision.
    pub verdicts: [[u64; 3]; Reason::COUNT],
    /// Verdicts whose reason is not the one the generator expected.
    pub mismatches: u64,
    /// Verdicts labelled with another snapshot than the response that carried them (a
    /// response mixing two snapshots, e.g. torn by a swap).
    pub torn: u64,
    /// The lowest and highest `snapshot_sequence` of the responses (0 and 0 before any).
    pub sequences: (u64, u64),
    /// Listings answered with an error entry (bad request) or an unknown outcome.
    pub item_errors: u64,
    /// Listings in calls that failed.
    pub failed_checks: u64,
    /// Calls that failed.
    pub failed_calls: u64,
    /// Calls sent again on a new stream because theirs was cut (UNAVAILABLE or UNKNOWN, as
    /// when a connection past its maximum age and grace is closed): as a gRPC client retries.
    /// Not failures; counted so they are seen.
    pub resent_calls: u64,
    /// The first failure, for the report.
    pub first_error: Option<String>,
    /// Round trip of each call, microseconds.
    pub latency_us: Histogram<u64>,
    /// The same, for calls that overlapped a snapshot swap.
    pub latency_swap_us: Histogram<u64>,
    /// Calls made.
    pub calls: u64,
    /// Furthest behind schedule a call was sent.
    pub max_lag: Duration,
    /// Listings the generator expected to be blocked (the default policy's table).
    pub expected_blocked: u64,
    /// Time senders spent generating and encoding listings (the client's own work, apart
    /// from the gRPC stack).
    pub generate_time: Duration,
    /// Time senders spent reading and counting responses.
    pub count_time: Duration,
    /// Verdicts decided by an alternate snapshot of the swap benchmark whose reason differs
    /// from the base register's, and was right: how many answers a torn or stale swap would
    /// have got wrong.
    pub changed_by_swap: u64,
    /// Verdicts of an older snapshot than one their sender had already seen (a rollback,
    /// checked when verdicts are checked by snapshot).
    pub went_back: u64,
}

impl Default for LoadStats {
    fn default() -> Self {
        LoadStats {
            verdicts: [[0; 3]; Reason::COUNT],
            mismatches: 0,
            torn: 0,
            sequences: (0, 0),
            item_errors: 0,
            failed_checks: 0,
            failed_calls: 0,
            resent_calls: 0,
            first_error: None,
            latency_us: new_histogram(),
            latency_swap_us: new_histogram(),
            calls: 0,
            max_lag: Duration::ZERO,
            expected_blocked: 0,
            generate_time: Duration::ZERO,
            count_time: Duration::ZERO,
            changed_by_swap: 0,
            went_back: 0,
        }
    }
}

impl LoadStats {
    /// Waits for every sender and merges what they counted; a sender that panicked or was
    /// cancelled is reported as the first error, not lost.
    pub async fn join(tasks: Vec<tokio::task::JoinHandle<LoadStats>>) -> LoadStats {
        let mut stats = LoadStats::default();
        for t in tasks {
            match t.await {
                Ok(s) => stats.merge(&s),
                Err(e) => {
                    stats
                        .first_error
                        .get_or_insert_with(|| format!("sender failed: {e}"));
                }
            }
        }
        stats
    }

    /// Adds `other` into this.
    pub fn merge(&mut self, other: &LoadStats) {
        for (row, o) in self.verdicts.iter_mut().zip(&other.verdicts) {
            for (a, b) in row.iter_mut().zip(o) {
                *a += b;
            }
        }
        self.mismatches += other.mismatches;
        self.torn += other.torn;
        self.sequences = match (self.sequences, other.sequences) {
            ((0, 0), o) => o,
            (s, (0, 0)) => s,
            ((a, b), (c, d)) => (a.min(c), b.max(d)),
        };
        self.item_errors += other.item_errors;
        self.failed_checks += other.failed_checks;
        self.failed_calls += other.failed_calls;
        self.resent_calls += other.resent_calls;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
        let _ = self.latency_us.add(&other.latency_us);
        let _ = self.latency_swap_us.add(&other.latency_swap_us);
        self.calls += other.calls;
        self.max_lag = self.max_lag.max(other.max_lag);
        self.expected_blocked += other.expected_blocked;
        self.generate_time += other.generate_time;
        self.count_time += other.count_time;
        self.changed_by_swap += other.changed_by_swap;
        self.went_back += other.went_back;
    }

    /// Verdicts received.
    pub fn checks(&self) -> u64 {
        self.verdicts.iter().flatten().sum()
    }

    /// Verdicts with this decision.
    pub fn decided(&self, d: Decision) -> u64 {
        self.verdicts.iter().map(|row| row[d as usize]).sum()
    }

    /// Errors of any kind: listings in failed calls and listings answered with an error.
    pub fn errors(&self) -> u64 {
        self.failed_checks + self.item_errors
    }
}

/// The six fields of a generated listing, borrowed.
fn fields(g: &GeneratedListing) -> cccgate_client::wire::ListingFields<'_> {
    let e = &g.event;
    [
        e.listing_id.as_bytes(),
        e.merchant_id.as_bytes(),
        e.product_code.as_bytes(),
        e.certificate_number.as_bytes(),
        e.model.as_bytes(),
        e.event_time.as_bytes(),
    ]
}

struct Conn {
    client: RawClient,
    rpc: Rpc,
    stream: Option<CheckStream>,
}

/// Tries of a stream call whose stream was cut (UNAVAILABLE, or UNKNOWN: the connection
/// closed under it, as at the end of `--max-connection-age-grace-ms`), each on a newly
/// opened stream, paused 5 ms at first and twice as long each time up to 320 ms (about 2 s in
/// all): time for the client's channel to open a new connection.
const STREAM_TRIES: u32 = 10;

impl Conn {
    /// One call; on a stream, one whose stream was cut (a connection closed at the end of
    /// its maximum age's grace, with the message in flight) is sent again on a new stream, as
    /// a gRPC client retries: a check has no effect but its answer (and a decision-log line,
    /// which may then appear twice). `resent` counts the calls sent again.
    async fn call(
        &mut self,
        request: prost::bytes::Bytes,
        resent: &mut u64,
    ) -> Result<prost::bytes::Bytes, Status> {
        if self.rpc != Rpc::Stream {
            return self.client.unary(self.rpc, request).await;
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let r = match self.stream.as_mut() {
                Some(s) => s.call(request.clone()).await,
                None => match self.client.open_stream().await {
                    Ok(s) => self.stream.insert(s).call(request.clone()).await,
                    Err(e) => Err(e),
                },
            };
            match r {
                Ok(b) => return Ok(b),
                Err(status) => {
                    self.stream = None;
                    let cut = matches!(
                        status.code(),
                        tonic::Code::Unavailable | tonic::Code::Unknown
                    );
                    if !cut || tries >= STREAM_TRIES {
                        return Err(status);
                    }
                    *resent += 1;
                    let pause = 5u64 << (tries - 1).min(6);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
    }
}

/// Sends `plan.quota` listings of `generator` through `client`; returns what it counted.
pub async fn run_sender(
    client: RawClient,
    mut generator: ListingGenerator,
    plan: SenderPlan,
    shared: Arc<RunShared>,
) -> LoadStats {
    let mut stats = LoadStats::default();
    let chunk = if plan.rpc == Rpc::Unary {
        1
    } else {
        plan.chunk.max(1)
    };
    let mut conn = Conn {
        client,
        rpc: plan.rpc,
        stream: None,
    };
    let mut enc = ChunkEncoder::new(plan.rpc);
    let mut listing = GeneratedListing::default();
    let mut expected: Vec<u8> = Vec::with_capacity(chunk);
    let mut expected_alt: Vec<u8> = Vec::with_capacity(if plan.by_snapshot { chunk } else { 0 });
    let mut last_sequence = 0u64;
    let mut view = ResponseView::default();
    let mut sent = 0u64;
    let mut failures = 0u32;
    while sent < plan.quota && !shared.stop.load(Ordering::Relaxed) {
        if plan.until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        // On a shared schedule a free sender takes the next call; none left ends the sender.
        let token = match &plan.schedule {
            Schedule::Shared(r) => {
                let j = r.next.fetch_add(1, Ordering::Relaxed);
                if j >= r.calls {
                    break;
                }
                Some(r.start + r.interval.mul_f64(j as f64))
            }
            _ => None,
        };
        let n = (plan.quota - sent).min(chunk as u64) as usize;
        let generating = Instant::now();
        expected.clear();
        expected_alt.clear();
        for _ in 0..n {
            generator.fill(&mut listing);
            enc.push(fields(&listing));
            expected.push(listing.expected as u8);
            if plan.by_snapshot {
                let number = CertNumber::normalize(&listing.event.certificate_number)
                    .ok()
                    .map(|p| p.number);
                expected_alt.push(expected_on(Kind::Alternate, listing.expected, number) as u8);
            }
            if listing.expected.table_decision() == Decision::Block {
                stats.expected_blocked += 1;
            }
        }
        let request = enc.finish(0);
        let mut start = Instant::now();
        stats.generate_time += start - generating;
        let position = sent as f64 + plan.phase * n as f64;
        if let Some(due) = token.or_else(|| plan.schedule.due(position, plan.quota)) {
            if due > start {
                tokio::time::sleep_until(due.into()).await;
                start = Instant::now();
            } else {
                stats.max_lag = stats.max_lag.max(start - due);
                // Late: the call's latency counts from when it was due.
                start = due;
            }
        }
        let result = conn.call(request, &mut stats.resent_calls).await;
        let end = Instant::now();
        stats.calls += 1;
        sent += n as u64;
        match result {
            Ok(bytes) => {
                failures = 0;
                let us = end.saturating_duration_since(start).as_micros() as u64;
                match &shared.swaps {
                    Some(w) if w.overlaps(start, end) => {
                        stats.latency_swap_us.saturating_record(us.max(1))
                    }
                    _ => stats.latency_us.saturating_record(us.max(1)),
                }
                let by_snapshot = plan.by_snapshot.then_some(BySnapshot {
                    alternate: &expected_alt,
                    last_sequence: &mut last_sequence,
                });
                count(
                    &bytes,
                    plan.rpc,
                    &expected,
                    by_snapshot,
                    &mut view,
                    &mut stats,
                );
                stats.count_time += end.elapsed();
                shared.done.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(status) => {
                failures += 1;
                stats.failed_calls += 1;
                stats.failed_checks += n as u64;
                if stats.first_error.is_none() {
                    stats.first_error = Some(format!("{:?}: {}", status.code(), status.message()));
                }
                if failures >= MAX_CONSECUTIVE_FAILURES {
                    shared.stop.store(true, Ordering::Relaxed);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    stats
}

/// What checking verdicts by their snapshot needs of a sender.
struct BySnapshot<'a> {
    /// Expected reasons on an alternate snapshot, one a listing.
    alternate: &'a [u8],
    /// The newest sequence this sender has seen.
    last_sequence: &'a mut u64,
}

/// Counts the verdicts of one response against the expected reasons (with `by_snapshot`,
/// those of the register of the snapshot each verdict names).
fn count(
    bytes: &[u8],
    rpc: Rpc,
    expected: &[u8],
    mut by_snapshot: Option<BySnapshot<'_>>,
    view: &mut ResponseView,
    stats: &mut LoadStats,
) {
    if let Err(e) = view.parse(rpc, bytes) {
        stats.item_errors += expected.len() as u64;
        stats.first_error.get_or_insert_with(|| e.to_string());
        return;
    }
    if view.len() != expected.len() {
        stats.item_errors += expected.len() as u64;
        stats.first_error.get_or_insert_with(|| {
            format!("{} results for {} listings", view.len(), expected.len())
        });
        return;
    }
    let sequence = view.sequence;
    stats.sequences = match stats.sequences {
        (0, 0) => (sequence, sequence),
        (lo, hi) => (lo.min(sequence), hi.max(sequence)),
    };
    for (i, &base) in expected.iter().enumerate() {
        match ResultView::verdict_numbers(view.result(bytes, i)) {
            Ok((d, r, seq)) => match (decision_of(d), reason_of(r)) {
                (Some(d), Some(r)) => {
                    stats.verdicts[r.index()][d as usize] += 1;
                    if seq != sequence {
                        stats.torn += 1;
                    }
                    let mut want = base;
                    if let Some(b) = by_snapshot.as_mut() {
                        if kind_of(seq) == Kind::Alternate {
                            want = b.alternate[i];
                        }
                        if seq < *b.last_sequence {
                            stats.went_back += 1;
                            stats.first_error.get_or_insert_with(|| {
                                format!(
                                    "a verdict of snapshot {seq} after snapshot {} was seen",
                                    b.last_sequence
                                )
                            });
                        }
                        *b.last_sequence = (*b.last_sequence).max(seq);
                    }
                    if r.index() != usize::from(want) {
                        stats.mismatches += 1;
                    } else if want != base {
                        stats.changed_by_swap += 1;
                    }
                }
                _ => stats.item_errors += 1,
            },
            Err(e) => {
                stats.item_errors += 1;
                stats.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Samples a counter once a second: the highest one-second rate seen, and a timeline.
#[derive(Debug, Default, Clone)]
pub struct RateSampler {
    /// (seconds since the run's start at the end of the window, rate over the window,
    /// resident memory in bytes if known); a window is about one second, from the end of
    /// the previous one.
    pub samples: Vec<(f64, f64, Option<u64>)>,
}

impl RateSampler {
    /// The highest one-second rate.
    pub fn peak(&self) -> f64 {
        self.samples.iter().map(|s| s.1).fold(0.0, f64::max)
    }

    /// The largest resident memory sampled.
    pub fn max_rss(&self) -> Option<u64> {
        self.samples.iter().filter_map(|s| s.2).max()
    }
}

/// Samples `done` every second until `stop` is set; times count from `start`.
pub async fn sample_rates(
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    start: Instant,
) -> RateSampler {
    let mut s = RateSampler::default();
    let second = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at((start + second).into(), second);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (start, done.load(Ordering::Relaxed));
    loop {
        tick.tick().await;
        if stop.load(Ordering::Relaxed) {
            // The window in progress is partial: not a one-second rate.
            break;
        }
        let now = Instant::now();
        let n = done.load(Ordering::Relaxed);
        let rate = (n - last.1) as f64 / (now - last.0).as_secs_f64().max(1e-9);
        last = (now, n);
        s.samples
            .push(((now - start).as_secs_f64(), rate, resident_bytes()));
    }
    s
}

/// CPU time this process has used so far (user + system), if the system says. With
/// `/proc/self/stat` in clock ticks of 10 ms, it is for runs of seconds, not microseconds.
pub fn process_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_whitespace();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = f.nth(11)?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// This process's resident memory (VmRSS), if the system says.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_schedule_spaces_listings_evenly() {
        let start = Instant::now();
        let s = Schedule::Rate {
            per_sec: 1_000.0,
            start,
        };
        assert_eq!(s.due(0.0, 10), Some(start));
        assert_eq!(s.due(500.0, 10), Some(start + Duration::from_millis(500)));
        assert_eq!(s.due(0.5, 10), Some(start + Duration::from_micros(500)));
        assert_eq!(Schedule::Max.due(5.0, 10), None);
    }

    #[test]
    fn a_year_schedule_ends_when_the_year_does() {
        let start = Instant::now();
        let curve = Arc::new(YearCurve::new(2021));
        let s = Schedule::Year {
            curve: curve.clone(),
            speedup: 1e5,
            start,
            window: (0.0, 1.0),
        };
        let end = s.due(100.0, 100).unwrap() - start;
        assert!((end.as_secs_f64() - curve.seconds() / 1e5).abs() < 1e-3);
        assert!(s.due(50.0, 100).unwrap() > start);
        // A window of the year: its first listing at the start, its last after the window's
        // length at the speed-up, the middle one when half of the window's checks are due.
        let day = 86_400.0;
        let (t0, t1) = (314.0 * day, 316.0 * day);
        let window = (curve.fraction_at(t0), curve.fraction_at(t1));
        let w = Schedule::Year {
            curve: curve.clone(),
            speedup: 1e3,
            start,
            window,
        };
        assert_eq!(w.due(0.0, 100), Some(start));
        let end = (w.due(100.0, 100).unwrap() - start).as_secs_f64();
        assert!((end - (t1 - t0) / 1e3).abs() < 1e-3, "{end}");
        let mid = (w.due(50.0, 100).unwrap() - start).as_secs_f64() * 1e3 + t0;
        let half = (window.0 + window.1) / 2.0;
        assert!((curve.fraction_at(mid) - half).abs() < 1e-9);
    }

    #[test]
    fn swap_window_catches_overlapping_calls_only() {
        let epoch = Instant::now();
        let w = SwapWindow::new(epoch);
        let at = |ms: u64| epoch + Duration::from_millis(ms);
        assert!(!w.overlaps(at(0), at(10)));
        w.from_us.store(100_000, Ordering::Release);
        w.until_us.store(200_000, Ordering::Release);
        assert!(w.overlaps(at(90), at(110)));
        assert!(w.overlaps(at(150), at(160)));
        assert!(!w.overlaps(at(10), at(20)));
        assert!(!w.overlaps(at(210), at(220)));
    }

    #[test]
    fn process_cpu_time_only_grows() {
        let a = process_cpu().unwrap();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = process_cpu().unwrap();
        assert!(b >= a);
        assert!(resident_bytes().unwrap() > 0);
    }

    /// A stream response of batch-style results: `(reason, sequence)` each.
    fn stream_response(message_seq: u64, verdicts: &[(Reason, u64)]) -> Vec<u8> {
        use cccgate_proto::v1;
        use prost::Message;
        v1::CheckResponse {
            result: None,
            results: verdicts
                .iter()
                .map(|&(r, seq)| v1::ListingResult {
                    listing_id: "L".into(),
                    outcome: Some(v1::listing_result::Outcome::Verdict(v1::Verdict {
                        decision: r.table_decision() as i32 + 1,
                        reason: r.index() as i32 + 1,
                        snapshot_sequence: seq,
                        certificate: None,
                    })),
                })
                .collect(),
            snapshot_sequence: message_seq,
            snapshot_content_id: String::new(),
        }
        .encode_to_vec()
    }

    #[test]
    fn by_snapshot_every_verdict_must_be_the_one_of_its_own_register() {
        let valid = Reason::CertificateValid;
        let revoked = Reason::CertificateRevoked;
        // One listing the alternate register revokes, one it does not change.
        let expected = [valid as u8, valid as u8];
        let alternate = [revoked as u8, valid as u8];
        let run = |message_seq: u64, verdicts: &[(Reason, u64)], last: u64| {
            let mut stats = LoadStats::default();
            let mut last_sequence = last;
            let mut view = ResponseView::default();
            count(
                &stream_response(message_seq, verdicts),
                Rpc::Stream,
                &expected,
                Some(BySnapshot {
                    alternate: &alternate,
                    last_sequence: &mut last_sequence,
                }),
                &mut view,
                &mut stats,
            );
            (stats, last_sequence)
        };
        // The base register (odd), then the alternate (even): both right.
        let (s, last) = run(3, &[(valid, 3), (valid, 3)], 2);
        assert_eq!((s.mismatches, s.changed_by_swap, last), (0, 0, 3));
        let (s, last) = run(4, &[(revoked, 4), (valid, 4)], 3);
        assert_eq!((s.mismatches, s.changed_by_swap, last), (0, 1, 4));
        // A stale answer: the alternate snapshot named, the base's verdict given.
        let (s, _) = run(4, &[(valid, 4), (valid, 4)], 3);
        assert_eq!((s.mismatches, s.torn, s.went_back), (1, 0, 0));
        // A torn message: one verdict names another snapshot than its message (and an older
        // one than its neighbour).
        let (s, _) = run(4, &[(revoked, 4), (valid, 3)], 3);
        assert_eq!((s.mismatches, s.torn, s.went_back), (0, 1, 1));
        // Going back: an older snapshot after a newer one was seen.
        let (s, last) = run(3, &[(valid, 3), (valid, 3)], 4);
        assert_eq!((s.mismatches, s.went_back, last), (0, 2, 4));
        assert!(s.first_error.unwrap().contains("after snapshot 4"));
        // Without the check, the alternate's right answer is a mismatch against the base.
        let mut stats = LoadStats::default();
        count(
            &stream_response(4, &[(revoked, 4), (valid, 4)]),
            Rpc::Stream,
            &expected,
            None,
            &mut ResponseView::default(),
            &mut stats,
        );
        assert_eq!(stats.mismatches, 1);
    }

    #[test]
    fn stats_merge_adds_everything() {
        let mut a = LoadStats::default();
        a.verdicts[Reason::CertificateRevoked.index()][Decision::Block as usize] = 2;
        a.latency_us.saturating_record(10);
        let mut b = a.clone();
        b.failed_checks = 5;
        b.first_error = Some("x".into());
        a.merge(&b);
        assert_eq!(a.checks(), 4);
        assert_eq!(a.decided(Decision::Block), 4);
        assert_eq!(a.errors(), 5);
        assert_eq!(a.latency_us.len(), 2);
        assert_eq!(a.first_error.as_deref(), Some("x"));
    }
}
