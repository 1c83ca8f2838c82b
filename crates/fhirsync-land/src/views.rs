//! What every destination shares when it materialises a SQL-on-FHIR view: the table's columns
//! ([`table_columns`]) and one row's typed cells ([`table_row`]).
//!
//! A view table starts with `_fhir_version` and `_id` (the landed resource), then one column per
//! view column, typed by its FHIR type ([`ColumnKind`]). FHIR dates and dateTimes may be partial
//! (`2019`, `2019-04`, a dateTime without a time), which no SQL `DATE`/`TIMESTAMPTZ` can hold.
//! So each `date`, `dateTime` or `instant` column `x` is followed by a text column `x_text`:
//!
//! - `x` holds the typed value when the FHIR value is complete: a date `YYYY-MM-DD`, or a dateTime
//!   with a time and a time-zone offset (as an instant, in UTC); otherwise it is NULL;
//! - `x_text` always holds the value as written in the resource (partial, or with its offset).
//!
//! Decimals keep the literal written in the resource (`1.50`, not `1.5`); each destination stores
//! it exactly (SQLite text, PostgreSQL `numeric`, Parquet `Decimal128` or text, NDJSON the number).

use chrono::{DateTime, NaiveDate, Utc};
use fhirsync_views::{Column, ColumnType, Decimal, ParseDecimalError, Row, View};
use serde_json::Value;

use crate::{Error, Result};

/// Suffix of the companion text column of a date/dateTime column.
pub(crate) const TEXT_SUFFIX: &str = "_text";

/// The destination-independent type of a view-table column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ColumnKind {
    /// Text (strings, codes, ids, times, and the companion `_text` columns).
    Text,
    /// A `collection: true` column: a JSON array.
    Json,
    /// A 64-bit integer.
    Integer,
    /// An exact decimal (the literal as written).
    Decimal,
    /// A boolean.
    Boolean,
    /// A complete calendar date.
    Date,
    /// An instant (UTC).
    Timestamp,
}

/// One column of a view table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableColumn {
    /// Column name.
    pub name: String,
    /// Its type.
    pub kind: ColumnKind,
}

/// One typed cell of a view row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CellValue {
    /// Empty.
    Null,
    /// Text.
    Text(String),
    /// JSON of a collection column.
    Json(Value),
    /// Integer.
    Int(i64),
    /// Boolean.
    Bool(bool),
    /// A decimal: the literal as it came from the resource (`1.50`, `1e+2`), a valid number.
    Decimal(String),
    /// A complete date.
    Date(NaiveDate),
    /// An instant.
    Timestamp(DateTime<Utc>),
}

impl CellValue {
    /// The kind of cell, for error messages (never the data).
    #[cfg_attr(not(feature = "parquet"), allow(dead_code))]
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            CellValue::Null => "null",
            CellValue::Text(_) => "text",
            CellValue::Json(_) => "JSON",
            CellValue::Int(_) => "integer",
            CellValue::Bool(_) => "boolean",
            CellValue::Decimal(_) => "decimal",
            CellValue::Date(_) => "date",
            CellValue::Timestamp(_) => "timestamp",
        }
    }
}

/// Text identifying a view's output shape; a changed signature rebuilds the view table.
/// `typed-2` marks the typed layout (typed columns, `_text` companions): tables of earlier
/// versions are rebuilt once.
pub(crate) fn view_signature(view: &View) -> String {
    let cols: Vec<String> =
        view.columns().iter().map(|c| format!("{}:{:?}:{}", c.name, c.ty, c.collection)).collect();
    format!("{}|typed-2|{}", view.resource(), cols.join(","))
}

/// Whether a view column gets a `_text` companion.
fn has_companion(column: &Column) -> bool {
    !column.collection && matches!(column.ty, ColumnType::Date | ColumnType::DateTime)
}

/// The columns of `view`'s table, in order: `_fhir_version`, `_id`, then each view column, each
/// date/dateTime column followed by its `_text` companion.
///
/// Fails if a companion's name is already a column of the view, naming both.
pub(crate) fn table_columns(view: &View) -> Result<Vec<TableColumn>> {
    let mut out = vec![
        TableColumn { name: "_fhir_version".into(), kind: ColumnKind::Text },
        TableColumn { name: "_id".into(), kind: ColumnKind::Text },
    ];
    for c in view.columns() {
        let kind = match (c.collection, c.ty) {
            (true, _) => ColumnKind::Json,
            (_, ColumnType::Integer) => ColumnKind::Integer,
            (_, ColumnType::Decimal) => ColumnKind::Decimal,
            (_, ColumnType::Boolean) => ColumnKind::Boolean,
            (_, ColumnType::Date) => ColumnKind::Date,
            (_, ColumnType::DateTime) => ColumnKind::Timestamp,
            (_, ColumnType::String | ColumnType::Time) => ColumnKind::Text,
        };
        out.push(TableColumn { name: c.name.clone(), kind });
        if has_companion(c) {
            let name = format!("{}{TEXT_SUFFIX}", c.name);
            if view.columns().iter().any(|o| o.name.eq_ignore_ascii_case(&name)) {
                return Err(Error::ViewColumnClash {
                    view: view.name().to_string(),
                    column: c.name.clone(),
                    companion: name,
                });
            }
            out.push(TableColumn { name, kind: ColumnKind::Text });
        }
    }
    Ok(out)
}

