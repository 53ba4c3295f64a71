//! HTTP/JSON on the public plane (spec/ops.md): `POST /v1/check` and `POST /v1/check:batch`,
//! the proto3 JSON mapping of `Check` and `CheckBatch`, for callers without gRPC.
//!
//! # Same port, same rules
//!
//! The service is routed by tonic beside the gRPC services (its "service name" is `v1`, so
//! every `/v1/...` path comes here), behind the same TLS, the same tokens and the same limits,
//! in this order, each before the work it bounds:
//!
//! 1. method and path (405, 404), `Content-Type: application/json` (415);
//! 2. the caller ([`PublicCheck::identify`]): 401 UNAUTHENTICATED without a known token;
//! 3. a `--max-in-flight` permit: 429 RESOURCE_EXHAUSTED;
//! 4. the body's size, from `Content-Length` (or `--max-message-bytes` when the body is
//!    chunked), over `--max-message-bytes`: 413 OUT_OF_RANGE, nothing read; its cost charged to
//!    the global and the caller's byte budgets: 429 RESOURCE_EXHAUSTED, nothing read;
//! 5. the body read, stopping at `--max-message-bytes`; parsed in one pass that refuses the
//!    listing after the `--max-batch`th before it exists, copies each field only within its
//!    limit (as [`crate::wire`] does for protobuf), and rejects unknown fields by name;
//! 6. decided by the same [`CheckContext`] code as the gRPC calls: same verdicts, metrics and
//!    decision log.
//!
//! Errors are `{"code": "INVALID_ARGUMENT", "message": "...", "field": "..."}` with the HTTP
//! status of spec/ops.md; `field` names the listing field at fault (`merchant_id`, as in
//! gRPC's `cccgate-field`), or where in the JSON the body is wrong (`listings[3].modle`).
//!
//! # proto3 JSON
//!
//! Input field names in lowerCamelCase or as in the .proto (`listingId`, `listing_id`);
//! `null` is the field's default; `uint64` as a number or a decimal string. Output in
//! lowerCamelCase, enums by name (`DECISION_BLOCK`), `uint64` as strings, fields at their
//! default value left out (the proto3 JSON rule).

use std::cell::RefCell;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use cccgate_core::{CERTIFICATE_NUMBER_MAX_BYTES, ID_MAX_BYTES, ListingError, MODEL_MAX_BYTES};
use cccgate_proto::v1::listing_result::Outcome;
use cccgate_proto::v1::{
    CertificateStatus, CheckBatchResponse, CheckResponse, Decision, ListingResult, Reason,
};
use prost::Message;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::{Code, Status};

use crate::admission;
use crate::metrics::Rpc;
use crate::public::{PublicCheck, count_listings};
use crate::service::RETRY_PUSHBACK_MS;
use crate::wire::{Decoded, OwnedItem, OwnedRequest, SHORT_FIELD_MAX_BYTES, Shape, WireError};

/// The HTTP/JSON endpoints, routed under `/v1/`.
#[derive(Debug, Clone)]
pub(crate) struct HttpJson {
    check: PublicCheck,
}

impl HttpJson {
    pub(crate) fn new(check: PublicCheck) -> Self {
        HttpJson { check }
    }

