//! The FHIRPath subset SQL-on-FHIR v2 views need, evaluated over `serde_json::Value`.
//!
//! Pipeline: `lexer` (hand-written tokenizer) → `parser` (Pratt parser that also resolves
//! function names, `%constants` and type names) → `ast::Node` (compiled once per view) →
//! `eval` (tree walk over borrowed JSON, no copying of the resource).
//!
//! Data model: a collection is a `Vec` of `value::Item`s. Navigation flattens JSON arrays and
//! drops `null`s. A missing member `name` falls back to the choice element `name<Type>`
//! (`value` → `valueQuantity`), and the item remembers its FHIR type, which is what `ofType()`
//! tests. Untyped JSON nodes are typed by their JSON shape (lenient for strings and objects,
//! since there is no schema).
//!
//! Supported: paths, indexers, `$this`, `$index`, `%constants`, `%rowIndex`, `%resource`,
//! literals (string, integer, decimal, boolean, `@date`, `{}`), all FHIRPath operators except
//! quantity arithmetic, and the functions listed in `ast::Call`: `where`, `select`, `repeat`,
//! `exists`, `all`, `empty`, `first`, `last`, `tail`, `skip`, `take`, `count`, `distinct`,
//! `ofType`, `is`, `as`, `extension`, `join`, `getResourceKey`, `getReferenceKey`,
//! `lowBoundary`, `highBoundary`, `not`, `hasValue`, `iif`, `toString`, `startsWith`,
//! `endsWith`, `contains`, `lower`, `upper`, `length`, `allTrue`, `anyTrue`, `allFalse`,
//! `anyFalse`, `children`, `descendants`, `substring`, `replace`, `toInteger`, `toDecimal`.

mod ast;
mod boundary;
mod error;
mod eval;
mod functions;
mod lexer;
mod parser;
mod value;

use serde_json::Value;

pub use error::{EvalError, Found, FunctionError, SyntaxError};
pub(crate) use eval::{Constant, Env};
pub(crate) use value::{Item, static_type};

use crate::error::{Error, Result};

/// A compiled FHIRPath expression.
#[derive(Debug, Clone)]
pub(crate) struct Expr {
    text: String,
    node: ast::Node,
}

impl Expr {
    /// Compiles `text`; `constants` are the `%names` it may use.
    pub(crate) fn compile(text: &str, constants: &[String]) -> Result<Expr> {
        Ok(Expr { text: text.to_string(), node: parser::parse(text, constants)? })
    }

    /// The source text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Evaluates with `focus` as the input collection, appending the result to `out`.
    pub(crate) fn eval_into<'a>(
        &'a self,
        focus: &[Item<'a>],
        env: &Env<'a>,
        out: &mut Vec<Item<'a>>,
    ) -> Result<()> {
        eval::eval_into(&self.node, focus, env, 0, out).map_err(|source| self.failed(*source))
    }

    /// Evaluates with `focus` as the input collection.
    pub(crate) fn eval<'a>(&'a self, focus: &[Item<'a>], env: &Env<'a>) -> Result<Vec<Item<'a>>> {
        eval::eval(&self.node, focus, env, 0).map_err(|source| self.failed(*source))
    }

    /// The crate error for a failed evaluation of this expression.
    #[cold]
    fn failed(&self, source: EvalError) -> Error {
        Error::Evaluation { expression: self.text.clone(), source }
    }
}

