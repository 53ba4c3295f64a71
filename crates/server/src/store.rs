//! The snapshot in force, shared between the reload path (one writer) and the services (many
//! readers).
//!
//! # Design
//!
//! An `ArcSwapOption<Loaded>` behind two handles, in the style of tonic-health's reporter and
//! service: [`SnapshotWriter`] is owned by the reload path and is the only way to swap;
//! [`SnapshotReader`] is cloned into every service and can only load. A swap is one atomic
//! pointer store: a check that loaded the old snapshot finishes on it (it stays alive while
//! any request holds it), the next load sees the new one, and no answer can mix the two.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use arc_swap::Guard;
use cccgate_snapshot::Snapshot;

/// A snapshot in force, with where it came from and when it was put in force.
#[derive(Debug)]
pub struct Loaded {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// A file path, or `embedded sample`.
    pub origin: String,
    /// When it was swapped in, Unix milliseconds.
    pub loaded_at_unix_ms: i64,
    /// Built here from a delta drop: what the drop's rows touched, so the change feed need
    /// not diff the whole register (`None`: a snapshot file, or a full drop).
    pub delta: Option<DeltaRows>,
}

/// The rows of the delta drop a snapshot was built from, on the snapshot it was applied on.
#[derive(Debug)]
pub struct DeltaRows {
    /// The sequence of the snapshot the delta was applied on.
    pub base_sequence: u64,
    /// Its content id (a base rebuilt under the same sequence is another snapshot).
    pub base_content_id: String,
    /// The certificate numbers the delta's rows wrote, sorted, each once.
    pub numbers: Vec<u64>,
}

impl DeltaRows {
    /// Whether these rows were applied on `base`: then no certificate outside `numbers`
    /// differs between `base` and the snapshot they built.
    pub fn applied_on(&self, base: &Snapshot) -> bool {
        self.base_sequence == base.sequence() && self.base_content_id == base.content_id()
    }
}

/// Creates an empty store: the writer for the reload path, a reader for the services.
pub fn snapshot_store() -> (SnapshotWriter, SnapshotReader) {
    let cell = Arc::new(ArcSwapOption::empty());
    (
        SnapshotWriter {
            cell: Arc::clone(&cell),
            swaps: None,
        },
        SnapshotReader(cell),
    )
}

/// The only handle that can swap the snapshot in force. Not `Clone`: one reload path.
#[derive(Debug)]
pub struct SnapshotWriter {
    cell: Arc<ArcSwapOption<Loaded>>,
    /// Holds the newest snapshot put in force for the change feed's input ([`Swaps`]).
    /// Numbered by a count of swaps, so the follower knows how many it did not see.
    swaps: Option<tokio::sync::watch::Sender<Numbered>>,
}

/// The newest snapshot put in force and how many swaps there have been (none before the first).
type Numbered = Option<(u64, Arc<Loaded>)>;

/// The snapshots put in force, as the change feed follows them: bounded to one. A swap that
/// lands before the follower took the previous one replaces it (coalesces), so swaps that
/// outpace the diffs never queue whole snapshots. The follower learns how many swaps it did
/// not see ([`Swap::skipped`]): the change feed then cannot give one batch per snapshot, as
/// its contract says, and treats the skipped ones as history it no longer holds.
#[derive(Debug)]
pub struct Swaps {
    rx: tokio::sync::watch::Receiver<Numbered>,
    /// The swap count of the last snapshot taken.
    taken: u64,
}

/// One snapshot taken by the follower of [`Swaps`].
#[derive(Debug)]
pub struct Swap {
    /// The newest snapshot put in force.
    pub loaded: Arc<Loaded>,
    /// Snapshots put in force (and already replaced) since the previous one taken, which the
    /// follower never saw.
    pub skipped: u64,
}

impl Swaps {
    /// The newest snapshot put in force since the last call, waiting for one; `None` once the
    /// writer is gone (and nothing new is left to take).
    pub async fn recv(&mut self) -> Option<Swap> {
        loop {
            self.rx.changed().await.ok()?;
            if let Some((count, loaded)) = self.rx.borrow_and_update().clone() {
                let skipped = count.saturating_sub(self.taken + 1);
                self.taken = count;
                return Some(Swap { loaded, skipped });
            }
        }
    }
}