/// Parses a landed resource and runs the view over it.
pub(crate) fn flatten(view: &View, id: &str, json: &str) -> Result<Vec<Row>> {
    let value: Value = serde_json::from_str(json)
        .map_err(|source| Error::Json { action: "parsing a landed resource for a view", source })?;
    view.evaluate(&value).map_err(|source| Error::View {
        view: view.name().to_string(),
        resource_type: view.resource().to_string(),
        id: id.to_string(),
        source: Box::new(source),
    })
}

/// The cells of one view row in [`table_columns`] order, for the resource `(fhir_version, id)`.
///
/// Fails if a value does not fit its column's declared type (an integer column that gets text,
/// a decimal column that gets something other than a number, a date column that gets a
/// non-string), naming the view and column.
pub(crate) fn table_row(view: &View, fhir_version: &str, id: &str, row: Row) -> Result<Vec<CellValue>> {
    let mut out = Vec::with_capacity(row.len() + 4);
    out.push(CellValue::Text(fhir_version.to_string()));
    out.push(CellValue::Text(id.to_string()));
    for (column, value) in view.columns().iter().zip(row) {
        let companion = has_companion(column);
        let text = match (&value, companion) {
            (Value::String(s), true) => CellValue::Text(s.clone()),
            _ => CellValue::Null,
        };
        out.push(cell_value(view, column, value)?);
        if companion {
            out.push(text);
        }
    }
    Ok(out)
}

/// Converts one evaluated value to the column's declared type (without its companion).
fn cell_value(view: &View, column: &Column, value: Value) -> Result<CellValue> {
    let mismatch = |v: &Value| Error::ViewValue {
        view: view.name().to_string(),
        column: column.name.clone(),
        expected: format!("{:?}", column.ty),
        found: json_kind(v),
    };
    if value.is_null() {
        return Ok(CellValue::Null);
    }
    if column.collection {
        return Ok(CellValue::Json(value));
    }
    Ok(match column.ty {
        ColumnType::Integer => match &value {
            Value::String(s) => CellValue::Int(s.parse().map_err(|_| mismatch(&value))?),
            Value::Number(n) => CellValue::Int(n.as_i64().ok_or_else(|| mismatch(&value))?),
            _ => return Err(mismatch(&value)),
        },
        ColumnType::Boolean => match &value {
            Value::Bool(b) => CellValue::Bool(*b),
            Value::String(s) if s == "true" => CellValue::Bool(true),
            Value::String(s) if s == "false" => CellValue::Bool(false),
            _ => return Err(mismatch(&value)),
        },
        ColumnType::Decimal => {
            let literal = match &value {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.trim().to_string(),
                _ => return Err(mismatch(&value)),
            };
            // Beyond 38 digits a number is still exact text; only Parquet then keeps it as text.
            match literal.parse::<Decimal>() {
                Ok(_) | Err(ParseDecimalError::TooLong) => CellValue::Decimal(literal),
                Err(ParseDecimalError::Syntax) => return Err(mismatch(&value)),
            }
        }
        ColumnType::Date => match &value {
            Value::String(s) => complete_date(s).map_or(CellValue::Null, CellValue::Date),
            _ => return Err(mismatch(&value)),
        },
        ColumnType::DateTime => match &value {
            Value::String(s) => instant(s).map_or(CellValue::Null, CellValue::Timestamp),
            _ => return Err(mismatch(&value)),
        },
        ColumnType::String | ColumnType::Time => match value {
            Value::String(s) => CellValue::Text(s),
            other => CellValue::Text(other.to_string()),
        },
    })
}

/// A complete FHIR date `YYYY-MM-DD` (a partial or invalid one gives `None`).
pub(crate) fn complete_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    shaped.then(|| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()).flatten()
}

