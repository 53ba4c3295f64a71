//! Property tests: normalisation is total and idempotent; the decision table gives every
//! listing exactly one verdict, the same alone or in a batch, with the policy's decision.

use proptest::prelude::*;

use crate::{CertNumber, model_key, normalize_model, split_models};

/// Text that mixes ASCII, full-width forms, CJK, compatibility characters and white space:
/// where normalisation has work to do.
fn messy() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[A-Za-z0-9 \\-_/()（）]{0,8}",
        "[０-９Ａ-Ｚａ-ｚ　－]{0,6}",
        "[\\u{4e00}-\\u{4e20}]{0,4}",
        "[ﬀﬁ①ⅣＸ㎏ß]{0,3}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..4).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn model_normalisation_is_total_and_idempotent(text in messy()) {
        let once = normalize_model(&text);
        prop_assert_eq!(normalize_model(&once), once.clone());
        // The key is the key of the normal form (or none when nothing is left).
        prop_assert_eq!(model_key(&text), model_key(&once));
        prop_assert_eq!(model_key(&text).is_none(), once.is_empty());
        for m in split_models(&text) {
            prop_assert!(!m.trim().is_empty());
        }
    }

    #[test]
    fn certificate_number_normalisation_is_total_and_round_trips(text in messy()) {
        if let Ok(p) = CertNumber::normalize(&text) {
            let again = CertNumber::normalize(&p.number.to_string()).unwrap();
            prop_assert_eq!(again.number, p.number);
        }
        let _ = CertNumber::parse_feed(&text);
    }

    #[test]
    fn any_sixteen_digits_in_any_width_normalise_to_the_same_number(
        digits in "20[0-9]{14}",
        full_width in any::<bool>(),
        dashes in any::<bool>(),
    ) {
        let mut text: String = if full_width {
            digits.chars().map(|c| char::from_u32(c as u32 - '0' as u32 + '０' as u32).unwrap()).collect()
        } else {
            digits.clone()
        };
        if dashes {
            let at = text.char_indices().nth(4).map_or(text.len(), |(i, _)| i);
            text.insert(at, '-');
        }
        if let Ok(plain) = CertNumber::normalize(&digits) {
            prop_assert_eq!(CertNumber::normalize(&text).map(|p| p.number), Ok(plain.number));
        }
    }
}
