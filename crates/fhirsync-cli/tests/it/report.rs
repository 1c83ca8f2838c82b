//! The JSON run report is a documented, stable schema (`docs/run-report.md`).

use crate::util::{Cli, Env};

/// The documented tables: `(json path, keys)` for every `<!-- keys: PATH -->` marker, with the
/// backticked first cell of each row of the table that follows.
fn documented_keys() -> Vec<(String, Vec<String>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/run-report.md");
    let doc = std::fs::read_to_string(path).expect("docs/run-report.md is readable");
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(marker) = line.strip_prefix("<!-- keys: ").and_then(|m| m.strip_suffix(" -->")) else {
            continue;
        };
        let mut keys = Vec::new();
        for row in lines.by_ref().skip_while(|l| !l.starts_with('|')).take_while(|l| l.starts_with('|')) {
            let cell = row.trim_start_matches('|').split('|').next().unwrap_or("").trim();
            if let Some(key) = cell.strip_prefix('`').and_then(|c| c.strip_suffix('`')) {
                keys.push(key.to_string());
            }
        }
        tables.push((marker.to_string(), keys));
    }
    tables
}

/// The value at a documented path: `.` (top), `runs[0]`, `runs[0].report.http`.
fn at<'a>(root: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    if path == "." {
        return root;
    }
    path.split('.').fold(root, |v, part| match part.strip_suffix("[0]") {
        Some(name) => &v[name][0],
        None => &v[part],
    })
}

/// Every key that `docs/run-report.md` documents is present in `status --json` after a sync,
/// at the documented place, and the stored report's landing-only `scope` list is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_has_the_documented_keys() {
    let tables = documented_keys();
    let paths: Vec<&str> = tables.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, [".", "runs[0]", "runs[0].report", "runs[0].report.http"], "documented tables");
    assert!(tables.iter().all(|(_, keys)| keys.len() >= 3), "{tables:?}");

    let env = Env::start(2).await;
    let config = env.config("");
    let out = Cli::sync(&config).run().await;
    out.assert_success();
    let out = Cli::config(&config).args(["status", "--json"]).run().await;
    out.assert_success();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    for (path, keys) in &tables {
        let object =
            at(&json, path).as_object().unwrap_or_else(|| panic!("{path} is not an object: {json:#}"));
        for key in keys {
            assert!(object.contains_key(key), "documented key {path}.{key} missing from status --json");
        }
    }
    assert_eq!(json["runs"][0]["status"], "succeeded");
    assert_eq!(json["detail"]["run_id"], json["runs"][0]["run_id"]);
    assert!(json["runs"][0]["report"].get("scope").is_none(), "scope lists are left out");
}
