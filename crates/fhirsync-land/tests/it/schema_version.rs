//! Schema versions (issue #16 item 7) on SQLite, PostgreSQL and the file destinations: a new
//! target records the version this fhirsync writes; a target written before versions were
//! recorded keeps working (and is migrated, keeping its data); a target written by a newer
//! fhirsync is refused by writers and by `status`, naming both versions and the fix, before
//! anything is written. The legacy SQLite layouts are in `sqlite.rs`
//! (`legacy_*`). PostgreSQL runs only with `FHIRSYNC_TEST_POSTGRES_URL`.

use std::path::Path;

use fhirsync_land::{
    DestinationConfig, Error, FILES_SCHEMA_VERSION, LandOptions, Method, NdjsonConfig, ParquetConfig,
    SQL_SCHEMA_VERSION, SqliteConfig, recent_runs,
};
use rusqlite::Connection;

use crate::postgres::PostgresHarness;
use crate::support::*;

/// A schema version no fhirsync has written yet.
const FUTURE: u32 = 99;
/// The fhirsync version said to have written it.
const FUTURE_FHIRSYNC: &str = "9.0.0";

/// `err` is the refusal of a target at [`FUTURE`] by a fhirsync that knows up to `supported`.
fn assert_too_new(err: Error, supported: u32) {
    let text = err.to_string();
    assert!(matches!(err, Error::SchemaTooNew { .. }), "{text}");
    for part in [
        format!("schema version {FUTURE}"),
        format!("written by fhirsync {FUTURE_FHIRSYNC}"),
        format!("up to {supported}"),
        format!("fhirsync {}", env!("CARGO_PKG_VERSION")),
        "upgrade fhirsync".to_string(),
        "Nothing was changed".to_string(),
    ] {
        assert!(text.contains(&part), "missing `{part}`: {text}");
    }
}

/// Lands a full load of p1 and its observation; returns the run id.
fn full_load(config: &DestinationConfig) -> String {
    let mut dest = fhirsync_land::open(config).unwrap();
    let resources = [patient("p1", "Ng"), obs("o1", "p1", "5.1")];
    let scope = run_scope(&["p1"], scopes_of(&["p1"]));
    land(&mut *dest, Method::FullLoad, &LandOptions::default(), &resources, scope).unwrap().run_id
}

/// Begins a reload, stages p1 and checkpoints, then drops the destination (a killed run);
/// returns the unfinished run's id.
fn unfinished_reload(config: &DestinationConfig) -> String {
    let mut dest = fhirsync_land::open(config).unwrap();
    let run = dest.begin(Method::Reload, &LandOptions::default()).unwrap().run_id;
    dest.stage(&[patient("p1", "Ng")]).unwrap();
    dest.checkpoint().unwrap();
    run
}

/// Resumes the reload of [`unfinished_reload`] (which must be resumed as `run`) and commits it.
fn resume_reload(config: &DestinationConfig, run: &str) {
    let mut dest = fhirsync_land::open(config).unwrap();
    let start = dest.begin(Method::Reload, &LandOptions::default()).unwrap();
    assert!(start.resumed, "the unfinished run of the earlier version is resumed");
    assert_eq!(start.run_id, run);
    dest.stage(&[obs("o1", "p1", "5.1")]).unwrap();
    let m = complete_and_commit(&mut *dest, &["p1"], &["p1"]);
    assert_eq!((m.staged, m.deleted), (2, 0));
}

fn sqlite(dir: &Path) -> DestinationConfig {
    DestinationConfig::Sqlite(SqliteConfig { path: dir.join("land.db"), ..SqliteConfig::default() })
}

fn sqlite_rows(db: &Path, sql: &str) -> Vec<Vec<String>> {
    let conn = Connection::open(db).unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |row| (0..n).map(|i| row.get::<_, String>(i)).collect())
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

const SQLITE_VERSIONS: &str =
    "SELECT CAST(version AS TEXT), fhirsync_version FROM _fhirsync_schema_version ORDER BY version";

/// SQLite: a new database records the current version once, with this fhirsync's version.
#[test]
fn sqlite_new_target_records_the_current_version() {
    let dir = tempfile::tempdir().unwrap();
    let config = sqlite(dir.path());
    full_load(&config);
    drop(fhirsync_land::open(&config).unwrap());
    let db = dir.path().join("land.db");
    let expected = vec![vec![SQL_SCHEMA_VERSION.to_string(), env!("CARGO_PKG_VERSION").to_string()]];
    assert_eq!(sqlite_rows(&db, SQLITE_VERSIONS), expected);
}

