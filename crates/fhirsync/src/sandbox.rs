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

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fhirsync_auth::{KeyType, SigningKey, TokenProvider, generate_private_key};
use fhirsync_core::{Endpoints, FhirVersion};
use fhirsync_land::DestinationConfig;
use fhirsync_sim::fhir::{ChurnSummary, FhirConfig, Members, RetryAfter};
use fhirsync_sim::oauth::{ClientRegistration, OAuthConfig};
use fhirsync_sim::{Sim, SimConfig};
use secrecy::SecretString;
use url::Url;

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
    /// The simulator's FHIR base of every version.
    endpoints: Endpoints,
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
        let endpoints = FhirVersion::ALL
            .into_iter()
            .map(|v| Ok((v, Url::parse(&sim.fhir_base(v))?)))
            .collect::<Result<_, url::ParseError>>()
            .map_err(|e| Error::config_from("the simulator's FHIR base is not a URL", e, None))?;
        Ok(Sandbox { sim, key, pem, endpoints: Endpoints(endpoints) })
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
        let base = |version| self.endpoints.get(version).cloned();
        c.fhir_r4_endpoint = base(FhirVersion::R4);
        c.fhir_stu3_endpoint = base(FhirVersion::Stu3);
        c.fhir_dstu2_endpoint = base(FhirVersion::Dstu2);
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
        let settings = config.auth_settings()?.with_private_key(self.pem.clone());
        let http = fhirsync_auth::http_client(&config.connection)?;
        Ok(settings.provider(&http).await?)
    }
}

/// The standalone simulator's settings (`fhirsync sandbox` flags).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "clap", derive(clap::Args))]
pub struct Options {
    /// Address to listen on.
    #[cfg_attr(feature = "clap", arg(long, default_value = "127.0.0.1"))]
    pub host: IpAddr,
    /// Port to listen on (0 = any free port).
    #[cfg_attr(feature = "clap", arg(long, short = 'p', default_value_t = 8080))]
    pub port: u16,
    /// Simulator data settings as TOML (fields of `FhirConfig`: patients, seed, lists, groups,
    /// max_page_size, session_ttl_secs, bulk); the flags below override it.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub sim_config: Option<PathBuf>,
    /// Number of synthetic patients (default 50).
    #[cfg_attr(feature = "clap", arg(long))]
    pub patients: Option<usize>,
    /// Generator seed: same seed, same data (default 42).
    #[cfg_attr(feature = "clap", arg(long))]
    pub seed: Option<u64>,
    /// Members of the default patient list `systemlist|6442` and Group: the first N patients
    /// (default: all).
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub cohort: Option<usize>,
    /// Fixed delay before every FHIR answer, in milliseconds.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 0))]
    pub latency_ms: u64,
    /// Answer every Nth FHIR request with 429.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N"))]
    pub throttle_every: Option<u64>,
    /// `Retry-After` seconds on injected 429s.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 1))]
    pub retry_after_secs: u64,
    /// Send `Retry-After` as an HTTP-date instead of seconds.
    #[cfg_attr(feature = "clap", arg(long))]
    pub retry_after_http_date: bool,
    /// Answer the first K FHIR requests with `--fail-status`.
    #[cfg_attr(feature = "clap", arg(long, value_name = "K", default_value_t = 0))]
    pub fail_first: u64,
    /// Status of injected server errors.
    #[cfg_attr(feature = "clap", arg(long, default_value_t = 503))]
    pub fail_status: u16,
    /// Cut the body of the first K FHIR answers half-way (dropped connection).
    #[cfg_attr(feature = "clap", arg(long, value_name = "K", default_value_t = 0))]
    pub drop_first: u64,
    /// Lifetime of paging sessions in seconds (expired → 4113).
    #[cfg_attr(feature = "clap", arg(long))]
    pub session_ttl_secs: Option<u64>,
    /// Simulate "the source changed since the last run": with this seed, edit, delete and add a
    /// fixed set of records at start-up (same seed, same changes).
    #[cfg_attr(feature = "clap", arg(long, value_name = "SEED"))]
    pub churn_seed: Option<u64>,
    /// Number of patients whose records `--churn-seed` changes.
    #[cfg_attr(feature = "clap", arg(long, value_name = "N", default_value_t = 10))]
    pub churn_patients: usize,
    /// Lifetime of issued access tokens in seconds (short values exercise token refresh).
    #[cfg_attr(feature = "clap", arg(long))]
    pub token_lifetime_secs: Option<u64>,
    /// Register a client with this id (repeat for several).
    #[cfg_attr(feature = "clap", arg(long = "client-id", value_name = "ID"))]
    pub client_ids: Vec<String>,
    /// JWK Set (JSON file) of the registered clients, for backend-services `client_credentials`.
    #[cfg_attr(feature = "clap", arg(long, value_name = "FILE"))]
    pub jwks: Option<PathBuf>,
    /// Datasets the registered clients are not licensed for (e.g. `Observation:social-history`).
    #[cfg_attr(feature = "clap", arg(long, value_name = "DATASET"))]
    pub unlicensed: Vec<String>,
    /// Approve authorize requests without the sign-in form.
    #[cfg_attr(feature = "clap", arg(long))]
    pub auto_approve: bool,
    /// Serve the recorded answers in DIR (`fhirsync sync --record DIR`) instead of simulated
    /// data: requests match by method, path and query; unrecorded searches answer Epic's empty
    /// searchset (4101), unrecorded reads 404 (59008); any well-formed credential gets a token.
    #[cfg_attr(feature = "clap", arg(
        long,
        value_name = "DIR",
        conflicts_with_all = [
            "sim_config", "patients", "seed", "cohort", "latency_ms", "throttle_every",
            "retry_after_secs", "retry_after_http_date", "fail_first", "fail_status", "drop_first",
            "session_ttl_secs", "churn_seed", "churn_patients", "token_lifetime_secs", "client_ids",
            "jwks", "unlicensed", "auto_approve",
        ]
    ))]
    pub replay: Option<PathBuf>,
}

