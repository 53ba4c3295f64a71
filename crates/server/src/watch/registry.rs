//! Watched listings: one registry shared by every `WatchListings` stream.
//!
//! - `streams` (dashmap): per stream, its watched listings by `listing_id`, its caller and
//!   the sender of its responses. A stream's listings go when the stream ends.
//! - `by_cert` (dashmap): certificate number → the (stream, listing id) pairs that cite it, so
//!   a swap re-decides only the listings of the certificates that changed.
//! - `state` (a read-write lock around the snapshot and day the registry decides with): adds
//!   and removes take it shared, a swap or a midnight takes it exclusively, so an INITIAL
//!   answer is never decided by a snapshot a CHANGED pass has already left behind.
//!
//! A watched listing keeps only what a decision needs (see [`Watched`]): 40 bytes plus its
//! text, its id (shared by the two maps) and its slot in each map. Measured in
//! `benches/README.md`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use cccgate_core::{CertNumber, Day, Decision, Listing, Policy, ProductCode, Reason, check};
use cccgate_proto::v1::listing_result::Outcome;
use cccgate_proto::v1::{
    Listing as WireListing, ListingError, ListingResult, WatchEvent, WatchListingsResponse,
};
use cccgate_proto::verdict_to_wire;
use dashmap::DashMap;
use tokio::sync::{Notify, mpsc};
use tonic::Status;

use crate::admission::Caller;
use crate::store::Loaded;

/// What a watched listing keeps: its text, its parsed product code and its last verdict.
#[derive(Debug)]
pub(crate) struct Watched {
    /// `merchant_id`, `certificate_number` and `model`, one after the other.
    text: Box<str>,
    merchant_len: u8,
    number_len: u8,
    product_code: Option<ProductCode>,
    decision: Decision,
    reason: Reason,
    /// The normalised certificate number it is indexed under, if it has one.
    cert: Option<u64>,
}

impl Watched {
    fn listing<'a>(&'a self, id: &'a str, day: Day) -> Listing<'a> {
        let (m, rest) = self.text.split_at(usize::from(self.merchant_len));
        let (c, model) = rest.split_at(usize::from(self.number_len));
        Listing {
            listing_id: id,
            merchant_id: m,
            product_code: self.product_code,
            certificate_number: c,
            model,
            event_day: day,
        }
    }
}

/// A stream's responses: bounded; a stream that does not read its CHANGED results is ended.
pub(crate) type Responses = mpsc::Sender<Result<WatchListingsResponse, Status>>;

/// How many response messages a stream may leave unread before it is ended with
/// RESOURCE_EXHAUSTED (it should reconnect and add its listings again).
pub(crate) const STREAM_QUEUE: usize = 64;

#[derive(Debug)]
struct Stream {
    caller: Caller,
    listings: HashMap<Arc<str>, Watched>,
    tx: Responses,
    /// Set when the stream fell behind; the stream ends with `kill`.
    overflowed: Arc<AtomicBool>,
    kill: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    loaded: Option<Arc<Loaded>>,
    day: Option<Day>,
}

/// Which listings a swap or a midnight must re-decide.
#[derive(Debug)]
pub(crate) enum Affected {
    /// Those citing these certificate numbers.
    Certificates(Vec<u64>),
    /// All (the catalogue changed).
    All,
}

/// The registry of watched listings.
#[derive(Debug)]
pub(crate) struct Registry {
    state: RwLock<State>,
    streams: DashMap<u64, Stream>,
    by_cert: DashMap<u64, Vec<(u64, Arc<str>)>>,
    per_caller: DashMap<Caller, usize>,
    next_stream: AtomicU64,
    policy: Policy,
    max_per_caller: usize,
    max_results_per_message: usize,
}

/// A stream's handle in the registry; the stream's listings go when it is dropped.
#[derive(Debug)]
pub(crate) struct StreamHandle {
    registry: Arc<Registry>,
    pub(crate) id: u64,
    pub(crate) kill: Arc<Notify>,
    pub(crate) overflowed: Arc<AtomicBool>,
}

