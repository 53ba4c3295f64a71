//! The run driver of the load benchmarks ([`crate::grpc`], [`crate::year`]): connect to the
//! gateway, start one sender per shard of the listing stream with its quota and schedule,
//! sample the rate each second, report progress, run the benchmark's own work alongside
//! (snapshot swaps), join the senders and merge what they counted. The benchmarks differ
//! only in what they ask for ([`Drive`]) and how they report it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cccgate_client::connect::Gateway;
use cccgate_client::progress::{Counters, Mode, Reporter, Total};
use cccgate_client::wire::Rpc;

use crate::load::{
    LoadStats, RateSampler, RunShared, Schedule, SenderPlan, SharedRate, SwapWindow, process_cpu,
    run_sender, sample_rates,
};
use crate::pace::YearCurve;
use crate::setup::{BenchError, Setup};

/// When the senders send.
#[derive(Clone, Debug)]
pub enum Pacing {
    /// As fast as the gateway answers (closed loop).
    Max,
    /// Along the year's curve, `speedup` times faster than real time, over the part of the
    /// year from fraction `window.0` of its checks to `window.1` ((0, 1): all of it).
    Year {
        /// The curve.
        curve: Arc<YearCurve>,
        /// The speed-up.
        speedup: f64,
        /// The window, as fractions of the year's checks.
        window: (f64, f64),
    },
    /// At a fixed rate in listings per second over all senders (open loop, one shared
    /// schedule: see [`Schedule::Shared`]).
    Rate(f64),
}

/// What to drive.
#[derive(Clone, Debug)]
pub struct Drive {
    /// The progress line's label.
    pub label: String,
    /// The RPC.
    pub rpc: Rpc,
    /// Listings per call (`Unary` sends one whatever this says).
    pub chunk: usize,
    /// Senders (calls in flight), one shard of the listing stream each.
    pub senders: usize,
    /// HTTP/2 connections.
    pub connections: usize,
    /// Listings to send over all senders; `None`: until `duration` has passed.
    pub planned: Option<u64>,
    /// Stop sending new calls after this long, if set.
    pub duration: Option<Duration>,
    /// When to send.
    pub pacing: Pacing,
    /// Whether snapshots are swapped during the run ([`crate::swap`]): calls overlapping a
    /// swap are counted apart, and each verdict is checked against the register of the
    /// snapshot that decided it.
    pub swaps: bool,
    /// Progress on stderr.
    pub progress: Mode,
}

/// What a driven run measured.
#[derive(Debug)]
pub struct Driven {
    /// What the senders counted, merged.
    pub stats: LoadStats,
    /// Seconds from the first send to the last answer.
    pub seconds: f64,
    /// CPU time of the whole process (senders and an embedded gateway) during the run.
    pub cpu_seconds: Option<f64>,
    /// The rate each second.
    pub rates: RateSampler,
    /// The senders.
    pub senders: usize,
}

/// Drives the load of `d` against the gateway of `su`, running `during` alongside the
/// senders (it gets the run's shared state, to record swaps or stop the senders); returns
/// once every sender is done and `during` has returned.
pub async fn drive<T>(
    su: &Setup,
    d: &Drive,
    during: impl AsyncFnOnce(Arc<RunShared>) -> Result<T, BenchError>,
) -> Result<(Driven, T), BenchError> {
    let gateway = Gateway::connect_with(&su.target, d.connections, &su.credentials).await?;
    let planned = d.planned.map_or(u64::MAX, |p| p.max(1));
    let senders = d.senders.max(1);
    let done = Arc::new(AtomicU64::new(0));
    let epoch = Instant::now();
    let shared = Arc::new(RunShared {
        done: done.clone(),
        stop: AtomicBool::new(false),
        swaps: d.swaps.then(|| SwapWindow::new(epoch)),
    });
    let reporter = Reporter::start(
        &d.label,
        "checks",
        d.progress,
        d.planned.map_or(Total::Unknown, |_| Total::Items(planned)),
        Arc::new(Counters {
            done: done.clone(),
            bytes: None,
        }),
    );
    let cpu_start = process_cpu();
    let start = Instant::now();
    let sampler_stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample_rates(done.clone(), sampler_stop.clone(), start));
    let until = d.duration.map(|t| start + t);
    let per_call = if d.rpc == Rpc::Unary { 1 } else { d.chunk };
    let schedule = match &d.pacing {
        Pacing::Max => Schedule::Max,
        Pacing::Year {
            curve,
            speedup,
            window,
        } => Schedule::Year {
            curve: curve.clone(),
            speedup: *speedup,
            start,
            window: *window,
        },
        Pacing::Rate(rate) => Schedule::Shared(Arc::new(SharedRate {
            next: AtomicU64::new(0),
            calls: if planned == u64::MAX {
                u64::MAX
            } else {
                planned.div_ceil(per_call as u64)
            },
            interval: Duration::from_secs_f64(per_call as f64 / rate.max(1e-9)),
            start,
        })),
    };
    let mut tasks = Vec::with_capacity(senders);
    for (i, shard) in su.generator.shards(senders as u32).into_iter().enumerate() {
        let quota = match &schedule {
            // On one shared schedule a sender takes whatever calls are due, up to all of them.
            Schedule::Shared(_) => planned,
            _ if planned == u64::MAX => u64::MAX,
            _ => planned / senders as u64 + u64::from((i as u64) < planned % senders as u64),
        };
        let plan = SenderPlan {
            rpc: d.rpc,
            chunk: d.chunk,
            quota,
            until,
            schedule: schedule.clone(),
            phase: i as f64 / senders as f64,
            by_snapshot: d.swaps,
        };
        tasks.push(tokio::spawn(run_sender(
            gateway.client(i),
            shard,
            plan,
            shared.clone(),
        )));
    }
    let alongside = during(shared.clone()).await;
    if alongside.is_err() {
        shared.stop.store(true, Ordering::Relaxed);
    }
    let stats = LoadStats::join(tasks).await;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_seconds = cpu_start
        .zip(process_cpu())
        .map(|(a, b)| b.saturating_sub(a).as_secs_f64());
    sampler_stop.store(true, Ordering::Relaxed);
    let rates = sampler.await.unwrap_or_default();
    reporter.finish();
    Ok((
        Driven {
            stats,
            seconds,
            cpu_seconds,
            rates,
            senders,
        },
        alongside?,
    ))
}
