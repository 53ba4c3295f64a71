//! The protobuf wire format of `cccgate.v1`, written and read by hand on the client's hot path.
//!
//! A client that sends a million listings a second cannot afford six `String`s per listing
//! on the way out and five on the way back, so this module encodes a chunk of listings
//! straight from borrowed text into one buffer ([`ChunkEncoder`]) and reads a response in
//! place ([`ResponseView`], [`ResultView`]), borrowing every string from the received bytes.
//! The field numbers are those of `proto/cccgate/v1/cccgate.proto`; the tests check both
//! directions against the prost-generated types, so the two cannot drift apart unnoticed.

use std::sync::{Arc, Mutex};

use prost::bytes::Bytes;

/// Which RPC a chunk is encoded for; the repeated `listings` field and the response's fields
/// have different numbers in `CheckRequest`/`CheckResponse` and the batch messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    /// `CheckStream`: `CheckRequest.listings` (2) in, `CheckResponse.results` (2) out.
    Stream,
    /// `CheckBatch`: `CheckBatchRequest.listings` (1) in, `CheckBatchResponse.results` (1) out.
    Batch,
    /// `Check`: `CheckRequest.listing` (1) in, `CheckResponse.result` (1) out.
    Unary,
}

impl Rpc {
    /// The request field that carries the listings.
    fn listings_field(self) -> u32 {
        match self {
            Rpc::Stream => 2,
            Rpc::Batch | Rpc::Unary => 1,
        }
    }

    /// `/cccgate.v1.ListingCheck/<method>`.
    pub fn path(self) -> &'static str {
        match self {
            Rpc::Stream => "/cccgate.v1.ListingCheck/CheckStream",
            Rpc::Batch => "/cccgate.v1.ListingCheck/CheckBatch",
            Rpc::Unary => "/cccgate.v1.ListingCheck/Check",
        }
    }

    /// Short name for reports: `stream`, `batch`, `unary`.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Stream => "stream",
            Rpc::Batch => "batch",
            Rpc::Unary => "unary",
        }
    }
}

/// A response the client cannot read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed response from the gateway: {0}")]
pub struct WireError(pub &'static str);

const LEN: u32 = 2;
const VARINT: u32 = 0;

fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn put_key(buf: &mut Vec<u8>, field: u32, wire_type: u32) {
    put_varint(buf, u64::from(field << 3 | wire_type));
}

/// The six input fields of a listing, borrowed, in the order of `cccgate.v1.Listing`
/// (fields 1 to 6): listing id, merchant id, product code, certificate number, model, event
/// time.
pub type ListingFields<'a> = [&'a [u8]; 6];

/// Request buffers handed back once the gRPC stack has sent them, so a steady stream of
/// chunks allocates (and frees) no large buffer: glibc's free of a large block consolidates
/// its heap, which showed in profiles.
#[derive(Clone, Debug, Default)]
struct BufPool(Arc<Mutex<Vec<Vec<u8>>>>);

/// Buffers a pool keeps (more are freed).
const POOL_KEEPS: usize = 16;

impl BufPool {
    fn take(&self) -> Vec<u8> {
        self.0
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_else(|| Vec::with_capacity(1 << 16))
    }
}

/// An encoded request: its buffer goes back to the pool when the last `Bytes` of it drops.
struct Pooled {
    buf: Vec<u8>,
    pool: BufPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if let Ok(mut p) = self.pool.0.lock()
            && p.len() < POOL_KEEPS
        {
            p.push(buf);
        }
    }
}

/// Encodes listings into one request message, reusing buffers from chunk to chunk.
#[derive(Debug)]
pub struct ChunkEncoder {
    rpc: Rpc,
    buf: Vec<u8>,
    count: usize,
    pool: BufPool,
}

impl ChunkEncoder {
    /// An empty request for `rpc`.
    pub fn new(rpc: Rpc) -> Self {
        ChunkEncoder {
            rpc,
            buf: Vec::with_capacity(1 << 16),
            count: 0,
            pool: BufPool::default(),
        }
    }

    /// Appends one listing. Empty fields are left out, as protobuf does.
    pub fn push(&mut self, fields: ListingFields<'_>) {
        let body: usize = fields
            .iter()
            .filter(|f| !f.is_empty())
            .map(|f| 1 + varint_len(f.len() as u64) + f.len())
            .sum();
        put_key(&mut self.buf, self.rpc.listings_field(), LEN);
        put_varint(&mut self.buf, body as u64);
        for (i, f) in fields.iter().enumerate() {
            if !f.is_empty() {
                put_key(&mut self.buf, i as u32 + 1, LEN);
                put_varint(&mut self.buf, f.len() as u64);
                self.buf.extend_from_slice(f);
            }
        }
        self.count += 1;
    }

