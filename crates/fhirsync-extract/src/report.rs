//! The completeness report of a run.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fhirsync_core::{RunScope, ScopeKey};
use fhirsync_fhir::ClientStats;
use serde::Serialize;

use crate::config::Mode;

/// Why a scope is not complete (landing will not delete inside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GapReason {
    /// Epic suppressed results the client is not licensed for (59204): silent data loss.
    NotAuthorized {
        /// Epic outcome code.
        code: String,
        /// Outcome text or diagnostics.
        detail: Option<String>,
    },
    /// A request failed after retries (or was not retryable).
    Failed {
        /// Error message (URLs redacted).
        error: String,
    },
    /// The search session kept expiring (4113) beyond the restart budget.
    SessionExpired {
        /// Restarts attempted.
        restarts: u32,
    },
}

/// One incomplete scope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The scope.
    pub scope: ScopeKey,
    /// Why it is not complete.
    pub reason: GapReason,
}

/// Per-dataset totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DatasetReport {
    /// Resources emitted.
    pub resources: u64,
    /// Pages (or NDJSON files) read.
    pub pages: u64,
    /// Scopes fetched completely.
    pub scopes_complete: u64,
    /// Scopes with a gap or failure.
    pub scopes_incomplete: u64,
    /// Epic outcome codes seen (code → count).
    pub outcome_codes: BTreeMap<String, u64>,
}

/// What a run did, for the run history and the `check`/`status` output.
#[derive(Debug, Clone, Serialize)]
pub struct ExtractReport {
    /// Search or bulk.
    pub mode: Mode,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// Wall time, milliseconds.
    pub duration_ms: u64,
    /// Cohort and completed scopes, for landing's reconcile. `complete` includes the scopes
    /// skipped because an earlier attempt of this run completed them.
    pub scope: RunScope,
    /// Patients in the cohort.
    pub patients: usize,
    /// Planned datasets (`Type[:category]@VERSION`).
    pub datasets: Vec<String>,
    /// Scopes planned (patients × datasets, or datasets in bulk mode).
    pub scopes_planned: u64,
    /// Scopes skipped because they were already complete (resume).
    pub scopes_skipped: u64,
    /// Scopes completed in this attempt.
    pub scopes_complete: u64,
    /// Resources emitted.
    pub resources: u64,
    /// Pages (or NDJSON files) read.
    pub pages: u64,
    /// HTTP requests, retries, throttling answers and token refreshes.
    pub http: ClientStats,
    /// Searches restarted after 4113.
    pub session_restarts: u64,
    /// Epic outcome codes seen over the run (code → count).
    pub outcome_codes: BTreeMap<String, u64>,
    /// Totals per dataset (`Type[:category]`).
    pub by_dataset: BTreeMap<String, DatasetReport>,
    /// Scopes not complete, with the reason.
    pub gaps: Vec<Gap>,
}

impl ExtractReport {
    pub(crate) fn new(mode: Mode) -> Self {
        ExtractReport {
            mode,
            started_at: Utc::now(),
            duration_ms: 0,
            scope: RunScope::default(),
            patients: 0,
            datasets: Vec::new(),
            scopes_planned: 0,
            scopes_skipped: 0,
            scopes_complete: 0,
            resources: 0,
            pages: 0,
            http: ClientStats::default(),
            session_restarts: 0,
            outcome_codes: BTreeMap::new(),
            by_dataset: BTreeMap::new(),
            gaps: Vec::new(),
        }
    }

    /// True when every planned scope is complete.
    pub fn is_complete(&self) -> bool {
        self.gaps.is_empty()
    }

    pub(crate) fn count_outcome(&mut self, dataset: &str, code: &str) {
        *self.outcome_codes.entry(code.to_string()).or_default() += 1;
        *self
            .by_dataset
            .entry(dataset.to_string())
            .or_default()
            .outcome_codes
            .entry(code.to_string())
            .or_default() += 1;
    }

    pub(crate) fn finish_scope(
        &mut self,
        scope: ScopeKey,
        resources: u64,
        pages: u64,
        gap: Option<GapReason>,
    ) {
        let ds = self.by_dataset.entry(scope.dataset.to_string()).or_default();
        ds.resources += resources;
        ds.pages += pages;
        self.resources += resources;
        self.pages += pages;
        match gap {
            None => {
                ds.scopes_complete += 1;
                self.scopes_complete += 1;
                self.scope.complete.insert(scope);
            }
            Some(reason) => {
                ds.scopes_incomplete += 1;
                self.gaps.push(Gap { scope, reason });
            }
        }
    }
}
