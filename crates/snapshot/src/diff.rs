//! What changed between two snapshots: certificates added, removed, or whose status changed,
//! in certificate-number order (the same two snapshots always give the same list).

use std::collections::{BTreeMap, HashMap};

use cccgate_core::{CertNumber, Status};

use crate::snapshot::Snapshot;

/// One certificate's change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// In the new snapshot only.
    Added {
        /// The certificate.
        number: CertNumber,
        /// Its status.
        status: Status,
    },
    /// In the old snapshot only.
    Removed {
        /// The certificate.
        number: CertNumber,
        /// Its status in the old snapshot.
        old_status: Status,
    },
    /// In both, with another status.
    Status {
        /// The certificate.
        number: CertNumber,
        /// Its status in the old snapshot.
        old_status: Status,
        /// Its status in the new one.
        status: Status,
    },
}

/// The changes from one snapshot to another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotDiff {
    /// Added and changed certificates by number, then removed ones by number.
    pub changes: Vec<Change>,
    /// Certificates added.
    pub added: u64,
    /// Certificates removed.
    pub removed: u64,
    /// Certificates whose status changed.
    pub changed: u64,
    /// Status changes counted by (old, new) status.
    pub transitions: BTreeMap<(Status, Status), u64>,
}

/// The changes from `old` to `new`.
pub fn diff(old: &Snapshot, new: &Snapshot) -> SnapshotDiff {
    let mut before: HashMap<u64, Status> = old.iter().map(|c| (c.number.get(), c.status)).collect();
    let mut d = SnapshotDiff::default();
    let mut after: Vec<_> = new.iter().collect();
    after.sort_unstable_by_key(|c| c.number);
    for c in after {
        match before.remove(&c.number.get()) {
            None => {
                d.added += 1;
                d.changes.push(Change::Added {
                    number: c.number,
                    status: c.status,
                });
            }
            Some(s) if s != c.status => {
                d.changed += 1;
                *d.transitions.entry((s, c.status)).or_default() += 1;
                d.changes.push(Change::Status {
                    number: c.number,
                    old_status: s,
                    status: c.status,
                });
            }
            Some(_) => {}
        }
    }
    let mut gone: Vec<(u64, Status)> = before.into_iter().collect();
    gone.sort_unstable();
    for (number, old_status) in gone {
        d.removed += 1;
        if let Some(number) = CertNumber::from_u64(number) {
            d.changes.push(Change::Removed { number, old_status });
        }
    }
    d
}
