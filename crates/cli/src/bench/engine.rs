//! `cccgate bench engine`: the check engine alone (validate + decide), no network, over a
//! snapshot of a synthetic register.
//!
//! Listings are generated before the clock starts into a pool that is cycled through, so the
//! timed loop is exactly what a gateway does per listing: `Listing::parse` on borrowed fields
//! and `check` against the shared snapshot. With more than one thread, a one-thread pass runs
//! first in the same process, so scaling is a ratio measured in one run.

use std::hint::black_box;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use cccgate_core::{Day, Decision, Listing, ListingEvent, Policy, Reason, check, check_all};
use cccgate_snapshot::{BuildInfo, FORMAT_VERSION, Snapshot, SnapshotBuilder};
use cccgate_synth::{GeneratedListing, ListingGenerator, Profile, RegisterSpec};

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Certificate records in the synthetic register.
    #[arg(long, default_value_t = 1_200_000)]
    certs: usize,
    /// Checks to time, per round.
    #[arg(long, default_value_t = 20_000_000)]
    checks: u64,
    /// Listing mix: 2021 or 2025.
    #[arg(long, default_value = "2021")]
    profile: Profile,
    /// Threads checking in parallel against the one shared snapshot.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Listings decided per call: 1 is `check` one at a time (a unary Check); more is
    /// `check_all` over chunks of that size, with prefetching (CheckBatch, CheckStream).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Distinct generated listings, cycled through (bounded so the pool fits in memory).
    #[arg(long, default_value_t = 1_000_000)]
    pool: usize,
    /// Timed rounds; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seed of the register and the listings.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Serve from the file mapping itself (4 KiB pages) instead of a copy in huge pages, as
    /// `Snapshot::open` does; the gateway uses `Snapshot::load`.
    #[arg(long)]
    mmap: bool,
    /// Where the built snapshot is cached between runs.
    #[arg(long, default_value = "target/cccgate-bench")]
    cache_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if args.threads == 0 || args.checks == 0 || args.pool == 0 || args.rounds == 0 {
        bail!("--threads, --checks, --pool and --rounds must be at least 1");
    }
    let t = Instant::now();
    let register = RegisterSpec {
        certs: args.certs,
        seed: args.seed,
        ..RegisterSpec::default()
    }
    .generate();
    eprintln!(
        "register: {} records generated in {:.2?}",
        register.records.len(),
        t.elapsed()
    );

    let path = args.cache_dir.join(format!(
        "engine-{}-{}-v{FORMAT_VERSION}.ccc",
        args.certs, args.seed
    ));
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
    .with_context(|| format!("snapshot cache {}", path.display()))?;
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
    let mapped = Snapshot::open(&path)?;
    let open = t.elapsed();
    eprintln!("snapshot: mapped and verified in {open:.2?}");
    let snapshot = if args.mmap {
        mapped
    } else {
        drop(mapped);
        let t = Instant::now();
        let loaded = Snapshot::load(&path)?;
        eprintln!(
            "snapshot: loaded into huge pages and verified in {:.2?}",
            t.elapsed()
        );
        loaded
    };

    let pool_len = args.pool.min(args.checks as usize);
    let mut generator = ListingGenerator::new(&register, args.profile, args.seed);
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
            .with_context(|| format!("listing {}", g.event.listing_id))?;
        let got = check(&snapshot, &listing, &policy).reason;
        if got != g.expected {
            bail!(
                "listing {}: expected {}, the engine said {got}",
                g.event.listing_id,
                g.expected
            );
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
        let mut rounds: Vec<Duration> = (0..args.rounds)
            .map(|_| {
                timed_pass(
                    &snapshot,
                    &pool,
                    args.checks,
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
    let one_thread = (args.threads > 1).then(|| time(1, args.batch));
    let one_at_a_time = (args.batch > 1).then(|| time(args.threads, 1));
    let elapsed = time(args.threads, args.batch);
    let secs = elapsed.as_secs_f64();
    let checks_per_sec = args.checks as f64 / secs;
    // Wall time per check on one thread: what one check costs a core.
    let ns_per_check = elapsed.as_nanos() as f64 * args.threads as f64 / args.checks as f64;
    if let Some(one) = one_thread {
        let scaling = one.as_secs_f64() / secs;
        eprintln!(
            "scaling: {} threads run {scaling:.2}x the one-thread rate (median of {} rounds each)",
            args.threads, args.rounds
        );
    }
    if let Some(single) = one_at_a_time {
        let ns = single.as_nanos() as f64 * args.threads as f64 / args.checks as f64;
        eprintln!(
            "batching: one listing at a time {ns:.1} ns per check; chunks of {} with prefetch {:.2}x faster",
            args.batch,
            single.as_secs_f64() / secs
        );
    }
    let miss = memory_latency_ns()?;
    eprintln!(
        "memory: one dependent random read over 256 MiB takes {miss:.1} ns here; a check costs {:.2} of them",
        ns_per_check / miss
    );
    println!(
        "engine certs={} checks={} threads={} ns_per_check={:.1} checks_per_sec={:.0} snapshot_bytes={} rss_bytes={} open_ms={:.1} batch={}",
        args.certs,
        args.checks,
        args.threads,
        ns_per_check,
        checks_per_sec,
        snapshot.byte_len(),
        rss_bytes(),
        open.as_secs_f64() * 1e3,
        args.batch,
    );
    Ok(())
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
fn memory_latency_ns() -> anyhow::Result<f64> {
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
