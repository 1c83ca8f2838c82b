//! [`Status`]: the destination's recent runs with their counts, and the completeness gaps,
//! outcome codes and errors of the latest run (or of a given run).
//!
//! Reads the run history the destination keeps (`_fhirsync_runs`, or `_fhirsync/runs.json` in a
//! file destination) through [`fhirsync_land::recent_runs`], which never creates anything: a
//! destination where nothing was landed yet is reported as such; one that cannot be read is an
//! [`Error::Destination`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use fhirsync_core::ScopeKey;
use fhirsync_land::{DestinationConfig, RunMetrics, RunRecord, RunStatus};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Runs listed when [`Status::limit`] is not given.
pub const DEFAULT_LIMIT: usize = 10;
/// Patient ids shown per group of gaps.
const SAMPLE_PATIENTS: usize = 3;

/// Reads a destination's run history: `Status::new(&config.destination).limit(5).run().await`.
#[derive(Debug, Clone)]
#[must_use = "a Status does nothing until `run` is awaited"]
pub struct Status {
    destination: DestinationConfig,
    limit: usize,
    run_id: Option<String>,
}

/// Recent runs of a destination, newest first, and the run shown in detail.
#[derive(Debug, Clone)]
pub struct StatusReport {
    /// The destination ([`DestinationConfig::describe`]).
    pub destination: String,
    /// Recent runs, newest first (at most the limit).
    pub runs: Vec<RunRecord>,
    /// The latest run, or the one asked for with [`Status::run_id`]; `None` when nothing was
    /// landed yet.
    pub detail: Option<RunRecord>,
}

impl Status {
    /// The status of `destination` (only `[destination]` is needed).
    pub fn new(destination: &DestinationConfig) -> Status {
        Status { destination: destination.clone(), limit: DEFAULT_LIMIT, run_id: None }
    }

    /// How many recent runs to list.
    pub fn limit(mut self, limit: usize) -> Status {
        self.limit = limit;
        self
    }

    /// Show this run in detail instead of the latest one.
    pub fn run_id(mut self, id: Option<String>) -> Status {
        self.run_id = id;
        self
    }

    /// Reads the history; never creates anything at the destination.
    pub async fn run(self) -> Result<StatusReport> {
        let destination = self.destination.describe();
        // A run id may name a run older than the listed ones: read the whole history then.
        let fetch = if self.run_id.is_some() { usize::MAX } else { self.limit.max(1) };
        let dest = self.destination.clone();
        let mut runs = tokio::task::spawn_blocking(move || fhirsync_land::recent_runs(&dest, fetch))
            .await
            .map_err(|source| Error::Task { task: "status reader", source })?
            .map_err(|source| Error::history(destination.clone(), source))?;
        let detail = match &self.run_id {
            Some(id) => Some(runs.iter().find(|r| r.run_id == *id).cloned().ok_or_else(|| {
                Error::config(format!(
                    "{destination} has no run `{id}`: run `fhirsync status` to list the run ids"
                ))
            })?),
            None => runs.first().cloned(),
        };
        runs.truncate(self.limit);
        Ok(StatusReport { destination, runs, detail })
    }
}

impl StatusReport {
    /// The text form; patient ids only with `show_ids` (the default output goes to logs and
    /// tickets).
    pub fn text(&self, show_ids: bool) -> String {
        render(&self.destination, &self.runs, self.detail.as_ref(), show_ids)
    }

    /// The JSON form (`{destination, runs, detail}`): each run with its id, method and counts
    /// inline (zero until it commits), then status, times, errors and its report without the
    /// scope lists (the cohort and the completed scopes, landing input that can hold millions of
    /// entries).
    pub fn to_json(&self) -> serde_json::Value {
        let runs: Vec<RunJson<'_>> = self.runs.iter().map(RunJson::of).collect();
        serde_json::json!({
            "destination": self.destination,
            "runs": runs,
            "detail": self.detail.as_ref().map(RunJson::of),
        })
    }
}

/// A run as `status --json` shows it: run id, method and counts inline (zero until the run
/// commits), then status, times, errors and the report without its scope lists.
#[derive(Debug, Serialize)]
struct RunJson<'a> {
    #[serde(flatten)]
    counts: RunMetrics,
    status: RunStatus,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    errors: &'a Option<String>,
    report: Option<serde_json::Value>,
}

