//! Observability and policy, end to end: the Prometheus endpoint on its own port, the decision
//! log written off the hot path, and operator policy overrides on the wire.
//!
//! The metrics recorder is process-wide, so assertions here look for series and labels, not
//! exact totals that another test in this binary could also move.

use cccgate_core::Status;
use cccgate_e2e::gateway::{TestGateway, cert_number, record, test_config_with, write_snapshot};
use cccgate_proto::v1::{
    self, CheckBatchRequest, CheckRequest, GetStatusRequest, Listing, ReloadRequest,
    listing_result::Outcome,
};
use cccgate_server::ConfigLayer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn listing(id: &str, cert: u32, model: &str) -> Listing {
    Listing {
        listing_id: id.into(),
        merchant_id: "M1".into(),
        product_code: "0901".into(),
        certificate_number: cert_number(cert).to_string(),
        model: model.into(),
        event_time: "2026-11-27T10:00:00+08:00".into(),
    }
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut body = String::new();
    s.read_to_string(&mut body).await.expect("read");
    body
}

#[tokio::test]
async fn metrics_and_the_decision_log_record_what_was_decided() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("decisions.jsonl");
    write_snapshot(dir.path(), 7, &[record(1, Status::Valid, 901, &["X1"])]);
    let config = test_config_with(
        Some(dir.path()),
        ConfigLayer {
            decision_log: Some(log_path.clone()),
            ..Default::default()
        },
    );
    let gw = TestGateway::start(config, true).await;
    gw.admin_client()
        .await
        .reload(ReloadRequest {})
        .await
        .expect("Reload");
    let mut client = gw.check_client().await;
    client
        .check(CheckRequest {
            listing: Some(listing("L1", 1, "x1")),
            ..Default::default()
        })
        .await
        .expect("Check");
    let mut bad = listing("L3", 1, "");
    bad.product_code = "9".into();
    client
        .check_batch(CheckBatchRequest {
            listings: vec![listing("L2", 2, ""), bad],
            min_snapshot_sequence: 0,
        })
        .await
        .expect("CheckBatch");

    let metrics_addr = gw.metrics_addr.expect("a metrics endpoint");
    let page = http_get(metrics_addr, "/metrics").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    for series in [
        "cccgate_checks_total{decision=\"ALLOW\",reason=\"CERTIFICATE_VALID\"}",
        "cccgate_checks_total{decision=\"BLOCK\",reason=\"CERTIFICATE_NOT_FOUND\"}",
        "cccgate_invalid_listings_total",
        "cccgate_check_duration_seconds_bucket{rpc=\"Check\"",
        "cccgate_check_duration_seconds_bucket{rpc=\"CheckBatch\"",
        "cccgate_snapshot_sequence",
        "cccgate_snapshot_age_seconds",
        "cccgate_snapshot_certificates{status=\"VALID\"}",
        "cccgate_reloads_total{kind=\"snapshot\",outcome=\"loaded\"}",
        "cccgate_requests_in_flight",
    ] {
        assert!(page.contains(series), "{series} missing from:\n{page}");
    }
    // Counters exist from start-up at 0, so their presence proves nothing: what was decided
    // above must have been counted (at least: the recorder is process-wide).
    for counted in [
        "cccgate_checks_total{decision=\"ALLOW\",reason=\"CERTIFICATE_VALID\"}",
        "cccgate_checks_total{decision=\"BLOCK\",reason=\"CERTIFICATE_NOT_FOUND\"}",
        "cccgate_invalid_listings_total",
    ] {
        let value = page
            .lines()
            .find_map(|l| l.strip_prefix(counted)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no value for {counted} in:\n{page}"));
        assert!(value >= 1.0, "{counted} = {value}");
    }
    let status = gw
        .admin_client()
        .await
        .get_status(GetStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner();
    assert_eq!(status.decision_log_dropped, 0);

    // Stopping drains the log: every listing has its line.
    gw.stop().await.expect("clean stop");
    let text = std::fs::read_to_string(&log_path).expect("the decision log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let by_id = |id: &str| {
        lines
            .iter()
            .find(|l| l["listing_id"] == id)
            .unwrap_or_else(|| panic!("no line for {id} in {text}"))
    };
    assert_eq!(lines.len(), 3, "{text}");
    let l1 = by_id("L1");
    assert_eq!(l1["decision"], "ALLOW");
    assert_eq!(l1["reason"], "CERTIFICATE_VALID");
    assert_eq!(l1["snapshot_sequence"], 7);
    assert_eq!(l1["certificate_number"], cert_number(1).to_string());
    assert_eq!(by_id("L2")["reason"], "CERTIFICATE_NOT_FOUND");
    let l3 = by_id("L3");
    assert!(l3.get("decision").is_none());
    assert_eq!(l3["field"], "product_code");
    assert!(l3["error"].as_str().unwrap().contains("product_code"));
}

#[tokio::test]
async fn policy_overrides_change_the_decision_but_not_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), 3, &[record(1, Status::Valid, 901, &["X1"])]);
    let config = test_config_with(
        Some(dir.path()),
        ConfigLayer {
            policy: vec!["MODEL_NOT_COVERED=BLOCK,CERTIFICATE_NOT_FOUND=REVIEW".into()],
            ..Default::default()
        },
    );
    let gw = TestGateway::start(config, false).await;
    gw.admin_client()
        .await
        .reload(ReloadRequest {})
        .await
        .expect("Reload");
    let resp = gw
        .check_client()
        .await
        .check_batch(CheckBatchRequest {
            listings: vec![listing("model", 1, "X9"), listing("absent", 2, "")],
            min_snapshot_sequence: 0,
        })
        .await
        .expect("CheckBatch")
        .into_inner();
    let got: Vec<(v1::Decision, v1::Reason)> = resp
        .results
        .iter()
        .map(|r| match &r.outcome {
            Some(Outcome::Verdict(v)) => (v.decision(), v.reason()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            (v1::Decision::Block, v1::Reason::ModelNotCovered),
            (v1::Decision::Review, v1::Reason::CertificateNotFound),
        ]
    );
}

