//! The gRPC benchmark: the gateway's throughput and latency per RPC, and what a snapshot swap
//! does to them.
//!
//! - `stream`: `CheckStream` in chunks, one call in flight per stream.
//! - `batch`: `CheckBatch` calls of a chunk each.
//! - `unary`: `Check`, one listing a call, `concurrency` calls in flight; with `--rate` the
//!   calls are sent on a fixed schedule (open loop) and latency counts from when each call was
//!   due, so a gateway that falls behind shows it.
//! - `swap`: `CheckStream` at a steady rate while the embedded gateway swaps in a new snapshot
//!   every few seconds; latency is split between calls that overlapped a swap and the rest;
//!   resident memory, descriptors, threads and the disk of the snapshot directory are sampled
//!   over the run ([`crate::soak`]).
//!
//! Listings come from the synthetic register the gateway serves; every verdict is checked
//! against its expected reason. Swapped snapshots alternate between the base register and
//! one that revokes one certificate in sixteen ([`crate::swap`]), prepared one at a time
//! while the previous one serves, in the disk of three snapshots: a verdict must be the one
//! of the register of the snapshot it names, so a stale swap shows as a mismatch; a verdict
//! naming another snapshot than its response counts as `torn`, one older than a snapshot its
//! stream had already seen as `went back`, and the sequences the responses carried are
//! reported.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cccgate_synth::{Profile, RegisterSpec};

use cccgate_client::connect::Credentials;
use cccgate_client::progress::Mode;
use cccgate_client::summary::{Latency, micros, thousands};
use cccgate_client::wire::Rpc;

use crate::drive::{Drive, Driven, Pacing, drive};
use crate::embedded::{EmbeddedError, EmbeddedGateway};
use crate::load::{LoadStats, RunShared, resident_bytes};
use crate::secure::{Comparison, SecureFiles, compare, secure_dir, start_secure_twin};
use crate::setup::{BenchError, GatewayChoice, block_on_runtimes, setup_with};
use crate::soak::{Soak, SoakRecorder};
use crate::swap::SwapRing;

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

/// How the embedded gateway is reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plaintext, no token.
    Plain,
    /// TLS on (a CA and certificate made for the run) and a caller token required.
    TlsTokens,
    /// Both, in alternating rounds of one run, compared ([`crate::secure::compare`]).
    Compare,
}

impl FromStr for Security {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "plain" | "plaintext" => Ok(Security::Plain),
            "tls-tokens" | "secure" => Ok(Security::TlsTokens),
            "compare" => Ok(Security::Compare),
            _ => Err(format!(
                "security {s:?}: expected plain, tls-tokens or compare"
            )),
        }
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
    /// TLS and tokens on the embedded gateway.
    pub security: Security,
    /// Rounds of each side ([`Security::Compare`]).
    pub rounds: usize,
    /// What the senders present to a `--target` gateway.
    pub credentials: Credentials,
    /// Fault injection (tests of the failure report): the snapshot prepared for swap `k`
    /// (1-based) is removed before its swap, which then fails as a lost or unwritable file
    /// makes it fail.
    pub fail_at_swap: Option<u32>,
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
            security: Security::Plain,
            rounds: 3,
            credentials: Credentials::default(),
            fail_at_swap: None,
        }
    }
}