impl<'a> RunJson<'a> {
    fn of(run: &'a RunRecord) -> RunJson<'a> {
        let mut report = run.report.clone();
        if let Some(serde_json::Value::Object(fields)) = &mut report {
            fields.remove("scope");
        }
        RunJson {
            counts: counts(run),
            status: run.status,
            started_at: run.started_at,
            ended_at: run.ended_at,
            errors: &run.errors,
            report,
        }
    }
}

/// The run's id, method and counts; an uncommitted run has counted nothing yet.
fn counts(run: &RunRecord) -> RunMetrics {
    let none = || RunMetrics {
        run_id: run.run_id.clone(),
        method: run.method.as_str().into(),
        ..RunMetrics::default()
    };
    run.metrics.clone().unwrap_or_else(none)
}

/// The parts of a stored `ExtractReport` that status shows. Lenient: a report written by an
/// older or newer version still shows what it has.
#[derive(Debug, Default, Deserialize)]
struct ReportView {
    #[serde(default)]
    patients: Option<u64>,
    #[serde(default)]
    resources: Option<u64>,
    #[serde(default)]
    outcome_codes: BTreeMap<String, u64>,
    #[serde(default)]
    gaps: Vec<GapView>,
    #[serde(default)]
    exclusions: Vec<fhirsync_extract::ExclusionCount>,
    #[serde(default)]
    mode: fhirsync_extract::Mode,
}

/// One incomplete scope of the report.
#[derive(Debug, Deserialize)]
struct GapView {
    scope: ScopeKey,
    reason: ReasonView,
}

/// Why a scope is incomplete (mirrors `fhirsync_extract::GapReason`).
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum ReasonView {
    NotAuthorized {
        code: String,
        #[serde(default)]
        detail: Option<String>,
    },
    Incomplete {
        #[serde(default)]
        code: Option<String>,
        detail: String,
    },
    LicenceNarrowed {
        withheld: Vec<fhirsync_fhir::Exclusion>,
    },
    Failed {
        error: String,
    },
    SessionExpired {
        restarts: u32,
    },
    #[serde(other)]
    Other,
}

impl ReasonView {
    /// Group label: gaps with the same label and dataset are shown together.
    fn label(&self) -> String {
        match self {
            ReasonView::NotAuthorized { code, .. } => format!("suppressed, sub-type not named ({code})"),
            ReasonView::Incomplete { code, .. } => {
                format!("may be incomplete ({})", code.as_deref().unwrap_or("outcome"))
            }
            ReasonView::LicenceNarrowed { .. } => "licence narrowed".into(),
            ReasonView::Failed { .. } => "failed".into(),
            ReasonView::SessionExpired { .. } => "search session kept expiring".into(),
            ReasonView::Other => "incomplete".into(),
        }
    }

