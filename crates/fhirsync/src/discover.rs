//! [`Discover`]: what the configured endpoints offer and what this client may read.
//!
//! For each configured endpoint (R4, STU3, DSTU2):
//! 1. read its CapabilityStatement and list the datasets the extract plan would fetch from it
//!    ([`fhirsync_extract::plan::build`] on that endpoint alone: categories fanned out as
//!    configured, e.g. `Observation:laboratory`), with the required search parameters;
//! 2. probe each dataset for a few patients (given ids, else the first N of the
//!    configured cohort) with the search a sync would send, **read to its last page**: Epic puts
//!    no outcome entry on the first page of a multi-page result, so one page cannot tell whether a
//!    type is licensed (`epic-facts.md` §3.5). Each outcome issue is classified with
//!    [`Outcome::effect`]:
//!    - data or a clean empty answer (4101) → **licensed**;
//!    - a 59204/59205 naming a sub-type ("Client not authorized for Condition - Outside Record
//!      Problems. ...") → **licensed, outside records withheld (...)**: the organisation's own
//!      records were returned, the named sub-types are withheld by licence (Epic sends this next
//!      to the data on most searches);
//!    - HTTP 403 / 401 or Epic 59130 → **not licensed**;
//!    - any other failure → `error: ...`, a gap (unnamed 59204, 4119, ...) → `incomplete: ...`;
//! 3. report a table ([`DiscoverReport::table`]) or JSON, and a catalog ([`DiscoverReport::catalog`]): an `[extract] datasets = [...]` TOML
//!    snippet with every readable dataset (licensed, with or without withheld sub-types; an
//!    error or gap that still returned data is kept too), taken from the endpoint a sync would
//!    use for it, and the others commented out with the reason.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;

use fhirsync_auth::TokenProvider;
use fhirsync_core::FhirVersion;
use fhirsync_extract::plan::{self, Capabilities, PlannedDataset};
use fhirsync_extract::{ExtractConfig, cohort};
use fhirsync_fhir::{Effect, Exclusion, FhirClient, Outcome, SearchPage, codes};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;
use tracing::{debug, info};
use url::Url;

use crate::config::Config;
use crate::{Error, Result};

/// Default number of cohort patients each dataset is probed with.
pub const DEFAULT_PROBE_PATIENTS: u32 = 3;
/// Pages read per dataset and patient before the probe gives up (a guard against a server whose
/// `next` links never end; 1000 pages of Epic's 1000 entries is a million resources).
pub const MAX_PROBE_PAGES: usize = 1000;

/// Lists the datasets of every configured endpoint and probes which this client may read:
/// `Discover::new(config).probe_patients(3).run().await`.
#[must_use = "a Discover does nothing until `run` is awaited"]
pub struct Discover {
    config: Config,
    patients: Vec<String>,
    probe_patients: u32,
    probe: bool,
    tokens: Option<Arc<dyn TokenProvider>>,
}

impl std::fmt::Debug for Discover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discover").field("probe", &self.probe).finish_non_exhaustive()
    }
}

/// What [`Discover::run`] found.
#[derive(Debug)]
pub struct DiscoverReport {
    rows: Vec<Row>,
    chosen: BTreeMap<String, FhirVersion>,
    bases: BTreeMap<FhirVersion, Url>,
    /// Patients each dataset was probed with (empty without probing).
    pub patients: Vec<String>,
    /// Endpoints that could not be listed.
    pub warnings: Vec<String>,
    /// Whether datasets were probed.
    pub probed: bool,
}

impl Discover {
    /// Discovery of `config`'s endpoints; only `[connection]` must be valid.
    pub fn new(config: Config) -> Discover {
        Discover {
            config,
            patients: Vec::new(),
            probe_patients: DEFAULT_PROBE_PATIENTS,
            probe: true,
            tokens: None,
        }
    }

    /// Probe with these patient FHIR ids (default: the first patients of the cohort).
    pub fn patients(mut self, ids: Vec<String>) -> Discover {
        self.patients = ids;
        self
    }

    /// How many cohort patients to probe with when no ids are given.
    pub fn probe_patients(mut self, n: u32) -> Discover {
        self.probe_patients = n;
        self
    }

    /// `false`: list the datasets without probing authorization.
    pub fn probe(mut self, probe: bool) -> Discover {
        self.probe = probe;
        self
    }

