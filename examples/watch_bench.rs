//! Benchmarks of watching (#13), over the synthetic register (1.2M certificates) and a delta
//! of 5,000 rows (5,000 valid certificates revoked), printed as medians or single runs:
//!
//! 1. the change set of the delta: `verdict_changes` between the two snapshots (the whole
//!    tables), and `verdict_changes_among` the delta's 5,000 rows (median of 5 each);
//! 2. memory per watched listing: resident memory of this process (the gateway runs in it)
//!    before and after W listings (the synthetic 2021 listing mix, ids made unique) are added
//!    over one `WatchListings` stream, divided by W;
//! 3. the delta swapped in with W watched, twice: as a delta drop (5,000 rows) in the
//!    gateway's drop directory, which it loads in process and whose rows give the change set,
//!    then as a snapshot file, which the change feed diffs whole. For each: time until
//!    `Admin.Reload` returned (the swap itself: load or read, verify, swap) and until the last
//!    CHANGED message arrived, and the ratio; the gateway's own split (diff, re-decide and
//!    encode) is its `change feed: swap` log line, printed to stderr;
//! 4. `CheckStream` throughput with the `bench grpc --mode stream` driver (8 streams over 2
//!    connections, chunks of 1,000, as fast as answered) for S seconds with the delta
//!    swapped in after a quarter of it: with no watches, with W watched (their CHANGED messages read as
//!    they come), and with none again once the watch stream ended; the ratios.
//!
//! `cargo run --release -p cccgate-e2e --example watch_bench -- [W] [S] [DIR]` (defaults
//! 1,000,000, 10 and /tmp/cccgate-watch-bench; DIR holds two snapshots and is removed at
//! the end).
//!
//! `watch_bench split W S ROUNDS DIR [lean]` measures 3 and 4 again with the gateway, the
//! watching client and the stream load in three processes (see [`split`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cccgate_bench::BenchError;
use cccgate_bench::drive::{Drive, Pacing, drive};
use cccgate_bench::embedded::{EmbeddedGateway, bench_build_info, embedded_config};
use cccgate_bench::setup::{Setup, block_on_runtimes};
use cccgate_client::progress::Mode;
use cccgate_client::wire::Rpc;
use cccgate_core::Status;
use cccgate_e2e::raw::rss;
use cccgate_proto::v1::listing_check_client::ListingCheckClient;
use cccgate_proto::v1::{
    Listing, WatchChangesRequest, WatchEvent, WatchListingsRequest, WatchListingsResponse,
};
use cccgate_snapshot::{Snapshot, SnapshotBuilder, file_name, write_atomic};
use cccgate_synth::{GeneratedListing, ListingGenerator, Profile, RegisterSpec, SyntheticRegister};
use tokio_stream::wrappers::ReceiverStream;

#[path = "watch_bench/split.rs"]
mod split;

/// Rows of the delta.
const DELTA: usize = 5_000;

/// The two registers of the bench and the delta between them.
struct Prepared {
    base: PathBuf,
    delta: PathBuf,
    generator: ListingGenerator,
    /// The base's records that the delta revokes, as in the base (valid).
    restored: Vec<cccgate_core::CertificateRecord>,
}
/// Listings per `WatchListings` add message.
const ADD_CHUNK: usize = 10_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn mib(b: u64) -> f64 {
    b as f64 / f64::from(1 << 20)
}

fn bench_err(e: impl std::fmt::Display) -> BenchError {
    BenchError::Invalid(e.to_string())
}

fn main() {
    // The gateway's split of each swap (its `change feed: swap` line: diff, re-decide, encode).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "cccgate_server::watch=info,cccgate_server::reload=info",
        ))
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("split") => return split::main(&args[1..]),
        Some("watcher") => return split::watcher_main(&args[1..]),
        _ => {}
    }
    let w: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let secs: f64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let root = PathBuf::from(
        args.get(2)
            .map_or("/tmp/cccgate-watch-bench", String::as_str),
    );
    let out = block_on_runtimes("watch-bench", 2, None, async |gw_rt| {
        run(w, secs, &root, gw_rt).await
    });
    let _ = std::fs::remove_dir_all(&root);
    if let Err(e) = out {
        eprintln!("watch_bench: {e}");
        std::process::exit(1);
    }
}