    /// Text of one example of the group.
    fn example(&self) -> Option<String> {
        match self {
            ReasonView::NotAuthorized { detail, .. } => detail.clone(),
            ReasonView::Incomplete { detail, .. } => Some(detail.clone()),
            ReasonView::LicenceNarrowed { withheld } => {
                let names: Vec<String> = withheld.iter().map(ToString::to_string).collect();
                Some(format!("newly withheld: {}; rows kept, deletes resume next run", names.join(", ")))
            }
            ReasonView::Failed { error } => Some(error.clone()),
            ReasonView::SessionExpired { restarts } => Some(format!("{restarts} restarts")),
            ReasonView::Other => None,
        }
    }
}

/// The parts of the run's report status shows (none before the run commits); an error for a
/// report whose known fields have the wrong shape.
fn report_of(run: &RunRecord) -> Result<ReportView, serde_json::Error> {
    run.report.as_ref().map_or_else(|| Ok(ReportView::default()), ReportView::deserialize)
}

/// Gaps grouped by (reason, dataset): how many scopes, a few patient ids, one example text.
#[derive(Debug, Default)]
struct GapGroup {
    scopes: usize,
    patients: Vec<String>,
    example: Option<String>,
}

fn group_gaps(gaps: &[GapView]) -> BTreeMap<(String, String), GapGroup> {
    let mut groups: BTreeMap<(String, String), GapGroup> = BTreeMap::new();
    for gap in gaps {
        let dataset = format!("{} {}", gap.scope.fhir_version, gap.scope.dataset);
        let group = groups.entry((gap.reason.label(), dataset)).or_default();
        group.scopes += 1;
        if let Some(p) = &gap.scope.patient_id
            && group.patients.len() < SAMPLE_PATIENTS
        {
            group.patients.push(p.clone());
        }
        if group.example.is_none() {
            group.example = gap.reason.example();
        }
    }
    groups
}

/// `1.2s`, `3m05s`, `2h01m`, or `-` for a run that has not ended.
fn duration(run: &RunRecord) -> String {
    let Some(d) = run.duration() else { return "-".into() };
    let ms = d.num_milliseconds().max(0);
    match ms / 1000 {
        s if s < 60 => format!("{:.1}s", ms as f64 / 1000.0),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// `1 scope`, `3 scopes`.
fn plural(n: usize, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), |n| n.to_string())
}

/// The text output.
fn render(destination: &str, runs: &[RunRecord], detail: Option<&RunRecord>, show_ids: bool) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let Some(detail) = detail else {
        return format!("nothing landed yet at {destination}: run `fhirsync sync` to land data\n");
    };
    let _ = writeln!(out, "{destination}: {}, newest first", plural(runs.len(), "run"));
    let _ = writeln!(
        out,
        "{:<36}  {:<18}  {:<19}  {:<19}  {:>8}  {:>8}  {:>7}  {:>7}  {:>9}  {:>9}  {:>8}",
        "RUN",
        "METHOD",
        "STATUS",
        "STARTED (UTC)",
        "DURATION",
        "INSERTED",
        "UPDATED",
        "DELETED",
        "UNCHANGED",
        "RESOURCES",
        "PATIENTS"
    );
    for run in runs {
        // An unreadable report shows `?` here; the detail of the run names the problem.
        let (resources, patients) = match report_of(run) {
            Ok(report) => (opt(report.resources), opt(report.patients)),
            Err(_) => ("?".into(), "?".into()),
        };
        let m = counts(run);
        let _ = writeln!(
            out,
            "{:<36}  {:<18}  {:<19}  {:<19}  {:>8}  {:>8}  {:>7}  {:>7}  {:>9}  {:>9}  {:>8}",
            run.run_id,
            run.method,
            run.status,
            run.started_at.format("%Y-%m-%d %H:%M:%S"),
            duration(run),
            m.inserted,
            m.updated,
            m.deleted,
            m.unchanged,
            resources,
            patients,
        );
    }
    render_detail(&mut out, detail, show_ids);
    out
}

/// Gaps, outcome codes and errors of one run.
fn render_detail(out: &mut String, run: &RunRecord, show_ids: bool) {
    use std::fmt::Write;
    let _ = writeln!(out, "\nrun {} ({}, {}):", run.run_id, run.method, run.status);
    let m = counts(run);
    if m.kept > 0 || m.cohort_exits > 0 {
        let _ = writeln!(
            out,
            "  kept:      {} rows not re-read but kept; {} patients left the cohort",
            m.kept, m.cohort_exits
        );
    }
    match report_of(run) {
        _ if run.report.is_none() => {
            let _ = writeln!(out, "  report:    none (the run has not committed)");
        }
        Ok(report) => render_report(out, &report, show_ids),
        Err(e) => {
            let _ = writeln!(out, "  report:    cannot be read ({e})");
        }
    }
    let _ = writeln!(out, "  errors:    {}", run.errors.as_deref().unwrap_or("none"));
}

