//! Conversions between wire types and core types, in both directions.
//!
//! The hot direction (wire listing in, verdict out) borrows on the way in and allocates only
//! the response strings on the way out; the other direction (verdict on the wire back to core
//! enums, core events to wire listings) serves clients, replay and tests.

use cccgate_core::{
    CertFacts, Decision, Listing, ListingError, ListingEvent, Reason, Status, Verdict,
};

use crate::v1;

/// A listing that is a bad request: which listing, and which field is at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("listing {listing_id:?}: {error}")]
pub struct InvalidListing {
    /// The listing's id as sent, cut to at most 128 bytes (empty when it was missing).
    pub listing_id: String,
    /// What is wrong, naming the field.
    pub error: ListingError,
}

impl InvalidListing {
    /// The field at fault.
    pub fn field(&self) -> &'static str {
        self.error.field()
    }

    /// The wire form of the error, for a batch or stream entry.
    pub fn to_wire(&self) -> v1::ListingError {
        v1::ListingError {
            field: self.error.field().to_owned(),
            message: self.error.to_string(),
        }
    }

    /// The wire result of a bad listing: its id and the error.
    pub fn to_result(&self) -> v1::ListingResult {
        v1::ListingResult {
            listing_id: self.listing_id.clone(),
            outcome: Some(v1::listing_result::Outcome::Error(self.to_wire())),
        }
    }
}

impl v1::Listing {
    /// Validates this listing, borrowing its text (no allocation unless it is bad).
    /// `received_day` is the China-time day the gateway received it, used when `event_time`
    /// is empty.
    pub fn validate(&self, received_day: cccgate_core::Day) -> Result<Listing<'_>, InvalidListing> {
        Listing::parse(
            &self.listing_id,
            &self.merchant_id,
            &self.product_code,
            &self.certificate_number,
            &self.model,
            &self.event_time,
            received_day,
        )
        .map_err(|error| InvalidListing {
            listing_id: cut(&self.listing_id, cccgate_core::ID_MAX_BYTES).to_owned(),
            error,
        })
    }
}

impl From<ListingEvent> for v1::Listing {
    fn from(e: ListingEvent) -> Self {
        v1::Listing {
            listing_id: e.listing_id,
            merchant_id: e.merchant_id,
            product_code: e.product_code,
            certificate_number: e.certificate_number,
            model: e.model,
            event_time: e.event_time,
        }
    }
}

impl From<&ListingEvent> for v1::Listing {
    fn from(e: &ListingEvent) -> Self {
        e.clone().into()
    }
}

impl From<v1::Listing> for ListingEvent {
    fn from(l: v1::Listing) -> Self {
        ListingEvent {
            listing_id: l.listing_id,
            merchant_id: l.merchant_id,
            product_code: l.product_code,
            certificate_number: l.certificate_number,
            model: l.model,
            event_time: l.event_time,
        }
    }
}

/// The wire verdict of a core verdict. Allocates only the certificate's strings, if any.
pub fn verdict_to_wire(v: &Verdict<'_>) -> v1::Verdict {
    v1::Verdict {
        decision: v1::Decision::from(v.decision) as i32,
        reason: v1::Reason::from(v.reason) as i32,
        snapshot_sequence: v.snapshot_sequence,
        certificate: v.certificate.as_ref().map(certificate_to_wire),
    }
}

/// The wire form of what a verdict reports of a certificate.
pub fn certificate_to_wire(c: &CertFacts<'_>) -> v1::Certificate {
    let t = CertificateText::of(c);
    v1::Certificate {
        number: ascii_string(&t.number),
        status: t.status,
        product_code: ascii_string(&t.product_code),
        producer: c.producer.to_owned(),
        expiry_date: ascii_string(&t.expiry_date),
    }
}

/// The fixed-width text fields of a wire `Certificate` (ASCII), on the stack: the one
/// formatting both [`certificate_to_wire`] and encoders writing the bytes directly use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertificateText {
    /// 16 digits.
    pub number: [u8; 16],
    /// The wire `CertificateStatus` number.
    pub status: i32,
    /// 4 digits.
    pub product_code: [u8; 4],
    /// `YYYY-MM-DD`.
    pub expiry_date: [u8; 10],
}

