//! The gRPC contract of cccgate (`proto/cccgate/v1/`): generated prost types and tonic stubs,
//! and the conversions between them and the domain types of `cccgate-core`.
//!
//! # Design
//!
//! Wire types stop here. A wire [`v1::Listing`] becomes a validated
//! [`cccgate_core::Listing`] that *borrows* its text from the request
//! ([`v1::Listing::validate`]), so validation allocates nothing; a bad listing becomes an
//! [`InvalidListing`] naming the listing id and the field. A [`cccgate_core::Verdict`] becomes a
//! wire [`v1::Verdict`] with [`verdict_to_wire`], allocating only the response's own strings.
//! The check engine and the snapshot never see a prost type.

#![deny(missing_docs)]

mod convert;

pub use convert::{
    CertificateText, InvalidListing, certificate_to_wire, decision_from_wire, reason_from_wire,
    status_from_wire, verdict_to_wire,
};

/// `cccgate.v1`, generated from `proto/cccgate/v1/cccgate.proto` (never edited by hand).
#[allow(missing_docs, clippy::doc_lazy_continuation)]
pub mod v1 {
    tonic::include_proto!("cccgate.v1");
}

/// The encoded file descriptor set of `cccgate.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("cccgate_descriptor");
