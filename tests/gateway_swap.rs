//! Swap under load: several streams (and a batch caller) check continuously while the
//! snapshot is replaced many times, each sequence with a register of its own. No call may
//! fail, every response has one result per listing, and every verdict must be exactly what the
//! register of its own `snapshot_sequence` decides: a verdict from another snapshot (even two
//! swaps back) labelled with this one, or a response mixing two, fails it.
//!
//! Half the swaps go through the reload path (`Admin.Reload` of a new file); the other half
//! land inside a request on purpose: the server's `test-hooks` feature runs a hook right after
//! a request took its snapshot, and the hook puts the next one in force there and then. A last
//! phase does that once for each RPC (batch, stream message, unary) with no other traffic, so
//! the answer to that very call is known to have straddled a swap.
//!
//! Deterministic in outcome: after each swap the swapper waits (bounded) until every checker
//! has seen the new sequence, and the loops are bounded in count. Nothing is timed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cccgate_core::{CertificateRecord, Day, Listing as CoreListing, Policy, Status, check};
use cccgate_e2e::gateway::{
    TestGateway, build_snapshot, cert_number, record, test_config, write_snapshot,
};
use cccgate_proto::v1::{
    self, CheckBatchRequest, CheckRequest, Listing, ListingResult, ReloadRequest,
    listing_result::Outcome,
};
use cccgate_server::Loaded;
use cccgate_server::store::test_hooks;
use cccgate_snapshot::Snapshot;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

const CERTS: u32 = 400;
/// Certificates 1..=PROBES spell the low bits of their register's sequence.
const PROBES: u32 = 8;
/// Swaps after the first load.
const SWAPS: u64 = 100;
const STREAMS: usize = 4;
const CHUNK: usize = 40;
/// A bound on every checker's loop, far above what the swaps need.
const MAX_MESSAGES: u64 = 200_000;
/// A bound on every wait: far above what a loaded machine needs, so a hang fails instead.
const PATIENCE: Duration = Duration::from_secs(60);
const EVENT_TIME: &str = "2026-11-27T10:00:00+08:00";

/// The register of `sequence`, its own: probe certificate `k` (1..=8) is valid when bit `k-1`
/// of the sequence is set and revoked otherwise, so the probes' verdicts name the snapshot
/// that decided them; the other certificates' status, product code and models are mixed from
/// the sequence too, so most listings change verdict at every swap.
fn register(sequence: u64) -> Vec<CertificateRecord> {
    (1..=CERTS)
        .map(|i| {
            let (ma, mb) = (format!("A-{i}"), format!("B-{i}"));
            if i <= PROBES {
                let status = if (sequence >> (i - 1)) & 1 == 1 {
                    Status::Valid
                } else {
                    Status::Revoked
                };
                return record(i, status, 901, &[&ma]);
            }
            let mix = (sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ u64::from(i).wrapping_mul(0xD6E8_FEB8_6659_FD93))
                >> 40;
            match mix % 6 {
                0 => record(i, Status::Valid, 901, &[&ma]),
                1 => record(i, Status::Revoked, 901, &[&mb]),
                2 => record(i, Status::Valid, 1606, &[&ma]),
                3 => record(i, Status::Suspended, 901, &[&ma]),
                4 => record(i, Status::Cancelled, 1606, &[&mb]),
                _ => record(i, Status::Valid, 901, &[&ma, &mb]),
            }
        })
        .collect()
}

