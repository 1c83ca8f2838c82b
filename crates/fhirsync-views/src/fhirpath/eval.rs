//! Tree-walking evaluator over borrowed JSON. Collections are `Vec<Item>`; JSON arrays flatten on
//! navigation, `null`s vanish, and a missing `name` falls back to a choice element `name[Type]`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::ast::{BinOp, Call, Lit, Node, Step};
use super::error::EvalError;
use super::functions::call_fn;
use super::value::{Item, Num, compare, items_equal, items_equivalent, suffix_type};

/// Evaluation failure (wrapped with the expression text by the caller). Boxed: the error is
/// rare and the `Result` of every step stays as small as the collection it carries.
pub(crate) type EvalResult<T> = std::result::Result<T, Box<EvalError>>;

/// A view constant: its value and FHIR type (from the `value[x]` suffix).
#[derive(Debug, Clone)]
pub(crate) struct Constant {
    pub value: Value,
    pub ty: &'static str,
}

/// What an expression can see besides its focus.
pub(crate) struct Env<'a> {
    /// The resource being flattened (`%resource`, `getResourceKey()` fallback).
    pub resource: &'a Value,
    /// The view's constants, by index.
    pub constants: &'a [Constant],
    /// `%rowIndex` of the current `forEach`/`repeat` iteration.
    pub row_index: usize,
    /// Members whose key starts with a name, per (object, name): columns such as
    /// `value.ofType(Quantity).unit` and `value.ofType(string)` share one scan for `value[x]`.
    prefix_memo: RefCell<Vec<PrefixScan<'a>>>,
}

/// The members of one object whose keys start with `name`, as (rest of the key, value).
struct PrefixScan<'a> {
    obj: *const Map<String, Value>,
    name: &'a str,
    hits: Hits<'a>,
}

/// Result of a prefix scan: usually zero or one member, so no allocation.
#[derive(Debug, Clone, Copy)]
enum Hits<'a> {
    Zero,
    One(&'a str, &'a Value),
    /// Several: iterate [`prefix_scan`] again.
    Many,
}

/// Members of `obj` whose key starts with `name`, as (rest of the key, value). The first-byte
/// test keeps the scan cheap; it does not rely on the map's key order.
fn prefix_scan<'v>(obj: &'v Map<String, Value>, name: &str) -> impl Iterator<Item = (&'v str, &'v Value)> {
    let first = name.as_bytes().first().copied();
    obj.iter()
        .filter(move |(k, _)| k.as_bytes().first().copied() == first && k.starts_with(name))
        .map(move |(k, v)| (&k[name.len()..], v))
}

impl<'a> Env<'a> {
    /// An environment for one resource.
    pub(crate) fn new(resource: &'a Value, constants: &'a [Constant]) -> Env<'a> {
        Env { resource, constants, row_index: 0, prefix_memo: RefCell::new(Vec::new()) }
    }

    /// The same environment with another `%rowIndex`.
    pub(crate) fn with_row_index(&self, row_index: usize) -> Env<'a> {
        Env {
            resource: self.resource,
            constants: self.constants,
            row_index,
            prefix_memo: RefCell::new(Vec::new()),
        }
    }

    /// Calls `f` for the members of `obj` whose key starts with `name` (the plain element has
    /// suffix `""`), scanning each (object, name) once.
    fn prefixed(&self, obj: &'a Map<String, Value>, name: &'a str, mut f: impl FnMut(&'a str, &'a Value)) {
        let ptr: *const Map<String, Value> = obj;
        let known = self.prefix_memo.borrow().iter().find(|p| p.obj == ptr && p.name == name).map(|p| p.hits);
        let hits = known.unwrap_or_else(|| {
            let mut it = prefix_scan(obj, name);
            let hits = match (it.next(), it.next()) {
                (None, _) => Hits::Zero,
                (Some((suffix, v)), None) => Hits::One(suffix, v),
                _ => Hits::Many,
            };
            self.prefix_memo.borrow_mut().push(PrefixScan { obj: ptr, name, hits });
            hits
        });
        match hits {
            Hits::Zero => {}
            Hits::One(suffix, v) => f(suffix, v),
            Hits::Many => prefix_scan(obj, name).for_each(|(suffix, v)| f(suffix, v)),
        }
    }
}

