//! The whole job with nothing to set up: the Epic simulator in-process, a backend client
//! registered with a fresh key, and a [`Config`] pointing at it (`fhirsync demo`, the examples,
//! tests of your own pipelines).
//!
//! ```no_run
//! # async fn demo() -> fhirsync::Result<()> {
//! use fhirsync::land::{DestinationConfig, SqliteConfig};
//! let sandbox = fhirsync::sandbox::Sandbox::start(20).await?;
//! let db = DestinationConfig::Sqlite(SqliteConfig { path: "demo.db".into(), ..SqliteConfig::default() });
//! let config = sandbox.config(db, ".fhirsync-demo".into());
//! let report = fhirsync::Sync::new(config.clone()).tokens(sandbox.tokens(&config).await?).run().await?;
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use fhirsync_auth::{KeyType, SigningKey, TokenProvider, generate_private_key};
use fhirsync_core::FhirVersion;
use fhirsync_land::DestinationConfig;
use fhirsync_sim::fhir::FhirConfig;
use fhirsync_sim::oauth::ClientRegistration;
use fhirsync_sim::{Sim, SimConfig};
use secrecy::SecretString;

use crate::{Config, Error, Result};

/// Client id the sandbox registers with the simulator.
pub const CLIENT_ID: &str = "fhirsync-demo";
/// Concurrent requests against the local simulator.
pub const CONCURRENCY: usize = 8;
/// Requests per second against the local simulator.
pub const RATE_LIMIT: f64 = 1000.0;

/// A running simulator with a registered SMART Backend Services client.
pub struct Sandbox {
    /// The simulator (its state can be edited to simulate changes on the server).
    pub sim: Sim,
    key: SigningKey,
    pem: SecretString,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox").field("fhir", &self.sim.fhir_base(FhirVersion::R4)).finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Starts the simulator with `patients` synthetic patients (patient list `systemlist|6442`)
    /// and registers [`CLIENT_ID`] with the public JWK Set of a fresh RSA key, as an Epic
    /// backend app would be registered.
    pub async fn start(patients: usize) -> Result<Sandbox> {
        let sim = Sim::start(SimConfig {
            fhir: FhirConfig { patients, ..FhirConfig::default() },
            ..SimConfig::default()
        })
        .await
        .map_err(|source| Error::Sim { source: Box::new(source) })?;
        let pem = generate_private_key(KeyType::Rsa(2048))?;
        let key = SigningKey::from_pem(&pem, "demo key", None)?;
        sim.state().oauth.register_client(ClientRegistration {
            client_id: CLIENT_ID.into(),
            jwks: Some(key.jwks()),
            jwks_from_url: true,
            ..Default::default()
        });
        Ok(Sandbox { sim, key, pem })
    }

    /// Key id of the registered key.
    pub fn key_id(&self) -> &str {
        self.key.kid()
    }

    /// A configuration that reads the simulator's three endpoints and patient list into
    /// `destination`, with run state in `state_dir`, at the simulator's pace.
    pub fn config(&self, destination: DestinationConfig, state_dir: PathBuf) -> Config {
        let mut config = Config::default();
        let c = &mut config.connection;
        c.client_id = Some(CLIENT_ID.into());
        c.fhir_r4_endpoint = Some(self.sim.fhir_base(FhirVersion::R4));
        c.fhir_stu3_endpoint = Some(self.sim.fhir_base(FhirVersion::Stu3));
        c.fhir_dstu2_endpoint = Some(self.sim.fhir_base(FhirVersion::Dstu2));
        c.patient_list_identifier = Some("systemlist|6442".into());
        config.destination = destination;
        config.sync.state_dir = state_dir;
        // The simulator is local: no need for the low default politeness meant for a real Epic.
        config.extract.concurrency = CONCURRENCY;
        config.extract.rate_limit = RATE_LIMIT;
        config
    }

    /// SMART Backend Services tokens for `config` signed with the registered key.
    pub async fn tokens(&self, config: &Config) -> Result<Arc<dyn TokenProvider>> {
        let mut settings = config.auth_settings()?;
        settings.private_key_pem = Some(self.pem.clone());
        let http = fhirsync_auth::http_client()?;
        Ok(settings.provider(&http).await?)
    }
}
