//! CCC certificate numbers: 16 digits that fit a `u64`, and the normalisation of what
//! merchants type.
//!
//! The 16 digits are year of first issue (4), certification body (2), product code (4) and
//! serial (6), so those parts are arithmetic on the integer. A version suffix such as `(B0)`
//! may follow; it is kept for display but never used for lookup.

use std::fmt;

use unicode_normalization::UnicodeNormalization;

use crate::catalogue::ProductCode;
use crate::width::{is_simple, simple_nfkc};

const TEN_16: u64 = 10_000_000_000_000_000;

/// Longest normalised text considered; anything longer cannot be a certificate number.
const MAX_NORMALISED: usize = 48;

/// A certificate number: the 16 digits, as an integer.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct CertNumber(u64);

/// A certificate number as read from text, with its version suffix if there was one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedCertNumber {
    /// The 16 digits.
    pub number: CertNumber,
    /// The two characters of a `(XX)` version suffix, upper-cased.
    pub suffix: Option<[u8; 2]>,
}

/// Why a text is not a certificate number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertNumberError {
    /// Nothing is left after normalisation.
    #[error("certificate number is empty")]
    Empty,
    /// Something is left, but not 16 digits with an optional `(XX)` suffix.
    #[error("certificate number is not 16 digits with an optional (XX) version suffix")]
    Malformed,
}

impl CertNumber {
    /// `0000000000000000`: never a real certificate; a placeholder where none is known.
    pub const ZERO: CertNumber = CertNumber(0);

    /// The number for these 16 digits, if it is in range (below 10^16).
    pub const fn from_u64(n: u64) -> Option<Self> {
        if n < TEN_16 {
            Some(CertNumber(n))
        } else {
            None
        }
    }

    /// Builds a number from its parts; `None` when a part is out of range.
    pub fn from_parts(year: u16, body: u8, product: ProductCode, serial: u32) -> Option<Self> {
        if year > 9999 || body > 99 || serial > 999_999 {
            return None;
        }
        Some(CertNumber(
            u64::from(year) * 1_000_000_000_000
                + u64::from(body) * 10_000_000_000
                + u64::from(product.get()) * 1_000_000
                + u64::from(serial),
        ))
    }

    /// The 16 digits as an integer.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Year of first issue (digits 1-4).
    pub const fn year(self) -> u16 {
        (self.0 / 1_000_000_000_000) as u16
    }

    /// Certification body (digits 5-6; `01` is CQC).
    pub const fn body(self) -> u8 {
        ((self.0 / 10_000_000_000) % 100) as u8
    }

    /// Product code (digits 7-10).
    pub fn product_code(self) -> ProductCode {
        ProductCode::new(((self.0 / 1_000_000) % 10_000) as u16).unwrap_or(ProductCode::ZERO)
    }

    /// Serial (digits 11-16).
    pub const fn serial(self) -> u32 {
        (self.0 % 1_000_000) as u32
    }

    /// Normalises what a merchant typed, as `spec/verdicts.md` says: NFKC (full-width to
    /// ASCII), white space and `-` dropped, a leading `CCC`, `3C` or `NO.` (any case) with an
    /// optional `:` dropped; what remains must be 16 digits, optionally followed by a `(XX)`
    /// version suffix.
    ///
    /// Allocation-free: the normalised characters go to a small stack buffer.
    pub fn normalize(input: &str) -> Result<ParsedCertNumber, CertNumberError> {
        // Most numbers arrive as the bare 16 digits: read them without the general path.
        if let Ok(digits) = <&[u8; 16]>::try_from(input.as_bytes())
            && let Some(number) = sixteen_digits(digits)
        {
            return Ok(ParsedCertNumber {
                number: CertNumber(number),
                suffix: None,
            });
        }
        let mut buf = [0u8; MAX_NORMALISED];
        let mut len = 0usize;
        let mut overflow = false;
        let mut push = |c: char| {
            if c.is_whitespace() || c == '-' {
                return;
            }
            // A non-ASCII character left after NFKC can never be part of a number; it still
            // counts as "something typed", so it becomes a marker byte that fails the digit test.
            let b = if c.is_ascii() { c as u8 } else { 0xFF };
            if len < MAX_NORMALISED {
                buf[len] = b;
                len += 1;
            } else {
                overflow = true;
            }
        };
        if input.is_ascii() {
            // NFKC is the identity on ASCII: skip it on the common path, a byte at a time.
            for &b in input.as_bytes() {
                if matches!(b, b' ' | b'\t'..=b'\r' | b'-') {
                    continue;
                }
                if len < MAX_NORMALISED {
                    buf[len] = b;
                    len += 1;
                } else {
                    overflow = true;
                }
            }
        } else if is_simple(input) {
            input.chars().filter_map(simple_nfkc).for_each(&mut push);
        } else {
            input.nfkc().for_each(&mut push);
        }
        if overflow {
            return Err(CertNumberError::Malformed);
        }
        let mut s = &buf[..len];
        for prefix in [&b"CCC"[..], b"3C", b"NO."] {
            if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
                s = &s[prefix.len()..];
                if let [b':', rest @ ..] = s {
                    s = rest;
                }
                break;
            }
        }
        if s.is_empty() {
            return Err(CertNumberError::Empty);
        }
        parse_digits_and_suffix(s)
    }

    /// Reads a certificate number from the feed: 16 digits with an optional `(XX)` suffix,
    /// after NFKC (text fields may be full-width) and trimming. No prefixes or separators are
    /// accepted there: the register writes numbers in their canonical form.
    pub fn parse_feed(text: &str) -> Result<ParsedCertNumber, CertNumberError> {
        let t: std::borrow::Cow<'_, str> = if text.is_ascii() {
            text.trim().into()
        } else {
            text.nfkc().collect::<String>().trim().to_owned().into()
        };
        if t.is_empty() {
            return Err(CertNumberError::Empty);
        }
        parse_digits_and_suffix(t.as_bytes())
    }
}

