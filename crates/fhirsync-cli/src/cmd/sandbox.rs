//! `fhirsync sandbox`.

use crate::Globals;

/// Arguments of `fhirsync sandbox`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs the command.
pub async fn run(_args: Args, _globals: &Globals) -> anyhow::Result<()> {
    anyhow::bail!("`fhirsync sandbox` is not built yet")
}
