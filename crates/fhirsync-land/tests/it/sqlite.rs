//! The scenario on SQLite, read back with plain SQL, plus SQLite-only checks.

use std::collections::BTreeSet;

use fhirsync_core::{RawResource, RunScope};
use fhirsync_land::{Destination, LandOptions, Method, SqliteConfig};
use rusqlite::Connection;
use tempfile::TempDir;

use crate::scenario::scenario_tests;
use crate::support::*;

/// A temporary SQLite database.
pub struct SqliteHarness {
    _dir: TempDir,
    config: SqliteConfig,
}

impl SqliteHarness {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = SqliteConfig { path: dir.path().join("land.db"), ..SqliteConfig::default() };
        SqliteHarness { _dir: dir, config }
    }

    fn conn(&self) -> Connection {
        Connection::open(&self.config.path).unwrap()
    }
}

fn strings(conn: &Connection, sql: &str) -> Vec<Vec<Option<String>>> {
    let mut stmt = conn.prepare(sql).unwrap();
    let n = stmt.column_count();
    stmt.query_map([], |row| {
        (0..n)
            .map(|i| {
                Ok(match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => None,
                    rusqlite::types::ValueRef::Integer(v) => Some(v.to_string()),
                    rusqlite::types::ValueRef::Real(v) => Some(v.to_string()),
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        Some(String::from_utf8(t.to_vec()).unwrap())
                    }
                })
            })
            .collect()
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

impl Harness for SqliteHarness {
    fn open(&self) -> Box<dyn Destination> {
        fhirsync_land::open(&fhirsync_land::DestinationConfig::Sqlite(self.config.clone())).unwrap()
    }

    fn rows(&self) -> Vec<Landed> {
        let conn = self.conn();
        let mut out = Vec::new();
        for t in strings(&conn, "SELECT resource_type, table_name FROM _fhirsync_types") {
            let (rt, table) = (t[0].clone().unwrap(), t[1].clone().unwrap());
            for r in strings(
                &conn,
                &format!(
                    "SELECT fhir_version, id, patient_id, dataset, source, content_hash, resource, first_seen_run, last_seen_run FROM \"{table}\""
                ),
            ) {
                out.push(Landed::from_cells(&rt, &r));
            }
        }
        sorted(out)
    }

    fn changes(&self, run_id: &str) -> Vec<Change> {
        let rows = strings(
            &self.conn(),
            &format!(
                "SELECT operation, resource_type, id, before_hash, after_hash FROM _fhirsync_changes WHERE run_id = '{run_id}'"
            ),
        );
        sorted(
            rows.into_iter()
                .map(|r| Change {
                    operation: r[0].clone().unwrap(),
                    resource_type: r[1].clone().unwrap(),
                    id: r[2].clone().unwrap(),
                    before_hash: r[3].clone(),
                    after_hash: r[4].clone(),
                })
                .collect(),
        )
    }

    fn exits(&self) -> Vec<String> {
        let rows = strings(&self.conn(), "SELECT patient_id FROM _fhirsync_cohort_exits ORDER BY patient_id");
        rows.into_iter().map(|r| r[0].clone().unwrap()).collect()
    }

    fn runs(&self) -> Vec<RunRow> {
        let rows = strings(
            &self.conn(),
            "SELECT run_id, method, status FROM _fhirsync_runs ORDER BY started_at, run_id",
        );
        rows.into_iter()
            .map(|r| RunRow {
                run_id: r[0].clone().unwrap(),
                method: r[1].clone().unwrap(),
                status: r[2].clone().unwrap(),
            })
            .collect()
    }

    fn view_rows(&self, table: &str, columns: &[&str]) -> Vec<Vec<Option<String>>> {
        let cols: Vec<String> = columns.iter().map(|c| format!("CAST(\"{c}\" AS TEXT)")).collect();
        sorted(strings(&self.conn(), &format!("SELECT {} FROM \"{table}\"", cols.join(", "))))
    }
}

scenario_tests!(Some(SqliteHarness::new()));

/// Typed view columns: decimals stored as their exact literal text, instants as SQLite's UTC
/// text, dates as `YYYY-MM-DD`, booleans 0/1, under declared types that tools map (DuckDB's
/// SQLite scanner: DATE → DATE, TIMESTAMP → TIMESTAMP, DECIMAL_TEXT → VARCHAR, never DOUBLE).
#[test]
fn typed_view_columns() {
    let h = SqliteHarness::new();
    let forms = crate::typed::Forms {
        decimals: ["1.50", "0.10", "1e+2", "123456789012345678.9"],
        instants: [
            "2019-04-01 08:30:00.000",
            "2020-03-01 04:59:59.500",
            "2019-04-01 08:30:00.123",
            "2019-04-01 12:00:00.123456",
        ],
        date: "1970-06-15",
        booleans: ["0", "1"],
    };
    crate::typed::typed_columns(&h, &forms);
    let conn = h.conn();
    let declared =
        |table: &str| strings(&conn, &format!("SELECT name, type FROM pragma_table_info('{table}')"));
    let want = |pairs: &[(&str, &str)]| -> Vec<Vec<Option<String>>> {
        pairs.iter().map(|(n, t)| vec![Some(n.to_string()), Some(t.to_string())]).collect()
    };
    assert_eq!(
        declared("view_obs_typed"),
        want(&[
            ("_fhir_version", "TEXT"),
            ("_id", "TEXT"),
            ("value", "DECIMAL_TEXT"),
            ("effective", "TIMESTAMP"),
            ("effective_text", "TEXT"),
            ("issued", "TIMESTAMP"),
            ("issued_text", "TEXT"),
        ])
    );
    assert_eq!(
        declared("view_patient_typed"),
        want(&[
            ("_fhir_version", "TEXT"),
            ("_id", "TEXT"),
            ("birth_date", "DATE"),
            ("birth_date_text", "TEXT"),
            ("deceased", "BOOLEAN"),
            ("births", "INTEGER"),
        ])
    );
    // Stored as text (not turned into REAL 1.5), and SQLite's date functions read the instants.
    let kinds = strings(
        &conn,
        "SELECT DISTINCT typeof(value), typeof(effective) FROM view_obs_typed WHERE effective IS NOT NULL",
    );
    assert_eq!(kinds, vec![vec![Some("text".to_string()), Some("text".to_string())]]);
    let epoch =
        strings(&conn, "SELECT CAST(strftime('%s', effective) AS TEXT) FROM view_obs_typed WHERE _id = 't1'");
    assert_eq!(epoch, vec![vec![Some("1554107400".to_string())]]);
    // The README's recipe: CAST to REAL to compute (floating point), the text stays exact.
    let sum = strings(
        &conn,
        "SELECT CAST(SUM(CAST(value AS REAL)) AS TEXT) FROM view_obs_typed WHERE _id IN ('t1', 't2')",
    );
    assert_eq!(sum, vec![vec![Some("1.6".to_string())]]);
}

/// After reload-and-compare only changed resources are re-flattened: unchanged view rows keep
/// their SQLite rowid.
#[test]
fn views_reflatten_only_changes() {
    let h = SqliteHarness::new();
    let views = [crate::scenario::obs_view()];
    let p1 = patient("p1", "Alpha");
    let (o1, o2) = (obs("o1", "p1", "1"), obs("o2", "p1", "2"));
    let all = run_scope(&["p1"], scopes_of(&["p1"]));
    let mut dest = h.open();
    let method = fhirsync_land::Method::ReloadAndCompare;
    land_with_views(
        &mut *dest,
        method,
        &Default::default(),
        &[p1.clone(), o1.clone(), o2],
        all.clone(),
        &views,
    )
    .unwrap();
    let rowid =
        |id: &str| strings(&h.conn(), &format!("SELECT rowid FROM view_obs_values WHERE _id = '{id}'"));
    let o1_before = rowid("o1");
    let m = land_with_views(
        &mut *dest,
        method,
        &Default::default(),
        &[p1, o1, obs("o2", "p1", "2.5")],
        all,
        &views,
    )
    .unwrap();
    assert_eq!(m.view_rows, 1, "only the updated o2 is re-flattened");
    assert_eq!(rowid("o1"), o1_before);
}

/// A full load seeds the history: every row is valid from it, so the first compare's delete and
/// before-image are in the history; a full load with replace closes the versions it replaces.
#[test]
fn full_load_seeds_history() {
    let h = SqliteHarness::new();
    let history = fhirsync_land::LandOptions { history: true, ..Default::default() };
    let (p1, o1, o2) = (patient("p1", "Alpha"), obs("o1", "p1", "1"), obs("o2", "p1", "2"));
    let mut dest = h.open();
    let all = scopes_of(&["p1"]);
    let r1 = land(
        &mut *dest,
        fhirsync_land::Method::FullLoad,
        &history,
        &[p1.clone(), o1.clone(), o2.clone()],
        run_scope(&["p1"], all.clone()),
    )
    .unwrap()
    .run_id;
    let open = "SELECT id, valid_from_run, valid_to_run FROM _fhirsync_history ORDER BY id, valid_from_run";
    let seeded = strings(&h.conn(), open);
    assert_eq!(seeded.len(), 3, "{seeded:?}");
    assert!(seeded.iter().all(|r| r[1].as_deref() == Some(r1.as_str()) && r[2].is_none()), "{seeded:?}");
    let r2 = land(
        &mut *dest,
        fhirsync_land::Method::ReloadAndCompare,
        &history,
        &[p1.clone(), o1.clone()],
        run_scope(&["p1"], all.clone()),
    )
    .unwrap()
    .run_id;
    let rows = strings(&h.conn(), open);
    assert!(
        rows.contains(&vec![Some("o2".into()), Some(r1.clone()), Some(r2.clone())]),
        "o2's delete closes it: {rows:?}"
    );
    let replace = fhirsync_land::LandOptions { history: true, replace: true, ..Default::default() };
    let r3 = land(
        &mut *dest,
        fhirsync_land::Method::FullLoad,
        &replace,
        std::slice::from_ref(&p1),
        run_scope(&["p1"], all),
    )
    .unwrap()
    .run_id;
    let rows = strings(&h.conn(), open);
    assert!(rows.contains(&vec![Some("o1".into()), Some(r1.clone()), Some(r3.clone())]), "{rows:?}");
    assert!(rows.contains(&vec![Some("p1".into()), Some(r3.clone()), None]), "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r[2].is_none()).count(), 1, "only the reloaded row is open: {rows:?}");
}

/// Type-2 history: each version of a resource gets valid_from/valid_to runs; deletes close it.
#[test]
fn history_keeps_every_version() {
    let h = SqliteHarness::new();
    let history = fhirsync_land::LandOptions { history: true, ..Default::default() };
    let (p1, o1, o2) = (patient("p1", "Alpha"), obs("o1", "p1", "1"), obs("o2", "p1", "2"));
    let mut dest = h.open();
    let all = scopes_of(&["p1"]);
    let r1 = land(
        &mut *dest,
        fhirsync_land::Method::ReloadAndCompare,
        &history,
        &[p1.clone(), o1.clone(), o2.clone()],
        run_scope(&["p1"], all.clone()),
    )
    .unwrap()
    .run_id;
    let o1b = obs("o1", "p1", "1.5");
    let r2 = land(
        &mut *dest,
        fhirsync_land::Method::ReloadAndCompare,
        &history,
        &[p1.clone(), o1b.clone()],
        run_scope(&["p1"], all),
    )
    .unwrap()
    .run_id;
    let rows = strings(
        &h.conn(),
        "SELECT id, content_hash, valid_from_run, valid_to_run FROM _fhirsync_history ORDER BY id, valid_from_run",
    );
    let row = |id: &str, r: &fhirsync_core::RawResource, from: &str, to: Option<&str>| {
        vec![Some(id.to_string()), Some(r.hash.to_hex()), Some(from.to_string()), to.map(str::to_string)]
    };
    assert_eq!(
        rows,
        vec![
            row("o1", &o1, &r1, Some(&r2)),
            row("o1", &o1b, &r2, None),
            row("o2", &o2, &r1, Some(&r2)),
            row("p1", &p1, &r1, None),
        ]
    );
}

/// The async `Landing` consumes a channel of extract events and commits them.
#[test]
fn landing_consumes_channel() {
    let h = SqliteHarness::new();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let (p1, o1) = (patient("p1", "Alpha"), obs("o1", "p1", "1"));
    let config = fhirsync_land::DestinationConfig::Sqlite(h.config.clone());
    let metrics = rt.block_on(async {
        let mut landing = fhirsync_land::Landing::begin(
            config,
            fhirsync_land::Method::ReloadAndCompare,
            Default::default(),
        )
        .await
        .unwrap();
        assert!(!landing.run().resumed);
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let send = async {
            tx.send(fhirsync_core::ExtractEvent::Resources(vec![p1.clone(), o1.clone()])).await.unwrap();
            for s in scopes_of(&["p1"]) {
                tx.send(fhirsync_core::ExtractEvent::ScopeComplete(s)).await.unwrap();
            }
            drop(tx);
        };
        let (stats, ()) = tokio::join!(landing.stage_events(rx), send);
        assert_eq!(stats.unwrap(), fhirsync_land::StageStats { resources: 2, scopes: 2 });
        landing
            .commit(run_scope(&["p1"], Default::default()), Vec::new(), serde_json::json!({"pages": 1}))
            .await
            .unwrap()
    });
    assert_eq!((metrics.staged, metrics.inserted), (2, 2));
    let r = metrics.run_id;
    assert_eq!(h.rows(), sorted(vec![landed(&p1, &r, &r), landed(&o1, &r, &r)]));
    let report = strings(&h.conn(), "SELECT report FROM _fhirsync_runs");
    assert_eq!(report, vec![vec![Some("{\"pages\":1}".to_string())]]);
}

// --- Shadow-table staging (per-type `_fhirsync_new_<type>` swapped or merged at commit) ---

/// Names of the staging tables (shadow and re-read) currently in the database, sorted.
fn shadow_tables(h: &SqliteHarness) -> Vec<String> {
    column(
        h,
        r"SELECT name FROM sqlite_master WHERE type = 'table' AND (name LIKE '\_fhirsync\_new\_%' ESCAPE '\'
          OR name LIKE '\_fhirsync\_reread\_%' ESCAPE '\') ORDER BY name",
    )
}

/// The root page of `table`: it changes when the table is replaced (swapped), not when rows
/// are merged into it.
fn rootpage(h: &SqliteHarness, table: &str) -> String {
    column(h, &format!("SELECT rootpage FROM sqlite_master WHERE type = 'table' AND name = '{table}'"))[0]
        .clone()
}

/// The first column of every row of `sql` (non-null text).
fn column(h: &SqliteHarness, sql: &str) -> Vec<String> {
    strings(&h.conn(), sql).into_iter().map(|r| r[0].clone().unwrap()).collect()
}

/// `count(*)` of `table`.
fn count(h: &SqliteHarness, table: &str) -> u64 {
    column(h, &format!("SELECT count(*) FROM \"{table}\""))[0].parse().unwrap()
}

/// Names of the explicit indexes on `table`: a swap replaces the table and with it the
/// `patient_id` index (named per run), a merge keeps both.
fn indexes(h: &SqliteHarness, table: &str) -> Vec<String> {
    column(
        h,
        &format!(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = '{table}' AND sql IS NOT NULL ORDER BY name"
        ),
    )
}

/// Every staging registry is empty and no shadow table is left.
fn assert_staging_empty(h: &SqliteHarness) {
    assert_eq!(shadow_tables(h), Vec::<String>::new());
    for table in ["_fhirsync_stage_types", "_fhirsync_stage_changes", "_fhirsync_stage_scopes"] {
        assert_eq!(count(h, table), 0, "{table} must be empty");
    }
}

/// Begins `method`, stages each batch in its own transaction, completes `scope.complete` and commits.
fn land_batches(
    dest: &mut dyn Destination,
    method: Method,
    batches: &[&[RawResource]],
    scope: RunScope,
) -> fhirsync_land::RunMetrics {
    let start = dest.begin(method, &LandOptions::default()).unwrap();
    assert!(!start.resumed);
    for batch in batches {
        dest.stage(batch).unwrap();
        dest.checkpoint().unwrap();
    }
    for s in &scope.complete {
        dest.scope_complete(s).unwrap();
    }
    dest.commit(&scope, &[], &serde_json::json!({})).unwrap()
}

/// A user's SQL view over a type table keeps working, and shows the new rows, after a reload
/// and a reload-and-compare, which merge into the rows table and swap in a new seen table (an
/// open reader keeps its snapshot).
#[test]
fn user_view_survives_swap() {
    let h = SqliteHarness::new();
    let (p1, p2) = (patient("p1", "Alpha"), patient("p2", "Beta"));
    let (o1, o2, o3) = (obs("o1", "p1", "1"), obs("o2", "p1", "2"), obs("o3", "p2", "3"));
    let all = || run_scope(&["p1", "p2"], scopes_of(&["p1", "p2"]));
    let mut dest = h.open();
    land(
        &mut *dest,
        Method::FullLoad,
        &LandOptions::default(),
        &[p1.clone(), p2.clone(), o1, o2.clone()],
        all(),
    )
    .unwrap();
    h.conn().execute_batch("CREATE VIEW my_obs AS SELECT id, patient_id FROM observation").unwrap();
    let sql = "SELECT id, patient_id FROM my_obs ORDER BY id";
    let view = || strings(&h.conn(), sql);
    let row = |id: &str, p: &str| vec![Some(id.to_string()), Some(p.to_string())];
    assert_eq!(view(), vec![row("o1", "p1"), row("o2", "p1")]);

    // A reader in the middle of a read transaction keeps its snapshot through the swap.
    let reader = h.conn();
    reader.execute_batch("BEGIN").unwrap();
    assert_eq!(strings(&reader, sql), vec![row("o1", "p1"), row("o2", "p1")]);
    let (rows_before, seen_before) =
        (rootpage(&h, "_fhirsync_rows_observation"), rootpage(&h, "_fhirsync_seen_observation"));
    let m = land(
        &mut *dest,
        Method::Reload,
        &LandOptions::default(),
        &[p1.clone(), p2.clone(), o2.clone(), o3],
        all(),
    )
    .unwrap();
    assert_eq!((m.staged, m.inserted, m.deleted, m.kept), (4, 1, 1, 0));
    assert_eq!(strings(&reader, sql), vec![row("o1", "p1"), row("o2", "p1")]);
    reader.execute_batch("COMMIT").unwrap();
    assert_eq!(strings(&reader, sql), vec![row("o2", "p1"), row("o3", "p2")]);
    assert_eq!(rootpage(&h, "_fhirsync_rows_observation"), rows_before, "rows are merged in place");
    assert_ne!(rootpage(&h, "_fhirsync_seen_observation"), seen_before, "the seen table is swapped");
    assert_eq!(view(), vec![row("o2", "p1"), row("o3", "p2")]);

    let seen_before = rootpage(&h, "_fhirsync_seen_observation");
    let o4 = obs("o4", "p2", "4");
    let m = land(&mut *dest, Method::ReloadAndCompare, &LandOptions::default(), &[p1, p2, o2, o4], all())
        .unwrap();
    assert_eq!((m.staged, m.inserted, m.deleted, m.unchanged), (4, 1, 1, 3));
    assert_eq!(rootpage(&h, "_fhirsync_rows_observation"), rows_before, "rows are merged in place");
    assert_ne!(rootpage(&h, "_fhirsync_seen_observation"), seen_before, "the seen table is swapped");
    assert_eq!(view(), vec![row("o2", "p1"), row("o4", "p2")]);
    // The view is still the user's definition, not dropped and recreated by the swap.
    let sql = column(&h, "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = 'my_obs'");
    assert_eq!(sql, vec!["CREATE VIEW my_obs AS SELECT id, patient_id FROM observation".to_string()]);
}

/// Opening a database left by an earlier version (single `_fhirsync_stage` table, unfinished
/// run) abandons that run, drops the table, empties the completed scopes, keeps the landed
/// rows, and the next run starts afresh instead of resuming.
#[test]
fn legacy_stage_is_abandoned_on_open() {
    let h = SqliteHarness::new();
    let (p1, o1) = (patient("p1", "Alpha"), obs("o1", "p1", "1"));
    let r1 = land(
        &mut *h.open(),
        Method::FullLoad,
        &LandOptions::default(),
        &[p1.clone(), o1.clone()],
        run_scope(&["p1"], scopes_of(&["p1"])),
    )
    .unwrap()
    .run_id;
    let before = h.rows();
    let o9 = obs("o9", "p1", "9");
    // What an earlier version (before schema versions were recorded) leaves behind when killed
    // while staging.
    h.conn()
        .execute_batch(&format!(
            "DROP TABLE _fhirsync_schema_version;
             CREATE TABLE _fhirsync_stage (run_id TEXT NOT NULL, resource_type TEXT NOT NULL, fhir_version TEXT NOT NULL, \
               id TEXT NOT NULL, patient_id TEXT, dataset TEXT NOT NULL, source TEXT NOT NULL, content_hash TEXT NOT NULL, \
               resource TEXT NOT NULL, PRIMARY KEY (resource_type, fhir_version, id));
             INSERT INTO _fhirsync_stage VALUES ('old-run', 'Observation', 'R4', 'o9', 'p1', '{lab}', '{SOURCE}', '{hash}', '{json}');
             INSERT INTO _fhirsync_runs (run_id, method, status, started_at)
               VALUES ('old-run', 'reload-and-compare', 'running', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
             INSERT INTO _fhirsync_stage_scopes (run_id, fhir_version, patient_id, dataset) VALUES ('old-run', 'R4', 'p1', '{lab}');",
            lab = lab(),
            hash = o9.hash.to_hex(),
            json = o9.json,
        ))
        .unwrap();

    let mut dest = h.open();
    let statuses: Vec<(String, String)> = h.runs().into_iter().map(|r| (r.run_id, r.status)).collect();
    assert_eq!(
        statuses,
        vec![(r1.clone(), "succeeded".to_string()), ("old-run".to_string(), "abandoned".to_string())]
    );
    let ended = strings(&h.conn(), "SELECT ended_at FROM _fhirsync_runs WHERE run_id = 'old-run'");
    assert!(ended[0][0].is_some(), "the abandoned run gets an end time");
    assert!(column(&h, "SELECT name FROM sqlite_master WHERE name = '_fhirsync_stage'").is_empty());
    assert_eq!(count(&h, "_fhirsync_stage_scopes"), 0);
    assert_eq!(h.rows(), before, "landed rows are untouched");

    let resume = LandOptions { resume: true, ..LandOptions::default() };
    let start = dest.begin(Method::ReloadAndCompare, &resume).unwrap();
    assert!(!start.resumed, "the old run must not be resumed");
    assert!(start.completed_scopes.is_empty());
    assert_ne!(start.run_id, "old-run");
    dest.stage(&[p1.clone(), o1.clone()]).unwrap();
    let scope = run_scope(&["p1"], scopes_of(&["p1"]));
    let m = dest.commit(&scope, &[], &serde_json::json!({})).unwrap();
    assert_eq!((m.staged, m.unchanged, m.deleted), (2, 2, 0));
    assert_eq!(h.rows(), sorted(vec![landed(&p1, &r1, &start.run_id), landed(&o1, &r1, &start.run_id)]));
}

/// Reload with most scopes complete: the Observation rows table, where 1 row in 4 changed, is
/// rewritten ahead of the commit and swapped in with its one `patient_id` index; the Patient one
/// is left as it was. Exact rows, seen-runs and counts, with the rows of the one incomplete
/// scope kept as they were.
#[test]
fn reload_exact_rows() {
    let h = SqliteHarness::new();
    let (p1, p2, p3) = (patient("p1", "Alpha"), patient("p2", "Beta"), patient("p3", "Gamma"));
    let (o1, o2, o3, o4) =
        (obs("o1", "p1", "1"), obs("o2", "p1", "2"), obs("o3", "p2", "3"), obs("o4", "p3", "4"));
    let first = [p1.clone(), p2.clone(), p3.clone(), o1, o2, o3.clone(), o4.clone()];
    let cohort = ["p1", "p2", "p3"];
    let (mut dest, r1) = full_load(&h, &first, &cohort);
    let roots_before = rows_roots(&h);

    // o1 changed, o2 gone at the source, o5 new; p3's lab search failed (o4 kept).
    let (o1b, o5) = (obs("o1", "p1", "1.5"), obs("o5", "p2", "5"));
    let mut complete = scopes_of(&cohort);
    complete.remove(&scope("p3", lab()));
    let m = land_batches(
        &mut *dest,
        Method::Reload,
        &[&[p1.clone(), p2.clone(), o1b.clone()], &[p3.clone(), o3.clone(), o5.clone()]],
        run_scope(&cohort, complete),
    );
    let r2 = m.run_id.clone();
    assert_eq!((m.staged, m.inserted, m.updated, m.deleted, m.unchanged, m.kept), (6, 1, 0, 1, 0, 1));
    let roots = rows_roots(&h);
    assert_eq!(roots[0], roots_before[0], "no patient changed: their rows table is left as it was");
    assert_ne!(roots[1], roots_before[1], "1 observation in 4 changed: their rows table is rewritten");
    assert_eq!(
        ROWS_TABLES.map(|t| indexes(&h, t).len()),
        [1, 1],
        "each rows table has exactly its patient_id index"
    );
    assert_eq!(
        h.rows(),
        sorted(vec![
            landed(&p1, &r1, &r2),
            landed(&p2, &r1, &r2),
            landed(&p3, &r1, &r2),
            landed(&o1b, &r1, &r2),
            landed(&o3, &r1, &r2),
            landed(&o4, &r1, &r1),
            landed(&o5, &r2, &r2),
        ])
    );
    assert!(h.changes(&r2).is_empty(), "reload writes no change records");
    assert_staging_empty(&h);
    let stored = strings(
        &h.conn(),
        &format!("SELECT staged, inserted, deleted, kept FROM _fhirsync_runs WHERE run_id = '{r2}'"),
    );
    assert_eq!(stored, vec![["6", "1", "1", "1"].map(|s| Some(s.to_string())).to_vec()]);
}

/// Reload where only one small scope completes, so more rows are kept than staged: the kept
/// rows keep their `last_seen_run` in the new seen table; exact rows, seen-runs and counts.
#[test]
fn reload_merge_exact_rows() {
    let h = SqliteHarness::new();
    let (p1, p2, p3) = (patient("p1", "Alpha"), patient("p2", "Beta"), patient("p3", "Gamma"));
    let (o1, o2) = (obs("o1", "p1", "1"), obs("o2", "p1", "2"));
    let others: Vec<RawResource> =
        (1..=6).map(|i| obs(&format!("q{i}"), if i <= 3 { "p2" } else { "p3" }, &i.to_string())).collect();
    let mut first = vec![p1.clone(), p2.clone(), p3.clone(), o1, o2];
    first.extend(others.iter().cloned());
    let cohort = ["p1", "p2", "p3"];
    let (mut dest, r1) = full_load(&h, &first, &cohort);
    let roots_before = rows_roots(&h);

    // Only p1 is fetched completely: o1 changed, o2 gone, o7 new; everything of p2 and p3 is kept.
    let (o1b, o7) = (obs("o1", "p1", "1.5"), obs("o7", "p1", "7"));
    let m = land_batches(
        &mut *dest,
        Method::Reload,
        &[&[p1.clone(), o1b.clone(), o7.clone()]],
        run_scope(&cohort, scopes_of(&["p1"])),
    );
    let r2 = m.run_id.clone();
    assert_eq!((m.staged, m.inserted, m.updated, m.deleted, m.unchanged, m.kept), (3, 1, 0, 1, 0, 8));
    let roots = rows_roots(&h);
    assert_eq!(roots[0], roots_before[0], "no patient changed: their rows table is left as it was");
    assert_ne!(roots[1], roots_before[1], "1 observation in 8 changed: their rows table is rewritten");
    let mut expected = vec![
        landed(&p1, &r1, &r2),
        landed(&p2, &r1, &r1),
        landed(&p3, &r1, &r1),
        landed(&o1b, &r1, &r2),
        landed(&o7, &r2, &r2),
    ];
    expected.extend(others.iter().map(|q| landed(q, &r1, &r1)));
    assert_eq!(h.rows(), sorted(expected));
    assert_staging_empty(&h);
}

/// Opens `h` and full-loads `resources` of patient p1 (its scopes complete); returns the
/// destination and the run id.
fn full_load_p1(h: &SqliteHarness, resources: &[RawResource]) -> (Box<dyn Destination>, String) {
    full_load(h, resources, &["p1"])
}

/// Opens `h` and full-loads `resources` of the `cohort`, every scope complete; returns the
/// destination and the run id.
fn full_load(
    h: &SqliteHarness,
    resources: &[RawResource],
    cohort: &[&str],
) -> (Box<dyn Destination>, String) {
    let mut dest = h.open();
    let scope = run_scope(cohort, scopes_of(cohort));
    let run = land(&mut *dest, Method::FullLoad, &LandOptions::default(), resources, scope).unwrap().run_id;
    (dest, run)
}

/// The rows tables of Patient and Observation.
const ROWS_TABLES: [&str; 2] = ["_fhirsync_rows_patient", "_fhirsync_rows_observation"];

/// Root pages of the [`ROWS_TABLES`] (see [`rootpage`]).
fn rows_roots(h: &SqliteHarness) -> [String; 2] {
    ROWS_TABLES.map(|t| rootpage(h, t))
}

/// Reload-and-compare: a key staged first changed, then again with its landed content (across
/// batches, and within one), gets no change record and counts as unchanged.
#[test]
fn compare_key_staged_twice_back_to_landed() {
    let h = SqliteHarness::new();
    let (p1, o1, o2) = (patient("p1", "Alpha"), obs("o1", "p1", "1"), obs("o2", "p1", "2"));
    let (mut dest, r1) = full_load_p1(&h, &[p1.clone(), o1.clone(), o2.clone()]);
    let all = || run_scope(&["p1"], scopes_of(&["p1"]));
    // Two pages of one search overlap (paging under concurrent edits): o1 twice.
    let (o1x, o2x) = (obs("o1", "p1", "9"), obs("o2", "p1", "9"));
    let m = land_batches(
        &mut *dest,
        Method::ReloadAndCompare,
        &[&[p1.clone(), o2x, o2.clone()], &[o1x], std::slice::from_ref(&o1)],
        all(),
    );
    let r2 = m.run_id.clone();
    assert_eq!((m.staged, m.inserted, m.updated, m.deleted, m.unchanged), (3, 0, 0, 0, 3));
    assert_eq!(h.changes(&r2), Vec::<Change>::new());
    assert_eq!(h.rows(), sorted(vec![landed(&p1, &r1, &r2), landed(&o1, &r1, &r2), landed(&o2, &r1, &r2)]));
    assert_staging_empty(&h);
}

/// Reload-and-compare: a key staged first unchanged, then changed, gets exactly one `U` record
/// whose after-hash is the second copy's.
#[test]
fn compare_key_staged_twice_changed_last() {
    let h = SqliteHarness::new();
    let (p1, o1, o2) = (patient("p1", "Alpha"), obs("o1", "p1", "1"), obs("o2", "p1", "2"));
    let (mut dest, r1) = full_load_p1(&h, &[p1.clone(), o1.clone(), o2.clone()]);
    let all = || run_scope(&["p1"], scopes_of(&["p1"]));
    let o1b = obs("o1", "p1", "1.5");
    // Both copies in one batch, and again across batches for o2.
    let o2b = obs("o2", "p1", "2.5");
    let m = land_batches(
        &mut *dest,
        Method::ReloadAndCompare,
        &[&[p1.clone(), o1.clone(), o1b.clone(), o2.clone()], std::slice::from_ref(&o2b)],
        all(),
    );
    let r2 = m.run_id.clone();
    assert_eq!((m.staged, m.inserted, m.updated, m.deleted, m.unchanged), (3, 0, 2, 0, 1));
    assert_eq!(
        h.changes(&r2),
        vec![
            change("U", "Observation", "o1", Some(&o1), Some(&o1b)),
            change("U", "Observation", "o2", Some(&o2), Some(&o2b)),
        ]
    );
    assert_eq!(h.rows(), sorted(vec![landed(&p1, &r1, &r2), landed(&o1b, &r1, &r2), landed(&o2b, &r1, &r2)]));
}

/// A committed run leaves no shadow table and empty staging registries; a failed run's shadow
/// tables are dropped when a run of another method abandons it.
#[test]
fn staging_is_cleaned_up() {
    let h = SqliteHarness::new();
    let (p1, o1) = (patient("p1", "Alpha"), obs("o1", "p1", "1"));
    let mut dest = h.open();
    let r1 = land(
        &mut *dest,
        Method::FullLoad,
        &LandOptions::default(),
        &[p1.clone(), o1.clone()],
        run_scope(&["p1"], scopes_of(&["p1"])),
    )
    .unwrap()
    .run_id;
    assert_staging_empty(&h);

    // Reload-and-compare with a change noted while staging.
    let p1b = patient("p1", "Alpha-Beta");
    dest.begin(Method::ReloadAndCompare, &LandOptions::default()).unwrap();
    dest.stage(&[p1b.clone(), o1.clone()]).unwrap();
    let patient_scope = scope("p1", fhirsync_core::Dataset::new("Patient"));
    dest.scope_complete(&patient_scope).unwrap();
    dest.checkpoint().unwrap();
    assert_eq!(
        shadow_tables(&h),
        [
            "_fhirsync_new_observation",
            "_fhirsync_new_patient",
            "_fhirsync_reread_observation",
            "_fhirsync_reread_patient"
        ]
    );
    assert_eq!(
        (
            count(&h, "_fhirsync_stage_types"),
            count(&h, "_fhirsync_stage_changes"),
            count(&h, "_fhirsync_stage_scopes")
        ),
        (2, 1, 1)
    );
    let m = dest.commit(&run_scope(&["p1"], [patient_scope].into()), &[], &serde_json::json!({})).unwrap();
    let r2 = m.run_id;
    assert_eq!((m.staged, m.updated, m.unchanged, m.kept), (2, 1, 1, 0));
    assert_staging_empty(&h);
    assert_eq!(h.rows(), sorted(vec![landed(&p1b, &r1, &r2), landed(&o1, &r1, &r2)]));

    // A failed reload-and-compare keeps its shadows for resume ...
    let failed = dest.begin(Method::ReloadAndCompare, &LandOptions::default()).unwrap().run_id;
    dest.stage(&[p1.clone(), obs("o9", "p1", "9")]).unwrap();
    dest.fail("token expired").unwrap();
    assert_eq!(
        shadow_tables(&h),
        [
            "_fhirsync_new_observation",
            "_fhirsync_new_patient",
            "_fhirsync_reread_observation",
            "_fhirsync_reread_patient"
        ]
    );
    // ... until a reload abandons it (after the first writer let go of its lock).
    drop(dest);
    let mut dest = h.open();
    let start = dest.begin(Method::Reload, &LandOptions::default()).unwrap();
    assert!(!start.resumed);
    assert_staging_empty(&h);
    assert_eq!(h.runs().iter().find(|r| r.run_id == failed).map(|r| r.status.as_str()), Some("abandoned"));
    dest.stage(&[p1.clone(), o1.clone()]).unwrap();
    let m = dest.commit(&run_scope(&["p1"], scopes_of(&["p1"])), &[], &serde_json::json!({})).unwrap();
    assert_eq!((m.staged, m.inserted, m.deleted, m.kept), (2, 0, 0, 0));
    assert_staging_empty(&h);
    assert_eq!(h.rows(), sorted(vec![landed(&p1, &r1, &m.run_id), landed(&o1, &r1, &m.run_id)]));
}

/// A run that stages nothing of a landed type commits: its rows are kept while their scope is
/// incomplete and deleted (with `D` records) once it completes without them.
#[test]
fn registered_type_not_staged() {
    let h = SqliteHarness::new();
    let (p1, o1) = (patient("p1", "Alpha"), obs("o1", "p1", "1"));
    let mut dest = h.open();
    let options = LandOptions::default();
    let all = scopes_of(&["p1"]);
    let r1 = land(
        &mut *dest,
        Method::FullLoad,
        &options,
        &[p1.clone(), o1.clone()],
        run_scope(&["p1"], all.clone()),
    )
    .unwrap()
    .run_id;
    // p1's lab search failed before its first page: no Observation staged, o1 kept.
    let patient_only = [scope("p1", fhirsync_core::Dataset::new("Patient"))].into();
    let m = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &options,
        std::slice::from_ref(&p1),
        run_scope(&["p1"], patient_only),
    )
    .unwrap();
    let r2 = m.run_id;
    assert_eq!((m.staged, m.unchanged, m.deleted, m.kept), (1, 1, 0, 1));
    assert_eq!(h.rows(), sorted(vec![landed(&p1, &r1, &r2), landed(&o1, &r1, &r1)]));
    assert_staging_empty(&h);
    // It completed empty: o1 was deleted at the source.
    let m = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &options,
        std::slice::from_ref(&p1),
        run_scope(&["p1"], all),
    )
    .unwrap();
    assert_eq!((m.staged, m.unchanged, m.deleted, m.kept), (1, 1, 1, 0));
    assert_eq!(h.changes(&m.run_id), vec![change("D", "Observation", "o1", Some(&o1), None)]);
    assert_eq!(h.rows(), vec![landed(&p1, &r1, &m.run_id)]);
    assert_staging_empty(&h);
}

/// A reload killed after a checkpoint keeps its shadow tables; the resumed run commits exact
/// rows with `first_seen_run` preserved.
#[test]
fn reload_resumes_from_shadow() {
    let h = SqliteHarness::new();
    let (p1, p2) = (patient("p1", "Alpha"), patient("p2", "Beta"));
    let (o1, o2, o3) = (obs("o1", "p1", "1"), obs("o2", "p1", "2"), obs("o3", "p2", "3"));
    let cohort = ["p1", "p2"];
    let r1 = land(
        &mut *h.open(),
        Method::FullLoad,
        &LandOptions::default(),
        &[p1.clone(), p2.clone(), o1.clone(), o2.clone(), o3.clone()],
        run_scope(&cohort, scopes_of(&cohort)),
    )
    .unwrap()
    .run_id;
    let before = h.rows();

    // p1 is staged completely (o1 changed, o2 gone), then the process dies while staging p2.
    let o1b = obs("o1", "p1", "1.5");
    let killed = kill_after_checkpoint(
        &h,
        Method::Reload,
        &LandOptions::default(),
        &[p1.clone(), o1b.clone()],
        &scopes_of(&["p1"]),
        std::slice::from_ref(&p2),
    )
    .run_id;
    assert_eq!(h.rows(), before, "a killed run leaves the landed rows as they were");
    assert_eq!(
        shadow_tables(&h),
        [
            "_fhirsync_new_observation",
            "_fhirsync_new_patient",
            "_fhirsync_reread_observation",
            "_fhirsync_reread_patient"
        ]
    );
    // Only checkpointed rows survive: unchanged p1 as re-read, changed o1 in the shadow.
    assert_eq!(count(&h, "_fhirsync_new_patient"), 0);
    assert_eq!(
        column(
            &h,
            "SELECT r._row = t._row FROM _fhirsync_reread_patient r, _fhirsync_rows_patient t WHERE t.id = 'p1'"
        ),
        ["1"]
    );
    assert_eq!(count(&h, "_fhirsync_reread_observation"), 0);
    assert_eq!(
        column(&h, "SELECT id || ' ' || first_seen_run FROM _fhirsync_new_observation"),
        [format!("o1 {killed}")]
    );

    let mut dest = h.open();
    let start = dest.begin(Method::Reload, &LandOptions::default()).unwrap();
    assert!(start.resumed);
    assert_eq!(start.run_id, killed);
    assert_eq!(start.completed_scopes, scopes_of(&["p1"]));
    // The extractor skips p1 and fetches p2 again: o3 changed, o4 new.
    let (o3b, o4) = (obs("o3", "p2", "3.5"), obs("o4", "p2", "4"));
    dest.stage(&[p2.clone(), o3b.clone(), o4.clone()]).unwrap();
    let m = complete_and_commit(&mut *dest, &cohort, &["p2"]);
    assert_eq!(m.run_id, killed);
    assert_eq!((m.staged, m.inserted, m.deleted, m.kept), (5, 1, 1, 0));
    let r2 = killed;
    assert_eq!(
        h.rows(),
        sorted(vec![
            landed(&p1, &r1, &r2),
            landed(&p2, &r1, &r2),
            landed(&o1b, &r1, &r2),
            landed(&o3b, &r1, &r2),
            landed(&o4, &r2, &r2),
        ])
    );
    assert_staging_empty(&h);
    let statuses: Vec<String> = h.runs().into_iter().map(|r| r.status).collect();
    assert_eq!(statuses, ["succeeded", "succeeded"]);
}

/// A user's index and trigger on a rows table survive a reload and a full load that replaces
/// the data (merged into, not swapped), and the trigger fires for each new row.
#[test]
fn user_index_and_trigger_survive_swap() {
    let h = SqliteHarness::new();
    let (p1, o1, o2) = (patient("p1", "Alpha"), obs("o1", "p1", "1"), obs("o2", "p1", "2"));
    let all = || run_scope(&["p1"], scopes_of(&["p1"]));
    let mut dest = h.open();
    land(&mut *dest, Method::FullLoad, &LandOptions::default(), &[p1.clone(), o1.clone()], all()).unwrap();
    h.conn()
        .execute_batch(
            "CREATE INDEX my_obs_dataset ON _fhirsync_rows_observation (dataset); CREATE TABLE my_audit (id TEXT); \
             CREATE TRIGGER my_obs_audit AFTER INSERT ON _fhirsync_rows_observation \
             BEGIN INSERT INTO my_audit VALUES (new.id); END;",
        )
        .unwrap();
    let user_objects = || {
        column(
            &h,
            "SELECT type || ' ' || name FROM sqlite_master WHERE tbl_name = '_fhirsync_rows_observation' \
             AND name LIKE 'my\\_%' ESCAPE '\\' ORDER BY name",
        )
    };
    assert_eq!(user_objects(), ["trigger my_obs_audit", "index my_obs_dataset"]);
    let m = land(&mut *dest, Method::Reload, &LandOptions::default(), &[p1.clone(), o1, o2.clone()], all())
        .unwrap();
    assert_eq!((m.staged, m.inserted), (3, 1));
    assert_eq!(user_objects(), ["trigger my_obs_audit", "index my_obs_dataset"]);
    assert_eq!(column(&h, "SELECT id FROM my_audit"), ["o2"]);
    let replace = LandOptions { replace: true, ..LandOptions::default() };
    let m = land(&mut *dest, Method::FullLoad, &replace, &[p1.clone(), o2.clone()], all()).unwrap();
    assert_eq!(h.rows(), sorted(vec![landed(&p1, &m.run_id, &m.run_id), landed(&o2, &m.run_id, &m.run_id)]));
    assert_eq!(user_objects(), ["trigger my_obs_audit", "index my_obs_dataset"]);
    assert_eq!(column(&h, "SELECT id FROM my_audit ORDER BY rowid"), ["o2", "o2"]);
}

/// With `on_cohort_exit = delete` and a patient leaving, patient-less rows of an incomplete
/// scope are kept (counted and present), on the swap path as on the merge path.
#[test]
fn delete_exits_keep_patientless_rows_of_incomplete_scope() {
    let h = SqliteHarness::new();
    let (p1, p2) = (patient("p1", "Alpha"), patient("p2", "Beta"));
    let (pr1, pr2) = (practitioner("pr1"), practitioner("pr2"));
    let mut complete = scopes_of(&["p1", "p2"]);
    complete.insert(practitioner_scope());
    let mut dest = h.open();
    let r1 = land(
        &mut *dest,
        Method::FullLoad,
        &LandOptions::default(),
        &[p1.clone(), p2.clone(), pr1.clone(), pr2.clone()],
        run_scope(&["p1", "p2"], complete),
    )
    .unwrap()
    .run_id;
    // p2 left the cohort (deleted); the practitioner search failed after its first page.
    let delete =
        LandOptions { on_cohort_exit: fhirsync_land::OnCohortExit::Delete, ..LandOptions::default() };
    let m = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &delete,
        &[p1.clone(), pr1.clone()],
        run_scope(&["p1"], scopes_of(&["p1"])),
    )
    .unwrap();
    let r2 = m.run_id;
    assert_eq!((m.staged, m.cohort_exits, m.deleted, m.kept), (2, 1, 1, 1));
    assert_eq!(h.changes(&r2), vec![change("D", "Patient", "p2", Some(&p2), None)]);
    assert_eq!(h.rows(), sorted(vec![landed(&p1, &r1, &r2), landed(&pr1, &r1, &r2), landed(&pr2, &r1, &r1)]));
}

