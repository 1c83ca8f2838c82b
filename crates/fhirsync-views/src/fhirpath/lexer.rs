//! FHIRPath tokenizer: turns an expression into tokens with character offsets.

use super::error::SyntaxError;
use crate::error::{Error, Result};

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// Identifier, plain or `` `delimited` `` (keywords such as `and` are identifiers here).
    Ident(String),
    /// `'string'` literal, escapes resolved.
    Str(String),
    /// Integer literal.
    Int(i64),
    /// Decimal literal, kept as text so boundaries can see its precision.
    Dec(String),
    /// `@2020-01-01`, `@2020-01-01T10:00`, `@T10:00` (without the `@`).
    Temporal(String),
    /// `%name`.
    Env(String),
    /// `$this`, `$index`, `$total`.
    Special(String),
    /// Punctuation or symbolic operator.
    Sym(&'static str),
}

/// A token and its start offset.
#[derive(Debug, Clone)]
pub(crate) struct Spanned {
    pub tok: Tok,
    pub pos: usize,
}

/// Symbolic tokens, two-character ones first so `<=` wins over `<`.
const SYMBOLS: [&str; 20] =
    ["<=", ">=", "!=", "!~", ".", "[", "]", "(", ")", ",", "+", "-", "*", "/", "&", "|", "=", "~", "<", ">"];

/// Splits `src` into tokens.
pub(crate) fn tokenize(src: &str) -> Result<Vec<Spanned>> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if skip_trivia(&chars, &mut i) {
            continue;
        }
        let start = i;
        let tok = next_token(&chars, &mut i).map_err(|source| Error::Syntax {
            expression: src.to_string(),
            position: start,
            source,
        })?;
        out.push(Spanned { tok, pos: start });
    }
    Ok(out)
}

/// Skips one whitespace character or comment at `i`; false when a token starts there.
fn skip_trivia(chars: &[char], i: &mut usize) -> bool {
    let c = chars[*i];
    if c.is_whitespace() {
        *i += 1;
    } else if c == '/' && chars.get(*i + 1) == Some(&'/') {
        while *i < chars.len() && chars[*i] != '\n' {
            *i += 1;
        }
    } else if c == '/' && chars.get(*i + 1) == Some(&'*') {
        *i += 2;
        while *i + 1 < chars.len() && !(chars[*i] == '*' && chars[*i + 1] == '/') {
            *i += 1;
        }
        *i += 2;
    } else {
        return false;
    }
    true
}

/// Reads the token starting at `i`; the error is the problem, reported at the token's start.
fn next_token(chars: &[char], i: &mut usize) -> Result<Tok, SyntaxError> {
    let c = chars[*i];
    Ok(if c.is_ascii_alphabetic() || c == '_' {
        Tok::Ident(take_while(chars, i, |c| c.is_ascii_alphanumeric() || c == '_'))
    } else if c == '`' {
        Tok::Ident(quoted(chars, i, '`')?)
    } else if c == '\'' {
        Tok::Str(quoted(chars, i, '\'')?)
    } else if c.is_ascii_digit() {
        number(chars, i)?
    } else if c == '@' {
        *i += 1;
        let s = take_while(chars, i, |c| c.is_ascii_alphanumeric() || matches!(c, '-' | ':' | '.' | '+'));
        if s.is_empty() || !(s.starts_with('T') || s.as_bytes()[0].is_ascii_digit()) {
            return Err(SyntaxError::BareAt);
        }
        Tok::Temporal(s)
    } else if c == '%' {
        *i += 1;
        let name = match chars.get(*i) {
            Some('`') => quoted(chars, i, '`')?,
            Some('\'') => quoted(chars, i, '\'')?,
            _ => take_while(chars, i, |c| c.is_ascii_alphanumeric() || c == '_'),
        };
        if name.is_empty() {
            return Err(SyntaxError::MissingVariableName);
        }
        Tok::Env(name)
    } else if c == '$' {
        *i += 1;
        let name = take_while(chars, i, |c| c.is_ascii_alphanumeric());
        if !matches!(name.as_str(), "this" | "index" | "total") {
            return Err(SyntaxError::UnknownSpecialVariable { name });
        }
        Tok::Special(name)
    } else {
        symbol(chars, i)?
    })
}

