//! Pratt parser: tokens → [`Node`], resolving functions, constants and type names on the way.
//!
//! Operator precedence follows the FHIRPath specification (tightest first): `.`/`[]`, unary `-`,
//! `* / div mod`, `+ - &`, `is as`, `|`, `< > <= >=`, `= ~ != !~`, `in contains`, `and`,
//! `or xor`, `implies`.

use super::ast::{BinOp, Call, Lit, Node, Step};
use super::error::{Found, FunctionError, SyntaxError};
use super::lexer::{Spanned, Tok, tokenize};
use super::value::{Temporal, choice_suffixes};
use crate::error::{Error, Result};

/// Binding power of postfix `.` and `[`.
const POSTFIX_BP: u8 = 30;
/// Binding power of unary minus/plus.
const PREFIX_BP: u8 = 25;

/// Parses `src`; `constants` are the names `%name` may refer to (index = position).
pub(crate) fn parse(src: &str, constants: &[String]) -> Result<Node> {
    let toks = tokenize(src)?;
    let mut p = Parser { src, toks, at: 0, constants };
    let node = p.expr(0)?;
    if let Some(t) = p.toks.get(p.at) {
        return Err(p.syntax(t.pos, SyntaxError::Unexpected { found: Found(Some(t.tok.clone())) }));
    }
    Ok(node)
}

struct Parser<'s> {
    src: &'s str,
    toks: Vec<Spanned>,
    at: usize,
    constants: &'s [String],
}

/// Infix operator binding powers (left, right).
fn infix(t: &Tok) -> Option<(BinOp, u8, u8)> {
    let (op, bp) = match t {
        Tok::Sym("*") => (BinOp::Mul, 20),
        Tok::Sym("/") => (BinOp::Div, 20),
        Tok::Ident(s) if s == "div" => (BinOp::IntDiv, 20),
        Tok::Ident(s) if s == "mod" => (BinOp::Mod, 20),
        Tok::Sym("+") => (BinOp::Add, 18),
        Tok::Sym("-") => (BinOp::Sub, 18),
        Tok::Sym("&") => (BinOp::Concat, 18),
        Tok::Sym("|") => (BinOp::Union, 14),
        Tok::Sym("<") => (BinOp::Lt, 12),
        Tok::Sym(">") => (BinOp::Gt, 12),
        Tok::Sym("<=") => (BinOp::Le, 12),
        Tok::Sym(">=") => (BinOp::Ge, 12),
        Tok::Sym("=") => (BinOp::Eq, 10),
        Tok::Sym("!=") => (BinOp::Ne, 10),
        Tok::Sym("~") => (BinOp::Equiv, 10),
        Tok::Sym("!~") => (BinOp::NotEquiv, 10),
        Tok::Ident(s) if s == "in" => (BinOp::In, 8),
        Tok::Ident(s) if s == "contains" => (BinOp::Contains, 8),
        Tok::Ident(s) if s == "and" => (BinOp::And, 6),
        Tok::Ident(s) if s == "or" => (BinOp::Or, 4),
        Tok::Ident(s) if s == "xor" => (BinOp::Xor, 4),
        Tok::Ident(s) if s == "implies" => (BinOp::Implies, 2),
        _ => return None,
    };
    Some((op, bp, bp + 1))
}

/// Binding power of the `is` / `as` type operators.
const TYPE_OP_BP: u8 = 16;

