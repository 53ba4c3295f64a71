//! The public plane's `cccgate.v1.ListingCheck` service, routed by hand instead of through the
//! generated server, so that every limit applies before the work it bounds.
//!
//! # What happens to a call, in order
//!
//! 1. The caller is identified ([`crate::auth`]): with `--auth-tokens`, a bearer token is
//!    required (else UNAUTHENTICATED); otherwise the mTLS name, else `anonymous`.
//! 2. The caller's rate quotas ([`crate::rate`]) take one call and need one check left, before
//!    the body is read. A unary call takes a `--max-in-flight` permit; a stream takes a global, a per-caller and
//!    a per-connection stream slot. Not available: RESOURCE_EXHAUSTED with a retry hint.
//! 3. As each request message's 5-byte gRPC header arrives ([`BudgetBody`]), before its bytes
//!    are buffered, its cost ([`admission::message_cost`]) is taken from the global byte budget
//!    and the caller's share. Over either: RESOURCE_EXHAUSTED with a retry hint.
//! 4. The message is decoded by [`crate::wire`]: listings counted first, fields within limits;
//!    its listings are taken from the caller's checks quota before they are checked.
//! 5. A unary call is worked on in one of its caller's lanes ([`crate::lanes`]): a few of a
//!    caller's calls at once, the others parked. A CheckBatch or stream message waits for its
//!    caller's turn at the CPU ([`crate::fair`]): callers take turns by listings, so another
//!    caller's queued work delays it by about one quantum. A message of more than
//!    `--turn-listings` listings is checked in several turns, yielding the
//!    worker thread between them. (A Check, one listing, takes no turn.)
//! 6. The permit and the bytes travel with the message into the answer ([`Answer`]) and are
//!    given back only once the answer is encoded.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use dashmap::DashMap;
use futures::{Stream, StreamExt};
use http_body::Frame;
use metrics::Counter;
use tokio::sync::OwnedSemaphorePermit;
use tonic::body::Body;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::server::{Grpc, NamedService, StreamingService, UnaryService};
use tonic::{Request, Response, Status, Streaming};

use crate::admission::{self, Admission, Caller, Held};
use crate::answer;
use crate::arriving::ListingCounter;
use crate::auth::{self, TokenAuth};
use crate::fair::FairGate;
use crate::lanes::Lanes;
use crate::metrics::Rpc;
use crate::rate::Rates;
use crate::service::{CheckContext, CheckError, GaugeGuard};
use crate::tarpit::{OVERSIZED_STRIKES, Strikes};
use crate::tls::ConnInfo;
use crate::wire::{self, Counted, Decoded, Shape, WireError};

/// What a message holds while it is in progress: given back when the answer is encoded.
#[derive(Debug, Default)]
pub(crate) struct Hold {
    _bytes: Option<(Held<()>, Held<Caller>)>,
    _permit: Option<CallPermit>,
    _gauge: Option<GaugeGuard>,
}

/// A unary call's place among the calls in progress: one of `--max-in-flight`, and one of its
/// caller's share of them ([`client_max_in_flight`]).
#[derive(Debug)]
pub(crate) struct CallPermit {
    _global: OwnedSemaphorePermit,
    _client: Held<Caller>,
}

/// Calls one caller may have in progress: half of `--max-in-flight`, so that no caller holds
/// every permit (its calls waiting for their lane, [`crate::lanes`], hold theirs).
pub(crate) fn client_max_in_flight(max_in_flight: usize) -> usize {
    (max_in_flight / 2).max(1)
}

/// A decoded request message and what it holds.
#[derive(Debug)]
pub(crate) struct Inbound {
    /// Counted, not yet parsed: the handler parses it in turns ([`parsed`]).
    msg: Result<Counted, WireError>,
    hold: Hold,
}

/// An answer, already in its protobuf bytes ([`crate::answer`]), and what its request held,
/// given back once the answer is written out.
#[derive(Debug)]
pub(crate) struct Answer {
    msg: Bytes,
    _hold: Hold,
}

