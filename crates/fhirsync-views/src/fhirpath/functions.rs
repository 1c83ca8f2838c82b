//! The FHIRPath function library. [`call_fn`] is the one table from a parsed [`Call`] to its
//! step; functions longer than a line have a named helper below, grouped by family: filtering
//! and projection, subsetting, tree navigation, logic, strings, conversions.

use std::borrow::Cow;

use serde_json::Value;

use super::ast::{Call, Node};
use super::boundary;
use super::error::EvalError;
use super::eval::{Env, EvalResult, bool_result, elements, eval, eval_bool, reference_key, singleton, truth};
use super::value::{Item, Num, items_equal};
use crate::Decimal;

/// The input of a function call and what its arguments are evaluated against.
struct Args<'e, 'a> {
    input: &'e [Item<'a>],
    env: &'e Env<'a>,
    index: usize,
}

impl<'a> Args<'_, 'a> {
    /// Evaluates a non-lambda argument against the function's input.
    fn arg(&self, node: &'a Node) -> EvalResult<Vec<Item<'a>>> {
        eval(node, self.input, self.env, self.index)
    }

    /// A single string argument (`None` when empty or not a string).
    fn arg_str(&self, node: &'a Node, what: &'static str) -> EvalResult<Option<String>> {
        Ok(singleton(self.arg(node)?, what)?.and_then(|i| i.as_str().map(str::to_string)))
    }

    /// A single integer argument, negative counted as 0.
    fn arg_int(&self, node: &'a Node, what: &'static str) -> EvalResult<usize> {
        match singleton(self.arg(node)?, what)?.and_then(|i| i.as_num()) {
            Some(Num::Int(i)) => Ok(i.max(0) as usize),
            _ => Err(Box::new(EvalError::NeedsInteger { operation: what })),
        }
    }

    /// The input as a single item (`None` when empty).
    fn single(&self, what: &'static str) -> EvalResult<Option<Item<'a>>> {
        singleton(self.input.to_vec(), what)
    }

    /// Evaluates `expr` on each input item alone, with its position as `$index`.
    fn each(&self, expr: &'a Node, mut f: impl FnMut(Vec<Item<'a>>) -> EvalResult<bool>) -> EvalResult<()> {
        for (i, item) in self.input.iter().enumerate() {
            if !f(eval(expr, std::slice::from_ref(item), self.env, i)?)? {
                break;
            }
        }
        Ok(())
    }
}

