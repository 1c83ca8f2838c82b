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

use anyhow::Context;
use fhirsync::land::{DestinationConfig, SqliteConfig};
use fhirsync::sandbox::Sandbox;
use fhirsync::sim::Sim;
use fhirsync::{Method, Sync};
use rusqlite::Connection;
use serde_json::json;

use crate::Globals;

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
    let sandbox = Sandbox::start(args.patients).await?;
    println!("Simulated Epic on FHIR server: {}", sandbox.sim.fhir_base(fhirsync::core::FhirVersion::R4));
    let db = DestinationConfig::Sqlite(SqliteConfig { path: args.db.clone(), ..SqliteConfig::default() });
    let config = sandbox.config(db, args.state_dir.clone());
    let tokens = sandbox.tokens(&config).await?;
    println!("Authenticated with SMART Backend Services (RS384 JWT assertion, key id {}).", sandbox.key_id());

    println!("\n== Sync 1: reload-and-compare into {}", args.db.display());
    let sync = || {
        Sync::new(config.clone())
            .method(Method::ReloadAndCompare)
            .tokens(tokens.clone())
            .progress(crate::progress::sink())
            .run()
    };
    print!("{}", sync().await?.summary());

    if !args.no_changes {
        let changed = change_server_data(&sandbox.sim, &args.db)?;
        println!("\n== The server changed: {changed}");
        println!("== Sync 2: reload-and-compare applies only the differences");
        print!("{}", sync().await?.summary());
    }

    show_landed(&args.db)?;
    println!("\nOpen it yourself: sqlite3 {} (tables above; views are view_*)", args.db.display());
    Ok(())
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
