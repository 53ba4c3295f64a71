//! Watching the register change (spec/watch.md): the change feed (`WatchChanges`) and
//! watched listings (`WatchListings`).
//!
//! One task ([`run`]) follows the snapshot swaps (in order, from the store's writer; swaps
//! that land while it is still busy with an earlier one coalesce into the newest, see
//! [`Swaps`]; the feed then restarts its history rather than send one batch for several
//! snapshots) and the China-time midnights (from the [`Clock`]). For each swap it diffs the
//! new snapshot against the previous one it took, once ([`cccgate_snapshot::verdict_changes`]: a pure function of the two snapshots,
//! so every replica computes the same changes), appends the batch to the [`feed::Feed`] and
//! re-decides the watched listings of the changed certificates ([`registry::Registry`]). At
//! midnight it does the same for the certificates still marked valid whose expiry day has just
//! passed.

pub mod clock;
pub(crate) mod feed;
pub(crate) mod listings;
pub(crate) mod registry;
pub(crate) mod serve;

use std::sync::Arc;

use cccgate_core::{CertFacts, Day, Policy, Status};
use cccgate_proto::certificate_to_wire;
use cccgate_proto::v1::{CertificateChange, ChangeCause};

pub use clock::{Clock, ManualClock, SharedClock, SystemClock};

use crate::store::{Loaded, Swaps};
use registry::{Affected, Registry};

/// How long the work after a swap's pass waits for its CHANGED messages to leave.
const SENT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Default of `--watch-history`: swaps whose change batches are kept for resuming streams.
pub const DEFAULT_HISTORY: usize = 1_000;
/// Default of `--watch-max-listings`: listings one caller may watch at once.
pub const DEFAULT_MAX_LISTINGS: usize = 1_000_000;

/// The change feed and the registry of watched listings, shared by all streams.
#[derive(Debug)]
pub(crate) struct WatchHub {
    pub feed: Arc<feed::Feed>,
    pub registry: Arc<Registry>,
    pub clock: SharedClock,
}

impl WatchHub {
    pub(crate) fn new(
        clock: SharedClock,
        history: usize,
        policy: Policy,
        max_listings: usize,
        max_batch: usize,
    ) -> Arc<Self> {
        Arc::new(WatchHub {
            feed: Arc::new(feed::Feed::new(history)),
            registry: Registry::new(policy, max_listings, max_batch),
            clock,
        })
    }
}

impl WatchHub {
    /// The gateway is stopping: ends every watch stream.
    pub(crate) fn shutdown(&self) {
        self.feed.shutdown();
        self.registry.shutdown();
    }
}

fn change(
    before: Option<&CertFacts<'_>>,
    after: Option<&CertFacts<'_>>,
    number: u64,
) -> CertificateChange {
    CertificateChange {
        number: format!("{number:016}"),
        before: before.map(certificate_to_wire),
        after: after.map(certificate_to_wire),
    }
}

/// How a swap's change set was found: from the delta drop's rows, or by diffing the whole
/// registers (a snapshot file, a full drop, or a delta applied on another snapshot).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChangeSource {
    /// [`cccgate_snapshot::verdict_changes_among`] the delta's rows.
    DeltaRows,
    /// [`cccgate_snapshot::verdict_changes`] of both tables.
    Diff,
}

impl ChangeSource {
    fn as_str(self) -> &'static str {
        match self {
            ChangeSource::DeltaRows => "delta_rows",
            ChangeSource::Diff => "diff",
        }
    }
}

/// What one swap changed: the wire changes, the numbers, whether the catalogue changed, and
/// how they were found. The same changes either way (a delta's rows are the only
/// certificates it can change); the rows are used only when `new` was built from a delta
/// applied on exactly `old`.
fn swap_changes(old: &Loaded, new: &Loaded) -> (Vec<CertificateChange>, Affected, ChangeSource) {
    let (changes, source) = match &new.delta {
        Some(rows) if rows.applied_on(&old.snapshot) => (
            cccgate_snapshot::verdict_changes_among(&old.snapshot, &new.snapshot, &rows.numbers),
            ChangeSource::DeltaRows,
        ),
        _ => (
            cccgate_snapshot::verdict_changes(&old.snapshot, &new.snapshot),
            ChangeSource::Diff,
        ),
    };
    let wire = changes
        .iter()
        .map(|c| change(c.before.as_ref(), c.after.as_ref(), c.number.get()))
        .collect();
    let affected = if old.snapshot.catalogue().entries() != new.snapshot.catalogue().entries() {
        Affected::All
    } else {
        Affected::Certificates(changes.iter().map(|c| c.number.get()).collect())
    };
    (wire, affected, source)
}

