//! The two watch RPCs on the public plane: a codec that gives back each request message's
//! byte charge once decoded, and the stream services.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes};
use cccgate_proto::v1::{
    ChangeBatch, ListingError, ListingResult, WatchChangesRequest, WatchEvent,
    WatchListingsRequest, WatchListingsResponse,
};
use futures::{Stream, StreamExt};
use prost::Message;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::server::{Grpc, ServerStreamingService, StreamingService};
use tonic::{Request, Response, Status, Streaming};

use super::WatchHub;
use super::registry::{Outgoing, STREAM_QUEUE};
use crate::admission::Caller;
use crate::public::Charges;

/// A response message of a watch stream, as the encoder writes it.
trait Send2Wire: Send + 'static {
    fn write(self, dst: &mut EncodeBuf<'_>) -> Result<(), prost::EncodeError>;
}

impl Send2Wire for ChangeBatch {
    fn write(self, dst: &mut EncodeBuf<'_>) -> Result<(), prost::EncodeError> {
        self.encode(dst)
    }
}

impl Send2Wire for Outgoing {
    fn write(self, dst: &mut EncodeBuf<'_>) -> Result<(), prost::EncodeError> {
        match self {
            Outgoing::Message(m) => m.encode(dst),
            Outgoing::Encoded(bytes) => {
                bytes::BufMut::put_slice(dst, &bytes);
                Ok(())
            }
        }
    }
}

/// Responses as [`Send2Wire`] writes them (prost, or bytes already encoded), requests by
/// prost; each request message's byte charge (taken by the public plane
/// when its header arrived) is given back once it is decoded.
struct WatchCodec<E, D> {
    charges: Charges,
    _types: std::marker::PhantomData<fn(E, D)>,
}

struct WatchDecoder<D> {
    charges: Charges,
    _d: std::marker::PhantomData<fn(D)>,
}

struct WatchEncoder<E>(std::marker::PhantomData<fn(E)>);

impl<E, D> Codec for WatchCodec<E, D>
where
    E: Send2Wire,
    D: Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = D;
    type Encoder = WatchEncoder<E>;
    type Decoder = WatchDecoder<D>;

    fn encoder(&mut self) -> WatchEncoder<E> {
        WatchEncoder(std::marker::PhantomData)
    }

    fn decoder(&mut self) -> WatchDecoder<D> {
        WatchDecoder {
            charges: Arc::clone(&self.charges),
            _d: std::marker::PhantomData,
        }
    }
}

impl<D: Message + Default> Decoder for WatchDecoder<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        let bytes: Bytes = src.copy_to_bytes(src.remaining());
        let charge = self
            .charges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front();
        let msg = D::decode(bytes).map_err(|e| Status::invalid_argument(e.to_string()));
        drop(charge);
        msg.map(Some)
    }
}

impl<E: Send2Wire> Encoder for WatchEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.write(dst)
            .map_err(|e| Status::internal(format!("cannot encode the answer: {e}")))
    }
}

