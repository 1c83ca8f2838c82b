//! `fhirsync sync` and `fhirsync demo` end to end against the simulator.

use crate::util::{Cli, Env, count, edit, text};

/// A sync from a config file lands every patient of the list, the views, and a run record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_lands_patient_list_into_sqlite() {
    let env = Env::start(4).await;
    let config = env.config("");
    let out = Cli::sync(&config).run().await;
    out.assert_success();
    assert_eq!(count(&env.db(), "SELECT COUNT(*) FROM patient"), 4);
    assert_eq!(count(&env.db(), "SELECT COUNT(*) FROM view_patient"), 4);
    assert!(count(&env.db(), "SELECT COUNT(*) FROM observation") > 0);
    assert_eq!(count(&env.db(), "SELECT COUNT(*) FROM _fhirsync_runs WHERE status = 'succeeded'"), 1);
    assert!(text(&out).contains("every scope fetched completely"), "{}", text(&out));
}

/// A second reload-and-compare after a server-side delete records exactly one D change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sync_applies_only_the_delete() {
    let env = Env::start(3).await;
    let config = env.config("");
    Cli::sync(&config).run().await.assert_success();
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let id: String =
        conn.query_row("SELECT id FROM condition ORDER BY id LIMIT 1", [], |r| r.get(0)).unwrap();
    env.sim.state().fhir.delete_resource("Condition", &id).unwrap();
    let out = Cli::sync(&config).args(["--method", "reload-and-compare"]).run().await;
    out.assert_success();
    assert!(text(&out).contains("0 inserted, 0 updated, 1 deleted"), "{}", text(&out));
    let deleted: i64 = conn
        .query_row("SELECT COUNT(*) FROM _fhirsync_changes WHERE operation = 'D' AND id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(deleted, 1);
}

/// Issue 14: the default patient view carries Epic's MRN (identifier type EPI) for the sandbox
/// patients: Jason Argonaut is 203675, Camila Lopez 203713.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patient_view_has_the_epi_mrn() {
    let env = Env::start(10).await;
    let config = env.config_with("datasets = [\"Patient\"]\n", "");
    let out = Cli::sync(&config).run().await;
    out.assert_success();
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let mrn = |id: &str| -> Option<String> {
        conn.query_row("SELECT mrn FROM view_patient WHERE _id = ?1", [id], |r| r.get(0)).unwrap()
    };
    assert_eq!(mrn("eD.LxhDyX35TntF77l7etUA3").as_deref(), Some("203675"));
    assert_eq!(mrn("erXuFYUfucBZaryVksYEcMg3").as_deref(), Some("203713"));
    assert_eq!(count(&env.db(), "SELECT COUNT(*) FROM view_patient WHERE mrn IS NULL"), 0);
}

/// A reload reports what it re-read and replaced, not a compare's "0 unchanged"; logs written
/// to a pipe carry no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_summary_counts_what_it_replaced() {
    let env = Env::start(2).await;
    let config = env.config("");
    Cli::sync(&config).args(["--method", "full-load"]).run().await.assert_success();
    let landed = count(&env.db(), "SELECT staged FROM _fhirsync_runs");
    let out = Cli::sync(&config).args(["--method", "reload"]).run().await;
    out.assert_success();
    assert!(
        text(&out).contains(&format!("{landed} re-read and replaced (0 new), 0 deleted")),
        "{}",
        text(&out)
    );
    assert!(!out.stdout_text().contains("unchanged"), "{}", text(&out));
    assert!(!out.stderr.is_empty() && !out.stderr.contains(&0x1b), "ANSI escape in piped logs");
}

/// The nine clinical types Epic attaches Outside-Record 59204s to (and DocumentReference, which
/// it does not).
const CLINICAL_TYPES: [&str; 9] = [
    "AllergyIntolerance",
    "Condition",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "Immunization",
    "MedicationRequest",
    "Observation",
    "Procedure",
];

/// Issue 14's acceptance test: full load, then one resource of each of the nine clinical types
/// removed on the (production-like) simulator, then reload-and-compare: every removed row is
/// deleted and recorded as a D change, and the run is complete (the Outside-Record 59204s next
/// to the data are exclusions, not gaps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_propagate_for_every_clinical_type() {
    let env = Env::start(6).await;
    let config = env.config("");
    let out = Cli::sync(&config).args(["--method", "full-load"]).run().await;
    out.assert_success();
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let mut removed = Vec::new();
    for ty in CLINICAL_TYPES {
        let table = ty.to_ascii_lowercase();
        let id: String = conn
            .query_row(
                &format!("SELECT id FROM {table} WHERE fhir_version = 'R4' ORDER BY id LIMIT 1"),
                [],
                |r| r.get(0),
            )
            .unwrap_or_else(|e| panic!("no {ty} landed: {e}"));
        env.sim.state().fhir.delete_resource(ty, &id).unwrap();
        removed.push((ty, table, id));
    }
    let out = Cli::sync(&config).args(["--method", "reload-and-compare"]).run().await;
    out.assert_success();
    assert!(text(&out).contains("0 inserted, 0 updated, 9 deleted, 0 kept"), "{}", text(&out));
    let mut propagated = 0;
    for (ty, table, id) in &removed {
        let left: i64 = conn
            .query_row(&format!("SELECT COUNT(*) FROM {table} WHERE id = ?1"), [id], |r| r.get(0))
            .unwrap();
        let changes: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM _fhirsync_changes WHERE operation = 'D' AND resource_type = ?1 AND id = ?2",
                [ty, &id.as_str()],
                |r| r.get(0),
            )
            .unwrap();
        if left == 0 && changes == 1 {
            propagated += 1;
        }
    }
    assert_eq!(propagated, 9, "deletes propagated for {propagated} of 9 clinical types");
    assert_eq!(count(&env.db(), "SELECT COUNT(*) FROM _fhirsync_runs WHERE status = 'succeeded'"), 2);
}

