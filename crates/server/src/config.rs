//! The gateway's settings, resolved from layers with one precedence:
//! command-line flags > `CCCGATE_*` environment variables > TOML file (`--config`) > defaults.
//!
//! Each source fills a [`ConfigLayer`] whose fields are all optional; [`Config::resolve`] takes
//! the first value set, layer by layer, and checks the result. Policy overrides merge per
//! reason: a higher layer's `MODEL_NOT_COVERED=BLOCK` replaces a lower layer's mapping of that
//! reason only. The binary turns flags and environment into a layer (clap reads both, flags
//! first); the TOML file is read here ([`ConfigLayer::from_toml_file`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cccgate_core::{Decision, Policy, PolicyError, Reason};
use serde::Deserialize;

/// The default gRPC address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:50051";
/// The default admin-plane gRPC address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:50052";
/// The default Prometheus `/metrics` address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "human" | "text" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log format {other:?}: expected human or json")),
        }
    }
}

/// One source of settings. Every field is optional: unset means "ask the next layer".
/// Field names are the TOML keys; the environment variable is `CCCGATE_` + the upper-cased name.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigLayer {
    /// gRPC address.
    pub listen: Option<SocketAddr>,
    /// Admin-plane gRPC address, or `off`.
    pub admin_listen: Option<String>,
    /// Prometheus `/metrics` address, or `off`.
    pub metrics_listen: Option<String>,
    /// Directory of `snap-<sequence>.ccc` files to serve and watch.
    pub snapshot_dir: Option<PathBuf>,
    /// Directory of feed drops to load in-process (needs `snapshot_dir`).
    pub drop_dir: Option<PathBuf>,
    /// Watch the directories for file-system events (polling runs regardless).
    pub watch: Option<bool>,
    /// Interval of the polling fallback, in milliseconds.
    pub poll_interval_ms: Option<u64>,
    /// Policy overrides, `REASON=DECISION` each (TOML: a table `[policy]`, see
    /// [`ConfigLayer::from_toml_str`]).
    #[serde(skip)]
    pub policy: Vec<String>,
    /// Largest gRPC message, in bytes, both ways.
    pub max_message_bytes: Option<usize>,
    /// Most listings in one CheckBatch or one stream message.
    pub max_batch: Option<usize>,
    /// Most Check and CheckBatch calls in progress at once, over all connections; beyond it a
    /// call is shed with RESOURCE_EXHAUSTED.
    pub max_in_flight: Option<usize>,
    /// Most CheckStream streams open at once, over all connections; beyond it a new stream is
    /// refused with RESOURCE_EXHAUSTED.
    pub max_open_streams: Option<usize>,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams_per_connection: Option<u32>,
    /// Requests in progress per connection; beyond it requests are shed.
    pub concurrency_limit_per_connection: Option<usize>,
    /// Deadline of a unary call, in milliseconds (a client's shorter `grpc-timeout` wins);
    /// 0: none.
    pub request_timeout_ms: Option<u64>,
    /// Bytes that requests in progress may hold, over all callers.
    pub max_in_flight_bytes: Option<usize>,
    /// Bytes that one caller's requests in progress may hold.
    pub client_max_in_flight_bytes: Option<usize>,
    /// CheckStream streams one caller may hold open.
    pub client_max_open_streams: Option<usize>,
    /// Calls one caller may start a second (token bucket, one second of burst); 0: no quota.
    pub client_max_calls_per_second: Option<u64>,
    /// Listings one caller may send a second (token bucket, one second of burst and at least
    /// `max_batch`; an admitted message may take it into debt, see `rate.rs`); 0: no quota.
    pub client_max_checks_per_second: Option<u64>,
    /// Request bytes one caller's connections are read a second (token bucket, one second of
    /// burst; past it its connections wait unread, see `rate.rs`); 0: no quota.
    pub client_max_bytes_per_second: Option<u64>,
    /// CheckStream streams one connection may hold open.
    pub connection_max_open_streams: Option<usize>,
    /// A stream with no request message for this long is ended, in milliseconds; 0: never.
    pub stream_idle_timeout_ms: Option<u64>,
    /// Interval of HTTP/2 keepalive pings, in milliseconds; 0: none.
    pub http2_keepalive_interval_ms: Option<u64>,
    /// How long a keepalive ping may go unanswered before the connection is closed, in ms.
    pub http2_keepalive_timeout_ms: Option<u64>,
    /// Bytes a caller may send on one HTTP/2 stream before the gateway has taken them in.
    pub http2_stream_window_bytes: Option<u32>,
    /// Connections are asked to reconnect (GOAWAY) after this long, in milliseconds; 0: never.
    pub max_connection_age_ms: Option<u64>,
    /// How long a connection past its age may finish its calls before it is closed, in ms.
    pub max_connection_age_grace_ms: Option<u64>,
    /// How long shutdown waits for in-flight requests and streams, in milliseconds.
    pub shutdown_grace_ms: Option<u64>,
    /// Bytes read from one connection before its task yields to the others; 0: no limit.
    pub connection_read_slice_bytes: Option<usize>,
    /// Listings of one message checked in one fair turn.
    pub turn_listings: Option<usize>,
    /// Tasks a worker thread of `cccgate serve` runs between two looks for I/O events.
    pub runtime_event_interval: Option<u32>,
    /// Pin `cccgate serve`'s worker threads one to each CPU when its CPU set has exactly as
    /// many CPUs as workers (`false`: never).
    pub runtime_pin_workers: Option<bool>,
    /// `human` or `json`.
    pub log_format: Option<LogFormat>,
    /// A tracing filter, e.g. `info` or `cccgate_server=debug,info`.
    pub log_filter: Option<String>,
    /// File to append the decision log to (JSON lines); unset: no decision log.
    pub decision_log: Option<PathBuf>,
    /// Callers' tokens, `NAME SHA256HEX` per line; set: every ListingCheck call needs one.
    pub auth_tokens: Option<PathBuf>,
    /// Public listener's certificate chain (PEM); with `tls_key`, TLS on.
    pub tls_cert: Option<PathBuf>,
    /// Public listener's private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) client certificates must chain to (mTLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Admin listener's certificate chain (PEM).
    pub admin_tls_cert: Option<PathBuf>,
    /// Admin listener's private key (PEM).
    pub admin_tls_key: Option<PathBuf>,
    /// CA (PEM) admin client certificates must chain to.
    pub admin_tls_client_ca: Option<PathBuf>,
    /// Messages (requests or stream chunks) the decision log may queue before it drops.
    pub decision_log_queue: Option<usize>,
    /// Ed25519 public key file; when set, every drop must be signed by it.
    pub drop_public_key: Option<PathBuf>,
    /// Bad certificate rows a drop may set aside instead of being refused.
    pub drop_max_bad_rows: Option<u64>,
    /// The shrink guard: largest fraction by which a full drop's valid certificates may fall.
    pub drop_shrink_threshold: Option<f64>,
    /// Largest `manifest.json` of a drop, in bytes.
    pub drop_max_manifest_bytes: Option<u64>,
    /// Largest CSV field of a drop, in bytes.
    pub drop_max_field_bytes: Option<u64>,
    /// Largest CSV record of a drop, in bytes.
    pub drop_max_record_bytes: Option<u64>,
    /// Largest data file of a drop after decompression, in bytes.
    pub drop_max_file_bytes: Option<u64>,
    /// Largest decompressed/stored ratio of a gzip file of a drop.
    pub drop_max_gzip_ratio: Option<u64>,
    /// Bytes (estimated) the decision log may queue before it drops.
    pub decision_log_queue_bytes: Option<usize>,
    /// Rotate the decision log when it would pass this size, in bytes; 0: never.
    pub decision_log_max_file_bytes: Option<u64>,
    /// Rotated decision log files kept.
    pub decision_log_keep_files: Option<usize>,
    /// Key file: merchant ids are written as their HMAC-SHA256 under it.
    pub decision_log_merchant_key: Option<PathBuf>,
    /// Serve a snapshot below the snapshot directory's high-water mark instead of refusing.
    pub allow_rollback: Option<bool>,
    /// Snapshots kept in the snapshot directory after each one built from a drop.
    pub keep_snapshots: Option<usize>,
    /// Ed25519 public key file; when set, every snapshot must carry a valid `.sig`.
    pub snapshot_public_key: Option<PathBuf>,
    /// Ed25519 secret key file the gateway signs the snapshots it builds from drops with.
    pub snapshot_sign_key: Option<PathBuf>,
    /// Snapshot swaps whose change batches are kept for `WatchChanges` callers that resume.
    pub watch_history: Option<usize>,
    /// Listings one caller may watch at once (`WatchListings`), over all its streams.
    pub watch_max_listings: Option<usize>,
    /// Directory whose newest valid snapshot is the candidate register (shadow evaluation).
    pub candidate_dir: Option<PathBuf>,
    /// Share of live checks also decided against the candidate, 0 to 1.
    pub shadow_sample: Option<f64>,
    /// Operators' tokens, `NAME SHA256HEX` per line; set: the console's promote and discard
    /// buttons are on, and each press needs one of these tokens.
    pub console_tokens: Option<PathBuf>,
}