// --- Full load into an empty target: rollback journal while staging, WAL after ---

/// The journal mode a new connection to the database reports.
fn journal_mode(h: &SqliteHarness) -> String {
    h.conn().query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap()
}

/// A full load into an empty file stages with the rollback journal (no WAL file grows) and
/// leaves the database in WAL mode with exact rows and no journal file.
#[test]
fn full_load_into_empty_target_uses_rollback_journal() {
    let h = SqliteHarness::new();
    let (p1, o1) = (patient("p1", "Alpha"), obs("o1", "p1", "1"));
    let mut dest = h.open();
    dest.begin(Method::FullLoad, &LandOptions::default()).unwrap();
    dest.stage(&[p1.clone(), o1.clone()]).unwrap();
    dest.checkpoint().unwrap();
    assert_eq!(journal_mode(&h), "delete", "staging an empty target uses the rollback journal");
    let m = complete_and_commit(&mut *dest, &["p1"], &["p1"]);
    assert_eq!(journal_mode(&h), "wal", "the committed database is back in WAL mode");
    assert_eq!(h.rows(), sorted(vec![landed(&p1, &m.run_id, &m.run_id), landed(&o1, &m.run_id, &m.run_id)]));
    let journal = h.config.path.with_extension("db-journal");
    assert!(!journal.exists(), "no rollback journal is left behind");
    assert_staging_empty(&h);
}

