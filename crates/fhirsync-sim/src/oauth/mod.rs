//! OAuth 2.0 side of the simulator: SMART discovery, token endpoint (backend services JWT
//! assertion, authorization code + PKCE, refresh), authorize endpoint, bearer validation.
//!
//! Owned by the auth work (issue #3). The FHIR side only relies on [`OAuthState::validate_bearer`],
//! [`OAuthState::issue_token`] and [`OAuthState::expire_all_tokens`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::SimState;

/// A client registered with the simulated Epic instance.
#[derive(Debug, Clone, Default)]
pub struct ClientRegistration {
    /// Epic client id.
    pub client_id: String,
    /// Datasets (`Type` or `Type:category`) this client is NOT licensed for: searches return a
    /// 59204 warning instead of those results.
    pub unauthorized_datasets: Vec<String>,
}

/// OAuth configuration of the simulator.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// Registered clients.
    pub clients: Vec<ClientRegistration>,
    /// Lifetime of issued access tokens.
    pub token_lifetime: Duration,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig { clients: Vec::new(), token_lifetime: Duration::from_secs(3600) }
    }
}

/// What a valid access token grants.
#[derive(Debug, Clone)]
pub struct Grant {
    /// Client the token was issued to.
    pub client_id: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Expiry time.
    pub expires_at: SystemTime,
}

/// Runtime OAuth state.
#[derive(Debug)]
pub struct OAuthState {
    config: Mutex<OAuthConfig>,
    tokens: Mutex<HashMap<String, Grant>>,
}

impl OAuthState {
    /// New state from configuration.
    pub fn new(config: OAuthConfig) -> Self {
        OAuthState { config: Mutex::new(config), tokens: Mutex::new(HashMap::new()) }
    }

    /// Registration of `client_id`, if any.
    pub fn client(&self, client_id: &str) -> Option<ClientRegistration> {
        self.config.lock().unwrap().clients.iter().find(|c| c.client_id == client_id).cloned()
    }

    /// Registers (or replaces) a client at run time.
    pub fn register_client(&self, client: ClientRegistration) {
        let mut cfg = self.config.lock().unwrap();
        cfg.clients.retain(|c| c.client_id != client.client_id);
        cfg.clients.push(client);
    }

    /// Test hook: issues an access token directly, bypassing the token endpoint.
    pub fn issue_token(&self, client_id: &str, scopes: &[&str]) -> String {
        let lifetime = self.config.lock().unwrap().token_lifetime;
        let token = format!("sim-{}", uuid::Uuid::new_v4().simple());
        let grant = Grant {
            client_id: client_id.to_string(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_at: SystemTime::now() + lifetime,
        };
        self.tokens.lock().unwrap().insert(token.clone(), grant);
        token
    }

    /// Fault injection: every token issued so far is expired from now on.
    pub fn expire_all_tokens(&self) {
        let past = SystemTime::now() - Duration::from_secs(1);
        for g in self.tokens.lock().unwrap().values_mut() {
            g.expires_at = past;
        }
    }

    /// Checks `Authorization: Bearer ...`; on failure returns Epic's 401 with `WWW-Authenticate`.
    #[allow(clippy::result_large_err)]
    pub fn validate_bearer(&self, headers: &HeaderMap) -> Result<Grant, Response> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        let grant = token.and_then(|t| self.tokens.lock().unwrap().get(t).cloned());
        match grant {
            Some(g) if g.expires_at > SystemTime::now() => Ok(g),
            _ => Err(invalid_token()),
        }
    }
}

/// Epic's 401 for a missing, unknown or expired token.
pub fn invalid_token() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            r#"Bearer error="invalid_token", error_description="The access token provided is not valid""#,
        )],
    )
        .into_response()
}

/// OAuth routes (discovery, token, authorize).
pub fn routes() -> Router<Arc<SimState>> {
    Router::new()
}
