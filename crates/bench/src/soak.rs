//! Soak figures: what a long run does to the process, sampled so that a leak shows as a slope.
//!
//! A [`Soak`] holds samples of the process's resident memory, open file descriptors and
//! threads (from `/proc/self`) and of the bytes on disk under the run's snapshot directory
//! (and decision log): one at the start, one after each tenth of the run, one at the end. A
//! background task ([`SoakRecorder`]) also keeps the peaks, polled every 100 ms, and can take
//! the tenth samples itself from a progress counter; a run that knows better when its
//! process is in a steady state (the swap benchmark: just before a swap, once the snapshot
//! for it is prepared) takes them itself with [`SoakRecorder::take`].
//!
//! [`Soak::summary_line`] is the `soak ...` line of `--soak` (format in `benches/README.md`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One reading of the process and its directories. `None`: the system does not say (not
/// Linux).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    /// Resident memory (VmRSS), bytes.
    pub rss: Option<u64>,
    /// Open file descriptors.
    pub fds: Option<u64>,
    /// Threads.
    pub threads: Option<u64>,
    /// Bytes of the files under the watched paths.
    pub disk: u64,
    /// Snapshot files (`snap-N.ccc`) under the watched paths.
    pub snapshots: u64,
    /// Heap bytes in use (glibc's `mallinfo2`: arenas and mapped blocks); in samples only,
    /// not in the 100 ms polls (it walks every arena under its lock).
    pub heap: Option<u64>,
    /// Bytes held by the change feed's history of the gateways in this process; in samples
    /// only.
    pub history: Option<u64>,
}

impl Figures {
    /// Reads them now; `paths` are files or directories (read two levels deep).
    pub fn now(paths: &[PathBuf]) -> Figures {
        let (disk, snapshots) = paths
            .iter()
            .map(|p| disk_usage(p, 2))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        Figures {
            rss: crate::load::resident_bytes(),
            fds: open_fds(),
            threads: threads(),
            disk,
            snapshots,
            heap: None,
            history: None,
        }
    }

    /// [`Figures::now`] with what only samples read: the heap in use and the change history.
    pub fn sample(paths: &[PathBuf]) -> Figures {
        Figures {
            heap: cccgate_server::watch::heap_in_use(),
            history: Some(cccgate_server::watch::change_history_bytes()),
            ..Figures::now(paths)
        }
    }

    fn max(self, o: Figures) -> Figures {
        let m = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        Figures {
            rss: m(self.rss, o.rss),
            fds: m(self.fds, o.fds),
            threads: m(self.threads, o.threads),
            disk: self.disk.max(o.disk),
            snapshots: self.snapshots.max(o.snapshots),
            heap: m(self.heap, o.heap),
            history: m(self.history, o.history),
        }
    }
}

/// Open file descriptors of this process.
pub fn open_fds() -> Option<u64> {
    // The directory handle read_dir opens is itself one of the entries.
    let n = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(n.saturating_sub(1))
}

/// Threads of this process.
pub fn threads() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Threads:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Bytes of the regular files at or under `path` (down to `depth` levels of directories),
/// and how many of them are snapshot files. A `path` that is not a directory also counts
/// its rotated siblings (`<name>.1`, `<name>.2.gz` ...), so a rotating log is measured
/// whole. Files that vanish while being read count as absent: the directory is live.
pub fn disk_usage(path: &Path, depth: u32) -> (u64, u64) {
    if !path.is_dir()
        && let (Some(parent), Some(name)) = (path.parent(), path.file_name())
    {
        let prefix = format!("{}.", name.to_string_lossy());
        let rotated = std::fs::read_dir(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        })
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum::<u64>()
        })
        .unwrap_or(0);
        let (own, snaps) = usage_of(path, depth);
        return (own + rotated, snaps);
    }
    usage_of(path, depth)
}

fn usage_of(path: &Path, depth: u32) -> (u64, u64) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return (0, 0);
    };
    if meta.is_file() {
        let snap = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_snapshot_file);
        return (meta.len(), u64::from(snap));
    }
    if !meta.is_dir() || depth == 0 {
        return (0, 0);
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return (0, 0);
    };
    entries
        .flatten()
        .map(|e| usage_of(&e.path(), depth - 1))
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
}

