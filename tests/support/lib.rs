//! Shared helpers for the end-to-end tests in `tests/`.

pub mod gateway;
pub mod node;
pub mod raw;
