//! One stream's watched listings, packed: what a 10-million-listing watch costs in memory.
//!
//! A watched listing is one 32-byte [`Slot`] in a `Vec` plus its text in one byte arena:
//! `listing_id`, `merchant_id`, the certificate number as typed (left out when it is the
//! canonical 16 digits, which the slot's `cert` gives back) and `model`, one after the other.
//! Two indexes point at slots by their `u32` position, never by a copy of the text:
//!
//! - `ids`: a [`hashbrown::HashTable`] of slot positions, hashed and compared through the
//!   arena's `listing_id` (about 4 bytes and a control byte per listing);
//! - `by_cert`: certificate number → the first slot citing it; the slots citing one
//!   certificate are chained through `next`/`prev`, so removing one is O(1).
//!
//! Removed slots are reused (a free list through `next`); removed text is garbage in the
//! arena until it is more than half of it, when the arena is compacted (amortised O(1)).
//! Measured in `benches/README.md` (memory per watched listing at 1M and 10M).

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use cccgate_core::{CertNumber, Day, Decision, Listing, ProductCode, Reason};
use cccgate_snapshot::prefetch_line;
use hashbrown::HashTable;

/// No slot (end of a chain, empty free list).
const NONE: u32 = u32::MAX;
/// `Slot::cert` of a listing whose certificate number does not parse: never indexed.
const NO_CERT: u64 = u64::MAX;
/// `Slot::number_len` when the number as typed is the canonical 16 digits of `cert`.
const CANONICAL: u8 = u8::MAX;
/// `Slot::product` of a listing without a product code.
const NO_PRODUCT: u16 = u16::MAX;
/// Arena garbage below this is never compacted away.
const COMPACT_FLOOR: usize = 1 << 20;

/// One watched listing: 32 bytes.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Where its text starts in the arena.
    off: u64,
    /// Its normalised certificate number, or [`NO_CERT`].
    cert: u64,
    /// The next slot citing the same certificate (or the next free slot).
    next: u32,
    /// The previous slot citing the same certificate.
    prev: u32,
    model_len: u16,
    /// The product code, or [`NO_PRODUCT`].
    product: u16,
    /// 0 for a free slot (a `listing_id` is never empty).
    id_len: u8,
    merchant_len: u8,
    /// Bytes of the number as typed in the arena, or [`CANONICAL`] (none).
    number_len: u8,
    /// The last decision and reason, packed by [`verdict_code`].
    verdict: u8,
}

const _: () = assert!(std::mem::size_of::<Slot>() == 32);

impl Slot {
    fn text_len(&self) -> usize {
        let number = if self.number_len == CANONICAL {
            0
        } else {
            usize::from(self.number_len)
        };
        usize::from(self.id_len)
            + usize::from(self.merchant_len)
            + number
            + usize::from(self.model_len)
    }
}

/// The decision and reason of a verdict in one byte: only ever compared.
pub(crate) fn verdict_code(decision: Decision, reason: Reason) -> u8 {
    ((decision as u8) << 6) | (reason as u8 & 0x3f)
}

/// The listings one stream watches.
#[derive(Debug)]
pub(crate) struct Listings {
    slots: Vec<Slot>,
    free: u32,
    text: Vec<u8>,
    garbage: usize,
    ids: HashTable<u32>,
    hasher: RandomState,
    by_cert: HashMap<u64, u32>,
    live: usize,
}

impl Default for Listings {
    fn default() -> Self {
        Listings {
            slots: Vec::new(),
            free: NONE,
            text: Vec::new(),
            garbage: 0,
            ids: HashTable::new(),
            hasher: RandomState::new(),
            by_cert: HashMap::new(),
            live: 0,
        }
    }
}

/// The slots a pass re-decides, those citing one certificate next to each other.
#[derive(Debug, Default)]
pub(crate) struct Cited {
    pub(crate) slots: Vec<u32>,
    /// Runs of `slots`, in order, each ending (exclusive) at `end`.
    pub(crate) groups: Vec<Group>,
}

