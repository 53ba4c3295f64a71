//! Models (`型号规格`): normalisation and the 64-bit key the snapshot probes.
//!
//! Both the listing's model and the certificate's models are normalised the same way: NFKC,
//! upper case, white space removed. The snapshot stores each certificate's models as sorted
//! 64-bit keys of their normalised text, so "is this model covered" is a binary search over a
//! few integers, not a string comparison. The key is a stable hash (FNV-1a with a final mix),
//! fixed forever because snapshots on disk hold it.

use unicode_normalization::UnicodeNormalization;

use crate::width::{is_simple, simple_nfkc};

/// The key of a normalised model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelKey(pub u64);

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// A streaming hash of the normalised text's UTF-8 bytes, eight at a time: FNV-1a's scheme
/// over 64-bit words (little-endian, the last word zero-padded), with the length and a
/// splitmix64 avalanche at the end. Fixed forever: snapshots store its output.
struct Hasher {
    h: u64,
    word: u64,
    len: u64,
}

impl Hasher {
    fn new() -> Self {
        Hasher {
            h: FNV_OFFSET,
            word: 0,
            len: 0,
        }
    }

    #[inline]
    fn byte(&mut self, b: u8) {
        self.word |= u64::from(b) << (8 * (self.len % 8));
        self.len += 1;
        if self.len.is_multiple_of(8) {
            self.mix();
        }
    }

    #[inline]
    fn mix(&mut self) {
        self.h = (self.h ^ self.word).wrapping_mul(FNV_PRIME).rotate_left(29);
        self.word = 0;
    }

    /// One ASCII byte of a model: dropped if white space, else upper-cased and hashed.
    #[inline]
    fn ascii(&mut self, b: u8) {
        if !(b as char).is_whitespace() {
            self.byte(b.to_ascii_uppercase());
        }
    }

    fn char(&mut self, c: char) {
        let mut buf = [0u8; 4];
        c.encode_utf8(&mut buf).bytes().for_each(|b| self.byte(b));
    }

