//! The completeness report of a run: the ledger of every planned scope.
//!
//! Every scope ends in one of three states, and only the first two let reload-and-compare
//! delete inside it:
//! - **complete**: every page read, no failure;
//! - **complete with exclusions**: complete, but Epic withheld named sub-types (59204/59205
//!   "Outside Record ...") that the last committed run withheld too ([`ExclusionBaseline`]);
//! - a **gap** ([`GapReason`]): a failure, an unnamed suppression, a "may be incomplete" outcome,
//!   or a withheld sub-type the baseline does not have (the licence narrowed).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use fhirsync_core::{RunScope, ScopeKey};
use fhirsync_fhir::{ClientStats, Exclusion, Outcome, codes};
use serde::{Deserialize, Serialize};

use crate::config::Mode;

/// Why a scope is not complete (landing will not delete inside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GapReason {
    /// Epic suppressed results without naming the sub-type (59204/59205 with no "<Type> -
    /// <sub-type>"), or a bulk type the client may not export: unknown loss.
    NotAuthorized {
        /// Epic outcome code.
        code: String,
        /// Outcome text or diagnostics.
        detail: Option<String>,
    },
    /// An outcome that says the answer may be incomplete (4119, 4118, 4127, an error issue).
    Incomplete {
        /// Epic outcome code, if any.
        code: Option<String>,
        /// What the outcome said.
        detail: String,
    },
    /// Epic withheld sub-types that the last committed run did not see withheld: the licence
    /// (or the user's security) narrowed, so rows missing now may still exist.
    LicenceNarrowed {
        /// The newly withheld sub-types.
        withheld: Vec<Exclusion>,
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

/// How many scopes of a dataset had one sub-type withheld.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExclusionCount {
    /// `Type[:category]@VERSION` of the dataset searched.
    pub dataset: String,
    /// What was withheld.
    pub exclusion: Exclusion,
    /// Scopes (patients, in search mode) that carried it.
    pub scopes: u64,
}

impl ExclusionCount {
    /// "outside records withheld: Condition - Outside Record Problems (Condition:problem-list-item@R4),
    /// 3 patients". Bulk books one scope per export and type, search one per patient and dataset.
    pub fn describe(&self, mode: Mode) -> String {
        let unit = match (mode, self.scopes) {
            (Mode::Bulk, 1) => "export",
            (Mode::Bulk, _) => "exports",
            (Mode::Search, 1) => "patient",
            (Mode::Search, _) => "patients",
        };
        format!("outside records withheld: {} ({}), {} {unit}", self.exclusion, self.dataset, self.scopes)
    }
}

/// The key of a scope's dataset in exclusion counts and the [`ExclusionBaseline`]:
/// `Type[:category]@VERSION`.
pub(crate) fn dataset_key(scope: &ScopeKey) -> String {
    format!("{}@{}", scope.dataset, scope.fhir_version)
}

