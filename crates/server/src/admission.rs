//! What a caller may hold at once: byte budgets for requests in progress, and stream slots,
//! over all callers, per caller and per connection.
//!
//! Every quota is taken with `try_` (never waited for): a call that does not fit is answered
//! RESOURCE_EXHAUSTED at once, and what it was given is returned when its guard drops. Keyed
//! quotas forget a key whose use falls to zero, so a map never outgrows what is in use.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Units in use per key, each key capped at `cap`.
#[derive(Debug)]
pub(crate) struct Quota<K: Eq + Hash> {
    cap: usize,
    used: Mutex<HashMap<K, usize>>,
}

/// Units of one key of a [`Quota`], given back on drop.
#[derive(Debug)]
pub(crate) struct Held<K: Eq + Hash + Clone> {
    quota: Arc<Quota<K>>,
    key: K,
    n: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl<K: Eq + Hash + Clone> Quota<K> {
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Quota {
            cap,
            used: Mutex::new(HashMap::new()),
        })
    }

    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    /// Takes `n` units of `key`, if they fit under the cap.
    pub(crate) fn try_take(self: &Arc<Self>, key: &K, n: usize) -> Option<Held<K>> {
        let mut used = lock(&self.used);
        let now = used.get(key).copied().unwrap_or(0);
        if now.checked_add(n).is_none_or(|total| total > self.cap) {
            return None;
        }
        used.insert(key.clone(), now + n);
        Some(Held {
            quota: Arc::clone(self),
            key: key.clone(),
            n,
        })
    }

    /// Units of `key` in use.
    #[cfg(test)]
    pub(crate) fn used(&self, key: &K) -> usize {
        lock(&self.used).get(key).copied().unwrap_or(0)
    }
}

impl<K: Eq + Hash + Clone> Drop for Held<K> {
    fn drop(&mut self) {
        let mut used = lock(&self.quota.used);
        if let Some(u) = used.get_mut(&self.key) {
            *u = u.saturating_sub(self.n);
            if *u == 0 {
                used.remove(&self.key);
            }
        }
    }
}

/// The name a caller is known by: a token's name, an mTLS name, or `anonymous`.
pub(crate) type Caller = Arc<str>;

/// The public plane's quotas.
#[derive(Debug)]
pub(crate) struct Admission {
    /// Bytes of requests in progress, over all callers (key `()`).
    pub bytes: Arc<Quota<()>>,
    /// Bytes of requests in progress, per caller.
    pub client_bytes: Arc<Quota<Caller>>,
    /// Open streams, per caller.
    pub client_streams: Arc<Quota<Caller>>,
    /// Unary calls in progress, per caller.
    pub client_calls: Arc<Quota<Caller>>,
    /// Open streams, per connection (the peer's address).
    pub connection_streams: Arc<Quota<Option<SocketAddr>>>,
}

impl Admission {
    /// Takes `cost` bytes from the global budget and from `caller`'s share, before the
    /// request they stand for is buffered. Over either: RESOURCE_EXHAUSTED (counted as shed).
    pub(crate) fn charge(
        &self,
        caller: &Caller,
        cost: usize,
    ) -> Result<(Held<()>, Held<Caller>), crate::service::CheckError> {
        use crate::service::CheckError;
        let Some(global) = self.bytes.try_take(&(), cost) else {
            crate::public::client_shed(caller);
            return Err(CheckError::Overloaded {
                what: "bytes of requests in progress (--max-in-flight-bytes)",
                limit: self.bytes.cap(),
            });
        };
        let Some(mine) = self.client_bytes.try_take(caller, cost) else {
            crate::public::client_shed(caller);
            return Err(CheckError::Overloaded {
                what: "this caller's bytes of requests in progress (--client-max-in-flight-bytes)",
                limit: self.client_bytes.cap(),
            });
        };
        Ok((global, mine))
    }
}

/// Bytes a request message may cost while it is in progress, charged when its length is
/// known and before it is buffered or decoded: its bytes, plus what its listings may become
/// (decoded strings, results, the encoded answer) at most `PER_LISTING_BYTES` each. A message
/// of `len` bytes holds at most `len / 2` listings (2 bytes is the smallest on the wire), and
/// never more than `max_listings` (more is refused before any is decoded).
pub(crate) fn message_cost(len: usize, max_listings: usize) -> usize {
    len.saturating_add(
        (len / 2)
            .min(max_listings)
            .saturating_mul(PER_LISTING_BYTES),
    )
}

/// Upper estimate of what one listing costs once decoded and answered: six strings and their
/// allocations (~240 B), its result with a verdict and certificate (~200 B), its share of the
/// encoded answer (~150 B), with room to spare.
pub(crate) const PER_LISTING_BYTES: usize = 768;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_refuses_past_its_cap_and_forgets_keys_given_back() {
        let q = Quota::<&str>::new(10);
        let a = q.try_take(&"a", 6).unwrap();
        assert!(q.try_take(&"a", 5).is_none());
        let b = q.try_take(&"b", 10).unwrap();
        let a2 = q.try_take(&"a", 4).unwrap();
        assert_eq!(q.used(&"a"), 10);
        drop((a, a2, b));
        assert_eq!(q.used(&"a"), 0);
        assert!(lock(&q.used).is_empty());
        assert!(q.try_take(&"a", usize::MAX).is_none());
    }

    #[test]
    fn message_cost_is_bounded_by_the_batch_limit() {
        assert_eq!(message_cost(10, 10_000), 10 + 5 * PER_LISTING_BYTES);
        let big = 16 << 20;
        assert_eq!(message_cost(big, 10_000), big + 10_000 * PER_LISTING_BYTES);
    }
}