/// Why settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML file is not valid.
    #[error("{}: {message}", path.display())]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the line and key).
        message: String,
    },
    /// A policy override cannot be read.
    #[error("policy override {text:?}: {source}")]
    Policy {
        /// The override as written.
        text: String,
        /// Why.
        source: PolicyError,
    },
    /// A setting has a value it cannot take.
    #[error("{key}: {message}")]
    Invalid {
        /// The setting.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Settings after resolution: every value decided.
#[derive(Clone, Debug)]
pub struct Config {
    /// gRPC address (used by the binary to bind; `run` takes a bound listener).
    pub listen: SocketAddr,
    /// Admin-plane gRPC address; `None`: no Admin service.
    pub admin_listen: Option<SocketAddr>,
    /// Prometheus `/metrics` address; `None`: no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
    /// Snapshot directory; `None` with `drop_dir` `None`: serve the embedded sample.
    pub snapshot_dir: Option<PathBuf>,
    /// Drop directory.
    pub drop_dir: Option<PathBuf>,
    /// Watch for file-system events.
    pub watch: bool,
    /// Polling interval.
    pub poll_interval: Duration,
    /// The operator's policy.
    pub policy: Policy,
    /// Limits.
    pub limits: Limits,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// Tasks a worker thread runs between two looks for I/O events (the binary's runtime;
    /// `run` takes a runtime already built).
    pub runtime_event_interval: u32,
    /// Pin the binary's worker threads one to each CPU of a CPU set of exactly as many
    /// ([`crate::affinity`]).
    pub runtime_pin_workers: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_filter: String,
    /// Decision log file.
    pub decision_log: Option<PathBuf>,
    /// Callers' tokens file.
    pub auth_tokens: Option<PathBuf>,
    /// TLS of the public listener; `None`: plaintext.
    pub tls: Option<crate::TlsFiles>,
    /// TLS of the admin listener; `None`: plaintext.
    pub admin_tls: Option<crate::TlsFiles>,
    /// Decision log queue, in messages.
    pub decision_log_queue: usize,
    /// Public key file for drops.
    pub drop_public_key: Option<PathBuf>,
    /// Bad rows a drop may set aside.
    pub drop_max_bad_rows: u64,
    /// Shrink guard threshold.
    pub drop_shrink_threshold: f64,
    /// Bounds on what a drop may make the loader read.
    pub drop_limits: cccgate_loader::Limits,
    /// Decision log queue, in estimated bytes.
    pub decision_log_queue_bytes: usize,
    /// Decision log rotation size; 0: never.
    pub decision_log_max_file_bytes: u64,
    /// Rotated decision log files kept.
    pub decision_log_keep_files: usize,
    /// Merchant-id hashing key file.
    pub decision_log_merchant_key: Option<PathBuf>,
    /// Serve a snapshot below the high-water mark.
    pub allow_rollback: bool,
    /// Snapshots kept after each one built from a drop; `None`: all.
    pub keep_snapshots: Option<usize>,
    /// Public key file snapshots must be signed by.
    pub snapshot_public_key: Option<PathBuf>,
    /// Secret key file to sign built snapshots with.
    pub snapshot_sign_key: Option<PathBuf>,
    /// Swaps kept in the change feed's history.
    pub watch_history: usize,
    /// Listings one caller may watch.
    pub watch_max_listings: usize,
    /// The clock of the change feed's days and of watched listings (tests set their own).
    pub clock: crate::watch::SharedClock,
    /// Candidate register directory (shadow evaluation); `None`: none.
    pub candidate_dir: Option<PathBuf>,
    /// Share of live checks also decided against the candidate.
    pub shadow_sample: f64,
    /// Operators' tokens file of the console's buttons; `None`: the buttons are off.
    pub console_tokens: Option<PathBuf>,
}

/// Request limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest gRPC message in bytes.
    pub max_message_bytes: usize,
    /// Most listings in a batch or stream message.
    pub max_batch: usize,
    /// Most unary and batch calls in progress at once.
    pub max_in_flight: usize,
    /// Most streams open at once.
    pub max_open_streams: usize,
    /// HTTP/2 concurrent streams per connection.
    pub max_concurrent_streams_per_connection: u32,
    /// Requests in progress per connection.
    pub concurrency_limit_per_connection: usize,
    /// Deadline of a unary call; `None`: none.
    pub request_timeout: Option<Duration>,
    /// Bytes requests in progress may hold, over all callers.
    pub max_in_flight_bytes: usize,
    /// Bytes one caller's requests in progress may hold.
    pub client_max_in_flight_bytes: usize,
    /// Streams one caller may hold open.
    pub client_max_open_streams: usize,
    /// Calls one caller may start a second; 0: no quota.
    pub client_max_calls_per_second: u64,
    /// Listings one caller may send a second; 0: no quota.
    pub client_max_checks_per_second: u64,
    /// Request bytes one caller's connections are read a second; 0: no quota.
    pub client_max_bytes_per_second: u64,
    /// Streams one connection may hold open.
    pub connection_max_open_streams: usize,
    /// Idle stream timeout; `None`: never.
    pub stream_idle_timeout: Option<Duration>,
    /// HTTP/2 keepalive ping interval; `None`: none.
    pub http2_keepalive_interval: Option<Duration>,
    /// HTTP/2 keepalive ping timeout.
    pub http2_keepalive_timeout: Duration,
    /// HTTP/2 initial stream window (`SETTINGS_INITIAL_WINDOW_SIZE`): bytes a caller may send
    /// on one stream ahead of what the gateway has taken in.
    pub http2_stream_window_bytes: u32,
    /// Maximum connection age; `None`: none.
    pub max_connection_age: Option<Duration>,
    /// Grace after the maximum connection age.
    pub max_connection_age_grace: Duration,
    /// Bytes read from one connection before its task yields to the others; 0: no limit.
    pub connection_read_slice_bytes: usize,
    /// Listings of one message checked in one fair turn.
    pub turn_listings: usize,
}

