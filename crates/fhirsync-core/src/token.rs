//! The seam between authentication and the FHIR client: a [`TokenProvider`] hands out valid
//! access tokens. It lives here so that the FHIR client does not depend on the auth crate,
//! which implements it (backend services, stored standalone-launch tokens).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use secrecy::SecretString;

/// A boxed, sendable future (keeps [`TokenProvider`] object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of valid access tokens.
pub trait TokenProvider: Send + Sync + fmt::Debug {
    /// A currently valid access token: cached, renewed shortly before expiry.
    fn access_token(&self) -> BoxFuture<'_, Result<SecretString, TokenError>>;
    /// The server rejected `token` (HTTP 401): forget it so the next call obtains a new one.
    fn invalidate(&self, token: &SecretString);
}

/// Why a [`TokenProvider`] could not hand out a token: the provider's own error (for the auth
/// crate's providers a `fhirsync_auth::Error`, reachable with [`TokenError::downcast_ref`]).
/// Display and source are those of that error.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct TokenError(Box<dyn std::error::Error + Send + Sync + 'static>);

impl TokenError {
    /// Wraps the provider's error.
    pub fn new(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        TokenError(Box::new(source))
    }

    /// The provider's error as `E`, if it is one.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }
}

/// A fixed access token (tests, or a token obtained elsewhere). Never renews.
#[derive(Debug, Clone)]
pub struct StaticToken(pub SecretString);

impl TokenProvider for StaticToken {
    fn access_token(&self) -> BoxFuture<'_, Result<SecretString, TokenError>> {
        let token = self.0.clone();
        Box::pin(async move { Ok(token) })
    }
    fn invalidate(&self, _token: &SecretString) {}
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    /// A static token is handed out unchanged, also after `invalidate`.
    #[test]
    fn static_token_never_changes() {
        let provider = StaticToken("t-1".to_string().into());
        let rt = || poll_ready(provider.access_token());
        assert_eq!(rt().unwrap().expose_secret(), "t-1");
        provider.invalidate(&"t-1".to_string().into());
        assert_eq!(rt().unwrap().expose_secret(), "t-1");
    }

    /// A token error keeps the provider's message and can be read back as the provider's type.
    #[test]
    fn token_error_keeps_the_source() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no token store");
        let err = TokenError::new(io);
        assert_eq!(err.to_string(), "no token store");
        assert_eq!(
            err.downcast_ref::<std::io::Error>().map(|e| e.kind()),
            Some(std::io::ErrorKind::NotFound)
        );
        assert!(err.downcast_ref::<std::fmt::Error>().is_none());
    }

    /// Polls a future that never waits to completion.
    fn poll_ready<T>(fut: BoxFuture<'_, T>) -> T {
        let mut fut = fut;
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match fut.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => unreachable!("a static token is ready at once"),
        }
    }
}
