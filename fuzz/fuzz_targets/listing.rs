//! Listing validation: any six strings give a listing or an error naming a field.
#![no_main]

use cccgate_core::{Day, Listing};
use libfuzzer_sys::fuzz_target;

const FIELDS: [&str; 6] = [
    "listing_id",
    "merchant_id",
    "product_code",
    "certificate_number",
    "model",
    "event_time",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{0}');
    let mut f = || parts.next().unwrap_or("");
    let (a, b, c, d, e, t) = (f(), f(), f(), f(), f(), f());
    let day = Day::from_ymd(2026, 11, 29).expect("a day");
    match Listing::parse(a, b, c, d, e, t, day) {
        Ok(_) => {}
        Err(err) => assert!(FIELDS.contains(&err.field()), "{}", err.field()),
    }
});