/// Whether a file name is a snapshot's: `snap-N.ccc`, or one being written or prepared
/// under a hidden name (`.snap-N.ccc.tmp-...`, `.snap-N.ccc.next`).
fn is_snapshot_file(name: &str) -> bool {
    let name = name.strip_prefix('.').unwrap_or(name);
    match name.find(".ccc") {
        Some(end) => cccgate_snapshot::parse_file_name(&name[..end + 4]).is_some(),
        None => false,
    }
}

/// One sample of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SoakSample {
    /// How far into the run, 0 (start) to 1 (end of the load).
    pub at: f64,
    /// Seconds since the recorder started.
    pub seconds: f64,
    /// The readings.
    pub figures: Figures,
}

/// The samples of a run and the peaks between them.
#[derive(Clone, Debug, Default)]
pub struct Soak {
    /// Start, after each tenth, end: in time order.
    pub samples: Vec<SoakSample>,
    /// The largest of each figure over every sample and every 100 ms poll.
    pub peak: Figures,
    /// The size of one snapshot file, when the run knows it (disk is then also given in
    /// snapshots).
    pub snapshot_bytes: Option<u64>,
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

fn opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

impl Soak {
    /// The first sample.
    pub fn start(&self) -> Option<&SoakSample> {
        self.samples.first()
    }

    /// The last sample.
    pub fn end(&self) -> Option<&SoakSample> {
        self.samples.last()
    }

    /// The samples taken after each tenth of the run (under load), in order.
    pub fn tenths(&self) -> impl Iterator<Item = &SoakSample> {
        let n = self.samples.len();
        self.samples
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i > 0 && *i + 1 < n)
            .map(|(_, s)| s)
    }

    /// Resident memory at the end over the start.
    pub fn rss_ratio(&self) -> Option<f64> {
        let a = self.start()?.figures.rss?;
        let b = self.end()?.figures.rss?;
        Some(b as f64 / a.max(1) as f64)
    }

    /// Resident memory after the last tenth over after the first: the run's growth under
    /// load, warm-up excluded.
    pub fn rss_tenths_ratio(&self) -> Option<f64> {
        let t: Vec<u64> = self.tenths().filter_map(|s| s.figures.rss).collect();
        Some(*t.last()? as f64 / (*t.first()?).max(1) as f64)
    }

    /// The least-squares slope of resident memory over the tenth samples, bytes per tenth
    /// of the run: a leak is a steady positive slope.
    pub fn rss_slope(&self) -> Option<f64> {
        let pts: Vec<(f64, f64)> = self
            .tenths()
            .filter_map(|s| s.figures.rss.map(|r| (s.at * 10.0, r as f64)))
            .collect();
        slope(&pts)
    }

