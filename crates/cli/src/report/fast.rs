//! A decision log line read without serde: the common line (one flat JSON object, strings
//! without escapes, integers) is scanned once, borrowing its strings. Anything else (an
//! escape, a float, a nested value, a repeated field, bad JSON) gives `None`, and the line goes
//! to `serde_json`, which reads it or names what is wrong: this scanner only ever accepts
//! lines serde_json reads the same way (tested below), so the report does not depend on which
//! of the two read a line.

use std::borrow::Cow;

use super::Line;

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// A string without escapes starting at `i` (its opening quote): the text and the index after
/// the closing quote.
fn string(s: &str, i: usize) -> Option<(&str, usize)> {
    let b = s.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let mut j = start;
    while let Some(&c) = b.get(j) {
        match c {
            b'"' => return Some((&s[start..j], j + 1)),
            b'\\' | 0..=0x1f => return None,
            _ => j += 1,
        }
    }
    None
}

/// A JSON integer (no fraction, no exponent, no leading zero) that fits an i64.
fn integer(b: &[u8], i: usize) -> Option<(i64, usize)> {
    let mut j = i;
    let negative = b.get(j) == Some(&b'-');
    if negative {
        j += 1;
    }
    let digits = j;
    let mut n: i64 = 0;
    while let Some(&c @ b'0'..=b'9') = b.get(j) {
        let d = i64::from(c - b'0');
        n = n.checked_mul(10).and_then(|n| {
            if negative {
                n.checked_sub(d)
            } else {
                n.checked_add(d)
            }
        })?;
        j += 1;
    }
    let len = j - digits;
    if len == 0 || (len > 1 && b[digits] == b'0') {
        return None;
    }
    if let Some(b'.' | b'e' | b'E') = b.get(j) {
        return None;
    }
    Some((n, j))
}

enum Value<'a> {
    Str(&'a str),
    Int(i64),
    Null,
    Other,
}

