//! `cccgate bench year`: a profile's year of listing checks through a gateway (see
//! `cccgate_bench::year`). The report goes to stderr; its last line, to stdout, is
//! `year profile=P scale=F checks=N seconds=S checks_per_sec=R p99_us=B blocked=K errors=E`;
//! with `--soak` the soak table goes to stderr and the `soak ...` line to stdout before it.

use std::path::PathBuf;

use cccgate_bench::GatewayChoice;
use cccgate_bench::pace::Pace;
use cccgate_bench::year::{YearConfig, run_year_blocking};
use cccgate_synth::{Profile, RegisterSpec};

use crate::replay::progress_mode;

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The year: 2021 (81.769M checks) or 2025 (about 340M).
    #[arg(long)]
    profile: Profile,
    /// Fraction of the year's checks to send.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// A running gateway serving the synthetic register of --certs and --seed.
    #[arg(long, conflicts_with = "embedded")]
    target: Option<String>,
    /// Start the gateway in-process over the synthetic register (the default without
    /// --target).
    #[arg(long)]
    embedded: bool,
    /// `max` (as fast as the gateway answers) or `realtime-xK` (the year's curve, K times
    /// faster than real time, e.g. realtime-x100000 plays a year in about 5 minutes).
    #[arg(long, default_value = "max")]
    pace: Pace,
    /// Certificate records of the synthetic register.
    #[arg(long, default_value_t = 1_200_000)]
    certs: usize,
    /// Seed of the synthetic register.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seed of the listing stream.
    #[arg(long, default_value_t = 1)]
    listing_seed: u64,
    /// Listings per stream message.
    #[arg(long, default_value_t = 2_000)]
    chunk: usize,
    /// Streams (one sender each).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Worker threads of the senders' runtime.
    #[arg(long, default_value_t = 2)]
    client_threads: usize,
    /// Worker threads of a runtime of the embedded gateway's own; without it (or with 0) the
    /// gateway shares the senders' runtime.
    #[arg(long)]
    gateway_threads: Option<usize>,
    /// Where the embedded gateway's snapshot is cached between runs.
    #[arg(long, default_value = "target/cccgate-bench")]
    cache_dir: PathBuf,
    /// `auto`, `bar`, `lines` or `off`.
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10.0)]
    progress_every: f64,
    /// Play only these days of the year, `FROM..TO` in days since 1 January (fractions
    /// allowed; `313..315` is 10-11 November), along the year's curve: the checks due in
    /// them, the first due at once. A paced year lasts a year divided by the speed-up (8.8 h
    /// at realtime-x1000); a window of it is a soak of bounded length.
    #[arg(long, value_parser = parse_days)]
    days: Option<(f64, f64)>,
    /// The embedded gateway's decision log: one JSON line per verdict to this file.
    #[arg(long)]
    decision_log: Option<PathBuf>,
    /// Rotate the decision log when a file reaches this many MiB (default: the gateway's).
    #[arg(long, requires = "decision_log")]
    decision_log_file_mib: Option<u64>,
    /// Rotated decision log files kept (default: the gateway's).
    #[arg(long, requires = "decision_log")]
    decision_log_keep: Option<usize>,
    /// Report resident memory, open descriptors, threads and the disk of the embedded
    /// gateway's snapshot directory and decision log at the start, after each tenth of the
    /// checks and at the end, and print the `soak ...` summary line (format in
    /// benches/README.md).
    #[arg(long)]
    soak: bool,
}

fn parse_days(s: &str) -> Result<(f64, f64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("{s:?}: expected FROM..TO in days, e.g. 313..315"))?;
    let day = |x: &str| {
        x.trim()
            .parse::<f64>()
            .map_err(|e| format!("{s:?}: {x:?} is not a number of days: {e}"))
    };
    Ok((day(a)?, day(b)?))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = YearConfig {
        scale: args.scale,
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
        listing_seed: args.listing_seed,
        pace: args.pace,
        chunk: args.chunk,
        concurrency: args.concurrency,
        connections: args.connections,
        progress: progress_mode(&args.progress, args.progress_every)?,
        window: args.days,
        decision_log: args.decision_log,
        decision_log_rotation: (args.decision_log_file_mib.is_some()
            || args.decision_log_keep.is_some())
        .then(|| {
            let d = cccgate_server::Config::default();
            (
                args.decision_log_file_mib
                    .map_or(d.decision_log_max_file_bytes, |m| m << 20),
                args.decision_log_keep.unwrap_or(d.decision_log_keep_files),
            )
        }),
        ..YearConfig::new(args.profile)
    };
    let gateway_threads = args.gateway_threads.filter(|&n| n > 0);
    let report = run_year_blocking(&cfg, args.client_threads, gateway_threads)?;
    eprintln!("{report}");
    if args.soak {
        eprintln!("{}", report.soak);
        println!("{}", report.soak.summary_line());
    }
    println!("{}", report.last_line());
    if report.errors() > 0 || report.stats.mismatches > 0 {
        anyhow::bail!(
            "{} errors and {} mismatched verdicts (both must be zero)",
            report.errors(),
            report.stats.mismatches
        );
    }
    Ok(())
}
