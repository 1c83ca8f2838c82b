//! `fhirsync discover`: what the configured endpoints offer and what this client may read.
//!
//! For each configured endpoint (R4, STU3, DSTU2):
//! 1. read its CapabilityStatement and list the datasets the extract plan would fetch from it
//!    ([`fhirsync_extract::plan::build`] on that endpoint alone: categories fanned out as
//!    configured, e.g. `Observation:laboratory`), with the required search parameters;
//! 2. probe each dataset with one search for one cohort patient (`_count=1`), sequentially:
//!    200 with data or a 4101 "no results" outcome → authorized; a 59204 outcome → not licensed;
//!    403 → not authorized; anything else → the error;
//! 3. print a table and write a catalog: an `[extract] datasets = [...]` TOML snippet with the
//!    authorized datasets (taken from the endpoint a sync would use for them) and the others
//!    commented out, to edit and paste into `fhirsync.toml`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use fhirsync_core::FhirVersion;
use fhirsync_extract::plan::{self, Capabilities, PlannedDataset};
use fhirsync_extract::{ExtractConfig, cohort};
use fhirsync_fhir::{FhirClient, codes};
use tracing::{debug, info};
use url::Url;

use crate::Globals;
use crate::cmd::{EXIT_SOURCE, Failure};
use crate::config::FileConfig;

/// Default catalog file.
pub const DEFAULT_CATALOG: &str = "catalog.toml";

/// Arguments of `fhirsync discover`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Catalog file to write (an `[extract] datasets = [...]` TOML snippet).
    #[arg(long, default_value = DEFAULT_CATALOG)]
    pub out: PathBuf,
    /// Patient FHIR id for the probes (default: the first patient of the configured cohort).
    #[arg(long)]
    pub patient: Option<String>,
    /// List the datasets without probing authorization.
    #[arg(long)]
    pub no_probe: bool,
}

/// Result of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The search succeeded (`data`: it returned a resource).
    Authorized {
        /// At least one resource came back.
        data: bool,
    },
    /// A 59204 outcome: the client is not licensed for this (sub-)type.
    NotLicensed,
    /// HTTP 403.
    NotAuthorized,
    /// Not probed (`--no-probe`).
    NotProbed,
    /// Any other failure.
    Error(String),
}

impl Access {
    fn label(&self) -> String {
        match self {
            Access::Authorized { data: true } => "authorized".into(),
            Access::Authorized { data: false } => "authorized (no data for the probe patient)".into(),
            Access::NotLicensed => "NOT LICENSED (59204)".into(),
            Access::NotAuthorized => "NOT AUTHORIZED (403)".into(),
            Access::NotProbed => "not probed".into(),
            Access::Error(e) => format!("error: {}", e.replace('\n', " ")),
        }
    }
}

/// One row of the table.
struct Row {
    item: PlannedDataset,
    access: Access,
}

/// Runs the command.
pub async fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    // Only the connection must be valid: discover needs no cohort with --patient or --no-probe
    // (probe_patient says what to pass when one is missing).
    let config = FileConfig::read(&globals.config)?;
    config.connection.validate().map_err(|e| Failure::config(e.to_string()))?;
    let endpoints = config.connection.endpoints().map_err(|e| Failure::config(e.to_string()))?;
    let settings = config.auth_settings()?;
    let http = fhirsync_auth::http_client()?;
    let tokens = settings.provider(&http).await?;
    let client = fhirsync_extract::build_client(&config.connection, &config.extract, tokens)
        .map_err(|e| Failure::config(e.to_string()))?;
    // Every dataset the endpoints offer, not the configured selection.
    let all = ExtractConfig { datasets: Vec::new(), ..config.extract.clone() };

    let mut caps: BTreeMap<FhirVersion, (Url, Capabilities)> = BTreeMap::new();
    let mut endpoint_errors = Vec::new();
    for version in endpoints.versions() {
        let Some(base) = endpoints.get(version) else { continue };
        match client.metadata(base).await {
            Ok(body) => match Capabilities::parse(&body) {
                Ok(c) => {
                    caps.insert(version, (base.clone(), c));
                }
                Err(problem) => {
                    endpoint_errors.push(format!("{version}: CapabilityStatement unreadable: {problem}"))
                }
            },
            Err(e) if e.is_fatal_for_run() => return Err(Failure::fhir(&e)),
            Err(e) => endpoint_errors.push(format!("{version}: {e}")),
        }
    }
    if caps.is_empty() {
        return Err(Failure {
            code: EXIT_SOURCE,
            message: format!("no endpoint answered its CapabilityStatement: {}", endpoint_errors.join("; ")),
        }
        .into());
    }

    let patient = if args.no_probe { None } else { Some(probe_patient(&args, &client, &config).await?) };

    let mut rows = Vec::new();
    // Newest endpoint first.
    for (version, entry) in caps.iter().rev() {
        let single = BTreeMap::from([(*version, entry.clone())]);
        let items = match plan::build(&single, &all) {
            Ok(p) => p.items,
            Err(e) => {
                endpoint_errors.push(format!("{version}: {e}"));
                continue;
            }
        };
        for item in items {
            let access = match &patient {
                Some(p) => probe(&client, &item, p).await?,
                None => Access::NotProbed,
            };
            debug!(fhir_version = %version, dataset = %item.dataset, access = %access.label(), "Dataset probed.");
            rows.push(Row { item, access });
        }
    }
    info!(datasets = rows.len(), probed = patient.is_some(), "Datasets discovered.");

    print_table(&rows);
    for e in &endpoint_errors {
        println!("warning: {e}");
    }
    // The endpoint a sync would use for each dataset (newest that serves it).
    let chosen: BTreeMap<String, FhirVersion> = plan::build(&caps, &all)
        .map(|p| p.items.into_iter().map(|i| (i.dataset.to_string(), i.version)).collect())
        .unwrap_or_default();
    let catalog = catalog_text(&rows, &chosen, &caps);
    std::fs::write(&args.out, catalog)
        .with_context(|| format!("cannot write the catalog {}", args.out.display()))?;
    let selected = rows.iter().filter(|r| is_selected(r, &chosen)).count();
    println!(
        "catalog written to {} ({selected} datasets selected); edit it and paste its [extract] datasets into your configuration",
        args.out.display()
    );
    Ok(())
}

