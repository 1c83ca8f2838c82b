//! Values of SQL statements, always bound as parameters: a statement's text holds only SQL and
//! quoted identifiers ([`super::schema::quote_ident`]), never a value.
//!
//! [`Params`] collects one statement's values and hands out their placeholders in the
//! dialect's form (`?1` for SQLite, `$1` for PostgreSQL). Placeholders are numbered, so a
//! value bound once may appear several times, and a fragment built with some values (a
//! condition shared by several statements) stays valid in every statement that starts from a
//! clone of those [`Params`]. DDL takes no parameters in either database; the one value DDL
//! carries, a run id as a column default, is checked by [`run_id_default`].

use super::schema::Dialect;
use crate::{Error, Result};

/// One bound value: a statement parameter, or a cell of [`super::SqlBackend::insert_rows`].
/// Typed view cells arrive here as text in the form each backend's column type takes (see
/// `views.rs`): PostgreSQL coerces the literal to the column's `numeric`, `date` or
/// `timestamptz`; SQLite keeps it as text. PostgreSQL parameters are typed by their variant
/// (`text`, `bigint`, `boolean`; NULL as `text`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SqlValue {
    /// NULL.
    Null,
    /// Text.
    Text(String),
    /// Integer.
    Int(i64),
    /// Boolean (SQLite: 0/1).
    Bool(bool),
}

impl From<&str> for SqlValue {
    fn from(value: &str) -> Self {
        SqlValue::Text(value.to_string())
    }
}

impl From<&String> for SqlValue {
    fn from(value: &String) -> Self {
        SqlValue::Text(value.clone())
    }
}

impl From<String> for SqlValue {
    fn from(value: String) -> Self {
        SqlValue::Text(value)
    }
}

impl From<Option<&str>> for SqlValue {
    fn from(value: Option<&str>) -> Self {
        value.map_or(SqlValue::Null, SqlValue::from)
    }
}

impl From<i64> for SqlValue {
    fn from(value: i64) -> Self {
        SqlValue::Int(value)
    }
}

/// A count (never above `i64::MAX` in practice; larger ones are stored as `i64::MAX`).
impl From<u64> for SqlValue {
    fn from(value: u64) -> Self {
        SqlValue::Int(i64::try_from(value).unwrap_or(i64::MAX))
    }
}

impl From<bool> for SqlValue {
    fn from(value: bool) -> Self {
        SqlValue::Bool(value)
    }
}

/// The values of one statement, in placeholder order.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    /// PostgreSQL placeholders (`$n`) instead of SQLite's (`?n`).
    postgres: bool,
    values: Vec<SqlValue>,
}

impl Params {
    /// No values yet, placeholders in `d`'s form.
    pub(crate) fn new(d: &Dialect) -> Self {
        Params { postgres: matches!(d, Dialect::Postgres { .. }), values: Vec::new() }
    }

    /// Binds `value`; returns its placeholder.
    pub(crate) fn bind(&mut self, value: impl Into<SqlValue>) -> String {
        self.values.push(value.into());
        let n = self.values.len();
        match self.postgres {
            true => format!("${n}"),
            false => format!("?{n}"),
        }
    }

    /// Binds an RFC 3339 time (or NULL) for a timestamp column: SQLite stores the text,
    /// PostgreSQL casts it to `timestamptz`.
    pub(crate) fn bind_time(&mut self, rfc3339: Option<&str>) -> String {
        let placeholder = self.bind(rfc3339);
        match self.postgres {
            true => format!("CAST({placeholder}::text AS timestamptz)"),
            false => placeholder,
        }
    }

    /// Binds JSON text for a JSON column (PostgreSQL casts it to `json`).
    pub(crate) fn bind_json(&mut self, json: String) -> String {
        let placeholder = self.bind(json);
        match self.postgres {
            true => format!("CAST({placeholder} AS json)"),
            false => placeholder,
        }
    }

    /// Binds each of `values`; returns their placeholders, comma-separated (for `IN (...)`).
    pub(crate) fn bind_list<V: Into<SqlValue>>(&mut self, values: impl IntoIterator<Item = V>) -> String {
        values.into_iter().map(|v| self.bind(v)).collect::<Vec<_>>().join(", ")
    }

    /// The values bound so far.
    pub(crate) fn values(&self) -> &[SqlValue] {
        &self.values
    }
}

/// A run id as a column default in DDL (which takes no parameters): the id quoted, after
/// checking that it holds only ASCII letters, digits and `-` (the text of the UUID fhirsync
/// generates), so it can never end the literal. Anything else is
/// [`Error::InvalidRunId`].
pub(crate) fn run_id_default(run_id: &str) -> Result<String> {
    let ok = !run_id.is_empty() && run_id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    match ok {
        true => Ok(format!("'{run_id}'")),
        false => Err(Error::InvalidRunId { run_id: run_id.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Placeholders are numbered per statement in the dialect's form; times and JSON get the
    /// PostgreSQL cast their column needs.
    #[test]
    fn placeholders_per_dialect() {
        let mut sqlite = Params::new(&Dialect::Sqlite);
        assert_eq!(
            (sqlite.bind("a"), sqlite.bind_time(Some("2026-01-01T00:00:00Z")), sqlite.bind_list([1i64, 2])),
            ("?1".to_string(), "?2".to_string(), "?3, ?4".to_string())
        );
        assert_eq!(sqlite.values()[0], SqlValue::Text("a".into()));
        let mut pg = Params::new(&Dialect::Postgres { schema: "s".into() });
        assert_eq!(pg.bind(3u64), "$1");
        assert_eq!(pg.bind_time(None), "CAST($2::text AS timestamptz)");
        assert_eq!(pg.bind_json("{}".into()), "CAST($3 AS json)");
        assert_eq!(pg.values(), &[SqlValue::Int(3), SqlValue::Null, SqlValue::Text("{}".into())]);
    }

    /// A run id is written into DDL only when it cannot end its literal.
    #[test]
    fn run_id_default_refuses_quotes() {
        assert_eq!(
            run_id_default("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").unwrap(),
            "'0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b'"
        );
        for bad in ["", "x'; DROP TABLE t; --", "a b"] {
            assert!(matches!(run_id_default(bad), Err(Error::InvalidRunId { .. })), "{bad}");
        }
    }
}
