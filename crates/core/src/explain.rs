//! Why a listing got its verdict: the rule of the decision table that matched and the facts
//! it read, for operators (the console's "explain" form).
//!
//! The decision itself comes from the same [`crate::check`] code the gateway answers with;
//! this module only reads back the facts that code consulted, so an explanation can never
//! disagree with a verdict.

use crate::catalogue::{ConformityMode, ProductCode};
use crate::cert::{CertNumber, CertNumberError};
use crate::check::{Register, decide};
use crate::date::Day;
use crate::listing::Listing;
use crate::model::model_key;
use crate::verdict::{CertFacts, Policy, Reason, Verdict};

/// A verdict and the facts the decision table used to reach it.
#[derive(Clone, Debug)]
pub struct Explanation<'r> {
    /// The verdict, exactly as [`crate::check`] gives it.
    pub verdict: Verdict<'r>,
    /// The rule that matched: its number in the decision table (1..=12).
    pub rule: usize,
    /// The China-time day the listing was decided for.
    pub event_day: Day,
    /// The listing's product code (`None`: not a CCC category).
    pub product_code: Option<ProductCode>,
    /// How the catalogue in force on `event_day` treats that code (`None`: not in it).
    pub catalogue_mode: Option<ConformityMode>,
    /// The certificate number as normalised from what the merchant typed, or why not.
    pub number: Result<CertNumber, CertNumberError>,
    /// The certificate found, if the table got as far as looking it up and found it.
    pub certificate: Option<CertFacts<'r>>,
    /// The model given (normalised key present), and whether the certificate covers it;
    /// `None` when the table did not get to the model rule or no model was given.
    pub model_covered: Option<bool>,
}

impl Reason {
    /// The rule of the decision table, in words (spec/verdicts.md).
    pub const fn rule_text(self) -> &'static str {
        match self {
            Reason::NotInCatalogue => {
                "the product code is not in the CCC catalogue in force on the event day"
            }
            Reason::SelfDeclarationProduct => {
                "the product type is under self-declaration: no certificate is needed"
            }
            Reason::CertificateMissing => "the product needs a certificate and none was given",
            Reason::CertificateMalformed => "the certificate number given is not a valid number",
            Reason::CertificateNotFound => "no certificate with that number is in the register",
            Reason::CertificateSuspended => "the certificate is suspended (暂停)",
            Reason::CertificateRevoked => "the certificate is revoked (撤销)",
            Reason::CertificateCancelled => "the certificate is cancelled (注销)",
            Reason::CertificateExpired => {
                "the certificate had expired (过期失效, or its expiry date is before the event day)"
            }
            Reason::ProductMismatch => {
                "the certificate covers another product code than the listing's"
            }
            Reason::ModelNotCovered => "the certificate does not cover the model given",
            Reason::CertificateValid => "the certificate is valid and covers the listing",
        }
    }
}

/// Decides `listing` as [`crate::check`] does, and reports the rule and the facts it used.
pub fn explain<'r, R: Register>(
    register: &'r R,
    listing: &Listing<'_>,
    policy: &Policy,
) -> Explanation<'r> {
    let number = CertNumber::normalize(listing.certificate_number).map(|p| p.number);
    let (reason, certificate) = decide(register, listing, number);
    let catalogue_mode = listing
        .product_code
        .and_then(|code| register.catalogue_mode(code, listing.event_day));
    // The model rule is reached only past the product rule; report coverage only then.
    let model_covered = match (reason, certificate) {
        (Reason::ModelNotCovered, Some(_)) => Some(false),
        (Reason::CertificateValid, Some(_)) => model_key(listing.model).map(|_| true),
        _ => None,
    };
    Explanation {
        verdict: Verdict {
            decision: policy.decision(reason),
            reason,
            snapshot_sequence: register.sequence(),
            certificate,
        },
        rule: reason.index() + 1,
        event_day: listing.event_day,
        product_code: listing.product_code,
        catalogue_mode,
        number,
        certificate,
        model_covered,
    }
}