/// While another connection has the database open, a full load into the empty target stays in
/// WAL mode (leaving it would need that connection gone) and still lands exact rows.
#[test]
fn full_load_with_open_reader_stays_in_wal() {
    let h = SqliteHarness::new();
    drop(h.open());
    let reader = h.conn();
    let mode: String = reader.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let p1 = patient("p1", "Alpha");
    let mut dest = h.open();
    dest.begin(Method::FullLoad, &LandOptions::default()).unwrap();
    dest.stage(std::slice::from_ref(&p1)).unwrap();
    dest.checkpoint().unwrap();
    let mode: String = reader.query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
    assert_eq!(mode, "wal", "an open reader keeps the load in WAL mode");
    let m = dest.commit(&run_scope(&["p1"], BTreeSet::new()), &[], &serde_json::json!({})).unwrap();
    let ids: Vec<String> = reader
        .prepare("SELECT id FROM patient")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ids, ["p1"], "the reader sees the committed rows");
    assert_eq!(h.rows(), vec![landed(&p1, &m.run_id, &m.run_id)]);
}

/// A full load into an empty target killed after a checkpoint resumes (the next open returns
/// the file to WAL mode, the resumed run leaves it again) and commits exact rows in WAL mode.
#[test]
fn killed_full_load_into_empty_target_resumes() {
    let h = SqliteHarness::new();
    let (p1, p2) = (patient("p1", "Alpha"), patient("p2", "Beta"));
    let (o1, o2) = (obs("o1", "p1", "1"), obs("o2", "p2", "2"));
    let killed = kill_after_checkpoint(
        &h,
        Method::FullLoad,
        &LandOptions::default(),
        &[p1.clone(), o1.clone()],
        &scopes_of(&["p1"]),
        std::slice::from_ref(&p2),
    )
    .run_id;
    assert_eq!(journal_mode(&h), "delete", "the killed load left the rollback journal on");

    let mut dest = h.open();
    assert_eq!(journal_mode(&h), "wal", "opening the destination restores WAL mode");
    let start = dest.begin(Method::FullLoad, &LandOptions::default()).unwrap();
    assert!(start.resumed);
    assert_eq!(start.run_id, killed);
    assert_eq!(journal_mode(&h), "delete", "the resumed load of the still-empty target leaves WAL again");
    dest.stage(&[p2.clone(), o2.clone()]).unwrap();
    let m = complete_and_commit(&mut *dest, &["p1", "p2"], &["p2"]);
    assert_eq!(m.run_id, killed);
    assert_eq!(journal_mode(&h), "wal");
    assert_eq!(
        h.rows(),
        sorted(vec![
            landed(&p1, &killed, &killed),
            landed(&p2, &killed, &killed),
            landed(&o1, &killed, &killed),
            landed(&o2, &killed, &killed),
        ])
    );
    assert_staging_empty(&h);
}

