//! Building a snapshot from certificate records, from scratch or on top of another snapshot.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use cccgate_core::{Catalogue, CertificateRecord, ConformityMode, model_key};
use rkyv::rancor::BoxedError;
use xxhash_rust::xxh3::Xxh3;

use crate::data::{CatalogueRow, Cold, Data, Hot, NO_DAY, home_slot, table_len};
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

/// One certificate inside the builder: strings as interned ids.
#[derive(Clone, Copy, Debug)]
struct Entry {
    hot: Hot,
    cold: Cold,
}

/// Collects certificates and builds a snapshot. Inserting a number twice keeps the last.
#[derive(Debug)]
pub struct SnapshotBuilder {
    info: BuildInfo,
    catalogue: Catalogue,
    names: Vec<String>,
    interned: FastMap<Box<str>, u32>,
    model_text: String,
    entries: Vec<Entry>,
    index: FastMap<u64, u32>,
    model_keys: Vec<u64>,
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
            entries: Vec::new(),
            index: FastMap::default(),
            model_keys: Vec::new(),
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
    /// `catalogue` if given, else the base's. Strings are carried over by id, not re-interned,
    /// which keeps a delta on a full-scale register well under a second.
    pub fn from_snapshot(base: &Snapshot, info: BuildInfo, catalogue: Option<Catalogue>) -> Self {
        let data = base.data();
        let names: Vec<String> = data.names.iter().map(|s| s.as_str().to_owned()).collect();
        let interned = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str().into(), i as u32))
            .collect();
        let mut entries = Vec::with_capacity(data.total.to_native() as usize);
        let mut model_keys = Vec::with_capacity(data.model_keys.len());
        let all_keys = data.model_keys.as_slice();
        for slot in data.slots.iter().filter(|s| s.number.to_native() != 0) {
            let mut hot: Hot = rkyv::deserialize::<Hot, BoxedError>(slot).unwrap_or_default();
            let cold = data
                .cold
                .get(hot.cold as usize)
                .and_then(|c| rkyv::deserialize::<Cold, BoxedError>(c).ok())
                .unwrap_or_default();
            let (start, len) = (hot.models_start as usize, hot.models_len as usize);
            let keys = all_keys.get(start..start + len).unwrap_or(&[]);
            hot.models_start = model_keys.len() as u32;
            model_keys.extend(keys.iter().map(|k| k.to_native()));
            entries.push(Entry { hot, cold });
        }
        let index = entries
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
            entries,
            index,
            model_keys,
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
        let start = self.model_keys.len();
        self.model_keys
            .extend(r.models.iter().filter_map(|m| model_key(m)).map(|k| k.0));
        self.model_keys[start..].sort_unstable();
        let mut end = start;
        for i in start..self.model_keys.len() {
            if i == start || self.model_keys[i] != self.model_keys[end - 1] {
                self.model_keys[end] = self.model_keys[i];
                end += 1;
            }
        }
        self.model_keys.truncate(end);
        let text_start = self.model_text.len();
        for (i, m) in r.models.iter().enumerate() {
            if i > 0 {
                self.model_text.push('；');
            }
            self.model_text.push_str(m);
        }
        let text_len = self.model_text.len() - text_start;
        let hot = Hot {
            number: r.number.get(),
            expires: r.expires.days(),
            product_code: r.product_code.get(),
            status: r.status.code(),
            _reserved: 0,
            producer: self.intern(&r.producer),
            models_start: start as u32,
            models_len: (end - start) as u32,
            cold: 0,
        };
        let cold = Cold {
            suffix: r.suffix.unwrap_or([0, 0]),
            issued: r.issued.days(),
            status_changed: r.status_changed.map_or(NO_DAY, |d| d.days()),
            product_name: self.intern(&r.product_name),
            text_start: text_start as u32,
            text_len: text_len as u32,
            applicant: self.intern(&r.applicant),
            factory: self.intern(&r.factory),
            status_reason: self.intern(&r.status_reason),
            body_name: self.intern(&r.body_name),
        };
        let entry = Entry { hot, cold };
        match self.index.get(&hot.number) {
            Some(&i) => self.entries[i as usize] = entry,
            None => {
                self.index.insert(hot.number, self.entries.len() as u32);
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

    /// Builds the snapshot: lays out the hash table, serialises, checksums.
    pub fn build(self) -> Result<SnapshotBytes, SnapshotError> {
        let n = self.entries.len();
        let mut counts = [0u64; 5];
        let mut slots = vec![Hot::default(); table_len(n)];
        let mut cold = Vec::with_capacity(n);
        // Re-pack model keys in entry order so replaced certificates leave no garbage.
        let mut model_keys = Vec::with_capacity(self.model_keys.len());
        let mut model_text = String::with_capacity(self.model_text.len());
        for (i, e) in self.entries.iter().enumerate() {
            let mut hot = e.hot;
            let (start, len) = (hot.models_start as usize, hot.models_len as usize);
            hot.models_start = model_keys.len() as u32;
            model_keys.extend_from_slice(&self.model_keys[start..start + len]);
            hot.cold = i as u32;
            let mut c = e.cold;
            let (start, len) = (c.text_start as usize, c.text_len as usize);
            c.text_start = model_text.len() as u32;
            model_text.push_str(self.model_text.get(start..start + len).unwrap_or_default());
            cold.push(c);
            if let Some(c) = counts.get_mut(usize::from(hot.status).wrapping_sub(1)) {
                *c += 1;
            }
            let mut s = home_slot(hot.number, slots.len());
            while slots[s].number != 0 {
                s = if s + 1 == slots.len() { 0 } else { s + 1 };
            }
            slots[s] = hot;
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
            built_at_unix_ms: self.info.built_at_unix_ms,
            catalogue,
            counts,
            total: n as u64,
            slots,
            cold,
            model_keys,
            names: self.names,
            model_text,
        };
        let archive = rkyv::to_bytes::<BoxedError>(&data)
            .map_err(|e| SnapshotError::Serialize(e.to_string()))?;
        let header = Header {
            version: FORMAT_VERSION,
            archive_len: archive.len() as u64,
            checksum: checksum(&archive),
            sequence: data.sequence,
        };
        Ok(SnapshotBytes {
            header: header.encode(),
            archive,
        })
    }
}
