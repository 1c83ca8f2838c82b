//! The HTTP client: bearer auth, politeness, retries, paging.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fhirsync_auth::TokenProvider;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tracing::{debug, warn};
use url::Url;

use crate::bundle::{BundleError, SearchPage, parse_search_page};
use crate::error::{Error, Result};
use crate::outcome::{Outcome, parse_outcome};
use crate::politeness::{AdaptiveLimiter, ConcurrencyConfig, Permit, RateLimiter};
use crate::record::{Exchange, Recorder};
use crate::redact_url;
use crate::retry::{Decision, RetryPolicy, RetryReason, transport_reason};

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

/// Settings of [`FhirClient`].
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Concurrency ceiling and adaptation.
    pub concurrency: ConcurrencyConfig,
    /// Rate limit; `None` = unlimited (tests, benchmarks).
    pub rate_limit: Option<RateLimit>,
    /// Retry bounds.
    pub retry: RetryPolicy,
    /// Timeout of one request.
    pub request_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Sent as `Epic-Client-ID` on metadata calls when set.
    pub epic_client_id: Option<String>,
    /// HTTPS proxy URL (e.g. `http://proxy.hospital.local:3128`).
    pub https_proxy: Option<String>,
    /// PEM bundle of extra trusted CA certificates (added to the built-in roots).
    pub ca_bundle: Option<PathBuf>,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            concurrency: ConcurrencyConfig::default(),
            rate_limit: Some(RateLimit::default()),
            retry: RetryPolicy::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            epic_client_id: None,
            https_proxy: None,
            ca_bundle: None,
            user_agent: concat!("fhirsync/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
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
    rate: Option<RateLimiter>,
    limiter: Arc<AdaptiveLimiter>,
    stats: Stats,
    /// Set once by [`FhirClient::record_to`]; unset (one atomic load per answer) otherwise.
    recorder: OnceLock<Arc<Recorder>>,
}

enum Received {
    Full(Response),
    Streaming(StreamingResponse),
}

