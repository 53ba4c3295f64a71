//! A normal caller's stream while the gateway is attacked (issue #9, "How it must show"): the
//! p99 latency of a paced `CheckStream` during each attack, as a ratio to the same stream with
//! no attack, in one run.
//!
//! The embedded gateway runs as production runs it (TLS on, a token per caller: the normal
//! caller is `market`, the attacker `attacker`, so per-caller quotas tell them apart; with
//! `plaintext` both are `anonymous`), with `--max-message-bytes` raised to 16 MiB so the
//! largest hostile messages reach the decoder instead of being refused from their header.
//! Phases alternate: no attack, an attack, no attack, the next attack, ..., no attack. Each
//! phase drives the same paced stream ([`crate::drive`]) for the same time; the attack runs
//! alongside it from the phase's start to its end, on connections of its own. The phases
//! without attack are pooled into the baseline. Resident memory growth (the peak, `VmHWM`,
//! reset at each phase's start, less the resident memory then) is of the gateway's process:
//! with [`GatewayPlace::InProcess`] that is the benchmark's own, so it counts the normal
//! caller and an in-process attacker's buffers too.
//!
//! # Where the gateway runs
//!
//! In production the gateway is a process of its own and its callers are other machines.
//! [`GatewayPlace::Process`] runs it so: a `cccgate serve` child process
//! ([`crate::spawned`]) at normal priority, its own runtime and memory, while the normal
//! caller runs in this process, at normal priority, as a marketplace client would. The normal
//! caller's latency is then the gateway's answer time plus loopback, not also the time its
//! own sends and receives waited behind the gateway's tasks on a shared runtime.
//! [`GatewayPlace::InProcess`] starts it in this process ([`crate::embedded`]), as the first
//! measurements did.
//!
//! # Where the attacker runs
//!
//! A real attacker is on another machine: its own encryption, encoding and scheduling cost the
//! gateway nothing. On one machine, [`AttackerPlace::Process`] runs each attack in a child
//! process (`cccgate bench attacker`) at the lowest CPU priority, so that the attacker's own
//! work does not take the CPU the gateway and the normal caller need: what the gateway sees is
//! every request the attacker can make with the CPU they leave. By default that priority is
//! Linux's `SCHED_IDLE` class ([`Priority::Idle`], `chrt --idle 0`): such a task runs only on
//! a CPU nobody else wants and is preempted at once when a normal task wakes, so the gateway
//! and the normal caller never wait for it, by the scheduler's rule rather than by weights. At
//! `nice 19` ([`Priority::Nice`]) it is in the normal class with a small weight, and may keep
//! a CPU for a while after a normal thread wakes, depending on the kernel. (On the 6.18 kernel
//! of the measurements neither delayed a normal thread's wake-up: `benches/README.md`.) The
//! attacker may also be pinned to some CPUs (`taskset`). [`AttackerPlace::InProcess`] runs it
//! on the normal caller's runtime, as the first measurements did.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cccgate_client::connect::{Credentials, Gateway};
use cccgate_client::progress::Mode;
use cccgate_client::summary::{Latency, micros, thousands};
use cccgate_client::wire::Rpc;
use cccgate_proto::v1::admin_client::AdminClient;
use cccgate_proto::v1::{CheckBatchRequest, CheckRequest, Listing, ReloadRequest};
use cccgate_synth::{ListingGenerator, Profile, RegisterSpec};
use hdrhistogram::Histogram;
use prost::Message;
use prost::bytes::Bytes;
use tonic::Code;

use crate::drive::{Drive, Pacing, drive};
use crate::embedded::{EmbeddedGateway, register_snapshot};
use crate::secure::{SecureFiles, secure_dir};
use crate::setup::{BenchError, GatewayChoice, Setup, block_on_runtimes, setup_with};
use crate::spawned::SpawnedGateway;

/// An attack of issue #9.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Four callers at once, each sending `CheckBatch` messages of 16 MiB holding 8,388,608
    /// empty listings (2 bytes each), over and over.
    HugeBatches,
    /// Four callers at once, each sending the largest valid `CheckBatch`: 10,000 listings with
    /// every field at its limit (7.9 MB), over and over.
    LargestBatches,
    /// `flood_calls` unary `Check` calls in flight at all times, each sent again as soon as it
    /// is answered or shed (a caller that ignores the retry hint).
    Flood,
    /// 256 `CheckStream` calls opened on one connection and left idle.
    IdleStreams,
    /// 16 operators' loops calling `Admin.Reload` on the admin plane, a newer snapshot file
    /// that is garbage in the directory.
    ReloadStorm,
    /// 256 loops of `Check` calls with no token (only with TLS and tokens on).
    NoToken,
}

