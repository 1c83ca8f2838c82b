//! `fhirsync discover`: what the configured endpoints offer and what this client may read
//! ([`fhirsync::Discover`]); writes the catalog, prints the table or `--json`.

use std::path::PathBuf;

use anyhow::Context;
use fhirsync::Config;
use fhirsync::discover::DEFAULT_PROBE_PATIENTS;

use crate::Globals;

/// Default catalog file.
pub const DEFAULT_CATALOG: &str = "catalog.toml";

/// Arguments of `fhirsync discover`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Catalog file to write (an `[extract] datasets = [...]` TOML snippet).
    #[arg(long, default_value = DEFAULT_CATALOG)]
    pub out: PathBuf,
    /// Patient FHIR id for the probes; repeat for several (default: the first `--patients`
    /// patients of the configured cohort).
    #[arg(long = "patient", value_name = "ID")]
    pub patient: Vec<String>,
    /// How many patients of the configured cohort to probe each dataset with (without `--patient`).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_PROBE_PATIENTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub patients: u32,
    /// List the datasets without probing authorization.
    #[arg(long)]
    pub no_probe: bool,
    /// Print JSON (`{patients_probed, catalog, selected, warnings, datasets}`) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub async fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let config = Config::read(&globals.config)?;
    let report = fhirsync::Discover::new(config)
        .patients(args.patient.clone())
        .probe_patients(args.patients)
        .probe(!args.no_probe)
        .run()
        .await?;
    std::fs::write(&args.out, report.catalog())
        .with_context(|| format!("cannot write the catalog {}", args.out.display()))?;
    if args.json {
        let json = report.to_json(&args.out.display().to_string());
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    if report.probed {
        println!("probed with {} patient(s), every page of each search", report.patients.len());
    }
    print!("{}", report.table());
    for w in &report.warnings {
        println!("warning: {w}");
    }
    println!(
        "catalog written to {} ({} datasets selected); edit it and paste its [extract] datasets into your configuration",
        args.out.display(),
        report.selected()
    );
    Ok(())
}
