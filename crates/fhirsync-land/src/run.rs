//! The typed states of a run and its record, shared by every destination.
//!
//! Each state has one stored spelling ([`RunStatus::as_str`], [`ChangeOp::as_str`],
//! [`Method::as_str`]), used by the SQL run and change tables, the file and Delta destinations'
//! `_fhirsync/runs.json` and change records, and status reporting; the spellings are those
//! earlier versions stored, so their targets read back unchanged.

use chrono::{DateTime, TimeDelta, Utc};
use fhirsync_core::RunScope;
use serde::{Deserialize, Serialize};

use crate::config::Method;
use crate::destination::RunMetrics;

stored_names! {
    /// Where a run stands, as `_fhirsync_runs.status` and `runs.json` store it.
    pub enum RunStatus (unknown: UnknownRunStatus) {
        /// Staging or committing; its writer holds the destination's lock.
        Running => "running",
        /// Committed, every planned scope complete.
        Succeeded => "succeeded",
        /// Committed with gaps: what it read is landed, but rows of its incomplete scopes were
        /// kept, not deleted.
        CompletedWithGaps => "completed_with_gaps",
        /// Stopped by an error; its staging is kept for the next run of its method to resume.
        Failed => "failed",
        /// Unfinished and not resumed by a later run (another method, `resume = false`, or
        /// staged in an earlier layout); its staging is gone.
        Abandoned => "abandoned",
        /// Its process died mid-run (seen by the next writer, or by `status` once the writer
        /// lock is free); resumable like a failed run.
        Interrupted => "interrupted",
    }
}

/// A run status that is not one fhirsync writes.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown run status `{0}`: expected running, succeeded, completed_with_gaps, failed, abandoned or interrupted"
)]
pub struct UnknownRunStatus(pub String);

impl RunStatus {
    /// Statuses of unfinished runs: resumable, or abandoned when a fresh run starts.
    pub const UNFINISHED: [RunStatus; 3] = [RunStatus::Running, RunStatus::Failed, RunStatus::Interrupted];
    /// Statuses of committed runs.
    pub const COMMITTED: [RunStatus; 2] = [RunStatus::Succeeded, RunStatus::CompletedWithGaps];

    /// The status a run committed with `scope` records.
    pub fn committed(scope: &RunScope) -> RunStatus {
        if scope.gaps > 0 { RunStatus::CompletedWithGaps } else { RunStatus::Succeeded }
    }

    /// True for the statuses of committed runs.
    pub fn is_committed(self) -> bool {
        Self::COMMITTED.contains(&self)
    }

    /// True for the statuses of unfinished runs ([`RunStatus::UNFINISHED`]).
    pub fn is_unfinished(self) -> bool {
        Self::UNFINISHED.contains(&self)
    }
}

stored_names! {
    /// One change recorded by reload-and-compare, as `_fhirsync_changes.operation` and the file
    /// destinations' change records store it.
    pub enum ChangeOp (unknown: UnknownChangeOp) {
        /// A row that did not exist before.
        Insert => "I",
        /// A row whose content hash changed.
        Update => "U",
        /// A row removed.
        Delete => "D",
    }
}

/// A change operation that is not `I`, `U` or `D`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown change operation `{0}`: expected I, U or D")]
pub struct UnknownChangeOp(pub String);

/// One run of a destination, as its run history records it: a row of `_fhirsync_runs`, or an
/// entry of `_fhirsync/runs.json` (whose JSON form is this type's serde form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id (a UUIDv7, so ids sort by start time).
    pub run_id: String,
    /// Update method.
    pub method: Method,
    /// Where the run stands.
    pub status: RunStatus,
    /// When the run started.
    #[serde(with = "stored_time")]
    pub started_at: DateTime<Utc>,
    /// When it ended (`None` while running, or for a run killed before it ended).
    #[serde(default, with = "stored_time::option")]
    pub ended_at: Option<DateTime<Utc>>,
    /// Counts of the committed run; `None` until it commits.
    #[serde(default)]
    pub metrics: Option<RunMetrics>,
    /// Error of a failed run.
    #[serde(default)]
    pub errors: Option<String>,
    /// The extraction report stored at commit (a serialised `fhirsync_extract::ExtractReport`:
    /// `patients`, `resources`, `outcome_codes`, `gaps`, ...); `None` until the run commits. The
    /// run history keeps it without its `scope` (the cohort and the completed scopes).
    #[serde(default)]
    pub report: Option<serde_json::Value>,
}

