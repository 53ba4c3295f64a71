//! The reload path: finds newer snapshots (and feed drops) and puts them in force.
//!
//! # Design
//!
//! One [`Reloader`] owns the [`SnapshotWriter`]. Every trigger (start-up, file-system event,
//! polling tick, SIGHUP, `Admin.Reload`) runs the same pass, one at a time:
//!
//! 1. Snapshot directory: the newest `snap-<sequence>.ccc` above the sequence in force that
//!    opens and verifies is swapped in; files that fail are skipped (older ones are tried) and
//!    recorded as refused with why. A restart therefore serves the newest valid file on disk.
//! 2. Drop directory: drops above the sequence in force, in sequence order, go through the
//!    loader; a built snapshot is written atomically into the snapshot directory and then
//!    opened from there (exactly what a restart would serve), and swapped in.
//!
//! A refused file or drop changes nothing and is remembered by a fingerprint of its size and
//! modification times, so polling does not refuse it again and again; when it changes (a drop
//! still being copied), or on an explicit reload (SIGHUP, `Admin.Reload`), it is tried again.
//! The work is blocking file I/O and runs on the blocking pool.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cccgate_loader::{LoadOutcome, Loader};
use cccgate_snapshot::{OpenMode, Snapshot, SnapshotDir, file_name};

use crate::metrics::{self, now_unix_ms};
use crate::store::{DeltaRows, Loaded, SnapshotReader, SnapshotWriter};

/// The health service names this gateway reports: the whole server and the check service.
pub const HEALTH_NAMES: [&str; 2] = ["", cccgate_proto::v1::listing_check_server::SERVICE_NAME];

/// What kind of input was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusedKind {
    /// A snapshot file.
    Snapshot,
    /// A feed drop.
    Drop,
}

impl RefusedKind {
    /// `snapshot` or `drop`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefusedKind::Snapshot => "snapshot",
            RefusedKind::Drop => "drop",
        }
    }
}

/// A snapshot file or drop that was refused. It changed nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The file or drop directory.
    pub path: PathBuf,
    /// Why (the typed error's message, naming file, line and field where known).
    pub reason: String,
    /// When, Unix milliseconds.
    pub at_unix_ms: i64,
    /// Snapshot file or drop.
    pub kind: RefusedKind,
}

/// What prompted a reload pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Start-up.
    Start,
    /// A file-system event or a polling tick: remembered refusals are not retried.
    Watch,
    /// SIGHUP or `Admin.Reload`: everything newer is tried again.
    Explicit,
}

/// The outcome of one pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// A newer snapshot is in force.
    Loaded {
        /// Its sequence.
        sequence: u64,
        /// Where it came from.
        origin: String,
    },
    /// Nothing newer.
    Unchanged,
    /// Something newer was refused; nothing changed.
    Refused(Refusal),
    /// No directory to look in (the embedded sample is served).
    NotWatching,
}

/// Counters and the last refusal, for `Admin.GetStatus`.
#[derive(Debug)]
pub(crate) struct ReloadState {
    pub started: Instant,
    pub loaded: AtomicU64,
    pub refused: AtomicU64,
    last_refusal: Mutex<Option<Refusal>>,
}

impl ReloadState {
    pub(crate) fn new() -> Self {
        ReloadState {
            started: Instant::now(),
            loaded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_refusal: Mutex::new(None),
        }
    }

    pub(crate) fn last_refusal(&self) -> Option<Refusal> {
        lock(&self.last_refusal).clone()
    }

    fn refuse(&self, refusal: Refusal) {
        tracing::warn!(
            kind = refusal.kind.as_str(),
            path = %refusal.path.display(),
            reason = %refusal.reason,
            "refused; the snapshot in force keeps serving"
        );
        metrics::reload(refusal.kind.as_str(), "refused");
        self.refused.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_refusal) = Some(refusal);
    }
}

/// Locks a mutex, recovering from poisoning: the data behind it (a refusal record, a map of
/// fingerprints) stays meaningful even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The reload path. Owns the only writer of the snapshot store.
#[derive(Debug)]
pub struct Reloader {
    writer: SnapshotWriter,
    snapshot_dir: Option<PathBuf>,
    drop_dir: Option<PathBuf>,
    loader: Loader,
    pub(crate) state: Arc<ReloadState>,
    /// Refused inputs and their fingerprints; also serialises passes.
    refused: Mutex<HashMap<PathBuf, u64>>,
    /// Turned to SERVING once a snapshot is in force.
    health: Option<tonic_health::server::HealthReporter>,
    /// When set, a snapshot is served only with a valid signature under this key.
    snapshot_key: Option<cccgate_loader::VerifyingKey>,
    /// Signs the snapshots built from drops.
    sign_key: Option<cccgate_loader::SigningKey>,
    /// Serve a snapshot below the directory's high-water mark instead of refusing it.
    allow_rollback: bool,
    /// After publishing a snapshot built from a drop, keep at most this many.
    keep_snapshots: Option<usize>,
}

/// Temporary files of atomic writes untouched this long are leftovers of a crashed writer and
/// are removed when the gateway starts (a write in progress keeps its file's time fresh).
const LEFTOVER_AGE: Duration = Duration::from_secs(60);

