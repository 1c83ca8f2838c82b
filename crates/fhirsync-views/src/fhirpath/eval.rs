//! Tree-walking evaluator over borrowed JSON. Collections are `Vec<Item>`; JSON arrays flatten on
//! navigation, `null`s vanish, and a missing `name` falls back to a choice element `name[Type]`.

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::ast::{BinOp, Call, Lit, Node, Step};
use super::boundary;
use super::value::{Item, Num, compare, items_equal, items_equivalent, suffix_type};
use crate::Decimal;

/// Evaluation failure (wrapped with the expression text by the caller).
pub(crate) type EvalResult<T> = std::result::Result<T, String>;

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
            None => return Err(format!("constant #{i} is not defined")),
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
                Some(Num::Dec(_)) => return Err("an index must be an integer".into()),
            }
        }
        Node::Neg(inner) => match singleton(eval(inner, focus, env, index)?, "unary minus")? {
            None => Vec::new(),
            Some(it) => match it.as_num() {
                Some(Num::Int(i)) => i.checked_neg().map(Item::Int).into_iter().collect(),
                Some(Num::Dec(d)) => d.checked_neg().map(Item::Dec).into_iter().collect(),
                None => return Err(format!("cannot negate {}", it.kind())),
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
fn elements(v: &Value) -> impl Iterator<Item = &Value> {
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
fn eval_bool<'a>(
    node: &'a Node,
    item: &Item<'a>,
    env: &Env<'a>,
    index: usize,
    what: &str,
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
pub(crate) fn singleton<'a>(mut items: Vec<Item<'a>>, what: &str) -> EvalResult<Option<Item<'a>>> {
    match items.len() {
        0 => Ok(None),
        1 => Ok(items.pop()),
        n => Err(format!("{what} expects a single value but got {n}")),
    }
}

/// Boolean view of a collection: empty → unknown; a single non-boolean counts as `true`.
pub(crate) fn truth(items: &[Item<'_>], what: &str) -> EvalResult<Option<bool>> {
    match items {
        [] => Ok(None),
        [one] => Ok(Some(one.as_bool().unwrap_or(true))),
        many => Err(format!("{what} expects a single boolean but got {} values", many.len())),
    }
}

fn bool_result(b: Option<bool>) -> Vec<Item<'static>> {
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
    // Short-circuit the logic operators where the left side decides.
    match op {
        BinOp::And if truth(&lhs, "and")? == Some(false) => return Ok(vec![Item::Bool(false)]),
        BinOp::Or if truth(&lhs, "or")? == Some(true) => return Ok(vec![Item::Bool(true)]),
        BinOp::Implies if truth(&lhs, "implies")? == Some(false) => return Ok(vec![Item::Bool(true)]),
        // `x = 'literal'` (the usual `where` criterion) without allocating the right side.
        BinOp::Eq | BinOp::Ne if matches!(r, Node::Lit(_)) => {
            let Node::Lit(lit) = r else { return Ok(Vec::new()) };
            let eq = match lhs.as_slice() {
                [] => return Ok(Vec::new()),
                [one] => items_equal(one, &literal(lit)),
                _ => Some(false),
            };
            return Ok(bool_result(if op == BinOp::Eq { eq } else { eq.map(|e| !e) }));
        }
        _ => {}
    }
    let rhs = eval(r, focus, env, index)?;
    Ok(match op {
        BinOp::And => {
            let (a, b) = (truth(&lhs, "and")?, truth(&rhs, "and")?);
            bool_result(match (a, b) {
                (_, Some(false)) => Some(false),
                (Some(true), Some(true)) => Some(true),
                _ => None,
            })
        }
        BinOp::Or => {
            let (a, b) = (truth(&lhs, "or")?, truth(&rhs, "or")?);
            bool_result(match (a, b) {
                (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            })
        }
        BinOp::Xor => {
            let (a, b) = (truth(&lhs, "xor")?, truth(&rhs, "xor")?);
            bool_result(a.zip(b).map(|(a, b)| a != b))
        }
        BinOp::Implies => {
            let (a, b) = (truth(&lhs, "implies")?, truth(&rhs, "implies")?);
            bool_result(match (a, b) {
                (_, Some(true)) => Some(true),
                (Some(true), b) => b,
                _ => None,
            })
        }
        BinOp::Eq | BinOp::Ne => {
            if lhs.is_empty() || rhs.is_empty() {
                return Ok(Vec::new());
            }
            let eq = if lhs.len() != rhs.len() {
                Some(false)
            } else {
                lhs.iter().zip(&rhs).try_fold(true, |acc, (a, b)| items_equal(a, b).map(|e| acc && e))
            };
            bool_result(if op == BinOp::Eq { eq } else { eq.map(|e| !e) })
        }
        BinOp::Equiv | BinOp::NotEquiv => {
            let eq = lhs.len() == rhs.len() && lhs.iter().zip(&rhs).all(|(a, b)| items_equivalent(a, b));
            vec![Item::Bool(if op == BinOp::Equiv { eq } else { !eq })]
        }
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
            let (Some(a), Some(b)) = (singleton(lhs, "comparison")?, singleton(rhs, "comparison")?) else {
                return Ok(Vec::new());
            };
            let Some(ord) = compare(&a, &b) else { return Ok(Vec::new()) };
            vec![Item::Bool(match op {
                BinOp::Lt => ord == Ordering::Less,
                BinOp::Gt => ord == Ordering::Greater,
                BinOp::Le => ord != Ordering::Greater,
                _ => ord != Ordering::Less,
            })]
        }
        BinOp::Union => {
            let mut out: Vec<Item<'a>> = Vec::with_capacity(lhs.len() + rhs.len());
            for it in lhs.into_iter().chain(rhs) {
                if !out.iter().any(|o| items_equal(o, &it) == Some(true)) {
                    out.push(it);
                }
            }
            out
        }
        BinOp::In | BinOp::Contains => {
            let (needle, hay) = if op == BinOp::In { (lhs, rhs) } else { (rhs, lhs) };
            match singleton(needle, "membership")? {
                None => Vec::new(),
                Some(n) => vec![Item::Bool(hay.iter().any(|h| items_equal(h, &n) == Some(true)))],
            }
        }
        BinOp::Concat => {
            let text = |items: Vec<Item<'a>>| -> EvalResult<String> {
                Ok(singleton(items, "&")?.and_then(|i| i.as_str().map(str::to_string)).unwrap_or_default())
            };
            vec![Item::Str(Cow::Owned(text(lhs)? + &text(rhs)?))]
        }
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::IntDiv | BinOp::Mod => {
            let (Some(a), Some(b)) = (singleton(lhs, "arithmetic")?, singleton(rhs, "arithmetic")?) else {
                return Ok(Vec::new());
            };
            arithmetic(op, &a, &b)?.into_iter().collect()
        }
    })
}

