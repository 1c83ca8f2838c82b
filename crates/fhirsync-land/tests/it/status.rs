//! The run history read back by `recent_runs` on every destination kind: nothing landed yet
//! gives an empty list without creating anything; runs come back newest first with their
//! counts, errors and stored report. PostgreSQL runs only with `FHIRSYNC_TEST_POSTGRES_URL`.

use std::path::Path;

use fhirsync_land::{
    DestinationConfig, LandOptions, Method, NdjsonConfig, ParquetConfig, RunStatus, SqliteConfig, recent_runs,
};

use crate::support::*;

/// The report stored with the committed run (shaped like an `ExtractReport`).
fn report() -> serde_json::Value {
    serde_json::json!({
        "patients": 2,
        "resources": 3,
        "outcome_codes": {"59204": 1},
        "gaps": [{
            "scope": {"fhir_version": "R4", "patient_id": "p2",
                      "dataset": {"resource_type": "Observation", "category": "social-history"}},
            "reason": {"kind": "not_authorized", "code": "59204", "detail": null}
        }]
    })
}

/// Lands one successful full-load, then a reload-and-compare that fails; checks the history.
fn history_scenario(config: &DestinationConfig) {
    assert_eq!(recent_runs(config, 10).unwrap(), Vec::new(), "nothing landed yet");

    let mut dest = fhirsync_land::open(config).unwrap();
    let options = LandOptions::default();
    let resources = [patient("p1", "Ng"), obs("o1", "p1", "5.1"), obs("o2", "p1", "5.2")];
    dest.begin(Method::FullLoad, &options).unwrap();
    dest.stage(&resources).unwrap();
    let scope = run_scope(&["p1", "p2"], scopes_of(&["p1"]));
    for s in &scope.complete {
        dest.scope_complete(s).unwrap();
    }
    let committed = dest.commit(&scope, &[], &report()).unwrap();
    dest.begin(Method::ReloadAndCompare, &options).unwrap();
    dest.stage(&resources[..1]).unwrap();
    dest.fail("extraction failed: connection reset").unwrap();
    drop(dest);

    let runs = recent_runs(config, 10).unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let (failed, ok) = (&runs[0], &runs[1]);
    assert_eq!((failed.method.as_str(), failed.status.as_str()), ("reload-and-compare", "failed"));
    assert_eq!(failed.errors.as_deref(), Some("extraction failed: connection reset"));
    assert_eq!(failed.report, None);
    assert!(failed.ended_at.is_some() && failed.started_at >= ok.started_at);

    assert_eq!(failed.metrics, None, "an uncommitted run has no counts");
    assert_eq!(ok.run_id, committed.run_id);
    assert_eq!((ok.method.as_str(), ok.status.as_str()), ("full-load", "succeeded"));
    let counts = ok.metrics.as_ref().expect("a committed run has counts");
    assert_eq!(counts, &committed);
    assert_eq!((counts.staged, counts.inserted, counts.updated, counts.deleted), (3, 3, 0, 0));
    assert_eq!(ok.errors, None);
    assert_eq!(ok.report, Some(report()));
    assert!(ok.duration().is_some_and(|d| d >= chrono::TimeDelta::zero()));

    let newest = recent_runs(config, 1).unwrap();
    assert_eq!(newest, runs[..1].to_vec(), "limit keeps the newest");
}

/// SQLite: nothing landed leaves no file behind; runs come back newest first.
#[test]
fn sqlite_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("land.db");
    let config = DestinationConfig::Sqlite(SqliteConfig { path: path.clone(), ..SqliteConfig::default() });
    assert!(recent_runs(&config, 10).unwrap().is_empty());
    assert!(!path.exists(), "status must not create the database");
    history_scenario(&config);
}

/// SQLite: a database that fhirsync never wrote to (no runs table) has no runs, and is not changed.
#[test]
fn sqlite_foreign_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    rusqlite::Connection::open(&path).unwrap().execute_batch("CREATE TABLE t (x INTEGER)").unwrap();
    let config = DestinationConfig::Sqlite(SqliteConfig { path: path.clone(), ..SqliteConfig::default() });
    assert!(recent_runs(&config, 10).unwrap().is_empty());
    let tables: i64 = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_master WHERE name LIKE '_fhirsync%'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tables, 0);
}

