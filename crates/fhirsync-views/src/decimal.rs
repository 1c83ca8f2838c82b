//! An exact decimal: FHIR's `decimal` without the binary rounding of `f64`.
//!
//! A [`Decimal`] is `mantissa × 10^-scale` with up to [`MAX_DIGITS`] digits, enough for every
//! FHIR decimal (at most 18 integer and 17 fraction digits). It keeps its scale, so `1.50`
//! prints as `1.50`, and compares by value, so `1.50 == 1.5`. FHIRPath arithmetic runs on it;
//! landing uses it to size Parquet `Decimal128` columns.
//!
//! ```
//! use fhirsync_views::Decimal;
//! let a: Decimal = "1.50".parse().unwrap();
//! assert_eq!(a.to_string(), "1.50");
//! assert_eq!((a.scale(), a.mantissa()), (2, 150));
//! assert_eq!(a, "1.5".parse().unwrap());
//! assert_eq!("1e2".parse::<Decimal>().unwrap().to_string(), "100");
//! assert_eq!(a.checked_add("0.1".parse().unwrap()).unwrap().to_string(), "1.60");
//! ```

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Most digits a [`Decimal`] holds (an `i128` holds every 38-digit number).
pub const MAX_DIGITS: u32 = 38;
/// Fraction digits of a division whose operands have fewer (FHIRPath's decimal step is 10^-8).
const DIV_SCALE: u32 = 8;

/// An exact decimal number with its scale (digits after the point).
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    mantissa: i128,
    scale: u32,
}

/// Why a text is not a [`Decimal`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseDecimalError {
    /// Not of the form `-?digits(.digits)?([eE][+-]?digits)?`.
    #[error("not a decimal number")]
    Syntax,
    /// More than [`MAX_DIGITS`] digits (after applying the exponent).
    #[error("a decimal of more than {MAX_DIGITS} digits")]
    TooLong,
}

impl Decimal {
    /// `mantissa × 10^-scale`, or `None` when the mantissa has more than [`MAX_DIGITS`] digits
    /// or `scale` exceeds it.
    pub fn new(mantissa: i128, scale: u32) -> Option<Decimal> {
        let fits = scale <= MAX_DIGITS && mantissa.unsigned_abs() < 10u128.pow(MAX_DIGITS);
        fits.then_some(Decimal { mantissa, scale })
    }

    /// The digits as an integer (`1.50` → 150).
    pub fn mantissa(&self) -> i128 {
        self.mantissa
    }

    /// Digits after the decimal point (`1.50` → 2, `1e2` → 0).
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// Digits before the decimal point, at least 1 (`0.5` → 1, `123.4` → 3).
    pub fn integer_digits(&self) -> u32 {
        let digits = digit_count(self.mantissa.unsigned_abs());
        digits.saturating_sub(self.scale).max(1)
    }

    /// The same value with `scale` digits after the point, if that loses no digit and fits.
    pub fn rescaled(&self, scale: u32) -> Option<Decimal> {
        Decimal::new(rescale(self.mantissa, self.scale, scale)?, scale)
    }

    /// `self + other` at the larger scale; `None` on overflow.
    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let (a, b, s) = align(self, other)?;
        Decimal::new(a.checked_add(b)?, s)
    }

    /// `self - other` at the larger scale; `None` on overflow.
    pub fn checked_sub(self, other: Decimal) -> Option<Decimal> {
        let (a, b, s) = align(self, other)?;
        Decimal::new(a.checked_sub(b)?, s)
    }

    /// `self × other`, scales added (rounded to [`MAX_DIGITS`] fraction digits); `None` on
    /// overflow.
    pub fn checked_mul(self, other: Decimal) -> Option<Decimal> {
        let m = self.mantissa.checked_mul(other.mantissa)?;
        let s = self.scale + other.scale;
        if s <= MAX_DIGITS {
            return Decimal::new(m, s);
        }
        Decimal::new(div_round(m, 10i128.checked_pow(s - MAX_DIGITS)?)?, MAX_DIGITS)
    }

    /// `self / other`, exact when it ends within the larger of the operands' scales and 8 digits,
    /// else rounded half away from zero there; trailing zeros beyond the operands' scales are
    /// dropped (`3 / 2` → `1.5`, `1 / 3` → `0.33333333`). `None` for a zero divisor or overflow.
    pub fn checked_div(self, other: Decimal) -> Option<Decimal> {
        if other.mantissa == 0 {
            return None;
        }
        let keep = self.scale.max(other.scale);
        let target = keep.max(DIV_SCALE);
        // self/other = (a × 10^(target + sb - sa)) / b × 10^-target.
        let shift = target + other.scale - self.scale;
        let num = self.mantissa.checked_mul(10i128.checked_pow(shift)?)?;
        let mut q = Decimal::new(div_round(num, other.mantissa)?, target)?;
        while q.scale > keep && q.mantissa % 10 == 0 {
            q = Decimal { mantissa: q.mantissa / 10, scale: q.scale - 1 };
        }
        Some(q)
    }

    /// The remainder of `self / other` (sign of `self`); `None` for a zero divisor.
    pub fn checked_rem(self, other: Decimal) -> Option<Decimal> {
        let (a, b, s) = align(self, other)?;
        Decimal::new(a.checked_rem(b)?, s)
    }

    /// `self / other` truncated to an integer; `None` for a zero divisor or overflow.
    pub fn checked_div_trunc(self, other: Decimal) -> Option<i64> {
        let (a, b, _) = align(self, other)?;
        i64::try_from(a.checked_div(b)?).ok()
    }

    /// `-self`.
    pub fn checked_neg(self) -> Option<Decimal> {
        Decimal::new(self.mantissa.checked_neg()?, self.scale)
    }
}

