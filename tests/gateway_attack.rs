//! The gateway attacked as a hostile or buggy caller would, over loopback: a flood of calls
//! that must be shed while admitted calls still succeed, idle streams from one connection that
//! must not starve a second connection, streams left idle, and bad messages.

use std::time::Duration;

use cccgate_core::Status as CertStatus;
use cccgate_e2e::gateway::{TestGateway, record, test_config_with, write_snapshot};
use cccgate_proto::v1::listing_check_client::ListingCheckClient;
use cccgate_proto::v1::{CheckRequest, CheckResponse, Listing, ReloadRequest};
use cccgate_server::ConfigLayer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

async fn gateway(layer: ConfigLayer) -> (TestGateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(
        dir.path(),
        10,
        &[record(1, CertStatus::Valid, 901, &["X1"])],
    );
    let gw = TestGateway::start(test_config_with(Some(dir.path()), layer), false).await;
    gw.admin_client()
        .await
        .reload(ReloadRequest {})
        .await
        .expect("Reload");
    (gw, dir)
}

fn listing(id: &str) -> Listing {
    Listing {
        listing_id: id.into(),
        merchant_id: "M1".into(),
        ..Default::default()
    }
}

fn one(id: &str) -> CheckRequest {
    CheckRequest {
        listing: Some(listing(id)),
        ..Default::default()
    }
}

/// A stream opened on `channel` whose request side stays open: the sender and the answers.
async fn open_stream(
    channel: Channel,
) -> Result<(mpsc::Sender<CheckRequest>, Streaming<CheckResponse>), tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    let out = ListingCheckClient::new(channel)
        .check_stream(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, out))
}

/// A unary call to `Check` whose request message is not sent until `gate` yields: the server
/// has admitted it (its permit is taken when the call arrives) and waits for the message.
async fn held_check(
    channel: Channel,
    gate: mpsc::Receiver<CheckRequest>,
) -> Result<CheckResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let codec = tonic_prost::ProstCodec::<CheckRequest, CheckResponse>::default();
    let mut answers = grpc
        .streaming(
            tonic::Request::new(ReceiverStream::new(gate)),
            PathAndQuery::from_static("/cccgate.v1.ListingCheck/Check"),
            codec,
        )
        .await?
        .into_inner();
    Ok(answers.message().await?.expect("one answer"))
}

#[tokio::test]
async fn a_flood_is_shed_with_resource_exhausted_while_admitted_calls_succeed() {
    // One caller may hold half of the calls in progress: 2 of 4.
    let (gw, _dir) = gateway(ConfigLayer {
        max_in_flight: Some(4),
        ..Default::default()
    })
    .await;
    // Two calls admitted and in progress: their messages are still on the way.
    let mut gates = Vec::new();
    let mut admitted = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = mpsc::channel(1);
        gates.push(tx);
        admitted.push(tokio::spawn(held_check(gw.channel().await, rx)));
    }
    // A flood meanwhile: every call is shed at once, with a retry hint. (The admitted calls
    // may take a moment to reach the server: until both have, a flood call may get through.)
    let mut client = gw.check_client().await;
    let mut shed = 0;
    for i in 0..200 {
        match client.check(one(&format!("F{i}"))).await {
            Ok(_) => {}
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert!(
                    s.message()
                        .contains("this caller's calls in progress (half of --max-in-flight)"),
                    "{}",
                    s.message()
                );
                assert!(s.metadata().get("grpc-retry-pushback-ms").is_some());
                shed += 1;
            }
        }
    }
    assert!(shed >= 190, "only {shed} of 200 shed");
    // The admitted calls still succeed once their messages arrive.
    for (gate, call) in gates.into_iter().zip(admitted) {
        gate.send(one("A")).await.unwrap();
        drop(gate);
        let answer = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("answered")
            .expect("no panic")
            .expect("the admitted call succeeds");
        assert_eq!(answer.result.unwrap().listing_id, "A");
    }
    // And with the permits given back, a new call is admitted.
    client.check(one("B")).await.expect("admitted again");
}

#[tokio::test]
async fn idle_streams_on_one_connection_leave_streams_for_another() {
    let (gw, _dir) = gateway(ConfigLayer {
        connection_max_open_streams: Some(4),
        max_open_streams: Some(64),
        ..Default::default()
    })
    .await;
    // The first connection opens streams and sends nothing: it gets four, then no more.
    let hog = gw.channel().await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(open_stream(hog.clone()).await.expect("within the cap"));
    }
    let err = open_stream(hog.clone()).await.map(drop).unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("connection"), "{}", err.message());
    // A second connection still streams.
    let (tx, mut out) = open_stream(gw.channel().await).await.expect("opens");
    for i in 0..3 {
        tx.send(one(&format!("S{i}"))).await.unwrap();
        let r = out.message().await.expect("ok").expect("an answer");
        assert_eq!(r.result.unwrap().listing_id, format!("S{i}"));
    }
    drop(tx);
    assert!(out.message().await.expect("clean end").is_none());
    drop(idle);
}

