//! ViewDefinition JSON → validated, compiled select tree.
//!
//! Validation follows SQL-on-FHIR v2: `resource` and `select` are required; every column needs a
//! database-friendly `name` and a FHIRPath `path`; column names are unique across the view;
//! `unionAll` branches declare the same column names in the same order; a select has at most one
//! of `forEach` / `forEachOrNull` / `repeat`; constants have a name and exactly one `value[x]`;
//! every FHIRPath expression must parse and may only use defined constants.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::fhirpath::{Constant, Expr, static_type};
use crate::{Column, ColumnType};

/// How a select iterates its focus.
#[derive(Debug, Clone)]
pub(crate) enum Iteration {
    /// Once, on the parent's focus.
    Once,
    /// Once per item of the expression.
    ForEach(Expr),
    /// Like `ForEach`, but one row of nulls when the expression is empty.
    ForEachOrNull(Expr),
    /// Once per node reached by repeatedly following the expressions (depth first).
    Repeat(Vec<Expr>),
}

/// A compiled column.
#[derive(Debug, Clone)]
pub(crate) struct ColumnNode {
    pub name: String,
    pub expr: Expr,
    pub collection: bool,
}

/// A compiled `select` element. Its output cells are laid out as: own columns, then each nested
/// select in order, then the `unionAll` branch columns (shared by all branches).
#[derive(Debug, Clone)]
pub(crate) struct SelectNode {
    pub iteration: Iteration,
    pub columns: Vec<ColumnNode>,
    pub selects: Vec<SelectNode>,
    pub union: Vec<SelectNode>,
    /// Number of cells this select contributes to a row.
    pub width: usize,
}

/// A fully compiled view (everything but the public accessors).
#[derive(Debug, Clone)]
pub(crate) struct Compiled {
    pub name: String,
    pub resource: String,
    pub columns: Vec<Column>,
    pub constants: Vec<Constant>,
    pub wheres: Vec<Expr>,
    pub root: SelectNode,
}

/// Compiles a ViewDefinition.
pub(crate) fn compile(view: &Value) -> Result<Compiled> {
    let obj = view.as_object().ok_or_else(|| wrong("ViewDefinition", "the view", "a JSON object"))?;
    let resource = req_str(obj, "resource", "the view")?.to_string();
    let (constants, names) = constants(obj)?;
    let name = match obj.get("name") {
        None => resource.to_ascii_lowercase(),
        Some(Value::String(s)) if valid_name(s) => s.clone(),
        Some(_) => return Err(wrong("name", "the view", "a letter followed by letters, digits or `_`")),
    };
    let selects = obj.get("select").ok_or(Error::MissingField { field: "select", at: "the view".into() })?;
    let selects = selects
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| wrong("select", "the view", "a non-empty array"))?;
    let mut columns = Vec::new();
    let mut children = Vec::new();
    for (i, s) in selects.iter().enumerate() {
        children.push(select(s, &format!("select[{i}]"), &names, &mut columns)?);
    }
    let mut wheres = Vec::new();
    if let Some(w) = obj.get("where") {
        let list = w.as_array().ok_or_else(|| wrong("where", "the view", "an array"))?;
        for (i, item) in list.iter().enumerate() {
            let at = format!("where[{i}]");
            let o = item.as_object().ok_or_else(|| wrong("where", &at, "an object with `path`"))?;
            wheres.push(Expr::compile(req_str(o, "path", &at)?, &names)?);
        }
    }
    check_unique(&columns)?;
    let width = columns.len();
    let root = SelectNode {
        iteration: Iteration::Once,
        columns: Vec::new(),
        selects: children,
        union: Vec::new(),
        width,
    };
    Ok(Compiled { name, resource, columns, constants, wheres, root })
}

fn wrong(field: &'static str, at: &str, expected: &'static str) -> Error {
    Error::WrongType { field, at: at.to_string(), expected }
}

fn req_str<'v>(obj: &'v Map<String, Value>, field: &'static str, at: &str) -> Result<&'v str> {
    match obj.get(field) {
        None => Err(Error::MissingField { field, at: at.to_string() }),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(wrong(field, at, "a string")),
    }
}

fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `constant`: returns the values and their names (index-aligned).
fn constants(obj: &Map<String, Value>) -> Result<(Vec<Constant>, Vec<String>)> {
    let Some(list) = obj.get("constant") else { return Ok((Vec::new(), Vec::new())) };
    let list = list.as_array().ok_or_else(|| wrong("constant", "the view", "an array"))?;
    let mut values = Vec::new();
    let mut names = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let at = format!("constant[{i}]");
        let c = c.as_object().ok_or_else(|| wrong("constant", &at, "an object"))?;
        let name = req_str(c, "name", &at)?;
        if !valid_name(name) {
            return Err(Error::InvalidConstant {
                at,
                problem: "`name` must be a letter followed by letters, digits or `_`",
            });
        }
        let mut value = None;
        for (key, v) in c {
            let Some(suffix) = key.strip_prefix("value") else { continue };
            let mut chars = suffix.chars();
            let ty = chars.next().map(|f| format!("{}{}", f.to_ascii_lowercase(), chars.as_str()));
            let ty = ty.as_deref().and_then(static_type).ok_or(Error::InvalidConstant {
                at: at.clone(),
                problem: "`value[x]` must name a FHIR primitive type, e.g. valueString or valueInteger",
            })?;
            if value.replace(Constant { value: v.clone(), ty }).is_some() {
                return Err(Error::InvalidConstant {
                    at,
                    problem: "has more than one `value[x]`; keep exactly one",
                });
            }
        }
        let value = value.ok_or(Error::InvalidConstant {
            at: at.clone(),
            problem: "has no `value[x]`; add one such as `\"valueString\": \"official\"`",
        })?;
        if names.iter().any(|n| n == name) {
            return Err(Error::InvalidConstant { at, problem: "reuses the name of an earlier constant" });
        }
        names.push(name.to_string());
        values.push(value);
    }
    Ok((values, names))
}

/// Compiles one select, appending its output columns (in row layout order) to `out`.
fn select(json: &Value, at: &str, names: &[String], out: &mut Vec<Column>) -> Result<SelectNode> {
    let obj = json.as_object().ok_or_else(|| wrong("select", at, "an object"))?;
    check_keys(obj, SELECT_KEYS, at)?;
    if !["column", "select", "unionAll"].iter().any(|k| obj.contains_key(*k)) {
        return Err(Error::EmptySelect { at: at.to_string() });
    }
    let start = out.len();
    let iteration = iteration(obj, at, names)?;
    let columns = match obj.get("column") {
        Some(cols) => columns(cols, at, names, out)?,
        None => Vec::new(),
    };
    let mut selects = Vec::new();
    if let Some(list) = obj.get("select") {
        let list = list.as_array().ok_or_else(|| wrong("select", at, "an array"))?;
        for (i, s) in list.iter().enumerate() {
            selects.push(select(s, &format!("{at}.select[{i}]"), names, out)?);
        }
    }
    let union = match obj.get("unionAll") {
        Some(list) => union_all(list, at, names, out)?,
        None => Vec::new(),
    };
    Ok(SelectNode { iteration, columns, selects, union, width: out.len() - start })
}

/// How a select iterates: once, `forEach`, `forEachOrNull` or `repeat` (at most one of them).
fn iteration(obj: &Map<String, Value>, at: &str, names: &[String]) -> Result<Iteration> {
    let expr_field = |field: &'static str| -> Result<Option<Expr>> {
        match obj.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Expr::compile(s, names).map(Some),
            Some(_) => Err(wrong(field, at, "a FHIRPath string")),
        }
    };
    let for_each = expr_field("forEach")?;
    let for_each_or_null = expr_field("forEachOrNull")?;
    let repeat = match obj.get("repeat") {
        None => None,
        Some(Value::Array(paths)) if !paths.is_empty() => Some(
            paths
                .iter()
                .map(|p| p.as_str().ok_or_else(|| wrong("repeat", at, "an array of FHIRPath strings")))
                .map(|p| p.and_then(|p| Expr::compile(p, names)))
                .collect::<Result<Vec<_>>>()?,
        ),
        Some(_) => return Err(wrong("repeat", at, "a non-empty array of FHIRPath strings")),
    };
    match (for_each, for_each_or_null, repeat) {
        (None, None, None) => Ok(Iteration::Once),
        (Some(e), None, None) => Ok(Iteration::ForEach(e)),
        (None, Some(e), None) => Ok(Iteration::ForEachOrNull(e)),
        (None, None, Some(r)) => Ok(Iteration::Repeat(r)),
        _ => Err(wrong("forEach", at, "alone: use only one of forEach, forEachOrNull and repeat")),
    }
}