    /// Use these tokens instead of authenticating from `[connection]`.
    pub fn tokens(mut self, tokens: Arc<dyn TokenProvider>) -> Discover {
        self.tokens = Some(tokens);
        self
    }

    /// Reads the CapabilityStatements and probes every dataset.
    pub async fn run(self) -> Result<DiscoverReport> {
        // Only the connection must be valid: discover needs no cohort with given patients or
        // without probing (probe_patients says what to pass when one is missing).
        let config = &self.config;
        config.connection.validate().map_err(Error::connection)?;
        let endpoints = config.connection.endpoints();
        let tokens = match self.tokens.clone() {
            Some(tokens) => tokens,
            None => config.token_provider().await?,
        };
        let client = fhirsync_extract::build_client(&config.connection, &config.extract, tokens)?;
        // Every dataset the endpoints offer, not the configured selection.
        let all = ExtractConfig { datasets: Vec::new(), ..config.extract.clone() };

        let mut caps: BTreeMap<FhirVersion, (Url, Capabilities)> = BTreeMap::new();
        let mut warnings = Vec::new();
        for version in endpoints.versions() {
            let Some(base) = endpoints.get(version) else { continue };
            match client.metadata(base).await {
                Ok(body) => match Capabilities::parse(&body) {
                    Ok(c) => {
                        caps.insert(version, (base.clone(), c));
                    }
                    Err(problem) => {
                        warnings.push(format!("{version}: CapabilityStatement unreadable: {problem}"))
                    }
                },
                Err(e) if e.is_fatal_for_run() => return Err(Error::from(e)),
                Err(e) => warnings.push(format!("{version}: {e}")),
            }
        }
        if caps.is_empty() {
            return Err(Error::NoEndpoint { problems: warnings.join("; ") });
        }

        let patients = if self.probe { self.resolve_patients(&client).await? } else { Vec::new() };

        // Newest endpoint first.
        let mut items = Vec::new();
        for (version, entry) in caps.iter().rev() {
            let single = BTreeMap::from([(*version, entry.clone())]);
            match plan::build(&single, &all) {
                Ok(p) => items.extend(p.items),
                Err(e) => warnings.push(format!("{version}: {e}")),
            }
        }
        let restarts = config.extract.max_session_restarts;
        let probe = self.probe;
        let rows: Vec<Row> = futures::stream::iter(items)
            .map(|item| {
                let (client, patients) = (&client, &patients);
                async move {
                    let probe =
                        if probe { Some(probe_dataset(client, &item, patients, restarts).await?) } else { None };
                    let row = Row { item, probe };
                    debug!(fhir_version = %row.item.version, dataset = %row.item.dataset, access = %row.label(),
                        "Dataset probed.");
                    Ok::<_, Error>(row)
                }
            })
            .buffered(config.extract.concurrency.max(1))
            .try_collect()
            .await?;
        info!(datasets = rows.len(), patients = patients.len(), "Datasets discovered.");
        let probed: Vec<&Probe> = rows.iter().filter_map(|r| r.probe.as_ref()).collect();
        if !probed.is_empty() && probed.iter().all(|p| p.denial == Some(Denial::Unauthorized)) {
            return Err(Error::EveryProbeUnauthorized);
        }

        // The endpoint a sync would use for each dataset (newest that serves it).
        let chosen: BTreeMap<String, FhirVersion> = match plan::build(&caps, &all) {
            Ok(p) => p.items.into_iter().map(|i| (i.dataset.to_string(), i.version)).collect(),
            Err(e) => {
                warnings.push(format!("a sync could not plan these datasets: {e}"));
                BTreeMap::new()
            }
        };
        let bases = caps.into_iter().map(|(v, (base, _))| (v, base)).collect();
        Ok(DiscoverReport { rows, chosen, bases, patients, warnings, probed: probe })
    }

