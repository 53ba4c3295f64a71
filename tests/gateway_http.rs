//! HTTP/JSON on the public plane (spec/ops.md), end to end: the real gateway on
//! `127.0.0.1:0`, called with curl, with Node's `fetch` (`examples/node/fetch_client.mjs`) and
//! with a Node gRPC client (`examples/node/grpc_client.mjs`, `@grpc/grpc-js`); each answer
//! must equal the Rust gRPC client's, listing by listing, for every rule of the decision table
//! and a bad listing. Then the refusals: each limit of the gRPC path, answered as JSON with
//! the HTTP status of the contract, before the work it bounds.
//!
//! The Node clients need `npm ci` in `examples/node` (see `cccgate_e2e::node`): without it
//! the Node part is skipped, unless `CI` is set.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cccgate_core::{CertificateRecord, Status};
use cccgate_e2e::gateway::{TestGateway, cert_number, record, test_config_with, write_snapshot};
use cccgate_e2e::node::{node_dir, run_bounded, run_node};
use cccgate_proto::v1::listing_result::Outcome;
use cccgate_proto::v1::{
    CheckBatchRequest, CheckRequest, Decision, Listing, ListingResult, Reason, ReloadRequest,
};
use cccgate_server::ConfigLayer;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SEQUENCE: u64 = 31;
const EVENT_TIME: &str = "2026-11-27T10:00:00+08:00";
const TOKEN: &str = "s3cret-token";

fn records() -> Vec<CertificateRecord> {
    vec![
        record(1, Status::Valid, 901, &["X1-2026", "X1 Carbon"]),
        record(2, Status::Suspended, 901, &[]),
        record(3, Status::Revoked, 901, &[]),
        record(4, Status::Cancelled, 901, &[]),
        record(5, Status::Expired, 901, &[]),
        record(6, Status::Valid, 1606, &["P1"]),
    ]
}

/// One listing per rule of the table (as JSON, in both name styles) and a bad one.
fn listings() -> Vec<Value> {
    let n = |s: u32| cert_number(s).to_string();
    let typed = {
        // As a merchant types it: prefix, dashes.
        let d = n(1);
        format!(
            "CCC: {}-{}-{}-{}",
            &d[0..4],
            &d[4..8],
            &d[8..12],
            &d[12..16]
        )
    };
    let l = |id: &str, code: &str, cert: &str, model: &str| {
        json!({"listingId": id, "merchantId": "M1", "productCode": code,
               "certificateNumber": cert, "model": model, "eventTime": EVENT_TIME})
    };
    vec![
        l("not-in-catalogue", "", "", ""),
        l("self-declared", "1101", "", ""),
        l("missing", "0901", "", ""),
        l("malformed", "0901", "12-34", ""),
        l("not-found", "0901", &n(99), ""),
        l("suspended", "0901", &n(2), ""),
        l("revoked", "0901", &n(3), ""),
        l("cancelled", "0901", &n(4), ""),
        l("expired", "0901", &n(5), ""),
        l("mismatch", "0901", &n(6), ""),
        l("model", "0901", &n(1), "Z9"),
        // proto field names are accepted too.
        json!({"listing_id": "valid", "merchant_id": "M1", "product_code": "0901",
               "certificate_number": typed, "model": "x1 carbon", "event_time": EVENT_TIME}),
        // No merchant: a bad listing.
        json!({"listingId": "bad", "productCode": "0901", "eventTime": EVENT_TIME}),
    ]
}

