//! Answers written straight into their protobuf bytes: no `ListingResult`, no `String` per
//! verdict. The listing id is copied from the request's bytes, the certificate's fixed-width
//! fields are formatted on the stack ([`CertificateText`]) and its producer copied from the
//! snapshot, each once, into one buffer per response message.
//!
//! Byte for byte what prost writes for the same `CheckResponse` or `CheckBatchResponse`
//! (fields in number order, proto3 defaults left out), so any client decodes them unchanged;
//! tested against prost below and end to end in `tests/gateway_wire.rs`.
//!
//! **Lean answers** (the call's metadata `cccgate-answer: lean`) leave each verdict's
//! `certificate` out: decision, reason and snapshot sequence only, for callers that need no
//! more (see the byte counts in `benches/README.md`).

use bytes::Bytes;
use cccgate_core::{CertFacts, Verdict};
use cccgate_proto::v1::{Decision as WireDecision, Reason as WireReason};
use cccgate_proto::{CertificateText, InvalidListing};

use crate::wire::Shape;

/// The metadata key that asks for lean answers, and its value.
pub(crate) const ANSWER_KEY: &str = "cccgate-answer";
/// See [`ANSWER_KEY`].
pub(crate) const LEAN: &str = "lean";

/// Whether a call's metadata asks for lean answers.
pub(crate) fn is_lean(headers: &tonic::codegen::http::HeaderMap) -> bool {
    headers
        .get(ANSWER_KEY)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(LEAN.as_bytes()))
}

/// One response message being written.
#[derive(Debug)]
pub(crate) struct Encoded {
    /// A `Vec`, not a `BytesMut`: a push after the reserve is one compare and a store
    /// (`Bytes::from` at the end takes it without a copy).
    buf: Vec<u8>,
    shape: Shape,
    lean: bool,
    /// The field the next result goes to (`result` or `results`).
    field: u8,
}

/// Bytes of a verdict with its certificate, for reserving: listing id, verdict, certificate
/// with a producer name of average length. A longer one grows the buffer.
const TYPICAL_RESULT_BYTES: usize = 128;

impl Encoded {
    /// A response of `shape` with room for about `listings` results.
    pub fn new(shape: Shape, lean: bool, listings: usize) -> Self {
        let each = if lean { 48 } else { TYPICAL_RESULT_BYTES };
        Encoded {
            buf: Vec::with_capacity(listings.saturating_mul(each).min(1 << 24) + 64),
            shape,
            lean,
            field: match shape {
                Shape::Request => 2,
                Shape::Batch => 1,
            },
        }
    }

    /// Writes the next result to `CheckResponse.result` (field 1) instead of `results`; call
    /// before the first of `results` (fields are written in number order).
    pub fn single(&mut self) -> &mut Self {
        debug_assert!(self.shape == Shape::Request && self.buf.is_empty());
        self.field = 1;
        self
    }

    /// The answer to one listing: its id and verdict.
    #[inline]
    pub fn verdict(&mut self, listing_id: &str, v: &Verdict<'_>) {
        let cert = (!self.lean)
            .then_some(v.certificate.as_ref())
            .flatten()
            .map(|c| (CertificateText::of(c), c.producer));
        let cert_len = cert
            .as_ref()
            .map(|(t, producer)| certificate_len(t, producer));
        self.verdict_with(listing_id, v, cert_len, |b| {
            if let Some((t, producer)) = cert {
                put_certificate(b, &t, producer);
            }
        });
    }

    /// The answer to one listing whose verdict reports the certificate whose fields
    /// [`certificate_body`] wrote to `certificate`: the same bytes as [`Encoded::verdict`],
    /// with the certificate copied instead of formatted again (a watch pass answers every
    /// listing of a changed certificate with the same one).
    #[inline]
    pub fn verdict_prepared(&mut self, listing_id: &str, v: &Verdict<'_>, certificate: &[u8]) {
        let cert = (!self.lean && v.certificate.is_some()).then_some(certificate);
        self.verdict_with(listing_id, v, cert.map(<[u8]>::len), |b| {
            if let Some(c) = cert {
                b.extend_from_slice(c);
            }
        });
    }

