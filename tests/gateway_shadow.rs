//! Shadow evaluation of a candidate register on a real gateway: at a sample of 1 every
//! decided listing is decided again against the candidate and the known disagreements are
//! counted exactly (GetStatus and /metrics); PromoteCandidate puts the candidate in force
//! through the reload's checks; DiscardCandidate drops it.

use std::path::Path;
use std::time::{Duration, Instant};

use cccgate_core::Status;
use cccgate_e2e::gateway::{TestGateway, cert_number, record, test_config_with, write_snapshot};
use cccgate_proto::v1::{
    CheckBatchRequest, CheckRequest, DiscardCandidateRequest, GetStatusRequest, GetStatusResponse,
    Listing, PromoteCandidateRequest, ReloadRequest, listing_result::Outcome,
};
use cccgate_server::ConfigLayer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn listing(id: &str, cert: u32) -> Listing {
    Listing {
        listing_id: id.into(),
        merchant_id: "M1".into(),
        product_code: "0901".into(),
        certificate_number: cert_number(cert).to_string(),
        model: "A1".into(),
        event_time: "2026-11-27T10:00:00+08:00".into(),
    }
}

/// In force (sequence 1): 1 and 2 valid, 3 revoked. Candidate (sequence 2): 2 revoked, 3
/// valid again, 4 new. So listings on 2, 3 and 4 disagree; on 1 they agree.
fn registers(snapshots: &Path, candidates: &Path) {
    write_snapshot(
        snapshots,
        1,
        &[
            record(1, Status::Valid, 901, &["A1"]),
            record(2, Status::Valid, 901, &["A1"]),
            record(3, Status::Revoked, 901, &["A1"]),
        ],
    );
    write_snapshot(
        candidates,
        2,
        &[
            record(1, Status::Valid, 901, &["A1"]),
            record(2, Status::Revoked, 901, &["A1"]),
            record(3, Status::Valid, 901, &["A1"]),
            record(4, Status::Valid, 901, &["A1"]),
        ],
    );
}

async fn start(snapshots: &Path, candidates: &Path, with_metrics: bool) -> TestGateway {
    let config = test_config_with(
        Some(snapshots),
        ConfigLayer {
            candidate_dir: Some(candidates.to_path_buf()),
            shadow_sample: Some(1.0),
            ..Default::default()
        },
    );
    let gw = TestGateway::start(config, with_metrics).await;
    // A reload pass puts sequence 1 in force and looks in the candidate directory.
    let r = gw.reload().await;
    assert_eq!(r.snapshot_sequence, 1, "{}", r.message);
    gw
}