/// The full-load guard takes no database error for an empty target: when a registered type's
/// table cannot be read, the full load fails with SQLite's error and starts no run.
#[test]
fn full_load_guard_fails_on_a_database_error() {
    let h = SqliteHarness::new();
    drop(h.open());
    h.conn().execute_batch("INSERT INTO _fhirsync_types VALUES ('Observation', 'observation')").unwrap();
    let err = h.open().begin(Method::FullLoad, &LandOptions::default()).unwrap_err();
    assert!(matches!(err, fhirsync_land::Error::Sqlite { .. }), "{err}");
    assert!(err.to_string().contains("no such table"), "{err}");
    assert!(h.runs().is_empty(), "no run was started");
}

/// A full load that replaces a landed target keeps WAL mode while staging, so readers of the
/// landed rows are never blocked.
#[test]
fn full_load_replacing_data_stays_in_wal() {
    let h = SqliteHarness::new();
    let p1 = patient("p1", "Alpha");
    land(
        &mut *h.open(),
        Method::FullLoad,
        &LandOptions::default(),
        std::slice::from_ref(&p1),
        run_scope(&["p1"], BTreeSet::new()),
    )
    .unwrap();
    let mut dest = h.open();
    dest.begin(Method::FullLoad, &LandOptions { replace: true, ..LandOptions::default() }).unwrap();
    dest.stage(std::slice::from_ref(&p1)).unwrap();
    dest.checkpoint().unwrap();
    assert_eq!(journal_mode(&h), "wal");
    let m = dest.commit(&run_scope(&["p1"], BTreeSet::new()), &[], &serde_json::json!({})).unwrap();
    assert_eq!(h.rows(), vec![landed(&p1, &m.run_id, &m.run_id)]);
}

