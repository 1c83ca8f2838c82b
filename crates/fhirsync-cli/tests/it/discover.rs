//! `fhirsync discover`: datasets per endpoint, licence probes read to the last page, the catalog.

use std::path::Path;

use crate::util::{Cli, Env, edit, text};

/// Starts a simulator with `patients` patients whose test client is not licensed for `unlicensed`
/// (`Type` → bare 403, `Type:category` → that sub-type dropped with a named 59204).
async fn env_without(patients: usize, unlicensed: &[&str]) -> Env {
    let unlicensed: Vec<String> = unlicensed.iter().map(|s| s.to_string()).collect();
    Env::start_with(patients, move |c| c.unauthorized_datasets = unlicensed).await
}

/// A config where Condition is searched as one dataset (no category fan-out), so a withheld
/// Condition category comes back as a 59204 next to the other categories' data, and Observation is
/// fanned out to `observation` only; `extract` lines are added to `[extract]`.
fn config_with(env: &Env, extract: &str, observation: &str) -> std::path::PathBuf {
    env.config_with(extract, &format!("[extract.categories]\nObservation = {observation}\n"))
}

/// The active `[extract] datasets` of a catalog file.
fn catalog_datasets(catalog: &Path) -> (String, Vec<String>) {
    let text = std::fs::read_to_string(catalog).unwrap();
    let parsed: toml::Value = toml::from_str(&text).expect("catalog is TOML");
    let datasets = parsed["extract"]["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    (text, datasets)
}

/// The R4 row of `dataset` in the table.
fn r4_row(table: &str, dataset: &str) -> String {
    table
        .lines()
        .find(|l| l.starts_with("R4") && l.split_whitespace().nth(1) == Some(dataset))
        .unwrap_or_else(|| panic!("{dataset}: {table}"))
        .to_string()
}

/// A dataset with a named 59204 next to its data is "licensed" with the withheld sub-type and kept
/// in the catalog; a type the client is not licensed for (bare 403) is "not licensed" and
/// commented out; the catalog's selection syncs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_keeps_datasets_with_withheld_subtypes_and_drops_unlicensed() {
    let env = env_without(2, &["Condition:health-concern", "MedicationRequest"]).await;
    let config = config_with(&env, "", "[\"laboratory\", \"vital-signs\"]");
    let catalog = env.dir.path().join("catalog.toml");
    let out = Cli::config(&config).args(["discover", "--out"]).arg(&catalog).run().await;
    out.assert_success();
    let table = text(&out);
    assert!(table.contains("probed with 2 patient(s)"), "{table}");

    let condition = r4_row(&table, "Condition");
    assert!(condition.contains("licensed, "), "{table}");
    assert!(condition.contains("withheld ("), "{table}");
    assert!(condition.contains("Condition - Health Concern"), "{table}");
    assert!(!condition.contains("not licensed"), "{table}");
    let condition_data: usize = (0..2)
        .map(|i| {
            ["Condition:problem-list-item", "Condition:encounter-diagnosis"]
                .iter()
                .map(|d| env.sim.state().fhir.generated_count(i, d).unwrap())
                .sum::<usize>()
        })
        .sum();
    assert!(condition_data > 0, "the simulator generates conditions for the probe patients");
    assert_eq!(condition.split_whitespace().nth(3), Some(condition_data.to_string().as_str()), "{table}");
    assert!(r4_row(&table, "MedicationRequest").contains("not licensed (HTTP 403)"), "{table}");
    assert!(r4_row(&table, "Observation:vital-signs").contains("licensed"), "{table}");
    assert!(
        r4_row(&table, "Observation:vital-signs").contains("patient=<patient>, category=vital-signs"),
        "{table}"
    );
    assert!(table.lines().any(|l| l.starts_with("STU3")), "STU3 endpoint listed: {table}");

    let (text_catalog, datasets) = catalog_datasets(&catalog);
    assert!(datasets.contains(&"Condition".to_string()), "{text_catalog}");
    assert!(datasets.contains(&"Observation:vital-signs".to_string()), "{text_catalog}");
    assert!(!datasets.iter().any(|d| d == "MedicationRequest"), "{text_catalog}");
    assert!(text_catalog.contains("# \"MedicationRequest\","), "{text_catalog}");

    // The selection is valid configuration and syncs.
    let list = toml::Value::Array(datasets.iter().map(|d| toml::Value::String(d.clone())).collect());
    edit(&config, |t| t.replace("[extract]\n", &format!("[extract]\ndatasets = {list}\n")));
    let out = Cli::sync(&config).run().await;
    out.assert_success();
    assert!(
        text(&out).contains("every scope fetched completely"),
        "withheld sub-types are no gap: {}",
        text(&out)
    );
    let landed = crate::util::count(&env.db(), "SELECT COUNT(*) FROM condition");
    assert!(landed >= condition_data as i64, "{landed} conditions landed: {}", text(&out));
}

