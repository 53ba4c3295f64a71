//! The `cccgate.v1.ListingCheck` service: Check, CheckBatch and CheckStream.
//!
//! # The hot path
//!
//! Per request or stream message: load the snapshot once ([`SnapshotReader::load`], no
//! reference count touched), compute the China-time day once, then per listing validate it
//! borrowing the request's bytes ([`crate::wire`]), run the pure [`cccgate_core::check_all`]
//! and write the result straight into the response's bytes ([`crate::answer`]). Nothing is
//! allocated per listing (one response buffer and two index vectors per message), nothing is
//! locked, and
//! every verdict of one response message comes from the same snapshot. Metrics are counted
//! in a local tally and added once per message; the decision log (if any) gets one message
//! per request or chunk through a non-blocking `try_send`.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use cccgate_core::{Day, Policy, Verdict, check, check_all};
use cccgate_proto::InvalidListing;
use tokio::sync::Semaphore;
use tonic::Status;

use crate::admission::Caller;
use crate::answer::Encoded;
use crate::config::Limits;
use crate::decision_log::{self, DecisionLog};
use crate::fair::{FairGate, Turn};
use crate::metrics::{CheckMetrics, Rpc, Tally};
use crate::store::{Loaded, SnapshotReader};
use crate::wire::{Decoded, Item, Shape, View, WireError, cut};

/// Why a call gets no verdicts. Each maps to one gRPC status code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// No snapshot is loaded yet: UNAVAILABLE (never a default verdict).
    #[error("no snapshot is loaded yet")]
    NoSnapshot,
    /// The snapshot in force is older than the request allows: FAILED_PRECONDITION.
    #[error("the snapshot in force is sequence {in_force}; the request needs at least {required}")]
    Stale {
        /// Sequence in force.
        in_force: u64,
        /// The request's `min_snapshot_sequence`.
        required: u64,
    },
    /// A unary call's listing is a bad request: INVALID_ARGUMENT.
    #[error(transparent)]
    InvalidListing(#[from] InvalidListing),
    /// Check without `listing`: INVALID_ARGUMENT.
    #[error("listing is required")]
    MissingListing,
    /// Check with `listings`: INVALID_ARGUMENT.
    #[error(
        "Check decides the one listing in `listing`; send `listings` with CheckBatch or CheckStream"
    )]
    ListingsInUnary,
    /// More listings in one message than the limit: INVALID_ARGUMENT.
    #[error("{len} listings in one message, over the limit of {max}")]
    TooMany {
        /// Listings sent.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Too much in progress: RESOURCE_EXHAUSTED.
    #[error("overloaded: {what} at its limit of {limit}; retry with backoff")]
    Overloaded {
        /// Calls or streams.
        what: &'static str,
        /// The limit reached.
        limit: usize,
    },
    /// The caller is over a rate quota: RESOURCE_EXHAUSTED, with a retry hint of when it
    /// will have the tokens again.
    #[error("over the quota: {what} is {limit}; retry in {} ms", retry_after.as_millis().max(1))]
    RateLimited {
        /// The quota.
        what: &'static str,
        /// Its rate, per second.
        limit: u64,
        /// When the caller will have what it needed.
        retry_after: std::time::Duration,
    },
}

impl From<CheckError> for Status {
    fn from(e: CheckError) -> Status {
        let message = e.to_string();
        match e {
            CheckError::NoSnapshot => Status::unavailable(message),
            CheckError::Stale { .. } => Status::failed_precondition(message),
            CheckError::InvalidListing(ref invalid) => {
                let mut s = Status::invalid_argument(message);
                s.metadata_mut().insert(
                    "cccgate-field",
                    tonic::metadata::MetadataValue::from_static(invalid.field()),
                );
                s
            }
            CheckError::MissingListing
            | CheckError::ListingsInUnary
            | CheckError::TooMany { .. } => Status::invalid_argument(message),
            CheckError::Overloaded { .. } => {
                let mut s = Status::resource_exhausted(message);
                // The retry hint gRPC clients read (gRFC A6): try again after this long.
                s.metadata_mut().insert(
                    "grpc-retry-pushback-ms",
                    tonic::metadata::MetadataValue::from_static(RETRY_PUSHBACK_MS),
                );
                s
            }
            CheckError::RateLimited { retry_after, .. } => {
                let mut s = Status::resource_exhausted(message);
                let ms = retry_after.as_millis().max(1).to_string();
                if let Ok(v) = tonic::metadata::MetadataValue::try_from(ms) {
                    s.metadata_mut().insert("grpc-retry-pushback-ms", v);
                }
                s
            }
        }
    }
}

