//! Smoke test of `cccgate synth`: the binary writes drops the loader accepts, deltas on top of
//! the snapshot built from them, and listing files with their expected reasons.

use std::path::Path;
use std::process::{Command, Output};

fn cccgate(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_cccgate"))
        .args(args)
        .output()
        .expect("run cccgate");
    assert!(
        out.status.success(),
        "cccgate {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn rows(m: &serde_json::Value, kind: &str) -> u64 {
    m["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind)
        .map(|f| f["rows"].as_u64().unwrap())
        .sum()
}

#[test]
fn feed_then_load_then_delta_on_the_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let drop = tmp.path().join("drop-1");
    let d = drop.to_str().unwrap();
    let out = cccgate(&[
        "synth",
        "feed",
        "--out",
        d,
        "--certs",
        "2000",
        "--seed",
        "4",
        "--encoding",
        "gbk",
        "--gzip",
        "--files",
        "2",
        "--shuffle-columns",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrote full drop"), "{stderr}");
    assert!(stderr.contains("2000 certificates"), "{stderr}");
    let m = manifest(&drop);
    assert_eq!(m["kind"], "full");
    assert_eq!(m["encoding"], "gbk");
    assert_eq!(m["files"].as_array().unwrap().len(), 3);
    assert_eq!(rows(&m, "certificates"), 2000);

    // The loader takes it, and a delta on top of its snapshot.
    let snaps = tmp.path().join("snaps");
    let s = snaps.to_str().unwrap();
    cccgate(&["load", "build", "--drop", d, "--out", s]);
    let base = snaps.join("snap-1.ccc");
    let delta = tmp.path().join("drop-2");
    let dd = delta.to_str().unwrap();
    let out = cccgate(&[
        "synth",
        "feed",
        "--out",
        dd,
        "--delta-of",
        base.to_str().unwrap(),
        "--changes",
        // Within the loader's delta guard (validity of at most 5% of the valid certificates).
        "30",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrote delta"));
    let m = manifest(&delta);
    assert_eq!(m["kind"], "delta");
    assert_eq!(m["sequence"], 2);
    assert_eq!(m["base_sequence"], 1);
    assert_eq!(rows(&m, "certificates"), 30);
    assert_eq!(rows(&m, "catalogue"), 0);
    cccgate(&["load", "build", "--drop", dd, "--out", s]);
    assert!(snaps.join("snap-2.ccc").exists());
}

#[test]
fn listings_come_with_their_expected_reasons_and_are_deterministic() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let events = tmp.path().join(format!("{name}.csv"));
        let expected = tmp.path().join(format!("{name}.expected.jsonl"));
        cccgate(&[
            "synth",
            "listings",
            "--out",
            events.to_str().unwrap(),
            "--count",
            "500",
            "--profile",
            "2025",
            "--certs",
            "2000",
            "--format",
            "csv",
            "--expected",
            expected.to_str().unwrap(),
        ]);
        (
            std::fs::read_to_string(events).unwrap(),
            std::fs::read_to_string(expected).unwrap(),
        )
    };
    let (events, expected) = run("a");
    let mut lines = events.lines();
    assert_eq!(
        lines.next(),
        Some("listing_id,merchant_id,product_code,certificate_number,model,event_time")
    );
    // No generated field holds a comma or a quote, so the first field is the listing id.
    let ids: Vec<&str> = lines.map(|l| l.split(',').next().unwrap()).collect();
    assert_eq!(ids.len(), 500);
    let reasons: Vec<serde_json::Value> = expected
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reasons.len(), 500);
    for (id, e) in ids.iter().zip(&reasons) {
        assert_eq!(e["listing_id"], *id);
        assert!(
            e["reason"]
                .as_str()
                .unwrap()
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '_')
        );
    }
    assert_eq!(run("b"), (events, expected), "same seed, same files");
}

#[test]
fn listings_to_stdout_as_json_lines_without_event_times() {
    let out = cccgate(&[
        "synth",
        "listings",
        "--out",
        "-",
        "--count",
        "20",
        "--certs",
        "1000",
        "--no-event-time",
    ]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 20);
    for e in &events {
        assert_eq!(e["event_time"], "");
        assert!(!e["listing_id"].as_str().unwrap().is_empty());
    }
}

#[test]
fn changes_without_a_base_snapshot_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_cccgate"))
        .args(["synth", "feed", "--out"])
        .arg(tmp.path().join("x"))
        .args(["--changes", "10"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!tmp.path().join("x").exists());
}
