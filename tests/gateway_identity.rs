//! Caller identity on the public plane: bearer tokens (`--auth-tokens`), re-read when the file
//! changes; the caller's name in the decision log and in per-caller quotas; health and
//! reflection open to all.

use std::path::Path;
use std::time::Duration;

use cccgate_core::Status as CertStatus;
use cccgate_e2e::gateway::{TestGateway, record, test_config_with, write_snapshot};
use cccgate_proto::v1::listing_check_client::ListingCheckClient;
use cccgate_proto::v1::{CheckRequest, CheckResponse, Listing, ReloadRequest};
use cccgate_server::ConfigLayer;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Request, Status, Streaming};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn line(name: &str, token: &str) -> String {
    let hex: String = Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{name} {hex}\n")
}

fn one(id: &str) -> CheckRequest {
    CheckRequest {
        listing: Some(Listing {
            listing_id: id.into(),
            merchant_id: "M1".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn with_token<T>(msg: T, token: Option<&str>) -> Request<T> {
    let mut req = Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    req
}

async fn check(channel: &Channel, token: Option<&str>) -> Result<CheckResponse, Status> {
    ListingCheckClient::new(channel.clone())
        .check(with_token(one("L1"), token))
        .await
        .map(tonic::Response::into_inner)
}

async fn open_stream(
    channel: &Channel,
    token: &str,
) -> Result<(mpsc::Sender<CheckRequest>, Streaming<CheckResponse>), Status> {
    let (tx, rx) = mpsc::channel(4);
    let out = ListingCheckClient::new(channel.clone())
        .check_stream(with_token(ReceiverStream::new(rx), Some(token)))
        .await?
        .into_inner();
    Ok((tx, out))
}

async fn gateway(dir: &Path, layer: ConfigLayer) -> TestGateway {
    write_snapshot(dir, 10, &[record(1, CertStatus::Valid, 901, &["X1"])]);
    let gw = TestGateway::start(test_config_with(Some(dir), layer), true).await;
    gw.admin_client()
        .await
        .reload(ReloadRequest {})
        .await
        .expect("Reload");
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_name_callers_who_appear_in_the_decision_log_and_the_file_is_re_read() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    let log = dir.path().join("decisions.jsonl");
    std::fs::write(
        &tokens,
        format!(
            "# marketplaces\n{}{}",
            line("shop-a", "ta"),
            line("shop-b", "tb")
        ),
    )
    .unwrap();
    let gw = gateway(
        dir.path(),
        ConfigLayer {
            auth_tokens: Some(tokens.clone()),
            decision_log: Some(log.clone()),
            ..Default::default()
        },
    )
    .await;
    let ch = gw.channel().await;
    for token in [None, Some("nope"), Some("")] {
        let err = check(&ch, token).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{token:?}");
        assert!(err.message().contains("Bearer"), "{}", err.message());
    }
    check(&ch, Some("ta")).await.expect("shop-a is known");
    check(&ch, Some("tb")).await.expect("shop-b is known");
    // Health stays open.
    HealthClient::new(ch.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health needs no token");

    // Rotation: shop-a's token is replaced; the old one stops working, the new one works.
    std::fs::write(
        &tokens,
        format!("{}{}", line("shop-a", "ta-2"), line("shop-b", "tb")),
    )
    .unwrap();
    let mut rotated = false;
    for _ in 0..100 {
        if check(&ch, Some("ta-2")).await.is_ok() {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "the new token was not accepted within 5 s");
    assert_eq!(
        check(&ch, Some("ta")).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // Metrics carry the caller's name.
    let page = http_get(gw.metrics_addr.expect("metrics"), "/metrics").await;
    for series in [
        "cccgate_client_listings_total{client=\"shop-a\"}",
        "cccgate_client_listings_total{client=\"shop-b\"}",
        "cccgate_unauthenticated_total",
    ] {
        assert!(page.contains(series), "{series} missing from\n{page}");
    }

    gw.stop().await.expect("stops");
    let text = std::fs::read_to_string(&log).unwrap();
    let clients: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["client"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(clients.contains(&"shop-a".to_owned()), "{text}");
    assert!(clients.contains(&"shop-b".to_owned()), "{text}");
    assert!(
        clients.iter().all(|c| c == "shop-a" || c == "shop-b"),
        "{text}"
    );
}

#[tokio::test]
async fn one_caller_cannot_hold_every_stream() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("{}{}", line("shop-a", "ta"), line("shop-b", "tb")),
    )
    .unwrap();
    let gw = gateway(
        dir.path(),
        ConfigLayer {
            auth_tokens: Some(tokens),
            client_max_open_streams: Some(3),
            max_open_streams: Some(16),
            ..Default::default()
        },
    )
    .await;
    // shop-a holds three streams over three connections: its share.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            open_stream(&gw.channel().await, "ta")
                .await
                .expect("within the share"),
        );
    }
    let err = open_stream(&gw.channel().await, "ta")
        .await
        .map(drop)
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains("caller"), "{}", err.message());
    // shop-b still streams.
    let (tx, mut out) = open_stream(&gw.channel().await, "tb")
        .await
        .expect("shop-b opens");
    tx.send(one("B1")).await.unwrap();
    let r = out.message().await.expect("ok").expect("an answer");
    assert_eq!(r.result.unwrap().listing_id, "B1");
    drop(held);
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
