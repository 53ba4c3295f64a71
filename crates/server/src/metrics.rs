//! Prometheus metrics: what is recorded, and the `/metrics` endpoint on its own port.
//!
//! # Design
//!
//! Handles to every per-check metric are registered once, when the services are built
//! ([`CheckMetrics`]), so the hot path never builds a metric key. A request or stream chunk
//! counts its verdicts by reason in a local array and adds them once at the end. The recorder
//! is process-wide (the `metrics` facade allows one), installed on first use; several gateways
//! in one process (tests) share it.

use std::future::Future;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use cccgate_core::{Policy, Reason, Status};
use cccgate_snapshot::Snapshot;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

use crate::store::SnapshotReader;

/// Seconds buckets of the check latency histogram: 10 µs to 1 s.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 1.0,
];

/// Seconds buckets of the change feed's diff time per swap: 1 ms to 10 s.
const DIFF_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0];

/// Buckets of certificate changes per change-feed batch.
const CHANGES_BUCKETS: [f64; 8] = [
    0.0,
    10.0,
    100.0,
    1_000.0,
    10_000.0,
    100_000.0,
    1_000_000.0,
    10_000_000.0,
];

/// The process-wide Prometheus handle, installing the recorder on first call.
pub(crate) fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || {
            let buckets = [
                ("cccgate_check_duration_seconds", &LATENCY_BUCKETS[..]),
                ("cccgate_watch_diff_duration_seconds", &DIFF_BUCKETS[..]),
                ("cccgate_watch_changes_per_batch", &CHANGES_BUCKETS[..]),
            ];
            buckets
                .iter()
                .try_fold(PrometheusBuilder::new(), |b, (name, buckets)| {
                    b.set_buckets_for_metric(Matcher::Full((*name).into()), buckets)
                })
                .unwrap_or_else(|_| PrometheusBuilder::new())
        };
        match builder().install_recorder() {
            Ok(handle) => {
                describe();
                handle
            }
            Err(e) => {
                // Another recorder owns the facade (an embedding program's): keep serving,
                // with an endpoint that shows only what this recorder sees (nothing).
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics will be empty");
                builder().build_recorder().handle()
            }
        }
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "cccgate_checks_total",
        "Listings decided, by decision and reason"
    );
    describe_counter!(
        "cccgate_invalid_listings_total",
        "Listings refused as bad requests, by field"
    );
    describe_histogram!(
        "cccgate_check_duration_seconds",
        metrics::Unit::Seconds,
        "Time to decide one request or stream message, by rpc"
    );
    describe_gauge!(
        "cccgate_requests_in_flight",
        "Check and CheckBatch calls in progress"
    );
    describe_gauge!("cccgate_streams_open", "CheckStream streams open");
    describe_counter!(
        "cccgate_requests_shed_total",
        "Calls or streams refused with RESOURCE_EXHAUSTED, by rpc"
    );
    describe_counter!(
        "cccgate_stale_snapshot_refusals_total",
        "Requests refused because the snapshot was older than min_snapshot_sequence"
    );
    describe_gauge!(
        "cccgate_snapshot_sequence",
        "Sequence of the snapshot in force"
    );
    describe_gauge!(
        "cccgate_snapshot_age_seconds",
        "Seconds since the snapshot in force was built"
    );
    describe_gauge!(
        "cccgate_snapshot_certificates",
        "Certificates in the snapshot in force, by status"
    );
    describe_counter!(
        "cccgate_reloads_total",
        "Snapshot files and drops put in force or refused, by kind and outcome"
    );
    describe_gauge!(
        "cccgate_watched_listings",
        "Listings watched over WatchListings, by caller"
    );
    describe_gauge!("cccgate_watch_streams_open", "WatchListings streams open");
    describe_counter!(
        "cccgate_watch_batches_total",
        "Change feed batches computed, by cause (snapshot: a swap; day: a China-time midnight)"
    );
    describe_counter!(
        "cccgate_watch_certificate_changes_total",
        "Certificate changes in the change feed's batches, by cause"
    );
    describe_histogram!(
        "cccgate_watch_changes_per_batch",
        "Certificate changes per change feed batch, by cause"
    );
    describe_histogram!(
        "cccgate_watch_diff_duration_seconds",
        metrics::Unit::Seconds,
        "Time to compute one swap's changes (the diff of two snapshots)"
    );
    describe_gauge!(
        "cccgate_watch_history_changes",
        "Certificate changes held in the change feed's history (for resuming WatchChanges)"
    );
    describe_gauge!(
        "cccgate_watch_history_bytes",
        metrics::Unit::Bytes,
        "Bytes of the change feed's history as held (deflated protobuf)"
    );
    describe_counter!(
        "cccgate_watch_changed_verdicts_total",
        "CHANGED verdicts sent to WatchListings streams"
    );
    describe_counter!(
        "cccgate_watch_resyncs_total",
        "Callers told to re-check everything, by rpc (WatchChanges: from_sequence older than \
         the history; WatchListings: a stream ended because it left its answers unread)"
    );
    describe_counter!(
        "cccgate_decision_log_written_total",
        "Decision log lines written"
    );
    describe_counter!(
        "cccgate_decision_log_dropped_total",
        "Decision log lines dropped because the writer fell behind"
    );
}

/// Which RPC a measurement belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rpc {
    Check,
    Batch,
    Stream,
}

