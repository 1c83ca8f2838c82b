//! The crate's error type. No variant ever carries secret material: keys, secrets, tokens and
//! authorization codes are kept out of messages (reqwest errors are stripped of their URL).

use std::path::PathBuf;

/// The network failure of `e` with the fix to try.
fn network_failure(e: &reqwest::Error) -> String {
    use fhirsync_core::NetworkFailure;
    let timeout = crate::settings::HTTP_TIMEOUT;
    match NetworkFailure::of(e) {
        NetworkFailure::Timeout => format!(
            "timeout after {} s without a complete answer: check the network path to the server and its proxy",
            timeout.as_secs()
        ),
        failure => failure.describe(timeout, timeout),
    }
}

/// Errors of the auth crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token endpoint (or a discovery URL) could not be reached; the message says which
    /// network failure it was (DNS, refused, timeout, TLS, reset) and the fix.
    #[error("cannot reach {url}: {}", network_failure(.source))]
    Unreachable {
        /// URL asked (never carries a secret: codes and tokens travel in bodies).
        url: String,
        /// Cause, stripped of its URL.
        source: reqwest::Error,
    },
    /// The `[connection]` proxy or CA bundle could not be applied.
    #[error(transparent)]
    TransportSetup(#[from] fhirsync_core::TransportSetupError),
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot set up the HTTP client: {source}")]
    HttpClient {
        /// Cause.
        source: reqwest::Error,
    },
    /// The server answered something that is not what the protocol expects.
    #[error("unexpected answer from {url} (HTTP {status}): {problem}")]
    UnexpectedResponse {
        /// URL asked.
        url: String,
        /// HTTP status.
        status: u16,
        /// What was wrong (never the body, which may hold a token).
        problem: String,
    },
    /// Neither `.well-known/smart-configuration` nor `/metadata` gave OAuth endpoints.
    #[error(
        "cannot discover the OAuth endpoints of {fhir_base}: smart-configuration: {smart_configuration}; \
         metadata: {source}; set the Auth Base URI (the authorize URL without `/authorize`) explicitly"
    )]
    Discovery {
        /// FHIR base URL.
        fhir_base: String,
        /// Why `.well-known/smart-configuration` gave no endpoints.
        smart_configuration: Box<Error>,
        /// Why `/metadata` gave no endpoints.
        source: Box<Error>,
    },
    /// The token endpoint refused the client itself (`invalid_client` / `unauthorized_client`):
    /// a configuration problem, not retried.
    #[error("the token endpoint {token_url} refused client `{client_id}` with `{error}`: {hint}")]
    ClientRejected {
        /// Token endpoint URL.
        token_url: String,
        /// Client id that was used.
        client_id: String,
        /// OAuth error code.
        error: String,
        /// What to check.
        hint: &'static str,
    },
    /// The token endpoint answered another OAuth error.
    #[error("the token endpoint {token_url} answered HTTP {status} `{error}`{}", description_suffix(.description))]
    TokenEndpoint {
        /// Token endpoint URL.
        token_url: String,
        /// HTTP status.
        status: u16,
        /// OAuth error code.
        error: String,
        /// `error_description`, if any.
        description: Option<String>,
    },
    /// Signing a client assertion failed.
    #[error("private key kid {kid}: signing failed: {source}")]
    Sign {
        /// The key's `kid`.
        kid: String,
        /// The JWT library's error.
        source: jsonwebtoken::errors::Error,
    },
    /// A private key could not be read or used.
    #[error("private key {origin}: {problem}")]
    Key {
        /// Where the key came from (file path or environment variable name, never content).
        origin: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    File {
        /// What was attempted (`read`, `write`, ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file exists and overwriting was not asked for.
    #[error("{path} already exists; pass --force to overwrite it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A URL built from a setting does not parse.
    #[error("setting `{setting}`: cannot append `/{suffix}`: {source}")]
    InvalidUrl {
        /// Name of the setting the URL is built from.
        setting: &'static str,
        /// The path appended to it.
        suffix: String,
        /// The URL error.
        source: url::ParseError,
    },
    /// A `[connection]` setting is wrong, or its secret reference cannot be read.
    #[error(transparent)]
    Connection(fhirsync_core::Error),
    /// A required setting is missing or invalid.
    #[error("setting `{setting}`: {problem}")]
    Config {
        /// Name of the setting.
        setting: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// The token store file is not the JSON of a token store.
    #[error("token store {path} is not valid: {source}; run `fhirsync auth login` again")]
    StoreJson {
        /// The file.
        path: PathBuf,
        /// The parse error (line and column, never the value).
        source: serde_json::Error,
    },
    /// The token store's `token_url` does not parse.
    #[error("token store {path} is not valid: token_url: {source}; run `fhirsync auth login` again")]
    StoreUrl {
        /// The file.
        path: PathBuf,
        /// The URL error.
        source: url::ParseError,
    },
    /// The token store file exists but cannot be used.
    #[error("token store {path} is not valid: {problem}; run `fhirsync auth login` again")]
    StoreFormat {
        /// The file.
        path: PathBuf,
        /// Parse problem.
        problem: String,
    },
    /// No usable token: never logged in, or access expired without a refresh token.
    #[error("not authenticated ({reason}); run `fhirsync auth login`")]
    NotAuthenticated {
        /// Why.
        reason: String,
    },
    /// The redirect carried a different `state` than the one sent (possible CSRF, or a stale
    /// redirect URL pasted).
    #[error("the redirect's `state` does not match the login request; start the login again")]
    StateMismatch,
    /// The authorization server redirected back with an error.
    #[error("the authorization server refused the login: `{error}`{}", description_suffix(.description))]
    AuthorizationDenied {
        /// OAuth error code.
        error: String,
        /// `error_description`, if any.
        description: Option<String>,
    },
    /// The redirect (captured or pasted) could not be used.
    #[error("login redirect: {problem}")]
    Redirect {
        /// What was wrong.
        problem: String,
    },
    /// No redirect arrived on the loopback listener in time.
    #[error("no login redirect arrived on {addr} within {seconds} s; start the login again")]
    LoginTimeout {
        /// Listening address.
        addr: String,
        /// Timeout.
        seconds: u64,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn description_suffix(description: &Option<String>) -> String {
    description.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
}

/// `Result` with the auth [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A reqwest failure reaching `url`, with the URL removed from the cause.
    pub(crate) fn unreachable(url: &str, source: reqwest::Error) -> Error {
        Error::Unreachable { url: url.to_string(), source: source.without_url() }
    }

    /// Whether the fix is in the configuration (a setting, a key, a file, the token store)
    /// rather than on the server or in the network.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::Config { .. }
                | Error::Connection(_)
                | Error::TransportSetup(_)
                | Error::InvalidUrl { .. }
                | Error::Key { .. }
                | Error::Sign { .. }
                | Error::File { .. }
                | Error::Exists { .. }
                | Error::StoreFormat { .. }
                | Error::StoreJson { .. }
                | Error::StoreUrl { .. }
        )
    }

    /// Whether retrying the same request may succeed (network failure, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::UnexpectedResponse { status, .. } | Error::TokenEndpoint { status, .. } => {
                *status >= 500 || *status == 429
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Local problems (settings, keys, the token store) are configuration; refusals are not.
    #[test]
    fn config_problems_are_told_apart() {
        let url = url::Url::parse("http://x/").and_then(|u| u.join("http://[::1")).unwrap_err();
        let local = [
            Error::Config { setting: "client_id", problem: "missing".into() },
            Error::InvalidUrl { setting: "fhir_base", suffix: "metadata".into(), source: url },
            Error::Exists { path: PathBuf::from("k.pem") },
            Error::StoreFormat { path: PathBuf::from("t.json"), problem: "unknown version 9".into() },
        ];
        assert!(local.iter().all(Error::is_config));
        let remote = [
            Error::NotAuthenticated { reason: "expired".into() },
            Error::StateMismatch,
            Error::TokenEndpoint {
                token_url: "u".into(),
                status: 400,
                error: "invalid_grant".into(),
                description: None,
            },
        ];
        assert!(!remote.iter().any(Error::is_config));
    }
}
