//! Runs the vendored official SQL-on-FHIR v2 test suite (`tests/conformance/*.json`).
//!
//! Each case either expects rows (compared order-insensitively: the ViewDefinition spec does not
//! define row order; cases whose rows come out in another order than listed are printed), a row
//! count, or an error (at compile or evaluation time). The test prints a pass count
//! per file and in total, and fails when the total drops below [`BASELINE`].

use std::path::PathBuf;

use fhirsync_views::{Error, View};
use serde_json::{Map, Value};

/// Number of suite cases that must pass (all 134 in the vendored suite).
const BASELINE: usize = 134;

/// Cases skipped on purpose, as (file, title, reason). Empty: nothing is skipped.
const SKIPPED: [(&str, &str, &str); 0] = [];

fn suite_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/conformance")
}

/// Outcome of one case.
enum Outcome {
    Pass,
    Fail(String),
}

/// Runs `view` over every resource, returning rows as `{column: value}` objects.
/// Column names and rows (as `{column: value}` objects) of one view run.
type Table = (Vec<String>, Vec<Map<String, Value>>);

fn run_view(view: &Value, resources: &[Value]) -> Result<Table, Error> {
    let view = View::from_json(view)?;
    let names: Vec<String> = view.columns().iter().map(|c| c.name.clone()).collect();
    let mut rows = Vec::new();
    for r in resources {
        for row in view.evaluate(r)? {
            rows.push(names.iter().cloned().zip(row).collect());
        }
    }
    Ok((names, rows))
}

/// JSON equality with numbers compared by value (`5` equals `5.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Multiset equality of rows.
fn same_rows(actual: &[Map<String, Value>], expected: &[Value]) -> bool {
    if actual.len() != expected.len() {
        return false;
    }
    let mut used = vec![false; actual.len()];
    expected.iter().all(|e| {
        let hit = actual.iter().enumerate().position(|(i, a)| !used[i] && same(&Value::Object(a.clone()), e));
        hit.map(|i| used[i] = true).is_some()
    })
}

fn run_case(case: &Value, resources: &[Value]) -> Outcome {
    let result = run_view(&case["view"], resources);
    if case["expectError"] == Value::Bool(true) {
        return match result {
            Err(e) => {
                println!("  ok, expected error: {e}");
                Outcome::Pass
            }
            Ok((_, rows)) => Outcome::Fail(format!("expected an error, got {} rows", rows.len())),
        };
    }
    let (names, rows) = match result {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(format!("unexpected error: {e}")),
    };
    if let Some(cols) = case.get("expectColumns").and_then(Value::as_array) {
        let want: Vec<&str> = cols.iter().filter_map(Value::as_str).collect();
        if want != names {
            return Outcome::Fail(format!("columns {names:?}, expected {want:?}"));
        }
    }
    if let Some(n) = case.get("expectCount").and_then(Value::as_u64) {
        return if rows.len() as u64 == n {
            Outcome::Pass
        } else {
            Outcome::Fail(format!("{} rows, expected {n}", rows.len()))
        };
    }
    let expect = case["expect"].as_array().cloned().unwrap_or_default();
    if same_rows(&rows, &expect) {
        let ordered = rows.len() == expect.len()
            && rows.iter().zip(&expect).all(|(a, e)| same(&Value::Object(a.clone()), e));
        if !ordered {
            println!("  (rows match in another order than listed: {})", case["title"]);
        }
        Outcome::Pass
    } else {
        Outcome::Fail(format!("rows {}\n      expected {}", Value::from(rows), Value::from(expect)))
    }
}

/// Every official SQL-on-FHIR v2 test case passes (no regression below the committed baseline).
#[test]
fn official_suite() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(suite_dir())
        .expect("conformance folder exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json") && !p.ends_with("tests.schema.json"))
        .collect();
    files.sort();
    let (mut total, mut passed) = (0, 0);
    let mut failures = Vec::new();
    for path in &files {
        let file = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let suite: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("readable")).expect("json");
        let resources = suite["resources"].as_array().cloned().unwrap_or_default();
        let (mut f_total, mut f_pass) = (0, 0);
        for case in suite["tests"].as_array().into_iter().flatten() {
            let title = case["title"].as_str().unwrap_or_default();
            if let Some((_, _, reason)) = SKIPPED.iter().find(|(f, t, _)| *f == file && *t == title) {
                println!("  skip {file} / {title}: {reason}");
                continue;
            }
            f_total += 1;
            match run_case(case, &resources) {
                Outcome::Pass => f_pass += 1,
                Outcome::Fail(why) => failures.push(format!("{file} / {title}: {why}")),
            }
        }
        println!("{file:28} {f_pass:3}/{f_total}");
        total += f_total;
        passed += f_pass;
    }
    println!("TOTAL {passed}/{total} (baseline {BASELINE})");
    for f in &failures {
        println!("FAIL {f}");
    }
    assert_eq!(total, 134, "the vendored suite has 134 cases");
    assert!(passed >= BASELINE, "conformance regressed: {passed} < baseline {BASELINE}");
}

/// The row comparison itself is strict: a wrong value, a missing row or an extra row fails.
#[test]
fn comparison_detects_differences() {
    let row = |v: Value| v.as_object().cloned().expect("object");
    let actual = vec![row(serde_json::json!({"a": 1})), row(serde_json::json!({"a": 2}))];
    assert!(same_rows(&actual, &[serde_json::json!({"a": 2}), serde_json::json!({"a": 1.0})]));
    assert!(!same_rows(&actual, &[serde_json::json!({"a": 2}), serde_json::json!({"a": 3})]));
    assert!(!same_rows(&actual, &[serde_json::json!({"a": 2})]));
    assert!(!same_rows(&actual, &[serde_json::json!({"a": 1}), serde_json::json!({"a": 1})]));
}
