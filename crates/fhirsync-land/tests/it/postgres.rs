//! The scenario on PostgreSQL, read back with SQL. Runs only when `FHIRSYNC_TEST_POSTGRES_URL`
//! names a server (e.g. `postgresql://fhirsync:fhirsync@127.0.0.1:5432/fhirsync`); each test
//! gets its own schema, dropped afterwards. When the server has TLS on, set
//! `FHIRSYNC_TEST_POSTGRES_CA` to the PEM of its CA: the destination then connects over TLS
//! (`sslmode=prefer`) and the TLS tests run.

use fhirsync_land::{Destination, DestinationConfig, PostgresConfig};
use tokio::runtime::Runtime;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::scenario::scenario_tests;
use crate::support::*;

/// Environment variable with the test server URL.
const URL_ENV: &str = "FHIRSYNC_TEST_POSTGRES_URL";
const CA_ENV: &str = "FHIRSYNC_TEST_POSTGRES_CA";

/// A fresh schema on the test server.
pub struct PostgresHarness {
    rt: Runtime,
    client: Client,
    /// Destination settings for the test's own schema.
    pub config: PostgresConfig,
}

impl PostgresHarness {
    /// `None` (with a notice) when no server is configured.
    pub fn from_env() -> Option<Self> {
        let Ok(url) = std::env::var(URL_ENV) else {
            eprintln!("skipping PostgreSQL test: set {URL_ENV} to run it");
            return None;
        };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let (client, conn) = rt.block_on(tokio_postgres::connect(&url, NoTls)).unwrap();
        rt.spawn(conn);
        let schema = format!("fhirsync_test_{}", uuid::Uuid::new_v4().simple());
        let ca_file = std::env::var_os(CA_ENV).map(std::path::PathBuf::from);
        let config = PostgresConfig { schema, ca_file, ..PostgresConfig::new(url) };
        Some(PostgresHarness { rt, client, config })
    }

    pub fn query(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        let sql = format!("SET search_path TO \"{}\"; {sql}", self.config.schema);
        let messages = self.rt.block_on(self.client.simple_query(&sql)).unwrap();
        messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()
    }
}

impl Drop for PostgresHarness {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.config.schema);
        let _ = self.rt.block_on(self.client.batch_execute(&sql));
    }
}

impl Harness for PostgresHarness {
    fn open(&self) -> Box<dyn Destination> {
        fhirsync_land::open(&DestinationConfig::Postgres(self.config.clone())).unwrap()
    }

    fn rows(&self) -> Vec<Landed> {
        let mut out = Vec::new();
        for t in self.query("SELECT resource_type, table_name FROM _fhirsync_types") {
            let (rt, table) = (t[0].clone().unwrap(), t[1].clone().unwrap());
            for r in self.query(&format!(
                "SELECT fhir_version, id, patient_id, dataset, source, content_hash, resource::text, first_seen_run, last_seen_run FROM \"{table}\""
            )) {
                out.push(Landed::from_cells(&rt, &r));
            }
        }
        sorted(out)
    }

    fn changes(&self, run_id: &str) -> Vec<Change> {
        let rows = self.query(&format!(
            "SELECT operation, resource_type, id, before_hash, after_hash FROM _fhirsync_changes WHERE run_id = '{run_id}'"
        ));
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
        let rows = self.query("SELECT patient_id FROM _fhirsync_cohort_exits ORDER BY patient_id");
        rows.into_iter().map(|r| r[0].clone().unwrap()).collect()
    }

    fn runs(&self) -> Vec<RunRow> {
        let rows =
            self.query("SELECT run_id, method, status FROM _fhirsync_runs ORDER BY started_at, run_id");
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
        // Timestamps read back in UTC, whatever the server's time zone.
        sorted(self.query(&format!("SET TIME ZONE 'UTC'; SELECT {} FROM \"{table}\"", cols.join(", "))))
    }
}

scenario_tests!(PostgresHarness::from_env());