/// Charges taken by [`BudgetBody`] per message header, in order, for the decoder to pick up.
pub(crate) type Charges = Arc<Mutex<VecDeque<Option<(Held<()>, Held<Caller>)>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The rate quotas and whose call it is, for the decoder to charge each message's listings.
type Quota = (Arc<Rates>, Caller);

/// The codec of one call: bounded decoding in, answers (already encoded) out.
#[derive(Debug)]
struct GateCodec {
    shape: Shape,
    quota: Quota,
    max_listings: usize,
    charges: Charges,
    permit: Option<CallPermit>,
    gauge: Option<GaugeGuard>,
}

impl Codec for GateCodec {
    type Encode = Answer;
    type Decode = Inbound;
    type Encoder = GateEncoder;
    type Decoder = GateDecoder;

    fn encoder(&mut self) -> GateEncoder {
        GateEncoder
    }

    fn decoder(&mut self) -> GateDecoder {
        GateDecoder {
            shape: self.shape,
            quota: self.quota.clone(),
            max_listings: self.max_listings,
            charges: Arc::clone(&self.charges),
            permit: self.permit.take(),
            gauge: self.gauge.take(),
        }
    }
}

#[derive(Debug)]
struct GateDecoder {
    shape: Shape,
    quota: Quota,
    max_listings: usize,
    charges: Charges,
    permit: Option<CallPermit>,
    gauge: Option<GaugeGuard>,
}

impl Decoder for GateDecoder {
    type Item = Inbound;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Inbound>, Status> {
        // The received buffer itself (split off, not copied); the decoded listings borrow it.
        let bytes: Bytes = src.copy_to_bytes(src.remaining());
        let charge = lock(&self.charges).pop_front().flatten();
        // Counted only (the first pass, allocating nothing); the listings are parsed in the
        // handler, in turns ([`parsed`]), not here in one poll.
        let msg = match wire::count(bytes, self.shape, self.max_listings) {
            Err(WireError::Malformed(m)) => return Err(Status::invalid_argument(m)),
            other => other,
        };
        if let Ok(m) = &msg {
            // A unary call's one message holds the call's permit: it was admitted from its
            // headers and is not refused now that its bytes are in (the quota goes into debt).
            let admitted = self.permit.is_some();
            self.quota.0.take_checks(&self.quota.1, m.len(), admitted)?;
        }
        Ok(Some(Inbound {
            msg,
            hold: Hold {
                _bytes: charge,
                _permit: self.permit.take(),
                _gauge: self.gauge.take(),
            },
        }))
    }
}

#[derive(Debug)]
struct GateEncoder;

impl Encoder for GateEncoder {
    type Item = Answer;
    type Error = Status;

    fn encode(&mut self, item: Answer, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item.msg);
        Ok(())
        // `item` (and what its request held) is dropped here, once written out.
    }
}

/// The request body, watched for gRPC message headers: each message's cost is taken from the
/// byte budgets when its header arrives, before its bytes are buffered or decoded; a
/// CheckBatch message's listings are counted as its bytes arrive ([`crate::arriving`]).
struct BudgetBody {
    inner: Body,
    admission: Arc<Admission>,
    caller: Caller,
    max_message: usize,
    max_listings: usize,
    charges: Charges,
    header: [u8; 5],
    have: usize,
    remaining: usize,
    failed: bool,
    /// CheckBatch only (a stream message over the limit gets one error entry and goes on).
    counter: Option<ListingCounter>,
    /// The connection's strikes ([`crate::tarpit`]): a message refused here counts against it.
    strikes: Option<Arc<Strikes>>,
}

