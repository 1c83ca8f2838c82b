//! SQL-on-FHIR v2 ViewDefinition runner.
//!
//! API contract used by the landing layer (keep these signatures stable):
//! [`View::from_json`], [`View::name`], [`View::resource`], [`View::columns`], [`View::evaluate`],
//! [`default_views`], [`load_dir`].

use serde_json::Value;

/// Errors of the view runner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ViewDefinition is invalid.
    #[error("invalid ViewDefinition: {0}")]
    Invalid(String),
}

/// `Result` with the views [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Declared type of a column (from `column.type`, FHIR primitive type names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// string, code, id, uri, url, canonical, markdown, oid, uuid, base64Binary, or undeclared.
    String,
    /// integer, positiveInt, unsignedInt, integer64.
    Integer,
    /// decimal (kept as text in destinations that cannot hold it exactly).
    Decimal,
    /// boolean.
    Boolean,
    /// date (partial dates allowed).
    Date,
    /// dateTime / instant.
    DateTime,
    /// time.
    Time,
}

/// One output column.
#[derive(Debug, Clone)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Declared type.
    pub ty: ColumnType,
    /// `collection: true`: the cell holds a JSON array.
    pub collection: bool,
}

/// A parsed, validated ViewDefinition.
#[derive(Debug, Clone)]
pub struct View {
    name: String,
    resource: String,
    columns: Vec<Column>,
}

/// One output row: one value per column, in [`View::columns`] order (`Value::Null` for empty).
pub type Row = Vec<Value>;

impl View {
    /// Parses and validates a ViewDefinition.
    pub fn from_json(_view: &Value) -> Result<View> {
        Err(Error::Invalid("not implemented yet".into()))
    }
    /// `name` of the view (used as table name).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// `resource` the view applies to.
    pub fn resource(&self) -> &str {
        &self.resource
    }
    /// Output columns, in order.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }
    /// Rows this view yields for one resource (zero or more).
    pub fn evaluate(&self, _resource: &Value) -> Result<Vec<Row>> {
        Ok(Vec::new())
    }
}

/// The views shipped for the common Epic resources.
pub fn default_views() -> Vec<View> {
    Vec::new()
}

/// Loads every `*.json` ViewDefinition in a folder.
pub fn load_dir(_dir: &std::path::Path) -> Result<Vec<View>> {
    Ok(Vec::new())
}