    /// The given ids, else the first `probe_patients` patients of the configured cohort.
    async fn resolve_patients(&self, client: &FhirClient) -> Result<Vec<String>> {
        let given: Vec<String> =
            self.patients.iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect();
        if !given.is_empty() {
            return Ok(given);
        }
        if !self.patients.is_empty() {
            return Err(Error::config("--patient needs a patient FHIR id"));
        }
        let config = &self.config;
        let endpoints = config.connection.endpoints();
        let cohort_config = config.extract.effective_cohort(&config.connection);
        if cohort_config.is_empty() {
            return Err(Error::config(
                "no cohort is configured to pick probe patients: pass --patient <FHIR id> or --no-probe",
            ));
        }
        let ids = cohort::resolve(client, &endpoints, &cohort_config)
            .await
            .map_err(|source| Error::ProbeCohort { source: Box::new(source) })?;
        if ids.is_empty() {
            return Err(Error::config(
                "the configured cohort is empty: pass --patient <FHIR id> to probe with",
            ));
        }
        Ok(ids.into_iter().take(self.probe_patients as usize).collect())
    }
}

impl DiscoverReport {
    /// Datasets active in the catalog.
    pub fn selected(&self) -> usize {
        self.rows.iter().filter(|r| is_selected(r, &self.chosen)).count()
    }

    /// The table: endpoint, dataset, required search, resources, pages, access.
    pub fn table(&self) -> String {
        table_text(&self.rows)
    }

    /// The catalog: an `[extract] datasets` TOML array, readable datasets active, others
    /// commented out with the reason.
    pub fn catalog(&self) -> String {
        catalog_text(&self.rows, &self.chosen, &self.bases)
    }

    /// The JSON form (`{patients_probed, catalog, selected, warnings, datasets}`); `catalog` is
    /// the file the caller wrote the catalog to.
    pub fn to_json(&self, catalog: &str) -> serde_json::Value {
        serde_json::to_value(json_report(self, catalog)).unwrap_or_default()
    }
}

/// Why a dataset is not licensed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Denial {
    /// HTTP 403 (Epic: the client is not authorized for the API).
    Forbidden,
    /// HTTP 401 even with a fresh token.
    Unauthorized,
    /// Epic 59130 "client not authorized".
    ClientNotAuthorized,
}

impl Denial {
    fn text(&self) -> &'static str {
        match self {
            Denial::Forbidden => "HTTP 403",
            Denial::Unauthorized => "HTTP 401",
            Denial::ClientNotAuthorized => "59130",
        }
    }
}

/// What the probe of one dataset saw, summed over its pages and patients.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Probe {
    /// Patients whose search was sent.
    patients: usize,
    /// Pages read.
    pages: usize,
    /// Data resources received.
    resources: usize,
    /// Distinct sub-types withheld (named 59204/59205).
    exclusions: BTreeSet<Exclusion>,
    /// Distinct reasons the answer cannot be proven complete.
    gaps: BTreeSet<String>,
    /// The refusal, if any search was refused.
    denial: Option<Denial>,
    /// Distinct failures other than a refusal.
    errors: BTreeSet<String>,
    /// Searches restarted after Epic's 4113 "session expired".
    restarts: u32,
}

/// The classification of a dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    /// Not probed.
    NotProbed,
    /// Data or a clean empty answer; withheld sub-types are in [`Probe::exclusions`].
    Licensed,
    /// Refused (403/401/59130) and no data received.
    NotLicensed(String),
    /// A failure; the dataset is still kept when it returned data.
    Error(String),
    /// A gap (unnamed 59204, 4119, ...); kept when it returned data.
    Incomplete(String),
}

impl Probe {
    /// Notes the outcome issues of one page.
    fn note_outcomes(&mut self, outcomes: &[Outcome]) {
        for o in outcomes {
            if o.is(codes::CLIENT_NOT_AUTHORIZED) {
                self.denial.get_or_insert(Denial::ClientNotAuthorized);
                continue;
            }
            match o.effect() {
                Effect::Neutral => {}
                Effect::Excluded(e) => {
                    self.exclusions.insert(e);
                }
                Effect::Gap(why) => {
                    self.gaps.insert(why);
                }
            }
        }
    }

    /// Notes one page read.
    fn note_page(&mut self, page: &SearchPage) {
        self.pages += 1;
        self.resources += page.resources.len();
        self.note_outcomes(&page.outcomes);
    }

    /// Adds the probe of another patient.
    fn merge(&mut self, other: Probe) {
        self.patients += other.patients;
        self.pages += other.pages;
        self.resources += other.resources;
        self.exclusions.extend(other.exclusions);
        self.gaps.extend(other.gaps);
        if self.denial.is_none() {
            self.denial = other.denial;
        }
        self.errors.extend(other.errors);
        self.restarts += other.restarts;
    }

