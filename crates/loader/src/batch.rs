//! Certificates on their way from the parsing threads to the building thread.
//!
//! A batch keeps the texts of all its certificates in one buffer and the rest of each in a
//! small fixed record, so filling one allocates nothing once its buffers have grown, and
//! an emptied batch is sent back to be filled again. What the building thread would
//! otherwise derive from each record (its model keys and model text, the hash duplicate
//! detection compares) is computed as the batch is filled, on the parsing thread. Before it, every row became a
//! `CertificateRecord` of about a dozen `String`s, allocated on one thread and freed on the
//! other: the allocator took a third of the loader's time.

use cccgate_core::{CertNumber, CertificateRef, Day, Models, ProductCode, Status};
use cccgate_snapshot::{name_hashes, prepare_models};

use crate::certs::record_hash;

/// The texts of a certificate, in the order they are stored.
const TEXTS: usize = 7;

#[derive(Clone, Copy)]
struct Packed {
    number: CertNumber,
    suffix: Option<[u8; 2]>,
    status: Status,
    product_code: ProductCode,
    issued: Day,
    expires: Day,
    status_changed: Option<Day>,
    /// The file (by index) and line it was read from.
    file: u32,
    line: u64,
    /// Where its texts start in the batch's buffer, and where each ends.
    start: usize,
    ends: [usize; TEXTS],
    /// Its model keys: `keys[keys_start..keys_end]`.
    keys_start: usize,
    keys_end: usize,
    /// The hash of its parsed contents (`certs::record_hash`).
    hash: u128,
    /// The hashes its names are interned by (`cccgate_snapshot::name_hashes`).
    names: [u64; 6],
}

/// What was prepared for a certificate of a batch.
pub(crate) struct Prepared<'a> {
    /// Its certificate number.
    pub number: u64,
    /// The hash of its parsed contents.
    pub hash: u128,
    /// Its model keys, as `cccgate_snapshot::prepare_models` gives them.
    pub keys: &'a [u64],
    /// Its model text, as `cccgate_snapshot::prepare_models` gives it.
    pub model_text: &'a str,
    /// The hashes of its names, as `cccgate_snapshot::name_hashes` gives them.
    pub names: &'a [u64; 6],
}

/// Certificates, their texts in one buffer.
#[derive(Default)]
pub(crate) struct Batch {
    text: String,
    keys: Vec<u64>,
    items: Vec<Packed>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn clear(&mut self) {
        self.text.clear();
        self.keys.clear();
        self.items.clear();
    }

    /// Copies a certificate in, with the file (by index) and line it was read from, and
    /// prepares its models (stored as the snapshot stores them: trimmed, joined with `；`,
    /// which splits back into the same models), the hash of its contents and of its names.
    /// `buf` is scratch space.
    pub fn push(&mut self, r: &CertificateRef<'_>, file: u32, line: u64, buf: &mut Vec<u8>) {
        let start = self.text.len();
        let mut ends = [0; TEXTS];
        let keys_start = self.keys.len();
        let text = &mut self.text;
        text.push_str(r.product_name);
        ends[0] = text.len();
        prepare_models(r.models, &mut self.keys, text);
        ends[1] = text.len();
        for (k, s) in [
            r.applicant,
            r.producer,
            r.factory,
            r.status_reason,
            r.body_name,
        ]
        .into_iter()
        .enumerate()
        {
            text.push_str(s);
            ends[2 + k] = text.len();
        }
        self.items.push(Packed {
            number: r.number,
            suffix: r.suffix,
            status: r.status,
            product_code: r.product_code,
            issued: r.issued,
            expires: r.expires,
            status_changed: r.status_changed,
            file,
            line,
            start,
            ends,
            keys_start,
            keys_end: self.keys.len(),
            hash: record_hash(r, self.text.get(ends[0]..ends[1]).unwrap_or_default(), buf),
            names: name_hashes(r),
        });
    }