/// What crossing from day `from` into day `to` changed: the valid certificates that lapsed
/// (reported with status EXPIRED after), and whether a catalogue period starts or ends.
fn day_changes(loaded: &Loaded, from: Day, to: Day) -> (Vec<CertificateChange>, Affected) {
    let lapsed = cccgate_snapshot::lapsed(&loaded.snapshot, from, to);
    let wire = lapsed
        .iter()
        .map(|c| {
            let expired = CertFacts {
                status: Status::Expired,
                ..*c
            };
            change(Some(c), Some(&expired), c.number.get())
        })
        .collect();
    let boundary = loaded.snapshot.catalogue().entries().iter().any(|e| {
        let within = |d: Day| d.days() > from.days() && d.days() <= to.days();
        within(e.from) || e.until.is_some_and(within)
    });
    let affected = if boundary {
        Affected::All
    } else {
        Affected::Certificates(lapsed.iter().map(|c| c.number.get()).collect())
    };
    (wire, affected)
}

/// Counts a batch of `n` certificate changes of this cause.
fn batch_metrics(cause: &'static str, n: usize) {
    metrics::counter!("cccgate_watch_batches_total", "cause" => cause).increment(1);
    metrics::counter!("cccgate_watch_certificate_changes_total", "cause" => cause)
        .increment(n as u64);
    metrics::histogram!("cccgate_watch_changes_per_batch", "cause" => cause).record(n as f64);
}

/// Follows swaps and midnights until the gateway stops (the swap sender is dropped).
pub(crate) async fn run(hub: Arc<WatchHub>, mut swaps: Swaps) {
    let mut current: Option<Arc<Loaded>> = None;
    let mut day = clock::today(&*hub.clock);
    loop {
        let midnight = hub
            .clock
            .sleep_until(clock::start_of(Day::from_days(day.days() + 1)));
        tokio::select! {
            next = swaps.recv() => {
                let Some(swap) = next else { return };
                let (new, skipped) = (swap.loaded, swap.skipped);
                day = cross_days(&hub, current.as_ref(), day).await;
                let sequence = new.snapshot.sequence();
                match current.replace(Arc::clone(&new)) {
                    None => {
                        // The registry first: once the feed shows the snapshot, adds see it.
                        let registry = Arc::clone(&hub.registry);
                        let _ = tokio::task::spawn_blocking(move || {
                            registry.apply(new, day, &Affected::Certificates(Vec::new()))
                        })
                        .await;
                        hub.feed.start(sequence, day.to_string());
                    }
                    Some(old) => {
                        let hub2 = Arc::clone(&hub);
                        let r = tokio::task::spawn_blocking(move || {
                            let t = std::time::Instant::now();
                            let (wire, affected, source) = swap_changes(&old, &new);
                            let n = wire.len();
                            let diff = t.elapsed();
                            metrics::histogram!("cccgate_watch_diff_duration_seconds", "source" => source.as_str())
                                .record(diff.as_secs_f64());
                            if skipped == 0 {
                                batch_metrics("snapshot", n);
                                hub2.feed.append(sequence, day.to_string(), ChangeCause::Snapshot, wire);
                            } else {
                                // Swaps outpaced the diffs: the feed cannot give one batch per
                                // snapshot for those it never saw, so they leave its history
                                // (callers behind them re-check everything, as after any gap).
                                tracing::warn!(sequence, skipped, "change feed: swaps outpaced the diffs; history restarts here");
                                hub2.feed.restart(sequence, day.to_string());
                            }
                            let t = std::time::Instant::now();
                            let in_force_at = new.loaded_at_unix_ms;
                            let pass = hub2.registry.apply(new, day, &affected);
                            metrics::histogram!("cccgate_watch_pass_duration_seconds")
                                .record(t.elapsed().as_secs_f64());
                            let pushed_in = t.elapsed();
                            // Freeing the previous snapshot and the diff's buffers, and giving
                            // their pages back (see `release_freed_memory`), waits until the
                            // CHANGED messages have left: a trim takes the allocator's locks
                            // and an unmap the address space's, which their sending needs.
                            hub2.registry.wait_sent(SENT_WAIT);
                            let sent_in = t.elapsed();
                            // From the swap itself (the snapshot put in force) to the last
                            // CHANGED message taken by its connection.
                            let in_force_to_sent = crate::metrics::now_unix_ms() - in_force_at;
                            if pass.changed > 0 {
                                metrics::histogram!("cccgate_watch_swap_to_sent_seconds")
                                    .record(in_force_to_sent as f64 / 1e3);
                            }
                            drop((old, affected));
                            release_freed_memory();
                            (n, source, diff, pass, pushed_in, sent_in, in_force_to_sent)
                        })
                        .await;
                        if let Ok((n, source, diff, pass, pushed_in, sent_in, in_force_to_sent)) = r {
                            tracing::info!(
                                sequence,
                                changes = n,
                                source = source.as_str(),
                                diff_ms = diff.as_secs_f64() * 1e3,
                                listings_decided = pass.decided,
                                changed_verdicts = pass.changed,
                                decide_ms = pass.decide.as_secs_f64() * 1e3,
                                pass_ms = pushed_in.as_secs_f64() * 1e3,
                                sent_ms = sent_in.as_secs_f64() * 1e3,
                                in_force_to_sent_ms = in_force_to_sent,
                                "change feed: swap"
                            );
                        }
                    }
                }
            }
            () = midnight => {
                day = cross_days(&hub, current.as_ref(), day).await;
            }
        }
    }
}

