//! The token store: one JSON file (mode 0600, replaced atomically) holding the tokens of a
//! standalone launch, and [`StoredTokenAuth`], the [`TokenProvider`] that uses and refreshes them.
//!
//! Refresh (Epic, fact sheet §2.4): `grant_type=refresh_token&refresh_token=...` with the same
//! URL-encoded HTTP Basic header as the code exchange. Epic's documented response has no new
//! refresh token, so the old one is kept unless a new one is returned.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};
use url::Url;
use zeroize::Zeroizing;

use crate::token::{self, ClientAuthKind, TokenResponse};
use crate::{BoxFuture, Error, Result, TokenProvider, fsutil};

/// Current token store file format.
pub const STORE_VERSION: u32 = 1;
/// An access token is used only while it has at least this much life left.
pub const EXPIRY_MARGIN: ChronoDuration = ChronoDuration::seconds(30);

/// Tokens of a completed login. Debug never shows the tokens.
#[derive(Debug, Clone)]
pub struct StoredTokens {
    /// Client id the tokens were issued to.
    pub client_id: String,
    /// Token endpoint to refresh at.
    pub token_url: Url,
    /// FHIR base the login was for (the `aud`).
    pub fhir_base: Option<String>,
    /// Access token.
    pub access_token: SecretString,
    /// When the access token expires.
    pub access_expires_at: DateTime<Utc>,
    /// Refresh token, if the client is configured for them.
    pub refresh_token: Option<SecretString>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// When the tokens were last obtained or refreshed.
    pub updated_at: DateTime<Utc>,
}

impl StoredTokens {
    /// Tokens from a token response.
    pub fn from_response(
        client_id: &str,
        token_url: &Url,
        fhir_base: Option<String>,
        response: TokenResponse,
    ) -> StoredTokens {
        let now = Utc::now();
        let lifetime = response.expires_in.map(|s| s as i64).unwrap_or(300);
        StoredTokens {
            client_id: client_id.to_string(),
            token_url: token_url.clone(),
            fhir_base,
            access_token: response.access_token,
            access_expires_at: now + ChronoDuration::seconds(lifetime),
            refresh_token: response.refresh_token,
            scopes: response.scopes,
            updated_at: now,
        }
    }

    /// Whether the access token is still usable.
    pub fn access_valid(&self) -> bool {
        Utc::now() + EXPIRY_MARGIN < self.access_expires_at
    }
}

/// On-disk form (plain strings, only ever held briefly).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    /// File format version.
    version: u32,
    /// Client id.
    client_id: String,
    /// Token endpoint.
    token_url: String,
    /// FHIR base of the login.
    fhir_base: Option<String>,
    /// Access token.
    access_token: String,
    /// Access token expiry.
    access_expires_at: DateTime<Utc>,
    /// Refresh token.
    refresh_token: Option<String>,
    /// Granted scopes.
    scopes: Vec<String>,
    /// Last update.
    updated_at: DateTime<Utc>,
}

/// The token store file.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
}

impl TokenStore {
    /// A store at `path` (nothing is read yet).
    pub fn new(path: impl Into<PathBuf>) -> TokenStore {
        TokenStore { path: path.into() }
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the tokens; `None` when the file does not exist.
    pub fn load(&self) -> Result<Option<StoredTokens>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => Zeroizing::new(t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::File { action: "read token store", path: self.path.clone(), source });
            }
        };
        let bad = |problem: String| Error::StoreFormat { path: self.path.clone(), problem };
        // serde_json errors carry line/column only, never the value.
        let file: StoreFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if file.version != STORE_VERSION {
            return Err(bad(format!("unknown version {}", file.version)));
        }
        let token_url = Url::parse(&file.token_url).map_err(|e| bad(format!("token_url: {e}")))?;
        Ok(Some(StoredTokens {
            client_id: file.client_id,
            token_url,
            fhir_base: file.fhir_base,
            access_token: SecretString::from(file.access_token),
            access_expires_at: file.access_expires_at,
            refresh_token: file.refresh_token.map(SecretString::from),
            scopes: file.scopes,
            updated_at: file.updated_at,
        }))
    }

    /// Saves the tokens (mode 0600, atomic replace).
    pub fn save(&self, tokens: &StoredTokens) -> Result<()> {
        let file = StoreFile {
            version: STORE_VERSION,
            client_id: tokens.client_id.clone(),
            token_url: tokens.token_url.to_string(),
            fhir_base: tokens.fhir_base.clone(),
            access_token: tokens.access_token.expose_secret().to_string(),
            access_expires_at: tokens.access_expires_at,
            refresh_token: tokens.refresh_token.as_ref().map(|t| t.expose_secret().to_string()),
            scopes: tokens.scopes.clone(),
            updated_at: tokens.updated_at,
        };
        let json = Zeroizing::new(serde_json::to_vec_pretty(&file).unwrap_or_default());
        drop(Zeroizing::new(file.access_token));
        drop(file.refresh_token.map(Zeroizing::new));
        fsutil::write_private(&self.path, &json, true)
    }

    /// What the store holds, without contacting the server and without showing any token.
    pub fn status(&self) -> Result<AuthStatus> {
        Ok(match self.load()? {
            None => AuthStatus::NotAuthenticated,
            Some(t) if t.access_valid() || t.refresh_token.is_some() => AuthStatus::Verified {
                access_expires_at: t.access_expires_at,
                access_valid: t.access_valid(),
                refreshable: t.refresh_token.is_some(),
                scopes: t.scopes,
                client_id: t.client_id,
            },
            Some(t) => AuthStatus::Expired {
                expired_at: t.access_expires_at,
                scopes: t.scopes,
                client_id: t.client_id,
            },
        })
    }
}