#[tokio::test]
async fn an_idle_stream_is_ended_and_its_slot_given_back() {
    let (gw, _dir) = gateway(ConfigLayer {
        stream_idle_timeout_ms: Some(200),
        connection_max_open_streams: Some(1),
        ..Default::default()
    })
    .await;
    let channel = gw.channel().await;
    let (tx, mut out) = open_stream(channel.clone()).await.expect("opens");
    tx.send(one("S1")).await.unwrap();
    assert!(out.message().await.expect("ok").is_some());
    // Then nothing: the gateway ends the stream.
    let end = tokio::time::timeout(Duration::from_secs(10), out.message())
        .await
        .expect("ended within 10 s")
        .unwrap_err();
    assert_eq!(end.code(), Code::DeadlineExceeded);
    assert!(end.message().contains("--stream-idle-timeout-ms"));
    drop((tx, out));
    // Its slot is free again: the connection's one stream can be opened anew (the server may
    // take a moment to drop the ended stream's state; bounded retries).
    let mut opened = None;
    for _ in 0..200 {
        match open_stream(channel.clone()).await {
            Ok(s) => {
                opened = Some(s);
                break;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let (tx, mut out) = opened.expect("the slot came back");
    tx.send(one("S2")).await.unwrap();
    assert!(out.message().await.expect("ok").is_some());
}

#[tokio::test]
async fn a_field_over_its_limit_is_refused_by_name_and_the_rest_decided() {
    let (gw, _dir) = gateway(ConfigLayer::default()).await;
    let mut client = gw.check_client().await;
    let mut huge = listing("L-huge");
    huge.model = "x".repeat(100_000);
    let r = client
        .check_batch(cccgate_proto::v1::CheckBatchRequest {
            listings: vec![huge.clone(), listing("L-ok")],
            min_snapshot_sequence: 0,
        })
        .await
        .expect("CheckBatch")
        .into_inner();
    use cccgate_proto::v1::listing_result::Outcome;
    match &r.results[0].outcome {
        Some(Outcome::Error(e)) => {
            assert_eq!(e.field, "model");
            assert!(e.message.contains("100000 bytes"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(r.results[0].listing_id, "L-huge");
    assert!(matches!(r.results[1].outcome, Some(Outcome::Verdict(_))));
    let err = client
        .check(CheckRequest {
            listing: Some(huge),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.metadata().get("cccgate-field").unwrap(), "model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_storm_shares_passes_and_never_verifies_an_unchanged_refused_file_again() {
    use cccgate_proto::v1::ReloadOutcome;
    let (gw, dir) = gateway(ConfigLayer::default()).await;
    std::fs::write(dir.path().join(cccgate_snapshot::file_name(11)), b"garbage").unwrap();
    let storm = |n: usize| {
        let gw = &gw;
        async move {
            let mut calls = Vec::new();
            for _ in 0..n {
                let mut admin = gw.admin_client().await;
                calls.push(tokio::spawn(async move {
                    admin.reload(ReloadRequest {}).await.map(|r| r.into_inner())
                }));
            }
            let mut out = Vec::new();
            for c in calls {
                out.push(c.await.unwrap().expect("Reload answers"));
            }
            out
        }
    };
    let before = status(&gw).await;
    for r in storm(40).await {
        assert_eq!(r.outcome(), ReloadOutcome::Refused, "{}", r.message);
        assert_eq!(r.snapshot_sequence, 10);
    }
    // The refused file was verified once, however many calls asked.
    let after = status(&gw).await;
    assert_eq!(after.reloads_refused, before.reloads_refused + 1);
    // A valid newer file: put in force once, every call sees it.
    write_snapshot(
        dir.path(),
        12,
        &[record(1, CertStatus::Valid, 901, &["X1"])],
    );
    for r in storm(40).await {
        assert!(
            matches!(
                r.outcome(),
                ReloadOutcome::Loaded | ReloadOutcome::Unchanged
            ),
            "{}",
            r.message
        );
        assert_eq!(r.snapshot_sequence, 12);
    }
    let last = status(&gw).await;
    assert_eq!(last.reloads_loaded, after.reloads_loaded + 1);
    assert_eq!(last.reloads_refused, after.reloads_refused);
}

async fn status(gw: &TestGateway) -> cccgate_proto::v1::GetStatusResponse {
    gw.admin_client()
        .await
        .get_status(cccgate_proto::v1::GetStatusRequest {})
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test]
async fn a_connection_past_its_maximum_age_is_closed_and_its_client_reconnects() {
    let (gw, _dir) = gateway(ConfigLayer {
        max_connection_age_ms: Some(300),
        max_connection_age_grace_ms: Some(300),
        ..Default::default()
    })
    .await;
    let channel = gw.channel().await;
    // A stream kept busy: the age ends it however active it is (after the grace period), so
    // long-lived clients come back through the load balancer and reach new replicas.
    let (tx, mut out) = open_stream(channel.clone()).await.expect("opens");
    let started = std::time::Instant::now();
    let mut answered = 0;
    let end = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the stream outlived its connection's age by far"
        );
        if tx.send(one(&format!("S{answered}"))).await.is_err() {
            break out.message().await.err();
        }
        match tokio::time::timeout(Duration::from_secs(10), out.message())
            .await
            .expect("an answer or an end within 10 s")
        {
            Ok(Some(_)) => answered += 1,
            Ok(None) => break None,
            Err(s) => break Some(s),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(answered > 0, "the stream served before its connection aged");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "ended after {:?}, before the maximum age: {end:?}",
        started.elapsed()
    );
    // The same channel connects again on its own: the next call succeeds.
    let mut client = ListingCheckClient::new(channel);
    let mut ok = false;
    for _ in 0..100 {
        if client.check(one("after")).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "the client reconnected");
}
