//! What the benchmarks share: the gateway to load (a URL, or one started in-process over a
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

use crate::connect::ConnectError;
use crate::embedded::{EmbeddedError, EmbeddedGateway, embedded_config, register_snapshot};

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
}

/// A gateway and the listing stream to load it with.
#[derive(Debug)]
pub struct Setup {
    /// The gateway's URL.
    pub target: String,
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
            let gw = EmbeddedGateway::start(
                embedded_config(&dir?),
                gateway_rt,
                Duration::from_secs(300),
            )
            .await?;
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
        embedded,
        generator,
        setup_seconds: start.elapsed().as_secs_f64(),
    })
}
