//! The crate's error type.

use std::path::PathBuf;

/// Errors of extraction.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration text is not valid TOML or has an unknown or mistyped key.
    #[error("invalid [{table}] configuration: {message}")]
    ConfigSyntax {
        /// Table being read (`connection`, `extract`).
        table: &'static str,
        /// Parser message (names the unknown key).
        message: String,
    },
    /// A configuration value is missing or invalid.
    #[error("invalid configuration `{key}`: {problem}")]
    InvalidConfig {
        /// Key, e.g. `connection.fhir_r4_endpoint`.
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A secret was written inline in the configuration file.
    #[error(
        "`{key}` must not hold the secret itself: write `env:VARIABLE` (or set {env_override}) or `file:/path/to/secret`"
    )]
    InlineSecret {
        /// Key, e.g. `connection.client_secret`.
        key: &'static str,
        /// The environment override that may carry the value directly.
        env_override: &'static str,
    },
    /// A secret reference could not be resolved.
    #[error("cannot read `{key}` from {origin}: {problem}")]
    SecretUnavailable {
        /// Key.
        key: &'static str,
        /// `environment variable X` or a path.
        origin: String,
        /// Cause.
        problem: String,
    },
    /// A request to the FHIR server failed in a way that stops the whole step.
    #[error(transparent)]
    Fhir(#[from] fhirsync_fhir::Error),
    /// The server's CapabilityStatement could not be understood.
    #[error("cannot read the CapabilityStatement of {version} ({url}): {problem}")]
    Capabilities {
        /// FHIR version of the endpoint.
        version: fhirsync_core::FhirVersion,
        /// Endpoint URL.
        url: String,
        /// What is wrong.
        problem: String,
    },
    /// The chosen datasets cannot be fetched from any configured endpoint.
    #[error("nothing to extract: {0}")]
    EmptyPlan(String),
    /// A dataset asked for is not available.
    #[error(
        "dataset `{dataset}` cannot be searched by patient on any configured endpoint ({endpoints}): their statements list it without a patient search parameter; remove it from [extract] datasets (its resources are reached by reference)"
    )]
    UnknownDataset {
        /// The dataset as written.
        dataset: String,
        /// Endpoints consulted.
        endpoints: String,
    },
    /// The cohort could not be resolved.
    #[error("cannot resolve the cohort: {0}")]
    Cohort(String),
    /// Every scope failed: the run produced nothing usable.
    #[error("all {failed} scopes failed; first error: {first}")]
    AllScopesFailed {
        /// Failed scopes.
        failed: usize,
        /// First error message.
        first: String,
    },
    /// The landing side stopped receiving events.
    #[error("the landing side stopped receiving resources; extraction aborted")]
    ReceiverClosed,
    /// A resource in a response lacks `resourceType`/`id` or is not JSON.
    #[error("invalid resource from {source_url}: {source}")]
    Resource {
        /// Where it came from (redacted).
        source_url: String,
        /// Cause.
        source: fhirsync_core::Error,
    },
    /// The Bulk state directory could not be used.
    #[error("bulk state file {path}: {source}")]
    BulkState {
        /// Path of the state file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The Bulk kick-off was refused because this Group was exported too recently.
    #[error(
        "Bulk export of Group {group} refused: the client requested this Group too recently (Epic allows one kick-off per Group per client per window, 24 h by default). Run again after the cooldown, or use mode = \"search\"."
    )]
    BulkCooldown {
        /// Group id.
        group: String,
    },
    /// The Bulk export failed.
    #[error("Bulk export failed: {0}")]
    Bulk(String),
    /// An NDJSON line longer than the configured maximum.
    #[error("NDJSON line longer than {max} bytes in {url}: raise extract.bulk.max_line_bytes")]
    LineTooLong {
        /// Limit.
        max: usize,
        /// File URL (redacted).
        url: String,
    },
}

impl Error {
    /// A FHIR stop on a limit (outage, budget) with what the run had left to read
    /// ([`fhirsync_fhir::Error::with_work_left`]); any other error unchanged.
    pub(crate) fn with_work_left(self, left: fhirsync_fhir::WorkLeft) -> Self {
        match self {
            Error::Fhir(e) => Error::Fhir(e.with_work_left(left)),
            other => other,
        }
    }
}

/// `Result` with the extraction [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
