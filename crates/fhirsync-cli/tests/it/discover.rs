//! `fhirsync discover`: datasets per endpoint, authorization probes, the catalog.

use fhirsync_auth::SigningKey;
use fhirsync_sim::oauth::ClientRegistration;

use crate::util::{CLIENT_ID, Env, fhirsync, output, text};

/// Re-registers the test client without licences for `unauthorized`.
fn restrict(env: &Env, unauthorized: &[&str]) {
    let key = SigningKey::from_pem(&env.key_pem.clone().into(), "test", None).expect("key loads");
    env.sim.state().oauth.register_client(ClientRegistration {
        client_id: CLIENT_ID.into(),
        jwks: Some(key.jwks()),
        jwks_from_url: true,
        unauthorized_datasets: unauthorized.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    });
}

/// The table shows authorized, not licensed (59204) and not authorized (403) datasets; the
/// catalog selects only the readable ones, and a sync of that selection has no gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_probes_and_writes_a_catalog_that_syncs() {
    let env = Env::start(2).await;
    restrict(&env, &["Observation:laboratory", "Condition"]);
    let config = env.config("");
    let catalog = env.dir.path().join("catalog.toml");
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["discover", "--out"]).arg(&catalog);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    let table = text(&out);
    let row = |needle: &str| {
        table
            .lines()
            .find(|l| l.starts_with("R4") && l.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {table}"))
            .to_string()
    };
    assert!(row("Observation:laboratory").contains("NOT LICENSED (59204)"), "{table}");
    assert!(row("Observation:vital-signs").contains("authorized"), "{table}");
    assert!(row("Observation:vital-signs").contains("patient=<patient>, category=vital-signs"), "{table}");
    assert!(row("Condition:").contains("NOT AUTHORIZED (403)"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("STU3")), "STU3 endpoint listed: {table}");

    // One probe per dataset, each asking for a single resource.
    let probes =
        env.sim.state().fhir.faults.request_log().into_iter().filter(|r| r.uri.contains("_count=1")).count();
    let rows = table.lines().filter(|l| l.starts_with("R4") || l.starts_with("STU3")).count();
    assert_eq!(probes + table.lines().filter(|l| l.contains(" Patient ")).count(), rows, "{table}");

    let text_catalog = std::fs::read_to_string(&catalog).unwrap();
    let parsed: toml::Value = toml::from_str(&text_catalog).expect("catalog is TOML");
    let datasets: Vec<String> = parsed["extract"]["datasets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert!(datasets.contains(&"Observation:vital-signs".to_string()), "{text_catalog}");
    assert!(
        !datasets.iter().any(|d| d == "Observation:laboratory" || d.starts_with("Condition")),
        "{text_catalog}"
    );
    assert!(text_catalog.contains("# \"Observation:laboratory\","), "{text_catalog}");

    // The selection syncs completely.
    let list = toml::Value::Array(datasets.iter().map(|d| toml::Value::String(d.clone())).collect());
    let cfg = std::fs::read_to_string(&config)
        .unwrap()
        .replace("[extract]\n", &format!("[extract]\ndatasets = {list}\n"));
    std::fs::write(&config, cfg).unwrap();
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["sync", "--no-progress"]);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("every scope fetched completely"), "{}", text(&out));
}

/// `--no-probe` sends no searches and selects every dataset of the catalog.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_no_probe_lists_without_searching() {
    let env = Env::start(1).await;
    let config = env.config("");
    let catalog = env.dir.path().join("c.toml");
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).args(["discover", "--no-probe", "--out"]).arg(&catalog);
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not probed"), "{}", text(&out));
    let log = env.sim.state().fhir.faults.request_log();
    assert!(log.iter().all(|r| r.uri.contains("/metadata")), "only metadata requests: {log:?}");
    let parsed: toml::Value = toml::from_str(&std::fs::read_to_string(&catalog).unwrap()).unwrap();
    let datasets = parsed["extract"]["datasets"].as_array().unwrap();
    assert!(datasets.iter().any(|d| d.as_str() == Some("Observation:laboratory")), "{parsed}");
    assert!(datasets.iter().any(|d| d.as_str() == Some("Condition:problem-list-item")), "{parsed}");
}

/// With no cohort in the config, `discover --patient ID` still probes with that patient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_needs_no_cohort_with_patient_flag() {
    let env = Env::start(1).await;
    let config = env.config("");
    let text_cfg = std::fs::read_to_string(&config)
        .unwrap()
        .replace("patient_list_identifier = \"systemlist|6442\"\n", "");
    std::fs::write(&config, text_cfg).unwrap();
    let patient = env.sim.state().fhir.patient_id(0);
    let mut cmd = fhirsync();
    cmd.arg("--config")
        .arg(&config)
        .args(["discover", "--patient", &patient, "--out"])
        .arg(env.dir.path().join("catalog.toml"));
    let out = output(cmd).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("authorized"), "{}", text(&out));
    let mut cmd = fhirsync();
    cmd.arg("--config").arg(&config).arg("discover");
    let out = output(cmd).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--patient"), "{}", text(&out));
}
