//! The crate's error type.

use std::path::PathBuf;

use crate::outcome::{Outcome, summarize};
use crate::retry::RetryReason;

/// Errors of the FHIR client. URLs in errors are redacted (query values hidden, see
/// [`crate::redact_url`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL that does not parse.
    #[error("invalid URL `{url}`: {source}")]
    InvalidUrl {
        /// The URL as given (redacted).
        url: String,
        /// Cause.
        source: url::ParseError,
    },
    /// The `[connection]` proxy or CA bundle could not be applied.
    #[error(transparent)]
    TransportSetup(#[from] fhirsync_core::TransportSetupError),
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// No access token could be obtained.
    #[error("cannot obtain an access token: {0}")]
    Token(#[from] fhirsync_core::TokenError),
    /// The server rejected the token even after a fresh one was obtained.
    #[error("{url}: HTTP 401 even with a fresh access token; check the client's registration and scopes")]
    Unauthorized {
        /// Request URL (redacted).
        url: String,
    },
    /// A non-retryable HTTP status, with the OperationOutcome issues the body carried.
    #[error("{url}: HTTP {status}{}", outcome_suffix(.outcomes))]
    Status {
        /// Request URL (redacted).
        url: String,
        /// HTTP status.
        status: u16,
        /// Issues of the body's OperationOutcome (empty if none).
        outcomes: Vec<Outcome>,
    },
    /// Epic answers an unknown resource type with a web server HTML 404, not FHIR.
    #[error("{url}: unknown resource type on this server (HTML 404)")]
    UnknownResourceType {
        /// Request URL (redacted).
        url: String,
    },
    /// Retries were exhausted on a transient failure.
    #[error(
        "{url}: giving up after {attempts} attempts, last failure: {}{}",
        network.as_deref().unwrap_or(&reason.to_string()),
        outcome_suffix(.outcomes)
    )]
    RetriesExhausted {
        /// Request URL (redacted).
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Last failure.
        reason: RetryReason,
        /// For a network failure: which one (DNS, refused, timeout after N s, TLS, reset,
        /// closed mid-body) and the fix to try.
        network: Option<String>,
        /// OperationOutcome issues of the last response, if any.
        outcomes: Vec<Outcome>,
    },
    /// The server stayed unavailable (the outage breaker stayed open) longer than allowed.
    #[error(
        "the FHIR server was unavailable for {} (5xx, 429, timeouts or resets on every probe), longer than \
         extract.retry.max_outage_secs = {max_outage_secs}; {}nothing is lost and the run is resumable: rerun \
         when the server is back to continue where it stopped",
        crate::outage::human(*.down_for),
        left_clause(.left)
    )]
    ServerUnavailable {
        /// How long the server had been unavailable.
        down_for: std::time::Duration,
        /// The configured limit, seconds.
        max_outage_secs: u64,
        /// What the run had left to read when it stopped (set by the extractor, see
        /// [`Error::with_work_left`]).
        left: Option<WorkLeft>,
    },
    /// The daily request budget is spent.
    #[error(
        "daily request budget of {limit} requests reached for {day} (extract.schedule.daily_request_budget); \
         {}the run stops here and is resumable: rerun (e.g. the next day) to continue where it stopped",
        left_clause(.left)
    )]
    BudgetExhausted {
        /// The budget.
        limit: u64,
        /// The calendar day (local time).
        day: chrono::NaiveDate,
        /// What the run had left to read when it stopped (set by the extractor).
        left: Option<WorkLeft>,
    },
    /// A transport failure that is not transient (e.g. invalid TLS certificate).
    #[error("{url}: request failed: {detail}")]
    Transport {
        /// Request URL (redacted).
        url: String,
        /// Which failure (see [`NetworkFailure`]) and the fix to try.
        detail: String,
        /// Cause.
        source: reqwest::Error,
    },
    /// A time window (`extract.schedule.peak`) that does not parse.
    #[error("`{text}` is not a time window: {problem}; expected `HH:MM-HH:MM`, e.g. `07:00-19:00`")]
    InvalidWindow {
        /// The text given.
        text: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The `--record` path exists and is not a folder.
    #[error("{path} exists and is not a folder: pass a folder (new or existing) to --record")]
    RecordingNotAFolder {
        /// The path given.
        path: PathBuf,
    },
    /// The recording folder could not be created or listed.
    #[error("cannot {action} the recording folder {path}: {source}")]
    RecordingFolder {
        /// `create` or `list`.
        action: &'static str,
        /// The folder.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The body is not valid JSON.
    #[error("{url}: response is not valid JSON: {source}")]
    Json {
        /// Request URL (redacted).
        url: String,
        /// Cause.
        source: serde_json::Error,
    },
    /// The body is JSON but not the expected resource.
    #[error("{url}: expected a {expected}, got {found}")]
    UnexpectedResource {
        /// Request URL (redacted).
        url: String,
        /// What was expected.
        expected: &'static str,
        /// `resourceType` found (or `no resourceType`).
        found: String,
    },
}

/// What a run stopped by [`Error::ServerUnavailable`] or [`Error::BudgetExhausted`] had left
/// to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkLeft {
    /// Everything: the run stopped before it read any scope (while planning, resolving the
    /// cohort or waiting for a Bulk export).
    Everything,
    /// Scopes (patient × dataset in search mode, export × type in bulk mode) not read
    /// completely, of those planned.
    Scopes {
        /// Scopes not read completely yet (read again when the run resumes).
        not_read: u64,
        /// Scopes planned for the run.
        planned: u64,
    },
}

