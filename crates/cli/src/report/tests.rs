use std::io::Write;
use std::path::{Path, PathBuf};

use super::*;

/// 2021-01-31T15:59:59.999Z is 2021-01-31 23:59:59.999 in China; one ms later is February.
const JAN_LAST_MS: i64 = 1_612_108_799_999;

fn line(
    listing: &str,
    merchant: &str,
    decision: &str,
    reason: &str,
    at: i64,
    client: &str,
    code: &str,
) -> String {
    format!(
        r#"{{"listing_id":"{listing}","merchant_id":"{merchant}","product_code":"{code}","decision":"{decision}","reason":"{reason}","snapshot_sequence":7,"client":"{client}","at_unix_ms":{at}}}"#
    )
}

fn write_plain(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

fn write_gz(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let p = dir.join(name);
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&p).unwrap(),
        flate2::Compression::fast(),
    );
    gz.write_all((lines.join("\n") + "\n").as_bytes()).unwrap();
    gz.finish().unwrap();
    p
}

/// Three files: the current log (plain), a rotated one (plain) and an older gzipped one.
fn known_logs(dir: &Path) -> Vec<PathBuf> {
    let jan = JAN_LAST_MS;
    let feb = JAN_LAST_MS + 1;
    let current = vec![
        line("L1", "M1", "BLOCK", "CERTIFICATE_REVOKED", feb, "shop-a", "0901"),
        // L1 blocked again, another month's merchant M1 again.
        line("L1", "M1", "BLOCK", "CERTIFICATE_REVOKED", feb + 5, "shop-a", "0901"),
        line("L2", "M2", "ALLOW", "CERTIFICATE_VALID", feb, "shop-b", "0901"),
        r#"{"listing_id":"L9","merchant_id":"","error":"merchant_id is required","field":"merchant_id","snapshot_sequence":7,"client":"shop-a","at_unix_ms":1612108800000}"#.to_owned(),
    ];
    let rotated = vec![
        line(
            "L3",
            "M1",
            "REVIEW",
            "MODEL_NOT_COVERED",
            jan,
            "shop-a",
            "1101",
        ),
        line(
            "L4",
            "M3",
            "BLOCK",
            "CERTIFICATE_NOT_FOUND",
            jan,
            "shop-b",
            "1101",
        ),
    ];
    let old = vec![
        // Blocked in January by shop-a, as in February: one listing, two months.
        line(
            "L1",
            "M1",
            "BLOCK",
            "CERTIFICATE_EXPIRED",
            jan - 1000,
            "shop-a",
            "0901",
        ),
        line(
            "L5",
            "M4",
            "ALLOW",
            "CERTIFICATE_VALID",
            jan,
            "shop-b",
            "0901",
        ),
    ];
    vec![
        write_plain(dir, "decisions.log.1", &rotated),
        write_plain(dir, "decisions.log", &current),
        write_gz(dir, "decisions.log.2.gz", &old),
    ]
}

fn json(r: &Report) -> serde_json::Value {
    serde_json::to_value(r).unwrap()
}

fn expected() -> serde_json::Value {
    serde_json::json!({
        "totals": {"checks": 7, "merchants": 4, "listings_blocked": 2, "bad_requests": 1},
        "by_reason": {
            "NOT_IN_CATALOGUE": 0, "SELF_DECLARATION_PRODUCT": 0, "CERTIFICATE_MISSING": 0,
            "CERTIFICATE_MALFORMED": 0, "CERTIFICATE_NOT_FOUND": 1, "CERTIFICATE_SUSPENDED": 0,
            "CERTIFICATE_REVOKED": 2, "CERTIFICATE_CANCELLED": 0, "CERTIFICATE_EXPIRED": 1,
            "PRODUCT_MISMATCH": 0, "MODEL_NOT_COVERED": 1, "CERTIFICATE_VALID": 2
        },
        "by_decision": {"ALLOW": 2, "BLOCK": 4, "REVIEW": 1},
        "by_month": [
            {"month": "2021-01", "checks": 4, "merchants": 3, "listings_blocked": 2},
            {"month": "2021-02", "checks": 3, "merchants": 2, "listings_blocked": 1}
        ],
        "by_category": [
            {"product_code": "0901", "checks": 5, "listings_blocked": 1},
            {"product_code": "1101", "checks": 2, "listings_blocked": 1}
        ],
        "by_client": [
            {"client": "shop-a", "checks": 4, "listings_blocked": 1},
            {"client": "shop-b", "checks": 3, "listings_blocked": 1}
        ]
    })
}

#[test]
fn known_logs_give_exact_counts_in_china_time_months() {
    let dir = tempfile::tempdir().unwrap();
    let paths = known_logs(dir.path());
    let r = build(&paths, 0, 1 << 20, dir.path().to_path_buf()).unwrap();
    assert_eq!(json(&r), expected());
    // The key order of the JSON is the contract's.
    let text = serde_json::to_string(&r).unwrap();
    let keys = [
        "\"totals\"",
        "\"by_reason\"",
        "\"by_decision\"",
        "\"by_month\"",
        "\"by_category\"",
        "\"by_client\"",
    ];
    let at: Vec<usize> = keys.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn file_order_and_spilling_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = known_logs(dir.path());
    paths.reverse();
    // Two keys in memory at most: every distinct count goes through spilled runs.
    let r = build(&paths, 0, 2, dir.path().to_path_buf()).unwrap();
    assert_eq!(json(&r), expected());
}