impl SnapshotWriter {
    /// Puts `loaded` in force and returns the snapshot it replaced.
    pub fn swap(&self, loaded: Loaded) -> Option<Arc<Loaded>> {
        let loaded = Arc::new(loaded);
        let old = self.cell.swap(Some(Arc::clone(&loaded)));
        if let Some(tx) = &self.swaps {
            // Replaces a snapshot the follower has not taken yet (it is dropped here, unless
            // the follower or a request still holds it). No receiver: nobody needs to know.
            tx.send_modify(|slot| {
                let count = slot.as_ref().map_or(0, |(n, _)| *n) + 1;
                *slot = Some((count, loaded));
            });
        }
        old
    }

    /// From now on, every snapshot put in force is also given to the [`Swaps`] returned,
    /// newest first (the change feed and watched listings follow swaps with it).
    pub fn notify_swaps(&mut self) -> Swaps {
        let (tx, rx) = tokio::sync::watch::channel(None);
        self.swaps = Some(tx);
        Swaps { rx, taken: 0 }
    }

    /// A reader of this store.
    pub fn reader(&self) -> SnapshotReader {
        SnapshotReader(Arc::clone(&self.cell))
    }

    /// The snapshot in force (for the reload path, which compares sequences).
    pub fn current(&self) -> Option<Arc<Loaded>> {
        self.cell.load_full()
    }
}

/// A read-only handle to the snapshot in force. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SnapshotReader(Arc<ArcSwapOption<Loaded>>);

impl SnapshotReader {
    /// The snapshot in force, for the duration of one synchronous piece of work (a request or
    /// a stream chunk): no reference count is touched on this path. Do not hold it across
    /// `.await`; use [`SnapshotReader::load_full`] for that.
    #[inline]
    pub fn load(&self) -> Guard<Option<Arc<Loaded>>> {
        let guard = self.0.load();
        #[cfg(feature = "test-hooks")]
        if let Some(next) = test_hooks::after_load() {
            self.0.store(Some(Arc::new(next)));
        }
        guard
    }

    /// The snapshot in force as an owned `Arc`, to hold across `.await` points.
    pub fn load_full(&self) -> Option<Arc<Loaded>> {
        self.0.load_full()
    }

    /// The sequence in force, if any.
    pub fn sequence(&self) -> Option<u64> {
        self.0.load().as_ref().map(|l| l.snapshot.sequence())
    }
}

