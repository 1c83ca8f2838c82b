//! Retry classification and backoff.
//!
//! Every failed attempt is classified explicitly ([`Decision`]), with a reason:
//! - 429 / 503: throttled → retry after `Retry-After` (delta-seconds or HTTP-date), clamped to
//!   `[retry_after_floor, retry_after_ceiling]`; without the header, exponential backoff.
//! - other 5xx, timeouts, connection errors, truncated bodies → exponential backoff with full
//!   jitter (`random(0, min(max_delay, base · 2^attempt))`).
//! - 401 → refresh the token once, then fail.
//! - other 4xx → no retry; the error carries the OperationOutcome text.

use std::fmt;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Default number of retries after the first attempt.
pub const DEFAULT_MAX_RETRIES: u32 = 5;
/// Default base delay of exponential backoff.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(500);
/// Default cap of one backoff delay.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(30);
/// Default lower bound applied to a server's `Retry-After`.
pub const DEFAULT_RETRY_AFTER_FLOOR: Duration = Duration::from_secs(1);
/// Default upper bound applied to a server's `Retry-After`.
pub const DEFAULT_RETRY_AFTER_CEILING: Duration = Duration::from_secs(120);

/// Retry bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = never retry).
    pub max_retries: u32,
    /// Base delay of exponential backoff.
    pub base_delay: Duration,
    /// Cap of one backoff delay.
    pub max_delay: Duration,
    /// Lower bound of an honoured `Retry-After`.
    pub retry_after_floor: Duration,
    /// Upper bound of an honoured `Retry-After`.
    pub retry_after_ceiling: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: DEFAULT_MAX_RETRIES,
            base_delay: DEFAULT_BASE_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            retry_after_floor: DEFAULT_RETRY_AFTER_FLOOR,
            retry_after_ceiling: DEFAULT_RETRY_AFTER_CEILING,
        }
    }
}

/// Why an attempt is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// 429 or 503: the server asks us to slow down.
    Throttled(u16),
    /// Another 5xx.
    ServerError(u16),
    /// The request timed out.
    Timeout,
    /// Connecting failed or the connection was reset.
    Connection,
    /// The body ended early (cut connection, truncated JSON).
    TruncatedBody,
}

impl RetryReason {
    /// True for signals that the server is overloaded (used by adaptive concurrency).
    pub fn is_congestion(self) -> bool {
        matches!(self, RetryReason::Throttled(_) | RetryReason::Timeout)
    }
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetryReason::Throttled(s) => write!(f, "throttled (HTTP {s})"),
            RetryReason::ServerError(s) => write!(f, "server error (HTTP {s})"),
            RetryReason::Timeout => f.write_str("timeout"),
            RetryReason::Connection => f.write_str("connection error"),
            RetryReason::TruncatedBody => f.write_str("truncated body"),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Wait `delay`, then try again.
    Retry {
        /// Why.
        reason: RetryReason,
        /// How long to wait.
        delay: Duration,
    },
    /// The token was rejected: invalidate it and try once more.
    RefreshToken,
    /// Give up.
    Fail,
}

impl RetryPolicy {
    /// Full-jitter exponential backoff for retry number `attempt` (0-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let cap = self.base_delay.saturating_mul(2u32.saturating_pow(attempt.min(20))).min(self.max_delay);
        cap.mul_f64(fastrand::f64())
    }

    /// Clamps a server-provided delay.
    pub fn clamp_retry_after(&self, d: Duration) -> Duration {
        d.clamp(self.retry_after_floor, self.retry_after_ceiling.max(self.retry_after_floor))
    }

    /// Classifies an HTTP status (the response was received). `attempt` is the 0-based retry
    /// number this decision would start; `refreshed` tells whether the token was already refreshed.
    pub fn classify_status(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
        attempt: u32,
        refreshed: bool,
    ) -> Decision {
        if status == StatusCode::UNAUTHORIZED {
            return if refreshed { Decision::Fail } else { Decision::RefreshToken };
        }
        let reason = match status.as_u16() {
            s @ (429 | 503) => RetryReason::Throttled(s),
            s if status.is_server_error() => RetryReason::ServerError(s),
            _ => return Decision::Fail,
        };
        if attempt >= self.max_retries {
            return Decision::Fail;
        }
        let delay = match (reason, retry_after(headers, SystemTime::now())) {
            (RetryReason::Throttled(_), Some(d)) => self.clamp_retry_after(d),
            _ => self.backoff(attempt),
        };
        Decision::Retry { reason, delay }
    }

    /// Classifies a transport failure (no status).
    pub fn classify_transport(&self, reason: RetryReason, attempt: u32) -> Decision {
        if attempt >= self.max_retries {
            Decision::Fail
        } else {
            Decision::Retry { reason, delay: self.backoff(attempt) }
        }
    }
}

