//! The listing event a marketplace sends, validated.
//!
//! A [`Listing`] borrows its text from the request it came from, so validating one allocates
//! nothing; every limit the spec sets is checked here, once, at the edge.

use crate::catalogue::ProductCode;
use crate::date::Day;

/// Longest `listing_id` and `merchant_id`, in bytes.
pub const ID_MAX_BYTES: usize = 128;
/// Longest `certificate_number` as typed, in bytes (a 16-digit number with prefix, suffix and
/// separators fits in well under half of this).
pub const CERTIFICATE_NUMBER_MAX_BYTES: usize = 128;
/// Longest `model`, in bytes.
pub const MODEL_MAX_BYTES: usize = 256;

/// A listing event that passed validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listing<'a> {
    /// The marketplace's id of the listing.
    pub listing_id: &'a str,
    /// The seller.
    pub merchant_id: &'a str,
    /// The CCC product code the marketplace category maps to; `None`: not a CCC category.
    pub product_code: Option<ProductCode>,
    /// The certificate number as the merchant typed it.
    pub certificate_number: &'a str,
    /// The model the listing sells (may be empty).
    pub model: &'a str,
    /// The UTC+8 calendar day of the event.
    pub event_day: Day,
}

/// Why a listing is a bad request. Each names the field at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ListingError {
    /// A required field is empty.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A field is longer than its limit.
    #[error("{field} is {len} bytes, over the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `product_code` is neither empty nor 4 ASCII digits.
    #[error("product_code {0:?} is not 4 digits")]
    BadProductCode(String),
    /// `event_time` is not RFC 3339.
    #[error("event_time {0:?} is not an RFC 3339 time with an offset")]
    BadEventTime(String),
}

impl ListingError {
    /// The field at fault.
    pub fn field(&self) -> &'static str {
        match self {
            ListingError::Missing(f) => f,
            ListingError::TooLong { field, .. } => field,
            ListingError::BadProductCode(_) => "product_code",
            ListingError::BadEventTime(_) => "event_time",
        }
    }
}

impl<'a> Listing<'a> {
    /// Validates the raw fields of a listing event. `event_time` empty means "now", given as
    /// `received_day` (the UTC+8 day the gateway received it).
    pub fn parse(
        listing_id: &'a str,
        merchant_id: &'a str,
        product_code: &str,
        certificate_number: &'a str,
        model: &'a str,
        event_time: &str,
        received_day: Day,
    ) -> Result<Self, ListingError> {
        check_id("listing_id", listing_id)?;
        check_id("merchant_id", merchant_id)?;
        check_len(
            "certificate_number",
            certificate_number,
            CERTIFICATE_NUMBER_MAX_BYTES,
        )?;
        check_len("model", model, MODEL_MAX_BYTES)?;
        let product_code = if product_code.is_empty() {
            None
        } else {
            Some(
                ProductCode::parse(product_code)
                    .ok_or_else(|| ListingError::BadProductCode(truncated(product_code)))?,
            )
        };
        let event_day = if event_time.is_empty() {
            received_day
        } else {
            Day::parse_rfc3339_cn(event_time)
                .map_err(|_| ListingError::BadEventTime(truncated(event_time)))?
        };
        Ok(Listing {
            listing_id,
            merchant_id,
            product_code,
            certificate_number,
            model,
            event_day,
        })
    }
}

fn check_id(field: &'static str, value: &str) -> Result<(), ListingError> {
    if value.is_empty() {
        return Err(ListingError::Missing(field));
    }
    check_len(field, value, ID_MAX_BYTES)
}

fn check_len(field: &'static str, value: &str, max: usize) -> Result<(), ListingError> {
    if value.len() > max {
        return Err(ListingError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    Ok(())
}

/// Quotes at most 64 bytes of a bad value in an error, so a huge field cannot make a huge error.
fn truncated(s: &str) -> String {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> Day {
        Day::from_ymd(2026, 11, 27).unwrap()
    }

    fn parse(id: &str, merchant: &str, code: &str, time: &str) -> Result<(), ListingError> {
        Listing::parse(id, merchant, code, "", "", time, today()).map(|_| ())
    }

    #[test]
    fn required_fields_must_be_present() {
        assert_eq!(
            parse("", "m", "", ""),
            Err(ListingError::Missing("listing_id"))
        );
        assert_eq!(
            parse("l", "", "", ""),
            Err(ListingError::Missing("merchant_id"))
        );
    }

    #[test]
    fn fields_over_their_limit_are_bad_requests() {
        let long = "x".repeat(129);
        assert_eq!(parse(&long, "m", "", "").unwrap_err().field(), "listing_id");
        assert_eq!(
            parse("l", &long, "", "").unwrap_err().field(),
            "merchant_id"
        );
        assert!(parse(&"x".repeat(128), "m", "", "").is_ok());
        let err = Listing::parse("l", "m", "", "", &"y".repeat(257), "", today()).unwrap_err();
        assert_eq!(err.field(), "model");
        let err = Listing::parse("l", "m", "", &"1".repeat(129), "", "", today()).unwrap_err();
        assert_eq!(err.field(), "certificate_number");
    }

    #[test]
    fn product_code_must_be_empty_or_four_digits() {
        assert!(parse("l", "m", "0901", "").is_ok());
        assert!(parse("l", "m", "", "").is_ok());
        for bad in ["901", "09011", "09a1", "０９０１"] {
            assert_eq!(
                parse("l", "m", bad, "").unwrap_err().field(),
                "product_code",
                "{bad}"
            );
        }
    }

    #[test]
    fn event_time_defaults_to_the_day_received_and_is_read_in_china_time() {
        let l = Listing::parse("l", "m", "", "", "", "", today()).unwrap();
        assert_eq!(l.event_day, today());
        let l = Listing::parse("l", "m", "", "", "", "2026-11-30T16:30:00Z", today()).unwrap();
        assert_eq!(l.event_day, Day::from_ymd(2026, 12, 1).unwrap());
        assert_eq!(
            parse("l", "m", "", "yesterday").unwrap_err().field(),
            "event_time"
        );
    }
}
