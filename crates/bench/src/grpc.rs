//! The gRPC benchmark: the gateway's throughput and latency per RPC, and what a snapshot swap
//! does to them.
//!
//! - `stream`: `CheckStream` in chunks, one call in flight per stream.
//! - `batch`: `CheckBatch` calls of a chunk each.
//! - `unary`: `Check`, one listing a call, `concurrency` calls in flight; with `--rate` the
//!   calls are sent on a fixed schedule (open loop) and latency counts from when each call was
//!   due, so a gateway that falls behind shows it.
//! - `swap`: `CheckStream` at a steady rate while the embedded gateway swaps in a new snapshot
//!   every few seconds; latency is split between calls that overlapped a swap and the rest,
//!   and resident memory is sampled each second against the snapshot's size.
//!
//! Listings come from the synthetic register the gateway serves; every verdict is checked
//! against its expected reason. A swap publishes a snapshot with the same certificates and
//! a higher sequence, so no verdict's reason may change across a swap: a mismatch would be a
//! wrong answer. Each verdict's own `snapshot_sequence` must also equal its response's (a
//! response mixing two snapshots counts as `torn`), and the sequences the responses carried
//! are reported. (That a verdict is decided by the snapshot it is labelled with, with
//! registers that differ, is pinned by `tests/gateway_swap.rs`.)

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cccgate_snapshot::{Snapshot, SnapshotBuilder, file_name};
use cccgate_synth::{Profile, RegisterSpec};

use cccgate_client::progress::Mode;
use cccgate_client::summary::{Latency, micros, thousands};
use cccgate_client::wire::Rpc;

use crate::drive::{Drive, Driven, Pacing, drive};
use crate::embedded::{EmbeddedError, EmbeddedGateway, bench_build_info};
use crate::load::{LoadStats, RunShared, resident_bytes};
use crate::setup::{BenchError, GatewayChoice, block_on_runtimes, setup};

/// What the benchmark exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcMode {
    /// `Check`, one listing a call.
    Unary,
    /// `CheckBatch`, a chunk a call.
    Batch,
    /// `CheckStream`, a chunk a message.
    Stream,
    /// `CheckStream` while snapshots are swapped in.
    Swap,
}

impl GrpcMode {
    fn rpc(self) -> Rpc {
        match self {
            GrpcMode::Unary => Rpc::Unary,
            GrpcMode::Batch => Rpc::Batch,
            GrpcMode::Stream | GrpcMode::Swap => Rpc::Stream,
        }
    }
}

impl FromStr for GrpcMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "unary" | "check" => Ok(GrpcMode::Unary),
            "batch" => Ok(GrpcMode::Batch),
            "stream" => Ok(GrpcMode::Stream),
            "swap" => Ok(GrpcMode::Swap),
            _ => Err(format!("mode {s:?}: expected unary, batch, stream or swap")),
        }
    }
}

impl fmt::Display for GrpcMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GrpcMode::Unary => "unary",
            GrpcMode::Batch => "batch",
            GrpcMode::Stream => "stream",
            GrpcMode::Swap => "swap",
        })
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct GrpcConfig {
    /// The RPC.
    pub mode: GrpcMode,
    /// The gateway (`swap` needs the embedded one).
    pub gateway: GatewayChoice,
    /// The synthetic register.
    pub register: RegisterSpec,
    /// The listing mix.
    pub profile: Profile,
    /// Seed of the listing stream.
    pub listing_seed: u64,
    /// Listings to send (ignored when `seconds` is set, and in `swap` mode, which runs until
    /// every swap is done and one more interval has passed, unless `seconds` is set).
    pub checks: u64,
    /// Run for this long instead of a number of checks.
    pub seconds: Option<f64>,
    /// Listings per second over all senders (open loop); `None`: as fast as answered.
    pub rate: Option<f64>,
    /// Listings per call (stream, batch, swap).
    pub chunk: usize,
    /// Calls in flight.
    pub concurrency: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Snapshot swaps (`swap` mode).
    pub swaps: u32,
    /// Time between swaps.
    pub swap_every: Duration,
    /// Progress on stderr.
    pub progress: Mode,
}

