//! Per-caller rate quotas: calls a second and checks (listings) a second, each a token bucket
//! per caller (`--client-max-calls-per-second`, `--client-max-checks-per-second`).
//!
//! The byte budgets and stream caps of [`crate::admission`] bound what a caller holds at once;
//! these bound what it may spend over time, so that one caller sending as fast as it can does
//! not take the gateway's CPU from the others. Both are applied before the work they bound:
//!
//! - a call takes one token of the caller's calls bucket, and needs at least one token in its
//!   checks bucket, when its headers arrive: before its body is read, so a caller over its
//!   quota costs the gateway a HEADERS frame and a trailers-only answer;
//! - a request message takes as many checks tokens as it holds listings once they are counted
//!   on the wire ([`crate::wire`]), before any listing is checked. The bucket may go into debt
//!   by that message: a unary call was admitted from its headers (at least one check left
//!   then), so its message is always served, never refused after its bytes were received and
//!   decoded (that refusal would cost the gateway the whole message's work for nothing); a
//!   stream message is refused whole (never half answered) when the bucket is already in debt.
//!   The caller's next calls are then refused from their headers until the debt is repaid, so
//!   its rate over time stays the quota; the debt is at most one message per call or stream the
//!   caller has in progress at once, which the byte budgets and stream caps bound.
//!
//! A third quota, bytes a second (`--client-max-bytes-per-second`), is not a refusal: it is
//! applied where a connection is read ([`crate::tls::Conn`]), before the bytes are decrypted,
//! framed or decoded. Each connection is metered for the last caller identified on it
//! ([`ByteMeter`]); a read takes as many tokens as it got bytes (into debt, as the read is
//! done), and while that caller's bucket is in debt its connections are not read at all: what
//! it sends waits in the kernel's buffers and its own, costing the gateway nothing, and its
//! calls are slowed, not refused. Bytes of calls the gateway refuses count too (the HTTP/2
//! stream window a refused message pushes before its refusal reaches the caller), which no
//! refusal-based quota can bound. Another caller's connections are not touched.
//!
//! Refusals are RESOURCE_EXHAUSTED with `grpc-retry-pushback-ms` set to when the tokens the
//! caller needed will be there. A bucket holds one second of its rate (a caller may burst to
//! one second's worth at once), and a checks bucket at least one largest message
//! (`--max-batch` listings), so that any valid message can pass.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::admission::Caller;
use crate::service::CheckError;

/// One token bucket per caller.
#[derive(Debug)]
pub(crate) struct RateQuota {
    what: &'static str,
    per_second: f64,
    burst: f64,
    buckets: Mutex<Buckets>,
}

#[derive(Debug, Default)]
struct Buckets {
    map: HashMap<Caller, Bucket>,
    /// The map's size after its last pruning: it is pruned again when it doubles.
    pruned_at: usize,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Callers kept before full buckets are forgotten (a full bucket is the same as none).
const KEEP: usize = 1024;

impl RateQuota {
    /// `per_second` tokens a second per caller, up to `burst` saved; `what` names the flag in
    /// refusals.
    pub(crate) fn new(what: &'static str, per_second: u64, burst: u64) -> RateQuota {
        RateQuota {
            what,
            per_second: per_second as f64,
            burst: burst.max(1) as f64,
            buckets: Mutex::new(Buckets::default()),
        }
    }

    /// The rate, per second.
    pub(crate) fn per_second(&self) -> u64 {
        self.per_second as u64
    }

    /// What `spend` does with `n` tokens of `caller` at `now`. Without what it needs: the time
    /// until it will have it.
    fn spend(&self, caller: &Caller, n: f64, now: Instant, how: Spend) -> Result<(), Duration> {
        let mut b = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (per_second, burst) = (self.per_second, self.burst);
        let bucket = b.map.entry(caller.clone()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_second).min(burst);
        bucket.at = bucket.at.max(now);
        let need = match how {
            Spend::Take | Spend::Check => n,
            Spend::Overdraw => 1.0,
            Spend::Force => f64::NEG_INFINITY,
        };
        let outcome = if bucket.tokens >= need {
            if how != Spend::Check {
                bucket.tokens -= n;
            }
            Ok(())
        } else {
            let wait = (need.min(burst) - bucket.tokens) / per_second;
            Err(Duration::from_secs_f64(wait.max(0.001)))
        };
        if b.map.len() > KEEP.max(2 * b.pruned_at) {
            b.map.retain(|_, x| {
                let refill = now.saturating_duration_since(x.at).as_secs_f64() * per_second;
                x.tokens + refill < burst
            });
            b.pruned_at = b.map.len();
        }
        outcome
    }

