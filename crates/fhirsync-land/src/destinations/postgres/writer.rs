//! The PostgreSQL backend of the SQL engine.
//!
//! tokio-postgres is async; the destination API is synchronous (it runs on a blocking thread),
//! so the backend owns a single-threaded runtime and drives every call with `block_on`. That
//! runtime also runs the connection task, which only makes progress during those calls, and
//! that is all it needs.

use std::path::Path;
use std::pin::pin;
use std::sync::Arc;

use fhirsync_core::RawResource;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::runtime::Runtime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, SimpleQueryMessage};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::config::PostgresConfig;
use crate::destination::Destination;
use crate::destinations::sql::schema::{COLUMNS, Dialect, UPSERT, lit};
use crate::destinations::sql::{Cell, SqlBackend, SqlDestination, SqlValue, StageTarget, Staged};
use crate::{Error, Result};

/// View rows per multi-row `INSERT`.
const INSERT_CHUNK: usize = 500;

/// Connects and returns the destination.
pub(crate) fn open(config: &PostgresConfig) -> Result<Box<dyn Destination>> {
    Ok(Box::new(SqlDestination::new(PostgresBackend::connect(config)?)?))
}

fn err(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |source| Error::Postgres { action, source }
}

/// A connection plus the runtime that drives it.
pub(crate) struct PostgresBackend {
    rt: Runtime,
    client: Client,
    dialect: Dialect,
    describe: String,
    seq: i64,
}

impl PostgresBackend {
    /// Connects, takes the writer lock of the schema and creates the schema if missing.
    pub(crate) fn connect(config: &PostgresConfig) -> Result<Self> {
        let mut backend = PostgresBackend::connect_existing(config)?;
        backend.lock_schema(&config.schema)?;
        backend.batch(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}, public;",
            schema = crate::destinations::sql::schema::quote_ident(&config.schema)
        ))?;
        Ok(backend)
    }

    /// Takes the session-level advisory lock of `schema`, held by this connection until it
    /// closes (with the process, however it ends), or fails naming the session that holds it.
    fn lock_schema(&mut self, schema: &str) -> Result<()> {
        let key = lock_key_sql(schema);
        let got = self.query(&format!("SELECT pg_try_advisory_lock({key})::text"))?;
        if got.first().and_then(|r| r.first()).and_then(|c| c.as_deref()) == Some("true") {
            return Ok(());
        }
        // Who: the application name carries the holder's host and pid (see `connect_existing`).
        let rows = self.query(&format!(
            "SELECT a.application_name, coalesce(a.client_hostname, host(a.client_addr), 'local socket'), \
             a.pid::text, a.backend_start::text FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
             AND ((l.classid::bigint << 32) | l.objid::bigint) = ({key})::bigint"
        ))?;
        let holder = match rows.first() {
            Some(r) => {
                let cell = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
                format!(
                    "held by session `{}` from {}, server pid {}, connected since {}",
                    cell(0),
                    cell(1),
                    cell(2),
                    cell(3)
                )
            }
            None => "its advisory lock is held by another session".to_string(),
        };
        let running = self
            .query(&format!(
                "SELECT run_id FROM {}._fhirsync_runs WHERE status = 'running' ORDER BY started_at DESC LIMIT 1",
                crate::destinations::sql::schema::quote_ident(schema)
            ))
            .ok()
            .and_then(|rows| rows.into_iter().next()?.into_iter().next()?);
        let holder = match running {
            Some(run) => format!("{holder}; its run {run}"),
            None => holder,
        };
        Err(Error::Locked { destination: self.describe.clone(), holder })
    }

    /// Whether a live session holds the writer lock of `schema` (for `status`): tries it and
    /// lets it go at once.
    pub(crate) fn schema_locked(&mut self, schema: &str) -> Result<bool> {
        let key = lock_key_sql(schema);
        let got = self.query(&format!("SELECT pg_try_advisory_lock({key})::text"))?;
        if got.first().and_then(|r| r.first()).and_then(|c| c.as_deref()) == Some("true") {
            self.query(&format!("SELECT pg_advisory_unlock({key})::text"))?;
            return Ok(false);
        }
        Ok(true)
    }

    /// Connects without creating or changing anything (read-only callers such as
    /// [`crate::recent_runs`]); tables must be schema-qualified.
    pub(crate) fn connect_existing(config: &PostgresConfig) -> Result<Self> {
        config.validate()?;
        let mut pg: tokio_postgres::Config =
            config.url.parse().map_err(|source| Error::PostgresUrl { source })?;
        let password = std::env::var(&config.password_env).ok();
        if let Some(password) = &password {
            pg.password(password);
        }
        let host = pg
            .get_hosts()
            .first()
            .map(|h| match h {
                tokio_postgres::config::Host::Tcp(h) => h.clone(),
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_default();
        let describe =
            format!("postgres `{host}/{}` schema `{}`", pg.get_dbname().unwrap_or_default(), config.schema);
        if pg.get_application_name().is_none() {
            // Names this process to whoever finds the schema locked (63 bytes at most).
            let mut name = format!("fhirsync {} pid {}", crate::lock::host_name(), std::process::id());
            while name.len() > 63 {
                name.remove(9);
            }
            pg.application_name(&name);
        }
        let user = pg.get_user().unwrap_or_default().to_string();
        let tls = MakeRustlsConnect::new(tls_config(config.ca_file.as_deref())?);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("starting the PostgreSQL runtime", "."))?;
        let (client, mut connection) = rt.block_on(pg.connect(tls)).map_err(|source| {
            if is_tls_failure(&source) {
                Error::PostgresTls { host: host.clone(), source }
            } else if password.is_none() && is_password_missing(&source) {
                Error::PostgresPasswordMissing {
                    host: host.clone(),
                    user: user.clone(),
                    variable: config.password_env.clone(),
                }
            } else {
                Error::Postgres { action: "connecting", source }
            }
        })?;
        // Drives the connection; the server's NOTICEs (e.g. "schema already exists") are debug.
        rt.spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(tokio_postgres::AsyncMessage::Notice(notice))) => {
                        tracing::debug!(severity = notice.severity(), message = notice.message(), "PostgreSQL notice.");
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::warn!(error = %crate::error::pg_cause(&error), "PostgreSQL connection closed.");
                        break;
                    }
                    None => break,
                }
            }
        });
        Ok(PostgresBackend {
            rt,
            client,
            dialect: Dialect::Postgres { schema: config.schema.clone() },
            describe,
            seq: 0,
        })
    }
}

