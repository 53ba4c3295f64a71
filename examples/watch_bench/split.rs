//! `watch_bench split W S ROUNDS DIR [lean]`: the swap-to-last-CHANGED time and the stream
//! throughput with W watched, with the gateway (`cccgate serve`, a child process, fresh for
//! every phase), the watching client (this program as `watch_bench watcher`, another child
//! process) and the `CheckStream` load (this process) apart, as a marketplace's machines
//! would be. Each round runs two phases, in alternating order (round 1 no watches first,
//! round 2 watched first, ...):
//!
//! - a fresh gateway on the synthetic register (snapshot 1), with `--drop-dir`;
//! - watched phase only: the watcher adds W listings (the synthetic 2021 mix, as
//!   `watch_bench` adds them) over one `WatchListings` stream and reports when every INITIAL
//!   answer is in;
//! - three quiet swaps, each a 5,000-row delta drop (revoke, restore, revoke) loaded with
//!   `Admin.Reload`: the time Reload took (the swap itself), and, watched, the time from the
//!   snapshot put in force (`GetStatus.loaded_at_unix_ms`) to the last CHANGED message the
//!   watcher decoded (its wall clock; same machine), and (Reload start -> last CHANGED) /
//!   Reload;
//! - `bench grpc --mode stream`'s driver (8 streams, 2 connections, chunks of 1,000) for S
//!   seconds, the fourth delta (restore) swapped in after a quarter of it: checks/s, and the
//!   gateway's CPU time per check (`/proc/PID/stat`, during the load only), its resident set
//!   and its `AnonHugePages` (the snapshot's transparent huge pages) after;
//! - watched phase only: the watcher is killed (its stream and watches end), and the same
//!   gateway is loaded again the same way (a fifth delta): whatever of the watches outlived
//!   them shows here, against the fresh gateways without watches.
//!
//! The gateway binary is `CCCGATE_BIN` or `cccgate` next to the example's directory
//! (`target/release/cccgate`: build it too). `lean`: the watcher asks for lean answers
//! (`cccgate-answer: lean`).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cccgate_bench::BenchError;
use cccgate_bench::drive::drive;
use cccgate_bench::setup::Setup;
use cccgate_core::Status;
use cccgate_proto::v1::admin_client::AdminClient;
use cccgate_proto::v1::listing_check_client::ListingCheckClient;
use cccgate_proto::v1::{
    GetStatusRequest, ReloadRequest, WatchChangesRequest, WatchEvent, WatchListingsRequest,
};
use cccgate_snapshot::file_name;
use cccgate_synth::{GeneratedListing, ListingGenerator, Profile, RegisterSpec, SyntheticRegister};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{
    ADD_CHUNK, Prepared, bench_err, median, prepare, stream_drive, watched_listing,
    write_delta_drop,
};

/// Quiet swaps per phase.
const QUIET_SWAPS: u64 = 3;

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn runtime() -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BenchError::Runtime)
}