/// Memory, disk and timing around snapshot swaps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SwapMemory {
    /// Swaps done.
    pub swaps: u32,
    /// Size of one snapshot file.
    pub snapshot_bytes: u64,
    /// Resident memory before the first swap (under load, once the first snapshot to swap
    /// in is prepared).
    pub rss_before: u64,
    /// Largest resident memory sampled during the swaps.
    pub rss_max: u64,
    /// Resident memory one interval after the last swap, once the change feed has digested
    /// it, still under load.
    pub rss_after: u64,
    /// Most bytes the snapshot directory held (checked after every file written).
    pub disk_peak: u64,
    /// Most snapshot files it held, prepared ones included.
    pub disk_peak_files: u64,
    /// Certificates the alternate register revokes.
    pub flipped_certs: u64,
    /// Seconds from the first swap to one interval after the last.
    pub seconds: f64,
    /// Longest time preparing one snapshot took.
    pub prepare_max: Duration,
    /// Longest time a reload took (from asking to the snapshot in force).
    pub reload_max: Duration,
    /// Swaps that happened later than their schedule (the next snapshot was not ready, or
    /// a soak sample waited for the change feed).
    pub late: u32,
    /// Longest wait for the change feed to digest the swap before a memory sample (the
    /// samples are taken once it has: the steady state, not a diff in flight).
    pub settle_max: Duration,
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
    /// Memory, disk and timing of the swaps (`swap` mode).
    pub memory: Option<SwapMemory>,
    /// The soak samples (`swap` mode).
    pub soak: Option<Soak>,
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
                "  swaps         {} in {:.1} s ({:.2} s apart on average; {} late); preparing a snapshot took at most {:.2} s, a reload {:.2} s, the change feed's diff before a memory sample {:.2} s",
                m.swaps,
                m.seconds,
                m.seconds / f64::from(m.swaps.max(1)),
                m.late,
                m.prepare_max.as_secs_f64(),
                m.reload_max.as_secs_f64(),
                m.settle_max.as_secs_f64()
            )?;
            writeln!(
                f,
                "  memory        {} swaps of a {} snapshot: resident {} before, {} at most, {} after (after/before {:.3}; peak - before = {})",
                m.swaps,
                mib(m.snapshot_bytes),
                mib(m.rss_before),
                mib(m.rss_max),
                mib(m.rss_after),
                m.rss_after as f64 / m.rss_before.max(1) as f64,
                mib(m.rss_max.saturating_sub(m.rss_before))
            )?;
            writeln!(
                f,
                "  disk          at most {} snapshot files, {} in the snapshot directory ({:.2} snapshots)",
                m.disk_peak_files,
                mib(m.disk_peak),
                m.disk_peak as f64 / m.snapshot_bytes.max(1) as f64
            )?;
            writeln!(
                f,
                "  verdicts      {} answered by the alternate register differ from the base's ({} certificates revoked in it), each the right one; snapshots {} to {} answered; {} went back to an older snapshot",
                thousands(self.stats.changed_by_swap),
                thousands(m.flipped_certs),
                self.stats.sequences.0,
                self.stats.sequences.1,
                thousands(self.stats.went_back)
            )?;
        }
        let s = &self.stats;
        write!(
            f,
            "  errors        {} ({} failed calls, {} error entries); mismatches {}; torn {}; {} calls sent again on a new stream after theirs was cut{}",
            thousands(s.errors()),
            thousands(s.failed_calls),
            thousands(s.item_errors),
            thousands(s.mismatches),
            thousands(s.torn),
            thousands(s.resent_calls),
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
    let secure = match (&cfg.gateway, cfg.security) {
        (_, Security::Plain) => None,
        (GatewayChoice::Embedded { cache_dir }, Security::TlsTokens) => {
            Some(SecureFiles::create(&secure_dir(cache_dir), &["bench"])?)
        }
        (_, Security::Compare) => {
            return Err(BenchError::Invalid(
                "--security compare runs through run_compare".into(),
            ));
        }
        (GatewayChoice::Target(_), _) => {
            return Err(BenchError::Invalid(
                "--security is for the embedded gateway; a --target gateway is reached with --ca-file and --token".into(),
            ));
        }
    };
    let mut su = setup_with(
        &cfg.gateway,
        cfg.register,
        cfg.profile,
        cfg.listing_seed,
        gateway_rt,
        |c| {
            if let Some(f) = &secure {
                f.configure(c);
            }
        },
    )
    .await?;
    su.credentials = cfg.credentials.clone();
    if let (Some(f), Some(gw)) = (&secure, &su.embedded) {
        su.target = format!("https://{}", gw.addr());
        su.credentials = f.credentials("bench")?;
    }
    // Swap mode: the first snapshot to swap in (the alternate register) is built before the
    // load starts; the others are prepared one at a time while the previous one serves.
    let ring = match (&su.embedded, cfg.mode) {
        (Some(gw), GrpcMode::Swap) => {
            let dir = gw.snapshot_dir().to_path_buf();
            let prepared = tokio::task::spawn_blocking(move || {
                let mut ring = SwapRing::new(&dir)?;
                let started = Instant::now();
                let bytes = ring.prepare(FIRST_SWAP)?;
                Ok::<_, EmbeddedError>((ring, bytes, started.elapsed()))
            })
            .await
            .map_err(|e| BenchError::Runtime(std::io::Error::other(e)))??;
            Some(prepared)
        }
        _ => None,
    };
    // Swap mode without --seconds runs until the swap loop is done (every swap, then one more
    // interval of load), however long preparing and publishing take on a busy machine.
    let d = plan(cfg);
    let swapping = su.embedded.as_ref().zip(ring);
    let (
        Driven {
            stats,
            seconds,
            cpu_seconds,
            senders,
            ..
        },
        swapped,
    ) = drive(&su, &d, async |shared| match swapping {
        Some((gw, ring)) => Ok(Some(swap_loop(gw, ring, cfg, shared).await)),
        None => Ok(None),
    })
    .await?;
    let (memory, soak, failure) = match swapped {
        Some(Swapped {
            memory,
            soak,
            failure,
        }) => (Some(memory), Some(soak.finish()), failure),
        None => (None, None, None),
    };
    if let Some(gw) = su.embedded {
        let _ = gw.stop().await;
    }
    let checks = stats.checks();
    let report = GrpcReport {
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
        soak,
        chunk: if cfg.mode == GrpcMode::Unary {
            1
        } else {
            cfg.chunk
        },
        concurrency: senders,
        target: su.target,
        stats,
    };
    match failure {
        // What was done is reported with the error, not lost with it.
        Some(error) => Err(BenchError::Stopped {
            report: Box::new(report),
            error: Box::new(error),
        }),
        None => Ok(report),
    }
}