    /// Listings pushed since the last [`ChunkEncoder::finish`].
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no listing was pushed since the last [`ChunkEncoder::finish`].
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes encoded so far.
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// The encoded request (with `min_snapshot_sequence` if non-zero); starts a new one.
    pub fn finish(&mut self, min_snapshot_sequence: u64) -> Bytes {
        if min_snapshot_sequence != 0 {
            let field = match self.rpc {
                Rpc::Stream | Rpc::Unary => 3,
                Rpc::Batch => 2,
            };
            put_key(&mut self.buf, field, VARINT);
            put_varint(&mut self.buf, min_snapshot_sequence);
        }
        self.count = 0;
        // The filled buffer leaves without a copy; an empty one from the pool takes its place.
        let buf = std::mem::replace(&mut self.buf, self.pool.take());
        Bytes::from_owner(Pooled {
            buf,
            pool: self.pool.clone(),
        })
    }
}

/// A cursor over protobuf bytes.
struct Reader<'a> {
    buf: &'a [u8],
}

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Skipped,
}

impl<'a> Reader<'a> {
    #[inline]
    fn varint(&mut self) -> Result<u64, WireError> {
        // Keys, lengths and enum values are nearly always one byte.
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Ok(u64::from(b));
        }
        self.varint_slow()
    }

    fn varint_slow(&mut self) -> Result<u64, WireError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or(WireError("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(WireError("varint over 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.buf.len() {
            return Err(WireError("length past the end of the message"));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    /// The next field: its number and value; `None` at the end.
    #[inline]
    fn field(&mut self) -> Result<Option<(u32, Value<'a>)>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = u32::try_from(key >> 3).map_err(|_| WireError("field number too large"))?;
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Skipped
            }
            2 => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| WireError("length too large"))?;
                Value::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Value::Skipped
            }
            _ => return Err(WireError("unsupported wire type")),
        };
        Ok(Some((field, value)))
    }
}

fn text(b: &[u8]) -> Result<&str, WireError> {
    std::str::from_utf8(b).map_err(|_| WireError("string is not UTF-8"))
}

/// A `CheckResponse` or `CheckBatchResponse`, read in place: where its results are, and the
/// snapshot that decided them.
#[derive(Debug, Default)]
pub struct ResponseView {
    ranges: Vec<(u32, u32)>,
    /// `snapshot_sequence` of the message.
    pub sequence: u64,
    content_id: (u32, u32),
}

impl ResponseView {
    /// Reads the top level of `bytes` (a response to `rpc`), reusing this view's storage.
    pub fn parse(&mut self, rpc: Rpc, bytes: &[u8]) -> Result<(), WireError> {
        let (results, seq, content) = match rpc {
            Rpc::Stream => (2, 3, 4),
            Rpc::Unary => (1, 3, 4),
            Rpc::Batch => (1, 2, 3),
        };
        self.ranges.clear();
        self.sequence = 0;
        self.content_id = (0, 0);
        let base = bytes.as_ptr() as usize;
        let range = |s: &[u8]| {
            let at = s.as_ptr() as usize - base;
            (at as u32, (at + s.len()) as u32)
        };
        let mut r = Reader { buf: bytes };
        while let Some((field, value)) = r.field()? {
            match value {
                Value::Bytes(b) if field == results => self.ranges.push(range(b)),
                Value::Bytes(b) if field == content => self.content_id = range(b),
                Value::Varint(v) if field == seq => self.sequence = v,
                _ => {}
            }
        }
        Ok(())
    }

    /// Number of results.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The snapshot's content id (empty if absent).
    pub fn content_id<'a>(&self, bytes: &'a [u8]) -> Result<&'a str, WireError> {
        let (a, b) = self.content_id;
        text(&bytes[a as usize..b as usize])
    }

    /// The bytes of result `i`.
    pub fn result<'a>(&self, bytes: &'a [u8], i: usize) -> &'a [u8] {
        let (a, b) = self.ranges[i];
        &bytes[a as usize..b as usize]
    }
}

