//! `fhirsync sync --metrics-file`: Prometheus text exposition after a good and a failed run.

use std::collections::{BTreeMap, BTreeSet};

use crate::util::{CLIENT_ID, Cli, Env, count, text};

/// One parsed sample: metric name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the exposition text strictly: every line is `# HELP name text`, `# TYPE name gauge`
/// or `name{k="v",...} value`, and each sample's name was declared by HELP and TYPE before it.
fn parse(textfile: &str) -> Vec<Sample> {
    let valid_name = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    let (mut helped, mut typed, mut samples) = (BTreeSet::new(), BTreeSet::new(), Vec::new());
    assert!(textfile.ends_with('\n'), "ends with a newline");
    for line in textfile.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or_else(|| panic!("HELP without text: {line}"));
            assert!(valid_name(name) && !help.is_empty(), "{line}");
            helped.insert(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| panic!("TYPE without kind: {line}"));
            assert!(valid_name(name) && ["gauge", "counter"].contains(&kind), "{line}");
            typed.insert(name.to_string());
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value is not a number: {line}"));
            let (name, labels) = series.split_once('{').unwrap_or((series, "}"));
            assert!(valid_name(name), "{line}");
            assert!(helped.contains(name) && typed.contains(name), "sample before its HELP/TYPE: {line}");
            let labels = labels.strip_suffix('}').unwrap_or_else(|| panic!("unclosed labels: {line}"));
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label: {line}"));
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("{line}"));
                    assert!(valid_name(k), "{line}");
                    (k.to_string(), v.to_string())
                })
                .collect();
            samples.push((name.to_string(), labels, value));
        }
    }
    samples
}

fn value(samples: &[Sample], name: &str) -> Option<f64> {
    samples.iter().find(|(n, _, _)| n == name).map(|(_, _, v)| *v)
}

/// After a sync the file parses, carries the run's counts labelled with the destination kind
/// and method, and holds no patient id or path; after a failing run (unknown client) it is
/// replaced with success 0, the exit code, no counts, and the earlier success time kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_file_after_good_and_failed_runs() {
    let env = Env::start(2).await;
    let config = env.config("");
    let prom = env.dir.path().join("fhirsync.prom");
    let out = Cli::sync(&config).args(["--metrics-file"]).arg(&prom).run().await;
    out.assert_success();
    let written = std::fs::read_to_string(&prom).unwrap();
    let samples = parse(&written);
    for (_, labels, _) in &samples {
        assert_eq!(labels.get("destination").map(String::as_str), Some("sqlite"), "{written}");
        assert_eq!(labels.get("method").map(String::as_str), Some("reload-and-compare"), "{written}");
    }
    assert_eq!(value(&samples, "fhirsync_run_success"), Some(1.0));
    assert_eq!(value(&samples, "fhirsync_run_completed_with_gaps"), Some(0.0));
    assert_eq!(value(&samples, "fhirsync_gaps"), Some(0.0));
    assert_eq!(value(&samples, "fhirsync_patients"), Some(2.0));
    let inserted = count(&env.db(), "SELECT inserted FROM _fhirsync_runs") as f64;
    assert!(inserted > 0.0);
    assert_eq!(value(&samples, "fhirsync_rows_inserted"), Some(inserted));
    assert!(value(&samples, "fhirsync_resources_extracted").unwrap() >= inserted);
    assert!(value(&samples, "fhirsync_http_requests").unwrap() > 0.0);
    let ended = value(&samples, "fhirsync_last_run_timestamp_seconds").unwrap();
    assert_eq!(value(&samples, "fhirsync_last_success_timestamp_seconds"), Some(ended));
    for id in env.sim.state().fhir.patient_ids() {
        assert!(!written.contains(&id), "patient id {id} in the metrics");
    }
    assert!(!written.contains(&env.dir.path().display().to_string()), "a path in the metrics");

    // The same destination, an unregistered client: authentication fails (exit 3).
    let bad = env.dir.path().join("bad.toml");
    let text_config = std::fs::read_to_string(&config).unwrap().replace(CLIENT_ID, "unregistered-client");
    std::fs::write(&bad, text_config).unwrap();
    let out = Cli::sync(&bad).args(["--metrics-file"]).arg(&prom).run().await;
    out.assert_code(3);
    let written = std::fs::read_to_string(&prom).unwrap();
    let samples = parse(&written);
    assert_eq!(value(&samples, "fhirsync_run_success"), Some(0.0), "{written}");
    assert_eq!(value(&samples, "fhirsync_run_exit_code"), Some(3.0), "{written}");
    assert_eq!(value(&samples, "fhirsync_last_success_timestamp_seconds"), Some(ended), "{written}");
    assert!(value(&samples, "fhirsync_last_run_timestamp_seconds").unwrap() >= ended);
    assert_eq!(value(&samples, "fhirsync_rows_inserted"), None, "no counts for a failed run: {written}");
    let names: Vec<_> = std::fs::read_dir(env.dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!names.iter().any(|n| n.to_string_lossy().ends_with(".tmp")), "temporary file left: {names:?}");
}

/// A metrics file in a missing folder is refused before the run starts (exit 2), so nothing
/// is landed and the fix is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_file_in_missing_folder_fails_first() {
    let env = Env::start(1).await;
    let config = env.config("");
    let out = Cli::sync(&config)
        .arg("--metrics-file")
        .arg(env.dir.path().join("no-such-dir/fhirsync.prom"))
        .run()
        .await;
    out.assert_code(2);
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
    assert!(!env.db().exists(), "nothing landed");
    assert_eq!(env.sim.state().oauth.tokens_issued(), 0);
}

/// A run that commits with gaps (the licence narrowed, exit 6) counts as a success with gaps:
/// `fhirsync_run_success` 1, `fhirsync_run_completed_with_gaps` 1, exit code 6, and the gaps
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_file_after_a_run_with_gaps() {
    let env = Env::start(2).await;
    let config = env.config("");
    let prom = env.dir.path().join("fhirsync.prom");
    let sync = || Cli::sync(&config).arg("--metrics-file").arg(&prom);
    let out = sync().run().await;
    out.assert_success();
    let mut client = env.sim.state().oauth.client(CLIENT_ID).expect("registered");
    client.unauthorized_datasets.push("Condition:problem-list-item".into());
    env.sim.state().oauth.register_client(client);
    let out = sync().run().await;
    out.assert_code(6);
    let written = std::fs::read_to_string(&prom).unwrap();
    let samples = parse(&written);
    assert_eq!(value(&samples, "fhirsync_run_success"), Some(1.0), "{written}");
    assert_eq!(value(&samples, "fhirsync_run_completed_with_gaps"), Some(1.0), "{written}");
    assert_eq!(value(&samples, "fhirsync_run_exit_code"), Some(6.0), "{written}");
    assert_eq!(value(&samples, "fhirsync_gaps"), Some(2.0), "one gap per patient: {written}");
    assert_eq!(value(&samples, "fhirsync_rows_deleted"), Some(0.0), "{written}");
}
