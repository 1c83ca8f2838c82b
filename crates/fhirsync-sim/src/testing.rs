//! Test support (cargo feature `testing`): the one way the test suites, benchmarks and examples
//! start a simulator with registered clients and obtain tokens it accepts.
//!
//! ```
//! # #[tokio::main] async fn main() {
//! use fhirsync_sim::testing::SimBuilder;
//!
//! let sim = SimBuilder::new().patients(3).page_size(50).client("test-client").start().await;
//! let token = sim.read_token("test-client"); // `system/*.read`, as a backend token would be
//! assert!(sim.accepts(&token));
//! # }
//! ```
//!
//! Helpers that start something panic with a message when they fail: they are for tests, where
//! a panic is the failure report.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use fhirsync_core::{BoxFuture, StaticToken, TokenError, TokenProvider};
use secrecy::{ExposeSecret, SecretString};

use crate::fhir::{BulkConfig, FhirConfig};
use crate::oauth::{ClientRegistration, DEFAULT_BACKEND_SCOPES};
use crate::{PREFIX, Result, Sim, SimConfig};

/// A simulator to start: its data, paging and Bulk behaviour, and the clients registered.
#[derive(Debug, Clone, Default)]
pub struct SimBuilder {
    config: SimConfig,
}

impl SimBuilder {
    /// The default simulator (Epic profile, default data) with no client registered.
    pub fn new() -> Self {
        SimBuilder::default()
    }

    /// Replaces the FHIR side's settings (data, paging, Bulk, profile, faults).
    pub fn fhir(mut self, fhir: FhirConfig) -> Self {
        self.config.fhir = fhir;
        self
    }

    /// Number of synthetic patients.
    pub fn patients(mut self, patients: usize) -> Self {
        self.config.fhir.patients = patients;
        self
    }

    /// Largest search page the simulator returns (small pages force paging by `next` links).
    pub fn page_size(mut self, max_page_size: usize) -> Self {
        self.config.fhir.max_page_size = max_page_size;
        self
    }

    /// Bulk `$export` behaviour.
    pub fn bulk(mut self, bulk: BulkConfig) -> Self {
        self.config.fhir.bulk = bulk;
        self
    }

    /// Registers `client_id` with default settings (licensed for everything, no key).
    pub fn client(self, client_id: &str) -> Self {
        self.register(ClientRegistration { client_id: client_id.to_owned(), ..ClientRegistration::default() })
    }

    /// Registers `client_id`, not licensed for `datasets` (`Type` or `Type:category`): its
    /// searches of those answer a 59204 instead of data.
    pub fn unlicensed_client(self, client_id: &str, datasets: &[&str]) -> Self {
        self.register(ClientRegistration {
            client_id: client_id.to_owned(),
            unauthorized_datasets: datasets.iter().map(|d| (*d).to_owned()).collect(),
            ..ClientRegistration::default()
        })
    }

    /// Registers `registration` (see [`backend_client`] and [`launch_client`]).
    pub fn register(mut self, registration: ClientRegistration) -> Self {
        self.config.oauth.clients.retain(|c| c.client_id != registration.client_id);
        self.config.oauth.clients.push(registration);
        self
    }

    /// Starts the simulator on an ephemeral port of `127.0.0.1`.
    pub async fn try_start(self) -> Result<Sim> {
        Sim::start(self.config).await
    }

    /// [`SimBuilder::try_start`] for tests.
    ///
    /// # Panics
    /// If no port can be bound.
    pub async fn start(self) -> Sim {
        match self.try_start().await {
            Ok(sim) => sim,
            Err(e) => panic!("the simulator does not start: {e}"),
        }
    }
}

/// A backend-services client whose public JWK Set is `jwks` (what `fhirsync keys jwks` prints),
/// registered as a JWK Set URL (`jwks_from_url`: EC keys and `kid` honoured) or uploaded.
pub fn backend_client(client_id: &str, jwks: serde_json::Value, jwks_from_url: bool) -> ClientRegistration {
    ClientRegistration {
        client_id: client_id.to_owned(),
        jwks: Some(jwks),
        jwks_from_url,
        ..ClientRegistration::default()
    }
}

/// A confidential standalone-launch client with `secret` and one redirect URI.
pub fn launch_client(
    client_id: &str,
    secret: &str,
    redirect_uri: &str,
    refresh_tokens: bool,
) -> ClientRegistration {
    ClientRegistration {
        client_id: client_id.to_owned(),
        client_secret: Some(secret.to_owned()),
        redirect_uris: vec![redirect_uri.to_owned()],
        refresh_tokens,
        ..ClientRegistration::default()
    }
}

impl Sim {
    /// Epic's root of this simulator, `{base}/interconnect-fhir-oauth`: the FHIR bases are
    /// below `api/FHIR/`, the OAuth endpoints below `oauth2/`.
    pub fn epic_root(&self) -> String {
        format!("{}{PREFIX}", self.base_url())
    }

    /// The Auth Base URI (`{base}/interconnect-fhir-oauth/oauth2`, the authorize URL without
    /// `/authorize`).
    pub fn auth_base(&self) -> String {
        format!("{}{PREFIX}/oauth2", self.base_url())
    }