    /// A verdict whose certificate's fields (`cert_len` bytes, if any) `write_cert` writes.
    #[inline]
    fn verdict_with(
        &mut self,
        listing_id: &str,
        v: &Verdict<'_>,
        cert_len: Option<usize>,
        write_cert: impl FnOnce(&mut Vec<u8>),
    ) {
        let decision = WireDecision::from(v.decision) as i32 as u64;
        let reason = WireReason::from(v.reason) as i32 as u64;
        let verdict_len = varint_field_len(decision)
            + varint_field_len(reason)
            + varint_field_len(v.snapshot_sequence)
            + cert_len.map_or(0, message_field_len);
        self.begin_result(listing_id, message_field_len(verdict_len));
        let b = &mut self.buf;
        put_key(b, 2, LEN);
        put_varint(b, verdict_len as u64);
        put_varint_field(b, 1, decision);
        put_varint_field(b, 2, reason);
        put_varint_field(b, 3, v.snapshot_sequence);
        if let Some(len) = cert_len {
            put_key(b, 4, LEN);
            put_varint(b, len as u64);
            write_cert(b);
        }
        self.field = self.results_field();
    }

    /// The answer to a bad listing: its id (as the error keeps it) and the error.
    pub fn error(&mut self, invalid: &InvalidListing) {
        self.error_parts(
            &invalid.listing_id,
            invalid.field(),
            &invalid.error.to_string(),
        );
    }

    /// The answer to a bad listing from its parts.
    pub fn error_parts(&mut self, listing_id: &str, field: &str, message: &str) {
        let error_len = str_field_len(field.len()) + str_field_len(message.len());
        self.begin_result(listing_id, message_field_len(error_len));
        let b = &mut self.buf;
        put_key(b, 3, LEN);
        put_varint(b, error_len as u64);
        put_str_field(b, 1, field.as_bytes());
        put_str_field(b, 2, message.as_bytes());
        self.field = self.results_field();
    }

    /// Ends the message with the snapshot that decided it.
    pub fn finish(mut self, sequence: u64, content_id: &str) -> Bytes {
        let (seq_field, id_field) = match self.shape {
            Shape::Request => (3, 4),
            Shape::Batch => (2, 3),
        };
        put_varint_field(&mut self.buf, seq_field, sequence);
        put_str_field(&mut self.buf, id_field, content_id.as_bytes());
        Bytes::from(self.buf)
    }

    /// Ends a `WatchListingsResponse` (written with [`Shape::Batch`]: its `results` are field
    /// 1 too) with its snapshot sequence (field 2) and event (field 3).
    pub fn finish_watch(mut self, sequence: u64, event: i32) -> Bytes {
        debug_assert!(self.shape == Shape::Batch);
        put_varint_field(&mut self.buf, 2, sequence);
        put_varint_field(&mut self.buf, 3, event as u64);
        Bytes::from(self.buf)
    }

    fn results_field(&self) -> u8 {
        match self.shape {
            Shape::Request => 2,
            Shape::Batch => 1,
        }
    }

    /// The `ListingResult` key, length and id; the outcome (`outcome_len` bytes) follows.
    #[inline]
    fn begin_result(&mut self, listing_id: &str, outcome_len: usize) {
        let len = str_field_len(listing_id.len()) + outcome_len;
        let b = &mut self.buf;
        b.reserve(len + 8);
        put_key(b, self.field, LEN);
        put_varint(b, len as u64);
        put_str_field(b, 1, listing_id.as_bytes());
    }
}

/// Writes the fields of `c` as a verdict's `certificate` holds them (without the field's key
/// and length), for [`Encoded::verdict_prepared`]; `out` is cleared first.
pub(crate) fn certificate_body(c: &CertFacts<'_>, out: &mut Vec<u8>) {
    out.clear();
    put_certificate(out, &CertificateText::of(c), c.producer);
}

#[inline]
fn put_certificate(b: &mut Vec<u8>, t: &CertificateText, producer: &str) {
    put_str_field(b, 1, &t.number);
    put_varint_field(b, 2, t.status as u64);
    put_str_field(b, 3, &t.product_code);
    put_str_field(b, 4, producer.as_bytes());
    put_str_field(b, 5, &t.expiry_date);
}