impl CertificateText {
    /// The text of `c`'s number, product code and expiry date, and its status number.
    #[inline]
    pub fn of(c: &CertFacts<'_>) -> Self {
        let (y, m, d) = c.expires.ymd();
        let mut expiry_date = [0u8; 10];
        // Years outside 0..=9999 cannot come from a feed date; clamp rather than mis-format.
        put_digits(&mut expiry_date[0..4], y.clamp(0, 9999) as u64);
        expiry_date[4] = b'-';
        put_digits(&mut expiry_date[5..7], u64::from(m));
        expiry_date[7] = b'-';
        put_digits(&mut expiry_date[8..10], u64::from(d));
        let mut number = [0u8; 16];
        put_digits(&mut number, c.number.get());
        let mut product_code = [0u8; 4];
        put_digits(&mut product_code, u64::from(c.product_code.get()));
        CertificateText {
            number,
            status: v1::CertificateStatus::from(c.status) as i32,
            product_code,
            expiry_date,
        }
    }
}

/// Writes `n` as zero-padded decimal filling `out` (the low digits, if `n` is wider).
/// Cheaper than `format!` on the hot path: no formatter, one exact-size allocation later.
/// Two digits a step from a table; a field of more than 8 digits (a certificate number) is
/// written as two independent halves, so the two chains of divisions overlap.
#[inline]
fn put_digits(out: &mut [u8], n: u64) {
    if out.len() > 8 {
        let (high, low) = out.split_at_mut(out.len() - 8);
        put_digits_u32(low, (n % 100_000_000) as u32);
        put_digits(high, n / 100_000_000);
    } else {
        // At most 8 digits: only the low 8 are written, as before.
        put_digits_u32(out, (n % 100_000_000) as u32);
    }
}

/// At most 8 digits of `n` (`out.len() <= 8`).
#[inline]
fn put_digits_u32(out: &mut [u8], mut n: u32) {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut end = out.len();
    while end >= 2 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        out[end - 2..end].copy_from_slice(&PAIRS[pair..pair + 2]);
        end -= 2;
    }
    if end == 1 {
        out[0] = b'0' + (n % 10) as u8;
    }
}

fn ascii_string(bytes: &[u8]) -> String {
    // Only ASCII digits and '-' are ever written: from_utf8 cannot fail.
    String::from(std::str::from_utf8(bytes).unwrap_or_default())
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl From<Decision> for v1::Decision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Allow => v1::Decision::Allow,
            Decision::Block => v1::Decision::Block,
            Decision::Review => v1::Decision::Review,
        }
    }
}

impl v1::Decision {
    /// The core decision, or `None` for `DECISION_UNSPECIFIED`.
    pub fn to_core(self) -> Option<Decision> {
        match self {
            v1::Decision::Unspecified => None,
            v1::Decision::Allow => Some(Decision::Allow),
            v1::Decision::Block => Some(Decision::Block),
            v1::Decision::Review => Some(Decision::Review),
        }
    }
}

impl From<Reason> for v1::Reason {
    fn from(r: Reason) -> Self {
        // The wire numbers are the table's rule numbers: index + 1.
        v1::Reason::try_from(r.index() as i32 + 1).unwrap_or(v1::Reason::Unspecified)
    }
}

impl v1::Reason {
    /// The core reason, or `None` for `REASON_UNSPECIFIED`.
    pub fn to_core(self) -> Option<Reason> {
        let n = self as i32;
        if n < 1 {
            return None;
        }
        Reason::ALL.get((n - 1) as usize).copied()
    }
}

impl From<Status> for v1::CertificateStatus {
    fn from(s: Status) -> Self {
        v1::CertificateStatus::try_from(i32::from(s.code()))
            .unwrap_or(v1::CertificateStatus::Unspecified)
    }
}

