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
//! Lines are written with a small hand-rolled JSON writer into a reused buffer: no
//! intermediate value, no allocation per verdict.

use cccgate_core::{Decision, Reason, Status};

use crate::wire::{CertView, Outcome, ResultView};

/// Whether a byte must be escaped in a JSON string (DEL too, to keep output printable).
#[inline]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f
}

/// Appends `s` as a JSON string literal.
pub fn put_json_str(out: &mut Vec<u8>, s: &str) {
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

fn put_u64(out: &mut Vec<u8>, mut n: u64) {
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
    out.extend_from_slice(&buf[i..]);
}

fn key(out: &mut Vec<u8>, first: bool, k: &str) {
    out.extend_from_slice(if first { b"{\"" } else { b",\"" });
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

fn str_field(out: &mut Vec<u8>, k: &str, v: &str) {
    key(out, false, k);
    put_json_str(out, v);
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
            key(out, true, "listing_id");
            put_json_str(out, r.listing_id);
            str_field(
                out,
                "decision",
                decision_of(decision).map_or("UNSPECIFIED", Decision::as_str),
            );
            str_field(
                out,
                "reason",
                reason_of(reason).map_or("UNSPECIFIED", Reason::as_str),
            );
            key(out, false, "snapshot_sequence");
            put_u64(out, sequence);
            str_field(out, "snapshot_content_id", content_id);
            if let Some(c) = certificate {
                put_certificate(out, &c);
            }
            out.extend_from_slice(b"}\n");
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

fn put_certificate(out: &mut Vec<u8>, c: &CertView<'_>) {
    str_field(out, "certificate_number", c.number);
    str_field(out, "certificate_status", status_name(c.status));
    str_field(out, "product_code", c.product_code);
    str_field(out, "producer", c.producer);
    str_field(out, "expiry_date", c.expiry_date);
}

/// Appends an error line: a bad request (`field` set) or an unreadable record.
pub fn put_error(
    out: &mut Vec<u8>,
    listing_id: Option<&str>,
    error: &str,
    field: Option<&str>,
    line: u64,
) {
    key(out, true, "listing_id");
    match listing_id {
        Some(id) => put_json_str(out, id),
        None => out.extend_from_slice(b"null"),
    }
    str_field(out, "error", error);
    if let Some(f) = field {
        str_field(out, "field", f);
    }
    key(out, false, "line");
    put_u64(out, line);
    out.extend_from_slice(b"}\n");
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
    fn every_control_character_is_escaped() {
        let s: String = (0u8..0x80).map(char::from).collect::<String>() + "证书";
        let mut out = Vec::new();
        put_json_str(&mut out, &s);
        let back: String = serde_json::from_slice(&out).unwrap();
        assert_eq!(back, s);
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
