//! Per-caller rate quotas (`--client-max-calls-per-second`, `--client-max-checks-per-second`):
//! a caller sending as fast as it can is refused with RESOURCE_EXHAUSTED and a retry hint,
//! before its body is read, and counted exactly; another caller is still admitted and answered.
//! A connection whose calls keep being refused is paused (not read) for a moment; no other is.
//! A caller past its bytes quota (`--client-max-bytes-per-second`) is not refused but read at
//! the quota's rate; another caller's connection is read as before.
//!
//! No timed assertion: where the count of admitted calls depends on how long the calls took
//! (tokens come back with time), the bound is computed from the elapsed time measured.

use std::path::Path;
use std::time::{Duration, Instant};

use cccgate_core::Status as CertStatus;
use cccgate_e2e::gateway::{TestGateway, record, test_config_with, write_snapshot};
use cccgate_proto::v1::listing_check_client::ListingCheckClient;
use cccgate_proto::v1::{CheckBatchRequest, CheckRequest, Listing, ReloadRequest};
use cccgate_server::ConfigLayer;
use sha2::{Digest, Sha256};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

fn line(name: &str, token: &str) -> String {
    let hex: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{name} {hex}\n")
}

fn listing(id: usize) -> Listing {
    Listing {
        listing_id: format!("L{id}"),
        merchant_id: "M1".into(),
        ..Default::default()
    }
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

async fn check(ch: &Channel, token: &str) -> Result<(), Status> {
    let msg = CheckRequest {
        listing: Some(listing(1)),
        ..Default::default()
    };
    ListingCheckClient::new(ch.clone())
        .check(with_token(msg, token))
        .await
        .map(drop)
}

async fn batch(ch: &Channel, token: &str, n: usize) -> Result<usize, Status> {
    let msg = CheckBatchRequest {
        listings: (0..n).map(listing).collect(),
        min_snapshot_sequence: 0,
    };
    ListingCheckClient::new(ch.clone())
        .check_batch(with_token(msg, token))
        .await
        .map(|r| r.into_inner().results.len())
}

/// A gateway whose callers are `{prefix}greedy` (token `tg`) and `{prefix}fair` (`tf`): the
/// tests of this file share one metrics recorder, so each names its callers apart.
async fn gateway(dir: &Path, prefix: &str, layer: ConfigLayer) -> TestGateway {
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        format!(
            "{}{}",
            line(&format!("{prefix}greedy"), "tg"),
            line(&format!("{prefix}fair"), "tf")
        ),
    )
    .unwrap();
    write_snapshot(dir, 10, &[record(1, CertStatus::Valid, 901, &["X1"])]);
    let layer = ConfigLayer {
        auth_tokens: Some(tokens),
        ..layer
    };
    let gw = TestGateway::start(test_config_with(Some(dir), layer), true).await;
    gw.admin_client()
        .await
        .reload(ReloadRequest {})
        .await
        .expect("Reload");
    gw
}

/// A refusal by a quota: RESOURCE_EXHAUSTED naming the flag, with a retry hint no longer than
/// one token's time.
fn assert_quota_refusal(s: &Status, flag: &str, per_second: u64, tokens: u64) {
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    assert!(s.message().contains(flag), "{}", s.message());
    let hint: u64 = s
        .metadata()
        .get("grpc-retry-pushback-ms")
        .expect("a retry hint")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=1000 * tokens / per_second + 1).contains(&hint),
        "hint {hint} ms"
    );
}