impl Attack {
    /// Every attack, in the order run.
    pub const ALL: [Attack; 6] = [
        Attack::HugeBatches,
        Attack::LargestBatches,
        Attack::Flood,
        Attack::IdleStreams,
        Attack::ReloadStorm,
        Attack::NoToken,
    ];

    /// The name on the command line and in the last line.
    pub fn name(self) -> &'static str {
        match self {
            Attack::HugeBatches => "huge-batches",
            Attack::LargestBatches => "largest-batches",
            Attack::Flood => "flood",
            Attack::IdleStreams => "idle-streams",
            Attack::ReloadStorm => "reload-storm",
            Attack::NoToken => "no-token",
        }
    }
}

impl FromStr for Attack {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Attack::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<_> = Attack::ALL.iter().map(|a| a.name()).collect();
                format!("attack {s:?}: expected one of {}", names.join(", "))
            })
    }
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the attacker runs (see the module's doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttackerPlace {
    /// On the normal caller's runtime, in the benchmark's process.
    InProcess,
    /// In a child process: `program bench attacker ...` (the `cccgate` binary), run at
    /// `priority`, and under `taskset -c cpus` when given.
    Process {
        /// The `cccgate` binary.
        program: PathBuf,
        /// Its CPU priority.
        priority: Priority,
        /// The CPUs it may run on (`taskset -c` syntax), if pinned.
        cpus: Option<String>,
    },
}

/// The CPU priority of the attacker's process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Linux's `SCHED_IDLE` class (`chrt --idle 0`): runs only on a CPU no other task wants.
    Idle,
    /// `nice -n N` (0-19) in the normal class.
    Nice(u8),
}

impl Priority {
    /// The command (and its arguments) that runs a program at this priority.
    pub fn wrapper(self) -> Vec<String> {
        match self {
            Priority::Idle => ["chrt", "--idle", "0"].map(str::to_owned).to_vec(),
            Priority::Nice(n) => vec!["nice".into(), "-n".into(), n.to_string()],
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Priority::Idle => f.write_str("SCHED_IDLE"),
            Priority::Nice(n) => write!(f, "nice {n}"),
        }
    }
}

/// Where the gateway runs (see the module's doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayPlace {
    /// In the benchmark's process, on the runtime it is given.
    InProcess,
    /// A `program serve ...` child process (the `cccgate` binary) at normal priority.
    Process {
        /// The `cccgate` binary.
        program: PathBuf,
    },
}

/// What to run.
#[derive(Clone, Debug)]
pub struct AttackConfig {
    /// The synthetic register.
    pub register: RegisterSpec,
    /// The listing mix of the normal caller.
    pub profile: Profile,
    /// Seed of the listing stream.
    pub listing_seed: u64,
    /// The snapshot cache of the embedded gateway.
    pub cache_dir: PathBuf,
    /// The attacks, each in a phase of its own.
    pub attacks: Vec<Attack>,
    /// Length of each phase.
    pub phase: Duration,
    /// The normal caller's listings per second (open loop).
    pub rate: f64,
    /// Listings per stream message.
    pub chunk: usize,
    /// The normal caller's streams.
    pub streams: usize,
    /// Its HTTP/2 connections.
    pub connections: usize,
    /// Calls in flight in the flood.
    pub flood_calls: usize,
    /// TLS and tokens on (the normal caller and the attacker are told apart).
    pub secure: bool,
    /// Where the attacker runs.
    pub attacker: AttackerPlace,
    /// Where the gateway runs.
    pub gateway: GatewayPlace,
    /// The gateway's `--client-max-calls-per-second` (0: no quota).
    pub client_calls_per_second: u64,
    /// The gateway's `--client-max-checks-per-second` (0: no quota).
    pub client_checks_per_second: u64,
    /// The gateway's `--client-max-bytes-per-second` (0: no quota).
    pub client_bytes_per_second: u64,
    /// Progress on stderr.
    pub progress: Mode,
}

