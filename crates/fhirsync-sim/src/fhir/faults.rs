//! Fault injection and request accounting, switchable at run time.
//!
//! Every FHIR request (not the OAuth endpoints) passes through [`Faults`] before it is answered:
//! it is logged, delayed by the fixed latency, and may be turned into a 429 (with `Retry-After` in
//! seconds or as an HTTP-date), a 5xx, or a response whose body is cut off mid-stream (the
//! connection is aborted after part of the body). Creates have their own switches: fail before
//! storing (`fail_next_creates`), store then cut the answer (`drop_next_creates`), store then
//! hold the answer back (`delay_next_creates`). Token expiry lives in `OAuthState`
//! (`expire_all_tokens`), session expiry in `FhirState::expire_sessions`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::wire::{self, Format, Issue};

/// Pause between the partial body and the abort, so the partial body reaches the client.
const DROP_FLUSH_DELAY: Duration = Duration::from_millis(50);

/// How many recent requests the log keeps.
pub const REQUEST_LOG_CAPACITY: usize = 10_000;

/// The form of `Retry-After` on injected 429s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: <seconds>`.
    Seconds(u64),
    /// `Retry-After: <HTTP-date>` that many seconds from now.
    HttpDate(u64),
}

/// One logged request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub uri: String,
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Answer normally.
    Pass,
    /// 429 Too Many Requests.
    Throttle(RetryAfter),
    /// A 5xx.
    Fail(u16),
    /// Answer, but abort the connection half-way through the body.
    Drop,
    /// Run the handler at once (a create is stored), then hold the answer back this long.
    Hold(Duration),
    /// Epic's 59141 "duplicate" refusal, without running the handler (nothing is stored).
    Duplicate,
}

/// Run-time fault switches and the request log (all methods take `&self`).
#[derive(Debug, Default)]
pub struct Faults {
    latency_ms: AtomicU64,
    throttle_every: AtomicU64,
    throttle_next: AtomicU64,
    retry_after_secs: AtomicU64,
    retry_after_date: AtomicBool,
    fail_next: AtomicU64,
    fail_status: AtomicU16,
    drop_next: AtomicU64,
    fail_next_creates: AtomicU64,
    drop_next_creates: AtomicU64,
    delay_next_creates: AtomicU64,
    create_delay_ms: AtomicU64,
    duplicate_next_creates: AtomicU64,
    total: AtomicU64,
    by_path: Mutex<BTreeMap<String, u64>>,
    log: Mutex<VecDeque<RequestRecord>>,
}

/// Decrements `counter` if positive; true when it was.
fn take(counter: &AtomicU64) -> bool {
    counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
}

