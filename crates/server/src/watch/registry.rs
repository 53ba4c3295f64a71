//! Watched listings: one registry shared by every `WatchListings` stream.
//!
//! - `streams` (dashmap: streams open and end concurrently): per stream, its caller, the
//!   sender of its responses and its listings, packed ([`Listings`]: a 32-byte slot, the text
//!   in an arena, an id index and a certificate index of `u32` slots) behind the stream's own
//!   mutex. Adds and removes of one stream are answered in order by one task, so that mutex
//!   is contended only by a swap's pass; streams do not contend with each other.
//! - `state` (a read-write lock around the snapshot and day the registry decides with): adds
//!   and removes take it shared, a swap or a midnight takes it exclusively only to put the
//!   new snapshot in, so an add never decides with a snapshot a CHANGED pass has already left
//!   behind. The pass itself then holds each stream's own lock in turn, never the registry's:
//!   an add to a stream the pass has not reached decides with the new snapshot (and the pass
//!   then finds nothing changed for it); an add to the stream being passed waits for it, and
//!   its INITIAL answer follows that pass's CHANGED messages.
//!
//! A swap re-decides, in each stream, only the listings citing a changed certificate, on
//! every core when there are many, and writes the CHANGED messages' protobuf bytes directly
//! ([`Encoded`]), at most `--max-batch` results each. Memory per watched listing is measured in
//! `benches/README.md`.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cccgate_snapshot::Snapshot;

use cccgate_core::{Day, Listing, Policy, Register, check, check_found};
use cccgate_proto::v1::listing_result::Outcome;
use cccgate_proto::v1::{
    Listing as WireListing, ListingError, ListingResult, WatchEvent, WatchListingsResponse,
};
use cccgate_proto::verdict_to_wire;
use dashmap::DashMap;
use tokio::sync::{Notify, mpsc};
use tonic::Status;

use super::listings::{Cited, Inserted, Listings, verdict_code};
use crate::admission::Caller;
use crate::answer::{Encoded, certificate_body};
use crate::store::Loaded;
use crate::wire::Shape;

/// One `WatchListingsResponse` to send: built (INITIAL answers, errors), or already encoded
/// (a pass's CHANGED messages, written by [`Encoded`]).
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// A message for prost to encode.
    Message(WatchListingsResponse),
    /// The message's protobuf bytes.
    Encoded(Bytes),
}

impl From<WatchListingsResponse> for Outgoing {
    fn from(m: WatchListingsResponse) -> Self {
        Outgoing::Message(m)
    }
}

/// A stream's responses: bounded; a stream that does not read its CHANGED results is ended.
pub(crate) type Responses = mpsc::Sender<Result<Outgoing, Status>>;

/// How far ahead a pass asks for the slots it will re-decide.
const PREFETCH_AHEAD: usize = 16;

/// Listings to re-decide in one stream below which a pass stays on one thread.
const PARALLEL_FROM: usize = 8_192;

/// What a pass did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pass {
    /// Listings re-decided.
    pub decided: usize,
    /// Of them, whose verdict changed (each sent once, event CHANGED).
    pub changed: usize,
    /// Time spent finding, deciding and encoding them (without sending).
    pub decide: Duration,
}

/// One thread's share of a stream's pass: the slots whose verdict changed, with their new
/// code (their CHANGED messages are sent as each is written).
#[derive(Default)]
struct Decided {
    changed: Vec<(u32, u8)>,
    /// Listings re-decided.
    decided: usize,
}

/// Results per CHANGED message (at most `--max-batch`): small enough that the first messages
/// leave, and the caller decodes them, while the pass is still deciding the rest, so the last
/// CHANGED arrives about one small message after the pass ends.
const CHANGED_PER_MESSAGE: usize = 2_048;

/// How many response messages a stream may leave unread before it is ended with
/// RESOURCE_EXHAUSTED (it should reconnect and add its listings again).
pub(crate) const STREAM_QUEUE: usize = 64;