/// Listing `n` of a checker: the first `PROBES` of every chunk cite the probe certificates,
/// the rest a certificate (or one that does not exist) with a model from either register.
fn listing(checker: usize, n: u64) -> Listing {
    let k = n % CHUNK as u64;
    let i = if k < u64::from(PROBES) {
        k as u32 + 1
    } else {
        ((n * 7 + checker as u64 * 101) % u64::from(CERTS + 20)) as u32 + 1
    };
    // Lower case on purpose: models are normalised before they are compared.
    let model = match (n % 3, i % 2) {
        _ if i <= PROBES => String::new(),
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

/// A chunk of listings of a checker, from listing `n` on.
fn chunk(checker: usize, n: u64) -> Vec<Listing> {
    (0..CHUNK as u64).map(|k| listing(checker, n + k)).collect()
}

/// The reference register of every sequence, to decide what each verdict must be.
struct Oracle {
    snapshots: Mutex<HashMap<u64, Arc<Snapshot>>>,
    day: Day,
}

impl Oracle {
    fn new() -> Self {
        Oracle {
            snapshots: Mutex::new(HashMap::new()),
            day: Day::parse_rfc3339_cn(EVENT_TIME).expect("a time"),
        }
    }

    fn reference(&self, sequence: u64) -> Arc<Snapshot> {
        let mut all = self.snapshots.lock().expect("oracle lock");
        Arc::clone(
            all.entry(sequence)
                .or_insert_with(|| Arc::new(build_snapshot(sequence, &register(sequence)))),
        )
    }

    /// Panics unless `results` are one per listing of `wires`, in order, each what the
    /// register of `sequence` decides.
    fn verify_all(&self, sequence: u64, wires: &[Listing], results: &[ListingResult]) {
        assert_eq!(
            results.len(),
            wires.len(),
            "one result per listing (snapshot {sequence})"
        );
        let reference = self.reference(sequence);
        for (wire, result) in wires.iter().zip(results) {
            self.verify(&reference, sequence, wire, result);
        }
    }

    /// Panics unless `result` is what `reference` (the register of `sequence`) decides.
    fn verify(&self, reference: &Snapshot, sequence: u64, wire: &Listing, result: &ListingResult) {
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
        let listings = chunk(checker, n);
        n += CHUNK as u64;
        tx.send(CheckRequest {
            listings: listings.clone(),
            ..Default::default()
        })
        .await
        .expect("send");
        let resp = tokio::time::timeout(PATIENCE, out.message())
            .await
            .expect("a stream response within the bound")
            .expect("no stream error")
            .expect("a response per message");
        let seq = resp.snapshot_sequence;
        assert!(
            seq >= last,
            "checker {checker}: sequence went back from {last} to {seq}"
        );
        last = seq;
        oracle.verify_all(seq, &listings, &resp.results);
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
        let listings = chunk(checker, n);
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
        oracle.verify_all(seq, &listings, &resp.results);
        seen.messages += 1;
        seen.verdicts += resp.results.len() as u64;
        seen.sequences.insert(seq);
        progress.send_replace(seq);
    }
    seen
}

/// A swap the hook puts in force inside the next request that loads a snapshot.
#[derive(Clone, Default)]
struct InsideSwaps {
    armed: Arc<Mutex<Option<Loaded>>>,
    landed: Arc<AtomicU64>,
}

impl InsideSwaps {
    /// Installs the hook (process-wide: this file's only test gateway).
    fn install(&self) {
        let (armed, landed) = (Arc::clone(&self.armed), Arc::clone(&self.landed));
        test_hooks::set_after_load(Some(Box::new(move || {
            let next = armed.lock().expect("hook lock").take();
            if next.is_some() {
                landed.fetch_add(1, Ordering::AcqRel);
            }
            next
        })));
    }

    /// The next request to load a snapshot decides on the one it loaded, while `sequence`
    /// is put in force under it.
    fn arm(&self, sequence: u64) {
        let loaded = Loaded {
            snapshot: build_snapshot(sequence, &register(sequence)),
            origin: "test hook".into(),
            loaded_at_unix_ms: 0,
            delta: None,
        };
        let previous = self.armed.lock().expect("hook lock").replace(loaded);
        assert!(previous.is_none(), "the previous inside swap never landed");
    }

    fn landed(&self) -> u64 {
        self.landed.load(Ordering::Acquire)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verdicts_match_their_own_snapshot_through_many_swaps_under_load() {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), 1, &register(1));
    let gw = TestGateway::start(test_config(Some(dir.path())), false).await;
    let mut admin = gw.admin_client().await;
    let first = admin
        .reload(ReloadRequest {})
        .await
        .expect("Reload")
        .into_inner();
    assert_eq!(first.snapshot_sequence, 1);
    let inside = InsideSwaps::default();
    inside.install();

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
        if sequence % 2 == 1 {
            inside.arm(sequence);
        } else {
            let path = write_snapshot(dir.path(), sequence, &register(sequence));
            let r = admin
                .reload(ReloadRequest {})
                .await
                .expect("Reload")
                .into_inner();
            assert_eq!(r.snapshot_sequence, sequence, "{}", r.message);
            // Old files may go: a mapped snapshot stays readable after its file is removed.
            let _ = std::fs::remove_file(dir.path().join(format!("snap-{}.ccc", sequence - 2)));
            assert!(path.exists());
        }
        for (checker, rx) in progress.iter_mut().enumerate() {
            tokio::time::timeout(PATIENCE, rx.wait_for(|seen| *seen >= sequence))
                .await
                .unwrap_or_else(|_| {
                    panic!("checker {checker} did not see sequence {sequence} within {PATIENCE:?}")
                })
                .expect("every checker is still running");
        }
    }
    stop.store(true, Ordering::Release);
    assert_eq!(
        inside.landed(),
        SWAPS / 2,
        "every armed swap landed in a request"
    );

    let mut total = Seen::default();
    for task in tasks {
        let seen = tokio::time::timeout(PATIENCE, task)
            .await
            .expect("a checker stops within the bound")
            .expect("a checker failed");
        // Every checker saw every sequence from the one in force when it started to the last.
        assert!(seen.sequences.len() as u64 >= SWAPS, "{seen:?}");
        total.messages += seen.messages;
        total.verdicts += seen.verdicts;
        total.sequences.extend(seen.sequences);
    }
    assert_eq!(total.sequences.last(), Some(&(SWAPS + 1)));
    assert!(total.verdicts >= SWAPS * CHUNK as u64 * (STREAMS as u64 + 1));

    // One call of each kind, alone, with a swap landing inside it: its answer is the snapshot
    // it loaded, all of it, labelled as such; the next call sees the new one.
    let mut client = gw.check_client().await;
    let mut sequence = SWAPS + 1;
    let (tx, rx) = mpsc::channel(1);
    let mut stream = client
        .check_stream(ReceiverStream::new(rx))
        .await
        .expect("CheckStream opens")
        .into_inner();
    for (round, kind) in ["batch", "stream", "unary"].into_iter().enumerate() {
        let listings = chunk(99, round as u64 * CHUNK as u64);
        inside.arm(sequence + 1);
        let (label, results) = match kind {
            "batch" => {
                let r = client
                    .check_batch(CheckBatchRequest {
                        listings: listings.clone(),
                        min_snapshot_sequence: 0,
                    })
                    .await
                    .expect("CheckBatch")
                    .into_inner();
                (r.snapshot_sequence, r.results)
            }
            "stream" => {
                tx.send(CheckRequest {
                    listings: listings.clone(),
                    ..Default::default()
                })
                .await
                .expect("send");
                let r = tokio::time::timeout(PATIENCE, stream.message())
                    .await
                    .expect("a stream response within the bound")
                    .expect("no stream error")
                    .expect("a response");
                (r.snapshot_sequence, r.results)
            }
            _ => {
                let r = client
                    .check(CheckRequest {
                        listing: Some(listings[0].clone()),
                        ..Default::default()
                    })
                    .await
                    .expect("Check")
                    .into_inner();
                (r.snapshot_sequence, r.result.into_iter().collect())
            }
        };
        assert_eq!(
            inside.landed(),
            SWAPS / 2 + round as u64 + 1,
            "{kind}: the swap landed"
        );
        assert_eq!(
            label, sequence,
            "{kind}: labelled with the snapshot it loaded"
        );
        let wires = if kind == "unary" {
            &listings[..1]
        } else {
            &listings[..]
        };
        oracle.verify_all(sequence, wires, &results);
        sequence += 1;
    }
    let after = client
        .check_batch(CheckBatchRequest {
            listings: chunk(99, 0),
            min_snapshot_sequence: 0,
        })
        .await
        .expect("CheckBatch")
        .into_inner();
    assert_eq!(
        after.snapshot_sequence, sequence,
        "the next call sees the new snapshot"
    );
    oracle.verify_all(sequence, &chunk(99, 0), &after.results);
    drop(tx);
    test_hooks::set_after_load(None);
    gw.stop().await.expect("clean stop");
}
