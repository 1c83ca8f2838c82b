//! `fhirsync demo`: the whole job on the embedded default, with nothing to set up.
//!
//! 1. starts the Epic simulator in-process (synthetic patients, patient list `systemlist|6442`);
//! 2. generates an RSA key and registers its public JWK Set with the simulator, as an Epic
//!    backend app would;
//! 3. syncs with SMART Backend Services (RS384 client assertion) into a SQLite file with
//!    reload-and-compare, materialising the default SQL-on-FHIR views;
//! 4. edits, deletes and adds data on the server, syncs again, and shows the change records;
//! 5. prints what was landed and a sample query.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use fhirsync_auth::{KeyType, SigningKey, TokenProvider, generate_private_key};
use fhirsync_core::FhirVersion;
use fhirsync_land::{DestinationConfig, Method, SqliteConfig};
use fhirsync_sim::fhir::FhirConfig;
use fhirsync_sim::oauth::ClientRegistration;
use fhirsync_sim::{Sim, SimConfig};
use rusqlite::Connection;
use serde_json::json;

use crate::Globals;
use crate::config::FileConfig;
use crate::pipeline;

/// Client id the demo registers with the simulator.
pub const DEMO_CLIENT_ID: &str = "fhirsync-demo";

/// Concurrent requests against the local simulator.
pub const DEMO_CONCURRENCY: usize = 8;
/// Requests per second against the local simulator.
pub const DEMO_RATE_LIMIT: f64 = 1000.0;

/// Arguments of `fhirsync demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// SQLite file to land into.
    #[arg(long, default_value = "fhirsync-demo.db")]
    pub db: PathBuf,
    /// Number of synthetic patients on the simulated server.
    #[arg(long, default_value_t = 100)]
    pub patients: usize,
    /// Folder for run state and the run lock.
    #[arg(long, default_value = ".fhirsync-demo")]
    pub state_dir: PathBuf,
    /// Skip the second sync that shows change records.
    #[arg(long)]
    pub no_changes: bool,
}

/// Runs the command.
pub async fn run(args: Args, _globals: &Globals) -> anyhow::Result<()> {
    let sim = Sim::start(SimConfig {
        fhir: FhirConfig { patients: args.patients, ..FhirConfig::default() },
        ..SimConfig::default()
    })
    .await?;
    println!("Simulated Epic on FHIR server: {}", sim.fhir_base(FhirVersion::R4));

    let pem = generate_private_key(KeyType::Rsa(2048))?;
    let key = SigningKey::from_pem(&pem, "demo key", None)?;
    sim.state().oauth.register_client(ClientRegistration {
        client_id: DEMO_CLIENT_ID.into(),
        jwks: Some(key.jwks()),
        jwks_from_url: true,
        ..Default::default()
    });

    let config = demo_config(&sim, &args);
    let mut settings = config.auth_settings()?;
    settings.private_key_pem = Some(pem);
    let http = fhirsync_auth::http_client()?;
    let tokens: Arc<dyn TokenProvider> = settings.provider(&http).await?;
    println!("Authenticated with SMART Backend Services (RS384 JWT assertion, key id {}).", key.kid());

    println!("\n== Sync 1: reload-and-compare into {}", args.db.display());
    let outcome = run_once(&config, tokens.clone()).await?;
    pipeline::print_summary(&outcome);

    if !args.no_changes {
        let changed = change_server_data(&sim, &args.db)?;
        println!("\n== The server changed: {changed}");
        println!("== Sync 2: reload-and-compare applies only the differences");
        let outcome = run_once(&config, tokens).await?;
        pipeline::print_summary(&outcome);
    }

    show_landed(&args.db)?;
    println!("\nOpen it yourself: sqlite3 {} (tables above; views are view_*)", args.db.display());
    Ok(())
}

fn demo_config(sim: &Sim, args: &Args) -> FileConfig {
    let mut config = FileConfig::default();
    let c = &mut config.connection;
    c.client_id = Some(DEMO_CLIENT_ID.into());
    c.fhir_r4_endpoint = Some(sim.fhir_base(FhirVersion::R4));
    c.fhir_stu3_endpoint = Some(sim.fhir_base(FhirVersion::Stu3));
    c.fhir_dstu2_endpoint = Some(sim.fhir_base(FhirVersion::Dstu2));
    c.patient_list_identifier = Some("systemlist|6442".into());
    config.destination =
        DestinationConfig::Sqlite(SqliteConfig { path: args.db.clone(), ..SqliteConfig::default() });
    config.sync.state_dir = args.state_dir.clone();
    // The simulator is local: no need for the low default politeness meant for a real Epic.
    config.extract.concurrency = DEMO_CONCURRENCY;
    config.extract.rate_limit = DEMO_RATE_LIMIT;
    config
}

