//! [`AuthSettings`]: what the CLI fills from the connection config, and the constructors that
//! turn it into the right [`TokenProvider`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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

/// Authentication settings of one connection. Debug redacts secrets.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Epic client id.
    pub client_id: String,
    /// Client secret (standalone launch, confidential client).
    pub client_secret: Option<SecretString>,
    /// Auth Base URI (authorize URL minus `/authorize`); overrides discovery when set.
    pub auth_base_uri: Option<Url>,
    /// FHIR base URL.
    pub fhir_base: Url,
    /// `aud` of the authorize request; the FHIR base when `None`.
    pub audience: Option<String>,
    /// Private key PEM (backend services); see [`crate::load_private_key`].
    pub private_key_pem: Option<SecretString>,
    /// `kid` of the key; the RFC 7638 thumbprint when `None`.
    pub key_id: Option<String>,
    /// Scopes: sent with backend token requests only when set; for standalone launch
    /// [`DEFAULT_SCOPE`] when `None`.
    pub scope: Option<String>,
    /// Redirect URI of the standalone launch.
    pub redirect_uri: Option<Url>,
    /// Token store file of the standalone launch.
    pub token_store: PathBuf,
}

impl AuthSettings {
    /// Settings with only the required fields; everything else unset.
    pub fn new(client_id: impl Into<String>, fhir_base: Url) -> AuthSettings {
        AuthSettings {
            client_id: client_id.into(),
            client_secret: None,
            auth_base_uri: None,
            fhir_base,
            audience: None,
            private_key_pem: None,
            key_id: None,
            scope: None,
            redirect_uri: None,
            token_store: PathBuf::from(DEFAULT_TOKEN_STORE),
        }
    }

    /// The OAuth endpoints: the Auth Base URI when set, else discovered.
    pub async fn endpoints(&self, http: &reqwest::Client) -> Result<Endpoints> {
        Endpoints::resolve(http, self.auth_base_uri.as_ref(), &self.fhir_base, &self.client_id).await
    }

    /// A backend-services provider (requires `private_key_pem`).
    pub async fn backend_services(&self, http: &reqwest::Client) -> Result<BackendServicesAuth> {
        let pem = self.private_key_pem.as_ref().ok_or(Error::Config {
            setting: "private_key",
            problem: "backend services need the client's private key (PEM file or env:VAR)".into(),
        })?;
        let key = SigningKey::from_pem(pem, "configured private key", self.key_id.clone())?;
        let endpoints = self.endpoints(http).await?;
        Ok(BackendServicesAuth::new(
            http.clone(),
            self.client_id.clone(),
            endpoints.token,
            key,
            self.scope.clone(),
        ))
    }

    /// A provider over the token store of a completed standalone login.
    pub fn stored_tokens(&self, http: &reqwest::Client) -> Result<StoredTokenAuth> {
        StoredTokenAuth::open(http.clone(), TokenStore::new(&self.token_store), self.client_secret.clone())
    }

    /// The right provider: backend services when a private key is configured, else the token
    /// store of a standalone login.
    pub async fn provider(&self, http: &reqwest::Client) -> Result<Arc<dyn TokenProvider>> {
        if self.private_key_pem.is_some() {
            Ok(Arc::new(self.backend_services(http).await?))
        } else {
            Ok(Arc::new(self.stored_tokens(http)?))
        }
    }

    /// Settings of a standalone login (requires `redirect_uri`).
    pub async fn launch_settings(&self, http: &reqwest::Client) -> Result<LaunchSettings> {
        let redirect_uri = self.redirect_uri.clone().ok_or(Error::Config {
            setting: "redirect_uri",
            problem: "standalone launch needs the redirect URI registered for the app".into(),
        })?;
        Ok(LaunchSettings {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            redirect_uri,
            scope: self.scope.clone().unwrap_or_else(|| DEFAULT_SCOPE.to_string()),
            audience: self
                .audience
                .clone()
                .unwrap_or_else(|| self.fhir_base.as_str().trim_end_matches('/').to_string()),
            endpoints: self.endpoints(http).await?,
        })
    }
}

/// The HTTP client used for auth calls (timeouts, user agent, no redirects followed).
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .user_agent(concat!("fhirsync/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|source| Error::HttpClient { source })
}
