//! Row generation: the SQL-on-FHIR v2 "process select" algorithm.
//!
//! For a select and a focus node: pick the iteration items (`forEach`, `forEachOrNull`,
//! `repeat`, or the focus itself); for each item build the cartesian product of
//! (own column cells) × (rows of each nested select) × (concatenated rows of the `unionAll`
//! branches). `%rowIndex` is the 0-based position within the nearest enclosing iteration.

use serde_json::Value;

use super::model::{Compiled, Iteration, SelectNode};
use crate::Row;
use crate::error::{Error, Result};
use crate::fhirpath::{Env, Item};

/// Rows of `view` for `resource` (which must already match the view's resource type).
pub(crate) fn rows(view: &Compiled, resource: &Value) -> Result<Vec<Row>> {
    let env = Env::new(resource, &view.constants);
    let root = [Item::Json(resource, None)];
    for w in &view.wheres {
        let out = w.eval(&root, &env)?;
        match out.as_slice() {
            [] => return Ok(Vec::new()),
            [one] => match one.as_bool() {
                Some(true) => {}
                Some(false) => return Ok(Vec::new()),
                None => {
                    return Err(Error::WhereNotBoolean {
                        expression: w.text().to_string(),
                        found: one.kind().to_string(),
                    });
                }
            },
            many => {
                return Err(Error::WhereNotBoolean {
                    expression: w.text().to_string(),
                    found: format!("{} values", many.len()),
                });
            }
        }
    }
    select_rows(&view.root, &root, &env)
}

/// Rows (each `sel.width` cells) of `sel` on `focus` (zero or one item).
fn select_rows<'a>(sel: &'a SelectNode, focus: &[Item<'a>], env: &Env<'a>) -> Result<Vec<Row>> {
    match &sel.iteration {
        Iteration::Once => product(sel, focus, env),
        Iteration::ForEach(e) => {
            let items = e.eval(focus, env)?;
            iterate(sel, &items, env)
        }
        Iteration::ForEachOrNull(e) => {
            let items = e.eval(focus, env)?;
            if !items.is_empty() {
                return iterate(sel, &items, env);
            }
            let rows = product(sel, &[], &with_index(env, 0))?;
            Ok(if rows.is_empty() { vec![vec![Value::Null; sel.width]] } else { rows })
        }
        Iteration::Repeat(paths) => {
            let mut items = Vec::new();
            for f in focus {
                descend(f, paths, env, &mut items)?;
            }
            iterate(sel, &items, env)
        }
    }
}

fn with_index<'a>(env: &Env<'a>, row_index: usize) -> Env<'a> {
    env.with_row_index(row_index)
}

fn iterate<'a>(sel: &'a SelectNode, items: &[Item<'a>], env: &Env<'a>) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (i, item) in items.iter().enumerate() {
        rows.extend(product(sel, std::slice::from_ref(item), &with_index(env, i))?);
    }
    Ok(rows)
}

/// Depth-first, pre-order walk for `repeat`: each child is emitted, then its own children.
fn descend<'a>(
    node: &Item<'a>,
    paths: &'a [crate::fhirpath::Expr],
    env: &Env<'a>,
    out: &mut Vec<Item<'a>>,
) -> Result<()> {
    for p in paths {
        for child in p.eval(std::slice::from_ref(node), env)? {
            out.push(child.clone());
            descend(&child, paths, env, out)?;
        }
    }
    Ok(())
}

/// Column cells × nested selects × unionAll for one focus item.
fn product<'a>(sel: &'a SelectNode, focus: &[Item<'a>], env: &Env<'a>) -> Result<Vec<Row>> {
    let mut cells = Vec::with_capacity(sel.width);
    let mut items = Vec::new();
    for col in &sel.columns {
        items.clear();
        col.expr.eval_into(focus, env, &mut items)?;
        let cell = if col.collection {
            Value::Array(items.iter().map(Item::to_json).collect())
        } else {
            match items.as_slice() {
                [] => Value::Null,
                [one] => one.to_json(),
                many => return Err(Error::NotSingleton { column: col.name.clone(), count: many.len() }),
            }
        };
        cells.push(cell);
    }
    let mut rows = vec![cells];
    for child in &sel.selects {
        let part = select_rows(child, focus, env)?;
        rows = cross(rows, part);
        if rows.is_empty() {
            return Ok(rows);
        }
    }
    if !sel.union.is_empty() {
        let mut part = Vec::new();
        for branch in &sel.union {
            part.extend(select_rows(branch, focus, env)?);
        }
        rows = cross(rows, part);
    }
    Ok(rows)
}

/// Every row of `left` extended by every row of `right`.
fn cross(mut left: Vec<Row>, mut right: Vec<Row>) -> Vec<Row> {
    if right.len() == 1 {
        let tail = right.pop().unwrap_or_default();
        if left.len() == 1 {
            left[0].extend(tail);
        } else {
            for row in &mut left {
                row.extend(tail.iter().cloned());
            }
        }
        return left;
    }
    let mut out = Vec::with_capacity(left.len() * right.len());
    for l in &left {
        for r in &right {
            let mut row = Vec::with_capacity(l.len() + r.len());
            row.extend(l.iter().cloned());
            row.extend(r.iter().cloned());
            out.push(row);
        }
    }
    out
}