/// SQLite: a database of the current layout written before versions were recorded (no version
/// table) keeps its data and its unfinished run, which is resumed; it is then at the current
/// version.
#[test]
fn sqlite_unversioned_target_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = (sqlite(dir.path()), dir.path().join("land.db"));
    full_load(&config);
    let run = unfinished_reload(&config);
    Connection::open(&db).unwrap().execute_batch("DROP TABLE _fhirsync_schema_version").unwrap();
    let rows = "SELECT id, content_hash FROM observation ORDER BY id";
    let before = sqlite_rows(&db, rows);
    resume_reload(&config, &run);
    assert_eq!(sqlite_rows(&db, rows), before);
    assert_eq!(sqlite_rows(&db, SQLITE_VERSIONS)[0][0], SQL_SCHEMA_VERSION.to_string());
}

/// SQLite: a database at a newer version is refused by a writer and by `status`; no table or
/// run is added or changed.
#[test]
fn sqlite_newer_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (config, db) = (sqlite(dir.path()), dir.path().join("land.db"));
    full_load(&config);
    Connection::open(&db)
        .unwrap()
        .execute_batch(&format!(
            "INSERT INTO _fhirsync_schema_version VALUES ({FUTURE}, '2030-01-01T00:00:00.000Z', '{FUTURE_FHIRSYNC}');
             DROP TABLE _fhirsync_changes;"
        ))
        .unwrap();
    let objects = "SELECT type || ' ' || name FROM sqlite_master ORDER BY name";
    let runs = "SELECT run_id || ' ' || status || ' ' || coalesce(ended_at, '-') FROM _fhirsync_runs";
    let before = (sqlite_rows(&db, objects), sqlite_rows(&db, runs));
    assert_too_new(fhirsync_land::open(&config).err().expect("the open must fail"), SQL_SCHEMA_VERSION);
    assert_too_new(recent_runs(&config, 10).unwrap_err(), SQL_SCHEMA_VERSION);
    assert_eq!((sqlite_rows(&db, objects), sqlite_rows(&db, runs)), before, "nothing was written");
}

/// PostgreSQL: a new schema records the current version; one at a newer version is refused by
/// a writer and by `status`, and no table is added (the dropped change table stays dropped).
#[test]
fn postgres_new_and_newer_targets() {
    let Some(h) = PostgresHarness::from_env() else { return };
    let config = DestinationConfig::Postgres(h.config.clone());
    full_load(&config);
    let versions = "SELECT version::text, fhirsync_version FROM _fhirsync_schema_version ORDER BY version";
    let current =
        vec![vec![Some(SQL_SCHEMA_VERSION.to_string()), Some(env!("CARGO_PKG_VERSION").to_string())]];
    assert_eq!(h.query(versions), current);
    h.query(&format!(
        "INSERT INTO _fhirsync_schema_version VALUES ({FUTURE}, now(), '{FUTURE_FHIRSYNC}'); DROP TABLE _fhirsync_changes"
    ));
    let tables = format!(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = '{}' ORDER BY 1",
        h.config.schema
    );
    let before = (h.query(&tables), h.query("SELECT run_id, status FROM _fhirsync_runs"));
    assert_too_new(fhirsync_land::open(&config).err().expect("the open must fail"), SQL_SCHEMA_VERSION);
    assert_too_new(recent_runs(&config, 10).unwrap_err(), SQL_SCHEMA_VERSION);
    assert_eq!((h.query(&tables), h.query("SELECT run_id, status FROM _fhirsync_runs")), before);
}

/// PostgreSQL: a schema written before versions were recorded whose unfinished run staged into
/// the current per-run shadows keeps that run: it is resumed, and the schema reaches the
/// current version.
#[test]
fn postgres_unversioned_target_keeps_working() {
    let Some(h) = PostgresHarness::from_env() else { return };
    let config = DestinationConfig::Postgres(h.config.clone());
    full_load(&config);
    let run = unfinished_reload(&config);
    h.query("DROP TABLE _fhirsync_schema_version");
    let before = h.rows();
    resume_reload(&config, &run);
    assert_eq!(h.rows().len(), before.len());
    assert_eq!(h.query("SELECT max(version)::text FROM _fhirsync_schema_version"), [[Some("2".to_string())]]);
}

