//! `fhirsync demo`.

use crate::Globals;

/// Arguments of `fhirsync demo`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub async fn run(_args: Args, _globals: &Globals) -> anyhow::Result<()> {
    anyhow::bail!("`fhirsync demo` is not built yet")
}