/// `--patient`, else the first patient of the configured cohort.
async fn probe_patient(args: &Args, client: &FhirClient, config: &FileConfig) -> anyhow::Result<String> {
    if let Some(p) = &args.patient {
        return Ok(p.trim().to_string());
    }
    let endpoints = config.connection.endpoints().map_err(|e| Failure::config(e.to_string()))?;
    let cohort_config = config.extract.effective_cohort(&config.connection);
    if cohort_config.is_empty() {
        return Err(Failure::config(
            "no cohort is configured to pick a probe patient: pass --patient <FHIR id> or --no-probe",
        ));
    }
    let ids = cohort::resolve(client, &endpoints, &cohort_config).await.map_err(|e| Failure {
        code: EXIT_SOURCE,
        message: format!("cannot resolve the cohort for a probe patient: {e}; pass --patient <FHIR id>"),
    })?;
    ids.into_iter().next().ok_or_else(|| {
        Failure::config("the configured cohort is empty: pass --patient <FHIR id> to probe with")
    })
}

/// One search for `patient` with `_count=1`, classified.
async fn probe(client: &FhirClient, item: &PlannedDataset, patient: &str) -> anyhow::Result<Access> {
    let mut params: Vec<(String, String)> = vec![(item.patient_param.to_string(), patient.to_string())];
    params.extend(item.params.iter().filter(|(k, _)| k != "_count").cloned());
    if item.patient_param != "_id" {
        params.push(("_count".into(), "1".into()));
    }
    Ok(match client.search(&item.base, &item.dataset.resource_type, &params).await {
        Ok(page) if page.has_outcome(codes::UNAUTHORIZED_SUB_RESOURCE) => Access::NotLicensed,
        Ok(page) => Access::Authorized { data: !page.resources.is_empty() },
        Err(e) if e.is_fatal_for_run() => return Err(Failure::fhir(&e)),
        Err(e) if e.has_outcome(codes::UNAUTHORIZED_SUB_RESOURCE) => Access::NotLicensed,
        Err(e) if e.status() == Some(403) => Access::NotAuthorized,
        Err(e) => Access::Error(e.to_string()),
    })
}

/// `patient=<id>, category=laboratory` (the parameters a search of the dataset must carry).
fn required_params(item: &PlannedDataset) -> String {
    let mut out = vec![format!("{}=<patient>", item.patient_param)];
    out.extend(item.params.iter().filter(|(k, _)| k != "_count").map(|(k, v)| format!("{k}={v}")));
    out.join(", ")
}

fn print_table(rows: &[Row]) {
    let width = rows.iter().map(|r| r.item.dataset.to_string().len()).max().unwrap_or(7).max(7);
    let pwidth = rows.iter().map(|r| required_params(&r.item).len()).max().unwrap_or(15).max(15);
    println!("{:<8} {:<width$} {:<pwidth$} ACCESS", "ENDPOINT", "DATASET", "REQUIRED SEARCH");
    for r in rows {
        println!(
            "{:<8} {:<width$} {:<pwidth$} {}",
            r.item.version.to_string(),
            r.item.dataset.to_string(),
            required_params(&r.item),
            r.access.label()
        );
    }
}

/// Authorized on the endpoint a sync would use for it.
fn is_selected(row: &Row, chosen: &BTreeMap<String, FhirVersion>) -> bool {
    matches!(row.access, Access::Authorized { .. } | Access::NotProbed)
        && chosen.get(&row.item.dataset.to_string()) == Some(&row.item.version)
}

/// The catalog: an `[extract] datasets` array, authorized datasets active, others commented out.
fn catalog_text(
    rows: &[Row],
    chosen: &BTreeMap<String, FhirVersion>,
    caps: &BTreeMap<FhirVersion, (Url, Capabilities)>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# fhirsync dataset catalog, written by `fhirsync discover`.");
    for (version, (base, _)) in caps.iter().rev() {
        let _ = writeln!(out, "#   {version}: {}", fhirsync_fhir::redact_url(base));
    }
    let _ = writeln!(
        out,
        "# Datasets this client may read are listed; the others are commented out with the reason.\n\
         # Delete lines to fetch less; paste the [extract] datasets array into fhirsync.toml.\n\
         # A type without a category means all its configured categories.\n\n[extract]\ndatasets = ["
    );
    for row in rows.iter().filter(|r| chosen.get(&r.item.dataset.to_string()) == Some(&r.item.version)) {
        let name = format!("\"{}\",", row.item.dataset);
        if is_selected(row, chosen) {
            let _ = writeln!(out, "    {name:<44} # {}, {}", row.item.version, row.access.label());
        } else {
            let _ = writeln!(out, "    # {name:<42} # {}, {}", row.item.version, row.access.label());
        }
    }
    out.push_str("]\n");
    out
}