impl From<i64> for Decimal {
    fn from(i: i64) -> Decimal {
        Decimal { mantissa: i128::from(i), scale: 0 }
    }
}

/// Number of decimal digits of `n` (1 for 0).
fn digit_count(mut n: u128) -> u32 {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// `m × 10^-from` expressed with scale `to`, if exact and in range.
fn rescale(m: i128, from: u32, to: u32) -> Option<i128> {
    match to.cmp(&from) {
        Ordering::Equal => Some(m),
        Ordering::Greater => m.checked_mul(10i128.checked_pow(to - from)?),
        Ordering::Less => {
            let p = 10i128.checked_pow(from - to)?;
            (m % p == 0).then_some(m / p)
        }
    }
}

/// Both mantissas at the larger scale.
fn align(a: Decimal, b: Decimal) -> Option<(i128, i128, u32)> {
    let s = a.scale.max(b.scale);
    Some((rescale(a.mantissa, a.scale, s)?, rescale(b.mantissa, b.scale, s)?, s))
}

/// `n / d` rounded half away from zero.
fn div_round(n: i128, d: i128) -> Option<i128> {
    let q = n.checked_div(d)?;
    let r = n.checked_rem(d)?;
    if r.unsigned_abs().checked_mul(2)? >= d.unsigned_abs() {
        let away = if (n < 0) == (d < 0) { 1 } else { -1 };
        q.checked_add(away)
    } else {
        Some(q)
    }
}

impl FromStr for Decimal {
    type Err = ParseDecimalError;

    /// Parses `-?digits(.digits)?([eE][+-]?digits)?` (JSON and FHIR number syntax; a leading `+`
    /// is accepted too). The scale is the number of fraction digits written, less the exponent.
    fn from_str(text: &str) -> Result<Decimal, ParseDecimalError> {
        let (mantissa_text, exponent) = match text.find(['e', 'E']) {
            Some(i) => {
                let e = &text[i + 1..];
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ParseDecimalError::Syntax);
                }
                let e: i64 = e.parse().map_err(|_| ParseDecimalError::TooLong)?;
                (&text[..i], e)
            }
            None => (text, 0),
        };
        let (neg, body) = match mantissa_text.as_bytes().first() {
            Some(b'-') => (true, &mantissa_text[1..]),
            Some(b'+') => (false, &mantissa_text[1..]),
            _ => (false, mantissa_text),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits_ok(int) || !digits_ok(frac) || (body.contains('.') && frac.is_empty()) {
            return Err(ParseDecimalError::Syntax);
        }
        let significant = format!("{int}{frac}");
        let significant = significant.trim_start_matches('0');
        if significant.len() > MAX_DIGITS as usize {
            return Err(ParseDecimalError::TooLong);
        }
        let mut mantissa: i128 = if significant.is_empty() {
            0
        } else {
            significant.parse().map_err(|_| ParseDecimalError::TooLong)?
        };
        if neg {
            mantissa = -mantissa;
        }
        let scale = frac.len() as i64 - exponent;
        if scale < 0 {
            let p = u32::try_from(-scale).map_err(|_| ParseDecimalError::TooLong)?;
            let m = 10i128.checked_pow(p).and_then(|p| mantissa.checked_mul(p));
            let m = m.ok_or(ParseDecimalError::TooLong)?;
            return Decimal::new(m, 0).ok_or(ParseDecimalError::TooLong);
        }
        let scale = u32::try_from(scale).map_err(|_| ParseDecimalError::TooLong)?;
        Decimal::new(mantissa, scale).ok_or(ParseDecimalError::TooLong)
    }
}

