//! The real gateway on an ephemeral port and a real tonic client: every RPC, per-item errors
//! in batches and streams, `min_snapshot_sequence`, health, reflection, reloads (a newer
//! snapshot, a refused file, an in-process drop), stream limits and graceful shutdown.
//!
//! Snapshots change only when a test asks (`Admin.Reload`): the test gateway does not watch or
//! poll, so nothing here depends on timing.

use cccgate_core::Status as CertStatus;
use cccgate_e2e::gateway::{
    Serving, TestGateway, cert_number, record, test_catalogue, test_config, test_config_with,
    write_snapshot,
};
use cccgate_proto::v1::{
    self, CheckBatchRequest, CheckRequest, CheckResponse, GetStatusRequest, Listing, ListingResult,
    ReloadOutcome, ReloadRequest, listing_result::Outcome,
};
use cccgate_server::ConfigLayer;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const EVENT_TIME: &str = "2026-11-27T10:00:00+08:00";

/// The register every test serves (sequence 10 unless said otherwise).
fn register() -> Vec<cccgate_core::CertificateRecord> {
    vec![
        record(1, CertStatus::Valid, 901, &["X1 Carbon", "X1-2026"]),
        record(2, CertStatus::Suspended, 901, &["S1"]),
        record(3, CertStatus::Revoked, 901, &["R1"]),
        record(4, CertStatus::Valid, 1606, &["P60"]),
    ]
}

fn listing(id: &str, code: &str, cert: &str, model: &str) -> Listing {
    Listing {
        listing_id: id.into(),
        merchant_id: "M1".into(),
        product_code: code.into(),
        certificate_number: cert.into(),
        model: model.into(),
        event_time: EVENT_TIME.into(),
    }
}

fn number(serial: u32) -> String {
    cert_number(serial).to_string()
}

/// `(decision, reason)` of a result, or the error's field.
type Got = Result<(v1::Decision, v1::Reason), String>;

/// The [`Got`] of a result.
fn outcome(r: &ListingResult) -> Got {
    match r.outcome.as_ref().expect("an outcome") {
        Outcome::Verdict(v) => Ok((v.decision(), v.reason())),
        Outcome::Error(e) => Err(e.field.clone()),
    }
}

/// Every file of `dir`: name, length and a hash of its bytes.
fn dir_listing(dir: &std::path::Path) -> std::collections::BTreeMap<String, (usize, u64)> {
    use std::hash::{Hash, Hasher};
    std::fs::read_dir(dir)
        .expect("list")
        .map(|e| {
            let e = e.expect("entry");
            let bytes = std::fs::read(e.path()).expect("read");
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            (
                e.file_name().to_string_lossy().into_owned(),
                (bytes.len(), h.finish()),
            )
        })
        .collect()
}

async fn status(gw: &TestGateway) -> v1::GetStatusResponse {
    gw.admin_client()
        .await
        .get_status(GetStatusRequest {})
        .await
        .expect("GetStatus")
        .into_inner()
}

/// The gateway loads its first snapshot in the background: wait for it through the API.
async fn wait_loaded(gw: &TestGateway) {
    let mut admin = gw.admin_client().await;
    // Reload runs the same serialised pass as start-up, so once it returns the start-up pass
    // has finished too.
    admin.reload(ReloadRequest {}).await.expect("Reload");
}

/// A file that lands while the start-up pass (which runs in the background) has not run yet
/// is put in force by that pass, and the test's reload then finds nothing newer: either way
/// the reload returns with `sequence` in force.
fn assert_put_in_force(r: &v1::ReloadResponse, sequence: u64) {
    assert!(
        matches!(
            r.outcome(),
            ReloadOutcome::Loaded | ReloadOutcome::Unchanged
        ),
        "{}",
        r.message
    );
    assert_eq!(r.snapshot_sequence, sequence, "{}", r.message);
}