impl Reloader {
    /// A reload path over these directories.
    pub fn new(
        writer: SnapshotWriter,
        snapshot_dir: Option<PathBuf>,
        drop_dir: Option<PathBuf>,
        loader: Loader,
    ) -> Self {
        Reloader {
            writer,
            snapshot_dir,
            drop_dir,
            loader,
            state: Arc::new(ReloadState::new()),
            refused: Mutex::new(HashMap::new()),
            health: None,
            snapshot_key: None,
            sign_key: None,
            allow_rollback: false,
            keep_snapshots: None,
        }
    }

    /// `allow_rollback`: serve a snapshot below the high-water mark (says so in logs, metrics
    /// and the origin in status) instead of refusing it. `keep_snapshots`: prune the snapshot
    /// directory to that many after each snapshot published from a drop.
    pub fn with_housekeeping(
        mut self,
        allow_rollback: bool,
        keep_snapshots: Option<usize>,
    ) -> Self {
        self.allow_rollback = allow_rollback;
        self.keep_snapshots = keep_snapshots;
        self
    }

    /// The directory's high-water mark; an unreadable mark is treated as a refusal reason by
    /// the caller (never as "no mark", which would allow any rollback).
    fn high_water(&self, dir: &Path) -> Result<Option<u64>, String> {
        SnapshotDir::new(dir)
            .high_water()
            .map_err(|e| format!("high-water mark: {e}"))
    }

    /// Whether `sequence` may be put in force given the mark: `Err` with the refusal reason
    /// when it is below and rollback is not allowed; `Ok(Some(mark))` when it is below and
    /// allowed.
    fn rollback_check(&self, sequence: u64, mark: Option<u64>) -> Result<Option<u64>, String> {
        match mark {
            Some(m) if sequence < m => {
                if self.allow_rollback {
                    tracing::warn!(
                        sequence,
                        high_water = m,
                        "rollback allowed (--allow-rollback): putting in force a snapshot below the high-water mark"
                    );
                    Ok(Some(m))
                } else {
                    ::metrics::counter!("cccgate_rollback_refusals_total").increment(1);
                    Err(format!(
                        "rollback refused: sequence {sequence} is below the high-water mark {m} (the highest sequence ever put in force from this directory); a newer snapshot was removed or is unreadable. Restore it, load a newer drop, or start with --allow-rollback"
                    ))
                }
            }
            _ => Ok(None),
        }
    }

    /// Records a snapshot put in force from the directory: raises the mark and publishes it
    /// (and whether a rollback is being served) as metrics.
    fn record_in_force(&self, dir: &Path, sequence: u64, below: Option<u64>) {
        match SnapshotDir::new(dir).raise_high_water(sequence) {
            Ok(mark) => ::metrics::gauge!("cccgate_snapshot_high_water").set(mark as f64),
            Err(e) => tracing::error!(error = %e, "cannot record the high-water mark"),
        }
        ::metrics::gauge!("cccgate_snapshot_rollback").set(if below.is_some() { 1.0 } else { 0.0 });
    }

    /// Serves only snapshots signed under `public` (when set); signs the snapshots built from
    /// drops with `sign` (when set).
    pub fn with_snapshot_keys(
        mut self,
        public: Option<cccgate_loader::VerifyingKey>,
        sign: Option<cccgate_loader::SigningKey>,
    ) -> Self {
        self.snapshot_key = public;
        self.sign_key = sign;
        self
    }

