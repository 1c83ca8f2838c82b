//! The HTTP client: bearer auth, politeness, retries, paging.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use fhirsync_core::{ConnectionConfig, TokenProvider};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tracing::{debug, warn};
use url::Url;

use crate::bundle::{BundleError, SearchPage, parse_search_page};
use crate::error::{Error, NetworkFailure, Result};
use crate::outage::{Breaker, OutagePolicy, Signal, Ticket};
use crate::outcome::{Outcome, parse_outcome};
use crate::politeness::{AdaptiveLimiter, ConcurrencyConfig, Permit, RateLimiter};
use crate::record::{Exchange, Recorder};
use crate::redact_url;
use crate::retry::{Decision, RetryPolicy, RetryReason, retry_after, transport_reason};
use crate::schedule::{Budget, Period, SchedulePolicy};

/// The media type sent in every `Accept` header (Epic answers XML without it).
pub const FHIR_JSON: &str = "application/fhir+json";
/// Default timeout of one request (headers and body).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Default connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default requests per second (Epic asks apps to throttle themselves; low on purpose).
pub const DEFAULT_RATE_PER_SECOND: f64 = 10.0;
/// Default token-bucket burst.
pub const DEFAULT_RATE_BURST: u32 = 10;

/// Epic's client-id header, recommended on metadata calls.
pub static EPIC_CLIENT_ID: HeaderName = HeaderName::from_static("epic-client-id");

/// A token-bucket rate limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Average requests per second.
    pub per_second: f64,
    /// Requests allowed in a burst.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        RateLimit { per_second: DEFAULT_RATE_PER_SECOND, burst: DEFAULT_RATE_BURST }
    }
}

/// Settings of [`FhirClient`] that come from `[extract]` (politeness, retries, timeouts). The
/// transport settings of `[connection]` (proxy, CA bundle, client id) are read from the section
/// itself by [`FhirClient::with_connection`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Concurrency ceiling and adaptation.
    pub concurrency: ConcurrencyConfig,
    /// Rate limit; `None` = unlimited (tests, benchmarks).
    pub rate_limit: Option<RateLimit>,
    /// Retry bounds (per request).
    pub retry: RetryPolicy,
    /// Run-level outage breaker above the per-request retries; `None` = off (each request
    /// gives up after its own retries).
    pub outage: Option<OutagePolicy>,
    /// Peak window, per-period rates (replacing `rate_limit`) and daily request budget.
    pub schedule: SchedulePolicy,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            concurrency: ConcurrencyConfig::default(),
            rate_limit: Some(RateLimit::default()),
            retry: RetryPolicy::default(),
            outage: Some(OutagePolicy::default()),
            schedule: SchedulePolicy::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            user_agent: concat!("fhirsync/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// The HTTP client of `config` and `connection` (proxy, extra CA roots, timeouts, user agent).
fn http_client(config: &ClientConfig, connection: &ConnectionConfig) -> Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .user_agent(config.user_agent.clone())
        .timeout(config.request_timeout)
        .connect_timeout(config.connect_timeout)
        .pool_max_idle_per_host(config.concurrency.max.max(1));
    let builder = fhirsync_core::transport::with_connection(builder, connection)?;
    builder.build().map_err(Error::Build)
}

/// Request counters since the client was built.
#[derive(Debug, Default)]
struct Stats {
    requests: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    token_refreshes: AtomicU64,
    busy_micros: AtomicU64,
}

/// A snapshot of the client's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClientStats {
    /// HTTP attempts sent (including retries).
    pub requests: u64,
    /// Attempts that were retries.
    pub retries: u64,
    /// 429/503 answers received.
    pub throttled: u64,
    /// Tokens invalidated after a 401.
    pub token_refreshes: u64,
    /// Sum of the durations of all attempts (send to body read), microseconds. Divided by the
    /// wall time it is the mean number of requests in flight (Little's law).
    pub busy_micros: u64,
    /// Times the server was considered unavailable (the outage breaker opened).
    pub outages: u64,
    /// Seconds the server was unavailable in total (a current outage included).
    pub outage_secs: u64,
    /// Seconds the current outage has lasted; 0 while the server is available. Progress shows
    /// "server unavailable, waiting (3 m 10 s)" while it is non-zero.
    pub unavailable_secs: u64,
}

