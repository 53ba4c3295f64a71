//! Progress of a long run on stderr: a bar on a terminal, plain periodic lines otherwise.
//!
//! The work updates two atomics (items done, and input bytes read when there is a file to
//! measure against); a reporter thread samples them, so progress costs the hot path one
//! relaxed add per chunk. On a terminal the bar shows items done, the rate and an ETA (from the
//! bytes read of a file, or from a known total); in a pipe or a log, one line every interval.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::summary::thousands;

/// The counters a run updates.
#[derive(Debug, Default)]
pub struct Counters {
    /// Items (records, checks) done.
    pub done: Arc<AtomicU64>,
    /// Input bytes read (replay of a file).
    pub bytes: Option<Arc<AtomicU64>>,
}

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Nothing.
    Off,
    /// A bar redrawn in place (a terminal).
    Bar,
    /// One line per interval (a pipe or a log).
    Lines(Duration),
}

impl Mode {
    /// A bar if stderr is a terminal, else a line every `interval`.
    pub fn auto(interval: Duration) -> Mode {
        if std::io::stderr().is_terminal() {
            Mode::Bar
        } else {
            Mode::Lines(interval)
        }
    }
}

/// What the total is measured in, for the percentage and ETA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Total {
    /// Unknown (stdin).
    Unknown,
    /// This many items.
    Items(u64),
    /// This many input bytes.
    Bytes(u64),
}

/// A running reporter; [`Reporter::finish`] stops it.
#[derive(Debug)]
pub struct Reporter {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reporter {
    /// Starts reporting `counters` labelled `what` (e.g. `replay`, `year 2021`).
    pub fn start(
        what: &str,
        unit: &'static str,
        mode: Mode,
        total: Total,
        counters: Arc<Counters>,
    ) -> Reporter {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = match mode {
            Mode::Off => None,
            Mode::Bar => {
                let stop = stop.clone();
                let what = what.to_owned();
                std::thread::Builder::new()
                    .name("progress".into())
                    .spawn(move || bar(&what, unit, total, &counters, &stop))
                    .ok()
            }
            Mode::Lines(every) => {
                let stop = stop.clone();
                let what = what.to_owned();
                std::thread::Builder::new()
                    .name("progress".into())
                    .spawn(move || lines(&what, unit, every, total, &counters, &stop))
                    .ok()
            }
        };
        Reporter { stop, thread }
    }

    /// Stops the reporter (the bar is cleared).
    pub fn finish(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Sleeps up to `d`, waking early when `stop` is set.
fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(end - Instant::now()));
    }
    !stop.load(Ordering::Relaxed)
}

fn fraction(total: Total, c: &Counters) -> Option<f64> {
    match total {
        Total::Unknown => None,
        Total::Items(n) if n > 0 => Some(c.done.load(Ordering::Relaxed) as f64 / n as f64),
        Total::Bytes(n) if n > 0 => c
            .bytes
            .as_ref()
            .map(|b| b.load(Ordering::Relaxed) as f64 / n as f64),
        _ => None,
    }
}

/// The time left when `fraction` of the work took `elapsed`, at the same pace. The caller
/// reads the clock, so this is a pure function of its arguments.
fn eta(elapsed: Duration, fraction: Option<f64>) -> Option<Duration> {
    let f = fraction?.clamp(0.0, 1.0);
    if f <= 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        elapsed.as_secs_f64() * (1.0 - f) / f,
    ))
}

fn hms(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn bar(what: &str, unit: &str, total: Total, c: &Counters, stop: &AtomicBool) {
    let start = Instant::now();
    let pb = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr_with_hz(10));
    let known = !matches!(total, Total::Unknown);
    let style = if known {
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}")
    } else {
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {spinner} {msg}")
    };
    if let Ok(style) = style {
        pb.set_style(style);
    }
    pb.set_prefix(what.to_owned());
    while nap(Duration::from_millis(200), stop) {
        let done = c.done.load(Ordering::Relaxed);
        let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-9);
        let f = fraction(total, c);
        if let Some(f) = f {
            pb.set_position((f.clamp(0.0, 1.0) * 1000.0) as u64);
        } else {
            pb.tick();
        }
        let eta = eta(start.elapsed(), f).map_or(String::new(), |d| format!(", ETA {}", hms(d)));
        pb.set_message(format!(
            "{} {unit}, {} {unit}/s{eta}",
            thousands(done),
            thousands(rate as u64)
        ));
    }
    pb.finish_and_clear();
}

fn lines(what: &str, unit: &str, every: Duration, total: Total, c: &Counters, stop: &AtomicBool) {
    let start = Instant::now();
    let mut last = (start, 0u64);
    while nap(every, stop) {
        let now = Instant::now();
        let done = c.done.load(Ordering::Relaxed);
        let rate = (done - last.1.min(done)) as f64 / (now - last.0).as_secs_f64().max(1e-9);
        last = (now, done);
        let f = fraction(total, c);
        let pct = f.map_or(String::new(), |f| format!(" ({:.1}%)", f * 100.0));
        let eta = eta(start.elapsed(), f).map_or(String::new(), |d| format!(", ETA {}", hms(d)));
        let _ = writeln!(
            std::io::stderr().lock(),
            "{what}: {} {unit}{pct} after {}, {} {unit}/s{eta}",
            thousands(done),
            hms(start.elapsed()),
            thousands(rate as u64)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eta_is_the_remaining_fraction_at_the_current_pace() {
        let ten = Duration::from_secs(10);
        assert_eq!(eta(ten, Some(0.25)), Some(Duration::from_secs(30)));
        assert_eq!(eta(ten, Some(0.5)), Some(ten));
        assert_eq!(eta(ten, Some(1.0)), Some(Duration::ZERO));
        assert_eq!(
            eta(ten, Some(1.5)),
            Some(Duration::ZERO),
            "over 100% is done"
        );
        assert_eq!(eta(ten, Some(0.0)), None);
        assert_eq!(eta(ten, None), None);
    }

    #[test]
    fn fraction_follows_bytes_or_items() {
        let bytes = Arc::new(AtomicU64::new(50));
        let c = Counters {
            done: Arc::new(AtomicU64::new(10)),
            bytes: Some(bytes),
        };
        assert_eq!(fraction(Total::Bytes(200), &c), Some(0.25));
        assert_eq!(fraction(Total::Items(40), &c), Some(0.25));
        assert_eq!(fraction(Total::Unknown, &c), None);
        assert_eq!(hms(Duration::from_secs(3723)), "1:02:03");
    }
}
