//! Replay end to end: a generated set of listings (with malformed lines and a bad request
//! mixed in) through the real gateway on an ephemeral port; the verdict file must give every
//! listing the reason the generator built it to get, in input order, one line per record.
//! Resuming: a gateway that goes away mid-run stops the replay with the exact `--skip` that
//! finishes it, and the two runs together equal one uninterrupted run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use cccgate_bench::embedded::{EmbeddedGateway, embedded_config, register_snapshot};
use cccgate_client::progress::Mode;
use cccgate_client::replay::{ReplayConfig, ReplayOutcome, replay};
use cccgate_client::wire::Rpc;
use cccgate_core::{Decision, ListingEvent, Reason};
use cccgate_proto::v1::listing_check_client::ListingCheckClient;
use cccgate_proto::v1::listing_check_server::{ListingCheck, ListingCheckServer};
use cccgate_proto::v1::{CheckBatchRequest, CheckBatchResponse, CheckRequest, CheckResponse};
use cccgate_synth::{GeneratedListing, ListingGenerator, Profile, RegisterSpec};
use futures::Stream;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

/// What one input record must produce.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    Verdict {
        listing_id: String,
        reason: Reason,
    },
    BadRequest {
        listing_id: String,
        field: String,
        line: u64,
    },
    BadLine {
        line: u64,
    },
}

/// A generated input file and what each of its records must produce.
struct Input {
    path: PathBuf,
    expect: Vec<Expect>,
}

fn listings(register: &cccgate_synth::SyntheticRegister, n: usize) -> Vec<GeneratedListing> {
    ListingGenerator::new(register, Profile::Y2025, 3)
        .take(n)
        .collect()
}

