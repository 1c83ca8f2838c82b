//! FHIRPath values: borrowed JSON nodes (with the FHIR type learnt from a choice suffix) and
//! computed System values. Also the FHIR type tables used by choice resolution and `ofType`.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::{Number, Value};

use crate::Decimal;

/// Kind of a date/time value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Temporal {
    Date,
    DateTime,
    Time,
}

impl Temporal {
    fn type_name(self) -> &'static str {
        match self {
            Temporal::Date => "date",
            Temporal::DateTime => "dateTime",
            Temporal::Time => "time",
        }
    }
}

/// One item of a FHIRPath collection.
#[derive(Debug, Clone)]
pub(crate) enum Item<'a> {
    /// A node of the input resource (or a view constant) with its FHIR type when known
    /// (from a `value[x]` suffix such as `valueQuantity` → `Quantity`).
    Json(&'a Value, Option<&'static str>),
    Bool(bool),
    Int(i64),
    Dec(Decimal),
    Str(Cow<'a, str>),
    Temporal(Temporal, Cow<'a, str>),
}

/// A number seen through FHIRPath's integer/decimal lens.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Num {
    Int(i64),
    Dec(Decimal),
}

impl Num {
    /// The number as an exact decimal (integers at scale 0).
    pub(crate) fn as_decimal(self) -> Decimal {
        match self {
            Num::Int(i) => Decimal::from(i),
            Num::Dec(d) => d,
        }
    }
}

impl<'a> Item<'a> {
    /// Text of string-like items (strings, codes, dates…).
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Item::Json(Value::String(s), _) => Some(s),
            Item::Str(s) | Item::Temporal(_, s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_num(&self) -> Option<Num> {
        match self {
            Item::Json(Value::Number(n), _) => json_num(n),
            Item::Int(i) => Some(Num::Int(*i)),
            Item::Dec(d) => Some(Num::Dec(*d)),
            _ => None,
        }
    }

    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self {
            Item::Json(Value::Bool(b), _) => Some(*b),
            Item::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The JSON object behind this item, if it is one.
    pub(crate) fn as_object(&self) -> Option<&'a serde_json::Map<String, Value>> {
        match self {
            Item::Json(Value::Object(o), _) => Some(o),
            _ => None,
        }
    }

    /// The item as an output cell.
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Item::Json(v, _) => (*v).clone(),
            Item::Bool(b) => Value::Bool(*b),
            Item::Int(i) => Value::Number((*i).into()),
            Item::Dec(d) => decimal_json(*d),
            Item::Str(s) | Item::Temporal(_, s) => Value::String(s.to_string()),
        }
    }

    /// Short description for error messages (never the data itself).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Item::Json(Value::Object(_), _) => "an object",
            Item::Json(Value::String(_), _) | Item::Str(_) => "a string",
            Item::Json(Value::Number(_), _) | Item::Int(_) | Item::Dec(_) => "a number",
            Item::Json(Value::Bool(_), _) | Item::Bool(_) => "a boolean",
            Item::Temporal(..) => "a date/time",
            Item::Json(..) => "a JSON value",
        }
    }

    /// The temporal kind of this item: explicit, from its FHIR type, or guessed from its text.
    pub(crate) fn temporal_kind(&self) -> Option<Temporal> {
        match self {
            Item::Temporal(k, _) => Some(*k),
            Item::Json(Value::String(s), ty) => match ty {
                Some("date") => Some(Temporal::Date),
                Some("dateTime" | "instant") => Some(Temporal::DateTime),
                Some("time") => Some(Temporal::Time),
                Some(_) => None,
                None => guess_temporal(s),
            },
            _ => None,
        }
    }

    /// FHIRPath `is(T)`: does this item have type `ty` (or a subtype of it)?
    pub(crate) fn is_type(&self, ty: &str) -> bool {
        match self {
            Item::Bool(_) => ty == "boolean",
            Item::Int(_) => ty == "integer",
            Item::Dec(_) => ty == "decimal",
            Item::Str(_) => ty == "string",
            Item::Temporal(k, _) => ty == k.type_name(),
            Item::Json(v, Some(tag)) => {
                let _ = v;
                is_subtype(tag, ty)
            }
            Item::Json(v, None) => match v {
                Value::Bool(_) => ty == "boolean",
                Value::Number(n) if n.is_f64() => ty == "decimal",
                Value::Number(_) => matches!(ty, "integer" | "decimal" | "positiveInt" | "unsignedInt"),
                Value::String(s) => match guess_temporal(s) {
                    Some(k) if ty == k.type_name() => true,
                    _ => STRING_LIKE.contains(&ty),
                },
                Value::Object(o) => match o.get("resourceType").and_then(Value::as_str) {
                    Some(rt) => rt == ty || matches!(ty, "Resource" | "DomainResource"),
                    None => ty.starts_with(|c: char| c.is_ascii_uppercase()),
                },
                _ => false,
            },
        }
    }
}

