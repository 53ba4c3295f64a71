//! The archived data. Any change here changes the file format: bump `FORMAT_VERSION`.
//!
//! Field types are fixed-width integers and strings only, so the archived layout does not
//! depend on the platform (rkyv's `little_endian`, `aligned` and `pointer_width_32` features
//! are pinned in the workspace).

use rkyv::{Archive, Deserialize, Serialize};

/// `i32::MIN` stands for "no date" in optional date fields.
pub(crate) const NO_DAY: i32 = i32::MIN;

/// Model keys held in a certificate's hot record; more go to `Data::overflow_keys`.
pub(crate) const INLINE_KEYS: usize = 3;
/// `Hot::inline` value meaning "the keys are in the overflow run named by `keys[0]`".
pub(crate) const KEYS_OVERFLOW: u8 = u8::MAX;

/// The whole snapshot.
#[derive(Archive, Serialize, Deserialize, Debug, Default)]
pub(crate) struct Data {
    pub sequence: u64,
    pub source: String,
    pub generated_at: String,
    pub catalogue: Vec<CatalogueRow>,
    /// Certificates by status, index `code - 1`.
    pub counts: [u64; 5],
    pub total: u64,
    /// The open-addressing table (linear probing, load factor 0.8); a slot whose `number`
    /// is 0 is empty.
    pub slots: Vec<Hot>,
    /// Cold fields, indexed by `Hot::cold`.
    pub cold: Vec<Cold>,
    /// Sorted model keys of certificates with more than `INLINE_KEYS` models, one run each.
    pub overflow_keys: Vec<u64>,
    /// Interned producer names, indexed by `Hot::producer`: the only text a verdict reads,
    /// kept in a table of its own so it stays small and cache-resident.
    pub producers: Vec<String>,
    /// Other interned names (applicants, factories, product names, bodies, reasons), indexed
    /// by the `u32` ids in `Cold`.
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

/// Everything a verdict needs of a certificate, in 48 bytes: a check that finds its
/// certificate reads its home slot (one cache miss, or two adjacent lines fetched together)
/// and nothing else, unless the certificate has more than three models.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, Default)]
pub(crate) struct Hot {
    pub number: u64,
    pub expires: i32,
    pub product_code: u16,
    pub status: u8,
    /// How many of `keys` are model keys, or `KEYS_OVERFLOW`.
    pub inline: u8,
    pub producer: u32,
    pub cold: u32,
    /// Sorted model keys; with `KEYS_OVERFLOW`, `keys[0]` is `start | len << 32` of the run
    /// in `Data::overflow_keys`.
    pub keys: [u64; INLINE_KEYS],
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

/// The home slot of a certificate number in a table of `len` slots: murmur3's finaliser,
/// then a multiply-shift range reduction, so the table need not be a power of two.
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

/// Table size for `n` certificates: load factor 0.8, which keeps the full-scale register
/// under 200 MB. With linear probing a hit reads 3 slots on average (144 bytes: the home line
/// and usually the next, fetched together), a miss about 13 (a few adjacent lines; misses are
/// rare in real traffic: a listing naming a certificate that does not exist).
pub(crate) fn table_len(n: usize) -> usize {
    (n * 5 / 4 + 1).max(8)
}

/// The `(start, len)` of an overflow run, packed into `keys[0]` of its hot record.
pub(crate) fn overflow_run(packed: u64) -> (usize, usize) {
    ((packed & 0xffff_ffff) as usize, (packed >> 32) as usize)
}
