//! The benchmarks of cccgate: what capacity planners run against a gateway, and the check
//! engine alone.
//!
//! - [`engine`]: the check engine (validate + decide) over a snapshot, no network.
//! - [`grpc`]: the gRPC service's throughput and latency by RPC, and under snapshot swaps.
//! - [`year`]: a profile's year of checks (2021: 81.769M) generated on the fly, paced along
//!   the year's curve ([`pace`]) or as fast as the gateway answers, every verdict checked
//!   against the reason the generator expects.
//! - [`attack`]: a normal caller's p99 while the gateway is attacked, against none.
//! - [`drive`]: the one run driver both load benchmarks use: connect, start the senders
//!   ([`load`]), sample the rate, join, count.
//! - [`swap`]: the snapshots the swap benchmark swaps in, in the disk of three; [`soak`]:
//!   the process's memory, descriptors, threads and disk sampled over a long run.
//! - [`secure`]: TLS and caller tokens for an embedded gateway, and the cost of them.
//! - [`snapload`]: what loading a snapshot into private memory costs at a swap.
//! - [`setup`]: the gateway to load (a URL, or [`embedded`]: the real gateway started
//!   in-process over a cached synthetic snapshot) and the listing stream of its register;
//!   [`spawned`]: the gateway as a `cccgate serve` child process instead.
//!
//! The client side (wire encoding, connections, summaries, progress) is `cccgate-client`'s.

#![deny(missing_docs)]

pub mod attack;
pub mod drive;
pub mod embedded;
pub mod engine;
pub mod grpc;
pub mod load;
pub mod pace;
pub mod secure;
pub mod setup;
pub mod snapload;
pub mod soak;
pub mod spawned;
pub mod swap;
pub mod year;

pub use setup::{BenchError, GatewayChoice};