    fn finish(mut self) -> Option<ModelKey> {
        if self.len == 0 {
            return None;
        }
        if !self.len.is_multiple_of(8) {
            self.mix();
        }
        // The length, then a final avalanche (from splitmix64) so nearby texts spread over
        // the whole range.
        let mut z = (self.h ^ self.len).wrapping_mul(FNV_PRIME);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Some(ModelKey(z ^ (z >> 31)))
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether a word of ASCII bytes holds a byte below `n` (at most 0x80): every ASCII white
/// space byte is below 0x21.
#[inline]
fn has_byte_below(w: u64, n: u8) -> bool {
    w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS != 0
}

/// A word of ASCII bytes with `a`..=`z` upper-cased, all eight at once (no byte carries into
/// the next: every byte is below 0x80).
#[inline]
fn ascii_upper(w: u64) -> u64 {
    let at_least_a = w + ONES * (0x80 - u64::from(b'a'));
    let above_z = w + ONES * (0x80 - u64::from(b'z') - 1);
    w ^ ((at_least_a & !above_z & HIGHS) >> 2)
}

/// The key of a model's normalised text, or `None` when nothing is left after normalisation
/// (a blank model counts as no model given). Allocation-free for ASCII and full-width text.
pub fn model_key(model: &str) -> Option<ModelKey> {
    let mut h = Hasher::new();
    if model.is_ascii() {
        // NFKC is the identity on ASCII and upper-casing is byte-wise: the common fast path,
        // eight bytes at a time while the words line up and hold no white space.
        let mut words = model.as_bytes().chunks_exact(8);
        for w in &mut words {
            let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
            if h.len.is_multiple_of(8) && !has_byte_below(w, 0x21) {
                h.word = ascii_upper(w);
                h.len += 8;
                h.mix();
            } else {
                w.to_le_bytes().into_iter().for_each(|b| h.ascii(b));
            }
        }
        words.remainder().iter().for_each(|&b| h.ascii(b));
    } else if is_simple(model) {
        // Full-width ASCII: NFKC is a per-character map to ASCII (see `width.rs`).
        for c in model.chars().filter_map(simple_nfkc) {
            if !c.is_whitespace() {
                h.byte(c.to_ascii_uppercase() as u8);
            }
        }
    } else {
        for c in normalize_model(model).chars() {
            h.char(c);
        }
    }
    h.finish()
}

/// A model's normalised text (NFKC, upper case, no white space), for display and tests;
/// its [`model_key`] is the key of this text.
pub fn normalize_model(model: &str) -> String {
    let pass = |t: &str| -> String {
        t.nfkc()
            .flat_map(char::to_uppercase)
            .filter(|c| !c.is_whitespace())
            .collect()
    };
    let mut text = pass(model);
    // Dropping white space or upper-casing can leave text that is not in NFKC any more
    // (`G¯` gives `G` + U+0304, which composes to `Ḡ`; found by the property tests): repeat
    // until nothing changes, so the normal form is idempotent. Two passes suffice in
    // practice; the bound keeps it total.
    for _ in 0..4 {
        // Upper case and no white space already: only a text left out of NFKC can change.
        if unicode_normalization::is_nfkc(&text) {
            break;
        }
        let next = pass(&text);
        if next == text {
            break;
        }
        text = next;
    }
    text
}

/// Splits a `型号规格` field into its models: separated by `；` `;` `、` `，` `,` or line
/// breaks, each trimmed, blanks dropped.
pub fn split_models(field: &str) -> impl Iterator<Item = &str> {
    field
        .split(['；', ';', '、', '，', ',', '\n', '\r'])
        .map(str::trim)
        .filter(|m| !m.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_width_and_white_space_do_not_change_the_key() {
        let k = model_key("ThinkPad X1-2026").unwrap();
        assert_eq!(model_key("thinkpad x1-2026"), Some(k));
        assert_eq!(model_key(" THINKPAD\tX1-2026 "), Some(k));
        assert_eq!(model_key("ＴｈｉｎｋＰａｄ　Ｘ１－２０２６"), Some(k));
        assert_ne!(model_key("ThinkPad X1-2025"), Some(k));
    }

    #[test]
    fn key_is_the_key_of_the_normalised_text() {
        for m in ["abc 123", "ＡＢＣ１２３", "型号 a-1", "ß-x"] {
            assert_eq!(model_key(m), model_key(&normalize_model(m)), "{m}");
        }
        assert_eq!(normalize_model("ａｂ　c d"), "ABCD");
        assert_eq!(normalize_model("straße"), "STRASSE");
    }

    #[test]
    fn texts_that_share_words_or_padding_get_different_keys() {
        let texts = [
            "A",
            "A\0",
            "AB",
            "ABCDEFGH",
            "ABCDEFGH\0",
            "ABCDEFGHI",
            "BA",
            "\0A",
        ];
        let keys: std::collections::HashSet<_> = texts.iter().map(|t| model_key(t)).collect();
        assert_eq!(keys.len(), texts.len());
        let many: std::collections::HashSet<_> = (0..200_000)
            .map(|i| model_key(&format!("M-{i}X")))
            .collect();
        assert_eq!(many.len(), 200_000);
    }

    /// The ASCII path a byte at a time, as it was before the word-at-a-time path.
    fn bytewise_key(model: &str) -> Option<ModelKey> {
        let mut h = Hasher::new();
        model.bytes().for_each(|b| h.ascii(b));
        h.finish()
    }

    #[test]
    fn ascii_words_hash_as_their_bytes_do() {
        let texts = [
            "",
            "a",
            "abcdefgh",
            "ABCDEFGH",
            "abcdefghi",
            "a bcdefgh",
            "ab\tcdefghijklmnop",
            "x1-2026 carbon pro",
            "@[`{~ az AZ 09",
            " leading and trailing  ",
            "\x0b\x0c\r\n",
            "m-123456 pro max ultra",
            "\x1f\x20\x21",
        ];
        for t in texts {
            assert_eq!(model_key(t), bytewise_key(t), "{t:?}");
        }
        for b in 0u8..0x80 {
            let t = String::from_utf8(vec![b; 17]).unwrap();
            assert_eq!(model_key(&t), bytewise_key(&t), "byte {b:#x}");
        }
    }

    proptest::proptest! {
        #[test]
        fn ascii_fast_path_equals_the_bytewise_path(t in "[ -~\t\n\r\x0b\x0c\x00-\x1f\x7f]{0,40}") {
            proptest::prop_assert_eq!(model_key(&t), bytewise_key(&t));
        }
    }

    #[test]
    fn blank_model_has_no_key() {
        assert_eq!(model_key(""), None);
        assert_eq!(model_key(" \t\u{3000}"), None);
    }

    #[test]
    fn every_listed_separator_splits_models() {
        let field = "A1；A2;A3、A4，A5,A6\nA7\r\nA8 ; ;";
        let got: Vec<_> = split_models(field).collect();
        assert_eq!(got, ["A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8"]);
    }

    #[test]
    fn normal_form_is_idempotent_when_white_space_splits_a_combining_mark() {
        // Found by the property tests: NFKC turns U+00AF into a space and U+0304; once the
        // space is dropped the mark composes with the letter before it.
        assert_eq!(normalize_model("G¯"), "Ḡ");
        assert_eq!(normalize_model("Ḡ"), "Ḡ");
        assert_eq!(model_key("G¯"), model_key("Ḡ"));
        assert_eq!(model_key("g ¯"), model_key("Ḡ"));
    }
}
