//! The swap benchmark at a small size: snapshots of two registers that disagree swapped in
//! under load, every verdict its own snapshot's, the snapshot directory never above three
//! snapshot files and back to the base alone at the end, and the soak samples taken.

use std::time::Duration;

use cccgate_bench::grpc::{GrpcConfig, GrpcMode, run_grpc_blocking};
use cccgate_bench::{BenchError, GatewayChoice};
use cccgate_client::progress::Mode;
use cccgate_synth::RegisterSpec;

/// Swaps of a 4,000-certificate register under 20,000 checks/s.
fn small_swaps(cache: &std::path::Path, swaps: u32, every_ms: u64) -> GrpcConfig {
    GrpcConfig {
        gateway: GatewayChoice::Embedded {
            cache_dir: cache.to_path_buf(),
        },
        register: RegisterSpec {
            certs: 4_000,
            seed: 5,
            ..RegisterSpec::default()
        },
        chunk: 200,
        concurrency: 4,
        rate: Some(20_000.0),
        swaps,
        swap_every: Duration::from_millis(every_ms),
        progress: Mode::Off,
        ..GrpcConfig::new(GrpcMode::Swap)
    }
}

#[test]
fn swaps_between_disagreeing_registers_stay_in_three_snapshots_and_are_all_checked() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = small_swaps(cache.path(), 12, 200);
    let r = run_grpc_blocking(&cfg, 2, None).unwrap();
    assert_eq!(r.stats.errors(), 0, "{r}");
    assert_eq!(
        (r.stats.mismatches, r.stats.torn, r.stats.went_back),
        (0, 0, 0),
        "{r}"
    );
    assert_eq!(r.stats.sequences, (1, 13), "{r}");
    // The alternate register's answers were seen and were its own.
    assert!(r.stats.changed_by_swap > 0, "{r}");
    let m = r.memory.expect("swap mode reports memory and disk");
    assert_eq!(m.swaps, 12);
    assert!(m.flipped_certs > 0);
    assert!(m.disk_peak_files <= 3, "{r}");
    assert!(m.disk_peak <= 3 * m.snapshot_bytes + 4096, "{r}");
    // Nothing left but the base register (and the gateway's high-water mark, at the last
    // swap; the next run removes it with the rest).
    let dirs: Vec<_> = std::fs::read_dir(cache.path()).unwrap().flatten().collect();
    assert_eq!(dirs.len(), 1);
    let mut left: Vec<String> = std::fs::read_dir(dirs[0].path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["high-water", "snap-1.ccc"]);
    let mark = std::fs::read_to_string(dirs[0].path().join("high-water")).unwrap();
    assert_eq!(mark.trim(), "13");
    // Start, ten tenths, end; the peak disk seen by the soak agrees.
    let soak = r.soak.expect("swap mode takes soak samples");
    assert_eq!(soak.samples.len(), 12, "{soak}");
    // (The disk also holds the gateway's high-water mark, a few bytes, rewritten at swaps.)
    assert!(soak.peak.snapshots <= 3, "{soak}");
    assert!(soak.peak.disk <= 3 * m.snapshot_bytes + 4096, "{soak}");
    assert_eq!(soak.end().unwrap().figures.snapshots, 1);
    assert!(soak.summary_line().starts_with("soak samples=12 "));
}

#[test]
fn a_swap_that_fails_still_reports_what_was_done_before_the_error() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = GrpcConfig {
        // Swap 5's snapshot is lost before it is put in place.
        fail_at_swap: Some(5),
        ..small_swaps(cache.path(), 10, 200)
    };
    let err = run_grpc_blocking(&cfg, 2, None).unwrap_err();
    let BenchError::Stopped { report, error } = err else {
        panic!("expected the run's report with its error, got {err}");
    };
    // The error names the snapshot that could not be put in place.
    let message = error.to_string();
    assert!(message.contains("snap-6.ccc"), "{message}");
    // What was done before it: four swaps, every verdict checked, none wrong.
    let m = report.memory.expect("the swaps done are reported");
    assert_eq!(m.swaps, 4, "{report}");
    assert!(report.checks > 0, "{report}");
    assert_eq!(report.stats.errors(), 0, "{report}");
    assert_eq!(report.stats.mismatches, 0, "{report}");
    assert_eq!(report.stats.sequences, (1, 5), "{report}");
    assert!(report.latency.samples > 0, "{report}");
    assert!(m.rss_before > 0 && m.rss_after > 0, "{report}");
    // The soak samples taken so far: the start, one after each tenth of the swaps done
    // (the sample of tenth k is taken just before swap k + 1), and the end; the tenths not
    // reached are not invented.
    let soak = report.soak.as_ref().expect("soak samples so far");
    let at: Vec<u32> = soak
        .samples
        .iter()
        .map(|s| (s.at * 10.0).round() as u32)
        .collect();
    assert_eq!(at, [0, 1, 2, 3, 4, 10], "{soak}");
    assert!(soak.summary_line().starts_with("soak samples=6 "));
    // The whole error says how far the run got.
    let whole = BenchError::Stopped { report, error }.to_string();
    assert!(
        whole.starts_with("the run stopped after 4 swaps: "),
        "{whole}"
    );
    // Nothing is left but the base register.
    let dirs: Vec<_> = std::fs::read_dir(cache.path()).unwrap().flatten().collect();
    let snapshots = std::fs::read_dir(dirs[0].path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("snap-"))
        .count();
    assert_eq!(snapshots, 1);
}

#[test]
fn with_seconds_the_swaps_stop_when_the_time_is_up_and_are_reported() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = GrpcConfig {
        // Far more swaps than 1.5 s holds at 100 ms apart.
        seconds: Some(1.5),
        ..small_swaps(cache.path(), 1_000, 100)
    };
    let r = run_grpc_blocking(&cfg, 2, None).unwrap();
    let m = r.memory.expect("swap mode reports its swaps");
    assert!(m.swaps >= 1 && m.swaps < 20, "{r}");
    // Every swap done was answered, but the last may not be: on a starved machine its
    // reload can end after the load did (the run still waits for it and counts it).
    let answered = r.stats.sequences.1;
    assert!(
        answered == 1 + u64::from(m.swaps) || answered == u64::from(m.swaps),
        "{r}"
    );
    assert_eq!((r.stats.errors(), r.stats.mismatches), (0, 0), "{r}");
    // The start and the end; no tenth of the 1,000 swaps was reached.
    let soak = r.soak.expect("soak samples");
    assert_eq!(soak.samples.len(), 2, "{soak}");
}