    /// Takes `n` tokens of `caller`, or refuses (RESOURCE_EXHAUSTED, counted as shed).
    pub(crate) fn take(&self, caller: &Caller, n: usize, now: Instant) -> Result<(), CheckError> {
        self.spend(caller, n as f64, now, Spend::Take)
            .map_err(|wait| self.refusal(caller, wait))
    }

    /// Takes `n` tokens of `caller` if it has at least one (its bucket may go into debt), or
    /// refuses (as [`RateQuota::take`]); with `force` (work already admitted), takes them
    /// whatever the bucket holds.
    pub(crate) fn overdraw(
        &self,
        caller: &Caller,
        n: usize,
        now: Instant,
        force: bool,
    ) -> Result<(), CheckError> {
        let how = if force { Spend::Force } else { Spend::Overdraw };
        self.spend(caller, n as f64, now, how)
            .map_err(|wait| self.refusal(caller, wait))
    }

    /// Refuses (as [`RateQuota::take`]) unless `caller` has at least one token; takes none.
    pub(crate) fn any_left(&self, caller: &Caller, now: Instant) -> Result<(), CheckError> {
        self.spend(caller, 1.0, now, Spend::Check)
            .map_err(|wait| self.refusal(caller, wait))
    }

    fn refusal(&self, caller: &Caller, retry_after: Duration) -> CheckError {
        crate::public::client_shed(caller);
        CheckError::RateLimited {
            what: self.what,
            limit: self.per_second(),
            retry_after,
        }
    }

    /// `None` when `caller` has at least one token at `now`, else how long until it has.
    pub(crate) fn wait(&self, caller: &Caller, now: Instant) -> Option<Duration> {
        self.spend(caller, 1.0, now, Spend::Check).err()
    }

    /// Takes `n` tokens of `caller` whatever its bucket holds (into debt if need be): work
    /// already done.
    pub(crate) fn charge(&self, caller: &Caller, n: usize, now: Instant) {
        let _ = self.spend(caller, n as f64, now, Spend::Force);
    }

    /// Callers with a bucket.
    #[cfg(test)]
    fn callers(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map
            .len()
    }
}

/// What [`RateQuota::spend`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Spend {
    /// Takes the tokens if there are as many.
    Take,
    /// Takes none; needs as many.
    Check,
    /// Takes the tokens if there is at least one (into debt).
    Overdraw,
    /// Takes the tokens, into debt if need be.
    Force,
}

/// The public plane's rate quotas (each `None` when off).
#[derive(Debug, Default)]
pub(crate) struct Rates {
    /// Calls a second per caller.
    pub calls: Option<RateQuota>,
    /// Listings a second per caller.
    pub checks: Option<RateQuota>,
    /// Request bytes read a second per caller (metered on its connections, [`ByteMeter`]).
    pub bytes: Option<Arc<RateQuota>>,
}

/// Whose bytes a connection's reads are (the last caller identified on it), for the bytes
/// quota ([`Rates::bytes`]). A connection not yet known (before its first call's headers are
/// handled) is read unmetered: what it can send until then is bounded by the HTTP/2 connection
/// window (hyper's 1 MiB), then its caller is known or its call is refused.
#[derive(Debug, Default)]
pub(crate) struct ByteMeter {
    owner: Mutex<Option<Owner>>,
}

/// A metered connection's caller, its quota and its counters' handles
/// (`cccgate_client_read_bytes_total`, `cccgate_client_read_waits_total`), registered once per
/// caller change, not per read.
#[derive(Debug)]
struct Owner {
    quota: Arc<RateQuota>,
    caller: Caller,
    read: metrics::Counter,
    waits: metrics::Counter,
}

impl ByteMeter {
    fn owner(&self) -> std::sync::MutexGuard<'_, Option<Owner>> {
        self.owner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection's reads are `caller`'s from now on, metered by `quota`.
    pub(crate) fn meter_for(&self, quota: &Arc<RateQuota>, caller: &Caller) {
        let mut owner = self.owner();
        if !matches!(&*owner, Some(o) if o.caller == *caller) {
            *owner = Some(Owner {
                quota: Arc::clone(quota),
                caller: Arc::clone(caller),
                read: metrics::counter!(
                    "cccgate_client_read_bytes_total",
                    "client" => caller.to_string()
                ),
                waits: metrics::counter!(
                    "cccgate_client_read_waits_total",
                    "client" => caller.to_string()
                ),
            });
        }
    }