impl fmt::Display for Decimal {
    /// Plain notation with exactly [`Decimal::scale`] fraction digits (`1.50`, `0.05`, `-3`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let sign = if self.mantissa < 0 { "-" } else { "" };
        let scale = self.scale as usize;
        if scale == 0 {
            return write!(f, "{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        write!(f, "{sign}{int}.{frac}")
    }
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Decimal) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Decimal {}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Decimal {
    /// By value: `1.50 == 1.5`, `-2 < 0.1`. Integer parts first, then the fractions at the
    /// larger scale, so nothing overflows (a fraction stays below 10^38).
    fn cmp(&self, other: &Decimal) -> Ordering {
        let split = |d: &Decimal| {
            let p = 10i128.pow(d.scale);
            (d.mantissa / p, d.mantissa % p)
        };
        let ((ia, fa), (ib, fb)) = (split(self), split(other));
        let s = self.scale.max(other.scale);
        ia.cmp(&ib).then_with(|| (fa * 10i128.pow(s - self.scale)).cmp(&(fb * 10i128.pow(s - other.scale))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// Literals keep their scale; exponents move the point; leading zeros do not count as digits.
    #[test]
    fn parses_and_prints_literals() {
        for (text, shown, m, s) in [
            ("1.50", "1.50", 150, 2),
            ("0.10", "0.10", 10, 2),
            ("1e2", "100", 100, 0),
            ("1.5E-3", "0.0015", 15, 4),
            ("-0.05", "-0.05", -5, 2),
            ("123456789012345678.9", "123456789012345678.9", 1234567890123456789, 1),
            ("007", "7", 7, 0),
            ("0", "0", 0, 0),
        ] {
            let x = d(text);
            assert_eq!((x.to_string().as_str(), x.mantissa(), x.scale()), (shown, m, s), "{text}");
        }
        for bad in ["", "-", "1.", ".5", "1e", "1e+", "abc", "1.2.3", "--1", "1e5x"] {
            assert_eq!(bad.parse::<Decimal>(), Err(ParseDecimalError::Syntax), "{bad:?}");
        }
        assert_eq!("1e40".parse::<Decimal>(), Err(ParseDecimalError::TooLong));
        assert_eq!("1e-39".parse::<Decimal>(), Err(ParseDecimalError::TooLong));
        assert!("12345678901234567890123456789012345678".parse::<Decimal>().is_ok());
        assert!("123456789012345678901234567890123456789".parse::<Decimal>().is_err());
    }

    /// Values compare exactly, across scales and past the aligning range.
    #[test]
    fn compares_by_value() {
        assert_eq!(d("1.50"), d("1.5"));
        assert!(d("0.1") + d("0.2") == d("0.3"));
        assert!(d("-2") < d("0.1"));
        assert!(d("123456789012345678.9") > d("123456789012345678.89"));
        let big = d("99999999999999999999999999999999999999");
        let tiny = d("0.00000000000000000000000000000000000001");
        assert!(big > tiny && tiny > d("0") && -big < -tiny);
    }

    /// Arithmetic is exact where the result is representable and refuses to overflow.
    #[test]
    fn arithmetic() {
        assert_eq!(d("1.50").checked_add(d("0.1")).unwrap().to_string(), "1.60");
        assert_eq!(d("0.1").checked_sub(d("0.3")).unwrap().to_string(), "-0.2");
        assert_eq!(d("1.5").checked_mul(d("2")).unwrap().to_string(), "3.0");
        assert_eq!(d("3").checked_div(d("2")).unwrap().to_string(), "1.5");
        assert_eq!(d("1").checked_div(d("3")).unwrap().to_string(), "0.33333333");
        assert_eq!(d("2").checked_div(d("3")).unwrap().to_string(), "0.66666667");
        assert_eq!(d("6.00").checked_div(d("2")).unwrap().to_string(), "3.00");
        assert_eq!(d("1").checked_div(d("0")), None);
        assert_eq!(d("7.5").checked_rem(d("2")).unwrap().to_string(), "1.5");
        assert_eq!(d("-7.5").checked_div_trunc(d("2")), Some(-3));
        let big = d("99999999999999999999999999999999999999");
        assert_eq!(big.checked_add(d("1")), None);
        assert_eq!(big.checked_mul(d("10")), None);
        assert_eq!(d("1.5").integer_digits(), 1);
        assert_eq!(d("123.45").integer_digits(), 3);
        assert_eq!(d("0.05").integer_digits(), 1);
        assert_eq!(d("1.5").rescaled(3).unwrap().to_string(), "1.500");
        assert_eq!(d("1.55").rescaled(1), None);
    }

    impl std::ops::Add for Decimal {
        type Output = Decimal;
        fn add(self, o: Decimal) -> Decimal {
            self.checked_add(o).expect("in range")
        }
    }

    impl std::ops::Neg for Decimal {
        type Output = Decimal;
        fn neg(self) -> Decimal {
            self.checked_neg().expect("in range")
        }
    }
}