    fn status(&self) -> Status {
        if let Some(d) = &self.denial {
            if self.resources == 0 {
                return Status::NotLicensed(d.text().to_string());
            }
            let mut all = vec![format!("{} for a probe patient", d.text())];
            all.extend(self.errors.iter().cloned());
            return Status::Error(all.join("; "));
        }
        if !self.errors.is_empty() {
            return Status::Error(self.errors.iter().cloned().collect::<Vec<_>>().join("; "));
        }
        if !self.gaps.is_empty() {
            return Status::Incomplete(self.gaps.iter().cloned().collect::<Vec<_>>().join("; "));
        }
        Status::Licensed
    }
}

/// "Condition - Outside Record Problems, Condition - Outside Record Health Concern".
fn withheld(exclusions: &BTreeSet<Exclusion>) -> String {
    exclusions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// One row of the table.
#[derive(Debug)]
struct Row {
    item: PlannedDataset,
    /// `None` without probing.
    probe: Option<Probe>,
}

impl Row {
    fn status(&self) -> Status {
        self.probe.as_ref().map_or(Status::NotProbed, Probe::status)
    }

    /// The ACCESS column.
    fn label(&self) -> String {
        let exclusions = self.probe.as_ref().map(|p| &p.exclusions).filter(|e| !e.is_empty());
        let line = match (self.status(), exclusions) {
            (Status::NotProbed, _) => "not probed".to_string(),
            (Status::Licensed, None) => "licensed".to_string(),
            (Status::Licensed, Some(e)) => {
                // Epic's stable Outside-Record exclusions (Care Everywhere records) vs other
                // withheld sub-types (e.g. a 59205 for the background user).
                let outside = e.iter().all(|x| x.subtype.to_ascii_lowercase().contains("outside record"));
                let what = if outside { "outside records" } else { "sub-types" };
                format!("licensed, {what} withheld ({})", withheld(e))
            }
            (Status::NotLicensed(why), _) => format!("not licensed ({why})"),
            (Status::Error(e), _) => format!("error: {e}"),
            (Status::Incomplete(g), None) => format!("incomplete: {g}"),
            (Status::Incomplete(g), Some(e)) => format!("incomplete: {g}; withheld: {}", withheld(e)),
        };
        line.replace('\n', " ")
    }

    /// Readable: kept in the suggested configuration (when on the endpoint a sync would use).
    fn readable(&self) -> bool {
        let data = self.probe.as_ref().is_some_and(|p| p.resources > 0);
        match self.status() {
            Status::NotProbed | Status::Licensed => true,
            Status::Error(_) | Status::Incomplete(_) => data,
            Status::NotLicensed(_) => false,
        }
    }
}

/// Probes `item` for each patient in turn, every page. A refusal before any data ends the probe:
/// Epic refuses a type for the client, not for a patient, so the other patients would be refused
/// too.
async fn probe_dataset(
    client: &FhirClient,
    item: &PlannedDataset,
    patients: &[String],
    max_restarts: u32,
) -> Result<Probe> {
    let mut total = Probe::default();
    for patient in patients {
        total.merge(probe_patient(client, item, patient, max_restarts).await?);
        if total.denial.is_some() && total.resources == 0 {
            break;
        }
    }
    Ok(total)
}

/// The search of `item` for `patient`, read to its last page (restarted from the first page on
/// 4113, at most `max_restarts` times). Only credential failures are errors; everything else is
/// recorded in the probe.
async fn probe_patient(
    client: &FhirClient,
    item: &PlannedDataset,
    patient: &str,
    max_restarts: u32,
) -> Result<Probe> {
    let mut params: Vec<(String, String)> = vec![(item.patient_param.to_string(), patient.to_string())];
    params.extend(item.params.iter().cloned());
    let mut first = match fhirsync_fhir::client::join(&item.base, &item.dataset.resource_type) {
        Ok(url) => url,
        Err(e) => {
            let mut p = Probe { patients: 1, ..Probe::default() };
            p.errors.insert(e.to_string());
            return Ok(p);
        }
    };
    first.query_pairs_mut().extend_pairs(&params);
    let mut restarts = 0;
    'restart: loop {
        let mut probe = Probe { patients: 1, restarts, ..Probe::default() };
        let mut url = first.clone();
        loop {
            let page = match client.page(&url).await {
                Ok(page) => page,
                Err(e) => {
                    match e.status() {
                        Some(403) => probe.denial = Some(Denial::Forbidden),
                        Some(401) => probe.denial = Some(Denial::Unauthorized),
                        _ if e.is_fatal_for_run() => return Err(Error::from(e)),
                        _ if e.has_outcome(codes::CLIENT_NOT_AUTHORIZED) => {
                            probe.denial = Some(Denial::ClientNotAuthorized)
                        }
                        _ if e.has_outcome(codes::SESSION_EXPIRED) && restarts < max_restarts => {
                            restarts += 1;
                            continue 'restart;
                        }
                        _ => {
                            probe.errors.insert(e.to_string());
                        }
                    }
                    return Ok(probe);
                }
            };
            probe.note_page(&page);
            let Some(next) = page.next else { return Ok(probe) };
            if probe.pages >= MAX_PROBE_PAGES {
                probe
                    .errors
                    .insert(format!("more than {MAX_PROBE_PAGES} pages for one patient; probe stopped"));
                return Ok(probe);
            }
            url = match url.join(&next) {
                Ok(u) => u,
                Err(e) => {
                    probe.errors.insert(format!("unusable next link: {e}"));
                    return Ok(probe);
                }
            };
        }
    }
}

