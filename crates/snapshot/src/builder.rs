//! Building a snapshot from certificate records, from scratch or on top of another snapshot.

use cccgate_core::{
    Catalogue, CertificateRecord, CertificateRef, ConformityMode, Models, model_key,
};
use rkyv::rancor::BoxedError;
use rkyv::util::AlignedVec;

use rkyv::string::ArchivedString;

use crate::data::{
    CatalogueRow, Cold, Data, Hot, INLINE_KEYS, KEYS_OVERFLOW, NO_DAY, home_slot, overflow_run,
    table_len,
};
use crate::error::SnapshotError;
use crate::format::{FORMAT_VERSION, Header, SnapshotBytes, checksum};
use crate::snapshot::{Snapshot, prefetch_line};

/// Mixes a certificate number with murmur3's finaliser: a few multiplies, where a general
/// streaming hasher cost ~12% of applying a delta (1.2M inserts to index the base).
fn mix_number(n: u64) -> u64 {
    let mut h = n ^ (n >> 33);
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The builder's index by certificate number: where each number is among the entries. An
/// open-addressing table (linear probing, at most three quarters full) of `(number, position)`
/// slots, number 0 marking a free slot (and kept apart), so the loader can prefetch the slot
/// of a certificate a few records before it is looked up ([`SnapshotBuilder::prefetch_names`]):
/// with 1.2M certificates each look-up is otherwise a cache miss of its own.
#[derive(Debug, Default)]
struct NumberIndex {
    slots: Vec<(u64, u32)>,
    len: usize,
    zero: Option<u32>,
}

impl NumberIndex {
    fn home(&self, number: u64) -> usize {
        mix_number(number) as usize & (self.slots.len() - 1)
    }

    /// The slot holding `number` (not 0), or the free slot where it would go.
    fn probe(&self, number: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = self.home(number);
        while self.slots[i].0 != 0 && self.slots[i].0 != number {
            i = (i + 1) & mask;
        }
        i
    }

    fn get(&self, number: u64) -> Option<u32> {
        if number == 0 {
            return self.zero;
        }
        if self.slots.is_empty() {
            return None;
        }
        let (n, at) = self.slots[self.probe(number)];
        (n == number).then_some(at)
    }

    /// The position of `number`, or `None` after giving it `next`.
    fn get_or_insert(&mut self, number: u64, next: u32) -> Option<u32> {
        if number == 0 {
            return self.zero.or_else(|| {
                self.zero = Some(next);
                None
            });
        }
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            let want = ((self.len + 1) * 2).max(16).next_power_of_two();
            let old = std::mem::replace(&mut self.slots, vec![(0, 0); want]);
            for slot in old.into_iter().filter(|s| s.0 != 0) {
                let i = self.probe(slot.0);
                self.slots[i] = slot;
            }
        }
        let i = self.probe(number);
        if self.slots[i].0 == number {
            return Some(self.slots[i].1);
        }
        self.slots[i] = (number, next);
        self.len += 1;
        None
    }

    fn prefetch(&self, number: u64) {
        if !self.slots.is_empty() {
            prefetch_line(self.slots.as_ptr().wrapping_add(self.home(number)).cast());
        }
    }
}

/// Where a snapshot comes from: copied into it as metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildInfo {
    /// The feed sequence.
    pub sequence: u64,
    /// Who published the feed, e.g. `cnca`.
    pub source: String,
    /// The drop's `generated_at`, RFC 3339.
    pub generated_at: String,
    /// When the snapshot was built, milliseconds since the Unix epoch (kept in the header,
    /// outside the content id).
    pub built_at_unix_ms: i64,
}

/// A table of distinct strings and their ids (ids in the order strings were first seen).
/// The strings' bytes lie one after another in one buffer, and the index is an open-addressing
/// table (linear probing, at most half full) whose slots hold each string's hash and where its
/// bytes lie: a look-up reads its slot and, when the hash matches, compares the bytes where
/// they lie; no allocation per string, no hash computed again when the table grows. The
/// hashes are one-shot xxh3, computed on the loader's parsing threads; the builder's callers
/// can prefetch a string's slot and bytes ahead of interning it
/// ([`SnapshotBuilder::prefetch_names`]): interning six names per record, one or two cache
/// misses each, was the building thread's largest cost.
#[derive(Debug, Default)]
struct Interner {
    /// Every distinct string, by id, one after another.
    bytes: Vec<u8>,
    /// Where each id's string ends in `bytes`.
    ends: Vec<usize>,
    /// The index: a power of two of slots, or none before the first string.
    slots: Vec<Slot>,
}