/// Authentication state of a token store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStatus {
    /// A valid access token, or an expired one with a refresh token.
    Verified {
        /// Client id.
        client_id: String,
        /// Access token expiry.
        access_expires_at: DateTime<Utc>,
        /// The access token itself is still valid.
        access_valid: bool,
        /// A refresh token is stored.
        refreshable: bool,
        /// Granted scopes.
        scopes: Vec<String>,
    },
    /// Access expired and no refresh token: log in again.
    Expired {
        /// Client id.
        client_id: String,
        /// When access expired.
        expired_at: DateTime<Utc>,
        /// Scopes that were granted.
        scopes: Vec<String>,
    },
    /// No token store file.
    NotAuthenticated,
}

/// A [`TokenProvider`] over a token store: uses the stored access token, refreshes it with the
/// refresh token when it expired or the server rejected it, and persists every update.
#[derive(Debug)]
pub struct StoredTokenAuth {
    http: reqwest::Client,
    store: TokenStore,
    client_secret: Option<SecretString>,
    current: Mutex<StoredTokens>,
    renewal: tokio::sync::Mutex<()>,
}

impl StoredTokenAuth {
    /// Loads the store; fails with [`Error::NotAuthenticated`] when there is none.
    /// `client_secret` authenticates refreshes (HTTP Basic); `None` for public clients.
    pub fn open(
        http: reqwest::Client,
        store: TokenStore,
        client_secret: Option<SecretString>,
    ) -> Result<Self> {
        let tokens = store.load()?.ok_or_else(|| Error::NotAuthenticated {
            reason: format!("no token store at {}", store.path().display()),
        })?;
        Ok(StoredTokenAuth {
            http,
            store,
            client_secret,
            current: Mutex::new(tokens),
            renewal: tokio::sync::Mutex::new(()),
        })
    }

    /// Refreshes now, whatever the access token's state; persists and returns the new tokens'
    /// expiry.
    pub async fn refresh(&self) -> Result<DateTime<Utc>> {
        let _flight = self.renewal.lock().await;
        let tokens = self.current.lock().unwrap().clone();
        self.refresh_locked(tokens).await.map(|t| t.access_expires_at)
    }

    async fn refresh_locked(&self, tokens: StoredTokens) -> Result<StoredTokens> {
        let Some(refresh) = tokens.refresh_token.clone() else {
            return Err(Error::NotAuthenticated {
                reason: "the access token expired and no refresh token is stored".into(),
            });
        };
        let form = [("grant_type", "refresh_token"), ("refresh_token", refresh.expose_secret())];
        let (kind, basic) = match &self.client_secret {
            Some(secret) => {
                (ClientAuthKind::ClientSecret, Some(token::basic_authorization(&tokens.client_id, secret)))
            }
            None => (ClientAuthKind::Public, None),
        };
        let mut form = form.to_vec();
        if basic.is_none() {
            form.push(("client_id", tokens.client_id.as_str()));
        }
        debug!(token_url = %tokens.token_url, "Refreshing the access token.");
        let response =
            token::request(&self.http, &tokens.token_url, &tokens.client_id, kind, basic.as_ref(), &form)
                .await
                .map_err(|e| match e {
                    Error::TokenEndpoint { ref error, .. } if error == "invalid_grant" => {
                        Error::NotAuthenticated {
                            reason:
                                "the refresh token was refused (`invalid_grant`): it expired or was revoked"
                                    .into(),
                        }
                    }
                    other => other,
                })?;
        let mut updated = StoredTokens::from_response(
            &tokens.client_id,
            &tokens.token_url,
            tokens.fhir_base.clone(),
            response,
        );
        if updated.refresh_token.is_none() {
            updated.refresh_token = Some(refresh);
        }
        if updated.scopes.is_empty() {
            updated.scopes = tokens.scopes;
        }
        self.store.save(&updated)?;
        info!(expires_at = %updated.access_expires_at, "Access token refreshed.");
        *self.current.lock().unwrap() = updated.clone();
        Ok(updated)
    }

    fn valid_token(&self) -> Option<SecretString> {
        let current = self.current.lock().unwrap();
        current.access_valid().then(|| current.access_token.clone())
    }
}

impl TokenProvider for StoredTokenAuth {
    fn access_token(&self) -> BoxFuture<'_, Result<SecretString>> {
        Box::pin(async move {
            if let Some(t) = self.valid_token() {
                return Ok(t);
            }
            let _flight = self.renewal.lock().await;
            if let Some(t) = self.valid_token() {
                return Ok(t);
            }
            let tokens = self.current.lock().unwrap().clone();
            self.refresh_locked(tokens).await.map(|t| t.access_token)
        })
    }

    fn invalidate(&self, token: &SecretString) {
        let mut current = self.current.lock().unwrap();
        if current.access_token.expose_secret() == token.expose_secret() {
            debug!("Stored access token rejected by the server; it will be refreshed.");
            current.access_expires_at = Utc::now() - ChronoDuration::seconds(1);
        }
    }
}