fn grpc<E, D>(charges: &Charges, max_message: usize) -> Grpc<WatchCodec<E, D>>
where
    E: Send2Wire,
    D: Message + Default + Send + 'static,
{
    Grpc::new(WatchCodec {
        charges: Arc::clone(charges),
        _types: std::marker::PhantomData,
    })
    .apply_max_message_size_config(Some(max_message), Some(max_message))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// `WatchChanges`. `slot` (the stream's admission) is held for the stream's life.
pub(crate) async fn watch_changes<B>(
    hub: Arc<WatchHub>,
    slot: Box<dyn std::any::Any + Send + Sync>,
    charges: &Charges,
    max_message: usize,
    req: http::Request<B>,
) -> http::Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send,
{
    struct Svc(Arc<WatchHub>, Option<Box<dyn std::any::Any + Send + Sync>>);
    impl ServerStreamingService<WatchChangesRequest> for Svc {
        type Response = ChangeBatch;
        type ResponseStream = BoxStream<ChangeBatch>;
        type Future = std::future::Ready<Result<Response<BoxStream<ChangeBatch>>, Status>>;

        fn call(&mut self, req: Request<WatchChangesRequest>) -> Self::Future {
            let slot = self.1.take();
            let out = self.0.feed.stream(req.into_inner().from_sequence).map(|s| {
                let s = s.map(move |m| {
                    let _held = &slot;
                    m
                });
                Response::new(Box::pin(s) as BoxStream<ChangeBatch>)
            });
            std::future::ready(out)
        }
    }
    grpc::<ChangeBatch, WatchChangesRequest>(charges, max_message)
        .server_streaming(Svc(hub, Some(slot)), req)
        .await
}

/// `WatchListings`. `slot` (the stream's admission) is held for the stream's life.
pub(crate) async fn watch_listings<B>(
    hub: Arc<WatchHub>,
    caller: Caller,
    slot: Box<dyn std::any::Any + Send + Sync>,
    charges: &Charges,
    max_message: usize,
    max_batch: usize,
    req: http::Request<B>,
) -> http::Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send,
{
    struct Svc {
        hub: Arc<WatchHub>,
        caller: Caller,
        slot: Option<Box<dyn std::any::Any + Send + Sync>>,
        max_batch: usize,
        lean: bool,
    }
    impl StreamingService<WatchListingsRequest> for Svc {
        type Response = Outgoing;
        type ResponseStream = BoxStream<Outgoing>;
        type Future = std::future::Ready<Result<Response<BoxStream<Outgoing>>, Status>>;

        fn call(&mut self, req: Request<Streaming<WatchListingsRequest>>) -> Self::Future {
            let (tx, rx) = tokio::sync::mpsc::channel(STREAM_QUEUE);
            let handle = self
                .hub
                .registry
                .open(self.caller.clone(), tx.clone(), self.lean);
            let registry = Arc::clone(&self.hub.registry);
            let id = handle.id;
            let max_batch = self.max_batch;
            let mut input = req.into_inner();
            // Requests are answered in order by one task; it ends with the request side (the
            // watches go on until the caller drops the call).
            let reader = tokio::spawn(async move {
                while let Some(msg) = input.next().await {
                    let msg = match msg {
                        Ok(m) => m,
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    };
                    if msg.add.len() > max_batch || msg.remove.len() > max_batch {
                        let e = ListingResult {
                            listing_id: String::new(),
                            outcome: Some(cccgate_proto::v1::listing_result::Outcome::Error(
                                ListingError {
                                    field: if msg.add.len() > max_batch {
                                        "add"
                                    } else {
                                        "remove"
                                    }
                                    .into(),
                                    message: format!(
                                        "{} adds and {} removes in one message, over the limit of {max_batch} each (--max-batch)",
                                        msg.add.len(),
                                        msg.remove.len()
                                    ),
                                },
                            )),
                        };
                        let resp = WatchListingsResponse {
                            results: vec![e],
                            snapshot_sequence: 0,
                            event: WatchEvent::Initial as i32,
                        };
                        if tx.send(Ok(resp.into())).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    if !msg.remove.is_empty() {
                        registry.remove(id, &msg.remove);
                    }
                    if !msg.add.is_empty() {
                        let r = Arc::clone(&registry);
                        let resp = tokio::task::spawn_blocking(move || r.add(id, &msg.add)).await;
                        let Ok(resp) = resp else { return };
                        if tx.send(Ok(resp.into())).await.is_err() {
                            return;
                        }
                    }
                }
            });
            let slot = self.slot.take();
            let guard = (handle, slot, AbortOnDrop(reader));
            let out = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
                let kill = Arc::clone(&guard.0.kill);
                tokio::select! {
                    m = rx.recv() => m.map(|m| (m, (rx, guard))),
                    () = kill.notified() => {
                        if guard.0.overflowed.load(Ordering::Acquire) {
                            let status = Status::resource_exhausted(format!(
                                "this stream left {STREAM_QUEUE} messages unread: watches ended; \
                                 reconnect and add the listings again"
                            ));
                            Some((Err(status), (rx, guard)))
                        } else {
                            None
                        }
                    }
                }
            });
            // After an overflow error, end.
            let out = out.scan(false, |ended, m| {
                if *ended {
                    return std::future::ready(None);
                }
                *ended = m.is_err();
                std::future::ready(Some(m))
            });
            std::future::ready(Ok(Response::new(Box::pin(out))))
        }
    }
    // `cccgate-answer: lean`: INITIAL and CHANGED verdicts without their certificate.
    let lean = crate::answer::is_lean(req.headers());
    grpc::<Outgoing, WatchListingsRequest>(charges, max_message)
        .streaming(
            Svc {
                hub,
                caller,
                slot: Some(slot),
                max_batch,
                lean,
            },
            req,
        )
        .await
}

/// Aborts the request reader when the stream is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
