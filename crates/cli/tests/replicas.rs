//! Replicas on one machine, as processes: three `cccgate serve` on loopback sharing one
//! snapshot folder, the loader (`cccgate load build`) publishing into it, and `cccgate replay`
//! over all three (`--target` three times).
//!
//! - A replay during which one replica is killed (SIGKILL) and started again on its port
//!   writes exactly what a replay against one gateway writes, line for line.
//! - Each snapshot the loader publishes reaches every replica (bounded wait), and a replay
//!   with `--min-snapshot-sequence` of the sequence just published, over all replicas, gets
//!   every verdict from that snapshot or a newer one: read-your-writes across replicas.
//!
//! Waits are bounded; nothing is asserted about time beyond generous bounds.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const POLL_MS: u64 = 300;
/// Generous bound for anything that should take well under a second.
const BOUND: Duration = Duration::from_secs(60);

fn cccgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cccgate"))
}

fn run(args: &[&str]) -> String {
    let out = cccgate().args(args).output().expect("run cccgate");
    assert!(
        out.status.success(),
        "cccgate {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// A `cccgate serve` process.
struct Replica {
    child: Child,
    /// `127.0.0.1:PORT` of the public gRPC listener.
    grpc: String,
    /// `127.0.0.1:PORT` of `/metrics`, `/readyz`.
    http: String,
}

impl Replica {
    /// Starts a gateway on `listen` (`127.0.0.1:0` for any port) serving `snaps`, polling
    /// every [`POLL_MS`] without file events; returns once it logged its addresses.
    fn start(snaps: &Path, listen: &str) -> Replica {
        let mut child = cccgate()
            .args(["serve", "--snapshot-dir", p(snaps), "--listen", listen])
            .args([
                "--admin-listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--watch",
                "false",
                "--poll-interval-ms",
                &POLL_MS.to_string(),
            ])
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cccgate serve");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let (mut grpc, mut http) = (None, None);
        let deadline = Instant::now() + BOUND;
        while grpc.is_none() || http.is_none() {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the gateway logs its addresses");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            let msg = v["fields"]["message"].as_str().unwrap_or("");
            if msg == "gateway listening" {
                grpc = v["fields"]["addr"].as_str().map(str::to_owned);
            }
            if let Some(rest) = msg.strip_prefix("metrics on http://") {
                http = rest.strip_suffix("/metrics").map(str::to_owned);
            }
        }
        Replica {
            child,
            grpc: grpc.unwrap_or_default(),
            http: http.unwrap_or_default(),
        }
    }

    fn target(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The sequence `/readyz` reports, if ready.
    fn sequence(&self) -> Option<u64> {
        let mut s = TcpStream::connect(&self.http).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        if !text.starts_with("HTTP/1.1 200") {
            return None;
        }
        text.rsplit("ready: snapshot ").next()?.trim().parse().ok()
    }

    /// Waits (bounded) until the replica serves `sequence` or a newer one; returns how long.
    fn wait_for(&self, sequence: u64) -> Duration {
        let t = Instant::now();
        while self.sequence().is_none_or(|s| s < sequence) {
            assert!(
                t.elapsed() < BOUND,
                "{} never reached sequence {sequence}",
                self.grpc
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        t.elapsed()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A register of `certs` certificates (drop 1 built into `dir/snaps`) and `listings` listing
/// events of it (`dir/listings.jsonl`).
fn register(dir: &Path, certs: &str, listings: &str) -> (PathBuf, PathBuf) {
    let drop1 = dir.join("drops/1");
    let snaps = dir.join("snaps");
    let input = dir.join("listings.jsonl");
    run(&["synth", "feed", "--out", p(&drop1), "--certs", certs]);
    run(&["load", "build", "--drop", p(&drop1), "--out", p(&snaps)]);
    run(&[
        "synth",
        "listings",
        "--out",
        p(&input),
        "--count",
        listings,
        "--certs",
        certs,
    ]);
    (snaps, input)
}

fn replay(targets: &[&Replica], input: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut cmd = cccgate();
    cmd.arg("replay");
    for t in targets {
        cmd.args(["--target", &t.target()]);
    }
    cmd.args(["--input", p(input), "--out", p(out), "--progress", "off"])
        .args(extra);
    cmd
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[test]
fn a_replay_over_three_replicas_with_one_killed_and_restarted_matches_one_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let (snaps, input) = register(dir.path(), "5000", "60000");
    let a = Replica::start(&snaps, "127.0.0.1:0");
    let mut b = Replica::start(&snaps, "127.0.0.1:0");
    let c = Replica::start(&snaps, "127.0.0.1:0");
    for r in [&a, &b, &c] {
        r.wait_for(1);
    }

    // The reference: one gateway.
    let single = dir.path().join("single.jsonl");
    let status = replay(&[&a], &input, &single, &["--chunk", "50"])
        .status()
        .unwrap();
    assert!(status.success());
    let whole = file_len(&single);

    // Over three; B is killed once a fifth is written and started again at half.
    let multi = dir.path().join("multi.jsonl");
    let summary = dir.path().join("summary.json");
    let mut run3 = replay(
        &[&a, &b, &c],
        &input,
        &multi,
        &[
            "--chunk",
            "50",
            "--concurrency",
            "2",
            "--summary-json",
            p(&summary),
        ],
    )
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let wait_len = |at_least: u64| {
        let t = Instant::now();
        while file_len(&multi) < at_least {
            assert!(t.elapsed() < BOUND, "the replay made no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
    };
    wait_len(whole / 5);
    let b_addr = b.grpc.clone();
    b.kill();
    assert!(
        run3.try_wait().unwrap().is_none(),
        "the replay finished before the kill: make the input larger"
    );
    wait_len(whole / 2);
    let b = Replica::start(&snaps, &b_addr);
    assert_eq!(b.grpc, b_addr, "restarted on its own port");
    b.wait_for(1);
    let out = run3.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    // Every line answered exactly once, in order, as one gateway answers them.
    let (x, y) = (
        std::fs::read_to_string(&single).unwrap(),
        std::fs::read_to_string(&multi).unwrap(),
    );
    assert_eq!(x.lines().count(), 60_000);
    assert_eq!(x.lines().count(), y.lines().count());
    for (n, (l, m)) in x.lines().zip(y.lines()).enumerate() {
        assert_eq!(l, m, "line {}", n + 1);
    }
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert_eq!(s["records"], 60_000);
    assert_eq!(s["complete"], true);
    assert!(s["target"].as_str().unwrap().contains(&b_addr));
}

#[test]
fn replicas_follow_the_loader_and_min_sequence_reads_its_writes_on_any_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (snaps, input) = register(dir.path(), "5000", "3000");
    let replicas: Vec<Replica> = (0..3)
        .map(|_| Replica::start(&snaps, "127.0.0.1:0"))
        .collect();
    for r in &replicas {
        r.wait_for(1);
    }
    let targets: Vec<&Replica> = replicas.iter().collect();
    for seq in 2..=4u64 {
        // The loader publishes a delta on the snapshot in force.
        let drop = dir.path().join(format!("drops/{seq}"));
        let base = snaps.join(format!("snap-{}.ccc", seq - 1));
        run(&[
            "synth",
            "feed",
            "--out",
            p(&drop),
            "--certs",
            "5000",
            "--delta-of",
            p(&base),
            "--changes",
            "20",
        ]);
        run(&["load", "build", "--drop", p(&drop), "--out", p(&snaps)]);
        let published = Instant::now();

        // At once, a reader that knows the sequence asks any replica for it: a replica that
        // has not polled yet answers FAILED_PRECONDITION, never an older verdict.
        let out = dir.path().join(format!("verdicts-{seq}.jsonl"));
        let min = seq.to_string();
        let r = replay(&targets, &input, &out, &["--min-snapshot-sequence", &min])
            .output()
            .unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text.lines().count(), 3000);
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v.get("error").is_none() {
                assert!(v["snapshot_sequence"].as_u64().unwrap() >= seq, "{line}");
            }
        }

        // Every replica serves it; polling every POLL_MS, that is within about POLL_MS of
        // the publication (printed; only the generous BOUND is asserted).
        for r in &replicas {
            r.wait_for(seq);
            eprintln!(
                "{} serves {seq} {:?} after it was published (poll interval {POLL_MS} ms)",
                r.grpc,
                published.elapsed()
            );
        }
    }
}

#[test]
fn a_target_that_is_down_from_the_start_leaves_its_chunks_to_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let (snaps, input) = register(dir.path(), "2000", "5000");
    let a = Replica::start(&snaps, "127.0.0.1:0");
    a.wait_for(1);
    // A port nothing listens on: bind one, note it, let it go.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let single = dir.path().join("single.jsonl");
    assert!(
        replay(&[&a], &input, &single, &["--chunk", "100"])
            .status()
            .unwrap()
            .success()
    );
    let both = dir.path().join("both.jsonl");
    let out = replay(&[&a], &input, &both, &["--chunk", "100", "--target", &down])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&single).unwrap(),
        std::fs::read_to_string(&both).unwrap()
    );
    // Only down targets: the replay says so instead of waiting for ever.
    let none = dir.path().join("none.jsonl");
    let out = cccgate()
        .args(["replay", "--target", &down, "--target", &down])
        .args(["--input", p(&input), "--out", p(&none), "--progress", "off"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&down), "{err}");
}