/// What a verdict reports of the certificate it found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CertView<'a> {
    /// 16 digits.
    pub number: &'a str,
    /// `CertificateStatus` number (1..5; 0 unspecified).
    pub status: i32,
    /// 4 digits.
    pub product_code: &'a str,
    /// The producer.
    pub producer: &'a str,
    /// `YYYY-MM-DD`.
    pub expiry_date: &'a str,
}

/// One `ListingResult`, read in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// A verdict.
    Verdict {
        /// `Decision` number (1 ALLOW, 2 BLOCK, 3 REVIEW).
        decision: i32,
        /// `Reason` number: the table's rule number, 1..12.
        reason: i32,
        /// The snapshot that decided it.
        sequence: u64,
        /// The certificate, when one was found.
        certificate: Option<CertView<'a>>,
    },
    /// A bad request.
    Error {
        /// The field at fault.
        field: &'a str,
        /// What is wrong.
        message: &'a str,
    },
    /// Neither (a gateway bug or a newer contract): reported as an error.
    Missing,
}

/// One `ListingResult`: the listing id as the gateway echoed it, and the outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResultView<'a> {
    /// The listing id (may be cut short or empty for a bad listing).
    pub listing_id: &'a str,
    /// The outcome.
    pub outcome: Outcome<'a>,
}

impl<'a> ResultView<'a> {
    /// Reads one `ListingResult`, borrowing its strings.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, WireError> {
        let mut out = ResultView {
            listing_id: "",
            outcome: Outcome::Missing,
        };
        let mut r = Reader { buf: bytes };
        while let Some((field, value)) = r.field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => out.listing_id = text(b)?,
                (2, Value::Bytes(b)) => out.outcome = parse_verdict(b)?,
                (3, Value::Bytes(b)) => out.outcome = parse_error(b)?,
                _ => {}
            }
        }
        Ok(out)
    }

    /// Only the decision and reason numbers (0 for an error or a missing outcome): the
    /// counting path of the benchmarks, which reads no string.
    pub fn decision_and_reason(bytes: &[u8]) -> Result<(i32, i32), WireError> {
        Self::verdict_numbers(bytes).map(|(d, r, _)| (d, r))
    }

    /// The decision and reason numbers and the verdict's `snapshot_sequence` (all 0 for an
    /// error or a missing outcome), reading no string.
    pub fn verdict_numbers(bytes: &[u8]) -> Result<(i32, i32, u64), WireError> {
        let mut r = Reader { buf: bytes };
        while let Some((field, value)) = r.field()? {
            if let (2, Value::Bytes(b)) = (field, value) {
                let mut v = Reader { buf: b };
                let (mut d, mut reason, mut sequence) = (0, 0, 0);
                while let Some((f, val)) = v.field()? {
                    match (f, val) {
                        (1, Value::Varint(x)) => d = x as i32,
                        (2, Value::Varint(x)) => reason = x as i32,
                        (3, Value::Varint(x)) => sequence = x,
                        _ => {}
                    }
                }
                return Ok((d, reason, sequence));
            }
        }
        Ok((0, 0, 0))
    }
}

fn parse_verdict(bytes: &[u8]) -> Result<Outcome<'_>, WireError> {
    let (mut decision, mut reason, mut sequence, mut certificate) = (0, 0, 0, None);
    let mut r = Reader { buf: bytes };
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Varint(v)) => decision = v as i32,
            (2, Value::Varint(v)) => reason = v as i32,
            (3, Value::Varint(v)) => sequence = v,
            (4, Value::Bytes(b)) => certificate = Some(parse_certificate(b)?),
            _ => {}
        }
    }
    Ok(Outcome::Verdict {
        decision,
        reason,
        sequence,
        certificate,
    })
}

fn parse_certificate(bytes: &[u8]) -> Result<CertView<'_>, WireError> {
    let mut c = CertView::default();
    let mut r = Reader { buf: bytes };
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => c.number = text(b)?,
            (2, Value::Varint(v)) => c.status = v as i32,
            (3, Value::Bytes(b)) => c.product_code = text(b)?,
            (4, Value::Bytes(b)) => c.producer = text(b)?,
            (5, Value::Bytes(b)) => c.expiry_date = text(b)?,
            _ => {}
        }
    }
    Ok(c)
}

fn parse_error(bytes: &[u8]) -> Result<Outcome<'_>, WireError> {
    let (mut field_name, mut message) = ("", "");
    let mut r = Reader { buf: bytes };
    while let Some((field, value)) = r.field()? {
        match (field, value) {
            (1, Value::Bytes(b)) => field_name = text(b)?,
            (2, Value::Bytes(b)) => message = text(b)?,
            _ => {}
        }
    }
    Ok(Outcome::Error {
        field: field_name,
        message,
    })
}

