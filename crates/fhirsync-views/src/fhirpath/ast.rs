//! Compiled FHIRPath syntax tree. Names are resolved at compile time: functions become [`Call`]
//! variants, `%constants` become indexes, type specifiers become canonical type names.

/// An expression node.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// `{}`.
    Empty,
    /// A literal.
    Lit(Lit),
    /// `$this`.
    This,
    /// `$index` inside `where`/`select`.
    Index,
    /// `%name` of a view constant (index into the constant table).
    Const(usize),
    /// `%rowIndex`.
    RowIndex,
    /// `%resource`, `%rootResource`, `%context`.
    Resource,
    /// Navigation `base.a.b.c` folded into one path (no intermediate collections);
    /// `base == None` navigates from the focus.
    Path(Option<Box<Node>>, Vec<Step>),
    /// Function invocation `base.fn(args)`; `base == None` applies to the focus.
    Call(Option<Box<Node>>, Box<Call>),
    /// `base[index]`.
    Indexer(Box<Node>, Box<Node>),
    /// Unary minus.
    Neg(Box<Node>),
    /// Binary operator.
    Bin(BinOp, Box<Node>, Box<Node>),
    /// `expr is Type`.
    Is(Box<Node>, String),
    /// `expr as Type`.
    As(Box<Node>, String),
}

/// One navigation step of a [`Node::Path`].
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// `.name`; falls back to a choice element `name<Type>` when `name` is absent.
    Child(String),
    /// `.name.ofType(T)` compiled to the choice-key suffixes that can hold a `T`
    /// (`value.ofType(Quantity)` → `Quantity`, `Age`, … of `valueQuantity`, `valueAge`), each
    /// paired with its type.
    Choice { name: String, ty: String, suffixes: Vec<(String, &'static str)> },
}

/// Literal values.
#[derive(Debug, Clone)]
pub(crate) enum Lit {
    Bool(bool),
    Int(i64),
    /// Decimal value (exact, with the scale written).
    Dec(crate::Decimal),
    Str(String),
    /// Date, dateTime or time literal text (without `@`/`T` prefix for time).
    Temporal(super::value::Temporal, String),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

/// Supported functions with their (compiled) arguments.
#[derive(Debug, Clone)]
pub(crate) enum Call {
    Where(Node),
    Select(Node),
    Repeat(Node),
    Exists(Option<Node>),
    All(Node),
    Empty,
    First,
    Last,
    Tail,
    Skip(Node),
    Take(Node),
    Count,
    Distinct,
    OfType(String),
    Is(String),
    As(String),
    Extension(Node),
    Join(Option<Node>),
    ResourceKey,
    ReferenceKey(Option<String>),
    LowBoundary,
    HighBoundary,
    Not,
    HasValue,
    Iif(Node, Node, Option<Node>),
    ToString,
    StartsWith(Node),
    EndsWith(Node),
    ContainsStr(Node),
    Lower,
    Upper,
    Length,
    AllTrue,
    AnyTrue,
    AllFalse,
    AnyFalse,
    Children,
    Descendants,
    Substring(Node, Option<Node>),
    Replace(Node, Node),
    ToInteger,
    ToDecimal,
}
