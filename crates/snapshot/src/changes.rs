//! What changed between two snapshots for verdicts, certificate by certificate: the facts a verdict reads
//! (status, expiry date, product code, models). A pure function of the two snapshots, so every
//! replica computes the same change set for the same pair, in the same order (by number).

use cccgate_core::{CertFacts, CertNumber, Day, Register, Status};

use crate::data::{ArchivedHot, KEYS_OVERFLOW, overflow_run};
use crate::snapshot::Snapshot;

/// One certificate whose verdict-relevant facts differ between two snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertChange<'a> {
    /// Its number.
    pub number: CertNumber,
    /// As in the older snapshot; `None` if it is new.
    pub before: Option<CertFacts<'a>>,
    /// As in the newer snapshot; `None` if it left the register.
    pub after: Option<CertFacts<'a>>,
}

impl Snapshot {
    /// The sorted model keys of a certificate.
    fn model_keys<'a>(&'a self, h: &'a ArchivedHot) -> &'a [rkyv::rend::u64_le] {
        if h.inline == KEYS_OVERFLOW {
            let (start, len) = overflow_run(h.keys[0].to_native());
            self.data()
                .overflow_keys
                .get(start..start + len)
                .unwrap_or_default()
        } else {
            h.keys.get(..usize::from(h.inline)).unwrap_or_default()
        }
    }

    fn hot_at(&self, slot: u32) -> &ArchivedHot {
        &self.data().slots.as_slice()[slot as usize]
    }
}

/// Every certificate whose status, expiry date, product code or models differ between `old`
/// and `new` (including certificates only in one of them), sorted by number. Producer names
/// and other descriptive fields are not compared: no verdict depends on them.
pub fn verdict_changes<'a>(old: &'a Snapshot, new: &'a Snapshot) -> Vec<CertChange<'a>> {
    let (old_slots, new_slots) = (old.data().slots.as_slice(), new.data().slots.as_slice());
    // Two registers that differ in a delta's rows mostly keep each number in the same slot:
    // the same slot is tried before the hash lookup, and facts are read only for a change.
    let same_slot = |other: &[ArchivedHot], slot: usize, h: &ArchivedHot| {
        other.get(slot).is_some_and(|o| o.number == h.number)
    };
    let mut out = Vec::new();
    for (slot, h) in old_slots.iter().enumerate() {
        let n = h.number.to_native();
        if n == 0 {
            continue;
        }
        let Some(number) = CertNumber::from_u64(n) else {
            continue;
        };
        let found = if same_slot(new_slots, slot, h) {
            Some(slot as u32)
        } else {
            new.find(number)
        };
        match found {
            None => out.push(CertChange {
                number,
                before: Some(old.facts(slot as u32)),
                after: None,
            }),
            Some(ns) => out.extend(changed(old, new, number, slot as u32, ns)),
        }
    }
    for (slot, h) in new_slots.iter().enumerate() {
        let n = h.number.to_native();
        if n == 0 || same_slot(old_slots, slot, h) {
            continue;
        }
        let Some(number) = CertNumber::from_u64(n) else {
            continue;
        };
        if old.find(number).is_none() {
            out.push(CertChange {
                number,
                before: None,
                after: Some(new.facts(slot as u32)),
            });
        }
    }
    out.sort_unstable_by_key(|c| c.number);
    out
}

/// The change of `number` (at `os` in `old`, `ns` in `new`), if its verdict facts differ.
fn changed<'a>(
    old: &'a Snapshot,
    new: &'a Snapshot,
    number: CertNumber,
    os: u32,
    ns: u32,
) -> Option<CertChange<'a>> {
    let (h, nh) = (old.hot_at(os), new.hot_at(ns));
    let same = h.status == nh.status
        && h.expires == nh.expires
        && h.product_code == nh.product_code
        && old.model_keys(h) == new.model_keys(nh);
    (!same).then(|| CertChange {
        number,
        before: Some(old.facts(os)),
        after: Some(new.facts(ns)),
    })
}

/// [`verdict_changes`] when only the certificates numbered in `candidates` can differ between
/// `old` and `new` (a delta's rows, when `new` is that delta applied on `old`): the same
/// changes in the same order, from a lookup of each candidate in both snapshots instead of a
/// pass over both tables. `candidates` may repeat numbers, be unsorted and name certificates
/// that did not change; a number that is no certificate number is ignored. If a certificate
/// outside `candidates` differs, it is not reported: the caller vouches for `candidates`.
pub fn verdict_changes_among<'a>(
    old: &'a Snapshot,
    new: &'a Snapshot,
    candidates: &[u64],
) -> Vec<CertChange<'a>> {
    let mut numbers = candidates.to_vec();
    numbers.sort_unstable();
    numbers.dedup();
    numbers
        .into_iter()
        .filter_map(CertNumber::from_u64)
        .filter_map(|number| match (old.find(number), new.find(number)) {
            (None, None) => None,
            (Some(os), None) => Some(CertChange {
                number,
                before: Some(old.facts(os)),
                after: None,
            }),
            (None, Some(ns)) => Some(CertChange {
                number,
                before: None,
                after: Some(new.facts(ns)),
            }),
            (Some(os), Some(ns)) => changed(old, new, number, os, ns),
        })
        .collect()
}

/// The certificates of `snapshot` still marked valid whose expiry day is in `from..until`
/// (the days that have just passed when China time reaches `until`), sorted by number.
pub fn lapsed(snapshot: &Snapshot, from: Day, until: Day) -> Vec<CertFacts<'_>> {
    let mut out: Vec<CertFacts<'_>> = snapshot
        .data()
        .slots
        .iter()
        .enumerate()
        .filter(|(_, h)| {
            let e = h.expires.to_native();
            h.number.to_native() != 0
                && h.status == Status::Valid.code()
                && e >= from.days()
                && e < until.days()
        })
        .map(|(slot, _)| snapshot.facts(slot as u32))
        .collect();
    out.sort_unstable_by_key(|c| c.number);
    out
}