    /// `None` when the connection may be read at `now`, else how long until its caller has
    /// bytes again (counted in `cccgate_client_read_waits_total`).
    pub(crate) fn wait(&self, now: Instant) -> Option<Duration> {
        let owner = self.owner();
        let o = owner.as_ref()?;
        let wait = o.quota.wait(&o.caller, now);
        if wait.is_some() {
            o.waits.increment(1);
        }
        wait
    }

    /// `n` bytes were read from the connection at `now`.
    pub(crate) fn read(&self, n: usize, now: Instant) {
        if n == 0 {
            return;
        }
        if let Some(o) = &*self.owner() {
            o.quota.charge(&o.caller, n, now);
            o.read.increment(n as u64);
        }
    }
}

impl Rates {
    /// The quotas of `limits`: a rate of 0 is off.
    pub(crate) fn new(limits: &crate::config::Limits) -> Rates {
        let calls = limits.client_max_calls_per_second;
        let checks = limits.client_max_checks_per_second;
        let bytes = limits.client_max_bytes_per_second;
        Rates {
            calls: (calls > 0).then(|| {
                RateQuota::new(
                    "this caller's calls a second (--client-max-calls-per-second)",
                    calls,
                    calls,
                )
            }),
            checks: (checks > 0).then(|| {
                RateQuota::new(
                    "this caller's checks a second (--client-max-checks-per-second)",
                    checks,
                    checks.max(limits.max_batch as u64),
                )
            }),
            bytes: (bytes > 0).then(|| {
                Arc::new(RateQuota::new(
                    "this caller's request bytes a second (--client-max-bytes-per-second)",
                    bytes,
                    bytes,
                ))
            }),
        }
    }

    /// A call's admission, when its headers arrive and before its body is read: one call, and
    /// at least one check left.
    pub(crate) fn admit_call(&self, caller: &Caller) -> Result<(), CheckError> {
        let now = Instant::now();
        if let Some(checks) = &self.checks {
            checks.any_left(caller, now)?;
        }
        if let Some(calls) = &self.calls {
            calls.take(caller, 1, now)?;
        }
        Ok(())
    }

