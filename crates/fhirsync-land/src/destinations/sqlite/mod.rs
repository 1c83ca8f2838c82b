//! SQLite destination (the default): one file in WAL mode, so readers keep reading the previous
//! state while a run commits. Staging uses prepared statements inside large transactions.
//!
//! Files: `config.rs` (user config), `writer.rs` (the [`crate::destinations::sql`] backend).

mod config;
mod writer;

pub use config::{DEFAULT_BUSY_TIMEOUT_MS, DEFAULT_SQLITE_PATH, SqliteConfig};
pub(crate) use writer::{SqliteBackend, lock_path, open};