    /// The `soak ...` line: every figure as `key=value`, series comma-separated.
    pub fn summary_line(&self) -> String {
        let series = |f: &dyn Fn(&Figures) -> String| {
            self.samples
                .iter()
                .map(|s| f(&s.figures))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut line = format!(
            "soak samples={} seconds={:.1} rss_mib={} rss_peak_mib={:.1} rss_end_over_start={} rss_last_over_first_tenth={} rss_slope_mib_per_tenth={} fds={} fds_peak={} threads={} threads_peak={} disk_mib={} disk_peak_mib={:.1}",
            self.samples.len(),
            self.end().map_or(0.0, |s| s.seconds),
            series(&|f| f.rss.map_or("-".into(), |r| format!("{:.1}", mib(r)))),
            mib(self.peak.rss.unwrap_or(0)),
            self.rss_ratio().map_or("-".into(), |r| format!("{r:.3}")),
            self.rss_tenths_ratio()
                .map_or("-".into(), |r| format!("{r:.3}")),
            self.rss_slope()
                .map_or("-".into(), |s| format!("{:.2}", s / (1u64 << 20) as f64)),
            series(&|f| opt(f.fds)),
            opt(self.peak.fds),
            series(&|f| opt(f.threads)),
            opt(self.peak.threads),
            series(&|f| format!("{:.1}", mib(f.disk))),
            mib(self.peak.disk),
        );
        line.push_str(&format!(
            " snapshots={} snapshots_peak={} heap_mib={} history_mib={}",
            series(&|f| f.snapshots.to_string()),
            self.peak.snapshots,
            series(&|f| f.heap.map_or("-".into(), |b| format!("{:.1}", mib(b)))),
            series(&|f| f.history.map_or("-".into(), |b| format!("{:.1}", mib(b)))),
        ));
        if let Some(b) = self.snapshot_bytes.filter(|&b| b > 0) {
            line.push_str(&format!(
                " disk_peak_in_snapshots={:.2}",
                self.peak.disk as f64 / b as f64
            ));
        }
        line
    }
}

impl fmt::Display for Soak {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "  soak          {:>6} {:>8} {:>11} {:>5} {:>7} {:>10} {:>5} {:>10} {:>9}",
            "at", "seconds", "resident", "fds", "threads", "disk", "snaps", "heap", "history"
        )?;
        for s in &self.samples {
            let g = &s.figures;
            let in_mib = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1} MiB", mib(b)));
            writeln!(
                f,
                "                {:>5.0}% {:>8.1} {:>7.1} MiB {:>5} {:>7} {:>6.1} MiB {:>5} {:>10} {:>9}",
                s.at * 100.0,
                s.seconds,
                mib(g.rss.unwrap_or(0)),
                opt(g.fds),
                opt(g.threads),
                mib(g.disk),
                g.snapshots,
                in_mib(g.heap),
                in_mib(g.history)
            )?;
        }
        write!(
            f,
            "                  peak          {:>7.1} MiB {:>5} {:>7} {:>6.1} MiB {:>5}; resident end/start {}, last/first tenth {}, slope {} MiB a tenth",
            mib(self.peak.rss.unwrap_or(0)),
            opt(self.peak.fds),
            opt(self.peak.threads),
            mib(self.peak.disk),
            self.peak.snapshots,
            self.rss_ratio().map_or("-".into(), |r| format!("{r:.3}")),
            self.rss_tenths_ratio()
                .map_or("-".into(), |r| format!("{r:.3}")),
            self.rss_slope()
                .map_or("-".into(), |s| format!("{:+.2}", s / (1u64 << 20) as f64)),
        )
    }
}

/// The least-squares slope of `pts`, if there are two distinct x.
fn slope(pts: &[(f64, f64)]) -> Option<f64> {
    let n = pts.len() as f64;
    if pts.len() < 2 {
        return None;
    }
    let (mx, my) = (
        pts.iter().map(|p| p.0).sum::<f64>() / n,
        pts.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    Some(sxy / sxx)
}

struct State {
    soak: Soak,
    /// Tenths sampled so far (1..=10).
    tenths: u32,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a run's soak samples: [`SoakRecorder::start`] samples the start, a background task
/// polls the peaks every 100 ms (and, given a progress function, takes a sample as each
/// tenth of the run is passed), [`SoakRecorder::finish`] samples the end.
pub struct SoakRecorder {
    state: Arc<Mutex<State>>,
    paths: Arc<Vec<PathBuf>>,
    started: Instant,
    stop: Arc<AtomicBool>,
    poller: Option<std::thread::JoinHandle<()>>,
}

impl fmt::Debug for SoakRecorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SoakRecorder")
            .field("paths", &self.paths)
            .finish_non_exhaustive()
    }
}

/// How far a run is, 0 to 1.
pub type Progress = Box<dyn Fn() -> f64 + Send>;