impl Default for AttackConfig {
    /// Every attack, 10 s phases, the normal caller at 20,000 checks/s in messages of 100
    /// over 4 streams and 2 connections, a flood of 2,048 calls, TLS and tokens on, over the
    /// full-scale register, the gateway and the attacker in the same process, the per-caller
    /// quotas of the production deployment (5,000 calls/s, 100,000 checks/s, 16 MiB/s).
    fn default() -> Self {
        AttackConfig {
            register: RegisterSpec::default(),
            profile: Profile::Y2021,
            listing_seed: 7,
            cache_dir: crate::embedded::default_cache_dir(),
            attacks: Attack::ALL.to_vec(),
            phase: Duration::from_secs(10),
            rate: 20_000.0,
            chunk: 100,
            streams: 4,
            connections: 2,
            flood_calls: 2_048,
            secure: true,
            attacker: AttackerPlace::InProcess,
            gateway: GatewayPlace::InProcess,
            client_calls_per_second: 5_000,
            client_checks_per_second: 100_000,
            client_bytes_per_second: 16 * 1024 * 1024,
            progress: Mode::auto(Duration::from_secs(10)),
        }
    }
}

/// Answers the attacker got, by gRPC code.
#[derive(Debug, Default)]
pub struct Answers {
    by_code: [AtomicU64; 17],
}

impl Answers {
    fn count(&self, code: Code) {
        let i = (code as usize).min(16);
        self.by_code[i].fetch_add(1, Ordering::Relaxed);
    }

    fn of<T>(&self, r: &Result<T, tonic::Status>) {
        self.count(r.as_ref().map_or_else(tonic::Status::code, |_| Code::Ok));
    }

    /// Calls answered.
    pub fn total(&self) -> u64 {
        self.by_code.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// `answers CODE=N ...` (numeric gRPC codes), the line an attacker process prints.
    pub fn line(&self) -> String {
        let mut s = "answers".to_owned();
        for (i, c) in self.by_code.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n > 0 {
                s.push_str(&format!(" {i}={n}"));
            }
        }
        s
    }

    /// Reads a [`Answers::line`] back.
    pub fn parse_line(line: &str) -> Option<Answers> {
        let rest = line.trim().strip_prefix("answers")?;
        let a = Answers::default();
        for word in rest.split_whitespace() {
            let (code, n) = word.split_once('=')?;
            let (code, n): (usize, u64) = (code.parse().ok()?, n.parse().ok()?);
            a.by_code.get(code)?.fetch_add(n, Ordering::Relaxed);
        }
        Some(a)
    }
}

impl fmt::Display for Answers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (i, c) in self.by_code.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            if n == 0 {
                continue;
            }
            let name = format!("{:?}", Code::from(i as i32));
            write!(
                f,
                "{}{} {name}",
                if first { "" } else { ", " },
                thousands(n)
            )?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// One phase: the normal stream, with or without an attack alongside.
#[derive(Debug)]
pub struct Phase {
    /// The attack, if any.
    pub attack: Option<Attack>,
    /// The normal stream's latency of a message.
    pub latency: Latency,
    /// Its histogram (pooled for the baseline).
    pub histogram: Histogram<u64>,
    /// Its verdicts per second.
    pub checks_per_sec: f64,
    /// Its failed calls and error entries.
    pub errors: u64,
    /// Its verdicts whose reason was not the expected one.
    pub mismatches: u64,
    /// Its first failure.
    pub first_error: Option<String>,
    /// What the attacker got.
    pub answers: Answers,
    /// Peak resident memory during the phase less the resident memory at its start.
    pub rss_growth: Option<u64>,
}

/// What an attack run measured.
#[derive(Debug)]
pub struct AttackReport {
    /// The settings.
    pub config: AttackConfig,
    /// Every phase, in the order run.
    pub phases: Vec<Phase>,
}

impl AttackReport {
    /// The phases without attack, pooled.
    pub fn baseline(&self) -> Latency {
        let mut h = cccgate_client::summary::new_histogram();
        for p in self.phases.iter().filter(|p| p.attack.is_none()) {
            let _ = h.add(&p.histogram);
        }
        Latency::of(&h)
    }

    /// Each attack's p99 as a ratio to the baseline's.
    pub fn ratios(&self) -> Vec<(Attack, f64)> {
        let base = self.baseline().p99.max(1) as f64;
        self.phases
            .iter()
            .filter_map(|p| p.attack.map(|a| (a, p.latency.p99 as f64 / base)))
            .collect()
    }

    /// Errors and mismatches of the normal caller over every phase.
    pub fn normal_errors(&self) -> u64 {
        self.phases.iter().map(|p| p.errors + p.mismatches).sum()
    }

    /// The last line: `attack baseline_p99_us=N <attack>=RATIO ...`.
    pub fn last_line(&self) -> String {
        let mut s = format!("attack baseline_p99_us={}", self.baseline().p99);
        for (a, r) in self.ratios() {
            s.push_str(&format!(" {a}={r:.2}"));
        }
        s
    }
}

