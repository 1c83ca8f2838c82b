//! Write-back: create FHIR resources from an NDJSON file (`fhirsync push`), never filing one
//! twice.
//!
//! Epic has no conditional create (`If-None-Exist`) and rewrites what it files (a created Patient
//! loses the client's identifiers, a Condition's category changes), so "search before re-sending"
//! cannot find what an interrupted push filed. The only reliable key is the id Epic returns in
//! `Location`, kept in a local [`ledger`] written before and after each POST.
//!
//! Protocol, in order:
//! 1. **Capability check**: the endpoint's CapabilityStatement must list the `create`
//!    interaction for the type ([`fhirsync_extract::plan::Capabilities::create`]).
//! 2. **Validation of the whole file before any request** ([`validate`]): each non-blank line a
//!    JSON object, `resourceType` equal to `--type`, a `Patient` reference (`subject` or
//!    `patient`) for patient-scoped types; a client-assigned `id` is dropped (the server assigns
//!    ids). By default one invalid line stops the push before anything is sent.
//! 3. **Ledger** ([`ledger`], one per FHIR base and type under `[sync] state_dir`, locked for the
//!    run): each line is keyed by the SHA-256 of its exact text. `done`/`duplicate` → not sent
//!    ("already filed"); `pending` → reported and not sent, unless `--retry-pending`: then an
//!    entry with a recorded id is read first (there → done; 404/410 → sent again), one without is
//!    sent again. A line repeated in the file is sent once.
//! 4. **Create** ([`guard`], [`send`]): `pending` is fsynced, then `POST {base}/{Type}`
//!    (`application/fhir+json`, sequentially, never re-sent by the client); then `done` with the
//!    `Location` id, `duplicate` for 59141, `failed` for another refusal (4xx). A 2xx whose answer
//!    breaks off after the `Location` keeps the id in the pending entry and is confirmed by a
//!    read. No definitive answer (timeout, dropped connection, 5xx, 429) leaves the entry
//!    `pending` and stops the push: the remaining lines are left for the next run.

pub mod guard;
pub mod ledger;
pub mod send;
pub mod validate;

use serde::Serialize;

/// Result of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Filed by this run (`id` set when the server sent a `Location`).
    Created,
    /// Filed by an earlier run (ledger `done` or `duplicate`), or confirmed by reading its id.
    AlreadyFiled,
    /// Sent without a definitive answer, now or by an interrupted earlier run: may be on the
    /// server. Not sent again without `--retry-pending`.
    Pending,
    /// Refused by the server as already on the chart (59141): nothing new filed; counts as done.
    Duplicate,
    /// Refused by the server; safe to push again.
    Failed,
    /// Rejected before sending (validation) — nothing was sent.
    Invalid,
    /// Valid but not sent (other lines invalid, `--dry-run`, or the push stopped before it).
    Skipped,
    /// Same text as an earlier line of the file: sent once, as that line.
    Repeated,
}

impl Status {
    /// Name on the terminal.
    pub fn name(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::AlreadyFiled => "already filed",
            Status::Pending => "PENDING",
            Status::Duplicate => "duplicate (59141)",
            Status::Failed => "failed",
            Status::Invalid => "invalid",
            Status::Skipped => "not sent",
            Status::Repeated => "repeated",
        }
    }
}

/// One line of the result file.
#[derive(Debug, Clone, Serialize)]
pub struct LineResult {
    /// 1-based line number in the input file.
    pub line: usize,
    /// What happened.
    pub status: Status,
    /// Server id of the resource.
    pub id: Option<String>,
    /// Why it failed or is pending (OperationOutcome text for server refusals).
    pub error: Option<String>,
    /// Remarks: id dropped, confirmed by a read, re-sent with `--retry-pending`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl LineResult {
    /// A result for `line` with `notes` and nothing else.
    pub fn new(line: usize, status: Status, notes: Vec<String>) -> Self {
        LineResult { line, status, id: None, error: None, notes }
    }

    /// With an id.
    pub fn with_id(mut self, id: Option<String>) -> Self {
        self.id = id;
        self
    }

    /// With an error text.
    pub fn with_error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// With one more note.
    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }
}

pub use run::{LineSink, Push, PushReport};

mod run;