fn arithmetic<'a>(op: BinOp, a: &Item<'a>, b: &Item<'a>) -> EvalResult<Option<Item<'a>>> {
    if op == BinOp::Add
        && let (Some(x), Some(y)) = (a.as_str(), b.as_str())
    {
        return Ok(Some(Item::Str(Cow::Owned(format!("{x}{y}")))));
    }
    let (Some(x), Some(y)) = (a.as_num(), b.as_num()) else {
        return Err(format!("cannot apply arithmetic to {} and {}", a.kind(), b.kind()));
    };
    // Integer overflow yields empty (as before); decimal overflow past 38 digits is an error,
    // and division by zero is empty, as FHIRPath specifies.
    let overflow = || "the result of decimal arithmetic exceeds 38 digits".to_string();
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
            Some(out.ok_or_else(overflow)?)
        }
    })
}

fn call_fn<'a>(call: &'a Call, input: &[Item<'a>], env: &Env<'a>, index: usize) -> EvalResult<Vec<Item<'a>>> {
    // Evaluates a non-lambda argument against the function's input.
    let arg = |node: &'a Node| eval(node, input, env, index);
    let arg_str = |node: &'a Node, what: &str| -> EvalResult<Option<String>> {
        Ok(singleton(arg(node)?, what)?.and_then(|i| i.as_str().map(str::to_string)))
    };
    let arg_int = |node: &'a Node, what: &str| -> EvalResult<usize> {
        match singleton(arg(node)?, what)?.and_then(|i| i.as_num()) {
            Some(Num::Int(i)) => Ok(i.max(0) as usize),
            _ => Err(format!("{what} needs an integer argument")),
        }
    };
    let single = |what: &str| singleton(input.to_vec(), what);
    Ok(match call {
        Call::Where(crit) => {
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                if eval_bool(crit, item, env, i, "where()")? == Some(true) {
                    out.push(item.clone());
                }
            }
            out
        }
        Call::Select(expr) => {
            let mut out = Vec::new();
            for (i, item) in input.iter().enumerate() {
                out.extend(eval(expr, std::slice::from_ref(item), env, i)?);
            }
            out
        }
        Call::Repeat(expr) => {
            let mut out: Vec<Item<'a>> = Vec::new();
            let mut queue: Vec<Item<'a>> = input.to_vec();
            while !queue.is_empty() {
                let mut next = Vec::new();
                for (i, item) in queue.iter().enumerate() {
                    next.extend(eval(expr, std::slice::from_ref(item), env, i)?);
                }
                out.extend(next.iter().cloned());
                queue = next;
            }
            out
        }
        Call::Exists(None) => vec![Item::Bool(!input.is_empty())],
        Call::Exists(Some(crit)) => {
            let mut any = false;
            for (i, item) in input.iter().enumerate() {
                if truth(&eval(crit, std::slice::from_ref(item), env, i)?, "exists()")? == Some(true) {
                    any = true;
                    break;
                }
            }
            vec![Item::Bool(any)]
        }
        Call::All(crit) => {
            let mut all = true;
            for (i, item) in input.iter().enumerate() {
                if truth(&eval(crit, std::slice::from_ref(item), env, i)?, "all()")? != Some(true) {
                    all = false;
                    break;
                }
            }
            vec![Item::Bool(all)]
        }
        Call::Empty => vec![Item::Bool(input.is_empty())],
        Call::First => input.first().cloned().into_iter().collect(),
        Call::Last => input.last().cloned().into_iter().collect(),
        Call::Tail => input.iter().skip(1).cloned().collect(),
        Call::Skip(n) => input.iter().skip(arg_int(n, "skip()")?).cloned().collect(),
        Call::Take(n) => input.iter().take(arg_int(n, "take()")?).cloned().collect(),
        Call::Count => vec![Item::Int(input.len() as i64)],
        Call::Distinct => {
            let mut out: Vec<Item<'a>> = Vec::new();
            for it in input {
                if !out.iter().any(|o| items_equal(o, it) == Some(true)) {
                    out.push(it.clone());
                }
            }
            out
        }
        Call::OfType(ty) | Call::As(ty) => input.iter().filter(|i| i.is_type(ty)).cloned().collect(),
        Call::Is(ty) => single("is()")?.map(|i| Item::Bool(i.is_type(ty))).into_iter().collect(),
        Call::Extension(url) => {
            let url = arg_str(url, "extension()")?.ok_or("extension() needs a url string")?;
            let mut out = Vec::new();
            for item in input {
                let Some(Value::Array(exts)) = item.as_object().and_then(|o| o.get("extension")) else {
                    continue;
                };
                for ext in exts {
                    if ext.get("url").and_then(Value::as_str) == Some(url.as_str()) {
                        out.push(Item::Json(ext, Some("Extension")));
                    }
                }
            }
            out
        }
        Call::Join(sep) => {
            let sep = match sep {
                Some(s) => arg_str(s, "join()")?.unwrap_or_default(),
                None => String::new(),
            };
            let parts: Vec<&str> = input.iter().filter_map(Item::as_str).collect();
            vec![Item::Str(Cow::Owned(parts.join(&sep)))]
        }
        Call::ResourceKey => input
            .iter()
            .filter_map(|i| i.as_object()?.get("id")?.as_str())
            .map(|id| Item::Str(Cow::Borrowed(id)))
            .collect(),
        Call::ReferenceKey(ty) => input
            .iter()
            .filter_map(|i| {
                let reference = i.as_object()?.get("reference")?.as_str()?;
                reference_key(reference, ty.as_deref())
            })
            .map(|id| Item::Str(Cow::Borrowed(id)))
            .collect(),
        Call::LowBoundary | Call::HighBoundary => {
            let high = matches!(call, Call::HighBoundary);
            single("boundary")?.and_then(|i| boundary::boundary(&i, high)).into_iter().collect()
        }
        Call::Not => bool_result(truth(input, "not()")?.map(|b| !b)),
        Call::HasValue => {
            vec![Item::Bool(matches!(input, [one] if one.as_object().is_none()))]
        }
        Call::Iif(cond, then, otherwise) => {
            if truth(&arg(cond)?, "iif()")? == Some(true) {
                arg(then)?
            } else {
                match otherwise {
                    Some(o) => arg(o)?,
                    None => Vec::new(),
                }
            }
        }
        Call::ToString => {
            single("toString()")?.and_then(|i| to_text(&i)).map(Item::Str).into_iter().collect()
        }
        Call::StartsWith(s) | Call::EndsWith(s) | Call::ContainsStr(s) => {
            let Some(text) = single("string function")? else { return Ok(Vec::new()) };
            let Some(text) = text.as_str() else { return Err("string function on a non-string".into()) };
            let Some(needle) = arg_str(s, "string function")? else { return Ok(Vec::new()) };
            vec![Item::Bool(match call {
                Call::StartsWith(_) => text.starts_with(&needle),
                Call::EndsWith(_) => text.ends_with(&needle),
                _ => text.contains(&needle),
            })]
        }
        Call::Lower | Call::Upper => single("lower()/upper()")?
            .and_then(|i| {
                i.as_str()
                    .map(|s| if matches!(call, Call::Lower) { s.to_lowercase() } else { s.to_uppercase() })
            })
            .map(|s| Item::Str(Cow::Owned(s)))
            .into_iter()
            .collect(),
        Call::Length => single("length()")?
            .and_then(|i| i.as_str().map(|s| Item::Int(s.chars().count() as i64)))
            .into_iter()
            .collect(),
        Call::AllTrue => vec![Item::Bool(input.iter().all(|i| i.as_bool() == Some(true)))],
        Call::AnyTrue => vec![Item::Bool(input.iter().any(|i| i.as_bool() == Some(true)))],
        Call::AllFalse => vec![Item::Bool(input.iter().all(|i| i.as_bool() == Some(false)))],
        Call::AnyFalse => vec![Item::Bool(input.iter().any(|i| i.as_bool() == Some(false)))],
        Call::Substring(start, len) => {
            let Some(text) = single("substring()")? else { return Ok(Vec::new()) };
            let Some(text) = text.as_str() else { return Err("substring() on a non-string".into()) };
            let start = arg_int(start, "substring()")?;
            let chars: Vec<char> = text.chars().collect();
            if start >= chars.len() {
                return Ok(Vec::new());
            }
            let end = match len {
                Some(l) => start.saturating_add(arg_int(l, "substring()")?).min(chars.len()),
                None => chars.len(),
            };
            vec![Item::Str(Cow::Owned(chars[start..end].iter().collect()))]
        }
        Call::Replace(pattern, with) => {
            let Some(text) = single("replace()")? else { return Ok(Vec::new()) };
            let Some(text) = text.as_str() else { return Err("replace() on a non-string".into()) };
            let (Some(pattern), Some(with)) = (arg_str(pattern, "replace()")?, arg_str(with, "replace()")?)
            else {
                return Ok(Vec::new());
            };
            vec![Item::Str(Cow::Owned(text.replace(&pattern, &with)))]
        }
        Call::ToInteger => match single("toInteger()")? {
            None => Vec::new(),
            Some(i) => match (i.as_num(), i.as_str(), i.as_bool()) {
                (Some(Num::Int(n)), _, _) => vec![Item::Int(n)],
                (_, Some(s), _) => s.parse::<i64>().ok().map(Item::Int).into_iter().collect(),
                (_, _, Some(b)) => vec![Item::Int(i64::from(b))],
                _ => Vec::new(),
            },
        },
        Call::ToDecimal => match single("toDecimal()")? {
            None => Vec::new(),
            Some(i) => match (i.as_num(), i.as_str(), i.as_bool()) {
                (Some(n), _, _) => vec![Item::Dec(n.as_decimal())],
                (_, Some(s), _) => s.trim().parse::<Decimal>().ok().map(Item::Dec).into_iter().collect(),
                (_, _, Some(b)) => {
                    Decimal::new(if b { 10 } else { 0 }, 1).map(Item::Dec).into_iter().collect()
                }
                _ => Vec::new(),
            },
        },
        Call::Children => {
            let mut out = Vec::new();
            for item in input {
                children(item, &mut out);
            }
            out
        }
        Call::Descendants => {
            let mut out: Vec<Item<'a>> = Vec::new();
            let mut queue: Vec<Item<'a>> = input.to_vec();
            while !queue.is_empty() {
                let mut next = Vec::new();
                for item in &queue {
                    children(item, &mut next);
                }
                out.extend(next.iter().cloned());
                queue = next;
            }
            out
        }
    })
}

fn children<'a>(item: &Item<'a>, out: &mut Vec<Item<'a>>) {
    if let Some(obj) = item.as_object() {
        for v in obj.values() {
            out.extend(elements(v).map(|x| Item::Json(x, None)));
        }
    }
}

fn to_text<'a>(item: &Item<'a>) -> Option<Cow<'a, str>> {
    match item {
        Item::Json(Value::String(s), _) => Some(Cow::Borrowed(s.as_str())),
        Item::Str(s) | Item::Temporal(_, s) => Some(s.clone()),
        Item::Json(Value::Number(n), _) => Some(Cow::Owned(n.to_string())),
        Item::Json(Value::Bool(b), _) | Item::Bool(b) => {
            Some(Cow::Borrowed(if *b { "true" } else { "false" }))
        }
        Item::Int(i) => Some(Cow::Owned(i.to_string())),
        Item::Dec(d) => Some(Cow::Owned(d.to_string())),
        Item::Json(..) => None,
    }
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
