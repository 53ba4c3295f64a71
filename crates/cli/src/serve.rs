//! `cccgate serve`: runs the gateway. Flags and `CCCGATE_*` environment variables (clap reads
//! both, flags first) become the top layer of the settings, a `--config` TOML file the next,
//! then defaults; `cccgate_server::Config::resolve` decides. With no snapshot directory the
//! gateway serves the embedded sample register, and this prints how to call it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use cccgate_server::{Config, ConfigLayer, LogFormat};

/// Options of `cccgate serve`. Each flag also reads the environment variable shown; a flag
/// wins over its variable, which wins over the `--config` file, which wins over the default.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// TOML file of settings (keys as the flags, with underscores; `[policy]` table).
    #[arg(long, env = "CCCGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Public-plane address: gRPC, and HTTP/JSON at POST /v1/check and /v1/check:batch
    /// [default: 127.0.0.1:50051].
    #[arg(long, env = "CCCGATE_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Admin-plane gRPC address (cccgate.v1.Admin, health, reflection), or `off`; the public
    /// --listen answers UNIMPLEMENTED for Admin [default: 127.0.0.1:50052].
    #[arg(long, env = "CCCGATE_ADMIN_LISTEN", value_name = "ADDR|off")]
    admin_listen: Option<String>,
    /// Admin-plane HTTP address: Prometheus /metrics, /livez, /readyz and the operators' web
    /// console at /; or `off` [default: 127.0.0.1:9464].
    #[arg(long, env = "CCCGATE_METRICS_LISTEN", value_name = "ADDR|off")]
    metrics_listen: Option<String>,
    /// Serve the newest valid snap-<sequence>.ccc here and watch for newer ones
    /// [default: none: serve the embedded sample].
    #[arg(long, env = "CCCGATE_SNAPSHOT_DIR", value_name = "DIR")]
    snapshot_dir: Option<PathBuf>,
    /// Load feed drops that appear here in-process (snapshots go to --snapshot-dir).
    #[arg(long, env = "CCCGATE_DROP_DIR", value_name = "DIR")]
    drop_dir: Option<PathBuf>,
    /// Watch the directories for file-system events [default: true]; polling runs regardless.
    #[arg(long, env = "CCCGATE_WATCH", value_name = "BOOL")]
    watch: Option<bool>,
    /// Polling interval in milliseconds [default: 5000].
    #[arg(long, env = "CCCGATE_POLL_INTERVAL_MS", value_name = "MS")]
    poll_interval_ms: Option<u64>,
    /// Map a reason to another decision, e.g. MODEL_NOT_COVERED=BLOCK (repeatable; the
    /// variable takes a comma-separated list).
    #[arg(
        long = "policy",
        env = "CCCGATE_POLICY",
        value_name = "REASON=DECISION"
    )]
    policy: Vec<String>,
    /// Largest gRPC message in bytes, both ways; 10,000 listings at the largest field sizes
    /// take 7.9 MB [default: 8388608].
    #[arg(long, env = "CCCGATE_MAX_MESSAGE_BYTES", value_name = "BYTES")]
    max_message_bytes: Option<usize>,
    /// Most listings in one CheckBatch or stream message [default: 10000].
    #[arg(long, env = "CCCGATE_MAX_BATCH", value_name = "N")]
    max_batch: Option<usize>,
    /// Most Check/CheckBatch calls in progress at once; more are shed with
    /// RESOURCE_EXHAUSTED; one caller may hold half of them [default: 1024].
    #[arg(long, env = "CCCGATE_MAX_IN_FLIGHT", value_name = "N")]
    max_in_flight: Option<usize>,
    /// Most CheckStream streams open at once; more are refused with RESOURCE_EXHAUSTED
    /// [default: 256].
    #[arg(long, env = "CCCGATE_MAX_OPEN_STREAMS", value_name = "N")]
    max_open_streams: Option<usize>,
    /// HTTP/2 concurrent streams per connection [default: 256].
    #[arg(
        long,
        env = "CCCGATE_MAX_CONCURRENT_STREAMS_PER_CONNECTION",
        value_name = "N"
    )]
    max_concurrent_streams_per_connection: Option<u32>,
    /// Requests in progress per connection; more are shed [default: 512].
    #[arg(
        long,
        env = "CCCGATE_CONCURRENCY_LIMIT_PER_CONNECTION",
        value_name = "N"
    )]
    concurrency_limit_per_connection: Option<usize>,
    /// Deadline of a unary call in milliseconds, 0 for none [default: 10000].
    #[arg(long, env = "CCCGATE_REQUEST_TIMEOUT_MS", value_name = "MS")]
    request_timeout_ms: Option<u64>,
    /// Bytes requests in progress may hold over all callers, taken as each message's header
    /// arrives (its bytes plus 768 per listing it may hold) and given back once its answer is
    /// encoded; over it RESOURCE_EXHAUSTED with a retry hint [default: 268435456].
    #[arg(long, env = "CCCGATE_MAX_IN_FLIGHT_BYTES", value_name = "BYTES")]
    max_in_flight_bytes: Option<usize>,
    /// The same budget for one caller [default: 67108864].
    #[arg(long, env = "CCCGATE_CLIENT_MAX_IN_FLIGHT_BYTES", value_name = "BYTES")]
    client_max_in_flight_bytes: Option<usize>,
    /// Most CheckStream streams one caller may hold open [default: 128].
    #[arg(long, env = "CCCGATE_CLIENT_MAX_OPEN_STREAMS", value_name = "N")]
    client_max_open_streams: Option<usize>,
    /// Calls one caller may start a second (a token bucket holding one second's worth),
    /// refused before their body is read: over it RESOURCE_EXHAUSTED with a retry hint of
    /// when the caller has a call again; 0 for no quota [default: 0].
    #[arg(long, env = "CCCGATE_CLIENT_MAX_CALLS_PER_SECOND", value_name = "N")]
    client_max_calls_per_second: Option<u64>,
    /// Listings one caller may send a second (a token bucket holding one second's worth, and
    /// at least --max-batch), taken per message once its listings are counted, before any is
    /// checked; a call is refused before its body is read while the caller has none left. A
    /// unary call so admitted is always answered (its listings taken into debt if need be); a
    /// stream message is refused while the caller is in debt. Over it RESOURCE_EXHAUSTED with
    /// a retry hint; 0 for no quota [default: 0].
    #[arg(long, env = "CCCGATE_CLIENT_MAX_CHECKS_PER_SECOND", value_name = "N")]
    client_max_checks_per_second: Option<u64>,
    /// Request bytes one caller's connections are read a second (a token bucket holding one
    /// second's worth, counted as the gateway reads them, refused calls' bytes included).
    /// Past it, the caller's connections are not read until it has bytes again: its data
    /// waits in the kernel's buffers and in its own, costing the gateway nothing, and its
    /// calls are slowed, not refused. Other callers are not touched. 0 for no quota, else at
    /// least 65536 [default: 0].
    #[arg(long, env = "CCCGATE_CLIENT_MAX_BYTES_PER_SECOND", value_name = "N")]
    client_max_bytes_per_second: Option<u64>,
    /// Most CheckStream streams one connection may hold open [default: 64].
    #[arg(long, env = "CCCGATE_CONNECTION_MAX_OPEN_STREAMS", value_name = "N")]
    connection_max_open_streams: Option<usize>,
    /// End a stream that sends no message for this long (DEADLINE_EXCEEDED), 0 for never
    /// [default: 120000].
    #[arg(long, env = "CCCGATE_STREAM_IDLE_TIMEOUT_MS", value_name = "MS")]
    stream_idle_timeout_ms: Option<u64>,
    /// HTTP/2 keepalive ping interval, 0 for none [default: 30000].
    #[arg(long, env = "CCCGATE_HTTP2_KEEPALIVE_INTERVAL_MS", value_name = "MS")]
    http2_keepalive_interval_ms: Option<u64>,
    /// Close a connection whose keepalive ping goes unanswered this long [default: 10000].
    #[arg(long, env = "CCCGATE_HTTP2_KEEPALIVE_TIMEOUT_MS", value_name = "MS")]
    http2_keepalive_timeout_ms: Option<u64>,
    /// Bytes a caller may send on one HTTP/2 stream ahead of what the gateway has taken in
    /// (the initial stream window): what a refused message can still push at the gateway
    /// [default: 1048576].
    #[arg(long, env = "CCCGATE_HTTP2_STREAM_WINDOW_BYTES", value_name = "BYTES")]
    http2_stream_window_bytes: Option<u32>,
    /// Ask a connection to reconnect (GOAWAY) after this long, so new replicas get load;
    /// 0 for never [default: 1800000].
    #[arg(long, env = "CCCGATE_MAX_CONNECTION_AGE_MS", value_name = "MS")]
    max_connection_age_ms: Option<u64>,
    /// Time a connection past its age has to finish its calls before it is closed
    /// [default: 60000].
    #[arg(long, env = "CCCGATE_MAX_CONNECTION_AGE_GRACE_MS", value_name = "MS")]
    max_connection_age_grace_ms: Option<u64>,
    /// How long shutdown waits for in-flight requests and streams [default: 30000].
    #[arg(long, env = "CCCGATE_SHUTDOWN_GRACE_MS", value_name = "MS")]
    shutdown_grace_ms: Option<u64>,
    /// Bytes read from one connection before its task lets other connections' work go first;
    /// 0 for no limit [default: 16384].
    #[arg(
        long,
        env = "CCCGATE_CONNECTION_READ_SLICE_BYTES",
        value_name = "BYTES"
    )]
    connection_read_slice_bytes: Option<usize>,
    /// Listings of one CheckBatch or stream message checked in one fair turn at the CPU; a
    /// larger message is checked in several, other callers' messages going in between
    /// [default: 250].
    #[arg(long, env = "CCCGATE_TURN_LISTINGS", value_name = "N")]
    turn_listings: Option<usize>,
    /// Tasks a worker thread runs between two looks for network events (tokio's
    /// event_interval; tokio's own default is 61) [default: 8].
    #[arg(long, env = "CCCGATE_RUNTIME_EVENT_INTERVAL", value_name = "N")]
    runtime_event_interval: Option<u32>,
    /// Pin the worker threads one to each CPU when the process may run on exactly as many
    /// CPUs as it has workers (a dedicated CPU set: a machine of its own, or a Kubernetes
    /// Guaranteed pod with whole CPUs under the static CPU manager); elsewhere they are never
    /// pinned. Unpinned in such a set, a worker woken to share the work can be placed on its
    /// waker's busy CPU and wait a scheduler tick for it [default: true].
    #[arg(long, env = "CCCGATE_RUNTIME_PIN_WORKERS", value_name = "BOOL")]
    runtime_pin_workers: Option<bool>,
    /// Log format: human or json [default: human].
    #[arg(long, env = "CCCGATE_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. info or cccgate_server=debug [default: info].
    #[arg(long, env = "CCCGATE_LOG_FILTER", value_name = "FILTER")]
    log_filter: Option<String>,
    /// Callers' tokens: one `NAME SHA256HEX` per line (hex SHA-256 of the token; `#` comments);
    /// every ListingCheck call must then send `authorization: Bearer TOKEN` or gets
    /// UNAUTHENTICATED. Re-read when it changes. Health and reflection stay open.
    #[arg(long, env = "CCCGATE_AUTH_TOKENS", value_name = "FILE")]
    auth_tokens: Option<PathBuf>,
    /// TLS on the public listener: certificate chain (PEM; with --tls-key). Re-read when it
    /// changes (rotation without restart); a plaintext client then fails.
    #[arg(long, env = "CCCGATE_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// TLS on the public listener: private key (PEM).
    #[arg(long, env = "CCCGATE_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// mTLS: client certificates must chain to this CA (PEM); the caller's name is the
    /// certificate's first DNS subject-alternative name, else its CN.
    #[arg(long, env = "CCCGATE_TLS_CLIENT_CA", value_name = "PEM")]
    tls_client_ca: Option<PathBuf>,
    /// TLS on the admin listener: certificate chain (PEM).
    #[arg(long, env = "CCCGATE_ADMIN_TLS_CERT", value_name = "PEM")]
    admin_tls_cert: Option<PathBuf>,
    /// TLS on the admin listener: private key (PEM).
    #[arg(long, env = "CCCGATE_ADMIN_TLS_KEY", value_name = "PEM")]
    admin_tls_key: Option<PathBuf>,
    /// mTLS on the admin listener: the operators' CA (PEM).
    #[arg(long, env = "CCCGATE_ADMIN_TLS_CLIENT_CA", value_name = "PEM")]
    admin_tls_client_ca: Option<PathBuf>,
    /// Append a JSON line per decision to this file [default: no decision log].
    #[arg(long, env = "CCCGATE_DECISION_LOG", value_name = "FILE")]
    decision_log: Option<PathBuf>,
    /// Requests or stream messages the decision log may queue before dropping [default: 4096].
    #[arg(long, env = "CCCGATE_DECISION_LOG_QUEUE", value_name = "N")]
    decision_log_queue: Option<usize>,
    /// Ed25519 public key file: every drop must be signed by it.
    #[arg(long, env = "CCCGATE_DROP_PUBLIC_KEY", value_name = "FILE")]
    drop_public_key: Option<PathBuf>,
    /// Bad certificate rows a drop may set aside into a reject file [default: 0].
    #[arg(long, env = "CCCGATE_DROP_MAX_BAD_ROWS", value_name = "N")]
    drop_max_bad_rows: Option<u64>,
    /// Shrink guard: largest fraction by which a full drop's valid certificates may fall
    /// [default: 0.05].
    #[arg(long, env = "CCCGATE_DROP_SHRINK_THRESHOLD", value_name = "FRACTION")]
    drop_shrink_threshold: Option<f64>,
    /// Largest manifest.json of a drop, in bytes [default: 1048576].
    #[arg(long, env = "CCCGATE_DROP_MAX_MANIFEST_BYTES", value_name = "BYTES")]
    drop_max_manifest_bytes: Option<u64>,
    /// Largest CSV field of a drop, in bytes [default: 65536].
    #[arg(long, env = "CCCGATE_DROP_MAX_FIELD_BYTES", value_name = "BYTES")]
    drop_max_field_bytes: Option<u64>,
    /// Largest CSV record of a drop, in bytes [default: 1048576].
    #[arg(long, env = "CCCGATE_DROP_MAX_RECORD_BYTES", value_name = "BYTES")]
    drop_max_record_bytes: Option<u64>,
    /// Largest data file of a drop after decompression, in bytes [default: 8589934592].
    #[arg(long, env = "CCCGATE_DROP_MAX_FILE_BYTES", value_name = "BYTES")]
    drop_max_file_bytes: Option<u64>,
    /// Largest decompressed/stored ratio of a gzip file past its first 64 MiB [default: 100].
    #[arg(long, env = "CCCGATE_DROP_MAX_GZIP_RATIO", value_name = "RATIO")]
    drop_max_gzip_ratio: Option<u64>,
    /// Bytes (estimated) the decision log may queue before dropping [default: 67108864].
    #[arg(long, env = "CCCGATE_DECISION_LOG_QUEUE_BYTES", value_name = "BYTES")]
    decision_log_queue_bytes: Option<usize>,
    /// Rotate the decision log when it would pass this size, 0 = never [default: 268435456].
    #[arg(
        long,
        env = "CCCGATE_DECISION_LOG_MAX_FILE_BYTES",
        value_name = "BYTES"
    )]
    decision_log_max_file_bytes: Option<u64>,
    /// Rotated decision log files kept (FILE.1 .. FILE.N) [default: 8].
    #[arg(long, env = "CCCGATE_DECISION_LOG_KEEP_FILES", value_name = "N")]
    decision_log_keep_files: Option<usize>,
    /// Key file (at least 16 bytes): write merchant ids as hmac-sha256:<hex> under it.
    #[arg(long, env = "CCCGATE_DECISION_LOG_MERCHANT_KEY", value_name = "FILE")]
    decision_log_merchant_key: Option<PathBuf>,
    /// Serve a snapshot older than the highest ever put in force from --snapshot-dir (its
    /// high-water mark) instead of refusing it; says so in logs, metrics and status.
    #[arg(long, env = "CCCGATE_ALLOW_ROLLBACK", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    allow_rollback: Option<bool>,
    /// After each snapshot built from --drop-dir, keep only the newest N snapshots (never the
    /// one in force) [default: keep all].
    #[arg(long, env = "CCCGATE_KEEP_SNAPSHOTS", value_name = "N")]
    keep_snapshots: Option<usize>,
    /// Ed25519 public key file: every snapshot must carry a valid snap-<seq>.ccc.sig made
    /// with its secret key (`load build --sign-key`); unsigned or badly signed ones are refused.
    #[arg(long, env = "CCCGATE_SNAPSHOT_PUBLIC_KEY", value_name = "FILE")]
    snapshot_public_key: Option<PathBuf>,
    /// Ed25519 secret key file: sign the snapshots built from --drop-dir with it (needed with
    /// --snapshot-public-key and --drop-dir; must be the pair of that public key).
    #[arg(long, env = "CCCGATE_SNAPSHOT_SIGN_KEY", value_name = "FILE")]
    snapshot_sign_key: Option<PathBuf>,
    /// Snapshot swaps whose change batches WatchChanges keeps for callers that resume; older
    /// `from_sequence`s are refused (FAILED_PRECONDITION: re-check everything) [default: 1000].
    #[arg(long, env = "CCCGATE_WATCH_HISTORY", value_name = "SWAPS")]
    watch_history: Option<usize>,
    /// Listings one caller may watch at once with WatchListings, over all its streams
    /// [default: 1000000].
    #[arg(long, env = "CCCGATE_WATCH_MAX_LISTINGS", value_name = "N")]
    watch_max_listings: Option<usize>,
    /// Shadow evaluation: the newest valid snapshot here (verified as a reload would) is the
    /// candidate register; a sampled share of live checks is also decided against it, off the
    /// hot path, and disagreements are counted and logged. Never put in force by itself:
    /// Admin.PromoteCandidate does that, Admin.DiscardCandidate drops it.
    #[arg(long, env = "CCCGATE_CANDIDATE_DIR", value_name = "DIR")]
    candidate_dir: Option<PathBuf>,
    /// Share of live checks also decided against the candidate, 0 to 1 (1: every listing)
    /// [default: 0.01].
    #[arg(long, env = "CCCGATE_SHADOW_SAMPLE", value_name = "FRACTION")]
    shadow_sample: Option<f64>,
    /// Operators' tokens (`NAME SHA256HEX` per line, as --auth-tokens): turns on the console's
    /// promote and discard buttons for the candidate register. Each press must carry one of
    /// these tokens (typed in the form), the page's nonce and a same-origin POST; it is logged
    /// with the operator's name. Without it the console only shows the candidate.
    #[arg(long, env = "CCCGATE_CONSOLE_TOKENS", value_name = "FILE")]
    console_tokens: Option<PathBuf>,
}

