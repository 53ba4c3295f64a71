//! Connections whose calls keep being refused are read more slowly: the gateway honours its
//! own retry hint for callers that ignore it.
//!
//! A refused call (no token or an unknown one, over a rate quota, over a stream cap or the
//! calls in progress) costs the gateway little, but a caller that sends the next one at once
//! can still keep a core busy with refusals alone (a flood of 2,048 calls in flight was
//! refused ~37,000 times a second). Each refusal on a connection is a strike; at
//! [`STRIKES`] strikes within [`WINDOW`], the connection's socket is not read for [`PAUSE`]
//! (its next requests wait in the kernel's buffers, costing nothing), then read again. Calls
//! already admitted on that connection go on (their answers are written; only new frames
//! wait). Another connection, another caller, is not touched.
//!
//! A caller whose calls are refused was asked to retry after `grpc-retry-pushback-ms` (200 ms
//! or its quota's refill time): a pause of 100 ms after 32 refusals delays a well-behaved
//! caller by nothing it was not asked to wait anyway. A connection struck out again within
//! [`WINDOW`] of its last pause's end ignores the hint: each such pause is twice the one before,
//! up to [`MAX_PAUSE`] (800 ms), so a storm of refused calls costs the gateway a few batches a
//! second, not ten; a second without a strike-out starts again at [`PAUSE`]. For [`WINDOW`]
//! after each pause the connection is read in a trickle ([`ReadGate`]). Pauses are short
//! beside HTTP/2 keepalive timeouts (10 s), so a paused peer's pings are still answered in
//! time.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Refusals on one connection (within [`WINDOW`]) that pause its reads.
pub(crate) const STRIKES: u32 = 32;
/// The strikes of a message refused for its size or its listings (over `--max-message-bytes`,
/// over `--max-batch`): four of them within [`WINDOW`] pause the connection. Such a refusal
/// costs the gateway more than another: the caller has by then sent up to a stream window
/// (`--http2-stream-window-bytes`) of the message, which the gateway receives (and decrypts)
/// for nothing; and no client built against the contract sends one.
pub(crate) const OVERSIZED_STRIKES: u32 = STRIKES / 4;
/// Strikes further apart than this start the count again.
pub(crate) const WINDOW: Duration = Duration::from_secs(1);
/// How long a struck-out connection is not read (the first time).
pub(crate) const PAUSE: Duration = Duration::from_millis(100);
/// The longest pause, after strike-outs in a row (`PAUSE` doubled each time).
pub(crate) const MAX_PAUSE: Duration = Duration::from_millis(800);
/// After a pause, for [`WINDOW`], a struck-out connection is read at most this many bytes at a
/// time...
pub(crate) const TRICKLE_BYTES: usize = 4 * 1024;
/// ...and at most once in this long.
pub(crate) const TRICKLE_GAP: Duration = Duration::from_millis(10);

/// The instant the microsecond clocks below count from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn micros_since_epoch(t: Instant) -> u64 {
    // +1: 0 means "never" below.
    u64::try_from(t.saturating_duration_since(epoch()).as_micros()).unwrap_or(u64::MAX) + 1
}

/// One connection's strikes, shared by its reads and its requests.
#[derive(Debug, Default)]
pub(crate) struct Strikes {
    /// Strikes in the window that started at `window_us`.
    count: AtomicU32,
    window_us: AtomicU64,
    /// Reads paused until then (µs after the epoch); 0: not paused.
    until_us: AtomicU64,
    /// The end of the last pause (µs after the epoch); 0: never paused.
    last_end_us: AtomicU64,
    /// The last pause, in µs.
    last_pause_us: AtomicU64,
    /// Reads trickle until then (µs after the epoch; the end of the last pause plus
    /// [`WINDOW`]).
    trickle_until_us: AtomicU64,
}

impl Strikes {
    /// Counts a refused call; the [`STRIKES`]th in a window pauses the connection's reads.
    /// Returns whether this one did.
    pub(crate) fn strike(&self) -> bool {
        self.strike_at(Instant::now())
    }

    /// Counts a refusal that weighs `n` strikes ([`OVERSIZED_STRIKES`]); as [`Strikes::strike`].
    pub(crate) fn strikes(&self, n: u32) -> bool {
        self.strikes_at(Instant::now(), n)
    }

    fn strike_at(&self, now: Instant) -> bool {
        self.strikes_at(now, 1)
    }