impl Parser<'_> {
    fn syntax(&self, position: usize, source: SyntaxError) -> Error {
        Error::Syntax { expression: self.src.to_string(), position, source }
    }

    fn func_err(&self, position: usize, source: FunctionError) -> Error {
        Error::Function { expression: self.src.to_string(), position, source }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at).map(|t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.at).map_or(self.src.chars().count(), |t| t.pos)
    }

    fn next(&mut self) -> Result<Tok> {
        let t = self
            .toks
            .get(self.at)
            .ok_or_else(|| self.syntax(self.pos(), SyntaxError::Unexpected { found: Found(None) }))?;
        self.at += 1;
        Ok(t.tok.clone())
    }

    fn expect(&mut self, sym: &'static str) -> Result<()> {
        let pos = self.pos();
        match self.peek() {
            Some(Tok::Sym(s)) if *s == sym => {
                self.at += 1;
                Ok(())
            }
            other => {
                let found = Found(other.cloned());
                Err(self.syntax(pos, SyntaxError::Expected { expected: sym, found }))
            }
        }
    }

    fn expr(&mut self, min_bp: u8) -> Result<Node> {
        let mut lhs = self.prefix()?;
        while let Some(tok) = self.peek() {
            match tok {
                Tok::Sym(".") => {
                    if POSTFIX_BP < min_bp {
                        break;
                    }
                    self.at += 1;
                    let pos = self.pos();
                    let name = match self.next()? {
                        Tok::Ident(n) => n,
                        other => {
                            return Err(
                                self.syntax(pos, SyntaxError::ExpectedName { found: Found(Some(other)) })
                            );
                        }
                    };
                    lhs = self.member_or_call(Some(lhs), name, pos)?;
                }
                Tok::Sym("[") => {
                    if POSTFIX_BP < min_bp {
                        break;
                    }
                    self.at += 1;
                    let index = self.expr(0)?;
                    self.expect("]")?;
                    lhs = Node::Indexer(Box::new(lhs), Box::new(index));
                }
                Tok::Ident(s) if s == "is" || s == "as" => {
                    if TYPE_OP_BP < min_bp {
                        break;
                    }
                    let is = s == "is";
                    self.at += 1;
                    let ty = self.type_specifier()?;
                    lhs = if is { Node::Is(Box::new(lhs), ty) } else { Node::As(Box::new(lhs), ty) };
                }
                t => {
                    let Some((op, lbp, rbp)) = infix(t) else { break };
                    if lbp < min_bp {
                        break;
                    }
                    self.at += 1;
                    let rhs = self.expr(rbp)?;
                    lhs = Node::Bin(op, Box::new(lhs), Box::new(rhs));
                }
            }
        }
        Ok(lhs)
    }

    fn prefix(&mut self) -> Result<Node> {
        let pos = self.pos();
        Ok(match self.next()? {
            Tok::Int(i) => Node::Lit(Lit::Int(i)),
            Tok::Dec(d) => {
                let Ok(d) = d.parse() else {
                    return Err(self.syntax(pos, SyntaxError::BadNumber { text: d }));
                };
                Node::Lit(Lit::Dec(d))
            }
            Tok::Str(s) => Node::Lit(Lit::Str(s)),
            Tok::Temporal(s) => match temporal_literal(&s) {
                Some(node) => node,
                None => return Err(self.syntax(pos, SyntaxError::BadDateTime { text: s })),
            },
            Tok::Special(s) => match s.as_str() {
                "this" => Node::This,
                "index" => Node::Index,
                _ => return Err(self.func_err(pos, FunctionError::Total)),
            },
            Tok::Env(name) => self.env(name, pos)?,
            Tok::Sym("(") => {
                let inner = self.expr(0)?;
                self.expect(")")?;
                inner
            }
            Tok::Sym("{}") => Node::Empty,
            Tok::Sym("-") => Node::Neg(Box::new(self.expr(PREFIX_BP)?)),
            Tok::Sym("+") => self.expr(PREFIX_BP)?,
            Tok::Ident(name) => match name.as_str() {
                "true" => Node::Lit(Lit::Bool(true)),
                "false" => Node::Lit(Lit::Bool(false)),
                _ => self.member_or_call(None, name, pos)?,
            },
            other => return Err(self.syntax(pos, SyntaxError::Unexpected { found: Found(Some(other)) })),
        })
    }

    /// `%name` at `position`: a view constant, a standard variable, or an error.
    fn env(&self, name: String, position: usize) -> Result<Node> {
        if let Some(i) = self.constants.iter().position(|c| *c == name) {
            return Ok(Node::Const(i));
        }
        Ok(match name.as_str() {
            "rowIndex" => Node::RowIndex,
            "resource" | "rootResource" | "context" => Node::Resource,
            "ucum" => Node::Lit(Lit::Str("http://unitsofmeasure.org".into())),
            "sct" => Node::Lit(Lit::Str("http://snomed.info/sct".into())),
            "loinc" => Node::Lit(Lit::Str("http://loinc.org".into())),
            _ => return Err(Error::UndefinedConstant { name, expression: self.src.to_string(), position }),
        })
    }

    /// A (possibly dotted) type name such as `Quantity`, `FHIR.Quantity`, `System.String`.
    fn type_specifier(&mut self) -> Result<String> {
        let pos = self.pos();
        let mut parts = Vec::new();
        loop {
            match self.next()? {
                Tok::Ident(n) => parts.push(n),
                other => {
                    return Err(self.syntax(pos, SyntaxError::ExpectedTypeName { found: Found(Some(other)) }));
                }
            }
            if self.peek() == Some(&Tok::Sym(".")) {
                self.at += 1;
            } else {
                break;
            }
        }
        Ok(canonical_type(&parts.join(".")))
    }

    /// `name` (at `pos`) after `base`: a path step, or a call when `(` follows.
    fn member_or_call(&mut self, base: Option<Node>, name: String, pos: usize) -> Result<Node> {
        if self.peek() != Some(&Tok::Sym("(")) {
            // Fold `a.b.c` into one path.
            return Ok(match base {
                Some(Node::Path(b, mut steps)) => {
                    steps.push(Step::Child(name));
                    Node::Path(b, steps)
                }
                other => Node::Path(other.map(Box::new), vec![Step::Child(name)]),
            });
        }
        self.at += 1;
        let call = self.call(&name, pos)?;
        // `x.name.ofType(T)` becomes a direct choice lookup.
        if let (Call::OfType(ty), Some(Node::Path(b, mut steps))) = (&call, base.clone())
            && let Some(Step::Child(last)) = steps.pop()
        {
            steps.push(Step::Choice { name: last, ty: ty.clone(), suffixes: choice_suffixes(ty) });
            return Ok(Node::Path(b, steps));
        }
        Ok(Node::Call(base.map(Box::new), Box::new(call)))
    }

    /// Parses the arguments of `name(` (`name` at `pos`) up to and including `)`.
    fn call(&mut self, name: &str, pos: usize) -> Result<Call> {
        // Type-specifier arguments are names, not expressions.
        if matches!(name, "ofType" | "is" | "as" | "getReferenceKey") {
            return self.type_call(name, pos);
        }
        let args = self.arguments()?;
        let count = args.len();
        match call_of(name, args) {
            Some(call) => Ok(call),
            None => Err(self.func_err(
                pos,
                match KNOWN_FUNCTIONS.iter().find(|f| **f == name) {
                    Some(function) => FunctionError::Arity { function, count },
                    None => FunctionError::Unsupported { function: name.to_string() },
                },
            )),
        }
    }

    /// The type-name argument of `ofType`, `is`, `as` (required) or `getReferenceKey` (optional),
    /// up to and including `)`.
    fn type_call(&mut self, name: &str, pos: usize) -> Result<Call> {
        let ty = if self.peek() == Some(&Tok::Sym(")")) { None } else { Some(self.type_specifier()?) };
        self.expect(")")?;
        match (name, ty) {
            ("getReferenceKey", ty) => Ok(Call::ReferenceKey(ty)),
            ("ofType", Some(t)) => Ok(Call::OfType(t)),
            ("is", Some(t)) => Ok(Call::Is(t)),
            ("as", Some(t)) => Ok(Call::As(t)),
            (_, None) => {
                Err(self.func_err(pos, FunctionError::NeedsTypeName { function: type_function(name) }))
            }
            (other, Some(_)) => {
                Err(self.func_err(pos, FunctionError::Unsupported { function: other.to_string() }))
            }
        }
    }

    /// Comma-separated expressions up to and including `)`.
    fn arguments(&mut self) -> Result<Vec<Node>> {
        let mut args = Vec::new();
        if self.peek() != Some(&Tok::Sym(")")) {
            loop {
                args.push(self.expr(0)?);
                if self.peek() == Some(&Tok::Sym(",")) {
                    self.at += 1;
                } else {
                    break;
                }
            }
        }
        self.expect(")")?;
        Ok(args)
    }
}

