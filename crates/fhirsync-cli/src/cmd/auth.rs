//! `fhirsync auth ...`.

use crate::Globals;

/// Subcommands of `fhirsync auth`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

/// Runs the command.
pub async fn run(command: Command, _globals: &Globals) -> anyhow::Result<()> {
    match command {}
}
