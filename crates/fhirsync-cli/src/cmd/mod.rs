//! One module per subcommand; each has an `Args`/`Command` clap type and an async `run` that
//! calls the `fhirsync` library and renders its report.

pub mod auth;
pub mod demo;
pub mod discover;
pub mod init;
pub mod keys;
pub mod push;
pub mod sandbox;
pub mod status;
pub mod sync;
pub mod views;

use fhirsync::ErrorKind;

/// Exit code: configuration problem (bad TOML, unknown key, missing setting, unreadable PEM).
pub const EXIT_CONFIG: u8 = 2;
/// Exit code: authentication failed (token endpoint refused, login not completed).
pub const EXIT_AUTH: u8 = 3;
/// Exit code: the FHIR source failed (unreachable, TLS, malformed responses).
pub const EXIT_SOURCE: u8 = 4;
/// Exit code: the destination failed.
pub const EXIT_DESTINATION: u8 = 5;
/// Exit code: the sync committed, but with gaps: some scopes could not be proven complete
/// (failed pages, unnamed suppressions, a narrowed licence); their rows were kept, not deleted.
pub const EXIT_GAPS: u8 = 6;
/// Exit code: anything else.
pub const EXIT_INTERNAL: u8 = 1;

/// A failure of the command itself (not of a library operation), tagged with its exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// What went wrong and how to fix it.
    pub message: String,
}

impl Failure {
    /// A configuration failure.
    pub fn config(message: impl Into<String>) -> anyhow::Error {
        Failure { code: EXIT_CONFIG, message: message.into() }.into()
    }
}

/// The exit code of a class of library failures.
pub fn kind_code(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Config => EXIT_CONFIG,
        ErrorKind::Auth => EXIT_AUTH,
        ErrorKind::Source => EXIT_SOURCE,
        ErrorKind::Destination => EXIT_DESTINATION,
        _ => EXIT_INTERNAL,
    }
}

/// Maps an error chain to a documented exit code: the outermost tagged cause decides.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
        if let Some(e) = cause.downcast_ref::<fhirsync::Error>() {
            return kind_code(e.kind());
        }
        // A token provider's failure arrives wrapped in a `TokenError` (the trait lives in core).
        let token = cause.downcast_ref::<fhirsync::core::TokenError>().and_then(|t| t.downcast_ref());
        if let Some(e) = cause.downcast_ref::<fhirsync::auth::Error>().or(token) {
            return kind_code(ErrorKind::of_auth(e));
        }
        if let Some(e) = cause.downcast_ref::<fhirsync::fhir::Error>() {
            return kind_code(ErrorKind::of_fhir(e));
        }
    }
    EXIT_INTERNAL
}

/// The error and its causes, outermost first, joined by `: `; a cause whose text the message
/// already holds (a stage that quotes its source) is not repeated.
pub fn chain_text(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause its parent already quotes is printed once; the others follow after `: `; a
    /// library failure maps to its kind's exit code.
    #[test]
    fn chain_is_printed_once_and_mapped() {
        let err = anyhow::anyhow!("disk full").context("cannot write x: disk full").context("run failed");
        assert_eq!(chain_text(&err), "run failed: cannot write x: disk full");
        let err = anyhow::Error::from(fhirsync::Error::config("bad key")).context("while loading");
        assert_eq!(exit_code(&err), EXIT_CONFIG);
        assert_eq!(exit_code(&anyhow::anyhow!("other")), EXIT_INTERNAL);
    }
}
