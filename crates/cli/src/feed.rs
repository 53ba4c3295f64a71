//! Not written yet.

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

pub fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {}
}