    /// An access token for `client_id` with the default backend scopes (`system/*.read`), as
    /// the token endpoint would issue it.
    pub fn read_token(&self, client_id: &str) -> String {
        self.state().oauth.issue_token(client_id, DEFAULT_BACKEND_SCOPES)
    }

    /// [`Sim::read_token`] as a token provider that never renews.
    pub fn static_token(&self, client_id: &str) -> Arc<StaticToken> {
        Arc::new(StaticToken(SecretString::from(self.read_token(client_id))))
    }

    /// Whether the FHIR side accepts `token` as a bearer token now.
    pub fn accepts(&self, token: &str) -> bool {
        let mut headers = axum::http::HeaderMap::new();
        match format!("Bearer {token}").parse() {
            Ok(value) => {
                headers.insert(axum::http::header::AUTHORIZATION, value);
                self.state().oauth.validate_bearer(&headers).is_ok()
            }
            Err(_) => false,
        }
    }
}

/// A token provider over a simulator: hands out a token it issued, and a new one after the
/// current one is invalidated (as a real provider renews after a 401); counts invalidations.
#[derive(Debug)]
pub struct SimTokens {
    state: Arc<crate::SimState>,
    client_id: String,
    current: Mutex<String>,
    invalidated: AtomicUsize,
}

impl SimTokens {
    /// A provider of `client_id`'s read tokens from `sim`.
    pub fn new(sim: &Sim, client_id: &str) -> Arc<SimTokens> {
        Arc::new(SimTokens {
            state: Arc::clone(sim.state()),
            client_id: client_id.to_owned(),
            current: Mutex::new(sim.read_token(client_id)),
            invalidated: AtomicUsize::new(0),
        })
    }

    /// How many times [`TokenProvider::invalidate`] was called.
    pub fn invalidations(&self) -> usize {
        self.invalidated.load(Ordering::SeqCst)
    }
}

impl TokenProvider for SimTokens {
    fn access_token(&self) -> BoxFuture<'_, std::result::Result<SecretString, TokenError>> {
        let token = self.current.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Box::pin(async move { Ok(SecretString::from(token)) })
    }

    fn invalidate(&self, token: &SecretString) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if *current == token.expose_secret() {
            *current = self.state.oauth.issue_token(&self.client_id, DEFAULT_BACKEND_SCOPES);
        }
        self.invalidated.fetch_add(1, Ordering::SeqCst);
    }
}

/// A stand-in HTTPS proxy that answers one request with `502 Bad Gateway`; `.1` resolves to the
/// first request it received (a client configured with this proxy sends `CONNECT host:443`).
pub async fn recording_proxy() -> (std::net::SocketAddr, tokio::task::JoinHandle<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind a loopback port");
    let addr = listener.local_addr().expect("a bound listener has an address");
    let seen = tokio::spawn(async move {
        let Ok((mut sock, _)) = listener.accept().await else { return String::new() };
        let mut buf = vec![0u8; 1024];
        let n = sock.read(&mut buf).await.unwrap_or(0);
        let _ = sock.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n").await;
        String::from_utf8_lossy(&buf[..n]).to_string()
    });
    (addr, seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A builder's clients are registered at start, and the tokens it hands out are accepted.
    #[tokio::test]
    async fn builder_registers_clients_and_tokens_are_accepted() {
        let sim = SimBuilder::new()
            .patients(2)
            .page_size(7)
            .unlicensed_client("c", &["Procedure"])
            .register(launch_client("l", "s", "https://app.example/cb", true))
            .start()
            .await;
        let c = sim.state().oauth.client("c").map(|c| c.unauthorized_datasets);
        assert_eq!(c, Some(vec!["Procedure".to_owned()]));
        assert!(sim.state().oauth.client("l").is_some_and(|l| l.refresh_tokens));
        assert_eq!(sim.state().fhir.patient_ids().len(), 2);
        assert!(sim.accepts(&sim.read_token("c")));
        assert!(!sim.accepts("not-a-token"));
        assert!(sim.auth_base().starts_with(&sim.epic_root()));
        assert_eq!(sim.token_url(), format!("{}/token", sim.auth_base()));
    }

    /// `SimTokens` renews only after its current token is invalidated, and counts each call.
    #[tokio::test]
    async fn sim_tokens_renew_after_invalidation() {
        let sim = SimBuilder::new().client("c").start().await;
        let tokens = SimTokens::new(&sim, "c");
        let first = tokens.access_token().await.map(|t| t.expose_secret().to_owned()).ok();
        tokens.invalidate(&SecretString::from("someone else's"));
        let same = tokens.access_token().await.map(|t| t.expose_secret().to_owned()).ok();
        assert_eq!(first, same);
        tokens.invalidate(&SecretString::from(first.clone().unwrap_or_default()));
        let renewed = tokens.access_token().await.map(|t| t.expose_secret().to_owned()).ok();
        assert_ne!(first, renewed);
        assert!(renewed.is_some_and(|t| sim.accepts(&t)));
        assert_eq!(tokens.invalidations(), 2);
    }
}
