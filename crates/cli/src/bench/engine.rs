//! `cccgate bench engine`: the check engine alone (validate + decide), no network, over a
//! snapshot of a synthetic register (see `cccgate_bench::engine`). Set-up and the in-run
//! comparisons go to stderr; the last line, to stdout, is `engine certs=N checks=N threads=T
//! ns_per_check=X checks_per_sec=R snapshot_bytes=B rss_bytes=B open_ms=X batch=B`.

use std::path::PathBuf;

use cccgate_bench::engine::{EngineConfig, run_engine};
use cccgate_synth::Profile;

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
    let report = run_engine(&EngineConfig {
        certs: args.certs,
        checks: args.checks,
        profile: args.profile,
        threads: args.threads,
        batch: args.batch,
        pool: args.pool,
        rounds: args.rounds,
        seed: args.seed,
        mmap: args.mmap,
        cache_dir: args.cache_dir,
    })?;
    eprintln!("{report}");
    println!("{}", report.last_line());
    Ok(())
}