/// Evaluates `node` with `focus` as input collection (`$this`) and `index` as `$index`.
pub(crate) fn eval<'a>(
    node: &'a Node,
    focus: &[Item<'a>],
    env: &Env<'a>,
    index: usize,
) -> EvalResult<Vec<Item<'a>>> {
    Ok(match node {
        Node::Empty => Vec::new(),
        Node::Lit(l) => vec![literal(l)],
        Node::This => focus.to_vec(),
        Node::Index => vec![Item::Int(index as i64)],
        Node::Const(i) => match env.constants.get(*i) {
            Some(c) => vec![Item::Json(&c.value, Some(c.ty))],
            None => return Err(Box::new(EvalError::UndefinedConstant { index: *i })),
        },
        Node::RowIndex => vec![Item::Int(env.row_index as i64)],
        Node::Resource => vec![Item::Json(env.resource, None)],
        Node::Path(..) => {
            let mut out = Vec::new();
            eval_into(node, focus, env, index, &mut out)?;
            out
        }
        Node::Call(base, call) => match base {
            None => call_fn(call, focus, env, index)?,
            Some(b) => {
                let input = eval(b, focus, env, index)?;
                // Filters reuse the input's allocation.
                match call.as_ref() {
                    Call::First => truncated(input, 1),
                    Call::Where(crit) => {
                        retain(input, |item, i| Ok(eval_bool(crit, item, env, i, "where()")? == Some(true)))?
                    }
                    Call::OfType(ty) => retain(input, |item, _| Ok(item.is_type(ty)))?,
                    _ => call_fn(call, &input, env, index)?,
                }
            }
        },
        Node::Indexer(base, idx) => {
            let mut items = eval(base, focus, env, index)?;
            let i = singleton(eval(idx, focus, env, index)?, "indexer")?;
            match i.as_ref().and_then(Item::as_num) {
                Some(Num::Int(i)) if i >= 0 && (i as usize) < items.len() => {
                    vec![items.swap_remove(i as usize)]
                }
                Some(Num::Int(_)) | None => Vec::new(),
                Some(Num::Dec(_)) => return Err(Box::new(EvalError::DecimalIndex)),
            }
        }
        Node::Neg(inner) => match singleton(eval(inner, focus, env, index)?, "unary minus")? {
            None => Vec::new(),
            Some(it) => match it.as_num() {
                Some(Num::Int(i)) => i.checked_neg().map(Item::Int).into_iter().collect(),
                Some(Num::Dec(d)) => d.checked_neg().map(Item::Dec).into_iter().collect(),
                None => return Err(Box::new(EvalError::CannotNegate { found: it.kind() })),
            },
        },
        Node::Bin(op, l, r) => binary(*op, l, r, focus, env, index)?,
        Node::Is(inner, ty) => match singleton(eval(inner, focus, env, index)?, "is")? {
            None => Vec::new(),
            Some(it) => vec![Item::Bool(it.is_type(ty))],
        },
        Node::As(inner, ty) => {
            eval(inner, focus, env, index)?.into_iter().filter(|i| i.is_type(ty)).collect()
        }
    })
}

/// Like [`eval`], but appends to `out` (a reusable buffer), avoiding a collection per call for
/// paths and `path.first()`.
pub(crate) fn eval_into<'a>(
    node: &'a Node,
    focus: &[Item<'a>],
    env: &Env<'a>,
    index: usize,
    out: &mut Vec<Item<'a>>,
) -> EvalResult<()> {
    match node {
        Node::Path(None, steps) => focus.iter().for_each(|item| walk(item, steps, true, env, out)),
        Node::Path(Some(b), steps) => {
            eval(b, focus, env, index)?.iter().for_each(|item| walk(item, steps, false, env, out))
        }
        Node::Call(Some(b), call) if matches!(**call, Call::First) => {
            let start = out.len();
            eval_into(b, focus, env, index, out)?;
            out.truncate(start + 1);
        }
        _ => out.extend(eval(node, focus, env, index)?),
    }
    Ok(())
}

