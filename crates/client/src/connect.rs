//! Connections to a gateway and the raw-bytes gRPC calls the client makes over them.
//!
//! The client speaks `cccgate.v1.ListingCheck` through tonic's generic [`Grpc`] client with a
//! codec that moves bytes: requests are encoded by [`crate::wire::ChunkEncoder`] and responses
//! are handed back undecoded (a [`Bytes`] that shares the received buffer), to be read in place
//! by [`crate::wire::ResponseView`]. Several HTTP/2 connections spread the work of a fast
//! client over the runtime's threads; streams and calls are assigned to them round robin.

use std::time::Duration;

use prost::bytes::{Buf, BufMut, Bytes};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder, Streaming};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::wire::Rpc;

/// Largest response the client accepts (a chunk of 10,000 verdicts with certificates is a
/// few MB).
const MAX_MESSAGE: usize = 256 << 20;

/// A connection failure, naming the target.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL is not a valid endpoint.
    #[error("target {target:?} is not a valid URL: {source}")]
    BadTarget {
        /// The target as given.
        target: String,
        /// Why.
        source: tonic::transport::Error,
    },
    /// Nothing answered.
    #[error("cannot connect to {target}: {source}")]
    Connect {
        /// The target.
        target: String,
        /// Why.
        source: tonic::transport::Error,
    },
}

/// A codec that sends pre-encoded messages and returns the received ones as bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct RawCodec;

/// The encoder of [`RawCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RawEncoder;

/// The decoder of [`RawCodec`].
#[derive(Clone, Copy, Debug, Default)]
pub struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        // Shares the receive buffer: no copy.
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Connections to one gateway.
#[derive(Clone, Debug)]
pub struct Gateway {
    target: String,
    channels: Vec<Channel>,
}

impl Gateway {
    /// Opens `connections` HTTP/2 connections (at least one) to `target`
    /// (`http://host:port`), failing if the first cannot be made.
    pub async fn connect(target: &str, connections: usize) -> Result<Gateway, ConnectError> {
        let endpoint = endpoint(target)?;
        let mut channels = Vec::new();
        for _ in 0..connections.max(1) {
            let ch = endpoint
                .connect()
                .await
                .map_err(|source| ConnectError::Connect {
                    target: target.to_owned(),
                    source,
                })?;
            channels.push(ch);
        }
        Ok(Gateway {
            target: target.to_owned(),
            channels,
        })
    }

    /// Like [`Gateway::connect`], but connects on first use (and again after each loss),
    /// so a gateway that is down now can serve later calls.
    pub fn connect_lazy(target: &str, connections: usize) -> Result<Gateway, ConnectError> {
        let endpoint = endpoint(target)?;
        Ok(Gateway {
            target: target.to_owned(),
            channels: (0..connections.max(1))
                .map(|_| endpoint.connect_lazy())
                .collect(),
        })
    }

    /// The target URL.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// A client on connection `i` (modulo the number of connections).
    pub fn client(&self, i: usize) -> RawClient {
        let ch = self.channels[i % self.channels.len()].clone();
        RawClient {
            grpc: Grpc::new(ch)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        }
    }
}

fn endpoint(target: &str) -> Result<Endpoint, ConnectError> {
    let bad = |source| ConnectError::BadTarget {
        target: target.to_owned(),
        source,
    };
    Ok(Endpoint::from_shared(target.to_owned())
        .map_err(bad)?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5))
        // Large windows: a chunk of verdicts is hundreds of KB and several are in flight.
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        // Answers come in fewer, larger frames: less framing work on both sides.
        .max_frame_size(Some(1 << 20))
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10)))
}

/// A gRPC client that sends and receives raw message bytes.
#[derive(Clone, Debug)]
pub struct RawClient {
    grpc: Grpc<Channel>,
}

impl RawClient {
    /// One unary call (`Check` or `CheckBatch`): request bytes in, response bytes out.
    pub async fn unary(&mut self, rpc: Rpc, request: Bytes) -> Result<Bytes, Status> {
        self.ready().await?;
        let path = PathAndQuery::from_static(rpc.path());
        let resp = self
            .grpc
            .unary(tonic::Request::new(request), path, RawCodec)
            .await?;
        Ok(resp.into_inner())
    }

    /// Opens a `CheckStream`: a sender of request messages and the stream of responses (one
    /// per request, in order).
    pub async fn open_stream(&mut self) -> Result<CheckStream, Status> {
        self.ready().await?;
        let (tx, rx) = mpsc::channel(4);
        let path = PathAndQuery::from_static(Rpc::Stream.path());
        let resp = self
            .grpc
            .streaming(tonic::Request::new(ReceiverStream::new(rx)), path, RawCodec)
            .await?;
        Ok(CheckStream {
            tx,
            rx: resp.into_inner(),
        })
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.grpc
            .ready()
            .await
            .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))
    }
}

/// An open `CheckStream`.
#[derive(Debug)]
pub struct CheckStream {
    tx: mpsc::Sender<Bytes>,
    rx: Streaming<Bytes>,
}

impl CheckStream {
    /// Sends one request message and waits for its response.
    pub async fn call(&mut self, request: Bytes) -> Result<Bytes, Status> {
        if self.tx.send(request).await.is_err() {
            // The request side is gone: the call failed; the response stream says why.
            return Err(match self.rx.message().await {
                Err(s) => s,
                Ok(_) => Status::unavailable("the gateway closed the stream"),
            });
        }
        match self.rx.message().await? {
            Some(b) => Ok(b),
            None => Err(Status::unavailable(
                "the gateway ended the stream before answering",
            )),
        }
    }
}

/// Whether a failed call is worth retrying after a pause: the gateway is down, restarting,
/// overloaded or timed out, as opposed to refusing the request itself.
pub fn is_retryable(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
    )
}