    async fn route(self, req: http::Request<Body>) -> http::Response<Body> {
        let shape = match req.uri().path() {
            "/v1/check" => Shape::Request,
            "/v1/check:batch" => Shape::Batch,
            other => {
                return error(
                    http::StatusCode::NOT_FOUND,
                    "NOT_FOUND",
                    &format!("{other} is not an endpoint: POST /v1/check or /v1/check:batch"),
                    "",
                );
            }
        };
        if req.method() != http::Method::POST {
            let mut resp = error(
                http::StatusCode::METHOD_NOT_ALLOWED,
                "UNIMPLEMENTED",
                &format!("{} {}: only POST is served", req.method(), req.uri().path()),
                "",
            );
            resp.headers_mut()
                .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
            return resp;
        }
        let json = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return error(
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "INVALID_ARGUMENT",
                "send Content-Type: application/json (the proto3 JSON of the request message)",
                "",
            );
        }
        let caller = match self.check.identify(&req) {
            Ok(c) => c,
            Err(status) => return status_error(&status),
        };
        let lean = crate::answer::is_lean(req.headers());
        let ctx = &self.check.ctx;
        let rpc = if shape == Shape::Batch {
            Rpc::Batch
        } else {
            Rpc::Check
        };
        let _permit = match self.check.admit_call(rpc, &caller) {
            Ok(p) => p,
            Err(status) => return status_error(&status),
        };
        let max = ctx.limits.max_message_bytes;
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = declared
            && len > max as u64
        {
            return too_large(len, max);
        }
        // Charged before a byte is read: the declared length, or the most a chunked body may be.
        let len = declared.map_or(max, |l| l as usize);
        let cost = admission::message_cost(len, ctx.limits.max_batch);
        let _charge = match self.check.admission.charge(&caller, cost) {
            Ok(held) => held,
            Err(e) => return status_error(&Status::from(e)),
        };
        let bytes = match read_body(req.into_body(), max, len).await {
            Ok(b) => b,
            Err(None) => return too_large(max as u64 + 1, max),
            Err(Some(status)) => {
                return error(
                    http::StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    &format!("the request body could not be read: {}", status.message()),
                    "",
                );
            }
        };
        let decoded = parse(&bytes, shape, ctx.limits.max_batch);
        let decoded = match decoded {
            Ok(d) => Ok(d),
            Err(BadJson::TooMany(e)) => Err(e),
            Err(BadJson::Syntax { message, field }) => {
                return error(
                    http::StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    &message,
                    &field,
                );
            }
        };
        // The JSON's text, gathered into one buffer the checks read in place, as from protobuf.
        let decoded = decoded.map(Decoded::from);
        count_listings(&self.check.listings_counter(&caller), &decoded);
        let decoded = match decoded {
            Ok(d) => d,
            Err(e) => {
                return error(
                    http::StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    &e.to_string(),
                    "listings",
                );
            }
        };
        // The answer comes encoded as protobuf (as gRPC sends it); read back, it becomes JSON.
        let answer = match shape {
            Shape::Request => ctx
                .check_one(&decoded, &caller, lean)
                .map(|b| CheckResponse::decode(b).map(|r| response_json(&r))),
            Shape::Batch => ctx
                .check_batch(&decoded, (&self.check.fair, &caller), lean)
                .await
                .map(|b| CheckBatchResponse::decode(b).map(|r| batch_response_json(&r))),
        };
        match answer {
            Ok(Ok(body)) => json_response(http::StatusCode::OK, &body),
            Ok(Err(e)) => error(
                http::StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                &format!("the answer could not be read back: {e}"),
                "",
            ),
            Err(e) => status_error(&Status::from(e)),
        }
    }
}

