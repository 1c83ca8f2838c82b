//! `fhirsync views ...`.

use crate::Globals;

/// Subcommands of `fhirsync views`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

/// Runs the command.
pub async fn run(command: Command, _globals: &Globals) -> anyhow::Result<()> {
    match command {}
}