/// How long a shed caller is asked to wait before it retries, in milliseconds.
pub(crate) const RETRY_PUSHBACK_MS: &str = "200";

// Listings checked in one turn at the CPU: `Limits::turn_listings` (`--turn-listings`, 250 by
// default). A message with more (up to `--max-batch`) is checked in turns of that many:
// between two turns the worker thread is yielded and the caller takes a fresh fair turn
// ([`FairGate`]), so another caller's message waits for about one turn of it (~0.25 ms), not
// for the whole message (~10 ms at 10,000 listings).

/// What every check needs, shared by all calls.
#[derive(Debug)]
pub(crate) struct CheckContext {
    pub reader: SnapshotReader,
    pub policy: Policy,
    pub limits: Limits,
    pub metrics: CheckMetrics,
    pub log: Option<DecisionLog>,
    pub in_flight: Arc<Semaphore>,
    pub streams: Arc<Semaphore>,
    /// Shadow evaluation of a candidate register (`--candidate-dir`), if any.
    pub shadow: Option<Arc<crate::shadow::Shadow>>,
}

impl CheckContext {
    pub(crate) fn new(
        reader: SnapshotReader,
        policy: Policy,
        limits: Limits,
        log: Option<DecisionLog>,
    ) -> Self {
        CheckContext {
            reader,
            metrics: CheckMetrics::new(&policy),
            policy,
            limits,
            log,
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight)),
            streams: Arc::new(Semaphore::new(limits.max_open_streams)),
            shadow: None,
        }
    }

    /// The shadow hook: one branch without a candidate, a thread-local draw with one.
    #[inline]
    fn shadow(&self, view: View<'_>, reason: cccgate_core::Reason, day: Day) {
        if let Some(shadow) = &self.shadow {
            shadow.consider(view, reason, day);
        }
    }

    /// Decides `items` (listings of `req`) against one snapshot, writing one result each to
    /// `out` in order (an error entry for a bad listing).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn decide_all(
        &self,
        loaded: &Loaded,
        req: &Decoded,
        items: &[Item],
        day: Day,
        tally: &mut Tally,
        log: &mut Option<Vec<decision_log::Entry>>,
        out: &mut Encoded,
    ) {
        // Validate every listing first (bad ones set aside with their place); then decide
        // the valid ones together with `check_all`, which prefetches each certificate a few
        // listings ahead so the memory latency of the lookups overlaps. Results are written
        // in input order: each bad listing's just before the first valid one after it.
        let mut valid = Vec::with_capacity(items.len());
        let mut at = Vec::with_capacity(items.len());
        let mut bad: Vec<(usize, InvalidListing)> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let view = req.view(item);
            match validate(item, view, day) {
                Ok(listing) => {
                    at.push(i);
                    valid.push(listing);
                }
                Err(invalid) => {
                    tally.invalid += 1;
                    if let Some(entries) = log {
                        entries.push(log_error(view, &invalid));
                    }
                    bad.push((i, invalid));
                }
            }
        }
        let mut bad = bad.into_iter().peekable();
        check_all(&loaded.snapshot, &valid, &self.policy, |k, v| {
            while let Some((_, invalid)) = bad.next_if(|(i, _)| *i < at[k]) {
                out.error(&invalid);
            }
            tally.verdict(v.reason);
            // The listing's view (six fields validated) only for a sampled listing or the log.
            let shadow = self.shadow.as_deref().filter(|s| s.sampled());
            if shadow.is_some() || log.is_some() {
                let view = req.view(&items[at[k]]);
                if let Some(shadow) = shadow {
                    shadow.offer(view, v.reason, day);
                }
                if let Some(entries) = log {
                    entries.push(log_verdict(view, &v));
                }
            }
            out.verdict(valid[k].listing_id, &v);
        });
        for (_, invalid) in bad {
            out.error(&invalid);
        }
    }

    /// Decides `items` as [`CheckContext::decide_all`] does, in turns of at most
    /// `--turn-listings` listings: `turn` (already held) covers the first; before each next
    /// one the turn is given back, the worker thread yielded (other tasks run) and a fresh
    /// turn of `caller` awaited. Results are written in order: the same bytes as in one piece.
    #[allow(clippy::too_many_arguments)]
    async fn decide_in_turns(
        &self,
        turn: Turn,
        turns: (&Arc<FairGate>, &Caller),
        loaded: &Loaded,
        req: &Decoded,
        day: Day,
        tally: &mut Tally,
        log: &mut Option<Vec<decision_log::Entry>>,
        out: &mut Encoded,
    ) {
        let (fair, caller) = turns;
        let mut turn = Some(turn);
        for (i, part) in req.listings().chunks(self.limits.turn_listings).enumerate() {
            if i > 0 {
                drop(turn.take());
                tokio::task::yield_now().await;
                turn = Some(fair.turn(caller, part.len()).await);
            }
            self.decide_all(loaded, req, part, day, tally, log, out);
        }
    }

    /// Decides one listing; a bad one is counted and logged and returned as the error.
    #[inline]
    fn decide_one<'l>(
        &self,
        loaded: &'l Loaded,
        view: View<'_>,
        item: &Item,
        day: Day,
        tally: &mut Tally,
        log: &mut Option<Vec<decision_log::Entry>>,
    ) -> Result<Verdict<'l>, InvalidListing> {
        match validate(item, view, day) {
            Ok(listing) => {
                let v = check(&loaded.snapshot, &listing, &self.policy);
                tally.verdict(v.reason);
                self.shadow(view, v.reason, day);
                if let Some(entries) = log {
                    entries.push(log_verdict(view, &v));
                }
                Ok(v)
            }
            Err(invalid) => {
                tally.invalid += 1;
                if let Some(entries) = log {
                    entries.push(log_error(view, &invalid));
                }
                Err(invalid)
            }
        }
    }

    fn log_batch(&self, loaded: &Loaded, client: &str, entries: Option<Vec<decision_log::Entry>>) {
        if let (Some(log), Some(entries)) = (&self.log, entries)
            && !entries.is_empty()
        {
            log.offer(decision_log::Batch {
                at_unix_ms: crate::metrics::now_unix_ms(),
                snapshot_sequence: loaded.snapshot.sequence(),
                client: client.into(),
                entries,
            });
        }
    }

    fn log_entries(&self, capacity: usize) -> Option<Vec<decision_log::Entry>> {
        self.log.as_ref().map(|_| Vec::with_capacity(capacity))
    }

    fn require(&self, loaded: Option<&Arc<Loaded>>, min: u64) -> Result<(), CheckError> {
        let Some(loaded) = loaded else {
            return Err(CheckError::NoSnapshot);
        };
        let in_force = loaded.snapshot.sequence();
        if in_force < min {
            self.metrics.stale();
            return Err(CheckError::Stale {
                in_force,
                required: min,
            });
        }
        Ok(())
    }

    /// Answers one stream message: all its listings against one snapshot, encoded, checked in
    /// fair turns of `caller` ([`CheckContext::decide_in_turns`]). A message with too many
    /// listings (refused while it was decoded) gets one error, and the stream goes on.
    pub(crate) async fn answer_chunk(
        &self,
        req: Result<Decoded, WireError>,
        turns: (&Arc<FairGate>, &Caller),
        lean: bool,
    ) -> Result<Bytes, CheckError> {
        let req = match req {
            Ok(req) => req,
            Err(e) => return self.answer_refused_chunk(&e, lean),
        };
        let (fair, caller) = turns;
        let turn = fair
            .turn(caller, req.len().min(self.limits.turn_listings))
            .await;
        let started = Instant::now();
        // Owned (one reference count a message): held across the turns.
        let loaded = self.reader.load().as_ref().map(Arc::clone);
        self.require(loaded.as_ref(), req.min_snapshot_sequence)?;
        let Some(loaded) = loaded else {
            return Err(CheckError::NoSnapshot);
        };
        let mut tally = Tally::default();
        let n = req.len();
        let mut out = Encoded::new(Shape::Request, lean, n);
        let day = today_cn();
        let mut log = self.log_entries(n);
        if let Some(item) = req.listing() {
            let view = req.view(item);
            match self.decide_one(&loaded, view, item, day, &mut tally, &mut log) {
                Ok(v) => out.single().verdict(view.listing_id, &v),
                Err(invalid) => out.single().error(&invalid),
            }
        }
        self.decide_in_turns(
            turn, turns, &loaded, &req, day, &mut tally, &mut log, &mut out,
        )
        .await;
        self.log_batch(&loaded, caller, log);
        self.metrics
            .record(Rpc::Stream, &tally, started.elapsed().as_secs_f64());
        Ok(out.finish(loaded.snapshot.sequence(), loaded.snapshot.content_id()))
    }

    /// The answer to a stream message refused while it was decoded: one error entry.
    fn answer_refused_chunk(&self, e: &WireError, lean: bool) -> Result<Bytes, CheckError> {
        let started = Instant::now();
        let guard = self.reader.load();
        self.require(guard.as_ref(), 0)?;
        let Some(loaded) = guard.as_ref() else {
            return Err(CheckError::NoSnapshot);
        };
        let tally = Tally {
            invalid: 1,
            ..Tally::default()
        };
        let mut out = Encoded::new(Shape::Request, lean, 1);
        out.single().error_parts("", "listings", &e.to_string());
        self.metrics
            .record(Rpc::Stream, &tally, started.elapsed().as_secs_f64());
        Ok(out.finish(loaded.snapshot.sequence(), loaded.snapshot.content_id()))
    }

    /// Answers a unary Check, encoded.
    pub(crate) fn check_one(
        &self,
        req: &Decoded,
        client: &str,
        lean: bool,
    ) -> Result<Bytes, CheckError> {
        let started = Instant::now();
        let guard = self.reader.load();
        self.require(guard.as_ref(), req.min_snapshot_sequence)?;
        let Some(loaded) = guard.as_ref() else {
            return Err(CheckError::NoSnapshot);
        };
        if !req.listings().is_empty() {
            return Err(CheckError::ListingsInUnary);
        }
        let item = req.listing().ok_or(CheckError::MissingListing)?;
        let view = req.view(item);
        let mut tally = Tally::default();
        let mut log = self.log_entries(1);
        let result = self.decide_one(loaded, view, item, today_cn(), &mut tally, &mut log);
        self.log_batch(loaded, client, log);
        self.metrics
            .record(Rpc::Check, &tally, started.elapsed().as_secs_f64());
        // Unary: a bad listing fails the call with INVALID_ARGUMENT naming the field.
        let v = result?;
        let mut out = Encoded::new(Shape::Request, lean, 1);
        out.single().verdict(view.listing_id, &v);
        Ok(out.finish(loaded.snapshot.sequence(), loaded.snapshot.content_id()))
    }

    /// Answers a CheckBatch, encoded, checked in fair turns of `caller`
    /// ([`CheckContext::decide_in_turns`]).
    pub(crate) async fn check_batch(
        &self,
        req: &Decoded,
        turns: (&Arc<FairGate>, &Caller),
        lean: bool,
    ) -> Result<Bytes, CheckError> {
        let (fair, caller) = turns;
        let turn = fair
            .turn(caller, req.len().min(self.limits.turn_listings))
            .await;
        let started = Instant::now();
        // Owned (one reference count a message): held across the turns.
        let loaded = self.reader.load().as_ref().map(Arc::clone);
        self.require(loaded.as_ref(), req.min_snapshot_sequence)?;
        let Some(loaded) = loaded else {
            return Err(CheckError::NoSnapshot);
        };
        let mut tally = Tally::default();
        let mut log = self.log_entries(req.listings().len());
        let mut out = Encoded::new(Shape::Batch, lean, req.listings().len());
        self.decide_in_turns(
            turn,
            turns,
            &loaded,
            req,
            today_cn(),
            &mut tally,
            &mut log,
            &mut out,
        )
        .await;
        self.log_batch(&loaded, caller, log);
        self.metrics
            .record(Rpc::Batch, &tally, started.elapsed().as_secs_f64());
        Ok(out.finish(loaded.snapshot.sequence(), loaded.snapshot.content_id()))
    }
}