fn literal(l: &Lit) -> Item<'_> {
    match l {
        Lit::Bool(b) => Item::Bool(*b),
        Lit::Int(i) => Item::Int(*i),
        Lit::Dec(d) => Item::Dec(*d),
        Lit::Str(s) => Item::Str(Cow::Borrowed(s)),
        Lit::Temporal(k, s) => Item::Temporal(*k, Cow::Borrowed(s)),
    }
}

/// `Patient.name` evaluated on a Patient: the leading type name selects the resource itself.
fn is_type_root(item: &Item<'_>, name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && item.as_object().and_then(|o| o.get("resourceType")).and_then(Value::as_str) == Some(name)
}

/// Follows `steps` from `item`, appending the reached nodes to `out` (arrays flatten, nulls
/// vanish). `at_root`: a leading type name (`Patient.name`) may select the focus itself.
fn walk<'a>(item: &Item<'a>, steps: &'a [Step], at_root: bool, env: &Env<'a>, out: &mut Vec<Item<'a>>) {
    let Some((step, rest)) = steps.split_first() else {
        out.push(item.clone());
        return;
    };
    match step {
        Step::Child(name) => {
            if at_root && is_type_root(item, name) {
                return walk(item, rest, false, env, out);
            }
            let Some(obj) = item.as_object() else { return };
            if let Some(v) = obj.get(name) {
                for x in elements(v) {
                    walk(&Item::Json(x, None), rest, false, env, out);
                }
                return;
            }
            // Absent: maybe a choice element `name<Type>`.
            env.prefixed(obj, name, |suffix, v| {
                if let Some(ty) = suffix_type(suffix) {
                    for x in elements(v) {
                        walk(&Item::Json(x, Some(ty)), rest, false, env, out);
                    }
                }
            });
        }
        Step::Choice { name, ty, suffixes } => {
            let Some(obj) = item.as_object() else { return };
            // The plain element (typed by its JSON shape) or a choice key holding a `ty`.
            env.prefixed(obj, name, |suffix, v| {
                if suffix.is_empty() {
                    for x in elements(v) {
                        let it = Item::Json(x, None);
                        if it.is_type(ty) {
                            walk(&it, rest, false, env, out);
                        }
                    }
                } else if let Some((_, tag)) = suffixes.iter().find(|(s, _)| s == suffix) {
                    for x in elements(v) {
                        walk(&Item::Json(x, Some(tag)), rest, false, env, out);
                    }
                }
            });
        }
    }
}

/// The non-null elements of a JSON value seen as a FHIRPath collection.
pub(super) fn elements(v: &Value) -> impl Iterator<Item = &Value> {
    let slice = match v {
        Value::Array(a) => a.as_slice(),
        other => std::slice::from_ref(other),
    };
    slice.iter().filter(|x| !x.is_null())
}

/// `items` cut to at most `n` items.
fn truncated(mut items: Vec<Item<'_>>, n: usize) -> Vec<Item<'_>> {
    items.truncate(n);
    items
}

/// Keeps the items for which `keep(item, index)` is true, in place.
fn retain<'a>(
    mut items: Vec<Item<'a>>,
    mut keep: impl FnMut(&Item<'a>, usize) -> EvalResult<bool>,
) -> EvalResult<Vec<Item<'a>>> {
    let mut kept = 0;
    for i in 0..items.len() {
        if keep(&items[i], i)? {
            items.swap(kept, i);
            kept += 1;
        }
    }
    items.truncate(kept);
    Ok(items)
}