/// A row another connection writes into a rows table while a reload stages (with one deleted,
/// so the table's row count still matches the keys found) is not mistaken for a re-read one:
/// its incomplete scope keeps it. The other connection's delete of a row staged unchanged stands.
#[test]
fn row_written_by_another_connection_during_reload_is_kept() {
    let h = SqliteHarness::new();
    let (o1, o2) = (obs("o1", "p1", "1"), obs("o2", "p1", "2"));
    let scope_p1 = run_scope(&["p1"], scopes_of(&["p1"]));
    land(&mut *h.open(), Method::FullLoad, &LandOptions::default(), &[o1.clone(), o2.clone()], scope_p1)
        .unwrap();

    let mut dest = h.open();
    dest.begin(Method::Reload, &LandOptions::default()).unwrap();
    dest.stage(&[o1.clone(), o2.clone()]).unwrap();
    dest.checkpoint().unwrap();
    h.conn()
        .execute_batch(
            "INSERT INTO _fhirsync_rows_observation (id, patient_id, fhir_version, source, dataset, content_hash, \
               resource, first_seen_run) SELECT 'o9', 'p3', fhir_version, source, dataset, content_hash, resource, \
               first_seen_run FROM _fhirsync_rows_observation WHERE id = 'o1'; \
             INSERT INTO _fhirsync_seen_observation SELECT _row, 'other' FROM _fhirsync_rows_observation WHERE id = 'o9'; \
             DELETE FROM _fhirsync_rows_observation WHERE id = 'o2';",
        )
        .unwrap();
    let m = complete_and_commit(&mut *dest, &["p1", "p3"], &["p1"]);
    assert_eq!((m.staged, m.deleted, m.kept), (2, 0, 1));
    assert_eq!(
        column(&h, "SELECT id || ' ' || last_seen_run FROM observation ORDER BY id"),
        [format!("o1 {}", m.run_id), "o9 other".to_string()]
    );
    assert_staging_empty(&h);
}

