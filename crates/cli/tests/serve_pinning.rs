//! `cccgate serve` pins its worker threads one to each CPU when its CPU set has exactly as many
//! CPUs as it has workers, and never with `--runtime-pin-workers false`.
//!
//! On a machine where that does not hold for the test process (one CPU, or a CPU set larger
//! than the CPUs it may use), the test says so and checks nothing: CI's 2-CPU machines run it.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BOUND: Duration = Duration::from_secs(60);

/// CPUs of a `Cpus_allowed_list` value (`0-1`, `0,2-3`).
fn cpu_list(text: &str) -> BTreeSet<usize> {
    let mut cpus = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse::<usize>().unwrap()),
            None => {
                cpus.insert(part.parse().unwrap());
            }
        }
    }
    cpus
}

/// The CPUs a task (`/proc/self`, `/proc/PID/task/TID`) may run on.
fn allowed(task: &str) -> Option<BTreeSet<usize>> {
    let status = std::fs::read_to_string(format!("{task}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    Some(cpu_list(line))
}

/// A `cccgate serve` process, killed and waited for when dropped.
struct Gateway(Child);

impl Gateway {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `cccgate serve` on the built-in sample with `extra`; returns once it listens.
fn serve(extra: &[&str]) -> Gateway {
    let child = Command::new(env!("CARGO_BIN_EXE_cccgate"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--metrics-listen", "off", "--log-format", "json"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start cccgate serve");
    let mut gw = Gateway(child);
    let (tx, rx) = mpsc::channel();
    let stderr = gw.0.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + BOUND;
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("the gateway logs that it listens");
        if line.contains("gateway listening") {
            return gw;
        }
    }
}

/// The CPU sets of the gateway's threads named `cccgate` (its workers and blocking threads).
fn thread_sets(pid: u32) -> Vec<BTreeSet<usize>> {
    let mut sets = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return sets;
    };
    for t in tasks.flatten() {
        let path = t.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() == "cccgate"
            && let Some(set) = allowed(&path.to_string_lossy())
        {
            sets.push(set);
        }
    }
    sets
}

#[test]
fn workers_are_pinned_one_to_each_cpu_of_a_set_of_exactly_as_many_and_never_when_told_not_to() {
    let mine = allowed("/proc/self").expect("/proc/self/status");
    let workers = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    if mine.len() != workers || workers < 2 {
        eprintln!(
            "skipped: this process may run on CPUs {mine:?} and has {workers} for workers; \
             pinning needs a set of exactly as many, at least 2"
        );
        return;
    }
    let gw = serve(&[]);
    // Each worker pins itself the first time it parks (at once, idle): wait for it.
    let deadline = Instant::now() + BOUND;
    let pinned = loop {
        let pinned: Vec<BTreeSet<usize>> = thread_sets(gw.id())
            .into_iter()
            .filter(|s| s.len() == 1)
            .collect();
        if pinned.len() >= workers || Instant::now() > deadline {
            break pinned;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(gw);
    // One worker on each CPU of the set, no two on one.
    let cpus: BTreeSet<usize> = pinned.iter().flatten().copied().collect();
    assert_eq!(pinned.len(), workers, "pinned threads: {pinned:?}");
    assert_eq!(cpus, mine, "pinned threads: {pinned:?}");

    let gw = serve(&["--runtime-pin-workers", "false"]);
    // Give the workers the time to park (and, were they pinned, to pin themselves).
    std::thread::sleep(Duration::from_millis(500));
    let sets = thread_sets(gw.id());
    drop(gw);
    assert!(!sets.is_empty());
    assert!(sets.iter().all(|s| *s == mine), "thread CPU sets: {sets:?}");
}
