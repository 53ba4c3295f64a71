//! Building a snapshot from certificate records, from scratch or on top of another snapshot.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use cccgate_core::{Catalogue, CertificateRecord, ConformityMode, model_key};
use rkyv::rancor::BoxedError;
use rkyv::util::AlignedVec;
use xxhash_rust::xxh3::Xxh3;

use crate::data::{
    ArchivedData, CatalogueRow, Cold, Data, Hot, INLINE_KEYS, KEYS_OVERFLOW, NO_DAY, Pad, hash,
    home_slot, index_bits, index_len, tag,
};
use crate::error::SnapshotError;
use crate::format::{FORMAT_VERSION, Header, SnapshotBytes, checksum};
use crate::snapshot::Snapshot;

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<Xxh3>>;

/// Where a snapshot comes from: copied into it as metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BuildInfo {
    /// The feed sequence.
    pub sequence: u64,
    /// Who published the feed, e.g. `cnca`.
    pub source: String,
    /// The drop's `generated_at`, RFC 3339.
    pub generated_at: String,
    /// When the snapshot was built, milliseconds since the Unix epoch.
    pub built_at_unix_ms: i64,
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
    names: Vec<String>,
    interned: FastMap<Box<str>, u32>,
    model_text: String,
    keys: Vec<u64>,
    entries: Vec<Entry>,
    by_number: FastMap<u64, u32>,
}

impl SnapshotBuilder {
    /// An empty builder.
    pub fn new(info: BuildInfo, catalogue: Catalogue) -> Self {
        SnapshotBuilder {
            info,
            catalogue,
            names: Vec::new(),
            interned: FastMap::default(),
            model_text: String::new(),
            keys: Vec::new(),
            entries: Vec::new(),
            by_number: FastMap::default(),
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
        let names: Vec<String> = data.names.iter().map(|s| s.as_str().to_owned()).collect();
        let interned = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str().into(), i as u32))
            .collect();
        let overflow = data.overflow_keys.as_slice();
        let mut keys = Vec::with_capacity(data.hot.len() * 2 + overflow.len());
        let mut entries = Vec::with_capacity(data.hot.len());
        for (h, c) in data.hot.iter().zip(data.cold.iter()) {
            let hot: Hot = rkyv::deserialize::<Hot, BoxedError>(h).unwrap_or_default();
            let cold: Cold = rkyv::deserialize::<Cold, BoxedError>(c).unwrap_or_default();
            let keys_start = keys.len() as u32;
            if hot.inline == KEYS_OVERFLOW {
                let (start, len) = (hot.overflow_start as usize, hot.overflow_len as usize);
                keys.extend(
                    overflow
                        .get(start..start + len)
                        .unwrap_or(&[])
                        .iter()
                        .map(|k| k.to_native()),
                );
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
        let by_number = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.hot.number, i as u32))
            .collect();
        SnapshotBuilder {
            info,
            catalogue: catalogue.unwrap_or_else(|| base.catalogue()),
            names,
            interned,
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

    /// Whether there are no certificates.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Inserts a certificate, or replaces the one with the same number.
    pub fn upsert(&mut self, r: CertificateRecord) {
        let keys_start = self.keys.len();
        self.keys
            .extend(r.models.iter().filter_map(|m| model_key(m)).map(|k| k.0));
        self.keys[keys_start..].sort_unstable();
        let mut end = keys_start;
        for i in keys_start..self.keys.len() {
            if i == keys_start || self.keys[i] != self.keys[end - 1] {
                self.keys[end] = self.keys[i];
                end += 1;
            }
        }
        self.keys.truncate(end);
        let text_start = self.model_text.len();
        for (i, m) in r.models.iter().enumerate() {
            if i > 0 {
                self.model_text.push('；');
            }
            self.model_text.push_str(m);
        }
        let hot = Hot {
            number: r.number.get(),
            expires: r.expires.days(),
            product_code: r.product_code.get(),
            status: r.status.code(),
            producer: self.intern(&r.producer),
            suffix: r.suffix.unwrap_or([0, 0]),
            ..Hot::default()
        };
        let cold = Cold {
            issued: r.issued.days(),
            status_changed: r.status_changed.map_or(NO_DAY, |d| d.days()),
            product_name: self.intern(&r.product_name),
            text_start: text_start as u32,
            text_len: (self.model_text.len() - text_start) as u32,
            applicant: self.intern(&r.applicant),
            factory: self.intern(&r.factory),
            status_reason: self.intern(&r.status_reason),
            body_name: self.intern(&r.body_name),
        };
        let entry = Entry {
            hot,
            cold,
            keys_start: keys_start as u32,
            keys_len: (end - keys_start) as u32,
        };
        match self.by_number.get(&hot.number) {
            Some(&i) => self.entries[i as usize] = entry,
            None => {
                self.by_number.insert(hot.number, self.entries.len() as u32);
                self.entries.push(entry);
            }
        }
    }

    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.interned.get(s) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(s.to_owned());
        self.interned.insert(s.into(), id);
        id
    }