impl BudgetBody {
    /// Follows the gRPC framing through `data`, charging each message as its header completes.
    fn scan(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                if let Some(c) = &mut self.counter {
                    c.feed(&data[..n]);
                    if c.count() > self.max_listings {
                        if let Some(s) = &self.strikes {
                            s.strikes(OVERSIZED_STRIKES);
                        }
                        return Err(Status::invalid_argument(format!(
                            "more than {max} listings in one message, over the limit of {max} (refused as it arrived, at listing {})",
                            c.count(),
                            max = self.max_listings
                        )));
                    }
                }
                self.remaining -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < 5 {
                break;
            }
            self.have = 0;
            let len = u32::from_be_bytes([
                self.header[1],
                self.header[2],
                self.header[3],
                self.header[4],
            ]) as usize;
            self.remaining = len;
            if let Some(c) = &mut self.counter {
                c.reset();
            }
            // Over the message size: tonic refuses it from the same header, unbuffered.
            let charge = if len > self.max_message {
                self.strike(OVERSIZED_STRIKES);
                None
            } else {
                Some(self.charge(len).inspect_err(|_| self.strike(1))?)
            };
            lock(&self.charges).push_back(charge);
        }
        Ok(())
    }

    /// Counts `n` strikes against the connection ([`Strikes::strikes`]).
    fn strike(&self, n: u32) {
        if let Some(s) = &self.strikes {
            s.strikes(n);
        }
    }

    fn charge(&self, len: usize) -> Result<(Held<()>, Held<Caller>), Status> {
        let cost = admission::message_cost(len, self.max_listings);
        Ok(self.admission.charge(&self.caller, cost)?)
    }
}