/// Validates a decoded listing: a field found over its limit while decoding is its error.
fn validate<'a>(
    item: &Item,
    view: View<'a>,
    day: Day,
) -> Result<cccgate_core::Listing<'a>, InvalidListing> {
    match &item.over {
        Some(error) => Err(InvalidListing {
            listing_id: view.listing_id.to_owned(),
            error: error.clone(),
        }),
        None => view.validate(day),
    }
}

fn log_verdict(view: View<'_>, v: &Verdict<'_>) -> decision_log::Entry {
    decision_log::Entry {
        listing_id: view.listing_id.to_owned(),
        merchant_id: view.merchant_id.to_owned(),
        product_code: view.product_code.to_owned(),
        outcome: decision_log::Outcome::Verdict {
            decision: v.decision,
            reason: v.reason,
            certificate: v.certificate.map(|c| c.number),
        },
    }
}

fn log_error(view: View<'_>, invalid: &InvalidListing) -> decision_log::Entry {
    decision_log::Entry {
        listing_id: invalid.listing_id.clone(),
        merchant_id: cut(view.merchant_id, cccgate_core::ID_MAX_BYTES).to_owned(),
        product_code: cut(view.product_code, 16).to_owned(),
        outcome: decision_log::Outcome::Error {
            field: invalid.field(),
            message: invalid.error.to_string(),
        },
    }
}

