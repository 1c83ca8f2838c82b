//! `lowBoundary()` / `highBoundary()`: the smallest/largest value a decimal or partial
//! date/time could stand for, given its precision.
//!
//! - Decimals: ± half a unit of the digit after the last one written (`1.587` → `1.5865`/`1.5875`);
//!   a number written without decimals counts as one decimal place (`1` → `0.95`/`1.05`).
//! - Dates fill missing month/day (`1970-06` → `1970-06-01`/`1970-06-30`).
//! - DateTimes also fill the time to milliseconds, and a missing offset becomes the widest one
//!   (`+14:00` low, `-12:00` high).
//! - Times fill to milliseconds (`12:34` → `12:34:00.000`/`12:34:59.999`).

use std::borrow::Cow;

use serde_json::Value;

use super::value::{Item, Temporal};

/// The boundary of `item`, or `None` when it has no boundary (not a decimal/date/time, or malformed).
pub(crate) fn boundary<'a>(item: &Item<'a>, high: bool) -> Option<Item<'a>> {
    if let Some(kind) = item.temporal_kind() {
        let text = item.as_str()?;
        let out = match kind {
            Temporal::Date => date(text, high)?,
            Temporal::DateTime => date_time(text, high)?,
            Temporal::Time => time(text, high)?,
        };
        return Some(Item::Temporal(kind, Cow::Owned(out)));
    }
    let text = match item {
        // Plain notation (`1e2` → `100`): the boundary is taken on the digits.
        Item::Json(Value::Number(n), _) => n.to_string().parse::<crate::Decimal>().ok()?.to_string(),
        Item::Dec(d) => d.to_string(),
        Item::Int(i) => i.to_string(),
        _ => return None,
    };
    decimal(&text, high)?.parse().ok().map(Item::Dec)
}

/// The boundary of a decimal's text, as text.
fn decimal(text: &str, high: bool) -> Option<String> {
    if text.contains(['e', 'E']) {
        return None;
    }
    let (neg, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    let scale = frac.len().max(1);
    let digits = format!("{int}{frac:0<scale$}");
    let mut scaled: i128 = digits.parse().ok()?;
    if neg {
        scaled = -scaled;
    }
    // One more decimal place, then ± 5 in that place.
    let scaled = scaled.checked_mul(10)?.checked_add(if high { 5 } else { -5 })?;
    let shown = scale + 1;
    let abs = scaled.unsigned_abs().to_string();
    let abs = format!("{abs:0>width$}", width = shown + 1);
    let (i, f) = abs.split_at(abs.len() - shown);
    let sign = if scaled < 0 { "-" } else { "" };
    Some(format!("{sign}{i}.{f}"))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn date(text: &str, high: bool) -> Option<String> {
    let mut parts = text.split('-');
    let year: u32 = parts.next()?.parse().ok()?;
    let month: Option<u32> = parts.next().map(str::parse).transpose().ok()?;
    let day: Option<u32> = parts.next().map(str::parse).transpose().ok()?;
    if parts.next().is_some() || month.is_some_and(|m| !(1..=12).contains(&m)) {
        return None;
    }
    let month = month.unwrap_or(if high { 12 } else { 1 });
    let day = day.unwrap_or(if high { days_in_month(year, month) } else { 1 });
    Some(format!("{year:04}-{month:02}-{day:02}"))
}

fn time(text: &str, high: bool) -> Option<String> {
    let (hms, frac) = text.split_once('.').unwrap_or((text, ""));
    let mut parts = hms.split(':');
    let h: u32 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next().map(str::parse).transpose().ok()?.unwrap_or(if high { 59 } else { 0 });
    let s: u32 = parts.next().map(str::parse).transpose().ok()?.unwrap_or(if high { 59 } else { 0 });
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let fill = if high { '9' } else { '0' };
    let mut ms: String = frac.chars().take(3).collect();
    while ms.len() < 3 {
        ms.push(fill);
    }
    Some(format!("{h:02}:{m:02}:{s:02}.{ms}"))
}

fn date_time(text: &str, high: bool) -> Option<String> {
    let (d, rest) = text.split_once('T').unwrap_or((text, ""));
    let d = date(d, high)?;
    // Split off the offset: `Z` or the last `+`/`-` in the time part.
    let (t, tz) = if let Some(t) = rest.strip_suffix('Z') {
        (t, "Z".to_string())
    } else if let Some(i) = rest.rfind(['+', '-']) {
        (&rest[..i], rest[i..].to_string())
    } else {
        (rest, if high { "-12:00" } else { "+14:00" }.to_string())
    };
    let t = if t.is_empty() {
        if high { "23:59:59.999".to_string() } else { "00:00:00.000".to_string() }
    } else {
        time(t, high)?
    };
    Some(format!("{d}T{t}{tz}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decimal boundaries are half a unit past the written precision.
    #[test]
    fn decimals() {
        assert_eq!(decimal("1.587", false), Some("1.5865".into()));
        assert_eq!(decimal("1.587", true), Some("1.5875".into()));
        assert_eq!(decimal("1", false), Some("0.95".into()));
        assert_eq!(decimal("-1.5", true), Some("-1.45".into()));
        assert_eq!(decimal("0.05", false), Some("0.045".into()));
    }

    /// Partial dates, dateTimes and times are filled to their extremes.
    #[test]
    fn temporals() {
        assert_eq!(date("2024-02", true).as_deref(), Some("2024-02-29"));
        assert_eq!(date("1970", false).as_deref(), Some("1970-01-01"));
        assert_eq!(date_time("2010-10-10", false).as_deref(), Some("2010-10-10T00:00:00.000+14:00"));
        assert_eq!(date_time("2010-10-10T10:30Z", true).as_deref(), Some("2010-10-10T10:30:59.999Z"));
        assert_eq!(
            date_time("2010-10-10T10:30:00.5-05:00", true).as_deref(),
            Some("2010-10-10T10:30:00.599-05:00")
        );
        assert_eq!(time("12:34", true).as_deref(), Some("12:34:59.999"));
        assert_eq!(date("1970-13", true), None);
    }
}