    /// The hash, model keys and model text prepared for the `i`th certificate.
    pub fn prepared(&self, i: usize) -> Prepared<'_> {
        let p = &self.items[i];
        Prepared {
            number: p.number.get(),
            hash: p.hash,
            keys: self.keys.get(p.keys_start..p.keys_end).unwrap_or_default(),
            model_text: self.text.get(p.ends[0]..p.ends[1]).unwrap_or_default(),
            names: &p.names,
        }
    }

    /// The file index and line the `i`th certificate was read from.
    pub fn origin(&self, i: usize) -> (u32, u64) {
        let p = &self.items[i];
        (p.file, p.line)
    }

    /// The `i`th certificate, borrowed from the batch.
    pub fn get(&self, i: usize) -> CertificateRef<'_> {
        let p = &self.items[i];
        let text = |k: usize| {
            let from = if k == 0 { p.start } else { p.ends[k - 1] };
            self.text.get(from..p.ends[k]).unwrap_or_default()
        };
        CertificateRef {
            number: p.number,
            suffix: p.suffix,
            status: p.status,
            product_code: p.product_code,
            product_name: text(0),
            models: Models::Field(text(1)),
            applicant: text(2),
            producer: text(3),
            factory: text(4),
            issued: p.issued,
            expires: p.expires,
            status_changed: p.status_changed,
            status_reason: text(5),
            body_name: text(6),
        }
    }
}

#[cfg(test)]
mod tests {
    use cccgate_core::CertificateRecord;

    use super::*;

    fn record(n: u64, models: &[&str]) -> CertificateRecord {
        CertificateRecord {
            number: CertNumber::from_u64(2021010901000000 + n).unwrap(),
            suffix: n.is_multiple_of(2).then_some(*b"B0"),
            status: Status::Valid,
            product_code: ProductCode::new(901).unwrap(),
            product_name: format!("产品{n}"),
            models: models.iter().map(|m| m.to_string()).collect(),
            applicant: "申请人".into(),
            producer: format!("生产者 {n}"),
            factory: String::new(),
            issued: Day::from_ymd(2020, 1, 2).unwrap(),
            expires: Day::from_ymd(2030, 1, 2).unwrap(),
            status_changed: n
                .is_multiple_of(3)
                .then(|| Day::from_ymd(2024, 5, 6).unwrap()),
            status_reason: "原因".into(),
            body_name: "CQC".into(),
        }
    }

    #[test]
    fn every_field_comes_back_as_it_went_in_and_a_cleared_batch_is_reused() {
        let recs: Vec<_> = (0..5)
            .map(|n| record(n, &["X1", "型号 二", "a b"][..(n as usize % 3) + 1]))
            .collect();
        let mut b = Batch::default();
        let mut buf = Vec::new();
        for round in 0..2 {
            for (line, r) in recs.iter().enumerate() {
                b.push(&r.as_ref(), round, line as u64 + 2, &mut buf);
            }
            assert_eq!(b.len(), recs.len(), "round {round}");
            for (i, want) in recs.iter().enumerate() {
                let got = b.get(i);
                assert_eq!(b.origin(i), (round, i as u64 + 2));
                let prepared = b.prepared(i);
                let (mut keys, mut text) = (Vec::new(), String::new());
                prepare_models(want.as_ref().models, &mut keys, &mut text);
                assert_eq!((prepared.keys, prepared.model_text), (&keys[..], &*text));
                assert_eq!(prepared.hash, record_hash(&want.as_ref(), &text, &mut buf));
                // Every record differs from the others (number, models...), so must its hash.
                for j in 0..i {
                    assert_ne!(b.prepared(j).hash, prepared.hash, "{j} and {i}");
                }
                assert_eq!(*prepared.names, name_hashes(&want.as_ref()));
                let models: Vec<&str> = got.models.iter().collect();
                let want_models: Vec<&str> = want.models.iter().map(String::as_str).collect();
                assert_eq!(models, want_models);
                assert_eq!(
                    (got.number, got.suffix, got.status, got.product_code),
                    (want.number, want.suffix, want.status, want.product_code)
                );
                assert_eq!(
                    (got.issued, got.expires, got.status_changed),
                    (want.issued, want.expires, want.status_changed)
                );
                assert_eq!(
                    [got.product_name, got.applicant, got.producer, got.factory],
                    [
                        &*want.product_name,
                        &*want.applicant,
                        &*want.producer,
                        &*want.factory
                    ]
                );
                assert_eq!(
                    [got.status_reason, got.body_name],
                    [&*want.status_reason, &*want.body_name]
                );
            }
            b.clear();
            assert_eq!(b.len(), 0);
        }
    }
}