    /// Loads a snapshot file and checks it: the sequence its name says, and the signature
    /// (over the bytes loaded, not the file) when a public key is configured.
    pub(crate) fn open_checked(&self, path: &Path, sequence: u64) -> Result<Snapshot, String> {
        // Copied into private memory: never a mapping another process can truncate.
        let s = Snapshot::load(path).map_err(|e| e.to_string())?;
        if s.sequence() != sequence {
            return Err(format!(
                "{}: the file name says sequence {sequence}, the snapshot says {}",
                path.display(),
                s.sequence()
            ));
        }
        if let Some(key) = &self.snapshot_key {
            let identity = cccgate_loader::SnapshotIdentity::of_snapshot(&s);
            cccgate_loader::verify_snapshot_signature(path, &identity, key)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        Ok(s)
    }

    /// Reports health through `health`: NOT_SERVING until a snapshot is in force.
    pub fn with_health(mut self, health: tonic_health::server::HealthReporter) -> Self {
        self.health = Some(health);
        self
    }

    /// Publishes the health that follows from the store: SERVING once a snapshot is in force
    /// (a snapshot is never taken away, so it never goes back).
    pub async fn publish_health(&self) {
        let (Some(health), Some(_)) = (&self.health, self.writer.current()) else {
            return;
        };
        for name in HEALTH_NAMES {
            health
                .set_service_status(name, tonic_health::ServingStatus::Serving)
                .await;
        }
    }

    /// A reader of the store this reloader writes.
    pub fn reader(&self) -> SnapshotReader {
        self.writer.reader()
    }

    /// The snapshot directory, if any.
    pub fn snapshot_dir(&self) -> Option<&Path> {
        self.snapshot_dir.as_deref()
    }

    /// Whether there is any directory to look in.
    pub fn is_watching(&self) -> bool {
        self.snapshot_dir.is_some()
    }

    /// Puts a snapshot in force directly (the embedded sample).
    pub fn install(&self, snapshot: Snapshot, origin: &str) {
        self.swap(snapshot, origin.to_owned(), None);
    }

    fn swap(&self, snapshot: Snapshot, origin: String, delta: Option<DeltaRows>) -> u64 {
        let sequence = snapshot.sequence();
        metrics::snapshot_in_force(&snapshot);
        let counts = snapshot.counts();
        tracing::info!(
            sequence,
            content_id = snapshot.content_id(),
            certificates = counts.total,
            valid = counts.valid(),
            origin = %origin,
            "snapshot in force"
        );
        self.writer.swap(Loaded {
            snapshot,
            origin,
            loaded_at_unix_ms: now_unix_ms(),
            delta,
        });
        metrics::reload("snapshot", "loaded");
        self.state.loaded.fetch_add(1, Ordering::Relaxed);
        sequence
    }

    /// Runs one pass on the blocking pool, then publishes health.
    pub async fn reload(self: &Arc<Self>, trigger: Trigger) -> ReloadOutcome {
        let this = Arc::clone(self);
        let outcome = tokio::task::spawn_blocking(move || this.reload_blocking(trigger)).await;
        self.publish_health().await;
        match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                // A panic in the loader must not take the gateway down: report it as a refusal.
                let refusal = Refusal {
                    path: self.drop_dir.clone().unwrap_or_default(),
                    reason: format!("reload pass failed: {e}"),
                    at_unix_ms: now_unix_ms(),
                    kind: RefusedKind::Drop,
                };
                self.state.refuse(refusal.clone());
                ReloadOutcome::Refused(refusal)
            }
        }
    }

    /// One pass, synchronously. Passes never overlap.
    pub fn reload_blocking(&self, trigger: Trigger) -> ReloadOutcome {
        let Some(snapshot_dir) = &self.snapshot_dir else {
            return ReloadOutcome::NotWatching;
        };
        // A refused file or drop unchanged on disk is not verified again, whatever the trigger:
        // an explicit reload reports the refusal it still stands by instead.
        let mut refused = lock(&self.refused);
        let mut still_refused = false;
        let mut loaded = None;
        let mut new_refusal = None;
        let mut refuse = |r: Refusal, fingerprint: u64, refused: &mut HashMap<PathBuf, u64>| {
            refused.insert(r.path.clone(), fingerprint);
            self.state.refuse(r.clone());
            new_refusal = Some(r);
        };

        if trigger == Trigger::Start {
            match SnapshotDir::new(snapshot_dir).remove_temp_files(LEFTOVER_AGE) {
                Ok(removed) if !removed.is_empty() => {
                    tracing::info!(files = removed.len(), "removed leftover temporary files");
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot remove leftover temporary files"),
            }
        }
        let mark = self.high_water(snapshot_dir);

        // 1. The newest valid snapshot file above the one in force.
        let in_force = self.writer.current().map(|l| l.snapshot.sequence());
        match SnapshotDir::new(snapshot_dir).list() {
            Err(e) => {
                let path = snapshot_dir.clone();
                let fp = fingerprint(&path);
                if refused.get(&path) != Some(&fp) {
                    refuse(
                        Refusal {
                            reason: format!("cannot list: {e}"),
                            path,
                            at_unix_ms: now_unix_ms(),
                            kind: RefusedKind::Snapshot,
                        },
                        fp,
                        &mut refused,
                    );
                }
            }
            Ok(files) => {
                for (sequence, path) in files.into_iter().rev() {
                    if in_force.is_some_and(|s| sequence <= s) {
                        break;
                    }
                    let fp = fingerprint(&path)
                        ^ fingerprint(&cccgate_loader::snapshot_signature_path(&path));
                    if refused.get(&path) == Some(&fp) {
                        still_refused = true;
                        continue;
                    }
                    let checked = mark
                        .clone()
                        .and_then(|m| self.rollback_check(sequence, m))
                        .and_then(|below| Ok((self.open_checked(&path, sequence)?, below)));
                    match checked {
                        Ok((s, below)) => {
                            let mut origin = path.display().to_string();
                            if let Some(m) = below {
                                origin.push_str(&format!(
                                    " (ROLLBACK allowed: below the high-water mark {m})"
                                ));
                            }
                            loaded = Some((self.swap(s, origin.clone(), None), origin));
                            self.record_in_force(snapshot_dir, sequence, below);
                            break;
                        }
                        Err(reason) => refuse(
                            Refusal {
                                path,
                                reason,
                                at_unix_ms: now_unix_ms(),
                                kind: RefusedKind::Snapshot,
                            },
                            fp,
                            &mut refused,
                        ),
                    }
                }
            }
        }

        // 2. Drops above the sequence in force, oldest first.
        if let Some(drop_dir) = &self.drop_dir {
            for (sequence, dir) in list_drops(drop_dir, &self.loader.limits) {
                let current = self.writer.current();
                if current
                    .as_ref()
                    .is_some_and(|l| sequence <= l.snapshot.sequence())
                {
                    continue;
                }
                let fp = fingerprint(&dir);
                if refused.get(&dir) == Some(&fp) {
                    still_refused = true;
                    continue;
                }
                // A drop below the mark would be a rollback too (the newer snapshots gone).
                let below = match mark.clone().and_then(|m| self.rollback_check(sequence, m)) {
                    Ok(below) => below,
                    Err(reason) => {
                        refuse(
                            Refusal {
                                path: dir,
                                reason,
                                at_unix_ms: now_unix_ms(),
                                kind: RefusedKind::Drop,
                            },
                            fp,
                            &mut refused,
                        );
                        continue;
                    }
                };
                match self.load_drop(&dir, current.as_ref().map(|l| &l.snapshot), snapshot_dir) {
                    Ok(Some((s, delta))) => {
                        let sequence = s.sequence();
                        let origin = format!(
                            "{} (from drop {})",
                            snapshot_dir.join(file_name(sequence)).display(),
                            dir.display()
                        );
                        metrics::reload("drop", "loaded");
                        loaded = Some((self.swap(s, origin.clone(), delta), origin));
                        self.record_in_force(snapshot_dir, sequence, below);
                        if let Some(keep) = self.keep_snapshots {
                            match SnapshotDir::new(snapshot_dir).prune(keep, Some(sequence)) {
                                Ok(removed) if !removed.is_empty() => tracing::info!(
                                    removed = removed.len(),
                                    keep,
                                    "pruned old snapshots"
                                ),
                                Ok(_) => {}
                                Err(e) => tracing::warn!(error = %e, "cannot prune old snapshots"),
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) => refuse(
                        Refusal {
                            path: dir,
                            reason: e.to_string(),
                            at_unix_ms: now_unix_ms(),
                            kind: RefusedKind::Drop,
                        },
                        fp,
                        &mut refused,
                    ),
                }
            }
        }

        match (loaded, new_refusal) {
            (Some((sequence, origin)), _) => ReloadOutcome::Loaded { sequence, origin },
            (None, Some(r)) => ReloadOutcome::Refused(r),
            (None, None) => match self.state.last_refusal() {
                Some(r) if still_refused && trigger == Trigger::Explicit => {
                    ReloadOutcome::Refused(r)
                }
                _ => ReloadOutcome::Unchanged,
            },
        }
    }

    /// Loads one drop, publishes its snapshot into the snapshot directory, and loads it from
    /// there, with the rows it touched if it is a delta. `Ok(None)`: stale, skipped.
    fn load_drop(
        &self,
        dir: &Path,
        in_force: Option<&Snapshot>,
        snapshot_dir: &Path,
    ) -> Result<Option<(Snapshot, Option<DeltaRows>)>, DropError> {
        let (bytes, report) = match self.loader.load(dir, in_force)? {
            LoadOutcome::Built { bytes, report } => (bytes, report),
            LoadOutcome::Stale { .. } => return Ok(None),
        };
        let rejects = if report.rejected.is_empty() {
            None
        } else {
            Some(cccgate_loader::reject_csv(&report.rejected).map_err(DropError::Rejects)?)
        };
        let snapshots = SnapshotDir::new(snapshot_dir);
        // The signature is written before the snapshot, so a gateway that checks signatures
        // never finds the snapshot without it.
        if let Some(key) = &self.sign_key {
            let path = snapshots.snapshot_path(bytes.sequence());
            let identity = cccgate_loader::SnapshotIdentity::of_bytes(&bytes);
            cccgate_loader::write_snapshot_signature(&path, &identity, key)
                .map_err(|source| DropError::SignatureWrite { path, source })?;
        }
        let published = snapshots.publish(&bytes, rejects.as_deref(), OpenMode::Load)?;
        if let Some(key) = &self.snapshot_key {
            let identity = cccgate_loader::SnapshotIdentity::of_snapshot(&published.snapshot);
            cccgate_loader::verify_snapshot_signature(&published.path, &identity, key).map_err(
                |source| DropError::Signature {
                    path: published.path.clone(),
                    source,
                },
            )?;
        }
        if let Some(path) = &published.reject_path {
            tracing::warn!(
                rows = report.rejected.len(),
                path = %path.display(),
                "bad rows set aside"
            );
        }
        tracing::info!(
            drop = %dir.display(),
            sequence = report.manifest.sequence,
            certificates = report.total_after,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "drop loaded"
        );
        let delta = match (report.delta_numbers, in_force) {
            (Some(numbers), Some(base)) if report.applied_on == Some(base.sequence()) => {
                Some(DeltaRows {
                    base_sequence: base.sequence(),
                    base_content_id: base.content_id().to_owned(),
                    numbers,
                })
            }
            _ => None,
        };
        Ok(Some((published.snapshot, delta)))
    }
}

/// Why a drop in the drop directory was not put in force.
#[derive(Debug, thiserror::Error)]
pub enum DropError {
    /// The loader refused the drop.
    #[error(transparent)]
    Load(#[from] cccgate_loader::LoadError),
    /// The rows set aside cannot be written out.
    #[error("cannot write reject file: {0}")]
    Rejects(std::io::Error),
    /// The snapshot cannot be published or does not verify once written.
    #[error(transparent)]
    Publish(#[from] cccgate_snapshot::SnapshotError),
    /// The snapshot's signature cannot be written (`serve --snapshot-sign-key`).
    #[error("{}: cannot write the signature: {source}", path.display())]
    SignatureWrite {
        /// The snapshot whose signature it is.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The published snapshot's signature does not verify (`serve --snapshot-public-key`).
    #[error("{}: {source}", path.display())]
    Signature {
        /// The snapshot.
        path: PathBuf,
        /// Why.
        source: cccgate_loader::SnapshotSignatureError,
    },
}

/// Drop directories in `dir` (those with a readable manifest), by ascending sequence. A
/// directory without a manifest yet (still being copied) is not a drop yet; one whose manifest
/// cannot be parsed is listed with sequence `u64::MAX` so the loader refuses it by name.
fn list_drops(dir: &Path, limits: &cccgate_loader::Limits) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut drops = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden || !path.is_dir() || !path.join(cccgate_loader::MANIFEST_FILE).exists() {
            continue;
        }
        let sequence =
            cccgate_loader::read_manifest(&path, limits).map_or(u64::MAX, |m| m.sequence);
        drops.push((sequence, path));
    }
    drops.sort();
    drops
}

/// A fingerprint of a file or directory (its entries' names, sizes and modification times),
/// to tell whether a refused input has changed since.
fn fingerprint(path: &Path) -> u64 {
    fn add(h: &mut DefaultHasher, p: &Path) {
        p.hash(h);
        if let Ok(m) = std::fs::metadata(p) {
            m.len().hash(h);
            m.modified().ok().hash(h);
        }
    }
    let mut h = DefaultHasher::new();
    add(&mut h, path);
    if path.is_dir()
        && let Ok(entries) = std::fs::read_dir(path)
    {
        let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            add(&mut h, &p);
        }
    }
    h.finish()
}

/// How long to wait after a file-system event for more before reloading: a drop copied in
/// file by file, or a snapshot written then renamed, settles in one pass.
const SETTLE: Duration = Duration::from_millis(200);

/// Watches the directories (file-system events, polling, SIGHUP) and reloads, starting with
/// the start-up pass. Runs until the task is aborted.
///
/// The watcher is registered *before* the start-up pass, so a file is never missed: one that
/// lands before registration is found by the pass, one that lands after raises an event.
pub(crate) async fn watch(reloader: Arc<Reloader>, fs_events: bool, poll: Duration) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    // Kept alive for as long as this task runs.
    let _watcher = if fs_events {
        start_fs_watcher(&reloader, tx)
    } else {
        None
    };
    let mut sighup = sighup();
    reloader.reload(Trigger::Start).await;
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // the first tick is immediate; the start-up pass just ran
    loop {
        let trigger = tokio::select! {
            Some(()) = rx.recv() => {
                // Let a burst of events settle, then reload once.
                let deadline = tokio::time::Instant::now() + SETTLE * 10;
                while let Ok(Some(())) = tokio::time::timeout(SETTLE, rx.recv()).await {
                    if tokio::time::Instant::now() > deadline {
                        break;
                    }
                }
                Trigger::Watch
            }
            _ = tick.tick() => Trigger::Watch,
            () = next_signal(&mut sighup) => {
                tracing::info!("SIGHUP: reloading");
                Trigger::Explicit
            }
        };
        reloader.reload(trigger).await;
    }
}

fn start_fs_watcher(
    reloader: &Reloader,
    tx: tokio::sync::mpsc::Sender<()>,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let handler = move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
            // A full channel already holds a wake-up: nothing is lost.
            let _ = tx.try_send(());
        }
    };
    let mut watcher = match notify::recommended_watcher(handler) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "file-system events unavailable; polling only");
            return None;
        }
    };
    let dirs = [
        (reloader.snapshot_dir.as_ref(), RecursiveMode::NonRecursive),
        (reloader.drop_dir.as_ref(), RecursiveMode::Recursive),
    ];
    for (dir, mode) in dirs {
        if let Some(dir) = dir
            && let Err(e) = watcher.watch(dir, mode)
        {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch; polling only");
        }
    }
    Some(watcher)
}

