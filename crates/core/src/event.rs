//! The listing event as it travels in files and streams: the spec's six input fields, owned.
//!
//! [`ListingEvent`] is the serde shape of `spec/verdicts.md`'s input (JSON lines, CSV rows)
//! used by the synthetic generator, replay and tests. It is not validated; [`ListingEvent::listing`]
//! validates it into a borrowed [`Listing`], the one place the spec's limits are checked.

use serde::{Deserialize, Serialize};

use crate::date::Day;
use crate::listing::{Listing, ListingError};

/// One listing event with exactly the spec's input fields, all text. A field absent from a
/// JSON object reads as empty (so a missing required field is reported by validation, naming
/// the field, not by the deserialiser).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct ListingEvent {
    /// The marketplace's id of the listing (required, 1..128 bytes).
    pub listing_id: String,
    /// The seller (required, 1..128 bytes).
    pub merchant_id: String,
    /// The 4-digit CCC product code, or empty for a category outside CCC.
    pub product_code: String,
    /// The certificate number as the merchant typed it.
    pub certificate_number: String,
    /// The model the listing sells.
    pub model: String,
    /// RFC 3339 instant, or empty for "when the gateway receives it".
    pub event_time: String,
}

impl ListingEvent {
    /// Validates the event; an empty `event_time` means `received_day` (the UTC+8 day the
    /// gateway received it).
    pub fn listing(&self, received_day: Day) -> Result<Listing<'_>, ListingError> {
        Listing::parse(
            &self.listing_id,
            &self.merchant_id,
            &self.product_code,
            &self.certificate_number,
            &self.model,
            &self.event_time,
            received_day,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_json_fields_read_as_empty_and_fail_validation_by_name() {
        let e: ListingEvent = serde_json::from_str(r#"{"listing_id":"L1"}"#).unwrap();
        assert_eq!(e.merchant_id, "");
        let day = Day::from_ymd(2026, 11, 27).unwrap();
        assert_eq!(
            e.listing(day).unwrap_err(),
            ListingError::Missing("merchant_id")
        );
    }

    #[test]
    fn event_validates_into_a_listing_on_its_own_day() {
        let e = ListingEvent {
            listing_id: "L1".into(),
            merchant_id: "M1".into(),
            product_code: "0901".into(),
            certificate_number: "2021010901000123".into(),
            model: "X1".into(),
            event_time: "2026-11-30T16:30:00Z".into(),
        };
        let l = e.listing(Day::from_ymd(2026, 11, 27).unwrap()).unwrap();
        assert_eq!(l.event_day, Day::from_ymd(2026, 12, 1).unwrap());
        assert_eq!(l.product_code.map(|c| c.get()), Some(901));
        let back: ListingEvent = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
