//! Verdict lines: the spec's JSON-lines output, one object per input record.
//!
//! A verdict line carries `listing_id`, `decision`, `reason`, `snapshot_sequence` and
//! `snapshot_content_id`, and when a certificate was found `certificate_number`,
//! `certificate_status`, `product_code`, `producer` and `expiry_date`. A listing the gateway
//! refused as a bad request is `listing_id`, `error`, `field` and `line`. A record that could
//! not even be read has no listing id to speak of: it is `"listing_id": null` (or the id,
//! when that much was readable), `error` and `line`, so the output keeps one line per input
//! record, in input order.
//!
//! Lines are serialised with serde, as the gateway's decision log is: the structs below are
//! the one description of a line. They borrow the response's bytes and are written straight
//! into a reused buffer by [`LineSerializer`], serde's data model for flat objects of strings,
//! integers and options: no intermediate value, no allocation per verdict. A string is
//! scanned for bytes to escape in one branch-free pass and copied whole when there are none
//! (almost always); control characters and DEL are escaped, `\n`, `\r` and `\t` as such and
//! the others as `\u00XX`, so every line is printable. (`serde_json`'s serializer, used here
//! before, looks up every byte of every key and value in its escape table and took 2.5 to 3
//! times as long a line: benches/README.md, "The wire".)

use std::fmt;

use cccgate_core::{Decision, Reason, Status};
use serde::Serialize;
use serde::ser::{self, Impossible};

use crate::wire::{CertView, Outcome, ResultView};

/// A verdict: the decision on one listing.
#[derive(Serialize)]
struct VerdictLine<'a> {
    listing_id: &'a str,
    decision: &'static str,
    reason: &'static str,
    snapshot_sequence: u64,
    snapshot_content_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_number: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    certificate_status: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    product_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    producer: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry_date: Option<&'a str>,
}

/// A record without a verdict: a bad request (`field` set) or an unreadable record.
#[derive(Serialize)]
struct ErrorLine<'a> {
    /// `null` when the record was not readable that far.
    listing_id: Option<&'a str>,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    line: u64,
}

/// Whether a byte must be escaped in a JSON string (DEL too, to keep lines printable).
#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// Appends `s` as a JSON string literal.
fn put_json_str(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Fast path, almost always taken: nothing to escape. The OR-reduction has no branch per
    // byte, so it vectorises.
    if !bytes.iter().fold(false, |acc, &b| acc | needs_escape(b)) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if !needs_escape(b) {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// A value a verdict line cannot hold (only flat objects of strings, integers, booleans and
/// options are lines): a programming error, caught by the tests.
#[derive(Debug)]
struct LineError(String);

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LineError {}

impl ser::Error for LineError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        LineError(msg.to_string())
    }
}

/// serde's serializer of one line: a flat JSON object of strings, integers, booleans, `null`
/// for `None`, written compactly (as `serde_json::to_writer` would, with DEL escaped too).
#[derive(Debug)]
struct LineSerializer<'a> {
    out: &'a mut Vec<u8>,
    /// The object has begun.
    open: bool,
    /// Fields written so far.
    fields: usize,
}

impl<'a> LineSerializer<'a> {
    /// A serializer appending to `out`.
    fn new(out: &'a mut Vec<u8>) -> Self {
        LineSerializer {
            out,
            open: false,
            fields: 0,
        }
    }
}

macro_rules! unsupported {
    ($($f:ident($($t:ty),*) -> $r:ty;)*) => {$(
        fn $f(self, $(_: $t),*) -> Result<$r, LineError> {
            Err(LineError(concat!("a verdict line cannot hold ", stringify!($f)).into()))
        }
    )*};
}