/// Issue 14's licence-change test: after a full load, the simulated client's licence narrows
/// (half of each patient's problems now withheld, with a new 59204 naming the sub-type next to
/// the rest); the reload-and-compare deletes nothing of that scope, exits 6 and names the
/// narrowed sub-type; other datasets still propagate their deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowed_licence_deletes_nothing_in_its_scope() {
    let env = Env::start(4).await;
    let config = env.config("");
    let sync = |method: &str| Cli::sync(&config).args(["--method", method]);
    sync("full-load").run().await.assert_success();
    let problems = "SELECT COUNT(*) FROM condition WHERE dataset = 'Condition:problem-list-item'";
    let before = count(&env.db(), problems);
    assert!(before >= 4, "{before} problems");
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let encounter: String =
        conn.query_row("SELECT id FROM encounter ORDER BY id LIMIT 1", [], |r| r.get(0)).unwrap();
    env.sim.state().fhir.delete_resource("Encounter", &encounter).unwrap();
    env.sim
        .state()
        .narrow_licence(crate::util::CLIENT_ID, "Condition:problem-list-item", "Sensitive Problems")
        .unwrap();
    let out = sync("reload-and-compare").run().await;
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(6), "{shown}");
    assert!(shown.contains("completed with gaps"), "{shown}");
    assert!(shown.contains("licence narrowed: newly withheld Condition - Sensitive Problems"), "{shown}");
    assert_eq!(count(&env.db(), problems), before, "nothing of the narrowed scope is deleted");
    assert!(shown.contains("1 deleted"), "the encounter's delete still propagates: {shown}");
    let status: String = conn
        .query_row("SELECT status FROM _fhirsync_runs ORDER BY started_at DESC LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(status, "completed_with_gaps");
}

/// Issue 15: on a generic SMART server the defaults miss nothing: each type is searched once
/// without Epic's categories, so every generated Observation and Condition lands; CareTeam,
/// which its statement leaves out, is named in the summary, and when asked for it is tried and
/// lands instead of failing the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generic_server_defaults_miss_nothing() {
    let env = Env::start_generic(3).await;
    let fhir = &env.sim.state().fhir;
    let generated = |keys: &[&str]| -> i64 {
        (0..3).map(|i| keys.iter().map(|k| fhir.generated_count(i, k).unwrap_or(0) as i64).sum::<i64>()).sum()
    };
    let config = env.config("");
    let out = Cli::sync(&config).run().await;
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("every scope fetched completely"), "{shown}");
    let observations =
        generated(&["Observation:laboratory", "Observation:vital-signs", "Observation:social-history"]);
    assert_eq!(
        count(&env.db(), "SELECT COUNT(*) FROM observation WHERE dataset = 'Observation'"),
        observations
    );
    let conditions = generated(&[
        "Condition:problem-list-item",
        "Condition:encounter-diagnosis",
        "Condition:health-concern",
    ]);
    assert_eq!(count(&env.db(), "SELECT COUNT(*) FROM condition"), conditions);
    assert!(shown.contains("not offered by the server's statement") && shown.contains("CareTeam"), "{shown}");

    edit(&config, |t| t.replace("[extract]\n", "[extract]\ndatasets = [\"Patient\", \"CareTeam\"]\n"));
    let out = Cli::sync(&config).run().await;
    out.assert_success();
    let teams = generated(&["CareTeam"]);
    assert!(teams > 0, "the generic simulator holds care teams");
    assert_eq!(count(&env.db(), "SELECT COUNT(*) FROM careteam"), teams);
}

/// Full load refuses a destination that already holds data, naming the fix, exit code 5; the
/// first full load leaves the new SQLite file in WAL mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_load_refuses_non_empty_target() {
    let env = Env::start(2).await;
    let config = env.config("");
    Cli::sync(&config).args(["--method", "full-load"]).run().await.assert_success();
    let mode: String = rusqlite::Connection::open(env.db())
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let out = Cli::sync(&config).args(["--method", "full-load"]).run().await;
    out.assert_code(5);
    assert!(text(&out).contains("replace"), "{}", text(&out));
}

/// `fhirsync demo` runs the whole job, lists the type tables, and shows one insert, update and
/// delete in its second sync.
#[test]
fn demo_lands_and_shows_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("demo.db");
    let out =
        Cli::bare().current_dir(dir.path()).args(["demo", "--patients", "3", "--db"]).arg(&db).run_now();
    out.assert_success();
    let all = text(&out);
    assert!(all.contains("1 inserted, 1 updated, 1 deleted"), "{all}");
    // The landed tables it lists are the ones to query: `patient`, not its inner tables.
    assert!(all.contains("\n  patient ") && !all.contains("_fhirsync_rows_"), "{all}");
    assert_eq!(count(&db, "SELECT COUNT(*) FROM patient"), 3);
    assert!(count(&db, "SELECT COUNT(*) FROM view_observation") > 0);
}