/// The value of 16 ASCII digits, or `None` if one is not a digit: eight at a time, in two
/// words (the SWAR digit check and conversion of simdjson's `parse_eight_digits_unrolled`).
#[inline]
fn sixteen_digits(b: &[u8; 16]) -> Option<u64> {
    const NIBBLE_HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    const THREES: u64 = 0x3030_3030_3030_3030;
    const SIXES: u64 = 0x0606_0606_0606_0606;
    let (hi, lo) = b.split_at(8);
    let word = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or_default());
    let (hi, lo) = (word(hi), word(lo));
    // A byte is a digit when its high nibble is 3 and adding 6 keeps it so (0x30..=0x39).
    let digits = |w: u64| w & NIBBLE_HIGH == THREES && (w + SIXES) & NIBBLE_HIGH == THREES;
    if !digits(hi) || !digits(lo) {
        return None;
    }
    let eight = |w: u64| {
        let w = (w & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(2561) >> 8;
        let w = (w & 0x00FF_00FF_00FF_00FF).wrapping_mul(6_553_601) >> 16;
        (w & 0x0000_FFFF_0000_FFFF).wrapping_mul(42_949_672_960_001) >> 32
    };
    Some(eight(hi) * 100_000_000 + eight(lo))
}

fn parse_digits_and_suffix(s: &[u8]) -> Result<ParsedCertNumber, CertNumberError> {
    if s.len() < 16 || !s[..16].iter().all(u8::is_ascii_digit) {
        return Err(CertNumberError::Malformed);
    }
    let number = s[..16]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    let suffix = match &s[16..] {
        [] => None,
        [b'(', a, b, b')'] if a.is_ascii_alphanumeric() && b.is_ascii_alphanumeric() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => return Err(CertNumberError::Malformed),
    };
    Ok(ParsedCertNumber {
        number: CertNumber(number),
        suffix,
    })
}

impl fmt::Display for CertNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016}", self.0)
    }
}

