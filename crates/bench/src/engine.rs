//! The engine benchmark (`cccgate bench engine`): the check engine alone (validate + decide), no network, over a
//! snapshot of a synthetic register.
//!
//! Listings are generated before the clock starts into a pool that is cycled through, so the
//! timed loop is exactly what a gateway does per listing: `Listing::parse` on borrowed fields
//! and `check` against the shared snapshot. With more than one thread, a one-thread pass runs
//! first in the same process, so scaling is a ratio measured in one run.

use std::fmt;
use std::hint::black_box;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cccgate_core::{Day, Decision, Listing, ListingEvent, Policy, Reason, check, check_all};
use cccgate_snapshot::{BuildInfo, FORMAT_VERSION, Snapshot, SnapshotBuilder};
use cccgate_synth::{GeneratedListing, ListingGenerator, Profile, RegisterSpec};

use crate::setup::BenchError;

/// What to run.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Certificate records in the synthetic register.
    pub certs: usize,
    /// Checks to time, per round.
    pub checks: u64,
    /// Listing mix.
    pub profile: Profile,
    /// Threads checking in parallel against the one shared snapshot.
    pub threads: usize,
    /// Listings decided per call: 1 is `check` one at a time (a unary Check); more is
    /// `check_all` over chunks of that size, with prefetching (CheckBatch, CheckStream).
    pub batch: usize,
    /// Distinct generated listings, cycled through (bounded so the pool fits in memory).
    pub pool: usize,
    /// Timed rounds; the median is reported.
    pub rounds: usize,
    /// Seed of the register and the listings.
    pub seed: u64,
    /// Serve from the file mapping itself (4 KiB pages) instead of a copy in huge pages, as
    /// `Snapshot::open` does; the gateway uses `Snapshot::load`.
    pub mmap: bool,
    /// Where the built snapshot is cached between runs.
    pub cache_dir: PathBuf,
}

impl Default for EngineConfig {
    /// The full-scale register (1.2M certificates), 20M checks a round, one thread, one
    /// listing at a time, a pool of 1M listings, 3 rounds.
    fn default() -> Self {
        EngineConfig {
            certs: 1_200_000,
            checks: 20_000_000,
            profile: Profile::Y2021,
            threads: 1,
            batch: 1,
            pool: 1_000_000,
            rounds: 3,
            seed: 1,
            mmap: false,
            cache_dir: PathBuf::from("target/cccgate-bench"),
        }
    }
}

/// What an engine run measured.
#[derive(Clone, Debug)]
pub struct EngineReport {
    /// The run's settings.
    pub config: EngineConfig,
    /// Median wall time of a round at `threads` threads and `batch`.
    pub elapsed: Duration,
    /// Median wall time of a round on one thread (when `threads > 1`).
    pub one_thread: Option<Duration>,
    /// Median wall time of a round one listing at a time (when `batch > 1`).
    pub one_at_a_time: Option<Duration>,
    /// This machine's latency of one random memory read that misses every cache.
    pub memory_ns: f64,
    /// Size of the snapshot.
    pub snapshot_bytes: u64,
    /// Resident memory at the end.
    pub rss_bytes: u64,
    /// Time to map and verify the snapshot file.
    pub open: Duration,
}

impl EngineReport {
    /// Checks per second over all threads.
    pub fn checks_per_sec(&self) -> f64 {
        self.config.checks as f64 / self.elapsed.as_secs_f64()
    }

    /// Wall time per check on one thread: what one check costs a core.
    pub fn ns_per_check(&self) -> f64 {
        self.elapsed.as_nanos() as f64 * self.config.threads as f64 / self.config.checks as f64
    }

    /// The last line: `engine certs=N checks=N threads=T ns_per_check=X checks_per_sec=R
    /// snapshot_bytes=B rss_bytes=B open_ms=X batch=B`.
    pub fn last_line(&self) -> String {
        let c = &self.config;
        format!(
            "engine certs={} checks={} threads={} ns_per_check={:.1} checks_per_sec={:.0} snapshot_bytes={} rss_bytes={} open_ms={:.1} batch={}",
            c.certs,
            c.checks,
            c.threads,
            self.ns_per_check(),
            self.checks_per_sec(),
            self.snapshot_bytes,
            self.rss_bytes,
            self.open.as_secs_f64() * 1e3,
            c.batch,
        )
    }
}

impl fmt::Display for EngineReport {
    /// The comparisons made within the run, as ratios, and the cost of a check in memory
    /// misses.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let secs = self.elapsed.as_secs_f64();
        if let Some(one) = self.one_thread {
            let scaling = one.as_secs_f64() / secs;
            writeln!(
                f,
                "scaling: {} threads run {scaling:.2}x the one-thread rate (median of {} rounds each)",
                c.threads, c.rounds
            )?;
        }
        if let Some(single) = self.one_at_a_time {
            let ns = single.as_nanos() as f64 * c.threads as f64 / c.checks as f64;
            writeln!(
                f,
                "batching: one listing at a time {ns:.1} ns per check; chunks of {} with prefetch {:.2}x faster",
                c.batch,
                single.as_secs_f64() / secs
            )?;
        }
        write!(
            f,
            "memory: one dependent random read over 256 MiB takes {:.1} ns here; a check costs {:.2} of them",
            self.memory_ns,
            self.ns_per_check() / self.memory_ns
        )
    }
}

