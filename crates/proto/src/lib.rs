//! Generated gRPC types and conversions to core types.

#![deny(missing_docs)]