/// TLS settings: the system roots plus the certificates of `ca_file`.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: `ca_file` may be all that is needed.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    if let Some(path) = ca_file {
        let ca_error = |reason: String| Error::PostgresCa { path: path.to_path_buf(), reason };
        let pem = std::fs::read(path).map_err(Error::io("reading the PostgreSQL CA file", path))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| ca_error(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(ca_error("no `BEGIN CERTIFICATE` block".to_string()));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::PostgresTlsSetup { reason: e.to_string() })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The advisory lock key of `schema`, as SQL.
fn lock_key_sql(schema: &str) -> String {
    format!("hashtext({})", lit(&format!("fhirsync:{schema}")))
}

/// Whether the server asked for a password and none was given.
fn is_password_missing(error: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    error.source().is_some_and(|s| s.to_string() == "password missing")
}

/// Whether a connection error came from the TLS handshake (rustls, e.g. an unknown issuer).
fn is_tls_failure(error: &tokio_postgres::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.downcast_ref::<rustls::Error>().is_some()
            || e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
        {
            return true;
        }
        source = e.source();
    }
    false
}

impl SqlBackend for PostgresBackend {
    fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.rt.block_on(self.client.batch_execute(sql)).map_err(err("running a statement"))
    }

    fn execute(&mut self, sql: &str) -> Result<u64> {
        let messages = self.rt.block_on(self.client.simple_query(sql)).map_err(err("running a statement"))?;
        Ok(messages
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::CommandComplete(n) => Some(*n),
                _ => None,
            })
            .sum())
    }

    fn query(&mut self, sql: &str) -> Result<Vec<Vec<Cell>>> {
        let messages = self.rt.block_on(self.client.simple_query(sql)).map_err(err("running a query"))?;
        Ok(messages
            .into_iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(row) => {
                    Some((0..row.len()).map(|i| row.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }

    fn stage_rows(&mut self, run_id: &str, target: &StageTarget, rows: &[&RawResource]) -> Result<Staged> {
        if rows.is_empty() {
            return Ok(Staged::default());
        }
        self.batch(
            "CREATE TEMP TABLE IF NOT EXISTS _fhirsync_stage_in (seq bigint, fhir_version text, id text, patient_id text, \
             dataset text, source text, content_hash text, resource text) ON COMMIT DELETE ROWS",
        )?;
        let first_seq = self.seq;
        self.seq += rows.len() as i64;
        let client = &self.client;
        self.rt
            .block_on(async {
                let sink = client
                    .copy_in(
                        "COPY pg_temp._fhirsync_stage_in (seq, fhir_version, id, patient_id, dataset, source, \
                         content_hash, resource) FROM STDIN (FORMAT binary)",
                    )
                    .await?;
                let types = [
                    Type::INT8,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                    Type::TEXT,
                ];
                let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
                for (i, r) in rows.iter().enumerate() {
                    let seq = first_seq + i as i64;
                    let dataset = r.dataset.to_string();
                    let hash = r.hash.to_hex();
                    let values: [&(dyn ToSql + Sync); 8] = [
                        &seq,
                        &r.fhir_version.as_str(),
                        &r.id,
                        &r.patient_id,
                        &dataset,
                        &r.source,
                        &hash,
                        &&*r.json,
                    ];
                    writer.as_mut().write(&values).await?;
                }
                writer.finish().await.map(|_| ())
            })
            .map_err(err("copying resources into staging"))?;
        // Later copies win; `first_seen_run` is the run's own: the merge at commit keeps the
        // table's value for rows it already holds.
        let sql = format!(
            "INSERT INTO {shadow} ({COLUMNS}) SELECT DISTINCT ON (fhir_version, id) id, patient_id, fhir_version, \
             source, dataset, content_hash, CAST(resource AS json), {run}, {run} FROM pg_temp._fhirsync_stage_in \
             ORDER BY fhir_version, id, seq DESC {UPSERT}; \
             DELETE FROM pg_temp._fhirsync_stage_in;",
            shadow = target.shadow,
            run = lit(run_id),
        );
        // Keys are compared at commit, never looked up here.
        self.batch(&sql)?;
        Ok(Staged { found: 0, shadowed: rows.len() as u64 })
    }

    fn insert_rows(&mut self, table: &str, columns: &[String], rows: &[Vec<SqlValue>]) -> Result<()> {
        for chunk in rows.chunks(INSERT_CHUNK) {
            let values: Vec<String> = chunk
                .iter()
                .map(|row| {
                    let cells: Vec<String> = row
                        .iter()
                        .map(|v| match v {
                            SqlValue::Null => "NULL".to_string(),
                            SqlValue::Text(s) => lit(s),
                            SqlValue::Int(i) => i.to_string(),
                            SqlValue::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
                        })
                        .collect();
                    format!("({})", cells.join(", "))
                })
                .collect();
            self.batch(&format!(
                "INSERT INTO {table} ({}) VALUES {}",
                columns.join(", "),
                values.join(", ")
            ))?;
        }
        Ok(())
    }
}
