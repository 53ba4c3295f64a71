//! The archived data. Any change here changes the file format: bump `FORMAT_VERSION`.
//!
//! Field types are fixed-width integers and strings only, so the archived layout does not
//! depend on the platform (rkyv's `little_endian`, `aligned` and `pointer_width_32` features
//! are pinned in the workspace).

use rkyv::{Archive, Deserialize, Serialize};

/// `i32::MIN` stands for "no date" in optional date fields.
pub(crate) const NO_DAY: i32 = i32::MIN;

/// Model keys held in a certificate's hot record; more go to `Data::overflow_keys`.
pub(crate) const INLINE_KEYS: usize = 4;
/// `Hot::inline` value meaning "the keys are in the overflow run".
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
    /// Bits of an index entry that hold `position + 1` in `hot`; the bits above hold a tag
    /// (more bits of the key's hash), so a probe rarely touches a hot record that is not its
    /// own.
    pub index_bits: u32,
    /// Open-addressing index over `hot`, 4 bytes a slot (a few MB: it stays in cache);
    /// `0` is an empty slot.
    pub index: Vec<u32>,
    /// Zero or one element, chosen at build time so that `hot` starts on a 64-byte boundary
    /// of the archive (rkyv aligns to at most 32 itself).
    pub hot_pad: Vec<Pad>,
    /// Certificates, dense; `cold[i]` belongs to `hot[i]`.
    pub hot: Vec<Hot>,
    pub cold: Vec<Cold>,
    /// Sorted model keys of certificates with more than `INLINE_KEYS` models, one run each.
    pub overflow_keys: Vec<u64>,
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

/// Everything a verdict needs of a certificate, in one 64-byte cache line: a check that
/// finds its certificate touches the index (cached), this line, and nothing else unless the
/// certificate has more than four models.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, Default)]
#[rkyv(attr(repr(align(32))))]
pub(crate) struct Hot {
    pub number: u64,
    pub expires: i32,
    pub product_code: u16,
    pub status: u8,
    /// How many of `keys` are used, or `KEYS_OVERFLOW`.
    pub inline: u8,
    pub producer: u32,
    pub overflow_start: u32,
    pub overflow_len: u32,
    pub suffix: [u8; 2],
    pub _reserved: [u8; 2],
    /// Sorted model keys, when there are at most `INLINE_KEYS`.
    pub keys: [u64; INLINE_KEYS],
}

/// 32 bytes of nothing, to shift `hot` onto a cache-line boundary.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, Default)]
#[rkyv(attr(repr(align(32))))]
pub(crate) struct Pad {
    pub _bytes: [u64; 4],
}

/// The rest of a certificate, for inspection, diffs and deltas.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, Default)]
pub(crate) struct Cold {
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

/// The 64-bit hash of a certificate number (murmur3's finaliser): its high bits choose the
/// home slot, its low bits make the tag.
#[inline]
pub(crate) fn hash(number: u64) -> u64 {
    let mut h = number;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The home slot of hash `h` in an index of `len` slots (multiply-shift range reduction, so
/// the index need not be a power of two).
#[inline]
pub(crate) fn home_slot(h: u64, len: usize) -> usize {
    ((u128::from(h) * len as u128) >> 64) as usize
}

/// The tag of hash `h` for entries with `index_bits` position bits.
#[inline]
pub(crate) fn tag(h: u64, index_bits: u32) -> u32 {
    if index_bits >= 32 {
        0
    } else {
        (h as u32) >> index_bits
    }
}

/// Position bits needed to store `position + 1` for `n` certificates.
pub(crate) fn index_bits(n: usize) -> u32 {
    (usize::BITS - n.leading_zeros()).max(1)
}

/// Index size for `n` certificates: load factor 0.6, so a miss probes about 3.6 slots of
/// 4 bytes (one cache line) and a hit 1.75.
pub(crate) fn index_len(n: usize) -> usize {
    (n * 5 / 3 + 1).max(8)
}
