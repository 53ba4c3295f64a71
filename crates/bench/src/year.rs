//! The year benchmark: a profile's year of listing checks (2021 or 2025), generated on the fly
//! and sent through the gateway, paced along the year's curve or as fast as it answers.
//!
//! # What is counted
//!
//! Checks are `round(profile checks x scale)`, split evenly over the senders, each with its own
//! shard of the listing stream, so the set of listings is fixed by the seeds whatever the
//! timing. Every verdict is compared with the reason the generator built the listing to get:
//! `blocked` is what the gateway blocked, `expected` what the generator's labels say it must
//! block (exact), and the profile's published share times the checks is shown beside them.
//! Event times are the generator's (the 30 days either side of the register's date), so
//! every expected reason holds; the year is the shape of the traffic, not the event dates.
//! Errors (failed calls, error entries, unreadable answers) must be zero.
//!
//! # Windows and soaks
//!
//! A paced year at a modest speed-up lasts hours (2021 at `realtime-x1000`: 8.8 h); `window`
//! plays only some days of it, along the same curve: the checks are the year's checks due in
//! those days (times `scale`), the first one due when the run starts. Every run samples the
//! process's memory, descriptors and threads and the disk of the embedded gateway's snapshot
//! directory and decision log after each tenth of its checks ([`crate::soak`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cccgate_core::{Decision, Reason};
use cccgate_synth::{Profile, RegisterSpec};

use cccgate_client::progress::Mode;
use cccgate_client::summary::{Latency, micros, thousands};
use cccgate_client::wire::Rpc;

use crate::drive::{Drive, Driven, Pacing, drive};
use crate::load::LoadStats;
use crate::pace::{Pace, YearCurve};
use crate::setup::{BenchError, GatewayChoice, block_on_runtimes, setup_with};
use crate::soak::{Soak, SoakRecorder};

/// What to run.
#[derive(Clone, Debug)]
pub struct YearConfig {
    /// 2021 or 2025.
    pub profile: Profile,
    /// Fraction of the profile's checks to send (1.0: the whole year).
    pub scale: f64,
    /// The gateway.
    pub gateway: GatewayChoice,
    /// The synthetic register (the gateway must serve the same one).
    pub register: RegisterSpec,
    /// Seed of the listing stream.
    pub listing_seed: u64,
    /// How fast.
    pub pace: Pace,
    /// Listings per stream message.
    pub chunk: usize,
    /// Streams, one sender each.
    pub concurrency: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Progress on stderr.
    pub progress: Mode,
    /// Only these days of the year (days since 1 January 00:00 China time, fractional
    /// allowed), along the year's curve; `None`: the whole year.
    pub window: Option<(f64, f64)>,
    /// The embedded gateway's decision log (one JSON line per verdict), if any.
    pub decision_log: Option<PathBuf>,
    /// Its rotation: bytes a file may reach and rotated files kept (`None`: the gateway's
    /// defaults).
    pub decision_log_rotation: Option<(u64, usize)>,
}

/// Seconds in a day.
const DAY: f64 = 86_400.0;

impl YearConfig {
    /// The defaults: the whole year at full speed against the embedded gateway over the
    /// full-scale register (1.2M certificates, seed 1).
    pub fn new(profile: Profile) -> Self {
        YearConfig {
            profile,
            scale: 1.0,
            gateway: GatewayChoice::Embedded {
                cache_dir: crate::embedded::default_cache_dir(),
            },
            register: RegisterSpec::default(),
            listing_seed: 1,
            pace: Pace::Max,
            chunk: 2_000,
            concurrency: 8,
            connections: 2,
            progress: Mode::auto(Duration::from_secs(10)),
            window: None,
            decision_log: None,
            decision_log_rotation: None,
        }
    }

    /// The year's checks at this scale.
    pub fn year_checks(&self) -> f64 {
        self.profile.checks() as f64 * self.scale
    }

    /// The window as fractions of the year's checks ((0, 1) without one).
    pub fn window_fractions(&self, curve: &YearCurve) -> (f64, f64) {
        match self.window {
            Some((a, b)) => (curve.fraction_at(a * DAY), curve.fraction_at(b * DAY)),
            None => (0.0, 1.0),
        }
    }