impl v1::CertificateStatus {
    /// The core status, or `None` for `CERTIFICATE_STATUS_UNSPECIFIED`.
    pub fn to_core(self) -> Option<Status> {
        u8::try_from(self as i32).ok().and_then(Status::from_code)
    }
}

/// The core decision of a wire decision number (`None`: unspecified or unknown). Readers
/// that see raw numbers (a client reading responses in place) map them here, so the wire
/// numbering lives in one place.
pub fn decision_from_wire(n: i32) -> Option<Decision> {
    v1::Decision::try_from(n).ok()?.to_core()
}

/// The core reason of a wire reason number (the table's rule number).
pub fn reason_from_wire(n: i32) -> Option<Reason> {
    v1::Reason::try_from(n).ok()?.to_core()
}

/// The core status of a wire certificate status number (the feed's code).
pub fn status_from_wire(n: i32) -> Option<Status> {
    v1::CertificateStatus::try_from(n).ok()?.to_core()
}

#[cfg(test)]
mod tests {
    use cccgate_core::{CertNumber, Day, ProductCode};

    use super::*;

    #[test]
    fn digits_are_what_format_writes_zero_padded_low_digits_kept() {
        let mut n = 1u64;
        let mut values = vec![0, 9, 10, 99, 100, 12_345_678, 99_999_999, 100_000_000];
        values.extend([2021010901000123, 9_999_999_999_999_999, u64::MAX]);
        while n < u64::MAX / 7 {
            values.extend([n, n - 1, n + 1]);
            n *= 7;
        }
        for v in values {
            for width in 1..=20 {
                let mut out = vec![b'x'; width];
                put_digits(&mut out, v);
                let full = format!("{v:020}");
                assert_eq!(
                    std::str::from_utf8(&out).unwrap(),
                    &full[20 - width..],
                    "{v} in {width}"
                );
            }
        }
    }

    fn day() -> Day {
        Day::from_ymd(2026, 11, 27).unwrap()
    }

    fn wire(id: &str, merchant: &str, code: &str) -> v1::Listing {
        v1::Listing {
            listing_id: id.into(),
            merchant_id: merchant.into(),
            product_code: code.into(),
            certificate_number: "CCC 2021010901000123".into(),
            model: "X1".into(),
            event_time: String::new(),
        }
    }

    #[test]
    fn valid_wire_listing_borrows_its_text() {
        let w = wire("L1", "M1", "0901");
        let l = w.validate(day()).unwrap();
        assert_eq!(l.listing_id.as_ptr(), w.listing_id.as_ptr());
        assert_eq!(l.certificate_number.as_ptr(), w.certificate_number.as_ptr());
        assert_eq!(l.product_code, ProductCode::new(901));
        assert_eq!(l.event_day, day());
    }

    #[test]
    fn bad_wire_listing_names_listing_and_field() {
        let err = wire("L7", "", "0901").validate(day()).unwrap_err();
        assert_eq!(err.listing_id, "L7");
        assert_eq!(err.field(), "merchant_id");
        assert_eq!(err.to_string(), "listing \"L7\": merchant_id is required");
        let err = wire("L8", "M", "9x").validate(day()).unwrap_err();
        assert_eq!(err.to_wire().field, "product_code");
        let r = err.to_result();
        assert_eq!(r.listing_id, "L8");
        assert!(matches!(
            r.outcome,
            Some(v1::listing_result::Outcome::Error(_))
        ));
    }

    #[test]
    fn overlong_listing_id_is_cut_in_the_error_on_a_char_boundary() {
        let id = "证".repeat(100); // 300 bytes
        let err = wire(&id, "M", "").validate(day()).unwrap_err();
        assert_eq!(err.field(), "listing_id");
        assert!(err.listing_id.len() <= 128);
        assert!(id.starts_with(&err.listing_id));
    }

