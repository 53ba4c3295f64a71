//! Swap under load: several streams (and a batch caller) check continuously while the
//! snapshot is replaced many times, alternating between two registers that disagree on most
//! certificates. No call may fail, and every verdict must be exactly what the register of its
//! own `snapshot_sequence` decides — a verdict from one snapshot labelled with another, or a
//! response mixing two, would fail it.
//!
//! Deterministic in outcome: after each swap the swapper waits until every checker has seen
//! the new sequence (so each checker observes every swap), and the loops are bounded in count.
//! Nothing is timed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cccgate_core::{CertificateRecord, Day, Listing as CoreListing, Policy, Status, check};
use cccgate_e2e::gateway::{
    TestGateway, build_snapshot, cert_number, record, test_config, write_snapshot,
};
use cccgate_proto::v1::{
    self, CheckBatchRequest, CheckRequest, Listing, ListingResult, ReloadRequest,
    listing_result::Outcome,
};
use cccgate_snapshot::Snapshot;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

const CERTS: u32 = 400;
/// Swaps after the first load.
const SWAPS: u64 = 100;
const STREAMS: usize = 4;
const CHUNK: usize = 40;
/// A bound on every checker's loop, far above what the swaps need.
const MAX_MESSAGES: u64 = 200_000;
const EVENT_TIME: &str = "2026-11-27T10:00:00+08:00";

/// Register A (even sequences) and B (odd): for most certificates they differ in status,
/// product code or models, so most listings get another verdict after each swap.
fn register(a: bool) -> Vec<CertificateRecord> {
    (1..=CERTS)
        .map(|i| {
            let (ma, mb) = (format!("A-{i}"), format!("B-{i}"));
            match (a, i % 4) {
                (true, 0) => record(i, Status::Valid, 901, &[&ma]),
                (true, 1) => record(i, Status::Revoked, 901, &[&ma]),
                (true, 2) => record(i, Status::Valid, 1606, &[&ma]),
                (true, _) => record(i, Status::Suspended, 901, &[&ma]),
                (false, 0) => record(i, Status::Suspended, 901, &[&mb]),
                (false, 1) => record(i, Status::Valid, 901, &[&mb]),
                (false, 2) => record(i, Status::Valid, 901, &[&ma, &mb]),
                (false, _) => record(i, Status::Cancelled, 1606, &[&mb]),
            }
        })
        .collect()
}

fn records_for(sequence: u64) -> Vec<CertificateRecord> {
    register(sequence.is_multiple_of(2))
}

/// Listing `n` of a checker: a certificate (or one that does not exist), a model from either
/// register.
fn listing(checker: usize, n: u64) -> Listing {
    let i = ((n * 7 + checker as u64 * 101) % u64::from(CERTS + 20)) as u32 + 1;
    // Lower case on purpose: models are normalised before they are compared.
    let model = match (n % 3, i % 2) {
        (0, _) => String::new(),
        (_, 0) => format!("a-{i}"),
        _ => format!("B-{i}"),
    };
    Listing {
        listing_id: format!("c{checker}-{n}"),
        merchant_id: "M".into(),
        product_code: "0901".into(),
        certificate_number: cert_number(i).to_string(),
        model,
        event_time: EVENT_TIME.into(),
    }
}

/// The two reference registers, to decide what each verdict must be.
struct Oracle {
    even: Snapshot,
    odd: Snapshot,
    day: Day,
}

impl Oracle {
    fn new() -> Self {
        Oracle {
            even: build_snapshot(0, &register(true)),
            odd: build_snapshot(1, &register(false)),
            day: Day::parse_rfc3339_cn(EVENT_TIME).expect("a time"),
        }
    }

    /// Panics unless `result` is what the register of `sequence` decides for `wire`.
    fn verify(&self, sequence: u64, wire: &Listing, result: &ListingResult) {
        let reference = if sequence.is_multiple_of(2) {
            &self.even
        } else {
            &self.odd
        };
        let listing: CoreListing<'_> = wire.validate(self.day).expect("valid listings");
        let want = check(reference, &listing, &Policy::default());
        assert_eq!(result.listing_id, wire.listing_id);
        let Some(Outcome::Verdict(got)) = &result.outcome else {
            panic!("{}: no verdict: {:?}", wire.listing_id, result.outcome);
        };
        assert_eq!(got.snapshot_sequence, sequence, "{}", wire.listing_id);
        assert_eq!(
            (got.decision(), got.reason()),
            (want.decision.into(), want.reason.into()),
            "{} under snapshot {sequence}",
            wire.listing_id
        );
        let want_cert = want
            .certificate
            .as_ref()
            .map(cccgate_proto::certificate_to_wire);
        assert_eq!(got.certificate, want_cert, "{}", wire.listing_id);
    }
}

/// What one checker saw.
#[derive(Debug, Default)]
struct Seen {
    messages: u64,
    verdicts: u64,
    sequences: std::collections::BTreeSet<u64>,
}

