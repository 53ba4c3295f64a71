//! The runtime's worker threads, pinned one to each CPU of a CPU set that has exactly as many.
//!
//! Measured on a 2-CPU machine under attack (`perf sched timehist`): a worker woken by the
//! other (tokio wakes a parked worker to share the work) was placed by the kernel on its
//! waker's CPU, busy, and waited ~5 ms for it (a 4 ms scheduler tick, no preemption between
//! them) while the other CPU ran only an idle-class process: a normal caller's message waited
//! with it. Pinned, a woken worker runs on its own CPU at once.
//!
//! Only when the process may run on exactly as many CPUs as it has workers (a dedicated CPU
//! set, as Kubernetes' static CPU manager gives a Guaranteed pod with whole CPUs, or a machine
//! of its own): on a shared node's many CPUs, pinning would only take the kernel's freedom to
//! move the workers away from other load.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Hands each worker thread, the first time it parks, the next CPU of the set.
#[derive(Debug)]
pub struct Pinner {
    cpus: Vec<usize>,
    next: AtomicUsize,
}

thread_local! {
    static PINNED: Cell<bool> = const { Cell::new(false) };
}

impl Pinner {
    /// A pinner when the calling thread may run on exactly `workers` CPUs, else `None`.
    pub fn for_workers(workers: usize) -> Option<Arc<Pinner>> {
        let cpus = allowed_cpus()?;
        (cpus.len() == workers && workers > 1).then(|| {
            Arc::new(Pinner {
                cpus,
                next: AtomicUsize::new(0),
            })
        })
    }

    /// Gives the calling thread the whole set back. A thread inherits the CPU set of the one
    /// that creates it, so a blocking-pool thread started from a pinned worker would be pinned
    /// too: called from tokio's `on_thread_start`, which every thread of the runtime runs
    /// first (the workers are pinned later, on their first park).
    pub fn unpin_current(&self) {
        if let Err(e) = set_affinity(&self.cpus) {
            tracing::warn!(error = %e, "cannot give a thread the process's CPU set back");
        }
    }

    /// Pins the calling thread to the next CPU, once per thread (later calls do nothing).
    /// Called from tokio's `on_thread_park`, which only worker threads run.
    pub fn pin_current(&self) {
        if PINNED.with(|p| p.replace(true)) {
            return;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(&cpu) = self.cpus.get(i) {
            if let Err(e) = set_affinity(&[cpu]) {
                tracing::warn!(cpu, error = %e, "cannot pin a worker thread");
            } else {
                tracing::debug!(cpu, "worker thread pinned");
            }
        }
    }
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: `set` is a plain bit set, zeroed, and its size is passed.
    #[allow(unsafe_code)]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        Some(
            (0..libc::CPU_SETSIZE as usize)
                .filter(|&c| libc::CPU_ISSET(c, &set))
                .collect(),
        )
    }
}

/// Lets the calling thread run on `cpus` only.
fn set_affinity(cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: as in `allowed_cpus`; 0 is the calling thread.
    #[allow(unsafe_code)]
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The CPU the calling thread may run on, if only one.
#[cfg(test)]
fn pinned_to() -> Option<usize> {
    let cpus = allowed_cpus()?;
    (cpus.len() == 1).then(|| cpus[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_is_pinned_once_to_the_next_cpu_of_the_set() {
        let Some(cpus) = allowed_cpus() else {
            return;
        };
        assert!(!cpus.is_empty());
        // A set of exactly as many CPUs as workers gives a pinner; any other count, none.
        assert!(Pinner::for_workers(cpus.len() + 1).is_none());
        let pinner = Arc::new(Pinner {
            cpus: cpus.clone(),
            next: AtomicUsize::new(0),
        });
        let got: Vec<Option<usize>> = (0..cpus.len())
            .map(|_| {
                let p = Arc::clone(&pinner);
                std::thread::spawn(move || {
                    p.pin_current();
                    let first = pinned_to();
                    // Once per thread: a second call does not move it.
                    p.pin_current();
                    assert_eq!(pinned_to(), first);
                    first
                })
                .join()
                .unwrap()
            })
            .collect();
        let want: Vec<Option<usize>> = cpus.iter().map(|&c| Some(c)).collect();
        assert_eq!(got, want);
        // A thread started by a pinned one inherits its CPU; given the set back, it has all.
        let p = Arc::clone(&pinner);
        let (inherited, unpinned) = std::thread::spawn(move || {
            PINNED.with(|x| x.set(false));
            set_affinity(&p.cpus[..1]).unwrap();
            let p2 = Arc::clone(&p);
            std::thread::spawn(move || {
                let inherited = allowed_cpus();
                p2.unpin_current();
                (inherited, allowed_cpus())
            })
            .join()
            .unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(inherited, Some(vec![cpus[0]]));
        assert_eq!(unpinned, Some(cpus.clone()));
        // Past the set, a thread is left as it was.
        let p = Arc::clone(&pinner);
        let extra = std::thread::spawn(move || {
            p.pin_current();
            allowed_cpus()
        })
        .join()
        .unwrap();
        assert_eq!(extra, Some(cpus));
    }
}
