//! FHIR decimals stay exact through a view: the literal as written comes out, and FHIRPath
//! compares and computes on exact values (no binary floating point).

use fhirsync_views::View;
use serde_json::{Value, json};

/// Literals as written in a resource, and as they come out: the same text, except that JSON's
/// exponent is spelt `e+2` (serde_json's canonical spelling of the same number and digits).
const LITERALS: [(&str, &str); 4] =
    [("1.50", "1.50"), ("0.10", "0.10"), ("1e2", "1e+2"), ("123456789012345678.9", "123456789012345678.9")];

fn observation(literal: &str) -> Value {
    serde_json::from_str(&format!(
        r#"{{"resourceType":"Observation","id":"o1","valueQuantity":{{"value":{literal},"unit":"mg"}}}}"#
    ))
    .expect("json")
}

fn view(columns: Value) -> View {
    View::from_json(&json!({"resource": "Observation", "select": [{"column": columns}]})).expect("view")
}

/// A decimal column yields the literal as written: `1.50` is not `1.5`, `1e2` is not `100.0`.
#[test]
fn decimal_cells_keep_the_literal() {
    let v = view(json!([{"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"}]));
    for (literal, out) in LITERALS {
        let rows = v.evaluate(&observation(literal)).expect("rows");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0][0].to_string(), out, "cell of {literal}");
    }
}

/// Comparisons and arithmetic are exact: `0.1 + 0.2 = 0.3`, `1.50 = 1.5`, and a value one digit
/// past f64's precision still compares correctly.
#[test]
fn fhirpath_decimal_arithmetic_is_exact() {
    let v = view(json!([
        {"name": "eq", "path": "value.ofType(Quantity).value = 1.5", "type": "boolean"},
        {"name": "sum", "path": "0.1 + 0.2 = 0.3", "type": "boolean"},
        {"name": "plus", "path": "value.ofType(Quantity).value + 0.10", "type": "decimal"},
        {"name": "gt", "path": "value.ofType(Quantity).value > 123456789012345678.8", "type": "boolean"},
        {"name": "third", "path": "1 / 3", "type": "decimal"},
        {"name": "text", "path": "value.ofType(Quantity).value.toString()", "type": "string"}
    ]));
    let cells = |literal: &str| v.evaluate(&observation(literal)).expect("rows").remove(0);
    let row = cells("1.50");
    assert_eq!(row[0], json!(true));
    assert_eq!(row[1], json!(true));
    assert_eq!(row[2].to_string(), "1.60");
    assert_eq!(row[3], json!(false));
    assert_eq!(row[4].to_string(), "0.33333333");
    assert_eq!(row[5], json!("1.50"));
    let big = cells("123456789012345678.9");
    assert_eq!(big[3], json!(true), "f64 cannot tell 123456789012345678.9 from .8");
    assert_eq!(big[2].to_string(), "123456789012345679.00");
    assert_eq!(cells("1e2")[2].to_string(), "100.10");
}
