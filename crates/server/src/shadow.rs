//! Shadow evaluation of a candidate register (`serve --candidate-dir`), as Envoy's shadow rules
//! and OPA's decision replay do: a sampled share of live checks is also decided against a
//! candidate snapshot, and the listings whose reason differs are counted and logged.
//!
//! # Design
//!
//! The hot path pays one branch when there is no candidate, and one thread-local xorshift step
//! and a compare per listing when there is ([`Shadow::consider`]); only a sampled listing is
//! copied (its wire fields, the reason in force, the day) and handed to a bounded queue with
//! `try_send`. When the queue is full the sample is dropped and counted
//! (`cccgate_shadow_dropped_total`): checks never wait for the shadow. One blocking worker,
//! which polls the queue (draining it, then napping a few milliseconds) so that no send ever
//! has to wake it, decides each sample against the candidate with the same policy and the same day, and counts
//! `cccgate_shadow_checks_total` and, when the reasons differ,
//! `cccgate_shadow_disagreements_total{active_reason,candidate_reason}`, and logs the listing.
//!
//! The candidate is the newest snapshot in the candidate directory that opens and verifies as
//! a reload would (the sequence its name says, the signature when a public key is set). It is
//! never put in force by itself: `Admin.PromoteCandidate` copies it into the snapshot
//! directory and runs a reload pass (so the reload's own checks decide, and a restart serves
//! it); `Admin.DiscardCandidate` drops it, and only a newer file becomes the next candidate
//! (at the next `Admin.Reload` or SIGHUP).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwapOption;
use cccgate_core::{Day, Policy, Reason, check};
use cccgate_proto::v1::Listing as WireListing;
use cccgate_snapshot::SnapshotDir;
use metrics::Counter;
use tokio::sync::mpsc;

use crate::metrics::now_unix_ms;
use crate::reload::Reloader;
use crate::store::Loaded;
use crate::wire::View;

/// The default share of live checks decided against the candidate.
pub const DEFAULT_SAMPLE: f64 = 0.01;

/// Sampled listings queued for the worker at most. Each holds the listing's fields (each
/// under its decode limit, about 1 KiB in all at worst), so the queue stays under ~16 MiB.
pub(crate) const QUEUE: usize = 16 * 1024;

/// One sampled listing: what the worker needs to decide it again.
#[derive(Debug)]
struct Sample {
    listing: WireListing,
    active: Reason,
    day: Day,
}

/// The candidate register and its shadow evaluation. Shared by the check service (sampling),
/// the worker and `Admin`.
#[derive(Debug)]
pub(crate) struct Shadow {
    dir: PathBuf,
    /// The candidate, if any.
    candidate: ArcSwapOption<Loaded>,
    /// Whether a candidate is loaded: the hot path's first test.
    on: AtomicBool,
    /// A listing is sampled when its random draw is at most this (`u64::MAX`: every one).
    threshold: u64,
    sample: f64,
    /// The highest sequence discarded: only newer files become the candidate again.
    discarded: AtomicU64,
    tx: mpsc::Sender<Sample>,
    dropped_counter: Counter,
    /// Since the candidate in place became it (reset when it changes).
    pub(crate) checks: AtomicU64,
    pub(crate) disagreements: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// One xorshift64 step of this thread's generator (never 0).
#[inline]
fn draw() -> u64 {
    RNG.with(|c| {
        let mut x = c.get();
        if x == 0 {
            // Seeded once per thread from the stack address and the time: any nonzero seed.
            let local = 0u8;
            x = (&raw const local as u64) ^ (now_unix_ms() as u64).rotate_left(32) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.set(x);
        x
    })
}

impl Shadow {
    /// A shadow over `dir` sampling `sample` of the listings, and its worker (a blocking task
    /// that ends when the last `Shadow` is dropped). No candidate yet: call [`Shadow::refresh`].
    pub(crate) fn start(
        dir: PathBuf,
        sample: f64,
        policy: Policy,
    ) -> (Arc<Shadow>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        for name in [
            "cccgate_shadow_checks_total",
            "cccgate_shadow_dropped_total",
        ] {
            metrics::counter!(name).increment(0);
        }
        let shadow = Arc::new(Shadow {
            dir,
            candidate: ArcSwapOption::empty(),
            on: AtomicBool::new(false),
            threshold: (sample * 2f64.powi(64)) as u64,
            sample,
            discarded: AtomicU64::new(0),
            tx,
            dropped_counter: metrics::counter!("cccgate_shadow_dropped_total"),
            checks: AtomicU64::new(0),
            disagreements: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        });
        let worker = Worker {
            shadow: Arc::downgrade(&shadow),
            policy,
            checks: metrics::counter!("cccgate_shadow_checks_total"),
        };
        let task = tokio::task::spawn_blocking(move || worker.run(rx));
        (shadow, task)
    }

    /// The hot path's call: samples this decided listing and, if sampled, queues it for the
    /// worker without waiting. Nothing is copied or allocated for a listing not sampled.
    #[inline]
    pub(crate) fn consider(&self, listing: View<'_>, active: Reason, day: Day) {
        if self.sampled() {
            self.offer(listing, active, day);
        }
    }

    /// Whether the next decided listing is sampled: for a caller that has not made the
    /// listing's [`View`] yet (making it validates six fields), so that only a sampled one
    /// pays for it; then [`Shadow::offer`].
    #[inline]
    pub(crate) fn sampled(&self) -> bool {
        self.on.load(Ordering::Relaxed) && draw() <= self.threshold
    }

    /// Queues a sampled listing for the worker, without waiting.
    #[cold]
    pub(crate) fn offer(&self, listing: View<'_>, active: Reason, day: Day) {
        let sample = Sample {
            listing: listing.to_wire(),
            active,
            day,
        };
        if self.tx.try_send(sample).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.dropped_counter.increment(1);
        }
    }

    /// The share sampled.
    pub(crate) fn sample(&self) -> f64 {
        self.sample
    }

    /// The candidate, if any.
    pub(crate) fn candidate(&self) -> Option<Arc<Loaded>> {
        self.candidate.load_full()
    }

    fn set(&self, loaded: Option<Loaded>) {
        self.checks.store(0, Ordering::Relaxed);
        self.disagreements.store(0, Ordering::Relaxed);
        self.dropped.store(0, Ordering::Relaxed);
        self.on.store(loaded.is_some(), Ordering::Relaxed);
        self.candidate.store(loaded.map(Arc::new));
    }

    /// Drops the candidate if it is still `expected` (compared by identity), returning whether
    /// it was; no newer file than it becomes the candidate again.
    pub(crate) fn discard(&self, expected: &Arc<Loaded>) -> bool {
        let current = self.candidate.load_full();
        if !current.as_ref().is_some_and(|c| Arc::ptr_eq(c, expected)) {
            return false;
        }
        self.discarded
            .fetch_max(expected.snapshot.sequence(), Ordering::Relaxed);
        self.set(None);
        tracing::info!(
            sequence = expected.snapshot.sequence(),
            "candidate discarded; shadow checks stop"
        );
        true
    }

    /// The candidate was put in force: it is no longer a candidate.
    pub(crate) fn promoted(&self, expected: &Arc<Loaded>) {
        if self.discard(expected) {
            tracing::info!(
                sequence = expected.snapshot.sequence(),
                "candidate promoted"
            );
        }
    }

    /// Looks in the candidate directory (blocking I/O): the newest file above the last one
    /// discarded that opens and verifies as a reload would becomes the candidate, unless it is
    /// the candidate already. Files that fail are logged with why and older ones are tried.
    pub(crate) fn refresh(&self, reloader: &Reloader) {
        let files = match SnapshotDir::new(&self.dir).list() {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "candidate directory cannot be listed");
                return;
            }
        };
        let discarded = self.discarded.load(Ordering::Relaxed);
        let current = self.candidate.load_full();
        for (sequence, path) in files.into_iter().rev() {
            if sequence <= discarded {
                break;
            }
            if let Some(c) = &current
                && c.snapshot.sequence() == sequence
                && c.origin == path.display().to_string()
            {
                return;
            }
            match reloader.open_checked(&path, sequence) {
                Ok(snapshot) => {
                    tracing::info!(
                        sequence,
                        content_id = snapshot.content_id(),
                        path = %path.display(),
                        sample = self.sample,
                        "candidate register loaded for shadow evaluation (not in force)"
                    );
                    self.set(Some(Loaded {
                        snapshot,
                        origin: path.display().to_string(),
                        loaded_at_unix_ms: now_unix_ms(),
                        delta: None,
                    }));
                    return;
                }
                Err(reason) => {
                    metrics::counter!("cccgate_shadow_candidate_refused_total").increment(1);
                    tracing::warn!(path = %path.display(), %reason, "candidate refused");
                }
            }
        }
    }

    /// The directory candidates come from.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Decides samples against the candidate.