    fn strikes_at(&self, now: Instant, n: u32) -> bool {
        let now_us = micros_since_epoch(now);
        let window = u64::try_from(WINDOW.as_micros()).unwrap_or(u64::MAX);
        let start = self.window_us.load(Ordering::Relaxed);
        if now_us.saturating_sub(start) > window {
            // A new window (a race here only miscounts a strike or two).
            self.window_us.store(now_us, Ordering::Relaxed);
            self.count.store(0, Ordering::Relaxed);
        }
        if self.count.fetch_add(n, Ordering::Relaxed).saturating_add(n) < STRIKES {
            return false;
        }
        self.count.store(0, Ordering::Relaxed);
        self.window_us.store(now_us, Ordering::Relaxed);
        let first = u64::try_from(PAUSE.as_micros()).unwrap_or(u64::MAX);
        let most = u64::try_from(MAX_PAUSE.as_micros()).unwrap_or(u64::MAX);
        let last_end = self.last_end_us.load(Ordering::Relaxed);
        // Struck out again soon after the last pause: the hint is ignored, pause longer.
        let pause = if last_end != 0 && now_us.saturating_sub(last_end) <= window {
            (self.last_pause_us.load(Ordering::Relaxed) * 2).clamp(first, most)
        } else {
            first
        };
        self.last_pause_us.store(pause, Ordering::Relaxed);
        self.last_end_us.store(now_us + pause, Ordering::Relaxed);
        self.until_us.store(now_us + pause, Ordering::Relaxed);
        self.trickle_until_us
            .store(now_us + pause + window, Ordering::Relaxed);
        metrics::counter!("cccgate_connection_pauses_total").increment(1);
        true
    }

    /// Until when reads are paused, if they are (one atomic load when they are not).
    fn paused_until(&self) -> Option<Instant> {
        let until = self.until_us.load(Ordering::Relaxed);
        if until == 0 {
            return None;
        }
        let at = epoch() + Duration::from_micros(until - 1);
        if at <= Instant::now() {
            // Over: back to the one-load path (a strike meanwhile set a later time; keep it).
            let _ = self
                .until_us
                .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed);
            return None;
        }
        Some(at)
    }

    /// Whether reads trickle at `now` (after a pause, for [`WINDOW`]).
    fn trickling(&self, now: Instant) -> bool {
        let until = self.trickle_until_us.load(Ordering::Relaxed);
        until != 0 && micros_since_epoch(now) < until
    }
}

/// The read side of a connection's pause: `Pending` (woken when it ends) while `strikes` says
/// the connection is paused. After a pause, for [`WINDOW`], the connection's backlog (up to
/// its HTTP/2 streams' worth of calls, buffered in the kernel while it was paused) is read in
/// a trickle, [`TRICKLE_BYTES`] every [`TRICKLE_GAP`], not all at once: read at once it was a
/// burst of hundreds of calls to refuse or park, during which every other connection's
/// message waited (a normal caller's p99 is made of such bursts).
#[derive(Debug, Default)]
pub(crate) struct ReadGate {
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// While trickling, the next read not before then.
    next: Option<Instant>,
}

impl ReadGate {
    /// Ready when the connection may be read: `Some(n)` when at most `n` bytes may be read now
    /// (trickling), `None` for no limit.
    pub(crate) fn poll_open(
        &mut self,
        strikes: &Strikes,
        cx: &mut Context<'_>,
    ) -> Poll<Option<usize>> {
        if let Some(until) = strikes.paused_until() {
            std::task::ready!(self.wait_until(until, cx));
        }
        let now = Instant::now();
        if !strikes.trickling(now) {
            self.sleep = None;
            self.next = None;
            return Poll::Ready(None);
        }
        if let Some(next) = self.next
            && next > now
        {
            return match self.wait_until(next, cx) {
                Poll::Pending => Poll::Pending,
                // The gap is over: this read is the trickle's next.
                Poll::Ready(()) => {
                    self.next = Some(Instant::now() + TRICKLE_GAP);
                    Poll::Ready(Some(TRICKLE_BYTES))
                }
            };
        }
        self.next = Some(now + TRICKLE_GAP);
        Poll::Ready(Some(TRICKLE_BYTES))
    }

