//! What loading a snapshot costs at a swap (issue #9, item 6): the gateway copies each new
//! snapshot into private memory (`Snapshot::load`), so that no other process can change the
//! bytes it serves (a truncated mapping is a SIGBUS), where it used to map the file in place
//! (`Snapshot::open`). Both are measured in one run, over the same file, the way a swap meets
//! them: the snapshot in force stays loaded, the file was just written (it is in the page
//! cache), and the new snapshot is opened and verified beside the old one.
//!
//! Each round times both, alternating which goes first, and reads the process's memory
//! (`/proc/self/status`): the peak (`VmHWM`, reset through `/proc/self/clear_refs` before each
//! load) less the resident memory before it, and how much of what stays resident is private
//! (`RssAnon`) or pages of the file (`RssFile`, which the kernel can drop and every process
//! mapping the file shares).

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cccgate_client::summary::thousands;
use cccgate_snapshot::Snapshot;
use cccgate_synth::RegisterSpec;

use crate::embedded::register_snapshot;
use crate::setup::BenchError;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadCostConfig {
    /// The synthetic register whose snapshot is loaded.
    pub register: RegisterSpec,
    /// Where its snapshot is cached.
    pub cache_dir: PathBuf,
    /// Rounds (each loads the snapshot both ways).
    pub rounds: usize,
}

/// One load.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// From asking to a verified snapshot.
    pub time: Duration,
    /// Peak resident memory during the load less the resident memory before it.
    pub peak_growth: u64,
    /// Private resident memory after the load less before it.
    pub anon_growth: u64,
    /// Resident pages of files after the load less before it.
    pub file_growth: u64,
}

/// Both ways, round by round.
#[derive(Clone, Debug)]
pub struct LoadCost {
    /// The snapshot file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Whether the peak could be reset (else the peak figures are of the whole run).
    pub peak_reset: bool,
    /// `Snapshot::load` (private memory), per round.
    pub private: Vec<Sample>,
    /// `Snapshot::open` (the file mapped in place), per round.
    pub mapped: Vec<Sample>,
}

fn median<T: Copy + Ord>(v: impl Iterator<Item = T>) -> Option<T> {
    let mut v: Vec<T> = v.collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

impl LoadCost {
    fn medians(samples: &[Sample]) -> Sample {
        Sample {
            time: median(samples.iter().map(|s| s.time)).unwrap_or_default(),
            peak_growth: median(samples.iter().map(|s| s.peak_growth)).unwrap_or(0),
            anon_growth: median(samples.iter().map(|s| s.anon_growth)).unwrap_or(0),
            file_growth: median(samples.iter().map(|s| s.file_growth)).unwrap_or(0),
        }
    }

    /// Medians of (private, mapped).
    pub fn summary(&self) -> (Sample, Sample) {
        (Self::medians(&self.private), Self::medians(&self.mapped))
    }

    /// The last line: `snapshot-load bytes=B private_ms=A mapped_ms=B time_ratio=R
    /// private_peak_bytes=P mapped_peak_bytes=Q`.
    pub fn last_line(&self) -> String {
        let (p, m) = self.summary();
        format!(
            "snapshot-load bytes={} private_ms={:.1} mapped_ms={:.1} time_ratio={:.2} private_peak_bytes={} mapped_peak_bytes={}",
            self.bytes,
            p.time.as_secs_f64() * 1e3,
            m.time.as_secs_f64() * 1e3,
            p.time.as_secs_f64() / m.time.as_secs_f64().max(1e-9),
            p.peak_growth,
            m.peak_growth
        )
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / f64::from(1 << 20))
}

impl fmt::Display for LoadCost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "snapshot load at a swap: {} ({}), in the page cache, beside the snapshot in force; medians of {} rounds{}",
            self.path.display(),
            mib(self.bytes),
            self.private.len(),
            if self.peak_reset {
                ""
            } else {
                " (the peak could not be reset: peak figures are of the whole run)"
            }
        )?;
        writeln!(
            f,
            "| load | time | peak RSS growth | private (RssAnon) growth | file pages (RssFile) growth |"
        )?;
        writeln!(f, "|---|---|---|---|---|")?;
        let (p, m) = self.summary();
        for (name, s) in [
            ("private memory (`Snapshot::load`, the gateway's)", p),
            ("file mapped in place (`Snapshot::open`, before)", m),
        ] {
            writeln!(
                f,
                "| {name} | {:.1} ms | {} | {} | {} |",
                s.time.as_secs_f64() * 1e3,
                mib(s.peak_growth),
                mib(s.anon_growth),
                mib(s.file_growth)
            )?;
        }
        write!(
            f,
            "private / mapped: time {:.2}x, peak growth {} against {} ({} bytes of snapshot)",
            p.time.as_secs_f64() / m.time.as_secs_f64().max(1e-9),
            mib(p.peak_growth),
            mib(m.peak_growth),
            thousands(self.bytes)
        )
    }
}