impl Rpc {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Rpc::Check => "Check",
            Rpc::Batch => "CheckBatch",
            Rpc::Stream => "CheckStream",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Verdicts of one request or chunk, counted locally and added once.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tally {
    pub by_reason: [u64; Reason::COUNT],
    pub invalid: u64,
}

impl Tally {
    #[inline]
    pub(crate) fn verdict(&mut self, reason: Reason) {
        self.by_reason[reason.index()] += 1;
    }
}

/// Pre-registered handles of the per-check metrics.
#[derive(Debug)]
pub(crate) struct CheckMetrics {
    checks: [Counter; Reason::COUNT],
    invalid: Counter,
    duration: [Histogram; 3],
    shed: [Counter; 3],
    stale: Counter,
    pub in_flight: Gauge,
    pub streams_open: Gauge,
}

impl CheckMetrics {
    /// Registers every handle; the decision label of each reason comes from the policy.
    pub(crate) fn new(policy: &Policy) -> Self {
        prometheus();
        reloads_at_zero();
        let rpcs = [Rpc::Check, Rpc::Batch, Rpc::Stream];
        CheckMetrics {
            checks: Reason::ALL.map(|r| {
                counter!(
                    "cccgate_checks_total",
                    "decision" => policy.decision(r).as_str(),
                    "reason" => r.as_str()
                )
            }),
            invalid: counter!("cccgate_invalid_listings_total"),
            duration: rpcs
                .map(|rpc| histogram!("cccgate_check_duration_seconds", "rpc" => rpc.as_str())),
            shed: rpcs.map(|rpc| counter!("cccgate_requests_shed_total", "rpc" => rpc.as_str())),
            stale: counter!("cccgate_stale_snapshot_refusals_total"),
            in_flight: gauge!("cccgate_requests_in_flight"),
            streams_open: gauge!("cccgate_streams_open"),
        }
    }

    /// Adds a request's or chunk's tally and its duration.
    pub(crate) fn record(&self, rpc: Rpc, tally: &Tally, seconds: f64) {
        for (counter, n) in self.checks.iter().zip(tally.by_reason) {
            if n > 0 {
                counter.increment(n);
            }
        }
        if tally.invalid > 0 {
            self.invalid.increment(tally.invalid);
        }
        self.duration[rpc.index()].record(seconds);
    }

    pub(crate) fn shed(&self, rpc: Rpc) {
        self.shed[rpc.index()].increment(1);
    }

    pub(crate) fn stale(&self) {
        self.stale.increment(1);
    }
}

/// Sets the snapshot gauges for the snapshot just put in force.
pub(crate) fn snapshot_in_force(snapshot: &Snapshot) {
    gauge!("cccgate_snapshot_sequence").set(snapshot.sequence() as f64);
    let counts = snapshot.counts();
    for s in Status::ALL {
        gauge!("cccgate_snapshot_certificates", "status" => s.as_str()).set(counts.of(s) as f64);
    }
    snapshot_age(snapshot);
}

fn snapshot_age(snapshot: &Snapshot) {
    let age_ms = now_unix_ms()
        .saturating_sub(snapshot.built_at_unix_ms())
        .max(0);
    gauge!("cccgate_snapshot_age_seconds").set(age_ms as f64 / 1000.0);
}

/// Counts a reload outcome: `kind` is `snapshot` or `drop`, `outcome` `loaded` or `refused`.
pub(crate) fn reload(kind: &'static str, outcome: &'static str) {
    counter!("cccgate_reloads_total", "kind" => kind, "outcome" => outcome).increment(1);
}

/// Registers the reload counters at zero, so `/metrics` shows every series an alert or a
/// dashboard reads from the start (`increase()` over a series that appears with its first
/// event misses that event).
fn reloads_at_zero() {
    for kind in ["snapshot", "drop"] {
        for outcome in ["loaded", "refused"] {
            counter!("cccgate_reloads_total", "kind" => kind, "outcome" => outcome).increment(0);
        }
    }
}

pub(crate) fn now_unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Serves `GET /metrics`, `/livez` and `/readyz` on `listener` until `shutdown` completes.
///
/// `/livez` answers 200 whenever the process serves HTTP at all: a gateway with no snapshot
/// yet (a fresh install, or every drop refused) is alive and must not be restarted, which
/// would not bring a snapshot. `/readyz` answers 200 only while a snapshot is in force, else
/// 503, so no traffic reaches a replica that would answer UNAVAILABLE.
///
/// The operators' console ([`crate::console`]) is served beside them, at `/`.
pub(crate) async fn serve(
    listener: TcpListener,
    reader: SnapshotReader,
    console: crate::console::Console,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/livez", get(|| async { "alive\n" }))
        .route("/readyz", get(ready))
        .with_state(reader)
        .merge(console.clone().router());
    let serve = axum::serve(listener, app).with_graceful_shutdown(shutdown);
    tokio::select! {
        r = async move { serve.await } => r,
        () = console.sample_forever() => Ok(()),
    }
}

async fn ready(State(reader): State<SnapshotReader>) -> (StatusCode, String) {
    match reader.load().as_ref() {
        Some(loaded) => (
            StatusCode::OK,
            format!("ready: snapshot {}\n", loaded.snapshot.sequence()),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no snapshot in force\n".into(),
        ),
    }
}

async fn render(State(reader): State<SnapshotReader>) -> String {
    // The age moves with the clock, so it is refreshed when scraped.
    if let Some(loaded) = reader.load().as_ref() {
        snapshot_age(&loaded.snapshot);
    }
    let handle = prometheus();
    handle.run_upkeep();
    handle.render()
}
