//! The change feed's bounded history and the `WatchChanges` stream.
//!
//! The history holds the batches of the last `--watch-history` swaps, and the DAY batches that
//! followed each, and never more than [`MAX_HISTORY_CHANGES`] certificate changes in all: a
//! soak of full-register swaps (75k changes each) grew the gateway by 38 MiB a swap when the
//! history was bounded by swaps alone. A caller resuming from sequence `S` gets every SNAPSHOT batch with a higher
//! sequence and every DAY batch sent while `S` or later was in force (a DAY batch may come
//! twice to a caller that saw it before it disconnected: it only repeats expiries). When a
//! batch leaves the history, callers that would need it are refused with FAILED_PRECONDITION.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cccgate_proto::v1::{ChangeBatch, ChangeCause};
use futures::Stream;
use prost::Message;
use tonic::Status;

/// A BOOKMARK is sent when a stream has sent nothing for this long (the contract: at least
/// every 60 s).
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

/// Largest number of certificate changes in one `ChangeBatch` message: a swap with more is
/// sent as several messages with the same sequence, day and cause, one after the other.
pub const MAX_CHANGES_PER_MESSAGE: usize = 10_000;

/// Most certificate changes the history holds, all batches together (encoded, a couple of
/// hundred bytes each): 40 days of the largest daily deltas the feed contract describes. The
/// newest batch is always kept, whatever its size; older ones leave the history first.
pub const MAX_HISTORY_CHANGES: usize = 200_000;

/// Most bytes the history holds, all batches together, as stored (deflated): at most this
/// much memory whatever the changes' text is like (190,000 changes of the synthetic register
/// took 6.6 MiB in a soak). The newest batch is always kept, whatever its size.
pub const MAX_HISTORY_BYTES: usize = 32 << 20;

/// One swap's or one midnight's batch, as the messages it is sent in.
#[derive(Debug)]
struct Entry {
    index: u64,
    sequence: u64,
    cause: ChangeCause,
    /// Each message protobuf-encoded then deflated ([`pack`]): ~36 bytes a change of the
    /// synthetic register in one buffer, where the encoding alone kept ~240 and the decoded
    /// `ChangeBatch` ~600 in ten small allocations a change (a soak of full-register swaps
    /// kept 100-200 MB more resident with the decoded form, 34 MiB with the encoded one). A
    /// stream unpacks a message when it sends it.
    messages: Vec<Bytes>,
    /// Bytes of `messages`.
    bytes: usize,
    /// The China-time day it is for.
    day: String,
    /// Certificate changes in `messages`.
    changes: usize,
}

#[derive(Debug, Default)]
struct History {
    entries: VecDeque<Entry>,
    next_index: u64,
    /// Snapshot entries held.
    swaps: usize,
    /// Certificate changes held, all entries together.
    changes: usize,
    /// Bytes of the messages held, all entries together.
    bytes: usize,
    /// The oldest sequence a caller may resume from; `None` until a snapshot is in force.
    floor: Option<u64>,
    /// The snapshot in force and the China-time day of the last batch.
    current: Option<(u64, String)>,
}

/// One batch of the history, as the console shows it.
#[derive(Debug, Clone)]
pub struct RecentBatch {
    /// The snapshot in force after it.
    pub sequence: u64,
    /// The China-time day it is for.
    pub day: String,
    /// A swap or a midnight.
    pub cause: ChangeCause,
    /// Certificate changes in it.
    pub changes: usize,
    /// The first few of them.
    pub sample: Vec<cccgate_proto::v1::CertificateChange>,
}

/// The change feed shared by all `WatchChanges` streams.
#[derive(Debug)]
pub struct Feed {
    cap: usize,
    max_changes: usize,
    max_bytes: usize,
    history: Mutex<History>,
    appended: tokio::sync::watch::Sender<u64>,
    stopping: std::sync::atomic::AtomicBool,
}

