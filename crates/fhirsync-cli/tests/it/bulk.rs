//! `fhirsync sync` in bulk mode end to end: each way a Bulk export can fail makes a gap named in
//! the summary (exit 6, nothing deleted there, the export kept), and the next clean run repairs
//! it and deletes what vanished.

use fhirsync_sim::fhir::{BulkConfig, BulkFaultKind, DEFAULT_GROUP_ID, FhirConfig};

use crate::util::{Cli, Env, count, text};

/// How the second run fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// The server fails to export Condition: an `error[]` entry.
    ErrorEntry,
    /// The Condition file answers 410.
    Gone,
    /// The Condition file is gzip and cut off before its trailer.
    TruncatedGzip,
    /// Group members are `urn:uuid:` references (and the Condition file answers 410).
    UrnUuid,
    /// The statement declares only `read` (and the Condition file answers 410).
    ReadOnly,
}

const CONDITION_FILE: &str = "Condition-1.ndjson";

fn arm(env: &Env, case: Case, times: u32) {
    let fhir = &env.sim.state().fhir;
    match case {
        Case::ErrorEntry => fhir.bulk_fault(BulkFaultKind::ExportError, "Condition", times),
        Case::TruncatedGzip => fhir.bulk_fault(BulkFaultKind::Truncated, CONDITION_FILE, times),
        Case::Gone | Case::UrnUuid | Case::ReadOnly => {
            fhir.bulk_fault(BulkFaultKind::Gone, CONDITION_FILE, times)
        }
    }
}

/// DELETEs of Bulk status URLs in the simulator's request log.
fn export_deletes(env: &Env) -> usize {
    let log = env.sim.state().fhir.faults.request_log();
    log.iter().filter(|r| r.method == "DELETE" && r.uri.contains("BulkRequest")).count()
}