// --- Split layout: rows and `last_seen_run` in two tables, the type table a view ---

/// Counts the writes to `_fhirsync_rows_observation` in `my_writes` (triggers).
fn count_row_writes(h: &SqliteHarness) {
    h.conn()
        .execute_batch(
            "CREATE TABLE my_writes (op TEXT); \
             CREATE TRIGGER my_ins AFTER INSERT ON _fhirsync_rows_observation BEGIN INSERT INTO my_writes VALUES ('I'); END; \
             CREATE TRIGGER my_upd AFTER UPDATE ON _fhirsync_rows_observation BEGIN INSERT INTO my_writes VALUES ('U'); END; \
             CREATE TRIGGER my_del AFTER DELETE ON _fhirsync_rows_observation BEGIN INSERT INTO my_writes VALUES ('D'); END;",
        )
        .unwrap();
}

/// An unchanged reload and reload-and-compare write no row of the rows table, yet every row
/// shows the new `last_seen_run`; a changed row is the only one written.
#[test]
fn unchanged_reload_writes_no_row() {
    let h = SqliteHarness::new();
    let (p1, o1, o2) = (patient("p1", "Alpha"), obs("o1", "p1", "1"), obs("o2", "p1", "2"));
    let (mut dest, r1) = full_load_p1(&h, &[p1.clone(), o1.clone(), o2.clone()]);
    count_row_writes(&h);
    let all = || run_scope(&["p1"], scopes_of(&["p1"]));
    let writes = || column(&h, "SELECT op FROM my_writes ORDER BY rowid");
    for method in [Method::Reload, Method::ReloadAndCompare] {
        let r =
            land(&mut *dest, method, &LandOptions::default(), &[p1.clone(), o1.clone(), o2.clone()], all())
                .unwrap()
                .run_id;
        assert_eq!(writes(), Vec::<String>::new(), "{method}");
        assert_eq!(h.rows(), sorted(vec![landed(&p1, &r1, &r), landed(&o1, &r1, &r), landed(&o2, &r1, &r)]));
    }
    let o2b = obs("o2", "p1", "2.5");
    let r = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &LandOptions::default(),
        &[p1.clone(), o1.clone(), o2b.clone()],
        all(),
    )
    .unwrap()
    .run_id;
    assert_eq!(writes(), ["U"]);
    assert_eq!(h.rows(), sorted(vec![landed(&p1, &r1, &r), landed(&o1, &r1, &r), landed(&o2b, &r1, &r)]));
}