impl Faults {
    /// Adds a fixed delay before every FHIR answer.
    pub fn set_latency(&self, latency: Duration) {
        self.latency_ms.store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// The fixed delay in force.
    pub fn latency(&self) -> Duration {
        Duration::from_millis(self.latency_ms.load(Ordering::SeqCst))
    }

    fn set_retry_after(&self, retry_after: RetryAfter) {
        let (secs, date) = match retry_after {
            RetryAfter::Seconds(s) => (s, false),
            RetryAfter::HttpDate(s) => (s, true),
        };
        self.retry_after_secs.store(secs, Ordering::SeqCst);
        self.retry_after_date.store(date, Ordering::SeqCst);
    }

    /// Answers every `n`-th FHIR request with 429 (`n = 0` switches it off).
    pub fn throttle_every(&self, n: u64, retry_after: RetryAfter) {
        self.set_retry_after(retry_after);
        self.throttle_every.store(n, Ordering::SeqCst);
    }

    /// Answers the next `k` FHIR requests with 429.
    pub fn throttle_next(&self, k: u64, retry_after: RetryAfter) {
        self.set_retry_after(retry_after);
        self.throttle_next.store(k, Ordering::SeqCst);
    }

    /// Answers the next `k` FHIR requests with `status` (a 5xx, e.g. 500 or 503).
    pub fn fail_next(&self, k: u64, status: u16) {
        self.fail_status.store(status, Ordering::SeqCst);
        self.fail_next.store(k, Ordering::SeqCst);
    }

    /// Cuts the body of the next `k` FHIR answers half-way and aborts the connection.
    pub fn drop_next(&self, k: u64) {
        self.drop_next.store(k, Ordering::SeqCst);
    }

    /// Answers the next `k` creates (`POST {base}/{Type}`) with `status` BEFORE storing them;
    /// other requests pass.
    pub fn fail_next_creates(&self, k: u64, status: u16) {
        self.fail_status.store(status, Ordering::SeqCst);
        self.fail_next_creates.store(k, Ordering::SeqCst);
    }

    /// Stores the next `k` creates, then aborts the connection before the answer is complete
    /// (the client never sees its 201); other requests pass.
    pub fn drop_next_creates(&self, k: u64) {
        self.drop_next_creates.store(k, Ordering::SeqCst);
    }

    /// Stores the next `k` creates at once, then holds each answer back for `delay` (a client
    /// killed during the wait has filed a resource it never heard of); other requests pass.
    pub fn delay_next_creates(&self, k: u64, delay: Duration) {
        self.create_delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
        self.delay_next_creates.store(k, Ordering::SeqCst);
    }

    /// Refuses the next `k` creates as Epic refuses a duplicate (HTTP 400, OperationOutcome
    /// 59141) without storing them; other requests pass.
    pub fn duplicate_next_creates(&self, k: u64) {
        self.duplicate_next_creates.store(k, Ordering::SeqCst);
    }

    /// Switches every fault off (latency included); keeps the request log.
    pub fn clear(&self) {
        self.latency_ms.store(0, Ordering::SeqCst);
        self.throttle_every.store(0, Ordering::SeqCst);
        self.throttle_next.store(0, Ordering::SeqCst);
        self.fail_next.store(0, Ordering::SeqCst);
        self.drop_next.store(0, Ordering::SeqCst);
        self.fail_next_creates.store(0, Ordering::SeqCst);
        self.drop_next_creates.store(0, Ordering::SeqCst);
        self.delay_next_creates.store(0, Ordering::SeqCst);
        self.duplicate_next_creates.store(0, Ordering::SeqCst);
    }

    /// Number of FHIR requests received.
    pub fn requests(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }

    /// Number of FHIR requests whose path contains `fragment` (e.g. `"/Observation"`).
    pub fn requests_to(&self, fragment: &str) -> u64 {
        self.by_path.lock().unwrap().iter().filter(|(p, _)| p.contains(fragment)).map(|(_, n)| n).sum()
    }

    /// Requests per path (without query).
    pub fn requests_by_path(&self) -> BTreeMap<String, u64> {
        self.by_path.lock().unwrap().clone()
    }

    /// The most recent requests (at most [`REQUEST_LOG_CAPACITY`]), oldest first.
    pub fn request_log(&self) -> Vec<RequestRecord> {
        self.log.lock().unwrap().iter().cloned().collect()
    }

    /// Forgets counters and the log.
    pub fn reset_log(&self) {
        self.total.store(0, Ordering::SeqCst);
        self.by_path.lock().unwrap().clear();
        self.log.lock().unwrap().clear();
    }

    /// Logs a request and decides its fate.
    pub(crate) fn admit(&self, method: &str, path: &str, uri: &str) -> Decision {
        let n = self.total.fetch_add(1, Ordering::SeqCst) + 1;
        *self.by_path.lock().unwrap().entry(path.to_string()).or_default() += 1;
        {
            let mut log = self.log.lock().unwrap();
            if log.len() == REQUEST_LOG_CAPACITY {
                log.pop_front();
            }
            log.push_back(RequestRecord { method: method.to_string(), uri: uri.to_string() });
        }
        let every = self.throttle_every.load(Ordering::SeqCst);
        if take(&self.throttle_next) || (every > 0 && n.is_multiple_of(every)) {
            let secs = self.retry_after_secs.load(Ordering::SeqCst);
            return Decision::Throttle(if self.retry_after_date.load(Ordering::SeqCst) {
                RetryAfter::HttpDate(secs)
            } else {
                RetryAfter::Seconds(secs)
            });
        }
        let is_create = method == "POST" && !path.ends_with("/_search");
        if is_create && take(&self.fail_next_creates) {
            return Decision::Fail(self.fail_status.load(Ordering::SeqCst));
        }
        if is_create && take(&self.drop_next_creates) {
            return Decision::Drop;
        }
        if is_create && take(&self.duplicate_next_creates) {
            return Decision::Duplicate;
        }
        if is_create && take(&self.delay_next_creates) {
            return Decision::Hold(Duration::from_millis(self.create_delay_ms.load(Ordering::SeqCst)));
        }
        if take(&self.fail_next) {
            return Decision::Fail(self.fail_status.load(Ordering::SeqCst));
        }
        if take(&self.drop_next) {
            return Decision::Drop;
        }
        Decision::Pass
    }
}

/// The 429 answer.
pub(crate) fn throttled(retry_after: RetryAfter) -> Response {
    let value = match retry_after {
        RetryAfter::Seconds(s) => s.to_string(),
        RetryAfter::HttpDate(s) => httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(s)),
    };
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
    if let Ok(v) = HeaderValue::from_str(&value) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// The injected 5xx answer.
pub(crate) fn failed(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "text/html")], "<html><body><h1>Server Error</h1></body></html>")
        .into_response()
}

