//! A gRPC client that sends pre-encoded request bytes, for tests that attack the gateway with
//! messages a well-behaved client would never build (millions of empty listings), without
//! building them as structs in the test process.

use bytes::{Buf, BufMut, Bytes};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Sends and receives raw message bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// `CheckBatchRequest` bytes of `n` empty listings (2 bytes each on the wire).
pub fn empty_listings(n: usize) -> Bytes {
    let mut b = Vec::with_capacity(2 * n);
    for _ in 0..n {
        b.extend_from_slice(&[0x0a, 0x00]);
    }
    Bytes::from(b)
}

/// Calls `path` (e.g. `/cccgate.v1.ListingCheck/CheckBatch`) with `body` as the message.
pub async fn unary(
    channel: Channel,
    path: &'static str,
    body: Bytes,
    metadata: &[(&'static str, String)],
) -> Result<Bytes, Status> {
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = Request::new(body);
    for (k, v) in metadata {
        req.metadata_mut()
            .insert(*k, v.parse().expect("ASCII metadata"));
    }
    grpc.unary(req, PathAndQuery::from_static(path), RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// Resident memory of this process now and at its peak (`VmRSS`, `VmHWM`), in bytes.
pub fn rss() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Resets the peak resident memory (`VmHWM`) to the current one.
pub fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").expect("write /proc/self/clear_refs");
}
