//! A fair turn at the CPU for check work: callers' messages take turns by deficit round
//! robin, weighted by listings, so that one caller's large or many messages do not make
//! another caller's small message wait behind all of them.
//!
//! At most `turns` messages are checked at once (one per CPU by default). A message whose
//! caller has nothing in progress and nobody waiting starts at once (no lock held over the
//! check, no allocation). Otherwise it waits in its caller's own queue; each time a turn is
//! given back, the next caller in the ring that has enough credit (its deficit, topped up by
//! `quantum` listings each time its turn comes round; the gateway uses one turn's listings,
//! `--turn-listings`) goes next. A caller with a message of 100 listings therefore waits for at
//! most the messages in progress and about one quantum of each other waiting caller's work,
//! however much that caller has queued.
//!
//! Queues hold only messages already admitted (their bytes charged to the byte budgets, their
//! calls and listings to the quotas), so they are bounded by those; a waiter that goes away
//! (the call was cancelled) gives its turn to the next.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::oneshot;

use crate::admission::Caller;

/// The gate.
#[derive(Debug)]
pub(crate) struct FairGate {
    quantum: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    free: usize,
    /// Callers with messages waiting, in turn order.
    ring: VecDeque<Caller>,
    /// Each waiting caller's messages and credit.
    waiting: HashMap<Caller, Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    deficit: usize,
    items: VecDeque<(usize, oneshot::Sender<()>)>,
}

/// A turn: given back (to the next waiter) when dropped.
pub(crate) type Turn = Given<Arc<FairGate>>;

/// A caller waiting for its [`Turn`].
pub(crate) type Wait = HandOff<Arc<FairGate>>;

impl GiveBack for Arc<FairGate> {
    fn give_back(&self) {
        FairGate::give_back(self);
    }
}

