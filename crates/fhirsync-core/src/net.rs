//! Transport failures, classified so that every message says which failure it was (DNS,
//! refused, timeout, TLS, reset, cut body) and the fix to try. Shared by the token, discovery
//! and FHIR requests.

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
