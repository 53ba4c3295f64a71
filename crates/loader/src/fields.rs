//! Small parsers shared by the catalogue and certificate readers.
//!
//! The contract lets text fields hold full-width characters. Codes, dates and statuses are
//! parsed as written first and, only when that fails on non-ASCII text, again after NFKC, so
//! `０９０１` or `２０２６年１１月２７日` are read while the common ASCII path pays nothing.

use cccgate_core::Day;
use unicode_normalization::UnicodeNormalization;

/// The message of a field whose bytes are not valid in the drop's encoding.
pub(crate) const UNDECODABLE: &str = "undecodable bytes for the manifest's encoding";

/// Parses `text`, retrying after NFKC when it is not ASCII.
pub(crate) fn parse_with_nfkc<T>(text: &str, parse: impl Fn(&str) -> Option<T>) -> Option<T> {
    match parse(text) {
        Some(v) => Some(v),
        None if !text.is_ascii() => parse(&text.nfkc().collect::<String>()),
        None => None,
    }
}

/// Reads a feed date in any of its three shapes (full-width digits allowed).
pub(crate) fn parse_date(text: &str) -> Result<Day, String> {
    match Day::parse_feed_date(text) {
        Ok(d) => Ok(d),
        Err(e) => {
            if !text.is_ascii()
                && let Ok(d) = Day::parse_feed_date(&text.nfkc().collect::<String>())
            {
                return Ok(d);
            }
            Err(e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_width_dates_and_codes_are_read() {
        let d = Day::from_ymd(2026, 11, 27).unwrap();
        assert_eq!(parse_date("２０２６年１１月２７日"), Ok(d));
        assert_eq!(parse_date("２０２６／１１／２７"), Ok(d));
        assert_eq!(parse_date("2026/11/27"), Ok(d));
        assert!(
            parse_date("2026.11.27")
                .unwrap_err()
                .contains("unreadable date")
        );
        assert_eq!(
            parse_with_nfkc("０９０１", cccgate_core::ProductCode::parse).map(|c| c.get()),
            Some(901)
        );
    }
}