/// The summary line starting with `prefix` (trimmed).
fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .map(str::trim)
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` in\n{out}"))
}

/// A simulator of 4 patients exporting Bulk files as `case` needs, and a bulk-mode config
/// for its Group with quick polls and retries.
async fn bulk_env(case: Case) -> (Env, std::path::PathBuf) {
    let bulk = BulkConfig {
        polls_before_ready: 1,
        retry_after_secs: 0,
        max_lines_per_file: 500,
        gzip: case == Case::TruncatedGzip,
        urn_uuid_members: case == Case::UrnUuid,
        read_only_statement: case == Case::ReadOnly,
        ..BulkConfig::default()
    };
    let env = Env::start_fhir(FhirConfig { patients: 4, bulk, ..FhirConfig::default() }, |_| {}).await;
    let config = env.config_with(
        "mode = \"bulk\"\ndatasets = [\"Patient\", \"Condition\", \"Encounter\", \"Observation\"]\n",
        &format!(
            "[extract.cohort]\ngroup = \"{DEFAULT_GROUP_ID}\"\n\n[extract.bulk]\npoll_floor_secs = 0\n\n\
             [extract.retry]\nbase_delay_ms = 1\nmax_delay_ms = 20\nmax_retries = 2\n"
        ),
    );
    (env, config)
}

/// Full load, then one Condition and one Encounter removed at the source and `case` armed:
/// the reload exits 6, names the Condition gap, deletes the Encounter only, keeps the export;
/// disarmed, the next reload deletes the Condition and then the export.
async fn scenario(case: Case) {
    let (env, config) = bulk_env(case).await;
    let sync = |method: &str| Cli::sync(&config).args(["--method", method]);
    let fhir = &env.sim.state().fhir;

    let out = sync("full-load").run().await;
    assert!(out.status.success(), "{case:?}: {}", text(&out));
    let first = text(&out);
    assert!(line(&first, "extracted:").starts_with("extracted: 4 patients"), "{case:?}: {first}");
    let conditions = count(&env.db(), "SELECT COUNT(*) FROM condition");
    let encounters = count(&env.db(), "SELECT COUNT(*) FROM encounter");
    assert!(conditions > 1 && encounters > 1, "{case:?}: {conditions} conditions, {encounters} encounters");
    let conn = rusqlite::Connection::open(env.db()).unwrap();
    let pick = |table: &str| -> String {
        conn.query_row(&format!("SELECT id FROM {table} ORDER BY id LIMIT 1"), [], |r| r.get(0)).unwrap()
    };
    let (condition, encounter) = (pick("condition"), pick("encounter"));
    fhir.delete_resource("Condition", &condition).unwrap();
    fhir.delete_resource("Encounter", &encounter).unwrap();
    let present = |table: &str, id: &str| -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table} WHERE id = ?1"), [id], |r| r.get(0)).unwrap()
    };

    // Run 2: a new export (the window is reset, as a day later), with the fault armed.
    fhir.reset_bulk_window();
    fhir.faults.reset_log();
    arm(&env, case, 1000);
    let out = sync("reload-and-compare").run().await;
    let second = text(&out);
    assert_eq!(out.status.code(), Some(6), "{case:?}: {second}");
    assert!(line(&second, "run ").contains("completed with gaps"), "{case:?}: {second}");
    assert!(line(&second, "GAPS:").starts_with("GAPS:      1 scopes incomplete"), "{case:?}: {second}");
    let gap = line(&second, "R4 Condition:");
    let named = match case {
        Case::ErrorEntry => {
            gap.contains("the server could not export Condition") && gap.contains(".Condition.ndjson")
        }
        Case::TruncatedGzip => gap.contains(CONDITION_FILE) && gap.contains("body cut off"),
        Case::Gone | Case::UrnUuid | Case::ReadOnly => {
            gap.contains(CONDITION_FILE) && gap.contains("HTTP 410")
        }
    };
    assert!(named, "{case:?}: {gap}");
    assert!(line(&second, "extracted:").starts_with("extracted: 4 patients"), "{case:?}: {second}");
    let landed = line(&second, "landed:").to_string();
    assert!(landed.contains(" 1 deleted"), "{case:?}: only the Encounter goes: {landed}");
    assert_eq!(present("encounter", &encounter), 0, "{case:?}");
    assert_eq!(present("condition", &condition), 1, "{case:?}: nothing deleted on a gap");
    assert_eq!(count(&env.db(), "SELECT COUNT(*) FROM condition"), conditions, "{case:?}");
    assert_eq!(export_deletes(&env), 0, "{case:?}: an export with a failed file is kept");

    // Run 3: the fault is gone; files come from the saved manifest unless the export itself
    // failed on the server (then a new export, the window allowing).
    arm(&env, case, 0);
    if case == Case::ErrorEntry {
        fhir.reset_bulk_window();
    }
    fhir.faults.reset_log();
    let out = sync("reload-and-compare").run().await;
    let third = text(&out);
    assert!(out.status.success(), "{case:?}: {third}");
    assert!(third.contains("every scope fetched completely"), "{case:?}: {third}");
    let repaired = line(&third, "landed:").to_string();
    assert!(repaired.contains(" 1 deleted"), "{case:?}: the Condition goes now: {repaired}");
    assert_eq!(present("condition", &condition), 0, "{case:?}");
    assert_eq!(count(&env.db(), "SELECT COUNT(*) FROM condition"), conditions - 1, "{case:?}");
    let kickoffs = fhir.faults.requests_to("$export");
    match case {
        Case::ErrorEntry => {
            assert_eq!((kickoffs, export_deletes(&env)), (1, 2), "{case:?}: new export, both deleted")
        }
        _ => assert_eq!((kickoffs, export_deletes(&env)), (0, 1), "{case:?}: saved manifest, then DELETE"),
    }
    eprintln!("{case:?}: run 1 {} | run 2 {landed} | run 3 {repaired}", line(&first, "landed:"));
}

/// `error[]` entry for Condition: gap, exit 6, kept; a new export repairs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_error_entry_gap_then_repair() {
    scenario(Case::ErrorEntry).await;
}

/// Condition file answering 410: gap, exit 6, kept; the saved manifest repairs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_gone_file_gap_then_repair() {
    scenario(Case::Gone).await;
}

/// Condition file cut off (truncated gzip): gap, exit 6, kept; the saved manifest repairs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_truncated_gzip_gap_then_repair() {
    scenario(Case::TruncatedGzip).await;
}

/// urn:uuid Group members: the real patient count, and the same gap/repair cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_urn_uuid_members_gap_then_repair() {
    scenario(Case::UrnUuid).await;
}

/// A read-only CapabilityStatement: bulk still works, and the same gap/repair cycle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_read_only_statement_gap_then_repair() {
    scenario(Case::ReadOnly).await;
}
