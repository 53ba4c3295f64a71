//! `cccgate bench attack`: a normal caller's CheckStream latency while the gateway is attacked
//! (huge and largest batches, a flood, idle streams, a reload storm, calls without a token),
//! each attack's p99 as a ratio to the same stream with no attack, in one run (see
//! `cccgate_bench::attack`). The table goes to stderr; the last line, to stdout, is `attack
//! baseline_p99_us=N huge-batches=R largest-batches=R flood=R idle-streams=R reload-storm=R
//! no-token=R`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use cccgate_bench::attack::{
    ATTACKER_TOKEN_ENV, Attack, AttackConfig, AttackerPlace, AttackerSpec, GatewayPlace, Priority,
    run_attack_blocking, run_attacker_blocking,
};
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
    /// Run the gateway in this process (on the callers' runtime, or one of
    /// --gateway-threads), instead of a `cccgate serve` process of its own.
    #[arg(long)]
    gateway_in_process: bool,
    /// With --gateway-in-process: worker threads of a runtime of the gateway's own; 0
    /// (default) shares the callers'.
    #[arg(long, default_value_t = 0)]
    gateway_threads: usize,
    /// Where the embedded gateway's snapshots are cached between runs.
    #[arg(long, default_value = "target/cccgate-bench")]
    cache_dir: PathBuf,
    /// `auto`, `bar`, `lines` or `off`.
    #[arg(long, default_value = "off")]
    progress: String,
    /// Run the attacker in the gateway's process, on the normal caller's runtime, instead of
    /// a process of its own.
    #[arg(long)]
    attacker_in_process: bool,
    /// Run the attacker's process at this niceness (0-19) instead of in the SCHED_IDLE class
    /// (the default: it runs only on CPU the gateway and the normal caller leave, and yields
    /// at once when they wake, as an attacker on another machine would cost them nothing).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=19))]
    attacker_nice: Option<u8>,
    /// Pin the attacker's process to these CPUs (`taskset -c` syntax, e.g. `1`).
    #[arg(long, value_name = "CPUS")]
    attacker_cpus: Option<String>,
    /// The gateway's --client-max-calls-per-second (0: no quota).
    #[arg(long, default_value_t = 5_000)]
    client_max_calls_per_second: u64,
    /// The gateway's --client-max-checks-per-second (0: no quota).
    #[arg(long, default_value_t = 100_000)]
    client_max_checks_per_second: u64,
    /// The gateway's --client-max-bytes-per-second (0: no quota).
    #[arg(long, default_value_t = cccgate_bench::attack::AttackConfig::default().client_bytes_per_second)]
    client_max_bytes_per_second: u64,
}

/// Options of the attacker's process.
#[derive(Debug, clap::Args)]
pub struct AttackerArgs {
    /// The attack.
    #[arg(long)]
    attack: Attack,
    /// The gateway's public plane.
    #[arg(long)]
    target: String,
    /// Its admin plane.
    #[arg(long)]
    admin_target: String,
    /// Its snapshot directory.
    #[arg(long)]
    snapshot_dir: PathBuf,
    /// PEM of the CA of an https:// target.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// How long to attack.
    #[arg(long)]
    seconds: f64,
    /// Calls in flight in the flood.
    #[arg(long, default_value_t = 2_048)]
    flood_calls: usize,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// Runs one attack and prints what it got as the last line (`answers CODE=N ...`); the token,
/// if any, comes from the environment.
pub fn run_attacker(args: AttackerArgs) -> anyhow::Result<()> {
    let spec = AttackerSpec {
        attack: args.attack,
        target: args.target,
        admin_target: args.admin_target,
        snapshot_dir: args.snapshot_dir,
        ca_file: args.ca_file,
        token: std::env::var(ATTACKER_TOKEN_ENV).ok(),
        duration: Duration::try_from_secs_f64(args.seconds).context("--seconds")?,
        flood_calls: args.flood_calls,
    };
    let answers = run_attacker_blocking(&spec, args.threads)?;
    println!("{}", answers.line());
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let d = AttackConfig::default();
    let program = std::env::current_exe().context("the path of this program")?;
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
        attacker: if args.attacker_in_process {
            AttackerPlace::InProcess
        } else {
            AttackerPlace::Process {
                program: program.clone(),
                priority: args.attacker_nice.map_or(Priority::Idle, Priority::Nice),
                cpus: args.attacker_cpus,
            }
        },
        gateway: if args.gateway_in_process {
            GatewayPlace::InProcess
        } else {
            GatewayPlace::Process { program }
        },
        client_calls_per_second: args.client_max_calls_per_second,
        client_checks_per_second: args.client_max_checks_per_second,
        client_bytes_per_second: args.client_max_bytes_per_second,
        progress: progress_mode(&args.progress, 10.0)?,
        ..d
    };
    let gateway_threads =
        (args.gateway_in_process && args.gateway_threads > 0).then_some(args.gateway_threads);
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