/// A slot of [`Interner`]'s index; `id == EMPTY_SLOT` when free.
#[derive(Clone, Copy, Debug)]
struct Slot {
    hash: u64,
    start: usize,
    len: usize,
    id: u32,
}

const EMPTY_SLOT: u32 = u32::MAX;
const FREE: Slot = Slot {
    hash: 0,
    start: 0,
    len: 0,
    id: EMPTY_SLOT,
};

fn text_hash(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

impl Interner {
    fn from_archived(strings: &[ArchivedString]) -> Self {
        let mut interner = Interner::default();
        interner.reserve(strings.len());
        for s in strings {
            // An archive's strings are distinct, but pushing each keeps ids = positions even
            // if one were repeated (a look-up then finds the last).
            let s = s.as_str();
            let slot = interner.probe(s, text_hash(s));
            interner.push(slot, s, text_hash(s));
        }
        interner
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    /// Makes room for `more` strings without the index growing.
    fn reserve(&mut self, more: usize) {
        let want = (self.len() + more)
            .saturating_mul(2)
            .max(16)
            .next_power_of_two();
        if want > self.slots.len() {
            let old = std::mem::replace(&mut self.slots, vec![FREE; want]);
            let mask = want - 1;
            for slot in old.into_iter().filter(|s| s.id != EMPTY_SLOT) {
                let mut i = slot.hash as usize & mask;
                while self.slots[i].id != EMPTY_SLOT {
                    i = (i + 1) & mask;
                }
                self.slots[i] = slot;
            }
        }
    }

    /// The slot holding `s`, or the free slot where it would go. The index has a free slot.
    fn probe(&self, s: &str, hash: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let slot = &self.slots[i];
            if slot.id == EMPTY_SLOT
                || (slot.hash == hash
                    && slot.len == s.len()
                    && self.bytes.get(slot.start..slot.start + slot.len) == Some(s.as_bytes()))
            {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `s` as a new id in the free slot `slot`.
    fn push(&mut self, slot: usize, s: &str, hash: u64) -> u32 {
        let id = self.len() as u32;
        let start = self.bytes.len();
        self.bytes.extend_from_slice(s.as_bytes());
        self.ends.push(self.bytes.len());
        self.slots[slot] = Slot {
            hash,
            start,
            len: s.len(),
            id,
        };
        id
    }

    /// `hash` is `text_hash(s)`.
    fn intern(&mut self, s: &str, hash: u64) -> u32 {
        self.reserve(1);
        let slot = self.probe(s, hash);
        match self.slots[slot].id {
            EMPTY_SLOT => self.push(slot, s, hash),
            id => id,
        }
    }

    /// Prefetches the home slot of a string hashed `hash`.
    fn prefetch_slot(&self, hash: u64) {
        if let Some(mask) = self.slots.len().checked_sub(1) {
            prefetch_line(
                self.slots
                    .as_ptr()
                    .wrapping_add(hash as usize & mask)
                    .cast(),
            );
        }
    }

    /// Prefetches the bytes of the string in the home slot of `hash`, if its hash is `hash`
    /// (read the slot first: prefetch it well before).
    fn prefetch_bytes(&self, hash: u64) {
        if let Some(mask) = self.slots.len().checked_sub(1) {
            let slot = &self.slots[hash as usize & mask];
            if slot.id != EMPTY_SLOT && slot.hash == hash {
                prefetch_line(self.bytes.as_ptr().wrapping_add(slot.start));
            }
        }
    }

    /// The strings by id.
    fn into_strings(self) -> Vec<String> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let s = String::from_utf8_lossy(&self.bytes[start..end]).into_owned();
                start = end;
                s
            })
            .collect()
    }
}

/// What the builder derives from a certificate's models, appended: their keys to `keys`
/// (sorted, each once) and their text as the snapshot stores it (trimmed, joined with `；`)
/// to `text`. Pure, so the loader runs it on its parsing threads and hands the result to
/// [`SnapshotBuilder::upsert_prepared`].
pub fn prepare_models(models: Models<'_>, keys: &mut Vec<u64>, text: &mut String) {
    let keys_start = keys.len();
    // One pass over the models (splitting the field is most of the cost).
    for (i, m) in models.iter().enumerate() {
        if i > 0 {
            text.push('；');
        }
        text.push_str(m);
        if let Some(k) = model_key(m) {
            keys.push(k.0);
        }
    }
    keys[keys_start..].sort_unstable();
    let mut end = keys_start;
    for i in keys_start..keys.len() {
        if i == keys_start || keys[i] != keys[end - 1] {
            keys[end] = keys[i];
            end += 1;
        }
    }
    keys.truncate(end);
}

/// The hashes the builder interns a certificate's names by (producer, product name,
/// applicant, factory, status reason, certification body), for
/// [`SnapshotBuilder::upsert_prepared`]. Pure, so the loader computes them on its parsing
/// threads.
pub fn name_hashes(r: &CertificateRef<'_>) -> [u64; 6] {
    [
        r.producer,
        r.product_name,
        r.applicant,
        r.factory,
        r.status_reason,
        r.body_name,
    ]
    .map(text_hash)
}

/// One certificate inside the builder: names as interned ids, its model keys and model text
/// as runs of the builder's `keys` and `model_text`.
#[derive(Clone, Copy, Debug)]
struct Entry {
    hot: Hot,
    cold: Cold,
    keys_start: u32,
    keys_len: u32,
}

/// Collects certificates and builds a snapshot. Inserting a number twice keeps the last.
#[derive(Debug)]
pub struct SnapshotBuilder {
    info: BuildInfo,
    catalogue: Catalogue,
    producers: Interner,
    names: Interner,
    model_text: String,
    keys: Vec<u64>,
    entries: Vec<Entry>,
    by_number: NumberIndex,
}

impl SnapshotBuilder {
    /// An empty builder.
    pub fn new(info: BuildInfo, catalogue: Catalogue) -> Self {
        SnapshotBuilder {
            info,
            catalogue,
            producers: Interner::default(),
            names: Interner::default(),
            model_text: String::new(),
            keys: Vec::new(),
            entries: Vec::new(),
            by_number: NumberIndex::default(),
        }
    }

    /// A builder holding `records` (a later duplicate number replaces an earlier one).
    pub fn from_records(
        info: BuildInfo,
        catalogue: Catalogue,
        records: impl IntoIterator<Item = CertificateRecord>,
    ) -> Self {
        let mut b = SnapshotBuilder::new(info, catalogue);
        records.into_iter().for_each(|r| b.upsert(r));
        b
    }

    /// A builder holding every certificate of `base`, to apply a delta on; the catalogue is
    /// `catalogue` if given, else the base's. Names, model keys and model texts are carried
    /// over as they are, not re-derived, which keeps a delta on a full-scale register well
    /// under a second.
    pub fn from_snapshot(base: &Snapshot, info: BuildInfo, catalogue: Option<Catalogue>) -> Self {
        let data = base.data();
        let overflow = data.overflow_keys.as_slice();
        let total = data.total.to_native() as usize;
        let mut keys = Vec::with_capacity(total * 3);
        let mut entries = Vec::with_capacity(total);
        for slot in data.slots.iter().filter(|s| s.number.to_native() != 0) {
            let hot: Hot = rkyv::deserialize::<Hot, BoxedError>(slot).unwrap_or_default();
            let cold: Cold = data
                .cold
                .get(hot.cold as usize)
                .and_then(|c| rkyv::deserialize::<Cold, BoxedError>(c).ok())
                .unwrap_or_default();
            let keys_start = keys.len() as u32;
            if hot.inline == KEYS_OVERFLOW {
                let (start, len) = overflow_run(hot.keys[0]);
                let run = overflow.get(start..start + len).unwrap_or(&[]);
                keys.extend(run.iter().map(|k| k.to_native()));
            } else {
                keys.extend_from_slice(&hot.keys[..usize::from(hot.inline).min(INLINE_KEYS)]);
            }
            let keys_len = keys.len() as u32 - keys_start;
            entries.push(Entry {
                hot,
                cold,
                keys_start,
                keys_len,
            });
        }
        let mut by_number = NumberIndex::default();
        for (i, e) in entries.iter().enumerate() {
            by_number.get_or_insert(e.hot.number, i as u32);
        }
        SnapshotBuilder {
            info,
            catalogue: catalogue.unwrap_or_else(|| base.catalogue()),
            producers: Interner::from_archived(&data.producers),
            names: Interner::from_archived(&data.names),
            model_text: data.model_text.as_str().to_owned(),
            keys,
            entries,
            by_number,
        }
    }

    /// The catalogue the snapshot will carry.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Where the certificate of `number` is among those inserted (in the order first
    /// inserted, from 0; a builder made from a snapshot counts the snapshot's first), if it is.
    pub fn position(&self, number: u64) -> Option<usize> {
        self.by_number.get(number).map(|i| i as usize)
    }

    /// Whether there are no certificates.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Inserts a certificate, or replaces the one with the same number.
    pub fn upsert(&mut self, r: CertificateRecord) {
        self.upsert_ref(&r.as_ref());
    }

    /// Inserts a borrowed certificate, or replaces the one with the same number: the
    /// loader's path, which allocates nothing per record (names are copied only the first
    /// time they are seen).
    pub fn upsert_ref(&mut self, r: &CertificateRef<'_>) {
        let keys_start = self.keys.len();
        let text_start = self.model_text.len();
        prepare_models(r.models, &mut self.keys, &mut self.model_text);
        self.insert(r, keys_start, text_start, &name_hashes(r));
    }

    /// Inserts a certificate whose models and names were prepared elsewhere (on another
    /// thread): `keys` and `model_text` exactly what [`prepare_models`] appended for
    /// `r.models` (which is not read again), `names` what [`name_hashes`] gives for `r`. The
    /// same snapshot as [`SnapshotBuilder::upsert_ref`].
    pub fn upsert_prepared(
        &mut self,
        r: &CertificateRef<'_>,
        keys: &[u64],
        model_text: &str,
        names: &[u64; 6],
    ) {
        let keys_start = self.keys.len();
        let text_start = self.model_text.len();
        self.keys.extend_from_slice(keys);
        self.model_text.push_str(model_text);
        self.insert(r, keys_start, text_start, names);
    }

    /// Hints that a certificate numbered `number` whose names hash to `names`
    /// ([`name_hashes`]) will be looked up and inserted soon: prefetches the index slots its
    /// number and names will be looked up in. Call it a
    /// dozen or so certificates ahead, and [`prefetch_name_bytes`](Self::prefetch_name_bytes)
    /// a few ahead: the misses of several certificates' look-ups then overlap. Changes nothing.
    pub fn prefetch_names(&self, number: u64, names: &[u64; 6]) {
        self.by_number.prefetch(number);
        self.producers.prefetch_slot(names[0]);
        for &h in &names[1..] {
            self.names.prefetch_slot(h);
        }
    }

    /// Prefetches the bytes of the names already interned that a certificate's names will be
    /// compared with (see [`prefetch_names`](Self::prefetch_names)). Changes nothing.
    pub fn prefetch_name_bytes(&self, names: &[u64; 6]) {
        self.producers.prefetch_bytes(names[0]);
        for &h in &names[1..] {
            self.names.prefetch_bytes(h);
        }
    }

    fn insert(
        &mut self,
        r: &CertificateRef<'_>,
        keys_start: usize,
        text_start: usize,
        names: &[u64; 6],
    ) {
        let end = self.keys.len();
        let hot = Hot {
            number: r.number.get(),
            expires: r.expires.days(),
            product_code: r.product_code.get(),
            status: r.status.code(),
            producer: self.producers.intern(r.producer, names[0]),
            ..Hot::default()
        };
        let cold = Cold {
            suffix: r.suffix.unwrap_or([0, 0]),
            issued: r.issued.days(),
            status_changed: r.status_changed.map_or(NO_DAY, |d| d.days()),
            product_name: self.names.intern(r.product_name, names[1]),
            text_start: text_start as u32,
            text_len: (self.model_text.len() - text_start) as u32,
            applicant: self.names.intern(r.applicant, names[2]),
            factory: self.names.intern(r.factory, names[3]),
            status_reason: self.names.intern(r.status_reason, names[4]),
            body_name: self.names.intern(r.body_name, names[5]),
        };
        let entry = Entry {
            hot,
            cold,
            keys_start: keys_start as u32,
            keys_len: (end - keys_start) as u32,
        };
        // One probe for the look-up and the insert.
        match self
            .by_number
            .get_or_insert(hot.number, self.entries.len() as u32)
        {
            Some(at) => self.entries[at as usize] = entry,
            None => self.entries.push(entry),
        }
    }

    /// Builds the snapshot: lays out the table, serialises, checksums. Replaced
    /// certificates leave nothing behind: keys and texts are re-packed.
    pub fn build(self) -> Result<SnapshotBytes, SnapshotError> {
        let SnapshotBuilder {
            info,
            catalogue,
            producers,
            names,
            model_text: texts,
            keys,
            entries,
            by_number,
        } = self;
        // The index is not needed any more: its memory goes before the table's comes.
        drop(by_number);
        let n = entries.len();
        // The table (scattered writes, one cache miss each) is laid out on a second thread
        // while this one packs the cold records and their texts: two independent passes
        // over the entries, each in entry order, so the result is the one pass's before.
        let ((slots, overflow_keys), (cold, model_text, counts)) = std::thread::scope(|scope| {
            let table = std::thread::Builder::new()
                .name("snapshot table".into())
                .spawn_scoped(scope, || lay_out(&entries, &keys));
            let packed = pack_cold(&entries, texts);
            let laid = match table {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                // No thread to be had: the same pass, here.
                Err(_) => lay_out(&entries, &keys),
            };
            (laid, packed)
        });
        drop(entries);
        drop(keys);
        let catalogue = catalogue
            .entries()
            .iter()
            .map(|e| CatalogueRow {
                code: e.code.get(),
                category_code: e.category_code,
                mode: match e.mode {
                    ConformityMode::Certificate => 0,
                    ConformityMode::SelfDeclaration => 1,
                },
                from: e.from.days(),
                until: e.until.map_or(NO_DAY, |d| d.days()),
                name: e.name.clone(),
                category_name: e.category_name.clone(),
            })
            .collect();
        let data = Data {
            sequence: info.sequence,
            source: info.source,
            generated_at: info.generated_at,
            catalogue,
            counts,
            total: n as u64,
            slots,
            cold,
            overflow_keys,
            producers: producers.into_strings(),
            names: names.into_strings(),
            model_text,
        };
        let archive = rkyv::api::high::to_bytes_in::<_, BoxedError>(&data, AlignedVec::<16>::new())
            .map_err(|e| SnapshotError::Serialize(e.to_string()))?;
        let header = Header {
            version: FORMAT_VERSION,
            archive_len: archive.len() as u64,
            checksum: checksum(&archive),
            sequence: data.sequence,
            built_at_unix_ms: info.built_at_unix_ms,
        };
        Ok(SnapshotBytes {
            header: header.encode(),
            archive,
        })
    }
}

/// Entries ahead whose home slot is prefetched while one is placed.
const PREFETCH_AHEAD: usize = 16;

/// Lays out the hash table: each entry's hot record, its model keys inline or as a run of
/// the overflow keys, placed by linear probing in entry order (so the same table for the
/// same entries). Returns the slots and the overflow keys.
fn lay_out(entries: &[Entry], keys: &[u64]) -> (Vec<Hot>, Vec<u64>) {
    let mut slots = vec![Hot::default(); table_len(entries.len())];
    let len = slots.len();
    let mut overflow_keys = Vec::new();
    for (pos, e) in entries.iter().enumerate() {
        if let Some(ahead) = entries.get(pos + PREFETCH_AHEAD) {
            let home = home_slot(ahead.hot.number, len);
            prefetch_line(slots.as_ptr().wrapping_add(home).cast());
        }
        let mut h = e.hot;
        let run = keys
            .get(e.keys_start as usize..(e.keys_start + e.keys_len) as usize)
            .unwrap_or_default();
        if run.len() <= INLINE_KEYS {
            h.inline = run.len() as u8;
            h.keys[..run.len()].copy_from_slice(run);
        } else {
            h.inline = KEYS_OVERFLOW;
            h.keys[0] = overflow_keys.len() as u64 | (run.len() as u64) << 32;
            overflow_keys.extend_from_slice(run);
        }
        h.cold = pos as u32;
        let mut slot = home_slot(h.number, len);
        while slots[slot].number != 0 {
            slot = if slot + 1 == len { 0 } else { slot + 1 };
        }
        slots[slot] = h;
    }
    (slots, overflow_keys)
}

/// The cold records in entry order with their model texts re-packed (replaced entries leave
/// nothing behind), and the count of each status. When the texts already lie packed in
/// entry order (a full drop: every entry appended once), `texts` is kept as it is rather
/// than copied.
fn pack_cold(entries: &[Entry], mut texts: String) -> (Vec<Cold>, String, [u64; 5]) {
    let mut counts = [0u64; 5];
    let mut cold = Vec::with_capacity(entries.len());
    // `None` while every text so far lies where the packed text would put it.
    let mut copied: Option<String> = None;
    let mut packed_len = 0usize;
    for e in entries {
        let mut c = e.cold;
        let (start, len) = (c.text_start as usize, c.text_len as usize);
        if copied.is_none() && start != packed_len {
            let mut fresh = String::with_capacity(texts.len());
            fresh.push_str(texts.get(..packed_len).unwrap_or_default());
            copied = Some(fresh);
        }
        let text = texts.get(start..start + len).unwrap_or_default();
        c.text_start = packed_len as u32;
        if let Some(out) = copied.as_mut() {
            out.push_str(text);
        }
        packed_len += text.len();
        cold.push(c);
        if let Some(count) = counts.get_mut(usize::from(e.hot.status).wrapping_sub(1)) {
            *count += 1;
        }
    }
    let model_text = match copied {
        Some(out) => out,
        None => {
            texts.truncate(packed_len);
            texts
        }
    };
    (cold, model_text, counts)
}

#[cfg(test)]
mod interner_tests {
    use super::{Interner, text_hash};

    fn intern(i: &mut Interner, s: &str) -> u32 {
        i.intern(s, text_hash(s))
    }

    #[test]
    fn ids_follow_first_sight_and_survive_the_index_growing() {
        let mut i = Interner::default();
        let words: Vec<String> = (0..5000).map(|n| format!("公司{n}")).collect();
        for (n, w) in words.iter().enumerate() {
            assert_eq!(intern(&mut i, w), n as u32, "{w}");
        }
        // Seen again (after the index grew many times): the same ids, nothing added.
        for (n, w) in words.iter().enumerate().rev() {
            assert_eq!(intern(&mut i, w), n as u32, "{w}");
        }
        assert_eq!(intern(&mut i, ""), 5000);
        assert_eq!(intern(&mut i, ""), 5000);
        assert_eq!(i.len(), 5001);
        let strings = i.into_strings();
        assert_eq!(strings[..5000], words[..]);
        assert_eq!(strings[5000], "");
    }

    #[test]
    fn strings_whose_hashes_share_a_slot_are_told_apart_by_their_bytes() {
        let mut i = Interner::default();
        // The same (made-up) hash for different strings: the index must compare the bytes.
        assert_eq!(i.intern("甲", 7), 0);
        assert_eq!(i.intern("乙", 7), 1);
        assert_eq!(i.intern("甲乙", 7), 2);
        assert_eq!(i.intern("乙", 7), 1);
        assert_eq!(i.intern("甲", 7), 0);
        assert_eq!(i.into_strings(), ["甲", "乙", "甲乙"]);
    }
}

#[cfg(test)]
mod number_index_tests {
    use super::NumberIndex;

    #[test]
    fn positions_are_kept_through_growth_and_a_number_seen_again_gets_its_first() {
        let mut index = NumberIndex::default();
        let numbers: Vec<u64> = (0..20_000u64)
            .map(|i| 2003_0101_0100_0000 + i * 7919)
            .collect();
        for (i, &n) in numbers.iter().enumerate() {
            assert_eq!(index.get(n), None);
            assert_eq!(index.get_or_insert(n, i as u32), None);
        }
        for (i, &n) in numbers.iter().enumerate() {
            assert_eq!(index.get(n), Some(i as u32));
            assert_eq!(index.get_or_insert(n, 99_999), Some(i as u32));
        }
        assert_eq!(index.get(1), None);
        // 0 marks a free slot, so it is kept apart, and works like any other number.
        assert_eq!(index.get(0), None);
        assert_eq!(index.get_or_insert(0, 7), None);
        assert_eq!(index.get_or_insert(0, 8), Some(7));
        assert_eq!(index.get(0), Some(7));
        assert_eq!(index.len, numbers.len());
    }
}
