//! A message over `--max-message-bytes` is refused from its 5-byte gRPC header, before its
//! bytes are buffered: the gateway answers while the body is still open and most of the
//! message never sent. A raw HTTP/2 client sends the header (announcing 1 GiB) and a few
//! bytes, then waits for the answer without sending more, or ending the body.

use std::time::Duration;

use bytes::Bytes;
use cccgate_core::Status as CertStatus;
use cccgate_e2e::gateway::{Serving, record};
use tonic::codegen::http;

async fn answer_to_header_only(addr: std::net::SocketAddr, path: &str) -> (String, String) {
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
    let mut first = vec![0u8];
    first.extend_from_slice(&(1u32 << 30).to_be_bytes());
    first.extend_from_slice(&[0x0a, 0x00, 0x0a, 0x00]);
    body.send_data(Bytes::from(first), false).unwrap();
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
    (get("grpc-status"), get("grpc-message"))
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
        let (status, message) = answer_to_header_only(addr, path).await;
        // RESOURCE_EXHAUSTED (8) or OUT_OF_RANGE (11): refused for its size, not answered.
        assert!(
            status == "8" || status == "11",
            "{path}: grpc-status {status:?} ({message})"
        );
        assert_ne!(status, "0", "{path}");
    }
    serving.stop().await.unwrap();
}
