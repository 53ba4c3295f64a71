//! The embedded sample register: a small feed drop checked in under `sample-drop/` and
//! compiled into the binary, so `cccgate serve` with no flags answers real verdicts at once.
//!
//! # Design
//!
//! The sample goes through the real loader, exactly like a drop from the regulator: its files
//! are written to a temporary directory and loaded, so the sample cannot drift from the feed
//! contract without failing at start-up (and in this module's test).

use cccgate_core::{Decision, ListingEvent, Policy, Reason, Status, check};
use cccgate_loader::{LoadError, LoadOutcome, Loader};
use cccgate_snapshot::{Snapshot, SnapshotError};

/// Where the sample says it came from, in `Admin.GetStatus`.
pub const SAMPLE_ORIGIN: &str = "embedded sample";

const FILES: [(&str, &[u8]); 3] = [
    (
        "manifest.json",
        include_bytes!("../sample-drop/manifest.json"),
    ),
    (
        "catalogue.csv",
        include_bytes!("../sample-drop/catalogue.csv"),
    ),
    (
        "certificates.csv",
        include_bytes!("../sample-drop/certificates.csv"),
    ),
];

/// Why the sample cannot be loaded (a build defect, reported rather than panicking).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SampleError {
    /// Writing the files to a temporary directory failed.
    #[error("cannot unpack the embedded sample: {0}")]
    Io(#[from] std::io::Error),
    /// The loader refused the sample.
    #[error("the embedded sample drop is refused: {0}")]
    Load(#[from] LoadError),
    /// The built snapshot does not verify.
    #[error("the embedded sample snapshot is invalid: {0}")]
    Snapshot(#[from] SnapshotError),
    /// The loader called the sample stale (cannot happen with no snapshot in force).
    #[error("the embedded sample drop was skipped as stale")]
    Stale,
}

/// Loads the embedded sample register.
pub fn sample_snapshot() -> Result<Snapshot, SampleError> {
    let dir = tempfile::Builder::new()
        .prefix("cccgate-sample-")
        .tempdir()?;
    for (name, bytes) in FILES {
        std::fs::write(dir.path().join(name), bytes)?;
    }
    match Loader::default().load(dir.path(), None)? {
        LoadOutcome::Built { bytes, .. } => Ok(Snapshot::from_bytes(bytes)?),
        LoadOutcome::Stale { .. } => Err(SampleError::Stale),
    }
}

/// A listing to try against the sample, with the verdict it gets.
#[derive(Clone, Debug)]
pub struct Example {
    /// The listing (its `event_time` is fixed, so the verdict does not depend on the clock).
    pub listing: ListingEvent,
    /// The decision it gets under the default policy.
    pub decision: Decision,
    /// Its reason.
    pub reason: Reason,
}

/// Examples over `snapshot`: a valid certificate with one of its models (ALLOW), and a revoked
/// one (BLOCK), when the register has them. The event time is the feed's `generated_at`.
pub fn examples(snapshot: &Snapshot) -> Vec<Example> {
    let event_time = snapshot.generated_at().to_owned();
    let Ok(day) = cccgate_core::Day::parse_rfc3339_cn(&event_time) else {
        return Vec::new();
    };
    let pick = |status: Status| {
        snapshot
            .iter()
            .filter(|c| c.status == status && c.expires >= day)
            .max_by_key(|c| (c.expires, std::cmp::Reverse(c.number)))
    };
    let mut out = Vec::new();
    for (i, status) in [Status::Valid, Status::Revoked].into_iter().enumerate() {
        let Some(cert) = pick(status) else { continue };
        let model = snapshot
            .record(cert.number)
            .and_then(|r| r.models.first().cloned())
            .unwrap_or_default();
        let listing = ListingEvent {
            listing_id: format!("L{}", i + 1),
            merchant_id: "M1".into(),
            product_code: format!("{:04}", cert.product_code.get()),
            certificate_number: cert.number.to_string(),
            model,
            event_time: event_time.clone(),
        };
        let Ok(parsed) = listing.listing(day) else {
            continue;
        };
        let v = check(snapshot, &parsed, &Policy::default());
        let (decision, reason) = (v.decision, v.reason);
        out.push(Example {
            listing,
            decision,
            reason,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_sample_loads_with_every_status() {
        let s = sample_snapshot().unwrap();
        let counts = s.counts();
        assert!(counts.total >= 20, "{counts:?}");
        for status in Status::ALL {
            assert!(
                counts.of(status) > 0,
                "no {status} certificate in the sample"
            );
        }
        assert!(s.catalogue().entries().len() >= 5);
    }

    #[test]
    fn sample_examples_allow_a_valid_certificate_and_block_a_revoked_one() {
        let s = sample_snapshot().unwrap();
        let ex = examples(&s);
        assert_eq!(ex.len(), 2);
        assert_eq!(
            (ex[0].decision, ex[0].reason),
            (Decision::Allow, Reason::CertificateValid)
        );
        assert!(!ex[0].listing.model.is_empty());
        assert_eq!(
            (ex[1].decision, ex[1].reason),
            (Decision::Block, Reason::CertificateRevoked)
        );
    }
}