fn plan(cfg: &GrpcConfig) -> Drive {
    let duration = cfg.seconds.map(Duration::from_secs_f64);
    Drive {
        label: format!("grpc {}", cfg.mode),
        rpc: cfg.mode.rpc(),
        chunk: cfg.chunk,
        senders: cfg.concurrency,
        connections: cfg.connections,
        planned: (duration.is_none() && cfg.mode != GrpcMode::Swap).then_some(cfg.checks),
        duration,
        pacing: cfg.rate.map_or(Pacing::Max, Pacing::Rate),
        swaps: cfg.mode == GrpcMode::Swap,
        progress: cfg.progress,
    }
}

/// [`run_compare`] on runtimes of its own.
pub fn run_compare_blocking(
    cfg: &GrpcConfig,
    client_threads: usize,
    gateway_threads: Option<usize>,
) -> Result<Comparison, BenchError> {
    block_on_runtimes("grpc-client", client_threads, gateway_threads, async |h| {
        run_compare(cfg, h).await
    })
}

/// The load of `cfg` against a plaintext embedded gateway and against one with TLS and
/// tokens on, over the same snapshot, `cfg.rounds` times each, alternating.
pub async fn run_compare(
    cfg: &GrpcConfig,
    gateway_rt: &tokio::runtime::Handle,
) -> Result<Comparison, BenchError> {
    let GatewayChoice::Embedded { cache_dir } = &cfg.gateway else {
        return Err(BenchError::Invalid(
            "--security compare starts both gateways itself: no --target".into(),
        ));
    };
    if cfg.mode == GrpcMode::Swap || cfg.concurrency == 0 || cfg.chunk == 0 {
        return Err(BenchError::Invalid(
            "--security compare goes with --mode stream, batch or unary, --chunk and --concurrency at least 1".into(),
        ));
    }
    let files = SecureFiles::create(&secure_dir(cache_dir), &["bench"])?;
    let mut su = setup_with(
        &cfg.gateway,
        cfg.register,
        cfg.profile,
        cfg.listing_seed,
        gateway_rt,
        |_| {},
    )
    .await?;
    let (twin, target) = start_secure_twin(&su, &files, gateway_rt).await?;
    let credentials = files.credentials("bench")?;
    let out = compare(&mut su, &plan(cfg), &target, &credentials, cfg.rounds).await;
    let _ = twin.stop().await;
    if let Some(gw) = su.embedded.take() {
        let _ = gw.stop().await;
    }
    out
}

/// The sequence of the first snapshot swapped in (the base is 1).
const FIRST_SWAP: u64 = 2;