impl fmt::Display for ParsedCertNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.number)?;
        if let Some([a, b]) = self.suffix {
            write!(f, "({}{})", a as char, b as char)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::inconsistent_digit_grouping)] // year, body, product, serial
    const N: u64 = 2021_01_0901_000123;

    fn norm(s: &str) -> Result<u64, CertNumberError> {
        CertNumber::normalize(s).map(|p| p.number.get())
    }

    #[test]
    fn sixteen_digits_at_once_read_as_the_digits_one_by_one() {
        let slow = |s: &[u8; 16]| {
            s.iter()
                .all(u8::is_ascii_digit)
                .then(|| s.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
        };
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut s = *format!("{:016}", x % TEN_16)
                .as_bytes()
                .first_chunk::<16>()
                .unwrap();
            if i % 2 == 1 {
                // One byte anywhere made any value: mostly not a digit.
                s[(x % 16) as usize] = (x >> 40) as u8;
            }
            assert_eq!(sixteen_digits(&s), slow(&s), "{s:?}");
        }
        for edge in [
            *b"0000000000000000",
            *b"9999999999999999",
            *b"000000000000000/",
            *b":000000000000000",
        ] {
            assert_eq!(sixteen_digits(&edge), slow(&edge));
        }
    }

    #[test]
    fn plain_sixteen_digits_parse_to_the_integer() {
        assert_eq!(norm("2021010901000123"), Ok(N));
    }

    #[test]
    fn parts_are_read_from_the_integer() {
        let n = CertNumber::from_u64(N).unwrap();
        assert_eq!(n.year(), 2021);
        assert_eq!(n.body(), 1);
        assert_eq!(n.product_code().get(), 901);
        assert_eq!(n.serial(), 123);
        assert_eq!(
            CertNumber::from_parts(2021, 1, ProductCode::new(901).unwrap(), 123),
            Some(n)
        );
        assert_eq!(n.to_string(), "2021010901000123");
    }

    #[test]
    fn full_width_digits_are_normalised() {
        assert_eq!(norm("２０２１０１０９０１０００１２３"), Ok(N));
    }

    #[test]
    fn white_space_and_dashes_are_dropped() {
        assert_eq!(norm(" 2021 0109 0100 0123 "), Ok(N));
        assert_eq!(norm("2021-01-0901-000123"), Ok(N));
        assert_eq!(norm("2021\u{3000}0109－01000123"), Ok(N));
        assert_eq!(norm("2021\t01\n0901000123"), Ok(N));
    }

    #[test]
    fn prefixes_are_dropped_in_any_case_with_optional_colon() {
        for s in [
            "CCC2021010901000123",
            "ccc:2021010901000123",
            "CCC: 2021010901000123",
            "3C2021010901000123",
            "3c:2021010901000123",
            "3C：2021010901000123",
            "NO.2021010901000123",
            "no.:2021010901000123",
            "No. 2021010901000123",
            "ＣＣＣ：２０２１０１０９０１０００１２３",
        ] {
            assert_eq!(norm(s), Ok(N), "{s}");
        }
    }

    #[test]
    fn version_suffix_is_ignored_for_lookup_but_kept() {
        let p = CertNumber::normalize("2022221101000119(B0)").unwrap();
        assert_eq!(p.number.get(), 2022221101000119);
        assert_eq!(p.suffix, Some(*b"B0"));
        let q = CertNumber::normalize("２０２２２２１１０１０００１１９（Ｂ０）").unwrap();
        assert_eq!(q, p);
        assert_eq!(p.to_string(), "2022221101000119(B0)");
        assert_eq!(
            CertNumber::normalize("2022221101000119(b0)")
                .unwrap()
                .suffix,
            Some(*b"B0")
        );
    }

    #[test]
    fn empty_after_normalisation_is_missing() {
        for s in ["", "   ", "-", " - - ", "CCC", "3C:", "no.", "\u{3000}"] {
            assert_eq!(norm(s), Err(CertNumberError::Empty), "{s:?}");
        }
    }

    #[test]
    fn anything_else_is_malformed() {
        for s in [
            "202101090100012",
            "20210109010001234",
            "2021010901000123(B)",
            "2021010901000123(B01)",
            "2021010901000123B0",
            "2021O10901000123",
            "CCC3C2021010901000123",
            "证书2021010901000123",
            "2021010901000123号",
            "abc",
            &"1".repeat(200),
        ] {
            assert_eq!(norm(s), Err(CertNumberError::Malformed), "{s:?}");
        }
    }

    #[test]
    fn feed_numbers_accept_full_width_but_not_prefixes() {
        assert_eq!(
            CertNumber::parse_feed("２０２１０１０９０１０００１２３")
                .unwrap()
                .number
                .get(),
            N
        );
        assert_eq!(
            CertNumber::parse_feed(" 2021010901000123 ")
                .unwrap()
                .number
                .get(),
            N
        );
        assert_eq!(
            CertNumber::parse_feed("CCC2021010901000123"),
            Err(CertNumberError::Malformed)
        );
        assert_eq!(
            CertNumber::parse_feed("2021-0109-01000123"),
            Err(CertNumberError::Malformed)
        );
        assert_eq!(CertNumber::parse_feed(""), Err(CertNumberError::Empty));
    }

    #[test]
    fn out_of_range_integers_are_not_numbers() {
        assert!(CertNumber::from_u64(TEN_16).is_none());
        assert!(CertNumber::from_u64(TEN_16 - 1).is_some());
    }
}