#[cfg(test)]
mod tests {
    use cccgate_proto::v1;
    use prost::Message;

    use super::*;

    fn listing(i: usize) -> v1::Listing {
        v1::Listing {
            listing_id: format!("L{i}"),
            merchant_id: "商户-7".into(),
            product_code: if i.is_multiple_of(2) {
                "0901".into()
            } else {
                String::new()
            },
            certificate_number: "x".repeat(i * 40),
            model: String::new(),
            event_time: "2026-11-27T10:00:00+08:00".into(),
        }
    }

    fn fields(l: &v1::Listing) -> ListingFields<'_> {
        [
            l.listing_id.as_bytes(),
            l.merchant_id.as_bytes(),
            l.product_code.as_bytes(),
            l.certificate_number.as_bytes(),
            l.model.as_bytes(),
            l.event_time.as_bytes(),
        ]
    }

    #[test]
    fn encoded_chunks_decode_as_the_generated_requests() {
        let listings: Vec<_> = (0..5)
            .collect::<Vec<_>>()
            .iter()
            .map(|&i| listing(i))
            .collect();
        let mut enc = ChunkEncoder::new(Rpc::Stream);
        listings.iter().for_each(|l| enc.push(fields(l)));
        assert_eq!(enc.len(), 5);
        let req = v1::CheckRequest::decode(enc.finish(42)).unwrap();
        assert_eq!(req.listings, listings);
        assert_eq!(req.min_snapshot_sequence, 42);
        assert!(enc.is_empty());

        let mut enc = ChunkEncoder::new(Rpc::Batch);
        listings.iter().for_each(|l| enc.push(fields(l)));
        let req = v1::CheckBatchRequest::decode(enc.finish(0)).unwrap();
        assert_eq!(req.listings, listings);
        assert_eq!(req.min_snapshot_sequence, 0);

        let mut enc = ChunkEncoder::new(Rpc::Unary);
        enc.push(fields(&listings[3]));
        let req = v1::CheckRequest::decode(enc.finish(7)).unwrap();
        assert_eq!(req.listing.as_ref(), Some(&listings[3]));
        assert_eq!(req.min_snapshot_sequence, 7);
    }

    #[test]
    fn request_buffers_go_back_to_the_pool_when_sent() {
        let mut enc = ChunkEncoder::new(Rpc::Stream);
        enc.push(fields(&listing(1)));
        let a = enc.finish(0);
        let a_ptr = a.as_ptr();
        assert_eq!(enc.pool.0.lock().unwrap().len(), 0);
        let copy = a.clone();
        drop(a);
        assert_eq!(
            enc.pool.0.lock().unwrap().len(),
            0,
            "a clone is still alive"
        );
        drop(copy);
        assert_eq!(enc.pool.0.lock().unwrap().len(), 1);
        enc.push(fields(&listing(2)));
        let _b = enc.finish(0);
        enc.push(fields(&listing(3)));
        let c = enc.finish(0);
        assert_eq!(c.as_ptr(), a_ptr, "the returned buffer is reused");
        assert_eq!(
            v1::CheckRequest::decode(c).unwrap().listings,
            vec![listing(3)]
        );
    }

    #[test]
    fn varint_lengths_match_prost() {
        for v in [0u64, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            assert_eq!(varint_len(v), prost::encoding::encoded_len_varint(v), "{v}");
        }
    }

    fn results() -> Vec<v1::ListingResult> {
        vec![
            v1::ListingResult {
                listing_id: "L1".into(),
                outcome: Some(v1::listing_result::Outcome::Verdict(v1::Verdict {
                    decision: v1::Decision::Block as i32,
                    reason: v1::Reason::CertificateRevoked as i32,
                    snapshot_sequence: 9,
                    certificate: Some(v1::Certificate {
                        number: "2021010901000123".into(),
                        status: v1::CertificateStatus::Revoked as i32,
                        product_code: "0901".into(),
                        producer: "深圳市某某电子有限公司".into(),
                        expiry_date: "2026-03-09".into(),
                    }),
                })),
            },
            v1::ListingResult {
                listing_id: "L2".into(),
                outcome: Some(v1::listing_result::Outcome::Error(v1::ListingError {
                    field: "merchant_id".into(),
                    message: "merchant_id is required".into(),
                })),
            },
            v1::ListingResult {
                listing_id: "L3".into(),
                outcome: Some(v1::listing_result::Outcome::Verdict(v1::Verdict {
                    decision: v1::Decision::Allow as i32,
                    reason: v1::Reason::NotInCatalogue as i32,
                    snapshot_sequence: 9,
                    certificate: None,
                })),
            },
            v1::ListingResult {
                listing_id: String::new(),
                outcome: None,
            },
        ]
    }

    fn check_views(view: &ResponseView, bytes: &[u8]) {
        assert_eq!(view.len(), 4);
        assert_eq!(view.sequence, 9);
        assert_eq!(view.content_id(bytes).unwrap(), "ab".repeat(16));
        let r0 = ResultView::parse(view.result(bytes, 0)).unwrap();
        assert_eq!(r0.listing_id, "L1");
        assert_eq!(
            r0.outcome,
            Outcome::Verdict {
                decision: 2,
                reason: 7,
                sequence: 9,
                certificate: Some(CertView {
                    number: "2021010901000123",
                    status: 3,
                    product_code: "0901",
                    producer: "深圳市某某电子有限公司",
                    expiry_date: "2026-03-09",
                }),
            }
        );
        assert_eq!(
            ResultView::decision_and_reason(view.result(bytes, 0)).unwrap(),
            (2, 7)
        );
        let r1 = ResultView::parse(view.result(bytes, 1)).unwrap();
        assert_eq!(
            r1.outcome,
            Outcome::Error {
                field: "merchant_id",
                message: "merchant_id is required"
            }
        );
        assert_eq!(
            ResultView::decision_and_reason(view.result(bytes, 1)).unwrap(),
            (0, 0)
        );
        let r2 = ResultView::parse(view.result(bytes, 2)).unwrap();
        assert!(matches!(
            r2.outcome,
            Outcome::Verdict {
                certificate: None,
                reason: 1,
                ..
            }
        ));
        let r3 = ResultView::parse(view.result(bytes, 3)).unwrap();
        assert_eq!(r3.outcome, Outcome::Missing);
    }

    #[test]
    fn stream_and_batch_responses_read_in_place_like_prost() {
        let stream = v1::CheckResponse {
            result: None,
            results: results(),
            snapshot_sequence: 9,
            snapshot_content_id: "ab".repeat(16),
        }
        .encode_to_vec();
        let mut view = ResponseView::default();
        view.parse(Rpc::Stream, &stream).unwrap();
        check_views(&view, &stream);

        let batch = v1::CheckBatchResponse {
            results: results(),
            snapshot_sequence: 9,
            snapshot_content_id: "ab".repeat(16),
        }
        .encode_to_vec();
        view.parse(Rpc::Batch, &batch).unwrap();
        check_views(&view, &batch);
    }

    #[test]
    fn unary_response_has_its_one_result() {
        let unary = v1::CheckResponse {
            result: results().into_iter().next(),
            results: vec![],
            snapshot_sequence: 9,
            snapshot_content_id: "cd".repeat(16),
        }
        .encode_to_vec();
        let mut view = ResponseView::default();
        view.parse(Rpc::Unary, &unary).unwrap();
        assert_eq!(view.len(), 1);
        let r = ResultView::parse(view.result(&unary, 0)).unwrap();
        assert_eq!(r.listing_id, "L1");
    }

    #[test]
    fn truncated_or_garbled_responses_are_errors_not_panics() {
        let bytes = v1::CheckResponse {
            result: None,
            results: results(),
            snapshot_sequence: 9,
            snapshot_content_id: "ab".repeat(16),
        }
        .encode_to_vec();
        let mut view = ResponseView::default();
        for cut in 1..bytes.len() {
            // Any prefix either parses (it ended on a field boundary) or is an error.
            if view.parse(Rpc::Stream, &bytes[..cut]).is_ok() {
                for i in 0..view.len() {
                    let _ = ResultView::parse(view.result(&bytes[..cut], i));
                }
            }
        }
        assert!(view.parse(Rpc::Stream, &[0x12, 0xff]).is_err());
        assert!(view.parse(Rpc::Stream, &[0x0f]).is_err());
        assert!(view.parse(Rpc::Stream, &[0x80; 11]).is_err());
        assert!(ResultView::parse(&[0x0a, 0x02, 0xff, 0xfe]).is_err());
    }
}