/// PostgreSQL, migration from version 1: an unfinished run staged into a shadow of the earlier
/// naming (`_fhirsync_new_<type>`, without the run) cannot be resumed, so it is abandoned and
/// its shadow dropped; the landed rows are kept and the next run starts afresh.
#[test]
fn postgres_legacy_shadow_is_abandoned() {
    let Some(h) = PostgresHarness::from_env() else { return };
    let config = DestinationConfig::Postgres(h.config.clone());
    let first = full_load(&config);
    let run = unfinished_reload(&config);
    let shadow = h.query("SELECT table_name FROM _fhirsync_stage_types")[0][0].clone().unwrap();
    h.query(&format!(
        "DROP TABLE _fhirsync_schema_version; ALTER TABLE \"{shadow}\" RENAME TO _fhirsync_new_patient; \
         UPDATE _fhirsync_stage_types SET table_name = '_fhirsync_new_patient'"
    ));
    let before = h.rows();
    let mut dest = fhirsync_land::open(&config).unwrap();
    let statuses: Vec<(String, String)> = h.runs().into_iter().map(|r| (r.run_id, r.status)).collect();
    assert_eq!(statuses, [(first, "succeeded".to_string()), (run.clone(), "abandoned".to_string())]);
    assert!(h.query("SELECT * FROM _fhirsync_stage_types").is_empty(), "staging is dropped");
    let legacy =
        "SELECT count(*)::text FROM information_schema.tables WHERE table_name = '_fhirsync_new_patient'";
    assert_eq!(h.query(legacy), [[Some("0".to_string())]]);
    assert_eq!(h.rows(), before, "landed rows are kept");
    let start = dest.begin(Method::Reload, &LandOptions::default()).unwrap();
    assert!(!start.resumed && start.run_id != run, "the old run is not resumed");
    assert_eq!(h.query("SELECT max(version)::text FROM _fhirsync_schema_version"), [[Some("2".to_string())]]);
}

/// The file destinations' version record.
fn schema_file(dir: &Path) -> std::path::PathBuf {
    dir.join("_fhirsync").join("schema.json")
}

/// Parquet and NDJSON: a new folder records the current version, with this fhirsync's version.
#[test]
fn files_new_target_records_the_current_version() {
    for parquet in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let config = match parquet {
            true => DestinationConfig::Parquet(ParquetConfig::new(dir.path())),
            false => DestinationConfig::Ndjson(NdjsonConfig::new(dir.path())),
        };
        drop(fhirsync_land::open(&config).unwrap());
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(schema_file(dir.path())).unwrap()).unwrap();
        let expected = serde_json::json!({"schema_version": FILES_SCHEMA_VERSION, "fhirsync_version": env!("CARGO_PKG_VERSION")});
        assert_eq!(record, expected);
    }
}

/// NDJSON: a folder written before versions were recorded (no `schema.json`) keeps its
/// snapshot and its unfinished run, which is resumed; it then records the current version.
#[test]
fn files_unversioned_target_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let config = DestinationConfig::Ndjson(NdjsonConfig::new(dir.path()));
    full_load(&config);
    let run = unfinished_reload(&config);
    std::fs::remove_file(schema_file(dir.path())).unwrap();
    let runs_before = recent_runs(&config, 10).unwrap();
    assert_eq!(runs_before.len(), 2);
    resume_reload(&config, &run);
    assert!(schema_file(dir.path()).exists());
    let runs = recent_runs(&config, 10).unwrap();
    assert_eq!(runs[1], runs_before[1], "the earlier run's record is kept as it was");
}

/// Parquet: a folder at a newer version is refused by a writer and by `status`, and nothing
/// in it is written (its run history and version record are byte for byte the same).
#[test]
fn files_newer_target_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = DestinationConfig::Parquet(ParquetConfig::new(dir.path()));
    full_load(&config);
    let future = format!(r#"{{"schema_version": {FUTURE}, "fhirsync_version": "{FUTURE_FHIRSYNC}"}}"#);
    std::fs::write(schema_file(dir.path()), &future).unwrap();
    let runs_file = dir.path().join("_fhirsync").join("runs.json");
    let lock_file = dir.path().join("_fhirsync").join("lock");
    let before = (std::fs::read(&runs_file).unwrap(), std::fs::read(&lock_file).unwrap());
    assert_too_new(fhirsync_land::open(&config).err().expect("the open must fail"), FILES_SCHEMA_VERSION);
    assert_too_new(recent_runs(&config, 10).unwrap_err(), FILES_SCHEMA_VERSION);
    assert_eq!((std::fs::read(&runs_file).unwrap(), std::fs::read(&lock_file).unwrap()), before);
    assert_eq!(std::fs::read_to_string(schema_file(dir.path())).unwrap(), future);
}

/// NDJSON: a folder without fhirsync's files at all that is refused leaves nothing behind.
#[test]
fn files_newer_target_gets_no_bookkeeping() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("_fhirsync")).unwrap();
    let future = format!(r#"{{"schema_version": {FUTURE}, "fhirsync_version": "{FUTURE_FHIRSYNC}"}}"#);
    std::fs::write(schema_file(dir.path()), &future).unwrap();
    let config = DestinationConfig::Ndjson(NdjsonConfig::new(dir.path()));
    assert_too_new(fhirsync_land::open(&config).err().expect("the open must fail"), FILES_SCHEMA_VERSION);
    let left: Vec<_> =
        std::fs::read_dir(dir.path().join("_fhirsync")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["schema.json"], "no lock, no run history");
}
