//! Criterion benchmarks of the check engine over a full-scale synthetic register.
//!
//! `cargo bench --bench engine` (set `CCCGATE_BENCH_CERTS` to shrink the register). The
//! snapshot is built once and cached under `target/cccgate-bench/`, loaded the way the
//! gateway loads it (`Snapshot::load`), and every benchmark goes through the real path:
//! `Listing::parse` on borrowed fields, then `check`.

use std::hint::black_box;
use std::path::PathBuf;

use cccgate_core::{CertNumber, Day, Listing, ListingEvent, Policy, check, model_key};
use cccgate_snapshot::{BuildInfo, FORMAT_VERSION, Snapshot, SnapshotBuilder};
use cccgate_synth::{GeneratedListing, ListingGenerator, Profile, RegisterSpec};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

struct Fixture {
    snapshot: Snapshot,
    path: PathBuf,
    listings: Vec<ListingEvent>,
    day: Day,
}

fn fixture() -> Fixture {
    let certs = std::env::var("CCCGATE_BENCH_CERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_200_000usize);
    let spec = RegisterSpec {
        certs,
        ..RegisterSpec::default()
    };
    let register = spec.generate();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/cccgate-bench");
    let path = dir.join(format!(
        "engine-{certs}-{}-v{FORMAT_VERSION}.ccc",
        spec.seed
    ));
    Snapshot::open_or_build(&path, || {
        let info = BuildInfo {
            sequence: 1,
            source: "synth".into(),
            ..BuildInfo::default()
        };
        SnapshotBuilder::from_records(
            info,
            register.catalogue.clone(),
            register.records.iter().cloned(),
        )
        .build()
    })
    .expect("build the benchmark snapshot");
    let snapshot = Snapshot::load(&path).expect("load the benchmark snapshot");
    let mut generator = ListingGenerator::new(&register, Profile::Y2021, spec.seed);
    let day = generator.as_of();
    let mut g = GeneratedListing::default();
    let listings = (0..200_000)
        .map(|_| {
            generator.fill(&mut g);
            g.event.clone()
        })
        .collect();
    Fixture {
        snapshot,
        path,
        listings,
        day,
    }
}

fn listing<'a>(e: &'a ListingEvent, day: Day) -> Listing<'a> {
    e.listing(day).expect("generated listings are valid")
}

fn engine(c: &mut Criterion) {
    let f = fixture();
    let policy = Policy::default();
    let mut g = c.benchmark_group("engine");
    g.throughput(Throughput::Elements(1));

    // The generated 2021 mix over the whole register: mostly cache misses, as in production.
    let mut i = 0;
    g.bench_function("check/2021-mix", |b| {
        b.iter(|| {
            let e = &f.listings[i];
            i = if i + 1 == f.listings.len() { 0 } else { i + 1 };
            let l = listing(e, f.day);
            black_box(check(&f.snapshot, &l, &policy).reason)
        })
    });

    // One valid listing over and over: the cost of the code with every line in cache.
    let valid = f
        .listings
        .iter()
        .find(|e| {
            !e.model.is_empty()
                && check(&f.snapshot, &listing(e, f.day), &policy).reason
                    == cccgate_core::Reason::CertificateValid
        })
        .expect("a valid listing with a model");
    g.bench_function("check/valid-hot", |b| {
        b.iter(|| black_box(check(&f.snapshot, &listing(black_box(valid), f.day), &policy).reason))
    });

    g.bench_function("parse-listing", |b| {
        b.iter(|| black_box(listing(black_box(valid), f.day)))
    });
    g.bench_function("normalize-number/typed", |b| {
        b.iter(|| {
            black_box(CertNumber::normalize(black_box(
                "3C: ２０２１－０１０９－０１００－０１２３",
            )))
        })
    });
    g.bench_function("normalize-number/plain", |b| {
        b.iter(|| black_box(CertNumber::normalize(black_box("2021010901000123"))))
    });
    g.bench_function("model-key", |b| {
        b.iter(|| black_box(model_key(black_box("ThinkPad X1-2026"))))
    });
    g.finish();

    let path = &f.path;
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    g.bench_function("open-mmap-verify", |b| {
        b.iter(|| black_box(Snapshot::open(path).expect("open")))
    });
    g.bench_function("load-hugepages-verify", |b| {
        b.iter_batched(
            || (),
            |_| black_box(Snapshot::load(path).expect("load")),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