/// Reload-and-compare with history on a target landed without it opens a version for every
/// row, the unchanged ones included.
#[test]
fn history_opens_versions_for_rows_landed_without_it() {
    let h = SqliteHarness::new();
    let (p1, o1) = (patient("p1", "Alpha"), obs("o1", "p1", "1"));
    let (mut dest, _) = full_load_p1(&h, &[p1.clone(), o1.clone()]);
    let history = LandOptions { history: true, ..LandOptions::default() };
    let r2 = land(
        &mut *dest,
        Method::ReloadAndCompare,
        &history,
        &[p1, o1],
        run_scope(&["p1"], scopes_of(&["p1"])),
    )
    .unwrap()
    .run_id;
    let versions =
        strings(&h.conn(), "SELECT id, valid_from_run, valid_to_run FROM _fhirsync_history ORDER BY id");
    let open = |id: &str| vec![Some(id.to_string()), Some(r2.clone()), None];
    assert_eq!(versions, vec![open("o1"), open("p1")]);
}

/// Turns the file's `observation` into the one-table layout of earlier versions (same rows
/// and row ids), with the `patient_id` index those versions created; like them, the file
/// records no schema version.
fn to_legacy_layout(h: &SqliteHarness) {
    h.conn()
        .execute_batch(
            "DROP TABLE _fhirsync_schema_version; \
             CREATE TABLE legacy (id TEXT NOT NULL, patient_id TEXT, fhir_version TEXT NOT NULL, source TEXT NOT NULL, \
               dataset TEXT NOT NULL, content_hash TEXT NOT NULL, resource TEXT NOT NULL, first_seen_run TEXT NOT NULL, \
               last_seen_run TEXT NOT NULL, PRIMARY KEY (fhir_version, id)); \
             INSERT INTO legacy (rowid, id, patient_id, fhir_version, source, dataset, content_hash, resource, \
               first_seen_run, last_seen_run) SELECT d._row, v.* FROM observation v \
               JOIN _fhirsync_rows_observation d ON d.fhir_version = v.fhir_version AND d.id = v.id; \
             DROP VIEW observation; DROP TABLE _fhirsync_rows_observation; DROP TABLE _fhirsync_seen_observation; \
             ALTER TABLE legacy RENAME TO observation; \
             CREATE INDEX observation_patient_id ON observation (patient_id);",
        )
        .unwrap();
}