    #[test]
    fn verdict_with_certificate_converts_every_field() {
        let v = Verdict {
            decision: Decision::Block,
            reason: Reason::CertificateExpired,
            snapshot_sequence: 77,
            certificate: Some(CertFacts {
                number: CertNumber::from_u64(2021010901000123).unwrap(),
                status: Status::Expired,
                product_code: ProductCode::new(901).unwrap(),
                producer: "某某电子有限公司",
                expires: Day::from_ymd(2026, 3, 9).unwrap(),
            }),
        };
        let w = verdict_to_wire(&v);
        assert_eq!(w.decision(), v1::Decision::Block);
        assert_eq!(w.reason(), v1::Reason::CertificateExpired);
        assert_eq!(w.snapshot_sequence, 77);
        let c = w.certificate.unwrap();
        assert_eq!(c.number, "2021010901000123");
        assert_eq!(c.status(), v1::CertificateStatus::Expired);
        assert_eq!(c.product_code, "0901");
        assert_eq!(c.producer, "某某电子有限公司");
        assert_eq!(c.expiry_date, "2026-03-09");
    }

    #[test]
    fn verdict_without_certificate_has_none() {
        let v = Verdict {
            decision: Decision::Allow,
            reason: Reason::NotInCatalogue,
            snapshot_sequence: 1,
            certificate: None,
        };
        assert_eq!(verdict_to_wire(&v).certificate, None);
    }

    #[test]
    fn raw_wire_numbers_map_to_core_enums_and_unknown_ones_to_none() {
        for d in Decision::ALL {
            assert_eq!(decision_from_wire(v1::Decision::from(d) as i32), Some(d));
        }
        for r in Reason::ALL {
            assert_eq!(reason_from_wire(r.index() as i32 + 1), Some(r));
        }
        for st in Status::ALL {
            assert_eq!(status_from_wire(i32::from(st.code())), Some(st));
        }
        for n in [0, -1, 99, i32::MAX] {
            assert_eq!(decision_from_wire(n), None);
            assert_eq!(reason_from_wire(n), None);
            assert_eq!(status_from_wire(n), None);
        }
    }

    #[test]
    fn enums_round_trip_and_wire_numbers_are_the_table_rules() {
        for (i, r) in Reason::ALL.into_iter().enumerate() {
            let w = v1::Reason::from(r);
            assert_eq!(w as i32, i as i32 + 1);
            assert_eq!(w.as_str_name(), format!("REASON_{}", r.as_str()));
            assert_eq!(w.to_core(), Some(r));
        }
        for d in Decision::ALL {
            let w = v1::Decision::from(d);
            assert_eq!(w.as_str_name(), format!("DECISION_{}", d.as_str()));
            assert_eq!(w.to_core(), Some(d));
        }
        for s in Status::ALL {
            let w = v1::CertificateStatus::from(s);
            assert_eq!(
                w.as_str_name(),
                format!("CERTIFICATE_STATUS_{}", s.as_str())
            );
            assert_eq!(w.to_core(), Some(s));
        }
        assert_eq!(v1::Reason::Unspecified.to_core(), None);
        assert_eq!(v1::Decision::Unspecified.to_core(), None);
        assert_eq!(v1::CertificateStatus::Unspecified.to_core(), None);
    }

    #[test]
    fn listing_events_and_wire_listings_convert_both_ways() {
        let e = ListingEvent {
            listing_id: "L1".into(),
            merchant_id: "M1".into(),
            product_code: "0901".into(),
            certificate_number: "2021010901000123".into(),
            model: "X1".into(),
            event_time: "2026-11-27T10:00:00+08:00".into(),
        };
        let w = v1::Listing::from(&e);
        assert_eq!(w.event_time, e.event_time);
        assert_eq!(ListingEvent::from(w), e);
    }

    #[test]
    fn descriptor_set_describes_both_services() {
        use prost::Message;
        let fds = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
        let file = fds
            .file
            .iter()
            .find(|f| f.package() == "cccgate.v1")
            .unwrap();
        let services: Vec<&str> = file.service.iter().map(|s| s.name()).collect();
        assert_eq!(services, ["ListingCheck", "Admin"]);
    }
}