/// Compiles a select's `column` array, appending the output columns to `out`.
fn columns(cols: &Value, at: &str, names: &[String], out: &mut Vec<Column>) -> Result<Vec<ColumnNode>> {
    let cols = cols.as_array().ok_or_else(|| wrong("column", at, "an array"))?;
    let mut nodes = Vec::new();
    for (i, c) in cols.iter().enumerate() {
        let (column, node) = column(c, &format!("{at}.column[{i}]"), names)?;
        out.push(column);
        nodes.push(node);
    }
    Ok(nodes)
}

/// Compiles one column at `cat`: its output description and its expression.
fn column(c: &Value, cat: &str, names: &[String]) -> Result<(Column, ColumnNode)> {
    let c = c.as_object().ok_or_else(|| wrong("column", cat, "an object"))?;
    check_keys(c, COLUMN_KEYS, cat)?;
    let name = req_str(c, "name", cat)?;
    if !valid_name(name) {
        return Err(Error::InvalidColumnName { name: name.to_string(), at: cat.to_string() });
    }
    let expr = Expr::compile(req_str(c, "path", cat)?, names)?;
    let collection = match c.get("collection") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(wrong("collection", cat, "true or false")),
    };
    let ty = match c.get("type") {
        None => ColumnType::String,
        Some(Value::String(t)) => column_type(t),
        Some(_) => return Err(wrong("type", cat, "a FHIR type name string")),
    };
    Ok((
        Column { name: name.to_string(), ty, collection },
        ColumnNode { name: name.to_string(), expr, collection },
    ))
}

/// Compiles a `unionAll` array; every branch must have the same column names, which are
/// appended to `out` once.
fn union_all(list: &Value, at: &str, names: &[String], out: &mut Vec<Column>) -> Result<Vec<SelectNode>> {
    let list = list
        .as_array()
        .filter(|l| !l.is_empty())
        .ok_or_else(|| wrong("unionAll", at, "a non-empty array"))?;
    let mut union = Vec::new();
    let mut first: Option<Vec<Column>> = None;
    for (i, s) in list.iter().enumerate() {
        let mut branch_cols = Vec::new();
        union.push(select(s, &format!("{at}.unionAll[{i}]"), names, &mut branch_cols)?);
        match &first {
            None => first = Some(branch_cols),
            Some(f) => {
                let same =
                    f.len() == branch_cols.len() && f.iter().zip(&branch_cols).all(|(a, b)| a.name == b.name);
                if !same {
                    let list =
                        |cs: &[Column]| cs.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
                    return Err(Error::UnionMismatch {
                        at: at.to_string(),
                        first: list(f),
                        other: list(&branch_cols),
                    });
                }
            }
        }
    }
    out.extend(first.unwrap_or_default());
    Ok(union)
}

/// Elements of a `select`.
const SELECT_KEYS: &str = "column, select, forEach, forEachOrNull, repeat, unionAll, id, extension";
/// Elements of a `column`.
const COLUMN_KEYS: &str = "name, path, type, collection, description, tag, id, extension";

/// Rejects keys of `obj` not listed in `allowed` (comma-separated).
fn check_keys(obj: &Map<String, Value>, allowed: &'static str, at: &str) -> Result<()> {
    match obj.keys().find(|k| !allowed.split(", ").any(|a| a == k.as_str())) {
        Some(k) => Err(Error::UnknownElement { element: k.clone(), at: at.to_string(), allowed }),
        None => Ok(()),
    }
}

fn check_unique(columns: &[Column]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for c in columns {
        if !seen.insert(c.name.as_str()) {
            return Err(Error::DuplicateColumn { name: c.name.clone() });
        }
    }
    Ok(())
}

/// Maps a FHIR type name to the column type destinations use.
fn column_type(t: &str) -> ColumnType {
    match t {
        "integer" | "positiveInt" | "unsignedInt" | "integer64" => ColumnType::Integer,
        "decimal" => ColumnType::Decimal,
        "boolean" => ColumnType::Boolean,
        "date" => ColumnType::Date,
        "dateTime" | "instant" => ColumnType::DateTime,
        "time" => ColumnType::Time,
        _ => ColumnType::String,
    }
}
