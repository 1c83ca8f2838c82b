//! The crate's error type.

use std::path::PathBuf;

use crate::outcome::{Outcome, summarize};
use crate::retry::RetryReason;

/// Errors of the FHIR client. URLs in errors are redacted (query values hidden, see
/// [`crate::redact_url`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A URL that does not parse.
    #[error("invalid URL `{url}`: {source}")]
    InvalidUrl {
        /// The URL as given (redacted).
        url: String,
        /// Cause.
        source: url::ParseError,
    },
    /// The CA bundle file could not be read.
    #[error("cannot read CA bundle {path}: {source}")]
    CaBundleRead {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The CA bundle file is not PEM certificates.
    #[error("CA bundle {path} is not a PEM certificate bundle: {source}")]
    CaBundleParse {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: reqwest::Error,
    },
    /// The HTTPS proxy URL is not usable.
    #[error("invalid HTTPS proxy `{url}`: {source}")]
    Proxy {
        /// Proxy URL (redacted).
        url: String,
        /// Cause.
        source: reqwest::Error,
    },
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
    /// No access token could be obtained.
    #[error("cannot obtain an access token: {0}")]
    Token(#[from] fhirsync_auth::Error),
    /// The server rejected the token even after a fresh one was obtained.
    #[error("{url}: HTTP 401 even with a fresh access token; check the client's registration and scopes")]
    Unauthorized {
        /// Request URL (redacted).
        url: String,
    },
    /// A non-retryable HTTP status, with the OperationOutcome issues the body carried.
    #[error("{url}: HTTP {status}{}", outcome_suffix(.outcomes))]
    Status {
        /// Request URL (redacted).
        url: String,
        /// HTTP status.
        status: u16,
        /// Issues of the body's OperationOutcome (empty if none).
        outcomes: Vec<Outcome>,
    },
    /// Epic answers an unknown resource type with a web server HTML 404, not FHIR.
    #[error("{url}: unknown resource type on this server (HTML 404)")]
    UnknownResourceType {
        /// Request URL (redacted).
        url: String,
    },
    /// Retries were exhausted on a transient failure.
    #[error(
        "{url}: giving up after {attempts} attempts, last failure: {}{}",
        network.as_deref().unwrap_or(&reason.to_string()),
        outcome_suffix(.outcomes)
    )]
    RetriesExhausted {
        /// Request URL (redacted).
        url: String,
        /// Attempts made.
        attempts: u32,
        /// Last failure.
        reason: RetryReason,
        /// For a network failure: which one (DNS, refused, timeout after N s, TLS, reset,
        /// closed mid-body) and the fix to try.
        network: Option<String>,
        /// OperationOutcome issues of the last response, if any.
        outcomes: Vec<Outcome>,
    },
    /// The server stayed unavailable (the outage breaker stayed open) longer than allowed.
    #[error(
        "the FHIR server was unavailable for {} (5xx, 429, timeouts or resets on every probe), longer than \
         extract.retry.max_outage_secs = {max_outage_secs}; nothing is lost and the run is resumable: rerun \
         when the server is back to continue where it stopped",
        crate::outage::human(*.down_for)
    )]
    ServerUnavailable {
        /// How long the server had been unavailable.
        down_for: std::time::Duration,
        /// The configured limit, seconds.
        max_outage_secs: u64,
    },
    /// The daily request budget is spent.
    #[error(
        "daily request budget of {limit} requests reached for {day} (extract.schedule.daily_request_budget); \
         the run stops here and is resumable: rerun (e.g. the next day) to continue where it stopped"
    )]
    BudgetExhausted {
        /// The budget.
        limit: u64,
        /// The calendar day (local time).
        day: chrono::NaiveDate,
    },
    /// A transport failure that is not transient (e.g. invalid TLS certificate).
    #[error("{url}: request failed: {detail}")]
    Transport {
        /// Request URL (redacted).
        url: String,
        /// Which failure (see [`NetworkFailure`]) and the fix to try.
        detail: String,
        /// Cause.
        source: reqwest::Error,
    },
    /// The body is not valid JSON.
    #[error("{url}: response is not valid JSON: {source}")]
    Json {
        /// Request URL (redacted).
        url: String,
        /// Cause.
        source: serde_json::Error,
    },
    /// The body is JSON but not the expected resource.
    #[error("{url}: expected a {expected}, got {found}")]
    UnexpectedResource {
        /// Request URL (redacted).
        url: String,
        /// What was expected.
        expected: &'static str,
        /// `resourceType` found (or `no resourceType`).
        found: String,
    },
}

fn outcome_suffix(outcomes: &[Outcome]) -> String {
    if outcomes.is_empty() { String::new() } else { format!(": {}", summarize(outcomes)) }
}

impl Error {
    /// OperationOutcome issues carried by this error.
    pub fn outcomes(&self) -> &[Outcome] {
        match self {
            Error::Status { outcomes, .. } | Error::RetriesExhausted { outcomes, .. } => outcomes,
            _ => &[],
        }
    }

    /// True when an outcome carries Epic code `code`.
    pub fn has_outcome(&self, code: &str) -> bool {
        self.outcomes().iter().any(|o| o.is(code))
    }

