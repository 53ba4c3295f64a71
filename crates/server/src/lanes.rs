//! Each caller's unary calls are worked on a few at a time: its other admitted calls wait,
//! parked, in its own queue, instead of all being ready to run at once.
//!
//! A caller with hundreds of calls in progress (a flood within its quotas) would otherwise
//! have hundreds of tasks ready on the runtime's queues at once, each reading, decoding,
//! checking and answering one call; another caller's message, arriving then, waits behind all
//! of them (~30 µs each). With [`LANES_PER_CPU`] lanes per CPU and per caller, at most that many
//! of one caller's calls are ready to run; the rest wait their turn in their caller's queue
//! (first come, first served), costing nothing until then. Calls of different callers never
//! wait for each other here, so a caller that is slow to send its bodies holds only its own
//! lanes. The wait is bounded by the calls a caller may have in progress at once (at most half
//! of `--max-in-flight`, see [`crate::public`]) and by the request timeout.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::admission::Caller;
use crate::fair::{GiveBack, HandOff};

/// Lanes per CPU that one caller's unary calls may use at once.
pub(crate) const LANES_PER_CPU: usize = 4;

/// Every caller's lanes.
#[derive(Debug)]
pub(crate) struct Lanes {
    per_caller: usize,
    state: Mutex<HashMap<Caller, Lane>>,
}

#[derive(Debug, Default)]
struct Lane {
    busy: usize,
    waiting: VecDeque<oneshot::Sender<()>>,
}

impl Lanes {
    /// `per_caller` lanes for each caller.
    pub(crate) fn new(per_caller: usize) -> Arc<Lanes> {
        Arc::new(Lanes {
            per_caller: per_caller.max(1),
            state: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Caller, Lane>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for one of `caller`'s lanes.
    pub(crate) fn enter(self: &Arc<Self>, caller: &Caller) -> Enter {
        let mut st = self.lock();
        let lane = st.entry(Arc::clone(caller)).or_default();
        let rx = if lane.busy < self.per_caller {
            lane.busy += 1;
            None
        } else {
            let (tx, rx) = oneshot::channel();
            lane.waiting.push_back(tx);
            Some(rx)
        };
        let owner = LaneOf {
            lanes: Arc::clone(self),
            caller: Arc::clone(caller),
        };
        HandOff::new(owner, rx)
    }

    /// Gives a lane of `caller` to its next waiter, or frees it.
    fn leave(&self, caller: &Caller) {
        let mut st = self.lock();
        let Some(lane) = st.get_mut(caller) else {
            return;
        };
        while let Some(tx) = lane.waiting.pop_front() {
            if tx.send(()).is_ok() {
                return;
            }
        }
        lane.busy = lane.busy.saturating_sub(1);
        if lane.busy == 0 {
            st.remove(caller);
        }
    }

    /// Callers with a lane in use or waited for.
    #[cfg(test)]
    fn callers(&self) -> usize {
        self.lock().len()
    }
}

/// A call waiting for its caller's lane (see [`HandOff`]); the lane it gets is given to the
/// caller's next waiter when dropped.
pub(crate) type Enter = HandOff<LaneOf>;

/// Whose lane it is.
#[derive(Debug)]
pub(crate) struct LaneOf {
    lanes: Arc<Lanes>,
    caller: Caller,
}

impl GiveBack for LaneOf {
    fn give_back(&self) {
        self.lanes.leave(&self.caller);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn c(name: &str) -> Caller {
        Caller::from(name)
    }

    #[test]
    fn a_callers_calls_past_its_lanes_wait_and_another_caller_does_not() {
        let lanes = Lanes::new(2);
        let (flood, other) = (c("flood"), c("other"));
        let a = lanes.enter(&flood).now_or_never().expect("a free lane");
        let b = lanes.enter(&flood).now_or_never().expect("a free lane");
        let mut waiting: Vec<_> = (0..3).map(|_| lanes.enter(&flood)).collect();
        assert!(waiting.iter_mut().all(|w| w.now_or_never().is_none()));
        // Another caller has lanes of its own.
        let o = lanes
            .enter(&other)
            .now_or_never()
            .expect("other's own lane");
        drop(o);
        // A lane given back goes to the first waiter, in order.
        drop(a);
        let first = (&mut waiting[0]).now_or_never().expect("the first waiter");
        assert!((&mut waiting[1]).now_or_never().is_none());
        drop((b, first));
        let rest: Vec<_> = waiting
            .drain(1..)
            .map(|w| w.now_or_never().expect("handed on"))
            .collect();
        drop(rest);
        drop(waiting);
        assert_eq!(lanes.callers(), 0, "every lane given back, the map empty");
    }

    #[test]
    fn a_waiter_that_goes_away_passes_the_lane_on() {
        let lanes = Lanes::new(1);
        let x = c("x");
        let held = lanes.enter(&x).now_or_never().expect("free");
        let gone = lanes.enter(&x);
        let mut next = lanes.enter(&x);
        drop(gone);
        drop(held);
        let t = (&mut next).now_or_never().expect("the next waiter has it");
        // A lane handed to a waiter that is dropped unpolled is given back too.
        let handed = lanes.enter(&x);
        drop(t);
        drop(handed);
        assert_eq!(lanes.callers(), 0);
    }
}
