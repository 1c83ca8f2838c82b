//! A run's figures (`fhirsync sync --metrics-file PATH`) in the Prometheus text exposition
//! format, for node_exporter's textfile collector (`--collector.textfile.directory`).
//!
//! One file per destination, replaced atomically after every run (a temporary file in the same
//! folder, then a rename), also when the run failed: then `fhirsync_run_success` is 0 and the
//! figures only a committed run has (resources, rows, gaps, requests) are left out, while
//! `fhirsync_last_success_timestamp_seconds` carries over from the previous file. Every series is
//! labelled with the destination kind (`sqlite`, `postgres`, `parquet`, `ndjson`) and the method.
//! The file holds counts and times only: no patient data, no paths, no hosts, no secrets.
//!
//! The values describe the last run (gauges), not totals since some start: alert on
//! `fhirsync_run_success == 0` or `time() - fhirsync_last_success_timestamp_seconds > 26 * 3600`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::sync::SyncReport;

/// Label value when the configuration could not be read (destination kind or method unknown).
pub const UNKNOWN: &str = "unknown";

/// Name of the series that survives a failed run.
const LAST_SUCCESS: &str = "fhirsync_last_success_timestamp_seconds";

/// Why the metrics file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The folder of the file does not exist or is not a folder.
    #[error(
        "--metrics-file {path}: the folder {dir} does not exist; create it or point --metrics-file at \
         node_exporter's textfile directory"
    )]
    NoFolder {
        /// The file asked for.
        path: PathBuf,
        /// Its folder.
        dir: PathBuf,
    },
    /// The path names a folder, or has no file name.
    #[error("--metrics-file {path}: not a file name; give a file such as `fhirsync.prom`")]
    NotAFile {
        /// The path given.
        path: PathBuf,
    },
    /// Writing or renaming failed.
    #[error("cannot {action} the metrics file {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file (or its temporary sibling).
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The metrics file of a run: checked before the run starts, written after it ends.
#[derive(Debug, Clone)]
pub struct MetricsFile {
    path: PathBuf,
}

impl MetricsFile {
    /// Checks that `path` can hold the file (its folder exists, it is not a folder itself), so
    /// a wrong path fails before the run rather than after it.
    pub fn new(path: &Path) -> Result<MetricsFile, MetricsError> {
        if path.file_name().is_none() || path.is_dir() {
            return Err(MetricsError::NotAFile { path: path.to_path_buf() });
        }
        let dir = folder(path);
        if !dir.is_dir() {
            return Err(MetricsError::NoFolder { path: path.to_path_buf(), dir });
        }
        Ok(MetricsFile { path: path.to_path_buf() })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `fhirsync_last_success_timestamp_seconds` of the file now on disk, if any.
    pub fn previous_success(&self) -> Option<f64> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        text.lines()
            .filter(|l| l.starts_with(LAST_SUCCESS) && !l.starts_with('#'))
            .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    }