/// Typed view columns: `numeric` keeps each decimal's value and scale, `timestamptz` the
/// instant, `date`, `boolean` and `bigint` their values.
#[test]
fn typed_view_columns() {
    let Some(h) = PostgresHarness::from_env() else { return };
    let forms = crate::typed::Forms {
        decimals: ["1.50", "0.10", "100", "123456789012345678.9"],
        instants: [
            "2019-04-01 08:30:00+00",
            "2020-03-01 04:59:59.5+00",
            "2019-04-01 08:30:00.123+00",
            "2019-04-01 12:00:00.123456+00",
        ],
        date: "1970-06-15",
        booleans: ["false", "true"],
    };
    crate::typed::typed_columns(&h, &forms);
    let types = |table: &str| {
        h.query(&format!(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = '{}' \
             AND table_name = '{table}' ORDER BY ordinal_position",
            h.config.schema
        ))
    };
    let want = |pairs: &[(&str, &str)]| -> Vec<Vec<Option<String>>> {
        pairs.iter().map(|(n, t)| vec![Some(n.to_string()), Some(t.to_string())]).collect()
    };
    let tz = "timestamp with time zone";
    assert_eq!(
        types("view_obs_typed"),
        want(&[
            ("_fhir_version", "text"),
            ("_id", "text"),
            ("value", "numeric"),
            ("effective", tz),
            ("effective_text", "text"),
            ("issued", tz),
            ("issued_text", "text"),
        ])
    );
    assert_eq!(
        types("view_patient_typed"),
        want(&[
            ("_fhir_version", "text"),
            ("_id", "text"),
            ("birth_date", "date"),
            ("birth_date_text", "text"),
            ("deceased", "boolean"),
            ("births", "bigint"),
        ])
    );
    // Exact arithmetic in the database: 1.50 + 0.10 is 1.60, not 1.6000000000000001.
    let sum = h.query("SELECT CAST(SUM(value) AS TEXT) FROM view_obs_typed WHERE _id IN ('t1', 't2')");
    assert_eq!(sum, vec![vec![Some("1.60".to_string())]]);
}

/// The resource column is `json`, so PostgreSQL can query into it, and keeps the exact bytes.
#[test]
fn resource_column_is_queryable_json() {
    let Some(h) = PostgresHarness::from_env() else { return };
    let o1 = obs("o1", "p1", "1.50");
    land(
        &mut *h.open(),
        fhirsync_land::Method::FullLoad,
        &Default::default(),
        std::slice::from_ref(&o1),
        run_scope(&["p1"], scopes_of(&["p1"])),
    )
    .unwrap();
    let rows = h.query("SELECT resource->'valueQuantity'->>'value', resource::text FROM observation");
    assert_eq!(rows, vec![vec![Some("1.50".to_string()), Some(o1.json.to_string())]]);
}

/// The async `Landing` drives PostgreSQL (which owns its own runtime) from tokio's blocking pool.
#[test]
fn landing_drives_postgres_from_async() {
    let Some(h) = PostgresHarness::from_env() else { return };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let p1 = patient("p1", "Alpha");
    let config = DestinationConfig::Postgres(h.config.clone());
    let m = rt.block_on(async {
        let mut landing =
            fhirsync_land::Landing::begin(config, fhirsync_land::Method::FullLoad, Default::default())
                .await
                .unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(fhirsync_core::ExtractEvent::Resources(vec![p1.clone()])).await.unwrap();
        drop(tx);
        landing.stage_events(rx).await.unwrap();
        landing
            .commit(run_scope(&["p1"], scopes_of(&["p1"])), Vec::new(), serde_json::json!({}))
            .await
            .unwrap()
    });
    assert_eq!(h.rows(), vec![landed(&p1, &m.run_id, &m.run_id)]);
}

/// With the server's CA in `ca_file` and `sslmode=require`, the destination lands over a
/// verified TLS connection (the server lists the `fhirsync` session as SSL).
#[test]
fn tls_with_ca_file() {
    let Some(h) = PostgresHarness::from_env() else { return };
    if h.config.ca_file.is_none() {
        eprintln!("skipping: set {CA_ENV} for a TLS server");
        return;
    }
    // The schema name doubles as a session name no parallel test shares.
    let app = h.config.schema.clone();
    let url = format!("{} sslmode=require application_name={app}", h.config.url);
    let config = PostgresConfig { url, ..h.config.clone() };
    let mut dest = fhirsync_land::open(&DestinationConfig::Postgres(config)).unwrap();
    let ssl = h.query(&format!(
        "SELECT CAST(s.ssl AS text) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
         WHERE a.application_name = '{app}'"
    ));
    assert_eq!(ssl, vec![vec![Some("true".to_string())]]);
    let p1 = patient("p1", "Alpha");
    let m = land(
        &mut *dest,
        fhirsync_land::Method::FullLoad,
        &Default::default(),
        std::slice::from_ref(&p1),
        run_scope(&["p1"], scopes_of(&["p1"])),
    )
    .unwrap();
    assert_eq!(h.rows(), vec![landed(&p1, &m.run_id, &m.run_id)]);
}