/// A JSON number as FHIRPath sees it: an integer when written as one that fits `i64`, else an
/// exact decimal from its text (the literal as written, with serde_json's `arbitrary_precision`).
/// `None` for a number beyond [`crate::decimal::MAX_DIGITS`] digits: it then only passes through.
pub(crate) fn json_num(n: &Number) -> Option<Num> {
    if let Some(i) = n.as_i64() { Some(Num::Int(i)) } else { n.to_string().parse().ok().map(Num::Dec) }
}

/// A decimal as a JSON number holding its exact text (`1.50` stays `1.50`).
pub(crate) fn decimal_json(d: Decimal) -> Value {
    d.to_string().parse::<Number>().map_or(Value::Null, Value::Number)
}

/// Guesses date/dateTime/time from ISO text shape (`YYYY[-MM[-DD]]`, `…T…`, `hh:mm[:ss]`).
pub(crate) fn guess_temporal(s: &str) -> Option<Temporal> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|x| x.iter().all(u8::is_ascii_digit));
    if b.len() >= 5 && digits(0..2) && b[2] == b':' && digits(3..5) {
        return Some(Temporal::Time);
    }
    if !digits(0..4) {
        return None;
    }
    match b.len() {
        4 => Some(Temporal::Date),
        7 if b[4] == b'-' && digits(5..7) => Some(Temporal::Date),
        10 if b[4] == b'-' && b[7] == b'-' && digits(5..7) && digits(8..10) => Some(Temporal::Date),
        n if n > 10 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' => Some(Temporal::DateTime),
        _ => None,
    }
}

/// Primitive types whose JSON form is a string (`ofType(string)` etc. on untyped nodes).
const STRING_LIKE: [&str; 11] =
    ["string", "code", "id", "markdown", "uri", "url", "canonical", "oid", "uuid", "base64Binary", "xhtml"];

/// FHIR primitive types (R4 + R5 `integer64`).
const PRIMITIVES: [&str; 20] = [
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "integer64",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
];

/// FHIR complex data types that may appear as a choice (`value[x]`) suffix.
const COMPLEX: [&str; 40] = [
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "Availability",
    "CodeableConcept",
    "CodeableReference",
    "Coding",
    "ContactDetail",
    "ContactPoint",
    "Contributor",
    "Count",
    "DataRequirement",
    "Distance",
    "Dosage",
    "Duration",
    "Expression",
    "ExtendedContactDetail",
    "HumanName",
    "Identifier",
    "Meta",
    "Money",
    "MoneyQuantity",
    "ParameterDefinition",
    "Period",
    "Quantity",
    "Range",
    "Ratio",
    "RatioRange",
    "Reference",
    "RelatedArtifact",
    "SampledData",
    "Signature",
    "SimpleQuantity",
    "Timing",
    "TriggerDefinition",
    "UsageContext",
    "VirtualServiceDetail",
    "MonetaryComponent",
    "Narrative",
];

/// The FHIR type a choice-element suffix names (`Quantity` → `Quantity`, `DateTime` → `dateTime`).
pub(crate) fn suffix_type(suffix: &str) -> Option<&'static str> {
    let mut chars = suffix.chars();
    let first = chars.next()?;
    if !first.is_ascii_uppercase() {
        return None;
    }
    if let Some(p) = PRIMITIVES.iter().find(|p| {
        let mut pc = p.chars();
        pc.next().is_some_and(|c| c == first.to_ascii_lowercase()) && pc.as_str() == chars.as_str()
    }) {
        return Some(p);
    }
    COMPLEX.iter().find(|c| **c == suffix).copied()
}

/// The choice-key suffixes that can hold a `ty` (its own and its subtypes'), with their types.
pub(crate) fn choice_suffixes(ty: &str) -> Vec<(String, &'static str)> {
    let mut keys: Vec<(String, &'static str)> = PRIMITIVES
        .iter()
        .chain(COMPLEX.iter())
        .filter(|t| is_subtype(t, ty))
        .map(|t| {
            let mut chars = t.chars();
            let first = chars.next().map(|c| c.to_ascii_uppercase()).unwrap_or_default();
            (format!("{first}{}", chars.as_str()), *t)
        })
        .collect();
    // Exact type first: it is the usual hit.
    keys.sort_by_key(|(_, t)| *t != ty);
    keys
}

/// The static type name for a type string (for constants' `value[x]`).
pub(crate) fn static_type(name: &str) -> Option<&'static str> {
    PRIMITIVES.iter().chain(COMPLEX.iter()).find(|p| **p == name).copied()
}

/// FHIR type specialisation (`code` is a `string`, `url` is a `uri`, `Age` is a `Quantity`…).
fn is_subtype(tag: &str, ty: &str) -> bool {
    if tag == ty {
        return true;
    }
    let parent = match tag {
        "code" | "id" | "markdown" => "string",
        "url" | "canonical" | "oid" | "uuid" => "uri",
        "positiveInt" | "unsignedInt" => "integer",
        "Age" | "Count" | "Distance" | "Duration" | "MoneyQuantity" | "SimpleQuantity" => "Quantity",
        _ => return false,
    };
    is_subtype(parent, ty)
}