/// JSON lines: every listing, plus a malformed line every 397 records, a blank line (not a
/// record) every 613, and one listing without its merchant (a bad request).
fn write_jsonl(dir: &Path, listings: &[GeneratedListing]) -> Input {
    let path = dir.join("listings.jsonl");
    let mut text = String::new();
    let mut expect = Vec::new();
    let mut line = 0u64;
    for (i, g) in listings.iter().enumerate() {
        if i % 613 == 17 {
            text.push('\n');
            line += 1;
        }
        if i % 397 == 5 {
            text.push_str("{\"listing_id\": \"broken\", merchant_id: M1}\n");
            line += 1;
            expect.push(Expect::BadLine { line });
        }
        line += 1;
        let mut event = g.event.clone();
        if i == 1234 {
            event.merchant_id.clear();
            expect.push(Expect::BadRequest {
                listing_id: event.listing_id.clone(),
                field: "merchant_id".into(),
                line,
            });
        } else {
            expect.push(Expect::Verdict {
                listing_id: event.listing_id.clone(),
                reason: g.expected,
            });
        }
        text.push_str(&serde_json::to_string(&event).unwrap());
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    Input { path, expect }
}

/// Gzip CSV with the spec's columns in another order and every field quoted, plus a row with
/// a missing field.
fn write_csv_gz(dir: &Path, listings: &[GeneratedListing]) -> Input {
    let path = dir.join("listings.csv.gz");
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let mut text =
        String::from("model,listing_id,event_time,merchant_id,certificate_number,product_code\n");
    let mut expect = Vec::new();
    let mut line = 1u64;
    for (i, g) in listings.iter().enumerate() {
        if i == 100 {
            text.push_str("\"X\",\"short-row\"\n");
            line += 1;
            expect.push(Expect::BadLine { line });
        }
        let e: &ListingEvent = &g.event;
        let row = [
            &e.model,
            &e.listing_id,
            &e.event_time,
            &e.merchant_id,
            &e.certificate_number,
            &e.product_code,
        ]
        .map(|f| quote(f))
        .join(",");
        text.push_str(&row);
        text.push('\n');
        line += 1;
        expect.push(Expect::Verdict {
            listing_id: e.listing_id.clone(),
            reason: g.expected,
        });
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(text.as_bytes()).unwrap();
    std::fs::write(&path, gz.finish().unwrap()).unwrap();
    Input { path, expect }
}

/// The gateway over a small synthetic register, and `n` listings of that register.
async fn gateway(dir: &Path, n: usize) -> (EmbeddedGateway, Vec<GeneratedListing>) {
    let spec = RegisterSpec {
        certs: 3_000,
        seed: 11,
        ..RegisterSpec::default()
    };
    let register = spec.generate();
    let generated = listings(&register, n);
    let snapshots = register_snapshot(&spec, register, &dir.join("cache")).unwrap();
    let gw = EmbeddedGateway::start(
        embedded_config(&snapshots),
        &tokio::runtime::Handle::current(),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    (gw, generated)
}

fn config(target: &str, input: &Path, out: &Path) -> ReplayConfig {
    ReplayConfig {
        chunk: 100,
        concurrency: 3,
        progress: Mode::Off,
        ..ReplayConfig::new(target, input, out)
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

/// Checks the verdict file against the expectations, line by line, and the summary's counts.
fn check_output(out: &[Value], expect: &[Expect], outcome: &ReplayOutcome) {
    assert_eq!(out.len(), expect.len(), "one output line per input record");
    for (i, (got, want)) in out.iter().zip(expect).enumerate() {
        match want {
            Expect::Verdict { listing_id, reason } => {
                assert_eq!(got["listing_id"], listing_id.as_str(), "record {i}");
                assert_eq!(got["reason"], reason.as_str(), "record {i}: {got}");
                assert_eq!(
                    got["decision"],
                    reason.table_decision().as_str(),
                    "record {i}"
                );
                assert_eq!(got["snapshot_sequence"], 1);
                assert_eq!(got["snapshot_content_id"].as_str().map(str::len), Some(32));
                if reason.index() >= Reason::CertificateSuspended.index() {
                    assert!(got["certificate_status"].is_string(), "record {i}: {got}");
                    assert!(got["expiry_date"].is_string(), "record {i}: {got}");
                } else {
                    assert!(got.get("certificate_status").is_none(), "record {i}: {got}");
                }
            }
            Expect::BadRequest {
                listing_id,
                field,
                line,
            } => {
                assert_eq!(got["listing_id"], listing_id.as_str());
                assert_eq!(got["field"], field.as_str());
                assert_eq!(got["line"], *line);
                assert!(got["error"].is_string());
            }
            Expect::BadLine { line } => {
                assert_eq!(got["line"], *line, "record {i}: {got}");
                assert!(got["error"].is_string());
                assert!(got.get("decision").is_none());
            }
        }
    }
    let s = &outcome.summary;
    assert!(outcome.stopped.is_none(), "{:?}", outcome.stopped);
    assert!(s.complete);
    assert_eq!(s.records, expect.len() as u64);
    assert_eq!(s.decided + s.bad_requests + s.bad_lines, s.records);
    let bad_lines: Vec<u64> = expect
        .iter()
        .filter_map(|e| match e {
            Expect::BadLine { line } => Some(*line),
            _ => None,
        })
        .collect();
    assert_eq!(s.bad_lines, bad_lines.len() as u64);
    let sampled: Vec<u64> = s.bad_line_samples.iter().map(|b| b.line).collect();
    assert_eq!(
        sampled, bad_lines,
        "bad lines are reported with their line numbers"
    );
    let mut by_decision = BTreeMap::new();
    let mut by_reason = BTreeMap::new();
    for e in expect {
        if let Expect::Verdict { reason, .. } = e {
            *by_decision
                .entry(reason.table_decision().as_str())
                .or_insert(0u64) += 1;
            *by_reason.entry(reason.as_str()).or_insert(0u64) += 1;
        }
    }
    for d in Decision::ALL {
        let want = by_decision.get(d.as_str()).copied().unwrap_or(0);
        assert_eq!(s.decisions[d.as_str()].count, want, "{d}");
    }
    for (reason, share) in s.block_by_reason.iter().chain(&s.review_by_reason) {
        assert_eq!(share.count, by_reason[reason], "{reason}");
    }
    let shares: f64 = s.decisions.values().map(|sh| sh.share).sum();
    assert!((shares - 1.0).abs() < 1e-9);
    assert!(s.merchants > 100, "{}", s.merchants);
    assert_eq!(s.snapshots.len(), 1);
    assert_eq!(s.snapshots[0].verdicts, s.decided + s.bad_requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_gives_every_generated_listing_its_expected_verdict_in_input_order() {
    let tmp = tempfile::tempdir().unwrap();
    let (gw, generated) = gateway(tmp.path(), 4_000).await;
    let input = write_jsonl(tmp.path(), &generated);
    assert!(
        input
            .expect
            .iter()
            .any(|e| matches!(e, Expect::BadRequest { .. }))
    );
    let out = tmp.path().join("verdicts.jsonl");
    let outcome = replay(&config(gw.target(), &input.path, &out))
        .await
        .unwrap();
    check_output(&read_lines(&out), &input.expect, &outcome);
    assert_eq!(outcome.summary.bad_requests, 1);
    assert_eq!(outcome.summary.bad_request_samples[0].field, "merchant_id");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_gzip_csv_and_answers_through_check_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let (gw, generated) = gateway(tmp.path(), 1_500).await;
    let input = write_csv_gz(tmp.path(), &generated);
    let out = tmp.path().join("verdicts.jsonl");
    let cfg = ReplayConfig {
        rpc: Rpc::Batch,
        chunk: 256,
        ..config(gw.target(), &input.path, &out)
    };
    let outcome = replay(&cfg).await.unwrap();
    check_output(&read_lines(&out), &input.expect, &outcome);
    assert_eq!(outcome.summary.rpc, "batch");
    gw.stop().await.unwrap();
}

/// A gateway in front of the real one that answers `budget` stream messages and then is
/// "down": every further message or stream fails with UNAVAILABLE until the budget is raised.
#[derive(Clone)]
struct Flaky {
    real: ListingCheckClient<Channel>,
    budget: Arc<AtomicI64>,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<CheckResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ListingCheck for Flaky {
    async fn check(&self, _: Request<CheckRequest>) -> Result<Response<CheckResponse>, Status> {
        Err(Status::unimplemented("streams only"))
    }

    async fn check_batch(
        &self,
        _: Request<CheckBatchRequest>,
    ) -> Result<Response<CheckBatchResponse>, Status> {
        Err(Status::unimplemented("streams only"))
    }

    type CheckStreamStream = ResponseStream;

    type WatchChangesStream =
        Pin<Box<dyn Stream<Item = Result<cccgate_proto::v1::ChangeBatch, Status>> + Send>>;

    async fn watch_changes(
        &self,
        _: Request<cccgate_proto::v1::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        Err(Status::unimplemented("checks only"))
    }

    type WatchListingsStream = Pin<
        Box<dyn Stream<Item = Result<cccgate_proto::v1::WatchListingsResponse, Status>> + Send>,
    >;

    async fn watch_listings(
        &self,
        _: Request<Streaming<cccgate_proto::v1::WatchListingsRequest>>,
    ) -> Result<Response<Self::WatchListingsStream>, Status> {
        Err(Status::unimplemented("checks only"))
    }

    async fn check_stream(
        &self,
        request: Request<Streaming<CheckRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let mut incoming = request.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move {
            while let Some(Ok(req)) = incoming.next().await {
                if this.budget.fetch_sub(1, Ordering::SeqCst) <= 0 {
                    let _ = tx
                        .send(Err(Status::unavailable("flaky gateway is down")))
                        .await;
                    return;
                }
                let answer = this
                    .real
                    .clone()
                    .check_batch(CheckBatchRequest {
                        listings: req.listings,
                        min_snapshot_sequence: req.min_snapshot_sequence,
                    })
                    .await
                    .map(|r| {
                        let r = r.into_inner();
                        CheckResponse {
                            result: None,
                            results: r.results,
                            snapshot_sequence: r.snapshot_sequence,
                            snapshot_content_id: r.snapshot_content_id,
                        }
                    });
                if tx.send(answer).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_stopped_by_an_unreachable_gateway_resumes_with_the_skip_it_prints() {
    let tmp = tempfile::tempdir().unwrap();
    let (gw, generated) = gateway(tmp.path(), 700).await;
    let input = write_jsonl(tmp.path(), &generated);

    let real = ListingCheckClient::connect(gw.target().to_owned())
        .await
        .unwrap();
    let budget = Arc::new(AtomicI64::new(5));
    let flaky = Flaky {
        real,
        budget: budget.clone(),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let flaky_target = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ListingCheckServer::new(flaky))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    // One call in flight, 10 records a call: the gateway answers exactly 50 records.
    let out = tmp.path().join("verdicts.jsonl");
    let cfg = ReplayConfig {
        chunk: 10,
        concurrency: 1,
        retries: 2,
        retry_for: Duration::from_secs(10),
        ..config(&flaky_target, &input.path, &out)
    };
    let first = replay(&cfg).await.unwrap();
    let stopped = first.stopped.clone().expect("the replay stops");
    assert_eq!(stopped.written, 50);
    assert_eq!(stopped.resume_skip, 50);
    assert!(stopped.reason.contains("unreachable"), "{}", stopped.reason);
    let message = stopped.to_string();
    assert!(message.contains("--skip 50"), "{message}");
    assert!(!first.summary.complete);
    assert_eq!(first.summary.records, 50);
    assert_eq!(
        read_lines(&out).len(),
        50,
        "only whole chunks, in order, are written"
    );

    // The gateway is back: resume where it stopped, appending.
    budget.store(1_000_000, Ordering::SeqCst);
    let second = replay(&ReplayConfig {
        skip: stopped.resume_skip,
        ..cfg
    })
    .await
    .unwrap();
    assert!(second.stopped.is_none(), "{:?}", second.stopped);
    assert_eq!(second.summary.skipped, 50);
    assert_eq!(
        first.summary.records + second.summary.records,
        input.expect.len() as u64
    );
    let all = read_lines(&out);
    assert_eq!(all.len(), input.expect.len());
    for (i, (got, want)) in all.iter().zip(&input.expect).enumerate() {
        match want {
            Expect::Verdict { listing_id, reason } => {
                assert_eq!(got["listing_id"], listing_id.as_str(), "record {i}");
                assert_eq!(got["reason"], reason.as_str(), "record {i}");
            }
            Expect::BadRequest { line, .. } | Expect::BadLine { line } => {
                assert_eq!(got["line"], *line, "record {i}");
            }
        }
    }
    server.abort();
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_cannot_reach_its_gateway_says_so_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, "{\"listing_id\":\"L1\",\"merchant_id\":\"M1\"}\n").unwrap();
    // A port bound but never listened on, held for the whole test: connections to it are
    // refused, and no other process can take it meanwhile (a port that was "just free" could).
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let target = format!("http://{}", refusing.local_addr().unwrap());
    let err = replay(&config(&target, &input, &tmp.path().join("out.jsonl")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&target), "{err}");
}