/// Runs the engine benchmark: the register, its snapshot (cached), a pool of listings each
/// checked against its expected reason, then the timed rounds. Set-up steps are told on
/// stderr as they finish.
pub fn run_engine(cfg: &EngineConfig) -> Result<EngineReport, BenchError> {
    if cfg.threads == 0 || cfg.checks == 0 || cfg.pool == 0 || cfg.rounds == 0 {
        return Err(BenchError::Invalid(
            "--threads, --checks, --pool and --rounds must be at least 1".into(),
        ));
    }
    let t = Instant::now();
    let register = RegisterSpec {
        certs: cfg.certs,
        seed: cfg.seed,
        ..RegisterSpec::default()
    }
    .generate();
    eprintln!(
        "register: {} records generated in {:.2?}",
        register.records.len(),
        t.elapsed()
    );

    let path = cfg.cache_dir.join(format!(
        "engine-{}-{}-v{FORMAT_VERSION}.ccc",
        cfg.certs, cfg.seed
    ));
    let snapshot_err = |source| BenchError::Snapshot {
        path: path.clone(),
        source,
    };
    let t = Instant::now();
    let snapshot = Snapshot::open_or_build(&path, || {
        let info = BuildInfo {
            sequence: 1,
            source: "synth".into(),
            generated_at: String::new(),
            built_at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        };
        SnapshotBuilder::from_records(
            info,
            register.catalogue.clone(),
            register.records.iter().cloned(),
        )
        .build()
    })
    .map_err(snapshot_err)?;
    eprintln!(
        "snapshot: {} ({} bytes) ready in {:.2?}",
        path.display(),
        snapshot.byte_len(),
        t.elapsed()
    );
    // Opening again measures the open (mmap, checksum, validation) with the file in the page
    // cache; then the snapshot is loaded the way the gateway loads it, unless --mmap.
    drop(snapshot);
    let t = Instant::now();
    let mapped = Snapshot::open(&path).map_err(snapshot_err)?;
    let open = t.elapsed();
    eprintln!("snapshot: mapped and verified in {open:.2?}");
    let snapshot = if cfg.mmap {
        mapped
    } else {
        drop(mapped);
        let t = Instant::now();
        let loaded = Snapshot::load(&path).map_err(snapshot_err)?;
        eprintln!(
            "snapshot: loaded into huge pages and verified in {:.2?}",
            t.elapsed()
        );
        loaded
    };

    let pool_len = cfg.pool.min(cfg.checks as usize);
    let mut generator = ListingGenerator::new(&register, cfg.profile, cfg.seed);
    let received_day = generator.as_of();
    drop(register);

    // Every pooled listing must get the reason the generator expects, or the numbers below
    // would measure the wrong thing.
    let policy = Policy::default();
    let mut mix = [0u64; Reason::COUNT];
    let mut pool = Pool::default();
    let mut g = GeneratedListing::default();
    for _ in 0..pool_len {
        generator.fill(&mut g);
        let listing = g
            .event
            .listing(received_day)
            .map_err(|e| BenchError::Mismatch(format!("listing {}: {e}", g.event.listing_id)))?;
        let got = check(&snapshot, &listing, &policy).reason;
        if got != g.expected {
            return Err(BenchError::Mismatch(format!(
                "listing {}: expected {}, the engine said {got}",
                g.event.listing_id, g.expected
            )));
        }
        mix[got.index()] += 1;
        pool.push(&g.event);
    }
    drop(generator);
    let blocked: u64 = Reason::ALL
        .iter()
        .filter(|r| policy.decision(**r) == Decision::Block)
        .map(|r| mix[r.index()])
        .sum();
    eprintln!(
        "pool: {pool_len} listings, all verdicts as expected, {:.2}% blocked",
        100.0 * blocked as f64 / pool_len as f64
    );

    let time = |threads: usize, batch: usize| -> Duration {
        let mut rounds: Vec<Duration> = (0..cfg.rounds)
            .map(|_| {
                timed_pass(
                    &snapshot,
                    &pool,
                    cfg.checks,
                    threads,
                    batch,
                    received_day,
                    &policy,
                )
            })
            .collect();
        rounds.sort();
        rounds[rounds.len() / 2]
    };
    // Comparisons are made within this run, as ratios: one thread against T, one listing at
    // a time against chunks.
    let one_thread = (cfg.threads > 1).then(|| time(1, cfg.batch));
    let one_at_a_time = (cfg.batch > 1).then(|| time(cfg.threads, 1));
    let elapsed = time(cfg.threads, cfg.batch);
    let memory_ns = memory_latency_ns().map_err(BenchError::Runtime)?;
    Ok(EngineReport {
        config: cfg.clone(),
        elapsed,
        one_thread,
        one_at_a_time,
        memory_ns,
        snapshot_bytes: snapshot.byte_len() as u64,
        rss_bytes: rss_bytes(),
        open,
    })
}

