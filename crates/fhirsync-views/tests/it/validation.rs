//! ViewDefinition validation and evaluation errors beyond the official suite, and `load_dir`.

use std::error::Error as _;

use fhirsync_views::fhirpath::{EvalError, FunctionError, SyntaxError};
use fhirsync_views::{Error, View, load_dir};
use serde_json::{Value, json};

fn compile(view: Value) -> Result<View, Error> {
    View::from_json(&view)
}

fn with_columns(columns: Value) -> Value {
    json!({"resource": "Patient", "select": [{"column": columns}]})
}

/// Column names must be unique across the whole view, including nested selects.
#[test]
fn duplicate_column_names_are_rejected() {
    let err = compile(json!({"resource": "Patient", "select": [
        {"column": [{"name": "id", "path": "id"}]},
        {"forEach": "name", "column": [{"name": "id", "path": "family"}]}]}))
    .expect_err("duplicate");
    assert!(matches!(err, Error::DuplicateColumn { ref name } if name == "id"), "{err}");
}

/// Column names must be database-friendly identifiers.
#[test]
fn bad_column_names_are_rejected() {
    for name in ["1st", "last name", "", "a-b"] {
        let err = compile(with_columns(json!([{"name": name, "path": "id"}]))).expect_err(name);
        assert!(matches!(err, Error::InvalidColumnName { .. }), "{name}: {err}");
    }
}

/// Unsupported functions, bad arity and missing paths are compile-time errors.
#[test]
fn bad_expressions_are_rejected_at_compile_time() {
    let err = compile(with_columns(json!([{"name": "a", "path": "name.frobnicate()"}]))).expect_err("fn");
    assert!(err.to_string().contains("frobnicate"), "{err}");
    let err = compile(with_columns(json!([{"name": "a", "path": "first(1)"}]))).expect_err("arity");
    assert!(matches!(err, Error::Function { .. }), "{err}");
    let err = compile(with_columns(json!([{"name": "a"}]))).expect_err("no path");
    assert!(matches!(err, Error::MissingField { field: "path", .. }), "{err}");
}

/// A syntax error names the expression, the character where it is and the token found there,
/// and keeps the engine's typed error as its source.
#[test]
fn syntax_errors_carry_position_and_token() {
    let err =
        compile(with_columns(json!([{"name": "a", "path": "name.where(use = 'x'"}]))).expect_err("open");
    let Error::Syntax { ref expression, position: 20, source: SyntaxError::Expected { expected: ")", .. } } =
        err
    else {
        panic!("{err:?}");
    };
    assert_eq!(expression, "name.where(use = 'x'");
    assert_eq!(
        err.to_string(),
        "FHIRPath syntax error in `name.where(use = 'x'` at character 20: expected `)`, found end of expression"
    );
    let source = err.source().and_then(|s| s.downcast_ref::<SyntaxError>()).expect("typed source");
    assert_eq!(source.to_string(), "expected `)`, found end of expression");

    let err =
        compile(with_columns(json!([{"name": "a", "path": "name.given given"}]))).expect_err("two names");
    assert!(err.to_string().ends_with("at character 11: unexpected identifier `given`"), "{err}");
}

