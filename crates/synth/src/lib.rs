//! Deterministic synthetic register, listing streams and feed drops.

#![deny(missing_docs)]
