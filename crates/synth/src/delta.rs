//! A day's changes to a register, as a delta drop carries them: complete new states.
//!
//! Candidates are chosen by the smallest keyed hash of their number ("bottom-k"), not by
//! position, so the same base gives the same delta whatever order its records are read in (a
//! snapshot iterates in hash-table order, the synthetic register in number order).
//!
//! The mix of a delta of `k` changes: 38% valid -> `暂停`, 10% valid -> `撤销`, 15% valid ->
//! `注销`, 10% `暂停` -> `有效` (restored; `过期失效` instead if it expired meanwhile), 4%
//! `暂停` -> `撤销`, 3% `暂停` -> `注销`, up to 5% valid certificates past their expiry date
//! -> `过期失效`, and the rest (at least 15%) brand-new certificates issued on `as_of` by the
//! producers of existing ones. A pool too small for its share gives its place to new
//! certificates.

use std::collections::{BinaryHeap, HashMap};

use cccgate_core::{CertNumber, CertificateRecord, Day, Status};

use crate::register::{expiry_of, reason_text};
use crate::rng::{derive, mix64};

/// One candidate: ordered by its hash, so a max-heap keeps the `n` smallest.
struct Candidate {
    key: u64,
    record: CertificateRecord,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.key, self.record.number).cmp(&(other.key, other.record.number))
    }
}

/// Keeps the `n` candidates with the smallest keys.
struct BottomK {
    n: usize,
    heap: BinaryHeap<Candidate>,
}

impl BottomK {
    fn new(n: usize) -> Self {
        BottomK {
            n,
            heap: BinaryHeap::with_capacity(n + 1),
        }
    }

    fn offer(&mut self, key: u64, record: &CertificateRecord) {
        if self.n == 0 {
            return;
        }
        if self.heap.len() == self.n {
            match self.heap.peek() {
                Some(top) if (key, record.number) < (top.key, top.record.number) => {
                    self.heap.pop();
                }
                _ => return,
            }
        }
        self.heap.push(Candidate {
            key,
            record: record.clone(),
        });
    }

    /// Smallest key first.
    fn into_sorted(self) -> Vec<CertificateRecord> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|c| c.record)
            .collect()
    }
}