/// Applies `call` to `input`.
pub(super) fn call_fn<'a>(
    call: &'a Call,
    input: &[Item<'a>],
    env: &Env<'a>,
    index: usize,
) -> EvalResult<Vec<Item<'a>>> {
    let a = Args { input, env, index };
    Ok(match call {
        // Filtering and projection.
        Call::Where(crit) => filter(crit, &a)?,
        Call::Select(expr) => select(expr, &a)?,
        Call::Repeat(expr) => repeat(expr, &a)?,
        Call::Exists(None) => vec![Item::Bool(!input.is_empty())],
        Call::Exists(Some(crit)) => vec![Item::Bool(any(crit, &a, "exists()")?)],
        Call::All(crit) => vec![Item::Bool(all(crit, &a)?)],
        // Subsetting.
        Call::Empty => vec![Item::Bool(input.is_empty())],
        Call::First => input.first().cloned().into_iter().collect(),
        Call::Last => input.last().cloned().into_iter().collect(),
        Call::Tail => input.iter().skip(1).cloned().collect(),
        Call::Skip(n) => input.iter().skip(a.arg_int(n, "skip()")?).cloned().collect(),
        Call::Take(n) => input.iter().take(a.arg_int(n, "take()")?).cloned().collect(),
        Call::Count => vec![Item::Int(input.len() as i64)],
        Call::Distinct => distinct(input),
        // Types and tree navigation.
        Call::OfType(ty) | Call::As(ty) => input.iter().filter(|i| i.is_type(ty)).cloned().collect(),
        Call::Is(ty) => a.single("is()")?.map(|i| Item::Bool(i.is_type(ty))).into_iter().collect(),
        Call::Extension(url) => extensions(url, &a)?,
        Call::ResourceKey => input
            .iter()
            .filter_map(|i| i.as_object()?.get("id")?.as_str())
            .map(|id| Item::Str(Cow::Borrowed(id)))
            .collect(),
        Call::ReferenceKey(ty) => reference_keys(input, ty.as_deref()),
        Call::LowBoundary | Call::HighBoundary => {
            let high = matches!(call, Call::HighBoundary);
            let what = if high { "highBoundary()" } else { "lowBoundary()" };
            a.single(what)?.and_then(|i| boundary::boundary(&i, high)).into_iter().collect()
        }
        Call::Children => children_of(input),
        Call::Descendants => descendants(input),
        // Logic.
        Call::Not => bool_result(truth(input, "not()")?.map(|b| !b)),
        Call::HasValue => vec![Item::Bool(matches!(input, [one] if one.as_object().is_none()))],
        Call::Iif(cond, then, otherwise) => iif(cond, then, otherwise.as_ref(), &a)?,
        Call::AllTrue => vec![Item::Bool(input.iter().all(|i| i.as_bool() == Some(true)))],
        Call::AnyTrue => vec![Item::Bool(input.iter().any(|i| i.as_bool() == Some(true)))],
        Call::AllFalse => vec![Item::Bool(input.iter().all(|i| i.as_bool() == Some(false)))],
        Call::AnyFalse => vec![Item::Bool(input.iter().any(|i| i.as_bool() == Some(false)))],
        // Strings.
        Call::Join(sep) => join(sep.as_ref(), &a)?,
        Call::ToString => {
            a.single("toString()")?.and_then(|i| to_text(&i)).map(Item::Str).into_iter().collect()
        }
        Call::StartsWith(s) => string_test(s, &a, "startsWith()", |text, needle| text.starts_with(needle))?,
        Call::EndsWith(s) => string_test(s, &a, "endsWith()", |text, needle| text.ends_with(needle))?,
        Call::ContainsStr(s) => string_test(s, &a, "contains()", |text, needle| text.contains(needle))?,
        Call::Lower => change_case(&a, "lower()", str::to_lowercase)?,
        Call::Upper => change_case(&a, "upper()", str::to_uppercase)?,
        Call::Length => a
            .single("length()")?
            .and_then(|i| i.as_str().map(|s| Item::Int(s.chars().count() as i64)))
            .into_iter()
            .collect(),
        Call::Substring(start, len) => substring(start, len.as_ref(), &a)?,
        Call::Replace(pattern, with) => replace(pattern, with, &a)?,
        // Conversions.
        Call::ToInteger => to_integer(&a)?,
        Call::ToDecimal => to_decimal(&a)?,
    })
}

/// `where(criterion)`: the items for which the criterion is true.
fn filter<'a>(crit: &'a Node, a: &Args<'_, 'a>) -> EvalResult<Vec<Item<'a>>> {
    let mut out = Vec::new();
    for (i, item) in a.input.iter().enumerate() {
        if eval_bool(crit, item, a.env, i, "where()")? == Some(true) {
            out.push(item.clone());
        }
    }
    Ok(out)
}

/// `select(expr)`: the results of `expr` on each item, concatenated.
fn select<'a>(expr: &'a Node, a: &Args<'_, 'a>) -> EvalResult<Vec<Item<'a>>> {
    let mut out = Vec::new();
    a.each(expr, |items| {
        out.extend(items);
        Ok(true)
    })?;
    Ok(out)
}

/// `repeat(expr)`: `expr` applied to the input, then to its results, until nothing is new.
fn repeat<'a>(expr: &'a Node, a: &Args<'_, 'a>) -> EvalResult<Vec<Item<'a>>> {
    let mut out: Vec<Item<'a>> = Vec::new();
    let mut queue: Vec<Item<'a>> = a.input.to_vec();
    while !queue.is_empty() {
        let mut next = Vec::new();
        for (i, item) in queue.iter().enumerate() {
            next.extend(eval(expr, std::slice::from_ref(item), a.env, i)?);
        }
        out.extend(next.iter().cloned());
        queue = next;
    }
    Ok(out)
}

