//! NDJSON destination: `<dir>/current/<ResourceType>.ndjson`, one JSON object per line with
//! the landing columns and the resource embedded byte-exact under `resource`.
//!
//! Files: `config.rs` (user config), `writer.rs` (the [`crate::destinations::files`] format).

mod config;
mod writer;

pub use config::NdjsonConfig;
pub(crate) use writer::open;