impl http_body::Body for BudgetBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(status) = this.scan(data)
                {
                    this.failed = true;
                    return Poll::Ready(Some(Err(status)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }
}

/// The public `cccgate.v1.ListingCheck` service.
#[derive(Debug, Clone)]
pub(crate) struct PublicCheck {
    pub(crate) ctx: Arc<CheckContext>,
    pub(crate) admission: Arc<Admission>,
    rates: Arc<Rates>,
    pub(crate) fair: Arc<FairGate>,
    lanes: Arc<Lanes>,
    auth: Option<Arc<TokenAuth>>,
    anonymous: Caller,
    watch: Option<Arc<crate::watch::WatchHub>>,
    /// Each caller's `cccgate_client_listings_total` handle, registered once, not per call.
    listings_by_caller: Arc<DashMap<Caller, Counter>>,
}

/// Callers whose listings counter handle is kept; past this many, a caller's handle is looked
/// up per call instead (the same series, only slower).
const CACHED_CALLERS: usize = 10_000;

impl PublicCheck {
    pub(crate) fn new(ctx: Arc<CheckContext>, auth: Option<Arc<TokenAuth>>) -> Self {
        let l = ctx.limits;
        let admission = Arc::new(Admission {
            bytes: admission::Quota::new(l.max_in_flight_bytes),
            client_bytes: admission::Quota::new(l.client_max_in_flight_bytes),
            client_streams: admission::Quota::new(l.client_max_open_streams),
            client_calls: admission::Quota::new(client_max_in_flight(l.max_in_flight)),
            connection_streams: admission::Quota::new(l.connection_max_open_streams),
        });
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        PublicCheck {
            rates: Arc::new(Rates::new(&l)),
            // A caller's credit grows by one turn a round: a message of another caller waits
            // for about one turn of it, not several.
            fair: FairGate::new(cpus, l.turn_listings),
            lanes: Lanes::new(cpus * crate::lanes::LANES_PER_CPU),
            ctx,
            admission,
            auth,
            anonymous: Arc::from("anonymous"),
            watch: None,
            listings_by_caller: Arc::default(),
        }
    }

    /// Who is calling: with `--auth-tokens`, the name of the bearer token (required);
    /// otherwise the mTLS name, else `anonymous`. The connection's reads are that caller's from
    /// now on, for its bytes quota ([`crate::rate::ByteMeter`]), whether or not the call is then
    /// admitted: a refused call's bytes are read too. gRPC and HTTP/JSON calls alike.
    pub(crate) fn identify(&self, req: &http::Request<Body>) -> Result<Caller, Status> {
        let caller = self.who(req)?;
        if let (Some(quota), Some(info)) = (&self.rates.bytes, req.extensions().get::<ConnInfo>()) {
            info.meter.meter_for(quota, &caller);
        }
        Ok(caller)
    }

    fn who(&self, req: &http::Request<Body>) -> Result<Caller, Status> {
        if let Some(auth) = &self.auth {
            let token = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(auth::bearer);
            return token.and_then(|t| auth.caller(t)).ok_or_else(|| {
                metrics::counter!("cccgate_unauthenticated_total").increment(1);
                Status::unauthenticated(
                    "a known token is required: send the metadata `authorization: Bearer TOKEN`",
                )
            });
        }
        Ok(req
            .extensions()
            .get::<ConnInfo>()
            .and_then(|c| c.peer_name.clone())
            .unwrap_or_else(|| Arc::clone(&self.anonymous)))
    }

    /// Serves `WatchChanges` and `WatchListings` from `hub`.
    pub(crate) fn with_watch(mut self, hub: Arc<crate::watch::WatchHub>) -> Self {
        self.watch = Some(hub);
        self
    }

    fn codec(&self, shape: Shape, charges: &Charges, caller: &Caller) -> GateCodec {
        GateCodec {
            shape,
            quota: (Arc::clone(&self.rates), Arc::clone(caller)),
            max_listings: self.ctx.limits.max_batch,
            charges: Arc::clone(charges),
            permit: None,
            gauge: None,
        }
    }

    /// `caller`'s `cccgate_client_listings_total` counter: its handle is registered with the
    /// recorder once (a label string and a registry lookup), then cloned per call.
    pub(crate) fn listings_counter(&self, caller: &Caller) -> Counter {
        if let Some(c) = self.listings_by_caller.get(caller) {
            return c.clone();
        }
        let c = metrics::counter!("cccgate_client_listings_total", "client" => caller.to_string());
        if self.listings_by_caller.len() < CACHED_CALLERS {
            self.listings_by_caller
                .insert(Arc::clone(caller), c.clone());
        }
        c
    }

    fn body(
        &self,
        body: Body,
        caller: &Caller,
        charges: &Charges,
        shape: Shape,
        strikes: Option<Arc<Strikes>>,
    ) -> BudgetBody {
        BudgetBody {
            strikes,
            inner: body,
            admission: Arc::clone(&self.admission),
            caller: Arc::clone(caller),
            max_message: self.ctx.limits.max_message_bytes,
            max_listings: self.ctx.limits.max_batch,
            charges: Arc::clone(charges),
            header: [0; 5],
            have: 0,
            remaining: 0,
            failed: false,
            counter: (shape == Shape::Batch).then(ListingCounter::default),
        }
    }

    fn grpc(&self, codec: GateCodec) -> Grpc<GateCodec> {
        let max = self.ctx.limits.max_message_bytes;
        Grpc::new(codec).apply_max_message_size_config(Some(max), Some(max))
    }

    pub(crate) fn admit_call(&self, rpc: Rpc, caller: &Caller) -> Result<CallPermit, Status> {
        let shed = |what, limit| {
            self.ctx.metrics.shed(rpc);
            client_shed(caller);
            Status::from(CheckError::Overloaded { what, limit })
        };
        let global = Arc::clone(&self.ctx.in_flight)
            .try_acquire_owned()
            .map_err(|_| {
                shed(
                    "calls in progress (--max-in-flight)",
                    self.ctx.limits.max_in_flight,
                )
            })?;
        let client = self
            .admission
            .client_calls
            .try_take(caller, 1)
            .ok_or_else(|| {
                shed(
                    "this caller's calls in progress (half of --max-in-flight)",
                    self.admission.client_calls.cap(),
                )
            })?;
        Ok(CallPermit {
            _global: global,
            _client: client,
        })
    }

    fn admit_stream(
        &self,
        caller: &Caller,
        conn: Option<SocketAddr>,
    ) -> Result<StreamSlot, Status> {
        let ctx = &self.ctx;
        let l = ctx.limits;
        let shed = |what, limit| {
            ctx.metrics.shed(Rpc::Stream);
            client_shed(caller);
            Status::from(CheckError::Overloaded { what, limit })
        };
        let global = Arc::clone(&ctx.streams)
            .try_acquire_owned()
            .map_err(|_| shed("open streams (--max-open-streams)", l.max_open_streams))?;
        let client = self
            .admission
            .client_streams
            .try_take(caller, 1)
            .ok_or_else(|| {
                shed(
                    "this caller's open streams (--client-max-open-streams)",
                    l.client_max_open_streams,
                )
            })?;
        let connection = self
            .admission
            .connection_streams
            .try_take(&conn, 1)
            .ok_or_else(|| {
                shed(
                    "this connection's open streams (--connection-max-open-streams)",
                    l.connection_max_open_streams,
                )
            })?;
        Ok(StreamSlot {
            _global: global,
            _client: client,
            _connection: connection,
            _open: GaugeGuard::new(&ctx.metrics.streams_open),
        })
    }

    async fn route(self, req: http::Request<Body>) -> http::Response<Body> {
        let method = match req.uri().path() {
            "/cccgate.v1.ListingCheck/Check" => Some(Method::Check),
            "/cccgate.v1.ListingCheck/CheckBatch" => Some(Method::Batch),
            "/cccgate.v1.ListingCheck/CheckStream" => Some(Method::Stream),
            "/cccgate.v1.ListingCheck/WatchChanges" => Some(Method::WatchChanges),
            "/cccgate.v1.ListingCheck/WatchListings" => Some(Method::WatchListings),
            _ => None,
        };
        let caller = match self.identify(&req) {
            Ok(c) => c,
            Err(status) => return refused(&req, status),
        };
        let Some(method) = method else {
            let path = req.uri().path();
            return Status::unimplemented(format!("{path} is not a method of this service"))
                .into_http();
        };
        if let Err(e) = self.rates.admit_call(&caller) {
            if method != Method::WatchChanges && method != Method::WatchListings {
                self.ctx.metrics.shed(method.rpc());
            }
            return refused(&req, Status::from(e));
        }
        let lean = answer::is_lean(req.headers());
        let conn = req.extensions().get::<ConnInfo>().and_then(|c| c.remote);
        let charges: Charges = Arc::default();
        let shape = if method == Method::Batch {
            Shape::Batch
        } else {
            Shape::Request
        };
        let strikes = req
            .extensions()
            .get::<ConnInfo>()
            .map(|c| Arc::clone(&c.strikes));
        let (parts, body) = req.into_parts();
        let body = self.body(body, &caller, &charges, shape, strikes);
        let req = http::Request::from_parts(parts, body);
        match method {
            Method::Check | Method::Batch => {
                let rpc = if shape == Shape::Batch {
                    Rpc::Batch
                } else {
                    Rpc::Check
                };
                let permit = match self.admit_call(rpc, &caller) {
                    Ok(p) => p,
                    Err(status) => return refused(&req, status),
                };
                let mut codec = self.codec(shape, &charges, &caller);
                codec.permit = Some(permit);
                codec.gauge = Some(GaugeGuard::new(&self.ctx.metrics.in_flight));
                // Read, decoded, checked and answered in one of the caller's lanes: its other
                // calls wait parked meanwhile ([`crate::lanes`]).
                let _lane = self.lanes.enter(&caller).await;
                let svc = Unary {
                    fair: Arc::clone(&self.fair),
                    listings: self.listings_counter(&caller),
                    ctx: Arc::clone(&self.ctx),
                    caller,
                    shape,
                    lean,
                };
                self.grpc(codec).unary(svc, req).await
            }
            Method::Stream => {
                let slot = match self.admit_stream(&caller, conn) {
                    Ok(s) => s,
                    Err(status) => return refused(&req, status),
                };
                let codec = self.codec(Shape::Request, &charges, &caller);
                let svc = Streams {
                    fair: Arc::clone(&self.fair),
                    listings: self.listings_counter(&caller),
                    ctx: Arc::clone(&self.ctx),
                    caller,
                    slot: Some(slot),
                    lean,
                };
                self.grpc(codec).streaming(svc, req).await
            }
            Method::WatchChanges | Method::WatchListings => {
                let Some(hub) = self.watch.clone() else {
                    return Status::unimplemented("watching is off on this gateway").into_http();
                };
                let slot = match self.admit_stream(&caller, conn) {
                    Ok(s) => Box::new(s),
                    Err(status) => return refused(&req, status),
                };
                let l = self.ctx.limits;
                if method == Method::WatchChanges {
                    crate::watch::serve::watch_changes(
                        hub,
                        slot,
                        &charges,
                        l.max_message_bytes,
                        req,
                    )
                    .await
                } else {
                    crate::watch::serve::watch_listings(
                        hub,
                        caller,
                        slot,
                        &charges,
                        l.max_message_bytes,
                        l.max_batch,
                        req,
                    )
                    .await
                }
            }
        }
    }
}

/// The methods of `cccgate.v1.ListingCheck`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    Check,
    Batch,
    Stream,
    WatchChanges,
    WatchListings,
}

