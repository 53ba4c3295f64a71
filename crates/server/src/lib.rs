//! The cccgate gateway: a tonic gRPC server that decides marketplace listings against the CCC
//! register snapshot in force, and swaps in newer snapshots while it serves.
//!
//! # Layout
//!
//! - [`store`]: the snapshot in force (`ArcSwapOption`), a writer handle for the reload path
//!   and read handles for the services.
//! - [`reload`]: the reload path: snapshot directory, in-process feed drops, file-system
//!   events with polling as the fallback, SIGHUP; refusals change nothing and are reported.
//! - `service`: `cccgate.v1.ListingCheck` (Check, CheckBatch, CheckStream), the hot path.
//! - `admin`: `cccgate.v1.Admin` (GetStatus, Reload).
//! - `metrics`, `decision_log`: observability, both off the hot path.
//! - [`config`]: settings and their precedence; [`sample`]: the embedded sample register.
//!
//! # Design
//!
//! [`run`] takes a bound listener and a shutdown future from the caller (mini-redis style), so
//! tests bind `127.0.0.1:0` and never sleep waiting for a port. It serves at once: until the
//! first snapshot is in force, health says NOT_SERVING and checks answer UNAVAILABLE, never a
//! default verdict. Every response message is decided by exactly one snapshot, loaded once;
//! a swap is one atomic pointer store, so a swap under load yields no failed or mixed answer.

#![deny(missing_docs)]

mod admin;
mod admission;
pub mod affinity;
mod answer;
mod arriving;
mod auth;
pub mod config;
mod console;
mod decision_log;
mod fair;
mod http_json;
mod lanes;
mod metrics;
mod public;
mod rate;
pub mod reload;
pub mod sample;
mod service;
mod shadow;
pub mod store;
mod tarpit;
mod tls;
pub mod watch;
mod wire;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cccgate_loader::Loader;
use cccgate_proto::v1::admin_server::AdminServer;
use tokio::net::TcpListener;

pub use auth::AuthError;
pub use config::{Config, ConfigError, ConfigLayer, Limits, LogFormat};
pub use decision_log::{DecisionLogError, DecisionLogSettings};
pub use reload::{Refusal, RefusedKind, ReloadOutcome, Reloader, Trigger};
pub use service::CheckError;
pub use store::{Loaded, SnapshotReader, SnapshotWriter, Swap, Swaps, snapshot_store};
pub use tls::{TlsError, TlsFiles};
pub use watch::{Clock, ManualClock, SharedClock, SystemClock};
#[doc(hidden)]
pub use wire::fuzz_decode;

/// Why the gateway cannot start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// An address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A key file (drop or snapshot) cannot be read.
    #[error("key: {0}")]
    PublicKey(#[from] cccgate_loader::KeyError),
    /// The TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The auth tokens file cannot be used.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The decision log cannot be opened.
    #[error(transparent)]
    DecisionLog(#[from] DecisionLogError),
    /// The reflection service cannot be built from the descriptor sets.
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The gRPC transport failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The snapshot signing key is not the pair of the snapshot public key.
    #[error(
        "snapshot_sign_key is not the pair of snapshot_public_key: the snapshots this gateway builds would be refused"
    )]
    KeyPair,
    /// The snapshot directory cannot be created or read.
    #[error("{}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The listeners the gateway serves on.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC, the public plane: ListingCheck, health, reflection.
    pub grpc: TcpListener,
    /// gRPC, the admin plane: Admin, health, reflection; `None`: no Admin service at all.
    pub admin: Option<TcpListener>,
    /// Prometheus `/metrics`, if wanted.
    pub metrics: Option<TcpListener>,
}

/// Serves on `listener` until `shutdown` completes, then drains in-flight requests and streams
/// (for at most `config.shutdown_grace`). Binds `config.admin_listen` and
/// `config.metrics_listen` itself, if set.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?,
        ),
        None => None,
    };
    let admin = match config.admin_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServeError::Bind { addr, source })?,
        ),
        None => None,
    };
    run_with(
        Listeners {
            grpc: listener,
            admin,
            metrics,
        },
        config,
        shutdown,
    )
    .await
}