/// The base register's and the delta's snapshot files (sequences 1 and 2), and the load's
/// listing generator.
fn prepare(built: &Path) -> Result<Prepared, BenchError> {
    let spec = RegisterSpec::default();
    let register = SyntheticRegister::generate(&spec);
    let generator = ListingGenerator::new(&register, Profile::Y2021, 7);
    let SyntheticRegister {
        catalogue,
        mut records,
        ..
    } = register;
    let base = built.join(file_name(1));
    let bytes =
        SnapshotBuilder::from_records(bench_build_info(1), catalogue.clone(), records.clone())
            .build()
            .map_err(bench_err)?;
    write_atomic(&bytes, &base).map_err(bench_err)?;
    drop(bytes);
    let valid = records.iter().filter(|r| r.status == Status::Valid).count();
    let step = (valid / DELTA).max(1);
    let mut restored = Vec::with_capacity(DELTA);
    for r in records
        .iter_mut()
        .filter(|r| r.status == Status::Valid)
        .step_by(step)
        .take(DELTA)
    {
        restored.push(r.clone());
        r.status = Status::Revoked;
    }
    let delta = built.join(file_name(2));
    let bytes = SnapshotBuilder::from_records(bench_build_info(2), catalogue.clone(), records)
        .build()
        .map_err(bench_err)?;
    write_atomic(&bytes, &delta).map_err(bench_err)?;
    Ok(Prepared {
        base,
        delta,
        generator,
        restored,
    })
}

/// Writes a delta drop of `rows` on `base_sequence` as `drop-<sequence>` into `drops`.
fn write_delta_drop(
    drops: &Path,
    sequence: u64,
    base_sequence: u64,
    rows: &[cccgate_core::CertificateRecord],
) -> Result<(), BenchError> {
    use cccgate_loader::{DropHeader, DropWriter, FileKind, certificates_csv};
    let mut header = DropHeader::delta(sequence, base_sequence);
    header.source = bench_build_info(sequence).source;
    let mut w = DropWriter::create(&drops.join(format!("drop-{sequence:06}")), header)
        .map_err(bench_err)?;
    w.csv_file(
        "certificates.csv",
        FileKind::Certificates,
        &certificates_csv(rows),
    )
    .map_err(bench_err)?;
    w.finish().map_err(bench_err)?;
    Ok(())
}

/// Reads the CHANGED messages of one swap (published at `t`; 3 s of silence ends them):
/// how many verdicts, when the last came (from `t`), and how long after the gateway put the
/// snapshot in force (its `loaded_at_unix_ms`, against this process's wall clock, in ms).
async fn changed_after(
    gw: &EmbeddedGateway,
    stream: &mut tonic::Streaming<WatchListingsResponse>,
    t: Instant,
) -> Result<(usize, f64, i64), BenchError> {
    let (mut changed, mut last, mut wall) = (0usize, None, 0i64);
    while let Ok(m) = tokio::time::timeout(Duration::from_secs(3), stream.message()).await {
        let m: WatchListingsResponse = m.map_err(bench_err)?.ok_or_else(|| bench_err("ended"))?;
        if m.event == WatchEvent::Changed as i32 {
            changed += m.results.len();
            last = Some(t.elapsed().as_secs_f64());
            wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
        }
    }
    let last = last.ok_or_else(|| bench_err("no CHANGED verdict after the swap"))?;
    let mut admin =
        cccgate_proto::v1::admin_client::AdminClient::connect(gw.admin_target().to_owned())
            .await
            .map_err(bench_err)?;
    let status = admin
        .get_status(cccgate_proto::v1::GetStatusRequest {})
        .await
        .map_err(bench_err)?
        .into_inner();
    let in_force = status.snapshot.map_or(0, |s| s.loaded_at_unix_ms);
    Ok((changed, last, wall - in_force))
}

