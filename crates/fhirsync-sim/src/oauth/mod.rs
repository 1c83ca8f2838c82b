//! OAuth 2.0 side of the simulator: SMART discovery, token endpoint (backend services JWT
//! assertion, authorization code + PKCE, refresh), authorize endpoint, bearer validation.
//!
//! Owned by the auth work (issue #3). The FHIR side only relies on [`OAuthState::validate_bearer`],
//! [`OAuthState::issue_token`] and [`OAuthState::expire_all_tokens`].
//!
//! Behaviour follows Epic's documentation:
//! - `GET {fhir_base}/.well-known/smart-configuration` answers like Epic's sandbox ([`discovery`]).
//! - `POST /oauth2/token` accepts only `application/x-www-form-urlencoded` bodies without query
//!   parameters (else 400 `invalid_request`). Grants: `client_credentials` with a JWT client
//!   assertion ([`assertion`]), `authorization_code` with PKCE S256 and `refresh_token`, both with
//!   the client secret in HTTP Basic, id and secret URL-encoded ([`token`]).
//! - `GET /oauth2/authorize` checks the request and either redirects at once (auto-approve) or
//!   shows a sign-in form ([`authorize`]). Codes are single-use and short-lived.
//!
//! Failures never say which check failed (Epic answers `{"error":"invalid_client",
//! "error_description":null}`); the reason is logged at debug level, without secret material.

pub mod assertion;
pub mod authorize;
pub mod discovery;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::{PREFIX, SimState};

/// Default lifetime of issued access tokens (Epic's example: 3600 s).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);
/// Lifetime of an authorization code.
pub const CODE_LIFETIME: Duration = Duration::from_secs(300);
/// Scopes granted to a backend client that registered none.
pub const DEFAULT_BACKEND_SCOPES: &[&str] = &["system/*.read"];
/// Sandbox user name of the sign-in form.
pub const SANDBOX_USER: &str = "FHIR";
/// Sandbox password of the sign-in form.
pub const SANDBOX_PASSWORD: &str = "EpicFhir11!";

/// A client registered with the simulated Epic instance.
#[derive(Debug, Clone, Default)]
pub struct ClientRegistration {
    /// Epic client id.
    pub client_id: String,
    /// Datasets (`Type` or `Type:category`) this client is NOT licensed for: searches return a
    /// 59204 warning instead of those results.
    pub unauthorized_datasets: Vec<String>,
    /// Public JWK set (`{"keys":[...]}`) used to verify backend-services client assertions.
    /// `None`: the client cannot use `client_credentials` (answers `invalid_client`).
    pub jwks: Option<serde_json::Value>,
    /// The set was registered as a JWK Set URL (JKU) rather than uploaded: `kid` is honoured and
    /// ES256/ES384 are accepted. A static upload keeps only `kty`, `n`, `e` (RSA only), as Epic.
    /// The simulator does not fetch the URL; the set in [`Self::jwks`] stands for its content.
    pub jwks_from_url: bool,
    /// The customer's ECSA has NOT mapped this backend client to a background user: token
    /// requests answer `unauthorized_client`. `false` (the default) = mapped, as in the sandbox.
    pub background_user_missing: bool,
    /// Client secret of a confidential client (authorization code / refresh grants, HTTP Basic).
    pub client_secret: Option<String>,
    /// Registered redirect URIs (exact, case-sensitive match).
    pub redirect_uris: Vec<String>,
    /// The client is configured to receive refresh tokens.
    pub refresh_tokens: bool,
    /// Scopes (APIs) selected on the app registration, granted to backend tokens
    /// ([`DEFAULT_BACKEND_SCOPES`] when empty).
    pub scopes: Vec<String>,
}

/// OAuth configuration of the simulator.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// Registered clients.
    pub clients: Vec<ClientRegistration>,
    /// Lifetime of issued access tokens.
    pub token_lifetime: Duration,
    /// Approve authorize requests at once (tests): redirect with a code without a sign-in form.
    pub auto_approve: bool,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        OAuthConfig { clients: Vec::new(), token_lifetime: DEFAULT_TOKEN_LIFETIME, auto_approve: false }
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

/// An issued, not yet redeemed authorization code.
#[derive(Debug, Clone)]
pub(crate) struct PendingCode {
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) code_challenge: String,
    pub(crate) expires_at: SystemTime,
}

/// A live refresh token.
#[derive(Debug, Clone)]
pub(crate) struct RefreshGrant {
    pub(crate) client_id: String,
    pub(crate) scopes: Vec<String>,
}