/// Reads a body of at most `max` bytes; `Err(None)`: it is longer (reading stopped there).
async fn read_body(mut body: Body, max: usize, hint: usize) -> Result<Vec<u8>, Option<Status>> {
    use http_body::Body as _;
    let mut out = Vec::with_capacity(hint.min(max));
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(Some)?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > max {
                return Err(None);
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

fn too_large(len: u64, max: usize) -> http::Response<Body> {
    error(
        http::StatusCode::PAYLOAD_TOO_LARGE,
        "OUT_OF_RANGE",
        &format!(
            "the request body is {len} bytes, over the limit of {max} (--max-message-bytes); split the batch"
        ),
        "",
    )
}

impl tower_service::Service<http::Request<Body>> for HttpJson {
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

impl NamedService for HttpJson {
    // tonic routes `/{NAME}/*` to a service: every `/v1/...` path.
    const NAME: &'static str = "v1";
}

/// The HTTP status of a gRPC code (spec/ops.md for the five it names).
pub(crate) fn http_status(code: Code) -> http::StatusCode {
    use http::StatusCode as S;
    match code {
        Code::Ok => S::OK,
        Code::InvalidArgument => S::BAD_REQUEST,
        Code::Unauthenticated => S::UNAUTHORIZED,
        Code::PermissionDenied => S::FORBIDDEN,
        Code::NotFound => S::NOT_FOUND,
        Code::FailedPrecondition => S::PRECONDITION_FAILED,
        Code::ResourceExhausted => S::TOO_MANY_REQUESTS,
        Code::OutOfRange => S::PAYLOAD_TOO_LARGE,
        Code::Unimplemented => S::NOT_IMPLEMENTED,
        Code::Unavailable => S::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        _ => S::INTERNAL_SERVER_ERROR,
    }
}

/// The proto3 JSON name of a gRPC code, e.g. `INVALID_ARGUMENT`.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// A gRPC status as an HTTP/JSON error: its field from `cccgate-field`, and a `Retry-After`
/// when the caller should come back.
fn status_error(status: &Status) -> http::Response<Body> {
    let field = status
        .metadata()
        .get("cccgate-field")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut resp = error(
        http_status(status.code()),
        code_name(status.code()),
        status.message(),
        field,
    );
    if status.code() == Code::ResourceExhausted || status.code() == Code::Unavailable {
        // Whole seconds: the gRPC retry hint (RETRY_PUSHBACK_MS) rounded up.
        let ms: u64 = RETRY_PUSHBACK_MS.parse().unwrap_or(1000);
        let secs = ms.div_ceil(1000).max(1);
        if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(http::header::RETRY_AFTER, v);
        }
    }
    resp
}

fn error(status: http::StatusCode, code: &str, message: &str, field: &str) -> http::Response<Body> {
    json_response(
        status,
        &json!({"code": code, "message": message, "field": field}),
    )
}

fn json_response(status: http::StatusCode, body: &Value) -> http::Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = http::Response::new(Body::new(axum::body::Body::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

// ---------------------------------------------------------------------------------------------
// Output: proto3 JSON of the responses.

/// `CheckResponse` as proto3 JSON.
pub(crate) fn response_json(r: &CheckResponse) -> Value {
    let mut m = Map::new();
    if let Some(result) = &r.result {
        m.insert("result".into(), result_json(result));
    }
    if !r.results.is_empty() {
        m.insert(
            "results".into(),
            Value::Array(r.results.iter().map(result_json).collect()),
        );
    }
    snapshot_fields(&mut m, r.snapshot_sequence, &r.snapshot_content_id);
    Value::Object(m)
}

/// `CheckBatchResponse` as proto3 JSON.
pub(crate) fn batch_response_json(r: &CheckBatchResponse) -> Value {
    let mut m = Map::new();
    if !r.results.is_empty() {
        m.insert(
            "results".into(),
            Value::Array(r.results.iter().map(result_json).collect()),
        );
    }
    snapshot_fields(&mut m, r.snapshot_sequence, &r.snapshot_content_id);
    Value::Object(m)
}

fn snapshot_fields(m: &mut Map<String, Value>, sequence: u64, content_id: &str) {
    if sequence != 0 {
        m.insert("snapshotSequence".into(), sequence.to_string().into());
    }
    if !content_id.is_empty() {
        m.insert("snapshotContentId".into(), content_id.into());
    }
}

fn result_json(r: &ListingResult) -> Value {
    let mut m = Map::new();
    if !r.listing_id.is_empty() {
        m.insert("listingId".into(), r.listing_id.clone().into());
    }
    match &r.outcome {
        Some(Outcome::Verdict(v)) => {
            let mut o = Map::new();
            o.insert(
                "decision".into(),
                Decision::try_from(v.decision)
                    .map_or_else(|_| Value::from(v.decision), |d| d.as_str_name().into()),
            );
            o.insert(
                "reason".into(),
                Reason::try_from(v.reason)
                    .map_or_else(|_| Value::from(v.reason), |r| r.as_str_name().into()),
            );
            if v.snapshot_sequence != 0 {
                o.insert(
                    "snapshotSequence".into(),
                    v.snapshot_sequence.to_string().into(),
                );
            }
            if let Some(c) = &v.certificate {
                let mut cm = Map::new();
                let mut text = |k: &str, s: &str| {
                    if !s.is_empty() {
                        cm.insert(k.into(), s.into());
                    }
                };
                text("number", &c.number);
                text("productCode", &c.product_code);
                text("producer", &c.producer);
                text("expiryDate", &c.expiry_date);
                if c.status != 0 {
                    cm.insert(
                        "status".into(),
                        CertificateStatus::try_from(c.status)
                            .map_or_else(|_| Value::from(c.status), |s| s.as_str_name().into()),
                    );
                }
                o.insert("certificate".into(), Value::Object(cm));
            }
            m.insert("verdict".into(), Value::Object(o));
        }
        Some(Outcome::Error(e)) => {
            m.insert(
                "error".into(),
                json!({"field": e.field, "message": e.message}),
            );
        }
        None => {}
    }
    Value::Object(m)
}

// ---------------------------------------------------------------------------------------------
// Input: proto3 JSON of the requests, bounded while it is parsed.

/// Why a body is refused as a whole.
#[derive(Debug)]
pub(crate) enum BadJson {
    /// More listings than `--max-batch`.
    TooMany(WireError),
    /// Not the JSON of the request message: what is wrong, and where.
    Syntax { message: String, field: String },
}

/// Parses `bytes` as the proto3 JSON of `shape`, refusing the listing after the
/// `max_listings`th before it is parsed.
pub(crate) fn parse(
    bytes: &[u8],
    shape: Shape,
    max_listings: usize,
) -> Result<OwnedRequest, BadJson> {
    let path = RefCell::new(String::new());
    let too_many = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = RequestSeed {
        shape,
        max: max_listings,
        path: &path,
        too_many: &too_many,
    };
    let result = seed.deserialize(&mut de).and_then(|d| de.end().map(|()| d));
    result.map_err(|e| match too_many.into_inner() {
        Some(e) => BadJson::TooMany(e),
        None => BadJson::Syntax {
            message: format!("the body is not a valid JSON request: {e}"),
            field: path.into_inner(),
        },
    })
}

struct RequestSeed<'p> {
    shape: Shape,
    max: usize,
    path: &'p RefCell<String>,
    too_many: &'p RefCell<Option<WireError>>,
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_> {
    type Value = OwnedRequest;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<OwnedRequest, D::Error> {
        d.deserialize_map(self)
    }
}

fn set_path(path: &RefCell<String>, args: fmt::Arguments<'_>) {
    let mut p = path.borrow_mut();
    p.clear();
    fmt::write(&mut *p, args).ok();
}

impl<'de> Visitor<'de> for RequestSeed<'_> {
    type Value = OwnedRequest;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.shape {
            Shape::Request => "a CheckRequest object",
            Shape::Batch => "a CheckBatchRequest object",
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OwnedRequest, A::Error> {
        let mut out = OwnedRequest::default();
        let mut seen = [false; 3];
        while let Some(key) = map.next_key::<String>()? {
            set_path(self.path, format_args!("{key}"));
            let which = match (self.shape, key.as_str()) {
                (Shape::Request, "listing") => 0,
                (_, "listings") => 1,
                (_, "minSnapshotSequence" | "min_snapshot_sequence") => 2,
                _ => {
                    let known = match self.shape {
                        Shape::Request => "listing, listings, minSnapshotSequence",
                        Shape::Batch => "listings, minSnapshotSequence",
                    };
                    return Err(de::Error::custom(format_args!(
                        "unknown field `{key}`: expected {known}"
                    )));
                }
            };
            if std::mem::replace(&mut seen[which], true) {
                return Err(de::Error::custom(format_args!("field `{key}` given twice")));
            }
            match which {
                0 => {
                    out.listing = map.next_value_seed(ListingSeed {
                        path: self.path,
                        prefix: "listing",
                    })?;
                }
                1 => {
                    out.listings = map.next_value_seed(ListingsSeed {
                        max: self.max,
                        path: self.path,
                        too_many: self.too_many,
                    })?;
                }
                _ => out.min_snapshot_sequence = map.next_value_seed(U64Seed)?,
            }
        }
        if let Some(e) = self.too_many.borrow().as_ref() {
            return Err(de::Error::custom(e));
        }
        Ok(out)
    }
}

struct ListingsSeed<'p> {
    max: usize,
    path: &'p RefCell<String>,
    too_many: &'p RefCell<Option<WireError>>,
}

impl<'de> DeserializeSeed<'de> for ListingsSeed<'_> {
    type Value = Vec<OwnedItem>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Vec<OwnedItem>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ListingsSeed<'_> {
    type Value = Vec<OwnedItem>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of listings")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<OwnedItem>, E> {
        Ok(Vec::new())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<OwnedItem>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        loop {
            let index = out.len();
            set_path(self.path, format_args!("listings[{index}]"));
            if index == self.max {
                // One more is one too many: skipped, never built.
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    let e = WireError::TooMany {
                        len: self.max + 1,
                        max: self.max,
                    };
                    let err = <A::Error as de::Error>::custom(&e);
                    *self.too_many.borrow_mut() = Some(e);
                    return Err(err);
                }
                return Ok(out);
            }
            let prefix = format!("listings[{index}]");
            match seq.next_element_seed(ListingSeed {
                path: self.path,
                prefix: &prefix,
            })? {
                Some(Some(item)) => out.push(item),
                // `null` in a list of messages is not a listing.
                Some(None) => {
                    return Err(de::Error::custom("a listing is null: send an object"));
                }
                None => return Ok(out),
            }
        }
    }
}