impl Args {
    fn layer(&self) -> ConfigLayer {
        ConfigLayer {
            listen: self.listen,
            admin_listen: self.admin_listen.clone(),
            metrics_listen: self.metrics_listen.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
            drop_dir: self.drop_dir.clone(),
            watch: self.watch,
            poll_interval_ms: self.poll_interval_ms,
            policy: self.policy.clone(),
            max_message_bytes: self.max_message_bytes,
            max_batch: self.max_batch,
            max_in_flight: self.max_in_flight,
            max_open_streams: self.max_open_streams,
            max_concurrent_streams_per_connection: self.max_concurrent_streams_per_connection,
            concurrency_limit_per_connection: self.concurrency_limit_per_connection,
            request_timeout_ms: self.request_timeout_ms,
            max_in_flight_bytes: self.max_in_flight_bytes,
            client_max_in_flight_bytes: self.client_max_in_flight_bytes,
            client_max_open_streams: self.client_max_open_streams,
            client_max_calls_per_second: self.client_max_calls_per_second,
            client_max_checks_per_second: self.client_max_checks_per_second,
            client_max_bytes_per_second: self.client_max_bytes_per_second,
            connection_max_open_streams: self.connection_max_open_streams,
            stream_idle_timeout_ms: self.stream_idle_timeout_ms,
            http2_keepalive_interval_ms: self.http2_keepalive_interval_ms,
            http2_keepalive_timeout_ms: self.http2_keepalive_timeout_ms,
            http2_stream_window_bytes: self.http2_stream_window_bytes,
            max_connection_age_ms: self.max_connection_age_ms,
            max_connection_age_grace_ms: self.max_connection_age_grace_ms,
            shutdown_grace_ms: self.shutdown_grace_ms,
            connection_read_slice_bytes: self.connection_read_slice_bytes,
            turn_listings: self.turn_listings,
            runtime_event_interval: self.runtime_event_interval,
            runtime_pin_workers: self.runtime_pin_workers,
            log_format: self.log_format,
            log_filter: self.log_filter.clone(),
            decision_log: self.decision_log.clone(),
            auth_tokens: self.auth_tokens.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            admin_tls_cert: self.admin_tls_cert.clone(),
            admin_tls_key: self.admin_tls_key.clone(),
            admin_tls_client_ca: self.admin_tls_client_ca.clone(),
            decision_log_queue: self.decision_log_queue,
            drop_public_key: self.drop_public_key.clone(),
            drop_max_bad_rows: self.drop_max_bad_rows,
            drop_shrink_threshold: self.drop_shrink_threshold,
            drop_max_manifest_bytes: self.drop_max_manifest_bytes,
            drop_max_field_bytes: self.drop_max_field_bytes,
            drop_max_record_bytes: self.drop_max_record_bytes,
            drop_max_file_bytes: self.drop_max_file_bytes,
            drop_max_gzip_ratio: self.drop_max_gzip_ratio,
            decision_log_queue_bytes: self.decision_log_queue_bytes,
            decision_log_max_file_bytes: self.decision_log_max_file_bytes,
            decision_log_keep_files: self.decision_log_keep_files,
            decision_log_merchant_key: self.decision_log_merchant_key.clone(),
            allow_rollback: self.allow_rollback,
            keep_snapshots: self.keep_snapshots,
            snapshot_public_key: self.snapshot_public_key.clone(),
            snapshot_sign_key: self.snapshot_sign_key.clone(),
            watch_history: self.watch_history,
            watch_max_listings: self.watch_max_listings,
            candidate_dir: self.candidate_dir.clone(),
            shadow_sample: self.shadow_sample,
            console_tokens: self.console_tokens.clone(),
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut layers = vec![args.layer()];
    if let Some(path) = &args.config {
        layers.push(ConfigLayer::from_toml_file(path)?);
    }
    let config = Config::resolve(&layers)?;
    init_logging(&config)?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .enable_all()
        .event_interval(config.runtime_event_interval)
        .thread_name("cccgate");
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if config.runtime_pin_workers
        && let Some(pinner) = cccgate_server::affinity::Pinner::for_workers(workers)
    {
        tracing::info!(
            workers,
            "worker threads pinned one to each CPU of the process's set"
        );
        let unpin = std::sync::Arc::clone(&pinner);
        builder
            .worker_threads(workers)
            .on_thread_start(move || unpin.unpin_current())
            .on_thread_park(move || pinner.pin_current());
    }
    let runtime = builder.build().context("cannot start the async runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let metrics = match config.metrics_listen {
        Some(m) => Some(
            tokio::net::TcpListener::bind(m)
                .await
                .with_context(|| format!("cannot listen on {m} for /metrics"))?,
        ),
        None => None,
    };
    let admin = match config.admin_listen {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} for the admin plane"))?,
        ),
        None => None,
    };
    let metrics_addr = metrics.as_ref().and_then(|m| m.local_addr().ok());
    let admin_addr = admin.as_ref().and_then(|m| m.local_addr().ok());
    if config.snapshot_dir.is_none() {
        print_sample_help(addr, admin_addr, metrics_addr);
    }
    let listeners = cccgate_server::Listeners {
        grpc: listener,
        admin,
        metrics,
    };
    cccgate_server::run_with(listeners, config, shutdown_signal()).await?;
    Ok(())
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_filter)
        .with_context(|| format!("log filter {:?}", config.log_filter))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let result = match config.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