    /// Replaces the file atomically with `text`: a temporary sibling (not ending in `.prom`, so
    /// the collector never reads half a file), flushed to disk, then renamed over the file.
    pub fn write(&self, text: &str) -> Result<(), MetricsError> {
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = folder(&self.path).join(format!(".{name}.{}.tmp", std::process::id()));
        let io = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| MetricsError::Io { action, path, source }
        };
        let result = (|| {
            let mut file = std::fs::File::create(&tmp).map_err(io("create", &tmp))?;
            file.write_all(text.as_bytes()).map_err(io("write", &tmp))?;
            file.sync_all().map_err(io("flush", &tmp))?;
            std::fs::rename(&tmp, &self.path).map_err(io("replace", &self.path))
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What the metrics of one run are computed from.
#[derive(Debug)]
pub struct RunFigures<'a> {
    /// Destination kind (`sqlite`, ...), or [`UNKNOWN`].
    pub destination: &'a str,
    /// Update method, or [`UNKNOWN`].
    pub method: &'a str,
    /// The committed run, `None` when it failed.
    pub outcome: Option<&'a SyncReport>,
    /// The process exit code of the run.
    pub exit_code: u8,
    /// Wall time of the run.
    pub duration: Duration,
    /// When the run ended.
    pub ended: SystemTime,
    /// `fhirsync_last_success_timestamp_seconds` of the previous file (kept when this run failed).
    pub previous_success: Option<f64>,
}

/// The exposition text of a run.
pub fn render(run: &RunFigures<'_>) -> String {
    let labels = format!("destination=\"{}\",method=\"{}\"", escape(run.destination), escape(run.method));
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name}{{{labels}}} {}", number(value));
    };
    let ended = run.ended.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let committed = run.outcome.is_some();
    gauge(
        "fhirsync_run_success",
        "1 when the last run committed (also with gaps), 0 when it failed.",
        f64::from(u8::from(committed)),
    );
    gauge(
        "fhirsync_run_completed_with_gaps",
        "1 when the last run committed with gaps (exit code 6): some scopes not proven complete.",
        f64::from(u8::from(run.outcome.is_some_and(SyncReport::has_gaps))),
    );
    gauge("fhirsync_run_exit_code", "Exit code of the last run (see the README).", f64::from(run.exit_code));
    gauge("fhirsync_run_duration_seconds", "Wall time of the last run.", run.duration.as_secs_f64());
    gauge("fhirsync_last_run_timestamp_seconds", "When the last run ended (Unix time).", ended);
    let last_success = if committed { Some(ended) } else { run.previous_success };
    if let Some(t) = last_success {
        gauge(LAST_SUCCESS, "When a run last committed (Unix time).", t);
    }
    let Some(outcome) = run.outcome else { return out };
    let (r, m) = (&outcome.report, &outcome.metrics);
    gauge("fhirsync_patients", "Patients in the cohort of the last run.", r.patients as f64);
    gauge(
        "fhirsync_resources_extracted",
        "Resources read from the server by the last run.",
        r.resources as f64,
    );
    gauge("fhirsync_rows_inserted", "Rows the last run inserted.", m.inserted as f64);
    gauge("fhirsync_rows_updated", "Rows the last run updated (reload-and-compare).", m.updated as f64);
    gauge("fhirsync_rows_deleted", "Rows the last run deleted.", m.deleted as f64);
    gauge("fhirsync_rows_unchanged", "Rows re-read unchanged (reload-and-compare).", m.unchanged as f64);
    gauge("fhirsync_rows_kept", "Rows kept although not re-read (scope incomplete).", m.kept as f64);
    gauge("fhirsync_view_rows", "Rows written to view tables by the last run.", m.view_rows as f64);
    gauge("fhirsync_scopes_planned", "Scopes the last run planned.", r.scopes_planned as f64);
    gauge("fhirsync_gaps", "Scopes of the last run not proven complete.", r.gaps.len() as f64);
    gauge(
        "fhirsync_http_requests",
        "HTTP attempts of the last run, retries included.",
        r.http.requests as f64,
    );
    gauge("fhirsync_http_retries", "HTTP attempts of the last run that were retries.", r.http.retries as f64);
    gauge("fhirsync_http_throttled", "429/503 answers the last run received.", r.http.throttled as f64);
    out
}

/// A sample value: integers without a fraction, others as Rust prints them.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

/// Escapes a label value (backslash, quote, newline) per the exposition format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(previous_success: Option<f64>) -> String {
        render(&RunFigures {
            destination: "sqlite",
            method: "reload",
            outcome: None,
            exit_code: 4,
            duration: Duration::from_millis(1500),
            ended: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            previous_success,
        })
    }

    /// A failed run reports success 0, its exit code and duration, no counts, and keeps the
    /// previous success time.
    #[test]
    fn failed_run() {
        let text = failed(Some(1_699_990_000.0));
        assert!(
            text.contains("fhirsync_run_success{destination=\"sqlite\",method=\"reload\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("fhirsync_run_exit_code{destination=\"sqlite\",method=\"reload\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("fhirsync_run_duration_seconds{destination=\"sqlite\",method=\"reload\"} 1.5\n")
        );
        assert!(text.contains(
            "fhirsync_last_run_timestamp_seconds{destination=\"sqlite\",method=\"reload\"} 1700000000\n"
        ));
        assert!(text.contains(
            "fhirsync_last_success_timestamp_seconds{destination=\"sqlite\",method=\"reload\"} 1699990000\n"
        ));
        assert!(!text.contains("fhirsync_rows_inserted"), "{text}");
        assert!(!failed(None).contains(LAST_SUCCESS));
    }

    /// The previous success time is read back from a file written earlier; the write replaces
    /// the file and leaves no temporary file behind.
    #[test]
    fn write_replaces_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = MetricsFile::new(&dir.path().join("fhirsync.prom")).unwrap();
        assert_eq!(file.previous_success(), None);
        file.write(&failed(Some(12.0))).unwrap();
        assert_eq!(file.previous_success(), Some(12.0));
        file.write(&failed(None)).unwrap();
        assert_eq!(file.previous_success(), None);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["fhirsync.prom"]);
    }

    /// A path in a missing folder, or a folder, is refused naming the fix.
    #[test]
    fn bad_paths() {
        let dir = tempfile::tempdir().unwrap();
        let err = MetricsFile::new(&dir.path().join("missing/f.prom")).unwrap_err().to_string();
        assert!(err.contains("does not exist") && err.contains("textfile"), "{err}");
        let err = MetricsFile::new(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not a file name"), "{err}");
    }

    /// Label values are escaped.
    #[test]
    fn labels_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