/// A FHIR dateTime/instant with a time and an offset, as UTC (`2019-04-01T10:00:00+02:00`,
/// fractions of a second kept to the nanosecond); a date-only, offset-less or invalid one gives
/// `None`.
pub(crate) fn instant(s: &str) -> Option<DateTime<Utc>> {
    if s.len() < 20 || s.as_bytes()[10] != b'T' {
        return None;
    }
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn view() -> View {
        View::from_json(&json!({"resource": "Observation", "name": "t", "select": [{"column": [
            {"name": "issued", "path": "issued", "type": "instant"},
            {"name": "day", "path": "day", "type": "date"},
            {"name": "value", "path": "value", "type": "decimal"},
            {"name": "n", "path": "n", "type": "integer"},
            {"name": "flag", "path": "flag", "type": "boolean"},
            {"name": "codes", "path": "codes", "collection": true}
        ]}]}))
        .unwrap()
    }

    /// Date and dateTime columns get a `_text` companion right after them; other kinds map
    /// one to one.
    #[test]
    fn columns_with_companions() {
        let names: Vec<(String, ColumnKind)> =
            table_columns(&view()).unwrap().into_iter().map(|c| (c.name, c.kind)).collect();
        let want = [
            ("_fhir_version", ColumnKind::Text),
            ("_id", ColumnKind::Text),
            ("issued", ColumnKind::Timestamp),
            ("issued_text", ColumnKind::Text),
            ("day", ColumnKind::Date),
            ("day_text", ColumnKind::Text),
            ("value", ColumnKind::Decimal),
            ("n", ColumnKind::Integer),
            ("flag", ColumnKind::Boolean),
            ("codes", ColumnKind::Json),
        ];
        assert_eq!(names, want.map(|(n, k)| (n.to_string(), k)));
    }

    /// A view that already has a column named like a companion is refused with both names.
    #[test]
    fn companion_clash_is_refused() {
        let v = View::from_json(&json!({"resource": "Patient", "name": "p", "select": [{"column": [
            {"name": "birth", "path": "birthDate", "type": "date"},
            {"name": "birth_text", "path": "id"}
        ]}]}))
        .unwrap();
        let err = table_columns(&v).unwrap_err().to_string();
        assert!(err.contains("birth") && err.contains("birth_text"), "{err}");
    }

    /// Complete values are typed, partial ones are NULL beside their text, offsets become UTC.
    #[test]
    fn typed_cells() {
        let v = view();
        let row = |issued: &str, day: &str| {
            let json = format!(r#"[{issued:?}, {day:?}, 1.50, 7, true, ["a"]]"#);
            let cells: Vec<Value> = serde_json::from_str(&json).unwrap();
            table_row(&v, "R4", "o1", cells).unwrap()
        };
        let full = row("2019-04-01T10:30:00.5+02:00", "2019-04-01");
        let utc = "2019-04-01T08:30:00.5Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(full[2], CellValue::Timestamp(utc));
        assert_eq!(full[3], CellValue::Text("2019-04-01T10:30:00.5+02:00".into()));
        assert_eq!(full[4], CellValue::Date(NaiveDate::from_ymd_opt(2019, 4, 1).unwrap()));
        assert_eq!(full[6], CellValue::Decimal("1.50".into()));
        assert_eq!(full[7], CellValue::Int(7));
        assert_eq!(full[8], CellValue::Bool(true));
        assert_eq!(full[9], CellValue::Json(json!(["a"])));
        let partial = row("2019-04-01", "2019-04");
        assert_eq!(partial[2], CellValue::Null);
        assert_eq!(partial[3], CellValue::Text("2019-04-01".into()));
        assert_eq!(partial[4], CellValue::Null);
        assert_eq!(partial[5], CellValue::Text("2019-04".into()));
        assert_eq!(row("2019-04-01T10:30:00", "2019-02-30")[2], CellValue::Null, "no offset");
        assert_eq!(row("x", "2019-02-30")[4], CellValue::Null, "no such day");
    }

    /// Every default view has a table layout (no companion name is taken by another column).
    #[test]
    fn default_views_have_layouts() {
        for v in fhirsync_views::default_views() {
            let cols = table_columns(&v).unwrap_or_else(|e| panic!("{}: {e}", v.name()));
            let companions = v.columns().iter().filter(|c| has_companion(c)).count();
            assert_eq!(cols.len(), 2 + v.columns().len() + companions, "{}", v.name());
        }
    }

    /// A decimal column refuses text that is not a number; a date column refuses a number.
    #[test]
    fn mismatches_are_errors() {
        let v = view();
        let cells =
            |value: Value, day: Value| vec![Value::Null, day, value, Value::Null, Value::Null, Value::Null];
        assert!(table_row(&v, "R4", "o1", cells(json!("abc"), Value::Null)).is_err());
        assert!(table_row(&v, "R4", "o1", cells(json!("2.5"), Value::Null)).is_ok());
        assert!(table_row(&v, "R4", "o1", cells(Value::Null, json!(2019))).is_err());
    }
}