impl Method {
    /// The metrics' name of a check method.
    fn rpc(self) -> Rpc {
        match self {
            Method::Check => Rpc::Check,
            Method::Batch => Rpc::Batch,
            _ => Rpc::Stream,
        }
    }
}

impl tower_service::Service<http::Request<Body>> for PublicCheck {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { Ok(this.route(req).await) })
    }
}

impl NamedService for PublicCheck {
    const NAME: &'static str = "cccgate.v1.ListingCheck";
}

/// The answer to a call refused before its body was read; the refusal counts against its
/// connection, whose reads pause after a run of them ([`crate::tarpit`]).
pub(crate) fn refused<B>(req: &http::Request<B>, status: Status) -> http::Response<Body> {
    if let Some(conn) = req.extensions().get::<ConnInfo>() {
        conn.strikes.strike();
    }
    status.into_http()
}

/// Counts a call, stream or message of `caller` shed with RESOURCE_EXHAUSTED.
pub(crate) fn client_shed(caller: &Caller) {
    metrics::counter!("cccgate_client_shed_total", "client" => caller.to_string()).increment(1);
}

/// Counts the listings a caller sent in one message (`counter`: its
/// [`PublicCheck::listings_counter`]).
pub(crate) fn count_listings(counter: &Counter, msg: &Result<Decoded, WireError>) {
    counter.increment(msg.as_ref().map_or(0, Decoded::len) as u64);
}

