//! Decisions, reasons, operator policy and the verdict.

use std::fmt;
use std::str::FromStr;

use crate::catalogue::ProductCode;
use crate::cert::CertNumber;
use crate::date::Day;
use crate::status::Status;

/// What a verdict reports of the certificate it found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CertFacts<'a> {
    /// The certificate number.
    pub number: CertNumber,
    /// Its status.
    pub status: Status,
    /// The product code it covers.
    pub product_code: ProductCode,
    /// Its producer (`生产者名称`).
    pub producer: &'a str,
    /// Its expiry date: valid through that day, China time.
    pub expires: Day,
}

/// What the marketplace should do with the listing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Decision {
    /// Publish.
    Allow,
    /// Intercept or take down.
    Block,
    /// Hold for a person to look at.
    Review,
}

impl Decision {
    /// All decisions.
    pub const ALL: [Decision; 3] = [Decision::Allow, Decision::Block, Decision::Review];

    /// `ALLOW`, `BLOCK` or `REVIEW`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "ALLOW",
            Decision::Block => "BLOCK",
            Decision::Review => "REVIEW",
        }
    }
}

impl FromStr for Decision {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        Decision::ALL
            .into_iter()
            .find(|d| d.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| PolicyError::UnknownDecision(s.to_owned()))
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why: the rule of the decision table that matched. The order is the table's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Reason {
    /// Rule 1.
    NotInCatalogue = 0,
    /// Rule 2.
    SelfDeclarationProduct,
    /// Rule 3.
    CertificateMissing,
    /// Rule 4.
    CertificateMalformed,
    /// Rule 5.
    CertificateNotFound,
    /// Rule 6.
    CertificateSuspended,
    /// Rule 7.
    CertificateRevoked,
    /// Rule 8.
    CertificateCancelled,
    /// Rule 9.
    CertificateExpired,
    /// Rule 10.
    ProductMismatch,
    /// Rule 11.
    ModelNotCovered,
    /// Rule 12.
    CertificateValid,
}

impl Reason {
    /// Number of reasons.
    pub const COUNT: usize = 12;

    /// All reasons, in table order.
    pub const ALL: [Reason; Reason::COUNT] = [
        Reason::NotInCatalogue,
        Reason::SelfDeclarationProduct,
        Reason::CertificateMissing,
        Reason::CertificateMalformed,
        Reason::CertificateNotFound,
        Reason::CertificateSuspended,
        Reason::CertificateRevoked,
        Reason::CertificateCancelled,
        Reason::CertificateExpired,
        Reason::ProductMismatch,
        Reason::ModelNotCovered,
        Reason::CertificateValid,
    ];

    /// The spec's name, e.g. `CERTIFICATE_VALID`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NotInCatalogue => "NOT_IN_CATALOGUE",
            Reason::SelfDeclarationProduct => "SELF_DECLARATION_PRODUCT",
            Reason::CertificateMissing => "CERTIFICATE_MISSING",
            Reason::CertificateMalformed => "CERTIFICATE_MALFORMED",
            Reason::CertificateNotFound => "CERTIFICATE_NOT_FOUND",
            Reason::CertificateSuspended => "CERTIFICATE_SUSPENDED",
            Reason::CertificateRevoked => "CERTIFICATE_REVOKED",
            Reason::CertificateCancelled => "CERTIFICATE_CANCELLED",
            Reason::CertificateExpired => "CERTIFICATE_EXPIRED",
            Reason::ProductMismatch => "PRODUCT_MISMATCH",
            Reason::ModelNotCovered => "MODEL_NOT_COVERED",
            Reason::CertificateValid => "CERTIFICATE_VALID",
        }
    }

    /// The decision the table gives for this reason, before any operator override.
    pub const fn table_decision(self) -> Decision {
        match self {
            Reason::NotInCatalogue | Reason::SelfDeclarationProduct | Reason::CertificateValid => {
                Decision::Allow
            }
            Reason::ModelNotCovered => Decision::Review,
            _ => Decision::Block,
        }
    }

    /// Position in the table, 0-based.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl FromStr for Reason {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| PolicyError::UnknownReason(s.to_owned()))
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An override that cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not a reason of the table.
    #[error("unknown reason {0:?}")]
    UnknownReason(String),
    /// Not ALLOW, BLOCK or REVIEW.
    #[error("unknown decision {0:?}: expected ALLOW, BLOCK or REVIEW")]
    UnknownDecision(String),
    /// Not `REASON=DECISION`.
    #[error("policy override {0:?} is not REASON=DECISION")]
    Shape(String),
}