/// Prints how to call the gateway serving the embedded sample: a grpcurl line per example,
/// with the verdict it gets.
fn print_sample_help(addr: SocketAddr, admin: Option<SocketAddr>, metrics: Option<SocketAddr>) {
    let snapshot = match cccgate_server::sample::sample_snapshot() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: {e}");
            return;
        }
    };
    let counts = snapshot.counts();
    println!(
        "cccgate: serving the embedded sample register (sequence {}, {} certificates, {} valid) \
         on {addr}",
        snapshot.sequence(),
        counts.total,
        counts.valid()
    );
    println!("Try it (the server has reflection, so grpcurl needs no .proto):");
    for ex in cccgate_server::sample::examples(&snapshot) {
        // A struct keeps the fields in the proto's order (a json! map would sort them).
        #[derive(serde::Serialize)]
        struct Body<'a> {
            listing: &'a cccgate_core::ListingEvent,
        }
        let body = serde_json::to_string(&Body {
            listing: &ex.listing,
        })
        .unwrap_or_default();
        println!();
        println!("  grpcurl -plaintext -d '{body}' {addr} cccgate.v1.ListingCheck/Check",);
        println!(
            "  # expect: DECISION_{} / REASON_{}",
            ex.decision.as_str(),
            ex.reason.as_str()
        );
    }
    println!();
    if let Some(admin) = admin {
        println!("  grpcurl -plaintext {admin} cccgate.v1.Admin/GetStatus   # the admin plane");
    }
    println!("  grpc_health_probe -addr={addr}");
    println!(
        "  curl http://{addr}/v1/check -H 'content-type: application/json' -d '{{\"listing\": {{\"listingId\": \"L1\", \"merchantId\": \"M1\", \"productCode\": \"0901\"}}}}'   # HTTP/JSON"
    );
    if let Some(m) = metrics {
        println!("  curl http://{m}/metrics");
        println!("  open http://{m}/ in a browser: the operators' console");
    }
    println!();
    println!("Serve a real register with --snapshot-dir DIR (and --drop-dir DIR); Ctrl-C stops.");
}
