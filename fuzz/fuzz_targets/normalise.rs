//! Number and model normalisation: total (never panics) and idempotent.
#![no_main]

use cccgate_core::{CertNumber, model_key, normalize_model, split_models};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(p) = CertNumber::normalize(&text) {
        // A normalised number reads back as itself.
        let again = CertNumber::normalize(&p.number.to_string()).expect("round trip");
        assert_eq!(again.number, p.number);
    }
    let _ = CertNumber::parse_feed(&text);
    let once = normalize_model(&text);
    assert_eq!(normalize_model(&once), once, "normalize_model is idempotent");
    assert_eq!(model_key(&text), model_key(&once), "the key of the normal form");
    for m in split_models(&text) {
        let _ = model_key(m);
    }
});