/// Runs `checks` checks split over `threads` threads, each cycling through the pool from its
/// own offset, one listing at a time (`check`) or in chunks of `batch` (`check_all`, as the
/// gateway decides a batch or a stream message); returns the wall time.
fn timed_pass(
    snapshot: &Snapshot,
    pool: &Pool,
    checks: u64,
    threads: usize,
    batch: usize,
    received_day: Day,
    policy: &Policy,
) -> Duration {
    let per_thread = checks / threads as u64;
    let start = Instant::now();
    thread::scope(|s| {
        for t in 0..threads {
            s.spawn(move || {
                let mut i = t * pool.len() / threads;
                let mut sink = 0u64;
                let mut next = || {
                    let [id, merchant, code, number, model, time] = pool.fields(i);
                    i = if i + 1 == pool.len() { 0 } else { i + 1 };
                    Listing::parse(id, merchant, code, number, model, time, received_day)
                };
                if batch <= 1 {
                    for _ in 0..per_thread {
                        if let Ok(listing) = next() {
                            sink =
                                sink.wrapping_add(check(snapshot, &listing, policy).reason as u64);
                        }
                    }
                } else {
                    let mut chunk = Vec::with_capacity(batch);
                    let mut done = 0;
                    while done < per_thread {
                        chunk.clear();
                        let n = (per_thread - done).min(batch as u64);
                        chunk.extend((0..n).filter_map(|_| next().ok()));
                        check_all(snapshot, &chunk, policy, |_, v| {
                            sink = sink.wrapping_add(v.reason as u64)
                        });
                        done += n;
                    }
                }
                black_box(sink);
            });
        }
    });
    start.elapsed()
}

/// This machine's latency of one random memory access that misses every cache: a pointer
/// chase over a 256 MiB single-cycle permutation (Sattolo), so each read depends on the last,
/// in memory advised for huge pages like the snapshot's. A check's cost is best read as a
/// multiple of this.
fn memory_latency_ns() -> std::io::Result<f64> {
    const LEN: usize = 32 << 20; // 32M u64 = 256 MiB
    let mut map = memmap2::MmapOptions::new().len(LEN * 8).map_anon()?;
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    let next: &mut [u64] = bytemuck_u64(&mut map);
    for (i, n) in next.iter_mut().enumerate() {
        *n = i as u64;
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..LEN).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = (x % i as u64) as usize;
        next.swap(i, j);
    }
    let steps = 5_000_000;
    let mut at = 0u64;
    let start = Instant::now();
    for _ in 0..steps {
        at = next[at as usize];
    }
    black_box(at);
    Ok(start.elapsed().as_nanos() as f64 / steps as f64)
}

/// The mapping as `u64`s (it is page-aligned and a multiple of 8 long).
fn bytemuck_u64(map: &mut [u8]) -> &mut [u64] {
    // SAFETY: a fresh anonymous mapping is page-aligned (so 8-aligned), zero-filled, and its
    // length is a multiple of 8; every bit pattern is a valid u64.
    #[allow(unsafe_code)]
    unsafe {
        std::slice::from_raw_parts_mut(map.as_mut_ptr().cast::<u64>(), map.len() / 8)
    }
}

/// Generated listings packed into one buffer, in order, so cycling through them reads memory
/// sequentially: the listing's own bytes cost what a freshly decoded request costs a gateway
/// (nothing much), and the misses measured are the snapshot's.
#[derive(Default)]
struct Pool {
    text: String,
    /// End offsets of the six fields of each listing.
    ends: Vec<[u32; 6]>,
}

impl Pool {
    fn push(&mut self, e: &ListingEvent) {
        let mut ends = [0u32; 6];
        for (end, field) in ends.iter_mut().zip([
            &e.listing_id,
            &e.merchant_id,
            &e.product_code,
            &e.certificate_number,
            &e.model,
            &e.event_time,
        ]) {
            self.text.push_str(field);
            *end = self.text.len() as u32;
        }
        self.ends.push(ends);
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    #[inline]
    fn fields(&self, i: usize) -> [&str; 6] {
        let ends = &self.ends[i];
        let mut start = if i == 0 {
            0
        } else {
            self.ends[i - 1][5] as usize
        };
        ends.map(|end| {
            let f = &self.text[start..end as usize];
            start = end as usize;
            f
        })
    }
}

/// Resident set size of this process, from `/proc/self/status` (0 where unavailable).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
