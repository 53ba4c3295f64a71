//! `cccgate bench snapshot-load`: what loading a snapshot costs at a swap, the gateway's way
//! (a copy in private memory) against mapping the file in place, in one run (see
//! `cccgate_bench::snapload`). The table goes to stderr; the last line, to stdout, is
//! `snapshot-load bytes=B private_ms=A mapped_ms=B time_ratio=R private_peak_bytes=P
//! mapped_peak_bytes=Q`.

use std::path::PathBuf;

use cccgate_bench::snapload::{LoadCostConfig, run_load_cost};
use cccgate_synth::RegisterSpec;

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Certificate records of the synthetic register.
    #[arg(long, default_value_t = 1_200_000)]
    certs: usize,
    /// Seed of the synthetic register.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Rounds; each loads the snapshot both ways, alternating which goes first.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Where the snapshot is cached between runs.
    #[arg(long, default_value = "target/cccgate-bench")]
    cache_dir: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cost = run_load_cost(&LoadCostConfig {
        register: RegisterSpec {
            certs: args.certs,
            seed: args.seed,
            ..RegisterSpec::default()
        },
        cache_dir: args.cache_dir,
        rounds: args.rounds,
    })?;
    eprintln!("{cost}");
    println!("{}", cost.last_line());
    Ok(())
}