/// Evaluates a standalone expression against a resource (no constants); for tests and tooling.
pub fn evaluate_json(expression: &str, resource: &Value) -> Result<Vec<Value>> {
    let expr = Expr::compile(expression, &[])?;
    let env = Env::new(resource, &[]);
    let out = expr.eval(&[Item::Json(resource, None)], &env)?;
    Ok(out.iter().map(Item::to_json).collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::evaluate_json;

    fn ev(expr: &str, res: &serde_json::Value) -> Vec<serde_json::Value> {
        evaluate_json(expr, res).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    /// Choice elements resolve through `ofType`, and navigation flattens arrays.
    #[test]
    fn navigation_and_choice() {
        let obs = json!({"resourceType": "Observation", "id": "o1",
            "valueQuantity": {"value": 7.2, "unit": "mmol/L"},
            "category": [{"coding": [{"code": "laboratory"}]}, {"coding": [{"code": "x"}]}]});
        assert_eq!(ev("value.ofType(Quantity).value", &obs), vec![json!(7.2)]);
        assert_eq!(ev("value.ofType(string)", &obs), Vec::<serde_json::Value>::new());
        assert_eq!(ev("category.coding.code", &obs), vec![json!("laboratory"), json!("x")]);
        assert_eq!(ev("Observation.category[1].coding.code", &obs), vec![json!("x")]);
        assert_eq!(ev("(value as Quantity).unit", &obs), vec![json!("mmol/L")]);
    }

    /// Arithmetic, comparison and three-valued logic behave as FHIRPath specifies.
    #[test]
    fn operators() {
        let r = json!({"a": 2, "b": 3.5, "s": "x"});
        assert_eq!(ev("a + b", &r), vec![json!(5.5)]);
        assert_eq!(ev("7 div 2", &r), vec![json!(3)]);
        assert_eq!(ev("7 mod 2", &r), vec![json!(1)]);
        assert_eq!(ev("a / 4", &r), vec![json!(0.5)]);
        assert_eq!(ev("s & 'y'", &r), vec![json!("xy")]);
        assert_eq!(ev("missing and false", &r), vec![json!(false)]);
        assert_eq!(ev("missing or false", &r), Vec::<serde_json::Value>::new());
        assert_eq!(ev("false implies missing", &r), vec![json!(true)]);
        assert_eq!(ev("a < b and (true xor false)", &r), vec![json!(true)]);
        assert_eq!(ev("(1 | 2 | 1).count()", &r), vec![json!(2)]);
        assert_eq!(ev("2 in (1 | 2)", &r), vec![json!(true)]);
        assert_eq!(ev("@2020-01-01 < @2020-02", &r), vec![json!(true)]);
    }

    /// Collection functions: where/select/exists/first/join/iif.
    #[test]
    fn functions() {
        let p = json!({"name": [{"use": "official", "given": ["A", "B"]}, {"use": "usual", "given": ["C"]}]});
        assert_eq!(ev("name.where(use = 'usual').given", &p), vec![json!("C")]);
        assert_eq!(ev("name.select(given.first())", &p), vec![json!("A"), json!("C")]);
        assert_eq!(ev("name.exists(use = 'nickname')", &p), vec![json!(false)]);
        assert_eq!(ev("name.given.join('|')", &p), vec![json!("A|B|C")]);
        assert_eq!(ev("iif(name.count() > 1, 'many', 'one')", &p), vec![json!("many")]);
        assert_eq!(ev("name.given.where($index = 1)", &p), vec![json!("B")]);
        assert_eq!(ev("name.given.tail().take(1)", &p), vec![json!("B")]);
        assert_eq!(ev("'2019-05-28'.substring(0, 4).toInteger() + 1", &p), vec![json!(2020)]);
        assert_eq!(ev("'a-b-c'.replace('-', '')", &p), vec![json!("abc")]);
        assert_eq!(ev("'1.5'.toDecimal() * 2", &p), vec![json!(3.0)]);
        assert_eq!(ev("'abc'.substring(5)", &p), Vec::<serde_json::Value>::new());
    }

    /// Comparing a multi-valued operand is an error, not a silent result.
    #[test]
    fn multi_valued_comparison_fails() {
        let p = json!({"name": [{"family": "a"}, {"family": "b"}]});
        assert!(evaluate_json("name.family > 'a'", &p).is_err());
    }

    /// The typed evaluation error costs the success path nothing: a step's `Result` is no
    /// larger than the collection it carries (the error is boxed, and only built on failure).
    #[test]
    fn eval_result_is_as_small_as_its_collection() {
        use std::mem::size_of;
        assert_eq!(
            size_of::<super::eval::EvalResult<Vec<super::Item<'static>>>>(),
            size_of::<Vec<super::Item<'static>>>()
        );
    }
}