/// The largest HTTP/2 flow-control window (RFC 9113, 6.9.1).
pub const MAX_HTTP2_WINDOW: u32 = (1 << 31) - 1;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            // 10,000 listings with every field at its limit take 7.9 MB on the wire
            // (`wire::MAX_LISTING_WIRE_BYTES` each): the largest valid batch fits, with room
            // for the answer, and nothing much larger does.
            max_message_bytes: 8 * 1024 * 1024,
            max_batch: 10_000,
            max_in_flight: 1024,
            max_open_streams: 256,
            max_concurrent_streams_per_connection: 256,
            concurrency_limit_per_connection: 512,
            request_timeout: Some(Duration::from_secs(10)),
            // A largest batch costs ~16 MiB (`admission::message_cost`): 16 of them at once
            // over all callers, 4 per caller. Far below the 1.5 GiB a replica is given.
            max_in_flight_bytes: 256 * 1024 * 1024,
            client_max_in_flight_bytes: 64 * 1024 * 1024,
            client_max_open_streams: 128,
            client_max_calls_per_second: 0,
            client_max_checks_per_second: 0,
            client_max_bytes_per_second: 0,
            connection_max_open_streams: 64,
            stream_idle_timeout: Some(Duration::from_secs(120)),
            http2_keepalive_interval: Some(Duration::from_secs(30)),
            http2_keepalive_timeout: Duration::from_secs(10),
            // hyper's default. What a caller can push at the gateway ahead of its reading:
            // a refused message's bytes still in flight, received (and decrypted) for nothing.
            http2_stream_window_bytes: 1024 * 1024,
            max_connection_age: Some(Duration::from_secs(30 * 60)),
            max_connection_age_grace: Duration::from_secs(60),
            // One TLS record's worth: a connection sending a flood of small calls hands the
            // worker on after ~16 of them, not after hundreds (`tls::Conn`).
            connection_read_slice_bytes: 16 * 1024,
            // ~0.25 ms of one core: a normal caller's message waits for about that behind
            // another caller's largest batch (`service::CheckContext::decide_in_turns`).
            turn_listings: 250,
        }
    }
}

