//! How fast the synthetic data comes: the full register, the listing pools, and
//! `ListingGenerator::fill` on one core and on one shard per core.
//!
//! `cargo run --release -p cccgate-synth --example synth_speed [certs] [listings]`

use std::time::Instant;

/// CPU time of the calling thread, in seconds (Linux), so a busy machine does not inflate
/// the figures: the wall clock counts time spent waiting for a core, this does not.
fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e9)
}

use cccgate_synth::{GeneratedListing, ListingGenerator, Profile, RegisterSpec};

fn main() {
    let mut args = std::env::args().skip(1);
    let certs = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_200_000);
    let listings: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000_000);

    let t = Instant::now();
    let cpu = thread_cpu();
    let reg = RegisterSpec {
        certs,
        ..RegisterSpec::default()
    }
    .generate();
    let models: usize = reg.records.iter().map(|r| r.models.len()).sum();
    eprintln!(
        "register: {} certificates ({} valid, {models} models) in {:.2} s ({:.2} s CPU)",
        reg.records.len(),
        reg.counts()[0],
        t.elapsed().as_secs_f64(),
        thread_cpu() - cpu
    );

    let t = Instant::now();
    let generator = ListingGenerator::new(&reg, Profile::Y2021, 1);
    eprintln!("listing pools: {:.2} s", t.elapsed().as_secs_f64());

    let mut g = generator.clone();
    let mut out = GeneratedListing::default();
    let mut bytes = 0usize;
    let t = Instant::now();
    let cpu = thread_cpu();
    for _ in 0..listings {
        g.fill(&mut out);
        bytes += out.event.listing_id.len() + out.event.certificate_number.len();
    }
    let s = t.elapsed().as_secs_f64();
    let c = thread_cpu() - cpu;
    eprintln!(
        "fill, 1 thread: {listings} listings in {s:.2} s = {:.2} M/s; {c:.2} s CPU = {:.2} M/s per core ({bytes} id+number bytes)",
        listings as f64 / s / 1e6,
        listings as f64 / c / 1e6
    );

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    let per = listings / u64::from(threads);
    let t = Instant::now();
    std::thread::scope(|scope| {
        for mut shard in generator.shards(threads) {
            scope.spawn(move || {
                let mut out = GeneratedListing::default();
                for _ in 0..per {
                    shard.fill(&mut out);
                }
            });
        }
    });
    let s = t.elapsed().as_secs_f64();
    eprintln!(
        "fill, {threads} shards: {} listings in {s:.2} s = {:.2} M/s",
        per * u64::from(threads),
        (per * u64::from(threads)) as f64 / s / 1e6
    );
}
