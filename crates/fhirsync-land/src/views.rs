//! Shared helpers for materialising SQL-on-FHIR views (see the destinations for the tables).

use fhirsync_views::{Column, ColumnType, View};
use serde_json::Value;

use crate::{Error, Result};

/// One typed cell of a view row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CellValue {
    /// Empty.
    Null,
    /// Text (strings, dates, decimals, JSON of collections).
    Text(String),
    /// Integer.
    Int(i64),
    /// Boolean.
    Bool(bool),
}

/// Text identifying a view's output shape; a changed signature rebuilds the view table.
pub(crate) fn view_signature(view: &View) -> String {
    let cols: Vec<String> =
        view.columns().iter().map(|c| format!("{}:{:?}:{}", c.name, c.ty, c.collection)).collect();
    format!("{}|{}", view.resource(), cols.join(","))
}

/// Parses a landed resource and runs the view over it.
pub(crate) fn flatten(view: &View, id: &str, json: &str) -> Result<Vec<fhirsync_views::Row>> {
    let value: Value = serde_json::from_str(json)
        .map_err(|source| Error::Json { action: "parsing a landed resource for a view", source })?;
    view.evaluate(&value).map_err(|source| Error::View {
        view: view.name().to_string(),
        resource_type: view.resource().to_string(),
        id: id.to_string(),
        source: Box::new(source),
    })
}

/// Converts one evaluated value to the column's declared type.
///
/// Fails if an integer/boolean column receives something else, naming the view and column.
pub(crate) fn cell_value(view: &View, column: &Column, value: Value) -> Result<CellValue> {
    let mismatch = |v: &Value| Error::ViewValue {
        view: view.name().to_string(),
        column: column.name.clone(),
        expected: format!("{:?}", column.ty),
        found: json_kind(v),
    };
    Ok(match value {
        Value::Null => CellValue::Null,
        v if column.collection => CellValue::Text(v.to_string()),
        Value::String(s) => match column.ty {
            ColumnType::Integer => {
                CellValue::Int(s.parse().map_err(|_| mismatch(&Value::String(s.clone())))?)
            }
            ColumnType::Boolean => CellValue::Bool(match s.as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(mismatch(&Value::String(s))),
            }),
            _ => CellValue::Text(s),
        },
        Value::Number(n) => match column.ty {
            ColumnType::Integer => {
                CellValue::Int(n.as_i64().ok_or_else(|| mismatch(&Value::Number(n.clone())))?)
            }
            ColumnType::Boolean => return Err(mismatch(&Value::Number(n))),
            _ => CellValue::Text(n.to_string()),
        },
        Value::Bool(b) => match column.ty {
            ColumnType::Boolean => CellValue::Bool(b),
            ColumnType::Integer => return Err(mismatch(&Value::Bool(b))),
            _ => CellValue::Text(b.to_string()),
        },
        v @ (Value::Array(_) | Value::Object(_)) => match column.ty {
            ColumnType::Integer | ColumnType::Boolean => return Err(mismatch(&v)),
            _ => CellValue::Text(v.to_string()),
        },
    })
}

fn json_kind(v: &Value) -> String {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
    .to_string()
}
