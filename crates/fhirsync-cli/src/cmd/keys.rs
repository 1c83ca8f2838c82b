//! `fhirsync keys ...`.

use crate::Globals;

/// Subcommands of `fhirsync keys`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {}

/// Runs the command.
pub async fn run(command: Command, _globals: &Globals) -> anyhow::Result<()> {
    match command {}
}
