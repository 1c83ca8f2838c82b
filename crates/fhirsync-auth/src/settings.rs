//! [`AuthSettings`]: the authentication of one `[connection]` section, borrowed, and the
//! constructors that turn it into the right [`TokenProvider`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fhirsync_core::ConnectionConfig;
use secrecy::SecretString;
use url::Url;

use crate::backend::BackendServicesAuth;
use crate::discovery::Endpoints;
use crate::keys::SigningKey;
use crate::launch::{DEFAULT_SCOPE, LaunchSettings};
use crate::store::{StoredTokenAuth, TokenStore};
use crate::{Error, Result, TokenProvider};

/// Default token store file name.
pub const DEFAULT_TOKEN_STORE: &str = ".fhirsync-tokens.json";
/// Timeout of one auth HTTP request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The authentication of one connection: the `[connection]` section it borrows, plus what is
/// resolved from it (the FHIR base, the client secret) and an optional in-memory key. Every
/// setting is read from the section; nothing is copied. Debug redacts secrets.
#[derive(Debug, Clone)]
pub struct AuthSettings<'a> {
    /// The section: client id, Auth Base URI, audience, key, scope, redirect URI, token store.
    connection: &'a ConnectionConfig,
    /// Epic client id (checked non-empty).
    client_id: &'a str,
    /// FHIR base: the R4 endpoint, else the first configured one.
    fhir_base: Url,
    /// Client secret (standalone launch, confidential client), resolved from the section.
    client_secret: Option<SecretString>,
    /// Private key PEM given in memory; else the section's `private_key` is read when needed.
    private_key_pem: Option<SecretString>,
}

impl<'a> AuthSettings<'a> {
    /// The authentication `connection` describes. Fails when the client id or every FHIR
    /// endpoint is missing, or the client secret reference cannot be read.
    pub fn new(connection: &'a ConnectionConfig) -> Result<AuthSettings<'a>> {
        let client_id =
            connection.client_id.as_deref().filter(|c| !c.trim().is_empty()).ok_or_else(|| {
                Error::Config {
                    setting: "client_id",
                    problem: "missing: set [connection] client_id to the Epic app's client id".into(),
                }
            })?;
        let fhir_base = connection.fhir_base().ok_or_else(|| Error::Config {
            setting: "fhir_r4_endpoint",
            problem: "no FHIR endpoint: set [connection] fhir_r4_endpoint".into(),
        })?;
        let client_secret = connection.resolve_client_secret().map_err(Error::Connection)?;
        Ok(AuthSettings { connection, client_id, fhir_base, client_secret, private_key_pem: None })
    }

    /// Replaces the client secret resolved from the section (`auth login --client-secret-env`).
    pub fn with_client_secret(mut self, secret: Option<SecretString>) -> Self {
        self.client_secret = secret;
        self
    }

    /// Signs with this private key PEM instead of the section's `private_key` (a key held in
    /// memory, e.g. the sandbox's).
    pub fn with_private_key(mut self, pem: SecretString) -> Self {
        self.private_key_pem = Some(pem);
        self
    }

    /// The borrowed section.
    pub fn connection(&self) -> &ConnectionConfig {
        self.connection
    }

    /// The Epic client id.
    pub fn client_id(&self) -> &str {
        self.client_id
    }

    /// The FHIR base the OAuth endpoints are discovered from.
    pub fn fhir_base(&self) -> &Url {
        &self.fhir_base
    }

    /// The token store file of the standalone launch.
    pub fn token_store(&self) -> &Path {
        self.connection.token_store.as_deref().unwrap_or(Path::new(DEFAULT_TOKEN_STORE))
    }

    /// Whether a private key is configured (backend services).
    fn has_private_key(&self) -> bool {
        self.private_key_pem.is_some() || self.connection.private_key.is_some()
    }

    /// The OAuth endpoints: the Auth Base URI when set, else discovered.
    pub async fn endpoints(&self, http: &reqwest::Client) -> Result<Endpoints> {
        Endpoints::resolve(http, self.connection.auth_base_uri.as_ref(), &self.fhir_base, self.client_id)
            .await
    }

    /// The signing key: the in-memory PEM, else the section's `private_key`.
    fn signing_key(&self) -> Result<SigningKey> {
        let kid = self.connection.key_id.clone();
        if let Some(pem) = &self.private_key_pem {
            return SigningKey::from_pem(pem, "configured private key", kid);
        }
        let source = self.connection.private_key.as_ref().ok_or(Error::Config {
            setting: "private_key",
            problem: "backend services need the client's private key (PEM file or env:VAR)".into(),
        })?;
        SigningKey::load(source, kid)
    }

    /// A backend-services provider (requires a private key).
    pub async fn backend_services(&self, http: &reqwest::Client) -> Result<BackendServicesAuth> {
        let key = self.signing_key()?;
        let endpoints = self.endpoints(http).await?;
        Ok(BackendServicesAuth::new(
            http.clone(),
            self.client_id.to_string(),
            endpoints.token,
            key,
            self.connection.scope.clone(),
        ))
    }

    /// A provider over the token store of a completed standalone login.
    pub fn stored_tokens(&self, http: &reqwest::Client) -> Result<StoredTokenAuth> {
        StoredTokenAuth::open(http.clone(), TokenStore::new(self.token_store()), self.client_secret.clone())
    }

    /// The right provider: backend services when a private key is configured, else the token
    /// store of a standalone login.
    pub async fn provider(&self, http: &reqwest::Client) -> Result<Arc<dyn TokenProvider>> {
        if self.has_private_key() {
            Ok(Arc::new(self.backend_services(http).await?))
        } else {
            Ok(Arc::new(self.stored_tokens(http)?))
        }
    }

    /// Settings of a standalone login (requires `redirect_uri`).
    pub async fn launch_settings(&self, http: &reqwest::Client) -> Result<LaunchSettings> {
        let redirect_uri = self.connection.redirect_uri.clone().ok_or(Error::Config {
            setting: "redirect_uri",
            problem: "standalone launch needs the redirect URI registered for the app".into(),
        })?;
        let audience = match &self.connection.audience {
            Some(aud) => aud.as_str().to_string(),
            None => self.fhir_base.as_str().trim_end_matches('/').to_string(),
        };
        Ok(LaunchSettings {
            client_id: self.client_id.to_string(),
            client_secret: self.client_secret.clone(),
            redirect_uri,
            scope: self.connection.scope.clone().unwrap_or_else(|| DEFAULT_SCOPE.to_string()),
            audience,
            endpoints: self.endpoints(http).await?,
        })
    }
}

/// The HTTP client used for auth calls (timeouts, user agent, no redirects followed), through
/// `connection`'s `https_proxy` and trusting its `ca_bundle`, as the FHIR requests do.
pub fn http_client(connection: &ConnectionConfig) -> Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .user_agent(concat!("fhirsync/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none());
    fhirsync_core::transport::with_connection(builder, connection)?
        .build()
        .map_err(|source| Error::HttpClient { source })
}