/// Parses a counted message's listings `turn` at a time, yielding the worker thread between
/// two turns ([`Counted::parse_in_turns`]). A malformed message fails the call (or ends the
/// stream) with INVALID_ARGUMENT, as one refused by the decoder does; too many listings stay
/// the message's own answer.
async fn parsed(
    msg: Result<Counted, WireError>,
    turn: usize,
) -> Result<Result<Decoded, WireError>, Status> {
    match msg {
        Ok(c) => match c.parse_in_turns(turn).await {
            Err(WireError::Malformed(m)) => Err(Status::invalid_argument(m)),
            other => Ok(other),
        },
        Err(e) => Ok(Err(e)),
    }
}

/// Check and CheckBatch.
struct Unary {
    ctx: Arc<CheckContext>,
    fair: Arc<FairGate>,
    caller: Caller,
    listings: Counter,
    shape: Shape,
    lean: bool,
}

impl UnaryService<Inbound> for Unary {
    type Response = Answer;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Answer>, Status>> + Send>>;

    fn call(&mut self, req: Request<Inbound>) -> Self::Future {
        let Inbound { msg, hold } = req.into_inner();
        let (ctx, caller) = (Arc::clone(&self.ctx), Arc::clone(&self.caller));
        let fair = Arc::clone(&self.fair);
        let (shape, lean) = (self.shape, self.lean);
        let listings = self.listings.clone();
        Box::pin(async move {
            let msg = parsed(msg, ctx.limits.turn_listings).await?;
            count_listings(&listings, &msg);
            let m = msg.map_err(|e| Status::invalid_argument(e.to_string()))?;
            let answer = match shape {
                // One listing, checked in microseconds, without a turn: a turn's hand-off would
                // cost more than the check, and the caller's lanes already bound how many of
                // its calls run at once ([`crate::lanes`]).
                Shape::Request => ctx.check_one(&m, &caller, lean),
                // Checked in turns ([`CheckContext::check_batch`]).
                Shape::Batch => ctx.check_batch(&m, (&fair, &caller), lean).await,
            };
            answer
                .map(|msg| Response::new(Answer { msg, _hold: hold }))
                .map_err(Status::from)
        })
    }
}