impl Drop for StreamHandle {
    fn drop(&mut self) {
        self.registry.end_stream(self.id);
    }
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn error_result(listing_id: &str, field: &str, message: String) -> ListingResult {
    ListingResult {
        listing_id: listing_id.to_owned(),
        outcome: Some(Outcome::Error(ListingError {
            field: field.into(),
            message,
        })),
    }
}

impl Registry {
    pub(crate) fn new(policy: Policy, max_per_caller: usize, max_results: usize) -> Arc<Self> {
        Arc::new(Registry {
            state: RwLock::default(),
            streams: DashMap::new(),
            by_cert: DashMap::new(),
            per_caller: DashMap::new(),
            next_stream: AtomicU64::new(1),
            policy,
            max_per_caller,
            max_results_per_message: max_results.max(1),
        })
    }

    /// Opens a stream for `caller`, answering on `tx`.
    pub(crate) fn open(self: &Arc<Self>, caller: Caller, tx: Responses) -> StreamHandle {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let kill = Arc::new(Notify::new());
        let overflowed = Arc::new(AtomicBool::new(false));
        self.streams.insert(
            id,
            Stream {
                caller,
                listings: HashMap::new(),
                tx,
                overflowed: Arc::clone(&overflowed),
                kill: Arc::clone(&kill),
            },
        );
        StreamHandle {
            registry: Arc::clone(self),
            id,
            kill,
            overflowed,
        }
    }

    /// The gateway is stopping: every stream ends (OK).
    pub(crate) fn shutdown(&self) {
        for s in self.streams.iter() {
            s.kill.notify_one();
        }
    }

    fn end_stream(&self, id: u64) {
        let _state = read(&self.state);
        if let Some((_, stream)) = self.streams.remove(&id) {
            for w in stream.listings.values() {
                if let Some(n) = w.cert {
                    self.unindex(n, id, None);
                }
            }
            self.uncount(&stream.caller, stream.listings.len());
        }
    }

    fn uncount(&self, caller: &Caller, n: usize) {
        if n == 0 {
            return;
        }
        let gone = match self.per_caller.get_mut(caller) {
            Some(mut c) => {
                *c = c.saturating_sub(n);
                *c == 0
            }
            None => false,
        };
        if gone {
            self.per_caller.remove_if(caller, |_, c| *c == 0);
        }
    }

    /// Removes `(stream, id)` from certificate `n`'s list (every id of the stream if `None`).
    fn unindex(&self, n: u64, stream: u64, id: Option<&str>) {
        let empty = match self.by_cert.get_mut(&n) {
            Some(mut v) => {
                v.retain(|(s, l)| !(*s == stream && id.is_none_or(|id| &**l == id)));
                v.is_empty()
            }
            None => false,
        };
        if empty {
            self.by_cert.remove_if(&n, |_, v| v.is_empty());
        }
    }

    /// Adds (or replaces) listings of a stream and answers each: its verdict (event INITIAL),
    /// or an error result for a bad listing, which is not watched.
    pub(crate) fn add(&self, stream: u64, add: &[WireListing]) -> WatchListingsResponse {
        let state = read(&self.state);
        let (Some(loaded), Some(day)) = (&state.loaded, state.day) else {
            return WatchListingsResponse {
                results: add
                    .iter()
                    .map(|l| {
                        error_result(
                            &l.listing_id,
                            "add",
                            "no snapshot is loaded yet: add it again once one is".into(),
                        )
                    })
                    .collect(),
                snapshot_sequence: 0,
                event: WatchEvent::Initial as i32,
            };
        };
        let snapshot = &loaded.snapshot;
        let mut results = Vec::with_capacity(add.len());
        let Some(mut s) = self.streams.get_mut(&stream) else {
            return WatchListingsResponse::default();
        };
        let caller = s.caller.clone();
        for wire in add {
            let listing = match wire.validate(day) {
                Ok(l) => l,
                Err(invalid) => {
                    results.push(invalid.to_result());
                    continue;
                }
            };
            let listing = Listing {
                event_day: day,
                ..listing
            };
            let replacing = s.listings.contains_key(listing.listing_id);
            if !replacing {
                let mut count = self.per_caller.entry(caller.clone()).or_insert(0);
                if *count >= self.max_per_caller {
                    results.push(error_result(
                        listing.listing_id,
                        "add",
                        format!(
                            "this caller already watches {} listings, the limit \
                             (--watch-max-listings): remove some or watch from fewer streams",
                            *count
                        ),
                    ));
                    continue;
                }
                *count += 1;
            }
            let v = check(snapshot, &listing, &self.policy);
            let cert = CertNumber::normalize(listing.certificate_number)
                .ok()
                .map(|p| p.number.get());
            let text = [
                listing.merchant_id,
                listing.certificate_number,
                listing.model,
            ]
            .concat()
            .into_boxed_str();
            let watched = Watched {
                text,
                // Validated: both at most 128 bytes.
                merchant_len: listing.merchant_id.len() as u8,
                number_len: listing.certificate_number.len() as u8,
                product_code: listing.product_code,
                decision: v.decision,
                reason: v.reason,
                cert,
            };
            let id: Arc<str> = Arc::from(listing.listing_id);
            if let Some(old) = s.listings.insert(Arc::clone(&id), watched)
                && let Some(n) = old.cert
            {
                self.unindex(n, stream, Some(&id));
            }
            if let Some(n) = cert {
                self.by_cert
                    .entry(n)
                    .or_default()
                    .push((stream, Arc::clone(&id)));
            }
            results.push(ListingResult {
                listing_id: id.to_string(),
                outcome: Some(Outcome::Verdict(verdict_to_wire(&v))),
            });
        }
        WatchListingsResponse {
            results,
            snapshot_sequence: snapshot.sequence(),
            event: WatchEvent::Initial as i32,
        }
    }