struct Worker {
    shadow: std::sync::Weak<Shadow>,
    policy: Policy,
    checks: Counter,
}

/// How long the worker sleeps when it finds the queue empty. It polls rather than parks on the
/// channel: a parked receiver makes every `try_send` on the hot path wake it (a futex call and a
/// context switch per sample, ~9 µs of the checking thread's time at a 1% sample), while a
/// polling one costs the senders nothing but the queue push. At the queue's 16,384 samples a
/// 5 ms nap drops nothing below ~3M samples a second.
const NAP: std::time::Duration = std::time::Duration::from_millis(5);

impl Worker {
    fn run(self, mut rx: mpsc::Receiver<Sample>) {
        loop {
            let sample = match rx.try_recv() {
                Ok(sample) => sample,
                Err(mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(NAP);
                    continue;
                }
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            };
            let Some(shadow) = self.shadow.upgrade() else {
                return;
            };
            let Some(candidate) = shadow.candidate.load_full() else {
                continue;
            };
            // Sampled listings were valid when decided; validity does not depend on the register.
            let Ok(listing) = sample.listing.validate(sample.day) else {
                continue;
            };
            let v = check(&candidate.snapshot, &listing, &self.policy);
            shadow.checks.fetch_add(1, Ordering::Relaxed);
            self.checks.increment(1);
            if v.reason != sample.active {
                shadow.disagreements.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(
                    "cccgate_shadow_disagreements_total",
                    "active_reason" => sample.active.as_str(),
                    "candidate_reason" => v.reason.as_str(),
                )
                .increment(1);
                let l = &sample.listing;
                tracing::info!(
                    target: "cccgate::shadow",
                    listing_id = %l.listing_id,
                    merchant_id = %l.merchant_id,
                    product_code = %l.product_code,
                    certificate_number = %l.certificate_number,
                    model = %l.model,
                    active_reason = sample.active.as_str(),
                    candidate_reason = v.reason.as_str(),
                    candidate_decision = v.decision.as_str(),
                    candidate_sequence = candidate.snapshot.sequence(),
                    "shadow disagreement"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_sample_about_the_share_asked() {
        let threshold = (0.01 * 2f64.powi(64)) as u64;
        let hits = (0..100_000).filter(|_| draw() <= threshold).count();
        // 1,000 expected; a binomial spread of ~31, so 800..1200 is > 6 sigma.
        assert!((800..1200).contains(&hits), "{hits}");
        assert_eq!((1.0 * 2f64.powi(64)) as u64, u64::MAX);
        assert!((0..1000).all(|_| draw() > 0));
    }
}