/// A bound on waiting for the change feed to digest a swap (a diff of the full-scale
/// register takes well under a second on a free machine).
const SETTLE_WITHIN: Duration = Duration::from_secs(300);

/// What the swap loop did: its figures and soak recorder, whether or not it got through.
struct Swapped {
    memory: SwapMemory,
    soak: SoakRecorder,
    /// Why it stopped early (the figures then cover the swaps done).
    failure: Option<BenchError>,
}

/// Swaps the ring's snapshots in, one every `cfg.swap_every`, each prepared while the
/// previous one serves; records the swap windows, memory, disk and the soak samples (a tenth
/// sample just before the swap that follows each tenth of the swaps, when the next snapshot
/// is prepared and the previous one released: the steady state). Stops the senders one
/// interval after the last swap, or at once when a step fails. Returns the figures and the
/// recorder, to be finished once the load has stopped, and the failure if there was one.
async fn swap_loop(
    gw: &EmbeddedGateway,
    (ring, snapshot_bytes, first_prepare): (SwapRing, u64, Duration),
    cfg: &GrpcConfig,
    shared: Arc<RunShared>,
) -> Swapped {
    let dir = ring.dir().to_path_buf();
    // The start sample without the set-up's freed garbage (see `swap_rounds`).
    cccgate_server::watch::release_freed_memory();
    let soak = SoakRecorder::start(vec![dir], None);
    soak.set_snapshot_bytes(snapshot_bytes);
    let flipped_certs = ring.flipped_certs;
    let ring = Arc::new(std::sync::Mutex::new(ring));
    let (mut memory, result) = swap_rounds(gw, &ring, cfg, &shared, &soak).await;
    // Without --seconds the run ends with the swaps; an error ends it in any case.
    if cfg.seconds.is_none() || result.is_err() {
        shared.stop.store(true, Ordering::Relaxed);
    }
    memory.snapshot_bytes = snapshot_bytes;
    memory.flipped_certs = flipped_certs;
    memory.prepare_max = memory.prepare_max.max(first_prepare);
    Swapped {
        memory,
        soak,
        failure: result.err(),
    }
}