/// The gaps, exclusions and outcome codes of a committed run's report.
fn render_report(out: &mut String, report: &ReportView, show_ids: bool) {
    use std::fmt::Write;
    if report.gaps.is_empty() {
        let _ = writeln!(out, "  complete:  every scope fetched completely");
    } else {
        let _ =
            writeln!(out, "  GAPS:      {} scopes incomplete (no deletes applied there):", report.gaps.len());
        for ((label, dataset), mut g) in group_gaps(&report.gaps) {
            if !show_ids {
                g.patients.clear();
            }
            let more = g.scopes.saturating_sub(g.patients.len());
            let mut patients = g.patients.join(", ");
            if more > 0 && !patients.is_empty() {
                let _ = write!(patients, ", ... {more} more");
            }
            let _ = write!(out, "    {label}  {dataset}: {}", plural(g.scopes, "scope"));
            if !patients.is_empty() {
                let _ = write!(out, " (patients {patients})");
            }
            match &g.example {
                Some(e) => {
                    let _ = writeln!(out, "\n      e.g. {e}");
                }
                None => out.push('\n'),
            }
        }
    }
    for e in &report.exclusions {
        let _ = writeln!(out, "  excluded:  {}", e.describe(report.mode));
    }
    if !report.outcome_codes.is_empty() {
        let codes: Vec<String> = report.outcome_codes.iter().map(|(c, n)| format!("{c}×{n}")).collect();
        let _ = writeln!(out, "  outcomes:  {}", codes.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use fhirsync_land::Method;

    fn run(report: Option<serde_json::Value>, ms: i64) -> RunRecord {
        let start = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).single().expect("valid time");
        RunRecord {
            run_id: "r1".into(),
            method: Method::Reload,
            metrics: Some(RunMetrics {
                run_id: "r1".into(),
                method: "reload".into(),
                staged: 5,
                inserted: 4,
                deleted: 1,
                ..RunMetrics::default()
            }),
            status: RunStatus::Succeeded,
            started_at: start,
            ended_at: Some(start + chrono::TimeDelta::milliseconds(ms)),
            errors: None,
            report,
        }
    }

    fn gap(patient: &str, dataset: &str, reason: serde_json::Value) -> serde_json::Value {
        let (rt, cat) = dataset.split_once(':').map_or((dataset, None), |(t, c)| (t, Some(c)));
        serde_json::json!({
            "scope": {"fhir_version": "R4", "patient_id": patient,
                      "dataset": {"resource_type": rt, "category": cat}},
            "reason": reason,
        })
    }

    /// A narrowed licence and exclusions are shown with the sub-types they name.
    #[test]
    fn licence_narrowed_and_exclusions_are_named() {
        let narrowed = serde_json::json!({"kind": "licence_narrowed", "withheld": [
            {"code": "59204", "resource_type": "Condition", "subtype": "Sensitive Problems"}]});
        let report = serde_json::json!({
            "gaps": [gap("p1", "Condition:problem-list-item", narrowed)],
            "exclusions": [{"dataset": "Condition:problem-list-item@R4", "scopes": 3,
                "exclusion": {"code": "59204", "resource_type": "Condition", "subtype": "Outside Record Problems"}}],
        });
        let mut r = run(Some(report), 10);
        r.status = RunStatus::CompletedWithGaps;
        let text = render("sqlite:x.db", std::slice::from_ref(&r), Some(&r), true);
        assert!(text.contains("completed_with_gaps"), "{text}");
        assert!(text.contains("licence narrowed  R4 Condition:problem-list-item: 1 scope"), "{text}");
        assert!(text.contains("newly withheld: Condition - Sensitive Problems"), "{text}");
        assert!(
            text.contains("outside records withheld: Condition - Outside Record Problems (Condition:problem-list-item@R4), 3 patients"),
            "{text}"
        );
    }

    /// Gaps are grouped by reason and dataset with a count, an example and, with `-v` only, at
    /// most three patient ids.
    #[test]
    fn gaps_grouped_by_reason_and_dataset() {
        let unlicensed =
            serde_json::json!({"kind": "not_authorized", "code": "59204", "detail": "no licence"});
        let failed = serde_json::json!({"kind": "failed", "error": "HTTP 500"});
        let mut gaps: Vec<_> = (1..=5)
            .map(|i| gap(&format!("p{i}"), "Observation:social-history", unlicensed.clone()))
            .collect();
        gaps.push(gap("p9", "Condition", failed));
        gaps.push(gap("p8", "Condition", serde_json::json!({"kind": "brand_new"})));
        let report =
            serde_json::json!({"patients": 9, "resources": 40, "outcome_codes": {"59204": 5}, "gaps": gaps});
        let text = render(
            "sqlite:x.db",
            &[run(Some(report.clone()), 1500)],
            Some(&run(Some(report.clone()), 1500)),
            true,
        );
        assert!(text.contains("7 scopes incomplete"), "{text}");
        assert!(
            text.contains(
                "suppressed, sub-type not named (59204)  R4 Observation:social-history: 5 scopes (patients p1, p2, p3, ... 2 more)"
            ),
            "{text}"
        );
        assert!(text.contains("e.g. no licence"), "{text}");
        assert!(text.contains("failed  R4 Condition: 1 scope (patients p9)\n      e.g. HTTP 500"), "{text}");
        assert!(text.contains("incomplete  R4 Condition: 1 scope (patients p8)"), "{text}");
        assert!(text.contains("outcomes:  59204×5"), "{text}");
        assert!(text.contains("1.5s") && text.contains("2026-01-02 03:04:05"), "{text}");
        // Without -v, the counts stay and the patient ids go.
        let quiet =
            render("sqlite:x.db", &[run(Some(report.clone()), 1500)], Some(&run(Some(report), 1500)), false);
        assert!(quiet.contains("R4 Observation:social-history: 5 scopes\n"), "{quiet}");
        assert!(!quiet.contains("p1") && !quiet.contains("patients p"), "{quiet}");
    }

    /// Durations are shown in the largest sensible unit; a run that has not ended shows `-`.
    #[test]
    fn durations() {
        assert_eq!(duration(&run(None, 2_500)), "2.5s");
        assert_eq!(duration(&run(None, 185_000)), "3m05s");
        assert_eq!(duration(&run(None, 7_260_000)), "2h01m");
        let mut open = run(None, 0);
        open.ended_at = None;
        assert_eq!(duration(&open), "-");
    }

    /// A report whose known fields have the wrong shape is shown as unreadable, with the
    /// parser's reason, not as an empty (complete) report.
    #[test]
    fn unreadable_report_is_named() {
        let r = run(Some(serde_json::json!({"gaps": "not a list", "patients": 3})), 10);
        let text = render("sqlite:x.db", std::slice::from_ref(&r), Some(&r), true);
        assert!(text.contains("report:    cannot be read ("), "{text}");
        assert!(!text.contains("complete:"), "{text}");
        let row = text.lines().find(|l| l.starts_with("r1")).expect("the run's row");
        assert!(row.trim_end().ends_with('?'), "{row}");
    }

    /// The JSON form keeps its shape: run id, method and counts inline (zero for a run that
    /// has not committed), status and times, and the report without its scope.
    #[test]
    fn json_form() {
        let committed = run(Some(serde_json::json!({"patients": 2, "scope": {"cohort": ["p1"]}})), 1500);
        let mut failed = run(None, 10);
        (failed.status, failed.metrics, failed.errors) = (RunStatus::Failed, None, Some("boom".into()));
        let report =
            StatusReport { destination: "sqlite:x.db".into(), runs: vec![committed, failed], detail: None };
        let json = report.to_json();
        let expected = serde_json::json!({
            "run_id": "r1", "method": "reload", "staged": 5, "inserted": 4, "updated": 0, "deleted": 1,
            "unchanged": 0, "kept": 0, "cohort_exits": 0, "view_rows": 0, "status": "succeeded",
            "started_at": "2026-01-02T03:04:05Z", "ended_at": "2026-01-02T03:04:06.500Z", "errors": null,
            "report": {"patients": 2},
        });
        assert_eq!(json["runs"][0], expected);
        assert_eq!(json["runs"][1]["inserted"], 0);
        assert_eq!(
            (json["runs"][1]["status"].as_str(), json["runs"][1]["errors"].as_str()),
            (Some("failed"), Some("boom"))
        );
        assert_eq!(json["detail"], serde_json::Value::Null);
    }

    /// A run without a report (failed before commit) says so and shows its error.
    #[test]
    fn failed_run_shows_error() {
        let mut failed = run(None, 10);
        failed.status = RunStatus::Failed;
        failed.metrics = None;
        failed.errors = Some("extraction failed: connection reset".into());
        let text = render("sqlite:x.db", std::slice::from_ref(&failed), Some(&failed), true);
        assert!(text.contains("report:    none"), "{text}");
        assert!(text.contains("errors:    extraction failed: connection reset"), "{text}");
    }
}
