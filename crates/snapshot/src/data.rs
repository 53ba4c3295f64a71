//! The archived data. Any change here changes the file format: bump `FORMAT_VERSION`.
//!
//! Field types are fixed-width integers and strings only, so the archived layout does not
//! depend on the platform (rkyv's `little_endian`, `aligned` and `pointer_width_32` features
//! are pinned in the workspace).

use rkyv::{Archive, Deserialize, Serialize};

/// `i32::MIN` stands for "no date" in optional date fields.
pub(crate) const NO_DAY: i32 = i32::MIN;

/// The whole snapshot.
#[derive(Archive, Serialize, Deserialize, Debug, Default)]
pub(crate) struct Data {
    pub sequence: u64,
    pub source: String,
    pub generated_at: String,
    pub built_at_unix_ms: i64,
    pub catalogue: Vec<CatalogueRow>,
    /// Certificates by status, index `code - 1`.
    pub counts: [u64; 5],
    pub total: u64,
    /// The open-addressing table; a slot with `number == 0` is empty.
    pub slots: Vec<Hot>,
    /// Cold fields, indexed by `Hot::cold`.
    pub cold: Vec<Cold>,
    /// Every certificate's sorted model keys, one run per certificate.
    pub model_keys: Vec<u64>,
    /// Interned names (producers, applicants, factories, product names, bodies, reasons),
    /// indexed by the `u32` ids in `Hot` and `Cold`. Kept apart from the model texts so this
    /// table stays small and cache-resident: a verdict reads the producer's name from it.
    pub names: Vec<String>,
    /// Every certificate's `型号规格` as written (models joined by `；`), one run per
    /// certificate, addressed by `Cold::text_start`/`text_len`.
    pub model_text: String,
}

/// One catalogue entry.
#[derive(Archive, Serialize, Deserialize, Debug, Clone)]
pub(crate) struct CatalogueRow {
    pub code: u16,
    pub category_code: u8,
    /// 0: certificate, 1: self-declaration.
    pub mode: u8,
    pub from: i32,
    pub until: i32,
    pub name: String,
    pub category_name: String,
}

/// What a verdict needs of a certificate: 32 bytes, two to a cache line.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, Default)]
pub(crate) struct Hot {
    pub number: u64,
    pub expires: i32,
    pub product_code: u16,
    pub status: u8,
    pub _reserved: u8,
    pub producer: u32,
    pub models_start: u32,
    pub models_len: u32,
    pub cold: u32,
}

/// The rest of a certificate, for inspection, diffs and deltas.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, Default)]
pub(crate) struct Cold {
    pub suffix: [u8; 2],
    pub issued: i32,
    pub status_changed: i32,
    pub product_name: u32,
    pub text_start: u32,
    pub text_len: u32,
    pub applicant: u32,
    pub factory: u32,
    pub status_reason: u32,
    pub body_name: u32,
}

/// The slot a number hashes to in a table of `len` slots (murmur3's finaliser, then a
/// multiply-shift range reduction, so the table need not be a power of two).
#[inline]
pub(crate) fn home_slot(number: u64, len: usize) -> usize {
    let mut h = number;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    ((u128::from(h) * len as u128) >> 64) as usize
}

/// Table size for `n` certificates: load factor 0.6, so a miss probes about 3.6 slots
/// (two cache lines) and a hit 1.75.
pub(crate) fn table_len(n: usize) -> usize {
    (n * 5 / 3 + 1).max(8)
}