/// A function error names the function, the number of arguments and where the call starts.
#[test]
fn function_errors_name_the_function_and_position() {
    let err = compile(with_columns(json!([{"name": "a", "path": "name.first(1)"}]))).expect_err("arity");
    assert!(
        matches!(
            err,
            Error::Function { position: 5, source: FunctionError::Arity { function: "first", count: 1 }, .. }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "FHIRPath `name.first(1)` at character 5: `first()` does not take 1 argument(s)"
    );
    let err = compile(with_columns(json!([{"name": "a", "path": "%nope"}]))).expect_err("constant");
    assert!(
        matches!(err, Error::UndefinedConstant { position: 0, ref name, .. } if name == "nope"),
        "{err:?}"
    );
}

/// An evaluation error names the operation, the offending kinds or counts, and the expression.
#[test]
fn evaluation_errors_name_operation_and_operands() {
    let view =
        compile(with_columns(json!([{"name": "a", "path": "name.family.substring(1)"}]))).expect("valid");
    let err =
        view.evaluate(&json!({"resourceType": "Patient", "name": [{"family": 7}]})).expect_err("number");
    assert!(
        matches!(
            err,
            Error::Evaluation {
                source: EvalError::NotAString { operation: "substring()", found: "a number" },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "FHIRPath `name.family.substring(1)` failed: substring() on a non-string (a number)"
    );
    let view = compile(with_columns(json!([{"name": "a", "path": "name.family > 'a'"}]))).expect("valid");
    let err = view
        .evaluate(&json!({"resourceType": "Patient", "name": [{"family": "a"}, {"family": "b"}]}))
        .expect_err("two");
    assert!(
        matches!(
            err,
            Error::Evaluation { source: EvalError::NotSingle { operation: "comparison", count: 2 }, .. }
        ),
        "{err:?}"
    );
}

/// A select may iterate in only one way.
#[test]
fn for_each_and_repeat_together_are_rejected() {
    let err = compile(json!({"resource": "Patient", "select": [
        {"forEach": "name", "repeat": ["item"], "column": [{"name": "a", "path": "id"}]}]}))
    .expect_err("both");
    assert!(matches!(err, Error::WrongType { field: "forEach", .. }), "{err}");
}

/// A constant with two `value[x]` or an unknown value type is rejected.
#[test]
fn bad_constants_are_rejected() {
    for constant in
        [json!({"name": "c", "valueString": "a", "valueInteger": 1}), json!({"name": "c", "valueFoo": 1})]
    {
        let view = json!({"resource": "Patient", "constant": [constant], "select": [{"column": [{"name": "a", "path": "%c"}]}]});
        assert!(matches!(compile(view), Err(Error::InvalidConstant { .. })));
    }
}

/// A multi-valued non-collection column fails at evaluation with an actionable message.
#[test]
fn multi_valued_column_error_names_the_column() {
    let view = compile(with_columns(json!([{"name": "given", "path": "name.given"}]))).expect("valid");
    let err = view
        .evaluate(&json!({"resourceType": "Patient", "name": [{"given": ["a", "b"]}]}))
        .expect_err("two values");
    assert!(matches!(err, Error::NotSingleton { ref column, count: 2 } if column == "given"), "{err}");
    assert!(err.to_string().contains("collection"), "{err}");
}

/// The default name is the lower-cased resource type; an explicit name must be an identifier.
#[test]
fn view_names() {
    let v = compile(with_columns(json!([{"name": "id", "path": "id"}]))).expect("valid");
    assert_eq!(v.name(), "patient");
    let mut bad = with_columns(json!([{"name": "id", "path": "id"}]));
    bad["name"] = json!("my view");
    assert!(compile(bad).is_err());
}

/// Views can be shared across threads (landing flattens on a blocking pool).
#[test]
fn views_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<View>();
}

/// `load_dir` loads every `*.json` in name order and names the file of an invalid view.
#[test]
fn load_dir_reads_json_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let view = |name: &str| json!({"resource": "Patient", "name": name, "select": [{"column": [{"name": "id", "path": "id"}]}]});
    std::fs::write(dir.path().join("b.json"), view("second").to_string()).expect("write");
    std::fs::write(dir.path().join("a.json"), view("first").to_string()).expect("write");
    std::fs::write(dir.path().join("notes.txt"), "ignored").expect("write");
    let names: Vec<String> =
        load_dir(dir.path()).expect("loads").iter().map(|v| v.name().to_string()).collect();
    assert_eq!(names, ["first", "second"]);

    std::fs::write(dir.path().join("c.json"), r#"{"resource": "Patient"}"#).expect("write");
    let err = load_dir(dir.path()).expect_err("invalid view");
    assert!(matches!(err, Error::InFile { .. }) && err.to_string().contains("c.json"), "{err}");

    assert!(matches!(load_dir(&dir.path().join("missing")), Err(Error::Io { .. })));
}

/// Arbitrary token soup never panics the FHIRPath compiler or evaluator (it errors or evaluates).
#[test]
fn random_expressions_never_panic() {
    const TOKENS: [&str; 40] = [
        "name",
        "value",
        "ofType(",
        "Quantity",
        ")",
        "(",
        ".",
        "[",
        "]",
        "0",
        "1.5",
        "-",
        "+",
        "*",
        "/",
        "div",
        "mod",
        "=",
        "!=",
        "<",
        ">=",
        "and",
        "or",
        "xor",
        "implies",
        "'x'",
        "%c",
        "%rowIndex",
        "$this",
        "first()",
        "where(",
        "exists()",
        "join(",
        ",",
        "@2020-01",
        "@T10:00",
        "lowBoundary()",
        "getReferenceKey(",
        "|",
        "{}",
    ];
    let resource = json!({"resourceType": "Observation", "id": "o1", "name": [{"given": ["a"]}],
        "valueQuantity": {"value": 1.25}, "subject": {"reference": "Patient/p1"}});
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut evaluated = 0;
    for _ in 0..5000 {
        let len = 1 + next() % 8;
        let expr: Vec<&str> = (0..len).map(|_| TOKENS[(next() % TOKENS.len() as u64) as usize]).collect();
        let view = json!({"resource": "Observation", "constant": [{"name": "c", "valueInteger": 2}],
            "select": [{"column": [{"name": "v", "path": expr.join(" "), "collection": true}]}]});
        if let Ok(v) = View::from_json(&view) {
            let _ = v.evaluate(&resource);
            evaluated += 1;
        }
    }
    assert!(evaluated > 100, "the generator should produce some valid expressions, got {evaluated}");
}

/// A misspelt element in a select or column is reported instead of silently ignored.
#[test]
fn unknown_select_and_column_elements_are_rejected() {
    let err = compile(json!({"resource": "Patient", "select": [{"colum": [{"name": "id", "path": "id"}]}]}))
        .expect_err("typo in select");
    assert!(matches!(err, Error::UnknownElement { ref element, .. } if element == "colum"), "{err}");
    let err =
        compile(with_columns(json!([{"name": "id", "path": "id", "colection": true}]))).expect_err("typo");
    assert!(matches!(err, Error::UnknownElement { ref element, .. } if element == "colection"), "{err}");
    let err = compile(json!({"resource": "Patient", "select": [{"forEach": "name"}]})).expect_err("empty");
    assert!(matches!(err, Error::EmptySelect { .. }), "{err}");
}