/// The stream slots a CheckStream holds for its life.
#[derive(Debug)]
struct StreamSlot {
    _global: OwnedSemaphorePermit,
    _client: Held<Caller>,
    _connection: Held<Option<SocketAddr>>,
    _open: GaugeGuard,
}

/// CheckStream.
struct Streams {
    ctx: Arc<CheckContext>,
    fair: Arc<FairGate>,
    caller: Caller,
    listings: Counter,
    slot: Option<StreamSlot>,
    lean: bool,
}

type AnswerStream = Pin<Box<dyn Stream<Item = Result<Answer, Status>> + Send>>;

impl StreamingService<Inbound> for Streams {
    type Response = Answer;
    type ResponseStream = AnswerStream;
    type Future = std::future::Ready<Result<Response<AnswerStream>, Status>>;

    fn call(&mut self, req: Request<Streaming<Inbound>>) -> Self::Future {
        let ctx = Arc::clone(&self.ctx);
        let caller = Arc::clone(&self.caller);
        let slot = self.slot.take();
        let (listings, lean) = (self.listings.clone(), self.lean);
        let idle = ctx.limits.stream_idle_timeout;
        let input = idle_limited(req.into_inner(), idle);
        // One answer per request message, in order; the first error ends the stream (tonic
        // sends it as the stream's status). The slot is given back when the stream is dropped.
        let fair = Arc::clone(&self.fair);
        let out = input.then(move |msg| {
            let _held = &slot;
            let (ctx, caller, fair) = (Arc::clone(&ctx), Arc::clone(&caller), Arc::clone(&fair));
            let listings = listings.clone();
            async move {
                let Inbound { msg, hold } = msg?;
                let msg = parsed(msg, ctx.limits.turn_listings).await?;
                count_listings(&listings, &msg);
                // Checked in turns ([`CheckContext::answer_chunk`]).
                let msg = ctx
                    .answer_chunk(msg, (&fair, &caller), lean)
                    .await
                    .map_err(Status::from)?;
                Ok(Answer { msg, _hold: hold })
            }
        });
        std::future::ready(Ok(Response::new(Box::pin(out))))
    }
}

/// Ends `input` with DEADLINE_EXCEEDED when no message arrives for `idle` (`None`: never).
fn idle_limited(
    input: Streaming<Inbound>,
    idle: Option<Duration>,
) -> impl Stream<Item = Result<Inbound, Status>> + Send {
    futures::stream::unfold(Some(input), move |state| async move {
        let mut input = state?;
        let next = match idle {
            None => input.next().await,
            Some(idle) => match tokio::time::timeout(idle, input.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let status = Status::deadline_exceeded(format!(
                        "no message for {} ms (--stream-idle-timeout-ms): stream closed; open a new one when there is work",
                        idle.as_millis()
                    ));
                    return Some((Err(status), None));
                }
            },
        };
        next.map(|item| (item, Some(input)))
    })
}
