//! PostgreSQL destination: all tables in one schema; staging through binary `COPY`; every
//! commit is one transaction, so readers keep seeing the previous state until it commits.
//!
//! Files: `config.rs` (user config), `writer.rs` (the [`crate::destinations::sql`] backend).

mod config;
mod writer;

pub use config::{DEFAULT_PASSWORD_ENV, DEFAULT_POSTGRES_SCHEMA, PostgresConfig};
pub(crate) use writer::{PostgresBackend, open};