/// Writes `from` (a snapshot file) again under `sequence` into `dir`; returns the path.
fn resequence(from: &Path, sequence: u64, dir: &Path) -> Result<PathBuf, BenchError> {
    let path = dir.join(file_name(sequence));
    let bytes = Snapshot::read(from)
        .map_err(bench_err)?
        .with_sequence(sequence);
    write_atomic(&bytes, &path).map_err(bench_err)?;
    Ok(path)
}

/// `bench grpc --mode stream`'s load: 8 streams over 2 connections, chunks of 1,000, as fast
/// as answered, for `secs`.
fn stream_drive(secs: f64) -> Drive {
    Drive {
        label: "grpc stream".into(),
        rpc: Rpc::Stream,
        chunk: 1_000,
        senders: 8,
        connections: 2,
        planned: None,
        duration: Some(Duration::from_secs_f64(secs)),
        pacing: Pacing::Max,
        swaps: false,
        progress: Mode::Off,
    }
}

/// The `k`th watched listing of the bench: the next of `generator` (the synthetic 2021
/// mix), its id made unique.
fn watched_listing(
    generator: &mut ListingGenerator,
    g: &mut GeneratedListing,
    k: usize,
) -> Listing {
    generator.fill(g);
    let mut l = Listing::from(g.event.clone());
    l.listing_id = format!("w{k:010}");
    l
}

/// One `CheckStream` run of `secs` seconds with `swap` published after a quarter of it;
/// checks per second, and when the swap returned (from the start of the run).
async fn stream_load(
    su: &Setup,
    gw: &EmbeddedGateway,
    secs: f64,
    swap: (&Path, u64),
) -> Result<(f64, Instant), BenchError> {
    let (driven, swapped) = drive(su, &stream_drive(secs), async |_| {
        tokio::time::sleep(Duration::from_secs_f64(secs / 4.0)).await;
        gw.publish(swap.0, swap.1).await.map_err(bench_err)?;
        Ok(Instant::now())
    })
    .await?;
    if driven.stats.errors() > 0 {
        return Err(bench_err(format!(
            "{} errors in the stream load",
            driven.stats.errors()
        )));
    }
    Ok((driven.stats.checks() as f64 / driven.seconds, swapped))
}