/// Each dataset is read to its last page for each probe patient (`--patients`), so an outcome
/// that Epic puts only on the last page of a multi-page result is seen; `--json` gives per
/// dataset the status, exclusions, resources, pages and patients probed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_reads_every_page_of_every_probe_patient() {
    const PAGE: usize = 3;
    let env = env_without(4, &["Condition:health-concern", "MedicationRequest"]).await;
    let config = config_with(&env, &format!("page_size = {PAGE}\n"), "[\"laboratory\"]");
    let catalog = env.dir.path().join("catalog.toml");
    let out = Cli::config(&config)
        .args(["discover", "--patients", "2", "--json", "--out"])
        .arg(&catalog)
        .run()
        .await;
    out.assert_success();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(report["patients_probed"], 2, "{report}");
    let dataset = |name: &str| {
        report["datasets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["endpoint"] == "R4" && d["dataset"] == name)
            .unwrap_or_else(|| panic!("{name}: {report}"))
            .clone()
    };

    // Condition: problems + encounter diagnoses of patients 0 and 1, PAGE per page.
    let sim = env.sim.state();
    let counts: Vec<usize> = (0..2)
        .map(|i| {
            ["Condition:problem-list-item", "Condition:encounter-diagnosis"]
                .iter()
                .map(|d| sim.fhir.generated_count(i, d).unwrap())
                .sum()
        })
        .collect();
    assert!(
        counts.iter().any(|n| *n > PAGE),
        "a probe patient has a multi-page Condition result: {counts:?}"
    );
    let pages: usize = counts.iter().map(|n| n.div_ceil(PAGE).max(1)).sum();
    let condition = dataset("Condition");
    assert_eq!(condition["status"], "licensed", "{condition}");
    assert_eq!(condition["resources"], counts.iter().sum::<usize>(), "{condition}");
    assert_eq!(condition["pages"], pages, "{condition}");
    assert_eq!(condition["patients"], 2, "{condition}");
    assert_eq!(condition["selected"], true, "{condition}");
    let exclusions = condition["exclusions"].as_array().unwrap();
    assert!(
        exclusions.iter().any(|e| e["code"] == "59204"
            && e["resource_type"] == "Condition"
            && e["subtype"] == "Health Concern"),
        "{condition}"
    );
    // Every page after the first is a `next` link followed.
    let followed =
        sim.fhir.faults.request_log().iter().filter(|r| r.uri.contains("/R4/Condition?sessionID=")).count();
    assert_eq!(followed, pages - 2, "{condition}");

    let meds = dataset("MedicationRequest");
    assert_eq!(meds["status"], "not_licensed", "{meds}");
    assert_eq!(meds["detail"], "HTTP 403", "{meds}");
    assert_eq!(meds["selected"], false, "{meds}");
    assert_eq!(meds["patients"], 1, "a refused type is not asked again for the next patient: {meds}");
    let labs = dataset("Observation:laboratory");
    assert_eq!(labs["status"], "licensed", "{labs}");
    assert!(
        labs["exclusions"].as_array().unwrap().iter().all(|e| e["subtype"] != "Health Concern"),
        "{labs}"
    );
    assert_eq!(report["selected"].as_u64().unwrap() as usize, catalog_datasets(&catalog).1.len(), "{report}");
}

/// `--no-probe` sends no searches and selects every dataset of the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_no_probe_lists_without_searching() {
    let env = Env::start(1).await;
    let config = env.config("");
    let catalog = env.dir.path().join("c.toml");
    let out = Cli::config(&config).args(["discover", "--no-probe", "--out"]).arg(&catalog).run().await;
    out.assert_success();
    assert!(text(&out).contains("not probed"), "{}", text(&out));
    let log = env.sim.state().fhir.faults.request_log();
    assert!(log.iter().all(|r| r.uri.contains("/metadata")), "only metadata requests: {log:?}");
    let (text_catalog, datasets) = catalog_datasets(&catalog);
    assert!(datasets.iter().any(|d| d == "Observation:laboratory"), "{text_catalog}");
    assert!(datasets.iter().any(|d| d == "Condition:problem-list-item"), "{text_catalog}");
}

/// With no cohort in the config, `discover --patient ID` still probes with that patient (and only
/// that one); without `--patient` it says what to pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_needs_no_cohort_with_patient_flag() {
    let env = Env::start(2).await;
    let config = env.config("");
    edit(&config, |t| t.replace("patient_list_identifier = \"systemlist|6442\"\n", ""));
    let patient = env.sim.state().fhir.patient_id(0);
    let out = Cli::config(&config)
        .args(["discover", "--patient", &patient, "--out"])
        .arg(env.dir.path().join("catalog.toml"))
        .run()
        .await;
    out.assert_success();
    assert!(text(&out).contains("probed with 1 patient(s)"), "{}", text(&out));
    assert!(r4_row(&text(&out), "Observation:vital-signs").contains("licensed"), "{}", text(&out));
    let other = env.sim.state().fhir.patient_id(1);
    let log = env.sim.state().fhir.faults.request_log();
    assert!(!log.iter().any(|r| r.uri.contains(&other)), "only the given patient is probed");
    let out = Cli::config(&config).arg("discover").run().await;
    out.assert_code(2);
    assert!(text(&out).contains("--patient"), "{}", text(&out));
}
