//! `cccgate bench attack`: a normal caller's CheckStream latency while the gateway is attacked
//! (huge and largest batches, a flood, idle streams, a reload storm, calls without a token),
//! each attack's p99 as a ratio to the same stream with no attack, in one run (see
//! `cccgate_bench::attack`). The table goes to stderr; the last line, to stdout, is `attack
//! baseline_p99_us=N huge-batches=R largest-batches=R flood=R idle-streams=R reload-storm=R
//! no-token=R`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cccgate_bench::attack::{Attack, AttackConfig, run_attack_blocking};
use cccgate_synth::{Profile, RegisterSpec};

use crate::replay::progress_mode;

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The attacks, comma-separated: huge-batches, largest-batches, flood, idle-streams,
    /// reload-storm, no-token (default: all).
    #[arg(long, value_delimiter = ',')]
    attacks: Vec<Attack>,
    /// Seconds of each phase (with and without an attack).
    #[arg(long, default_value_t = 10.0)]
    phase_seconds: f64,
    /// The normal caller's listings per second (open loop).
    #[arg(long, default_value_t = 20_000.0)]
    rate: f64,
    /// Listings per stream message of the normal caller.
    #[arg(long, default_value_t = 100)]
    chunk: usize,
    /// The normal caller's streams.
    #[arg(long, default_value_t = 4)]
    streams: usize,
    /// The normal caller's HTTP/2 connections.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Unary calls the flood keeps in flight (the gateway's --max-in-flight is 1,024).
    #[arg(long, default_value_t = 2_048)]
    flood_calls: usize,
    /// Serve plaintext without tokens (every caller is then `anonymous`; the no-token attack
    /// is skipped). Default: TLS and tokens on, as in production.
    #[arg(long)]
    plaintext: bool,
    /// Listing mix: 2021 or 2025.
    #[arg(long, default_value = "2021")]
    profile: Profile,
    /// Certificate records of the synthetic register.
    #[arg(long, default_value_t = 1_200_000)]
    certs: usize,
    /// Seed of the synthetic register.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads of the callers' runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Worker threads of a runtime of the gateway's own; 0 (default) shares the callers'.
    #[arg(long, default_value_t = 0)]
    gateway_threads: usize,
    /// Where the embedded gateway's snapshots are cached between runs.
    #[arg(long, default_value = "target/cccgate-bench")]
    cache_dir: PathBuf,
    /// `auto`, `bar`, `lines` or `off`.
    #[arg(long, default_value = "off")]
    progress: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let d = AttackConfig::default();
    let cfg = AttackConfig {
        register: RegisterSpec {
            certs: args.certs,
            seed: args.seed,
            ..RegisterSpec::default()
        },
        profile: args.profile,
        cache_dir: args.cache_dir,
        attacks: if args.attacks.is_empty() {
            d.attacks.clone()
        } else {
            args.attacks
        },
        phase: Duration::try_from_secs_f64(args.phase_seconds).context("--phase-seconds")?,
        rate: args.rate,
        chunk: args.chunk,
        streams: args.streams,
        connections: args.connections,
        flood_calls: args.flood_calls,
        secure: !args.plaintext,
        progress: progress_mode(&args.progress, 10.0)?,
        ..d
    };
    let gateway_threads = (args.gateway_threads > 0).then_some(args.gateway_threads);
    let report = run_attack_blocking(&cfg, args.client_threads, gateway_threads)?;
    eprintln!("{report}");
    println!("{}", report.last_line());
    if report.normal_errors() > 0 {
        anyhow::bail!(
            "the normal caller got {} errors or mismatched verdicts under attack (must be zero)",
            report.normal_errors()
        );
    }
    Ok(())
}