#[derive(Debug)]
struct Stream {
    caller: Caller,
    /// The caller asked for lean answers (`cccgate-answer: lean`): no certificate.
    lean: bool,
    listings: Mutex<Listings>,
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
    streams: DashMap<u64, Arc<Stream>>,
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
            per_caller: DashMap::new(),
            next_stream: AtomicU64::new(1),
            policy,
            max_per_caller,
            max_results_per_message: max_results.max(1),
        })
    }

    /// Opens a stream for `caller`, answering on `tx` (`lean`: verdicts without their
    /// certificate).
    pub(crate) fn open(
        self: &Arc<Self>,
        caller: Caller,
        tx: Responses,
        lean: bool,
    ) -> StreamHandle {
        let id = self.next_stream.fetch_add(1, Ordering::Relaxed);
        let kill = Arc::new(Notify::new());
        let overflowed = Arc::new(AtomicBool::new(false));
        self.streams.insert(
            id,
            Arc::new(Stream {
                caller,
                lean,
                listings: Mutex::default(),
                tx,
                overflowed: Arc::clone(&overflowed),
                kill: Arc::clone(&kill),
            }),
        );
        metrics::gauge!("cccgate_watch_streams_open").increment(1.0);
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
        if let Some((_, stream)) = self.streams.remove(&id) {
            metrics::gauge!("cccgate_watch_streams_open").decrement(1.0);
            if stream.overflowed.load(Ordering::Acquire) {
                metrics::counter!("cccgate_watch_resyncs_total", "rpc" => "WatchListings")
                    .increment(1);
            }
            let n = lock(&stream.listings).len();
            self.uncount(&stream.caller, n);
        }
    }

    fn uncount(&self, caller: &Caller, n: usize) {
        if n == 0 {
            return;
        }
        watched_gauge(caller).decrement(n as f64);
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

    fn stream(&self, id: u64) -> Option<Arc<Stream>> {
        self.streams.get(&id).map(|s| Arc::clone(&s))
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
        let Some(s) = self.stream(stream) else {
            return WatchListingsResponse::default();
        };
        let mut listings = lock(&s.listings);
        let mut added = 0usize;
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
            if !listings.contains(listing.listing_id) {
                let mut count = self.per_caller.entry(s.caller.clone()).or_insert(0);
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
            if listings.insert(&listing, verdict_code(v.decision, v.reason)) == Inserted::New {
                added += 1;
            }
            let mut verdict = verdict_to_wire(&v);
            if s.lean {
                verdict.certificate = None;
            }
            results.push(ListingResult {
                listing_id: listing.listing_id.to_owned(),
                outcome: Some(Outcome::Verdict(verdict)),
            });
        }
        drop(listings);
        if added > 0 {
            watched_gauge(&s.caller).increment(added as f64);
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
        let Some(s) = self.stream(stream) else {
            return;
        };
        let mut listings = lock(&s.listings);
        let removed = ids.iter().filter(|id| listings.remove(id)).count();
        drop(listings);
        self.uncount(&s.caller, removed);
    }

    /// Puts `loaded` and `day` in force for the registry and re-decides the `affected`
    /// listings, sending each stream the CHANGED messages (each at most the batch limit) with
    /// the listings whose decision or reason changed.
    pub(crate) fn apply(&self, loaded: Arc<Loaded>, day: Day, affected: &Affected) -> Pass {
        {
            let mut state = write(&self.state);
            state.loaded = Some(Arc::clone(&loaded));
            state.day = Some(day);
        }
        let snapshot = &loaded.snapshot;
        let mut pass = Pass::default();
        if matches!(affected, Affected::Certificates(n) if n.is_empty()) {
            return pass;
        }
        let streams: Vec<Arc<Stream>> = self.streams.iter().map(|s| Arc::clone(&s)).collect();
        let mut set: Option<Arc<HashSet<u64>>> = None;
        for s in streams {
            let t = Instant::now();
            let mut listings = lock(&s.listings);
            // Each CHANGED message is sent as soon as it is written, while the stream's lock
            // is held: an add waiting for it answers after the pass's last one.
            let send = |msg| {
                if s.overflowed.load(Ordering::Acquire) {
                    return;
                }
                if s.tx.try_send(Ok(Outgoing::Encoded(msg))).is_err() {
                    // Full (the caller does not read) or gone: end it; it re-adds on
                    // reconnect.
                    s.overflowed.store(true, Ordering::Release);
                    s.kill.notify_one();
                }
            };
            let parts = match affected {
                Affected::All => {
                    let cited = Cited::ungrouped(listings.all());
                    self.decide(&listings, &cited, snapshot, day, s.lean, &send)
                }
                // The stream cites at least as many certificates as changed: their chains
                // are walked, a few at a time on each thread.
                Affected::Certificates(numbers) if numbers.len() <= listings.certificates() => {
                    self.decide_numbers(&listings, numbers, snapshot, day, s.lean, &send)
                }
                // Fewer: its own certificates are looked up among the changed ones.
                Affected::Certificates(numbers) => {
                    let cited = listings.citing(numbers, &mut || {
                        Arc::clone(
                            set.get_or_insert_with(|| Arc::new(numbers.iter().copied().collect())),
                        )
                    });
                    self.decide(&listings, &cited, snapshot, day, s.lean, &send)
                }
            };
            for part in &parts {
                pass.changed += part.changed.len();
                pass.decided += part.decided;
                for &(at, code) in &part.changed {
                    listings.set_verdict(at, code);
                }
            }
            pass.decide += t.elapsed();
            drop(listings);
        }
        metrics::counter!("cccgate_watch_changed_verdicts_total").increment(pass.changed as u64);
        pass
    }

    /// Waits, at most `max`, until every stream's connection has taken the responses queued
    /// for it (a pass's CHANGED messages are on their way to the caller), so that what
    /// follows a pass (the old snapshot freed, the heap trimmed) does not compete with
    /// sending them. Returns how long it waited.
    pub(crate) fn wait_sent(&self, max: Duration) -> Duration {
        let t = Instant::now();
        let streams: Vec<Arc<Stream>> = self.streams.iter().map(|s| Arc::clone(&s)).collect();
        for s in streams {
            while s.tx.capacity() < s.tx.max_capacity()
                && !s.tx.is_closed()
                && !s.overflowed.load(Ordering::Acquire)
                && t.elapsed() < max
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        t.elapsed()
    }

    /// Re-decides the `cited` slots of `listings`, on several threads when there are many,
    /// giving each CHANGED message to `send` as soon as it is written.
    fn decide(
        &self,
        listings: &Listings,
        cited: &Cited,
        snapshot: &Snapshot,
        day: Day,
        lean: bool,
        send: &(dyn Fn(Bytes) + Sync),
    ) -> Vec<Decided> {
        let n = cited.slots.len();
        let share = || Share::new(self, listings, snapshot, day, lean, send, n);
        let threads = threads_for(n);
        if threads <= 1 {
            let mut one = share();
            one.decide(cited, 0..n);
            return vec![one.finish()];
        }
        let per = n.div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (per..n)
                .step_by(per)
                .map(|start| {
                    scope.spawn(move || {
                        let mut s = share();
                        s.decide(cited, start..(start + per).min(n));
                        s.finish()
                    })
                })
                .collect();
            // This thread takes the first share itself.
            let mut first = share();
            first.decide(cited, 0..per);
            let mut out = vec![first.finish()];
            out.extend(handles.into_iter().map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }));
            out
        })
    }

    /// Re-decides the listings of `listings` citing `numbers` (at most as many as the
    /// certificates it cites), the numbers shared out between threads when the listings to
    /// decide are many: each thread walks the chains of a few of its numbers
    /// ([`CITE_CHUNK`]), decides them while their slots are in cache, and goes on, so the
    /// first CHANGED message leaves after a few thousand listings, not after every chain was
    /// walked.
    fn decide_numbers(
        &self,
        listings: &Listings,
        numbers: &[u64],
        snapshot: &Snapshot,
        day: Day,
        lean: bool,
        send: &(dyn Fn(Bytes) + Sync),
    ) -> Vec<Decided> {
        // The listings to decide, if every certificate is cited as often as the average.
        let expected = numbers.len() * listings.len() / listings.certificates().max(1);
        let share = |numbers: &[u64]| {
            let mut s = Share::new(self, listings, snapshot, day, lean, send, expected);
            for chunk in numbers.chunks(CITE_CHUNK) {
                let cited =
                    listings.citing(chunk, &mut || Arc::new(chunk.iter().copied().collect()));
                s.decide(&cited, 0..cited.slots.len());
            }
            s.finish()
        };
        let threads = threads_for(expected).min(numbers.len());
        if threads <= 1 {
            return vec![share(numbers)];
        }
        let per = numbers.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = numbers
                .chunks(per)
                .skip(1)
                .map(|part| scope.spawn(move || share(part)))
                .collect();
            let mut out = vec![share(&numbers[..per])];
            out.extend(handles.into_iter().map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            }));
            out
        })
    }
}