/// An integer (optionally with the `L` suffix) or a decimal.
fn number(chars: &[char], i: &mut usize) -> Result<Tok, SyntaxError> {
    let int = take_while(chars, i, |c| c.is_ascii_digit());
    if chars.get(*i) == Some(&'.') && chars.get(*i + 1).is_some_and(|c| c.is_ascii_digit()) {
        *i += 1;
        let frac = take_while(chars, i, |c| c.is_ascii_digit());
        return Ok(Tok::Dec(format!("{int}.{frac}")));
    }
    if chars.get(*i) == Some(&'L') {
        *i += 1;
    }
    match int.parse() {
        Ok(i) => Ok(Tok::Int(i)),
        Err(_) => Err(SyntaxError::IntegerTooLarge { digits: int }),
    }
}

/// `{}` or one of [`SYMBOLS`].
fn symbol(chars: &[char], i: &mut usize) -> Result<Tok, SyntaxError> {
    if chars[*i] == '{' && chars.get(*i + 1) == Some(&'}') {
        *i += 2;
        return Ok(Tok::Sym("{}"));
    }
    let rest: String = chars[*i..chars.len().min(*i + 2)].iter().collect();
    let Some(sym) = SYMBOLS.iter().find(|s| rest.starts_with(**s)) else {
        return Err(SyntaxError::UnexpectedCharacter { found: chars[*i] });
    };
    *i += sym.len();
    Ok(Tok::Sym(sym))
}

fn take_while(chars: &[char], i: &mut usize, pred: impl Fn(char) -> bool) -> String {
    let start = *i;
    while *i < chars.len() && pred(chars[*i]) {
        *i += 1;
    }
    chars[start..*i].iter().collect()
}

/// Reads a quoted string starting at `chars[*i] == quote`, resolving escapes.
fn quoted(chars: &[char], i: &mut usize, quote: char) -> Result<String, SyntaxError> {
    *i += 1;
    let mut s = String::new();
    while *i < chars.len() {
        let c = chars[*i];
        *i += 1;
        if c == quote {
            return Ok(s);
        }
        if c != '\\' {
            s.push(c);
            continue;
        }
        let Some(&e) = chars.get(*i) else { break };
        *i += 1;
        match e {
            'n' => s.push('\n'),
            't' => s.push('\t'),
            'r' => s.push('\r'),
            'f' => s.push('\u{c}'),
            'u' => {
                let hex: String = chars.get(*i..*i + 4).unwrap_or_default().iter().collect();
                let Some(ch) = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) else {
                    return Err(SyntaxError::InvalidUnicodeEscape { hex });
                };
                s.push(ch);
                *i += 4;
            }
            other => s.push(other),
        }
    }
    Err(SyntaxError::Unterminated { quote })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operators, literals and identifiers are split with their offsets.
    #[test]
    fn splits_mixed_expression() {
        let toks = tokenize("name.where(use != 'x\\'y').count() >= 2.50").unwrap();
        let kinds: Vec<Tok> = toks.into_iter().map(|t| t.tok).collect();
        assert_eq!(
            kinds,
            vec![
                Tok::Ident("name".into()),
                Tok::Sym("."),
                Tok::Ident("where".into()),
                Tok::Sym("("),
                Tok::Ident("use".into()),
                Tok::Sym("!="),
                Tok::Str("x'y".into()),
                Tok::Sym(")"),
                Tok::Sym("."),
                Tok::Ident("count".into()),
                Tok::Sym("("),
                Tok::Sym(")"),
                Tok::Sym(">="),
                Tok::Dec("2.50".into()),
            ]
        );
    }

    /// A stray `@` is a syntax error, not a panic.
    #[test]
    fn rejects_bare_at() {
        assert!(matches!(
            tokenize("@@"),
            Err(Error::Syntax { position: 0, source: SyntaxError::BareAt, .. })
        ));
    }
}