    /// Checks this run sends: the year's at this scale, or those of the window.
    pub fn checks(&self) -> u64 {
        let (a, b) = self.window_fractions(&YearCurve::new(self.profile.year()));
        ((self.year_checks() * (b - a)).round() as u64).max(1)
    }
}

/// What a year run measured.
#[derive(Clone, Debug)]
pub struct YearReport {
    /// The profile.
    pub profile: Profile,
    /// The scale.
    pub scale: f64,
    /// The pace.
    pub pace: Pace,
    /// Checks planned.
    pub planned: u64,
    /// Verdicts received.
    pub checks: u64,
    /// Seconds from the first send to the last answer.
    pub seconds: f64,
    /// Seconds of set-up (register, snapshot, gateway start).
    pub setup_seconds: f64,
    /// Checks per second.
    pub checks_per_sec: f64,
    /// CPU time of the whole process (senders and an embedded gateway) during the run.
    pub cpu_seconds: Option<f64>,
    /// Round trip of one stream message (a chunk), microseconds.
    pub latency: Latency,
    /// Highest rate held over one second.
    pub peak_rate: f64,
    /// Checks due in the busiest of the one-second windows measured (realtime pacing only;
    /// at `realtime-xK` one second plays `K` seconds of the year).
    pub target_peak_rate: Option<f64>,
    /// Checks answered in that window.
    pub achieved_at_peak: Option<f64>,
    /// The curve's busiest second at this pace over any alignment of the second (the
    /// measured windows start on whole seconds of the run, so may straddle it).
    pub curve_peak_rate: Option<f64>,
    /// Furthest behind schedule a chunk was sent (realtime pacing only).
    pub max_lag: Duration,
    /// Verdicts by reason and decision.
    pub stats: LoadStats,
    /// The listings per message.
    pub chunk: usize,
    /// Streams.
    pub concurrency: usize,
    /// The gateway.
    pub target: String,
    /// Whether the gateway was started in-process.
    pub embedded: bool,
    /// The days of the year played, if not all of it.
    pub window: Option<(f64, f64)>,
    /// The soak samples: after each tenth of the checks.
    pub soak: Soak,
}

impl YearReport {
    /// BLOCK verdicts.
    pub fn blocked(&self) -> u64 {
        self.stats.decided(Decision::Block)
    }

    /// Errors (must be zero).
    pub fn errors(&self) -> u64 {
        self.stats.errors()
    }

    /// The profile's published blocked share applied to the checks sent.
    pub fn profile_blocked(&self) -> u64 {
        (self.planned as f64 * self.profile.blocked_share()).round() as u64
    }

    /// The last line: `year profile=P scale=F checks=N seconds=S checks_per_sec=R p99_us=B
    /// blocked=K errors=E`.
    pub fn last_line(&self) -> String {
        format!(
            "year profile={} scale={} checks={} seconds={:.2} checks_per_sec={:.0} p99_us={} blocked={} errors={}",
            self.profile,
            self.scale,
            self.checks,
            self.seconds,
            self.checks_per_sec,
            self.latency.p99,
            self.blocked(),
            self.errors()
        )
    }
}

