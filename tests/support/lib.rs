//! Shared helpers for the end-to-end tests in `tests/`.

pub mod gateway;
pub mod raw;
pub mod node;
