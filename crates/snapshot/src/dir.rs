//! The snapshot directory: where the loader publishes `snap-<sequence>.ccc` files (and
//! `reject-<sequence>.csv` beside them) and the gateway picks the newest valid one.
//!
//! [`SnapshotDir`] is the one place that knows the directory's layout:
//!
//! - [`list`](SnapshotDir::list): the snapshot files by ascending sequence (names only; the
//!   files are not opened);
//! - [`latest`](SnapshotDir::latest): the newest file that opens, verifies and whose header
//!   agrees with its name, and what was skipped on the way;
//! - [`publish`](SnapshotDir::publish): the reject file then the snapshot, each written
//!   atomically under a unique, exclusively created temporary name, then the snapshot reopened
//!   from disk and verified;
//! - [`prune`](SnapshotDir::prune): remove old snapshots, keeping the newest N and never the
//!   newest nor the one in force;
//! - [`high_water`](SnapshotDir::high_water) / [`raise_high_water`](SnapshotDir::raise_high_water):
//!   the highest sequence ever put in force, kept in the file `high-water` (one decimal
//!   number), read and written atomically and never lowered, for refusing a silent rollback;
//! - [`remove_temp_files`](SnapshotDir::remove_temp_files): leftovers of writes that
//!   crashed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::error::SnapshotError;
use crate::format::{
    SnapshotBytes, TEMP_MARK, file_name, parse_file_name, reject_file_name, write_atomic,
    write_file_atomic,
};
use crate::snapshot::Snapshot;

/// The name of the high-water mark file in a snapshot directory.
pub const HIGH_WATER_FILE: &str = "high-water";

/// How a snapshot is opened once found or written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenMode {
    /// Mapped in place ([`Snapshot::open`]): for tools.
    Map,
    /// Copied into private memory ([`Snapshot::load`]): for serving.
    Load,
}

impl OpenMode {
    fn open(self, path: &Path) -> Result<Snapshot, SnapshotError> {
        match self {
            OpenMode::Map => Snapshot::open(path),
            OpenMode::Load => Snapshot::load(path),
        }
    }
}

/// The newest valid snapshot of a directory.
#[derive(Debug)]
pub struct Latest {
    /// Its sequence.
    pub sequence: u64,
    /// Its file.
    pub path: PathBuf,
    /// The snapshot, opened and verified.
    pub snapshot: Snapshot,
    /// Newer files that were skipped, and why (newest first).
    pub skipped: Vec<SnapshotError>,
}

/// A snapshot just published.
#[derive(Debug)]
pub struct Published {
    /// Its file.
    pub path: PathBuf,
    /// The reject file written beside it, if there were rows set aside.
    pub reject_path: Option<PathBuf>,
    /// The snapshot, reopened from its file and verified.
    pub snapshot: Snapshot,
}

/// A directory of snapshot files. See the [module documentation](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotDir {
    path: PathBuf,
}

impl SnapshotDir {
    /// The directory at `path` (nothing is checked or created yet).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SnapshotDir { path: path.into() }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file of a sequence's snapshot: `<dir>/snap-<sequence>.ccc`.
    pub fn snapshot_path(&self, sequence: u64) -> PathBuf {
        self.path.join(file_name(sequence))
    }

    /// The reject file of a sequence: `<dir>/reject-<sequence>.csv`.
    pub fn reject_path(&self, sequence: u64) -> PathBuf {
        self.path.join(reject_file_name(sequence))
    }