/// Tasks a worker thread of `cccgate serve` runs between two looks for I/O events (tokio's
/// default is 61): under load, a connection that became readable waits for that many other
/// tasks (~20-50 µs each) before its worker notices.
pub const DEFAULT_RUNTIME_EVENT_INTERVAL: u32 = 8;

/// The smallest non-zero `client_max_bytes_per_second`: 64 KiB a second, so that the pause
/// after one read past the bucket (at most a frame's buffer, tens of KiB) stays well within
/// HTTP/2 keepalive's timeout.
pub const MIN_CLIENT_BYTES_PER_SECOND: u64 = 64 * 1024;

impl Default for Config {
    fn default() -> Self {
        // Resolving no layers cannot fail: the defaults are valid.
        match Config::resolve(&[]) {
            Ok(c) => c,
            Err(e) => unreachable!("default configuration is invalid: {e}"),
        }
    }
}

impl ConfigLayer {
    /// Reads a TOML file. Unknown keys are refused, so a typo does not pass silently.
    pub fn from_toml_file(path: &Path) -> Result<ConfigLayer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Reads TOML text. `path` names it in errors. Policy overrides come as a table:
    /// `[policy]` then `MODEL_NOT_COVERED = "BLOCK"`.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<ConfigLayer, ConfigError> {
        let toml_err = |message: String| ConfigError::Toml {
            path: path.to_path_buf(),
            message,
        };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| toml_err(e.to_string()))?;
        let policy = table.remove("policy");
        let mut layer: ConfigLayer = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| toml_err(e.to_string()))?;
        if let Some(policy) = policy {
            let toml::Value::Table(policy) = policy else {
                return Err(toml_err(
                    "policy must be a table of REASON = \"DECISION\"".into(),
                ));
            };
            for (reason, decision) in policy {
                let Some(decision) = decision.as_str() else {
                    return Err(toml_err(format!(
                        "policy.{reason} must be a string: ALLOW, BLOCK or REVIEW"
                    )));
                };
                layer.policy.push(format!("{reason}={decision}"));
            }
        }
        Ok(layer)
    }
}

