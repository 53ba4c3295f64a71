//! The year benchmark at a tiny scale, in the test suite: the embedded gateway over a small
//! synthetic register, every check answered, every verdict the one expected, no errors. Its
//! speed is not checked here (see `cccgate bench year`), nor how closely a paced run keeps to
//! its schedule: when each chunk is due is a pure function of the curve, tested on a given
//! clock in `crates/bench/src/load.rs` and `pace.rs`; the lag of a real run is the benchmark's
//! to report.

use cccgate_bench::GatewayChoice;
use cccgate_bench::pace::Pace;
use cccgate_bench::year::{YearConfig, run_year_blocking};
use cccgate_client::progress::Mode;
use cccgate_core::{Decision, Reason};
use cccgate_synth::{Profile, RegisterSpec};

fn tiny(profile: Profile, scale: f64, cache: &std::path::Path) -> YearConfig {
    YearConfig {
        scale,
        gateway: GatewayChoice::Embedded {
            cache_dir: cache.to_path_buf(),
        },
        register: RegisterSpec {
            certs: 20_000,
            seed: 3,
            ..RegisterSpec::default()
        },
        chunk: 500,
        concurrency: 3,
        progress: Mode::Off,
        ..YearConfig::new(profile)
    }
}

#[test]
fn a_tiny_2021_year_counts_every_check_blocks_what_is_expected_and_has_no_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny(Profile::Y2021, 0.0001, tmp.path());
    let r = run_year_blocking(&cfg, 2, None).unwrap();
    assert_eq!(r.planned, 8_177, "81.769M x 0.0001");
    assert_eq!(r.checks, r.planned);
    assert_eq!(r.errors(), 0, "{r}");
    assert_eq!(r.stats.mismatches, 0, "{r}");
    assert_eq!(r.blocked(), r.stats.expected_blocked);
    // The profile's share (1.57%) holds roughly even over 8,177 checks.
    let share = r.blocked() as f64 / r.checks as f64;
    assert!((0.010..0.022).contains(&share), "{share}");
    let by_decision: u64 = Decision::ALL.iter().map(|d| r.stats.decided(*d)).sum();
    assert_eq!(by_decision, r.checks);
    assert!(r.stats.verdicts[Reason::ModelNotCovered.index()][Decision::Review as usize] > 0);
    let line = r.last_line();
    assert!(
        line.starts_with("year profile=2021 scale=0.0001 checks=8177 seconds="),
        "{line}"
    );
    assert!(
        line.ends_with(&format!("blocked={} errors=0", r.blocked())),
        "{line}"
    );
    for key in ["checks_per_sec=", "p99_us="] {
        assert!(line.contains(key), "{line}");
    }
}

#[test]
fn a_paced_2025_year_on_its_own_gateway_runtime_answers_every_check() {
    let tmp = tempfile::tempdir().unwrap();
    // 340M x 0.00002 = 6,800 checks; the year played in about 0.3 s.
    let speedup = 1.0e8;
    let cfg = YearConfig {
        pace: Pace::Realtime(speedup),
        ..tiny(Profile::Y2025, 0.00002, tmp.path())
    };
    let r = run_year_blocking(&cfg, 1, Some(1)).unwrap();
    assert_eq!(r.checks, 6_800);
    assert_eq!(r.errors(), 0, "{r}");
    assert_eq!(r.stats.mismatches, 0, "{r}");
    assert_eq!(r.blocked(), r.stats.expected_blocked);
    // A paced run reports the schedule's busiest measured second (its value depends on the
    // run's own seconds, so it is the benchmark's to show, not this test's to bound).
    assert!(r.target_peak_rate.is_some_and(|t| t > 0.0), "{r}");
    assert!(r.to_string().contains("peak rate"), "{r}");
}