async fn status(gw: &TestGateway) -> GetStatusResponse {
    gw.admin_client()
        .await
        .get_status(GetStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner()
}

/// Waits (at most 10 s) until the worker has decided `n` shadow checks.
async fn shadow_checks_reach(gw: &TestGateway, n: u64) -> GetStatusResponse {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let s = status(gw).await;
        let done = s.candidate.as_ref().map_or(0, |c| c.shadow_checks);
        if done >= n || Instant::now() > until {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
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

fn metric(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_disagreements_are_counted_exactly_at_sample_one() {
    let (snaps, cands) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    registers(snaps.path(), cands.path());
    let gw = start(snaps.path(), cands.path(), true).await;
    let s = status(&gw).await;
    let c = s.candidate.expect("the candidate is reported");
    assert_eq!(c.snapshot.as_ref().map(|s| s.sequence), Some(2));
    assert_eq!(c.sample, 1.0);
    // Never in force by itself.
    assert_eq!(s.snapshot.map(|s| s.sequence), Some(1));

    let mut client = gw.check_client().await;
    let mut bad = listing("L5", 1);
    bad.merchant_id.clear();
    let batch = vec![
        listing("L1", 1),
        listing("L2", 2),
        listing("L3", 3),
        listing("L4", 4),
        bad,
    ];
    for _ in 0..2 {
        let r = client
            .check_batch(CheckBatchRequest {
                listings: batch.clone(),
                min_snapshot_sequence: 0,
            })
            .await
            .expect("CheckBatch")
            .into_inner();
        // The answers are the register in force's.
        assert!(
            matches!(r.results[1].outcome, Some(Outcome::Verdict(ref v)) if v.snapshot_sequence == 1)
        );
    }
    client
        .check(CheckRequest {
            listing: Some(listing("L2", 2)),
            ..Default::default()
        })
        .await
        .expect("Check");

    // 4 valid listings twice and one more; the bad one is never decided.
    let s = shadow_checks_reach(&gw, 9).await;
    let c = s.candidate.expect("candidate");
    assert_eq!(c.shadow_checks, 9);
    assert_eq!(c.disagreements, 7);
    assert_eq!(c.dropped, 0);

    let page = http_get(gw.metrics_addr.expect("metrics"), "/metrics").await;
    let pair = |a: &str, b: &str| {
        format!(
            "cccgate_shadow_disagreements_total{{active_reason=\"{a}\",candidate_reason=\"{b}\"}}"
        )
    };
    assert_eq!(
        metric(&page, &pair("CERTIFICATE_VALID", "CERTIFICATE_REVOKED")),
        Some(3),
        "{page}"
    );
    assert_eq!(
        metric(&page, &pair("CERTIFICATE_REVOKED", "CERTIFICATE_VALID")),
        Some(2)
    );
    assert_eq!(
        metric(&page, &pair("CERTIFICATE_NOT_FOUND", "CERTIFICATE_VALID")),
        Some(2)
    );
    assert!(metric(&page, "cccgate_shadow_checks_total").is_some_and(|n| n >= 9));
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_puts_the_candidate_in_force_through_the_reload_checks() {
    let (snaps, cands) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    registers(snaps.path(), cands.path());
    let gw = start(snaps.path(), cands.path(), false).await;
    let mut admin = gw.admin_client().await;

    // Not the candidate the operator looked at: refused, nothing changes.
    let e = admin
        .promote_candidate(PromoteCandidateRequest {
            expected_sequence: 3,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("sequence 2, not 3"), "{}", e.message());

    let r = admin
        .promote_candidate(PromoteCandidateRequest {
            expected_sequence: 2,
        })
        .await
        .expect("PromoteCandidate")
        .into_inner();
    assert_eq!(r.snapshot_sequence, 2, "{}", r.message);
    // In the snapshot directory, so a restart serves it too; no longer a candidate.
    assert!(snaps.path().join("snap-2.ccc").exists());
    let s = status(&gw).await;
    assert_eq!(s.snapshot.map(|s| s.sequence), Some(2));
    assert!(s.candidate.is_none());
    let v = gw
        .check_client()
        .await
        .check(CheckRequest {
            listing: Some(listing("L2", 2)),
            ..Default::default()
        })
        .await
        .expect("Check")
        .into_inner();
    let Some(Outcome::Verdict(v)) = v.result.and_then(|r| r.outcome) else {
        panic!("a verdict");
    };
    assert_eq!(v.snapshot_sequence, 2);
    assert_eq!(
        v.reason,
        cccgate_proto::v1::Reason::CertificateRevoked as i32
    );
    // Nothing left to promote.
    let e = admin
        .promote_candidate(PromoteCandidateRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_not_above_the_one_in_force_is_not_promoted() {
    let (snaps, cands) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_snapshot(snaps.path(), 5, &[record(1, Status::Valid, 901, &["A1"])]);
    write_snapshot(cands.path(), 4, &[record(1, Status::Revoked, 901, &["A1"])]);
    let config = test_config_with(
        Some(snaps.path()),
        ConfigLayer {
            candidate_dir: Some(cands.path().to_path_buf()),
            ..Default::default()
        },
    );
    let gw = TestGateway::start(config, false).await;
    let mut admin = gw.admin_client().await;
    admin.reload(ReloadRequest {}).await.expect("Reload");
    let e = admin
        .promote_candidate(PromoteCandidateRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("not above"), "{}", e.message());
    let s = status(&gw).await;
    assert_eq!(s.snapshot.map(|s| s.sequence), Some(5));
    assert!(!snaps.path().join("snap-4.ccc").exists());
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_drops_the_candidate_until_a_newer_one_appears() {
    let (snaps, cands) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    registers(snaps.path(), cands.path());
    let gw = start(snaps.path(), cands.path(), false).await;
    let mut admin = gw.admin_client().await;
    let r = admin
        .discard_candidate(DiscardCandidateRequest::default())
        .await
        .expect("DiscardCandidate")
        .into_inner();
    assert_eq!(r.discarded_sequence, 2);
    assert!(status(&gw).await.candidate.is_none());
    // A reload does not bring the discarded file back, and nothing is promoted.
    admin.reload(ReloadRequest {}).await.expect("Reload");
    assert!(status(&gw).await.candidate.is_none());
    let e = admin
        .promote_candidate(PromoteCandidateRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert_eq!(status(&gw).await.snapshot.map(|s| s.sequence), Some(1));
    // A newer file does become the candidate.
    write_snapshot(cands.path(), 3, &[record(1, Status::Valid, 901, &["A1"])]);
    admin.reload(ReloadRequest {}).await.expect("Reload");
    let c = status(&gw).await.candidate.expect("the newer candidate");
    assert_eq!(c.snapshot.map(|s| s.sequence), Some(3));
    assert_eq!(c.shadow_checks, 0);
    gw.stop().await.unwrap();
}