fn mib(b: u64) -> String {
    format!("{:.0} MiB", b as f64 / f64::from(1 << 20))
}

impl fmt::Display for AttackReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "attack: a normal CheckStream caller at {} checks/s ({} listings a message, {} streams) for {:.0} s a phase, {}; per-caller quotas {} calls/s, {} checks/s, {} bytes/s (0: none); the attacker {}; the gateway {}",
            thousands(c.rate.round() as u64),
            c.chunk,
            c.streams,
            c.phase.as_secs_f64(),
            if c.secure {
                "TLS and tokens on (caller `market`; the attacker is `attacker`)"
            } else {
                "plaintext, no tokens (every caller is `anonymous`)"
            },
            thousands(c.client_calls_per_second),
            thousands(c.client_checks_per_second),
            thousands(c.client_bytes_per_second),
            match &c.attacker {
                AttackerPlace::InProcess => "in the normal caller's process".to_owned(),
                AttackerPlace::Process { priority, cpus, .. } => format!(
                    "in a process of its own at {priority}{}",
                    cpus.as_ref()
                        .map_or(String::new(), |c| format!(", on CPUs {c}"))
                ),
            },
            match &c.gateway {
                GatewayPlace::InProcess => "in the normal caller's process",
                GatewayPlace::Process { .. } => "in a `cccgate serve` process of its own",
            }
        )?;
        let base = self.baseline();
        writeln!(
            f,
            "| phase | normal p50 | normal p99 | p99 / baseline | normal checks/s | normal errors | attacker's answers | peak RSS growth |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|---|---|")?;
        for p in &self.phases {
            writeln!(
                f,
                "| {} | {} | {} | {} | {} | {}{} | {} | {} |",
                p.attack.map_or("no attack", Attack::name),
                micros(p.latency.p50),
                micros(p.latency.p99),
                if p.attack.is_some() {
                    format!("{:.2}", p.latency.p99 as f64 / base.p99.max(1) as f64)
                } else {
                    "-".to_owned()
                },
                thousands(p.checks_per_sec.round() as u64),
                thousands(p.errors + p.mismatches),
                p.first_error
                    .as_ref()
                    .map_or(String::new(), |e| format!(" (first: {e})")),
                if p.attack.is_some() {
                    p.answers.to_string()
                } else {
                    "-".to_owned()
                },
                p.rss_growth.map_or("?".to_owned(), mib)
            )?;
        }
        write!(
            f,
            "baseline (the phases without attack, pooled): p50 {}, p99 {}, {} messages",
            micros(base.p50),
            micros(base.p99),
            thousands(base.samples)
        )
    }
}

/// Runs the benchmark on runtimes of its own (see [`crate::setup::block_on_runtimes`]).
pub fn run_attack_blocking(
    cfg: &AttackConfig,
    client_threads: usize,
    gateway_threads: Option<usize>,
) -> Result<AttackReport, BenchError> {
    block_on_runtimes(
        "attack-client",
        client_threads,
        gateway_threads,
        async |h| run_attack(cfg, h).await,
    )
}

/// What the attacks need: the gateway's addresses, the attacker's credentials, the bodies.
struct Arsenal {
    target: String,
    admin_target: String,
    snapshot_dir: PathBuf,
    attacker: Credentials,
    anonymous: Credentials,
    one: Bytes,
}

/// Runs the benchmark on the current runtime; the embedded gateway runs on `gateway_rt`.
pub async fn run_attack(
    cfg: &AttackConfig,
    gateway_rt: &tokio::runtime::Handle,
) -> Result<AttackReport, BenchError> {
    if cfg.streams == 0 || cfg.chunk == 0 || cfg.rate <= 0.0 || cfg.phase.is_zero() {
        return Err(BenchError::Invalid(
            "--streams, --chunk, --rate and --phase-seconds must be above 0".into(),
        ));
    }
    let secure = if cfg.secure {
        Some(SecureFiles::create(
            &secure_dir(&cfg.cache_dir),
            &["market", "attacker"],
        )?)
    } else {
        None
    };
    let (mut su, gw) = match &cfg.gateway {
        GatewayPlace::InProcess => {
            let mut su = setup_with(
                &GatewayChoice::Embedded {
                    cache_dir: cfg.cache_dir.clone(),
                },
                cfg.register,
                cfg.profile,
                cfg.listing_seed,
                gateway_rt,
                |c| {
                    c.limits.max_message_bytes = MAX_MESSAGE_BYTES;
                    c.limits.client_max_calls_per_second = cfg.client_calls_per_second;
                    c.limits.client_max_checks_per_second = cfg.client_checks_per_second;
                    c.limits.client_max_bytes_per_second = cfg.client_bytes_per_second;
                    if let Some(s) = &secure {
                        s.configure(c);
                    }
                },
            )
            .await?;
            let gw = su
                .embedded
                .take()
                .ok_or_else(|| BenchError::Invalid("no embedded gateway".into()))?;
            (su, Served::InProcess(gw))
        }
        GatewayPlace::Process { program } => {
            let (su, gw) = spawn_gateway(cfg, program, secure.as_ref()).await?;
            (su, Served::Process(gw))
        }
    };
    let result = phases(cfg, &mut su, &gw, secure.as_ref()).await;
    if let Served::InProcess(gw) = gw {
        let _ = gw.stop().await;
    }
    result.map(|phases| AttackReport {
        config: cfg.clone(),
        phases,
    })
}