    fn io(&self, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + use<> {
        let path = path.to_path_buf();
        move |source| SnapshotError::Io { path, source }
    }

    /// The snapshot files (`snap-<sequence>.ccc`), by ascending sequence. A directory that
    /// does not exist is an error (`NotFound`): a gateway pointed at a wrong path should say
    /// so; see [`list_or_empty`](Self::list_or_empty).
    pub fn list(&self) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.path).map_err(self.io(&self.path))? {
            let entry = entry.map_err(self.io(&self.path))?;
            if let Some(seq) = entry.file_name().to_str().and_then(parse_file_name) {
                files.push((seq, entry.path()));
            }
        }
        files.sort();
        Ok(files)
    }

    /// As [`list`](Self::list), but a directory that does not exist yet has no snapshots.
    pub fn list_or_empty(&self) -> Result<Vec<(u64, PathBuf)>, SnapshotError> {
        match self.list() {
            Err(SnapshotError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(Vec::new())
            }
            r => r,
        }
    }

    /// The newest snapshot that opens, verifies, and whose header carries the sequence its
    /// name says; newer files that do not are listed in [`Latest::skipped`]. `None`: no
    /// valid snapshot (or no directory).
    pub fn latest(&self, mode: OpenMode) -> Result<Option<Latest>, SnapshotError> {
        let mut skipped = Vec::new();
        for (sequence, path) in self.list_or_empty()?.into_iter().rev() {
            match mode.open(&path) {
                Ok(snapshot) if snapshot.sequence() == sequence => {
                    return Ok(Some(Latest {
                        sequence,
                        path,
                        snapshot,
                        skipped,
                    }));
                }
                Ok(snapshot) => skipped.push(SnapshotError::Invalid {
                    message: format!(
                        "the file name says sequence {sequence}, the snapshot says {}",
                        snapshot.sequence()
                    ),
                    path,
                }),
                Err(e) => skipped.push(e),
            }
        }
        Ok(None)
    }

    /// Publishes a built snapshot as `snap-<sequence>.ccc` (the sequence its header
    /// carries): creates the directory, writes the reject file first if `rejects` is given
    /// (so a snapshot never appears without the rows it set aside), then the snapshot, each
    /// atomically; then reopens the snapshot from disk with `mode` and verifies it carries
    /// its sequence. Temporary files left by crashed writes an hour old or more are removed
    /// on the way.
    pub fn publish(
        &self,
        bytes: &SnapshotBytes,
        rejects: Option<&[u8]>,
        mode: OpenMode,
    ) -> Result<Published, SnapshotError> {
        fs::create_dir_all(&self.path).map_err(self.io(&self.path))?;
        let _ = self.remove_temp_files(Duration::from_secs(3600));
        let sequence = bytes.sequence();
        let reject_path = match rejects {
            Some(csv) => {
                let p = self.reject_path(sequence);
                write_file_atomic(&p, &[csv])?;
                Some(p)
            }
            None => None,
        };
        let path = self.snapshot_path(sequence);
        write_atomic(bytes, &path)?;
        let snapshot = mode.open(&path)?;
        if snapshot.sequence() != sequence {
            return Err(SnapshotError::Invalid {
                message: format!(
                    "written with sequence {sequence}, reads back as {}",
                    snapshot.sequence()
                ),
                path,
            });
        }
        Ok(Published {
            path,
            reject_path,
            snapshot,
        })
    }

    /// Removes old snapshots (and their reject and `.sig` signature files) so that at most
    /// `keep` remain, oldest
    /// first, never the newest nor `in_force`; `keep` below 1 counts as 1. Returns the
    /// snapshot files removed.
    pub fn prune(&self, keep: usize, in_force: Option<u64>) -> Result<Vec<PathBuf>, SnapshotError> {
        let files = self.list_or_empty()?;
        let newest = files.last().map(|(s, _)| *s);
        let mut excess = files.len().saturating_sub(keep.max(1));
        let mut removed = Vec::new();
        for (sequence, path) in files {
            if excess == 0 {
                break;
            }
            if Some(sequence) == newest || Some(sequence) == in_force {
                continue;
            }
            fs::remove_file(&path).map_err(self.io(&path))?;
            let mut signature = path.clone().into_os_string();
            signature.push(".sig");
            for beside in [self.reject_path(sequence), PathBuf::from(signature)] {
                match fs::remove_file(&beside) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(self.io(&beside)(e));
                    }
                    _ => {}
                }
            }
            removed.push(path);
            excess -= 1;
        }
        Ok(removed)
    }

    /// Removes every snapshot newer than `keep` (a benchmark restarting from a known
    /// sequence). Returns the files removed.
    pub fn remove_newer(&self, keep: u64) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut removed = Vec::new();
        for (sequence, path) in self.list_or_empty()? {
            if sequence > keep {
                fs::remove_file(&path).map_err(self.io(&path))?;
                removed.push(path);
            }
        }
        Ok(removed)
    }

    /// The highest sequence ever put in force from this directory, as recorded by
    /// [`raise_high_water`](Self::raise_high_water); `None` if never recorded. A file that
    /// is not one decimal number is an error naming it, never read as "no mark".
    pub fn high_water(&self) -> Result<Option<u64>, SnapshotError> {
        let path = self.path.join(HIGH_WATER_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&path)(e)),
        };
        text.trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| SnapshotError::Invalid {
                message: format!("high-water mark {:?} is not a sequence number", text.trim()),
                path,
            })
    }

    /// Records that `sequence` was put in force: the mark becomes `sequence` if that is
    /// higher, and is never lowered. Written atomically (a reader sees the old mark or the
    /// new one). Returns the mark after the call. Two processes raising the mark at once may
    /// race; the gateway is the only writer in a deployment.
    pub fn raise_high_water(&self, sequence: u64) -> Result<u64, SnapshotError> {
        let current = self.high_water()?;
        if current.is_some_and(|c| c >= sequence) {
            return Ok(current.unwrap_or(sequence));
        }
        fs::create_dir_all(&self.path).map_err(self.io(&self.path))?;
        let text = format!("{sequence}\n");
        write_file_atomic(&self.path.join(HIGH_WATER_FILE), &[text.as_bytes()])?;
        Ok(sequence)
    }

    /// Removes temporary files of atomic writes (`.<name>.tmp-...`) last modified at least
    /// `older_than` ago: leftovers of a writer that crashed. A younger one may be a write in
    /// progress and is left alone. Returns the files removed.
    pub fn remove_temp_files(&self, older_than: Duration) -> Result<Vec<PathBuf>, SnapshotError> {
        let now = SystemTime::now();
        let mut removed = Vec::new();
        let entries = match fs::read_dir(&self.path) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => return Err(self.io(&self.path)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(self.io(&self.path))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !(name.starts_with('.') && name.contains(TEMP_MARK)) {
                continue;
            }
            let old_enough = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|m| now.duration_since(m).unwrap_or_default() >= older_than);
            if old_enough && entry.file_type().is_ok_and(|t| t.is_file()) {
                let path = entry.path();
                fs::remove_file(&path).map_err(self.io(&path))?;
                removed.push(path);
            }
        }
        Ok(removed)
    }
}