async fn next(s: &mut tonic::Streaming<v1::WatchListingsResponse>) -> v1::WatchListingsResponse {
    tokio::time::timeout(std::time::Duration::from_secs(30), s.message())
        .await
        .expect("an answer in time")
        .expect("ok")
        .expect("open")
}

/// The value of the series `name` (with its labels, exactly as rendered) on a `/metrics` page.
/// The metrics page once `series` reads `want` (bounded wait: 30 s), or the last page read.
async fn page_once(addr: std::net::SocketAddr, series: &str, want: f64) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = http_get(addr, "/metrics").await;
        if value(&page, series) == Some(want) || std::time::Instant::now() > deadline {
            return page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn value(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn watch_metrics_count_watched_listings_changes_changed_verdicts_and_resyncs() {
    use cccgate_proto::v1::{WatchChangesRequest, WatchListingsRequest};
    use std::time::Duration;

    // Only this test of this binary watches: the watch series are its own.
    let dir = tempfile::tempdir().unwrap();
    let mut recs: Vec<_> = (1..=4)
        .map(|s| record(s, Status::Valid, 901, &["X1"]))
        .collect();
    write_snapshot(dir.path(), 1, &recs);
    let config = test_config_with(
        Some(dir.path()),
        ConfigLayer {
            watch_history: Some(1),
            ..Default::default()
        },
    );
    let gw = TestGateway::start(config, true).await;
    let metrics = gw.metrics_addr.expect("a metrics endpoint");
    let mut client = gw.check_client().await;
    // Bounded wait for the change feed to take in snapshot 1.
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(s) = client
                .watch_changes(WatchChangesRequest { from_sequence: 0 })
                .await
                && s.into_inner().message().await.ok().flatten().is_some()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("snapshot 1 reached the change feed");

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut watch = client
        .watch_listings(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("WatchListings")
        .into_inner();
    let add = ["W1", "W2", "W3"]
        .iter()
        .zip(1..)
        .map(|(id, cert)| listing(id, cert, "x1"))
        .collect();
    tx.send(WatchListingsRequest {
        add,
        remove: vec![],
    })
    .await
    .unwrap();
    assert_eq!(next(&mut watch).await.results.len(), 3);
    let page = http_get(metrics, "/metrics").await;
    assert_eq!(
        value(&page, "cccgate_watched_listings{caller=\"anonymous\"}"),
        Some(3.0),
        "{page}"
    );
    assert_eq!(value(&page, "cccgate_watch_streams_open"), Some(1.0));

    // Swap 2: certificates 2 (watched by W2) and 4 (not watched) revoked.
    recs[1].status = Status::Revoked;
    recs[3].status = Status::Revoked;
    write_snapshot(dir.path(), 2, &recs);
    let mut admin = gw.admin_client().await;
    admin.reload(ReloadRequest {}).await.expect("Reload");
    let changed = next(&mut watch).await;
    assert_eq!(changed.results.len(), 1);
    assert_eq!(changed.results[0].listing_id, "W2");
    // A pass's CHANGED messages leave while it runs; its counters are added when it ends.
    let page = page_once(metrics, "cccgate_watch_pass_duration_seconds_count", 1.0).await;
    for (series, want) in [
        ("cccgate_watch_changed_verdicts_total", 1.0),
        (
            "cccgate_watch_certificate_changes_total{cause=\"snapshot\"}",
            2.0,
        ),
        ("cccgate_watch_batches_total{cause=\"snapshot\"}", 1.0),
        (
            "cccgate_watch_diff_duration_seconds_count{source=\"diff\"}",
            1.0,
        ),
        ("cccgate_watch_pass_duration_seconds_count", 1.0),
        (
            "cccgate_watch_changes_per_batch_bucket{cause=\"snapshot\",le=\"0\"}",
            0.0,
        ),
        (
            "cccgate_watch_changes_per_batch_bucket{cause=\"snapshot\",le=\"10\"}",
            1.0,
        ),
    ] {
        assert_eq!(value(&page, series), Some(want), "{series} in:\n{page}");
    }

    // Swap 3 pushes swap 2's batch out of a one-swap history: resuming from 1 is refused.
    recs[0].status = Status::Revoked;
    write_snapshot(dir.path(), 3, &recs);
    admin.reload(ReloadRequest {}).await.expect("Reload");
    assert_eq!(next(&mut watch).await.results[0].listing_id, "W1");
    let refused = client
        .watch_changes(WatchChangesRequest { from_sequence: 1 })
        .await
        .expect_err("too old");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let page = page_once(metrics, "cccgate_watch_pass_duration_seconds_count", 2.0).await;
    assert_eq!(
        value(&page, "cccgate_watch_resyncs_total{rpc=\"WatchChanges\"}"),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value(&page, "cccgate_watch_changed_verdicts_total"),
        Some(2.0)
    );

    // The stream ends: its listings are no longer counted (bounded wait for the server side).
    drop((tx, watch));
    let gone = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let page = http_get(metrics, "/metrics").await;
            if value(&page, "cccgate_watched_listings{caller=\"anonymous\"}") == Some(0.0)
                && value(&page, "cccgate_watch_streams_open") == Some(0.0)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        gone.is_ok(),
        "the ended stream's listings are still counted"
    );
    gw.stop().await.expect("clean stop");
}