/// Like [`run`], with every listener given by the caller (tests bind both to port 0).
pub async fn run_with(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    if listeners.metrics.is_some() {
        // The recorder first: a counter registered before it exists (the decision log's, at
        // open) would go to the no-op recorder and never appear on /metrics.
        metrics::prometheus();
    }
    let loader = Loader {
        public_key: match &config.drop_public_key {
            Some(path) => Some(cccgate_loader::read_verifying_key(path)?),
            None => None,
        },
        max_bad_rows: config.drop_max_bad_rows,
        shrink_threshold: config.drop_shrink_threshold,
        force: false,
        limits: config.drop_limits.clone(),
    };
    if let Some(dir) = &config.snapshot_dir {
        std::fs::create_dir_all(dir).map_err(|source| ServeError::Dir {
            path: dir.clone(),
            source,
        })?;
    }

    let (health, health_service) = tonic_health::server::health_reporter();
    for name in reload::HEALTH_NAMES {
        health
            .set_service_status(name, tonic_health::ServingStatus::NotServing)
            .await;
    }
    let snapshot_public_key = match &config.snapshot_public_key {
        Some(path) => Some(cccgate_loader::read_verifying_key(path)?),
        None => None,
    };
    let snapshot_sign_key = match &config.snapshot_sign_key {
        Some(path) => Some(cccgate_loader::read_signing_key(path)?),
        None => None,
    };
    if let (Some(public), Some(secret)) = (&snapshot_public_key, &snapshot_sign_key)
        && secret.verifying_key() != *public
    {
        return Err(ServeError::KeyPair);
    }
    let (mut writer, reader) = snapshot_store();
    let swaps = writer.notify_swaps();
    let reloader = Arc::new(
        Reloader::new(
            writer,
            config.snapshot_dir.clone(),
            config.drop_dir.clone(),
            loader,
        )
        .with_snapshot_keys(snapshot_public_key, snapshot_sign_key)
        .with_housekeeping(config.allow_rollback, config.keep_snapshots)
        .with_health(health.clone()),
    );

    let (log, log_task) = match &config.decision_log {
        Some(path) => {
            let mut settings = decision_log::DecisionLogSettings::new(path.clone());
            settings.queue = config.decision_log_queue;
            settings.queue_bytes = config.decision_log_queue_bytes;
            settings.max_file_bytes = config.decision_log_max_file_bytes;
            settings.keep_files = config.decision_log_keep_files;
            if let Some(key) = &config.decision_log_merchant_key {
                settings.merchant_key = Some(decision_log::read_merchant_key(key)?);
            }
            let (log, task) = decision_log::DecisionLog::start(settings).await?;
            (Some(log), Some(task))
        }
        None => (None, None),
    };
    // Shadow evaluation: the candidate is looked for in the background, like the first snapshot.
    let shadow = config.candidate_dir.as_ref().map(|dir| {
        let (shadow, _worker) =
            shadow::Shadow::start(dir.clone(), config.shadow_sample, config.policy);
        let (s, r) = (Arc::clone(&shadow), Arc::clone(&reloader));
        tokio::task::spawn_blocking(move || s.refresh(&r));
        shadow
    });
    let mut ctx =
        service::CheckContext::new(reader.clone(), config.policy, config.limits, log.clone());
    ctx.shadow = shadow.clone();
    let ctx = Arc::new(ctx);
    let overrides = config.policy_overrides();
    tracing::info!(
        addr = %listeners.grpc.local_addr().map_or_else(|e| e.to_string(), |a| a.to_string()),
        snapshot_dir = ?config.snapshot_dir,
        drop_dir = ?config.drop_dir,
        policy_overrides = ?overrides,
        "gateway listening"
    );

    // The first snapshot, then the watcher, in the background: the port answers at once.
    let background = tokio::spawn({
        let reloader = Arc::clone(&reloader);
        let (watch, poll) = (config.watch, config.poll_interval);
        async move {
            if reloader.is_watching() {
                // Runs the start-up pass itself, after it starts watching.
                reload::watch(reloader, watch, poll).await;
            } else {
                match tokio::task::spawn_blocking(sample::sample_snapshot).await {
                    Ok(Ok(s)) => {
                        reloader.install(s, sample::SAMPLE_ORIGIN);
                        reloader.publish_health().await;
                    }
                    Ok(Err(e)) => tracing::error!(error = %e, "embedded sample not loaded"),
                    Err(e) => tracing::error!(error = %e, "embedded sample not loaded"),
                }
            }
        }
    });

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    // Each plane's reflection lists what that plane serves.
    let reflection = |services: &[&str]| -> Result<_, ServeError> {
        let mut v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cccgate_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        let mut v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cccgate_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for name in services.iter().chain(&["grpc.health.v1.Health"]) {
            v1 = v1.with_service_name(*name);
            v1alpha = v1alpha.with_service_name(*name);
        }
        Ok((v1.build_v1()?, v1alpha.build_v1alpha()?))
    };

    let limits = config.limits;
    let public_tls = config.tls.clone().map(tls::Tls::open).transpose()?;
    let admin_tls = config.admin_tls.clone().map(tls::Tls::open).transpose()?;
    let auth = match &config.auth_tokens {
        Some(path) => Some(auth::TokenAuth::open(path)?),
        None => None,
    };
    let auth_task = auth
        .clone()
        .map(|a| tokio::spawn(a.watch(Duration::from_secs(1))));
    let watch_hub = watch::WatchHub::new(
        Arc::clone(&config.clock),
        config.watch_history,
        config.policy,
        config.watch_max_listings,
        config.limits.max_batch,
    );
    let watch_task = tokio::spawn(watch::run(Arc::clone(&watch_hub), swaps));
    let admin_service = admin::AdminService::new(Arc::clone(&reloader), log).with_shadow(shadow);
    // The console's promote/discard buttons: only with an operators' tokens file.
    let console_buttons = match &config.console_tokens {
        Some(path) => Some(Arc::new(console::Buttons::new(auth::TokenAuth::open(
            path,
        )?))),
        None => None,
    };
    let console_tokens_task = console_buttons
        .clone()
        .map(|b| tokio::spawn(b.watch_tokens(Duration::from_secs(1))));
    let metrics_task = listeners.metrics.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "metrics on http://{addr}/metrics");
            tracing::info!(%addr, "operators' console on http://{addr}/");
        }
        let console = console::Console::new(
            Arc::clone(&reloader),
            Arc::clone(&watch_hub.feed),
            config.policy,
            admin_service.clone(),
            console_buttons.clone(),
        );
        let mut stop = stop_rx.clone();
        tokio::spawn(metrics::serve(
            listener,
            reader.clone(),
            console,
            async move {
                let _ = stop.wait_for(|s| *s).await;
            },
        ))
    });
    let check = public::PublicCheck::new(Arc::clone(&ctx), auth).with_watch(Arc::clone(&watch_hub));
    let admin = AdminServer::new(admin_service);
    drop(ctx);

    let mut builder = tonic::transport::Server::builder()
        .concurrency_limit_per_connection(limits.concurrency_limit_per_connection)
        .load_shed(true)
        .max_concurrent_streams(Some(limits.max_concurrent_streams_per_connection))
        .http2_keepalive_interval(limits.http2_keepalive_interval)
        .http2_keepalive_timeout(Some(limits.http2_keepalive_timeout))
        .initial_stream_window_size(Some(limits.http2_stream_window_bytes));
    if let Some(age) = limits.max_connection_age {
        builder = builder
            .max_connection_age(age)
            .max_connection_age_grace(limits.max_connection_age_grace);
    }
    if let Some(t) = limits.request_timeout {
        builder = builder.timeout(t);
    }
    // The public plane: ListingCheck, health, reflection. Admin is not routed here, so it
    // answers UNIMPLEMENTED.
    // HTTP/JSON (`/v1/check`, `/v1/check:batch`) shares the port, so HTTP/1.1 is accepted too.
    let (r1, r1alpha) = reflection(&["cccgate.v1.ListingCheck"])?;
    let router = builder
        .clone()
        .accept_http1(true)
        .add_service(health_service.clone())
        .add_service(r1)
        .add_service(r1alpha)
        .add_service(http_json::HttpJson::new(check.clone()))
        .add_service(check);
    // The admin plane, on its own listener.
    let admin_serve = match listeners.admin {
        Some(listener) => {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(%addr, "admin plane listening");
            }
            let (a1, a1alpha) = reflection(&["cccgate.v1.Admin"])?;
            let router = builder
                .add_service(health_service)
                .add_service(a1)
                .add_service(a1alpha)
                .add_service(admin);
            let mut stop = stop_rx.clone();
            let incoming = tls::accept(listener, admin_tls, limits.connection_read_slice_bytes);
            futures::future::Either::Left(router.serve_with_incoming_shutdown(
                incoming,
                async move {
                    let _ = stop.wait_for(|s| *s).await;
                },
            ))
        }
        None => {
            drop(admin);
            futures::future::Either::Right(std::future::pending())
        }
    };

    let signal = {
        let health = health.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; draining requests and streams");
            for name in reload::HEALTH_NAMES {
                health
                    .set_service_status(name, tonic_health::ServingStatus::NotServing)
                    .await;
            }
            // Watch streams never end by themselves: end them, so draining does not wait.
            watch_hub.shutdown();
            let _ = stop_tx.send(true);
        }
    };
    let incoming = tls::accept(
        listeners.grpc,
        public_tls,
        limits.connection_read_slice_bytes,
    );
    let public_serve = router.serve_with_incoming_shutdown(incoming, signal);
    // The public plane's end ends the gateway; the admin plane stops with it.
    let serve = async move {
        tokio::pin!(admin_serve);
        tokio::select! {
            r = public_serve => r,
            r = &mut admin_serve => r,
        }
    };
    let grace = config.shutdown_grace;
    let mut stopping = stop_rx.clone();
    let grace_expired = async move {
        let _ = stopping.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        r = serve => r.map_err(ServeError::from),
        () = grace_expired => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown grace over; closing what is left");
            Ok(())
        }
    };

    background.abort();
    for task in [auth_task, console_tokens_task].into_iter().flatten() {
        task.abort();
    }
    watch_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    // The services (and their decision-log senders) are gone with the server: the writer
    // drains what is queued and ends.
    if let Some(task) = log_task
        && tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
    {
        tracing::warn!("decision log writer did not finish in 5 s");
    }
    tracing::info!("gateway stopped");
    result
}
