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
//! Lines are serialised with serde, as the gateway's decision log is, from structs that
//! borrow the response's bytes, straight into a reused buffer: no intermediate value, no
//! allocation per verdict. [`LineFormatter`] keeps every line printable: control characters
//! and DEL are escaped, `\n`, `\r` and `\t` as such and the others as `\u00XX`.

use std::io;

use cccgate_core::{Decision, Reason, Status};
use serde::Serialize;
use serde_json::ser::{CharEscape, Formatter};

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

/// serde_json's compact output, with every control character and DEL escaped: `\n`, `\r`,
/// `\t` by name, the others (backspace and form feed too) as `\u00XX`, so a line never holds
/// a byte a terminal or a line-based tool would act on.
#[derive(Clone, Copy, Debug, Default)]
pub struct LineFormatter;

impl Formatter for LineFormatter {
    fn write_string_fragment<W>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        // serde_json leaves DEL as it is; it is rare, so one scan finds that there is none.
        let bytes = fragment.as_bytes();
        if !bytes.contains(&0x7f) {
            return writer.write_all(bytes);
        }
        for (i, part) in bytes.split(|&b| b == 0x7f).enumerate() {
            if i > 0 {
                writer.write_all(b"\\u007f")?;
            }
            writer.write_all(part)?;
        }
        Ok(())
    }

    fn write_char_escape<W>(&mut self, writer: &mut W, escape: CharEscape) -> io::Result<()>
    where
        W: ?Sized + io::Write,
    {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let control = |b: u8| {
            [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]
        };
        match escape {
            CharEscape::Quote => writer.write_all(b"\\\""),
            CharEscape::ReverseSolidus => writer.write_all(b"\\\\"),
            CharEscape::Solidus => writer.write_all(b"\\/"),
            CharEscape::LineFeed => writer.write_all(b"\\n"),
            CharEscape::CarriageReturn => writer.write_all(b"\\r"),
            CharEscape::Tab => writer.write_all(b"\\t"),
            CharEscape::Backspace => writer.write_all(&control(0x08)),
            CharEscape::FormFeed => writer.write_all(&control(0x0c)),
            CharEscape::AsciiControl(b) => writer.write_all(&control(b)),
        }
    }
}

/// Appends `value` and a newline to `out` with [`LineFormatter`].
fn put_line<T: Serialize>(out: &mut Vec<u8>, value: &T) {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, LineFormatter);
    // Plain strings and integers into a Vec: serialising cannot fail.
    if value.serialize(&mut ser).is_ok() {
        out.push(b'\n');
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
