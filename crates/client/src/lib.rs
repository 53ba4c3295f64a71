//! Replay of listing files and load generation over gRPC.

#![deny(missing_docs)]