impl Config {
    /// Resolves layers, highest precedence first, over the defaults.
    pub fn resolve(layers: &[ConfigLayer]) -> Result<Config, ConfigError> {
        macro_rules! pick {
            ($field:ident) => {
                layers.iter().find_map(|l| l.$field.clone())
            };
        }
        let d = Limits::default();
        let metrics_listen = match pick!(metrics_listen) {
            None => Some(parse_addr("metrics_listen", DEFAULT_METRICS_LISTEN)?),
            Some(s) if matches!(s.trim(), "" | "off" | "none" | "false") => None,
            Some(s) => Some(parse_addr("metrics_listen", &s)?),
        };
        let admin_listen = match pick!(admin_listen) {
            None => Some(parse_addr("admin_listen", DEFAULT_ADMIN_LISTEN)?),
            Some(s) if matches!(s.trim(), "" | "off" | "none" | "false") => None,
            Some(s) => Some(parse_addr("admin_listen", &s)?),
        };
        let listen = match pick!(listen) {
            Some(a) => a,
            None => parse_addr("listen", DEFAULT_LISTEN)?,
        };
        // Lowest layer first, so a higher layer's mapping of a reason wins.
        let mut policy = Policy::default();
        for layer in layers.iter().rev() {
            for text in &layer.policy {
                for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    policy
                        .apply_override(item)
                        .map_err(|source| ConfigError::Policy {
                            text: item.to_owned(),
                            source,
                        })?;
                }
            }
        }
        let positive = |key: &'static str, v: usize| {
            if v == 0 {
                Err(ConfigError::Invalid {
                    key,
                    message: "must be at least 1".into(),
                })
            } else {
                Ok(v)
            }
        };
        // HTTP/2 allows windows of 1 to 2^31-1 bytes; 0 would stall every message.
        let window = |v: u32| {
            if v == 0 || v > MAX_HTTP2_WINDOW {
                Err(ConfigError::Invalid {
                    key: "http2_stream_window_bytes",
                    message: format!("must be 1 to {MAX_HTTP2_WINDOW} bytes, not {v}"),
                })
            } else {
                Ok(v)
            }
        };
        let limits = Limits {
            max_message_bytes: positive(
                "max_message_bytes",
                pick!(max_message_bytes).unwrap_or(d.max_message_bytes),
            )?,
            max_batch: positive("max_batch", pick!(max_batch).unwrap_or(d.max_batch))?,
            max_in_flight: positive(
                "max_in_flight",
                pick!(max_in_flight).unwrap_or(d.max_in_flight),
            )?,
            max_open_streams: positive(
                "max_open_streams",
                pick!(max_open_streams).unwrap_or(d.max_open_streams),
            )?,
            max_concurrent_streams_per_connection: positive(
                "max_concurrent_streams_per_connection",
                pick!(max_concurrent_streams_per_connection)
                    .unwrap_or(d.max_concurrent_streams_per_connection) as usize,
            )? as u32,
            concurrency_limit_per_connection: positive(
                "concurrency_limit_per_connection",
                pick!(concurrency_limit_per_connection)
                    .unwrap_or(d.concurrency_limit_per_connection),
            )?,
            request_timeout: ms_or_off(pick!(request_timeout_ms), d.request_timeout),
            max_in_flight_bytes: positive(
                "max_in_flight_bytes",
                pick!(max_in_flight_bytes).unwrap_or(d.max_in_flight_bytes),
            )?,
            client_max_in_flight_bytes: positive(
                "client_max_in_flight_bytes",
                pick!(client_max_in_flight_bytes).unwrap_or(d.client_max_in_flight_bytes),
            )?,
            client_max_open_streams: positive(
                "client_max_open_streams",
                pick!(client_max_open_streams).unwrap_or(d.client_max_open_streams),
            )?,
            client_max_calls_per_second: pick!(client_max_calls_per_second)
                .unwrap_or(d.client_max_calls_per_second),
            client_max_checks_per_second: pick!(client_max_checks_per_second)
                .unwrap_or(d.client_max_checks_per_second),
            client_max_bytes_per_second: match pick!(client_max_bytes_per_second)
                .unwrap_or(d.client_max_bytes_per_second)
            {
                // One read can go past the bucket by up to an HTTP/2 frame's buffer; below this
                // the connection would then be left unread for longer than keepalive allows.
                v @ 1..MIN_CLIENT_BYTES_PER_SECOND => {
                    return Err(ConfigError::Invalid {
                        key: "client_max_bytes_per_second",
                        message: format!(
                            "must be 0 (no quota) or at least {MIN_CLIENT_BYTES_PER_SECOND}, not {v}"
                        ),
                    });
                }
                v => v,
            },
            connection_max_open_streams: positive(
                "connection_max_open_streams",
                pick!(connection_max_open_streams).unwrap_or(d.connection_max_open_streams),
            )?,
            stream_idle_timeout: ms_or_off(pick!(stream_idle_timeout_ms), d.stream_idle_timeout),
            http2_keepalive_interval: ms_or_off(
                pick!(http2_keepalive_interval_ms),
                d.http2_keepalive_interval,
            ),
            http2_keepalive_timeout: pick!(http2_keepalive_timeout_ms)
                .map_or(d.http2_keepalive_timeout, Duration::from_millis),
            http2_stream_window_bytes: window(
                pick!(http2_stream_window_bytes).unwrap_or(d.http2_stream_window_bytes),
            )?,
            max_connection_age: ms_or_off(pick!(max_connection_age_ms), d.max_connection_age),
            max_connection_age_grace: pick!(max_connection_age_grace_ms)
                .map_or(d.max_connection_age_grace, Duration::from_millis),
            connection_read_slice_bytes: pick!(connection_read_slice_bytes)
                .unwrap_or(d.connection_read_slice_bytes),
            turn_listings: positive(
                "turn_listings",
                pick!(turn_listings).unwrap_or(d.turn_listings),
            )?,
        };
        // The smallest message must fit the budgets, or every call would be refused.
        let one = crate::admission::message_cost(64, limits.max_batch);
        if limits.client_max_in_flight_bytes < one {
            return Err(ConfigError::Invalid {
                key: "client_max_in_flight_bytes",
                message: format!("must be at least {one} (what one small message may cost)"),
            });
        }
        let snapshot_dir = pick!(snapshot_dir);
        let drop_dir = pick!(drop_dir);
        if drop_dir.is_some() && snapshot_dir.is_none() {
            return Err(ConfigError::Invalid {
                key: "drop_dir",
                message: "needs snapshot_dir too: the loader writes the snapshots it builds there"
                    .into(),
            });
        }
        let snapshot_public_key = pick!(snapshot_public_key);
        let snapshot_sign_key = pick!(snapshot_sign_key);
        if drop_dir.is_some() && snapshot_public_key.is_some() && snapshot_sign_key.is_none() {
            return Err(ConfigError::Invalid {
                key: "snapshot_sign_key",
                message: "drop_dir with snapshot_public_key needs snapshot_sign_key: the snapshots the gateway builds must be signed to be served again".into(),
            });
        }
        let candidate_dir = pick!(candidate_dir);
        if candidate_dir.is_some() && candidate_dir == snapshot_dir {
            return Err(ConfigError::Invalid {
                key: "candidate_dir",
                message: "must not be the snapshot directory: its snapshots would be put in force by themselves".into(),
            });
        }
        let shadow_sample = pick!(shadow_sample).unwrap_or(crate::shadow::DEFAULT_SAMPLE);
        if !(0.0..=1.0).contains(&shadow_sample) {
            return Err(ConfigError::Invalid {
                key: "shadow_sample",
                message: format!("{shadow_sample} is not a fraction between 0 and 1"),
            });
        }
        let drop_shrink_threshold =
            pick!(drop_shrink_threshold).unwrap_or(cccgate_loader::DEFAULT_SHRINK_THRESHOLD);
        if !(0.0..=1.0).contains(&drop_shrink_threshold) {
            return Err(ConfigError::Invalid {
                key: "drop_shrink_threshold",
                message: format!("{drop_shrink_threshold} is not a fraction between 0 and 1"),
            });
        }
        Ok(Config {
            listen,
            admin_listen,
            metrics_listen,
            snapshot_dir,
            drop_dir,
            watch: pick!(watch).unwrap_or(true),
            poll_interval: Duration::from_millis(positive(
                "poll_interval_ms",
                pick!(poll_interval_ms).unwrap_or(5_000) as usize,
            )? as u64),
            policy,
            limits,
            shutdown_grace: Duration::from_millis(pick!(shutdown_grace_ms).unwrap_or(30_000)),
            runtime_event_interval: match pick!(runtime_event_interval) {
                Some(0) => {
                    return Err(ConfigError::Invalid {
                        key: "runtime_event_interval",
                        message: "must be at least 1".into(),
                    });
                }
                v => v.unwrap_or(DEFAULT_RUNTIME_EVENT_INTERVAL),
            },
            runtime_pin_workers: pick!(runtime_pin_workers).unwrap_or(true),
            log_format: pick!(log_format).unwrap_or_default(),
            log_filter: pick!(log_filter).unwrap_or_else(|| "info".into()),
            decision_log: pick!(decision_log),
            auth_tokens: pick!(auth_tokens),
            tls: tls_files("tls", pick!(tls_cert), pick!(tls_key), pick!(tls_client_ca))?,
            admin_tls: tls_files(
                "admin_tls",
                pick!(admin_tls_cert),
                pick!(admin_tls_key),
                pick!(admin_tls_client_ca),
            )?,
            decision_log_queue: positive(
                "decision_log_queue",
                pick!(decision_log_queue).unwrap_or(4096),
            )?,
            drop_public_key: pick!(drop_public_key),
            drop_max_bad_rows: pick!(drop_max_bad_rows).unwrap_or(0),
            drop_shrink_threshold,
            drop_limits: cccgate_loader::Limits::default().with_overrides(
                pick!(drop_max_manifest_bytes),
                pick!(drop_max_field_bytes),
                pick!(drop_max_record_bytes),
                pick!(drop_max_file_bytes),
                pick!(drop_max_gzip_ratio),
            ),
            snapshot_public_key,
            snapshot_sign_key,
            decision_log_queue_bytes: positive(
                "decision_log_queue_bytes",
                pick!(decision_log_queue_bytes).unwrap_or(64 << 20),
            )?,
            decision_log_max_file_bytes: pick!(decision_log_max_file_bytes).unwrap_or(256 << 20),
            decision_log_keep_files: pick!(decision_log_keep_files).unwrap_or(8),
            decision_log_merchant_key: pick!(decision_log_merchant_key),
            allow_rollback: pick!(allow_rollback).unwrap_or(false),
            keep_snapshots: match pick!(keep_snapshots) {
                None => None,
                Some(n) => Some(positive("keep_snapshots", n)?),
            },
            watch_history: positive(
                "watch_history",
                pick!(watch_history).unwrap_or(crate::watch::DEFAULT_HISTORY),
            )?,
            watch_max_listings: pick!(watch_max_listings)
                .unwrap_or(crate::watch::DEFAULT_MAX_LISTINGS),
            clock: std::sync::Arc::new(crate::watch::SystemClock),
            candidate_dir,
            shadow_sample,
            console_tokens: pick!(console_tokens),
        })
    }

    /// The policy overrides in force, as `REASON=DECISION` (for logs and status).
    pub fn policy_overrides(&self) -> Vec<String> {
        self.policy
            .overrides()
            .map(|(r, d): (Reason, Decision)| format!("{r}={d}"))
            .collect()
    }
}