/// Today in China time: the event day of listings that carry no `event_time`.
fn today_cn() -> Day {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    Day::from_unix_seconds_cn(secs)
}

/// Raises a gauge for as long as it lives.
#[derive(Debug)]
pub(crate) struct GaugeGuard(metrics::Gauge);

impl GaugeGuard {
    pub(crate) fn new(g: &metrics::Gauge) -> Self {
        g.increment(1.0);
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cccgate_proto::v1::Listing as WireListing;
    use futures::FutureExt;
    use prost::Message;

    fn context() -> CheckContext {
        let (writer, reader) = crate::store::snapshot_store();
        writer.swap(crate::store::tests::loaded(7));
        CheckContext::new(reader, Policy::default(), Limits::default(), None)
    }

    /// A CheckBatch message of `n` listings, a bad one (no merchant) every 7th, decoded.
    fn batch(n: usize) -> Decoded {
        let listings = (0..n)
            .map(|i| WireListing {
                listing_id: format!("L{i}"),
                merchant_id: if i % 7 == 3 {
                    String::new()
                } else {
                    "M".into()
                },
                product_code: "0901".into(),
                certificate_number: "2021010901000123".into(),
                model: "X1".into(),
                event_time: "2026-11-27T10:00:00+08:00".into(),
            })
            .collect();
        let bytes = cccgate_proto::v1::CheckBatchRequest {
            listings,
            min_snapshot_sequence: 0,
        }
        .encode_to_vec();
        crate::wire::decode(Bytes::from(bytes), Shape::Batch, 10_000).unwrap()
    }

    #[tokio::test]
    async fn a_batch_in_turns_lets_another_callers_message_in_between_and_answers_the_same_bytes() {
        let ctx = context();
        // One turn at the CPU in all, as if every other were busy.
        let turn = ctx.limits.turn_listings;
        let gate = FairGate::new(1, turn);
        let (big_caller, small_caller) = (Caller::from("big"), Caller::from("small"));
        let (big, small) = (batch(2 * turn + 500), batch(10));
        let mut answer = Box::pin(ctx.check_batch(&big, (&gate, &big_caller), false));
        // Its first turn is checked, then it gives the turn back and yields.
        assert!(futures::poll!(&mut answer).is_pending());
        // Meanwhile another caller's message takes the turn and is answered whole at once.
        let other = ctx
            .check_batch(&small, (&gate, &small_caller), false)
            .now_or_never()
            .expect("answered while the big batch is in progress")
            .unwrap();
        let other = cccgate_proto::v1::CheckBatchResponse::decode(other).unwrap();
        assert_eq!(other.results.len(), 10);
        // The big batch ends, in three turns, with the bytes of the answer made in one piece.
        let got = answer.await.unwrap();
        let loaded = ctx.reader.load_full().unwrap();
        let day = today_cn();
        let mut out = Encoded::new(Shape::Batch, false, big.listings().len());
        ctx.decide_all(
            &loaded,
            &big,
            big.listings(),
            day,
            &mut Tally::default(),
            &mut None,
            &mut out,
        );
        let whole = out.finish(loaded.snapshot.sequence(), loaded.snapshot.content_id());
        assert_eq!(got, whole, "answered in turns, the bytes differ");
        let decoded = cccgate_proto::v1::CheckBatchResponse::decode(got).unwrap();
        assert_eq!(decoded.results.len(), big.listings().len());
        assert!(decoded.results[turn + 3].outcome.is_some());
    }

    #[test]
    fn each_check_error_maps_to_its_grpc_code() {
        use tonic::Code;
        let cases = [
            (CheckError::NoSnapshot, Code::Unavailable),
            (
                CheckError::Stale {
                    in_force: 1,
                    required: 2,
                },
                Code::FailedPrecondition,
            ),
            (CheckError::MissingListing, Code::InvalidArgument),
            (CheckError::ListingsInUnary, Code::InvalidArgument),
            (
                CheckError::TooMany { len: 2, max: 1 },
                Code::InvalidArgument,
            ),
            (
                CheckError::Overloaded {
                    what: "calls",
                    limit: 1,
                },
                Code::ResourceExhausted,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(Status::from(e).code(), code);
        }
    }

    #[test]
    fn an_invalid_listing_names_its_field_in_metadata() {
        let wire = WireListing {
            listing_id: "L1".into(),
            ..Default::default()
        };
        let invalid = wire.validate(Day::from_days(0)).unwrap_err();
        let s = Status::from(CheckError::from(invalid));
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(s.metadata().get("cccgate-field").unwrap(), "merchant_id");
        assert!(s.message().contains("\"L1\""), "{}", s.message());
    }
}
