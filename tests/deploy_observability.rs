//! What `deploy/` relies on from a running gateway: the probes the Deployment points at
//! (`/livez`, `/readyz` on the metrics listener) and every metric name the alert rules
//! (`deploy/prometheus/rules.yaml`) and the Grafana dashboard
//! (`deploy/k8s/components/monitoring/dashboard.json`) query.
//!
//! The metrics recorder is process-wide, so these tests look for series names, never totals.

use std::collections::BTreeSet;
use std::path::Path;

use cccgate_core::Status;
use cccgate_e2e::gateway::{TestGateway, cert_number, record, test_config_with, write_snapshot};
use cccgate_proto::v1::{CheckBatchRequest, CheckRequest, Listing, ReloadRequest};
use cccgate_server::ConfigLayer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// `(status code, body)` of `GET path`.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (code, body)
}

fn listing(id: &str, cert: u32) -> Listing {
    Listing {
        listing_id: id.into(),
        merchant_id: "M1".into(),
        product_code: "0901".into(),
        certificate_number: cert_number(cert).to_string(),
        model: String::new(),
        event_time: "2026-11-27T10:00:00+08:00".into(),
    }
}

fn config(dir: &Path, decision_log: Option<std::path::PathBuf>) -> cccgate_server::Config {
    test_config_with(
        Some(dir),
        ConfigLayer {
            decision_log,
            ..Default::default()
        },
    )
}

#[tokio::test]
async fn livez_answers_without_a_snapshot_and_readyz_only_with_one() {
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(config(dir.path(), None), true).await;
    let http = gw.metrics_addr.expect("a metrics endpoint");
    let admin = || async { gw.admin_client().await };

    // Fresh install: nothing to serve. Alive (a restart would not bring a snapshot), not ready.
    admin()
        .await
        .reload(ReloadRequest {})
        .await
        .expect("Reload");
    let (code, body) = http_get(http, "/livez").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = http_get(http, "/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("no snapshot"), "{body}");

    // A snapshot in force: ready, and says which.
    write_snapshot(dir.path(), 5, &[record(1, Status::Valid, 901, &["X1"])]);
    admin()
        .await
        .reload(ReloadRequest {})
        .await
        .expect("Reload");
    let (code, body) = http_get(http, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains('5'), "{body}");
    let (code, _) = http_get(http, "/livez").await;
    assert_eq!(code, 200);
    gw.stop().await.expect("clean stop");
}

/// Metric names (`cccgate_...`) in a PromQL expression.
fn metric_names(expr: &str, into: &mut BTreeSet<String>) {
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("cccgate_") {
        let start = i + at;
        let before = start.checked_sub(1).map(|b| bytes[b]);
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        // Not part of a longer identifier or a label value like "cccgate-admin".
        if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'"') {
            into.insert(expr[start..end].to_owned());
        }
        i = end;
    }
}

/// Every metric name an alert rule or a dashboard panel queries.
fn used_metric_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let rules = std::fs::read_to_string(Path::new(ROOT).join("deploy/prometheus/rules.yaml"))
        .expect("deploy/prometheus/rules.yaml");
    let mut exprs = 0;
    for line in rules.lines() {
        if let Some(expr) = line.trim_start().strip_prefix("expr:") {
            metric_names(expr, &mut names);
            exprs += 1;
        }
    }
    assert!(exprs >= 5, "found {exprs} rule expressions");
    let dash = std::fs::read_to_string(
        Path::new(ROOT).join("deploy/k8s/components/monitoring/dashboard.json"),
    )
    .expect("the dashboard");
    let dash: serde_json::Value = serde_json::from_str(&dash).expect("dashboard JSON");
    let mut targets = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().into_iter().flatten() {
            metric_names(t["expr"].as_str().expect("an expr"), &mut names);
            targets += 1;
        }
    }
    assert!(targets >= 10, "found {targets} dashboard queries");
    names
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboard_use_is_on_metrics() {
    let used = used_metric_names();
    // The parser sees what is there: a few names any sane set of rules and panels uses.
    for must in [
        "cccgate_checks_total",
        "cccgate_snapshot_sequence",
        "cccgate_reloads_total",
        "cccgate_check_duration_seconds_bucket",
    ] {
        assert!(used.contains(must), "{must} not found in {used:?}");
    }

    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), 3, &[record(1, Status::Valid, 901, &["X1"])]);
    let gw = TestGateway::start(
        config(dir.path(), Some(dir.path().join("decisions.jsonl"))),
        true,
    )
    .await;
    gw.admin_client()
        .await
        .reload(ReloadRequest {})
        .await
        .expect("Reload");
    // One call of each kind; one bad listing; one refusal for a snapshot not yet in force.
    let mut client = gw.check_client().await;
    client
        .check(CheckRequest {
            listing: Some(listing("L1", 1)),
            ..Default::default()
        })
        .await
        .expect("Check");
    let mut bad = listing("L2", 1);
    bad.product_code = "9".into();
    client
        .check_batch(CheckBatchRequest {
            listings: vec![listing("L3", 2), bad],
            min_snapshot_sequence: 0,
        })
        .await
        .expect("CheckBatch");
    let stale = client
        .check_batch(CheckBatchRequest {
            listings: vec![listing("L4", 1)],
            min_snapshot_sequence: 99,
        })
        .await
        .expect_err("sequence 99 is not in force");
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition);
    let msg = CheckRequest {
        listing: Some(listing("L5", 1)),
        ..Default::default()
    };
    let mut replies = client
        .check_stream(tokio_stream::iter(vec![msg]))
        .await
        .expect("CheckStream")
        .into_inner();
    while replies.message().await.expect("a stream reply").is_some() {}

    let (code, page) = http_get(gw.metrics_addr.expect("metrics"), "/metrics").await;
    assert_eq!(code, 200);
    let exported: BTreeSet<&str> = page
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = used
        .iter()
        .filter(|n| !exported.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "used by rules or panels but not on /metrics: {missing:?}\n{page}"
    );
    gw.stop().await.expect("clean stop");
}