async fn run_once(
    config: &FileConfig,
    tokens: Arc<dyn TokenProvider>,
) -> anyhow::Result<pipeline::SyncOutcome> {
    pipeline::sync(config, Method::ReloadAndCompare, tokens, true).await
}

/// Edits one Observation, deletes one Condition and adds one Condition on the server.
fn change_server_data(sim: &Sim, db: &std::path::Path) -> anyhow::Result<String> {
    let conn = Connection::open(db).with_context(|| format!("cannot open {}", db.display()))?;
    let pick = |table: &str| -> anyhow::Result<(String, Option<String>)> {
        conn.query_row(
            &format!("SELECT id, patient_id FROM {table} WHERE fhir_version = 'R4' ORDER BY id LIMIT 1"),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .with_context(|| format!("no row in {table} to change"))
    };
    let fhir = &sim.state().fhir;
    let (obs, _) = pick("observation")?;
    fhir.edit_resource("Observation", &obs, |v| {
        v["status"] = json!("amended");
    })?;
    let (cond, patient) = pick("condition")?;
    fhir.delete_resource("Condition", &cond)?;
    let patient = patient.unwrap_or_default();
    let added = fhir.add_resource(json!({
        "resourceType": "Condition",
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}],
        "code": {"text": "Seasonal allergic rhinitis", "coding": [{"system": "http://snomed.info/sct", "code": "367498001"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "recordedDate": "2026-11-20"
    }))?;
    Ok(format!("Observation {obs} amended, Condition {cond} deleted, Condition {added} added"))
}

/// Prints table row counts, recent change records and a sample query over a view.
fn show_landed(db: &std::path::Path) -> anyhow::Result<()> {
    let conn = Connection::open(db).with_context(|| format!("cannot open {}", db.display()))?;
    println!("\n== Landed tables");
    let mut tables = conn.prepare(
        // Type tables are views over `_fhirsync_rows_<type>` and `_fhirsync_seen_<type>`.
        "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite%' \
         AND name NOT LIKE '\\_fhirsync\\_stag%' ESCAPE '\\' AND name NOT LIKE '\\_fhirsync\\_rows\\_%' ESCAPE '\\' \
         AND name NOT LIKE '\\_fhirsync\\_seen\\_%' ESCAPE '\\' ORDER BY name",
    )?;
    let names: Vec<String> = tables.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for name in &names {
        let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM \"{name}\""), [], |r| r.get(0))?;
        println!("  {name:<36} {n:>8} rows");
    }

    let sample = "SELECT operation, resource_type, id FROM _fhirsync_changes \
                  WHERE run_id = (SELECT run_id FROM _fhirsync_runs ORDER BY started_at DESC LIMIT 1) \
                  ORDER BY seq LIMIT 10";
    println!("\n== Change records of the last run\n  {sample}");
    let mut stmt = conn.prepare(sample)?;
    let rows =
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
    for row in rows {
        let (op, t, id) = row?;
        println!("  {op}  {t:<16} {id}");
    }

    if names.iter().any(|n| n == "view_observation") {
        let sample = "SELECT category, code_display, COUNT(*) AS n, ROUND(AVG(value_quantity), 1) AS avg, value_unit \
                      FROM view_observation WHERE value_quantity IS NOT NULL \
                      GROUP BY category, code_display, value_unit ORDER BY n DESC LIMIT 8";
        println!("\n== Sample query over the flat Observation view\n  {sample}");
        let mut stmt = conn.prepare(sample)?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, Option<f64>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        for row in rows {
            let (cat, code, n, avg, unit) = row?;
            println!(
                "  {:<12} {:<40} {n:>6}  avg {:>8} {}",
                cat.unwrap_or_default(),
                code.unwrap_or_default(),
                avg.map(|a| a.to_string()).unwrap_or_default(),
                unit.unwrap_or_default()
            );
        }
    }
    Ok(())
}