impl FhirClient {
    /// Builds a client. Fails on an unreadable CA bundle, a bad proxy URL or TLS setup errors.
    pub fn new(config: ClientConfig, tokens: Arc<dyn TokenProvider>) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.concurrency.max.max(1));
        if let Some(proxy) = &config.https_proxy {
            let p = reqwest::Proxy::https(proxy)
                .map_err(|source| Error::Proxy { url: redact_str(proxy), source })?;
            builder = builder.proxy(p);
        }
        if let Some(path) = &config.ca_bundle {
            let pem =
                std::fs::read(path).map_err(|source| Error::CaBundleRead { path: path.clone(), source })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|source| Error::CaBundleParse { path: path.clone(), source })?;
            if certs.is_empty() {
                return Err(Error::CaBundleRead {
                    path: path.clone(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "no `-----BEGIN CERTIFICATE-----` block found",
                    ),
                });
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder.build().map_err(Error::Build)?;
        let rate = config.rate_limit.map(|r| RateLimiter::new(r.per_second, r.burst));
        let limiter = AdaptiveLimiter::new(config.concurrency.clone());
        Ok(FhirClient {
            inner: Arc::new(Inner {
                http,
                tokens,
                config,
                rate,
                limiter,
                stats: Stats::default(),
                recorder: OnceLock::new(),
            }),
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> ClientStats {
        let s = &self.inner.stats;
        ClientStats {
            requests: s.requests.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            throttled: s.throttled.load(Ordering::Relaxed),
            token_refreshes: s.token_refreshes.load(Ordering::Relaxed),
            busy_micros: s.busy_micros.load(Ordering::Relaxed),
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
        match self.run(req, false).await? {
            Received::Full(r) => Ok(r),
            Received::Streaming(_) => unreachable!("run(stream = false) always reads the body"),
        }
    }

    /// Sends `req` with retries up to the response headers; the body is streamed by the caller.
    pub async fn execute_streaming(&self, req: &Request) -> Result<StreamingResponse> {
        match self.run(req, true).await? {
            Received::Streaming(r) => Ok(r),
            Received::Full(_) => unreachable!("run(stream = true) never reads the body"),
        }
    }

    /// `GET {base}/metadata` (JSON, with `Epic-Client-ID` when configured): the raw body.
    pub async fn metadata(&self, base: &Url) -> Result<Bytes> {
        let url = join(base, "metadata")?;
        let mut req = Request::get(url);
        if let Some(id) = &self.inner.config.epic_client_id
            && let Ok(v) = HeaderValue::from_str(id)
        {
            req = req.header(EPIC_CLIENT_ID.clone(), v);
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
                            self.note_retry(url, reason, delay);
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

    fn note_retry(&self, url: &Url, reason: RetryReason, delay: Duration) {
        self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
        warn!(url = %redact_url(url), %reason, delay_ms = delay.as_millis() as u64, "Retrying request.");
    }

    async fn run(&self, req: &Request, stream: bool) -> Result<Received> {
        let inner = &self.inner;
        let policy = &inner.config.retry;
        let mut attempt: u32 = 0;
        let mut refreshed = false;
        loop {
            let last: RetryReason;
            if let Some(rate) = &inner.rate {
                rate.acquire().await;
            }
            let permit = inner.limiter.acquire().await;
            let token = inner.tokens.access_token().await?;
            inner.stats.requests.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let sent = self.send(req, &token).await;
            let latency = started.elapsed();
            let (decision, outcomes) = match sent {
                Err(e) => match transport_reason(&e) {
                    Some(reason) => {
                        last = reason;
                        if reason.is_congestion() {
                            inner.limiter.on_congestion();
                        }
                        (policy.classify_transport(reason, attempt), Vec::new())
                    }
                    None => return Err(Error::Transport { url: redact_url(&req.url), source: e }),
                },
                Ok(resp) if resp.status().is_success() => {
                    if stream {
                        inner.limiter.on_success(latency);
                        return Ok(Received::Streaming(StreamingResponse {
                            response: resp,
                            _permit: permit,
                        }));
                    }
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let url = resp.url().clone();
                    match resp.bytes().await {
                        Ok(body) => {
                            inner
                                .stats
                                .busy_micros
                                .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                            // Time to the response headers: body size must not look like congestion.
                            inner.limiter.on_success(latency);
                            debug!(url = %redact_url(&url), status = status.as_u16(), bytes = body.len(), "Response received.");
                            // After the timings: writing the file is not the server's latency.
                            self.record(req, status, &headers, &body, &token).await;
                            return Ok(Received::Full(Response { url, status, headers, body }));
                        }
                        Err(e) => {
                            let reason = transport_reason(&e).unwrap_or(RetryReason::TruncatedBody);
                            last = reason;
                            (policy.classify_transport(reason, attempt), Vec::new())
                        }
                    }
                }
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let body = resp.bytes().await.unwrap_or_default();
                    self.record(req, status, &headers, &body, &token).await;
                    if status == StatusCode::NOT_FOUND && is_html(&headers, &body) {
                        return Err(Error::UnknownResourceType { url: redact_url(&req.url) });
                    }
                    let outcomes = parse_outcome(&String::from_utf8_lossy(&body));
                    last = if matches!(status.as_u16(), 429 | 503) {
                        RetryReason::Throttled(status.as_u16())
                    } else {
                        RetryReason::ServerError(status.as_u16())
                    };
                    if matches!(status.as_u16(), 429 | 503) {
                        inner.stats.throttled.fetch_add(1, Ordering::Relaxed);
                        inner.limiter.on_congestion();
                    }
                    let decision = if is_cooldown(&outcomes) {
                        Decision::Fail
                    } else {
                        policy.classify_status(status, &headers, attempt, refreshed)
                    };
                    match decision {
                        Decision::RefreshToken => {
                            inner.tokens.invalidate(&token);
                            inner.stats.token_refreshes.fetch_add(1, Ordering::Relaxed);
                            refreshed = true;
                            debug!(url = %redact_url(&req.url), "Access token rejected; refreshing once.");
                            continue;
                        }
                        Decision::Fail if status == StatusCode::UNAUTHORIZED => {
                            return Err(Error::Unauthorized { url: redact_url(&req.url) });
                        }
                        Decision::Fail if attempt == 0 || !is_transient_status(status) => {
                            return Err(Error::Status {
                                url: redact_url(&req.url),
                                status: status.as_u16(),
                                outcomes,
                            });
                        }
                        d => (d, outcomes),
                    }
                }
            };
            drop(permit);
            let decision = match decision {
                Decision::Retry { .. } if req.method == Method::POST => Decision::Fail,
                d => d,
            };
            match decision {
                Decision::Retry { reason, delay } => {
                    self.note_retry(&req.url, reason, delay);
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                _ => {
                    return Err(Error::RetriesExhausted {
                        url: redact_url(&req.url),
                        attempts: attempt + 1,
                        reason: last,
                        outcomes,
                    });
                }
            }
        }
    }

    /// Hands one full answer to the recorder, when recording is on (`--record`).
    async fn record(
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