struct ListingSeed<'p> {
    path: &'p RefCell<String>,
    prefix: &'p str,
}

impl<'de> DeserializeSeed<'de> for ListingSeed<'_> {
    type Value = Option<OwnedItem>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<OwnedItem>, D::Error> {
        d.deserialize_any(self)
    }
}

/// The listing fields: JSON names, .proto name, byte limit.
const LISTING_FIELDS: [(&str, &str, &str, usize); 6] = [
    ("listingId", "listing_id", "listing_id", ID_MAX_BYTES),
    ("merchantId", "merchant_id", "merchant_id", ID_MAX_BYTES),
    (
        "productCode",
        "product_code",
        "product_code",
        SHORT_FIELD_MAX_BYTES,
    ),
    (
        "certificateNumber",
        "certificate_number",
        "certificate_number",
        CERTIFICATE_NUMBER_MAX_BYTES,
    ),
    ("model", "model", "model", MODEL_MAX_BYTES),
    (
        "eventTime",
        "event_time",
        "event_time",
        SHORT_FIELD_MAX_BYTES,
    ),
];

impl<'de> Visitor<'de> for ListingSeed<'_> {
    type Value = Option<OwnedItem>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Listing object")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<OwnedItem>, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<OwnedItem>, A::Error> {
        let mut item = OwnedItem::default();
        let mut seen = [false; 6];
        while let Some(key) = map.next_key::<String>()? {
            set_path(self.path, format_args!("{}.{key}", self.prefix));
            let Some(at) = LISTING_FIELDS
                .iter()
                .position(|(camel, proto, _, _)| key == *camel || key == *proto)
            else {
                return Err(de::Error::custom(format_args!(
                    "unknown field `{key}` in a listing: expected listingId, merchantId, \
                     productCode, certificateNumber, model or eventTime"
                )));
            };
            if std::mem::replace(&mut seen[at], true) {
                return Err(de::Error::custom(format_args!("field `{key}` given twice")));
            }
            let (_, _, name, max) = LISTING_FIELDS[at];
            let text = match map.next_value_seed(BoundedStr { max })? {
                Text::Null => continue,
                Text::Within(s) => s,
                Text::Over { len, cut } => {
                    if item.over.is_none() {
                        item.over = Some(ListingError::TooLong {
                            field: name,
                            len,
                            max,
                        });
                    }
                    // Only the id is kept (cut), so an error can name the listing.
                    if at != 0 {
                        continue;
                    }
                    cut
                }
            };
            let w = &mut item.wire;
            *match at {
                0 => &mut w.listing_id,
                1 => &mut w.merchant_id,
                2 => &mut w.product_code,
                3 => &mut w.certificate_number,
                4 => &mut w.model,
                _ => &mut w.event_time,
            } = text;
        }
        Ok(Some(item))
    }
}