/// Threads for a pass of `n` listings: one below [`PARALLEL_FROM`], else every core.
fn threads_for(n: usize) -> usize {
    if n < PARALLEL_FROM {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, std::num::NonZero::get)
            .min(n / (PARALLEL_FROM / 2))
    }
}

/// Changed certificates whose chains a thread walks before deciding their listings.
const CITE_CHUNK: usize = 128;

/// One thread's share of a pass being written: its CHANGED message in progress (sent when
/// full), the certificate's wire fields for the run being decided, what it changed.
struct Share<'a> {
    registry: &'a Registry,
    listings: &'a Listings,
    snapshot: &'a Snapshot,
    day: Day,
    lean: bool,
    send: &'a (dyn Fn(Bytes) + Sync),
    max: usize,
    /// About how many listings the share decides (room for a small pass's one message).
    hint: usize,
    message: Option<(Encoded, usize)>,
    body: Vec<u8>,
    out: Decided,
}

impl<'a> Share<'a> {
    #[allow(clippy::too_many_arguments)] // what every share of a pass decides with
    fn new(
        registry: &'a Registry,
        listings: &'a Listings,
        snapshot: &'a Snapshot,
        day: Day,
        lean: bool,
        send: &'a (dyn Fn(Bytes) + Sync),
        hint: usize,
    ) -> Self {
        Share {
            hint,
            registry,
            listings,
            snapshot,
            day,
            lean,
            send,
            max: registry.max_results_per_message.min(CHANGED_PER_MESSAGE),
            message: None,
            body: Vec::with_capacity(128),
            out: Decided::default(),
        }
    }