/// A run of [`Cited::slots`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    /// The certificate number every listing of the run cites, normalised; `None`: listings
    /// citing any (or none), each decided alone.
    pub(crate) number: Option<CertNumber>,
    pub(crate) end: u32,
}

impl Cited {
    /// Slots decided one by one, whatever they cite.
    pub(crate) fn ungrouped(slots: Vec<u32>) -> Self {
        let end = slots.len() as u32;
        Cited {
            slots,
            groups: vec![Group { number: None, end }],
        }
    }

    fn push_chain(&mut self, number: u64, chain: &[u32]) {
        self.slots.extend_from_slice(chain);
        self.groups.push(Group {
            // Chained numbers came from `CertNumber::normalize`.
            number: CertNumber::from_u64(number),
            end: self.slots.len() as u32,
        });
    }

    /// The runs within `slots[range]`, clipped to it: (first slot, end, number).
    pub(crate) fn runs(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = (usize, usize, Option<CertNumber>)> + '_ {
        let first = self
            .groups
            .partition_point(|g| g.end as usize <= range.start);
        let mut start = range.start;
        self.groups[first..].iter().map_while(move |g| {
            let end = (g.end as usize).min(range.end);
            (start < range.end).then(|| {
                let run = (start, end, g.number);
                start = end;
                run
            })
        })
    }
}

/// A watched listing, as [`Listings::listing`] rebuilds it for a decision.
pub(crate) struct Rebuilt<'a> {
    pub(crate) listing: Listing<'a>,
    pub(crate) verdict: u8,
}

/// What an insert did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// The id was not watched.
    New,
    /// The id was watched: replaced.
    Replaced,
}

fn id_of<'t>(text: &'t [u8], s: &Slot) -> &'t [u8] {
    let at = s.off as usize;
    &text[at..at + usize::from(s.id_len)]
}

