//! The scenario on SQLite, read back with plain SQL, plus SQLite-only checks.

use fhirsync_land::{Destination, SqliteConfig};
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
                let s = |i: usize| r[i].clone().unwrap();
                out.push(Landed {
                    resource_type: rt.clone(),
                    fhir_version: s(0),
                    id: s(1),
                    patient_id: r[2].clone(),
                    dataset: s(3),
                    source: s(4),
                    content_hash: s(5),
                    resource: s(6),
                    first_seen_run: s(7),
                    last_seen_run: s(8),
                });
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