async fn swap_rounds(
    gw: &EmbeddedGateway,
    ring: &Arc<std::sync::Mutex<SwapRing>>,
    cfg: &GrpcConfig,
    shared: &RunShared,
    soak: &SoakRecorder,
) -> (SwapMemory, Result<(), BenchError>) {
    let every = cfg.swap_every;
    let swaps = cfg.swaps;
    let join = |e: tokio::task::JoinError| BenchError::Runtime(std::io::Error::other(e));
    let began = Instant::now();
    // The first interval: the load warms up on the base register.
    tokio::time::sleep(every).await;
    // Memory samples are of what is held, not of what the allocator keeps free: the gateway
    // gives freed pages back after each swap's diff (`release_freed_memory`), which could
    // otherwise land just before or just after a sample; the set-up's garbage goes too.
    let trimmed = cccgate_server::watch::release_freed_memory;
    trimmed();
    let rss_before = resident_bytes().unwrap_or(0);
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
    let mut m = SwapMemory {
        swaps: 0,
        snapshot_bytes: 0,
        rss_before,
        rss_max: rss_before,
        rss_after: 0,
        disk_peak: 0,
        disk_peak_files: 0,
        flipped_certs: 0,
        seconds: 0.0,
        prepare_max: Duration::ZERO,
        reload_max: Duration::ZERO,
        late: 0,
        settle_max: Duration::ZERO,
    };
    // Memory is sampled once the gateway has digested the snapshot in force: its change
    // feed's diff (transient memory of a few hundred MB at full scale) is done.
    let settle = async |m: &mut SwapMemory, sequence: u64| -> Result<(), BenchError> {
        let t = Instant::now();
        gw.change_feed_reached(sequence, SETTLE_WITHIN).await?;
        m.settle_max = m.settle_max.max(t.elapsed());
        Ok(())
    };
    let mut tenth_taken = 0;
    let observe_disk = |m: &mut SwapMemory| {
        let (bytes, files) = crate::soak::disk_usage(gw.snapshot_dir(), 2);
        m.disk_peak = m.disk_peak.max(bytes);
        m.disk_peak_files = m.disk_peak_files.max(files);
        soak.observe();
    };
    observe_disk(&mut m);
    let first = Instant::now();
    let mut preparing: Option<tokio::task::JoinHandle<Result<Duration, EmbeddedError>>> = None;
    let outcome: Result<(), BenchError> = async {
        for k in 0..swaps {
            let seq = FIRST_SWAP + u64::from(k);
            let due = first + every * k;
            // With --seconds the swaps stop when the time is up (the report counts those done):
            // the last one leaves time for its reload (the slowest so far) and an interval of
            // calls answered by it before the load stops.
            let out_of_time = cfg.seconds.is_some_and(|s| {
                began.elapsed() + m.reload_max + every >= Duration::from_secs_f64(s)
            });
            if shared.stop.load(Ordering::Relaxed) || out_of_time {
                break;
            }
            if let Some(p) = preparing.take() {
                let took = p.await.map_err(join)??;
                m.prepare_max = m.prepare_max.max(took);
            }
            // The steady state after each tenth of the swaps.
            let tenth = k * 10 / swaps.max(1);
            if tenth > tenth_taken {
                settle(&mut m, seq - 1).await?;
                trimmed();
                soak.take(tenth);
                tenth_taken = tenth;
            }
            observe_disk(&mut m);
            if Instant::now() > due + Duration::from_millis(50) {
                m.late += 1;
            }
            if let Some(w) = &shared.swaps {
                let now = w.epoch.elapsed().as_micros() as u64;
                w.until_us.store(u64::MAX, Ordering::Release);
                w.from_us.store(now, Ordering::Release);
            }
            if cfg.fail_at_swap == Some(k + 1) {
                let lost = gw.snapshot_dir().join(crate::swap::next_name(seq));
                std::fs::remove_file(&lost)
                    .map_err(|source| EmbeddedError::Io { path: lost, source })?;
            }
            let asked = Instant::now();
            ring.lock()
                .map_err(|_| BenchError::Invalid("swap ring poisoned".into()))?
                .place(seq)?;
            gw.reload_to(seq).await?;
            m.reload_max = m.reload_max.max(asked.elapsed());
            m.swaps += 1;
            if let Some(w) = &shared.swaps {
                // Calls up to a quarter of the interval (at most a second) after the new
                // snapshot is in force count as "during": the swap's after-effects (the old
                // snapshot released, the new one's pages first touched) are in them.
                let end = w.epoch.elapsed() + (every / 4).min(Duration::from_secs(1));
                w.until_us.store(end.as_micros() as u64, Ordering::Release);
            }
            ring.lock()
                .map_err(|_| BenchError::Invalid("swap ring poisoned".into()))?
                .retire(seq)?;
            observe_disk(&mut m);
            if k + 1 < swaps {
                let ring = ring.clone();
                preparing = Some(tokio::task::spawn_blocking(move || {
                    let started = Instant::now();
                    ring.lock()
                        .map_err(|_| EmbeddedError::NotReady("swap ring poisoned".into()))?
                        .prepare(seq + 1)?;
                    Ok(started.elapsed())
                }));
            }
            tokio::time::sleep_until((first + every * (k + 1)).into()).await;
        }
        Ok(())
    }
    .await;
    if let Some(p) = preparing.take() {
        let _ = p.await;
    }
    observe_disk(&mut m);
    m.seconds = first.elapsed().as_secs_f64();
    let last = FIRST_SWAP + u64::from(m.swaps);
    let settled = match outcome {
        Ok(()) if last > FIRST_SWAP => settle(&mut m, last - 1).await,
        _ => Ok(()),
    };
    trimmed();
    m.rss_after = resident_bytes().unwrap_or(0);
    // The last tenth's sample when every swap was done (a run stopped early by an error or
    // by --seconds does not invent the tenths it did not reach).
    if outcome.is_ok() && m.swaps == swaps {
        soak.take(10);
    }
    watch_stop.store(true, Ordering::Relaxed);
    m.rss_max = m.rss_max.max(watcher.await.unwrap_or(0));
    // Nothing is kept but the base register.
    let cleaned = match ring.lock() {
        Ok(r) => r.clean().map_err(BenchError::from),
        Err(_) => Err(BenchError::Invalid("swap ring poisoned".into())),
    };
    (m, outcome.and(settled).and(cleaned))
}
