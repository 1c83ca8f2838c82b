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
    /// A `[connection]` setting is missing or wrong.
    #[error(transparent)]
    Connection(fhirsync_core::Error),
    /// A request to the FHIR server failed in a way that stops the whole step.
    #[error(transparent)]
    Fhir(#[from] fhirsync_fhir::Error),
    /// The server's CapabilityStatement could not be understood.
    #[error("cannot read the CapabilityStatement of {version} ({url}): {source}")]
    Capabilities {
        /// FHIR version of the endpoint.
        version: fhirsync_core::FhirVersion,
        /// Endpoint URL (redacted).
        url: String,
        /// What is wrong with it.
        source: StatementError,
    },
    /// No FHIR endpoint is configured (or none answered its statement without an error).
    #[error("nothing to extract: no FHIR endpoint configured")]
    NoEndpoint,
    /// The endpoints' statements offer no type that can be searched by patient.
    #[error("nothing to extract: no patient-searchable types on {endpoints}")]
    NothingSearchable {
        /// The endpoints consulted (`R4, STU3`).
        endpoints: String,
    },
    /// The server exports none of the configured datasets.
    #[error("nothing to extract: the server exports none of the configured datasets ({refused})")]
    NothingExportable {
        /// The refused types, comma-separated.
        refused: String,
    },
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
    /// The cohort is read from a FHIR version whose endpoint is not configured.
    #[error(
        "cannot resolve the cohort: {what} are read from {version}, but no {version} endpoint is configured"
    )]
    CohortEndpoint {
        /// What is read (`patient lists`, `Groups`, `patients by identifier`).
        what: &'static str,
        /// The version needed.
        version: fhirsync_core::FhirVersion,
    },
    /// No patient list with the configured identifier exists.
    #[error("cannot resolve the cohort: no patient list `{identifier}` found on {version}")]
    NoPatientList {
        /// `system|value` as configured.
        identifier: String,
        /// Version searched.
        version: fhirsync_core::FhirVersion,
    },
    /// A Group or List of the cohort is not the JSON expected.
    #[error("cannot resolve the cohort: {resource} is not a valid {expected}: {source}")]
    CohortJson {
        /// What was read (`Group/abc`, `List/7`, `a List of the search`).
        resource: String,
        /// The resource type expected.
        expected: &'static str,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The Group read answered something else than a Group.
    #[error("cannot resolve the cohort: Group/{group} answered {found} instead of a Group")]
    NotAGroup {
        /// Group id.
        group: String,
        /// What came instead (`a Bundle without a Group`, `OperationOutcome`, `no resourceType`).
        found: String,
    },
    /// A `next` link of the cohort search does not resolve against the page URL (not shown: its
    /// query may name patients).
    #[error("cannot resolve the cohort: bad next link: {source}")]
    CohortNextLink {
        /// The URL error.
        source: url::ParseError,
    },
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
    /// Group `$export` is an R4 operation, and no R4 endpoint is configured.
    #[error("Bulk export failed: Group $export needs the R4 endpoint (fhir_r4_endpoint)")]
    BulkNeedsR4,
    /// A URL of the export (saved status URL, `Content-Location`, output file) does not parse.
    /// The URL itself is not shown: an output URL may be signed.
    #[error("Bulk export failed: bad {what}: {source}")]
    BulkUrl {
        /// Which URL (`saved status URL`, `Content-Location`, `output URL`).
        what: &'static str,
        /// The URL error.
        source: url::ParseError,
    },
    /// The server refused the kick-off (HTTP 400/422) for every requested type.
    #[error("Bulk export failed: kick-off refused: {source}")]
    BulkKickOffRefused {
        /// The refusal, with its OperationOutcome.
        source: fhirsync_fhir::Error,
    },
    /// The kick-off was answered, but not with 202 Accepted.
    #[error("Bulk export failed: kick-off answered HTTP {status} instead of 202")]
    BulkKickOffStatus {
        /// The status answered.
        status: u16,
    },
    /// The 202 of the kick-off carries no status URL.
    #[error("Bulk export failed: kick-off answer has no Content-Location")]
    BulkNoStatusUrl,
    /// The export's status URL answers 404: the server forgot the export.
    #[error(
        "Bulk export failed: the export's status URL is gone ({source}); the saved state was removed, start a new export"
    )]
    BulkStatusGone {
        /// The 404.
        source: fhirsync_fhir::Error,
    },
    /// The completed export's manifest is not the JSON expected.
    #[error("Bulk export failed: invalid manifest: {source}")]
    BulkManifest {
        /// The parse error.
        source: serde_json::Error,
    },
    /// The export was not complete within `extract.bulk.timeout_secs`.
    #[error(
        "Bulk export failed: not ready after {timeout_secs} s; the status URL is saved, run again to resume"
    )]
    BulkNotReady {
        /// The limit.
        timeout_secs: u64,
    },
    /// An NDJSON file's body could not be read to its end.
    #[error("Bulk export failed: {url} (body cut off): {source}")]
    BulkBodyCut {
        /// File URL (redacted).
        url: String,
        /// The I/O error of the stream.
        source: std::io::Error,
    },
    /// An NDJSON file ended before the count its manifest entry announced.
    #[error(
        "Bulk export failed: {url}: {received} of the manifest's {expected} resources before the body ended (truncated)"
    )]
    BulkTruncated {
        /// File URL (redacted).
        url: String,
        /// Lines received (resources and OperationOutcomes).
        received: u64,
        /// The manifest's `count`.
        expected: u64,
    },
    /// An NDJSON line longer than the configured maximum.
    #[error("NDJSON line longer than {max} bytes in {url}: raise extract.bulk.max_line_bytes")]
    LineTooLong {
        /// Limit.
        max: usize,
        /// File URL (redacted).
        url: String,
    },
}

/// Why a CapabilityStatement (or DSTU2 Conformance) cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StatementError {
    /// The body is not the JSON of a statement.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// The body is another resource.
    #[error("expected a CapabilityStatement, got {found}")]
    NotAStatement {
        /// `resourceType` found, or `no resourceType`.
        found: String,
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

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// Bulk and cohort failures keep the failure they wrap as their source, with the old texts.
    #[test]
    fn typed_failures_keep_their_source() {
        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let err = Error::BulkManifest { source: json };
        assert!(err.to_string().starts_with("Bulk export failed: invalid manifest: EOF"), "{err}");
        assert!(err.source().is_some_and(|s| s.is::<serde_json::Error>()));

        let io = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "reset");
        let err = Error::BulkBodyCut { url: "http://x/1.ndjson".into(), source: io };
        assert_eq!(err.to_string(), "Bulk export failed: http://x/1.ndjson (body cut off): reset");
        assert!(err.source().is_some_and(|s| s.is::<std::io::Error>()));

        let bad = url::Url::parse("http://x/").and_then(|u| u.join("http://[::1"));
        let err = Error::CohortNextLink { source: bad.unwrap_err() };
        assert!(err.to_string().starts_with("cannot resolve the cohort: bad next link: "), "{err}");
        assert!(err.source().is_some_and(|s| s.is::<url::ParseError>()));
    }
}
