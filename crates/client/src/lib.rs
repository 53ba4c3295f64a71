//! Replay of listing files and load generation over gRPC: what operators and capacity
//! planners run against a gateway.
//!
//! - [`replay`]: a file of listing events (JSON lines or CSV, plain or gzip) through
//!   `CheckStream` or `CheckBatch`, one verdict line out per record in input order, a summary,
//!   retries with backoff and an exact `--skip` to resume.
//! - [`year`]: a profile's year of checks (2021: 81.769M) generated on the fly, paced along
//!   the year's curve ([`pace`]) or as fast as the gateway answers, every verdict checked
//!   against the reason the generator expects.
//! - [`grpc`]: the gRPC service's throughput and latency by RPC, and under snapshot swaps.
//! - [`embedded`]: the real gateway started in-process over a cached synthetic snapshot.
//!
//! # Design
//!
//! The client's hot path never builds a prost message: requests are encoded straight from
//! borrowed text into one buffer per chunk, responses are read in place from the received
//! bytes ([`wire`]), and tonic only moves bytes ([`connect::RawCodec`]). At a million checks a
//! second on two cores shared with the gateway, the allocations of the generated types would
//! cost as much as the gateway's work.

#![deny(missing_docs)]

pub mod bench;
pub mod connect;
pub mod embedded;
pub mod grpc;
pub mod input;
pub mod load;
pub mod output;
pub mod pace;
pub mod progress;
pub mod replay;
pub mod summary;
pub mod wire;
pub mod year;
