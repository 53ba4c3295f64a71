//! A message over `--max-message-bytes` is refused from its 5-byte gRPC header, before its
//! bytes are buffered; a CheckBatch message of more than `--max-batch` listings is refused as
//! soon as the listing over the limit arrives. Either way the gateway answers while the body
//! is still open and most of the message never sent: a raw HTTP/2 client sends the header and
//! the first bytes, then waits for the answer without sending more, or ending the body.

use std::time::Duration;

use bytes::Bytes;
use cccgate_core::Status as CertStatus;
use cccgate_e2e::gateway::{Serving, record};
use tonic::codegen::http;

/// Sends a gRPC header announcing `announced` bytes and then `first`, and waits for the
/// answer with the body left open.
async fn answer_to_first_bytes(
    addr: std::net::SocketAddr,
    path: &str,
    announced: u32,
    first: &[u8],
) -> (String, String) {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(req, false).unwrap();
    let mut data = vec![0u8];
    data.extend_from_slice(&announced.to_be_bytes());
    data.extend_from_slice(first);
    body.send_data(Bytes::from(data), false).unwrap();
    // The body stays open: an answer can only come from the header.
    let response = tokio::time::timeout(Duration::from_secs(30), response)
        .await
        .expect("answered within 30 s without the rest of the message")
        .unwrap();
    let headers = response.headers().clone();
    let mut recv = response.into_body();
    let trailers = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = recv.data().await {
            chunk.unwrap();
        }
        recv.trailers().await.unwrap()
    })
    .await
    .expect("the call ends within 30 s");
    let all = trailers.unwrap_or(headers);
    let get = |k: &str| {
        all.get(k)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    drop(body);
    (get("grpc-status"), percent_decoded(&get("grpc-message")))
}

/// `grpc-message` is percent-encoded on the wire.
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_size_limit_is_refused_from_its_header_before_its_body_arrives() {
    let serving = Serving::start(10, &[record(1, CertStatus::Valid, 901, &["X1"])]).await;
    let addr = serving.addr;
    for path in [
        "/cccgate.v1.ListingCheck/CheckBatch",
        "/cccgate.v1.ListingCheck/Check",
        "/cccgate.v1.ListingCheck/CheckStream",
    ] {
        let (status, message) =
            answer_to_first_bytes(addr, path, 1 << 30, &[0x0a, 0x00, 0x0a, 0x00]).await;
        // RESOURCE_EXHAUSTED (8) or OUT_OF_RANGE (11): refused for its size, not answered.
        assert!(
            status == "8" || status == "11",
            "{path}: grpc-status {status:?} ({message})"
        );
        assert_ne!(status, "0", "{path}");
    }
    serving.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_the_listing_limit_is_refused_as_it_arrives_before_the_rest_is_sent() {
    let serving = Serving::start(10, &[record(1, CertStatus::Valid, 901, &["X1"])]).await;
    // 8 MiB announced (within the size limit), the first 10,001 empty listings sent.
    let first = [0x0a_u8, 0x00].repeat(10_001);
    let (status, message) = answer_to_first_bytes(
        serving.addr,
        "/cccgate.v1.ListingCheck/CheckBatch",
        8 << 20,
        &first,
    )
    .await;
    assert_eq!(status, "3", "INVALID_ARGUMENT: {message}");
    assert!(
        message.contains("over the limit of 10000") && message.contains("as it arrived"),
        "{message}"
    );
    serving.stop().await.unwrap();
}

/// The send capacity a raw HTTP/2 client is given on a new stream, asking for 4 MiB: what the
/// gateway lets it send before reading (its stream window, within its connection window).
async fn send_capacity(addr: std::net::SocketAddr) -> usize {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // h2 buffers 400 KiB a stream by default: room for more, so the window is what limits.
    let (client, conn) = h2::client::Builder::new()
        .max_send_buffer_size(8 << 20)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = |path: &str| {
        http::Request::builder()
            .method("POST")
            .uri(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap()
    };
    // A first call answered: the gateway's SETTINGS are in force on the connection.
    let mut client = client.ready().await.unwrap();
    let (response, _) = client
        .send_request(request("/grpc.health.v1.Health/Check"), true)
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(30), response)
        .await
        .expect("health answered within 30 s");
    let mut client = client.ready().await.unwrap();
    let (_response, mut body) = client
        .send_request(request("/cccgate.v1.ListingCheck/CheckBatch"), false)
        .unwrap();
    body.reserve_capacity(4 << 20);
    tokio::time::timeout(
        Duration::from_secs(30),
        std::future::poll_fn(|cx| body.poll_capacity(cx)),
    )
    .await
    .expect("capacity within 30 s")
    .unwrap()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_may_send_one_stream_window_ahead_of_the_gateway_and_no_more() {
    let records = [record(1, CertStatus::Valid, 901, &["X1"])];
    // hyper's 1 MiB by default: what a refused 16 MiB message can still push at the gateway.
    let serving = Serving::start(10, &records).await;
    assert_eq!(send_capacity(serving.addr).await, 1 << 20);
    serving.stop().await.unwrap();
    let layer = cccgate_server::ConfigLayer {
        http2_stream_window_bytes: Some(64 * 1024),
        ..Default::default()
    };
    let serving = Serving::start_with(10, &records, layer).await;
    assert_eq!(send_capacity(serving.addr).await, 64 * 1024);
    serving.stop().await.unwrap();
}