impl ser::Serializer for &mut LineSerializer<'_> {
    type Ok = ();
    type Error = LineError;
    type SerializeSeq = Impossible<(), LineError>;
    type SerializeTuple = Impossible<(), LineError>;
    type SerializeTupleStruct = Impossible<(), LineError>;
    type SerializeTupleVariant = Impossible<(), LineError>;
    type SerializeMap = Impossible<(), LineError>;
    type SerializeStruct = Self;
    type SerializeStructVariant = Impossible<(), LineError>;

    fn serialize_str(self, v: &str) -> Result<(), LineError> {
        put_json_str(self.out, v);
        Ok(())
    }

    fn serialize_u64(self, mut n: u64) -> Result<(), LineError> {
        let mut buf = [0u8; 20];
        let mut i = buf.len();
        loop {
            i -= 1;
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.out.extend_from_slice(&buf[i..]);
        Ok(())
    }

    fn serialize_u32(self, v: u32) -> Result<(), LineError> {
        self.serialize_u64(v.into())
    }

    fn serialize_i64(self, v: i64) -> Result<(), LineError> {
        if v < 0 {
            self.out.push(b'-');
        }
        self.serialize_u64(v.unsigned_abs())
    }

    fn serialize_i32(self, v: i32) -> Result<(), LineError> {
        self.serialize_i64(v.into())
    }

    fn serialize_bool(self, v: bool) -> Result<(), LineError> {
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }

    fn serialize_none(self) -> Result<(), LineError> {
        self.out.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), LineError> {
        value.serialize(self)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, LineError> {
        if self.open {
            return Err(LineError("a verdict line is one flat object".into()));
        }
        self.open = true;
        self.out.push(b'{');
        Ok(self)
    }

    unsupported! {
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), LineError> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), LineError> {
        Err(LineError("a verdict line cannot hold an enum".into()))
    }
}

impl ser::SerializeStruct for &mut LineSerializer<'_> {
    type Ok = ();
    type Error = LineError;

    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), LineError> {
        // Keys are the line structs' field names: identifiers, nothing to escape (debug
        // builds check), so they are copied as they are.
        debug_assert!(!key.bytes().any(needs_escape), "key {key:?}");
        self.out
            .extend_from_slice(if self.fields == 0 { b"\"" } else { b",\"" });
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.fields += 1;
        value.serialize(&mut **self)
    }

    fn end(self) -> Result<(), LineError> {
        self.out.push(b'}');
        Ok(())
    }
}

/// Appends `value` and a newline to `out`.
fn put_line<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    let start = out.len();
    match value.serialize(&mut LineSerializer::new(out)) {
        Ok(()) => out.push(b'\n'),
        // The line types are flat objects of strings and integers: cannot happen (tested).
        Err(_) => out.truncate(start),
    }
}

/// The decision of a wire decision number (`cccgate_proto`'s mapping).
pub fn decision_of(n: i32) -> Option<Decision> {
    cccgate_proto::decision_from_wire(n)
}

/// The reason of a wire reason number (the table's rule number; `cccgate_proto`'s mapping).
pub fn reason_of(n: i32) -> Option<Reason> {
    cccgate_proto::reason_from_wire(n)
}

/// The status name of a wire status number (`VALID`, ... ; `UNSPECIFIED` otherwise).
fn status_name(n: i32) -> &'static str {
    cccgate_proto::status_from_wire(n).map_or("UNSPECIFIED", Status::as_str)
}