/// The line, if it is a flat object of strings without escapes, integers, `true`, `false` and
/// `null`, each known field at most once; `None` otherwise.
pub(super) fn line(text: &[u8]) -> Option<Line<'_>> {
    let s = std::str::from_utf8(text).ok()?;
    let b = s.as_bytes();
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    let mut out = Line::default();
    let mut seen = 0u8;
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            let (key, j) = string(s, i)?;
            i = skip_ws(b, j);
            if b.get(i) != Some(&b':') {
                return None;
            }
            i = skip_ws(b, i + 1);
            let value = match b.get(i)? {
                b'"' => {
                    let (v, j) = string(s, i)?;
                    i = j;
                    Value::Str(v)
                }
                b'-' | b'0'..=b'9' => {
                    let (n, j) = integer(b, i)?;
                    i = j;
                    Value::Int(n)
                }
                _ => {
                    let word = [
                        ("null", Value::Null),
                        ("true", Value::Other),
                        ("false", Value::Other),
                    ]
                    .into_iter()
                    .find(|(w, _)| b[i..].starts_with(w.as_bytes()))?;
                    i += word.0.len();
                    word.1
                }
            };
            let field = match key {
                "listing_id" => Some((0, &mut out.listing_id)),
                "merchant_id" => Some((1, &mut out.merchant_id)),
                "decision" => Some((2, &mut out.decision)),
                "reason" => Some((3, &mut out.reason)),
                "client" => Some((4, &mut out.client)),
                "product_code" => Some((5, &mut out.product_code)),
                "error" => Some((6, &mut out.error)),
                _ => None,
            };
            let bit = |n: u8| 1u8 << n;
            match (field, value) {
                (Some((n, _)), _) if seen & bit(n) != 0 => return None,
                (Some((n, slot)), Value::Str(v)) => {
                    seen |= bit(n);
                    *slot = Some(Cow::Borrowed(v));
                }
                (Some((n, _)), Value::Null) => seen |= bit(n),
                (Some(_), _) => return None,
                (None, v) if key == "at_unix_ms" => {
                    if seen & bit(7) != 0 {
                        return None;
                    }
                    seen |= bit(7);
                    out.at_unix_ms = match v {
                        Value::Int(n) => Some(n),
                        Value::Null => None,
                        _ => return None,
                    };
                }
                (None, _) => {}
            }
            i = skip_ws(b, i);
            match b.get(i)? {
                b',' => i = skip_ws(b, i + 1),
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip_ws(b, i) == b.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde(text: &str) -> Option<Line<'_>> {
        serde_json::from_str(text).ok()
    }

    #[test]
    fn the_common_line_is_read_here_as_serde_json_reads_it() {
        let text = r#"{"listing_id":"L21-1-0000888001","merchant_id":"M00778215","product_code":"0203","decision":"ALLOW","reason":"CERTIFICATE_VALID","snapshot_sequence":1,"client":"anonymous","certificate_number":"2024010203000135","at_unix_ms":1795985325786}"#;
        let fast = line(text.as_bytes()).expect("read without serde");
        assert_eq!(Some(&fast), serde(text).as_ref());
        assert_eq!(fast.listing_id.as_deref(), Some("L21-1-0000888001"));
        assert_eq!(fast.at_unix_ms, Some(1_795_985_325_786));
        let error = r#" { "listing_id" : "L9", "merchant_id":"", "error":"merchant_id is required","field":"merchant_id","ok":true,"x":null,"n":-0,"at_unix_ms":-5 } "#;
        let fast = line(error.as_bytes()).expect("read without serde");
        assert_eq!(Some(&fast), serde(error).as_ref());
        assert_eq!(fast.at_unix_ms, Some(-5));
        assert_eq!(line(b"{}"), serde("{}"));
    }

    #[test]
    fn anything_unusual_is_left_to_serde_json() {
        for text in [
            r#"{"listing_id":"L\"1"}"#,                 // an escape
            r#"{"listing_id":"L1","listing_id":"L2"}"#, // a field twice
            r#"{"at_unix_ms":1,"at_unix_ms":2}"#,       // a field twice
            r#"{"at_unix_ms":1.5}"#,                    // a float
            r#"{"at_unix_ms":1e3}"#,                    // an exponent
            r#"{"at_unix_ms":012}"#,                    // a leading zero
            r#"{"at_unix_ms":99999999999999999999}"#,   // over i64
            r#"{"at_unix_ms":"1"}"#,                    // a string for a number
            r#"{"listing_id":7}"#,                      // a number for a string
            r#"{"listing_id":true}"#,                   // a bool for a string
            r#"{"x":{"y":1}}"#,                         // nested
            r#"{"x":[1]}"#,                             // an array
            r#"{"listing_id":"L1",}"#,                  // a trailing comma
            r#"{"listing_id":"L1"} x"#,                 // trailing text
            r#"{"listing_id":"L1""#,                    // cut short
            r#"{"listing_id" "L1"}"#,                   // no colon
            r#"{"x":nul}"#,                             // a bad word
            r#"{"x":-}"#,                               // a bare minus
            "{\"listing_id\":\"L\t1\"}",                // a control character
            r#"["listing_id"]"#,                        // not an object
            "",
        ] {
            assert_eq!(line(text.as_bytes()), None, "{text}");
        }
        // Not UTF-8.
        assert_eq!(line(b"{\"listing_id\":\"\xff\"}"), None);
    }

    #[test]
    fn whatever_is_read_here_is_what_serde_json_reads() {
        // Every prefix and every one-byte change of a line: if the scanner reads it, serde_json
        // reads the same.
        let text = r#"{"listing_id":"L1","merchant_id":"M1","decision":"BLOCK","reason":"CERTIFICATE_REVOKED","client":"c","product_code":"0901","n":null,"t":true,"at_unix_ms":1612108800000}"#;
        let mut checked = 0;
        let mut variants: Vec<Vec<u8>> = (0..=text.len())
            .map(|n| text.as_bytes()[..n].to_vec())
            .collect();
        for at in 0..text.len() {
            for c in [
                b' ', b'"', b',', b':', b'}', b'{', b'0', b'-', b'.', b'a', b'\\',
            ] {
                let mut v = text.as_bytes().to_vec();
                v[at] = c;
                variants.push(v);
            }
        }
        for v in &variants {
            if let Some(fast) = line(v) {
                let serde: Line<'_> = serde_json::from_slice(v).unwrap_or_else(|e| {
                    panic!(
                        "read here, refused by serde_json ({e}): {}",
                        String::from_utf8_lossy(v)
                    )
                });
                assert_eq!(fast, serde, "{}", String::from_utf8_lossy(v));
                checked += 1;
            }
        }
        assert!(checked > 100, "{checked}");
    }
}
