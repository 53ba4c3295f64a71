//! The gRPC gateway.

#![deny(missing_docs)]
