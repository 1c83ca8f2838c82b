//! fhirsync: land Epic on FHIR (and any SMART-on-FHIR server) into SQLite, PostgreSQL, Parquet
//! or NDJSON, with the completeness of every run proven or its gaps named.
//!
//! The front door of the workspace: each operation is a builder that takes the [`Config`] and
//! returns a typed report, as delta-rs's operations do.
//!
//! | operation | builder | report |
//! |---|---|---|
//! | one sync run (auth → fhir client → extract → land → views) | [`Sync`] | [`SyncReport`] |
//! | what the endpoints offer and this client may read | [`Discover`] | [`DiscoverReport`] |
//! | create resources on the server (write-back) | [`Push`] | [`PushReport`] |
//! | a destination's run history and gaps | [`Status`] | [`StatusReport`] |
//!
//! Every failure is an [`Error`] whose [`Error::kind`] says how to react (the CLI's exit code)
//! and whose source chain carries the cause. The stage crates are re-exported for what the
//! builders do not cover: [`auth`], [`fhir`], [`extract`], [`land`], [`views`] and, with the
//! `sim` feature, the Epic simulator [`sim`].
//!
//! ```no_run
//! # async fn demo() -> fhirsync::Result<()> {
//! let config = fhirsync::Config::load(std::path::Path::new("fhirsync.toml"))?;
//! let report = fhirsync::Sync::new(config).method(fhirsync::Method::ReloadAndCompare).run().await?;
//! print!("{}", report.summary());
//! # Ok(()) }
//! ```

pub mod config;
pub mod discover;
mod error;
pub mod flatten;
pub mod init;
pub mod metrics;
pub mod progress;
pub mod push;
#[cfg(feature = "sim")]
pub mod sandbox;
pub mod status;
pub mod sync;

pub use config::{Config, SyncConfig, ViewsConfig};
pub use discover::{Discover, DiscoverReport};
pub use error::{BoxError, Error, ErrorKind, Result};
pub use fhirsync_extract::{ExtractReport, GapReason, ProgressSnapshot};
pub use fhirsync_land::{DestinationConfig, Method, RunMetrics, RunRecord, RunStatus};
pub use progress::ProgressSink;
pub use push::{Push, PushReport};
pub use status::{Status, StatusReport};
pub use sync::{Sync, SyncReport};

pub use fhirsync_auth as auth;
pub use fhirsync_core as core;
pub use fhirsync_extract as extract;
pub use fhirsync_fhir as fhir;
pub use fhirsync_land as land;
#[cfg(feature = "sim")]
pub use fhirsync_sim as sim;
pub use fhirsync_views as views;