/// `exists(criterion)`: whether the criterion is true for some item (stops at the first).
fn any<'a>(crit: &'a Node, a: &Args<'_, 'a>, what: &'static str) -> EvalResult<bool> {
    let mut any = false;
    a.each(crit, |items| {
        any = truth(&items, what)? == Some(true);
        Ok(!any)
    })?;
    Ok(any)
}

/// `all(criterion)`: whether the criterion is true for every item (stops at the first that is not).
fn all<'a>(crit: &'a Node, a: &Args<'_, 'a>) -> EvalResult<bool> {
    let mut all = true;
    a.each(crit, |items| {
        all = truth(&items, "all()")? == Some(true);
        Ok(all)
    })?;
    Ok(all)
}

/// `distinct()`: the items without repeats, first occurrence kept.
fn distinct<'a>(input: &[Item<'a>]) -> Vec<Item<'a>> {
    let mut out: Vec<Item<'a>> = Vec::new();
    for it in input {
        if !out.iter().any(|o| items_equal(o, it) == Some(true)) {
            out.push(it.clone());
        }
    }
    out
}

/// `extension(url)`: the items' extensions with that URL.
fn extensions<'a>(url: &'a Node, a: &Args<'_, 'a>) -> EvalResult<Vec<Item<'a>>> {
    const WHAT: &str = "extension()";
    let url = a.arg_str(url, WHAT)?.ok_or(EvalError::NeedsUrl { operation: WHAT })?;
    let mut out = Vec::new();
    for item in a.input {
        let Some(Value::Array(exts)) = item.as_object().and_then(|o| o.get("extension")) else {
            continue;
        };
        for ext in exts {
            if ext.get("url").and_then(Value::as_str) == Some(url.as_str()) {
                out.push(Item::Json(ext, Some("Extension")));
            }
        }
    }
    Ok(out)
}

/// `getReferenceKey(type?)`: the ids of the references of that type.
fn reference_keys<'a>(input: &[Item<'a>], ty: Option<&str>) -> Vec<Item<'a>> {
    input
        .iter()
        .filter_map(|i| {
            let reference = i.as_object()?.get("reference")?.as_str()?;
            reference_key(reference, ty)
        })
        .map(|id| Item::Str(Cow::Borrowed(id)))
        .collect()
}

/// The child elements of `item` (arrays flattened, `null`s left out).
fn children<'a>(item: &Item<'a>, out: &mut Vec<Item<'a>>) {
    if let Some(obj) = item.as_object() {
        for v in obj.values() {
            out.extend(elements(v).map(|x| Item::Json(x, None)));
        }
    }
}

/// `children()`: the child elements of every item.
fn children_of<'a>(input: &[Item<'a>]) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    for item in input {
        children(item, &mut out);
    }
    out
}

/// `descendants()`: children, their children, and so on.
fn descendants<'a>(input: &[Item<'a>]) -> Vec<Item<'a>> {
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

/// `iif(condition, then, otherwise?)`: only the chosen branch is evaluated.
fn iif<'a>(
    cond: &'a Node,
    then: &'a Node,
    otherwise: Option<&'a Node>,
    a: &Args<'_, 'a>,
) -> EvalResult<Vec<Item<'a>>> {
    if truth(&a.arg(cond)?, "iif()")? == Some(true) {
        a.arg(then)
    } else {
        match otherwise {
            Some(o) => a.arg(o),
            None => Ok(Vec::new()),
        }
    }
}

/// `join(separator?)`: the string items joined.
fn join<'a>(sep: Option<&'a Node>, a: &Args<'_, 'a>) -> EvalResult<Vec<Item<'a>>> {
    let sep = match sep {
        Some(s) => a.arg_str(s, "join()")?.unwrap_or_default(),
        None => String::new(),
    };
    let parts: Vec<&str> = a.input.iter().filter_map(Item::as_str).collect();
    Ok(vec![Item::Str(Cow::Owned(parts.join(&sep)))])
}

/// The text of a primitive item (`None` for objects).
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