/// The function `name` applied to `args`; `None` when the name or the number of arguments is
/// not one FHIRPath (as supported here) defines.
fn call_of(name: &str, args: Vec<Node>) -> Option<Call> {
    let n = args.len();
    let mut args = args.into_iter();
    let mut arg = || args.next();
    Some(match (name, n) {
        ("where", 1) => Call::Where(arg().unwrap_or(Node::Empty)),
        ("select", 1) => Call::Select(arg().unwrap_or(Node::Empty)),
        ("repeat", 1) => Call::Repeat(arg().unwrap_or(Node::Empty)),
        ("exists", 0 | 1) => Call::Exists(arg()),
        ("all", 1) => Call::All(arg().unwrap_or(Node::Empty)),
        ("empty", 0) => Call::Empty,
        ("first", 0) => Call::First,
        ("last", 0) => Call::Last,
        ("tail", 0) => Call::Tail,
        ("skip", 1) => Call::Skip(arg().unwrap_or(Node::Empty)),
        ("take", 1) => Call::Take(arg().unwrap_or(Node::Empty)),
        ("count", 0) => Call::Count,
        ("distinct", 0) => Call::Distinct,
        ("extension", 1) => Call::Extension(arg().unwrap_or(Node::Empty)),
        ("join", 0 | 1) => Call::Join(arg()),
        ("getResourceKey", 0) => Call::ResourceKey,
        ("lowBoundary", 0) => Call::LowBoundary,
        ("highBoundary", 0) => Call::HighBoundary,
        ("not", 0) => Call::Not,
        ("hasValue", 0) => Call::HasValue,
        ("iif", 2 | 3) => {
            let cond = arg().unwrap_or(Node::Empty);
            let then = arg().unwrap_or(Node::Empty);
            Call::Iif(cond, then, arg())
        }
        ("toString", 0) => Call::ToString,
        ("startsWith", 1) => Call::StartsWith(arg().unwrap_or(Node::Empty)),
        ("endsWith", 1) => Call::EndsWith(arg().unwrap_or(Node::Empty)),
        ("contains", 1) => Call::ContainsStr(arg().unwrap_or(Node::Empty)),
        ("lower", 0) => Call::Lower,
        ("upper", 0) => Call::Upper,
        ("length", 0) => Call::Length,
        ("allTrue", 0) => Call::AllTrue,
        ("anyTrue", 0) => Call::AnyTrue,
        ("allFalse", 0) => Call::AllFalse,
        ("anyFalse", 0) => Call::AnyFalse,
        ("children", 0) => Call::Children,
        ("descendants", 0) => Call::Descendants,
        ("substring", 1 | 2) => {
            let start = arg().unwrap_or(Node::Empty);
            Call::Substring(start, arg())
        }
        ("replace", 2) => {
            let pattern = arg().unwrap_or(Node::Empty);
            Call::Replace(pattern, arg().unwrap_or(Node::Empty))
        }
        ("toInteger", 0) => Call::ToInteger,
        ("toDecimal", 0) => Call::ToDecimal,
        _ => return None,
    })
}

