//! SMART on FHIR authentication for fhirsync.
//!
//! The FHIR client only depends on [`TokenProvider`] (defined in `fhirsync-core`): a source of
//! valid access tokens that caches, refreshes before expiry, and mints a new token after a 401
//! ([`TokenProvider::invalidate`]).
//!
//! Two providers implement it:
//! - [`BackendServicesAuth`] ([`backend`]): SMART Backend Services, a JWT client assertion signed
//!   with the client's private key ([`keys`]) traded for a token at the token endpoint;
//! - [`StoredTokenAuth`] ([`store`]): the tokens of a standalone launch ([`launch`]), refreshed
//!   with the refresh token.
//!
//! [`AuthSettings`] borrows a connection's settings (the `[connection]` table,
//! [`ConnectionConfig`](fhirsync_core::ConnectionConfig)) and builds the right provider; endpoints come
//! from an explicit Auth Base URI or from discovery ([`discovery`]). Secrets are
//! [`SecretString`](secrecy::SecretString)s: Debug prints `[REDACTED]`, and no error or log line carries a key, secret,
//! token or authorization code.
//!
//! A backend-services client against the in-process simulator:
//!
//! ```
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fhirsync_auth::{AuthSettings, KeyType, SigningKey, TokenProvider, generate_private_key, http_client};
//! use fhirsync_core::{ConnectionConfig, FhirVersion};
//! use fhirsync_sim::testing::{SimBuilder, backend_client};
//!
//! let pem = generate_private_key(KeyType::Rsa(2048))?; // `fhirsync keys generate`
//! let key = SigningKey::from_pem(&pem, "demo key", None)?;
//! // The JWK Set is what `fhirsync keys jwks` prints, registered as a JWK Set URL.
//! let sim = SimBuilder::new().register(backend_client("demo-backend", key.jwks(), true)).try_start().await?;
//! let mut connection = ConnectionConfig::default(); // the `[connection]` table
//! connection.client_id = Some("demo-backend".into());
//! connection.fhir_r4_endpoint = Some(sim.fhir_base(FhirVersion::R4).parse()?);
//! // The key in memory; from a file, set `connection.private_key` instead.
//! let settings = AuthSettings::new(&connection)?.with_private_key(pem);
//! let provider: std::sync::Arc<dyn TokenProvider> = settings.provider(&http_client(settings.connection())?).await?;
//! let _token = provider.access_token().await?; // cached, renewed ~60 s before expiry
//! # Ok(()) }
//! ```

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
/// The token seam and the network failure classification live in `fhirsync-core`, so that the
/// FHIR client needs no auth crate; re-exported here for callers of the providers.
pub use fhirsync_core::{BoxFuture, NetworkFailure, StaticToken, TokenError, TokenProvider};
pub use keys::{KeySource, KeyType, SigningKey, generate_private_key, load_private_key, write_private_key};
pub use launch::{
    Callback, LaunchSettings, LoopbackListener, PendingLogin, Redirect, is_loopback, parse_pasted,
};
pub use settings::{AuthSettings, DEFAULT_TOKEN_STORE, http_client};
pub use store::{AuthStatus, RefreshRefusal, StoredTokenAuth, StoredTokens, TokenState, TokenStore};
