//! NDJSON destination (in progress).

mod config;

pub use config::NdjsonConfig;
