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
use tracing::{debug, info, warn};
use url::Url;
use zeroize::Zeroizing;

use crate::token::{self, ClientAuthKind, TokenResponse};
use crate::{BoxFuture, Error, Result, TokenError, TokenProvider, fsutil};

/// Current token store file format.
pub const STORE_VERSION: u32 = 1;
/// Renewal margin: an access token with less life left than this is renewed before use (and
/// `auth status` says "renewing soon"). If renewal is refused, the token is still used until it
/// really expires.
pub const EXPIRY_MARGIN: ChronoDuration = ChronoDuration::seconds(30);

/// The token endpoint refused a refresh (`invalid_grant`, a refused client, ...): when and why.
/// Holds no secret: only the endpoint's error code and description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshRefusal {
    /// When the refresh was refused.
    pub at: DateTime<Utc>,
    /// The token endpoint's answer (error code and description, never a token).
    pub reason: String,
}

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
    /// The last refresh was refused: the refresh token is dead and a new login is needed.
    pub refresh_refused: Option<RefreshRefusal>,
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
            refresh_refused: None,
        }
    }

    /// Whether the access token has more than the renewal margin left (used without renewing).
    pub fn access_valid(&self) -> bool {
        Utc::now() + EXPIRY_MARGIN < self.access_expires_at
    }

    /// Whether the access token has not expired yet (it may be within the renewal margin).
    pub fn access_unexpired(&self) -> bool {
        Utc::now() < self.access_expires_at
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
    /// Last refresh refused (absent in files written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_refused: Option<RefreshRefusal>,
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
        // serde_json errors carry line/column only, never the value.
        let file: StoreFile = serde_json::from_str(&text)
            .map_err(|source| Error::StoreJson { path: self.path.clone(), source })?;
        if file.version != STORE_VERSION {
            let problem = format!("unknown version {}", file.version);
            return Err(Error::StoreFormat { path: self.path.clone(), problem });
        }
        let token_url = Url::parse(&file.token_url)
            .map_err(|source| Error::StoreUrl { path: self.path.clone(), source })?;
        Ok(Some(StoredTokens {
            client_id: file.client_id,
            token_url,
            fhir_base: file.fhir_base,
            access_token: SecretString::from(file.access_token),
            access_expires_at: file.access_expires_at,
            refresh_token: file.refresh_token.map(SecretString::from),
            scopes: file.scopes,
            updated_at: file.updated_at,
            refresh_refused: file.refresh_refused,
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
            refresh_refused: tokens.refresh_refused.clone(),
        };
        let json = Zeroizing::new(serde_json::to_vec_pretty(&file).unwrap_or_default());
        drop(Zeroizing::new(file.access_token));
        drop(file.refresh_token.map(Zeroizing::new));
        fsutil::write_private(&self.path, &json, true)
    }

    /// What the store holds, without contacting the server and without showing any token.
    pub fn status(&self) -> Result<AuthStatus> {
        let Some(t) = self.load()? else { return Ok(AuthStatus::NotAuthenticated) };
        let state = if let Some(refusal) = t.refresh_refused.clone() {
            TokenState::RefreshRefused(refusal)
        } else if t.access_valid() {
            TokenState::Verified
        } else if t.access_unexpired() {
            TokenState::RenewingSoon
        } else {
            TokenState::Expired
        };
        Ok(AuthStatus::Stored {
            state,
            client_id: t.client_id,
            access_expires_at: t.access_expires_at,
            refreshable: t.refresh_token.is_some(),
            scopes: t.scopes,
        })
    }
}

/// State of the stored tokens, as `auth status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenState {
    /// The access token has more than the renewal margin left.
    Verified,
    /// The access token expires within the renewal margin: the next use renews it.
    RenewingSoon,
    /// The access token has expired (the next use refreshes it if a refresh token is stored).
    Expired,
    /// The last refresh was refused: `fhirsync auth login` is needed.
    RefreshRefused(RefreshRefusal),
}

impl TokenState {
    /// Whether a new login is needed (refresh refused, or expired without a refresh token).
    pub fn login_needed(&self, refreshable: bool) -> bool {
        match self {
            TokenState::RefreshRefused(_) => true,
            TokenState::Expired => !refreshable,
            TokenState::Verified | TokenState::RenewingSoon => false,
        }
    }
}