    /// HTTP status of the failure, if a response was received.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::Unauthorized { .. } => Some(401),
            Error::UnknownResourceType { .. } => Some(404),
            _ => None,
        }
    }

    /// True for failures that make every further request pointless (credentials, TLS setup).
    pub fn is_fatal_for_run(&self) -> bool {
        matches!(
            self,
            Error::Token(_)
                | Error::Unauthorized { .. }
                | Error::Build(_)
                | Error::CaBundleRead { .. }
                | Error::CaBundleParse { .. }
                | Error::Proxy { .. }
                | Error::ServerUnavailable { .. }
                | Error::BudgetExhausted { .. }
        )
    }

    /// True when the run stopped on a limit (outage, budget) rather than a fault: everything
    /// fetched is kept and the next run resumes.
    pub fn is_resumable_stop(&self) -> bool {
        matches!(self, Error::ServerUnavailable { .. } | Error::BudgetExhausted { .. })
    }
}

/// `Result` with the FHIR client [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What kind of network failure a transport error was, read from its source chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkFailure {
    /// The host name did not resolve.
    Dns,
    /// Nothing listens on the port (connection refused).
    Refused,
    /// Connecting did not complete within the connect timeout.
    ConnectTimeout,
    /// The server accepted the request but did not answer completely within the request timeout.
    Timeout,
    /// The TLS handshake failed; the reason (e.g. the certificate problem).
    Tls(String),
    /// The connection was reset or closed before the answer's headers.
    Reset,
    /// The connection was closed while the body was being read.
    ClosedMidBody,
    /// Another transport failure; its innermost message.
    Other(String),
}

impl NetworkFailure {
    /// Classifies `e` by walking its source chain (`is_timeout`, `is_connect`, `std::io::Error`
    /// kinds, hyper and rustls messages).
    pub fn of(e: &reqwest::Error) -> NetworkFailure {
        use std::error::Error as _;
        let mut messages = Vec::new();
        let mut io_kinds = Vec::new();
        let mut cur: Option<&(dyn std::error::Error + 'static)> = e.source();
        while let Some(err) = cur {
            messages.push(err.to_string());
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                io_kinds.push(io.kind());
            }
            cur = err.source();
        }
        let any = |needles: &[&str]| {
            messages.iter().any(|m| {
                let m = m.to_ascii_lowercase();
                needles.iter().any(|n| m.contains(n))
            })
        };
        let innermost = messages.last().cloned().unwrap_or_else(|| e.to_string());
        use std::io::ErrorKind as K;
        if e.is_timeout() {
            return if e.is_connect() { NetworkFailure::ConnectTimeout } else { NetworkFailure::Timeout };
        }
        if any(&["dns error", "failed to lookup address", "name or service not known", "no such host"]) {
            return NetworkFailure::Dns;
        }
        if io_kinds.contains(&K::ConnectionRefused) || any(&["connection refused"]) {
            return NetworkFailure::Refused;
        }
        // tokio-rustls hands rustls errors up as `InvalidData` I/O errors while connecting.
        let tls_io = e.is_connect() && io_kinds.contains(&K::InvalidData);
        if tls_io
            || any(&[
                "certificate",
                "tls",
                "handshake",
                "invalid peer",
                "peer is incompatible",
                "peer misbehaved",
                "fatal alert",
                "corrupt message",
            ])
        {
            return NetworkFailure::Tls(innermost);
        }
        if e.is_body() || e.is_decode() {
            return NetworkFailure::ClosedMidBody;
        }
        if io_kinds.iter().any(|k| {
            matches!(k, K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof)
        }) || any(&["connection closed", "connection reset", "incomplete message", "broken pipe"])
        {
            return NetworkFailure::Reset;
        }
        NetworkFailure::Other(innermost)
    }

    /// The failure with the fix to try, for a request that was given `timeout` (and
    /// `connect_timeout` to connect).
    pub fn describe(&self, timeout: std::time::Duration, connect_timeout: std::time::Duration) -> String {
        match self {
            NetworkFailure::Dns => {
                "host not found (DNS lookup failed): check the host name in the URL, and the proxy \
                 (connection.https_proxy) if the network requires one"
                    .to_string()
            }
            NetworkFailure::Refused => {
                "connection refused: check the port in the URL and that the server runs".to_string()
            }
            NetworkFailure::ConnectTimeout => format!(
                "connect timeout after {} s: check the network path to the host (firewall, proxy)",
                secs(connect_timeout)
            ),
            NetworkFailure::Timeout => format!(
                "timeout after {} s without a complete answer: check the network, or raise \
                 extract.request_timeout_secs if the server is just slow",
                secs(timeout)
            ),
            NetworkFailure::Tls(reason) => format!(
                "TLS failure ({reason}): check connection.ca_bundle (a PEM bundle with the server's CA) \
                 and that the URL's host matches the certificate"
            ),
            NetworkFailure::Reset => "connection reset by the server (or a proxy) before it answered: \
                 check the network, proxies and load balancers in between; rerun to retry"
                .to_string(),
            NetworkFailure::ClosedMidBody => "connection closed mid-body (the answer was cut off): check \
                 the network, proxies and load balancers in between; rerun to retry"
                .to_string(),
            NetworkFailure::Other(m) => m.clone(),
        }
    }
}

fn secs(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 { format!("{}", d.as_secs()) } else { format!("{s:.1}") }
}
