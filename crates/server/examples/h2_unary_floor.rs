//! The floor of a unary gRPC call on the HTTP/2 stack the gateway runs on (hyper 1 and h2,
//! through hyper-util's auto builder, on a 2-worker tokio runtime, as `cccgate serve`), with
//! none of the gateway's work: every POST is read to its end and answered with a fixed gRPC
//! message (HEADERS, one DATA of a 60-byte message, trailers `grpc-status: 0`), the frames a
//! `Check` answer is made of. Issue #12's unary measurements compare `cccgate serve` with this
//! server under the same `h2load`, to tell what a call costs in hyper/h2 alone from what the
//! gateway's layers and check add, and what one change of the serving path would win:
//!
//! `--exec tokio`: hyper spawns a task for every request (what tonic's server does);
//! `--exec inline`: the request's future is polled once, in the connection's own task, and
//! spawned only if it is not finished (correct: a spawned task is polled again at once, so a
//! wake-up registered during the first poll cannot be lost);
//! `--exec tonic`: the same fixed answer served by tonic's `Server` with the gateway's
//! settings (per-connection concurrency limit and load shedding, request timeout, keepalive,
//! HTTP/1 accepted, at most 256 streams a connection), i.e. everything of `cccgate serve`'s
//! serving path but the gateway's own service;
//! `--exec tonic-grpc`: as `tonic`, the answer through tonic's own unary handler
//! (`tonic::server::Grpc::unary`, as generated services and the gateway's `Check` use) with a
//! codec passing bytes through: what tonic's gRPC layer adds over the server.
//!
//! ```sh
//! cargo build --release -p cccgate-server --example h2_unary_floor
//! target/release/examples/h2_unary_floor --listen 127.0.0.1:50099 --exec inline
//! h2load -d check.bin -H 'content-type: application/grpc' -H 'te: trailers' \
//!     -n 60000 -c 50 -m 1 -t 2 http://127.0.0.1:50099/cccgate.v1.ListingCheck/Check
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;

/// Polls a request's future once where hyper hands it over (the connection's task); spawns it
/// only if it is still pending.
#[derive(Clone, Copy, Debug)]
struct InlineFirst;

impl<F> hyper::rt::Executor<F> for InlineFirst
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let mut fut = Box::pin(fut);
        if fut
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending()
        {
            tokio::spawn(fut);
        }
    }
}

/// A fixed gRPC answer: one message, then `grpc-status: 0`.
#[derive(Debug)]
struct Answer(Option<Bytes>, bool);

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(data) = self.0.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if !self.1 {
            self.1 = true;
            let mut trailers = http::HeaderMap::new();
            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        Poll::Ready(None)
    }
    fn is_end_stream(&self) -> bool {
        self.0.is_none() && self.1
    }
}

async fn answer(req: Request<Incoming>, message: Bytes) -> Result<Response<Answer>, Infallible> {
    // Read the request to its end, as a unary call does.
    let _ = req.into_body().collect().await;
    let mut resp = Response::new(Answer(Some(message), false));
    resp.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/grpc"),
    );
    Ok(resp)
}

/// The fixed answer as a tonic service, for `--exec tonic` (written out directly) and
/// `--exec tonic-grpc` (`grpc`: through tonic's own unary handler, `Grpc::unary`, as
/// generated code and the gateway use: the request decoded through tonic's `Streaming`, the
/// answer encoded through its `EncodeBody`, with a codec that passes bytes through).
#[derive(Clone, Debug)]
struct Fixed {
    message: Bytes,
    grpc: bool,
}

impl tonic::server::NamedService for Fixed {
    const NAME: &'static str = "cccgate.v1.ListingCheck";
}

impl tower_service::Service<http::Request<tonic::body::Body>> for Fixed {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let message = self.message.clone();
        if self.grpc {
            // The message without its 5-byte gRPC frame header: tonic frames it.
            let message = message.slice(5..);
            return Box::pin(async move {
                Ok(tonic::server::Grpc::new(BytesCodec)
                    .unary(FixedUnary(message), req)
                    .await)
            });
        }
        Box::pin(async move {
            let _ = req.into_body().collect().await;
            let mut resp =
                http::Response::new(tonic::body::Body::new(Answer(Some(message), false)));
            resp.headers_mut().insert(
                "content-type",
                http::HeaderValue::from_static("application/grpc"),
            );
            Ok(resp)
        })
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct BytesCodec;

impl tonic::codec::Codec for BytesCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;
    fn encoder(&mut self) -> BytesCodec {
        BytesCodec
    }
    fn decoder(&mut self) -> BytesCodec {
        BytesCodec
    }
}

impl tonic::codec::Encoder for BytesCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for BytesCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        use bytes::Buf as _;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

struct FixedUnary(Bytes);

impl tonic::server::UnaryService<Bytes> for FixedUnary {
    type Response = Bytes;
    type Future = std::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;
    fn call(&mut self, _req: tonic::Request<Bytes>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(self.0.clone())))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Exec {
    Tokio,
    Inline,
    Tonic,
    TonicGrpc,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut listen = "127.0.0.1:50099".to_string();
    let mut exec = Exec::Tokio;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next().as_deref()) {
            ("--listen", Some(v)) => listen = v.to_string(),
            ("--exec", Some("tokio")) => exec = Exec::Tokio,
            ("--exec", Some("inline")) => exec = Exec::Inline,
            ("--exec", Some("tonic")) => exec = Exec::Tonic,
            ("--exec", Some("tonic-grpc")) => exec = Exec::TonicGrpc,
            _ => {
                return Err(
                    "usage: h2_unary_floor [--listen ADDR] [--exec tokio|inline|tonic|tonic-grpc]"
                        .into(),
                );
            }
        }
    }
    // A gRPC frame of a 60-byte message, about the size of a lean `Check` answer.
    let mut framed = vec![0u8, 0, 0, 0, 60];
    framed.extend_from_slice(&[0x0a; 60]);
    let message = Bytes::from(framed);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        eprintln!("h2_unary_floor on {} ({exec:?})", listener.local_addr()?);
        if exec == Exec::Tonic || exec == Exec::TonicGrpc {
            // `cccgate serve`'s defaults (crates/server/src/config.rs, lib.rs).
            use futures::StreamExt as _;
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|r| {
                r.and_then(|tcp| {
                    tcp.set_nodelay(true)?;
                    Ok(tcp)
                })
            });
            tonic::transport::Server::builder()
                .concurrency_limit_per_connection(512)
                .load_shed(true)
                .max_concurrent_streams(Some(256))
                .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
                .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
                .timeout(std::time::Duration::from_secs(10))
                .accept_http1(true)
                .add_service(Fixed {
                    message,
                    grpc: exec == Exec::TonicGrpc,
                })
                .serve_with_incoming(incoming)
                .await?;
            return Ok(());
        }
        let inline = exec == Exec::Inline;
        loop {
            let (tcp, _) = listener.accept().await?;
            tcp.set_nodelay(true)?;
            let message = message.clone();
            let svc = hyper::service::service_fn(move |req| answer(req, message.clone()));
            tokio::spawn(async move {
                let io = TokioIo::new(tcp);
                let _ = if inline {
                    Builder::new(InlineFirst).serve_connection(io, svc).await
                } else {
                    Builder::new(TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await
                };
            });
        }
    })
}
