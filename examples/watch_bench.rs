//! Benchmarks of watching (#13), printed as medians:
//!
//! 1. the change set of a swap: `verdict_changes` between two snapshots of N certificates that
//!    differ in 5,000, against building... (the diff alone, in ms);
//! 2. memory per watched listing: resident memory of a real gateway (in this process) before
//!    and after W listings are added over WatchListings, divided by W;
//! 3. time from a swap of a 5,000-certificate change to the last CHANGED message received, as
//!    a ratio to the time of the swap itself (Admin.Reload of the new file).
//!
//! `cargo run --release --example watch_bench -- [N] [W]` (defaults 1,200,000 and 1,000,000).

use std::time::{Duration, Instant};

use cccgate_core::Status;
use cccgate_e2e::gateway::{
    TestGateway, build_snapshot, cert_number, record, test_config, write_snapshot,
};
use cccgate_e2e::raw::rss;
use cccgate_proto::v1::{
    Listing, ReloadRequest, WatchChangesRequest, WatchEvent, WatchListingsRequest,
};
use tokio_stream::wrappers::ReceiverStream;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let n = args.first().copied().unwrap_or(1_200_000) as u32;
    let w = args.get(1).copied().unwrap_or(1_000_000) as u32;
    let changed = 5_000u32.min(n);

    let mut recs: Vec<_> = (1..=n)
        .map(|s| record(s, Status::Valid, 901, &["M-1", "M-2"]))
        .collect();
    let a = build_snapshot(1, &recs);
    for r in recs
        .iter_mut()
        .step_by((n / changed).max(1) as usize)
        .take(changed as usize)
    {
        r.status = Status::Revoked;
    }
    let b = build_snapshot(2, &recs);
    let mut times = Vec::new();
    let mut found = 0;
    for _ in 0..5 {
        let t = Instant::now();
        found = cccgate_snapshot::verdict_changes(&a, &b).len();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "verdict_changes: {n} certificates, {found} changed: median {:.1} ms (5 runs)",
        median(times)
    );
    drop((a, b));

    // A gateway serving snapshot 1 (the original register), in this process.
    let dir = tempfile::tempdir().expect("tempdir");
    let orig: Vec<_> = (1..=n)
        .map(|s| record(s, Status::Valid, 901, &["M-1", "M-2"]))
        .collect();
    write_snapshot(dir.path(), 1, &orig);
    let gw = TestGateway::start(test_config(Some(dir.path())), false).await;
    let mut client = gw.check_client().await;
    // Wait (bounded) for the feed to take in snapshot 1.
    let t0 = Instant::now();
    loop {
        if let Ok(s) = client
            .watch_changes(WatchChangesRequest { from_sequence: 0 })
            .await
            && s.into_inner().message().await.ok().flatten().is_some()
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "snapshot 1 never loaded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = rss().0;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut stream = client
        .watch_listings(ReceiverStream::new(rx))
        .await
        .expect("WatchListings")
        .into_inner();
    let chunk = 10_000u32;
    let sender = tokio::spawn(async move {
        let mut i = 0;
        while i < w {
            let add = (i..(i + chunk).min(w))
                .map(|k| Listing {
                    listing_id: format!("listing-{k:010}"),
                    merchant_id: format!("merchant-{:06}", k % 100_000),
                    product_code: "0901".into(),
                    certificate_number: cert_number(k % n + 1).get().to_string(),
                    model: "M-1".into(),
                    event_time: String::new(),
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
                return tx;
            }
            i += chunk;
        }
        tx
    });
    let mut initial = 0u64;
    while initial < u64::from(w) {
        let m = stream.message().await.expect("ok").expect("open");
        initial += m.results.len() as u64;
    }
    let _tx = sender.await.expect("sender");
    let after = rss().0;
    println!(
        "watched: {w} listings, resident memory +{:.0} MiB, {:.0} bytes per watched listing",
        (after.saturating_sub(before)) as f64 / (1 << 20) as f64,
        after.saturating_sub(before) as f64 / f64::from(w)
    );

    // Swap in the register with `changed` revoked certificates.
    write_snapshot(dir.path(), 2, &recs);
    let mut admin = gw.admin_client().await;
    let t = Instant::now();
    admin.reload(ReloadRequest {}).await.expect("Reload");
    let swap = t.elapsed().as_secs_f64();
    // Listings citing the changed certificates (listing k cites certificate k % n + 1).
    let expect: u64 = (0..w)
        .filter(|k| recs[(k % n) as usize].status == Status::Revoked)
        .count() as u64;
    let mut got = 0u64;
    while got < expect {
        let m = stream.message().await.expect("ok").expect("open");
        if m.event == WatchEvent::Changed as i32 {
            got += m.results.len() as u64;
        }
    }
    let last = t.elapsed().as_secs_f64();
    println!(
        "swap of {changed} changed certificates with {w} watched: Reload {:.1} ms, last CHANGED \
         ({got} verdicts) at {:.1} ms: ratio {:.2}",
        swap * 1e3,
        last * 1e3,
        last / swap
    );
    drop(gw);
}