/// SQLite: a path that is not a database is an error naming SQLite, not an empty history.
#[test]
fn sqlite_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.db");
    std::fs::write(&path, "this is not a database, just some text long enough to fill a header").unwrap();
    let config = DestinationConfig::Sqlite(SqliteConfig { path, ..SqliteConfig::default() });
    let err = recent_runs(&config, 10).unwrap_err().to_string();
    assert!(err.contains("SQLite"), "{err}");
}

/// SQLite: a database left with a hot journal by a process killed mid-transaction in rollback-journal
/// mode (as a full load into an empty target runs) still shows its committed runs.
#[test]
fn sqlite_hot_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("land.db");
    let config = DestinationConfig::Sqlite(SqliteConfig { path: path.clone(), ..SqliteConfig::default() });
    let m = land(
        &mut *fhirsync_land::open(&config).unwrap(),
        Method::FullLoad,
        &LandOptions::default(),
        &[patient("p1", "Ng")],
        run_scope(&["p1"], Default::default()),
    )
    .unwrap();
    // A writer in the middle of a transaction that has spilled pages into the file; a copy of
    // the file and its journal taken now is what a killed process leaves (no lock held).
    let writer = rusqlite::Connection::open(&path).unwrap();
    let mode: String = writer.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "delete");
    writer
        .execute_batch(
            "PRAGMA cache_size = 2; BEGIN IMMEDIATE; UPDATE _fhirsync_runs SET status = 'half-written'; \
             CREATE TABLE filler (x BLOB); \
             INSERT INTO filler SELECT zeroblob(60000) FROM (WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 64) SELECT i FROM n);",
        )
        .unwrap();
    let crashed = dir.path().join("crashed");
    std::fs::create_dir(&crashed).unwrap();
    for name in ["land.db", "land.db-journal"] {
        std::fs::copy(dir.path().join(name), crashed.join(name)).unwrap();
    }
    drop(writer);
    let config =
        DestinationConfig::Sqlite(SqliteConfig { path: crashed.join("land.db"), ..SqliteConfig::default() });
    let runs = recent_runs(&config, 10).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!((runs[0].run_id.as_str(), runs[0].status.as_str()), (m.run_id.as_str(), "succeeded"));
}

/// Parquet: nothing landed leaves no folder behind; runs come back from `runs.json`.
#[test]
fn parquet_history() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("lake");
    let config = DestinationConfig::Parquet(ParquetConfig::new(&root));
    assert!(recent_runs(&config, 10).unwrap().is_empty());
    assert!(!root.exists(), "status must not create the folder");
    history_scenario(&config);
}

/// NDJSON: same history as the other destinations.
#[test]
fn ndjson_history() {
    let dir = tempfile::tempdir().unwrap();
    history_scenario(&DestinationConfig::Ndjson(NdjsonConfig::new(dir.path().join("out"))));
}

