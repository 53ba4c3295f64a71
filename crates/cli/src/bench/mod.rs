//! `cccgate bench`: the engine, gRPC, attack and year benchmarks.

mod attack;
mod engine;
mod grpc;
mod snapload;
mod year;

use clap::Subcommand;

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The check engine alone, over a snapshot of N synthetic records.
    Engine(engine::Args),
    /// The gRPC service on loopback.
    Grpc(grpc::Args),
    /// A normal caller's p99 while the gateway is attacked, against no attack.
    Attack(attack::Args),
    /// One attack of `bench attack`, run in a process of its own (started by `bench attack`).
    #[command(hide = true)]
    Attacker(attack::AttackerArgs),
    /// What loading a snapshot costs at a swap: private memory against the file mapped.
    SnapshotLoad(snapload::Args),
    /// A year of listing events of a profile (2021 or 2025), against a gateway.
    Year(year::Args),
}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Engine(args) => engine::run(args),
        Command::Grpc(args) => grpc::run(args),
        Command::Attack(args) => attack::run(args),
        Command::Attacker(args) => attack::run_attacker(args),
        Command::SnapshotLoad(args) => snapload::run(args),
        Command::Year(args) => year::run(args),
    }
}