    /// Re-decides `cited.slots[part]`. The listings citing one certificate come together:
    /// the certificate is looked up once for all of them ([`check_found`]), and, for full
    /// answers, its wire fields written once and copied into each CHANGED verdict.
    fn decide(&mut self, cited: &Cited, part: std::ops::Range<usize>) {
        let (listings, snapshot, policy) = (self.listings, self.snapshot, &self.registry.policy);
        let sequence = snapshot.sequence();
        let slots = &cited.slots[part.clone()];
        self.out.decided += slots.len();
        // The slots are scattered over the stream's table and arena: each is asked for
        // PREFETCH_AHEAD places ahead, its text half as far ahead (once the slot is there).
        for &at in slots.iter().take(PREFETCH_AHEAD) {
            listings.prefetch_slot(at);
        }
        let mut runs = cited.runs(part.clone()).peekable();
        while let Some((start, end, number)) = runs.next() {
            // The next run's certificate is fetched while this one is decided.
            if let Some(&(_, _, Some(next))) = runs.peek() {
                snapshot.prefetch(next);
            }
            let found = number.and_then(|n| snapshot.find(n));
            let mut body_for_run = false;
            for i in start - part.start..end - part.start {
                let at = slots[i];
                if let Some(&ahead) = slots.get(i + PREFETCH_AHEAD) {
                    listings.prefetch_slot(ahead);
                }
                if let Some(&half) = slots.get(i + PREFETCH_AHEAD / 2) {
                    listings.prefetch_text(half);
                }
                let mut digits = [0u8; 16];
                let r = listings.listing(at, self.day, &mut digits);
                let v = match number {
                    Some(n) => check_found(snapshot, &r.listing, policy, n, found),
                    None => check(snapshot, &r.listing, policy),
                };
                let code = verdict_code(v.decision, v.reason);
                if code == r.verdict {
                    continue;
                }
                self.out.changed.push((at, code));
                let (lean, max, room) = (self.lean, self.max, self.max.min(self.hint.max(1)));
                let (m, k) = self
                    .message
                    .get_or_insert_with(|| (Encoded::new(Shape::Batch, lean, room), 0));
                match (&v.certificate, number) {
                    // Every verdict of the run that reports a certificate reports `found`.
                    (Some(c), Some(_)) if !lean => {
                        if !body_for_run {
                            certificate_body(c, &mut self.body);
                            body_for_run = true;
                        }
                        m.verdict_prepared(r.listing.listing_id, &v, &self.body);
                    }
                    _ => m.verdict(r.listing.listing_id, &v),
                }
                *k += 1;
                if *k == max
                    && let Some((m, _)) = self.message.take()
                {
                    (self.send)(m.finish_watch(sequence, WatchEvent::Changed as i32));
                }
            }
        }
    }

    /// Sends the message in progress, if any.
    fn finish(mut self) -> Decided {
        if let Some((m, _)) = self.message.take() {
            (self.send)(m.finish_watch(self.snapshot.sequence(), WatchEvent::Changed as i32));
        }
        self.out
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Listings watched by a caller, all streams and (in tests) all gateways of the process.
fn watched_gauge(caller: &Caller) -> metrics::Gauge {
    metrics::gauge!("cccgate_watched_listings", "caller" => caller.to_string())
}