impl Listings {
    /// Listings watched.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    fn find(&self, id: &str) -> Option<u32> {
        let h = self.hasher.hash_one(id.as_bytes());
        let (slots, text) = (&self.slots, &self.text);
        self.ids
            .find(h, |&i| id_of(text, &slots[i as usize]) == id.as_bytes())
            .copied()
    }

    /// Certificates cited by at least one listing.
    pub(crate) fn certificates(&self) -> usize {
        self.by_cert.len()
    }

    /// Whether `id` is watched.
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.find(id).is_some()
    }

    /// Watches `listing` (validated, so every field is within its limit) with the verdict
    /// `verdict` (from [`verdict_code`]), replacing the listing of the same id if any.
    pub(crate) fn insert(&mut self, listing: &Listing<'_>, verdict: u8) -> Inserted {
        let replaced = self.remove(listing.listing_id);
        let cert = CertNumber::normalize(listing.certificate_number)
            .ok()
            .map_or(NO_CERT, |p| p.number.get());
        let canonical = cert != NO_CERT && {
            let mut digits = [0u8; 16];
            put_digits(&mut digits, cert);
            digits == listing.certificate_number.as_bytes()
        };
        let off = self.text.len() as u64;
        self.text.extend_from_slice(listing.listing_id.as_bytes());
        self.text.extend_from_slice(listing.merchant_id.as_bytes());
        if !canonical {
            self.text
                .extend_from_slice(listing.certificate_number.as_bytes());
        }
        self.text.extend_from_slice(listing.model.as_bytes());
        // Validated: ids and numbers at most 128 bytes, a model at most 256.
        let slot = Slot {
            off,
            cert,
            next: NONE,
            prev: NONE,
            model_len: listing.model.len() as u16,
            product: listing.product_code.map_or(NO_PRODUCT, ProductCode::get),
            id_len: listing.listing_id.len() as u8,
            merchant_len: listing.merchant_id.len() as u8,
            number_len: if canonical {
                CANONICAL
            } else {
                listing.certificate_number.len() as u8
            },
            verdict,
        };
        let at = if self.free == NONE {
            let at = u32::try_from(self.slots.len()).expect("fewer than 2^32 - 1 listings");
            self.slots.push(slot);
            at
        } else {
            let at = self.free;
            self.free = self.slots[at as usize].next;
            self.slots[at as usize] = slot;
            at
        };
        if cert != NO_CERT {
            let head = self.by_cert.entry(cert).or_insert(NONE);
            let old = *head;
            *head = at;
            self.slots[at as usize].next = old;
            if old != NONE {
                self.slots[old as usize].prev = at;
            }
        }
        let h = self.hasher.hash_one(listing.listing_id.as_bytes());
        let (slots, text, hasher) = (&self.slots, &self.text, &self.hasher);
        self.ids
            .insert_unique(h, at, |&i| hasher.hash_one(id_of(text, &slots[i as usize])));
        self.live += 1;
        if replaced {
            Inserted::Replaced
        } else {
            Inserted::New
        }
    }

    /// Stops watching `id`; whether it was watched.
    pub(crate) fn remove(&mut self, id: &str) -> bool {
        let h = self.hasher.hash_one(id.as_bytes());
        let (slots, text) = (&self.slots, &self.text);
        let Ok(entry) = self
            .ids
            .find_entry(h, |&i| id_of(text, &slots[i as usize]) == id.as_bytes())
        else {
            return false;
        };
        let (at, _) = entry.remove();
        let s = self.slots[at as usize];
        if s.cert != NO_CERT {
            if s.prev == NONE {
                if s.next == NONE {
                    self.by_cert.remove(&s.cert);
                } else {
                    self.by_cert.insert(s.cert, s.next);
                }
            } else {
                self.slots[s.prev as usize].next = s.next;
            }
            if s.next != NONE {
                self.slots[s.next as usize].prev = s.prev;
            }
        }
        self.garbage += s.text_len();
        self.slots[at as usize] = Slot {
            off: 0,
            cert: NO_CERT,
            next: self.free,
            prev: NONE,
            model_len: 0,
            product: NO_PRODUCT,
            id_len: 0,
            merchant_len: 0,
            number_len: 0,
            verdict: 0,
        };
        self.free = at;
        self.live -= 1;
        if self.garbage > COMPACT_FLOOR && self.garbage > self.text.len() / 2 {
            self.compact();
        }
        true
    }

    /// Rewrites the arena with the live text only.
    fn compact(&mut self) {
        let mut text = Vec::with_capacity(self.text.len() - self.garbage);
        for s in self.slots.iter_mut().filter(|s| s.id_len != 0) {
            let at = s.off as usize;
            s.off = text.len() as u64;
            text.extend_from_slice(&self.text[at..at + s.text_len()]);
        }
        self.text = text;
        self.garbage = 0;
    }

    /// The slots to re-decide when these certificates changed (`numbers` without repeats),
    /// those citing one certificate together ([`Cited`]): the numbers are looked up one by
    /// one, or, when this stream cites fewer certificates than changed, its own certificates
    /// are looked up in `set` (built once by the caller's closure and shared by every stream).
    pub(crate) fn citing(
        &self,
        numbers: &[u64],
        set: &mut dyn FnMut() -> std::sync::Arc<HashSet<u64>>,
    ) -> Cited {
        let mut out = Cited::default();
        if numbers.len() <= self.by_cert.len() {
            // Up to CURSORS chains are walked at once, each a step in turn, so the fetches of
            // their scattered slots overlap instead of waiting one for another; each chain is
            // gathered apart and appended whole once walked.
            const CURSORS: usize = 8;
            let mut heads = numbers
                .iter()
                .filter_map(|&n| self.by_cert.get(&n).map(|&head| (n, head)));
            let mut cursors: Vec<(u64, u32, Vec<u32>)> = Vec::with_capacity(CURSORS);
            let mut spare: Vec<Vec<u32>> = Vec::with_capacity(CURSORS);
            loop {
                while cursors.len() < CURSORS
                    && let Some((number, head)) = heads.next()
                {
                    self.prefetch_slot(head);
                    cursors.push((number, head, spare.pop().unwrap_or_default()));
                }
                if cursors.is_empty() {
                    break;
                }
                let mut k = 0;
                while k < cursors.len() {
                    let (_, at, chain) = &mut cursors[k];
                    chain.push(*at);
                    let next = self.slots[*at as usize].next;
                    // The slot is here: its text is asked for, to be in cache when decided.
                    self.prefetch_text(*at);
                    if next == NONE {
                        let (number, _, mut chain) = cursors.swap_remove(k);
                        out.push_chain(number, &chain);
                        chain.clear();
                        spare.push(chain);
                    } else {
                        self.prefetch_slot(next);
                        *at = next;
                        k += 1;
                    }
                }
            }
        } else {
            let set = set();
            let mut chain = Vec::new();
            for (n, &head) in &self.by_cert {
                if set.contains(n) {
                    let mut at = head;
                    while at != NONE {
                        chain.push(at);
                        at = self.slots[at as usize].next;
                    }
                    out.push_chain(*n, &chain);
                    chain.clear();
                }
            }
        }
        out
    }

    /// Every watched slot.
    pub(crate) fn all(&self) -> Vec<u32> {
        (0..self.slots.len() as u32)
            .filter(|&i| self.slots[i as usize].id_len != 0)
            .collect()
    }

    /// Slot `at` as a listing decided on `day`; `digits` holds the canonical number if the
    /// text left it out.
    pub(crate) fn listing<'a>(
        &'a self,
        at: u32,
        day: Day,
        digits: &'a mut [u8; 16],
    ) -> Rebuilt<'a> {
        let s = &self.slots[at as usize];
        let mut p = s.off as usize;
        let mut take = |n: usize| {
            let b = &self.text[p..p + n];
            p += n;
            // The arena holds only whole `str`s, cut where they were joined.
            std::str::from_utf8(b).unwrap_or_default()
        };
        let listing_id = take(usize::from(s.id_len));
        let merchant_id = take(usize::from(s.merchant_len));
        let certificate_number = if s.number_len == CANONICAL {
            put_digits(digits, s.cert);
            std::str::from_utf8(&digits[..]).unwrap_or_default()
        } else {
            take(usize::from(s.number_len))
        };
        let model = take(usize::from(s.model_len));
        Rebuilt {
            listing: Listing {
                listing_id,
                merchant_id,
                product_code: if s.product == NO_PRODUCT {
                    None
                } else {
                    ProductCode::new(s.product)
                },
                certificate_number,
                model,
                event_day: day,
            },
            verdict: s.verdict,
        }
    }

    /// Asks the CPU for slot `at` (a pass re-decides scattered slots: their fetches overlap
    /// when asked for ahead).
    #[inline]
    pub(crate) fn prefetch_slot(&self, at: u32) {
        if let Some(s) = self.slots.get(at as usize) {
            prefetch_line(std::ptr::from_ref(s).cast());
        }
    }

    /// Asks the CPU for the start of slot `at`'s text (the slot itself should be in cache).
    #[inline]
    pub(crate) fn prefetch_text(&self, at: u32) {
        if let Some(t) = self
            .slots
            .get(at as usize)
            .and_then(|s| self.text.get(s.off as usize))
        {
            prefetch_line(std::ptr::from_ref(t));
        }
    }

    /// Records slot `at`'s new verdict.
    pub(crate) fn set_verdict(&mut self, at: u32, verdict: u8) {
        self.slots[at as usize].verdict = verdict;
    }
}