/// `patient=<id>, category=laboratory` (the parameters a search of the dataset must carry).
fn required_params(item: &PlannedDataset) -> String {
    let mut out = vec![format!("{}=<patient>", item.patient_param)];
    out.extend(item.params.iter().filter(|(k, _)| k != "_count").map(|(k, v)| format!("{k}={v}")));
    out.join(", ")
}

fn table_text(rows: &[Row]) -> String {
    let width = rows.iter().map(|r| r.item.dataset.to_string().len()).max().unwrap_or(7).max(7);
    let pwidth = rows.iter().map(|r| required_params(&r.item).len()).max().unwrap_or(15).max(15);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<8} {:<width$} {:<pwidth$} {:>9} {:>5} ACCESS",
        "ENDPOINT", "DATASET", "REQUIRED SEARCH", "RESOURCES", "PAGES"
    );
    for r in rows {
        let (resources, pages) = match &r.probe {
            Some(p) => (p.resources.to_string(), p.pages.to_string()),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(
            out,
            "{:<8} {:<width$} {:<pwidth$} {resources:>9} {pages:>5} {}",
            r.item.version.to_string(),
            r.item.dataset.to_string(),
            required_params(&r.item),
            r.label()
        );
    }
    out
}

/// Readable on the endpoint a sync would use for it.
fn is_selected(row: &Row, chosen: &BTreeMap<String, FhirVersion>) -> bool {
    row.readable() && chosen.get(&row.item.dataset.to_string()) == Some(&row.item.version)
}

/// The catalog: an `[extract] datasets` array, readable datasets active, others commented out.
fn catalog_text(
    rows: &[Row],
    chosen: &BTreeMap<String, FhirVersion>,
    bases: &BTreeMap<FhirVersion, Url>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# fhirsync dataset catalog, written by `fhirsync discover`.");
    for (version, base) in bases.iter().rev() {
        let _ = writeln!(out, "#   {version}: {}", fhirsync_fhir::redact_url(base));
    }
    let _ = writeln!(
        out,
        "# Datasets this client may read are listed (also those where Epic withholds a sub-type such\n\
         # as Outside Record results); the others are commented out with the reason.\n\
         # Delete lines to fetch less; paste the [extract] datasets array into fhirsync.toml.\n\
         # A type without a category means all its configured categories.\n\n[extract]\ndatasets = ["
    );
    for row in rows.iter().filter(|r| chosen.get(&r.item.dataset.to_string()) == Some(&r.item.version)) {
        let name = format!("\"{}\",", row.item.dataset);
        // The label may quote server text: keep it on one comment line.
        let label = row.label().replace(['\r', '\n'], " ");
        if is_selected(row, chosen) {
            let _ = writeln!(out, "    {name:<44} # {}, {label}", row.item.version);
        } else {
            let _ = writeln!(out, "    # {name:<42} # {}, {label}", row.item.version);
        }
    }
    out.push_str("]\n");
    out
}