/// Reads `Retry-After` as delta-seconds or an HTTP-date (relative to `now`).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Maps a reqwest transport error to a retry reason, or `None` when it is not transient.
/// A TLS failure (e.g. an untrusted certificate) is not transient: it fails at once.
pub fn transport_reason(e: &reqwest::Error) -> Option<RetryReason> {
    if matches!(crate::error::NetworkFailure::of(e), crate::error::NetworkFailure::Tls(_)) {
        None
    } else if e.is_timeout() {
        Some(RetryReason::Timeout)
    } else if e.is_connect() || e.is_request() {
        Some(RetryReason::Connection)
    } else if e.is_body() || e.is_decode() {
        Some(RetryReason::TruncatedBody)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).unwrap());
        h
    }

    /// Retry-After in seconds and as an HTTP-date both parse.
    #[test]
    fn retry_after_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after(&headers("7"), now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(42));
        assert_eq!(retry_after(&headers(&date), now), Some(Duration::from_secs(42)));
        assert_eq!(retry_after(&headers("soon"), now), None);
    }

    /// A huge Retry-After is clamped to the ceiling and a zero one raised to the floor.
    #[test]
    fn retry_after_is_clamped() {
        let p = RetryPolicy::default();
        let d = p.classify_status(StatusCode::TOO_MANY_REQUESTS, &headers("86400"), 0, false);
        assert_eq!(d, Decision::Retry { reason: RetryReason::Throttled(429), delay: p.retry_after_ceiling });
        let d = p.classify_status(StatusCode::SERVICE_UNAVAILABLE, &headers("0"), 0, false);
        assert_eq!(d, Decision::Retry { reason: RetryReason::Throttled(503), delay: p.retry_after_floor });
    }

    /// 400 and 404 are never retried; 401 refreshes once; 5xx stops after max_retries.
    #[test]
    fn status_classification() {
        let p = RetryPolicy { max_retries: 2, ..RetryPolicy::default() };
        let h = HeaderMap::new();
        assert_eq!(p.classify_status(StatusCode::BAD_REQUEST, &h, 0, false), Decision::Fail);
        assert_eq!(p.classify_status(StatusCode::NOT_FOUND, &h, 0, false), Decision::Fail);
        assert_eq!(p.classify_status(StatusCode::UNAUTHORIZED, &h, 0, false), Decision::RefreshToken);
        assert_eq!(p.classify_status(StatusCode::UNAUTHORIZED, &h, 0, true), Decision::Fail);
        assert!(matches!(
            p.classify_status(StatusCode::BAD_GATEWAY, &h, 1, false),
            Decision::Retry { reason: RetryReason::ServerError(502), .. }
        ));
        assert_eq!(p.classify_status(StatusCode::BAD_GATEWAY, &h, 2, false), Decision::Fail);
    }

    /// Full jitter stays within [0, min(max_delay, base·2^n)].
    #[test]
    fn backoff_is_bounded() {
        let p = RetryPolicy::default();
        for attempt in 0..30 {
            let cap = p.base_delay.saturating_mul(2u32.saturating_pow(attempt.min(20))).min(p.max_delay);
            assert!(p.backoff(attempt) <= cap);
        }
    }
}
