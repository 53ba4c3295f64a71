//! Watching the register change (spec/watch.md) on a real gateway: the change feed's batches
//! for swaps and midnights, resuming and its refusal, watched listings' INITIAL and CHANGED
//! results against fresh checks, the per-caller cap, and re-adding after a restart.
//!
//! Swaps go through `Admin.Reload` of a new snapshot file; midnight comes from a
//! [`ManualClock`] the test sets. Every wait for a message is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use cccgate_core::{CertificateRecord, Day, Status};
use cccgate_e2e::gateway::{
    TestGateway, cert_number, day, record, test_catalogue, test_config_with, write_snapshot,
};
use cccgate_proto::v1::listing_check_client::ListingCheckClient;
use cccgate_proto::v1::listing_result::Outcome;
use cccgate_proto::v1::{
    ChangeBatch, ChangeCause, CheckBatchRequest, Listing, ListingResult, ReloadOutcome,
    WatchChangesRequest, WatchEvent, WatchListingsRequest, WatchListingsResponse,
};
use cccgate_server::{ConfigLayer, ManualClock};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::Channel;

const BOUND: Duration = Duration::from_secs(30);

/// 2026-11-29 12:00 China time.
fn noon(d: Day) -> i64 {
    i64::from(d.days()) * 86_400 - 8 * 3_600 + 12 * 3_600
}

fn today() -> Day {
    day(2026, 11, 29)
}

fn register() -> Vec<CertificateRecord> {
    (1..=8)
        .map(|s| record(s, Status::Valid, 901, &["M-1", "M-2"]))
        .collect()
}

async fn start(dir: &std::path::Path, clock: &Arc<ManualClock>, layer: ConfigLayer) -> TestGateway {
    let mut config = test_config_with(Some(dir), layer);
    config.clock = Arc::clone(clock) as _;
    TestGateway::start(config, false).await
}

/// Puts the newest snapshot file in force (asserting that one was loaded).
async fn reload(gw: &TestGateway) {
    let r = gw.reload().await;
    assert_eq!(r.outcome, ReloadOutcome::Loaded as i32, "{r:?}");
}