impl GrpcConfig {
    /// The defaults of a mode: the embedded gateway over the full-scale register; 10M
    /// checks in chunks of 1,000 over 8 streams (stream, batch), 1M unary calls with 64 in
    /// flight, or 10 swaps 3 s apart at 300,000 checks/s (swap).
    pub fn new(mode: GrpcMode) -> Self {
        let unary = mode == GrpcMode::Unary;
        GrpcConfig {
            mode,
            gateway: GatewayChoice::Embedded {
                cache_dir: crate::embedded::default_cache_dir(),
            },
            register: RegisterSpec::default(),
            profile: Profile::Y2021,
            listing_seed: 7,
            checks: if unary { 1_000_000 } else { 10_000_000 },
            seconds: None,
            rate: (mode == GrpcMode::Swap).then_some(300_000.0),
            chunk: 1_000,
            concurrency: if unary { 64 } else { 8 },
            connections: 2,
            swaps: 10,
            swap_every: Duration::from_secs(3),
            progress: Mode::auto(Duration::from_secs(10)),
        }
    }
}

/// Memory around snapshot swaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwapMemory {
    /// Swaps done.
    pub swaps: u32,
    /// Size of one snapshot file.
    pub snapshot_bytes: u64,
    /// Resident memory before the first swap (under load).
    pub rss_before: u64,
    /// Largest resident memory sampled during the swaps.
    pub rss_max: u64,
    /// Resident memory at the end.
    pub rss_after: u64,
}

/// What a gRPC run measured.
#[derive(Clone, Debug)]
pub struct GrpcReport {
    /// The mode.
    pub mode: GrpcMode,
    /// Verdicts received.
    pub checks: u64,
    /// Seconds of load.
    pub seconds: f64,
    /// Verdicts per second.
    pub checks_per_sec: f64,
    /// Calls per second.
    pub calls_per_sec: f64,
    /// CPU time of the whole process (senders and an embedded gateway) during the run.
    pub cpu_seconds: Option<f64>,
    /// Latency of a call, microseconds (calls overlapping a swap excluded in `swap` mode).
    pub latency: Latency,
    /// Latency of calls that overlapped a swap (`swap` mode).
    pub latency_swap: Option<Latency>,
    /// The open-loop rate asked for.
    pub rate: Option<f64>,
    /// Everything counted.
    pub stats: LoadStats,
    /// Memory (`swap` mode).
    pub memory: Option<SwapMemory>,
    /// Listings per call.
    pub chunk: usize,
    /// Calls in flight.
    pub concurrency: usize,
    /// The gateway.
    pub target: String,
}

impl GrpcReport {
    /// The last line: `grpc mode=M checks=N seconds=S checks_per_sec=R p50_us=A p99_us=B
    /// p999_us=C`.
    pub fn last_line(&self) -> String {
        format!(
            "grpc mode={} checks={} seconds={:.2} checks_per_sec={:.0} p50_us={} p99_us={} p999_us={}",
            self.mode,
            self.checks,
            self.seconds,
            self.checks_per_sec,
            self.latency.p50,
            self.latency.p99,
            self.latency.p999
        )
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

impl fmt::Display for GrpcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let per_call = if self.mode == GrpcMode::Unary {
            "one listing a call".to_owned()
        } else {
            format!("{} listings a call", self.chunk)
        };
        writeln!(
            f,
            "grpc {} against {}: {} calls in flight, {}{}",
            self.mode,
            self.target,
            self.concurrency,
            per_call,
            self.rate.map_or(String::new(), |r| format!(
                ", paced at {} checks/s",
                thousands(r.round() as u64)
            ))
        )?;
        writeln!(
            f,
            "  throughput    {} checks in {:.2} s: {} checks/s, {} calls/s",
            thousands(self.checks),
            self.seconds,
            thousands(self.checks_per_sec.round() as u64),
            thousands(self.calls_per_sec.round() as u64)
        )?;
        if let Some(cpu) = self.cpu_seconds {
            writeln!(
                f,
                "  cpu           {cpu:.1} s of this process ({:.2} cores busy on average, {:.2} µs a check)",
                cpu / self.seconds.max(1e-9),
                cpu * 1e6 / self.checks.max(1) as f64
            )?;
        }
        let l = &self.latency;
        writeln!(
            f,
            "  latency       p50 {}, p99 {}, p99.9 {}, max {} ({} calls{})",
            micros(l.p50),
            micros(l.p99),
            micros(l.p999),
            micros(l.max),
            thousands(l.samples),
            if self.latency_swap.is_some() {
                ", away from swaps"
            } else {
                ""
            }
        )?;
        if let Some(l) = &self.latency_swap {
            writeln!(
                f,
                "  during swaps  p50 {}, p99 {}, p99.9 {}, max {} ({} calls that overlapped a swap)",
                micros(l.p50),
                micros(l.p99),
                micros(l.p999),
                micros(l.max),
                thousands(l.samples)
            )?;
        }
        if let Some(m) = &self.memory {
            writeln!(
                f,
                "  memory        {} swaps of a {} snapshot: resident {} before, {} at most, {} after (peak - before = {})",
                m.swaps,
                mib(m.snapshot_bytes),
                mib(m.rss_before),
                mib(m.rss_max),
                mib(m.rss_after),
                mib(m.rss_max.saturating_sub(m.rss_before))
            )?;
        }
        let s = &self.stats;
        write!(
            f,
            "  errors        {} ({} failed calls, {} error entries); mismatches {}; torn {}{}",
            thousands(s.errors()),
            thousands(s.failed_calls),
            thousands(s.item_errors),
            thousands(s.mismatches),
            thousands(s.torn),
            s.first_error
                .as_ref()
                .map_or(String::new(), |e| format!("; first: {e}"))
        )
    }
}

