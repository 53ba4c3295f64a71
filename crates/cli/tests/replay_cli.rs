//! `cccgate replay` as a user runs it: the binary against the real gateway (started
//! in-process on an ephemeral port), a file with a malformed line, the summary on stderr and
//! in `--summary-json`; then a gateway that is not there.

use std::process::Command;
use std::time::Duration;

use cccgate_bench::embedded::{EmbeddedGateway, embedded_config, register_snapshot};
use cccgate_synth::{ListingGenerator, Profile, RegisterSpec};

fn cccgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cccgate"))
}

#[test]
fn replay_writes_a_verdict_per_record_and_a_summary_that_adds_up() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let spec = RegisterSpec {
        certs: 2_000,
        seed: 4,
        ..RegisterSpec::default()
    };
    let register = spec.generate();
    let mut text = String::new();
    for (i, g) in ListingGenerator::new(&register, Profile::Y2021, 8)
        .take(300)
        .enumerate()
    {
        if i == 42 {
            text.push_str("this is not JSON\n");
        }
        text.push_str(&serde_json::to_string(&g.event).unwrap());
        text.push('\n');
    }
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, text).unwrap();
    let dir = register_snapshot(&spec, register, &tmp.path().join("cache")).unwrap();
    let gw = rt
        .block_on(EmbeddedGateway::start(
            embedded_config(&dir),
            rt.handle(),
            Duration::from_secs(60),
        ))
        .unwrap();

    let out = tmp.path().join("out.jsonl");
    let summary = tmp.path().join("summary.json");
    let run = cccgate()
        .args([
            "replay",
            "--target",
            gw.target(),
            "--chunk",
            "50",
            "--progress",
            "lines",
        ])
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--summary-json")
        .arg(&summary)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("records"), "{stderr}");
    assert!(stderr.contains("line 43: not valid JSON"), "{stderr}");
    let lines = std::fs::read_to_string(&out).unwrap();
    assert_eq!(lines.lines().count(), 301);
    let bad: serde_json::Value = serde_json::from_str(lines.lines().nth(42).unwrap()).unwrap();
    assert_eq!(bad["line"], 43);
    assert!(bad["listing_id"].is_null());
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["records"], 301);
    assert_eq!(s["bad_lines"], 1);
    assert_eq!(
        s["decided"].as_u64().unwrap() + s["bad_requests"].as_u64().unwrap() + 1,
        301
    );
    assert_eq!(s["complete"], true);
    rt.block_on(gw.stop()).unwrap();
}

#[test]
fn replay_against_no_gateway_fails_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.jsonl");
    std::fs::write(&input, "{\"listing_id\":\"L1\",\"merchant_id\":\"M1\"}\n").unwrap();
    // A port bound but never listened on, held until the end: connections are refused, and
    // no other process can take it meanwhile (a port that was "just free" could).
    let refusing = tokio::net::TcpSocket::new_v4().unwrap();
    refusing.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let target = format!("http://{}", refusing.local_addr().unwrap());
    let run = cccgate()
        .args(["replay", "--target", &target, "--progress", "off"])
        .arg("--input")
        .arg(&input)
        .arg("--out")
        .arg(tmp.path().join("out.jsonl"))
        .output()
        .unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains(&target), "{stderr}");
    drop(refusing);
}
