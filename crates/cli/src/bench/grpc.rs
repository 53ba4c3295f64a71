//! `cccgate bench grpc`: the gateway's gRPC throughput and latency per RPC, and under snapshot
//! swaps (see `cccgate_bench::grpc`). The report goes to stderr; its last line, to stdout, is
//! `grpc mode=M checks=N seconds=S checks_per_sec=R p50_us=A p99_us=B p999_us=C`; with
//! `--soak` (swap mode) the soak table goes to stderr and the `soak ...` line to stdout
//! before it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cccgate_bench::grpc::{
    GrpcConfig, GrpcMode, GrpcReport, Security, run_compare_blocking, run_grpc_blocking,
};
use cccgate_bench::{BenchError, GatewayChoice};
use cccgate_synth::{Profile, RegisterSpec};

use crate::replay::progress_mode;

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// `stream`, `batch`, `unary` or `swap` (CheckStream while snapshots are swapped in).
    #[arg(long, default_value = "stream")]
    mode: GrpcMode,
    /// A running gateway serving the synthetic register of --certs and --seed.
    #[arg(long, conflicts_with = "embedded")]
    target: Option<String>,
    /// Start the gateway in-process over the synthetic register (the default without
    /// --target; required by swap).
    #[arg(long)]
    embedded: bool,
    /// How to reach a --target that runs as in production (TLS, mTLS, caller token); the
    /// same flags as `replay` and `watch`.
    #[command(flatten)]
    caller: crate::caller::CallerArgs,
    /// The embedded gateway: `plain`; `tls-tokens` (TLS with a CA and certificate made for
    /// the run, and a caller token required, as in production); or `compare`: the same load
    /// against both, --rounds times each in alternating order, and the throughput ratio.
    #[arg(long, default_value = "plain")]
    security: Security,
    /// Rounds of each side with --security compare.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Listings to send (default: 10M; 1M for unary).
    #[arg(long)]
    checks: Option<u64>,
    /// Run for this many seconds instead (swap mode: the swaps stop when the time is up, and
    /// the report counts those done).
    #[arg(long)]
    seconds: Option<f64>,
    /// Listings per second over all senders (open loop); default: as fast as answered
    /// (swap: 300,000).
    #[arg(long)]
    rate: Option<f64>,
    /// Listings per call (stream, batch, swap).
    #[arg(long, default_value_t = 1_000)]
    chunk: usize,
    /// Calls in flight (default 8; 64 for unary).
    #[arg(long)]
    concurrency: Option<usize>,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Snapshot swaps (swap mode).
    #[arg(long, default_value_t = 10)]
    swaps: u32,
    /// Seconds between swaps. Each snapshot is prepared while the previous one serves; a
    /// swap whose snapshot is not ready yet waits for it (the report counts it late).
    #[arg(long, default_value_t = 3.0)]
    swap_every: f64,
    /// Swap mode: report resident memory, open descriptors, threads and the snapshot
    /// directory's disk at the start, after each tenth of the swaps and at the end, and
    /// print the `soak ...` summary line (format in benches/README.md).
    #[arg(long)]
    soak: bool,
    /// Listing mix: 2021 or 2025.
    #[arg(long, default_value = "2021")]
    profile: Profile,
    /// Certificate records of the synthetic register.
    #[arg(long, default_value_t = 1_200_000)]
    certs: usize,
    /// Seed of the synthetic register.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Worker threads of the senders' runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Worker threads of a runtime of the embedded gateway's own; 0 shares the senders'
    /// runtime. Default: 2 for unary (on one shared runtime tokio keeps each woken task on
    /// the waking thread, and the request-response ping-pong of unary calls then runs on one
    /// core), shared for the others.
    #[arg(long)]
    gateway_threads: Option<usize>,
    /// Where the embedded gateway's snapshots are cached between runs.
    #[arg(long, default_value = "target/cccgate-bench")]
    cache_dir: PathBuf,
    /// `auto`, `bar`, `lines` or `off`.
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10.0)]
    progress_every: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let d = GrpcConfig::new(args.mode);
    let cfg = GrpcConfig {
        gateway: match args.target {
            Some(t) => GatewayChoice::Target(t),
            None => GatewayChoice::Embedded {
                cache_dir: args.cache_dir,
            },
        },
        register: RegisterSpec {
            certs: args.certs,
            seed: args.seed,
            ..RegisterSpec::default()
        },
        profile: args.profile,
        checks: args.checks.unwrap_or(d.checks),
        seconds: args.seconds,
        rate: args.rate.or(d.rate),
        chunk: args.chunk,
        concurrency: args.concurrency.unwrap_or(d.concurrency),
        connections: args.connections,
        swaps: args.swaps,
        swap_every: Duration::try_from_secs_f64(args.swap_every).context("--swap-every")?,
        progress: progress_mode(&args.progress, args.progress_every)?,
        security: args.security,
        rounds: args.rounds,
        credentials: args.caller.credentials()?,
        ..d
    };
    let gateway_threads = match (args.gateway_threads, args.mode) {
        (Some(0), _) => None,
        (Some(n), _) => Some(n),
        (None, GrpcMode::Unary) => Some(2),
        (None, _) => None,
    };
    if args.soak && args.mode != GrpcMode::Swap {
        anyhow::bail!("--soak goes with --mode swap (and `bench year`)");
    }
    if args.security == Security::Compare {
        let cmp = run_compare_blocking(&cfg, args.client_threads, gateway_threads)?;
        eprintln!("{cmp}");
        println!("{}", cmp.last_line(&args.mode.to_string()));
        if cmp.errors() > 0 {
            anyhow::bail!(
                "{} errors and mismatched verdicts (must be zero)",
                cmp.errors()
            );
        }
        return Ok(());
    }
    let report = match run_grpc_blocking(&cfg, args.client_threads, gateway_threads) {
        Ok(report) => report,
        // A run that stopped part-way still reports what it did, then fails with the error.
        Err(BenchError::Stopped { report, error }) => {
            print_report(&report, args.soak);
            let swaps = report.memory.map_or(0, |m| m.swaps);
            anyhow::bail!(
                "the swap run stopped after {swaps} of {} swaps (the report above covers them): {error}",
                cfg.swaps
            );
        }
        Err(e) => return Err(e.into()),
    };
    print_report(&report, args.soak);
    if report.stats.errors() > 0 || report.stats.mismatches > 0 {
        anyhow::bail!(
            "{} errors and {} mismatched verdicts (both must be zero)",
            report.stats.errors(),
            report.stats.mismatches
        );
    }
    Ok(())
}

/// The report on stderr, the soak table too and its summary line before the last line on
/// stdout.
fn print_report(report: &GrpcReport, soak: bool) {
    eprintln!("{report}");
    if let Some(s) = report.soak.as_ref().filter(|_| soak) {
        eprintln!("{s}");
        println!("{}", s.summary_line());
    }
    println!("{}", report.last_line());
}