/// The fields of `/proc/self/status` in bytes: (VmRSS, VmHWM, RssAnon, RssFile).
fn memory() -> (u64, u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (
        field("VmRSS:"),
        field("VmHWM:"),
        field("RssAnon:"),
        field("RssFile:"),
    )
}

fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn measure(
    load: impl FnOnce() -> Result<Snapshot, cccgate_snapshot::SnapshotError>,
) -> Result<(Sample, Snapshot, bool), cccgate_snapshot::SnapshotError> {
    let reset = reset_peak();
    let (rss, _, anon, file) = memory();
    let t = Instant::now();
    let s = load()?;
    let time = t.elapsed();
    let (_, peak, anon_after, file_after) = memory();
    Ok((
        Sample {
            time,
            peak_growth: peak.saturating_sub(rss),
            anon_growth: anon_after.saturating_sub(anon),
            file_growth: file_after.saturating_sub(file),
        },
        s,
        reset,
    ))
}

/// Runs the measurement.
pub fn run_load_cost(cfg: &LoadCostConfig) -> Result<LoadCost, BenchError> {
    let register = cfg.register.generate();
    let dir = register_snapshot(&cfg.register, register, &cfg.cache_dir)?;
    let path = dir.join(cccgate_snapshot::file_name(1));
    let err = |source| BenchError::Snapshot {
        path: path.clone(),
        source,
    };
    // The snapshot in force, and the file read once so it is in the page cache, as it is
    // when the loader has just written it.
    let in_force = Snapshot::load(&path).map_err(err)?;
    let bytes = in_force.byte_len() as u64;
    let mut out = LoadCost {
        path: path.clone(),
        bytes,
        peak_reset: true,
        private: Vec::new(),
        mapped: Vec::new(),
    };
    for round in 0..cfg.rounds.max(1) {
        for private in [round % 2 == 0, round % 2 == 1] {
            let (sample, snapshot, reset) = if private {
                measure(|| Snapshot::load(&path))
            } else {
                measure(|| Snapshot::open(&path))
            }
            .map_err(err)?;
            if snapshot.sequence() != in_force.sequence() {
                return Err(BenchError::Invalid(format!(
                    "{} changed during the run",
                    path.display()
                )));
            }
            drop(snapshot);
            out.peak_reset &= reset;
            if private {
                out.private.push(sample);
            } else {
                out.mapped.push(sample);
            }
        }
    }
    drop(in_force);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_loads_are_measured_every_round_over_the_same_snapshot() {
        let cache = tempfile::tempdir().unwrap();
        let cost = run_load_cost(&LoadCostConfig {
            register: RegisterSpec {
                certs: 2_000,
                ..RegisterSpec::default()
            },
            cache_dir: cache.path().to_path_buf(),
            rounds: 3,
        })
        .unwrap();
        assert_eq!(cost.private.len(), 3);
        assert_eq!(cost.mapped.len(), 3);
        assert!(cost.bytes > 0);
        assert!(cost.private.iter().all(|s| s.time > Duration::ZERO));
        let line = cost.last_line();
        assert!(
            line.starts_with(&format!("snapshot-load bytes={} ", cost.bytes)),
            "{line}"
        );
    }
}