/// Runs the benchmark on runtimes of its own (see [`crate::year::run_year_blocking`]).
pub fn run_grpc_blocking(
    cfg: &GrpcConfig,
    client_threads: usize,
    gateway_threads: Option<usize>,
) -> Result<GrpcReport, BenchError> {
    block_on_runtimes("grpc-client", client_threads, gateway_threads, async |h| {
        run_grpc(cfg, h).await
    })
}

/// Runs the benchmark on the current runtime; an embedded gateway runs on `gateway_rt`.
pub async fn run_grpc(
    cfg: &GrpcConfig,
    gateway_rt: &tokio::runtime::Handle,
) -> Result<GrpcReport, BenchError> {
    if cfg.concurrency == 0 || cfg.chunk == 0 {
        return Err(BenchError::Invalid(
            "--chunk and --concurrency must be at least 1".into(),
        ));
    }
    if cfg.mode == GrpcMode::Swap && !matches!(cfg.gateway, GatewayChoice::Embedded { .. }) {
        return Err(BenchError::Invalid(
            "swap mode needs --embedded (it swaps the gateway's snapshots itself)".into(),
        ));
    }
    let su = setup(
        &cfg.gateway,
        cfg.register,
        cfg.profile,
        cfg.listing_seed,
        gateway_rt,
    )
    .await?;
    // Swap mode: the snapshots to swap in, built before the load starts.
    let staged = match (&su.embedded, cfg.mode) {
        (Some(gw), GrpcMode::Swap) => {
            let dir = gw.snapshot_dir().to_path_buf();
            let swaps = cfg.swaps;
            tokio::task::spawn_blocking(move || stage_swaps(&dir, swaps))
                .await
                .map_err(|e| BenchError::Runtime(std::io::Error::other(e)))??
        }
        _ => Vec::new(),
    };
    // Swap mode without --seconds runs until the swap loop is done (every swap, then one more
    // interval of load), however long publishing takes on a busy machine.
    let duration = cfg.seconds.map(Duration::from_secs_f64);
    let until_swaps_done = cfg.mode == GrpcMode::Swap && duration.is_none();
    let d = Drive {
        label: format!("grpc {}", cfg.mode),
        rpc: cfg.mode.rpc(),
        chunk: cfg.chunk,
        senders: cfg.concurrency,
        connections: cfg.connections,
        planned: (duration.is_none() && !until_swaps_done).then_some(cfg.checks),
        duration,
        pacing: cfg.rate.map_or(Pacing::Max, Pacing::Rate),
        swaps: cfg.mode == GrpcMode::Swap,
        progress: cfg.progress,
    };
    let swapping = su.embedded.as_ref().filter(|_| cfg.mode == GrpcMode::Swap);
    let (
        Driven {
            stats,
            seconds,
            cpu_seconds,
            senders,
            ..
        },
        memory,
    ) = drive(&su, &d, async |shared| match swapping {
        Some(gw) => {
            let memory = swap_loop(gw, &staged, cfg.swap_every, &shared).await?;
            if until_swaps_done {
                shared.stop.store(true, Ordering::Relaxed);
            }
            Ok(Some(memory))
        }
        None => Ok(None),
    })
    .await?;
    let memory = memory.map(|mut m| {
        m.rss_after = resident_bytes().unwrap_or(0);
        m
    });
    if let Some(gw) = su.embedded {
        let _ = gw.stop().await;
    }
    let checks = stats.checks();
    Ok(GrpcReport {
        mode: cfg.mode,
        checks,
        seconds,
        checks_per_sec: checks as f64 / seconds.max(1e-9),
        calls_per_sec: stats.calls as f64 / seconds.max(1e-9),
        cpu_seconds,
        latency: Latency::of(&stats.latency_us),
        latency_swap: (cfg.mode == GrpcMode::Swap).then(|| Latency::of(&stats.latency_swap_us)),
        rate: cfg.rate,
        memory,
        chunk: if cfg.mode == GrpcMode::Unary {
            1
        } else {
            cfg.chunk
        },
        concurrency: senders,
        target: su.target,
        stats,
    })
}

