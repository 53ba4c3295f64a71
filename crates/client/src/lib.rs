//! A client of the gateway: what a caller needs to send listings and read verdicts over
//! gRPC. The benchmarks (load generation, pacing, the embedded gateway) are in
//! `cccgate-bench`, which builds on this crate; a client links neither the gateway nor the
//! synthetic generator.
//!
//! - [`replay`]: a file of listing events (JSON lines or CSV, plain or gzip) through
//!   `CheckStream` or `CheckBatch`, one verdict line out per record in input order, a summary,
//!   retries with backoff and an exact `--skip` to resume.
//! - [`connect`]: channels over several HTTP/2 connections, a codec that only moves bytes,
//!   retries of what is retryable.
//! - [`wire`], [`input`], [`output`]: requests encoded from borrowed text, responses read in
//!   place, listing files read (JSON lines, CSV, gzip), verdict lines written.
//! - [`summary`], [`progress`]: the counts and latencies of a run, and its progress on stderr.
//! - [`merge`]: the summaries of a replay split into shards (`--shard I/N`) merged into the
//!   whole run's.
//!
//! # Design
//!
//! The client's hot path never builds a prost message: requests are encoded straight from
//! borrowed text into one buffer per chunk, responses are read in place from the received
//! bytes ([`wire`]), and tonic only moves bytes ([`connect::RawCodec`]). At a million checks a
//! second on two cores shared with the gateway, the allocations of the generated types would
//! cost as much as the gateway's work.

#![deny(missing_docs)]

pub mod connect;
pub mod input;
pub mod merge;
pub mod output;
pub mod progress;
pub mod replay;
pub mod summary;
pub mod watch;
pub mod wire;