impl SoakRecorder {
    /// Samples the start now and starts polling. With `progress`, the poller takes the tenth
    /// samples itself; without, the run calls [`SoakRecorder::take`]. The poller is a plain
    /// thread: it reads `/proc` and directories, blocking work that must not stall a runtime.
    pub fn start(paths: Vec<PathBuf>, progress: Option<Progress>) -> SoakRecorder {
        let paths = Arc::new(paths);
        let started = Instant::now();
        let first = Figures::sample(&paths);
        let state = Arc::new(Mutex::new(State {
            soak: Soak {
                samples: vec![SoakSample {
                    at: 0.0,
                    seconds: 0.0,
                    figures: first,
                }],
                peak: first,
                snapshot_bytes: None,
            },
            tenths: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let poller = {
            let (state, paths, stop) = (state.clone(), paths.clone(), stop.clone());
            std::thread::Builder::new()
                .name("soak".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                        let now = Figures::now(&paths);
                        let mut st = lock(&state);
                        st.soak.peak = st.soak.peak.max(now);
                        if let Some(p) = &progress {
                            let reached = (p() * 10.0 + 1e-9).floor().clamp(0.0, 10.0) as u32;
                            let now = if st.tenths < reached {
                                Figures::sample(&paths)
                            } else {
                                now
                            };
                            while st.tenths < reached {
                                st.tenths += 1;
                                let at = f64::from(st.tenths) / 10.0;
                                st.soak.samples.push(SoakSample {
                                    at,
                                    seconds: started.elapsed().as_secs_f64(),
                                    figures: now,
                                });
                            }
                        }
                    }
                })
                .ok()
        };
        SoakRecorder {
            state,
            paths,
            started,
            stop,
            poller,
        }
    }

    /// Records the size of one snapshot file (disk is then also reported in snapshots).
    pub fn set_snapshot_bytes(&self, bytes: u64) {
        lock(&self.state).soak.snapshot_bytes = Some(bytes);
    }

    /// Takes the sample of tenth `tenth` (1..=10) now, if it was not taken yet.
    pub fn take(&self, tenth: u32) {
        let now = Figures::sample(&self.paths);
        let mut st = lock(&self.state);
        st.soak.peak = st.soak.peak.max(now);
        while st.tenths < tenth.min(10) {
            st.tenths += 1;
            let at = f64::from(st.tenths) / 10.0;
            st.soak.samples.push(SoakSample {
                at,
                seconds: self.started.elapsed().as_secs_f64(),
                figures: now,
            });
        }
    }

    /// Folds a reading taken by the run into the peaks (e.g. the disk right after a file
    /// was written, which a 100 ms poll could miss).
    pub fn observe(&self) {
        let now = Figures::now(&self.paths);
        let mut st = lock(&self.state);
        st.soak.peak = st.soak.peak.max(now);
    }

    /// Stops polling and samples the end (tenths not reached are not invented).
    pub fn finish(mut self) -> Soak {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.poller.take() {
            let _ = p.join();
        }
        let now = Figures::sample(&self.paths);
        let mut st = lock(&self.state);
        st.soak.peak = st.soak.peak.max(now);
        st.soak.samples.push(SoakSample {
            at: 1.0,
            seconds: self.started.elapsed().as_secs_f64(),
            figures: now,
        });
        std::mem::take(&mut st.soak)
    }
}

impl Drop for SoakRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_this_process_and_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("snap-3.ccc"), vec![0u8; 1000]).unwrap();
        std::fs::create_dir(dir.path().join("staging")).unwrap();
        std::fs::write(dir.path().join("staging").join("x.tmp"), vec![0u8; 24]).unwrap();
        let f = Figures::now(&[dir.path().to_path_buf()]);
        assert_eq!((f.disk, f.snapshots), (1024, 1));
        assert!(f.rss.unwrap() > 0);
        assert!(f.threads.unwrap() >= 1);
        // Opening a file shows as one more descriptor.
        let before = open_fds().unwrap();
        let held = std::fs::File::open(dir.path().join("snap-3.ccc")).unwrap();
        assert!(open_fds().unwrap() > before);
        drop(held);
        assert_eq!(disk_usage(&dir.path().join("missing"), 2), (0, 0));
        for (name, snap) in [
            ("snap-12.ccc", true),
            (".snap-12.ccc.next", true),
            (".snap-3.ccc.tmp-77", true),
            ("snap-x.ccc", false),
            ("snap-1.cc", false),
            ("high-water", false),
        ] {
            assert_eq!(is_snapshot_file(name), snap, "{name}");
        }
        // A log and its rotated files.
        let log = dir.path().join("decisions.jsonl");
        std::fs::write(&log, vec![0u8; 10]).unwrap();
        std::fs::write(dir.path().join("decisions.jsonl.1"), vec![0u8; 5]).unwrap();
        std::fs::write(dir.path().join("decisions.jsonl.2.gz"), vec![0u8; 2]).unwrap();
        assert_eq!(disk_usage(&log, 2), (17, 0));
    }

    #[test]
    fn a_recorder_takes_start_tenths_and_end_and_keeps_peaks() {
        let dir = tempfile::tempdir().unwrap();
        let rec = SoakRecorder::start(vec![dir.path().to_path_buf()], None);
        rec.set_snapshot_bytes(100);
        for t in 1..=4 {
            rec.take(t);
        }
        // Taking an earlier tenth again adds nothing; a later one fills the gap.
        rec.take(2);
        std::fs::write(dir.path().join("snap-2.ccc"), vec![0u8; 300]).unwrap();
        rec.observe();
        std::fs::remove_file(dir.path().join("snap-2.ccc")).unwrap();
        rec.take(10);
        let soak = rec.finish();
        assert_eq!(soak.samples.len(), 12);
        let ats: Vec<f64> = soak.samples.iter().map(|s| s.at).collect();
        assert_eq!(ats[0], 0.0);
        assert!((ats[10] - 1.0).abs() < 1e-9 && ats[11] == 1.0);
        assert_eq!(soak.tenths().count(), 10);
        assert!(
            soak.samples
                .windows(2)
                .all(|w| w[0].seconds <= w[1].seconds)
        );
        assert_eq!((soak.peak.disk, soak.peak.snapshots), (300, 1));
        assert_eq!(soak.end().unwrap().figures.disk, 0);
        let line = soak.summary_line();
        assert!(line.starts_with("soak samples=12 "), "{line}");
        for key in [
            " rss_mib=",
            " rss_end_over_start=",
            " rss_slope_mib_per_tenth=",
            " fds=",
            " threads=",
            " disk_mib=",
            " disk_peak_mib=",
            " snapshots_peak=1",
            " disk_peak_in_snapshots=3.00",
        ] {
            assert!(line.contains(key), "{key} in {line}");
        }
        // Twelve values in each series.
        let rss = line
            .split(" rss_mib=")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap();
        assert_eq!(rss.split(',').count(), 12);
    }

    #[test]
    fn a_progress_function_drives_the_tenths() {
        let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let d = done.clone();
        let rec = SoakRecorder::start(
            Vec::new(),
            Some(Box::new(move || d.load(Ordering::Relaxed) as f64 / 100.0)),
        );
        done.store(35, Ordering::Relaxed);
        // The poller sees it within a few polls (bounded wait).
        let deadline = Instant::now() + Duration::from_secs(10);
        while lock(&rec.state).tenths < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        done.store(100, Ordering::Relaxed);
        while lock(&rec.state).tenths < 10 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let soak = rec.finish();
        assert_eq!(soak.samples.len(), 12, "{:?}", soak.samples);
    }

    #[test]
    fn the_slope_shows_a_leak_and_not_noise() {
        let mk = |rss: &[u64]| Soak {
            samples: std::iter::once(0.0)
                .chain((1..=10).map(|t| f64::from(t) / 10.0))
                .chain(std::iter::once(1.0))
                .zip(rss)
                .map(|(at, &r)| SoakSample {
                    at,
                    seconds: at,
                    figures: Figures {
                        rss: Some(r << 20),
                        ..Figures::default()
                    },
                })
                .collect(),
            ..Soak::default()
        };
        let leak = mk(&[100, 110, 120, 130, 140, 150, 160, 170, 180, 190, 200, 200]);
        assert!((leak.rss_slope().unwrap() / (1u64 << 20) as f64 - 10.0).abs() < 1e-9);
        assert!((leak.rss_ratio().unwrap() - 2.0).abs() < 1e-9);
        let flat = mk(&[100, 200, 201, 200, 199, 200, 201, 200, 199, 200, 200, 120]);
        assert!(flat.rss_slope().unwrap().abs() < (1u64 << 20) as f64 * 0.2);
        assert!((flat.rss_tenths_ratio().unwrap() - 1.0).abs() < 1e-9);
    }
}