/// Every function name [`Parser::call`] accepts (for arity errors).
const KNOWN_FUNCTIONS: [&str; 41] = [
    "where",
    "select",
    "repeat",
    "exists",
    "all",
    "empty",
    "first",
    "last",
    "tail",
    "skip",
    "take",
    "count",
    "distinct",
    "extension",
    "join",
    "getResourceKey",
    "lowBoundary",
    "highBoundary",
    "not",
    "hasValue",
    "iif",
    "toString",
    "startsWith",
    "endsWith",
    "contains",
    "lower",
    "upper",
    "length",
    "allTrue",
    "anyTrue",
    "allFalse",
    "anyFalse",
    "children",
    "descendants",
    "substring",
    "replace",
    "toInteger",
    "toDecimal",
    "ofType",
    "is",
    "as",
];

/// The `'static` name of a type function (`ofType`, `is`, `as`) for its errors.
fn type_function(name: &str) -> &'static str {
    match name {
        "is" => "is",
        "as" => "as",
        _ => "ofType",
    }
}

/// Maps `FHIR.X` to `X` and `System.String` style names to FHIR primitive names.
fn canonical_type(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("FHIR.") {
        return rest.to_string();
    }
    match name.strip_prefix("System.") {
        Some("String") => "string".into(),
        Some("Integer") => "integer".into(),
        Some("Decimal") => "decimal".into(),
        Some("Boolean") => "boolean".into(),
        Some("Date") => "date".into(),
        Some("DateTime") => "dateTime".into(),
        Some("Time") => "time".into(),
        Some(other) => other.to_string(),
        None => name.to_string(),
    }
}

