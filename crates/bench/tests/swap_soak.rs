//! The swap benchmark at a small size: snapshots of two registers that disagree swapped in
//! under load, every verdict its own snapshot's, the snapshot directory never above three
//! snapshot files and back to the base alone at the end, and the soak samples taken.

use std::time::Duration;

use cccgate_bench::GatewayChoice;
use cccgate_bench::grpc::{GrpcConfig, GrpcMode, run_grpc_blocking};
use cccgate_client::progress::Mode;
use cccgate_synth::RegisterSpec;

#[test]
fn swaps_between_disagreeing_registers_stay_in_three_snapshots_and_are_all_checked() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = GrpcConfig {
        gateway: GatewayChoice::Embedded {
            cache_dir: cache.path().to_path_buf(),
        },
        register: RegisterSpec {
            certs: 4_000,
            seed: 5,
            ..RegisterSpec::default()
        },
        chunk: 200,
        concurrency: 4,
        rate: Some(20_000.0),
        swaps: 12,
        swap_every: Duration::from_millis(200),
        progress: Mode::Off,
        ..GrpcConfig::new(GrpcMode::Swap)
    };
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
