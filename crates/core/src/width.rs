//! A fast path for the non-ASCII text merchants actually type: full-width ASCII.
//!
//! NFKC maps the full-width forms U+FF01..U+FF5E to ASCII U+0021..U+007E and the ideographic
//! space U+3000 to a space, one character to one; ASCII is unchanged and never composes with
//! another ASCII character. So for text made only of those, NFKC is this per-character map,
//! which is ten times cheaper than the general algorithm. Anything else takes the general path.

/// NFKC of `c` when it is ASCII, a full-width ASCII form or the ideographic space.
#[inline]
pub(crate) fn simple_nfkc(c: char) -> Option<char> {
    match c {
        '\0'..='\x7f' => Some(c),
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0),
        '\u{3000}' => Some(' '),
        _ => None,
    }
}

/// Whether every character of `s` has a [`simple_nfkc`] form.
#[inline]
pub(crate) fn is_simple(s: &str) -> bool {
    s.chars().all(|c| simple_nfkc(c).is_some())
}

#[cfg(test)]
mod tests {
    use unicode_normalization::UnicodeNormalization;

    use super::*;

    #[test]
    fn simple_map_equals_nfkc_on_every_character_it_covers() {
        let covered = (0u32..0x80)
            .chain(0xFF01..=0xFF5E)
            .chain([0x3000])
            .filter_map(char::from_u32);
        for c in covered {
            let want: String = c.to_string().nfkc().collect();
            assert_eq!(
                simple_nfkc(c).map(String::from),
                Some(want),
                "U+{:04X}",
                c as u32
            );
        }
        for c in ['é', '\u{FF65}', '\u{FFE5}', '号', '\u{0301}'] {
            assert_eq!(simple_nfkc(c), None, "U+{:04X}", c as u32);
        }
    }
}