impl Options {
    /// The simulator configuration these settings describe.
    pub fn sim_config(&self) -> Result<SimConfig> {
        let args = self;
        let mut fhir = match &args.sim_config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())))?;
                toml::from_str::<FhirConfig>(&text).map_err(|e| {
                    Error::config(format!("{} is not a valid simulator configuration: {e}", path.display()))
                })?
            }
            None => FhirConfig::default(),
        };
        if let Some(n) = args.patients {
            fhir.patients = n;
        }
        if let Some(seed) = args.seed {
            fhir.seed = seed;
        }
        if let Some(ttl) = args.session_ttl_secs {
            fhir.session_ttl_secs = ttl;
        }
        if let Some(n) = args.cohort {
            for list in &mut fhir.lists {
                list.members = Members::First(n);
            }
            for group in &mut fhir.groups {
                group.members = Members::First(n);
            }
        }
        let jwks =
            match &args.jwks {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| Error::config(format!("cannot read JWKS {}: {e}", path.display())))?;
                    Some(serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                        Error::config(format!("{} is not a JSON JWK Set: {e}", path.display()))
                    })?)
                }
                None => None,
            };
        let clients = args
            .client_ids
            .iter()
            .map(|id| ClientRegistration {
                client_id: id.clone(),
                unauthorized_datasets: args.unlicensed.clone(),
                jwks: jwks.clone(),
                ..ClientRegistration::default()
            })
            .collect();
        let mut oauth = OAuthConfig { clients, auto_approve: args.auto_approve, ..OAuthConfig::default() };
        if let Some(secs) = args.token_lifetime_secs {
            oauth.token_lifetime = Duration::from_secs(secs);
        }
        Ok(SimConfig { fhir, oauth })
    }
}

/// A standalone simulator started from [`Options`], with its fault switches on.
#[derive(Debug)]
pub struct Standalone {
    /// The running simulator.
    pub sim: Sim,
    /// The data settings it serves (patients, seed, lists, groups).
    pub fhir: FhirConfig,
    /// What `churn_seed` changed, if set.
    pub churn: Option<ChurnSummary>,
}

impl Options {
    /// Starts the simulator on `host:port` and turns on the fault switches and the churn.
    pub async fn start(&self) -> Result<Standalone> {
        let config = self.sim_config()?;
        let fhir = config.fhir.clone();
        let sim = Sim::start_on(std::net::SocketAddr::new(self.host, self.port), config)
            .await
            .map_err(|source| Error::Sim { source: Box::new(source) })?;
        let faults = &sim.state().fhir.faults;
        faults.set_latency(Duration::from_millis(self.latency_ms));
        let retry_after = if self.retry_after_http_date {
            RetryAfter::HttpDate(self.retry_after_secs)
        } else {
            RetryAfter::Seconds(self.retry_after_secs)
        };
        if let Some(n) = self.throttle_every {
            faults.throttle_every(n, retry_after);
        }
        if self.fail_first > 0 {
            faults.fail_next(self.fail_first, self.fail_status);
        }
        if self.drop_first > 0 {
            faults.drop_next(self.drop_first);
        }
        let churn = match self.churn_seed {
            Some(seed) => Some(
                sim.state()
                    .fhir
                    .churn(seed, self.churn_patients)
                    .map_err(|source| Error::Sim { source: Box::new(source) })?,
            ),
            None => None,
        };
        Ok(Standalone { sim, fhir, churn })
    }
}

#[cfg(all(test, feature = "clap"))]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Options,
    }

    /// Flags override the defaults and the cohort narrows the default list and group.
    #[test]
    fn flags_build_the_config() {
        let cli = Cli::parse_from([
            "x",
            "--patients",
            "1000",
            "--seed",
            "7",
            "--cohort",
            "10",
            "--client-id",
            "c1",
        ]);
        let config = cli.args.sim_config().unwrap();
        assert_eq!(config.fhir.patients, 1000);
        assert_eq!(config.fhir.seed, 7);
        assert_eq!(config.fhir.lists[0].members, Members::First(10));
        assert_eq!(config.oauth.clients[0].client_id, "c1");
    }

    /// A simulator TOML file configures lists and groups; unknown keys are rejected.
    #[test]
    fn toml_config() {
        let text = r#"
patients = 500
[[lists]]
id = 5332
title = "Oncology"
members = { indices = [1, 2, 3] }
[[groups]]
id = "g1"
name = "Registry"
members = { first = 100 }
"#;
        let fhir: FhirConfig = toml::from_str(text).unwrap();
        assert_eq!(fhir.patients, 500);
        assert_eq!(fhir.lists[0].members, Members::Indices(vec![1, 2, 3]));
        assert_eq!(fhir.groups[0].members, Members::First(100));
        assert!(toml::from_str::<FhirConfig>("patient = 5").is_err());
    }

    /// `--replay` cannot be combined with the simulator's data flags.
    #[test]
    fn replay_excludes_simulator_flags() {
        let cli = Cli::try_parse_from(["x", "--replay", "dir", "--port", "0"]).unwrap();
        assert_eq!(cli.args.replay.as_deref(), Some(std::path::Path::new("dir")));
        let err = Cli::try_parse_from(["x", "--replay", "dir", "--patients", "5"]).unwrap_err();
        assert!(err.to_string().contains("--patients"), "{err}");
    }
}
