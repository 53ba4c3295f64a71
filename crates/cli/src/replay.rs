//! `cccgate replay`: a file of listing events through a gateway, one verdict line out per
//! input record, in input order, and a summary at the end (see `cccgate_client::replay`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cccgate_client::input::Format;
use cccgate_client::progress::Mode;
use cccgate_client::replay::{ReplayConfig, replay_blocking};
use cccgate_client::wire::Rpc;

/// Options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The gateway; give it several times for replicas serving the same register: chunks are
    /// spread over them, and a chunk whose gateway fails goes to another, so every record is
    /// answered exactly once, in input order.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    target: Vec<String>,
    /// Listing events: JSON lines or CSV (with the spec's column names), plain or gzip; `-`
    /// reads stdin.
    #[arg(long, required_unless_present = "merge_summaries")]
    input: Option<PathBuf>,
    /// Where the verdicts go, one JSON line per input record; `-` writes stdout. Truncated,
    /// unless --skip is given (then appended to).
    #[arg(long, required_unless_present = "merge_summaries")]
    out: Option<PathBuf>,
    /// Replay only shard I of N (e.g. 0/4): the listings of the merchants whose id hashes to
    /// I modulo N (and bad lines by line number). N runs, one per shard, handle every record
    /// exactly once; merge their --summary-json files with --merge-summaries.
    #[arg(long, value_name = "I/N", value_parser = cccgate_client::merge::parse_shard)]
    shard: Option<(u64, u64)>,
    /// Merge the --summary-json files of shards 0/N..N-1/N of one input into the summary of
    /// the whole run (printed, and written to --summary-json if given); replays nothing.
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with_all = ["input", "out", "shard"])]
    merge_summaries: Vec<PathBuf>,
    /// The input format, if neither the file name nor the first character tells.
    #[arg(long)]
    format: Option<Format>,
    /// Calls in flight per target (streams, or CheckBatch calls).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Listings per request message.
    #[arg(long, default_value_t = 2_000)]
    chunk: usize,
    /// `stream` (CheckStream) or `batch` (CheckBatch).
    #[arg(long, default_value = "stream", value_parser = parse_rpc)]
    rpc: Rpc,
    /// HTTP/2 connections to the gateway.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Skip the first N input records (data lines) and append to --out: resumes a replay
    /// that stopped, with the number it printed.
    #[arg(long, default_value_t = 0)]
    skip: u64,
    /// Refuse verdicts from a snapshot older than this sequence.
    #[arg(long, default_value_t = 0)]
    min_snapshot_sequence: u64,
    /// Retries of one failed call (gateway unreachable, restarting or overloaded).
    #[arg(long, default_value_t = 8)]
    retries: u32,
    /// Longest time, in seconds, one call may keep failing before the replay stops.
    #[arg(long, default_value_t = 60.0)]
    retry_for: f64,
    /// Longest wait for one answer, in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// `auto` (a bar on a terminal, lines otherwise), `bar`, `lines` or `off`.
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10.0)]
    progress_every: f64,
    /// After the replay, keep its listings watched on the (first) target and append a line
    /// to --out for every CHANGED verdict (`"event":"CHANGED"`), until Ctrl-C or --watch-for.
    #[arg(long)]
    watch: bool,
    /// With --watch: stop watching after this many seconds.
    #[arg(long, value_name = "SECONDS", requires = "watch")]
    watch_for: Option<f64>,
    #[command(flatten)]
    caller: crate::caller::CallerArgs,
}

pub fn parse_rpc(s: &str) -> Result<Rpc, String> {
    match s {
        "stream" => Ok(Rpc::Stream),
        "batch" => Ok(Rpc::Batch),
        _ => Err(format!("{s:?}: expected stream or batch")),
    }
}

/// `--progress` and `--progress-every` as a mode.
pub fn progress_mode(mode: &str, every: f64) -> anyhow::Result<Mode> {
    let every = Duration::try_from_secs_f64(every.max(0.1)).context("--progress-every")?;
    Ok(match mode {
        "auto" => Mode::auto(every),
        "bar" => Mode::Bar,
        "lines" => Mode::Lines(every),
        "off" => Mode::Off,
        other => anyhow::bail!("--progress {other:?}: expected auto, bar, lines or off"),
    })
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.merge_summaries.is_empty() {
        let summary = cccgate_client::merge::merge_summary_files(&args.merge_summaries)?;
        eprintln!("{summary}");
        return write_summary(args.summary_json.as_deref(), &summary);
    }
    let (Some(input), Some(out)) = (&args.input, &args.out) else {
        anyhow::bail!("--input and --out are required");
    };
    let seconds = |name: &str, s: f64| {
        Duration::try_from_secs_f64(s).with_context(|| format!("{name} {s} is not a duration"))
    };
    let cfg = ReplayConfig {
        format: args.format,
        concurrency: args.concurrency,
        connections: args.connections,
        chunk: args.chunk,
        rpc: args.rpc,
        skip: args.skip,
        min_snapshot_sequence: args.min_snapshot_sequence,
        retries: args.retries,
        retry_for: seconds("--retry-for", args.retry_for)?,
        timeout: seconds("--timeout", args.timeout)?,
        progress: progress_mode(&args.progress, args.progress_every)?,
        shard: args.shard,
        targets: args.target.clone(),
        credentials: args.caller.credentials()?,
        ..ReplayConfig::new("", input, out)
    };
    let outcome = replay_blocking(&cfg)?;
    eprintln!("{}", outcome.summary);
    write_summary(args.summary_json.as_deref(), &outcome.summary)?;
    if let Some(stopped) = outcome.stopped {
        anyhow::bail!("{stopped}");
    }
    if args.watch {
        watch_after(&args, input, out)?;
    }
    Ok(())
}

/// `--watch`: the replayed listings stay watched; CHANGED verdicts are appended to `out`.
fn watch_after(args: &Args, input: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    if input.as_os_str() == "-" {
        anyhow::bail!("--watch reads the input a second time: give a file, not stdin");
    }
    let target = args.target.first().context("--target")?;
    let limit = crate::watch::watch_for(args.watch_for)?;
    let mut sink: Box<dyn std::io::Write + Send> = if out.as_os_str() == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .append(true)
                .open(out)
                .with_context(|| format!("cannot append to {}", out.display()))?,
        )
    };
    eprintln!(
        "watching the replayed listings on {target}; CHANGED verdicts go to {}",
        out.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let credentials = args.caller.credentials()?;
    let n = rt.block_on(cccgate_client::watch::watch_listings(
        target,
        &credentials,
        input,
        args.format,
        args.chunk,
        false,
        &mut *sink,
        crate::watch::stop_signal(limit),
    ))?;
    eprintln!("{n} CHANGED verdicts appended");
    Ok(())
}

fn write_summary(
    path: Option<&std::path::Path>,
    summary: &cccgate_client::summary::Summary,
) -> anyhow::Result<()> {
    if let Some(path) = path {
        let json = serde_json::to_vec_pretty(summary)?;
        std::fs::write(path, json)
            .with_context(|| format!("cannot write the summary to {}", path.display()))?;
    }
    Ok(())
}