fn certificate_len(t: &CertificateText, producer: &str) -> usize {
    str_field_len(t.number.len())
        + varint_field_len(t.status as u64)
        + str_field_len(t.product_code.len())
        + str_field_len(producer.len())
        + str_field_len(t.expiry_date.len())
}

const VARINT: u8 = 0;
const LEN: u8 = 2;

/// Field numbers here are all under 16: one byte of key.
#[inline]
fn put_key(b: &mut Vec<u8>, field: u8, wire_type: u8) {
    b.push(field << 3 | wire_type);
}

#[inline]
fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push(v as u8 | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

#[inline]
fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least 1.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A varint field, left out when zero (proto3).
#[inline]
fn put_varint_field(b: &mut Vec<u8>, field: u8, v: u64) {
    if v != 0 {
        put_key(b, field, VARINT);
        put_varint(b, v);
    }
}

#[inline]
fn varint_field_len(v: u64) -> usize {
    if v == 0 { 0 } else { 1 + varint_len(v) }
}

/// A string field, left out when empty (proto3).
#[inline]
fn put_str_field(b: &mut Vec<u8>, field: u8, s: &[u8]) {
    if !s.is_empty() {
        put_key(b, field, LEN);
        put_varint(b, s.len() as u64);
        b.extend_from_slice(s);
    }
}

#[inline]
fn str_field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + varint_len(len as u64) + len
    }
}

