//! SMART Backend Services (Epic "backend OAuth 2.0"): the client signs a short-lived JWT with
//! its private key and trades it for an access token.
//!
//! ```text
//! POST {token_url}
//! grant_type=client_credentials
//! &client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
//! &client_assertion=<JWT {alg: RS384|ES384, typ: JWT, kid} . {iss=sub=client_id, aud=token_url,
//!                         jti=UUIDv4, exp=now+240, iat=nbf=now-30}>
//! [&scope=...]   (only when configured; Epic takes scopes from the app registration)
//! ```
//!
//! The token is cached in memory and renewed shortly before expiry; concurrent callers share one
//! renewal (single flight). `invalid_client` / `unauthorized_client` are configuration errors and
//! are not retried; network failures and 5xx are retried twice.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tracing::{debug, info, warn};
use url::Url;

use crate::keys::SigningKey;
use crate::token::{self, ClientAuthKind};
use crate::{BoxFuture, Result, TokenError, TokenProvider};

/// Assertion lifetime: `exp = now + 240 s` (Epic refuses more than 300 s).
pub const ASSERTION_LIFETIME: Duration = Duration::from_secs(240);
/// `iat`/`nbf` are back-dated by this much to tolerate a client clock slightly ahead.
pub const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(30);
/// Lifetime assumed when the token response has no `expires_in` (SMART's recommendation).
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(300);
/// Attempts for transient failures (network, 5xx).
pub const MAX_ATTEMPTS: u32 = 3;
/// `client_assertion_type` of a JWT client assertion.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Claims of the client assertion.
#[derive(Debug, Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    jti: String,
    exp: u64,
    iat: u64,
    nbf: u64,
}

#[derive(Debug, Clone)]
struct Cached {
    token: SecretString,
    renew_at: Instant,
    expires_at: SystemTime,
    scopes: Vec<String>,
}

/// What the current token grants (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// When the token expires.
    pub expires_at: SystemTime,
}

/// Backend-services [`TokenProvider`]. Debug shows client id and token URL only.
#[derive(Debug)]
pub struct BackendServicesAuth {
    http: reqwest::Client,
    client_id: String,
    token_url: Url,
    key: SigningKey,
    scope: Option<String>,
    cached: Mutex<Option<Cached>>,
    renewal: tokio::sync::Mutex<()>,
}

impl BackendServicesAuth {
    /// A provider for `client_id` at `token_url`, signing with `key`; `scope` is sent only if set.
    pub fn new(
        http: reqwest::Client,
        client_id: impl Into<String>,
        token_url: Url,
        key: SigningKey,
        scope: Option<String>,
    ) -> BackendServicesAuth {
        BackendServicesAuth {
            http,
            client_id: client_id.into(),
            token_url,
            key,
            scope,
            cached: Mutex::new(None),
            renewal: tokio::sync::Mutex::new(()),
        }
    }

    /// The token endpoint used (also the JWT `aud`).
    pub fn token_url(&self) -> &Url {
        &self.token_url
    }

    /// Builds and signs a fresh client assertion.
    pub fn client_assertion(&self) -> Result<SecretString> {
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let back = now.saturating_sub(CLOCK_SKEW_ALLOWANCE.as_secs());
        let claims = AssertionClaims {
            iss: &self.client_id,
            sub: &self.client_id,
            aud: self.token_url.as_str(),
            jti: uuid::Uuid::new_v4().to_string(),
            exp: now + ASSERTION_LIFETIME.as_secs(),
            iat: back,
            nbf: back,
        };
        self.key.sign(&claims).map(SecretString::from)
    }

    /// A valid access token (cached, renewed shortly before expiry), with this crate's
    /// [`Error`](crate::Error); [`TokenProvider::access_token`] boxes it.
    pub async fn access_token(&self) -> Result<SecretString> {
        self.current().await.map(|c| c.token)
    }

    /// Scopes and expiry of a valid token (obtaining one if needed).
    pub async fn token_info(&self) -> Result<TokenInfo> {
        self.current().await.map(|c| TokenInfo { scopes: c.scopes, expires_at: c.expires_at })
    }

    fn cached_valid(&self) -> Option<Cached> {
        let cached = self.cached.lock().unwrap();
        cached.as_ref().filter(|c| Instant::now() < c.renew_at).cloned()
    }

    async fn current(&self) -> Result<Cached> {
        if let Some(c) = self.cached_valid() {
            return Ok(c);
        }
        let _flight = self.renewal.lock().await;
        // Another caller may have renewed while we waited.
        if let Some(c) = self.cached_valid() {
            return Ok(c);
        }
        let fresh = self.fetch_with_retry().await?;
        *self.cached.lock().unwrap() = Some(fresh.clone());
        Ok(fresh)
    }

    async fn fetch_with_retry(&self) -> Result<Cached> {
        let mut attempt = 1;
        loop {
            match self.fetch().await {
                Ok(c) => return Ok(c),
                Err(e) if e.is_transient() && attempt < MAX_ATTEMPTS => {
                    warn!(attempt, error = %e, "Token request failed; retrying.");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn fetch(&self) -> Result<Cached> {
        let assertion = self.client_assertion()?;
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_assertion_type", JWT_BEARER),
            ("client_assertion", assertion.expose_secret()),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope.as_str()));
        }
        debug!(token_url = %self.token_url, client_id = %self.client_id, kid = %self.key.kid(), "Requesting a backend access token.");
        let started = Instant::now();
        let response = token::request(
            &self.http,
            &self.token_url,
            &self.client_id,
            ClientAuthKind::PrivateKeyJwt,
            None,
            &form,
        )
        .await?;
        let lifetime = response.expires_in.map(Duration::from_secs).unwrap_or(DEFAULT_EXPIRES_IN);
        info!(
            expires_in = lifetime.as_secs(),
            scopes = response.scopes.len(),
            "Backend access token obtained."
        );
        Ok(Cached {
            token: response.access_token,
            renew_at: started + token::renew_after(lifetime),
            expires_at: SystemTime::now() + lifetime,
            scopes: response.scopes,
        })
    }
}

impl TokenProvider for BackendServicesAuth {
    fn access_token(&self) -> BoxFuture<'_, Result<SecretString, TokenError>> {
        Box::pin(async move { BackendServicesAuth::access_token(self).await.map_err(TokenError::new) })
    }

    fn invalidate(&self, token: &SecretString) {
        let mut cached = self.cached.lock().unwrap();
        if cached.as_ref().is_some_and(|c| c.token.expose_secret() == token.expose_secret()) {
            debug!("Access token rejected by the server; a new one will be requested.");
            *cached = None;
        }
    }
}
