//! Deterministic synthetic data for cccgate: a CCC register of realistic size and shape,
//! listing streams whose expected verdict is known, and feed drops in the exact format of
//! `spec/feed.md`.
//!
//! The one design decision to know: **everything is a pure function of a seed**. The same
//! [`RegisterSpec`] gives the same [`SyntheticRegister`] byte for byte; the same register,
//! [`Profile`] and seed give the same [`ListingGenerator`] stream (and the same shards); the
//! same [`DropOptions`] give the same drop files (and checksums). The generator is a small
//! PRNG implemented here, not a crate's, so a dependency update cannot change the data.
//!
//! # Layout
//!
//! - [`catalogue()`]: the 16-category / 96-type catalogue (plus the 2023 removals and the
//!   2024 batteries).
//! - [`RegisterSpec::generate`]: 1.2M certificates in a few seconds (release).
//! - [`ListingGenerator`]: listing events with the reason `cccgate_core::check` gives them,
//!   millions per second per core through [`ListingGenerator::fill`].
//! - [`write_drop`] and [`delta_changes`]: full and delta feed drops, streamed to disk.
//! - [`write_listings`]: listing events as JSON lines or CSV, with an expected-reason file.

#![deny(missing_docs)]

mod catalogue;
mod delta;
mod error;
mod feed;
mod listings;
mod names;
mod output;
mod register;
mod rng;

pub use catalogue::catalogue;
pub use delta::delta_changes;
pub use error::SynthError;
pub use feed::{
    CATALOGUE_COLUMNS, CERTIFICATE_COLUMNS, DropHeader, DropKind, DropOptions, DropSummary,
    EXTRA_COLUMN, Encoding, FileKind, FileSummary, generated_at, write_drop,
};
pub use listings::{
    BLOCK_SPLIT_2021, BLOCK_SPLIT_2025, EventWindow, GeneratedListing, ListingGenerator, Profile,
    ProfileError, TYPED_SHARE,
};
pub use output::{ListingFormat, ListingsSummary, Output, write_listings};
pub use register::{
    NOT_FOUND_SERIAL_FROM, RegisterSpec, SOON_DAYS, SOON_SHARE, STATUS_SHARES, SyntheticRegister,
    count_statuses, default_as_of,
};