/// Authentication state of a token store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthStatus {
    /// Tokens of a login are stored.
    Stored {
        /// Verified / renewing soon / expired / refresh refused.
        state: TokenState,
        /// Client id.
        client_id: String,
        /// Access token expiry.
        access_expires_at: DateTime<Utc>,
        /// A refresh token is stored.
        refreshable: bool,
        /// Granted scopes.
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

    /// A valid access token: the stored one while unexpired, else refreshed (and persisted),
    /// with this crate's [`Error`]; [`TokenProvider::access_token`] boxes it.
    pub async fn access_token(&self) -> Result<SecretString> {
        if let Some(t) = self.valid_token() {
            return Ok(t);
        }
        let _flight = self.renewal.lock().await;
        if let Some(t) = self.valid_token() {
            return Ok(t);
        }
        let tokens = self.current.lock().unwrap().clone();
        // A refresh already refused (this run, or recorded in the store): the refresh token is
        // dead, so do not ask again; ride on the access token until it really expires.
        let refused = match &tokens.refresh_refused {
            Some(refusal) => Err(refused_error(refusal, &tokens)),
            None => match self.refresh_locked(tokens.clone()).await {
                Ok(updated) => return Ok(updated.access_token),
                Err(e @ Error::NotAuthenticated { .. }) => Err(e),
                Err(e) => return Err(e),
            },
        };
        let current = self.current.lock().unwrap().clone();
        if current.refresh_refused.is_some() && current.access_unexpired() {
            debug!(
                access_expires_at = %current.access_expires_at,
                "Refresh refused; using the current access token until it expires."
            );
            return Ok(current.access_token);
        }
        refused
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
        let response = match token::request(
            &self.http,
            &tokens.token_url,
            &tokens.client_id,
            kind,
            basic.as_ref(),
            &form,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => match refusal_reason(&e) {
                Some(reason) => return Err(self.record_refusal(reason)),
                None => return Err(e),
            },
        };
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

    /// Records a refused refresh in memory and in the store (time and reason, no secret) and
    /// returns the error to give once the access token has really expired.
    fn record_refusal(&self, reason: String) -> Error {
        let refusal = RefreshRefusal { at: Utc::now(), reason };
        let tokens = {
            let mut current = self.current.lock().unwrap();
            current.refresh_refused = Some(refusal.clone());
            current.clone()
        };
        warn!(
            reason = %refusal.reason,
            access_expires_at = %tokens.access_expires_at,
            "The token endpoint refused the refresh; the current access token is used until it \
             expires, then `fhirsync auth login` is needed."
        );
        if let Err(e) = self.store.save(&tokens) {
            warn!(error = %e, "Cannot record the refused refresh in the token store.");
        }
        refused_error(&refusal, &tokens)
    }

    fn valid_token(&self) -> Option<SecretString> {
        let current = self.current.lock().unwrap();
        current.access_valid().then(|| current.access_token.clone())
    }
}

/// The reason to record when `e` is the token endpoint refusing the refresh (not a network
/// failure or a 5xx/429, which may succeed later).
fn refusal_reason(e: &Error) -> Option<String> {
    match e {
        Error::TokenEndpoint { status, error, description, .. } if !e.is_transient() => {
            Some(match description {
                Some(d) => format!("HTTP {status} `{error}`: {d}"),
                None => format!("HTTP {status} `{error}`"),
            })
        }
        Error::ClientRejected { error, hint, .. } => Some(format!("`{error}`: {hint}")),
        _ => None,
    }
}

/// The error once a refused refresh leaves no usable access token.
fn refused_error(refusal: &RefreshRefusal, tokens: &StoredTokens) -> Error {
    Error::NotAuthenticated {
        reason: format!(
            "the token endpoint refused the refresh at {} ({}); the access token expire{} at {}",
            refusal.at.format("%Y-%m-%d %H:%M:%S UTC"),
            refusal.reason,
            if tokens.access_unexpired() { "s" } else { "d" },
            tokens.access_expires_at.format("%Y-%m-%d %H:%M:%S UTC"),
        ),
    }
}

impl TokenProvider for StoredTokenAuth {
    fn access_token(&self) -> BoxFuture<'_, Result<SecretString, TokenError>> {
        Box::pin(async move { StoredTokenAuth::access_token(self).await.map_err(TokenError::new) })
    }

    fn invalidate(&self, token: &SecretString) {
        let mut current = self.current.lock().unwrap();
        if current.access_token.expose_secret() == token.expose_secret() {
            debug!("Stored access token rejected by the server; it will be refreshed.");
            current.access_expires_at = Utc::now() - ChronoDuration::seconds(1);
        }
    }
}
