//! One module per subcommand; each has an `Args`/`Command` clap type and an async `run`.

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

/// A failure tagged with the exit code it maps to.
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

    /// A FHIR client failure: authentication (3) or source (4).
    pub fn fhir(e: &fhirsync_fhir::Error) -> anyhow::Error {
        Failure { code: fhir_exit_code(e), message: e.to_string() }.into()
    }
}

/// Maps an error chain to a documented exit code.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.code;
        }
        // A token provider's failure arrives wrapped in a `TokenError` (the trait lives in core).
        let token = cause.downcast_ref::<fhirsync_auth::TokenError>().and_then(|t| t.downcast_ref());
        if let Some(e) = cause.downcast_ref::<fhirsync_auth::Error>().or(token) {
            return auth_exit_code(e);
        }
    }
    EXIT_INTERNAL
}

/// Exit code of an auth error: configuration, unreachable source, or refused authentication.
fn auth_exit_code(e: &fhirsync_auth::Error) -> u8 {
    use fhirsync_auth::Error as E;
    match e {
        e if e.is_config() => EXIT_CONFIG,
        E::Unreachable { .. } | E::HttpClient { .. } | E::Discovery { .. } => EXIT_SOURCE,
        _ => EXIT_AUTH,
    }
}

/// Exit code of a FHIR client error: a rejected token is authentication, the rest is the source.
pub fn fhir_exit_code(e: &fhirsync_fhir::Error) -> u8 {
    use fhirsync_fhir::Error as E;
    match e {
        E::Token(_) | E::Unauthorized { .. } => EXIT_AUTH,
        _ => EXIT_SOURCE,
    }
}