/// A message as the history keeps it: protobuf-encoded, then deflated at the fastest level
/// (certificate changes repeat the same producers, product codes and days, and a change's
/// `before` and `after` differ in a field or two: ~36 bytes a change of the synthetic
/// register where the encoding kept ~240).
fn pack(message: &ChangeBatch) -> Bytes {
    use std::io::Write;
    let raw = message.encode_to_vec();
    let mut deflate = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(raw.len() / 4),
        flate2::Compression::fast(),
    );
    match deflate.write_all(&raw).and_then(|()| deflate.finish()) {
        Ok(packed) => Bytes::from(packed),
        // Writing into a Vec does not fail; an empty message stands in rather than a panic.
        Err(_) => Bytes::new(),
    }
}

/// A message of the history, as it was packed in [`Feed::append`].
fn decode(message: &Bytes) -> ChangeBatch {
    use std::io::Read;
    let mut raw = Vec::with_capacity(message.len() * 5);
    // The bytes are what `pack` made of a ChangeBatch: unpacking and decoding them does not
    // fail (an empty batch would stand in rather than a panic in the server).
    match flate2::read::DeflateDecoder::new(&message[..]).read_to_end(&mut raw) {
        Ok(_) => ChangeBatch::decode(&raw[..]).unwrap_or_default(),
        Err(_) => ChangeBatch::default(),
    }
}

/// Bytes held by every feed's history in this process ([`super::change_history_bytes`]).
pub(crate) static HELD_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Moves the process's count of history bytes from `was` to `now` for one feed.
fn held(was: usize, now: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    if now >= was {
        HELD_BYTES.fetch_add((now - was) as u64, Relaxed);
    } else {
        HELD_BYTES.fetch_sub((was - now) as u64, Relaxed);
    }
}

