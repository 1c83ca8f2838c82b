//! `fhirsync init`: writes a commented `fhirsync.toml` and a key pair for Epic's sandbox, a
//! production Epic or any SMART server ([`fhirsync::init`]); asks for what the flags leave out
//! when stdin is a terminal.

use std::io::IsTerminal;

use fhirsync::init::{Prompter, init};

use crate::Globals;

/// Arguments of `fhirsync init`.
pub type Args = fhirsync::init::Args;

/// Runs the command.
pub async fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let next_steps = if !args.no_input && std::io::stdin().is_terminal() {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut output = std::io::stderr();
        init(&args, &globals.config, Some(Prompter { input: &mut input, output: &mut output }))?
    } else {
        init(&args, &globals.config, None)?
    };
    print!("{next_steps}");
    Ok(())
}