    /// A message's `listings`, counted before any is checked: taken if the caller's checks
    /// bucket is not in debt, into debt if need be; `admitted` (a unary call, admitted from
    /// its headers): taken whatever the bucket holds, never refused.
    pub(crate) fn take_checks(
        &self,
        caller: &Caller,
        listings: usize,
        admitted: bool,
    ) -> Result<(), CheckError> {
        match &self.checks {
            Some(checks) if listings > 0 => {
                checks.overdraw(caller, listings, Instant::now(), admitted)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(name: &str) -> Caller {
        Caller::from(name)
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate_and_says_when_to_retry() {
        let q = RateQuota::new("calls", 5, 5);
        let (a, b) = (caller("a"), caller("b"));
        let t0 = Instant::now();
        for _ in 0..5 {
            q.take(&a, 1, t0).unwrap();
        }
        let Err(CheckError::RateLimited {
            retry_after, limit, ..
        }) = q.take(&a, 1, t0)
        else {
            panic!("the sixth call in the same instant must be refused");
        };
        assert_eq!(limit, 5);
        assert_eq!(retry_after, Duration::from_millis(200));
        // Another caller has a bucket of its own.
        q.take(&b, 5, t0).unwrap();
        // 200 ms later one token is back, and only one.
        let t1 = t0 + Duration::from_millis(200);
        q.take(&a, 1, t1).unwrap();
        assert!(q.take(&a, 1, t1).is_err());
        // Idle for long, a bucket refills to its burst and no further.
        let t2 = t1 + Duration::from_secs(60);
        q.take(&a, 5, t2).unwrap();
        assert!(q.take(&a, 1, t2).is_err());
    }

    #[test]
    fn a_message_that_does_not_fit_takes_nothing() {
        let q = RateQuota::new("checks", 100, 100);
        let a = caller("a");
        let t0 = Instant::now();
        q.take(&a, 60, t0).unwrap();
        assert!(q.take(&a, 50, t0).is_err());
        q.take(&a, 40, t0).unwrap();
        assert!(q.any_left(&a, t0).is_err());
        assert!(q.any_left(&a, t0 + Duration::from_millis(10)).is_ok());
    }

    #[test]
    fn the_checks_bucket_holds_at_least_a_largest_message() {
        let limits = crate::config::Limits {
            max_batch: 10_000,
            client_max_checks_per_second: 500,
            ..Default::default()
        };
        let rates = Rates::new(&limits);
        assert!(rates.calls.is_none());
        let a = caller("a");
        rates.take_checks(&a, 10_000, false).unwrap();
        assert!(rates.take_checks(&a, 1, false).is_err());
        assert!(rates.admit_call(&a).is_err());
    }

    #[test]
    fn a_message_goes_into_debt_and_the_debt_refuses_the_next_calls_until_repaid() {
        let q = RateQuota::new("checks", 1_000, 1_000);
        let a = caller("a");
        let t0 = Instant::now();
        // 1,000 tokens: a stream message of 1,500 is taken whole, into debt (-500).
        q.overdraw(&a, 1_500, t0, false).unwrap();
        // In debt: a stream message is refused, and a call from its headers, with the time
        // until the debt is repaid and one token is back (501 ms at 1,000 a second).
        let Err(CheckError::RateLimited { retry_after, .. }) = q.overdraw(&a, 1, t0, false) else {
            panic!("a stream message while in debt must be refused");
        };
        assert_eq!(retry_after, Duration::from_millis(501));
        assert!(q.any_left(&a, t0).is_err());
        // A unary call admitted earlier (from its headers) is never refused once its listings
        // are counted: it goes deeper into debt (-1,500).
        q.overdraw(&a, 1_000, t0, true).unwrap();
        assert!(q.any_left(&a, t0 + Duration::from_millis(1_500)).is_err());
        // Repaid at the quota's rate: 1.501 s later a call is admitted again.
        assert!(q.any_left(&a, t0 + Duration::from_millis(1_501)).is_ok());
    }

    #[test]
    fn a_connection_is_read_until_its_caller_is_past_its_bytes_then_waits_for_the_refill() {
        let q = Arc::new(RateQuota::new("bytes", 1_000, 1_000));
        let (a, b) = (ByteMeter::default(), ByteMeter::default());
        let t0 = Instant::now();
        // Before its first call's caller is known, a connection is read unmetered.
        a.read(50_000, t0);
        assert_eq!(a.wait(t0), None);
        a.meter_for(&q, &caller("greedy"));
        b.meter_for(&q, &caller("fair"));
        // One second's worth at once, then a read past it (a read is never cut short): the
        // bucket is 1,500 in debt and the connection is not read until one byte is back.
        a.read(1_000, t0);
        assert_eq!(a.wait(t0), Some(Duration::from_millis(1))); // at zero: one byte's time
        a.read(1_500, t0);
        assert_eq!(a.wait(t0), Some(Duration::from_millis(1_501)));
        // Another connection of the same caller waits too; one of another caller does not.
        let c = ByteMeter::default();
        c.meter_for(&q, &caller("greedy"));
        assert_eq!(c.wait(t0), Some(Duration::from_millis(1_501)));
        assert_eq!(b.wait(t0), None);
        // Read again once the debt is repaid.
        assert!(a.wait(t0 + Duration::from_millis(1_502)).is_none());
        // A connection whose calls are now another caller's is metered for that one.
        a.meter_for(&q, &caller("fair"));
        assert_eq!(a.wait(t0), None);
    }

    #[test]
    fn full_buckets_are_forgotten_so_the_map_stays_bounded() {
        let q = RateQuota::new("calls", 1_000, 1_000);
        let t0 = Instant::now();
        // A caller a millisecond: a millisecond later each bucket has its token back, full
        // and forgettable.
        for i in 0..10 * KEEP {
            let now = t0 + Duration::from_millis(i as u64);
            q.take(&caller(&format!("c{i}")), 1, now).unwrap();
        }
        assert!(q.callers() <= KEEP + 1, "{} callers kept", q.callers());
        // Callers still short of tokens are kept, and the map doubles before it is pruned.
        let q = RateQuota::new("calls", 1, 1);
        for i in 0..3 * KEEP {
            q.take(&caller(&format!("c{i}")), 1, t0).unwrap();
        }
        assert_eq!(q.callers(), 3 * KEEP);
        assert!(q.take(&caller("c0"), 1, t0).is_err());
    }
}