/// Evaluates a criterion on one item as a boolean (`None` = empty), without allocating for the
/// common shapes (`and`/`or`/`not`, `=`/`!=` against a literal, `exists()`, `empty()`).
pub(super) fn eval_bool<'a>(
    node: &'a Node,
    item: &Item<'a>,
    env: &Env<'a>,
    index: usize,
    what: &'static str,
) -> EvalResult<Option<bool>> {
    let focus = std::slice::from_ref(item);
    match node {
        Node::Lit(Lit::Bool(b)) => Ok(Some(*b)),
        Node::Bin(BinOp::And, l, r) => {
            let a = eval_bool(l, item, env, index, what)?;
            if a == Some(false) {
                return Ok(Some(false));
            }
            Ok(match (a, eval_bool(r, item, env, index, what)?) {
                (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            })
        }
        Node::Bin(BinOp::Or, l, r) => {
            let a = eval_bool(l, item, env, index, what)?;
            if a == Some(true) {
                return Ok(Some(true));
            }
            Ok(match (a, eval_bool(r, item, env, index, what)?) {
                (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            })
        }
        Node::Bin(op @ (BinOp::Eq | BinOp::Ne), l, r) if matches!(**r, Node::Lit(_)) => {
            let Node::Lit(lit) = &**r else { return Ok(None) };
            let lhs = eval(l, focus, env, index)?;
            let eq = match lhs.as_slice() {
                [] => return Ok(None),
                [one] => items_equal(one, &literal(lit)),
                _ => Some(false),
            };
            Ok(if *op == BinOp::Eq { eq } else { eq.map(|e| !e) })
        }
        Node::Call(Some(base), call) if matches!(**call, Call::Exists(None) | Call::Empty | Call::Not) => {
            let input = eval(base, focus, env, index)?;
            Ok(match **call {
                Call::Exists(None) => Some(!input.is_empty()),
                Call::Empty => Some(input.is_empty()),
                _ => truth(&input, "not()")?.map(|b| !b),
            })
        }
        _ => truth(&eval(node, focus, env, index)?, what),
    }
}

/// The only item of a collection (`None` when empty); more than one is an error.
pub(crate) fn singleton<'a>(mut items: Vec<Item<'a>>, what: &'static str) -> EvalResult<Option<Item<'a>>> {
    match items.len() {
        0 => Ok(None),
        1 => Ok(items.pop()),
        count => Err(Box::new(EvalError::NotSingle { operation: what, count })),
    }
}

/// Boolean view of a collection: empty → unknown; a single non-boolean counts as `true`.
pub(crate) fn truth(items: &[Item<'_>], what: &'static str) -> EvalResult<Option<bool>> {
    match items {
        [] => Ok(None),
        [one] => Ok(Some(one.as_bool().unwrap_or(true))),
        many => Err(Box::new(EvalError::NotSingleBoolean { operation: what, count: many.len() })),
    }
}

/// An optional boolean as a collection (`None` is empty).
pub(super) fn bool_result(b: Option<bool>) -> Vec<Item<'static>> {
    b.map(|b| vec![Item::Bool(b)]).unwrap_or_default()
}

fn binary<'a>(
    op: BinOp,
    l: &'a Node,
    r: &'a Node,
    focus: &[Item<'a>],
    env: &Env<'a>,
    index: usize,
) -> EvalResult<Vec<Item<'a>>> {
    let lhs = eval(l, focus, env, index)?;
    if let Some(decided) = decided_by_left(op, &lhs, r)? {
        return Ok(decided);
    }
    let rhs = eval(r, focus, env, index)?;
    match op {
        BinOp::And | BinOp::Or | BinOp::Xor | BinOp::Implies => logic(op, &lhs, &rhs),
        BinOp::Eq | BinOp::Ne | BinOp::Equiv | BinOp::NotEquiv => Ok(equality(op, &lhs, &rhs)),
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => comparison(op, lhs, rhs),
        BinOp::Union | BinOp::In | BinOp::Contains => collection(op, lhs, rhs),
        BinOp::Concat => {
            let text = |items: Vec<Item<'a>>| -> EvalResult<String> {
                Ok(singleton(items, "&")?.and_then(|i| i.as_str().map(str::to_string)).unwrap_or_default())
            };
            Ok(vec![Item::Str(Cow::Owned(text(lhs)? + &text(rhs)?))])
        }
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::IntDiv | BinOp::Mod => {
            let (Some(a), Some(b)) = (singleton(lhs, "arithmetic")?, singleton(rhs, "arithmetic")?) else {
                return Ok(Vec::new());
            };
            Ok(arithmetic(op, &a, &b)?.into_iter().collect())
        }
    }
}