impl std::fmt::Display for WorkLeft {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            WorkLeft::Everything => f.write_str("no scope was read yet"),
            WorkLeft::Scopes { not_read, planned } => {
                let done = planned.saturating_sub(not_read);
                write!(
                    f,
                    "{not_read} of {planned} scopes not read yet (the {done} read completely are kept and skipped \
                     when the run resumes)"
                )
            }
        }
    }
}

/// `"<left>; "` when known, else nothing.
fn left_clause(left: &Option<WorkLeft>) -> String {
    left.map_or(String::new(), |l| format!("{l}; "))
}

fn outcome_suffix(outcomes: &[Outcome]) -> String {
    if outcomes.is_empty() { String::new() } else { format!(": {}", summarize(outcomes)) }
}

impl Error {
    /// OperationOutcome issues carried by this error.
    pub fn outcomes(&self) -> &[Outcome] {
        match self {
            Error::Status { outcomes, .. } | Error::RetriesExhausted { outcomes, .. } => outcomes,
            _ => &[],
        }
    }

    /// True when an outcome carries Epic code `code`.
    pub fn has_outcome(&self, code: &str) -> bool {
        self.outcomes().iter().any(|o| o.is(code))
    }

    /// HTTP status of the failure, if a response was received.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::Unauthorized { .. } => Some(401),
            Error::UnknownResourceType { .. } => Some(404),
            _ => None,
        }
    }

    /// True for failures that make every further request pointless (credentials, TLS setup).
    pub fn is_fatal_for_run(&self) -> bool {
        matches!(
            self,
            Error::Token(_)
                | Error::Unauthorized { .. }
                | Error::Build(_)
                | Error::TransportSetup(_)
                | Error::ServerUnavailable { .. }
                | Error::BudgetExhausted { .. }
        )
    }

    /// True when the run stopped on a limit (outage, budget) rather than a fault: everything
    /// fetched is kept and the next run resumes.
    pub fn is_resumable_stop(&self) -> bool {
        matches!(self, Error::ServerUnavailable { .. } | Error::BudgetExhausted { .. })
    }

    /// A resumable stop ([`Error::is_resumable_stop`]) with what the run had left to read, for
    /// its message, unless that is known already (the innermost caller knows best); any other
    /// error unchanged.
    pub fn with_work_left(mut self, work: WorkLeft) -> Self {
        if let Error::ServerUnavailable { left, .. } | Error::BudgetExhausted { left, .. } = &mut self {
            left.get_or_insert(work);
        }
        self
    }
}

/// `Result` with the FHIR client [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of network failure a transport error was (shared with the auth crate, whose
/// token and discovery requests fail the same ways).
pub use fhirsync_core::NetworkFailure;