fn temporal_literal(s: &str) -> Option<Node> {
    if let Some(time) = s.strip_prefix('T') {
        return Some(Node::Lit(Lit::Temporal(Temporal::Time, time.to_string())));
    }
    let kind = if s.contains('T') { Temporal::DateTime } else { Temporal::Date };
    let text = s.strip_suffix('T').unwrap_or(s);
    if !text.as_bytes().first()?.is_ascii_digit() {
        return None;
    }
    Some(Node::Lit(Lit::Temporal(kind, text.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(src: &str) -> Node {
        parse(src, &["c".to_string()]).unwrap()
    }

    /// `and` binds tighter than `or`, and `=` tighter than `and`.
    #[test]
    fn precedence_of_logic_and_equality() {
        let n = p("a = 1 or b = 2 and c");
        let Node::Bin(BinOp::Or, _, rhs) = n else { panic!("top is not or: {n:?}") };
        assert!(matches!(*rhs, Node::Bin(BinOp::And, _, _)));
    }

    /// Multiplication binds tighter than addition, and both are left-associative.
    #[test]
    fn precedence_of_arithmetic() {
        let n = p("1 + 2 * 3 - 4");
        let Node::Bin(BinOp::Sub, lhs, _) = n else { panic!("top is not sub") };
        let Node::Bin(BinOp::Add, _, mul) = *lhs else { panic!("lhs is not add") };
        assert!(matches!(*mul, Node::Bin(BinOp::Mul, _, _)));
    }

    /// Functions resolve at compile time; unknown ones and undefined constants are errors.
    #[test]
    fn resolves_names() {
        assert!(matches!(p("name.where(use = %c).first()"), Node::Call(Some(_), _)));
        assert!(matches!(parse("name.frobnicate()", &[]), Err(Error::Function { .. })));
        assert!(matches!(parse("%missing", &[]), Err(Error::UndefinedConstant { .. })));
        assert!(matches!(parse("first(1)", &[]), Err(Error::Function { .. })));
    }

    /// Dangling operators and unbalanced parentheses are syntax errors.
    #[test]
    fn rejects_bad_syntax() {
        for bad in ["name.", "(a", "a +", "a b", "where(", "value.ofType()"] {
            assert!(parse(bad, &[]).is_err(), "{bad} parsed");
        }
    }
}
