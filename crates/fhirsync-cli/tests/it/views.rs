//! `fhirsync views` and the user's ViewDefinitions in a sync: a bad FHIRPath is reported with
//! the file, the expression, the position and the problem, once.

use std::path::Path;

use crate::util::{Cli, Env, Run, toml_path};

/// A view whose second column has an unclosed `where(`.
const UNCLOSED: &str = r#"{"resourceType": "ViewDefinition", "name": "bad_names", "resource": "Patient",
  "select": [{"column": [{"name": "id", "path": "getResourceKey()"},
                         {"name": "family", "path": "name.where(use = 'official'.family"}]}]}"#;

/// The `error:` line of a failed run.
fn error_line(run: &Run) -> String {
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {stderr}"))
        .to_string()
}

/// Writes `view` as `bad.json` and one Patient as `in.ndjson` into `dir`.
fn write_inputs(dir: &Path, view: &str, resource: &str) {
    std::fs::write(dir.join("bad.json"), view).expect("write view");
    std::fs::write(dir.join("in.ndjson"), format!("{resource}\n")).expect("write input");
}

/// `views run` on a view with a syntax error: exit 2, one line naming the file, the
/// expression, the character and what was expected, each once; `-v` adds the debug chain.
#[test]
fn views_run_reports_syntax_error_with_file_expression_and_position() {
    let dir = tempfile::tempdir().unwrap();
    write_inputs(dir.path(), UNCLOSED, r#"{"resourceType":"Patient","id":"p1"}"#);
    let run =
        Cli::bare().current_dir(dir.path()).args(["views", "run", "bad.json", "-i", "in.ndjson"]).run_now();
    run.assert_code(2);
    let line = error_line(&run);
    assert_eq!(
        line,
        "error: view file bad.json: FHIRPath syntax error in `name.where(use = 'official'.family` at character 34: \
         expected `)`, found end of expression"
    );
    assert!(!run.text().contains("debug:"), "{}", run.text());

    let run = Cli::bare()
        .current_dir(dir.path())
        .args(["-v", "views", "run", "bad.json", "-i", "in.ndjson"])
        .run_now();
    let all = run.assert_code(2);
    assert_eq!(error_line(&run), line, "-v keeps the error line");
    assert_eq!(all.matches("error: ").count(), 1, "{all}");
    let debug = all.split_once("debug: ").map(|(_, d)| d).unwrap_or_else(|| panic!("no debug form: {all}"));
    assert!(debug.contains("Caused by") && debug.contains("expected `)`, found end of expression"), "{all}");
}

/// `views run` where a function fails on a resource: the view, the input line, the resource
/// id, the expression and the offending kind are named.
#[test]
fn views_run_reports_evaluation_error_with_view_line_and_resource() {
    let dir = tempfile::tempdir().unwrap();
    let view = r#"{"resourceType": "ViewDefinition", "name": "eval_names", "resource": "Patient",
      "select": [{"column": [{"name": "n", "path": "name.family.substring(1)"}]}]}"#;
    write_inputs(dir.path(), view, r#"{"resourceType":"Patient","id":"p2","name":[{"family":7}]}"#);
    let run =
        Cli::bare().current_dir(dir.path()).args(["views", "run", "bad.json", "-i", "in.ndjson"]).run_now();
    run.assert_code(2);
    assert_eq!(
        error_line(&run),
        "error: view `eval_names` failed on input line 1 (resource id p2): FHIRPath `name.family.substring(1)` \
         failed: substring() on a non-string (a number)"
    );
}

/// A sync whose `[views] dir` holds a view with a syntax error fails before anything is read
/// or written (exit 2, no database), naming the folder, the file, the expression and the position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_with_bad_user_view_fails_first_naming_it() {
    let env = Env::start(1).await;
    let views = env.dir.path().join("views");
    std::fs::create_dir(&views).unwrap();
    std::fs::write(views.join("bad.json"), UNCLOSED).unwrap();
    let config = env.config(&format!("[views]\ndir = \"{}\"\n", toml_path(&views)));
    let run = Cli::sync(&config).run().await;
    run.assert_code(2);
    let line = error_line(&run);
    for part in [
        "views folder",
        "bad.json",
        "`name.where(use = 'official'.family`",
        "at character 34",
        "expected `)`",
    ] {
        assert_eq!(line.matches(part).count(), 1, "{part} once in: {line}");
    }
    assert!(!env.db().exists(), "nothing is landed before the views compile");
}