/// Hooks for the end-to-end tests, compiled only with the `test-hooks` feature (enabled by the
/// root package's dev-dependencies, never by the binary's release build).
#[cfg(feature = "test-hooks")]
pub mod test_hooks {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Mutex, PoisonError};

    use super::Loaded;

    /// Run by [`super::SnapshotReader::load`] right after a request (or stream message) took
    /// the snapshot in force and before it decides anything. A snapshot it returns is put in
    /// force at once: a swap that lands inside that request, on purpose.
    pub type AfterLoad = Box<dyn FnMut() -> Option<Loaded> + Send>;

    static INSTALLED: AtomicBool = AtomicBool::new(false);
    static AFTER_LOAD: Mutex<Option<AfterLoad>> = Mutex::new(None);

    /// Installs (or with `None` removes) the hook, for every gateway of the process.
    pub fn set_after_load(hook: Option<AfterLoad>) {
        let mut slot = AFTER_LOAD.lock().unwrap_or_else(PoisonError::into_inner);
        INSTALLED.store(hook.is_some(), Ordering::Release);
        *slot = hook;
    }

    pub(super) fn after_load() -> Option<Loaded> {
        if !INSTALLED.load(Ordering::Acquire) {
            return None;
        }
        AFTER_LOAD
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
            .and_then(|hook| hook())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use cccgate_core::{Catalogue, CatalogueEntry, ConformityMode, Day, ProductCode};
    use cccgate_snapshot::{BuildInfo, SnapshotBuilder};

    use super::*;

    fn snapshot(sequence: u64) -> Snapshot {
        let code = ProductCode::new(901).unwrap();
        let catalogue = Catalogue::new(vec![CatalogueEntry {
            code,
            name: "微型计算机".into(),
            category_code: code.category(),
            category_name: "信息技术设备".into(),
            mode: ConformityMode::Certificate,
            from: Day::from_ymd(2002, 5, 1).unwrap(),
            until: None,
        }])
        .unwrap();
        let info = BuildInfo {
            sequence,
            source: "test".into(),
            generated_at: "2026-11-27T02:00:00+08:00".into(),
            built_at_unix_ms: 0,
        };
        Snapshot::from_bytes(SnapshotBuilder::new(info, catalogue).build().unwrap()).unwrap()
    }

    /// A snapshot of no certificate with `sequence`, as put in force (for other modules' tests).
    pub(crate) fn loaded(sequence: u64) -> Loaded {
        Loaded {
            snapshot: snapshot(sequence),
            origin: "test".into(),
            loaded_at_unix_ms: 0,
            delta: None,
        }
    }

    #[test]
    fn delta_rows_count_only_on_the_exact_snapshot_they_were_applied_on() {
        let base = snapshot(1);
        let rows = DeltaRows {
            base_sequence: 1,
            base_content_id: base.content_id().to_owned(),
            numbers: vec![2021010901000001],
        };
        assert!(rows.applied_on(&base));
        // Another sequence, or the same sequence with other content: the feed diffs instead.
        assert!(!rows.applied_on(&snapshot(2)));
        let other = DeltaRows {
            base_content_id: "0".repeat(32),
            ..rows
        };
        assert!(!other.applied_on(&base));
    }

    #[test]
    fn readers_see_nothing_until_the_writer_swaps() {
        let (writer, reader) = snapshot_store();
        assert!(reader.load().is_none());
        assert_eq!(writer.swap(loaded(1)).map(|l| l.snapshot.sequence()), None);
        assert_eq!(reader.sequence(), Some(1));
        assert_eq!(writer.reader().sequence(), Some(1));
    }

    #[tokio::test]
    async fn swaps_the_follower_has_not_taken_coalesce_into_the_newest() {
        let (mut writer, _reader) = snapshot_store();
        let mut swaps = writer.notify_swaps();
        writer.swap(loaded(1));
        let first = swaps.recv().await.expect("the first");
        assert_eq!((first.loaded.snapshot.sequence(), first.skipped), (1, 0));
        drop(first);
        // 100 swaps while the follower is busy: it is left holding only the newest.
        let mut replaced = Vec::new();
        for s in 2..=101 {
            if let Some(old) = writer.swap(loaded(s)) {
                replaced.push(Arc::downgrade(&old));
            }
        }
        assert_eq!(replaced.len(), 100);
        // Every replaced snapshot is freed: none is queued for the follower.
        assert!(replaced.iter().all(|w| w.upgrade().is_none()));
        let next = swaps.recv().await.expect("the newest");
        // ... and told that it never saw the 99 in between.
        assert_eq!((next.loaded.snapshot.sequence(), next.skipped), (101, 99));
        writer.swap(loaded(102));
        let after = swaps.recv().await.expect("the next");
        assert_eq!((after.loaded.snapshot.sequence(), after.skipped), (102, 0));
        // Nothing else is pending; once the writer goes, the follower ends.
        drop(writer);
        assert!(swaps.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_swap_made_just_before_the_writer_goes_is_still_taken() {
        let (mut writer, _reader) = snapshot_store();
        let mut swaps = writer.notify_swaps();
        writer.swap(loaded(7));
        drop(writer);
        assert_eq!(
            swaps.recv().await.map(|s| s.loaded.snapshot.sequence()),
            Some(7)
        );
        assert!(swaps.recv().await.is_none());
    }

    #[test]
    fn a_held_snapshot_survives_a_swap() {
        let (writer, reader) = snapshot_store();
        writer.swap(loaded(1));
        let held = reader.load_full().unwrap();
        let old = writer.swap(loaded(2)).unwrap();
        assert_eq!(held.snapshot.sequence(), 1);
        assert!(Arc::ptr_eq(&held, &old));
        assert_eq!(reader.sequence(), Some(2));
    }
}