/// Sub-types withheld on complete reads, by `Type[:category]@VERSION`: what the last committed
/// run saw, stored in its report so the next run can tell a stable exclusion from a narrowed
/// licence.
pub type ExclusionBaseline = BTreeMap<String, BTreeSet<Exclusion>>;

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
    /// Complete scopes with withheld sub-types.
    pub scopes_excluded: u64,
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
    /// Common clinical types that no endpoint's statement offers for patient search (not
    /// fetched; name them in `[extract] datasets` to try them).
    pub datasets_not_offered: Vec<String>,
    /// Scopes planned (patients × datasets, or datasets in bulk mode).
    pub scopes_planned: u64,
    /// Scopes skipped because they were already complete (resume).
    pub scopes_skipped: u64,
    /// Scopes completed in this attempt.
    pub scopes_complete: u64,
    /// Resources emitted (each once per scope: repeats after a 4113 restart are in
    /// `resources_resent`).
    pub resources: u64,
    /// Resources sent again because a 4113 restart re-read pages already sent.
    pub resources_resent: u64,
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
    /// Sub-types withheld on complete scopes (exclusions), by dataset.
    pub exclusions: Vec<ExclusionCount>,
    /// Complete scopes that carried at least one exclusion.
    pub scopes_excluded: u64,
    /// The baseline the next run compares its exclusions with: the previous one, with every
    /// dataset read to the end in this run replaced by what this run saw withheld.
    pub exclusion_baseline: ExclusionBaseline,
    /// Whether completed scopes are listed in `scope.complete` (see
    /// [`crate::Extraction::list_complete_scopes`]).
    #[serde(skip)]
    pub(crate) list_complete: bool,
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
            datasets_not_offered: Vec::new(),
            scopes_planned: 0,
            scopes_skipped: 0,
            scopes_complete: 0,
            resources: 0,
            resources_resent: 0,
            pages: 0,
            http: ClientStats::default(),
            session_restarts: 0,
            outcome_codes: BTreeMap::new(),
            by_dataset: BTreeMap::new(),
            gaps: Vec::new(),
            exclusions: Vec::new(),
            scopes_excluded: 0,
            exclusion_baseline: ExclusionBaseline::new(),
            list_complete: true,
        }
    }

    /// Books a completed scope in `scope.complete`, unless the list is turned off.
    pub(crate) fn note_complete(&mut self, scope: ScopeKey) {
        if self.list_complete {
            self.scope.complete.insert(scope);
        }
    }

    /// The gaps, one line per (dataset, reason) with its scope count (no patient ids).
    pub fn gap_lines(&self) -> Vec<String> {
        let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
        for gap in &self.gaps {
            let line = format!("{} {}: {}", gap.scope.fhir_version, gap.scope.dataset, gap.reason);
            *by_reason.entry(line).or_default() += 1;
        }
        by_reason
            .into_iter()
            .map(|(line, n)| format!("{line} ({n} {})", if n == 1 { "scope" } else { "scopes" }))
            .collect()
    }

    /// The exclusions, one line each (no patient ids).
    pub fn exclusion_lines(&self) -> Vec<String> {
        self.exclusions.iter().map(|e| e.describe(self.mode)).collect()
    }

    /// Books what one finished scope withheld, and feeds the next baseline.
    pub(crate) fn record_exclusions(&mut self, key: &str, withheld: &BTreeSet<Exclusion>, complete: bool) {
        let entry = self.exclusion_baseline.entry(key.to_string()).or_default();
        entry.extend(withheld.iter().cloned());
        if !complete || withheld.is_empty() {
            return;
        }
        self.scopes_excluded += 1;
        let dataset = key.split('@').next().unwrap_or(key).to_string();
        self.by_dataset.entry(dataset).or_default().scopes_excluded += 1;
        for exclusion in withheld {
            match self.exclusions.iter_mut().find(|c| c.dataset == key && c.exclusion == *exclusion) {
                Some(c) => c.scopes += 1,
                None => self.exclusions.push(ExclusionCount {
                    dataset: key.to_string(),
                    exclusion: exclusion.clone(),
                    scopes: 1,
                }),
            }
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
                self.note_complete(scope);
            }
            Some(reason) => {
                ds.scopes_incomplete += 1;
                self.gaps.push(Gap { scope, reason });
            }
        }
        self.scope.gaps = self.gaps.len() as u64;
    }
}

impl GapReason {
    /// The gap that outcome issue `o` implies, given what its effect said (`detail`).
    pub(crate) fn from_outcome(o: &Outcome, detail: String) -> GapReason {
        let code = o.epic_code.clone().or_else(|| (!o.issue_code.is_empty()).then(|| o.issue_code.clone()));
        match code.as_deref() {
            Some(codes::UNAUTHORIZED_SUB_RESOURCE | codes::USER_UNAUTHORIZED_SUB_RESOURCE) => {
                GapReason::NotAuthorized {
                    code: code.unwrap_or_default(),
                    detail: o.diagnostics.clone().or_else(|| o.text.clone()),
                }
            }
            _ => GapReason::Incomplete { code, detail },
        }
    }

    /// The [`GapReason::LicenceNarrowed`] gap when `withheld` has sub-types that the baseline
    /// entry `key` lacks; `None` without a baseline (nothing landed to protect yet).
    pub(crate) fn narrowed(
        baseline: Option<&ExclusionBaseline>,
        key: &str,
        withheld: &BTreeSet<Exclusion>,
    ) -> Option<GapReason> {
        let known = baseline?.get(key);
        let new: Vec<Exclusion> =
            withheld.iter().filter(|e| !known.is_some_and(|k| k.contains(*e))).cloned().collect();
        (!new.is_empty()).then_some(GapReason::LicenceNarrowed { withheld: new })
    }
}

impl std::fmt::Display for GapReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GapReason::NotAuthorized { code, detail } => {
                write!(f, "results suppressed without a named sub-type ({code}")?;
                if let Some(d) = detail {
                    write!(f, ": {d}")?;
                }
                f.write_str(")")
            }
            GapReason::Incomplete { code, detail } => match code {
                Some(c) if !detail.starts_with(c.as_str()) => write!(f, "may be incomplete ({c}: {detail})"),
                _ => write!(f, "may be incomplete ({detail})"),
            },
            GapReason::LicenceNarrowed { withheld } => {
                let names: Vec<String> = withheld.iter().map(ToString::to_string).collect();
                write!(f, "licence narrowed: newly withheld {}", names.join(", "))
            }
            GapReason::Failed { error } => write!(f, "failed: {error}"),
            GapReason::SessionExpired { restarts } => {
                write!(f, "search session kept expiring (4113, {restarts} restarts)")
            }
        }
    }
}
