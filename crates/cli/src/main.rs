//! `cccgate`: the one binary. It parses arguments and calls into the library crates; each
//! subcommand lives in its own module.

mod bench;
mod caller;
mod feed;
mod load;
mod replay;
mod report;
mod serve;
mod synth;
mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cccgate",
    version,
    about = "CCC listing-interception gateway, feed loader and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gRPC gateway (with no flags: a built-in sample register on 127.0.0.1:50051).
    Serve(Box<serve::Args>),
    /// Turn regulator feed drops into snapshots; verify, inspect and diff snapshots.
    #[command(subcommand)]
    Load(load::Command),
    /// Operator tools for feed drops (signing).
    #[command(subcommand)]
    Feed(feed::Command),
    /// Generate a deterministic synthetic register, listing streams and feed drops.
    #[command(subcommand)]
    Synth(synth::Command),
    /// Replay a file of listing events against a gateway and summarise the verdicts.
    Replay(Box<replay::Args>),
    /// The regulator's report from decision logs: per month, category, reason and caller,
    /// checks, distinct merchants and distinct listings blocked (JSON or one HTML page).
    Report(Box<report::Args>),
    /// Print the gateway's change feed (which certificates changed, per swap and at China-time
    /// midnight) as JSON lines, until stopped.
    Watch(watch::Args),
    /// Benchmarks: the check engine, the gRPC service, a year of load.
    #[command(subcommand)]
    Bench(bench::Command),
}

fn main() -> ExitCode {
    // Before any thread or large buffer: the gateway (served or embedded in a benchmark)
    // gives freed memory back instead of keeping up to 64 MiB a heap.
    cccgate_server::watch::limit_allocator_retention();
    let result = match Cli::parse().command {
        Command::Serve(args) => serve::run(*args),
        Command::Load(cmd) => load::run(cmd),
        Command::Feed(cmd) => feed::run(cmd),
        Command::Synth(cmd) => synth::run(cmd),
        Command::Replay(args) => replay::run(*args),
        Command::Report(args) => report::run(*args),
        Command::Watch(args) => watch::run(args),
        Command::Bench(cmd) => bench::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An operator's error is a message, not a crash: the cause chain without the
            // backtrace anyhow would print under RUST_BACKTRACE.
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