/// A JSON string copied only within `max` bytes.
struct BoundedStr {
    max: usize,
}

enum Text {
    Null,
    Within(String),
    Over { len: usize, cut: String },
}

impl<'de> DeserializeSeed<'de> for BoundedStr {
    type Value = Text;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Text, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for BoundedStr {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Text, E> {
        Ok(Text::Null)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Text, E> {
        if s.len() <= self.max {
            return Ok(Text::Within(s.to_owned()));
        }
        let mut end = self.max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        Ok(Text::Over {
            len: s.len(),
            cut: s[..end].to_owned(),
        })
    }
}

/// A proto3 JSON `uint64`: a number or a decimal string; `null` is 0.
struct U64Seed;

impl<'de> DeserializeSeed<'de> for U64Seed {
    type Value = u64;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for U64Seed {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an unsigned 64-bit integer (a number or a decimal string)")
    }

    fn visit_unit<E: de::Error>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::custom(format_args!("{v} is negative")))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
            Ok(v as u64)
        } else {
            Err(E::custom(format_args!("{v} is not an unsigned integer")))
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<u64, E> {
        s.parse()
            .map_err(|_| E::custom(format_args!("{s:?} is not an unsigned integer")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syntax(bytes: &str, shape: Shape) -> (String, String) {
        match parse(bytes.as_bytes(), shape, 3) {
            Err(BadJson::Syntax { message, field }) => (message, field),
            other => panic!("{bytes}: {other:?}"),
        }
    }

    #[test]
    fn camel_case_and_proto_names_are_both_accepted() {
        let d = parse(
            br#"{"listing": {"listingId": "L1", "merchant_id": "M1", "productCode": "0901",
                 "certificate_number": "CCC:2021", "model": null, "eventTime": ""},
                 "min_snapshot_sequence": "7"}"#,
            Shape::Request,
            3,
        )
        .unwrap();
        let l = &d.listing.as_ref().unwrap().wire;
        assert_eq!(
            (
                l.listing_id.as_str(),
                l.merchant_id.as_str(),
                l.product_code.as_str()
            ),
            ("L1", "M1", "0901")
        );
        assert_eq!(l.certificate_number, "CCC:2021");
        assert_eq!(l.model, "");
        assert_eq!(d.min_snapshot_sequence, 7);
        let d = parse(br#"{"minSnapshotSequence": 9}"#, Shape::Batch, 3).unwrap();
        assert_eq!(d.min_snapshot_sequence, 9);
        assert!(d.listings.is_empty());
    }

    #[test]
    fn the_listing_past_the_limit_is_refused_before_it_is_parsed() {
        // The fourth listing is not even valid JSON of a listing: it is never looked at.
        let body = br#"{"listings": [{}, {}, {}, {"nonsense": 1}]}"#;
        match parse(body, Shape::Batch, 3) {
            Err(BadJson::TooMany(WireError::TooMany { max: 3, .. })) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse(br#"{"listings": [{}, {}, {}]}"#, Shape::Batch, 3)
                .unwrap()
                .listings
                .len(),
            3
        );
    }

    #[test]
    fn a_field_over_its_limit_is_not_copied_and_names_itself() {
        let long = "x".repeat(ID_MAX_BYTES + 10);
        let body =
            format!(r#"{{"listings": [{{"listingId": "{long}", "model": "{long}{long}"}}]}}"#);
        let d = parse(body.as_bytes(), Shape::Batch, 3).unwrap();
        let item = &d.listings[0];
        assert_eq!(item.wire.listing_id.len(), ID_MAX_BYTES);
        assert!(
            matches!(
                item.over,
                Some(ListingError::TooLong {
                    field: "listing_id",
                    ..
                })
            ),
            "{:?}",
            item.over
        );
        assert_eq!(item.wire.model, "");
    }

    #[test]
    fn bad_json_names_where_it_is_wrong() {
        let (m, f) = syntax(r#"{"listings": [{}, {"modle": "X"}]}"#, Shape::Batch);
        assert_eq!(f, "listings[1].modle");
        assert!(m.contains("unknown field `modle`"), "{m}");
        let (m, f) = syntax(r#"{"listing": {"merchantId": 5}}"#, Shape::Request);
        assert_eq!(f, "listing.merchantId");
        assert!(m.contains("expected a string"), "{m}");
        let (_, f) = syntax(r#"{"listing": {}}"#, Shape::Batch);
        assert_eq!(f, "listing");
        let (m, _) = syntax(r#"{"minSnapshotSequence": -1}"#, Shape::Batch);
        assert!(m.contains("negative"), "{m}");
        let (m, _) = syntax(r#"{} trailing"#, Shape::Batch);
        assert!(m.contains("trailing"), "{m}");
        let (m, _) = syntax(r#"[]"#, Shape::Batch);
        assert!(m.contains("CheckBatchRequest"), "{m}");
        let (m, f) = syntax(r#"{"listings": [null]}"#, Shape::Batch);
        assert!(m.contains("null"), "{m}");
        assert_eq!(f, "listings[0]");
    }

    #[test]
    fn responses_follow_proto3_json() {
        use cccgate_proto::v1::{Certificate, ListingError as WireError, Verdict};
        let r = CheckBatchResponse {
            results: vec![
                ListingResult {
                    listing_id: "L1".into(),
                    outcome: Some(Outcome::Verdict(Verdict {
                        decision: Decision::Block as i32,
                        reason: Reason::CertificateRevoked as i32,
                        snapshot_sequence: 12,
                        certificate: Some(Certificate {
                            number: "2021010901000001".into(),
                            status: CertificateStatus::Revoked as i32,
                            product_code: "0901".into(),
                            producer: "<b>&".into(),
                            expiry_date: "2027-01-01".into(),
                        }),
                    })),
                },
                ListingResult {
                    listing_id: String::new(),
                    outcome: Some(Outcome::Error(WireError {
                        field: "listing_id".into(),
                        message: "listing_id is required".into(),
                    })),
                },
            ],
            snapshot_sequence: 12,
            snapshot_content_id: "ab".into(),
        };
        let v = batch_response_json(&r);
        assert_eq!(
            v,
            json!({
                "results": [
                    {"listingId": "L1", "verdict": {
                        "decision": "DECISION_BLOCK", "reason": "REASON_CERTIFICATE_REVOKED",
                        "snapshotSequence": "12",
                        "certificate": {"number": "2021010901000001",
                            "status": "CERTIFICATE_STATUS_REVOKED", "productCode": "0901",
                            "producer": "<b>&", "expiryDate": "2027-01-01"}}},
                    {"error": {"field": "listing_id", "message": "listing_id is required"}}
                ],
                "snapshotSequence": "12",
                "snapshotContentId": "ab"
            })
        );
        // Defaults are left out.
        assert_eq!(response_json(&CheckResponse::default()), json!({}));
    }

    #[test]
    fn grpc_codes_map_to_the_http_statuses_of_the_contract() {
        for (code, status) in [
            (Code::InvalidArgument, 400),
            (Code::Unauthenticated, 401),
            (Code::FailedPrecondition, 412),
            (Code::ResourceExhausted, 429),
            (Code::Unavailable, 503),
        ] {
            assert_eq!(http_status(code).as_u16(), status, "{code:?}");
        }
    }
}