impl fmt::Display for YearReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        writeln!(
            f,
            "year {} at scale {}{} ({} checks planned for {} merchants), pace {}, against {}{}",
            self.profile,
            self.scale,
            self.window.map_or(String::new(), |(a, b)| format!(
                ", days {a} to {b} of the year"
            )),
            thousands(self.planned),
            thousands(self.profile.merchants()),
            self.pace,
            self.target,
            if self.embedded {
                " (embedded gateway)"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "  set-up        {:.1} s (register, snapshot, gateway)",
            self.setup_seconds
        )?;
        writeln!(
            f,
            "  elapsed       {:.2} s for {} checks: {} checks/s",
            self.seconds,
            thousands(self.checks),
            thousands(self.checks_per_sec.round() as u64)
        )?;
        if let Some(cpu) = self.cpu_seconds {
            writeln!(
                f,
                "  cpu           {cpu:.1} s of this process ({:.2} cores busy on average, {:.2} µs a check){}",
                cpu / self.seconds.max(1e-9),
                cpu * 1e6 / self.checks.max(1) as f64,
                if self.embedded {
                    ", senders and gateway together"
                } else {
                    ", senders only"
                }
            )?;
        }
        writeln!(
            f,
            "  client work   {:.2} s generating and encoding listings, {:.2} s reading answers ({:.0} ns and {:.0} ns a check)",
            s.generate_time.as_secs_f64(),
            s.count_time.as_secs_f64(),
            s.generate_time.as_secs_f64() * 1e9 / self.checks.max(1) as f64,
            s.count_time.as_secs_f64() * 1e9 / self.checks.max(1) as f64
        )?;
        writeln!(
            f,
            "  latency       p50 {}, p99 {}, p99.9 {}, max {} (round trip of a stream message of {} listings; {} streams)",
            micros(self.latency.p50),
            micros(self.latency.p99),
            micros(self.latency.p999),
            micros(self.latency.max),
            self.chunk,
            self.concurrency
        )?;
        match (self.target_peak_rate, self.achieved_at_peak) {
            (Some(due), Some(achieved)) => writeln!(
                f,
                "  peak rate     {} checks/s held over 1 s; the schedule's busiest second had {} due and {} answered ({}); furthest behind schedule {:.2} s{}",
                thousands(self.peak_rate.round() as u64),
                thousands(due.round() as u64),
                thousands(achieved.round() as u64),
                if achieved >= 0.95 * due {
                    "held"
                } else {
                    "NOT held: the gateway fell behind and caught up after"
                },
                self.max_lag.as_secs_f64(),
                self.curve_peak_rate.map_or(String::new(), |c| format!(
                    "; the curve's busiest second at any alignment: {} checks/s",
                    thousands(c.round() as u64)
                ))
            )?,
            _ => writeln!(
                f,
                "  peak rate     {} checks/s held over 1 s",
                thousands(self.peak_rate.round() as u64)
            )?,
        }
        let blocked = self.blocked();
        writeln!(
            f,
            "  blocked       {} ({:.2}%); expected {} by the generator's labels, {} by the profile's {:.2}%",
            thousands(blocked),
            100.0 * blocked as f64 / self.checks.max(1) as f64,
            thousands(s.expected_blocked),
            thousands(self.profile_blocked()),
            100.0 * self.profile.blocked_share()
        )?;
        for r in Reason::ALL {
            let n = s.verdicts[r.index()][Decision::Block as usize];
            if n > 0 {
                writeln!(f, "    {:<26} {:>12}", r.as_str(), thousands(n))?;
            }
        }
        writeln!(
            f,
            "  review        {}; allowed {}",
            thousands(s.decided(Decision::Review)),
            thousands(s.decided(Decision::Allow))
        )?;
        writeln!(
            f,
            "  mismatches    {} (verdicts whose reason is not the expected one)",
            thousands(s.mismatches)
        )?;
        write!(
            f,
            "  errors        {} ({} failed calls, {} error entries){}",
            thousands(self.errors()),
            thousands(s.failed_calls),
            thousands(s.item_errors),
            s.first_error
                .as_ref()
                .map_or(String::new(), |e| format!("; first: {e}"))
        )
    }
}

/// Runs the benchmark on runtimes of its own: `client_threads` workers for the senders and,
/// for the embedded gateway, `gateway_threads` more (`None`: the gateway shares the
/// senders' runtime).
pub fn run_year_blocking(
    cfg: &YearConfig,
    client_threads: usize,
    gateway_threads: Option<usize>,
) -> Result<YearReport, BenchError> {
    block_on_runtimes("year-client", client_threads, gateway_threads, async |h| {
        run_year(cfg, h).await
    })
}