/// Epic's answer to a create of something already on the chart (59141, e.g. an allergy already
/// recorded). Epic's HTTP status and wording for it are not documented: the status is the 400 of
/// the simulator's other create refusals, the text is the simulator's own.
pub(crate) fn duplicate() -> Response {
    wire::error(
        StatusCode::BAD_REQUEST,
        Format::Json,
        &[Issue::new("error", "duplicate", "59141", "Duplicate data was found; nothing was filed.")],
    )
}

/// Rewrites `resp` so that its body stops half-way and the connection is aborted.
pub(crate) async fn truncate(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let half = Bytes::copy_from_slice(&bytes[..bytes.len() / 2]);
    parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len().max(2)));
    // Yield the first half, give hyper time to flush it, then fail: hyper aborts the connection.
    let stream = futures::stream::unfold(Some(half), |state| async move {
        match state {
            Some(bytes) => Some((Ok(bytes), None)),
            None => {
                tokio::time::sleep(DROP_FLUSH_DELAY).await;
                let err = std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    "injected fault: connection dropped",
                );
                Some((Err::<Bytes, _>(err), None))
            }
        }
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The create switches hit only creates (not searches by POST, not reads), `k` times each.
    #[test]
    fn create_switches_count_down_on_creates_only() {
        let faults = Faults::default();
        faults.delay_next_creates(1, Duration::from_millis(700));
        faults.duplicate_next_creates(1);
        let base = "/api/FHIR/R4/Observation";
        assert_eq!(faults.admit("GET", base, base), Decision::Pass);
        assert_eq!(faults.admit("POST", "/api/FHIR/R4/Observation/_search", base), Decision::Pass);
        assert_eq!(faults.admit("POST", base, base), Decision::Duplicate);
        assert_eq!(faults.admit("POST", base, base), Decision::Hold(Duration::from_millis(700)));
        assert_eq!(faults.admit("POST", base, base), Decision::Pass);
        faults.delay_next_creates(3, Duration::from_secs(1));
        faults.clear();
        assert_eq!(faults.admit("POST", base, base), Decision::Pass, "clear switches them off");
    }
}
