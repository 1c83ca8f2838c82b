//! SMART on FHIR authentication for fhirsync.
//!
//! The FHIR client only depends on [`TokenProvider`]: a source of valid access tokens that
//! caches, refreshes before expiry, and mints a new token after a 401 ([`TokenProvider::invalidate`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use secrecy::SecretString;

pub mod backend;
pub mod discovery;
mod error;
mod fsutil;
pub mod keys;
pub mod launch;
mod settings;
pub mod store;
pub mod token;

pub use backend::{BackendServicesAuth, TokenInfo};
pub use discovery::Endpoints;
pub use error::{Error, Result};
pub use keys::{KeySource, KeyType, SigningKey, generate_private_key, load_private_key, write_private_key};
pub use launch::{Callback, LaunchSettings, LoopbackListener, PendingLogin, is_loopback, parse_pasted};
pub use settings::{AuthSettings, DEFAULT_TOKEN_STORE, http_client};
pub use store::{AuthStatus, StoredTokenAuth, StoredTokens, TokenStore};

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
