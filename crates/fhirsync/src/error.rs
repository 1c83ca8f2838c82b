//! The one error type of the library, with the class a caller maps to an exit code
//! ([`Error::kind`]) and the fix to show after the cause chain ([`Error::hint`]).

use std::path::PathBuf;

/// A boxed error from a stage that has its own type.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, as a caller reacts to it (the CLI maps each to an exit code).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A setting is missing or wrong (bad TOML, unknown key, unreadable PEM, bad argument).
    Config,
    /// Authentication failed (token endpoint refused, login not completed).
    Auth,
    /// The FHIR source failed (unreachable, TLS, malformed answers).
    Source,
    /// The destination failed (or the push ledger, which is the write-back's destination).
    Destination,
    /// Anything else.
    Internal,
}

/// Every failure of a [`crate::Sync`], [`crate::Discover`], [`crate::Push`] or
/// [`crate::Status`]. `Display` says what failed; the cause is the [`std::error::Error::source`]
/// chain; [`Error::hint`] is the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is wrong: the problem names the setting and the fix.
    #[error("{problem}")]
    Config {
        /// What is wrong (and how to fix it, when there is no underlying error).
        problem: String,
        /// The fix, shown after the cause chain.
        fix: Option<&'static str>,
        /// The underlying error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// A file the run needs cannot be read or written.
    #[error("cannot {action} {path}")]
    File {
        /// What was being done ("read", "write the result file", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Authentication failed before anything was read or written.
    #[error("cannot authenticate; nothing was changed at the destination")]
    Authenticate {
        /// Why (an [`fhirsync_auth::Error`] inside, for the providers of this workspace).
        #[source]
        source: fhirsync_core::TokenError,
    },
    /// An auth operation (key, token store, login) failed.
    #[error(transparent)]
    Auth(Box<fhirsync_auth::Error>),
    /// A FHIR request failed.
    #[error(transparent)]
    Fhir(Box<fhirsync_fhir::Error>),
    /// A `[connection]` setting is wrong.
    #[error(transparent)]
    Connection(Box<fhirsync_core::Error>),
    /// An extraction setting is wrong (found while building the client or the plan).
    #[error(transparent)]
    ExtractSettings(Box<fhirsync_extract::Error>),
    /// A view setting or ViewDefinition is wrong.
    #[error(transparent)]
    Views(#[from] fhirsync_views::Error),
    /// A destination setting is wrong.
    #[error(transparent)]
    DestinationSettings(Box<fhirsync_land::Error>),
    /// The extraction stopped; what was landed before is intact and the next run resumes.
    #[error("extraction failed")]
    Extract {
        /// Why.
        #[source]
        source: Box<fhirsync_extract::Error>,
    },
    /// The destination failed.
    #[error("destination {destination}")]
    Destination {
        /// Which (path, folder or schema; never credentials).
        destination: String,
        /// Why.
        #[source]
        source: Box<fhirsync_land::Error>,
    },
    /// The destination's run history cannot be read.
    #[error("cannot read the run history of {destination}")]
    History {
        /// Which destination.
        destination: String,
        /// Why.
        #[source]
        source: Box<fhirsync_land::Error>,
    },
    /// A value stored in a committed run's report cannot be read by this version.
    #[error("the report of run {run_id} at {destination} holds an unreadable `{field}`")]
    StoredReport {
        /// Which destination.
        destination: String,
        /// The run whose report it is.
        run_id: String,
        /// The report field.
        field: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// An input line of a file to flatten cannot be read.
    #[error("cannot read input line {line}")]
    Input {
        /// 1-based line.
        line: usize,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An input line of a file to flatten is not JSON.
    #[error("input line {line} is not valid JSON")]
    InputJson {
        /// 1-based line.
        line: usize,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A view failed on a resource of the input.
    #[error("view `{view}` failed on input line {line} (resource id {id})")]
    ViewFailed {
        /// View name.
        view: String,
        /// 1-based line.
        line: usize,
        /// Resource id, `?` when it has none.
        id: String,
        /// Why.
        #[source]
        source: Box<fhirsync_views::Error>,
    },
    /// Rows cannot be written to the output.
    #[error("cannot write the rows")]
    Output {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A question could not be asked or answered on the terminal.
    #[error("cannot ask on the terminal")]
    Terminal {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server's CapabilityStatement cannot be used.
    #[error("the {version} CapabilityStatement cannot be read")]
    Capabilities {
        /// Endpoint version.
        version: fhirsync_core::FhirVersion,
        /// What is wrong with it.
        #[source]
        source: fhirsync_extract::StatementError,
    },
    /// No configured endpoint answered its CapabilityStatement.
    #[error("no endpoint answered its CapabilityStatement: {problems}")]
    NoEndpoint {
        /// What each endpoint answered.
        problems: String,
    },
    /// Every probe search was refused with HTTP 401 even with a fresh token.
    #[error(
        "every search was refused with HTTP 401 even with a fresh access token: check the client's \
         registration, its background user and the scopes it was granted"
    )]
    EveryProbeUnauthorized,
    /// The cohort could not be resolved to pick probe patients.
    #[error("cannot resolve the cohort for probe patients")]
    ProbeCohort {
        /// Why.
        #[source]
        source: Box<fhirsync_extract::Error>,
    },
    /// The push ledger (the write-back's record of what was filed) failed.
    #[error(transparent)]
    Ledger(#[from] crate::push::ledger::LedgerError),
    /// Lines of the push file are invalid, so nothing was sent.
    #[error(
        "{invalid} of {lines} lines of {} are invalid; nothing was sent. Fix them (problems in {}) or pass \
         --skip-invalid to send the valid ones", file.display(), results.display()
    )]
    InvalidLines {
        /// Invalid lines.
        invalid: usize,
        /// All lines with a resource.
        lines: usize,
        /// The file.
        file: PathBuf,
        /// Result file.
        results: PathBuf,
    },
    /// The push stopped at a line; the lines before it are recorded.
    #[error("push stopped at line {line}; lines before it are in {} and in the ledger {}", results.display(), ledger.display())]
    PushStopped {
        /// Line of the file.
        line: usize,
        /// Result file.
        results: PathBuf,
        /// Ledger file.
        ledger: PathBuf,
        /// Why.
        #[source]
        source: Box<crate::push::guard::GuardError>,
    },
    /// The metrics file cannot be written.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// A background task stopped (a panic in a blocking reader or writer).
    #[error("the {task} stopped")]
    Task {
        /// Which task.
        task: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The simulator failed to start or to change its data.
    #[cfg(feature = "sim")]
    #[error("the simulator")]
    Sim {
        /// Why.
        #[source]
        source: Box<fhirsync_sim::Error>,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A configuration problem with no underlying error.
    pub fn config(problem: impl Into<String>) -> Error {
        Error::Config { problem: problem.into(), fix: None, source: None }
    }

    /// A configuration problem caused by `source`, with the fix shown after the cause.
    pub fn config_from(
        problem: impl Into<String>,
        source: impl Into<BoxError>,
        fix: Option<&'static str>,
    ) -> Error {
        Error::Config { problem: problem.into(), fix, source: Some(source.into()) }
    }

    /// The class of the failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. }
            | Error::Metrics(_)
            | Error::InvalidLines { .. }
            | Error::Views(_)
            | Error::Connection(_)
            | Error::DestinationSettings(_) => ErrorKind::Config,
            Error::File { .. } => ErrorKind::Config,
            Error::Authenticate { source } => source.downcast_ref().map_or(ErrorKind::Auth, auth_kind),
            Error::Auth(source) => auth_kind(source),
            Error::Fhir(e) => fhir_kind(e),
            Error::Extract { source } | Error::ExtractSettings(source) => extract_kind(source),
            Error::Destination { .. }
            | Error::History { .. }
            | Error::StoredReport { .. }
            | Error::Ledger(_) => ErrorKind::Destination,
            Error::Capabilities { .. } | Error::NoEndpoint { .. } | Error::ProbeCohort { .. } => {
                ErrorKind::Source
            }
            Error::EveryProbeUnauthorized => ErrorKind::Auth,
            Error::PushStopped { source, .. } => match source.as_ref() {
                crate::push::guard::GuardError::Ledger(_) => ErrorKind::Destination,
                crate::push::guard::GuardError::Fhir(f) => fhir_kind(f),
            },
            Error::Task { .. } | Error::Terminal { .. } | Error::Output { .. } => ErrorKind::Internal,
            Error::Input { .. } | Error::InputJson { .. } | Error::ViewFailed { .. } => ErrorKind::Config,
            #[cfg(feature = "sim")]
            Error::Sim { .. } => ErrorKind::Internal,
        }
    }

    /// The fix to show after the cause chain, when the failure has a standard one.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Config { fix, .. } => *fix,
            Error::ProbeCohort { .. } => Some("pass --patient <FHIR id>"),
            Error::Extract { .. } => Some("what was landed before is intact; rerun to resume"),
            _ => None,
        }
    }
}

impl ErrorKind {
    /// Class of an auth-crate error (for callers that use [`crate::auth`] directly).
    pub fn of_auth(e: &fhirsync_auth::Error) -> ErrorKind {
        auth_kind(e)
    }

    /// Class of a FHIR-client error (for callers that use [`crate::fhir`] directly).
    pub fn of_fhir(e: &fhirsync_fhir::Error) -> ErrorKind {
        fhir_kind(e)
    }
}

/// Class of an auth error: configuration, unreachable source, or refused authentication.
fn auth_kind(e: &fhirsync_auth::Error) -> ErrorKind {
    use fhirsync_auth::Error as E;
    match e {
        e if e.is_config() => ErrorKind::Config,
        E::Unreachable { .. } | E::HttpClient { .. } | E::Discovery { .. } => ErrorKind::Source,
        _ => ErrorKind::Auth,
    }
}

/// Class of a FHIR client error: a rejected token is authentication, the rest is the source.
fn fhir_kind(e: &fhirsync_fhir::Error) -> ErrorKind {
    use fhirsync_fhir::Error as E;
    match e {
        E::Token(_) | E::Unauthorized { .. } => ErrorKind::Auth,
        E::TransportSetup(_) => ErrorKind::Config,
        _ => ErrorKind::Source,
    }
}

/// Class of an extraction error: its FHIR cause, a configuration problem, or the source.
fn extract_kind(e: &fhirsync_extract::Error) -> ErrorKind {
    use fhirsync_extract::Error as E;
    match e {
        E::Fhir(f) => fhir_kind(f),
        E::InvalidConfig { .. } | E::ConfigSyntax { .. } | E::Connection(_) => ErrorKind::Config,
        _ => ErrorKind::Source,
    }
}

impl From<fhirsync_extract::Error> for Error {
    /// Extraction-crate errors outside a run (client building, planning) are configuration
    /// problems or source failures, by their kind.
    fn from(source: fhirsync_extract::Error) -> Error {
        match extract_kind(&source) {
            ErrorKind::Config => Error::ExtractSettings(Box::new(source)),
            _ => Error::Extract { source: Box::new(source) },
        }
    }
}

impl From<fhirsync_auth::Error> for Error {
    fn from(e: fhirsync_auth::Error) -> Error {
        Error::Auth(Box::new(e))
    }
}

impl From<fhirsync_fhir::Error> for Error {
    fn from(e: fhirsync_fhir::Error) -> Error {
        Error::Fhir(Box::new(e))
    }
}

impl Error {
    /// A destination failure of `destination`.
    pub(crate) fn destination(destination: impl Into<String>, source: fhirsync_land::Error) -> Error {
        Error::Destination { destination: destination.into(), source: Box::new(source) }
    }

    /// The run history of `destination` cannot be read.
    pub(crate) fn history(destination: impl Into<String>, source: fhirsync_land::Error) -> Error {
        Error::History { destination: destination.into(), source: Box::new(source) }
    }

    /// A `[connection]` setting is wrong.
    pub(crate) fn connection(source: fhirsync_core::Error) -> Error {
        Error::Connection(Box::new(source))
    }

    /// An extraction setting is wrong.
    pub(crate) fn extract_settings(source: fhirsync_extract::Error) -> Error {
        Error::ExtractSettings(Box::new(source))
    }
}