impl ClientStats {
    /// The counters accumulated since `before` (an earlier snapshot of the same client); the
    /// current outage figure is kept as is.
    pub fn since(&self, before: &ClientStats) -> ClientStats {
        ClientStats {
            requests: self.requests.saturating_sub(before.requests),
            retries: self.retries.saturating_sub(before.retries),
            throttled: self.throttled.saturating_sub(before.throttled),
            token_refreshes: self.token_refreshes.saturating_sub(before.token_refreshes),
            busy_micros: self.busy_micros.saturating_sub(before.busy_micros),
            outages: self.outages.saturating_sub(before.outages),
            outage_secs: self.outage_secs.saturating_sub(before.outage_secs),
            unavailable_secs: self.unavailable_secs,
        }
    }
}

/// One HTTP request to send through the client.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Option<Body>,
}

/// A request body; Debug shows only its length (bodies can be patient data).
#[derive(Clone)]
struct Body(Bytes);

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl Request {
    /// A GET.
    pub fn get(url: Url) -> Self {
        Request { method: Method::GET, url, headers: HeaderMap::new(), body: None }
    }
    /// A DELETE.
    pub fn delete(url: Url) -> Self {
        Request { method: Method::DELETE, url, headers: HeaderMap::new(), body: None }
    }
    /// A POST of a FHIR JSON body (`Content-Type: application/fhir+json`), e.g. a create.
    ///
    /// POST is not idempotent, so it is **never retried automatically**: a timeout, a dropped
    /// connection or a 5xx/429 fails at once (`RetriesExhausted` with one attempt, or `Status`)
    /// and the caller decides (for a create: search before re-sending). Only a 401 is re-sent
    /// once with a fresh token, since the server refused it before processing.
    pub fn post_json(url: Url, body: impl Into<Bytes>) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        Request { method: Method::POST, url, headers, body: Some(Body(body.into())) }
    }
    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
    /// The URL.
    pub fn url(&self) -> &Url {
        &self.url
    }
}

/// A response whose body was read completely.
#[derive(Debug, Clone)]
pub struct Response {
    /// Final URL.
    pub url: Url,
    /// HTTP status (2xx).
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// A 2xx response whose body is still to be streamed; holds its concurrency slot until dropped.
#[derive(Debug)]
pub struct StreamingResponse {
    /// The response; read it with `bytes_stream()`.
    pub response: reqwest::Response,
    _permit: Permit,
}

/// A FHIR client shared by all tasks of a run (cheap to clone).
#[derive(Debug, Clone)]
pub struct FhirClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    tokens: Arc<dyn TokenProvider>,
    config: ClientConfig,
    /// `[connection] client_id` as the `Epic-Client-ID` header of metadata calls.
    epic_client_id: Option<HeaderValue>,
    rate: Option<RateLimiter>,
    rate_peak: Option<RateLimiter>,
    rate_off_peak: Option<RateLimiter>,
    budget: Option<Budget>,
    breaker: Option<Breaker>,
    limiter: Arc<AdaptiveLimiter>,
    stats: Stats,
    /// Set once by [`FhirClient::record_to`]; unset (one atomic load per answer) otherwise.
    recorder: OnceLock<Arc<Recorder>>,
}

impl Inner {
    /// The token bucket of the current period (local time).
    fn rate_now(&self) -> Option<&RateLimiter> {
        match self.config.schedule.period(chrono::Local::now().time()) {
            Period::Always => self.rate.as_ref(),
            Period::Peak => self.rate_peak.as_ref(),
            Period::OffPeak => self.rate_off_peak.as_ref(),
        }
    }