/// TLS files from their three settings: certificate and key together, the client CA only
/// with them.
fn tls_files(
    prefix: &'static str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> Result<Option<crate::TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(crate::TlsFiles {
            cert,
            key,
            client_ca,
        })),
        (None, None) if client_ca.is_none() => Ok(None),
        _ => Err(ConfigError::Invalid {
            key: if prefix == "tls" {
                "tls_cert"
            } else {
                "admin_tls_cert"
            },
            message: format!(
                "{prefix}_cert and {prefix}_key go together ({prefix}_client_ca needs both)"
            ),
        }),
    }
}

/// A duration in milliseconds where 0 means "off"; unset: the default.
fn ms_or_off(ms: Option<u64>, default: Option<Duration>) -> Option<Duration> {
    match ms {
        None => default,
        Some(0) => None,
        Some(ms) => Some(Duration::from_millis(ms)),
    }
}

fn parse_addr(key: &'static str, text: &str) -> Result<SocketAddr, ConfigError> {
    text.trim().parse().map_err(|e| ConfigError::Invalid {
        key,
        message: format!("{text:?} is not an address like 127.0.0.1:50051 ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toml(text: &str) -> ConfigLayer {
        ConfigLayer::from_toml_str(text, Path::new("test.toml")).unwrap()
    }

    #[test]
    fn defaults_serve_the_sample_on_localhost() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(
            c.metrics_listen.unwrap().to_string(),
            DEFAULT_METRICS_LISTEN
        );
        assert!(c.snapshot_dir.is_none() && c.drop_dir.is_none());
        assert_eq!(c.limits.max_batch, 10_000);
        assert_eq!(c.policy, Policy::default());
    }

    #[test]
    fn higher_layers_win_key_by_key() {
        let flags = ConfigLayer {
            max_batch: Some(5),
            ..Default::default()
        };
        let env = ConfigLayer {
            max_batch: Some(50),
            max_in_flight: Some(7),
            ..Default::default()
        };
        let file = toml("max_batch = 500\nmax_in_flight = 70\nmax_open_streams = 3\n");
        let c = Config::resolve(&[flags, env, file]).unwrap();
        assert_eq!(c.limits.max_batch, 5);
        assert_eq!(c.limits.max_in_flight, 7);
        assert_eq!(c.limits.max_open_streams, 3);
    }

    #[test]
    fn policy_overrides_merge_per_reason_with_the_higher_layer_winning() {
        let flags = ConfigLayer {
            policy: vec!["MODEL_NOT_COVERED=ALLOW".into()],
            ..Default::default()
        };
        let file =
            toml("[policy]\nMODEL_NOT_COVERED = \"BLOCK\"\nCERTIFICATE_NOT_FOUND = \"REVIEW\"\n");
        let c = Config::resolve(&[flags, file]).unwrap();
        assert_eq!(c.policy.decision(Reason::ModelNotCovered), Decision::Allow);
        assert_eq!(
            c.policy.decision(Reason::CertificateNotFound),
            Decision::Review
        );
    }

    #[test]
    fn environment_policy_may_list_several_overrides() {
        let env = ConfigLayer {
            policy: vec!["MODEL_NOT_COVERED=BLOCK, CERTIFICATE_NOT_FOUND=REVIEW".into()],
            ..Default::default()
        };
        let c = Config::resolve(&[env]).unwrap();
        assert_eq!(c.policy_overrides().len(), 2);
    }

    #[test]
    fn bad_values_are_refused_by_key() {
        let err = Config::resolve(&[ConfigLayer {
            policy: vec!["MODEL_NOT_COVERED=MAYBE".into()],
            ..Default::default()
        }])
        .unwrap_err();
        assert!(err.to_string().contains("MAYBE"), "{err}");
        let err = Config::resolve(&[ConfigLayer {
            max_batch: Some(0),
            ..Default::default()
        }])
        .unwrap_err();
        assert!(err.to_string().starts_with("max_batch"), "{err}");
        let err = Config::resolve(&[ConfigLayer {
            drop_dir: Some("drops".into()),
            ..Default::default()
        }])
        .unwrap_err();
        assert!(err.to_string().starts_with("drop_dir"), "{err}");
        for bad in [-0.1, 1.5, f64::NAN] {
            let err = Config::resolve(&[ConfigLayer {
                shadow_sample: Some(bad),
                ..Default::default()
            }])
            .unwrap_err();
            assert!(err.to_string().starts_with("shadow_sample"), "{err}");
        }
        let err = Config::resolve(&[ConfigLayer {
            snapshot_dir: Some("snaps".into()),
            candidate_dir: Some("snaps".into()),
            ..Default::default()
        }])
        .unwrap_err();
        assert!(err.to_string().starts_with("candidate_dir"), "{err}");
        let c = toml("candidate_dir = \"cands\"\nshadow_sample = 1\n");
        let c = Config::resolve(&[c]).unwrap();
        assert_eq!(c.shadow_sample, 1.0);
        assert_eq!(Config::default().shadow_sample, 0.01);
    }

    #[test]
    fn unknown_toml_keys_are_refused_with_the_file_named() {
        let err = ConfigLayer::from_toml_str("max_bacth = 3\n", Path::new("gw.toml")).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("gw.toml") && text.contains("max_bacth"),
            "{text}"
        );
    }

    #[test]
    fn the_bytes_quota_is_off_by_default_and_never_below_64_kib_a_second() {
        assert_eq!(Config::default().limits.client_max_bytes_per_second, 0);
        let err = Config::resolve(&[toml("client_max_bytes_per_second = 65535\n")]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("client_max_bytes_per_second") && text.contains("65535"),
            "{text}"
        );
        for ok in [0, 65_536, 16 << 20] {
            let c =
                Config::resolve(&[toml(&format!("client_max_bytes_per_second = {ok}\n"))]).unwrap();
            assert_eq!(c.limits.client_max_bytes_per_second, ok);
        }
    }

    #[test]
    fn the_http2_stream_window_is_one_byte_to_two_gib_and_hypers_mib_by_default() {
        assert_eq!(
            Config::default().limits.http2_stream_window_bytes,
            1024 * 1024
        );
        for bad in [0, u64::from(MAX_HTTP2_WINDOW) + 1] {
            let err = Config::resolve(&[toml(&format!("http2_stream_window_bytes = {bad}\n"))])
                .unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with("http2_stream_window_bytes") && text.contains(&bad.to_string()),
                "{text}"
            );
        }
        let c = Config::resolve(&[toml("http2_stream_window_bytes = 65536\n")]).unwrap();
        assert_eq!(c.limits.http2_stream_window_bytes, 65536);
    }

    #[test]
    fn turns_and_worker_event_interval_must_be_positive_and_read_slices_may_be_off() {
        let d = Config::default();
        assert_eq!(d.limits.turn_listings, 250);
        assert_eq!(d.limits.connection_read_slice_bytes, 16 * 1024);
        assert_eq!(d.runtime_event_interval, DEFAULT_RUNTIME_EVENT_INTERVAL);
        assert!(d.runtime_pin_workers);
        assert!(
            !Config::resolve(&[toml("runtime_pin_workers = false\n")])
                .unwrap()
                .runtime_pin_workers
        );
        for (text, key) in [
            ("turn_listings = 0\n", "turn_listings"),
            ("runtime_event_interval = 0\n", "runtime_event_interval"),
        ] {
            let err = Config::resolve(&[toml(text)]).unwrap_err();
            assert!(err.to_string().starts_with(key), "{err}");
        }
        let c = Config::resolve(&[toml(
            "connection_read_slice_bytes = 0\nturn_listings = 1000\nruntime_event_interval = 61\n",
        )])
        .unwrap();
        assert_eq!(c.limits.connection_read_slice_bytes, 0);
        assert_eq!(c.limits.turn_listings, 1000);
        assert_eq!(c.runtime_event_interval, 61);
    }

    #[test]
    fn metrics_can_be_turned_off_and_timeouts_zeroed() {
        let c =
            Config::resolve(&[toml("metrics_listen = \"off\"\nrequest_timeout_ms = 0\n")]).unwrap();
        assert!(c.metrics_listen.is_none());
        assert!(c.limits.request_timeout.is_none());
    }
}