/// `k` complete new certificate states on top of `base` as of `as_of`: status changes with
/// their `状态变更日期`/`状态变更原因`, and new certificates. Sorted by number; no number twice.
pub fn delta_changes(
    base: impl Iterator<Item = CertificateRecord>,
    k: usize,
    seed: u64,
    as_of: Day,
) -> Vec<CertificateRecord> {
    let pct = |p: usize| k * p / 100;
    let (n_susp, n_rev, n_can) = (pct(38), pct(10), pct(15));
    let (n_restore, n_s_rev, n_s_can) = (pct(10), pct(4), pct(3));
    let n_due = pct(5);
    let salt = derive(seed, 0xde17a);
    let mut valid = BottomK::new(n_susp + n_rev + n_can);
    let mut suspended = BottomK::new(n_restore + n_s_rev + n_s_can);
    let mut due = BottomK::new(n_due);
    // Templates for new certificates: valid ones, chosen with another salt.
    let mut templates = BottomK::new(k);
    // Highest serial per (year, body, product) prefix, so new numbers are new.
    let mut max_serial: HashMap<u64, u32> = HashMap::new();
    for r in base {
        let n = r.number.get();
        let prefix = n / 1_000_000;
        let serial = (n % 1_000_000) as u32;
        let e = max_serial.entry(prefix).or_insert(0);
        *e = (*e).max(serial);
        let key = mix64(n ^ salt);
        match r.status {
            Status::Valid if r.expires < as_of => due.offer(key, &r),
            Status::Valid => {
                valid.offer(key, &r);
                templates.offer(mix64(key), &r);
            }
            Status::Suspended => suspended.offer(key, &r),
            _ => {}
        }
    }
    let mut out = Vec::with_capacity(k);
    let change = |mut r: CertificateRecord, status: Status, i: usize| {
        r.status = status;
        r.status_changed = Some(as_of);
        r.status_reason = reason_text(status, i).to_owned();
        r
    };
    let valid = valid.into_sorted();
    for (i, r) in valid.into_iter().enumerate() {
        let status = if i < n_susp {
            Status::Suspended
        } else if i < n_susp + n_rev {
            Status::Revoked
        } else {
            Status::Cancelled
        };
        out.push(change(r, status, i));
    }
    for (i, r) in suspended.into_sorted().into_iter().enumerate() {
        let status = if i < n_restore {
            if r.expires < as_of {
                Status::Expired
            } else {
                Status::Valid
            }
        } else if i < n_restore + n_s_rev {
            Status::Revoked
        } else {
            Status::Cancelled
        };
        out.push(change(r, status, i));
    }
    for (i, r) in due.into_sorted().into_iter().enumerate() {
        let mut r = change(r, Status::Expired, i);
        r.status_changed = Some(Day::from_days(r.expires.days() + 1).min(as_of));
        out.push(r);
    }
    // New certificates fill the rest, issued today by the producers of existing ones.
    let (year, _, _) = as_of.ymd();
    let templates = templates.into_sorted();
    let mut t = 0;
    while out.len() < k && !templates.is_empty() {
        let template = &templates[t % templates.len()];
        t += 1;
        let code = template.product_code;
        let body = template.number.body();
        let Some(probe) = CertNumber::from_parts(year as u16, body, code, 0) else {
            continue;
        };
        let serial = max_serial.entry(probe.get() / 1_000_000).or_insert(0);
        *serial += 1;
        let Some(number) = CertNumber::from_parts(year as u16, body, code, *serial) else {
            break; // a full serial range: nothing more to issue there
        };
        let models = template
            .models
            .iter()
            .take(3)
            .map(|m| format!("{m}-{:02}", year % 100))
            .collect();
        out.push(CertificateRecord {
            number,
            suffix: None,
            status: Status::Valid,
            models,
            issued: as_of,
            expires: expiry_of(as_of),
            status_changed: None,
            status_reason: String::new(),
            ..template.clone()
        });
    }
    out.sort_unstable_by_key(|r| r.number);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::register::RegisterSpec;

    fn base() -> crate::SyntheticRegister {
        RegisterSpec {
            certs: 5_000,
            seed: 21,
            ..RegisterSpec::default()
        }
        .generate()
    }

    #[test]
    fn delta_has_k_distinct_changes_of_the_planned_kinds() {
        let reg = base();
        let as_of = Day::from_days(reg.as_of.days() + 1);
        let d = delta_changes(reg.records.iter().cloned(), 400, 1, as_of);
        assert_eq!(d.len(), 400);
        let numbers: HashSet<_> = d.iter().map(|r| r.number).collect();
        assert_eq!(numbers.len(), d.len());
        let old: HashMap<_, _> = reg.records.iter().map(|r| (r.number, r)).collect();
        let mut new = 0;
        let mut transitions = HashSet::new();
        for r in &d {
            match old.get(&r.number) {
                None => {
                    new += 1;
                    assert_eq!(r.status, Status::Valid);
                    assert_eq!(r.issued, as_of);
                    assert_eq!(i32::from(r.number.year()), as_of.ymd().0);
                    assert_eq!(r.number.product_code(), r.product_code);
                    assert!(!r.models.is_empty());
                }
                Some(o) => {
                    assert_ne!(o.status, r.status, "{}", r.number);
                    assert!(r.status_changed.is_some() && !r.status_reason.is_empty());
                    transitions.insert((o.status, r.status));
                }
            }
        }
        assert!(new >= 60, "{new}");
        for t in [
            (Status::Valid, Status::Suspended),
            (Status::Valid, Status::Revoked),
            (Status::Valid, Status::Cancelled),
            (Status::Suspended, Status::Valid),
            (Status::Suspended, Status::Revoked),
        ] {
            assert!(transitions.contains(&t), "{t:?}");
        }
    }

    #[test]
    fn delta_does_not_depend_on_the_order_of_the_base() {
        let reg = base();
        let a = delta_changes(reg.records.iter().cloned(), 300, 7, reg.as_of);
        let b = delta_changes(reg.records.iter().rev().cloned(), 300, 7, reg.as_of);
        assert_eq!(a, b);
        let c = delta_changes(reg.records.iter().cloned(), 300, 8, reg.as_of);
        assert_ne!(a, c);
    }

    #[test]
    fn valid_certificates_past_expiry_are_expired_by_a_later_delta() {
        let reg = base();
        let later = Day::from_days(reg.as_of.days() + 40);
        let d = delta_changes(reg.records.iter().cloned(), 1_000, 3, later);
        assert!(
            d.iter()
                .any(|r| r.status == Status::Expired && r.expires < later)
        );
    }

    #[test]
    fn zero_changes_is_an_empty_delta() {
        let reg = base();
        assert!(delta_changes(reg.records.iter().cloned(), 0, 1, reg.as_of).is_empty());
    }
}
