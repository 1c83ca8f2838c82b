//! A local Epic on FHIR simulator.
//!
//! Faithful to the behaviours in the project's Epic fact sheet (`epic-facts.md`): SMART
//! discovery and token endpoints (module [`oauth`]), Epic's search rules, paging,
//! OperationOutcome entries as production Epic sends them (Outside-Record exclusions next to
//! data, outcome entries on the last page), patients with Epic's identifier set, patient lists,
//! Bulk `$export`, creates rewritten as Epic rewrites them, licence narrowing and fault
//! injection (module [`fhir`]). Production Epic is the default
//! ([`fhir::ServerProfile::Epic`]); a generic SMART server is a configuration away. Used
//! in-process by tests and by `fhirsync demo`, and standalone by `fhirsync sandbox`. Module
//! [`replay`] serves a folder of recorded answers instead (`fhirsync sandbox --replay DIR`).
//! Module `testing` (feature `testing`) is the test suites' way to start one.
//!
//! URL layout mirrors Epic's sandbox, rooted at [`Sim::base_url`]:
//! - `{base}/interconnect-fhir-oauth/api/FHIR/{R4|STU3|DSTU2}` — FHIR bases
//! - `{base}/interconnect-fhir-oauth/oauth2/{authorize|token}` — OAuth 2.0

pub mod fhir;
pub mod oauth;
pub mod replay;
#[cfg(feature = "testing")]
pub mod testing;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use fhirsync_core::FhirVersion;

/// Path prefix of every Epic URL.
pub const PREFIX: &str = "/interconnect-fhir-oauth";

/// Errors of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address asked for.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A data mutation named a resource the simulator does not serve.
    #[error("no {resource_type}/{id} in the simulated data: mutate an id returned by a search or read")]
    UnknownResource {
        /// Resource type asked for.
        resource_type: String,
        /// Id asked for.
        id: String,
    },
    /// A resource body without `resourceType`.
    #[error(
        "the resource has no `resourceType`: pass a FHIR JSON object like {{\"resourceType\":\"Observation\",…}}"
    )]
    MissingResourceType,
    /// A patient-scoped resource without a `subject`/`patient` reference.
    #[error("a {resource_type} must reference its patient in `subject` or `patient` (\"Patient/<id>\")")]
    MissingPatient {
        /// Resource type of the body.
        resource_type: String,
    },
    /// A licence switch named a dataset the simulator does not serve.
    #[error(
        "no dataset {dataset:?} in the simulated data: use `Type` or `Type:category` as in \
         `unauthorized_datasets`, e.g. \"Condition:problem-list-item\" or \"Procedure\""
    )]
    UnknownDataset {
        /// The key asked for.
        dataset: String,
    },
    /// The replay folder cannot be listed.
    #[error("cannot read the replay folder {path}: {source}")]
    ReplayFolder {
        /// The folder.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The replay folder holds no `*.json` file.
    #[error(
        "the replay folder {path} holds no recorded answers (`*.json` files): record one with \
         `fhirsync sync --record {path}` or write fixtures by hand"
    )]
    ReplayEmpty {
        /// The folder.
        path: std::path::PathBuf,
    },
    /// A recorded answer cannot be read.
    #[error("cannot read the recorded answer {path}: {source}")]
    ReplayRead {
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A file is not the JSON of a recorded answer.
    #[error("{path} is not a recorded answer: {source}\n{RECORDED_ANSWER_SHAPE}")]
    ReplayJson {
        /// The file.
        path: std::path::PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A recorded answer's `url` is not an absolute URL.
    #[error(
        "{path} is not a recorded answer: `url` is not an absolute URL ({source})\n{RECORDED_ANSWER_SHAPE}"
    )]
    ReplayUrl {
        /// The file.
        path: std::path::PathBuf,
        /// The URL error.
        source: url::ParseError,
    },
    /// A recorded answer holds a value the replay cannot serve.
    #[error("{path} is not a recorded answer: {problem}\n{RECORDED_ANSWER_SHAPE}")]
    ReplayInvalid {
        /// The file.
        path: std::path::PathBuf,
        /// Which member is wrong and how.
        problem: String,
    },
    /// A resource referencing a patient that does not exist.
    #[error("patient {id} does not exist in the simulated data: use an id from a patient list or search")]
    UnknownPatient {
        /// The referenced id.
        id: String,
    },
}