async fn run(
    w: usize,
    secs: f64,
    root: &Path,
    gw_rt: &tokio::runtime::Handle,
) -> Result<(), BenchError> {
    let (built, served) = (root.join("built"), root.join("served"));
    let _ = std::fs::remove_dir_all(root);
    std::fs::create_dir_all(&built).map_err(bench_err)?;
    std::fs::create_dir_all(&served).map_err(bench_err)?;
    let t = Instant::now();
    let Prepared {
        base,
        delta,
        generator,
        restored,
    } = tokio::task::spawn_blocking({
        let built = built.clone();
        move || prepare(&built)
    })
    .await
    .map_err(bench_err)??;
    eprintln!(
        "prepared the register and the delta in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // 1. The diff.
    {
        let (a, b) = (
            Snapshot::read(&base).map_err(bench_err)?,
            Snapshot::read(&delta).map_err(bench_err)?,
        );
        let rows: Vec<u64> = restored.iter().map(|r| r.number.get()).collect();
        let (mut times, mut among) = (Vec::new(), Vec::new());
        let (mut found, mut found_among) = (0, 0);
        for _ in 0..5 {
            let t = Instant::now();
            found = cccgate_snapshot::verdict_changes(&a, &b).len();
            times.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            found_among = cccgate_snapshot::verdict_changes_among(&a, &b, &rows).len();
            among.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "verdict_changes: {} certificates, {found} changed: median {:.1} ms; \
             verdict_changes_among the delta's {} rows: {found_among} changed: median {:.2} ms \
             (5 runs each)",
            RegisterSpec::default().certs,
            median(times),
            rows.len(),
            median(among)
        );
    }

    std::fs::hard_link(&base, served.join(file_name(1))).map_err(bench_err)?;
    let drops = root.join("drops");
    std::fs::create_dir_all(&drops).map_err(bench_err)?;
    let mut config = embedded_config(&served);
    config.drop_dir = Some(drops.clone());
    config.watch_max_listings = w.max(1);
    let gw = EmbeddedGateway::start(config, gw_rt, Duration::from_secs(300))
        .await
        .map_err(bench_err)?;
    let su = Setup {
        target: gw.target().to_owned(),
        credentials: Default::default(),
        embedded: None,
        generator,
        setup_seconds: 0.0,
    };
    let mut client = ListingCheckClient::connect(su.target.clone())
        .await
        .map_err(bench_err)?
        .max_decoding_message_size(64 << 20);
    // The change feed takes snapshot 1 in (bounded wait).
    let t0 = Instant::now();
    loop {
        if let Ok(s) = client
            .watch_changes(WatchChangesRequest { from_sequence: 0 })
            .await
            && s.into_inner().message().await.ok().flatten().is_some()
        {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            return Err(bench_err("the change feed never took snapshot 1 in"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // 4a. Stream load, no watches: the delta (sequence 2) swaps in halfway.
    let (none_before, _) = stream_load(&su, &gw, secs, (&delta, 2)).await?;
    println!("CheckStream, no watches, delta swapped in: {none_before:.0} checks/s");

    // 2. W watched listings over one stream.
    let before = rss().0;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = client
        .watch_listings(ReceiverStream::new(rx))
        .await
        .map_err(bench_err)?
        .into_inner();
    let mut gen_w = su.generator.shard(0);
    let sender = tokio::spawn(async move {
        let mut g = GeneratedListing::default();
        let mut k = 0usize;
        let mut text = 0u64;
        while k < w {
            let n = ADD_CHUNK.min(w - k);
            let add = (0..n)
                .map(|i| {
                    let l = watched_listing(&mut gen_w, &mut g, k + i);
                    text += (l.listing_id.len()
                        + l.merchant_id.len()
                        + l.certificate_number.len()
                        + l.model.len()) as u64;
                    l
                })
                .collect();
            if tx
                .send(WatchListingsRequest {
                    add,
                    remove: vec![],
                })
                .await
                .is_err()
            {
                break;
            }
            k += n;
        }
        (tx, text)
    });
    let t = Instant::now();
    let (mut initial, mut refused) = (0usize, 0usize);
    while initial < w {
        let m = stream
            .message()
            .await
            .map_err(bench_err)?
            .ok_or_else(|| bench_err("ended"))?;
        for r in &m.results {
            initial += 1;
            if matches!(
                r.outcome,
                Some(cccgate_proto::v1::listing_result::Outcome::Error(_))
            ) {
                refused += 1;
            }
        }
    }
    let add_secs = t.elapsed().as_secs_f64();
    let (tx, text) = sender.await.map_err(bench_err)?;
    let after = rss().0;
    let watched = w - refused;
    println!(
        "watched: {watched} listings ({refused} refused as bad) added in {add_secs:.1} s \
         ({:.0}/s; their text, id + merchant + number + model, {:.1} bytes on average); \
         resident memory {:.0} -> {:.0} MiB: +{:.0} MiB, {:.0} bytes per watched listing",
        watched as f64 / add_secs,
        text as f64 / w.max(1) as f64,
        mib(before),
        mib(after),
        mib(after.saturating_sub(before)),
        after.saturating_sub(before) as f64 / watched.max(1) as f64
    );

    // 3a. A delta drop (sequence 3 on 2) restores the 5,000 revoked certificates: the
    // gateway loads it in process, the change set comes from its rows.
    write_delta_drop(&drops, 3, 2, &restored)?;
    let t = Instant::now();
    gw.reload_to(3).await.map_err(bench_err)?;
    let swap = t.elapsed().as_secs_f64();
    let (changed, last, after_in_force) = changed_after(&gw, &mut stream, t).await?;
    println!(
        "delta drop of {DELTA} rows loaded with {watched} watched (change set from its rows): \
         Reload returned {:.1} ms, last CHANGED ({changed} verdicts) {:.1} ms: {:.1} ms after \
         Reload returned, {after_in_force} ms after the snapshot was put in force; ratio to \
         the swap {:.2}",
        swap * 1e3,
        last * 1e3,
        (last - swap) * 1e3,
        last / swap
    );
    // 3b. The same 5,000 changes back as a snapshot file (sequence 4 = the delta's
    // register): the change feed diffs the whole tables.
    let seq4 = resequence(&delta, 4, &built)?;
    let t = Instant::now();
    gw.publish(&seq4, 4).await.map_err(bench_err)?;
    let swap = t.elapsed().as_secs_f64();
    let (changed_file, last, after_in_force) = changed_after(&gw, &mut stream, t).await?;
    println!(
        "the same delta as a snapshot file with {watched} watched (change set by a whole diff): \
         Reload returned {:.1} ms, last CHANGED ({changed_file} verdicts) {:.1} ms: {:.1} ms \
         after Reload returned, {after_in_force} ms after the snapshot was put in force; ratio \
         to the swap {:.2}",
        swap * 1e3,
        last * 1e3,
        (last - swap) * 1e3,
        last / swap
    );

    // 4b. Stream load with W watched; the CHANGED messages are read as they come.
    let seq4 = resequence(&base, 5, &built)?;
    let counted = Arc::new(AtomicU64::new(0));
    let (last_tx, last_rx) = tokio::sync::watch::channel(None::<Instant>);
    let reader = tokio::spawn({
        let counted = Arc::clone(&counted);
        async move {
            while let Ok(Some(m)) = stream.message().await {
                if counted.fetch_add(m.results.len() as u64, Ordering::Relaxed)
                    + m.results.len() as u64
                    >= changed as u64
                {
                    last_tx.send_replace(Some(Instant::now()));
                }
            }
        }
    });
    let started = Instant::now();
    let (watching, swapped) = stream_load(&su, &gw, secs, (&seq4, 5)).await?;
    let ended = Instant::now();
    // The swap's CHANGED verdicts (as many as the swap back gave), bounded wait.
    let mut last_rx = last_rx;
    let _ = tokio::time::timeout(Duration::from_secs(60), last_rx.wait_for(Option::is_some)).await;
    let last = *last_rx.borrow();
    println!(
        "CheckStream, {watched} watched, delta swapped in at {:.1} s of {:.1} s ({} CHANGED \
         verdicts, the last {}): {watching:.0} checks/s",
        (swapped - started).as_secs_f64(),
        (ended - started).as_secs_f64(),
        counted.load(Ordering::Relaxed),
        last.map_or("not within 60 s".into(), |l| format!(
            "{:.0} ms after the swap returned{}",
            (l - swapped).as_secs_f64() * 1e3,
            if l > ended {
                ", after the load ended"
            } else {
                ""
            }
        )),
    );
    drop(tx);
    reader.abort();
    let _ = reader.await;

    // 4c. No watches again (the stream ended, its listings are dropped).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seq6 = resequence(&delta, 6, &built)?;
    let (none_after, _) = stream_load(&su, &gw, secs, (&seq6, 6)).await?;
    println!("CheckStream, no watches again, delta swapped out: {none_after:.0} checks/s");
    println!(
        "ratio with {watched} watched: {:.3} to the run before, {:.3} to the run after, {:.3} to their mean",
        watching / none_before,
        watching / none_after,
        watching / ((none_before + none_after) / 2.0)
    );
    gw.stop().await.map_err(bench_err)?;
    Ok(())
}