/// A message field (always written when present, even empty).
#[inline]
fn message_field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use cccgate_core::{CertFacts, CertNumber, Day, Decision, ListingError, ProductCode, Reason};
    use cccgate_proto::v1::listing_result::Outcome;
    use cccgate_proto::v1::{CheckBatchResponse, CheckResponse, ListingResult};
    use cccgate_proto::verdict_to_wire;
    use prost::Message;

    fn verdicts() -> Vec<Verdict<'static>> {
        let cert = |producer: &'static str, seq: u64| CertFacts {
            number: CertNumber::from_u64(2021010901000123 + seq % 1000).unwrap(),
            status: cccgate_core::Status::Expired,
            product_code: ProductCode::new(901).unwrap(),
            producer,
            expires: Day::from_ymd(2026, 3, 9).unwrap(),
        };
        let long = "某".repeat(100); // a producer over 127 bytes: a two-byte length
        let long: &'static str = Box::leak(long.into_boxed_str());
        let mut out = Vec::new();
        for (i, reason) in Reason::ALL.iter().enumerate() {
            for seq in [0, 1, 300, u64::MAX] {
                let certificate = match i % 3 {
                    0 => None,
                    1 => Some(cert("某某电子有限公司", seq)),
                    _ => Some(cert(long, seq)),
                };
                out.push(Verdict {
                    decision: [Decision::Allow, Decision::Block, Decision::Review][i % 3],
                    reason: *reason,
                    snapshot_sequence: seq,
                    certificate,
                });
            }
        }
        out
    }

    fn invalid(id: &str) -> InvalidListing {
        InvalidListing {
            listing_id: id.into(),
            error: ListingError::Missing("merchant_id"),
        }
    }

    fn prost_result(id: &str, v: &Verdict<'_>, lean: bool) -> ListingResult {
        let mut w = verdict_to_wire(v);
        if lean {
            w.certificate = None;
        }
        ListingResult {
            listing_id: id.into(),
            outcome: Some(Outcome::Verdict(w)),
        }
    }

    #[test]
    fn batch_bytes_are_what_prost_writes() {
        for lean in [false, true] {
            let mut enc = Encoded::new(Shape::Batch, lean, 4);
            let mut want = CheckBatchResponse::default();
            for (i, v) in verdicts().iter().enumerate() {
                // Ids empty, short and over 127 bytes.
                let id = ["".to_owned(), format!("L{i}"), "i".repeat(130 + i)][i % 3].clone();
                enc.verdict(&id, v);
                want.results.push(prost_result(&id, v, lean));
                if i % 5 == 0 {
                    enc.error(&invalid(&id));
                    want.results.push(invalid(&id).to_result());
                }
            }
            want.snapshot_sequence = 1 << 40;
            want.snapshot_content_id = "0123456789abcdef0123456789abcdef".into();
            let got = enc.finish(want.snapshot_sequence, &want.snapshot_content_id);
            assert_eq!(got.as_ref(), want.encode_to_vec().as_slice(), "lean {lean}");
        }
    }

    #[test]
    fn a_prepared_certificate_gives_the_same_bytes() {
        for lean in [false, true] {
            let (mut a, mut b) = (
                Encoded::new(Shape::Batch, lean, 4),
                Encoded::new(Shape::Batch, lean, 4),
            );
            let mut body = Vec::new();
            for (i, v) in verdicts().iter().enumerate() {
                let id = format!("L{i}");
                a.verdict(&id, v);
                // A stale body must not leak into a verdict without a certificate.
                body.extend_from_slice(b"stale");
                if let Some(c) = &v.certificate {
                    certificate_body(c, &mut body);
                }
                b.verdict_prepared(&id, v, &body);
            }
            assert_eq!(a.finish(7, "x"), b.finish(7, "x"), "lean {lean}");
        }
    }

    #[test]
    fn watch_bytes_are_what_prost_writes() {
        use cccgate_proto::v1::{WatchEvent, WatchListingsResponse};
        for (n, sequence) in [(0, 0), (1, 7), (5, 1 << 40)] {
            let mut enc = Encoded::new(Shape::Batch, false, n);
            let mut want = WatchListingsResponse {
                snapshot_sequence: sequence,
                event: WatchEvent::Changed as i32,
                ..Default::default()
            };
            for (i, v) in verdicts().iter().take(n).enumerate() {
                let id = format!("w{i}");
                enc.verdict(&id, v);
                want.results.push(prost_result(&id, v, false));
            }
            let got = enc.finish_watch(sequence, WatchEvent::Changed as i32);
            assert_eq!(got.as_ref(), want.encode_to_vec().as_slice(), "{n} results");
            assert_eq!(WatchListingsResponse::decode(got).unwrap(), want);
        }
    }

    #[test]
    fn response_bytes_are_what_prost_writes_with_and_without_result() {
        let vs = verdicts();
        for (single, listings) in [(true, 0), (true, 3), (false, 3), (false, 0)] {
            let mut enc = Encoded::new(Shape::Request, false, 4);
            let mut want = CheckResponse::default();
            if single {
                enc.single().verdict("one", &vs[7]);
                want.result = Some(prost_result("one", &vs[7], false));
            }
            for v in &vs[..listings] {
                enc.verdict("many", v);
                want.results.push(prost_result("many", v, false));
            }
            let got = enc.finish(0, "");
            assert_eq!(got.as_ref(), want.encode_to_vec().as_slice());
        }
        // A single bad listing in a stream message goes to `result` too.
        let mut enc = Encoded::new(Shape::Request, false, 1);
        enc.single().error(&invalid("x"));
        let want = CheckResponse {
            result: Some(invalid("x").to_result()),
            snapshot_sequence: 5,
            ..Default::default()
        };
        assert_eq!(enc.finish(5, "").as_ref(), want.encode_to_vec().as_slice());
    }

    #[test]
    fn lean_answers_are_smaller_and_keep_decision_and_reason() {
        let vs = verdicts();
        let v = vs.iter().find(|v| v.certificate.is_some()).unwrap();
        let size = |lean| {
            let mut enc = Encoded::new(Shape::Batch, lean, 1);
            enc.verdict("L1", v);
            enc.finish(0, "").len()
        };
        assert!(
            size(true) < size(false) / 2,
            "{} vs {}",
            size(true),
            size(false)
        );
        let mut enc = Encoded::new(Shape::Batch, true, 1);
        enc.verdict("L1", v);
        let got = CheckBatchResponse::decode(enc.finish(0, "")).unwrap();
        let Some(Outcome::Verdict(w)) = &got.results[0].outcome else {
            panic!("no verdict");
        };
        assert_eq!(
            (w.decision().to_core(), w.reason().to_core()),
            (Some(v.decision), Some(v.reason))
        );
        assert!(w.certificate.is_none());
    }

    #[test]
    fn varint_lengths_match_the_encoding() {
        for v in [0, 1, 127, 128, 16383, 16384, u64::from(u32::MAX), u64::MAX] {
            let mut b = Vec::new();
            put_varint(&mut b, v);
            assert_eq!(b.len(), varint_len(v), "{v}");
        }
    }
}