impl RunRecord {
    /// A run that starts now.
    pub(crate) fn started(run_id: &str, method: Method, started_at: DateTime<Utc>) -> RunRecord {
        RunRecord {
            run_id: run_id.to_string(),
            method,
            status: RunStatus::Running,
            started_at,
            ended_at: None,
            metrics: None,
            errors: None,
            report: None,
        }
    }

    /// The record of a run with `method` that commits now with `scope`, its `metrics` and
    /// `report`.
    pub(crate) fn committed(
        method: Method,
        started_at: DateTime<Utc>,
        scope: &RunScope,
        metrics: RunMetrics,
        report: serde_json::Value,
    ) -> RunRecord {
        RunRecord {
            run_id: metrics.run_id.clone(),
            method,
            status: RunStatus::committed(scope),
            started_at,
            ended_at: Some(Utc::now()),
            metrics: Some(metrics),
            errors: None,
            report: Some(report),
        }
    }

    /// Wall-clock time from start to end, if the run ended.
    pub fn duration(&self) -> Option<TimeDelta> {
        self.ended_at.map(|end| end - self.started_at)
    }
}

/// Times as the run history stores them: RFC 3339 in UTC with milliseconds.
pub(crate) mod stored_time {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// `time` as stored.
    pub(crate) fn text(time: &DateTime<Utc>) -> String {
        time.to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// Parses a stored time.
    pub(crate) fn parse(text: &str) -> Result<DateTime<Utc>, String> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("`{text}` is not an RFC 3339 time: {e}"))
    }

    pub(crate) fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(time))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }

    /// The same for an optional time (`null` when absent).
    pub(crate) mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub(crate) fn serialize<S: Serializer>(
            time: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match time {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| super::parse(&text).map_err(serde::de::Error::custom))
                .transpose()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every stored name reads back as itself through `FromStr` and serde, and serde writes the
    /// same text as `as_str`: one spelling per value.
    #[test]
    fn one_spelling_per_value() {
        fn check<T>(all: &[T], as_str: fn(&T) -> &'static str)
        where
            T: Serialize + for<'de> Deserialize<'de> + std::str::FromStr + PartialEq + std::fmt::Debug,
            T::Err: std::fmt::Debug,
        {
            for value in all {
                let text = as_str(value);
                assert_eq!(&text.parse::<T>().unwrap(), value);
                assert_eq!(serde_json::to_value(value).unwrap(), serde_json::json!(text));
                assert_eq!(&serde_json::from_value::<T>(serde_json::json!(text)).unwrap(), value);
            }
        }
        check(RunStatus::ALL, |s| s.as_str());
        check(ChangeOp::ALL, |s| s.as_str());
        check(Method::ALL, |s| s.as_str());
    }

    /// The spellings are the ones earlier versions stored, byte for byte.
    #[test]
    fn spellings_are_the_stored_ones() {
        let statuses: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            statuses,
            ["running", "succeeded", "completed_with_gaps", "failed", "abandoned", "interrupted"]
        );
        let ops: Vec<&str> = ChangeOp::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(ops, ["I", "U", "D"]);
        let methods: Vec<&str> = Method::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(methods, ["full-load", "reload", "reload-and-compare"]);
    }

    /// An unknown stored status is an error naming it, not a default.
    #[test]
    fn unknown_status_is_an_error() {
        let err = serde_json::from_value::<RunStatus>(serde_json::json!("paused")).unwrap_err();
        assert!(err.to_string().contains("`paused`"), "{err}");
    }

    /// A `runs.json` entry written by the previous version reads back and is written again
    /// byte for byte.
    #[test]
    fn runs_json_entry_round_trips() {
        let stored = r#"{
  "run_id": "r1",
  "method": "reload-and-compare",
  "status": "completed_with_gaps",
  "started_at": "2026-01-02T03:04:05.678Z",
  "ended_at": "2026-01-02T03:04:07.001Z",
  "metrics": {
    "run_id": "r1",
    "method": "reload-and-compare",
    "staged": 3,
    "inserted": 1,
    "updated": 1,
    "deleted": 0,
    "unchanged": 1,
    "kept": 2,
    "cohort_exits": 0,
    "view_rows": 4
  },
  "errors": null,
  "report": {
    "patients": 2
  }
}"#;
        let record: RunRecord = serde_json::from_str(stored).unwrap();
        assert_eq!((record.method, record.status), (Method::ReloadAndCompare, RunStatus::CompletedWithGaps));
        assert_eq!(record.duration(), Some(TimeDelta::milliseconds(1323)));
        assert_eq!(serde_json::to_string_pretty(&record).unwrap(), stored);
    }
}