/// If the clock is past `day`, sends the DAY batch for the days crossed and re-decides the
/// listings of the lapsed certificates; returns the clock's day.
async fn cross_days(hub: &Arc<WatchHub>, current: Option<&Arc<Loaded>>, day: Day) -> Day {
    let today = clock::today(&*hub.clock);
    if today.days() <= day.days() {
        return day;
    }
    let Some(loaded) = current.cloned() else {
        return today;
    };
    let hub2 = Arc::clone(hub);
    let r = tokio::task::spawn_blocking(move || {
        let (wire, affected) = day_changes(&loaded, day, today);
        let n = wire.len();
        batch_metrics("day", n);
        let sequence = loaded.snapshot.sequence();
        hub2.feed.set_day(today.to_string());
        hub2.feed
            .append(sequence, today.to_string(), ChangeCause::Day, wire);
        let pass = hub2.registry.apply(loaded, today, &affected);
        (n, pass.changed)
    })
    .await;
    if let Ok((n, pushed)) = r {
        tracing::info!(day = %today, lapsed = n, changed_verdicts = pushed, "change feed: midnight");
    }
    today
}

/// Bytes held by the change histories of every gateway in this process (for the soak
/// benchmarks, which share the process with the gateway they measure).
pub fn change_history_bytes() -> u64 {
    feed::HELD_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Heap bytes in use (glibc's arenas and its mapped blocks), or `None` where glibc's
/// `mallinfo2` is not there. Walks every arena under its lock: for samples, not for a hot
/// loop.
pub fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallinfo2` only reads the allocator's bookkeeping, under its own locks.
        #[allow(unsafe_code)]
        let m = unsafe { libc::mallinfo2() };
        Some((m.uordblks + m.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Largest allocation glibc serves from its heaps; larger ones get a mapping of their own,
/// given back whole when freed ([`limit_allocator_retention`]).
pub const MMAP_THRESHOLD: usize = 1 << 20;
/// Free memory at the top of a glibc heap beyond which it is given back at once.
pub const TRIM_THRESHOLD: usize = 4 << 20;

/// Fixes glibc's mmap and trim thresholds for the process (call once, at start). By default
/// glibc raises both each time a large mapped block is freed, up to 32 MiB and 64 MiB: after
/// a swap frees a snapshot-sized buffer, blocks of up to 32 MiB are carved from the per-thread
/// heaps and up to 64 MiB of free space at the top of each heap stays resident, which
/// `malloc_trim` does not return for the threads' heaps (glibc 2.36 trims only their free
/// lists). A soak of 100 swaps of a 200,000-certificate register ended 2.4x its resident
/// memory before the swaps with the defaults, 1.6x with these. Fixed values also stop the
/// raising. A value the operator set in the environment (`MALLOC_MMAP_THRESHOLD_`,
/// `MALLOC_TRIM_THRESHOLD_`, or `glibc.malloc.mmap_threshold` / `trim_threshold` in
/// `GLIBC_TUNABLES`) is kept. No effect but on Linux with glibc.
pub fn limit_allocator_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |param: libc::c_int, value: usize, env: &str, tunable: &str| {
            if allocator_setting_in_env(env, tunable) {
                return;
            }
            // SAFETY: `mallopt` only sets the allocator's parameters; it takes the
            // allocator's lock itself and touches no memory the program owns.
            #[allow(unsafe_code)]
            unsafe {
                libc::mallopt(param, value as libc::c_int);
            }
        };
        set(
            libc::M_MMAP_THRESHOLD,
            MMAP_THRESHOLD,
            "MALLOC_MMAP_THRESHOLD_",
            "mmap_threshold",
        );
        set(
            libc::M_TRIM_THRESHOLD,
            TRIM_THRESHOLD,
            "MALLOC_TRIM_THRESHOLD_",
            "trim_threshold",
        );
    }
}

/// Whether glibc's allocator setting `tunable` is given in the environment, by its own
/// variable `env` or in `GLIBC_TUNABLES`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn allocator_setting_in_env(env: &str, tunable: &str) -> bool {
    std::env::var_os(env).is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| in_tunables(&t, tunable))
}

/// Whether `glibc.malloc.<tunable>=...` is among the colon-separated `tunables`.
#[cfg_attr(not(all(target_os = "linux", target_env = "gnu")), allow(dead_code))]
fn in_tunables(tunables: &str, tunable: &str) -> bool {
    tunables.split(':').any(|kv| {
        kv.split_once('=')
            .and_then(|(k, _)| k.strip_prefix("glibc.malloc."))
            .is_some_and(|k| k == tunable)
    })
}

/// Returns the heap's free pages to the system after a swap. A swap frees hundreds of MB
/// (the diff's buffers, the wire changes once encoded, the old snapshot's owned parts), in
/// small pieces spread over the allocator's per-thread arenas (glibc keeps up to 8 per core
/// and trims only the top of each): without this, a soak of full-register swaps grew the
/// resident set by ~160 MiB within a few swaps and kept it (1.25x; with `MALLOC_ARENA_MAX=2`
/// 1.08x). `malloc_trim` walks the arenas once, off the request path. Public for the
/// benchmarks, which share the process and sample its memory once a trim has run.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let t = std::time::Instant::now();
        // SAFETY: `malloc_trim` only releases memory glibc's allocator holds free; it takes
        // each arena's lock itself and touches no memory the program owns.
        #[allow(unsafe_code)]
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            released = released != 0,
            seconds = t.elapsed().as_secs_f64(),
            "heap trimmed after a swap"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::in_tunables;

    #[test]
    fn an_allocator_setting_in_glibc_tunables_is_found_by_its_name_only() {
        let t = "glibc.malloc.arena_max=4:glibc.malloc.trim_threshold=131072";
        assert!(in_tunables(t, "trim_threshold"));
        assert!(in_tunables(t, "arena_max"));
        assert!(!in_tunables(t, "mmap_threshold"));
        assert!(!in_tunables(
            "glibc.malloc.trim_threshold_x=1",
            "trim_threshold"
        ));
        assert!(!in_tunables(
            "glibc.rtld.trim_threshold=1",
            "trim_threshold"
        ));
        assert!(!in_tunables("", "trim_threshold"));
    }
}
