//! The one error type of the views crate. The FHIRPath variants keep the engine's own error
//! ([`SyntaxError`], [`FunctionError`], [`EvalError`]) as their `source` and quote it, so a
//! caller that prints the source chain once per distinct text shows it once.

use std::path::PathBuf;

use crate::fhirpath::{EvalError, FunctionError, SyntaxError};

/// Errors of the view runner: invalid ViewDefinitions, FHIRPath syntax errors, and evaluation
/// failures the specification requires to be reported (non-singleton columns, non-boolean `where`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A required ViewDefinition element is missing.
    #[error(
        "invalid ViewDefinition: `{field}` is missing at {at}; add it (see the SQL-on-FHIR v2 ViewDefinition)"
    )]
    MissingField {
        /// The missing element.
        field: &'static str,
        /// Where in the view (e.g. `select[0].column[1]`).
        at: String,
    },
    /// An element has the wrong JSON type.
    #[error("invalid ViewDefinition: `{field}` at {at} must be {expected}")]
    WrongType {
        /// The element.
        field: &'static str,
        /// Where in the view.
        at: String,
        /// What it must be.
        expected: &'static str,
    },
    /// An element a `select` or `column` does not have (usually a typo).
    #[error("invalid ViewDefinition: unknown element `{element}` at {at}; allowed: {allowed}")]
    UnknownElement {
        /// The unknown key.
        element: String,
        /// Where in the view.
        at: String,
        /// The keys allowed there.
        allowed: &'static str,
    },
    /// A select that outputs nothing (no `column`, `select` or `unionAll`).
    #[error(
        "invalid ViewDefinition: select at {at} has no `column`, `select` or `unionAll`; it would output nothing"
    )]
    EmptySelect {
        /// Where in the view.
        at: String,
    },
    /// A column name that is not a database-friendly identifier.
    #[error(
        "invalid ViewDefinition: column name `{name}` at {at} must start with a letter and contain only letters, digits and `_`"
    )]
    InvalidColumnName {
        /// The offending name.
        name: String,
        /// Where in the view.
        at: String,
    },
    /// Two columns with the same name.
    #[error(
        "invalid ViewDefinition: column `{name}` is defined twice; column names must be unique in a view"
    )]
    DuplicateColumn {
        /// The duplicated name.
        name: String,
    },
    /// `unionAll` branches whose columns differ in name or order.
    #[error(
        "invalid ViewDefinition: unionAll branches at {at} must have the same columns in the same order, got [{first}] and [{other}]"
    )]
    UnionMismatch {
        /// Where in the view.
        at: String,
        /// Columns of the first branch.
        first: String,
        /// Columns of the mismatching branch.
        other: String,
    },
    /// A constant without a name or without exactly one `value[x]`.
    #[error("invalid ViewDefinition: constant at {at}: {problem}")]
    InvalidConstant {
        /// Where in the view.
        at: String,
        /// What is wrong and how to fix it.
        problem: &'static str,
    },
    /// An expression refers to a `%constant` the view does not define.
    #[error(
        "FHIRPath `{expression}` uses `%{name}` at character {position}, which is not defined; add it to the view's `constant` list"
    )]
    UndefinedConstant {
        /// The referenced name.
        name: String,
        /// The expression.
        expression: String,
        /// 0-based character offset of the `%`.
        position: usize,
    },
    /// FHIRPath syntax error.
    #[error("FHIRPath syntax error in `{expression}` at character {position}: {source}")]
    Syntax {
        /// The expression.
        expression: String,
        /// 0-based character offset.
        position: usize,
        /// What is wrong there.
        source: SyntaxError,
    },
    /// A FHIRPath function that is not supported or has the wrong number of arguments.
    #[error("FHIRPath `{expression}` at character {position}: {source}")]
    Function {
        /// The expression.
        expression: String,
        /// 0-based character offset of the function's name.
        position: usize,
        /// The problem, naming the function.
        source: FunctionError,
    },
    /// A FHIRPath expression failed while evaluating (type mismatch the spec makes an error).
    #[error("FHIRPath `{expression}` failed: {source}")]
    Evaluation {
        /// The expression.
        expression: String,
        /// What went wrong.
        source: EvalError,
    },
    /// A column without `collection: true` produced more than one value.
    #[error(
        "column `{column}` produced {count} values for one row; set `\"collection\": true` or narrow the path (e.g. `.first()`)"
    )]
    NotSingleton {
        /// Column name.
        column: String,
        /// How many values it produced.
        count: usize,
    },
    /// A `where` path that returned something other than a boolean.
    #[error("`where` path `{expression}` must return a boolean (or nothing), not {found}")]
    WhereNotBoolean {
        /// The expression.
        expression: String,
        /// What it returned.
        found: String,
    },
    /// A view file could not be read.
    #[error("cannot read view file {path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A view file is not valid JSON.
    #[error("view file {path} is not valid JSON: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A setting of the shipped views that cannot be used (e.g. `[views] mrn_identifier`).
    #[error("views.{setting} = `{value}`: {problem}")]
    InvalidSetting {
        /// The setting's name.
        setting: &'static str,
        /// The value given.
        value: String,
        /// What is wrong and how to fix it.
        problem: &'static str,
    },
    /// A view file whose ViewDefinition is invalid.
    #[error("view file {path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// The validation error.
        source: Box<Error>,
    },
}

/// `Result` with the views [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