    /// Builds the snapshot: lays out the index and the records, serialises, checksums.
    /// Replaced certificates leave nothing behind: keys and texts are re-packed.
    pub fn build(self) -> Result<SnapshotBytes, SnapshotError> {
        let n = self.entries.len();
        let bits = index_bits(n);
        let mut counts = [0u64; 5];
        let mut index = vec![0u32; index_len(n)];
        let mut hot = Vec::with_capacity(n);
        let mut cold = Vec::with_capacity(n);
        let mut overflow_keys = Vec::new();
        let mut model_text = String::with_capacity(self.model_text.len());
        for (pos, e) in self.entries.iter().enumerate() {
            let mut h = e.hot;
            let keys = &self.keys[e.keys_start as usize..(e.keys_start + e.keys_len) as usize];
            if keys.len() <= INLINE_KEYS {
                h.inline = keys.len() as u8;
                h.keys[..keys.len()].copy_from_slice(keys);
            } else {
                h.inline = KEYS_OVERFLOW;
                h.overflow_start = overflow_keys.len() as u32;
                h.overflow_len = keys.len() as u32;
                overflow_keys.extend_from_slice(keys);
            }
            let mut c = e.cold;
            let (start, len) = (c.text_start as usize, c.text_len as usize);
            c.text_start = model_text.len() as u32;
            model_text.push_str(self.model_text.get(start..start + len).unwrap_or_default());
            if let Some(count) = counts.get_mut(usize::from(h.status).wrapping_sub(1)) {
                *count += 1;
            }
            let hash = hash(h.number);
            let entry = (u64::from(tag(hash, bits)) << bits | (pos as u64 + 1)) as u32;
            let mut slot = home_slot(hash, index.len());
            while index[slot] != 0 {
                slot = if slot + 1 == index.len() { 0 } else { slot + 1 };
            }
            index[slot] = entry;
            hot.push(h);
            cold.push(c);
        }
        let catalogue = self
            .catalogue
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
            sequence: self.info.sequence,
            source: self.info.source,
            generated_at: self.info.generated_at,
            catalogue,
            counts,
            index_bits: bits,
            index,
            hot_pad: Vec::new(),
            hot,
            cold,
            overflow_keys,
            names: self.names,
            model_text,
        };
        let mut data = data;
        let mut archive = serialize(&data)?;
        if hot_offset(&archive)? % 64 != 0 {
            // Shift the hot records by 32 bytes so each sits in exactly one cache line.
            data.hot_pad.push(Pad::default());
            archive = serialize(&data)?;
        }
        let header = Header {
            version: FORMAT_VERSION,
            archive_len: archive.len() as u64,
            checksum: checksum(&archive),
            sequence: data.sequence,
            built_at_unix_ms: self.info.built_at_unix_ms,
        };
        Ok(SnapshotBytes {
            header: header.encode(),
            archive,
        })
    }
}

fn serialize(data: &Data) -> Result<AlignedVec<64>, SnapshotError> {
    rkyv::api::high::to_bytes_in::<_, BoxedError>(data, AlignedVec::<64>::new())
        .map_err(|e| SnapshotError::Serialize(e.to_string()))
}

/// Where the hot records start in the archive.
fn hot_offset(archive: &AlignedVec<64>) -> Result<usize, SnapshotError> {
    let data = rkyv::access::<ArchivedData, BoxedError>(archive)
        .map_err(|e| SnapshotError::Serialize(e.to_string()))?;
    Ok(data.hot.as_ptr() as usize - archive.as_ptr() as usize)
}