/// Builds `swaps` snapshots with the certificates of `dir/snap-1.ccc` and sequences
/// `2..=swaps + 1` under `dir/staging/` (kept between runs); returns their paths in order.
fn stage_swaps(dir: &Path, swaps: u32) -> Result<Vec<(u64, PathBuf)>, EmbeddedError> {
    let staging = dir.join("staging");
    std::fs::create_dir_all(&staging).map_err(|source| EmbeddedError::Io {
        path: staging.clone(),
        source,
    })?;
    let base = Snapshot::open(&dir.join(file_name(1)))?;
    let mut out = Vec::new();
    for seq in 2..=u64::from(swaps) + 1 {
        let path = staging.join(file_name(seq));
        Snapshot::open_or_build(&path, || {
            SnapshotBuilder::from_snapshot(&base, bench_build_info(seq), None).build()
        })?;
        out.push((seq, path));
    }
    Ok(out)
}

/// Swaps the staged snapshots in, one every `every`, recording the swap windows and memory.
async fn swap_loop(
    gw: &EmbeddedGateway,
    staged: &[(u64, PathBuf)],
    every: Duration,
    shared: &RunShared,
) -> Result<SwapMemory, EmbeddedError> {
    let snapshot_bytes = staged
        .first()
        .and_then(|(_, p)| std::fs::metadata(p).ok())
        .map_or(0, |m| m.len());
    tokio::time::sleep(every).await;
    let rss_before = resident_bytes().unwrap_or(0);
    let mut rss_max = rss_before;
    let mut swaps = 0;
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn({
        let stop = watch_stop.clone();
        async move {
            let mut max = 0;
            while !stop.load(Ordering::Relaxed) {
                max = max.max(resident_bytes().unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            max
        }
    });
    for (seq, path) in staged {
        if shared.stop.load(Ordering::Relaxed) {
            break;
        }
        if let Some(w) = &shared.swaps {
            let now = w.epoch.elapsed().as_micros() as u64;
            w.until_us.store(u64::MAX, Ordering::Release);
            w.from_us.store(now, Ordering::Release);
        }
        gw.publish(path, *seq).await?;
        swaps += 1;
        if let Some(w) = &shared.swaps {
            // Calls up to a second after the new snapshot is in force count as "during".
            let end = w.epoch.elapsed() + Duration::from_secs(1);
            w.until_us.store(end.as_micros() as u64, Ordering::Release);
        }
        tokio::time::sleep(every).await;
    }
    watch_stop.store(true, Ordering::Relaxed);
    rss_max = rss_max.max(watcher.await.unwrap_or(0));
    Ok(SwapMemory {
        swaps,
        snapshot_bytes,
        rss_before,
        rss_max,
        rss_after: 0,
    })
}
