//! SMART on FHIR authentication for fhirsync.
//!
//! The FHIR client only depends on [`TokenProvider`]: a source of valid access tokens that
//! caches, refreshes before expiry, and mints a new token after a 401 ([`TokenProvider::invalidate`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use secrecy::SecretString;

/// Errors of the auth crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The token endpoint could not be reached.
    #[error("cannot reach the token endpoint {url}: {source}")]
    Unreachable {
        /// Token endpoint URL.
        url: String,
        /// Cause.
        source: reqwest::Error,
    },
}

/// `Result` with the auth [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed, sendable future (keeps [`TokenProvider`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of valid access tokens.
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// A currently valid access token: cached, renewed shortly before expiry.
    fn access_token(&self) -> BoxFuture<'_, Result<SecretString>>;
    /// The server rejected `token` (HTTP 401): forget it so the next call obtains a new one.
    fn invalidate(&self, token: &SecretString);
}

/// A fixed access token (tests, or a token obtained elsewhere). Never renews.
#[derive(Debug, Clone)]
pub struct StaticToken(pub SecretString);

impl TokenProvider for StaticToken {
    fn access_token(&self) -> BoxFuture<'_, Result<SecretString>> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
    fn invalidate(&self, _token: &SecretString) {}
}