/// The shape of a recorded answer, for the replay errors.
const RECORDED_ANSWER_SHAPE: &str =
    "expected {\"method\": \"GET\", \"url\": \"https://…\", \"status\": 200, \"headers\": {…}, \"body\": …}";

/// `Result` with the simulator [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the simulator can be configured with.
#[derive(Debug, Clone, Default)]
pub struct SimConfig {
    /// Synthetic data, search behaviour and fault injection.
    pub fhir: fhir::FhirConfig,
    /// Registered clients and token behaviour.
    pub oauth: oauth::OAuthConfig,
}

/// Shared state of a running simulator.
#[derive(Debug)]
pub struct SimState {
    /// Base URL (`http://127.0.0.1:PORT`), without trailing slash.
    pub base_url: String,
    /// OAuth side.
    pub oauth: oauth::OAuthState,
    /// FHIR side.
    pub fhir: fhir::FhirState,
}

impl SimState {
    /// FHIR base URL of one version.
    pub fn fhir_base(&self, version: FhirVersion) -> String {
        format!("{}{PREFIX}/api/FHIR/{}", self.base_url, version.as_str())
    }
    /// Token endpoint URL.
    pub fn token_url(&self) -> String {
        format!("{}{PREFIX}/oauth2/token", self.base_url)
    }
    /// Authorize endpoint URL.
    pub fn authorize_url(&self) -> String {
        format!("{}{PREFIX}/oauth2/authorize", self.base_url)
    }

    /// Narrows `client_id`'s licence for `dataset` (`"Condition:problem-list-item"`,
    /// `"Procedure"`, …) between syncs: its later searches and exports of that dataset withhold
    /// about half of the records and carry a 59204 "Client not authorized for `Type -
    /// subtype`. …" (see [`fhir::FhirState::narrow_licence`]).
    pub fn narrow_licence(&self, client_id: &str, dataset: &str, subtype: &str) -> Result<()> {
        self.fhir.narrow_licence(client_id, dataset, subtype)
    }

    /// Undoes [`SimState::narrow_licence`] for one client and dataset.
    pub fn widen_licence(&self, client_id: &str, dataset: &str) {
        self.fhir.widen_licence(client_id, dataset);
    }

    /// Undoes every licence narrowing.
    pub fn reset_licences(&self) {
        self.fhir.reset_licences();
    }
}

/// A running simulator; stops when dropped.
#[derive(Debug)]
pub struct Sim {
    state: Arc<SimState>,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Sim {
    /// Starts a simulator on `127.0.0.1` with an ephemeral port.
    pub async fn start(config: SimConfig) -> Result<Sim> {
        Sim::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts a simulator on `addr`.
    pub async fn start_on(addr: SocketAddr, config: SimConfig) -> Result<Sim> {
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind { addr, source })?;
        let base_url = format!("http://{addr}");
        let state = Arc::new(SimState {
            oauth: oauth::OAuthState::new(config.oauth),
            fhir: fhir::FhirState::new(config.fhir),
            base_url,
        });
        let app = router(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
        });
        Ok(Sim { state, addr, task })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.state.base_url
    }
    /// Socket address listened on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    /// FHIR base URL of one version.
    pub fn fhir_base(&self, version: FhirVersion) -> String {
        self.state.fhir_base(version)
    }
    /// Token endpoint URL.
    pub fn token_url(&self) -> String {
        self.state.token_url()
    }
    /// Shared state, for test hooks (issue tokens, inject faults, mutate data).
    pub fn state(&self) -> &Arc<SimState> {
        &self.state
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The whole HTTP surface.
pub fn router(state: Arc<SimState>) -> Router {
    Router::new().merge(oauth::routes()).merge(fhir::routes()).with_state(state)
}