fn put_digits(out: &mut [u8; 16], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> Day {
        Day::from_ymd(2026, 11, 27).unwrap()
    }

    fn listing<'a>(id: &'a str, number: &'a str, model: &'a str) -> Listing<'a> {
        Listing {
            listing_id: id,
            merchant_id: "m-1",
            product_code: ProductCode::new(901),
            certificate_number: number,
            model,
            event_day: day(),
        }
    }

    fn back(l: &Listings, at: u32) -> (String, String, String, String, Option<ProductCode>) {
        let mut d = [0; 16];
        let r = l.listing(at, day(), &mut d).listing;
        (
            r.listing_id.into(),
            r.merchant_id.into(),
            r.certificate_number.into(),
            r.model.into(),
            r.product_code,
        )
    }

    /// The slots citing `numbers`, after checking that the runs of each certificate are
    /// whole and hold only its listings.
    fn cited(
        l: &Listings,
        numbers: &[u64],
        set: &mut dyn FnMut() -> std::sync::Arc<HashSet<u64>>,
    ) -> Vec<u32> {
        let c = l.citing(numbers, set);
        let mut start = 0;
        let mut seen = HashSet::new();
        for g in &c.groups {
            let n = g.number.expect("a number").get();
            assert!(seen.insert(n), "one run per certificate");
            let run = &c.slots[start..g.end as usize];
            assert!(!run.is_empty());
            assert!(run.iter().all(|&at| l.slots[at as usize].cert == n));
            start = g.end as usize;
        }
        assert_eq!(start, c.slots.len());
        c.slots
    }

    fn ids(l: &Listings, slots: Vec<u32>) -> Vec<String> {
        let mut v: Vec<String> = slots.into_iter().map(|s| back(l, s).0).collect();
        v.sort();
        v
    }

    const A: &str = "2021010901000001";
    const B: &str = "2021010901000002";

    #[test]
    fn a_listing_comes_back_as_typed_whether_its_number_is_canonical_or_not() {
        let mut l = Listings::default();
        l.insert(&listing("x", A, "M-1"), 7);
        l.insert(&listing("y", "CCC 2021-010901-000001", "型号 Ü"), 9);
        l.insert(&listing("z", "no number here", ""), 1);
        let all = l.all();
        assert_eq!(all.len(), 3);
        assert_eq!(back(&l, all[0]).2, A);
        assert_eq!(back(&l, all[1]).2, "CCC 2021-010901-000001");
        assert_eq!(back(&l, all[1]).3, "型号 Ü");
        assert_eq!(back(&l, all[2]).2, "no number here");
        assert_eq!(back(&l, all[0]).4, ProductCode::new(901));
        let mut d = [0; 16];
        assert_eq!(l.listing(all[1], day(), &mut d).verdict, 9);
        // Both typings of A are indexed under it; the bad number under nothing.
        let num = A.parse::<u64>().unwrap();
        assert_eq!(
            ids(&l, cited(&l, &[num], &mut || unreachable!())),
            ["x", "y"]
        );
    }

    #[test]
    fn replace_and_remove_keep_the_certificate_chains_right() {
        let mut l = Listings::default();
        let (a, b) = (A.parse::<u64>().unwrap(), B.parse::<u64>().unwrap());
        for id in ["1", "2", "3", "4"] {
            assert_eq!(l.insert(&listing(id, A, ""), 0), Inserted::New);
        }
        // Replacing moves "2" from A to B.
        assert_eq!(l.insert(&listing("2", B, ""), 0), Inserted::Replaced);
        assert_eq!(l.len(), 4);
        let none = &mut || unreachable!();
        assert_eq!(ids(&l, cited(&l, &[a], none)), ["1", "3", "4"]);
        assert_eq!(ids(&l, cited(&l, &[b], none)), ["2"]);
        // Middle, head and tail of A's chain.
        assert!(l.remove("3"));
        assert!(l.remove("4"));
        assert!(!l.remove("4"));
        assert_eq!(ids(&l, cited(&l, &[a], none)), ["1"]);
        assert!(l.remove("1"));
        assert!(cited(&l, &[a], none).is_empty());
        assert!(!l.by_cert.contains_key(&a));
        // Freed slots are reused.
        l.insert(&listing("5", A, ""), 0);
        assert_eq!(l.slots.len(), 4);
        assert!(l.contains("5") && l.contains("2") && !l.contains("1"));
    }

    #[test]
    fn chains_walked_together_give_every_listing_of_the_numbers_once() {
        let mut l = Listings::default();
        let base = A.parse::<u64>().unwrap();
        // 30 certificates cited 0..=29 times each (more chains than walked at once, of
        // every length), interleaved in the table.
        let numbers: Vec<String> = (0..30u64).map(|i| format!("{}", base + i)).collect();
        let mut want = Vec::new();
        for round in 0..30 {
            for (i, n) in numbers.iter().enumerate() {
                if round < i {
                    let id = format!("{i}-{round}");
                    l.insert(&listing(&id, n, ""), 0);
                    if i % 2 == 0 {
                        want.push(id);
                    }
                }
            }
        }
        want.sort();
        let asked: Vec<u64> = (0..30u64).step_by(2).map(|i| base + i).collect();
        let got = cited(&l, &asked, &mut || unreachable!());
        assert_eq!(got.len(), want.len());
        assert_eq!(ids(&l, got), want);
    }

    #[test]
    fn runs_are_clipped_to_a_range_of_the_slots() {
        let g = |number: u64, end| Group {
            number: CertNumber::from_u64(number),
            end,
        };
        let c = Cited {
            slots: (0..10).collect(),
            groups: vec![g(1, 3), g(2, 4), g(3, 10)],
        };
        let runs = |r| {
            c.runs(r)
                .map(|(a, b, n)| (a, b, n.map(CertNumber::get)))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            runs(0..10),
            [(0, 3, Some(1)), (3, 4, Some(2)), (4, 10, Some(3))]
        );
        assert_eq!(
            runs(2..5),
            [(2, 3, Some(1)), (3, 4, Some(2)), (4, 5, Some(3))]
        );
        assert_eq!(runs(3..4), [(3, 4, Some(2))]);
        assert_eq!(runs(5..5), []);
        let all = Cited::ungrouped(vec![4, 2, 9]);
        assert_eq!(all.runs(1..3).collect::<Vec<_>>(), [(1, 3, None)]);
    }

    #[test]
    fn many_changed_numbers_are_matched_through_the_set() {
        let mut l = Listings::default();
        l.insert(&listing("x", A, ""), 0);
        l.insert(&listing("y", B, ""), 0);
        l.insert(&listing("z", A, ""), 0);
        let numbers: Vec<u64> = (0..10).map(|i| A.parse::<u64>().unwrap() + i).collect();
        let mut built = 0;
        let set: HashSet<u64> = numbers.iter().copied().collect();
        let set = std::sync::Arc::new(set);
        let got = cited(&l, &numbers, &mut || {
            built += 1;
            std::sync::Arc::clone(&set)
        });
        assert_eq!(ids(&l, got), ["x", "y", "z"]);
        assert_eq!(built, 1);
    }

    #[test]
    fn removed_text_is_compacted_away_and_what_stays_reads_the_same() {
        let mut l = Listings::default();
        let model = "M".repeat(200);
        let n = 2 * COMPACT_FLOOR / 200 + 100;
        let names: Vec<String> = (0..n).map(|i| format!("listing-{i}")).collect();
        for id in &names {
            l.insert(&listing(id, A, &model), 0);
        }
        let full = l.text.len();
        for id in names.iter().skip(1) {
            assert!(l.remove(id));
        }
        assert!(l.text.len() < full / 2, "{} of {full}", l.text.len());
        assert!(l.garbage <= COMPACT_FLOOR.max(l.text.len() / 2));
        assert_eq!(l.len(), 1);
        let at = l.find("listing-0").unwrap();
        assert_eq!(back(&l, at).3, model);
        assert_eq!(back(&l, at).2, A);
    }
}