/// `startsWith()`, `endsWith()`, `contains()` (named `what`): `test` of the input string and
/// the argument.
fn string_test<'a>(
    needle: &'a Node,
    a: &Args<'_, 'a>,
    what: &'static str,
    test: impl Fn(&str, &str) -> bool,
) -> EvalResult<Vec<Item<'a>>> {
    let Some(text) = a.single(what)? else { return Ok(Vec::new()) };
    let Some(text) = text.as_str() else {
        return Err(Box::new(EvalError::NotAString { operation: what, found: text.kind() }));
    };
    let Some(needle) = a.arg_str(needle, what)? else { return Ok(Vec::new()) };
    Ok(vec![Item::Bool(test(text, &needle))])
}

/// `lower()`, `upper()` (named `what`): the input string recased (empty for a non-string).
fn change_case<'a>(
    a: &Args<'_, 'a>,
    what: &'static str,
    recase: impl Fn(&str) -> String,
) -> EvalResult<Vec<Item<'a>>> {
    Ok(a.single(what)?
        .and_then(|i| i.as_str().map(&recase))
        .map(|s| Item::Str(Cow::Owned(s)))
        .into_iter()
        .collect())
}

/// `substring(start, length?)`, counted in characters.
fn substring<'a>(start: &'a Node, len: Option<&'a Node>, a: &Args<'_, 'a>) -> EvalResult<Vec<Item<'a>>> {
    let Some(text) = a.single("substring()")? else { return Ok(Vec::new()) };
    let Some(text) = text.as_str() else {
        return Err(Box::new(EvalError::NotAString { operation: "substring()", found: text.kind() }));
    };
    let start = a.arg_int(start, "substring()")?;
    let chars: Vec<char> = text.chars().collect();
    if start >= chars.len() {
        return Ok(Vec::new());
    }
    let end = match len {
        Some(l) => start.saturating_add(a.arg_int(l, "substring()")?).min(chars.len()),
        None => chars.len(),
    };
    Ok(vec![Item::Str(Cow::Owned(chars[start..end].iter().collect()))])
}

/// `replace(pattern, substitution)`: every occurrence replaced.
fn replace<'a>(pattern: &'a Node, with: &'a Node, a: &Args<'_, 'a>) -> EvalResult<Vec<Item<'a>>> {
    let Some(text) = a.single("replace()")? else { return Ok(Vec::new()) };
    let Some(text) = text.as_str() else {
        return Err(Box::new(EvalError::NotAString { operation: "replace()", found: text.kind() }));
    };
    let (Some(pattern), Some(with)) = (a.arg_str(pattern, "replace()")?, a.arg_str(with, "replace()")?)
    else {
        return Ok(Vec::new());
    };
    Ok(vec![Item::Str(Cow::Owned(text.replace(&pattern, &with)))])
}

/// `toInteger()`: an integer, a string of one, or a boolean as 0/1.
fn to_integer<'a>(a: &Args<'_, 'a>) -> EvalResult<Vec<Item<'a>>> {
    let Some(i) = a.single("toInteger()")? else { return Ok(Vec::new()) };
    Ok(match (i.as_num(), i.as_str(), i.as_bool()) {
        (Some(Num::Int(n)), _, _) => vec![Item::Int(n)],
        (_, Some(s), _) => s.parse::<i64>().ok().map(Item::Int).into_iter().collect(),
        (_, _, Some(b)) => vec![Item::Int(i64::from(b))],
        _ => Vec::new(),
    })
}

/// `toDecimal()`: a number, a string of one, or a boolean as 1.0/0.0.
fn to_decimal<'a>(a: &Args<'_, 'a>) -> EvalResult<Vec<Item<'a>>> {
    let Some(i) = a.single("toDecimal()")? else { return Ok(Vec::new()) };
    Ok(match (i.as_num(), i.as_str(), i.as_bool()) {
        (Some(n), _, _) => vec![Item::Dec(n.as_decimal())],
        (_, Some(s), _) => s.trim().parse::<Decimal>().ok().map(Item::Dec).into_iter().collect(),
        (_, _, Some(b)) => Decimal::new(if b { 10 } else { 0 }, 1).map(Item::Dec).into_iter().collect(),
        _ => Vec::new(),
    })
}