/// The gateway's `--max-message-bytes` here: the largest hostile messages reach the decoder.
const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// The gateway being attacked.
enum Served {
    InProcess(EmbeddedGateway),
    Process(SpawnedGateway),
}

impl Served {
    fn addr(&self) -> std::net::SocketAddr {
        match self {
            Served::InProcess(g) => g.addr(),
            Served::Process(g) => g.addr(),
        }
    }

    fn admin_target(&self) -> &str {
        match self {
            Served::InProcess(g) => g.admin_target(),
            Served::Process(g) => g.admin_target(),
        }
    }

    fn snapshot_dir(&self) -> &std::path::Path {
        match self {
            Served::InProcess(g) => g.snapshot_dir(),
            Served::Process(g) => g.snapshot_dir(),
        }
    }

    /// The gateway process's directory under `/proc`.
    fn proc_dir(&self) -> PathBuf {
        match self {
            Served::InProcess(_) => PathBuf::from("/proc/self"),
            Served::Process(g) => PathBuf::from(format!("/proc/{}", g.pid())),
        }
    }
}

/// The register, its listing stream and its snapshot, and a `cccgate serve` child process
/// over it with the settings the in-process gateway gets.
async fn spawn_gateway(
    cfg: &AttackConfig,
    program: &std::path::Path,
    secure: Option<&SecureFiles>,
) -> Result<(Setup, SpawnedGateway), BenchError> {
    let start = Instant::now();
    let (spec, profile, seed) = (cfg.register, cfg.profile, cfg.listing_seed);
    let cache_dir = cfg.cache_dir.clone();
    let (generator, dir) = tokio::task::spawn_blocking(move || {
        let register = spec.generate();
        let generator = ListingGenerator::new(&register, profile, seed);
        let dir = register_snapshot(&spec, register, &cache_dir);
        (generator, dir)
    })
    .await
    .map_err(|e| BenchError::Runtime(std::io::Error::other(e)))?;
    let dir = dir?;
    let mut flags: Vec<String> = vec![
        "--max-message-bytes".into(),
        MAX_MESSAGE_BYTES.to_string(),
        "--client-max-calls-per-second".into(),
        cfg.client_calls_per_second.to_string(),
        "--client-max-checks-per-second".into(),
        cfg.client_checks_per_second.to_string(),
        "--client-max-bytes-per-second".into(),
        cfg.client_bytes_per_second.to_string(),
    ];
    if let Some(s) = secure {
        let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
        flags.extend([
            "--tls-cert".into(),
            path(&s.tls.cert),
            "--tls-key".into(),
            path(&s.tls.key),
            "--auth-tokens".into(),
            path(&s.tokens_file),
        ]);
    }
    let log = cfg
        .cache_dir
        .join(format!("attack-gateway-{}.log", std::process::id()));
    let gw = SpawnedGateway::start(program, &dir, &flags, &log, Duration::from_secs(300)).await?;
    let su = Setup {
        target: format!("http://{}", gw.addr()),
        credentials: Credentials::default(),
        embedded: None,
        generator,
        setup_seconds: start.elapsed().as_secs_f64(),
    };
    Ok((su, gw))
}