/// The gateway's metrics page.
async fn scrape(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

async fn metric(addr: std::net::SocketAddr, name: &str, client: &str) -> u64 {
    scrape(addr)
        .await
        .lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("client=\"{client}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The value of the unlabelled counter `name` (0 before it was first counted).
async fn counter(addr: std::net::SocketAddr, name: &str) -> u64 {
    scrape(addr)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

/// Refused calls on one connection that pause its reads (`crates/server/src/tarpit.rs`).
const STRIKES: usize = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_calls_or_oversized_messages_keep_being_refused_is_paused_and_no_other()
{
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(dir.path(), "tarpit-", ConfigLayer::default()).await;
    let metrics = gw.metrics_addr.expect("metrics");
    let pauses = "cccgate_connection_pauses_total";
    // No other test of this file refuses as many calls on one connection.
    let before = counter(metrics, pauses).await;
    let (storm, other) = (gw.channel().await, gw.channel().await);
    // Answered calls are not counted against a connection.
    for _ in 0..2 * STRIKES {
        check(&storm, "tf").await.expect("a known token");
    }
    // Calls with an unknown token: one short of the limit does not pause...
    for _ in 1..STRIKES {
        let s = check(&storm, "nope").await.unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    }
    assert_eq!(counter(metrics, pauses).await, before);
    // ...the next refusal does.
    let s = check(&storm, "nope").await.unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
    assert_eq!(counter(metrics, pauses).await, before + 1);
    // Another connection is read and answered meanwhile; the paused one is read again after
    // its pause (100 ms) and answers a known caller.
    check(&other, "tf").await.expect("another connection");
    tokio::time::timeout(Duration::from_secs(30), check(&storm, "tf"))
        .await
        .expect("read again after the pause")
        .expect("a known token");
    assert_eq!(counter(metrics, pauses).await, before + 1);
    // A message over --max-batch weighs 8 strikes (a quarter of the limit): three leave a
    // fresh connection read...
    let big = gw.channel().await;
    for _ in 0..3 {
        let s = batch(&big, "tg", 10_001).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    }
    assert_eq!(counter(metrics, pauses).await, before + 1);
    // ...the fourth pauses it; it is read again after the pause.
    let s = batch(&big, "tg", 10_001).await.unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
    assert_eq!(counter(metrics, pauses).await, before + 2);
    check(&other, "tf").await.expect("another connection");
    tokio::time::timeout(Duration::from_secs(30), batch(&big, "tg", 10_000))
        .await
        .expect("read again after the pause")
        .expect("at the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_calls_quota_is_refused_before_its_body_and_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let per_second = 2;
    let gw = gateway(
        dir.path(),
        "calls-",
        ConfigLayer {
            client_max_calls_per_second: Some(per_second),
            ..Default::default()
        },
    )
    .await;
    let ch = gw.channel().await;
    let start = Instant::now();
    let (mut ok, mut refused) = (0u64, 0u64);
    for _ in 0..20 {
        match check(&ch, "tg").await {
            Ok(()) => ok += 1,
            Err(s) => {
                assert_quota_refusal(&s, "--client-max-calls-per-second", per_second, 1);
                refused += 1;
            }
        }
    }
    // With no tokens left, a stream is refused from its headers: no message is ever sent on
    // it, so the refusal did not wait for a body.
    let (_tx, rx) = tokio::sync::mpsc::channel::<CheckRequest>(1);
    let stream = ListingCheckClient::new(ch.clone())
        .check_stream(with_token(ReceiverStream::new(rx), "tg"))
        .await;
    let elapsed = start.elapsed().as_secs_f64();
    match stream {
        Ok(_) => ok += 1,
        Err(s) => {
            assert_quota_refusal(&s, "--client-max-calls-per-second", per_second, 1);
            refused += 1;
        }
    }
    // The burst (one second's worth), plus what came back while the calls ran.
    let most = per_second + (elapsed * per_second as f64).ceil() as u64;
    assert!(
        (per_second..=most).contains(&ok),
        "{ok} admitted in {elapsed:.3} s"
    );
    assert_eq!(ok + refused, 21);
    // The other caller has a bucket of its own.
    for _ in 0..per_second {
        check(&ch, "tf").await.expect("fair is within its quota");
    }
    // Every refusal is counted against the caller, none against the other.
    let metrics = gw.metrics_addr.expect("metrics");
    assert_eq!(
        metric(metrics, "cccgate_client_shed_total", "calls-greedy").await,
        refused
    );
    assert_eq!(
        metric(metrics, "cccgate_client_shed_total", "calls-fair").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_checks_quota_is_refused_whole_messages_while_another_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let per_second = 10;
    let gw = gateway(
        dir.path(),
        "checks-",
        ConfigLayer {
            client_max_checks_per_second: Some(per_second),
            max_batch: Some(10),
            ..Default::default()
        },
    )
    .await;
    let ch = gw.channel().await;
    let start = Instant::now();
    let mut answered = 0u64;
    let mut refused = 0u64;
    for _ in 0..8 {
        match batch(&ch, "tg", 4).await {
            // A message is answered whole or refused whole.
            Ok(n) => answered += n as u64,
            Err(s) => {
                assert_quota_refusal(&s, "--client-max-checks-per-second", per_second, 4);
                refused += 1;
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(answered % 4, 0);
    // The burst is 10 listings: two messages of 4 fit; a third, admitted from its headers with
    // 2 left, is answered too, into debt (-2), and the next calls are refused from their
    // headers until the debt is repaid. Never more than the burst plus the tokens that came
    // back plus one message of debt (the calls here are one at a time).
    let most = per_second as f64 + elapsed * per_second as f64 + 4.0;
    assert!(
        answered >= 8 && answered as f64 <= most,
        "{answered} listings answered in {elapsed:.3} s"
    );
    assert_eq!(answered / 4 + refused, 8);
    // The other caller's stream is admitted and answered in full meanwhile.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut out = ListingCheckClient::new(ch.clone())
        .check_stream(with_token(ReceiverStream::new(rx), "tf"))
        .await
        .expect("fair opens a stream")
        .into_inner();
    tx.send(CheckRequest {
        listings: (0..10).map(listing).collect(),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = out.message().await.expect("ok").expect("an answer");
    assert_eq!(r.results.len(), 10);
    // A stream message over the quota ends that caller's stream with the refusal.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let over: Result<(), Status> = tokio::time::timeout(Duration::from_secs(30), async {
        let mut out = ListingCheckClient::new(ch.clone())
            .check_stream(with_token(ReceiverStream::new(rx), "tf"))
            .await?
            .into_inner();
        loop {
            tx.send(CheckRequest {
                listings: (0..10).map(listing).collect(),
                ..Default::default()
            })
            .await
            .map_err(|_| Status::internal("stream closed"))?;
            out.message().await?;
        }
    })
    .await
    .expect("the quota ends the stream within 30 s");
    let s: Status = over.unwrap_err();
    assert_quota_refusal(&s, "--client-max-checks-per-second", per_second, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_over_its_bytes_quota_is_read_at_its_rate_never_refused_and_no_other_waits() {
    let dir = tempfile::tempdir().unwrap();
    let per_second: u64 = 256 * 1024;
    let gw = gateway(
        dir.path(),
        "bytes-",
        ConfigLayer {
            client_max_bytes_per_second: Some(per_second),
            ..Default::default()
        },
    )
    .await;
    let metrics = gw.metrics_addr.expect("metrics");
    let (greedy, fair) = (gw.channel().await, gw.channel().await);
    // Eight messages of 2,000 listings with 100-byte ids, ~1.8 MB: seven seconds of the quota.
    let msg = CheckBatchRequest {
        listings: (0..2_000)
            .map(|i| Listing {
                listing_id: format!("{i:0>100}"),
                merchant_id: "M1".into(),
                ..Default::default()
            })
            .collect(),
        min_snapshot_sequence: 0,
    };
    let sent = 8 * prost::Message::encoded_len(&msg) as u64;
    let start = Instant::now();
    let greedy_calls = tokio::spawn(async move {
        for _ in 0..8 {
            let r = ListingCheckClient::new(greedy.clone())
                .check_batch(with_token(msg.clone(), "tg"))
                .await?;
            assert_eq!(r.into_inner().results.len(), 2_000);
        }
        Ok::<_, Status>(())
    });
    // Its connection waits for its bytes quota...
    let waits = "cccgate_client_read_waits_total";
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(metrics, waits, "bytes-greedy").await == 0 {
        assert!(
            Instant::now() < deadline,
            "greedy never waited for its bytes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // ...while another caller's connection is read and answered, and never waits.
    for _ in 0..20 {
        check(&fair, "tf").await.expect("fair is read meanwhile");
    }
    assert_eq!(metric(metrics, waits, "bytes-fair").await, 0);
    // What the gateway has read of greedy never runs ahead of the quota: a second's burst,
    // the rate since the start, and the one read that took it into debt (at most one HTTP/2
    // frame's buffer). Unread, the rest waits in the kernel's buffers, not the gateway's.
    let read_bytes = "cccgate_client_read_bytes_total";
    let one_read = 256 * 1024;
    for _ in 0..5 {
        let read = metric(metrics, read_bytes, "bytes-greedy").await;
        let most = per_second as f64 * (1.0 + start.elapsed().as_secs_f64()) + one_read as f64;
        assert!(
            (read as f64) <= most,
            "{read} bytes read in {:?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Every message of greedy is answered, none refused: slowed to its quota's rate.
    tokio::time::timeout(Duration::from_secs(120), greedy_calls)
        .await
        .expect("greedy's calls end")
        .unwrap()
        .expect("greedy's messages are answered, not refused");
    let elapsed = start.elapsed().as_secs_f64();
    let read = metric(metrics, read_bytes, "bytes-greedy").await;
    // All of it read but what came in with the first call's headers, before its caller was
    // known (at most one read).
    assert!(read + one_read >= sent, "{read} bytes read, {sent} sent");
    let least = (read - per_second - one_read) as f64 / per_second as f64;
    assert!(
        elapsed >= least,
        "{read} bytes read in {elapsed:.2} s, faster than the quota allows ({least:.2} s)"
    );
    assert_eq!(
        metric(metrics, "cccgate_client_shed_total", "bytes-greedy").await,
        0
    );

    // An HTTP/JSON call on the same port is metered the same way: its caller's bytes read grow
    // by at least its body (the read of its own headers aside).
    let before = metric(metrics, read_bytes, "bytes-fair").await;
    let body = serde_json::json!({
        "listings": (0..2_000)
            .map(|i| serde_json::json!({"listing_id": format!("{i:0>100}"), "merchant_id": "M1"}))
            .collect::<Vec<_>>()
    })
    .to_string();
    let addr = gw.addr;
    let (status, answer) = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let head = format!(
            "POST /v1/check:batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tf\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body.as_bytes()).unwrap();
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, text.len())
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{answer} bytes of answer");
    let after = metric(metrics, read_bytes, "bytes-fair").await;
    assert!(
        after >= before + 2_000 * 100,
        "HTTP/JSON: {} bytes read for a body of over 200,000",
        after - before
    );
}