/// The operator's mapping of reasons to decisions. The reason itself never changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    decisions: [Decision; Reason::COUNT],
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            decisions: Reason::ALL.map(Reason::table_decision),
        }
    }
}

impl Policy {
    /// The decision for a reason.
    #[inline]
    pub fn decision(&self, reason: Reason) -> Decision {
        self.decisions[reason.index()]
    }

    /// Maps `reason` to `decision`.
    pub fn set(&mut self, reason: Reason, decision: Decision) {
        self.decisions[reason.index()] = decision;
    }

    /// Applies an override written `REASON=DECISION`, e.g. `MODEL_NOT_COVERED=BLOCK`.
    pub fn apply_override(&mut self, text: &str) -> Result<(), PolicyError> {
        let (r, d) = text
            .split_once('=')
            .ok_or_else(|| PolicyError::Shape(text.to_owned()))?;
        self.set(r.parse()?, d.parse()?);
        Ok(())
    }

    /// The overrides that differ from the table, as `(reason, decision)`.
    pub fn overrides(&self) -> impl Iterator<Item = (Reason, Decision)> + '_ {
        Reason::ALL
            .into_iter()
            .filter(|r| self.decision(*r) != r.table_decision())
            .map(|r| (r, self.decision(r)))
    }
}

/// The answer for one listing, borrowed from the register that decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// What to do, after the operator's policy.
    pub decision: Decision,
    /// Which rule matched.
    pub reason: Reason,
    /// The sequence of the snapshot that decided it.
    pub snapshot_sequence: u64,
    /// The certificate, when one was found.
    pub certificate: Option<CertFacts<'a>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_decisions_follow_the_spec() {
        let allow = [
            Reason::NotInCatalogue,
            Reason::SelfDeclarationProduct,
            Reason::CertificateValid,
        ];
        for r in Reason::ALL {
            let want = if allow.contains(&r) {
                Decision::Allow
            } else if r == Reason::ModelNotCovered {
                Decision::Review
            } else {
                Decision::Block
            };
            assert_eq!(Policy::default().decision(r), want, "{r}");
        }
    }

    #[test]
    fn overrides_change_the_decision_not_the_reason() {
        let mut p = Policy::default();
        p.apply_override("MODEL_NOT_COVERED=BLOCK").unwrap();
        p.apply_override("certificate_not_found=review").unwrap();
        assert_eq!(p.decision(Reason::ModelNotCovered), Decision::Block);
        assert_eq!(p.decision(Reason::CertificateNotFound), Decision::Review);
        assert_eq!(p.overrides().count(), 2);
        assert!(matches!(
            p.apply_override("NOPE=BLOCK"),
            Err(PolicyError::UnknownReason(_))
        ));
        assert!(matches!(
            p.apply_override("MODEL_NOT_COVERED=MAYBE"),
            Err(PolicyError::UnknownDecision(_))
        ));
        assert!(matches!(
            p.apply_override("MODEL_NOT_COVERED"),
            Err(PolicyError::Shape(_))
        ));
    }

    #[test]
    fn reason_names_round_trip() {
        for r in Reason::ALL {
            assert_eq!(r.as_str().parse::<Reason>().unwrap(), r);
            assert_eq!(Reason::ALL[r.index()], r);
        }
    }
}