/// A type table written by an earlier version moves to the split layout on open: the same rows
/// (and `last_seen_run`s), `observation` a view a user's view still resolves through, an
/// unfinished run of the old layout abandoned; the next reload lands as usual.
#[test]
fn legacy_type_table_moves_to_split_layout() {
    let h = SqliteHarness::new();
    let (p1, o1, o2) = (patient("p1", "Alpha"), obs("o1", "p1", "1"), obs("o2", "p1", "2"));
    let (mut dest, r1) = full_load_p1(&h, &[p1.clone(), o1.clone(), o2.clone()]);
    // A reload whose lab search failed: o2 keeps the first run as its last seen one.
    let patient_scope = scope("p1", fhirsync_core::Dataset::new("Patient"));
    let r2 = land(
        &mut *dest,
        Method::Reload,
        &LandOptions::default(),
        &[p1.clone(), o1.clone()],
        run_scope(&["p1"], [patient_scope].into()),
    )
    .unwrap()
    .run_id;
    drop(dest);
    let before = h.rows();
    assert_eq!(before, sorted(vec![landed(&p1, &r1, &r2), landed(&o1, &r1, &r2), landed(&o2, &r1, &r1)]));
    to_legacy_layout(&h);
    h.conn()
        .execute_batch(
            "CREATE VIEW my_obs AS SELECT id FROM observation; \
             INSERT INTO _fhirsync_runs (run_id, method, status, started_at) VALUES ('old-run', 'reload', 'failed', '2026-01-01'); \
             CREATE TABLE _fhirsync_new_observation AS SELECT * FROM observation; \
             INSERT INTO _fhirsync_stage_types VALUES ('Observation', '_fhirsync_new_observation');",
        )
        .unwrap();
    assert_eq!(column(&h, "SELECT type FROM sqlite_master WHERE name = 'observation'"), ["table"]);
    assert_eq!(h.rows(), before);

    let mut dest = h.open();
    assert_eq!(column(&h, "SELECT type FROM sqlite_master WHERE name = 'observation'"), ["view"]);
    assert_eq!(h.rows(), before, "rows and seen-runs are kept");
    assert_eq!(column(&h, "SELECT id FROM my_obs ORDER BY id"), ["o1", "o2"]);
    assert_eq!(h.runs().iter().find(|r| r.run_id == "old-run").map(|r| r.status.as_str()), Some("abandoned"));
    assert_staging_empty(&h);
    assert!(column(&h, "SELECT name FROM sqlite_master WHERE name LIKE '%old%'").is_empty());
    assert_eq!(column(&h, "SELECT version FROM _fhirsync_schema_version"), ["2"], "migrated once, to 2");

    let o3 = obs("o3", "p1", "3");
    let m = land(
        &mut *dest,
        Method::Reload,
        &LandOptions::default(),
        &[p1.clone(), o1.clone(), o3.clone()],
        run_scope(&["p1"], scopes_of(&["p1"])),
    )
    .unwrap();
    assert_eq!((m.staged, m.inserted, m.deleted), (3, 1, 1));
    let r3 = m.run_id;
    assert_eq!(h.rows(), sorted(vec![landed(&p1, &r1, &r3), landed(&o1, &r1, &r3), landed(&o3, &r3, &r3)]));
}

/// A legacy type table carrying a user's index is not moved (that would drop the index): the
/// open fails naming the table and the fix, and the file is left as it was.
#[test]
fn legacy_type_table_with_user_index_blocks_upgrade() {
    let h = SqliteHarness::new();
    let (p1, o1) = (patient("p1", "Alpha"), obs("o1", "p1", "1"));
    drop(full_load_p1(&h, &[p1, o1]).0);
    to_legacy_layout(&h);
    h.conn().execute_batch("CREATE INDEX my_obs_dataset ON observation (dataset)").unwrap();
    let before = h.rows();
    let err = fhirsync_land::open(&fhirsync_land::DestinationConfig::Sqlite(h.config.clone()))
        .err()
        .expect("the open must fail")
        .to_string();
    assert!(err.contains("`observation`") && err.contains("_fhirsync_rows_observation"), "{err}");
    assert!(err.contains("Drop them"), "{err}");
    assert_eq!(column(&h, "SELECT type FROM sqlite_master WHERE name = 'observation'"), ["table"]);
    assert_eq!(h.rows(), before);
    let versions = "SELECT name FROM sqlite_master WHERE name = '_fhirsync_schema_version'";
    assert!(column(&h, versions).is_empty(), "the target is still at version 1");
}

/// Rows kept unread (their scope incomplete) keep the `last_seen_run` an earlier reload gave
/// them, on reload and on reload-and-compare.
#[test]
fn kept_rows_keep_their_last_seen_run() {
    let h = SqliteHarness::new();
    let (p1, o1, o2) = (patient("p1", "Alpha"), obs("o1", "p1", "1"), obs("o2", "p1", "2"));
    let (mut dest, r1) = full_load_p1(&h, &[p1.clone(), o1.clone(), o2.clone()]);
    let all = || run_scope(&["p1"], scopes_of(&["p1"]));
    let r2 = land(
        &mut *dest,
        Method::Reload,
        &LandOptions::default(),
        &[p1.clone(), o1.clone(), o2.clone()],
        all(),
    )
    .unwrap()
    .run_id;
    for method in [Method::Reload, Method::ReloadAndCompare] {
        // The lab search failed: only the patient is re-read.
        let patient_only = run_scope(&["p1"], [scope("p1", fhirsync_core::Dataset::new("Patient"))].into());
        let m = land(&mut *dest, method, &LandOptions::default(), std::slice::from_ref(&p1), patient_only)
            .unwrap();
        assert_eq!((m.staged, m.deleted, m.kept), (1, 0, 2), "{method}");
        assert_eq!(
            h.rows(),
            sorted(vec![landed(&p1, &r1, &m.run_id), landed(&o1, &r1, &r2), landed(&o2, &r1, &r2)]),
            "{method}"
        );
    }
}

/// The type view declares every column's type (`TEXT`), after a full load and after a reload,
/// so readers that type columns from `PRAGMA table_info` (DuckDB's SQLite scanner) get text,
/// not blobs; every row shows a `last_seen_run`.
#[test]
fn type_view_declares_column_types() {
    let h = SqliteHarness::new();
    let (p1, o1) = (patient("p1", "Alpha"), obs("o1", "p1", "1"));
    let (mut dest, _) = full_load_p1(&h, &[p1.clone(), o1.clone()]);
    let types =
        || column(&h, "SELECT name || ' ' || type FROM pragma_table_info('observation') ORDER BY cid");
    let expected: Vec<String> = [
        "id",
        "patient_id",
        "fhir_version",
        "source",
        "dataset",
        "content_hash",
        "resource",
        "first_seen_run",
        "last_seen_run",
    ]
    .map(|c| format!("{c} TEXT"))
    .to_vec();
    assert_eq!(types(), expected);
    let unseen = || column(&h, "SELECT count(*) FROM observation WHERE last_seen_run IS NULL");
    assert_eq!(unseen(), ["0"]);
    land(
        &mut *dest,
        Method::Reload,
        &LandOptions::default(),
        &[p1, o1],
        run_scope(&["p1"], scopes_of(&["p1"])),
    )
    .unwrap();
    assert_eq!(types(), expected);
    assert_eq!(unseen(), ["0"]);
}

/// A reload that changes 1 row in 101 updates it in place (the rows table keeps its root page);
/// one that changes 5 rewrites the table ahead of the commit (replacing a copy a killed commit
/// left) and swaps it in. Rows, `_row`s and seen-runs are exact either way.
#[test]
fn spread_updates_rewrite_the_rows_table_few_merge_in_place() {
    let h = SqliteHarness::new();
    let p1 = patient("p1", "Alpha");
    let obs_n = |i: usize, v: &str| obs(&format!("o{i:03}"), "p1", v);
    let mut first = vec![p1.clone()];
    first.extend((0..100).map(|i| obs_n(i, "1")));
    let (mut dest, r1) = full_load_p1(&h, &first);
    let root = || rootpage(&h, "_fhirsync_rows_observation");
    let row_ids = || column(&h, "SELECT _row || ' ' || id FROM _fhirsync_rows_observation ORDER BY _row");
    let (root_before, ids_before) = (root(), row_ids());
    let all = || run_scope(&["p1"], scopes_of(&["p1"]));
    let edited = |n: usize| -> Vec<RawResource> {
        let mut v = vec![p1.clone()];
        v.extend((0..100).map(|i| obs_n(i, if i < n { "2" } else { "1" })));
        v
    };

    let m = land(&mut *dest, Method::ReloadAndCompare, &LandOptions::default(), &edited(1), all()).unwrap();
    assert_eq!((m.updated, m.unchanged), (1, 100));
    assert_eq!(root(), root_before, "1 change in 101 rows: updated in place");
    let r2 = m.run_id;
    let mut expected: Vec<Landed> = edited(1).iter().map(|r| landed(r, &r1, &r2)).collect();
    assert_eq!(h.rows(), sorted(expected.clone()));

    h.conn().execute_batch("CREATE TABLE _fhirsync_next_observation (x TEXT); INSERT INTO _fhirsync_next_observation VALUES ('left by a killed commit');").unwrap();
    let m = land(&mut *dest, Method::ReloadAndCompare, &LandOptions::default(), &edited(5), all()).unwrap();
    assert_eq!((m.updated, m.unchanged), (4, 97));
    assert_ne!(root(), root_before, "5 changes in 101 rows: rewritten and swapped in");
    assert_eq!(row_ids(), ids_before, "every row keeps its _row");
    assert_eq!(indexes(&h, "_fhirsync_rows_observation").len(), 1);
    let r3 = m.run_id;
    expected = edited(5).iter().map(|r| landed(r, &r1, &r3)).collect();
    assert_eq!(h.rows(), sorted(expected));
    assert_staging_empty(&h);
    assert!(column(&h, "SELECT name FROM sqlite_master WHERE name LIKE '%next%'").is_empty());
}