#[cfg(unix)]
type Sighup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Sighup = Option<()>;

#[cfg(unix)]
fn sighup() -> Sighup {
    use tokio::signal::unix::{SignalKind, signal};
    signal(SignalKind::hangup())
        .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP"))
        .ok()
}

#[cfg(not(unix))]
fn sighup() -> Sighup {
    None
}

async fn next_signal(s: &mut Sighup) {
    #[cfg(unix)]
    if let Some(s) = s
        && s.recv().await.is_some()
    {
        return;
    }
    #[cfg(not(unix))]
    let _ = s;
    std::future::pending::<()>().await
}

#[cfg(test)]
mod tests {
    use cccgate_core::{
        Catalogue, CatalogueEntry, CertNumber, CertificateRecord, ConformityMode, Day, ProductCode,
        Status,
    };
    use cccgate_snapshot::{BuildInfo, SnapshotBuilder, write_atomic};

    use super::*;
    use crate::store::snapshot_store;

    fn write_snapshot(dir: &Path, sequence: u64, certs: u64) {
        let code = ProductCode::new(901).unwrap();
        let day = |y, m, d| Day::from_ymd(y, m, d).unwrap();
        let catalogue = Catalogue::new(vec![CatalogueEntry {
            code,
            name: "微型计算机".into(),
            category_code: code.category(),
            category_name: "信息技术设备".into(),
            mode: ConformityMode::Certificate,
            from: day(2002, 5, 1),
            until: None,
        }])
        .unwrap();
        let mut b = SnapshotBuilder::new(
            BuildInfo {
                sequence,
                source: "test".into(),
                generated_at: "2026-11-27T02:00:00+08:00".into(),
                built_at_unix_ms: 0,
            },
            catalogue,
        );
        for i in 0..certs {
            b.upsert(CertificateRecord {
                number: CertNumber::from_parts(2021, 1, code, i as u32).unwrap(),
                suffix: None,
                status: Status::Valid,
                product_code: code,
                product_name: "笔记本电脑".into(),
                models: vec!["X1".into()],
                applicant: "A".into(),
                producer: "P".into(),
                factory: "F".into(),
                issued: day(2021, 1, 1),
                expires: day(2030, 1, 1),
                status_changed: None,
                status_reason: String::new(),
                body_name: "CQC".into(),
            });
        }
        write_atomic(&b.build().unwrap(), &dir.join(file_name(sequence))).unwrap();
    }