/// A file run killed after its snapshot switch but before `runs.json` was updated shows as
/// committed, with the counts recorded in its snapshot, and reading it changes nothing.
#[test]
fn file_run_committed_before_crash() {
    let dir = tempfile::tempdir().unwrap();
    let config = DestinationConfig::Ndjson(NdjsonConfig::new(dir.path()));
    let mut dest = fhirsync_land::open(&config).unwrap();
    let resources = [patient("p1", "Ng"), obs("o1", "p1", "5.1")];
    let metrics = land(
        &mut *dest,
        Method::FullLoad,
        &LandOptions::default(),
        &resources,
        run_scope(&["p1"], scopes_of(&["p1"])),
    )
    .unwrap();
    drop(dest);
    // Put runs.json back to what it held before the commit updated it.
    let runs_file = dir.path().join("_fhirsync").join("runs.json");
    let mut runs: serde_json::Value = serde_json::from_slice(&std::fs::read(&runs_file).unwrap()).unwrap();
    runs[0]["status"] = "running".into();
    runs[0]["ended_at"] = serde_json::Value::Null;
    runs[0]["metrics"] = serde_json::Value::Null;
    runs[0]["report"] = serde_json::Value::Null;
    let before = serde_json::to_vec_pretty(&runs).unwrap();
    std::fs::write(&runs_file, &before).unwrap();
    // The snapshot's own record, as earlier versions wrote it: without a start time.
    let record_file = dir.path().join("versions").join(&metrics.run_id).join("_fhirsync").join("run.json");
    let mut record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record_file).unwrap()).unwrap();
    record["started_at"] = "".into();
    std::fs::write(&record_file, serde_json::to_vec_pretty(&record).unwrap()).unwrap();

    let shown = recent_runs(&config, 10).unwrap();
    assert_eq!(shown.len(), 1);
    assert_eq!(shown[0].run_id, metrics.run_id);
    assert_eq!(shown[0].status, RunStatus::Succeeded);
    let counts = shown[0].metrics.as_ref().expect("the snapshot's counts");
    assert_eq!((counts.staged, counts.inserted), (2, 2));
    assert!(shown[0].ended_at.is_some());
    assert_eq!(
        shown[0].started_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        runs[0]["started_at"]
    );
    assert_eq!(std::fs::read(&runs_file).unwrap(), before, "status does not repair, only reads");
}

/// A damaged `runs.json` is an error naming the file, not an empty history.
#[test]
fn corrupt_runs_file() {
    let dir = tempfile::tempdir().unwrap();
    let meta = dir.path().join("_fhirsync");
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(meta.join("runs.json"), "[{\"run_id\": ").unwrap();
    let err = recent_runs(&DestinationConfig::Ndjson(NdjsonConfig::new(dir.path())), 10).unwrap_err();
    assert!(err.to_string().contains(&display(&meta.join("runs.json"))), "{err}");
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// PostgreSQL: a missing schema has no runs (and is not created); runs come back newest first.
#[test]
fn postgres_history() {
    // The harness supplies the server settings (TLS CA included) and drops the schema after.
    let Some(h) = crate::postgres::PostgresHarness::from_env() else { return };
    history_scenario(&DestinationConfig::Postgres(h.config.clone()));
}

/// A run whose writer is alive reads `running`; once the writer is gone (its lock with it) the
/// same record reads `interrupted`, and the next writer resumes that run.
fn interrupted_scenario(config: &DestinationConfig) {
    let mut dest = fhirsync_land::open(config).unwrap();
    let run = dest.begin(Method::Reload, &LandOptions::default()).unwrap().run_id;
    dest.stage(&[patient("p1", "Ng")]).unwrap();
    dest.checkpoint().unwrap();
    assert_eq!(recent_runs(config, 1).unwrap()[0].status, RunStatus::Running, "its writer holds the lock");
    drop(dest);
    // PostgreSQL's server lets the session's lock go a moment after the client closes.
    let started = std::time::Instant::now();
    loop {
        let status = recent_runs(config, 1).unwrap()[0].status;
        if status == RunStatus::Interrupted {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(10), "still {status}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut dest = fhirsync_land::open(config).unwrap();
    let start = dest.begin(Method::Reload, &LandOptions::default()).unwrap();
    assert!(start.resumed, "the interrupted run is resumed");
    assert_eq!(start.run_id, run);
}

/// SQLite: a dead writer's run reads `interrupted` and is resumed.
#[test]
fn sqlite_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("land.db");
    interrupted_scenario(&DestinationConfig::Sqlite(SqliteConfig { path, ..SqliteConfig::default() }));
}

/// NDJSON: a dead writer's run reads `interrupted` and is resumed.
#[test]
fn ndjson_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    interrupted_scenario(&DestinationConfig::Ndjson(NdjsonConfig::new(dir.path())));
}

/// PostgreSQL: a closed session's run reads `interrupted` and is resumed.
#[test]
fn postgres_interrupted() {
    let Some(h) = crate::postgres::PostgresHarness::from_env() else { return };
    interrupted_scenario(&DestinationConfig::Postgres(h.config.clone()));
}
