//! The `cccgate.v1.ListingCheck` service: Check, CheckBatch and CheckStream.
//!
//! # The hot path
//!
//! Per request or stream message: load the snapshot once ([`SnapshotReader::load`], no
//! reference count touched), compute the China-time day once, then per listing validate it
//! borrowing the request's strings, run the pure [`cccgate_core::check`] and build the wire
//! result. Nothing is allocated beyond the response's own strings, nothing is locked, and
//! every verdict of one response message comes from the same snapshot. Metrics are counted
//! in a local tally and added once per message; the decision log (if any) gets one message
//! per request or chunk through a non-blocking `try_send`.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cccgate_core::{Day, Policy, check, check_all};
use cccgate_proto::v1::listing_result::Outcome as WireOutcome;
use cccgate_proto::v1::{CheckBatchResponse, CheckResponse, Listing as WireListing, ListingResult};
use cccgate_proto::{InvalidListing, verdict_to_wire};
use tokio::sync::Semaphore;
use tonic::Status;

use crate::config::Limits;
use crate::decision_log::{self, DecisionLog};
use crate::metrics::{CheckMetrics, Rpc, Tally};
use crate::store::{Loaded, SnapshotReader};
use crate::wire::{Decoded, Item, WireError};

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
        }
    }
}

/// How long a shed caller is asked to wait before it retries, in milliseconds.
pub(crate) const RETRY_PUSHBACK_MS: &str = "200";

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
    fn shadow(&self, wire: &WireListing, reason: cccgate_core::Reason, day: Day) {
        if let Some(shadow) = &self.shadow {
            shadow.consider(wire, reason, day);
        }
    }

    /// Decides `listings` against one snapshot, appending one result each to `out` (an error
    /// entry for a bad listing).
    #[inline]
    fn decide_all(
        &self,
        loaded: &Loaded,
        listings: &[Item],
        day: Day,
        tally: &mut Tally,
        log: &mut Option<Vec<decision_log::Entry>>,
        out: &mut Vec<ListingResult>,
    ) {
        // Validate every listing first, answering bad ones in place; then decide the valid
        // ones together with `check_all`, which prefetches each certificate a few listings
        // ahead so the memory latency of the lookups overlaps. Results stay in input order.
        let lower = listings.len();
        let mut valid = Vec::with_capacity(lower);
        let mut wires = Vec::with_capacity(lower);
        let mut at = Vec::with_capacity(lower);
        for item in listings {
            let wire = &item.wire;
            match validate(item, day) {
                Ok(listing) => {
                    at.push(out.len());
                    valid.push(listing);
                    wires.push(wire);
                    out.push(ListingResult {
                        listing_id: wire.listing_id.clone(),
                        outcome: None,
                    });
                }
                Err(invalid) => {
                    tally.invalid += 1;
                    if let Some(entries) = log {
                        entries.push(log_error(wire, &invalid));
                    }
                    out.push(invalid.to_result());
                }
            }
        }
        check_all(&loaded.snapshot, &valid, &self.policy, |k, v| {
            tally.verdict(v.reason);
            self.shadow(wires[k], v.reason, day);
            if let Some(entries) = log {
                entries.push(log_verdict(wires[k], &v));
            }
            out[at[k]].outcome = Some(WireOutcome::Verdict(verdict_to_wire(&v)));
        });
    }

    /// Decides one listing; a bad one is counted and logged and returned as the error.
    #[inline]
    fn decide_one(
        &self,
        loaded: &Loaded,
        item: &Item,
        day: Day,
        tally: &mut Tally,
        log: &mut Option<Vec<decision_log::Entry>>,
    ) -> Result<ListingResult, InvalidListing> {
        let wire = &item.wire;
        match validate(item, day) {
            Ok(listing) => {
                let v = check(&loaded.snapshot, &listing, &self.policy);
                tally.verdict(v.reason);
                self.shadow(wire, v.reason, day);
                if let Some(entries) = log {
                    entries.push(log_verdict(wire, &v));
                }
                Ok(ListingResult {
                    listing_id: wire.listing_id.clone(),
                    outcome: Some(WireOutcome::Verdict(verdict_to_wire(&v))),
                })
            }
            Err(invalid) => {
                tally.invalid += 1;
                if let Some(entries) = log {
                    entries.push(log_error(wire, &invalid));
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

    /// Answers one stream message: all its listings against one snapshot. A message with too
    /// many listings (refused while it was decoded) gets one error, and the stream goes on.
    pub(crate) fn answer_chunk(
        &self,
        req: Result<Decoded, WireError>,
        client: &str,
    ) -> Result<CheckResponse, CheckError> {
        let started = Instant::now();
        let guard = self.reader.load();
        let min = req.as_ref().map_or(0, |r| r.min_snapshot_sequence);
        self.require(guard.as_ref(), min)?;
        let Some(loaded) = guard.as_ref() else {
            return Err(CheckError::NoSnapshot);
        };
        let mut tally = Tally::default();
        let mut resp = CheckResponse {
            result: None,
            results: Vec::new(),
            snapshot_sequence: loaded.snapshot.sequence(),
            snapshot_content_id: loaded.snapshot.content_id().to_owned(),
        };
        match req {
            Err(e) => {
                tally.invalid = 1;
                resp.result = Some(ListingResult {
                    listing_id: String::new(),
                    outcome: Some(WireOutcome::Error(cccgate_proto::v1::ListingError {
                        field: "listings".into(),
                        message: e.to_string(),
                    })),
                });
            }
            Ok(req) => {
                let n = req.len();
                let day = today_cn();
                let mut log = self.log_entries(n);
                resp.result = req.listing.as_ref().map(|l| {
                    self.decide_one(loaded, l, day, &mut tally, &mut log)
                        .unwrap_or_else(|invalid| invalid.to_result())
                });
                resp.results.reserve_exact(req.listings.len());
                self.decide_all(
                    loaded,
                    &req.listings,
                    day,
                    &mut tally,
                    &mut log,
                    &mut resp.results,
                );
                self.log_batch(loaded, client, log);
            }
        }
        self.metrics
            .record(Rpc::Stream, &tally, started.elapsed().as_secs_f64());
        Ok(resp)
    }

    /// Answers a unary Check.
    pub(crate) fn check_one(
        &self,
        req: &Decoded,
        client: &str,
    ) -> Result<CheckResponse, CheckError> {
        let started = Instant::now();
        let guard = self.reader.load();
        self.require(guard.as_ref(), req.min_snapshot_sequence)?;
        let Some(loaded) = guard.as_ref() else {
            return Err(CheckError::NoSnapshot);
        };
        if !req.listings.is_empty() {
            return Err(CheckError::ListingsInUnary);
        }
        let item = req.listing.as_ref().ok_or(CheckError::MissingListing)?;
        let mut tally = Tally::default();
        let mut log = self.log_entries(1);
        let result = self.decide_one(loaded, item, today_cn(), &mut tally, &mut log);
        self.log_batch(loaded, client, log);
        self.metrics
            .record(Rpc::Check, &tally, started.elapsed().as_secs_f64());
        // Unary: a bad listing fails the call with INVALID_ARGUMENT naming the field.
        let result = result?;
        Ok(CheckResponse {
            result: Some(result),
            results: Vec::new(),
            snapshot_sequence: loaded.snapshot.sequence(),
            snapshot_content_id: loaded.snapshot.content_id().to_owned(),
        })
    }

    /// Answers a CheckBatch.
    pub(crate) fn check_batch(
        &self,
        req: &Decoded,
        client: &str,
    ) -> Result<CheckBatchResponse, CheckError> {
        let started = Instant::now();
        let guard = self.reader.load();
        self.require(guard.as_ref(), req.min_snapshot_sequence)?;
        let Some(loaded) = guard.as_ref() else {
            return Err(CheckError::NoSnapshot);
        };
        let mut tally = Tally::default();
        let mut log = self.log_entries(req.listings.len());
        let mut results = Vec::with_capacity(req.listings.len());
        self.decide_all(
            loaded,
            &req.listings,
            today_cn(),
            &mut tally,
            &mut log,
            &mut results,
        );
        self.log_batch(loaded, client, log);
        self.metrics
            .record(Rpc::Batch, &tally, started.elapsed().as_secs_f64());
        Ok(CheckBatchResponse {
            results,
            snapshot_sequence: loaded.snapshot.sequence(),
            snapshot_content_id: loaded.snapshot.content_id().to_owned(),
        })
    }
}

/// Validates a decoded listing: a field found over its limit while decoding is its error.
fn validate(item: &Item, day: Day) -> Result<cccgate_core::Listing<'_>, InvalidListing> {
    match &item.over {
        Some(error) => Err(InvalidListing {
            listing_id: item.wire.listing_id.clone(),
            error: error.clone(),
        }),
        None => item.wire.validate(day),
    }
}

fn log_verdict(wire: &WireListing, v: &cccgate_core::Verdict<'_>) -> decision_log::Entry {
    decision_log::Entry {
        listing_id: wire.listing_id.clone(),
        merchant_id: wire.merchant_id.clone(),
        product_code: wire.product_code.clone(),
        outcome: decision_log::Outcome::Verdict {
            decision: v.decision,
            reason: v.reason,
            certificate: v.certificate.map(|c| c.number),
        },
    }
}

fn log_error(wire: &WireListing, invalid: &InvalidListing) -> decision_log::Entry {
    decision_log::Entry {
        listing_id: invalid.listing_id.clone(),
        merchant_id: cut(&wire.merchant_id, cccgate_core::ID_MAX_BYTES).to_owned(),
        product_code: cut(&wire.product_code, 16).to_owned(),
        outcome: decision_log::Outcome::Error {
            field: invalid.field(),
            message: invalid.error.to_string(),
        },
    }
}

fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
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