/// The JSON output.
#[derive(Debug, Serialize)]
struct JsonReport {
    /// Patients each dataset was probed with (0 without probing).
    patients_probed: usize,
    /// Catalog file written.
    catalog: String,
    /// Datasets active in the catalog.
    selected: usize,
    /// Endpoints that could not be listed.
    warnings: Vec<String>,
    datasets: Vec<JsonDataset>,
}

/// One dataset of the `--json` output.
#[derive(Debug, Serialize)]
struct JsonDataset {
    endpoint: String,
    dataset: String,
    required_search: String,
    /// `licensed`, `not_licensed`, `error`, `incomplete` or `not_probed`.
    status: &'static str,
    /// The ACCESS column of the table.
    label: String,
    /// The refusal, failure or gap text (null when licensed).
    detail: Option<String>,
    /// Sub-types withheld by Epic (named 59204/59205).
    exclusions: Vec<Exclusion>,
    gaps: Vec<String>,
    resources: usize,
    pages: usize,
    patients: usize,
    session_restarts: u32,
    /// Active in the catalog.
    selected: bool,
}

fn json_report(report: &DiscoverReport, catalog: &str) -> JsonReport {
    let datasets = report
        .rows
        .iter()
        .map(|r| {
            let (status, detail) = match r.status() {
                Status::NotProbed => ("not_probed", None),
                Status::Licensed => ("licensed", None),
                Status::NotLicensed(d) => ("not_licensed", Some(d)),
                Status::Error(d) => ("error", Some(d)),
                Status::Incomplete(d) => ("incomplete", Some(d)),
            };
            let p = r.probe.clone().unwrap_or_default();
            JsonDataset {
                endpoint: r.item.version.to_string(),
                dataset: r.item.dataset.to_string(),
                required_search: required_params(&r.item),
                status,
                label: r.label(),
                detail,
                exclusions: p.exclusions.into_iter().collect(),
                gaps: p.gaps.into_iter().collect(),
                resources: p.resources,
                pages: p.pages,
                patients: p.patients,
                session_restarts: p.restarts,
                selected: is_selected(r, &report.chosen),
            }
        })
        .collect();
    JsonReport {
        patients_probed: report.patients.len(),
        catalog: catalog.to_string(),
        selected: report.selected(),
        warnings: report.warnings.clone(),
        datasets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(code: &str, severity: &str, diagnostics: Option<&str>) -> Outcome {
        Outcome {
            severity: severity.into(),
            issue_code: "processing".into(),
            epic_code: Some(code.into()),
            text: None,
            diagnostics: diagnostics.map(str::to_string),
        }
    }

    fn page(resources: usize, outcomes: Vec<Outcome>, next: bool) -> SearchPage {
        SearchPage {
            resources: (0..resources).map(|i| format!("{{\"id\":\"r{i}\"}}").into_boxed_str()).collect(),
            outcomes,
            next: next.then(|| "next".to_string()),
            total: None,
        }
    }

    fn row(probe: Probe) -> Row {
        let caps = Capabilities::parse(
            br#"{"resourceType":"CapabilityStatement","rest":[{"resource":[{"type":"Condition",
                "interaction":[{"code":"search-type"}],"searchParam":[{"name":"patient","type":"reference"}]}]}]}"#,
        )
        .unwrap();
        let base = Url::parse("http://x/R4/").unwrap();
        let mut plan = plan::build(
            &BTreeMap::from([(FhirVersion::R4, (base, caps))]),
            &ExtractConfig { categories: BTreeMap::new(), ..ExtractConfig::default() },
        )
        .unwrap();
        Row { item: plan.items.remove(0), probe: Some(probe) }
    }

    const OUTSIDE: &str = "Client not authorized for Condition - Outside Record Problems. Search results of this type have not been included.";

    /// A multi-page result whose Outside-Record 59204 is only on its last page is classified from
    /// that page: licensed with the withheld sub-type, not plain licensed and not a gap.
    #[test]
    fn outcome_on_the_last_page_classifies_the_dataset() {
        let mut probe = Probe { patients: 1, ..Probe::default() };
        probe.note_page(&page(1000, Vec::new(), true));
        assert_eq!(row(probe.clone()).label(), "licensed", "after the first page alone");
        probe.note_page(&page(1000, Vec::new(), true));
        probe.note_page(&page(3, vec![issue("59204", "warning", Some(OUTSIDE))], false));
        let r = row(probe);
        assert_eq!((r.probe.as_ref().unwrap().pages, r.probe.as_ref().unwrap().resources), (3, 2003));
        assert_eq!(r.status(), Status::Licensed);
        assert_eq!(r.label(), "licensed, outside records withheld (Condition - Outside Record Problems)");
        assert!(r.readable());
    }

    /// 403/401/59130 are "not licensed" and not readable; 59204 + 4101 on an empty answer is
    /// licensed (the organisation has nothing of its own for the patient).
    #[test]
    fn refusals_are_not_licensed_and_empty_exclusions_are_licensed() {
        for denial in [Denial::Forbidden, Denial::Unauthorized, Denial::ClientNotAuthorized] {
            let r = row(Probe { patients: 1, denial: Some(denial.clone()), ..Probe::default() });
            assert_eq!(r.label(), format!("not licensed ({})", denial.text()));
            assert!(!r.readable());
        }
        let mut probe = Probe { patients: 1, ..Probe::default() };
        probe.note_page(&page(0, vec![issue("59130", "fatal", None)], false));
        assert_eq!(probe.status(), Status::NotLicensed("59130".into()));

        let mut probe = Probe { patients: 1, ..Probe::default() };
        probe.note_page(&page(
            0,
            vec![issue("59204", "warning", Some(OUTSIDE)), issue("4101", "warning", None)],
            false,
        ));
        let r = row(probe);
        assert_eq!(r.status(), Status::Licensed);
        assert!(r.readable());
    }

    /// A gap or a failure is reported as such; the dataset stays readable only if it returned data.
    #[test]
    fn gaps_and_errors_keep_the_dataset_only_with_data() {
        let mut with_data = Probe { patients: 1, ..Probe::default() };
        with_data.note_page(&page(2, vec![issue("4119", "warning", None)], false));
        let r = row(with_data);
        assert!(r.label().starts_with("incomplete: 4119"), "{}", r.label());
        assert!(r.readable());
        let mut empty = Probe { patients: 1, ..Probe::default() };
        empty.note_page(&page(0, vec![issue("59204", "warning", Some("not authorized"))], false));
        assert!(matches!(empty.status(), Status::Incomplete(_)));
        assert!(!row(empty).readable());

        let mut failed = Probe { patients: 2, resources: 4, pages: 1, ..Probe::default() };
        failed.errors.insert("http://x/R4/Condition: HTTP 500".into());
        let r = row(failed.clone());
        assert_eq!(r.label(), "error: http://x/R4/Condition: HTTP 500");
        assert!(r.readable());
        failed.resources = 0;
        assert!(!row(failed).readable());
    }

    /// Probes of several patients add up; a refusal for one patient after another's data is an
    /// error (kept), not "not licensed"; withheld sub-types other than Outside Record are named so.
    #[test]
    fn patients_merge() {
        let mut a = Probe { patients: 1, ..Probe::default() };
        a.note_page(&page(5, vec![issue("59204", "warning", Some(OUTSIDE))], false));
        let mut b = Probe { patients: 1, ..Probe::default() };
        b.note_page(&page(
            1,
            vec![issue(
                "59205",
                "warning",
                Some("User not authorized for Procedure - External Radiotherapy Summary. Search results of this type have not been included."),
            )],
            false,
        ));
        let mut total = Probe::default();
        total.merge(a);
        total.merge(b);
        assert_eq!((total.patients, total.pages, total.resources, total.exclusions.len()), (2, 2, 6, 2));
        assert_eq!(
            row(total.clone()).label(),
            "licensed, sub-types withheld (Condition - Outside Record Problems, Procedure - External Radiotherapy Summary)"
        );
        total.merge(Probe { patients: 1, denial: Some(Denial::Forbidden), ..Probe::default() });
        assert!(
            matches!(total.status(), Status::Error(ref e) if e.contains("HTTP 403")),
            "{:?}",
            total.status()
        );
        assert!(row(total).readable());
    }
}