async fn phases(
    cfg: &AttackConfig,
    su: &mut Setup,
    gw: &Served,
    secure: Option<&SecureFiles>,
) -> Result<Vec<Phase>, BenchError> {
    let (target, market, attacker, anonymous) = match secure {
        Some(s) => (
            format!("https://{}", gw.addr()),
            s.credentials("market")?,
            s.credentials("attacker")?,
            s.credentials("attacker")?.with_token(None)?,
        ),
        None => (
            format!("http://{}", gw.addr()),
            Credentials::default(),
            Credentials::default(),
            Credentials::default(),
        ),
    };
    su.target = target.clone();
    su.credentials = market;
    let arsenal = Arc::new(Arsenal {
        target,
        admin_target: gw.admin_target().to_owned(),
        snapshot_dir: gw.snapshot_dir().to_path_buf(),
        attacker,
        anonymous,
        one: one_largest(),
    });
    let normal = |label: String, seconds: Duration| Drive {
        label,
        rpc: Rpc::Stream,
        chunk: cfg.chunk,
        senders: cfg.streams,
        connections: cfg.connections,
        planned: None,
        duration: Some(seconds),
        pacing: Pacing::Rate(cfg.rate),
        swaps: false,
        progress: cfg.progress,
    };
    // Warm-up, not counted: connections, the snapshot's pages, the allocator.
    let warm = (cfg.phase / 4).min(Duration::from_secs(3));
    drive(su, &normal("attack warm-up".into(), warm), async |_| Ok(())).await?;
    let mut order = vec![None];
    for a in &cfg.attacks {
        if *a == Attack::NoToken && secure.is_none() {
            continue;
        }
        order.push(Some(*a));
        order.push(None);
    }
    let mut out = Vec::new();
    let proc_dir = gw.proc_dir();
    for attack in order {
        let label = format!("attack {}", attack.map_or("none", Attack::name));
        let answers = Arc::new(Answers::default());
        let rss_start = status_bytes(&proc_dir, "VmRSS:");
        let peak_reset = std::fs::write(proc_dir.join("clear_refs"), "5").is_ok();
        let (run, ()) = drive(su, &normal(label, cfg.phase), async |_| {
            if let Some(a) = attack {
                let until = Instant::now() + cfg.phase;
                match &cfg.attacker {
                    AttackerPlace::InProcess => {
                        run_one(a, cfg.flood_calls, &arsenal, &answers, until).await?;
                    }
                    AttackerPlace::Process { .. } => {
                        let got = attacker_process(a, cfg, &arsenal, secure).await?;
                        for (i, c) in got.by_code.iter().enumerate() {
                            answers.by_code[i]
                                .fetch_add(c.load(Ordering::Relaxed), Ordering::Relaxed);
                        }
                    }
                }
            }
            Ok(())
        })
        .await?;
        let rss_growth = match (peak_reset, rss_start, status_bytes(&proc_dir, "VmHWM:")) {
            (true, Some(start), Some(peak)) => Some(peak.saturating_sub(start)),
            _ => None,
        };
        let answers = Arc::try_unwrap(answers).unwrap_or_default();
        out.push(Phase {
            attack,
            latency: Latency::of(&run.stats.latency_us),
            checks_per_sec: run.stats.checks() as f64 / run.seconds.max(1e-9),
            errors: run.stats.errors(),
            mismatches: run.stats.mismatches,
            first_error: run.stats.first_error.clone(),
            histogram: run.stats.latency_us,
            answers,
            rss_growth,
        });
    }
    Ok(out)
}