/// Without the CA that signed the server certificate, the TLS connection is refused with an
/// error that names `ca_file` and `sslmode` as the fixes.
#[test]
fn tls_unknown_ca_names_the_fix() {
    let Some(h) = PostgresHarness::from_env() else { return };
    if h.config.ca_file.is_none() {
        eprintln!("skipping: set {CA_ENV} for a TLS server");
        return;
    }
    let config = PostgresConfig {
        url: format!("{} sslmode=require", h.config.url),
        ca_file: None,
        ..h.config.clone()
    };
    let err = fhirsync_land::open(&DestinationConfig::Postgres(config)).err().expect("an untrusted server");
    assert!(matches!(err, fhirsync_land::Error::PostgresTls { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("ca_file") && message.contains("sslmode=disable"), "{message}");
}

/// A `ca_file` without a certificate is refused before connecting, naming the file.
#[test]
fn ca_file_without_certificate_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, "not a certificate").unwrap();
    let config =
        PostgresConfig { ca_file: Some(path.clone()), ..PostgresConfig::new("host=127.0.0.1 port=1") };
    let err = fhirsync_land::open(&DestinationConfig::Postgres(config)).err().expect("an unusable CA file");
    assert!(matches!(err, fhirsync_land::Error::PostgresCa { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

/// On PostgreSQL too, a full load seeds the history and a compare's delete closes a version.
#[test]
fn full_load_seeds_history_on_postgres() {
    let Some(h) = PostgresHarness::from_env() else { return };
    let history = fhirsync_land::LandOptions { history: true, ..Default::default() };
    let (p1, o1, o2) = (patient("p1", "Alpha"), obs("o1", "p1", "1"), obs("o2", "p1", "2"));
    let mut dest = h.open();
    let all = scopes_of(&["p1"]);
    let full = fhirsync_land::Method::FullLoad;
    let r1 = land(&mut *dest, full, &history, &[p1.clone(), o1.clone(), o2], run_scope(&["p1"], all.clone()))
        .unwrap()
        .run_id;
    let versions =
        "SELECT id, valid_from_run, valid_to_run FROM _fhirsync_history ORDER BY id, valid_from_run";
    let seeded = h.query(versions);
    assert_eq!(seeded.len(), 3, "{seeded:?}");
    assert!(seeded.iter().all(|r| r[1].as_deref() == Some(r1.as_str()) && r[2].is_none()), "{seeded:?}");
    let compare = fhirsync_land::Method::ReloadAndCompare;
    let r2 = land(&mut *dest, compare, &history, &[p1, o1], run_scope(&["p1"], all)).unwrap().run_id;
    let rows = h.query(versions);
    assert!(rows.contains(&vec![Some("o2".into()), Some(r1), Some(r2)]), "o2's delete closes it: {rows:?}");
}

/// Shadow tables are named per run, so two runs never share `_fhirsync_new_<type>`; a second
/// writer on the schema is refused while the first holds its advisory lock, and admitted once
/// the first closes.
#[test]
fn staging_names_are_per_run_and_one_writer_at_a_time() {
    let Some(h) = PostgresHarness::from_env() else { return };
    let shadows = "SELECT table_name FROM _fhirsync_stage_types ORDER BY table_name";
    let mut dest = h.open();
    let run = dest.begin(fhirsync_land::Method::Reload, &Default::default()).unwrap().run_id;
    dest.stage(&[patient("p1", "Alpha")]).unwrap();
    dest.checkpoint().unwrap();
    let names = h.query(shadows);
    let suffix: String = run.chars().filter(char::is_ascii_alphanumeric).rev().take(8).collect();
    assert_eq!(names, vec![vec![Some(format!("_fhirsync_new_patient_{suffix}"))]], "run {run}");

    let second = fhirsync_land::open(&DestinationConfig::Postgres(h.config.clone()));
    let err = second.err().expect("a second writer is refused").to_string();
    assert!(
        err.contains("another fhirsync run is writing")
            && err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert!(err.contains(&run), "the holder's run is named: {err}");

    drop(dest);
    let mut dest = h.open();
    let other = dest.begin(
        fhirsync_land::Method::FullLoad,
        &fhirsync_land::LandOptions { replace: true, ..Default::default() },
    );
    let other = other.unwrap().run_id;
    let runs = h.runs();
    assert_eq!(
        runs.iter().find(|r| r.run_id == run).map(|r| r.status.as_str()),
        Some("abandoned"),
        "{runs:?}"
    );
    dest.stage(&[patient("p1", "Alpha")]).unwrap();
    dest.checkpoint().unwrap();
    let names = h.query(shadows);
    assert_eq!(names.len(), 1);
    assert_ne!(
        names[0][0].as_deref(),
        Some(format!("_fhirsync_new_patient_{suffix}").as_str()),
        "run {other}"
    );
}