    fn reloader(dir: &Path) -> Reloader {
        let (writer, _reader) = snapshot_store();
        Reloader::new(writer, Some(dir.to_path_buf()), None, Loader::default())
    }

    #[test]
    fn newest_valid_snapshot_wins_and_a_corrupt_newer_one_is_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_snapshot(dir.path(), 3, 5);
        write_snapshot(dir.path(), 5, 5);
        std::fs::write(dir.path().join(file_name(9)), b"not a snapshot").unwrap();
        let r = reloader(dir.path());
        let outcome = r.reload_blocking(Trigger::Start);
        assert!(
            matches!(outcome, ReloadOutcome::Loaded { sequence: 5, .. }),
            "{outcome:?}"
        );
        let refusal = r.state.last_refusal().unwrap();
        assert!(refusal.path.ends_with("snap-9.ccc"));
        assert_eq!(refusal.kind, RefusedKind::Snapshot);
        assert!(refusal.reason.contains("snap-9.ccc"), "{}", refusal.reason);
    }

    #[test]
    fn a_refused_file_is_not_verified_again_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        write_snapshot(dir.path(), 1, 1);
        let r = reloader(dir.path());
        r.reload_blocking(Trigger::Start);
        std::fs::write(dir.path().join(file_name(2)), b"garbage").unwrap();
        assert!(matches!(
            r.reload_blocking(Trigger::Watch),
            ReloadOutcome::Refused(_)
        ));
        assert_eq!(r.reload_blocking(Trigger::Watch), ReloadOutcome::Unchanged);
        // An explicit reload reports the standing refusal without verifying the file again.
        assert!(matches!(
            r.reload_blocking(Trigger::Explicit),
            ReloadOutcome::Refused(_)
        ));
        assert_eq!(r.state.refused.load(Ordering::Relaxed), 1);
        // Changed on disk: verified (and refused) again.
        std::fs::write(dir.path().join(file_name(2)), b"other garbage").unwrap();
        assert!(matches!(
            r.reload_blocking(Trigger::Watch),
            ReloadOutcome::Refused(_)
        ));
        assert_eq!(r.state.refused.load(Ordering::Relaxed), 2);
        assert_eq!(r.reader().sequence(), Some(1));
    }

    #[test]
    fn older_and_equal_files_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write_snapshot(dir.path(), 4, 1);
        let r = reloader(dir.path());
        r.reload_blocking(Trigger::Start);
        write_snapshot(dir.path(), 2, 1);
        assert_eq!(r.reload_blocking(Trigger::Watch), ReloadOutcome::Unchanged);
        assert_eq!(r.reader().sequence(), Some(4));
    }

    #[test]
    fn a_file_renamed_to_the_wrong_sequence_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_snapshot(dir.path(), 2, 1);
        std::fs::rename(dir.path().join(file_name(2)), dir.path().join(file_name(8))).unwrap();
        let r = reloader(dir.path());
        let outcome = r.reload_blocking(Trigger::Start);
        let ReloadOutcome::Refused(refusal) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(refusal.reason.contains("sequence 8"), "{}", refusal.reason);
        assert_eq!(r.reader().sequence(), None);
    }

    #[test]
    fn a_hostile_drop_is_refused_at_once_and_the_snapshot_in_force_keeps_serving() {
        let snaps = tempfile::tempdir().unwrap();
        let drops = tempfile::tempdir().unwrap();
        write_snapshot(snaps.path(), 5, 3);
        let drop = drops.path().join("drop-9");
        write_full_drop(&drop, 9);
        // certificates.csv becomes a named pipe no one writes to: opening it must not wait
        // (the reload lock would be held for ever).
        std::fs::remove_file(drop.join("certificates.csv")).unwrap();
        assert!(
            std::process::Command::new("mkfifo")
                .arg(drop.join("certificates.csv"))
                .status()
                .unwrap()
                .success()
        );
        let (writer, _) = snapshot_store();
        let r = Reloader::new(
            writer,
            Some(snaps.path().to_path_buf()),
            Some(drops.path().to_path_buf()),
            Loader::default(),
        );
        // The pass puts snapshot 5 in force and refuses the drop.
        let outcome = r.reload_blocking(Trigger::Start);
        assert!(
            matches!(outcome, ReloadOutcome::Loaded { sequence: 5, .. }),
            "{outcome:?}"
        );
        let refusal = r.state.last_refusal().unwrap();
        assert_eq!(refusal.kind, RefusedKind::Drop);
        assert!(matches!(
            r.reload_blocking(Trigger::Explicit),
            ReloadOutcome::Refused(_)
        ));
        assert!(refusal.reason.contains("FIFO"), "{}", refusal.reason);
        assert_eq!(r.reader().sequence(), Some(5));
        let names: Vec<_> = std::fs::read_dir(snaps.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with("snap-"))
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(file_name(5))]);
    }

    fn sign_file(dir: &Path, sequence: u64, key: &cccgate_loader::SigningKey) {
        let path = dir.join(file_name(sequence));
        let s = Snapshot::open(&path).unwrap();
        let id = cccgate_loader::SnapshotIdentity::of_snapshot(&s);
        cccgate_loader::write_snapshot_signature(&path, &id, key).unwrap();
    }

    #[test]
    fn with_a_snapshot_public_key_unsigned_and_badly_signed_snapshots_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = cccgate_loader::SigningKey::from_bytes(&[5; 32]);
        let stranger = cccgate_loader::SigningKey::from_bytes(&[6; 32]);
        write_snapshot(dir.path(), 3, 2);
        sign_file(dir.path(), 3, &key);
        write_snapshot(dir.path(), 5, 2); // unsigned
        write_snapshot(dir.path(), 7, 2);
        sign_file(dir.path(), 7, &stranger); // signed by another key
        write_snapshot(dir.path(), 9, 2);
        sign_file(dir.path(), 9, &key);
        write_snapshot(dir.path(), 9, 3); // replaced after signing: the signature no longer fits
        let (writer, _) = snapshot_store();
        let r = Reloader::new(
            writer,
            Some(dir.path().to_path_buf()),
            None,
            Loader::default(),
        )
        .with_snapshot_keys(Some(key.verifying_key()), None);
        let outcome = r.reload_blocking(Trigger::Start);
        assert!(
            matches!(outcome, ReloadOutcome::Loaded { sequence: 3, .. }),
            "{outcome:?}"
        );
        assert_eq!(r.state.refused.load(Ordering::Relaxed), 3);
        let last = r.state.last_refusal().unwrap();
        assert!(last.path.ends_with(file_name(5)), "{last:?}");
        assert!(last.reason.contains("unsigned"), "{}", last.reason);
        // Signing 5 afterwards makes it acceptable on the next pass (its fingerprint changed).
        sign_file(dir.path(), 5, &key);
        assert!(matches!(
            r.reload_blocking(Trigger::Watch),
            ReloadOutcome::Loaded { sequence: 5, .. }
        ));
    }

    #[test]
    fn a_drop_dir_gateway_signs_what_it_builds() {
        let snaps = tempfile::tempdir().unwrap();
        let drops = tempfile::tempdir().unwrap();
        write_full_drop(&drops.path().join("d1"), 1);
        let key = cccgate_loader::SigningKey::from_bytes(&[5; 32]);
        let (writer, _) = snapshot_store();
        let r = Reloader::new(
            writer,
            Some(snaps.path().to_path_buf()),
            Some(drops.path().to_path_buf()),
            Loader::default(),
        )
        .with_snapshot_keys(Some(key.verifying_key()), Some(key.clone()));
        let outcome = r.reload_blocking(Trigger::Start);
        assert!(
            matches!(outcome, ReloadOutcome::Loaded { sequence: 1, .. }),
            "{outcome:?}"
        );
        let path = snaps.path().join(file_name(1));
        let s = Snapshot::open(&path).unwrap();
        cccgate_loader::verify_snapshot_signature(
            &path,
            &cccgate_loader::SnapshotIdentity::of_snapshot(&s),
            &key.verifying_key(),
        )
        .unwrap();
    }

    #[test]
    fn a_restart_refuses_to_roll_back_below_the_high_water_mark_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        write_snapshot(dir.path(), 3, 2);
        write_snapshot(dir.path(), 5, 2);
        let first = reloader(dir.path());
        assert!(matches!(
            first.reload_blocking(Trigger::Start),
            ReloadOutcome::Loaded { sequence: 5, .. }
        ));
        let mark = std::fs::read_to_string(dir.path().join("high-water")).unwrap();
        assert_eq!(mark.trim(), "5");
        // The newest snapshot disappears; a restart must not silently serve 3.
        std::fs::remove_file(dir.path().join(file_name(5))).unwrap();
        let restarted = reloader(dir.path());
        let outcome = restarted.reload_blocking(Trigger::Start);
        let ReloadOutcome::Refused(refusal) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(
            refusal.reason.contains("rollback refused")
                && refusal.reason.contains("high-water mark 5")
                && refusal.reason.contains("--allow-rollback"),
            "{}",
            refusal.reason
        );
        assert_eq!(restarted.reader().sequence(), None, "nothing served");
        // Allowed: served, and the origin in status says so; the mark is never lowered.
        let (writer, _) = snapshot_store();
        let allowed = Reloader::new(
            writer,
            Some(dir.path().to_path_buf()),
            None,
            Loader::default(),
        )
        .with_housekeeping(true, None);
        let outcome = allowed.reload_blocking(Trigger::Start);
        let ReloadOutcome::Loaded {
            sequence: 3,
            origin,
        } = outcome
        else {
            panic!("{outcome:?}");
        };
        assert!(origin.contains("ROLLBACK"), "{origin}");
        let mark = std::fs::read_to_string(dir.path().join("high-water")).unwrap();
        assert_eq!(mark.trim(), "5");
        // A newer snapshot moves on past the mark as usual.
        write_snapshot(dir.path(), 6, 2);
        assert!(matches!(
            restarted.reload_blocking(Trigger::Watch),
            ReloadOutcome::Loaded { sequence: 6, .. }
        ));
    }

    #[test]
    fn an_unreadable_high_water_mark_refuses_instead_of_allowing_anything() {
        let dir = tempfile::tempdir().unwrap();
        write_snapshot(dir.path(), 3, 2);
        std::fs::write(dir.path().join("high-water"), "not a number").unwrap();
        let r = reloader(dir.path());
        let outcome = r.reload_blocking(Trigger::Start);
        let ReloadOutcome::Refused(refusal) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(refusal.reason.contains("high-water"), "{}", refusal.reason);
        assert_eq!(r.reader().sequence(), None);
    }

    fn write_full_drop(dir: &Path, sequence: u64) {
        use cccgate_loader::{DropHeader, DropWriter, FileKind};
        let mut w = DropWriter::create(dir, DropHeader::full(sequence)).unwrap();
        w.csv_file(
            "catalogue.csv",
            FileKind::Catalogue,
            "产品类别代码,产品名称,大类代码,大类名称,认证方式,实施日期,截止日期\n0901,微型计算机,09,信息技术设备,证书,2002-05-01,\n",
        )
        .unwrap();
        w.csv_file(
            "certificates.csv",
            FileKind::Certificates,
            "证书编号,证书状态,产品类别代码,产品名称,型号规格,认证委托人名称,生产者名称,生产企业名称,发证日期,证书到期日期,状态变更日期,状态变更原因,认证机构\n2021010901000001,有效,0901,微型计算机,A1,甲,乙,丙,2021-03-01,2031-02-28,,,CQC\n",
        )
        .unwrap();
        w.finish().unwrap();
    }

    #[test]
    fn a_drop_dir_gateway_keeps_n_snapshots_and_removes_leftovers_at_start() {
        let snaps = tempfile::tempdir().unwrap();
        let drops = tempfile::tempdir().unwrap();
        // A leftover of a crashed write, untouched for two hours; and a fresh one (a write in
        // progress) that must stay.
        let old = snaps.path().join(".snap-99.ccc.tmp-1-1-000000001");
        let fresh = snaps.path().join(".snap-98.ccc.tmp-1-2-000000002");
        std::fs::write(&old, b"partial").unwrap();
        std::fs::write(&fresh, b"partial").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
            .unwrap();
        let (writer, _) = snapshot_store();
        let r = Reloader::new(
            writer,
            Some(snaps.path().to_path_buf()),
            Some(drops.path().to_path_buf()),
            Loader::default(),
        )
        .with_housekeeping(false, Some(2));
        r.reload_blocking(Trigger::Start);
        assert!(!old.exists(), "the leftover is removed at start");
        assert!(fresh.exists(), "a write in progress is left alone");
        for sequence in 1..=7 {
            write_full_drop(&drops.path().join(format!("drop-{sequence}")), sequence);
            assert!(matches!(
                r.reload_blocking(Trigger::Watch),
                ReloadOutcome::Loaded { sequence: s, .. } if s == sequence
            ));
        }
        let mut names: Vec<String> = std::fs::read_dir(snaps.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("snap-"))
            .collect();
        names.sort();
        assert_eq!(names, ["snap-6.ccc", "snap-7.ccc"]);
        assert_eq!(r.reader().sequence(), Some(7));
        let mark = std::fs::read_to_string(snaps.path().join("high-water")).unwrap();
        assert_eq!(mark.trim(), "7");
    }

    #[test]
    fn no_snapshot_dir_means_not_watching() {
        let (writer, _) = snapshot_store();
        let r = Reloader::new(writer, None, None, Loader::default());
        assert_eq!(
            r.reload_blocking(Trigger::Explicit),
            ReloadOutcome::NotWatching
        );
    }
}