/// The line `key` of the process's `status` (`VmRSS:`, `VmHWM:`), in bytes, if the system says.
fn status_bytes(proc_dir: &std::path::Path, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A listing with every field at its limit.
fn largest_listing(i: usize) -> Listing {
    Listing {
        listing_id: format!("{i:0>128}"),
        merchant_id: "m".repeat(128),
        product_code: "0901".into(),
        certificate_number: "3".repeat(128),
        model: "x".repeat(256),
        event_time: "2026-11-27T10:00:00+08:00".into(),
    }
}

/// `CheckBatchRequest` bytes of `n` empty listings (2 bytes each on the wire).
fn empty_listings(n: usize) -> Bytes {
    Bytes::from([0x0a_u8, 0x00].repeat(n))
}

/// Runs `attack` until `until`, counting what the attacker gets.
async fn run_one(
    attack: Attack,
    flood_calls: usize,
    arsenal: &Arc<Arsenal>,
    answers: &Arc<Answers>,
    until: Instant,
) -> Result<(), BenchError> {
    let a = arsenal;
    let loops = |tasks, connections, rpc, body, creds| {
        unary_loops(
            &a.target,
            creds,
            tasks,
            connections,
            rpc,
            body,
            answers,
            until,
        )
    };
    match attack {
        Attack::HugeBatches => loops(4, 4, Rpc::Batch, empty_listings(8 << 20), &a.attacker).await,
        Attack::LargestBatches => {
            let body = CheckBatchRequest {
                listings: (0..10_000).map(largest_listing).collect(),
                min_snapshot_sequence: 0,
            }
            .encode_to_vec();
            loops(4, 4, Rpc::Batch, Bytes::from(body), &a.attacker).await
        }
        Attack::Flood => loops(flood_calls, 4, Rpc::Unary, a.one.clone(), &a.attacker).await,
        Attack::NoToken => loops(256, 2, Rpc::Unary, a.one.clone(), &a.anonymous).await,
        Attack::IdleStreams => {
            let gateway = Gateway::connect_with(&a.target, 1, &a.attacker).await?;
            let mut held = Vec::new();
            for _ in 0..256 {
                let mut client = gateway.client(0);
                match tokio::time::timeout_at(until.into(), client.open_stream()).await {
                    Ok(Ok(s)) => {
                        answers.count(Code::Ok);
                        held.push(s);
                    }
                    Ok(Err(s)) => answers.count(s.code()),
                    Err(_) => break,
                }
            }
            tokio::time::sleep_until(until.into()).await;
            drop(held);
            Ok(())
        }
        Attack::ReloadStorm => {
            let garbage = a.snapshot_dir.join(cccgate_snapshot::file_name(999_999));
            std::fs::write(&garbage, b"not a snapshot")
                .map_err(|e| BenchError::Invalid(format!("{}: {e}", garbage.display())))?;
            let mut joins = Vec::new();
            for _ in 0..16 {
                let (target, answers) = (a.admin_target.clone(), answers.clone());
                joins.push(tokio::spawn(async move {
                    let Ok(mut admin) = AdminClient::connect(target).await else {
                        answers.count(Code::Unavailable);
                        return;
                    };
                    while let Ok(r) =
                        tokio::time::timeout_at(until.into(), admin.reload(ReloadRequest {})).await
                    {
                        answers.of(&r);
                    }
                }));
            }
            for j in joins {
                let _ = j.await;
            }
            let _ = std::fs::remove_file(&garbage);
            Ok(())
        }
    }
}

/// Runs `attack` for one phase in a child process (`cccgate bench attacker`), as
/// `cfg.attacker` says, and reads what it got from its last line.
async fn attacker_process(
    attack: Attack,
    cfg: &AttackConfig,
    arsenal: &Arsenal,
    secure: Option<&SecureFiles>,
) -> Result<Answers, BenchError> {
    let AttackerPlace::Process {
        program,
        priority,
        cpus,
    } = &cfg.attacker
    else {
        return Err(BenchError::Invalid(
            "the attacker runs in this process".into(),
        ));
    };
    let wrapper = priority.wrapper();
    let mut cmd = std::process::Command::new(&wrapper[0]);
    cmd.args(&wrapper[1..]);
    if let Some(cpus) = cpus {
        cmd.args(["taskset", "-c", cpus]);
    }
    cmd.arg(program)
        .args(["bench", "attacker", "--attack", attack.name()])
        .args(["--target", &arsenal.target])
        .args(["--admin-target", &arsenal.admin_target])
        .arg("--snapshot-dir")
        .arg(&arsenal.snapshot_dir)
        .args(["--seconds", &cfg.phase.as_secs_f64().to_string()])
        .args(["--flood-calls", &cfg.flood_calls.to_string()])
        .env_remove(ATTACKER_TOKEN_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    if let Some(s) = secure {
        cmd.arg("--ca-file").arg(s.ca_file()?);
        if attack != Attack::NoToken {
            let token = s
                .token("attacker")
                .ok_or_else(|| BenchError::Invalid("no token for the attacker".into()))?;
            cmd.env(ATTACKER_TOKEN_ENV, token);
        }
    }
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| BenchError::Invalid(format!("the attacker process: {e}")))?
        .map_err(|e| BenchError::Invalid(format!("cannot start the attacker process: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let parsed = stdout.lines().rev().find_map(Answers::parse_line);
    match parsed {
        Some(a) if out.status.success() => Ok(a),
        _ => Err(BenchError::Invalid(format!(
            "the attacker process ({}) failed: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))),
    }
}

/// The environment variable that carries the attacker's token to its process (not argv,
/// which any user of the machine can read).
pub const ATTACKER_TOKEN_ENV: &str = "CCCGATE_ATTACKER_TOKEN";

/// One attack, as the attacker process runs it.
#[derive(Clone, Debug)]
pub struct AttackerSpec {
    /// The attack.
    pub attack: Attack,
    /// The public plane (`http://` or `https://`).
    pub target: String,
    /// The admin plane.
    pub admin_target: String,
    /// The gateway's snapshot directory (the reload storm writes a bad file there).
    pub snapshot_dir: PathBuf,
    /// PEM of the CA of an `https://` target.
    pub ca_file: Option<PathBuf>,
    /// The attacker's token, if it presents one.
    pub token: Option<String>,
    /// How long to attack.
    pub duration: Duration,
    /// Calls in flight in the flood.
    pub flood_calls: usize,
}

/// Runs one attack from this process on a runtime of `threads` workers; what it got.
pub fn run_attacker_blocking(spec: &AttackerSpec, threads: usize) -> Result<Answers, BenchError> {
    block_on_runtimes("attacker", threads, None, async |_| {
        let mut creds = Credentials::default();
        if let Some(f) = &spec.ca_file {
            creds.ca_pem = Some(
                std::fs::read(f)
                    .map_err(|e| BenchError::Invalid(format!("{}: {e}", f.display())))?,
            );
        }
        let creds = creds.with_token(spec.token.as_deref())?;
        let arsenal = Arc::new(Arsenal {
            target: spec.target.clone(),
            admin_target: spec.admin_target.clone(),
            snapshot_dir: spec.snapshot_dir.clone(),
            anonymous: creds.clone().with_token(None)?,
            attacker: creds,
            one: one_largest(),
        });
        let answers = Arc::new(Answers::default());
        let until = Instant::now() + spec.duration;
        run_one(spec.attack, spec.flood_calls, &arsenal, &answers, until).await?;
        Ok(Arc::try_unwrap(answers).unwrap_or_default())
    })
}

/// `CheckRequest` bytes of one listing with every field at its limit.
fn one_largest() -> Bytes {
    Bytes::from(
        CheckRequest {
            listing: Some(largest_listing(0)),
            ..Default::default()
        }
        .encode_to_vec(),
    )
}

/// `tasks` callers over `connections`, each sending `body` as soon as its previous call is
/// answered, until `until`.
#[allow(clippy::too_many_arguments)]
async fn unary_loops(
    target: &str,
    creds: &Credentials,
    tasks: usize,
    connections: usize,
    rpc: Rpc,
    body: Bytes,
    answers: &Arc<Answers>,
    until: Instant,
) -> Result<(), BenchError> {
    let gateway = Gateway::connect_with(target, connections, creds).await?;
    let mut joins = Vec::new();
    for i in 0..tasks {
        let mut client = gateway.client(i);
        let (body, answers) = (body.clone(), answers.clone());
        joins.push(tokio::spawn(async move {
            while let Ok(r) =
                tokio::time::timeout_at(until.into(), client.unary(rpc, body.clone())).await
            {
                answers.of(&r);
            }
        }));
    }
    for j in joins {
        let _ = j.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacks_are_named_on_the_command_line_as_in_the_report() {
        for a in Attack::ALL {
            assert_eq!(a.name().parse::<Attack>(), Ok(a));
        }
        let err = "slowloris".parse::<Attack>().unwrap_err();
        assert!(err.contains("huge-batches"), "{err}");
    }

    #[test]
    fn an_attacker_process_line_reads_back_as_the_answers_it_counted() {
        let a = Answers::default();
        a.count(Code::Ok);
        a.count(Code::Ok);
        a.count(Code::ResourceExhausted);
        let line = a.line();
        assert_eq!(line, "answers 0=2 8=1");
        let b = Answers::parse_line(&line).unwrap();
        assert_eq!(b.to_string(), a.to_string());
        assert_eq!(b.total(), 3);
        assert!(Answers::parse_line("answers 99=1").is_none());
        assert!(Answers::parse_line("garbage").is_none());
    }

    #[test]
    fn the_attacker_runs_in_sched_idle_or_at_a_niceness() {
        assert_eq!(Priority::Idle.wrapper(), ["chrt", "--idle", "0"]);
        assert_eq!(Priority::Nice(19).wrapper(), ["nice", "-n", "19"]);
        assert_eq!(Priority::Idle.to_string(), "SCHED_IDLE");
    }

    #[test]
    fn empty_listings_are_two_bytes_each() {
        let b = empty_listings(3);
        assert_eq!(&b[..], &[0x0a, 0, 0x0a, 0, 0x0a, 0]);
        let decoded = CheckBatchRequest::decode(b).unwrap();
        assert_eq!(decoded.listings.len(), 3);
    }
}