/// The result when the left side decides alone: the logic operators' short circuits, and
/// `x = 'literal'` (the usual `where` criterion) without allocating the right side.
fn decided_by_left<'a>(op: BinOp, lhs: &[Item<'a>], r: &'a Node) -> EvalResult<Option<Vec<Item<'a>>>> {
    Ok(match op {
        BinOp::And if truth(lhs, "and")? == Some(false) => Some(vec![Item::Bool(false)]),
        BinOp::Or if truth(lhs, "or")? == Some(true) => Some(vec![Item::Bool(true)]),
        BinOp::Implies if truth(lhs, "implies")? == Some(false) => Some(vec![Item::Bool(true)]),
        BinOp::Eq | BinOp::Ne => {
            let Node::Lit(lit) = r else { return Ok(None) };
            let eq = match lhs {
                [] => return Ok(Some(Vec::new())),
                [one] => items_equal(one, &literal(lit)),
                _ => Some(false),
            };
            Some(bool_result(if op == BinOp::Eq { eq } else { eq.map(|e| !e) }))
        }
        _ => None,
    })
}

/// `and`, `or`, `xor`, `implies` with FHIRPath's three-valued logic (empty = unknown).
fn logic(op: BinOp, lhs: &[Item<'_>], rhs: &[Item<'_>]) -> EvalResult<Vec<Item<'static>>> {
    let what = match op {
        BinOp::And => "and",
        BinOp::Or => "or",
        BinOp::Xor => "xor",
        _ => "implies",
    };
    let (a, b) = (truth(lhs, what)?, truth(rhs, what)?);
    Ok(bool_result(match op {
        BinOp::And => match (a, b) {
            (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        BinOp::Or => match (a, b) {
            (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        BinOp::Xor => a.zip(b).map(|(a, b)| a != b),
        _ => match (a, b) {
            (_, Some(true)) => Some(true),
            (Some(true), b) => b,
            _ => None,
        },
    }))
}

/// `=`, `!=` (empty when either side is empty) and `~`, `!~`.
fn equality(op: BinOp, lhs: &[Item<'_>], rhs: &[Item<'_>]) -> Vec<Item<'static>> {
    match op {
        BinOp::Eq | BinOp::Ne => {
            if lhs.is_empty() || rhs.is_empty() {
                return Vec::new();
            }
            let eq = if lhs.len() != rhs.len() {
                Some(false)
            } else {
                lhs.iter().zip(rhs).try_fold(true, |acc, (a, b)| items_equal(a, b).map(|e| acc && e))
            };
            bool_result(if op == BinOp::Eq { eq } else { eq.map(|e| !e) })
        }
        _ => {
            let eq = lhs.len() == rhs.len() && lhs.iter().zip(rhs).all(|(a, b)| items_equivalent(a, b));
            vec![Item::Bool(if op == BinOp::Equiv { eq } else { !eq })]
        }
    }
}

/// `<`, `>`, `<=`, `>=` of two single values (empty when either is empty or they do not compare).
fn comparison<'a>(op: BinOp, lhs: Vec<Item<'a>>, rhs: Vec<Item<'a>>) -> EvalResult<Vec<Item<'a>>> {
    let (Some(a), Some(b)) = (singleton(lhs, "comparison")?, singleton(rhs, "comparison")?) else {
        return Ok(Vec::new());
    };
    let Some(ord) = compare(&a, &b) else { return Ok(Vec::new()) };
    Ok(vec![Item::Bool(match op {
        BinOp::Lt => ord == Ordering::Less,
        BinOp::Gt => ord == Ordering::Greater,
        BinOp::Le => ord != Ordering::Greater,
        _ => ord != Ordering::Less,
    })])
}

/// `|` (union without repeats), `in` and `contains` (membership of a single value).
fn collection<'a>(op: BinOp, lhs: Vec<Item<'a>>, rhs: Vec<Item<'a>>) -> EvalResult<Vec<Item<'a>>> {
    if op == BinOp::Union {
        let mut out: Vec<Item<'a>> = Vec::with_capacity(lhs.len() + rhs.len());
        for it in lhs.into_iter().chain(rhs) {
            if !out.iter().any(|o| items_equal(o, &it) == Some(true)) {
                out.push(it);
            }
        }
        return Ok(out);
    }
    let (needle, hay) = if op == BinOp::In { (lhs, rhs) } else { (rhs, lhs) };
    Ok(match singleton(needle, "membership")? {
        None => Vec::new(),
        Some(n) => vec![Item::Bool(hay.iter().any(|h| items_equal(h, &n) == Some(true)))],
    })
}

fn arithmetic<'a>(op: BinOp, a: &Item<'a>, b: &Item<'a>) -> EvalResult<Option<Item<'a>>> {
    if op == BinOp::Add
        && let (Some(x), Some(y)) = (a.as_str(), b.as_str())
    {
        return Ok(Some(Item::Str(Cow::Owned(format!("{x}{y}")))));
    }
    let (Some(x), Some(y)) = (a.as_num(), b.as_num()) else {
        return Err(Box::new(EvalError::Arithmetic { left: a.kind(), right: b.kind() }));
    };
    // Integer overflow yields empty (as before); decimal overflow past 38 digits is an error,
    // and division by zero is empty, as FHIRPath specifies.
    Ok(match (x, y) {
        (Num::Int(x), Num::Int(y)) if op != BinOp::Div => match op {
            BinOp::Add => x.checked_add(y).map(Item::Int),
            BinOp::Sub => x.checked_sub(y).map(Item::Int),
            BinOp::Mul => x.checked_mul(y).map(Item::Int),
            BinOp::IntDiv => x.checked_div(y).map(Item::Int),
            _ => x.checked_rem(y).map(Item::Int),
        },
        (x, y) => {
            let (x, y) = (x.as_decimal(), y.as_decimal());
            let zero = y.mantissa() == 0;
            if zero && matches!(op, BinOp::Div | BinOp::IntDiv | BinOp::Mod) {
                return Ok(None);
            }
            let out = match op {
                BinOp::Add => x.checked_add(y).map(Item::Dec),
                BinOp::Sub => x.checked_sub(y).map(Item::Dec),
                BinOp::Mul => x.checked_mul(y).map(Item::Dec),
                BinOp::Div => x.checked_div(y).map(Item::Dec),
                BinOp::IntDiv => x.checked_div_trunc(y).map(Item::Int),
                _ => x.checked_rem(y).map(Item::Dec),
            };
            Some(out.ok_or(EvalError::DecimalOverflow)?)
        }
    })
}

/// The id part of a reference (`Patient/123`, `https://x/fhir/Patient/123/_history/2`), if its
/// type matches `ty`. Contained (`#x`) and URN references have no key.
pub(crate) fn reference_key<'r>(reference: &'r str, ty: Option<&str>) -> Option<&'r str> {
    if reference.starts_with('#') || reference.starts_with("urn:") {
        return None;
    }
    let path = reference.split(['?', '#']).next()?;
    // `…/Type/id` or `…/Type/id/_history/version`.
    let mut segs = path.rsplit('/').filter(|s| !s.is_empty());
    let (last, before) = (segs.next()?, segs.next()?);
    let (id, rtype) = if before == "_history" { (segs.next()?, segs.next()?) } else { (last, before) };
    if !rtype.starts_with(|c: char| c.is_ascii_uppercase()) {
        return None;
    }
    if ty.is_some_and(|t| t != rtype) {
        return None;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference keys come from relative, absolute and versioned references, honouring the type filter.
    #[test]
    fn reference_keys() {
        assert_eq!(reference_key("Patient/p1", None), Some("p1"));
        assert_eq!(
            reference_key("https://fhir.x.org/api/FHIR/R4/Patient/eX1/_history/3", Some("Patient")),
            Some("eX1")
        );
        assert_eq!(reference_key("Patient/p1", Some("Observation")), None);
        assert_eq!(reference_key("#contained", None), None);
        assert_eq!(reference_key("p1", None), None);
    }
}
