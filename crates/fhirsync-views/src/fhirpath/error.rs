//! What can go wrong in a FHIRPath expression, without the expression itself: the crate's
//! [`Error`](crate::Error) adds the expression (and the character offset) and keeps these as its
//! `source`. Every field is a `'static` text, a number or a token of the expression, so building
//! one costs nothing until an expression actually fails.

use std::fmt;

use super::lexer::Tok;

/// A token of an expression, as an error names it (`identifier `x``, `` `)` ``, the end).
#[derive(Debug, Clone, PartialEq)]
pub struct Found(pub(crate) Option<Tok>);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("end of expression"),
            Some(Tok::Ident(s)) => write!(f, "identifier `{s}`"),
            Some(Tok::Str(s)) => write!(f, "string '{s}'"),
            Some(Tok::Int(i)) => write!(f, "number {i}"),
            Some(Tok::Dec(d)) => write!(f, "number {d}"),
            Some(Tok::Temporal(s)) => write!(f, "@{s}"),
            Some(Tok::Env(s)) => write!(f, "%{s}"),
            Some(Tok::Special(s)) => write!(f, "${s}"),
            Some(Tok::Sym(s)) => write!(f, "`{s}`"),
        }
    }
}

/// A FHIRPath syntax error: why the text is not an expression.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SyntaxError {
    /// `@` not followed by a date or time.
    #[error("`@` must start a date/time literal such as @2020-01-01 or @T10:00")]
    BareAt,
    /// `%` not followed by a name.
    #[error("`%` must be followed by a variable name")]
    MissingVariableName,
    /// `$name` other than `$this`, `$index`, `$total`.
    #[error("unknown special variable `${name}`")]
    UnknownSpecialVariable {
        /// The name after `$`.
        name: String,
    },
    /// An integer literal that does not fit 64 bits.
    #[error("integer `{digits}` is too large")]
    IntegerTooLarge {
        /// The literal.
        digits: String,
    },
    /// A character that starts no token.
    #[error("unexpected character `{found}`")]
    UnexpectedCharacter {
        /// The character.
        found: char,
    },
    /// `\u` not followed by four hex digits of a character.
    #[error("invalid unicode escape `\\u{hex}`")]
    InvalidUnicodeEscape {
        /// The (up to four) characters after `\u`.
        hex: String,
    },
    /// A string or delimited identifier without its closing quote.
    #[error("unterminated {quote}-quoted text")]
    Unterminated {
        /// The quote character (`'` or `` ` ``).
        quote: char,
    },
    /// A token where none may stand (a dangling operator, two names in a row, the end).
    #[error("unexpected {found}")]
    Unexpected {
        /// The token.
        found: Found,
    },
    /// Another token than the required punctuation.
    #[error("expected `{expected}`, found {found}")]
    Expected {
        /// The required symbol.
        expected: &'static str,
        /// What stands there.
        found: Found,
    },
    /// `.` not followed by a name.
    #[error("expected a name after `.`, found {found}")]
    ExpectedName {
        /// What follows the dot.
        found: Found,
    },
    /// `is`, `as`, `ofType(` not followed by a type name.
    #[error("expected a type name, found {found}")]
    ExpectedTypeName {
        /// What stands there.
        found: Found,
    },
    /// A decimal literal out of range (more than 38 significant digits).
    #[error("bad number `{text}`")]
    BadNumber {
        /// The literal.
        text: String,
    },
    /// A date/time literal that is neither a date, a date-time nor a time.
    #[error("bad date/time `@{text}`")]
    BadDateTime {
        /// The literal after `@`.
        text: String,
    },
}

/// A function call the engine cannot compile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum FunctionError {
    /// A function FHIRPath defines but this subset does not support, or no function at all.
    #[error("function `{function}()` is not supported")]
    Unsupported {
        /// The name called.
        function: String,
    },
    /// A supported function called with another number of arguments than it takes.
    #[error("`{function}()` does not take {count} argument(s)")]
    Arity {
        /// The function.
        function: &'static str,
        /// The number of arguments given.
        count: usize,
    },
    /// `ofType()`, `is()`, `as()` without their type name.
    #[error("`{function}()` needs a type name argument")]
    NeedsTypeName {
        /// The function.
        function: &'static str,
    },
    /// `$total` (only meaningful in `aggregate()`, which is not supported).
    #[error("`$total` (aggregate) is not supported")]
    Total,
}

/// A failure while evaluating an expression on a resource: an operand the FHIRPath
/// specification makes an error. `operation` names the operator or function (`where()`,
/// `comparison`, `substring()`...); `found` is the kind of the offending item (`a number`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A `%constant` index the view does not have (a compiled expression used with the
    /// constants of another view).
    #[error("constant #{index} is not defined")]
    UndefinedConstant {
        /// Position in the view's constant list.
        index: usize,
    },
    /// An indexer (`x[i]`) whose index is a decimal.
    #[error("an index must be an integer")]
    DecimalIndex,
    /// Unary minus on something that is not a number.
    #[error("cannot negate {found}")]
    CannotNegate {
        /// Kind of the operand.
        found: &'static str,
    },
    /// An operand or input that must be a single value holds several.
    #[error("{operation} expects a single value but got {count}")]
    NotSingle {
        /// The operator or function.
        operation: &'static str,
        /// How many values it got.
        count: usize,
    },
    /// A boolean operand or criterion that holds several values.
    #[error("{operation} expects a single boolean but got {count} values")]
    NotSingleBoolean {
        /// The operator or function.
        operation: &'static str,
        /// How many values it got.
        count: usize,
    },
    /// An argument that must be an integer is not.
    #[error("{operation} needs an integer argument")]
    NeedsInteger {
        /// The function.
        operation: &'static str,
    },
    /// `extension()` whose argument is not a URL string.
    #[error("{operation} needs a url string")]
    NeedsUrl {
        /// The function.
        operation: &'static str,
    },
    /// A string function applied to something else than a string.
    #[error("{operation} on a non-string ({found})")]
    NotAString {
        /// The function.
        operation: &'static str,
        /// Kind of the input.
        found: &'static str,
    },
    /// Arithmetic on operands that are not numbers (or, for `+`, not two strings).
    #[error("cannot apply arithmetic to {left} and {right}")]
    Arithmetic {
        /// Kind of the left operand.
        left: &'static str,
        /// Kind of the right operand.
        right: &'static str,
    },
    /// Decimal arithmetic whose result does not fit 38 digits.
    #[error("the result of decimal arithmetic exceeds 38 digits")]
    DecimalOverflow,
}