pub(crate) fn main(args: &[String]) {
    let arg = |i: usize| args.get(i).map(String::as_str);
    let w: usize = arg(0).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let secs: f64 = arg(1).and_then(|a| a.parse().ok()).unwrap_or(20.0);
    let rounds: usize = arg(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    let root = PathBuf::from(arg(3).unwrap_or("/tmp/cccgate-watch-split"));
    let lean = arg(4) == Some("lean");
    let out = runtime().and_then(|rt| rt.block_on(run(w, secs, rounds, &root, lean)));
    if let Err(e) = out {
        eprintln!(
            "watch_bench split: {e} (the gateways' logs are in {})",
            root.display()
        );
        std::process::exit(1);
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// A gateway child process.
struct Gateway {
    child: Child,
    target: String,
    admin: String,
    log: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A watcher child process and the lines it printed: `R initial refused seconds`, then
/// `C results unix_ms` per CHANGED message.
struct Watcher {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, BenchError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(bench_err)?;
    Ok(l.local_addr().map_err(bench_err)?.port())
}

fn gateway_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CCCGATE_BIN") {
        return p.into();
    }
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("cccgate"), |d| d.join("cccgate"))
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; `after` starts at field 3.
    (tick(11) + tick(12)) / 100.0
}

/// A line of `/proc/PID/smaps_rollup` (kB), e.g. `Rss` or `AnonHugePages`.
fn smaps_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix(':')?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

async fn start_gateway(
    root: &Path,
    phase: &str,
    base: &Path,
    w: usize,
) -> Result<(Gateway, PathBuf), BenchError> {
    let dir = root.join(phase);
    let _ = std::fs::remove_dir_all(&dir);
    let (served, drops) = (dir.join("served"), dir.join("drops"));
    std::fs::create_dir_all(&served).map_err(bench_err)?;
    std::fs::create_dir_all(&drops).map_err(bench_err)?;
    std::fs::hard_link(base, served.join(file_name(1))).map_err(bench_err)?;
    let (port, admin_port) = (free_port()?, free_port()?);
    let log = dir.join("gateway.log");
    let child = Command::new(gateway_bin())
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .args(["--metrics-listen", "off", "--watch", "false"])
        .args(["--poll-interval-ms", "3600000"])
        // A delta drop loaded under the full stream load can take longer than the default
        // 10 s deadline of Admin.Reload.
        .args(["--request-timeout-ms", "120000"])
        .arg("--snapshot-dir")
        .arg(&served)
        .arg("--drop-dir")
        .arg(&drops)
        .args(["--watch-max-listings", &w.max(1).to_string()])
        .args(["--log-filter", "warn,cccgate_server::watch=info"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).map_err(bench_err)?)
        .spawn()
        .map_err(|e| bench_err(format!("{}: {e}", gateway_bin().display())))?;
    let gw = Gateway {
        child,
        target: format!("http://127.0.0.1:{port}"),
        admin: format!("http://127.0.0.1:{admin_port}"),
        log,
    };
    // Snapshot 1 in force and taken in by the change feed (bounded wait).
    let t0 = Instant::now();
    loop {
        if let Ok(mut c) = ListingCheckClient::connect(gw.target.clone()).await
            && let Ok(s) = c
                .watch_changes(WatchChangesRequest { from_sequence: 0 })
                .await
            && s.into_inner().message().await.ok().flatten().is_some()
        {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            return Err(bench_err("the gateway did not start within 120 s"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok((gw, drops))
}

/// Loads `drop-<sequence>` with `Admin.Reload`; the wall time it started and its duration (ms).
async fn reload(gw: &Gateway, sequence: u64) -> Result<(f64, f64), BenchError> {
    let mut admin = AdminClient::connect(gw.admin.clone())
        .await
        .map_err(bench_err)?;
    let (wall, t) = (now_ms(), Instant::now());
    let r = admin
        .reload(ReloadRequest {})
        .await
        .map_err(bench_err)?
        .into_inner();
    let took = t.elapsed().as_secs_f64() * 1e3;
    if r.snapshot_sequence != sequence {
        return Err(bench_err(format!(
            "Reload gave sequence {} ({:?}: {}), not {sequence}",
            r.snapshot_sequence,
            r.outcome(),
            r.message
        )));
    }
    Ok((wall, took))
}

/// When the gateway put its snapshot in force (Unix ms).
async fn in_force(gw: &Gateway) -> Result<f64, BenchError> {
    let mut admin = AdminClient::connect(gw.admin.clone())
        .await
        .map_err(bench_err)?;
    let s = admin
        .get_status(GetStatusRequest {})
        .await
        .map_err(bench_err)?
        .into_inner();
    Ok(s.snapshot.map_or(0, |s| s.loaded_at_unix_ms) as f64)
}

/// The watcher's CHANGED lines until 2 s pass without one: results, last arrival (Unix ms).
async fn changed_lines(watcher: &mut Watcher) -> (u64, Option<f64>) {
    let (mut n, mut last) = (0, None);
    while let Ok(Some(line)) =
        tokio::time::timeout(Duration::from_secs(2), watcher.lines.recv()).await
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"C") {
            n += f.get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            last = f.get(2).and_then(|v| v.parse().ok());
        }
    }
    (n, last)
}

/// What one phase measured.
#[derive(Default)]
struct Phase {
    checks_per_second: f64,
    cpu_us_per_check: f64,
    /// In force -> last CHANGED, ms, per quiet swap (watched).
    to_last: Vec<f64>,
    /// In force -> last CHANGED taken by the stream's connection, ms, per quiet swap
    /// (watched; the gateway's `change feed: swap` log).
    to_sent: Vec<f64>,
    /// (Reload start -> last CHANGED) / Reload, per quiet swap (watched).
    ratio: Vec<f64>,
    reload_ms: Vec<f64>,
    /// Watched phase: checks/s of a second load on the same gateway once the watcher is gone.
    after: Option<f64>,
}

#[allow(clippy::too_many_arguments)] // the bench's knobs, each used once
async fn phase(
    root: &Path,
    name: &str,
    prepared: &Prepared,
    revoked: &[cccgate_core::CertificateRecord],
    w: usize,
    watched: bool,
    secs: f64,
    lean: bool,
) -> Result<Phase, BenchError> {
    let (gw, drops) = start_gateway(root, name, &prepared.base, w).await?;
    let pid = gw.child.id();
    let mut out = Phase::default();
    let mut watcher = None;
    if watched {
        let exe = std::env::current_exe().map_err(bench_err)?;
        let mut child = Command::new(exe)
            .arg("watcher")
            .arg(&gw.target)
            .arg(w.to_string())
            .args(lean.then_some("lean"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(bench_err)?;
        let stdout = child.stdout.take().ok_or_else(|| bench_err("no stdout"))?;
        let (tx, rx) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut wt = Watcher { child, lines: rx };
        let ready = tokio::time::timeout(Duration::from_secs(900), wt.lines.recv())
            .await
            .map_err(|_| bench_err("the watcher did not add its listings within 900 s"))?
            .ok_or_else(|| bench_err("the watcher ended"))?;
        eprintln!(
            "{name}: watcher ready ({ready}); gateway resident {} MiB",
            smaps_kb(pid, "Rss") / 1024
        );
        watcher = Some(wt);
    }
    // Quiet swaps: revoke (2 on 1), restore (3 on 2), revoke (4 on 3).
    for seq in 2..2 + QUIET_SWAPS {
        let rows = if seq % 2 == 0 {
            revoked
        } else {
            &prepared.restored
        };
        write_delta_drop(&drops, seq, seq - 1, rows)?;
        let (start, took) = reload(&gw, seq).await?;
        out.reload_ms.push(took);
        if let Some(wt) = watcher.as_mut() {
            let (n, last) = changed_lines(wt).await;
            let last = last.ok_or_else(|| bench_err("no CHANGED verdict after a quiet swap"))?;
            let forced = in_force(&gw).await?;
            out.to_last.push(last - forced);
            out.ratio.push((last - start) / took);
            eprintln!(
                "{name}: swap {seq}: Reload {took:.0} ms; {n} CHANGED verdicts, the last {:.0} ms \
                 after the snapshot was put in force; ratio {:.2}",
                last - forced,
                (last - start) / took
            );
        } else {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    // The stream load, the fourth delta (restore, 5 on 4) swapped in after a quarter.
    let seq = 2 + QUIET_SWAPS;
    (out.checks_per_second, out.cpu_us_per_check) =
        stream_load(&gw, &drops, prepared, seq, &prepared.restored, secs).await?;
    let under_load = match watcher.as_mut() {
        Some(wt) => {
            let (n, last) = changed_lines(wt).await;
            let forced = in_force(&gw).await?;
            format!(
                "; {n} CHANGED verdicts, the last {} after the snapshot was put in force",
                last.map_or("-".into(), |l| format!("{:.0} ms", l - forced))
            )
        }
        None => String::new(),
    };
    eprintln!(
        "{name}: CheckStream {:.0} checks/s, gateway {:.2} CPU µs/check, resident {} MiB, \
         AnonHugePages {} MiB{under_load}",
        out.checks_per_second,
        out.cpu_us_per_check,
        smaps_kb(pid, "Rss") / 1024,
        smaps_kb(pid, "AnonHugePages") / 1024
    );
    if let Some(wt) = watcher.take() {
        // The watcher goes (its stream and watches end); the same gateway, loaded again with
        // a fifth delta (revoke, 6 on 5): does anything of the watches outlive them?
        drop(wt);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (after, cpu) = stream_load(&gw, &drops, prepared, seq + 1, revoked, secs).await?;
        out.after = Some(after);
        eprintln!(
            "{name}: watcher gone, same gateway: CheckStream {after:.0} checks/s, gateway \
             {cpu:.2} CPU µs/check, resident {} MiB, AnonHugePages {} MiB",
            smaps_kb(pid, "Rss") / 1024,
            smaps_kb(pid, "AnonHugePages") / 1024
        );
    }
    for line in std::fs::read_to_string(&gw.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("change feed: swap") || l.contains("WARN"))
    {
        eprintln!("{name}: gateway: {line}");
        // The gateway's own in force -> last CHANGED taken by the connection, quiet swaps.
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(key)?.parse::<f64>().ok())
        };
        if watched
            && out.to_sent.len() < QUIET_SWAPS as usize
            && field("changed_verdicts=").is_some_and(|n| n > 0.0)
            && let Some(ms) = field("in_force_to_sent_ms=")
        {
            out.to_sent.push(ms);
        }
    }
    drop(gw);
    Ok(out)
}

/// `bench grpc --mode stream`'s driver for `secs` on `gw`, the delta drop `seq` of `rows`
/// loaded after a quarter: checks/s and the gateway's CPU µs per check during it.
async fn stream_load(
    gw: &Gateway,
    drops: &Path,
    prepared: &Prepared,
    seq: u64,
    rows: &[cccgate_core::CertificateRecord],
    secs: f64,
) -> Result<(f64, f64), BenchError> {
    let su = Setup {
        target: gw.target.clone(),
        credentials: Default::default(),
        embedded: None,
        generator: prepared.generator.clone(),
        setup_seconds: 0.0,
    };
    write_delta_drop(drops, seq, seq - 1, rows)?;
    let pid = gw.child.id();
    let cpu0 = cpu_seconds(pid);
    let (driven, _) = drive(&su, &stream_drive(secs), async |_| {
        tokio::time::sleep(Duration::from_secs_f64(secs / 4.0)).await;
        reload(gw, seq).await
    })
    .await?;
    let cpu = cpu_seconds(pid) - cpu0;
    if driven.stats.errors() > 0 {
        return Err(bench_err(format!(
            "{} errors in the stream load",
            driven.stats.errors()
        )));
    }
    let checks = driven.stats.checks() as f64;
    Ok((checks / driven.seconds, cpu * 1e6 / checks.max(1.0)))
}

async fn run(
    w: usize,
    secs: f64,
    rounds: usize,
    root: &Path,
    lean: bool,
) -> Result<(), BenchError> {
    let built = root.join("built");
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(&built).map_err(bench_err)?;
    let prepared = tokio::task::spawn_blocking({
        let built = built.clone();
        move || prepare(&built)
    })
    .await
    .map_err(bench_err)??;
    let revoked: Vec<_> = prepared
        .restored
        .iter()
        .map(|r| cccgate_core::CertificateRecord {
            status: Status::Revoked,
            ..r.clone()
        })
        .collect();
    let (mut none, mut with) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for watched in order {
            let name = format!(
                "round {} {}",
                round + 1,
                if watched { "watched" } else { "none" }
            );
            let p = phase(
                root,
                &name.replace(' ', "-"),
                &prepared,
                &revoked,
                w,
                watched,
                secs,
                lean,
            )
            .await?;
            if watched {
                with.push(p);
            } else {
                none.push(p);
            }
        }
    }
    let col = |v: &[Phase], f: fn(&Phase) -> f64| v.iter().map(f).collect::<Vec<f64>>();
    let show = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (a, b) = (
        col(&none, |p| p.checks_per_second),
        col(&with, |p| p.checks_per_second),
    );
    println!(
        "CheckStream checks/s, no watches: {} (median {:.0}); {w} watched: {} (median {:.0}); \
         ratio of medians {:.3}; per round {}",
        show(&a),
        median(a.clone()),
        show(&b),
        median(b.clone()),
        median(b.clone()) / median(a.clone()),
        a.iter()
            .zip(&b)
            .map(|(x, y)| format!("{:.3}", y / x))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let after: Vec<f64> = with.iter().filter_map(|p| p.after).collect();
    println!(
        "CheckStream checks/s on the same gateway once the watcher was gone: {} (median {:.0}); \
         ratio to the fresh gateways without watches {:.3}",
        show(&after),
        median(after.clone()),
        median(after.clone()) / median(a.clone())
    );
    println!(
        "gateway CPU µs/check: no watches median {:.3}, watched median {:.3}",
        median(col(&none, |p| p.cpu_us_per_check)),
        median(col(&with, |p| p.cpu_us_per_check))
    );
    let to_last: Vec<f64> = with.iter().flat_map(|p| p.to_last.clone()).collect();
    let to_sent: Vec<f64> = with.iter().flat_map(|p| p.to_sent.clone()).collect();
    let ratio: Vec<f64> = with.iter().flat_map(|p| p.ratio.clone()).collect();
    let reloads: Vec<f64> = with.iter().flat_map(|p| p.reload_ms.clone()).collect();
    if !to_last.is_empty() {
        println!(
            "quiet swaps with {w} watched{}: Reload (the swap) {} ms (median {:.0}); snapshot in \
             force -> last CHANGED taken by the connection (gateway) {} ms (median {:.0}); \
             snapshot in force -> last CHANGED decoded by the watcher {} ms (median {:.0}); \
             ratio (Reload start -> last CHANGED) / Reload median {:.2}",
            if lean { " (lean answers)" } else { "" },
            show(&reloads),
            median(reloads.clone()),
            show(&to_sent),
            if to_sent.is_empty() {
                f64::NAN
            } else {
                median(to_sent.clone())
            },
            show(&to_last),
            median(to_last.clone()),
            median(ratio)
        );
    }
    Ok(())
}

/// `watch_bench watcher TARGET W [lean]`: adds W listings over one `WatchListings` stream,
/// prints `R initial refused seconds` once every INITIAL answer is in, then `C results
/// unix_ms` for each CHANGED message as it is decoded, until the stream ends.
pub(crate) fn watcher_main(args: &[String]) {
    let target = args.first().cloned().unwrap_or_default();
    let w: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let lean = args.get(2).map(String::as_str) == Some("lean");
    let out = runtime().and_then(|rt| rt.block_on(watcher(target, w, lean)));
    if let Err(e) = out {
        eprintln!("watch_bench watcher: {e}");
        std::process::exit(1);
    }
}

async fn watcher(target: String, w: usize, lean: bool) -> Result<(), BenchError> {
    let register = SyntheticRegister::generate(&RegisterSpec::default());
    let generator = ListingGenerator::new(&register, Profile::Y2021, 7);
    drop(register);
    // A client as `cccgate watch` makes one: windows that take a burst of CHANGED messages.
    let channel = tonic::transport::Endpoint::from_shared(target)
        .map_err(bench_err)?
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .max_frame_size(Some(1 << 20))
        .connect()
        .await
        .map_err(bench_err)?;
    let mut client = ListingCheckClient::new(channel).max_decoding_message_size(64 << 20);
    let (tx, rx) = mpsc::channel(4);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    if lean {
        req.metadata_mut().insert(
            "cccgate-answer",
            tonic::metadata::MetadataValue::from_static("lean"),
        );
    }
    let mut stream = client
        .watch_listings(req)
        .await
        .map_err(bench_err)?
        .into_inner();
    let mut gen_w = generator.shard(0);
    let sender = tokio::spawn(async move {
        let mut g = GeneratedListing::default();
        let mut k = 0usize;
        while k < w {
            let n = ADD_CHUNK.min(w - k);
            let add = (0..n)
                .map(|i| watched_listing(&mut gen_w, &mut g, k + i))
                .collect();
            let msg = WatchListingsRequest {
                add,
                remove: vec![],
            };
            if tx.send(msg).await.is_err() {
                break;
            }
            k += n;
        }
        tx
    });
    let t = Instant::now();
    let (mut initial, mut refused) = (0usize, 0usize);
    while initial < w {
        let m = stream
            .message()
            .await
            .map_err(bench_err)?
            .ok_or_else(|| bench_err("ended"))?;
        initial += m.results.len();
        refused += m
            .results
            .iter()
            .filter(|r| {
                matches!(
                    r.outcome,
                    Some(cccgate_proto::v1::listing_result::Outcome::Error(_))
                )
            })
            .count();
    }
    let _tx = sender.await.map_err(bench_err)?;
    println!("R {initial} {refused} {:.1}", t.elapsed().as_secs_f64());
    while let Some(m) = stream.message().await.map_err(bench_err)? {
        if m.event == WatchEvent::Changed as i32 {
            println!("C {} {:.3}", m.results.len(), now_ms());
        }
    }
    Ok(())
}