    /// Waits for the breaker (`None` when it is off).
    async fn enter(&self) -> Result<Option<Ticket<'_>>> {
        let Some(b) = &self.breaker else { return Ok(None) };
        b.enter().await.map(Some).map_err(|down_for| Error::ServerUnavailable {
            down_for,
            max_outage_secs: self.config.outage.as_ref().map_or(0, |p| p.max_outage.as_secs()),
            left: None,
        })
    }

    /// Reports an attempt; true = the server is unavailable, go back to the gate.
    fn record(&self, ticket: Option<Ticket<'_>>, signal: Signal) -> bool {
        match (&self.breaker, ticket) {
            (Some(b), Some(t)) => b.record(t, signal),
            _ => false,
        }
    }
}

/// A 2xx answer as [`FhirClient::run`] hands it over.
enum Received {
    /// With its whole body.
    Full(Response),
    /// At its headers; the caller streams the body.
    Streaming(StreamingResponse),
}

/// How [`FhirClient::run`] hands over a 2xx answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyMode {
    /// Read the whole body ([`FhirClient::execute`]).
    Read,
    /// Return at the headers; the caller streams the body ([`FhirClient::execute_streaming`]).
    Stream,
}

/// Where one request stands between its attempts.
#[derive(Debug, Default)]
struct Tries {
    /// Failed attempts so far (a refresh after a 401 and a wait for the server do not count).
    attempt: u32,
    /// The token was refreshed once after a 401.
    refreshed: bool,
    /// Successes the breaker had counted at the request's first attempt.
    successes_at_start: Option<u64>,
}

impl Tries {
    /// Successes the breaker had counted when the request began.
    fn start_mark(&self) -> u64 {
        self.successes_at_start.unwrap_or_default()
    }
}

/// One request on the wire: the token it carried and its timing.
struct Sent {
    token: SecretString,
    started: Instant,
    /// Time to the response headers.
    latency: Duration,
}

/// What one attempt came to.
enum Step {
    /// The answer: done.
    Answer(Received),
    /// Send again at once: after a wait for the server, or with a fresh token.
    Again,
    /// The attempt failed; [`FhirClient::after_failure`] decides what follows.
    Failed(Failure),
}

/// A failed attempt.
struct Failure {
    /// What the retry policy decided.
    decision: Decision,
    /// Why it failed (the last failure of a request that gives up).
    reason: RetryReason,
    /// For a network failure: which one, with the fix to try.
    network: Option<String>,
    /// OperationOutcome issues of the answer, if any.
    outcomes: Vec<Outcome>,
    /// The breaker says the server is unavailable: wait at the gate, retries intact.
    held: bool,
}

impl FhirClient {
    /// Builds a client without `[connection]` transport settings: no proxy, only the built-in
    /// CA roots, no `Epic-Client-ID` (tests, benchmarks, the simulator). Fails on TLS setup errors.
    pub fn new(config: ClientConfig, tokens: Arc<dyn TokenProvider>) -> Result<Self> {
        FhirClient::with_connection(config, &ConnectionConfig::default(), tokens)
    }

