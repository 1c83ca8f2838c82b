//! Epic's budgets: a peak window with its own request rate, and a daily request budget.
//!
//! Epic asks apps to stay under a small share of the customer's operational database at peak
//! (≤ 1 %) and a larger one off-peak (≤ 5 %). [`Schedule`] picks the rate of the current period
//! and counts requests per calendar day. Times are the host's local time (set `TZ` to choose the
//! zone, e.g. `TZ=America/Chicago`); the clock is passed in, so selection is testable.
//!
//! The budget is counted by one client, i.e. per run: a run that reaches it stops with
//! [`crate::Error::BudgetExhausted`] and the next run (which resumes) starts counting from zero.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use chrono::{NaiveDate, NaiveTime, Timelike};

use crate::error::Error;

/// A daily time window `HH:MM-HH:MM`, start inclusive, end exclusive; a window whose end is
/// before its start runs over midnight (`22:00-06:00`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    start: NaiveTime,
    end: NaiveTime,
}

impl FromStr for Window {
    type Err = Error;

    /// Fails with [`Error::InvalidWindow`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |problem| Error::InvalidWindow { text: text.to_string(), problem };
        let (a, b) = text.split_once('-').ok_or_else(|| err("no `-` between start and end"))?;
        let time = |t: &str| {
            NaiveTime::parse_from_str(t.trim(), "%H:%M").map_err(|_| err("a time is not HH:MM (00:00–23:59)"))
        };
        let (start, end) = (time(a)?, time(b)?);
        if start == end {
            return Err(err("start and end are equal (an empty or all-day window)"));
        }
        Ok(Window { start, end })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start.format("%H:%M"), self.end.format("%H:%M"))
    }
}

impl Window {
    /// True when `t` (local time of day) lies inside the window.
    pub fn contains(&self, t: NaiveTime) -> bool {
        let t = t.with_nanosecond(0).unwrap_or(t);
        if self.start < self.end { self.start <= t && t < self.end } else { t >= self.start || t < self.end }
    }
}

/// Which rate period a moment belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// No window configured: the base rate limit applies.
    Always,
    /// Inside the peak window.
    Peak,
    /// Outside the peak window.
    OffPeak,
}

/// Peak window, per-period rates and the daily budget (all optional).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulePolicy {
    /// The peak window; `None` = one rate all day.
    pub peak: Option<Window>,
    /// Requests per second inside the window (`None` = the base rate limit; 0 = unlimited).
    pub peak_rate: Option<f64>,
    /// Requests per second outside the window (`None` = the base rate limit; 0 = unlimited).
    pub off_peak_rate: Option<f64>,
    /// HTTP requests (attempts, retries included) allowed per calendar day; `None` = no budget.
    pub daily_request_budget: Option<u64>,
}

impl SchedulePolicy {
    /// The period of local time `t`.
    pub fn period(&self, t: NaiveTime) -> Period {
        match self.peak {
            None => Period::Always,
            Some(w) if w.contains(t) => Period::Peak,
            Some(_) => Period::OffPeak,
        }
    }
}

/// The daily request counter.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: Mutex<(Option<NaiveDate>, u64)>,
}

/// The budget of `day` is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    /// The budget.
    pub limit: u64,
    /// The calendar day.
    pub day: NaiveDate,
}

impl Budget {
    /// A budget of `limit` requests per calendar day.
    pub fn new(limit: u64) -> Self {
        Budget { limit, used: Mutex::new((None, 0)) }
    }

    /// Takes one request from `today`'s budget (a new day starts from zero).
    pub fn take(&self, today: NaiveDate) -> Result<(), Spent> {
        let mut u = self.used.lock().unwrap();
        if u.0 != Some(today) {
            *u = (Some(today), 0);
        }
        if u.1 >= self.limit {
            return Err(Spent { limit: self.limit, day: today });
        }
        u.1 += 1;
        Ok(())
    }

    /// Requests taken on the current day.
    pub fn used(&self) -> u64 {
        self.used.lock().unwrap().1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    /// A day window contains its start, not its end; a night window wraps over midnight.
    #[test]
    fn window_selection() {
        let day: Window = "07:00-19:00".parse().unwrap();
        assert!(day.contains(t(7, 0)));
        assert!(day.contains(t(18, 59)));
        assert!(!day.contains(t(19, 0)));
        assert!(!day.contains(t(6, 59)));
        let night: Window = " 22:30 - 06:00 ".parse().unwrap();
        assert!(night.contains(t(23, 0)) && night.contains(t(0, 0)) && night.contains(t(5, 59)));
        assert!(!night.contains(t(6, 0)) && !night.contains(t(12, 0)));
        assert_eq!(night.to_string(), "22:30-06:00");
    }

    /// Malformed windows are refused with the expected form.
    #[test]
    fn window_errors_name_the_form() {
        for bad in ["07:00", "7-19", "25:00-19:00", "07:00-07:00", "07:00-19:60"] {
            let e = bad.parse::<Window>().unwrap_err().to_string();
            assert!(e.contains("HH:MM-HH:MM") && e.contains(bad), "{bad}: {e}");
        }
    }

    /// The period follows the injected clock; without a window it is always the base rate.
    #[test]
    fn period_follows_clock() {
        let p = SchedulePolicy { peak: Some("07:00-19:00".parse().unwrap()), ..Default::default() };
        assert_eq!(p.period(t(12, 0)), Period::Peak);
        assert_eq!(p.period(t(3, 0)), Period::OffPeak);
        assert_eq!(SchedulePolicy::default().period(t(12, 0)), Period::Always);
    }

    /// The budget stops at its limit and a new calendar day starts again from zero.
    #[test]
    fn budget_stops_and_resets_per_day() {
        let b = Budget::new(2);
        let d1 = NaiveDate::from_ymd_opt(2026, 12, 3).unwrap();
        b.take(d1).unwrap();
        b.take(d1).unwrap();
        assert_eq!(b.take(d1), Err(Spent { limit: 2, day: d1 }));
        assert_eq!(b.used(), 2);
        b.take(d1.succ_opt().unwrap()).unwrap();
        assert_eq!(b.used(), 1);
    }
}