#[test]
fn a_bad_line_is_named_by_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let good = line(
        "L1",
        "M1",
        "BLOCK",
        "CERTIFICATE_REVOKED",
        JAN_LAST_MS,
        "a",
        "0901",
    );
    let bad = line(
        "L2",
        "M1",
        "BLOCK",
        "CERTIFICATE_STOLEN",
        JAN_LAST_MS,
        "a",
        "0901",
    );
    let p = write_plain(dir.path(), "d.log", &[good.clone(), good.clone(), bad]);
    let err = build(
        std::slice::from_ref(&p),
        0,
        1 << 20,
        dir.path().to_path_buf(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("d.log line 3"), "{err}");
    assert!(err.contains("reason \"CERTIFICATE_STOLEN\""), "{err}");
    // Allowed to skip one: the rest is counted.
    let r = build(&[p], 1, 1 << 20, dir.path().to_path_buf()).unwrap();
    assert_eq!(r.totals.checks, 2);
    assert_eq!(r.totals.listings_blocked, 1);
}

#[test]
fn an_overlong_line_is_skipped_in_bounded_memory_and_the_next_lines_count() {
    let dir = tempfile::tempdir().unwrap();
    let good = line(
        "L1",
        "M1",
        "ALLOW",
        "CERTIFICATE_VALID",
        JAN_LAST_MS,
        "a",
        "0901",
    );
    // 3 MiB without a newline: longer than a read block, never held whole.
    let huge = format!(r#"{{"listing_id":"{}"}}"#, "x".repeat(3 << 20));
    let p = write_plain(
        dir.path(),
        "d.log",
        &[good.clone(), huge, good.clone(), good],
    );
    let err = build(
        std::slice::from_ref(&p),
        0,
        1 << 20,
        dir.path().to_path_buf(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("d.log line 2: longer than 65536 bytes"),
        "{err}"
    );
    let r = build(&[p], 1, 1 << 20, dir.path().to_path_buf()).unwrap();
    assert_eq!(r.totals.checks, 3);
}

#[test]
fn the_same_file_twice_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let paths = known_logs(dir.path());
    let again = dir.path().join(".").join("decisions.log");
    let err = build(
        &[paths[1].clone(), again],
        0,
        1 << 20,
        dir.path().to_path_buf(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("the same file"), "{err}");
}

#[test]
fn the_html_page_is_self_contained() {
    let dir = tempfile::tempdir().unwrap();
    let paths = known_logs(dir.path());
    let r = build(&paths, 0, 1 << 20, dir.path().to_path_buf()).unwrap();
    let page = html::page(&r, &paths);
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert_eq!(page.matches("<svg").count(), 4);
    assert!(
        page.contains("<td>2021-02</td><td>3</td><td>2</td><td>1</td>"),
        "{page}"
    );
    for external in ["<script", "http://", "https://", "src="] {
        assert!(!page.contains(external), "{external}");
    }
}

#[test]
fn more_callers_or_months_than_a_decision_log_has_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut tally = Tally::new(Distinct::new(1 << 20, dir.path().to_path_buf()), 0);
    for i in 0..MAX_CLIENTS {
        let l = line(
            "L1",
            "M1",
            "ALLOW",
            "CERTIFICATE_VALID",
            JAN_LAST_MS,
            &format!("c{i}"),
            "0901",
        );
        tally.add(l.as_bytes()).unwrap();
    }
    // Callers already seen still count; one more is refused, and counts nothing.
    let again = line(
        "L1",
        "M1",
        "ALLOW",
        "CERTIFICATE_VALID",
        JAN_LAST_MS,
        "c7",
        "0901",
    );
    tally.add(again.as_bytes()).unwrap();
    let more = line(
        "L1",
        "M1",
        "ALLOW",
        "CERTIFICATE_VALID",
        JAN_LAST_MS,
        "one-more",
        "0901",
    );
    let err = tally.add(more.as_bytes()).unwrap_err();
    assert!(
        err.contains("\"one-more\": more than 100000 callers"),
        "{err}"
    );
    assert_eq!(tally.checks, MAX_CLIENTS as u64 + 1);
    assert_eq!(tally.clients.len(), MAX_CLIENTS);

    let mut tally = Tally::new(Distinct::new(1 << 20, dir.path().to_path_buf()), 0);
    // One line in each of MAX_MONTHS months (31 days apart), then the first month again.
    let month_ms = 31 * 86_400_000;
    for i in 0..MAX_MONTHS as i64 {
        let l = line(
            "L1",
            "M1",
            "ALLOW",
            "CERTIFICATE_VALID",
            i * month_ms,
            "c",
            "0901",
        );
        tally.add(l.as_bytes()).unwrap();
    }
    tally
        .add(line("L1", "M1", "ALLOW", "CERTIFICATE_VALID", 0, "c", "0901").as_bytes())
        .unwrap();
    let over = line(
        "L1",
        "M1",
        "ALLOW",
        "CERTIFICATE_VALID",
        MAX_MONTHS as i64 * month_ms,
        "c",
        "0901",
    );
    let err = tally.add(over.as_bytes()).unwrap_err();
    assert!(err.contains("more than 1200 months"), "{err}");
    assert_eq!(tally.months.len(), MAX_MONTHS);
    assert_eq!(tally.months[0].1.checks, 2);
}