    /// Stops watching these ids of a stream (ids not watched are ignored).
    pub(crate) fn remove(&self, stream: u64, ids: &[String]) {
        let _state = read(&self.state);
        let Some(mut s) = self.streams.get_mut(&stream) else {
            return;
        };
        let mut removed = 0;
        for id in ids {
            if let Some(w) = s.listings.remove(id.as_str()) {
                removed += 1;
                if let Some(n) = w.cert {
                    self.unindex(n, stream, Some(id));
                }
            }
        }
        let caller = s.caller.clone();
        drop(s);
        self.uncount(&caller, removed);
    }

    /// Puts `loaded` and `day` in force for the registry and re-decides the `affected`
    /// listings, sending each stream one CHANGED message (or several, each at most the batch
    /// limit) with the listings whose decision or reason changed. Returns how many changed.
    pub(crate) fn apply(&self, loaded: Arc<Loaded>, day: Day, affected: &Affected) -> usize {
        let mut state = write(&self.state);
        state.loaded = Some(Arc::clone(&loaded));
        state.day = Some(day);
        let snapshot = &loaded.snapshot;
        let mut changed: HashMap<u64, Vec<ListingResult>> = HashMap::new();
        let mut redecide = |stream: u64, id: &str, w: &mut Watched| {
            let v = check(snapshot, &w.listing(id, day), &self.policy);
            if v.decision != w.decision || v.reason != w.reason {
                w.decision = v.decision;
                w.reason = v.reason;
                changed.entry(stream).or_default().push(ListingResult {
                    listing_id: id.to_owned(),
                    outcome: Some(Outcome::Verdict(verdict_to_wire(&v))),
                });
            }
        };
        match affected {
            Affected::All => {
                for mut s in self.streams.iter_mut() {
                    let id = *s.key();
                    for (l, w) in s.listings.iter_mut() {
                        redecide(id, l, w);
                    }
                }
            }
            Affected::Certificates(numbers) => {
                for n in numbers {
                    let Some(keys) = self.by_cert.get(n) else {
                        continue;
                    };
                    for (stream, l) in keys.iter() {
                        if let Some(mut s) = self.streams.get_mut(stream)
                            && let Some(w) = s.listings.get_mut(l)
                        {
                            redecide(*stream, l, w);
                        }
                    }
                }
            }
        }
        let mut total = 0;
        for (stream, results) in changed {
            total += results.len();
            let Some(s) = self.streams.get(&stream) else {
                continue;
            };
            for chunk in results.chunks(self.max_results_per_message) {
                let msg = WatchListingsResponse {
                    results: chunk.to_vec(),
                    snapshot_sequence: snapshot.sequence(),
                    event: WatchEvent::Changed as i32,
                };
                if s.tx.try_send(Ok(msg)).is_err() {
                    // Full (the caller does not read) or gone: end it; it re-adds on reconnect.
                    s.overflowed.store(true, Ordering::Release);
                    s.kill.notify_one();
                    break;
                }
            }
        }
        total
    }
}
