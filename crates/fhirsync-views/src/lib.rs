//! SQL-on-FHIR v2 ViewDefinition runner.
//!
//! A [`View`] is compiled once from its JSON ([`View::from_json`]): the definition is validated
//! and every FHIRPath expression is parsed into a syntax tree. [`View::evaluate`] then flattens
//! one resource (a parsed `serde_json::Value`) into zero or more [`Row`]s without copying the
//! resource. The FHIRPath subset lives in [`fhirpath`] (hand-written tokenizer + Pratt parser).
//!
//! API contract used by the landing layer (keep these signatures stable):
//! [`View::from_json`], [`View::name`], [`View::resource`], [`View::columns`], [`View::evaluate`],
//! [`default_views`] (and [`default_views_with`] for site settings), [`load_dir`].
//!
//! ```
//! # use serde_json::json;
//! let view = fhirsync_views::View::from_json(&json!({
//!     "resource": "Patient", "name": "patient_names",
//!     "select": [{"column": [{"name": "id", "path": "getResourceKey()"}]},
//!                {"forEach": "name", "column": [{"name": "family", "path": "family"}]}]
//! }))?;
//! let rows = view.evaluate(&json!({"resourceType": "Patient", "id": "p1",
//!     "name": [{"family": "Ng"}, {"family": "Ode"}]}))?;
//! assert_eq!(rows, vec![vec![json!("p1"), json!("Ng")], vec![json!("p1"), json!("Ode")]]);
//! # Ok::<(), fhirsync_views::Error>(())
//! ```

pub mod decimal;
mod defaults;
mod error;
pub mod fhirpath;
mod view;

use std::path::Path;

use serde_json::Value;

pub use decimal::{Decimal, ParseDecimalError};
pub use defaults::{DefaultViewSettings, MRN_SYSTEM_CONSTANT, default_views, default_views_with};
pub use error::{Error, Result};

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

/// A parsed, validated ViewDefinition with its FHIRPath expressions compiled.
#[derive(Debug, Clone)]
pub struct View {
    inner: view::model::Compiled,
}

/// One output row: one value per column, in [`View::columns`] order (`Value::Null` for empty).
pub type Row = Vec<Value>;

impl View {
    /// Parses and validates a ViewDefinition and compiles its expressions.
    ///
    /// Fails if: `resource` or `select` is missing; an element has the wrong JSON type; a column
    /// name is not an identifier or is used twice; `unionAll` branches differ in columns; a
    /// constant lacks a name or a single `value[x]`; an expression has a syntax error, calls an
    /// unsupported function or uses an undefined `%constant`.
    pub fn from_json(view: &Value) -> Result<View> {
        Ok(View { inner: view::model::compile(view)? })
    }

    /// `name` of the view (used as table name); defaults to the lower-cased resource type.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// `resource` the view applies to.
    pub fn resource(&self) -> &str {
        &self.inner.resource
    }

    /// Output columns, in order.
    pub fn columns(&self) -> &[Column] {
        &self.inner.columns
    }

    /// Rows this view yields for one resource (zero or more). A resource of another type than
    /// [`View::resource`] yields no rows.
    ///
    /// Fails if: a non-`collection` column yields several values, a `where` path yields a
    /// non-boolean, or an operator gets operands the FHIRPath spec rejects.
    pub fn evaluate(&self, resource: &Value) -> Result<Vec<Row>> {
        if resource.get("resourceType").and_then(Value::as_str) != Some(self.inner.resource.as_str()) {
            return Ok(Vec::new());
        }
        view::run::rows(&self.inner, resource)
    }
}

/// Loads every `*.json` ViewDefinition in a folder (sorted by file name; subfolders ignored).
///
/// Fails if the folder cannot be read, or any file is not JSON or not a valid view (the error
/// names the file).
pub fn load_dir(dir: &Path) -> Result<Vec<View>> {
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "json") {
            files.push(path);
        }
    }
    files.sort();
    files.iter().map(|p| load_file(p)).collect()
}

/// Loads one ViewDefinition file.
pub fn load_file(path: &Path) -> Result<View> {
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let json: Value =
        serde_json::from_str(&text).map_err(|source| Error::Json { path: path.to_path_buf(), source })?;
    View::from_json(&json).map_err(|e| Error::InFile { path: path.to_path_buf(), source: Box::new(e) })
}