/// Runtime OAuth state.
#[derive(Debug)]
pub struct OAuthState {
    config: Mutex<OAuthConfig>,
    tokens: Mutex<HashMap<String, Grant>>,
    /// `(iss, jti)` → `exp` of client assertions already used.
    used_jtis: Mutex<HashMap<(String, String), u64>>,
    codes: Mutex<HashMap<String, PendingCode>>,
    refresh: Mutex<HashMap<String, RefreshGrant>>,
    /// Authorize requests waiting for the sign-in form, by request id.
    pending_logins: Mutex<HashMap<String, authorize::AuthorizeRequest>>,
    token_requests: Mutex<u64>,
}

impl OAuthState {
    /// New state from configuration.
    pub fn new(config: OAuthConfig) -> Self {
        OAuthState {
            config: Mutex::new(config),
            tokens: Mutex::new(HashMap::new()),
            used_jtis: Mutex::new(HashMap::new()),
            codes: Mutex::new(HashMap::new()),
            refresh: Mutex::new(HashMap::new()),
            pending_logins: Mutex::new(HashMap::new()),
            token_requests: Mutex::new(0),
        }
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

    /// Changes the lifetime of tokens issued from now on (token-expiry tests).
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.config.lock().unwrap().token_lifetime = lifetime;
    }

    /// Switches auto-approval of authorize requests.
    pub fn set_auto_approve(&self, on: bool) {
        self.config.lock().unwrap().auto_approve = on;
    }

    /// Number of token-endpoint requests answered with a token so far (all grants).
    pub fn tokens_issued(&self) -> u64 {
        *self.token_requests.lock().unwrap()
    }

    /// Test hook: issues an access token directly, bypassing the token endpoint.
    pub fn issue_token(&self, client_id: &str, scopes: &[&str]) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        self.mint(client_id, scopes).0
    }

    /// Creates and records an access token; returns it with its lifetime.
    pub(crate) fn mint(&self, client_id: &str, scopes: Vec<String>) -> (String, Duration) {
        let lifetime = self.config.lock().unwrap().token_lifetime;
        let token = format!("sim-{}", uuid::Uuid::new_v4().simple());
        let grant =
            Grant { client_id: client_id.to_string(), scopes, expires_at: SystemTime::now() + lifetime };
        self.tokens.lock().unwrap().insert(token.clone(), grant);
        (token, lifetime)
    }

    /// Counts a token answered by the token endpoint.
    pub(crate) fn count_token_request(&self) {
        *self.token_requests.lock().unwrap() += 1;
    }

    /// Records `jti` of `iss` until `exp`; `false` when it was already used and is not expired.
    pub(crate) fn remember_jti(&self, iss: &str, jti: &str, exp: u64, now: u64) -> bool {
        let mut used = self.used_jtis.lock().unwrap();
        used.retain(|_, e| *e >= now);
        used.insert((iss.to_string(), jti.to_string()), exp).is_none()
    }

    pub(crate) fn auto_approve(&self) -> bool {
        self.config.lock().unwrap().auto_approve
    }

    pub(crate) fn store_code(&self, code: String, pending: PendingCode) {
        self.codes.lock().unwrap().insert(code, pending);
    }

    /// Removes and returns a code (codes are single-use, valid or not).
    pub(crate) fn take_code(&self, code: &str) -> Option<PendingCode> {
        self.codes.lock().unwrap().remove(code)
    }

    pub(crate) fn store_refresh(&self, token: String, grant: RefreshGrant) {
        self.refresh.lock().unwrap().insert(token, grant);
    }

    pub(crate) fn refresh_grant(&self, token: &str) -> Option<RefreshGrant> {
        self.refresh.lock().unwrap().get(token).cloned()
    }

    pub(crate) fn store_login(&self, id: String, request: authorize::AuthorizeRequest) {
        self.pending_logins.lock().unwrap().insert(id, request);
    }

    pub(crate) fn login(&self, id: &str) -> Option<authorize::AuthorizeRequest> {
        self.pending_logins.lock().unwrap().get(id).cloned()
    }

    pub(crate) fn finish_login(&self, id: &str) -> Option<authorize::AuthorizeRequest> {
        self.pending_logins.lock().unwrap().remove(id)
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
        .route(
            &format!("{PREFIX}/api/FHIR/{{version}}/.well-known/smart-configuration"),
            get(discovery::smart_configuration),
        )
        .route(&format!("{PREFIX}/oauth2/token"), post(token::token).get(token::wrong_verb))
        .route(&format!("{PREFIX}/oauth2/token/"), post(token::wrong_verb).get(token::wrong_verb))
        .route(&format!("{PREFIX}/oauth2/authorize"), get(authorize::authorize))
        .route(&format!("{PREFIX}/oauth2/signin"), post(authorize::sign_in))
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}