/// What the history holds, for the operators (and the soak's account of resident memory).
fn history_gauges(h: &History) {
    metrics::gauge!("cccgate_watch_history_changes").set(h.changes as f64);
    metrics::gauge!("cccgate_watch_history_bytes").set(h.bytes as f64);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Feed {
    fn drop(&mut self) {
        held(lock(&self.history).bytes, 0);
    }
}

impl Feed {
    /// A feed keeping the batches of the last `cap` swaps (at least 1), and at most
    /// [`MAX_HISTORY_CHANGES`] certificate changes in [`MAX_HISTORY_BYTES`].
    pub fn new(cap: usize) -> Feed {
        Feed::with_limits(cap, MAX_HISTORY_CHANGES, MAX_HISTORY_BYTES)
    }

    /// A feed keeping the batches of the last `cap` swaps, at most `max_changes` certificate
    /// changes and `max_bytes` bytes of packed messages (the newest batch always).
    pub fn with_limits(cap: usize, max_changes: usize, max_bytes: usize) -> Feed {
        Feed {
            cap: cap.max(1),
            max_changes,
            max_bytes,
            history: Mutex::default(),
            appended: tokio::sync::watch::Sender::new(0),
            stopping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The gateway is stopping: every stream ends (OK) once it has sent what it holds.
    pub fn shutdown(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
        self.appended.send_modify(|_| {});
    }

    /// The first snapshot put in force: no batch (there is nothing to compare it with).
    pub fn start(&self, sequence: u64, day: String) {
        let mut h = lock(&self.history);
        h.floor.get_or_insert(sequence);
        h.current = Some((sequence, day));
    }

    /// The snapshot `sequence` is in force but the feed did not see every swap before it
    /// (they outpaced the diffs): the batches between cannot be given one per snapshot, so
    /// the history is dropped and starts again at `sequence`. Streams that have not reached
    /// `sequence` end with the "fell behind" refusal, and resuming from an older sequence is
    /// refused as too old: either way the caller re-checks everything, never gets a batch
    /// that silently covers several snapshots.
    pub fn restart(&self, sequence: u64, day: String) {
        let index = {
            let mut h = lock(&self.history);
            h.entries.clear();
            h.swaps = 0;
            h.changes = 0;
            held(h.bytes, 0);
            h.bytes = 0;
            history_gauges(&h);
            // One index is skipped: every stream still waiting for it finds it gone.
            h.next_index += 1;
            h.floor = Some(h.floor.map_or(sequence, |f| f.max(sequence)));
            h.current = Some((sequence, day));
            h.next_index
        };
        metrics::counter!("cccgate_watch_history_restarts_total").increment(1);
        self.appended.send_replace(index);
    }

    /// Appends a batch (SNAPSHOT or DAY) for `sequence`, split into messages.
    pub fn append(
        &self,
        sequence: u64,
        day: String,
        cause: ChangeCause,
        changes: Vec<cccgate_proto::v1::CertificateChange>,
    ) {
        let count = changes.len();
        let mut messages = Vec::with_capacity(count / MAX_CHANGES_PER_MESSAGE + 1);
        let mut changes = changes.into_iter().peekable();
        loop {
            let chunk: Vec<_> = changes.by_ref().take(MAX_CHANGES_PER_MESSAGE).collect();
            let message = ChangeBatch {
                sequence,
                day: day.clone(),
                cause: cause as i32,
                changes: chunk,
            };
            messages.push(pack(&message));
            if changes.peek().is_none() {
                break;
            }
        }
        let bytes = messages.iter().map(Bytes::len).sum();
        let index = {
            let mut h = lock(&self.history);
            let was = h.bytes;
            let index = h.next_index;
            h.next_index += 1;
            if cause == ChangeCause::Snapshot {
                h.swaps += 1;
            }
            h.entries.push_back(Entry {
                index,
                sequence,
                cause,
                day: day.clone(),
                messages,
                bytes,
                changes: count,
            });
            h.changes += count;
            h.bytes += bytes;
            h.current = Some((sequence, day));
            while h.swaps > self.cap
                || ((h.changes > self.max_changes || h.bytes > self.max_bytes)
                    && h.entries.len() > 1)
            {
                let Some(old) = h.entries.pop_front() else {
                    break;
                };
                h.changes -= old.changes;
                h.bytes -= old.bytes;
                // A caller at `old.sequence` (DAY) or just before it (SNAPSHOT) would miss it.
                let floor = match old.cause {
                    ChangeCause::Snapshot => {
                        h.swaps -= 1;
                        old.sequence
                    }
                    _ => old.sequence + 1,
                };
                h.floor = Some(h.floor.map_or(floor, |f| f.max(floor)));
            }
            held(was, h.bytes);
            history_gauges(&h);
            index
        };
        self.appended.send_replace(index + 1);
    }

    /// Where a stream from `from_sequence` starts: the index of its first entry.
    fn start_index(&self, from_sequence: u64) -> Result<u64, Status> {
        let h = lock(&self.history);
        let (Some((current, _)), Some(floor)) = (&h.current, h.floor) else {
            return Err(Status::unavailable(
                "no snapshot is loaded yet: the change feed starts with the first one",
            ));
        };
        if from_sequence == 0 {
            return Ok(h.next_index);
        }
        if from_sequence > *current {
            return Err(Status::failed_precondition(format!(
                "from_sequence {from_sequence} is newer than the snapshot in force here ({current}): \
                 this gateway has not loaded it yet; retry later or on another replica"
            )));
        }
        if from_sequence < floor {
            metrics::counter!("cccgate_watch_resyncs_total", "rpc" => "WatchChanges").increment(1);
            return Err(Status::failed_precondition(format!(
                "from_sequence {from_sequence} is too old: this gateway's change history starts at \
                 sequence {floor} (--watch-history); re-check everything (cccgate replay) and start \
                 again from 0"
            )));
        }
        Ok(h.entries
            .iter()
            .find(|e| match e.cause {
                ChangeCause::Snapshot => e.sequence > from_sequence,
                _ => e.sequence >= from_sequence,
            })
            .map_or(h.next_index, |e| e.index))
    }

    /// The messages of every entry from `index` on, and the index after them; `None` if the
    /// entry at `index` already left the history (the stream fell too far behind).
    fn since(&self, index: u64) -> Option<(Vec<ChangeBatch>, u64)> {
        let (encoded, next): (Vec<Bytes>, u64) = {
            let h = lock(&self.history);
            let first = h.entries.front().map_or(h.next_index, |e| e.index);
            if index < first {
                return None;
            }
            let out = h
                .entries
                .iter()
                .filter(|e| e.index >= index)
                .flat_map(|e| e.messages.iter().cloned())
                .collect();
            (out, h.next_index)
        };
        // Decoded outside the lock.
        Some((encoded.iter().map(decode).collect(), next))
    }

    fn bookmark(&self) -> Option<ChangeBatch> {
        let h = lock(&self.history);
        h.current.as_ref().map(|(sequence, day)| ChangeBatch {
            sequence: *sequence,
            day: day.clone(),
            cause: ChangeCause::Bookmark as i32,
            changes: Vec::new(),
        })
    }

    /// The newest `n` batches still held, newest first, each with at most `sample` of its
    /// changes (for the operators' console).
    pub fn recent(&self, n: usize, sample: usize) -> Vec<RecentBatch> {
        let h = lock(&self.history);
        h.entries
            .iter()
            .rev()
            .take(n)
            .map(|e| RecentBatch {
                sequence: e.sequence,
                day: e.day.clone(),
                cause: e.cause,
                changes: e.changes,
                sample: e
                    .messages
                    .first()
                    .map(|m| decode(m).changes.into_iter().take(sample).collect())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Sets the day the next bookmark reports (at midnight, before any batch).
    pub fn set_day(&self, day: String) {
        if let Some((_, d)) = &mut lock(&self.history).current {
            *d = day;
        }
    }

    /// A `WatchChanges` stream from `from_sequence`: a BOOKMARK at once (the stream is live
    /// and this is where the feed stands), then the batches, with BOOKMARKs when idle.
    pub fn stream(
        self: &Arc<Self>,
        from_sequence: u64,
    ) -> Result<impl Stream<Item = Result<ChangeBatch, Status>> + Send + 'static, Status> {
        let mut rx = self.appended.subscribe();
        let start = self.start_index(from_sequence)?;
        let feed = Arc::clone(self);
        let first = feed.bookmark();
        let state = (feed, rx.clone(), start, VecDeque::from_iter(first), false);
        rx.mark_unchanged();
        Ok(futures::stream::unfold(
            state,
            |(feed, mut rx, mut next, mut queue, done)| async move {
                if done || feed.stopping.load(std::sync::atomic::Ordering::Acquire) {
                    return None;
                }
                loop {
                    if let Some(m) = queue.pop_front() {
                        return Some((Ok(m), (feed, rx, next, queue, false)));
                    }
                    match feed.since(next) {
                        None => {
                            metrics::counter!("cccgate_watch_resyncs_total", "rpc" => "WatchChanges")
                                .increment(1);
                            let status = Status::failed_precondition(
                                "this stream fell behind the change history (--watch-history): \
                                 re-check everything (cccgate replay) and start again from 0",
                            );
                            return Some((Err(status), (feed, rx, next, queue, true)));
                        }
                        Some((messages, after)) if !messages.is_empty() => {
                            next = after;
                            queue.extend(messages);
                            continue;
                        }
                        Some(_) => {}
                    }
                    match tokio::time::timeout(BOOKMARK_EVERY, rx.changed()).await {
                        Ok(Ok(())) => continue,
                        // The gateway is stopping.
                        Ok(Err(_)) => return None,
                        Err(_) => queue.extend(feed.bookmark()),
                    }
                }
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(n: u64) -> cccgate_proto::v1::CertificateChange {
        cccgate_proto::v1::CertificateChange {
            number: format!("{n:016}"),
            before: None,
            after: None,
        }
    }

    #[test]
    fn resuming_starts_after_the_callers_sequence_and_refuses_what_left_the_history() {
        let feed = Feed::new(2);
        feed.start(10, "2026-11-28".into());
        feed.append(
            11,
            "2026-11-28".into(),
            ChangeCause::Snapshot,
            vec![change(1)],
        );
        feed.append(11, "2026-11-29".into(), ChangeCause::Day, vec![change(2)]);
        feed.append(
            12,
            "2026-11-29".into(),
            ChangeCause::Snapshot,
            vec![change(3)],
        );
        // From 10: everything; from 11: the DAY batch at 11 and the swap to 12.
        assert_eq!(feed.start_index(10).unwrap(), 0);
        assert_eq!(feed.start_index(11).unwrap(), 1);
        assert_eq!(feed.start_index(12).unwrap(), 3);
        assert_eq!(feed.start_index(0).unwrap(), 3);
        assert_eq!(
            feed.start_index(13).unwrap_err().code(),
            tonic::Code::FailedPrecondition
        );
        // A third swap pushes out the first: 10 is too old; 11 still has its DAY batch.
        feed.append(13, "2026-11-29".into(), ChangeCause::Snapshot, vec![]);
        let e = feed.start_index(10).unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("re-check everything"),
            "{}",
            e.message()
        );
        assert_eq!(feed.start_index(11).unwrap(), 1);
        // A fourth pushes out the DAY batch at 11 with the swap to 12: 11 is too old now.
        feed.append(14, "2026-11-29".into(), ChangeCause::Snapshot, vec![]);
        assert!(feed.start_index(11).is_err());
        assert_eq!(feed.start_index(12).unwrap(), 3);
        assert!(feed.since(0).is_none());
        let (msgs, next) = feed.since(3).unwrap();
        assert_eq!(
            msgs.iter().map(|m| m.sequence).collect::<Vec<_>>(),
            [13, 14]
        );
        assert_eq!(next, 5);
    }

    #[test]
    fn a_restart_refuses_callers_behind_it_and_serves_those_after_it() {
        let feed = Arc::new(Feed::new(10));
        feed.start(1, "2026-11-29".into());
        feed.append(
            2,
            "2026-11-29".into(),
            ChangeCause::Snapshot,
            vec![change(1)],
        );
        // A live stream caught up at sequence 2, and one that has not read batch 2 yet.
        let caught_up = feed.start_index(2).unwrap();
        let behind = feed.start_index(1).unwrap();
        assert!(feed.since(caught_up).is_some());
        // Swaps 3..=5 were never diffed one by one; 6 is in force.
        feed.restart(6, "2026-11-29".into());
        assert!(
            feed.since(caught_up).is_none(),
            "a stream before the gap must resync"
        );
        assert!(feed.since(behind).is_none());
        for old in [1, 2, 5] {
            let err = feed.start_index(old).unwrap_err();
            assert_eq!(err.code(), tonic::Code::FailedPrecondition, "from {old}");
            assert!(err.message().contains("too old"), "{}", err.message());
        }
        // From the snapshot in force, or from now: the next swap's batch, nothing older.
        let at = feed.start_index(6).unwrap();
        assert_eq!(feed.start_index(0).unwrap(), at);
        feed.append(
            7,
            "2026-11-29".into(),
            ChangeCause::Snapshot,
            vec![change(7)],
        );
        let (messages, _) = feed.since(at).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].sequence, 7);
    }

    #[test]
    fn a_large_batch_is_split_into_messages_of_the_same_sequence() {
        let feed = Feed::new(4);
        feed.start(1, "2026-11-28".into());
        let n = MAX_CHANGES_PER_MESSAGE as u64 * 2 + 1;
        feed.append(
            2,
            "2026-11-28".into(),
            ChangeCause::Snapshot,
            (0..n).map(change).collect(),
        );
        let (msgs, _) = feed.since(0).unwrap();
        assert_eq!(msgs.len(), 3);
        assert!(msgs.iter().all(|m| m.sequence == 2));
        assert_eq!(msgs.iter().map(|m| m.changes.len() as u64).sum::<u64>(), n);
    }

    #[test]
    fn the_history_holds_a_bounded_number_of_changes_and_always_the_newest_batch() {
        let feed = Feed::with_limits(1_000, 5, usize::MAX);
        feed.start(1, "2026-11-28".into());
        feed.append(
            2,
            "2026-11-28".into(),
            ChangeCause::Snapshot,
            (0..3).map(change).collect(),
        );
        feed.append(
            3,
            "2026-11-28".into(),
            ChangeCause::Snapshot,
            (3..6).map(change).collect(),
        );
        // 6 changes held > 5: the swap to 2 left; a caller at 1 must re-check everything.
        assert_eq!(lock(&feed.history).changes, 3);
        assert_eq!(
            feed.start_index(1).unwrap_err().code(),
            tonic::Code::FailedPrecondition
        );
        assert!(feed.start_index(2).is_ok());
        // A batch larger than the whole bound is still kept (the newest always is).
        feed.append(
            4,
            "2026-11-28".into(),
            ChangeCause::Snapshot,
            (6..20).map(change).collect(),
        );
        assert_eq!(lock(&feed.history).changes, 14);
        assert_eq!(lock(&feed.history).entries.len(), 1);
        assert!(feed.start_index(2).is_err());
        let (msgs, _) = feed.since(feed.start_index(3).unwrap()).unwrap();
        assert_eq!(msgs.iter().map(|m| m.changes.len()).sum::<usize>(), 14);
    }

    fn revocation(n: u64) -> cccgate_proto::v1::CertificateChange {
        let cert = |status: i32| cccgate_proto::v1::Certificate {
            number: format!("{n:016}"),
            status,
            product_code: format!("{:04}", 700 + n % 40),
            producer: format!("Shenzhen {} Electrical Appliance Co., Ltd.", n % 97),
            expiry_date: format!("2027-{:02}-{:02}", 1 + n % 12, 1 + n % 28),
        };
        cccgate_proto::v1::CertificateChange {
            number: format!("{n:016}"),
            before: Some(cert(1)),
            after: Some(cert(4)),
        }
    }

    #[test]
    fn the_history_is_packed_and_bounded_in_bytes_and_gives_back_every_change() {
        // Unbounded in changes: only the bytes limit the history here.
        let feed = Feed::with_limits(1_000, usize::MAX, 64 << 10);
        feed.start(1, "2026-11-28".into());
        let batch: Vec<_> = (0..2_000).map(revocation).collect();
        let raw: usize = ChangeBatch {
            changes: batch.clone(),
            ..Default::default()
        }
        .encoded_len();
        feed.append(2, "2026-11-28".into(), ChangeCause::Snapshot, batch.clone());
        let held = lock(&feed.history).bytes;
        // Packed: well under the encoding's size, and what was appended comes back intact.
        assert!(held * 3 < raw, "{held} bytes packed of {raw}");
        let (msgs, _) = feed.since(0).unwrap();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].changes, batch);
        assert_eq!(msgs[0].sequence, 2);
        // Swaps until the bytes exceed the bound: the oldest leave, the bytes stay bounded,
        // and a caller from before them is refused (re-check everything).
        for sequence in 3..40 {
            feed.append(
                sequence,
                "2026-11-28".into(),
                ChangeCause::Snapshot,
                batch.clone(),
            );
            let h = lock(&feed.history);
            assert!(
                h.bytes <= 64 << 10 || h.entries.len() == 1,
                "{} bytes",
                h.bytes
            );
            assert_eq!(h.bytes, h.entries.iter().map(|e| e.bytes).sum::<usize>());
        }
        let entries = lock(&feed.history).entries.len();
        assert!(entries < 37, "{entries} batches held");
        assert_eq!(
            feed.start_index(2).unwrap_err().code(),
            tonic::Code::FailedPrecondition
        );
        assert!(feed.start_index(38).is_ok());
    }
}
