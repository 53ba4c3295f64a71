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
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::admission::Caller;

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
        Enter {
            lanes: Arc::clone(self),
            caller: Arc::clone(caller),
            rx,
            taken: false,
        }
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

/// One lane of a caller, given to its next waiter when dropped.
#[derive(Debug)]
pub(crate) struct InLane {
    lanes: Arc<Lanes>,
    caller: Caller,
}

impl Drop for InLane {
    fn drop(&mut self) {
        self.lanes.leave(&self.caller);
    }
}

/// A call waiting for its caller's lane. Dropped before it is ready, it leaves the queue (a
/// lane handed to it meanwhile goes to the next).
#[derive(Debug)]
pub(crate) struct Enter {
    lanes: Arc<Lanes>,
    caller: Caller,
    /// `None`: the lane is this call's already.
    rx: Option<oneshot::Receiver<()>>,
    taken: bool,
}

impl Future for Enter {
    type Output = InLane;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<InLane> {
        if let Some(rx) = &mut self.rx {
            // `leave` never drops a sender without sending: an error cannot happen.
            if Pin::new(rx).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.taken = true;
        Poll::Ready(InLane {
            lanes: Arc::clone(&self.lanes),
            caller: Arc::clone(&self.caller),
        })
    }
}

impl Drop for Enter {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        let ours = match &mut self.rx {
            None => true,
            Some(rx) => {
                rx.close();
                rx.try_recv().is_ok()
            }
        };
        if ours {
            self.lanes.leave(&self.caller);
        }
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