/// Appends the line of one result of a response; `line` is the input line of its record.
/// `content_id` is the response message's snapshot content id.
pub fn put_result(out: &mut Vec<u8>, r: &ResultView<'_>, content_id: &str, line: u64) {
    match r.outcome {
        Outcome::Verdict {
            decision,
            reason,
            sequence,
            certificate,
        } => {
            let c = certificate.as_ref();
            let v = VerdictLine {
                listing_id: r.listing_id,
                decision: decision_of(decision).map_or("UNSPECIFIED", Decision::as_str),
                reason: reason_of(reason).map_or("UNSPECIFIED", Reason::as_str),
                snapshot_sequence: sequence,
                snapshot_content_id: content_id,
                certificate_number: c.map(|c| c.number),
                certificate_status: c.map(|c: &CertView<'_>| status_name(c.status)),
                product_code: c.map(|c| c.product_code),
                producer: c.map(|c| c.producer),
                expiry_date: c.map(|c| c.expiry_date),
            };
            put_line(out, &v);
        }
        Outcome::Error { field, message } => {
            put_error(out, Some(r.listing_id), message, Some(field), line);
        }
        Outcome::Missing => put_error(
            out,
            Some(r.listing_id),
            "the gateway returned neither a verdict nor an error",
            None,
            line,
        ),
    }
}

/// Appends an error line: a bad request (`field` set) or an unreadable record.
pub fn put_error(
    out: &mut Vec<u8>,
    listing_id: Option<&str>,
    error: &str,
    field: Option<&str>,
    line: u64,
) {
    put_line(
        out,
        &ErrorLine {
            listing_id,
            error,
            field,
            line,
        },
    );
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn parse(out: &[u8]) -> Value {
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(out).unwrap()
    }

    #[test]
    fn verdict_line_has_the_spec_fields_and_the_certificate() {
        let mut out = Vec::new();
        let r = ResultView {
            listing_id: "L\"1\"\n",
            outcome: Outcome::Verdict {
                decision: 2,
                reason: 7,
                sequence: 12,
                certificate: Some(CertView {
                    number: "2021010901000123",
                    status: 3,
                    product_code: "0901",
                    producer: "深圳市\u{1}某某",
                    expiry_date: "2027-01-31",
                }),
            },
        };
        put_result(&mut out, &r, "ab12", 5);
        assert_eq!(
            parse(&out),
            json!({
                "listing_id": "L\"1\"\n",
                "decision": "BLOCK",
                "reason": "CERTIFICATE_REVOKED",
                "snapshot_sequence": 12,
                "snapshot_content_id": "ab12",
                "certificate_number": "2021010901000123",
                "certificate_status": "REVOKED",
                "product_code": "0901",
                "producer": "深圳市\u{1}某某",
                "expiry_date": "2027-01-31",
            })
        );
    }

    #[test]
    fn verdict_without_certificate_has_no_certificate_fields() {
        let mut out = Vec::new();
        let r = ResultView {
            listing_id: "L2",
            outcome: Outcome::Verdict {
                decision: 1,
                reason: 1,
                sequence: 3,
                certificate: None,
            },
        };
        put_result(&mut out, &r, "c", 9);
        let v = parse(&out);
        assert_eq!(v["decision"], "ALLOW");
        assert_eq!(v["reason"], "NOT_IN_CATALOGUE");
        assert!(v.get("certificate_status").is_none());
        assert!(v.get("line").is_none());
    }

    #[test]
    fn bad_request_line_names_listing_field_and_line() {
        let mut out = Vec::new();
        let r = ResultView {
            listing_id: "L3",
            outcome: Outcome::Error {
                field: "merchant_id",
                message: "merchant_id is required",
            },
        };
        put_result(&mut out, &r, "c", 41);
        assert_eq!(
            parse(&out),
            json!({"listing_id": "L3", "error": "merchant_id is required", "field": "merchant_id", "line": 41})
        );
    }

    #[test]
    fn unreadable_record_line_has_a_null_listing_id_and_its_line() {
        let mut out = Vec::new();
        put_error(&mut out, None, "not valid JSON", None, 7);
        assert_eq!(
            parse(&out),
            json!({"listing_id": null, "error": "not valid JSON", "line": 7})
        );
    }

    #[test]
    fn every_ascii_character_round_trips_and_no_control_byte_is_written() {
        let s: String = (0u8..0x80).map(char::from).collect::<String>() + "证书\u{7f}";
        let mut out = Vec::new();
        put_error(&mut out, Some(&s), &s, Some(&s), 1);
        let body = &out[..out.len() - 1];
        assert!(
            body.iter().all(|&b| b >= 0x20 && b != 0x7f),
            "{}",
            String::from_utf8_lossy(&out)
        );
        let v = parse(&out);
        assert_eq!(v["listing_id"], s.as_str());
        assert_eq!(v["error"], s.as_str());
        assert_eq!(v["field"], s.as_str());
    }

    #[test]
    fn wire_numbers_map_to_core_names() {
        assert_eq!(decision_of(3), Some(Decision::Review));
        assert_eq!(decision_of(0), None);
        assert_eq!(decision_of(4), None);
        assert_eq!(reason_of(12), Some(Reason::CertificateValid));
        assert_eq!(reason_of(-1), None);
        assert_eq!(status_name(5), "EXPIRED");
        assert_eq!(status_name(9), "UNSPECIFIED");
    }

    /// The serializer writes flat objects only: anything else is refused with an error naming
    /// it, and `put_line` leaves nothing of the line behind.
    #[test]
    fn a_value_a_line_cannot_hold_is_refused_and_leaves_nothing() {
        #[derive(Serialize)]
        struct Inner {
            a: u64,
        }
        #[derive(Serialize)]
        struct Nested {
            id: &'static str,
            inner: Inner,
        }
        #[derive(Serialize)]
        struct Float {
            x: f64,
        }
        let mut out = b"kept\n".to_vec();
        put_line(
            &mut out,
            &Nested {
                id: "a",
                inner: Inner { a: 1 },
            },
        );
        put_line(&mut out, &Float { x: 1.5 });
        assert_eq!(out, b"kept\n");
        let mut buf = Vec::new();
        let e = Float { x: 1.5 }
            .serialize(&mut LineSerializer::new(&mut buf))
            .unwrap_err();
        assert!(e.to_string().contains("serialize_f64"), "{e}");
        let e = Nested {
            id: "a",
            inner: Inner { a: 1 },
        }
        .serialize(&mut LineSerializer::new(&mut Vec::new()))
        .unwrap_err();
        assert!(e.to_string().contains("flat object"), "{e}");
    }

    /// What serde_json reads back from a line is what was serialised, for every integer type
    /// and option a line may hold.
    #[test]
    fn integers_booleans_and_options_read_back_as_written() {
        #[derive(Serialize)]
        struct All<'a> {
            a: u64,
            b: i64,
            c: u32,
            d: i32,
            e: bool,
            f: Option<&'a str>,
            g: Option<u64>,
        }
        let mut out = Vec::new();
        put_line(
            &mut out,
            &All {
                a: u64::MAX,
                b: i64::MIN,
                c: 0,
                d: -7,
                e: true,
                f: None,
                g: Some(3),
            },
        );
        assert_eq!(
            parse(&out),
            json!({"a": u64::MAX, "b": i64::MIN, "c": 0, "d": -7, "e": true, "f": null, "g": 3})
        );
    }

    /// The exact bytes of verdict lines: every field, every escape, non-ASCII text, the
    /// names of unknown wire numbers, the largest sequence. Pinned when the lines were
    /// written by hand, kept by the serde writer.
    #[test]
    fn lines_are_pinned_to_the_byte() {
        let mut out = Vec::new();
        let cert = CertView {
            number: "2021010901000123",
            status: 3,
            product_code: "0901",
            producer: "深圳市某某电子有限公司 \"A\\B\"",
            expiry_date: "2027-01-31",
        };
        let verdict = |listing_id, decision, reason, sequence, certificate| ResultView {
            listing_id,
            outcome: Outcome::Verdict {
                decision,
                reason,
                sequence,
                certificate,
            },
        };
        let id = "L\"1\"\\ \n\r\t\u{1}\u{8}\u{c}\u{1f}\u{7f}/商品é\u{2028}😀";
        put_result(&mut out, &verdict(id, 2, 7, 12, Some(cert)), "ab12", 5);
        let odd = CertView { status: 9, ..cert };
        put_result(&mut out, &verdict("L2", 0, 99, u64::MAX, Some(odd)), "", 6);
        put_result(&mut out, &verdict("商品-3", 1, 1, 0, None), "c", 7);
        let bad = ResultView {
            listing_id: "商品-4",
            outcome: Outcome::Error {
                field: "merchant_id",
                message: "merchant_id is required: \"\"",
            },
        };
        put_result(&mut out, &bad, "c", 8);
        let missing = ResultView {
            listing_id: "",
            outcome: Outcome::Missing,
        };
        put_result(&mut out, &missing, "c", 9);
        put_error(&mut out, None, "not valid JSON: '\u{0}'", None, 10);
        put_error(&mut out, Some("L\u{7f}11"), "bad", None, u64::MAX);
        let expected = concat!(
            r#"{"listing_id":"L\"1\"\\ \n\r\t\u0001\u0008\u000c\u001f\u007f/商品é"#,
            "\u{2028}😀",
            r#"","decision":"BLOCK","reason":"CERTIFICATE_REVOKED","snapshot_sequence":12,"snapshot_content_id":"ab12","certificate_number":"2021010901000123","certificate_status":"REVOKED","product_code":"0901","producer":"深圳市某某电子有限公司 \"A\\B\"","expiry_date":"2027-01-31"}"#,
            "\n",
            r#"{"listing_id":"L2","decision":"UNSPECIFIED","reason":"UNSPECIFIED","snapshot_sequence":18446744073709551615,"snapshot_content_id":"","certificate_number":"2021010901000123","certificate_status":"UNSPECIFIED","product_code":"0901","producer":"深圳市某某电子有限公司 \"A\\B\"","expiry_date":"2027-01-31"}"#,
            "\n",
            r#"{"listing_id":"商品-3","decision":"ALLOW","reason":"NOT_IN_CATALOGUE","snapshot_sequence":0,"snapshot_content_id":"c"}"#,
            "\n",
            r#"{"listing_id":"商品-4","error":"merchant_id is required: \"\"","field":"merchant_id","line":8}"#,
            "\n",
            r#"{"listing_id":"","error":"the gateway returned neither a verdict nor an error","line":9}"#,
            "\n",
            r#"{"listing_id":null,"error":"not valid JSON: '\u0000'","line":10}"#,
            "\n",
            r#"{"listing_id":"L\u007f11","error":"bad","line":18446744073709551615}"#,
            "\n",
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