#[tokio::test]
async fn check_answers_a_verdict_with_its_certificate_and_snapshot() {
    let gw = Serving::start(10, &register()).await;
    let mut client = gw.check_client().await;
    let resp = client
        .check(CheckRequest {
            listing: Some(listing("L1", "0901", "CCC:2021-0109-0100-0001", "x1carbon")),
            ..Default::default()
        })
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(resp.snapshot_sequence, 10);
    assert_eq!(resp.snapshot_content_id.len(), 32);
    assert!(
        resp.snapshot_content_id
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
    );
    let result = resp.result.expect("a result");
    assert_eq!(result.listing_id, "L1");
    let Some(Outcome::Verdict(v)) = result.outcome else {
        panic!("a verdict");
    };
    assert_eq!(v.decision(), v1::Decision::Allow);
    assert_eq!(v.reason(), v1::Reason::CertificateValid);
    assert_eq!(v.snapshot_sequence, 10);
    let c = v.certificate.expect("the certificate");
    assert_eq!(c.number, number(1));
    assert_eq!(c.status(), v1::CertificateStatus::Valid);
    assert_eq!(c.product_code, "0901");
    assert_eq!(c.producer, "生产者1");
    assert_eq!(c.expiry_date, "2035-12-31");
}

#[tokio::test]
async fn check_refuses_a_bad_listing_with_invalid_argument_naming_the_field() {
    let gw = Serving::start(10, &register()).await;
    let mut client = gw.check_client().await;
    let mut bad = listing("L9", "0901", &number(1), "");
    bad.merchant_id.clear();
    let err = client
        .check(CheckRequest {
            listing: Some(bad),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("merchant_id"), "{}", err.message());
    assert!(err.message().contains("L9"), "{}", err.message());
    assert_eq!(err.metadata().get("cccgate-field").unwrap(), "merchant_id");

    let err = client.check(CheckRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .check(CheckRequest {
            listing: Some(listing("L1", "", "", "")),
            listings: vec![listing("L2", "", "", "")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn check_batch_decides_every_listing_and_reports_bad_ones_in_place() {
    let gw = Serving::start(10, &register()).await;
    let mut client = gw.check_client().await;
    let mut bad_code = listing("bad-code", "09x1", &number(1), "");
    bad_code.merchant_id = "M2".into();
    let mut bad_time = listing("bad-time", "0901", &number(1), "");
    bad_time.event_time = "yesterday".into();
    let listings = vec![
        listing("valid", "0901", &number(1), "X1-2026"),
        listing("model", "0901", &number(1), "X2"),
        bad_code,
        listing("none", "", "", ""),
        listing("selfdecl", "1101", "", ""),
        listing("missing", "0901", " 3C: ", ""),
        listing("malformed", "0901", "12345", ""),
        listing("notfound", "0901", &number(999), ""),
        listing("suspended", "0901", &number(2), ""),
        listing("revoked", "0901", &number(3), ""),
        listing("mismatch", "0901", &number(4), ""),
        bad_time,
    ];
    let resp = client
        .check_batch(CheckBatchRequest {
            listings,
            min_snapshot_sequence: 10,
        })
        .await
        .expect("CheckBatch")
        .into_inner();
    assert_eq!(resp.snapshot_sequence, 10);
    use v1::Decision::*;
    use v1::Reason::*;
    let got: Vec<(String, Got)> = resp
        .results
        .iter()
        .map(|r| (r.listing_id.clone(), outcome(r)))
        .collect();
    let want: Vec<(&str, Got)> = vec![
        ("valid", Ok((Allow, CertificateValid))),
        ("model", Ok((Review, ModelNotCovered))),
        ("bad-code", Err("product_code".into())),
        ("none", Ok((Allow, NotInCatalogue))),
        ("selfdecl", Ok((Allow, SelfDeclarationProduct))),
        ("missing", Ok((Block, CertificateMissing))),
        ("malformed", Ok((Block, CertificateMalformed))),
        ("notfound", Ok((Block, CertificateNotFound))),
        ("suspended", Ok((Block, CertificateSuspended))),
        ("revoked", Ok((Block, CertificateRevoked))),
        ("mismatch", Ok((Block, ProductMismatch))),
        ("bad-time", Err("event_time".into())),
    ];
    let want: Vec<(String, _)> = want.into_iter().map(|(i, o)| (i.to_owned(), o)).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn check_batch_over_the_limit_is_invalid_argument() {
    let gw = Serving::start_with(
        10,
        &register(),
        ConfigLayer {
            max_batch: Some(3),
            ..Default::default()
        },
    )
    .await;
    let mut client = gw.check_client().await;
    let four = (0..4)
        .map(|i| listing(&format!("L{i}"), "", "", ""))
        .collect::<Vec<_>>();
    let err = client
        .check_batch(CheckBatchRequest {
            listings: four.clone(),
            min_snapshot_sequence: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("limit of 3"), "{}", err.message());
    let ok = client
        .check_batch(CheckBatchRequest {
            listings: four[..3].to_vec(),
            min_snapshot_sequence: 0,
        })
        .await
        .expect("at the limit")
        .into_inner();
    assert_eq!(ok.results.len(), 3);
}

#[tokio::test]
async fn check_stream_answers_each_message_in_order_and_goes_on_after_bad_listings() {
    let gw = Serving::start(10, &register()).await;
    let mut client = gw.check_client().await;
    let (tx, rx) = mpsc::channel(8);
    let mut responses = client
        .check_stream(ReceiverStream::new(rx))
        .await
        .expect("CheckStream")
        .into_inner();
    let mut next = async |req: CheckRequest| -> CheckResponse {
        tx.send(req).await.expect("send");
        responses
            .message()
            .await
            .expect("a response")
            .expect("not the end")
    };

    // One listing.
    let r = next(CheckRequest {
        listing: Some(listing("S1", "0901", &number(3), "")),
        ..Default::default()
    })
    .await;
    assert_eq!(r.snapshot_sequence, 10);
    assert_eq!(r.snapshot_content_id.len(), 32);
    let one = r.result.expect("the answer to `listing`");
    assert_eq!(one.listing_id, "S1");
    assert_eq!(
        outcome(&one),
        Ok((v1::Decision::Block, v1::Reason::CertificateRevoked))
    );
    assert!(r.results.is_empty());

    // A chunk with a bad listing in the middle: an error entry, the rest decided.
    let mut bad = listing("S3", "0901", &number(1), "");
    bad.listing_id = "x".repeat(200);
    let r = next(CheckRequest {
        listings: vec![
            listing("S2", "0901", &number(1), ""),
            bad,
            listing("S4", "0901", &number(4), "p60"),
        ],
        ..Default::default()
    })
    .await;
    assert!(r.result.is_none());
    let ids: Vec<&str> = r.results.iter().map(|x| x.listing_id.as_str()).collect();
    assert_eq!(ids[0], "S2");
    assert_eq!(
        ids[1].len(),
        128,
        "an over-long id comes back cut to the limit"
    );
    assert_eq!(ids[2], "S4");
    assert_eq!(
        outcome(&r.results[0]),
        Ok((v1::Decision::Allow, v1::Reason::CertificateValid))
    );
    assert_eq!(outcome(&r.results[1]), Err("listing_id".into()));
    assert_eq!(
        outcome(&r.results[2]),
        Ok((v1::Decision::Block, v1::Reason::ProductMismatch))
    );

    // An empty message is answered too (a ping that reports the snapshot).
    let r = next(CheckRequest::default()).await;
    assert!(r.result.is_none() && r.results.is_empty());
    assert_eq!(r.snapshot_sequence, 10);

    // The stream still works, and ends cleanly when the client stops sending.
    let r = next(CheckRequest {
        listing: Some(listing("S5", "", "", "")),
        ..Default::default()
    })
    .await;
    assert_eq!(
        outcome(&r.result.expect("answer")),
        Ok((v1::Decision::Allow, v1::Reason::NotInCatalogue))
    );
    drop(tx);
    assert!(responses.message().await.expect("clean end").is_none());
}

#[tokio::test]
async fn a_stream_message_over_the_batch_limit_gets_one_error_and_the_stream_goes_on() {
    let gw = Serving::start_with(
        10,
        &register(),
        ConfigLayer {
            max_batch: Some(2),
            ..Default::default()
        },
    )
    .await;
    let mut client = gw.check_client().await;
    let three = CheckRequest {
        listings: (0..3)
            .map(|i| listing(&format!("L{i}"), "", "", ""))
            .collect(),
        ..Default::default()
    };
    let two = CheckRequest {
        listings: three.listings[..2].to_vec(),
        ..Default::default()
    };
    let mut out = client
        .check_stream(tokio_stream::iter([three, two]))
        .await
        .expect("CheckStream")
        .into_inner();
    // One error for the message (its listings were counted, never decoded), not one each.
    let first = out.message().await.expect("ok").expect("a response");
    assert!(first.results.is_empty(), "{first:?}");
    let error = first.result.as_ref().expect("one error entry");
    assert_eq!(outcome(error), Err("listings".into()));
    let second = out.message().await.expect("ok").expect("a response");
    let got: Vec<(&str, Got)> = second
        .results
        .iter()
        .map(|r| (r.listing_id.as_str(), outcome(r)))
        .collect();
    let not_ccc = Ok((v1::Decision::Allow, v1::Reason::NotInCatalogue));
    assert_eq!(got, [("L0", not_ccc.clone()), ("L1", not_ccc)]);
    assert!(out.message().await.expect("clean end").is_none());
}

#[tokio::test]
async fn a_newer_min_snapshot_sequence_is_failed_precondition_everywhere() {
    let gw = Serving::start(10, &register()).await;
    let mut client = gw.check_client().await;
    let err = client
        .check(CheckRequest {
            listing: Some(listing("L1", "", "", "")),
            listings: vec![],
            min_snapshot_sequence: 11,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("10") && err.message().contains("11"));
    let err = client
        .check_batch(CheckBatchRequest {
            listings: vec![listing("L1", "", "", "")],
            min_snapshot_sequence: 11,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // Equal is fine.
    client
        .check(CheckRequest {
            listing: Some(listing("L1", "", "", "")),
            listings: vec![],
            min_snapshot_sequence: 10,
        })
        .await
        .expect("sequence 10 satisfies min 10");
    // A stream answers until a message asks for more than is in force, then ends with it.
    let ok = CheckRequest {
        listing: Some(listing("L1", "", "", "")),
        ..Default::default()
    };
    let stale = CheckRequest {
        min_snapshot_sequence: 11,
        ..ok.clone()
    };
    let mut out = client
        .check_stream(tokio_stream::iter([ok.clone(), stale, ok]))
        .await
        .expect("CheckStream")
        .into_inner();
    assert!(out.message().await.expect("first is answered").is_some());
    let err = out.message().await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn health_is_not_serving_and_checks_unavailable_until_a_snapshot_loads() {
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(test_config(Some(dir.path())), false).await;
    let mut health = HealthClient::new(gw.channel().await);
    for service in ["", "cccgate.v1.ListingCheck"] {
        let s = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(s.status(), ServingStatus::NotServing, "{service:?}");
    }
    let mut client = gw.check_client().await;
    let err = client
        .check(CheckRequest {
            listing: Some(listing("L1", "", "", "")),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(status(&gw).await.snapshot.is_none());

    // A snapshot lands; a reload puts it in force.
    write_snapshot(dir.path(), 10, &register());
    assert_put_in_force(&gw.reload().await, 10);
    for service in ["", "cccgate.v1.ListingCheck"] {
        let s = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(s.status(), ServingStatus::Serving, "{service:?}");
    }
    let r = client
        .check(CheckRequest {
            listing: Some(listing("L1", "", "", "")),
            ..Default::default()
        })
        .await
        .expect("Check")
        .into_inner();
    assert_eq!(r.snapshot_sequence, 10);
    let st = status(&gw).await;
    let snap = st.snapshot.expect("in force");
    assert_eq!(snap.sequence, 10);
    assert_eq!(snap.counts.expect("counts").total, 4);
    assert!(snap.origin.ends_with("snap-10.ccc"), "{}", snap.origin);
    assert!(snap.loaded_at_unix_ms > 0);
}

#[tokio::test]
async fn reload_puts_a_newer_snapshot_in_force_and_a_refused_file_changes_nothing() {
    let gw = Serving::start(10, &register()).await;
    let mut admin = gw.admin_client().await;
    let mut client = gw.check_client().await;
    let revoked = || CheckRequest {
        listing: Some(listing("L", "0901", &number(3), "")),
        ..Default::default()
    };

    // A newer register where certificate 3 is valid again.
    let mut newer = register();
    newer[2] = record(3, CertStatus::Valid, 901, &["R1"]);
    write_snapshot(gw.dir(), 11, &newer);
    let r = admin
        .reload(ReloadRequest {})
        .await
        .expect("Reload")
        .into_inner();
    assert_put_in_force(&r, 11);
    let v = client.check(revoked()).await.expect("Check").into_inner();
    assert_eq!(v.snapshot_sequence, 11);
    assert_eq!(
        outcome(&v.result.expect("result")),
        Ok((v1::Decision::Allow, v1::Reason::CertificateValid))
    );

    // A newer file that is corrupt: refused, reported, and 11 keeps serving.
    let path = write_snapshot(gw.dir(), 12, &register());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xFF;
    std::fs::write(&path, &bytes).unwrap();
    let r = admin
        .reload(ReloadRequest {})
        .await
        .expect("Reload")
        .into_inner();
    assert_eq!(r.outcome(), ReloadOutcome::Refused, "{}", r.message);
    assert_eq!(r.snapshot_sequence, 11);
    assert!(r.message.contains("snap-12.ccc"), "{}", r.message);
    let v = client.check(revoked()).await.expect("Check").into_inner();
    assert_eq!(v.snapshot_sequence, 11);
    let st = status(&gw).await;
    let refusal = st.last_refusal.expect("the refusal is reported");
    assert!(refusal.path.ends_with("snap-12.ccc"));
    assert_eq!(refusal.kind, "snapshot");
    assert!(refusal.reason.contains("checksum"), "{}", refusal.reason);
    assert!(st.reloads_refused >= 1);

    // Nothing newer: unchanged.
    std::fs::remove_file(&path).unwrap();
    let r = admin
        .reload(ReloadRequest {})
        .await
        .expect("Reload")
        .into_inner();
    assert_eq!(r.outcome(), ReloadOutcome::Unchanged, "{}", r.message);
}

#[tokio::test]
async fn a_restart_serves_the_newest_valid_snapshot_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), 10, &register());
    write_snapshot(dir.path(), 12, &register());
    std::fs::write(dir.path().join("snap-13.ccc"), b"truncated").unwrap();
    let gw = TestGateway::start(test_config(Some(dir.path())), false).await;
    wait_loaded(&gw).await;
    let st = status(&gw).await;
    assert_eq!(st.snapshot.expect("in force").sequence, 12);
    assert!(
        st.last_refusal
            .expect("snap-13 refused")
            .path
            .ends_with("snap-13.ccc")
    );
}

#[tokio::test]
async fn drops_in_the_drop_dir_are_loaded_in_process_and_a_bad_drop_is_refused() {
    use cccgate_loader::{DropHeader, DropWriter, FileKind, catalogue_csv, certificates_csv};
    let snaps = tempfile::tempdir().unwrap();
    let drops = tempfile::tempdir().unwrap();
    let config = test_config_with(
        Some(snaps.path()),
        ConfigLayer {
            drop_dir: Some(drops.path().to_path_buf()),
            ..Default::default()
        },
    );
    let gw = TestGateway::start(config, false).await;
    let mut admin = gw.admin_client().await;

    let mut w =
        DropWriter::create(&drops.path().join("drop-000020"), DropHeader::full(20)).unwrap();
    w.csv_file(
        "catalogue.csv",
        FileKind::Catalogue,
        &catalogue_csv(&test_catalogue()),
    )
    .unwrap();
    w.csv_file(
        "certificates.csv",
        FileKind::Certificates,
        &certificates_csv(&register()),
    )
    .unwrap();
    w.finish().unwrap();
    let r = admin
        .reload(ReloadRequest {})
        .await
        .expect("Reload")
        .into_inner();
    assert_put_in_force(&r, 20);
    assert!(
        snaps.path().join("snap-20.ccc").exists(),
        "the built snapshot is written for restarts"
    );

    // A drop whose file does not match its manifest: refused, 20 keeps serving, and nothing
    // is written beside the snapshot in force (no snapshot, reject or temporary file).
    let before = dir_listing(snaps.path());
    let mut w =
        DropWriter::create(&drops.path().join("drop-000021"), DropHeader::full(21)).unwrap();
    w.csv_file(
        "catalogue.csv",
        FileKind::Catalogue,
        &catalogue_csv(&test_catalogue()),
    )
    .unwrap();
    w.csv_file(
        "certificates.csv",
        FileKind::Certificates,
        &certificates_csv(&register()),
    )
    .unwrap();
    let dir = w.finish().unwrap();
    std::fs::write(
        dir.join("certificates.csv"),
        certificates_csv(&register()[..2]),
    )
    .unwrap();
    let r = admin
        .reload(ReloadRequest {})
        .await
        .expect("Reload")
        .into_inner();
    assert_eq!(r.outcome(), ReloadOutcome::Refused, "{}", r.message);
    assert_eq!(r.snapshot_sequence, 20);
    assert_eq!(
        dir_listing(snaps.path()),
        before,
        "a refused drop changed the snapshot directory"
    );
    let st = status(&gw).await;
    let refusal = st.last_refusal.expect("reported");
    assert_eq!(refusal.kind, "drop");
    assert!(refusal.path.ends_with("drop-000021"), "{}", refusal.path);
    assert!(
        refusal.reason.contains("certificates.csv"),
        "{}",
        refusal.reason
    );
    assert_eq!(st.snapshot.expect("in force").sequence, 20);
}

/// The services reflection lists on `channel`.
async fn listed_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut client = ServerReflectionClient::new(channel);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut out = client
        .server_reflection_info(tokio_stream::iter([req]))
        .await
        .expect("reflection")
        .into_inner();
    let resp = out.message().await.expect("ok").expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
        panic!("a service list");
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    names
}

#[tokio::test]
async fn each_plane_lists_its_own_services_and_admin_is_not_public() {
    let gw = TestGateway::start(test_config(None), false).await;
    assert_eq!(
        listed_services(gw.channel().await).await,
        ["cccgate.v1.ListingCheck", "grpc.health.v1.Health"]
    );
    assert_eq!(
        listed_services(gw.admin_channel().await).await,
        ["cccgate.v1.Admin", "grpc.health.v1.Health"]
    );
    // Admin on the public listener: UNIMPLEMENTED, for GetStatus and Reload alike.
    let mut public_admin = v1::admin_client::AdminClient::new(gw.channel().await);
    let err = public_admin
        .get_status(v1::GetStatusRequest {})
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    let err = public_admin.reload(ReloadRequest {}).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    // And on the admin plane it answers.
    gw.admin_client()
        .await
        .get_status(v1::GetStatusRequest {})
        .await
        .expect("GetStatus on the admin plane");
}

#[tokio::test]
async fn the_embedded_sample_serves_its_printed_examples() {
    let gw = TestGateway::start(test_config(None), false).await;
    let sample = cccgate_server::sample::sample_snapshot().expect("the sample loads");
    let examples = cccgate_server::sample::examples(&sample);
    assert!(!examples.is_empty());
    let mut client = gw.check_client().await;
    let mut health = HealthClient::new(gw.channel().await);
    // The sample loads in the background; Admin.Reload has no directory to look in, so wait
    // for health to turn SERVING through the Watch stream instead.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let serving = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while let Some(s) = watch.message().await.expect("health stream") {
            if s.status() == ServingStatus::Serving {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(serving, Ok(true), "health never turned SERVING within 60 s");
    for ex in examples {
        let r = client
            .check(CheckRequest {
                listing: Some(ex.listing.clone().into()),
                ..Default::default()
            })
            .await
            .expect("Check")
            .into_inner();
        let v = r.result.expect("result");
        assert_eq!(
            outcome(&v),
            Ok((ex.decision.into(), ex.reason.into())),
            "{:?}",
            ex.listing
        );
    }
    let r = gw
        .admin_client()
        .await
        .reload(ReloadRequest {})
        .await
        .expect("Reload")
        .into_inner();
    assert_eq!(r.outcome(), ReloadOutcome::NotWatching);
    assert_eq!(
        status(&gw).await.snapshot.expect("sample").origin,
        cccgate_server::sample::SAMPLE_ORIGIN
    );
}

#[tokio::test]
async fn a_stream_over_the_open_stream_limit_is_resource_exhausted() {
    let gw = Serving::start_with(
        10,
        &register(),
        ConfigLayer {
            max_open_streams: Some(1),
            ..Default::default()
        },
    )
    .await;
    let mut client = gw.check_client().await;
    let (tx, rx) = mpsc::channel(1);
    let mut first = client
        .check_stream(ReceiverStream::new(rx))
        .await
        .expect("the first stream opens")
        .into_inner();
    tx.send(CheckRequest::default()).await.unwrap();
    assert!(first.message().await.expect("ok").is_some());
    let err = client
        .check_stream(tokio_stream::iter([CheckRequest::default()]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    // Closing the first stream frees its place.
    drop(tx);
    assert!(first.message().await.expect("clean end").is_none());
    drop(first);
    let mut again = client
        .check_stream(tokio_stream::iter([CheckRequest::default()]))
        .await;
    // The server may not have dropped the first stream's state yet when the client sees its
    // end; retry until it has (bounded).
    for _ in 0..1000 {
        if again.is_ok() {
            break;
        }
        tokio::task::yield_now().await;
        again = client
            .check_stream(tokio_stream::iter([CheckRequest::default()]))
            .await;
    }
    assert!(
        again
            .expect("a place is free again")
            .into_inner()
            .message()
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn shutdown_lets_an_open_stream_finish_then_stops() {
    let mut gw = Serving::start(10, &register()).await;
    let mut client = gw.check_client().await;
    let (tx, rx) = mpsc::channel(1);
    let mut out = client
        .check_stream(ReceiverStream::new(rx))
        .await
        .expect("CheckStream")
        .into_inner();
    let req = CheckRequest {
        listing: Some(listing("L1", "0901", &number(1), "")),
        ..Default::default()
    };
    tx.send(req.clone()).await.unwrap();
    assert!(out.message().await.expect("ok").is_some());
    gw.begin_shutdown();
    // The stream in flight is still answered after the shutdown signal.
    tx.send(req).await.unwrap();
    let r = out
        .message()
        .await
        .expect("still answered")
        .expect("a response");
    assert_eq!(r.snapshot_sequence, 10);
    drop(tx);
    assert!(out.message().await.expect("clean end").is_none());
    drop(out);
    drop(client);
    gw.stop().await.expect("a clean stop");
}

#[tokio::test]
async fn a_listing_malformed_past_the_first_turn_refuses_its_message_and_nothing_else() {
    // Turns of 2 listings: the bad one (the fifth) is parsed in the third turn, after the
    // handler has yielded twice.
    let gw = Serving::start_with(
        10,
        &register(),
        ConfigLayer {
            turn_listings: Some(2),
            ..Default::default()
        },
    )
    .await;
    let five: Vec<Listing> = (0..5)
        .map(|i| listing(&format!("L{i}"), "0901", &number(1), "X1-2026"))
        .collect();
    let mut bad = CheckBatchRequest {
        listings: five.clone(),
        min_snapshot_sequence: 0,
    }
    .encode_to_vec();
    // The last listing's model, "X1-2026", made invalid UTF-8.
    let at = bad.len() - EVENT_TIME.len() - 2 - 7;
    assert_eq!(&bad[at..at + 7], b"X1-2026");
    bad[at] = 0xff;
    let channel = gw.channel().await;
    let path = "/cccgate.v1.ListingCheck/CheckBatch";
    let err = cccgate_e2e::raw::unary(channel.clone(), path, bad.into(), &[])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "listing 4: model is not valid UTF-8");
    // The same gateway answers the same listings, well formed, in full.
    let mut client = gw.check_client().await;
    let ok = client
        .check_batch(CheckBatchRequest {
            listings: five,
            min_snapshot_sequence: 0,
        })
        .await
        .expect("well formed")
        .into_inner();
    let got: Vec<Got> = ok.results.iter().map(outcome).collect();
    assert_eq!(
        got,
        vec![Ok((v1::Decision::Allow, v1::Reason::CertificateValid)); 5]
    );
}