/// FHIRPath `=` on two items: `None` when the comparison is undefined (e.g. date precisions differ).
pub(crate) fn items_equal(a: &Item<'_>, b: &Item<'_>) -> Option<bool> {
    if let (Some(x), Some(y)) = (a.as_num(), b.as_num()) {
        return Some(match (x, y) {
            (Num::Int(x), Num::Int(y)) => x == y,
            _ => x.as_decimal() == y.as_decimal(),
        });
    }
    if let (Some(x), Some(y)) = (a.as_bool(), b.as_bool()) {
        return Some(x == y);
    }
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        if let (Some(kx), Some(ky)) = (a.temporal_kind(), b.temporal_kind())
            && kx == ky
            && x.len() != y.len()
            && precision(x) != precision(y)
        {
            return None;
        }
        return Some(x == y);
    }
    match (a, b) {
        (Item::Json(x, _), Item::Json(y, _)) => Some(x == y),
        _ => Some(false),
    }
}

/// Number of date/time components present (year=1 … milliseconds=7), for precision checks.
fn precision(s: &str) -> usize {
    s.split(['-', 'T', ':', '.']).take_while(|p| !p.is_empty()).count()
}

/// FHIRPath `~` (equivalence): case/whitespace-insensitive strings, otherwise like `=`.
pub(crate) fn items_equivalent(a: &Item<'_>, b: &Item<'_>) -> bool {
    if let (Some(x), Some(y)) = (a.as_str(), b.as_str()) {
        let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
        return norm(x) == norm(y);
    }
    items_equal(a, b).unwrap_or(false)
}

/// FHIRPath ordering of two items; `None` when they are not comparable.
pub(crate) fn compare(a: &Item<'_>, b: &Item<'_>) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_num(), b.as_num()) {
        return Some(match (x, y) {
            (Num::Int(x), Num::Int(y)) => x.cmp(&y),
            _ => x.as_decimal().cmp(&y.as_decimal()),
        });
    }
    let (x, y) = (a.as_str()?, b.as_str()?);
    if let (Some(_), Some(_)) = (a.temporal_kind(), b.temporal_kind())
        && precision(x) != precision(y)
    {
        // Different precisions: only comparable if they differ within the common prefix.
        let common = x.len().min(y.len());
        let ord = x[..common].cmp(&y[..common]);
        return if ord == Ordering::Equal { None } else { Some(ord) };
    }
    Some(x.cmp(y))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn json_num_dec(v: &Value) -> Decimal {
        match v {
            Value::Number(n) => json_num(n).expect("in range").as_decimal(),
            _ => panic!("not a number"),
        }
    }

    /// Choice suffixes map to FHIR type names, primitives lower-cased, unknown suffixes rejected.
    #[test]
    fn choice_suffixes() {
        assert_eq!(suffix_type("Quantity"), Some("Quantity"));
        assert_eq!(suffix_type("DateTime"), Some("dateTime"));
        assert_eq!(suffix_type("Base64Binary"), Some("base64Binary"));
        assert_eq!(suffix_type("Url"), Some("url"));
        assert_eq!(suffix_type("Foo"), None);
        assert_eq!(suffix_type("quantity"), None);
    }

    /// Date text is classified by shape.
    #[test]
    fn guesses_temporal_kind() {
        assert_eq!(guess_temporal("1970-06"), Some(Temporal::Date));
        assert_eq!(guess_temporal("2010-10-10T10:00:00Z"), Some(Temporal::DateTime));
        assert_eq!(guess_temporal("12:34:00"), Some(Temporal::Time));
        assert_eq!(guess_temporal("final"), None);
        assert_eq!(guess_temporal("12345"), None);
    }

    /// Integers and decimals compare numerically; subtypes satisfy `is`.
    #[test]
    fn equality_and_types() {
        let two = Value::from(2);
        let two_dec = Item::Dec("2.00".parse().unwrap());
        assert_eq!(items_equal(&Item::Json(&two, None), &two_dec), Some(true));
        let (a, b) = (Value::from_str("0.1").unwrap(), Value::from_str("0.2").unwrap());
        assert_eq!(compare(&Item::Json(&a, None), &Item::Json(&b, None)), Some(Ordering::Less));
        let sum = Item::Dec(json_num_dec(&a).checked_add(json_num_dec(&b)).unwrap());
        assert_eq!(items_equal(&sum, &Item::Dec("0.3".parse().unwrap())), Some(true));
        let url = Value::from("http://x");
        assert!(Item::Json(&url, Some("url")).is_type("uri"));
        assert!(!Item::Json(&url, Some("url")).is_type("oid"));
    }
}
