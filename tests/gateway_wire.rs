//! The gateway writes its answers' protobuf bytes itself (`crates/server/src/answer.rs`) and
//! reads requests in place (`wire.rs`); a prost client must decode them unchanged. A large
//! mixed batch (generated listings of every reason, bad listings in between) goes through
//! CheckBatch, CheckStream and Check; every answer, decoded by prost, must equal the engine's
//! own verdict turned into the wire type by `cccgate_proto::verdict_to_wire`, field for field
//! (certificate details included), and lean answers the same without the certificate.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cccgate_bench::embedded::{EmbeddedGateway, embedded_config, register_snapshot};
use cccgate_core::{Day, Policy, check};
use cccgate_proto::v1::listing_check_client::ListingCheckClient;
use cccgate_proto::v1::listing_result::Outcome;
use cccgate_proto::v1::{CheckBatchRequest, CheckRequest, Listing, ListingResult};
use cccgate_proto::verdict_to_wire;
use cccgate_snapshot::{Snapshot, file_name};
use cccgate_synth::{ListingGenerator, Profile, RegisterSpec};
use tonic::Request;
use tonic::transport::Channel;

const LISTINGS: usize = 5_000;

fn today() -> Day {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    Day::from_unix_seconds_cn(secs)
}

/// Generated listings with a bad one every 97th (a different fault each time).
fn mixed(register: &cccgate_synth::SyntheticRegister) -> Vec<Listing> {
    ListingGenerator::new(register, Profile::Y2021, 5)
        .take(LISTINGS)
        .enumerate()
        .map(|(i, g)| {
            let mut l = Listing::from(g.event);
            if i % 97 == 0 {
                match (i / 97) % 4 {
                    0 => l.merchant_id.clear(),
                    1 => l.product_code = "9x".into(),
                    2 => l.model = "m".repeat(300),
                    _ => l.listing_id = "長".repeat(50), // 150 bytes: cut on a char boundary
                }
            }
            l
        })
        .collect()
}

/// What the engine decides for `l`, as prost would carry it.
fn expected(snapshot: &Snapshot, l: &Listing, day: Day, lean: bool) -> ListingResult {
    match l.validate(day) {
        Ok(listing) => {
            let mut v = verdict_to_wire(&check(snapshot, &listing, &Policy::default()));
            if lean {
                v.certificate = None;
            }
            ListingResult {
                listing_id: l.listing_id.clone(),
                outcome: Some(Outcome::Verdict(v)),
            }
        }
        Err(invalid) => invalid.to_result(),
    }
}

fn lean<T>(msg: T, lean: bool) -> Request<T> {
    let mut req = Request::new(msg);
    if lean {
        req.metadata_mut()
            .insert("cccgate-answer", "lean".parse().unwrap());
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prost_decodes_every_answer_as_the_engine_decided_it() {
    let dir = tempfile::tempdir().unwrap();
    let spec = RegisterSpec {
        certs: 20_000,
        seed: 17,
        ..RegisterSpec::default()
    };
    let register = spec.generate();
    let listings = mixed(&register);
    let snaps = register_snapshot(&spec, register, &dir.path().join("cache")).unwrap();
    let snapshot = Snapshot::open(&snaps.join(file_name(1))).unwrap();
    let gw = EmbeddedGateway::start(
        embedded_config(&snaps),
        &tokio::runtime::Handle::current(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    let mut client = ListingCheckClient::<Channel>::connect(gw.target().to_owned())
        .await
        .unwrap();
    let day = today();
    let mut verdicts_with_certificate = 0;
    let mut errors = 0;
    for lean_answers in [false, true] {
        let want: Vec<ListingResult> = listings
            .iter()
            .map(|l| expected(&snapshot, l, day, lean_answers))
            .collect();
        // CheckBatch: the whole batch in one message.
        let got = client
            .check_batch(lean(
                CheckBatchRequest {
                    listings: listings.clone(),
                    min_snapshot_sequence: 1,
                },
                lean_answers,
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got.snapshot_sequence, 1);
        assert_eq!(got.snapshot_content_id, snapshot.content_id());
        assert_eq!(got.results.len(), want.len());
        for (i, (g, w)) in got.results.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "listing {i} (lean: {lean_answers})");
        }
        verdicts_with_certificate += want
            .iter()
            .filter(|r| matches!(&r.outcome, Some(Outcome::Verdict(v)) if v.certificate.is_some()))
            .count();
        errors += want
            .iter()
            .filter(|r| matches!(r.outcome, Some(Outcome::Error(_))))
            .count();

        // CheckStream: chunks of 700 with the first listing of each in `result`.
        let chunks: Vec<CheckRequest> = listings
            .chunks(700)
            .map(|c| CheckRequest {
                listing: Some(c[0].clone()),
                listings: c[1..].to_vec(),
                min_snapshot_sequence: 0,
            })
            .collect();
        let n = chunks.len();
        let mut answers = client
            .check_stream(lean(tokio_stream::iter(chunks), lean_answers))
            .await
            .unwrap()
            .into_inner();
        let mut at = 0;
        for _ in 0..n {
            let r = answers
                .message()
                .await
                .unwrap()
                .expect("one answer a chunk");
            assert_eq!(r.result.as_ref(), Some(&want[at]), "chunk at {at}");
            assert_eq!(r.results, want[at + 1..at + 1 + r.results.len()]);
            assert_eq!(r.snapshot_content_id, snapshot.content_id());
            at += 1 + r.results.len();
        }
        assert_eq!(at, listings.len());

        // Check: one listing a call (a bad one fails the call instead).
        for (l, w) in listings.iter().zip(&want).step_by(50) {
            let req = CheckRequest {
                listing: Some(l.clone()),
                listings: Vec::new(),
                min_snapshot_sequence: 0,
            };
            match (client.check(lean(req, lean_answers)).await, &w.outcome) {
                (Ok(r), Some(Outcome::Verdict(_))) => {
                    assert_eq!(r.into_inner().result.as_ref(), Some(w));
                }
                (Err(status), Some(Outcome::Error(e))) => {
                    assert_eq!(status.code(), tonic::Code::InvalidArgument);
                    assert_eq!(status.metadata().get("cccgate-field").unwrap(), &e.field);
                }
                (got, want) => panic!("{got:?} for {want:?}"),
            }
        }
    }
    // The batch really was mixed: certificates reported, and bad listings among them.
    assert!(
        verdicts_with_certificate > LISTINGS / 4,
        "{verdicts_with_certificate}"
    );
    assert!(errors >= 2 * (LISTINGS / 97), "{errors}");
    gw.stop().await.unwrap();
}