    /// `Pending` until `until` (woken then).
    pub(crate) fn wait_until(&mut self, until: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let until = tokio::time::Instant::from_std(until);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
        if sleep.deadline() != until {
            sleep.as_mut().reset(until);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.sleep = None;
                Poll::Ready(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strike_that_reaches_the_limit_pauses_and_starts_the_count_again() {
        let s = Strikes::default();
        let t0 = Instant::now();
        for i in 1..STRIKES {
            assert!(!s.strike_at(t0), "strike {i} paused");
        }
        assert!(s.paused_until().is_none());
        assert!(s.strike_at(t0), "strike {STRIKES} did not pause");
        let until = s.paused_until().expect("paused");
        assert!(until > t0 && until <= t0 + PAUSE + Duration::from_millis(1));
        // The count starts again: one more strike does not pause again.
        assert!(!s.strike_at(t0));
    }

    /// Strikes out `s` at `at`; how long the pause is.
    fn strike_out(s: &Strikes, at: Instant) -> Duration {
        for _ in 1..STRIKES {
            assert!(!s.strike_at(at));
        }
        assert!(s.strike_at(at));
        let until = s.until_us.load(Ordering::Relaxed);
        Duration::from_micros(until - micros_since_epoch(at))
    }

    #[test]
    fn strike_outs_in_a_row_pause_twice_as_long_each_time_up_to_the_most() {
        let s = Strikes::default();
        let mut t = Instant::now();
        let mut pauses = Vec::new();
        for _ in 0..6 {
            let p = strike_out(&s, t);
            pauses.push(p.as_millis());
            // Struck out again soon after this pause ends.
            t += p + Duration::from_millis(50);
        }
        assert_eq!(pauses, [100, 200, 400, 800, 800, 800]);
        // A quiet second after the last pause: the first pause again.
        t += WINDOW + Duration::from_millis(1);
        assert_eq!(strike_out(&s, t), PAUSE);
    }

    #[test]
    fn four_oversized_messages_pause_as_thirty_two_refusals_do() {
        let s = Strikes::default();
        let t0 = Instant::now();
        for i in 1..4 {
            assert!(!s.strikes_at(t0, OVERSIZED_STRIKES), "oversized {i} paused");
        }
        assert!(
            s.strikes_at(t0, OVERSIZED_STRIKES),
            "the fourth did not pause"
        );
        assert!(s.paused_until().is_some());
        // Three oversized and seven other refusals: one short.
        let s = Strikes::default();
        for _ in 0..3 {
            assert!(!s.strikes_at(t0, OVERSIZED_STRIKES));
        }
        for _ in 0..7 {
            assert!(!s.strike_at(t0));
        }
        assert!(s.strike_at(t0));
    }

    #[test]
    fn strikes_further_apart_than_the_window_never_pause() {
        let s = Strikes::default();
        let t0 = Instant::now();
        for i in 0..3 * STRIKES {
            let at = t0 + (WINDOW / (STRIKES - 1)) * 2 * i;
            assert!(!s.strike_at(at), "strike {i} paused");
        }
        assert!(s.paused_until().is_none());
    }

    #[tokio::test]
    async fn a_paused_connection_is_read_again_when_the_pause_is_over() {
        let s = Strikes::default();
        let mut gate = ReadGate::default();
        let open = |gate: &mut ReadGate| {
            futures::FutureExt::now_or_never(std::future::poll_fn(|cx| gate.poll_open(&s, cx)))
        };
        assert_eq!(open(&mut gate), Some(None), "not paused: open, no limit");
        for _ in 0..STRIKES {
            s.strike();
        }
        assert!(open(&mut gate).is_none(), "paused: not open");
        // Woken when the pause is over (100 ms; bounded, not timed).
        let first = tokio::time::timeout(
            PAUSE * 50,
            std::future::poll_fn(|cx| gate.poll_open(&s, cx)),
        )
        .await
        .expect("open again after the pause");
        assert_eq!(first, Some(TRICKLE_BYTES), "then read in a trickle");
        assert!(s.paused_until().is_none());
        // The next read waits for the trickle's gap (not open now), then is open again.
        assert!(open(&mut gate).is_none(), "within the gap: not open");
        let next = tokio::time::timeout(
            TRICKLE_GAP * 500,
            std::future::poll_fn(|cx| gate.poll_open(&s, cx)),
        )
        .await
        .expect("open again after the gap");
        assert_eq!(next, Some(TRICKLE_BYTES));
        // A connection never struck out is never trickled.
        let calm = Strikes::default();
        let mut g = ReadGate::default();
        for _ in 0..3 {
            let o =
                futures::FutureExt::now_or_never(std::future::poll_fn(|cx| g.poll_open(&calm, cx)));
            assert_eq!(o, Some(None));
        }
    }
}
