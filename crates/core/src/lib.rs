//! Domain types and rules of cccgate, pure: no I/O, no clocks, no wire types.
//!
//! Everything that decides a verdict lives here: certificate numbers and their normalisation,
//! the five statuses, China-time calendar days, the product catalogue, models, the listing
//! event and the decision table of `spec/verdicts.md`.
//!
//! # Design
//!
//! The decision table ([`check`]) is generic over a [`Register`], the read-only view of a
//! certificate register. The snapshot crate implements it over a memory-mapped archive; tests
//! implement it over a small in-memory map. A check borrows everything it returns from the
//! register and the listing, so deciding one listing allocates nothing.

#![deny(missing_docs)]

mod catalogue;
mod cert;
mod check;
mod date;
mod event;
mod explain;
mod listing;
mod model;
#[cfg(test)]
mod proptests;
mod record;
mod status;
mod verdict;
mod width;

pub use catalogue::{Catalogue, CatalogueEntry, CatalogueError, ConformityMode, ProductCode};
pub use cert::{CertNumber, CertNumberError, ParsedCertNumber};
pub use check::{Register, check, check_all, check_found};
pub use date::{DateError, Day};
pub use event::ListingEvent;
pub use explain::{Explanation, explain};
pub use listing::{
    CERTIFICATE_NUMBER_MAX_BYTES, ID_MAX_BYTES, Listing, ListingError, MODEL_MAX_BYTES,
};
pub use model::{ModelKey, model_key, normalize_model, split_models};
pub use record::{CertificateRecord, CertificateRef, Models};
pub use status::{Status, StatusError};
pub use verdict::{CertFacts, Decision, Policy, PolicyError, Reason, Verdict};