fn wire(v: &Value) -> Listing {
    let f = |camel: &str, proto: &str| {
        v.get(camel)
            .or_else(|| v.get(proto))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    Listing {
        listing_id: f("listingId", "listing_id"),
        merchant_id: f("merchantId", "merchant_id"),
        product_code: f("productCode", "product_code"),
        certificate_number: f("certificateNumber", "certificate_number"),
        model: f("model", "model"),
        event_time: f("eventTime", "event_time"),
    }
}

/// A gRPC result as the proto3 JSON the HTTP side must give (the fields compared).
fn grpc_result(r: &ListingResult) -> Value {
    match &r.outcome {
        Some(Outcome::Verdict(v)) => json!({
            "listingId": r.listing_id,
            "decision": Decision::try_from(v.decision).unwrap().as_str_name(),
            "reason": Reason::try_from(v.reason).unwrap().as_str_name(),
            "snapshotSequence": v.snapshot_sequence.to_string(),
            "certificate": v.certificate.as_ref().map(|c| c.number.clone()),
            "expiryDate": v.certificate.as_ref().map(|c| c.expiry_date.clone()),
        }),
        Some(Outcome::Error(e)) => json!({"listingId": r.listing_id, "errorField": e.field}),
        None => json!(null),
    }
}

/// The same fields of an HTTP/JSON (or Node gRPC) result.
fn json_result(r: &Value) -> Value {
    let id = r["listingId"].as_str().unwrap_or("");
    if let Some(e) = r.get("error") {
        return json!({"listingId": id, "errorField": e["field"]});
    }
    let v = &r["verdict"];
    json!({
        "listingId": id,
        "decision": v["decision"],
        "reason": v["reason"],
        "snapshotSequence": v["snapshotSequence"],
        "certificate": v["certificate"].get("number"),
        "expiryDate": v["certificate"].get("expiryDate"),
    })
}

fn tokens_file(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tokens");
    let hex: String = Sha256::digest(TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::write(&path, format!("marketplace-a {hex}\n")).unwrap();
    path
}

async fn serving(dir: &Path, layer: ConfigLayer) -> TestGateway {
    write_snapshot(dir, SEQUENCE, &records());
    let gw = TestGateway::start(test_config_with(Some(dir), layer), false).await;
    let r = gw
        .admin_client()
        .await
        .reload(ReloadRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.snapshot_sequence, SEQUENCE, "{}", r.message);
    gw
}

/// `curl` POSTs `body` to `url` with `headers`; returns the status and the JSON answer.
fn curl(url: &str, headers: &[&str], body: &str) -> (u16, Value) {
    let mut cmd = Command::new("curl");
    cmd.args([
        "-sS",
        "--max-time",
        "10",
        "-X",
        "POST",
        "-w",
        "\n%{http_code}",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.args(["--data-binary", body, url]);
    let out = run_bounded(&mut cmd, Duration::from_secs(15));
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (json, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}")),
    )
}

const JSON: &str = "content-type: application/json";

/// A gRPC request with the test token.
fn auth<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_answers_as_grpc_does_with_curl_fetch_and_a_node_grpc_client() {
    let dir = tempfile::tempdir().unwrap();
    let gw = serving(
        dir.path(),
        ConfigLayer {
            auth_tokens: Some(tokens_file(dir.path())),
            ..Default::default()
        },
    )
    .await;
    let listings = listings();

    // The gRPC answers, the reference.
    let mut client = gw.check_client().await;
    let mut grpc_one = Vec::new();
    for l in &listings {
        let r = client
            .check(auth(CheckRequest {
                listing: Some(wire(l)),
                ..Default::default()
            }))
            .await;
        grpc_one.push(match r {
            Ok(r) => grpc_result(r.get_ref().result.as_ref().unwrap()),
            Err(s) => {
                assert_eq!(s.code(), tonic::Code::InvalidArgument);
                json!({"status": 400, "field": s.metadata().get("cccgate-field").unwrap().to_str().unwrap()})
            }
        });
    }
    let grpc_batch: Vec<Value> = client
        .check_batch(auth(CheckBatchRequest {
            listings: listings.iter().map(wire).collect(),
            min_snapshot_sequence: 0,
        }))
        .await
        .unwrap()
        .into_inner()
        .results
        .iter()
        .map(grpc_result)
        .collect();
    // Every rule of the table is reached once, and the bad listing is an error entry.
    let reasons: std::collections::BTreeSet<_> = grpc_batch
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert_eq!(reasons.len(), 12, "{reasons:?}");
    assert_eq!(grpc_batch[12]["errorField"], "merchant_id");

    // curl.
    let base = format!("http://{}", gw.addr);
    let bearer = format!("authorization: Bearer {TOKEN}");
    for (l, want) in listings.iter().zip(&grpc_one) {
        let (status, body) = curl(
            &format!("{base}/v1/check"),
            &[JSON, &bearer],
            &json!({"listing": l}).to_string(),
        );
        if status == 200 {
            assert_eq!(body["snapshotSequence"], SEQUENCE.to_string());
            assert_eq!(body["snapshotContentId"].as_str().unwrap().len(), 32);
            assert_eq!(&json_result(&body["result"]), want, "{l}");
        } else {
            assert_eq!(json!({"status": status, "field": body["field"]}), *want);
            assert_eq!(body["code"], "INVALID_ARGUMENT");
            assert!(
                body["message"].as_str().unwrap().contains("merchant_id"),
                "{body}"
            );
        }
    }
    let (status, body) = curl(
        &format!("{base}/v1/check:batch"),
        &[JSON, &bearer],
        &json!({"listings": listings}).to_string(),
    );
    assert_eq!(status, 200, "{body}");
    let http_batch: Vec<Value> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(json_result)
        .collect();
    assert_eq!(http_batch, grpc_batch);

    // Node: fetch, and @grpc/grpc-js.
    let Some(node) = node_dir("examples/node") else {
        return;
    };
    let file = dir.path().join("listings.json");
    std::fs::write(&file, serde_json::to_string(&listings).unwrap()).unwrap();
    let (base, addr) = (base.clone(), gw.addr.to_string());
    let (fetched, node_grpc) = tokio::task::spawn_blocking(move || {
        let file = file.to_str().unwrap();
        let run = |script: &str, target: &str| {
            let out = run_node(
                &node,
                script,
                &[target, file, "--token", TOKEN],
                Duration::from_secs(30),
            );
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::from_slice::<Value>(&out.stdout).unwrap()
        };
        (
            run("fetch_client.mjs", &base),
            run("grpc_client.mjs", &addr),
        )
    })
    .await
    .unwrap();
    for (i, want) in grpc_one.iter().enumerate() {
        let got = &fetched["check"][i];
        if got["status"] == 200 {
            assert_eq!(&json_result(&got["body"]["result"]), want);
        } else {
            assert_eq!(got["status"], 400);
            assert_eq!(got["body"]["field"], want["field"]);
        }
        let got = &node_grpc["check"][i];
        match got.get("error") {
            Some(e) => {
                assert_eq!(e["code"], "INVALID_ARGUMENT", "{got}");
                assert_eq!(want["status"], 400, "{got}");
            }
            None => assert_eq!(&json_result(&got["result"]), want, "{got}"),
        }
    }
    assert_eq!(fetched["batch"]["status"], 200);
    let fetched_batch: Vec<Value> = fetched["batch"]["body"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(json_result)
        .collect();
    assert_eq!(fetched_batch, grpc_batch);
    let node_batch: Vec<Value> = node_grpc["batch"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(json_result)
        .collect();
    assert_eq!(node_batch, grpc_batch);
    gw.stop().await.unwrap();
}

/// Sends `head` (and `body`) on a new connection and reads the whole answer.
fn raw_http(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String, Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    // The gateway may answer (and close) before the body is all sent.
    let _ = s.write_all(body);
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // The body may be chunked: the JSON object is between the first '{' and the last '}'.
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, head.to_owned(), json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_refuses_with_the_contracts_statuses_before_the_work_they_bound() {
    let dir = tempfile::tempdir().unwrap();
    let gw = serving(
        dir.path(),
        ConfigLayer {
            auth_tokens: Some(tokens_file(dir.path())),
            max_batch: Some(3),
            max_message_bytes: Some(4096),
            // A 200-byte request costs 200 + 3 x 768 bytes: it fits; a 1,000-byte one does not.
            client_max_in_flight_bytes: Some(3000),
            ..Default::default()
        },
    )
    .await;
    let base = format!("http://{}", gw.addr);
    let check = format!("{base}/v1/check");
    let batch = format!("{base}/v1/check:batch");
    let bearer = format!("authorization: Bearer {TOKEN}");
    let nope = format!("{base}/v1/nope");
    let one = json!({"listing": listings()[11]}).to_string();
    assert!(one.len() < 300, "{}", one.len());

    // (url, headers, body, status, code, field)
    type Case<'a> = (&'a str, Vec<&'a str>, String, u16, &'a str, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (&check, vec![JSON], one.clone(), 401, "UNAUTHENTICATED", ""),
        (
            &check,
            vec![JSON, "authorization: Bearer nope"],
            one.clone(),
            401,
            "UNAUTHENTICATED",
            "",
        ),
        (
            &check,
            vec!["content-type: text/plain", &bearer],
            one.clone(),
            415,
            "INVALID_ARGUMENT",
            "",
        ),
        (
            &check,
            vec![JSON, &bearer],
            json!({"listing": {"listingId": "L9", "productCode": "0901"}}).to_string(),
            400,
            "INVALID_ARGUMENT",
            "merchant_id",
        ),
        (
            &check,
            vec![JSON, &bearer],
            json!({"listing": {"listingId": "L9", "modle": "X"}}).to_string(),
            400,
            "INVALID_ARGUMENT",
            "listing.modle",
        ),
        (
            &check,
            vec![JSON, &bearer],
            "{\"listing\": ".into(),
            400,
            "INVALID_ARGUMENT",
            "listing",
        ),
        (
            &batch,
            vec![JSON, &bearer],
            json!({"listings": [{}, {}, {}, {}]}).to_string(),
            400,
            "INVALID_ARGUMENT",
            "listings",
        ),
        (
            &check,
            vec![JSON, &bearer],
            json!({"listing": listings()[11], "minSnapshotSequence": "999"}).to_string(),
            412,
            "FAILED_PRECONDITION",
            "",
        ),
        (
            &check,
            vec![JSON, &bearer],
            json!({"listing": listings()[11], "pad": "x".repeat(1000)}).to_string(),
            429,
            "RESOURCE_EXHAUSTED",
            "",
        ),
        (
            &nope,
            vec![JSON, &bearer],
            one.clone(),
            404,
            "NOT_FOUND",
            "",
        ),
    ];
    for (url, headers, body, status, code, field) in cases {
        let (got, answer) = tokio::task::spawn_blocking({
            let (url, headers, body) = (
                url.to_owned(),
                headers.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                body.clone(),
            );
            move || {
                let h: Vec<&str> = headers.iter().map(String::as_str).collect();
                curl(&url, &h, &body)
            }
        })
        .await
        .unwrap();
        assert_eq!(got, status, "{url} {body}: {answer}");
        assert_eq!(answer["code"], code, "{answer}");
        assert_eq!(answer["field"], field, "{answer}");
        assert!(!answer["message"].as_str().unwrap().is_empty());
    }
    // The batch limit is named, as in gRPC.
    let (_, answer) = curl(
        &batch,
        &[JSON, &bearer],
        &json!({"listings": [{}, {}, {}, {}]}).to_string(),
    );
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 3"),
        "{answer}"
    );

    let addr = gw.addr;
    let (head, body_too_large, chunked) = tokio::task::spawn_blocking(move || {
        // A body declared at 1 GB is refused from its header: answered with nothing sent.
        let (status, head, body) = raw_http(
            addr,
            &format!(
                "POST /v1/check HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 authorization: Bearer {TOKEN}\r\ncontent-length: 1000000000\r\nconnection: close\r\n\r\n"
            ),
            b"",
        );
        // A chunked body with no declared size is charged at --max-message-bytes (6,400 bytes
        // with its listings: over this caller's 3,000) before a byte of it is read.
        let (chunked, _, chunked_body) = raw_http(
            addr,
            &format!(
                "POST /v1/check HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 authorization: Bearer {TOKEN}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            ),
            &[b"1000\r\n".as_slice(), &[b' '; 4096], b"\r\n0\r\n\r\n"].concat(),
        );
        ((status, head), body, (chunked, chunked_body))
    })
    .await
    .unwrap();
    assert_eq!(head.0, 413, "{}", head.1);
    assert_eq!(body_too_large["code"], "OUT_OF_RANGE");
    assert!(
        body_too_large["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 4096"),
        "{body_too_large}"
    );
    assert_eq!(chunked.0, 429, "{}", chunked.1);
    assert_eq!(chunked.1["code"], "RESOURCE_EXHAUSTED");

    // The refusals held nothing: a request that fits is answered at once.
    let (status, body) = curl(&check, &[JSON, &bearer], &one);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["verdict"]["reason"],
        "REASON_CERTIFICATE_VALID"
    );
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_message_limit_is_cut_off_and_no_snapshot_is_unavailable() {
    // No snapshot in the directory: checks answer 503, never a default verdict.
    let dir = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(
        test_config_with(
            Some(dir.path()),
            ConfigLayer {
                max_message_bytes: Some(4096),
                ..Default::default()
            },
        ),
        false,
    )
    .await;
    let addr = gw.addr;
    let (unavailable, too_long) = tokio::task::spawn_blocking(move || {
        let one = json!({"listing": listings()[11]}).to_string();
        let unavailable = curl(&format!("http://{addr}/v1/check"), &[JSON], &one);
        // 64 KiB sent in 4 KiB chunks against a 4,096-byte limit: reading stops at the limit.
        let chunk = [b"1000\r\n".as_slice(), &[b' '; 4096], b"\r\n"].concat();
        let body: Vec<u8> = std::iter::repeat_n(chunk, 16)
            .flatten()
            .chain(b"0\r\n\r\n".iter().copied())
            .collect();
        let too_long = raw_http(
            addr,
            "POST /v1/check:batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             transfer-encoding: chunked\r\nconnection: close\r\n\r\n",
            &body,
        );
        (unavailable, too_long)
    })
    .await
    .unwrap();
    assert_eq!(unavailable.0, 503, "{}", unavailable.1);
    assert_eq!(unavailable.1["code"], "UNAVAILABLE");
    assert_eq!(too_long.0, 413, "{}", too_long.1);
    assert_eq!(too_long.2["code"], "OUT_OF_RANGE");
    gw.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn millions_of_empty_listings_are_refused_at_the_batch_limit_in_bounded_memory() {
    // 16 MiB of `{}` listings (5.6 million): materialised, they would take over 1 GiB. The
    // parser refuses the 10,001st before it exists, so memory grows by the body and 10,000
    // listings at most.
    let dir = tempfile::tempdir().unwrap();
    let gw = serving(
        dir.path(),
        ConfigLayer {
            max_message_bytes: Some(16 << 20),
            ..Default::default()
        },
    )
    .await;
    let mut body = Vec::with_capacity(16 << 20);
    body.extend_from_slice(b"{\"listings\":[{}");
    while body.len() + 5 < 16 << 20 {
        body.extend_from_slice(b",{}");
    }
    body.extend_from_slice(b"]}");
    let listings = (body.len() - 14) / 3;
    let addr = gw.addr;
    let (before, _) = cccgate_e2e::raw::rss();
    cccgate_e2e::raw::reset_peak();
    let (status, _, answer) = tokio::task::spawn_blocking(move || {
        raw_http(
            addr,
            &format!(
                "POST /v1/check:batch HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            ),
            &body,
        )
    })
    .await
    .unwrap();
    let (_, peak) = cccgate_e2e::raw::rss();
    let growth = peak.saturating_sub(before) >> 20;
    eprintln!("{listings} empty listings in 16 MiB: peak growth {growth} MiB");
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "INVALID_ARGUMENT");
    assert_eq!(answer["field"], "listings");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("over the limit of 10000"),
        "{answer}"
    );
    // The body (16 MiB, held once by the client and once by the gateway) and 10,000 listings.
    assert!(growth <= 128, "grew {growth} MiB");
    gw.stop().await.unwrap();
}