    /// Builds a client for the `[connection]` section: requests go through its `https_proxy`,
    /// trust its `ca_bundle` besides the built-in roots, and metadata calls send its `client_id`
    /// as `Epic-Client-ID`. Nothing else of the section (secrets, endpoints) is kept.
    ///
    /// Fails if: the CA bundle cannot be read or holds no certificate, the proxy URL is bad,
    /// or TLS cannot be set up.
    pub fn with_connection(
        config: ClientConfig,
        connection: &ConnectionConfig,
        tokens: Arc<dyn TokenProvider>,
    ) -> Result<Self> {
        let http = http_client(&config, connection)?;
        let epic_client_id = connection.client_id.as_deref().and_then(|id| HeaderValue::from_str(id).ok());
        let base = config.rate_limit.map(|r| RateLimiter::new(r.per_second, r.burst));
        let burst = config.rate_limit.map_or(crate::client::DEFAULT_RATE_BURST, |r| r.burst);
        let period_rate = |rate: Option<f64>| match rate {
            None => config.rate_limit.map(|r| RateLimiter::new(r.per_second, r.burst)),
            Some(r) if r > 0.0 => Some(RateLimiter::new(r, burst)),
            Some(_) => None,
        };
        let rate_peak = period_rate(config.schedule.peak_rate);
        let rate_off_peak = period_rate(config.schedule.off_peak_rate);
        let budget = config.schedule.daily_request_budget.map(Budget::new);
        let breaker = config.outage.clone().map(Breaker::new);
        let limiter = AdaptiveLimiter::new(config.concurrency.clone());
        Ok(FhirClient {
            inner: Arc::new(Inner {
                http,
                tokens,
                config,
                epic_client_id,
                rate: base,
                rate_peak,
                rate_off_peak,
                budget,
                breaker,
                limiter,
                stats: Stats::default(),
                recorder: OnceLock::new(),
            }),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> ClientStats {
        let s = &self.inner.stats;
        let figures = self.inner.breaker.as_ref().map_or((0, Duration::ZERO, None), |b| b.figures());
        ClientStats {
            requests: s.requests.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            throttled: s.throttled.load(Ordering::Relaxed),
            token_refreshes: s.token_refreshes.load(Ordering::Relaxed),
            busy_micros: s.busy_micros.load(Ordering::Relaxed),
            outages: figures.0,
            outage_secs: figures.1.as_secs(),
            unavailable_secs: figures.2.map_or(0, |d| d.as_secs().max(1)),
        }
    }

    /// Records every answer read completely from now on, by this client and its clones, into
    /// `recorder` (see [`crate::record`]). A client records into one recorder only: when one
    /// is already set, `recorder` is handed back.
    pub fn record_to(&self, recorder: Arc<Recorder>) -> std::result::Result<(), Arc<Recorder>> {
        self.inner.recorder.set(recorder)
    }

    /// The recorder set by [`FhirClient::record_to`], if any.
    pub fn recorder(&self) -> Option<&Arc<Recorder>> {
        self.inner.recorder.get()
    }

    /// How long the server has been unavailable, while the outage breaker is open.
    pub fn unavailable_for(&self) -> Option<Duration> {
        self.inner.breaker.as_ref().and_then(|b| b.figures().2)
    }

    /// The current (adaptive) concurrency limit.
    pub fn concurrency_limit(&self) -> usize {
        self.inner.limiter.limit()
    }

    /// The configured concurrency ceiling.
    pub fn max_concurrency(&self) -> usize {
        self.inner.config.concurrency.max.max(1)
    }

    /// Sends `req` with retries and reads the whole body. Fails on non-2xx after classification.
    pub async fn execute(&self, req: &Request) -> Result<Response> {
        match self.run(req, BodyMode::Read).await? {
            Received::Full(r) => Ok(r),
            Received::Streaming(_) => unreachable!("BodyMode::Read always reads the body"),
        }
    }

    /// Sends `req` with retries up to the response headers; the body is streamed by the caller.
    pub async fn execute_streaming(&self, req: &Request) -> Result<StreamingResponse> {
        match self.run(req, BodyMode::Stream).await? {
            Received::Streaming(r) => Ok(r),
            Received::Full(_) => unreachable!("BodyMode::Stream never reads the body"),
        }
    }

    /// `GET {base}/metadata` (JSON, with `Epic-Client-ID` when configured): the raw body.
    pub async fn metadata(&self, base: &Url) -> Result<Bytes> {
        let url = join(base, "metadata")?;
        let mut req = Request::get(url);
        if let Some(id) = &self.inner.epic_client_id {
            req = req.header(EPIC_CLIENT_ID.clone(), id.clone());
        }
        Ok(self.execute(&req).await?.body)
    }

    /// First page of `GET {base}/{resource_type}?{params}`.
    pub async fn search(
        &self,
        base: &Url,
        resource_type: &str,
        params: &[(String, String)],
    ) -> Result<SearchPage> {
        let mut url = join(base, resource_type)?;
        if !params.is_empty() {
            url.query_pairs_mut().extend_pairs(params);
        }
        self.page(&url).await
    }

    /// Follows a `next` link verbatim (resolved against `current` when relative).
    pub async fn next_page(&self, current: &Url, next: &str) -> Result<SearchPage> {
        let url = current.join(next).map_err(|source| Error::InvalidUrl { url: redact_str(next), source })?;
        self.page(&url).await
    }

    /// Fetches and parses one searchset page at `url`. A body cut short is retried like a reset.
    pub async fn page(&self, url: &Url) -> Result<SearchPage> {
        let req = Request::get(url.clone());
        let mut attempt = 0;
        loop {
            let resp = self.execute(&req).await?;
            let text = String::from_utf8_lossy(&resp.body);
            match parse_search_page(&text) {
                Ok(page) => return Ok(page),
                Err(BundleError::Json(e)) if e.is_eof() => {
                    match self.inner.config.retry.classify_transport(RetryReason::TruncatedBody, attempt) {
                        Decision::Retry { delay, reason } => {
                            self.note_retry(url, reason, delay, None);
                            tokio::time::sleep(delay).await;
                            attempt += 1;
                        }
                        _ => return Err(Error::Json { url: redact_url(url), source: e }),
                    }
                }
                Err(BundleError::Json(source)) => return Err(Error::Json { url: redact_url(url), source }),
                Err(BundleError::NotABundle(found)) => {
                    return Err(Error::UnexpectedResource {
                        url: redact_url(url),
                        expected: "Bundle",
                        found: found.unwrap_or_else(|| "no resourceType".into()),
                    });
                }
            }
        }
    }

    /// Which network failure `e` is, with the fix to try, for this client's timeouts.
    fn describe(&self, e: &reqwest::Error) -> String {
        let c = &self.inner.config;
        NetworkFailure::of(e).describe(c.request_timeout, c.connect_timeout)
    }

    /// Counts a retry made by a caller outside the client (e.g. a streamed NDJSON download cut
    /// off mid-body and fetched again), so `ClientStats.retries` shows every retry, and logs it.
    pub fn count_retry(&self, url: &Url, reason: RetryReason, delay: Duration) {
        self.note_retry(url, reason, delay, None);
    }

    fn note_retry(&self, url: &Url, reason: RetryReason, delay: Duration, failure: Option<&str>) {
        self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
        let retries = self.inner.stats.retries.load(Ordering::Relaxed);
        match failure {
            Some(failure) => {
                warn!(url = %redact_url(url), %reason, failure, delay_ms = delay.as_millis() as u64, retries, "Retrying request.")
            }
            None => {
                warn!(url = %redact_url(url), %reason, delay_ms = delay.as_millis() as u64, retries, "Retrying request.")
            }
        }
    }

    /// A failed attempt during an outage: it will be re-sent after the outage (a retry that
    /// does not spend the request's own retries).
    fn note_held(&self, url: &Url, reason: RetryReason) {
        self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
        debug!(url = %redact_url(url), %reason, "Server unavailable; request waits for the outage to end.");
    }

    /// Sends `req` until it is answered, retried out, or fails for good: one [`attempt`] after
    /// the other, each failure followed by a retry, a wait for the server, or the final error.
    ///
    /// [`attempt`]: FhirClient::attempt
    async fn run(&self, req: &Request, mode: BodyMode) -> Result<Received> {
        let mut tries = Tries::default();
        loop {
            let failure = match self.attempt(req, mode, &mut tries).await? {
                Step::Answer(received) => return Ok(received),
                Step::Again => continue,
                Step::Failed(failure) => failure,
            };
            self.after_failure(req, failure, &mut tries).await?;
        }
    }

    /// One attempt: through the gates (outage breaker, daily budget, rate, concurrency, token),
    /// on the wire, and what its answer (or its absence) comes to.
    async fn attempt(&self, req: &Request, mode: BodyMode, tries: &mut Tries) -> Result<Step> {
        let inner = &self.inner;
        let ticket = inner.enter().await?;
        let successes_before = ticket.as_ref().map(|t| t.successes_before);
        tries.successes_at_start.get_or_insert(successes_before.unwrap_or_default());
        if let Some(budget) = &inner.budget {
            budget.take(chrono::Local::now().date_naive()).map_err(|s| Error::BudgetExhausted {
                limit: s.limit,
                day: s.day,
                left: None,
            })?;
        }
        if let Some(rate) = inner.rate_now() {
            rate.acquire().await;
        }
        let permit = inner.limiter.acquire().await;
        let token = inner.tokens.access_token().await?;
        inner.stats.requests.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let sent = self.send(req, &token).await;
        let sent_at = Sent { token, started, latency: started.elapsed() };
        match sent {
            Err(e) => self.transport_failure(req, e, ticket, tries.attempt).map(Step::Failed),
            Ok(resp) if resp.status().is_success() => {
                inner.record(ticket, Signal::Up);
                Ok(self.success(req, resp, mode, permit, &sent_at, tries.attempt).await)
            }
            Ok(resp) => self.error_status(req, resp, ticket, &sent_at.token, tries).await,
        }
    }

    /// No answer: a transient failure (refused, reset, timeout, ...) is a failed attempt and
    /// tells the breaker the server is unreachable; any other (e.g. a bad certificate) is final.
    fn transport_failure(
        &self,
        req: &Request,
        e: reqwest::Error,
        ticket: Option<Ticket<'_>>,
        attempt: u32,
    ) -> Result<Failure> {
        let inner = &self.inner;
        let Some(reason) = transport_reason(&e) else {
            let detail = self.describe(&e);
            return Err(Error::Transport { url: redact_url(&req.url), detail, source: e });
        };
        let network = self.describe(&e);
        debug!(url = %redact_url(&req.url), failure = network.as_str(), "Attempt failed.");
        if reason.is_congestion() {
            inner.limiter.on_congestion();
        }
        let held = inner.record(ticket, Signal::Unreachable);
        let decision = inner.config.retry.classify_transport(reason, attempt);
        Ok(Failure { decision, reason, network: Some(network), outcomes: Vec::new(), held })
    }

    /// A 2xx answer: handed over at its headers ([`BodyMode::Stream`]) or with its whole body.
    /// A body cut off is a failed attempt of this request only: the headers came, so the server
    /// is up and the breaker is not told.
    async fn success(
        &self,
        req: &Request,
        resp: reqwest::Response,
        mode: BodyMode,
        permit: Permit,
        sent: &Sent,
        attempt: u32,
    ) -> Step {
        let inner = &self.inner;
        if mode == BodyMode::Stream {
            inner.limiter.on_success(sent.latency);
            return Step::Answer(Received::Streaming(StreamingResponse { response: resp, _permit: permit }));
        }
        let status = resp.status();
        let headers = resp.headers().clone();
        let url = resp.url().clone();
        match resp.bytes().await {
            Ok(body) => {
                inner
                    .stats
                    .busy_micros
                    .fetch_add(sent.started.elapsed().as_micros() as u64, Ordering::Relaxed);
                // Time to the response headers: body size must not look like congestion.
                inner.limiter.on_success(sent.latency);
                debug!(url = %redact_url(&url), status = status.as_u16(), bytes = body.len(), "Response received.");
                // After the timings: writing the file is not the server's latency.
                self.record_answer(req, status, &headers, &body, &sent.token).await;
                Step::Answer(Received::Full(Response { url, status, headers, body }))
            }
            Err(e) => {
                let reason = transport_reason(&e).unwrap_or(RetryReason::TruncatedBody);
                let network = self.describe(&e);
                debug!(url = %redact_url(&req.url), failure = network.as_str(), "Body read failed.");
                let decision = inner.config.retry.classify_transport(reason, attempt);
                Step::Failed(Failure {
                    decision,
                    reason,
                    network: Some(network),
                    outcomes: Vec::new(),
                    held: false,
                })
            }
        }
    }

    /// A non-2xx answer: Epic's HTML 404 for an unknown type, a Bulk cooldown, a 401 (the token
    /// is refreshed once), or a status the policy retries, holds for the server, or fails on.
    async fn error_status(
        &self,
        req: &Request,
        resp: reqwest::Response,
        ticket: Option<Ticket<'_>>,
        token: &SecretString,
        tries: &mut Tries,
    ) -> Result<Step> {
        let inner = &self.inner;
        let is_post = req.method == Method::POST;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.unwrap_or_default();
        self.record_answer(req, status, &headers, &body, token).await;
        if status == StatusCode::NOT_FOUND && is_html(&headers, &body) {
            inner.record(ticket, Signal::Up);
            return Err(Error::UnknownResourceType { url: redact_url(&req.url) });
        }
        let outcomes = parse_outcome(&String::from_utf8_lossy(&body));
        let throttled = matches!(status.as_u16(), 429 | 503);
        let reason = if throttled {
            RetryReason::Throttled(status.as_u16())
        } else {
            RetryReason::ServerError(status.as_u16())
        };
        if throttled {
            inner.stats.throttled.fetch_add(1, Ordering::Relaxed);
            inner.limiter.on_congestion();
        }
        let cooldown = is_cooldown(&outcomes);
        let held = self.signal_status(ticket, status, &headers, throttled, cooldown);
        if held && !is_post {
            // The server is unavailable: wait at the gate with this request's retries intact.
            self.note_held(&req.url, reason);
            return Ok(Step::Again);
        }
        let decision = if cooldown {
            Decision::Fail
        } else {
            inner.config.retry.classify_status(status, &headers, tries.attempt, tries.refreshed)
        };
        if decision == Decision::Fail
            && !cooldown
            && !is_post
            && is_transient_status(status)
            && self.hold_on_exhaustion(&req.url, tries.start_mark()).await
        {
            self.note_held(&req.url, reason);
            return Ok(Step::Again);
        }
        match decision {
            Decision::RefreshToken => {
                inner.tokens.invalidate(token);
                inner.stats.token_refreshes.fetch_add(1, Ordering::Relaxed);
                tries.refreshed = true;
                debug!(url = %redact_url(&req.url), "Access token rejected; refreshing once.");
                Ok(Step::Again)
            }
            Decision::Fail if status == StatusCode::UNAUTHORIZED => {
                Err(Error::Unauthorized { url: redact_url(&req.url) })
            }
            Decision::Fail if tries.attempt == 0 || !is_transient_status(status) => {
                Err(Error::Status { url: redact_url(&req.url), status: status.as_u16(), outcomes })
            }
            decision => Ok(Step::Failed(Failure { decision, reason, network: None, outcomes, held: false })),
        }
    }

    /// Tells the breaker what a non-2xx answer says about the server's health (a cooldown or a
    /// 401 says nothing); true = the server is unavailable, go back to the gate.
    fn signal_status(
        &self,
        ticket: Option<Ticket<'_>>,
        status: StatusCode,
        headers: &HeaderMap,
        throttled: bool,
        cooldown: bool,
    ) -> bool {
        let inner = &self.inner;
        if cooldown || status == StatusCode::UNAUTHORIZED {
            false
        } else if is_transient_status(status) {
            let asked = throttled
                .then(|| retry_after(headers, SystemTime::now()))
                .flatten()
                .map(|d| inner.config.retry.clamp_retry_after(d));
            inner.record(ticket, Signal::Down { retry_after: asked })
        } else {
            inner.record(ticket, Signal::Up)
        }
    }

    /// After a failed attempt: wait at the gate (the server is unavailable), retry after the
    /// policy's delay (never a POST), or give up with the last failure.
    async fn after_failure(&self, req: &Request, failure: Failure, tries: &mut Tries) -> Result<()> {
        let is_post = req.method == Method::POST;
        if failure.held && !is_post {
            self.note_held(&req.url, failure.reason);
            return Ok(());
        }
        match failure.decision {
            Decision::Retry { reason, delay } if !is_post => {
                self.note_retry(&req.url, reason, delay, failure.network.as_deref());
                tokio::time::sleep(delay).await;
                tries.attempt += 1;
                Ok(())
            }
            _ if !is_post && self.hold_on_exhaustion(&req.url, tries.start_mark()).await => {
                self.note_held(&req.url, failure.reason);
                Ok(())
            }
            _ => Err(Error::RetriesExhausted {
                url: redact_url(&req.url),
                attempts: tries.attempt + 1,
                reason: failure.reason,
                network: failure.network,
                outcomes: failure.outcomes,
            }),
        }
    }

    /// Hands one full answer to the recorder, when recording is on (`--record`).
    async fn record_answer(
        &self,
        req: &Request,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        token: &SecretString,
    ) {
        if let Some(recorder) = self.inner.recorder.get() {
            let exchange = Exchange { method: &req.method, url: &req.url, status, headers, body };
            recorder.record(exchange, token).await;
        }
    }

    /// A request is about to give up on a transient failure: true when it should wait for the
    /// server instead. That is the case while the breaker is open, or when no attempt succeeded
    /// since the request began and a second opinion agrees: `GET {base}/metadata` (base = the
    /// request's path without its last segment) fails too. When that answers, the failure is
    /// this request's own (e.g. one search that always fails) and it gives up as before.
    async fn hold_on_exhaustion(&self, url: &Url, successes_at_start: u64) -> bool {
        let Some(b) = &self.inner.breaker else { return false };
        if b.is_open() {
            return true;
        }
        if !b.suspects(successes_at_start) {
            return false;
        }
        let mut probe = url.clone();
        probe.set_query(None);
        probe.set_fragment(None);
        if let Ok(mut segments) = probe.path_segments_mut() {
            segments.pop().push("metadata");
        }
        self.inner.stats.requests.fetch_add(1, Ordering::Relaxed);
        let answered = match self.inner.http.get(probe.clone()).header(ACCEPT, FHIR_JSON).send().await {
            Ok(r) => !(r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS),
            Err(_) => false,
        };
        if answered {
            debug!(url = %redact_url(url), "The server answers metadata; this request's failure is its own.");
            return false;
        }
        b.open_now();
        true
    }

    async fn send(&self, req: &Request, token: &SecretString) -> reqwest::Result<reqwest::Response> {
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid-token-characters"));
        auth.set_sensitive(true);
        let mut builder = self
            .inner
            .http
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone())
            .header(ACCEPT, FHIR_JSON)
            .header(AUTHORIZATION, auth);
        if let Some(body) = &req.body {
            builder = builder.body(body.0.clone());
        }
        builder.send().await
    }
}

fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// Epic's "The Client requested this Group too recently": a scheduled cooldown, never retried.
fn is_cooldown(outcomes: &[Outcome]) -> bool {
    outcomes.iter().any(|o| {
        let has = |s: &Option<String>| s.as_deref().is_some_and(|t| t.contains("too recently"));
        has(&o.text) || has(&o.diagnostics)
    })
}

fn is_html(headers: &HeaderMap, body: &[u8]) -> bool {
    let ct_html = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("html"));
    ct_html || body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<')
}

/// `{base}/{path}` (keeps the base's path, whether or not it ends with `/`).
pub fn join(base: &Url, path: &str) -> Result<Url> {
    let s = format!("{}/{}", base.as_str().trim_end_matches('/'), path.trim_start_matches('/'));
    Url::parse(&s).map_err(|source| Error::InvalidUrl { url: redact_str(&s), source })
}

fn redact_str(s: &str) -> String {
    match Url::parse(s) {
        Ok(u) => redact_url(&u),
        Err(_) => s.split(['?', '@']).next().unwrap_or_default().to_string(),
    }
}