async fn stream_checker(
    gw_client: v1::listing_check_client::ListingCheckClient<tonic::transport::Channel>,
    checker: usize,
    oracle: Arc<Oracle>,
    progress: watch::Sender<u64>,
    stop: Arc<AtomicBool>,
) -> Seen {
    let mut client = gw_client;
    let (tx, rx) = mpsc::channel(2);
    let mut out = client
        .check_stream(ReceiverStream::new(rx))
        .await
        .expect("CheckStream opens")
        .into_inner();
    let mut seen = Seen::default();
    let mut n = 0u64;
    let mut last = 0u64;
    while !stop.load(Ordering::Acquire) && seen.messages < MAX_MESSAGES {
        let listings: Vec<Listing> = (0..CHUNK as u64).map(|k| listing(checker, n + k)).collect();
        n += CHUNK as u64;
        tx.send(CheckRequest {
            listings: listings.clone(),
            ..Default::default()
        })
        .await
        .expect("send");
        let resp = out
            .message()
            .await
            .expect("no stream error")
            .expect("a response per message");
        let seq = resp.snapshot_sequence;
        assert!(
            seq >= last,
            "checker {checker}: sequence went back from {last} to {seq}"
        );
        last = seq;
        assert_eq!(resp.results.len(), listings.len());
        for (wire, result) in listings.iter().zip(&resp.results) {
            oracle.verify(seq, wire, result);
        }
        seen.messages += 1;
        seen.verdicts += resp.results.len() as u64;
        seen.sequences.insert(seq);
        progress.send_replace(seq);
    }
    drop(tx);
    assert!(out.message().await.expect("clean end").is_none());
    seen
}

async fn batch_checker(
    mut client: v1::listing_check_client::ListingCheckClient<tonic::transport::Channel>,
    checker: usize,
    oracle: Arc<Oracle>,
    progress: watch::Sender<u64>,
    stop: Arc<AtomicBool>,
) -> Seen {
    let mut seen = Seen::default();
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) && seen.messages < MAX_MESSAGES {
        let listings: Vec<Listing> = (0..CHUNK as u64).map(|k| listing(checker, n + k)).collect();
        n += CHUNK as u64;
        let resp = client
            .check_batch(CheckBatchRequest {
                listings: listings.clone(),
                min_snapshot_sequence: 0,
            })
            .await
            .expect("CheckBatch never fails during swaps")
            .into_inner();
        let seq = resp.snapshot_sequence;
        for (wire, result) in listings.iter().zip(&resp.results) {
            oracle.verify(seq, wire, result);
        }
        seen.messages += 1;
        seen.verdicts += resp.results.len() as u64;
        seen.sequences.insert(seq);
        progress.send_replace(seq);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verdicts_match_their_own_snapshot_through_many_swaps_under_load() {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), 1, &records_for(1));
    let gw = TestGateway::start(test_config(Some(dir.path())), false).await;
    let mut admin = gw.admin_client().await;
    let first = admin
        .reload(ReloadRequest {})
        .await
        .expect("Reload")
        .into_inner();
    assert_eq!(first.snapshot_sequence, 1);

    let oracle = Arc::new(Oracle::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut progress = Vec::new();
    let mut tasks = Vec::new();
    for checker in 0..=STREAMS {
        let (tx, rx) = watch::channel(0u64);
        progress.push(rx);
        let client = gw.check_client().await;
        let (oracle, stop) = (Arc::clone(&oracle), Arc::clone(&stop));
        tasks.push(if checker < STREAMS {
            tokio::spawn(stream_checker(client, checker, oracle, tx, stop))
        } else {
            tokio::spawn(batch_checker(client, checker, oracle, tx, stop))
        });
    }

    for sequence in 2..=SWAPS + 1 {
        let records = records_for(sequence);
        let path = write_snapshot(dir.path(), sequence, &records);
        let r = admin
            .reload(ReloadRequest {})
            .await
            .expect("Reload")
            .into_inner();
        assert_eq!(r.snapshot_sequence, sequence, "{}", r.message);
        // Old files may go: a mapped snapshot stays readable after its file is removed.
        let _ = std::fs::remove_file(dir.path().join(format!("snap-{}.ccc", sequence - 1)));
        assert!(path.exists());
        for rx in &mut progress {
            rx.wait_for(|seen| *seen >= sequence)
                .await
                .expect("every checker is still running");
        }
    }
    stop.store(true, Ordering::Release);

    let mut total = Seen::default();
    for task in tasks {
        let seen = task.await.expect("a checker failed");
        // Every checker saw every sequence from the one in force when it started to the last.
        assert!(seen.sequences.len() as u64 >= SWAPS, "{seen:?}");
        total.messages += seen.messages;
        total.verdicts += seen.verdicts;
        total.sequences.extend(seen.sequences);
    }
    assert_eq!(total.sequences.last(), Some(&(SWAPS + 1)));
    assert!(total.verdicts >= SWAPS * CHUNK as u64 * (STREAMS as u64 + 1));
    gw.stop().await.expect("clean stop");
}
