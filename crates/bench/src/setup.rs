//! What the load benchmarks share: the gateway to load (a URL, or one started in-process over a
//! synthetic register) and the listing stream of the same register.
//!
//! The listings must come from the register the gateway serves, or the expected reasons (and
//! the expected blocked count) mean nothing: with `--embedded` that holds by construction;
//! with `--target` the gateway must serve the synthetic register of the same `--certs` and
//! `--seed` (`cccgate synth feed` then `cccgate load`), and the reports count every verdict
//! whose reason differs from the expected one as a mismatch.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cccgate_synth::{ListingGenerator, Profile, RegisterSpec};

use crate::embedded::{EmbeddedError, EmbeddedGateway, embedded_config, register_snapshot};
use cccgate_client::connect::{ConnectError, Credentials};

/// Which gateway a benchmark loads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GatewayChoice {
    /// A running gateway at this URL.
    Target(String),
    /// A gateway started in-process over the synthetic register, its snapshot cached here.
    Embedded {
        /// The snapshot cache.
        cache_dir: PathBuf,
    },
}

/// A benchmark that cannot run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The embedded gateway cannot be set up.
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// The gateway cannot be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// A runtime or thread cannot be started.
    #[error("cannot start the benchmark's runtime: {0}")]
    Runtime(std::io::Error),
    /// A setting is out of range.
    #[error("{0}")]
    Invalid(String),
    /// A benchmark snapshot cannot be built, written or opened.
    #[error("snapshot cache {}: {source}", path.display())]
    Snapshot {
        /// The snapshot file.
        path: PathBuf,
        /// Why.
        source: cccgate_snapshot::SnapshotError,
    },
    /// A listing did not get the verdict its generator expects: the numbers would measure
    /// the wrong thing.
    #[error("{0}")]
    Mismatch(String),
    /// A run stopped part-way (a swap failed): what it measured until then, to report before
    /// the error.
    #[error("the run stopped after {} swaps: {error}", report.memory.map_or(0, |m| m.swaps))]
    Stopped {
        /// The report of the run up to the failure (calls, verdicts, latency, memory, soak
        /// samples).
        report: Box<crate::grpc::GrpcReport>,
        /// Why it stopped.
        error: Box<BenchError>,
    },
}

/// A gateway and the listing stream to load it with.
#[derive(Debug)]
pub struct Setup {
    /// The gateway's URL.
    pub target: String,
    /// What the senders present to it (TLS trust, token).
    pub credentials: Credentials,
    /// The embedded gateway, if one was started (stopped when dropped).
    pub embedded: Option<EmbeddedGateway>,
    /// The listing stream over the register.
    pub generator: ListingGenerator,
    /// Seconds spent generating the register and opening or building its snapshot.
    pub setup_seconds: f64,
}

/// Generates the register of `spec`, the listing stream of `profile` over it, and (for
/// `--embedded`) starts the gateway on `gateway_rt` over its cached snapshot.
pub async fn setup(
    choice: &GatewayChoice,
    spec: RegisterSpec,
    profile: Profile,
    listing_seed: u64,
    gateway_rt: &tokio::runtime::Handle,
) -> Result<Setup, BenchError> {
    setup_with(choice, spec, profile, listing_seed, gateway_rt, |_| {}).await
}

/// [`setup`], with `configure` applied to the embedded gateway's settings (a decision log,
/// for instance) before it starts.
pub async fn setup_with(
    choice: &GatewayChoice,
    spec: RegisterSpec,
    profile: Profile,
    listing_seed: u64,
    gateway_rt: &tokio::runtime::Handle,
    configure: impl FnOnce(&mut cccgate_server::Config),
) -> Result<Setup, BenchError> {
    let start = Instant::now();
    let for_build = choice.clone();
    let (generator, dir) = tokio::task::spawn_blocking(move || {
        let register = spec.generate();
        let generator = ListingGenerator::new(&register, profile, listing_seed);
        let dir = match &for_build {
            GatewayChoice::Embedded { cache_dir } => {
                Some(register_snapshot(&spec, register, cache_dir))
            }
            GatewayChoice::Target(_) => None,
        };
        (generator, dir)
    })
    .await
    .map_err(|e| BenchError::Runtime(std::io::Error::other(e)))?;
    let (target, embedded) = match (choice, dir) {
        (_, Some(dir)) => {
            let mut config = embedded_config(&dir?);
            configure(&mut config);
            let gw = EmbeddedGateway::start(config, gateway_rt, Duration::from_secs(300)).await?;
            (gw.target().to_owned(), Some(gw))
        }
        (GatewayChoice::Target(t), None) => (t.clone(), None),
        (GatewayChoice::Embedded { .. }, None) => {
            return Err(BenchError::Invalid(
                "no snapshot for the embedded gateway".into(),
            ));
        }
    };
    Ok(Setup {
        target,
        credentials: Credentials::default(),
        embedded,
        generator,
        setup_seconds: start.elapsed().as_secs_f64(),
    })
}

/// A multi-threaded runtime of `threads` workers.
pub fn runtime(threads: usize, name: &str) -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)
}

/// Runs a benchmark on runtimes of its own: `client_threads` workers (threads named
/// `client_name`) for the senders and, for an embedded gateway, `gateway_threads` more
/// (`None`: the gateway shares the senders' runtime). `run` gets the handle the gateway is
/// to be started on.
pub fn block_on_runtimes<T>(
    client_name: &str,
    client_threads: usize,
    gateway_threads: Option<usize>,
    run: impl AsyncFnOnce(&tokio::runtime::Handle) -> Result<T, BenchError>,
) -> Result<T, BenchError> {
    let client = runtime(client_threads, client_name)?;
    let gateway = match gateway_threads {
        Some(n) => Some(runtime(n, "gateway")?),
        None => None,
    };
    let handle = gateway
        .as_ref()
        .map_or_else(|| client.handle().clone(), |g| g.handle().clone());
    let out = client.block_on(run(&handle));
    drop(gateway);
    out
}