/// Waits (bounded) until the change feed stands at `sequence`: the watch machinery has taken
/// in the snapshot the gateway loaded at start.
async fn ensure_loaded(client: &mut ListingCheckClient<Channel>, sequence: u64) {
    tokio::time::timeout(BOUND, async {
        loop {
            if let Ok(s) = client
                .watch_changes(WatchChangesRequest { from_sequence: 0 })
                .await
            {
                let b = next_batch(&mut s.into_inner()).await;
                if b.cause == ChangeCause::Bookmark as i32 && b.sequence >= sequence {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the first snapshot reached the change feed");
}

/// A gateway serving `recs` as snapshot 1 from a temporary directory, its clock at noon
/// today (China time), with the change feed standing at sequence 1.
struct Serving {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    gw: TestGateway,
    client: ListingCheckClient<Channel>,
}

async fn serving(recs: &[CertificateRecord], layer: ConfigLayer) -> Serving {
    let dir = tempfile::tempdir().unwrap();
    write_snapshot(dir.path(), 1, recs);
    let clock = ManualClock::new(noon(today()));
    let gw = start(dir.path(), &clock, layer).await;
    let mut client = gw.check_client().await;
    ensure_loaded(&mut client, 1).await;
    Serving {
        dir,
        clock,
        gw,
        client,
    }
}

async fn next_batch(s: &mut Streaming<ChangeBatch>) -> ChangeBatch {
    tokio::time::timeout(BOUND, s.message())
        .await
        .expect("a batch in time")
        .expect("stream ok")
        .expect("stream open")
}

/// The next batch that is not a bookmark.
async fn next_change(s: &mut Streaming<ChangeBatch>) -> ChangeBatch {
    loop {
        let b = next_batch(s).await;
        if b.cause != ChangeCause::Bookmark as i32 {
            return b;
        }
    }
}

async fn changes_from(
    client: &mut ListingCheckClient<Channel>,
    from: u64,
) -> Streaming<ChangeBatch> {
    client
        .watch_changes(WatchChangesRequest {
            from_sequence: from,
        })
        .await
        .expect("WatchChanges")
        .into_inner()
}

fn numbers(b: &ChangeBatch) -> Vec<String> {
    b.changes.iter().map(|c| c.number.clone()).collect()
}

fn num(serial: u32) -> String {
    format!("{:016}", cert_number(serial).get())
}

struct Watch {
    tx: mpsc::Sender<WatchListingsRequest>,
    rx: Streaming<WatchListingsResponse>,
}

impl Watch {
    async fn open(client: &mut ListingCheckClient<Channel>) -> Watch {
        Self::open_with(client, false).await
    }

    /// `lean`: with the metadata `cccgate-answer: lean`.
    async fn open_with(client: &mut ListingCheckClient<Channel>, lean: bool) -> Watch {
        let (tx, rx) = mpsc::channel(8);
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        if lean {
            req.metadata_mut().insert(
                "cccgate-answer",
                tonic::metadata::MetadataValue::from_static("lean"),
            );
        }
        let rx = client
            .watch_listings(req)
            .await
            .expect("WatchListings")
            .into_inner();
        Watch { tx, rx }
    }

    async fn send(&self, add: Vec<Listing>, remove: Vec<String>) {
        self.tx
            .send(WatchListingsRequest { add, remove })
            .await
            .expect("request sent");
    }

    async fn next(&mut self) -> WatchListingsResponse {
        tokio::time::timeout(BOUND, self.rx.message())
            .await
            .expect("a response in time")
            .expect("stream ok")
            .expect("stream open")
    }
}

fn listing(id: &str, serial: u32, model: &str) -> Listing {
    Listing {
        listing_id: id.into(),
        merchant_id: "m1".into(),
        product_code: "0901".into(),
        certificate_number: format!("CCC:{}", cert_number(serial).get()),
        model: model.into(),
        // Watched listings are decided as of today whatever this says.
        event_time: "2020-01-01T10:00:00+08:00".into(),
    }
}

/// What a fresh CheckBatch says of `listings`, as of `d`, by listing id.
async fn fresh(
    client: &mut ListingCheckClient<Channel>,
    listings: &[Listing],
    d: Day,
) -> BTreeMap<String, (i32, i32)> {
    fresh_results(client, listings, d)
        .await
        .into_iter()
        .map(|(id, r)| {
            let v = verdict(&r);
            (id, v)
        })
        .collect()
}

fn verdict(r: &ListingResult) -> (i32, i32) {
    match &r.outcome {
        Some(Outcome::Verdict(v)) => (v.decision, v.reason),
        other => panic!("{}: no verdict: {other:?}", r.listing_id),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_gives_exactly_its_change_set_and_a_resume_gets_it_again() {
    let mut recs = register();
    let Serving {
        dir,
        gw,
        mut client,
        ..
    } = serving(&recs, ConfigLayer::default()).await;
    let mut feed = changes_from(&mut client, 0).await;
    let b = next_batch(&mut feed).await;
    assert_eq!((b.cause, b.sequence), (ChangeCause::Bookmark as i32, 1));
    assert_eq!(b.day, "2026-11-29");

    // Known changes: 2 revoked, 3 expires earlier, 4 one more model, 5 leaves, 9 is new,
    // 6 a new producer only (not verdict-relevant: not a change).
    recs[1].status = Status::Revoked;
    recs[2].expires = day(2030, 1, 1);
    recs[3].models.push("M-3".into());
    recs[5].producer = "新生产者".into();
    recs.remove(4);
    recs.push(record(9, Status::Valid, 901, &["M-9"]));
    write_snapshot(dir.path(), 2, &recs);
    reload(&gw).await;

    let b = next_change(&mut feed).await;
    assert_eq!(b.cause, ChangeCause::Snapshot as i32);
    assert_eq!(b.sequence, 2);
    let mut want = vec![num(2), num(3), num(4), num(5), num(9)];
    want.sort();
    assert_eq!(numbers(&b), want);
    let c2 = &b.changes[0];
    assert_eq!(c2.before.as_ref().unwrap().status, 1);
    assert_eq!(c2.after.as_ref().unwrap().status, 3);
    let c5 = b.changes.iter().find(|c| c.number == num(5)).unwrap();
    assert!(c5.before.is_some() && c5.after.is_none());
    let c9 = b.changes.iter().find(|c| c.number == num(9)).unwrap();
    assert!(c9.before.is_none() && c9.after.is_some());

    // A caller that saw sequence 1 resumes and gets the same batch; one at 2 gets nothing old.
    let mut resumed = changes_from(&mut client, 1).await;
    let again = next_change(&mut resumed).await;
    assert_eq!(again, b);
    let mut current = changes_from(&mut client, 2).await;
    let first = next_batch(&mut current).await;
    assert_eq!(
        (first.cause, first.sequence),
        (ChangeCause::Bookmark as i32, 2)
    );
    gw.stop().await.unwrap();
}

/// Writes a feed drop of `recs` into `drops` (full: with the catalogue; delta: on `base`).
fn write_feed_drop(
    drops: &std::path::Path,
    sequence: u64,
    base: Option<u64>,
    recs: &[CertificateRecord],
) {
    use cccgate_loader::{DropHeader, DropWriter, FileKind, catalogue_csv, certificates_csv};
    let header = base.map_or(DropHeader::full(sequence), |b| {
        DropHeader::delta(sequence, b)
    });
    let mut w = DropWriter::create(&drops.join(format!("drop-{sequence:06}")), header).unwrap();
    if base.is_none() {
        w.csv_file(
            "catalogue.csv",
            FileKind::Catalogue,
            &catalogue_csv(&test_catalogue()),
        )
        .unwrap();
    }
    w.csv_file(
        "certificates.csv",
        FileKind::Certificates,
        &certificates_csv(recs),
    )
    .unwrap();
    w.finish().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delta_drop_gives_exactly_its_change_set_from_its_rows() {
    let snaps = tempfile::tempdir().unwrap();
    let drops = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(noon(today()));
    let layer = ConfigLayer {
        drop_dir: Some(drops.path().to_path_buf()),
        ..Default::default()
    };
    // 40 certificates: the delta's one revocation stays under the delta guard's 5%.
    let recs: Vec<CertificateRecord> = (1..=40)
        .map(|s| record(s, Status::Valid, 901, &["M-1", "M-2"]))
        .collect();
    write_feed_drop(drops.path(), 20, None, &recs);
    let gw = start(snaps.path(), &clock, layer).await;
    let mut client = gw.check_client().await;
    ensure_loaded(&mut client, 20).await;
    let mut feed = changes_from(&mut client, 20).await;
    let mut w = Watch::open(&mut client).await;
    w.send(
        vec![
            listing("on-2", 2, "M-1"),
            listing("on-3", 3, "M-1"),
            listing("on-6", 6, "M-1"),
        ],
        vec![],
    )
    .await;
    let initial = w.next().await;
    assert_eq!(initial.event, WatchEvent::Initial as i32);

    // The delta's rows: 2 revoked, 3 one more model, 6 rewritten with a new producer only
    // (touched, not a change), 41 new. Certificates it does not name stay as they were.
    let mut rows = vec![recs[1].clone(), recs[2].clone(), recs[5].clone()];
    rows[0].status = Status::Revoked;
    rows[1].models.push("M-3".into());
    rows[2].producer = "新生产者".into();
    rows.push(record(41, Status::Valid, 901, &["M-41"]));
    write_feed_drop(drops.path(), 21, Some(20), &rows);
    reload(&gw).await;

    let b = next_change(&mut feed).await;
    assert_eq!((b.cause, b.sequence), (ChangeCause::Snapshot as i32, 21));
    assert_eq!(numbers(&b), [num(2), num(3), num(41)]);
    assert_eq!(b.changes[0].after.as_ref().unwrap().status, 3);
    assert!(b.changes[2].before.is_none());
    // Only the listing whose verdict changed is pushed, and as a fresh check decides it.
    let changed = w.next().await;
    assert_eq!(changed.event, WatchEvent::Changed as i32);
    assert_eq!(changed.snapshot_sequence, 21);
    let ids: Vec<&str> = changed
        .results
        .iter()
        .map(|r| r.listing_id.as_str())
        .collect();
    assert_eq!(ids, ["on-2"]);
    let fresh = fresh(&mut client, &[listing("on-2", 2, "M-1")], today()).await;
    assert_eq!(Some(&verdict(&changed.results[0])), fresh.get("on-2"));
    assert_ne!(verdict(&changed.results[0]), verdict(&initial.results[0]));
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_older_than_the_history_is_refused_with_re_check_everything() {
    let mut recs = register();
    let layer = ConfigLayer {
        watch_history: Some(1),
        ..ConfigLayer::default()
    };
    let Serving {
        dir,
        gw,
        mut client,
        ..
    } = serving(&recs, layer).await;
    let mut feed = changes_from(&mut client, 0).await;
    for seq in 2..=3 {
        recs[seq as usize].status = Status::Suspended;
        write_snapshot(dir.path(), seq, &recs);
        reload(&gw).await;
        assert_eq!(next_change(&mut feed).await.sequence, seq);
    }
    // One swap kept: 2 → 3. A caller at 1 missed 1 → 2.
    let refused = client
        .watch_changes(WatchChangesRequest { from_sequence: 1 })
        .await
        .expect_err("too old");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("re-check everything"),
        "{}",
        refused.message()
    );
    let mut ok = changes_from(&mut client, 2).await;
    assert_eq!(next_change(&mut ok).await.sequence, 3);
    // Ahead of this gateway: refused too, saying so.
    let ahead = client
        .watch_changes(WatchChangesRequest { from_sequence: 9 })
        .await
        .expect_err("ahead");
    assert_eq!(ahead.code(), tonic::Code::FailedPrecondition);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_listings_get_only_changed_verdicts_and_match_fresh_checks() {
    let mut recs = register();
    let Serving {
        dir,
        gw,
        mut client,
        ..
    } = serving(&recs, ConfigLayer::default()).await;

    let listings = vec![
        listing("L1", 1, "M-1"),  // stays valid
        listing("L2", 2, "M-1"),  // revoked
        listing("L3", 3, "M-3"),  // model not covered, then covered
        listing("L4", 4, "M-1"),  // certificate leaves the register
        listing("L5", 5, "M-2"),  // producer changes only: verdict unchanged
        listing("L6", 99, "M-1"), // not found, then found
    ];
    let bad = Listing {
        merchant_id: String::new(),
        ..listing("BAD", 1, "M-1")
    };
    let mut w = Watch::open(&mut client).await;
    let mut add = listings.clone();
    add.push(bad);
    w.send(add, vec![]).await;
    let initial = w.next().await;
    assert_eq!(initial.event, WatchEvent::Initial as i32);
    assert_eq!(initial.snapshot_sequence, 1);
    assert_eq!(initial.results.len(), 7);
    match &initial.results[6].outcome {
        Some(Outcome::Error(e)) => assert_eq!(e.field, "merchant_id"),
        other => panic!("bad listing answered {other:?}"),
    }
    let mut state: BTreeMap<String, (i32, i32)> = initial.results[..6]
        .iter()
        .map(|r| (r.listing_id.clone(), verdict(r)))
        .collect();
    assert_eq!(state, fresh(&mut client, &listings, today()).await);

    recs[1].status = Status::Revoked;
    recs[2].models.push("M-3".into());
    recs[4].producer = "新生产者".into();
    recs.remove(3);
    recs.push(record(99, Status::Valid, 901, &["M-1"]));
    write_snapshot(dir.path(), 2, &recs);
    reload(&gw).await;
    let changed = w.next().await;
    assert_eq!(changed.event, WatchEvent::Changed as i32);
    assert_eq!(changed.snapshot_sequence, 2);
    let ids: BTreeSet<&str> = changed
        .results
        .iter()
        .map(|r| r.listing_id.as_str())
        .collect();
    assert_eq!(ids, BTreeSet::from(["L2", "L3", "L4", "L6"]));
    for r in &changed.results {
        state.insert(r.listing_id.clone(), verdict(r));
    }
    assert_eq!(state, fresh(&mut client, &listings, today()).await);

    // Removed listings get nothing; re-adding an id replaces it (L1 now sells M-9).
    w.send(vec![listing("L1", 1, "M-9")], vec!["L2".into()])
        .await;
    let replaced = w.next().await;
    assert_eq!(replaced.event, WatchEvent::Initial as i32);
    assert_eq!(replaced.results[0].listing_id, "L1");
    recs[0].models.push("M-9".into()); // L1 (as replaced) becomes covered
    recs[1].status = Status::Valid; // L2's certificate, no longer watched
    write_snapshot(dir.path(), 3, &recs);
    reload(&gw).await;
    let changed = w.next().await;
    let ids: Vec<&str> = changed
        .results
        .iter()
        .map(|r| r.listing_id.as_str())
        .collect();
    assert_eq!(ids, ["L1"]);
    assert_eq!(changed.snapshot_sequence, 3);
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_changed_verdicts_come_in_several_messages_and_lean_streams_leave_the_certificate_out()
{
    let mut recs = register();
    let Serving {
        dir,
        gw,
        mut client,
        ..
    } = serving(&recs, ConfigLayer::default()).await;
    // 5,000 listings of certificate 2 on a full stream and on a lean one.
    const N: usize = 5_000;
    let add: Vec<Listing> = (0..N)
        .map(|i| listing(&format!("L{i:05}"), 2, "M-1"))
        .collect();
    let (mut full, mut lean) = (
        Watch::open(&mut client).await,
        Watch::open_with(&mut client, true).await,
    );
    for (w, is_lean) in [(&mut full, false), (&mut lean, true)] {
        w.send(add.clone(), vec![]).await;
        let initial = w.next().await;
        assert_eq!(initial.results.len(), N);
        for r in &initial.results {
            match &r.outcome {
                Some(Outcome::Verdict(v)) => {
                    assert_eq!(v.certificate.is_none(), is_lean, "{r:?}");
                }
                other => panic!("{}: {other:?}", r.listing_id),
            }
        }
    }
    recs[1].status = Status::Revoked;
    write_snapshot(dir.path(), 2, &recs);
    reload(&gw).await;
    for (w, is_lean) in [(&mut full, false), (&mut lean, true)] {
        let mut ids = BTreeSet::new();
        let mut messages = 0;
        while ids.len() < N {
            let m = w.next().await;
            assert_eq!(m.event, WatchEvent::Changed as i32);
            assert_eq!(m.snapshot_sequence, 2);
            messages += 1;
            for r in &m.results {
                let Some(Outcome::Verdict(v)) = &r.outcome else {
                    panic!("{r:?}")
                };
                assert_eq!(
                    (v.decision, v.reason, v.snapshot_sequence),
                    (
                        cccgate_proto::v1::Decision::Block as i32,
                        cccgate_proto::v1::Reason::CertificateRevoked as i32,
                        2
                    )
                );
                match (&v.certificate, is_lean) {
                    (None, true) => {}
                    (Some(c), false) => assert_eq!(c.number, num(2)),
                    (c, _) => panic!("lean {is_lean}: certificate {c:?}"),
                }
                assert!(ids.insert(r.listing_id.clone()), "{} twice", r.listing_id);
            }
        }
        assert_eq!(ids.len(), N);
        // Not one message of 5,000: they leave in pieces as the pass writes them.
        assert!(messages > 1, "lean {is_lean}: {messages} message");
    }
    gw.stop().await.unwrap();
}

/// What a fresh CheckBatch answers for `listings`, as of `d`, whole results by listing id.
async fn fresh_results(
    client: &mut ListingCheckClient<Channel>,
    listings: &[Listing],
    d: Day,
) -> BTreeMap<String, ListingResult> {
    let mut out = BTreeMap::new();
    for chunk in listings.chunks(1_000) {
        let listings = chunk
            .iter()
            .map(|l| Listing {
                event_time: format!("{d}T12:00:00+08:00"),
                ..l.clone()
            })
            .collect();
        let r = client
            .check_batch(CheckBatchRequest {
                listings,
                min_snapshot_sequence: 0,
            })
            .await
            .expect("CheckBatch")
            .into_inner();
        out.extend(r.results.into_iter().map(|r| (r.listing_id.clone(), r)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_changed_verdicts_of_many_listings_per_certificate_are_fresh_checks_field_for_field() {
    let mut recs = register();
    let Serving {
        dir,
        gw,
        mut client,
        ..
    } = serving(&recs, ConfigLayer::default()).await;
    // 16,000 listings (10,000 re-decided: a pass on several threads, whose shares cut through the runs of one
    // certificate) of 8 certificates, each cited with every model (covered, not covered,
    // none), product code (its own, another, self-declared, none) and typing of the number.
    let codes = ["0901", "0901", "1606", "1101", ""];
    let models = ["M-1", "M-2", "M-3", ""];
    let add: Vec<Listing> = (0..16_000u32)
        .map(|i| {
            let serial = 1 + i % 8;
            let number = if (i / 160) % 2 == 0 {
                num(serial)
            } else {
                format!("CCC {}", num(serial))
            };
            Listing {
                product_code: codes[(i / 32) as usize % codes.len()].into(),
                certificate_number: number,
                ..listing(&format!("L{i:05}"), serial, models[(i / 8) as usize % 4])
            }
        })
        .collect();
    let mut w = Watch::open(&mut client).await;
    for chunk in add.chunks(2_000) {
        w.send(chunk.to_vec(), vec![]).await;
        assert_eq!(w.next().await.results.len(), chunk.len());
    }
    let before = fresh_results(&mut client, &add, today()).await;

    recs[1].status = Status::Revoked; // 2: BLOCK, reported with its new producer
    recs[1].producer = "新生产者".into();
    recs[2].models.push("M-3".into()); // 3: M-3 now covered
    recs[4].product_code = cccgate_core::ProductCode::new(1606).unwrap(); // 5: another product
    recs[5].expires = day(2026, 11, 28); // 6: expired yesterday
    recs.remove(3); // 4: leaves the register
    write_snapshot(dir.path(), 2, &recs);
    reload(&gw).await;
    let after = fresh_results(&mut client, &add, today()).await;
    let want: BTreeSet<&String> = after
        .iter()
        .filter(|(id, r)| verdict(r) != verdict(&before[*id]))
        .map(|(id, _)| id)
        .collect();
    assert!(want.len() > 4_000, "{} changed", want.len());
    let mut got = BTreeMap::new();
    while got.len() < want.len() {
        let m = w.next().await;
        assert_eq!(
            (m.event, m.snapshot_sequence),
            (WatchEvent::Changed as i32, 2)
        );
        for r in m.results {
            assert!(
                got.insert(r.listing_id.clone(), r).is_none(),
                "a listing twice"
            );
        }
    }
    assert_eq!(got.keys().collect::<BTreeSet<_>>(), want);
    for (id, r) in &got {
        assert_eq!(
            r, &after[id],
            "{id}: CHANGED is not what a fresh check says"
        );
    }
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn midnight_expires_the_valid_certificates_whose_day_passed() {
    let mut recs = register();
    let d = today();
    recs[0].expires = d; // valid through today: lapses at midnight
    recs[1].expires = d;
    recs[1].status = Status::Suspended; // not marked valid: not in the DAY batch
    recs[2].expires = day(2026, 11, 30); // valid through tomorrow
    let Serving {
        clock,
        gw,
        mut client,
        ..
    } = serving(&recs, ConfigLayer::default()).await;
    let mut feed = changes_from(&mut client, 0).await;
    next_batch(&mut feed).await;
    let mut w = Watch::open(&mut client).await;
    let watched = vec![listing("E1", 1, "M-1"), listing("E3", 3, "M-1")];
    w.send(watched.clone(), vec![]).await;
    let initial = w.next().await;
    assert!(
        initial.results.iter().all(|r| verdict(r).1 == 12),
        "{initial:?}"
    );

    // 00:00:01 the next day, China time.
    clock.set(noon(d) + 12 * 3_600 + 1);
    let b = next_change(&mut feed).await;
    assert_eq!(b.cause, ChangeCause::Day as i32);
    assert_eq!(b.day, "2026-11-30");
    assert_eq!(b.sequence, 1);
    assert_eq!(numbers(&b), [num(1)]);
    assert_eq!(b.changes[0].after.as_ref().unwrap().status, 5);
    let changed = w.next().await;
    assert_eq!(changed.event, WatchEvent::Changed as i32);
    assert_eq!(changed.results.len(), 1);
    assert_eq!(changed.results[0].listing_id, "E1");
    assert_eq!(verdict(&changed.results[0]).1, 9); // CERTIFICATE_EXPIRED
    let now = fresh(&mut client, &watched, day(2026, 11, 30)).await;
    assert_eq!(now["E1"], verdict(&changed.results[0]));
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_watches_at_most_its_cap_and_re_adds_after_a_restart() {
    let layer = ConfigLayer {
        watch_max_listings: Some(2),
        ..ConfigLayer::default()
    };
    let Serving {
        dir,
        clock,
        gw,
        mut client,
    } = serving(&register(), layer.clone()).await;
    let mut w = Watch::open(&mut client).await;
    w.send(
        vec![
            listing("A", 1, "M-1"),
            listing("B", 2, "M-1"),
            listing("C", 3, "M-1"),
        ],
        vec![],
    )
    .await;
    let r = w.next().await;
    match &r.results[2].outcome {
        Some(Outcome::Error(e)) => assert!(e.message.contains("--watch-max-listings"), "{e:?}"),
        other => panic!("over the cap: {other:?}"),
    }
    // Replacing a watched id is not a new watch; after a remove there is room again.
    w.send(vec![listing("A", 1, "M-2")], vec!["B".into()]).await;
    assert!(matches!(
        w.next().await.results[0].outcome,
        Some(Outcome::Verdict(_))
    ));
    w.send(vec![listing("C", 3, "M-1")], vec![]).await;
    assert!(matches!(
        w.next().await.results[0].outcome,
        Some(Outcome::Verdict(_))
    ));

    // The gateway restarts: the stream ends; the caller reconnects and adds again (INITIAL).
    gw.stop().await.unwrap();
    let ended = tokio::time::timeout(BOUND, w.rx.message())
        .await
        .expect("ends in time");
    assert!(!matches!(ended, Ok(Some(_))), "{ended:?}");
    let gw = start(dir.path(), &clock, layer).await;
    let mut client = gw.check_client().await;
    ensure_loaded(&mut client, 1).await;
    let mut w = Watch::open(&mut client).await;
    w.send(vec![listing("A", 1, "M-2"), listing("C", 3, "M-1")], vec![])
        .await;
    let r = w.next().await;
    assert_eq!(r.event, WatchEvent::Initial as i32);
    assert_eq!(r.results.len(), 2);
    assert!(r.results.iter().all(|r| verdict(r) == (1, 12)), "{r:?}");
    gw.stop().await.unwrap();
}

/// A `Write` that hands each line to a channel, so the test reads what the CLI prints as it
/// prints it.
struct Lines(mpsc::UnboundedSender<String>, Vec<u8>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.1.extend_from_slice(buf);
        while let Some(i) = self.1.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.1.drain(..=i).collect();
            let _ = self
                .0
                .send(String::from_utf8_lossy(&line).trim_end().to_owned());
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn line(rx: &mut mpsc::UnboundedReceiver<String>) -> serde_json::Value {
    let l = tokio::time::timeout(BOUND, rx.recv())
        .await
        .expect("a line in time")
        .expect("still printing");
    serde_json::from_str(&l).unwrap_or_else(|e| panic!("{l:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_the_feed_and_the_changed_verdicts_as_json_lines() {
    let mut recs = register();
    let Serving { dir, gw, .. } = serving(&recs, ConfigLayer::default()).await;
    let target = format!("http://{}", gw.addr);
    let input = dir.path().join("listings.jsonl");
    std::fs::write(
        &input,
        format!(
            "{{\"listing_id\":\"L1\",\"merchant_id\":\"m\",\"product_code\":\"0901\",\"certificate_number\":\"{}\",\"model\":\"M-1\"}}\n\
             {{\"listing_id\":\"L2\",\"merchant_id\":\"m\",\"product_code\":\"0901\",\"certificate_number\":\"{}\",\"model\":\"M-1\"}}\n",
            cert_number(1).get(),
            cert_number(2).get()
        ),
    )
    .unwrap();

    let (feed_tx, mut feed) = mpsc::unbounded_channel();
    let (stop_feed, stopped) = tokio::sync::oneshot::channel::<()>();
    let t = target.clone();
    let feed_task = tokio::spawn(async move {
        let mut out = Lines(feed_tx, Vec::new());
        cccgate_client::watch::follow_changes(&t, &Default::default(), 0, &mut out, async {
            let _ = stopped.await;
        })
        .await
    });
    let (watch_tx, mut watched) = mpsc::unbounded_channel();
    let (stop_watch, stopped) = tokio::sync::oneshot::channel::<()>();
    let (t, i) = (target.clone(), input.clone());
    let watch_task = tokio::spawn(async move {
        let mut out = Lines(watch_tx, Vec::new());
        cccgate_client::watch::watch_listings(
            &t,
            &Default::default(),
            &i,
            None,
            1,
            true,
            &mut out,
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    let first = line(&mut feed).await;
    assert_eq!(
        (first["cause"].as_str(), first["sequence"].as_u64()),
        (Some("BOOKMARK"), Some(1))
    );
    for id in ["L1", "L2"] {
        let l = line(&mut watched).await;
        assert_eq!(
            (l["listing_id"].as_str(), l["event"].as_str()),
            (Some(id), Some("INITIAL"))
        );
        assert_eq!(l["decision"], "ALLOW");
    }

    recs[1].status = Status::Revoked;
    write_snapshot(dir.path(), 2, &recs);
    reload(&gw).await;
    let b = line(&mut feed).await;
    assert_eq!(b["cause"], "SNAPSHOT");
    assert_eq!(b["sequence"], 2);
    assert_eq!(b["changes"][0]["number"], num(2));
    assert_eq!(b["changes"][0]["before"]["status"], "VALID");
    assert_eq!(b["changes"][0]["after"]["status"], "REVOKED");
    assert_eq!(b["changes"].as_array().map(Vec::len), Some(1));
    let c = line(&mut watched).await;
    assert_eq!(c["listing_id"], "L2");
    assert_eq!(c["event"], "CHANGED");
    assert_eq!(c["decision"], "BLOCK");
    assert_eq!(c["reason"], "CERTIFICATE_REVOKED");

    stop_feed.send(()).unwrap();
    stop_watch.send(()).unwrap();
    assert_eq!(feed_task.await.unwrap().unwrap(), 2);
    assert_eq!(watch_task.await.unwrap().unwrap(), 1);
    gw.stop().await.unwrap();
}