/// Runs the benchmark on the current runtime; an embedded gateway runs on `gateway_rt`.
pub async fn run_year(
    cfg: &YearConfig,
    gateway_rt: &tokio::runtime::Handle,
) -> Result<YearReport, BenchError> {
    if !(cfg.scale > 0.0 && cfg.scale.is_finite()) {
        return Err(BenchError::Invalid(format!(
            "--scale {} must be above 0",
            cfg.scale
        )));
    }
    if cfg.chunk == 0 || cfg.concurrency == 0 {
        return Err(BenchError::Invalid(
            "--chunk and --concurrency must be at least 1".into(),
        ));
    }
    let curve = Arc::new(YearCurve::new(cfg.profile.year()));
    if let Some((a, b)) = cfg.window {
        let days = curve.seconds() / DAY;
        if !(a.is_finite() && b.is_finite() && 0.0 <= a && a < b && b <= days) {
            return Err(BenchError::Invalid(format!(
                "window of days {a} to {b}: must be within 0 to {days} and not empty"
            )));
        }
    }
    if cfg.decision_log.is_some() && !matches!(cfg.gateway, GatewayChoice::Embedded { .. }) {
        return Err(BenchError::Invalid(
            "--decision-log is the embedded gateway's (a gateway at --target has its own)".into(),
        ));
    }
    let log = cfg.decision_log.clone();
    let su = setup_with(
        &cfg.gateway,
        cfg.register,
        cfg.profile,
        cfg.listing_seed,
        gateway_rt,
        |c| {
            c.decision_log = log;
            if let Some((bytes, keep)) = cfg.decision_log_rotation {
                c.decision_log_max_file_bytes = bytes;
                c.decision_log_keep_files = keep;
            }
        },
    )
    .await?;
    let planned = cfg.checks();
    let window = cfg.window_fractions(&curve);
    let mut watched: Vec<PathBuf> = su
        .embedded
        .as_ref()
        .map(|g| g.snapshot_dir().to_path_buf())
        .into_iter()
        .collect();
    watched.extend(cfg.decision_log.clone());
    let d = Drive {
        label: format!("year {}", cfg.profile),
        rpc: Rpc::Stream,
        chunk: cfg.chunk,
        senders: (cfg.concurrency as u64).min(planned) as usize,
        connections: cfg.connections,
        planned: Some(planned),
        duration: None,
        pacing: match cfg.pace {
            Pace::Max => Pacing::Max,
            Pace::Realtime(k) => Pacing::Year {
                curve: curve.clone(),
                speedup: k,
                window,
            },
        },
        swaps: false,
        progress: cfg.progress,
    };
    let (
        Driven {
            stats,
            seconds,
            cpu_seconds,
            rates,
            senders,
        },
        recorder,
    ) = drive(&su, &d, async |shared| {
        // Tenths of the checks answered.
        let done = shared.done.clone();
        Ok(SoakRecorder::start(
            watched,
            Some(Box::new(move || {
                done.load(Ordering::Relaxed) as f64 / planned as f64
            })),
        ))
    })
    .await?;
    let soak = recorder.finish();
    if let Some(gw) = su.embedded {
        let _ = gw.stop().await;
    }
    let checks = stats.checks();
    let checks_per_sec = checks as f64 / seconds.max(1e-9);
    // The schedule's busiest measured second, and what was answered in it.
    let (target_peak_rate, achieved_at_peak) = match cfg.pace {
        Pace::Max => (None, None),
        Pace::Realtime(k) => {
            let mut from = 0.0;
            let mut best: Option<(f64, f64)> = None;
            let t0 = curve.time_of_fraction(window.0);
            for &(to, achieved, _) in &rates.samples {
                let due = cfg.year_checks()
                    * (curve.fraction_at(t0 + to * k) - curve.fraction_at(t0 + from * k))
                    / (to - from).max(1e-9);
                if best.is_none_or(|(d, _)| due > d) {
                    best = Some((due, achieved));
                }
                from = to;
            }
            match best {
                Some((due, achieved)) => (Some(due), Some(achieved)),
                // Shorter than a second: the whole run is the busiest second.
                None => (Some(checks_per_sec), Some(checks_per_sec)),
            }
        }
    };
    Ok(YearReport {
        profile: cfg.profile,
        scale: cfg.scale,
        pace: cfg.pace,
        planned,
        checks,
        seconds,
        setup_seconds: su.setup_seconds,
        checks_per_sec,
        cpu_seconds,
        latency: Latency::of(&stats.latency_us),
        // A run shorter than a second has no full window: its mean rate is its peak.
        peak_rate: rates.peak().max(if rates.samples.is_empty() {
            checks_per_sec
        } else {
            0.0
        }),
        target_peak_rate,
        achieved_at_peak,
        curve_peak_rate: match cfg.pace {
            Pace::Max => None,
            // The year's busiest second: only meaningful for the whole year.
            Pace::Realtime(_) if cfg.window.is_some() => None,
            Pace::Realtime(k) => Some(curve.peak_window_fraction(k) * planned as f64),
        },
        max_lag: stats.max_lag,
        chunk: cfg.chunk,
        concurrency: senders,
        target: su.target,
        embedded: matches!(cfg.gateway, GatewayChoice::Embedded { .. }),
        window: cfg.window,
        soak,
        stats,
    })
}