impl FairGate {
    /// `turns` messages checked at once; credit grows by `quantum` listings a round.
    pub(crate) fn new(turns: usize, quantum: usize) -> Arc<FairGate> {
        Arc::new(FairGate {
            quantum: quantum.max(1),
            state: Mutex::new(State {
                free: turns.max(1),
                ..State::default()
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for `caller`'s turn to check a message of `listings`.
    pub(crate) fn turn(self: &Arc<Self>, caller: &Caller, listings: usize) -> Wait {
        let mut st = self.lock();
        if st.free > 0 && st.ring.is_empty() {
            st.free -= 1;
            return HandOff::new(Arc::clone(self), None);
        }
        let (tx, rx) = oneshot::channel();
        let q = st.waiting.entry(Arc::clone(caller)).or_default();
        q.items.push_back((listings.max(1), tx));
        if q.items.len() == 1 {
            st.ring.push_back(Arc::clone(caller));
        }
        // Turns free but callers waiting (a waiter just went away): hand them on.
        while st.free > 0 && !st.ring.is_empty() {
            st.free -= 1;
            self.grant(&mut st);
        }
        HandOff::new(Arc::clone(self), Some(rx))
    }

    fn give_back(&self) {
        let mut st = self.lock();
        self.grant(&mut st);
    }

    /// Gives one turn to the next waiter by deficit round robin, or frees it.
    fn grant(&self, st: &mut State) {
        loop {
            let Some(caller) = st.ring.front().cloned() else {
                st.free += 1;
                return;
            };
            let Some(q) = st.waiting.get_mut(&caller) else {
                st.ring.pop_front();
                continue;
            };
            let Some(&(cost, _)) = q.items.front() else {
                st.waiting.remove(&caller);
                st.ring.pop_front();
                continue;
            };
            if q.deficit < cost {
                // Not enough credit: top it up and let the next caller go first.
                q.deficit += self.quantum;
                st.ring.rotate_left(1);
                continue;
            }
            q.deficit -= cost;
            let (_, tx) = q.items.pop_front().unwrap_or_else(|| unreachable!());
            if q.items.is_empty() {
                st.waiting.remove(&caller);
                st.ring.pop_front();
            }
            if tx.send(()).is_ok() {
                return;
            }
            // The waiter went away: the turn goes to the next.
        }
    }

    /// Turns free now.
    #[cfg(test)]
    fn free(&self) -> usize {
        self.lock().free
    }
}

/// What gives back a unit (a turn, a lane) when its holder is done with it, or when a waiter
/// it was handed to has gone away.
pub(crate) trait GiveBack {
    /// Gives one unit back: to the next waiter, or free.
    fn give_back(&self);
}

/// A unit (a turn, a lane) being held: given back when dropped.
#[derive(Debug)]
pub(crate) struct Given<O: GiveBack>(O);

impl<O: GiveBack> Drop for Given<O> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// Waiting for a unit that `owner` hands over through `rx` (`None`: it is this waiter's
/// already). Dropped before it is ready, it leaves the queue, and a unit handed to it
/// meanwhile is given back (to the next waiter).
#[derive(Debug)]
pub(crate) struct HandOff<O: GiveBack> {
    /// `None` once ready.
    owner: Option<O>,
    rx: Option<oneshot::Receiver<()>>,
}

impl<O: GiveBack> HandOff<O> {
    pub(crate) fn new(owner: O, rx: Option<oneshot::Receiver<()>>) -> Self {
        HandOff {
            owner: Some(owner),
            rx,
        }
    }
}

impl<O: GiveBack + Unpin> Future for HandOff<O> {
    type Output = Given<O>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Given<O>> {
        if let Some(rx) = &mut self.rx {
            // An owner never drops a sender without sending: an error cannot happen.
            if Pin::new(rx).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        match self.owner.take() {
            Some(owner) => Poll::Ready(Given(owner)),
            None => Poll::Pending,
        }
    }
}

impl<O: GiveBack> Drop for HandOff<O> {
    fn drop(&mut self) {
        let Some(owner) = self.owner.take() else {
            return;
        };
        let ours = match &mut self.rx {
            None => true,
            Some(rx) => {
                rx.close();
                rx.try_recv().is_ok()
            }
        };
        if ours {
            owner.give_back();
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
    fn a_small_message_waits_for_about_one_quantum_of_a_caller_with_much_queued() {
        let gate = FairGate::new(1, 1_000);
        let (big, small) = (c("big"), c("small"));
        // `big` holds the one turn and queues ten messages of 1,000 listings.
        let first = gate.turn(&big, 1_000).now_or_never().expect("a free turn");
        let mut queued: Vec<_> = (0..10).map(|_| gate.turn(&big, 1_000)).collect();
        // Then `small` queues one message of 100.
        let mut mine = gate.turn(&small, 100);
        assert!((&mut mine).now_or_never().is_none());
        drop(first);
        // Credit is topped up round the ring: at most one of big's messages goes first.
        let mut before = 0;
        let turn = loop {
            if let Some(t) = (&mut mine).now_or_never() {
                break t;
            }
            let i = queued
                .iter_mut()
                .position(|w| {
                    w.now_or_never().is_some_and(|t| {
                        drop(t);
                        true
                    })
                })
                .expect("a turn was given to big");
            queued.remove(i);
            before += 1;
        };
        assert!(before <= 1, "{before} of big's messages went first");
        drop(turn);
        drop(queued);
        assert_eq!(gate.free(), 1, "every turn given back");
    }

    #[test]
    fn a_waiter_that_goes_away_passes_its_turn_on() {
        let gate = FairGate::new(1, 10);
        let (a, b) = (c("a"), c("b"));
        let held = gate.turn(&a, 5).now_or_never().expect("free");
        let gone = gate.turn(&a, 5);
        let mut next = gate.turn(&b, 5);
        drop(gone);
        drop(held);
        let t = (&mut next).now_or_never().expect("b has the turn");
        drop(t);
        // A turn granted to a waiter that is then dropped unpolled is given back too.
        let held = gate.turn(&a, 5).now_or_never().expect("free");
        let granted = gate.turn(&b, 5);
        drop(held);
        drop(granted);
        assert_eq!(gate.free(), 1);
        assert!(gate.lock().waiting.is_empty() && gate.lock().ring.is_empty());
    }

    #[test]
    fn callers_with_nothing_waiting_start_at_once_up_to_the_turns() {
        let gate = FairGate::new(2, 1_000);
        let t1 = gate.turn(&c("a"), 10_000).now_or_never().expect("free");
        let t2 = gate.turn(&c("b"), 1).now_or_never().expect("free");
        let mut w = gate.turn(&c("c"), 1);
        assert!((&mut w).now_or_never().is_none());
        drop(t1);
        let t3 = w.now_or_never().expect("given on");
        drop((t2, t3));
        assert_eq!(gate.free(), 2);
    }
}
