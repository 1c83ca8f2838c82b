//! The PostgreSQL backend of the SQL engine.
//!
//! tokio-postgres is async; the destination API is synchronous (it runs on a blocking thread), so
//! the backend owns a small runtime (one worker thread) and drives every call with `block_on`. The
//! worker runs the connection task and a copy task in the background.
//!
//! # Staging: binary COPY, pipelined
//!
//! Staged rows are encoded in `COPY ... (FORMAT binary)` format (the format tokio-postgres'
//! `BinaryCopyInWriter` writes, encoded straight from the borrowed rows so none is cloned) into one
//! buffer per new-rows table. A full buffer ([`FLUSH_BYTES`]) is handed to the copy task, which
//! streams it into the new-rows table while staging goes on: the landing thread never waits for the
//! server per batch. The new-rows tables are append-only (`_seq` numbers the copies in order; the
//! commit keeps the last copy of each key). Every other statement first hands over the remaining
//! buffers and waits until the copy task has written them, so statements and copies reach the
//! server in the order they were made: a `COMMIT` (one per checkpoint of `checkpoint_rows`) commits
//! exactly the rows and scopes staged before it.

use std::collections::BTreeMap;
use std::path::Path;
use std::pin::pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use fhirsync_core::RawResource;
use futures::SinkExt;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::Client;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::config::PostgresConfig;
use crate::destination::Destination;
use crate::destinations::sql::schema::{Dialect, RUNS, quote_ident};
use crate::destinations::sql::{Cell, SqlBackend, SqlDestination, SqlValue, StageTarget, Staged};
use crate::run::RunStatus;
use crate::{Error, Result};

/// Bytes of encoded rows per `COPY` handed to the copy task.
const FLUSH_BYTES: usize = 512 << 10;

/// `COPY` buffers queued for the copy task beyond the one it is writing: bounds the memory of
/// staging to a few [`FLUSH_BYTES`] per open new-rows table plus this many.
const COPY_QUEUE: usize = 2;

/// Columns a new-rows table is copied into (its run columns come from defaults, `_seq` from its
/// identity).
const COPY_COLUMNS: &str = "id, patient_id, fhir_version, source, dataset, content_hash, resource";

/// Connects and returns the destination.
pub(crate) fn open(config: &PostgresConfig) -> Result<Box<dyn Destination>> {
    Ok(Box::new(SqlDestination::new(PostgresBackend::connect(config)?)?))
}

fn err(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |source| Error::Postgres { action, source }
}

/// A connection plus the runtime that drives it.
pub(crate) struct PostgresBackend {
    /// Always `Some` until dropped (taken to shut down without blocking).
    rt: Option<Runtime>,
    client: Arc<Client>,
    dialect: Dialect,
    describe: String,
    /// Rows encoded for each table (quoted, qualified name), not yet handed to the copy task.
    buffers: BTreeMap<String, Pending>,
    /// Jobs for the copy task.
    copies: mpsc::Sender<CopyJob>,
    /// Whether a buffer was handed over since the copy task last reported.
    copying: bool,
}

/// Rows encoded for one table's next `COPY`.
struct Pending {
    /// The `COPY ... FROM STDIN` statement.
    sql: String,
    /// Binary format (needs a trailer), else text.
    binary: bool,
    data: BytesMut,
}

/// Work for the copy task, done in order.
enum CopyJob {
    /// One `COPY ... FROM STDIN` (binary or text) with its whole data.
    Copy { sql: String, data: Bytes },
    /// Reports (and clears) the first failure since the last report, once every job before it
    /// is done.
    Report(oneshot::Sender<Option<tokio_postgres::Error>>),
}

/// The copy task: runs the `COPY` jobs one after another on the connection. After a failure it
/// skips copies until the failure is reported (the transaction is aborted anyway).
async fn copy_task(client: Arc<Client>, mut jobs: mpsc::Receiver<CopyJob>) {
    let mut failed = None;
    while let Some(job) = jobs.recv().await {
        match job {
            CopyJob::Copy { sql, data } => {
                if failed.is_none()
                    && let Err(e) = copy(&client, &sql, data).await
                {
                    failed = Some(e);
                }
            }
            CopyJob::Report(to) => {
                let _ = to.send(failed.take());
            }
        }
    }
}

async fn copy(client: &Client, sql: &str, data: Bytes) -> std::result::Result<u64, tokio_postgres::Error> {
    let mut sink = pin!(client.copy_in::<_, Bytes>(sql).await?);
    sink.send(data).await?;
    sink.as_mut().finish().await
}

/// Signature and flags of a binary `COPY` stream.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Appends one field (`None`: NULL) to a binary `COPY` tuple; `false` (nothing appended) for a
/// value longer than the format's 2 GiB.
fn put_field(buf: &mut BytesMut, value: Option<&[u8]>) -> bool {
    match value {
        Some(v) => {
            let Ok(len) = i32::try_from(v.len()) else { return false };
            buf.put_i32(len);
            buf.put_slice(v);
        }
        None => buf.put_i32(-1),
    }
    true
}

/// Appends `text` as one field of `COPY` text format (backslash, tab, newline and carriage
/// return escaped).
fn put_copy_text(buf: &mut BytesMut, text: &str) {
    let bytes = text.as_bytes();
    let mut from = 0;
    for (i, b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            _ => continue,
        };
        buf.put_slice(&bytes[from..i]);
        buf.put_slice(escaped);
        from = i + 1;
    }
    buf.put_slice(&bytes[from..]);
}

/// Appends `r` as one binary `COPY` tuple of [`COPY_COLUMNS`]; fails, appending nothing, for a
/// value the format cannot carry.
fn put_row(buf: &mut BytesMut, r: &RawResource) -> Result<()> {
    let dataset = r.dataset.to_string();
    let hash = r.hash.to_hex();
    let start = buf.len();
    buf.put_i16(7);
    // The binary form of `json` is its text.
    let fields = [
        Some(r.id.as_bytes()),
        r.patient_id.as_deref().map(str::as_bytes),
        Some(r.fhir_version.as_str().as_bytes()),
        Some(r.source.as_bytes()),
        Some(dataset.as_bytes()),
        Some(hash.as_bytes()),
        Some(r.json.as_bytes()),
    ];
    if !fields.into_iter().all(|f| put_field(buf, f)) {
        buf.truncate(start);
        return Err(Error::PostgresValueTooLarge {
            resource_type: r.resource_type.clone(),
            id: r.id.clone(),
        });
    }
    Ok(())
}

impl PostgresBackend {
    /// Connects, takes the writer lock of the schema and creates the schema if missing.
    pub(crate) fn connect(config: &PostgresConfig) -> Result<Self> {
        let mut backend = PostgresBackend::connect_existing(config)?;
        backend.lock_schema(&config.schema)?;
        backend.batch(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; SET search_path TO {schema}, public;",
            schema = quote_ident(&config.schema)
        ))?;
        Ok(backend)
    }

    /// Takes the session-level advisory lock of `schema`, held by this connection until it
    /// closes (with the process, however it ends), or fails naming the session that holds it.
    fn lock_schema(&mut self, schema: &str) -> Result<()> {
        if self.try_lock(schema)? {
            return Ok(());
        }
        let holder = self.lock_holder(schema)?;
        let holder = match self.holder_run(schema) {
            Some(run) => format!("{holder}; its run {run}"),
            None => holder,
        };
        Err(Error::Locked { destination: self.describe.clone(), holder })
    }

    /// Tries the advisory lock of `schema` (see [`LOCK_KEY`]); whether it was taken.
    fn try_lock(&mut self, schema: &str) -> Result<bool> {
        let got =
            self.query(&format!("SELECT pg_try_advisory_lock({LOCK_KEY})::text"), &[lock_key(schema)])?;
        Ok(got.first().and_then(|r| r.first()).and_then(|c| c.as_deref()) == Some("true"))
    }

    /// Who holds the advisory lock of `schema`: the application name carries the holder's host
    /// and pid (see `connect_existing`).
    fn lock_holder(&mut self, schema: &str) -> Result<String> {
        let rows = self.query(
            &format!(
                "SELECT a.application_name, coalesce(a.client_hostname, host(a.client_addr), 'local socket'), \
                 a.pid::text, a.backend_start::text FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                 WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
                 AND ((l.classid::bigint << 32) | l.objid::bigint) = ({LOCK_KEY})::bigint"
            ),
            &[lock_key(schema)],
        )?;
        Ok(match rows.first() {
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
        })
    }

    /// The running run of the lock holder, where its runs table can be read (a schema being
    /// created has none): naming it is a courtesy, the lock error stands either way.
    fn holder_run(&mut self, schema: &str) -> Option<String> {
        let runs = Dialect::Postgres { schema: schema.to_string() }.t(RUNS);
        let sql = format!("SELECT run_id FROM {runs} WHERE status = $1 ORDER BY started_at DESC LIMIT 1");
        match self.query(&sql, &[RunStatus::Running.as_str().into()]) {
            Ok(rows) => rows.into_iter().next().and_then(|r| r.into_iter().next()?),
            Err(error) => {
                tracing::debug!(%error, "Could not read the run of the writer lock's holder.");
                None
            }
        }
    }

    /// Whether a live session holds the writer lock of `schema` (for `status`): tries it and
    /// lets it go at once.
    pub(crate) fn schema_locked(&mut self, schema: &str) -> Result<bool> {
        if self.try_lock(schema)? {
            self.query(&format!("SELECT pg_advisory_unlock({LOCK_KEY})::text"), &[lock_key(schema)])?;
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
        let host = host_of(&pg);
        let describe =
            format!("postgres `{host}/{}` schema `{}`", pg.get_dbname().unwrap_or_default(), config.schema);
        name_session(&mut pg);
        let user = pg.get_user().unwrap_or_default().to_string();
        let tls = MakeRustlsConnect::new(tls_config(config.ca_file.as_deref())?);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("fhirsync-postgres")
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
        let client = Arc::new(client);
        let (copies, jobs) = mpsc::channel(COPY_QUEUE);
        rt.spawn(copy_task(client.clone(), jobs));
        Ok(PostgresBackend {
            rt: Some(rt),
            client,
            dialect: Dialect::Postgres { schema: config.schema.clone() },
            describe,
            buffers: BTreeMap::new(),
            copies,
            copying: false,
        })
    }

    fn rt(&self) -> &Runtime {
        self.rt.as_ref().expect("the runtime lives as long as the backend")
    }

    /// Hands the rows buffered for `table` to the copy task (waits only while its queue is
    /// full).
    fn hand_over(&mut self, table: &str) -> Result<()> {
        let Some(Pending { sql, binary, mut data }) = self.buffers.remove(table) else { return Ok(()) };
        if binary {
            data.put_i16(-1);
        }
        let job = CopyJob::Copy { sql, data: data.freeze() };
        self.rt().block_on(self.copies.send(job)).map_err(|_| Error::PostgresCopyTask)?;
        self.copying = true;
        Ok(())
    }

    /// Hands every buffer over and waits until the copy task has written them; fails with the
    /// first copy that failed. Called before every other statement, so the server sees
    /// statements and copies in the order they were made.
    fn sync(&mut self) -> Result<()> {
        let new_rows_tables: Vec<String> = self.buffers.keys().cloned().collect();
        for new_rows in new_rows_tables {
            self.hand_over(&new_rows)?;
        }
        if !std::mem::take(&mut self.copying) {
            return Ok(());
        }
        let (to, report) = oneshot::channel();
        let failed = self
            .rt()
            .block_on(async {
                self.copies.send(CopyJob::Report(to)).await.ok()?;
                report.await.ok()
            })
            .ok_or(Error::PostgresCopyTask)?;
        match failed {
            Some(source) => Err(Error::Postgres { action: "copying resources into staging", source }),
            None => Ok(()),
        }
    }
}

impl Drop for PostgresBackend {
    fn drop(&mut self) {
        // Without waiting: the backend may be dropped on an async thread (the connection, and
        // with it the schema's advisory lock, closes when its task ends).
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// The (first) host of `pg`, for messages.
fn host_of(pg: &tokio_postgres::Config) -> String {
    pg.get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default()
}

/// Unless the URL names the application, names this process (host and pid, 63 bytes at most)
/// to whoever finds the schema locked.
fn name_session(pg: &mut tokio_postgres::Config) {
    if pg.get_application_name().is_none() {
        let mut name = format!("fhirsync {} pid {}", crate::lock::host_name(), std::process::id());
        while name.len() > 63 {
            name.remove(9);
        }
        pg.application_name(&name);
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

/// The advisory lock key of a schema, as SQL of its one parameter, [`lock_key`].
const LOCK_KEY: &str = "hashtext($1)";

/// The text whose hash is the advisory lock key of `schema`.
fn lock_key(schema: &str) -> SqlValue {
    SqlValue::Text(format!("fhirsync:{schema}"))
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

/// The PostgreSQL type a parameter is bound as: text (NULL too: a NULL timestamp is cast
/// like a text one, see [`crate::destinations::sql::Params::bind_time`]), `bigint` or
/// `boolean`. Integer columns narrower than `bigint` take it by assignment.
fn pg_type(value: &SqlValue) -> Type {
    match value {
        SqlValue::Null | SqlValue::Text(_) => Type::TEXT,
        SqlValue::Int(_) => Type::INT8,
        SqlValue::Bool(_) => Type::BOOL,
    }
}

/// `params` with their [`pg_type`]s, as tokio-postgres takes them.
fn typed(params: &[SqlValue]) -> Vec<(&(dyn ToSql + Sync), Type)> {
    params.iter().map(|p| (p as &(dyn ToSql + Sync), pg_type(p))).collect()
}

/// Encodes a parameter bound as its [`pg_type`].
impl ToSql for SqlValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Text(s) => s.as_str().to_sql(ty, out),
            SqlValue::Int(i) => i.to_sql(ty, out),
            SqlValue::Bool(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <&str as ToSql>::accepts(ty) || <i64 as ToSql>::accepts(ty) || <bool as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

impl SqlBackend for PostgresBackend {
    fn dialect(&self) -> &Dialect {
        &self.dialect
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.sync()?;
        self.rt().block_on(self.client.batch_execute(sql)).map_err(err("running a statement"))
    }

    /// One round trip: the statement is parsed with the parameter types of [`pg_type`], bound
    /// and run unnamed.
    fn execute(&mut self, sql: &str, params: &[SqlValue]) -> Result<u64> {
        self.sync()?;
        let params = typed(params);
        self.rt().block_on(self.client.execute_typed(sql, &params)).map_err(err("running a statement"))
    }

    /// One round trip, as [`PostgresBackend::execute`]; every column must be text.
    fn query(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<Cell>>> {
        self.sync()?;
        let params = typed(params);
        let rows =
            self.rt().block_on(self.client.query_typed(sql, &params)).map_err(err("running a query"))?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.try_get::<_, Option<String>>(i).map_err(err("reading a query result")))
                    .collect()
            })
            .collect()
    }

    /// Encodes the rows into the new-rows table's `COPY` buffer, handed to the copy task once full.
    /// Keys are not looked up: the new-rows table is append-only and the commit compares set-based.
    fn stage_rows(&mut self, _run_id: &str, target: &StageTarget, rows: &[&RawResource]) -> Result<Staged> {
        if rows.is_empty() {
            return Ok(Staged::default());
        }
        let new_rows = &target.new_rows;
        let pending = self.buffers.entry(new_rows.clone()).or_insert_with(|| {
            let mut data = BytesMut::with_capacity(64 << 10);
            data.put_slice(COPY_HEADER);
            let sql = format!("COPY {new_rows} ({COPY_COLUMNS}) FROM STDIN (FORMAT binary)");
            Pending { sql, binary: true, data }
        });
        for r in rows {
            put_row(&mut pending.data, r)?;
        }
        if pending.data.len() >= FLUSH_BYTES {
            self.hand_over(&target.new_rows)?;
        }
        Ok(Staged { found: 0, written: rows.len() as u64 })
    }

    fn discard_pending(&mut self) {
        self.buffers.clear();
        // What was handed over is written into the transaction being rolled back; its failure,
        // if any, is the rollback's reason, already reported.
        let _ = self.sync();
    }

    /// Encodes the rows in `COPY` text format into the table's buffer, handed to the copy task
    /// once full (each value in its text form, which the column's type parses).
    fn insert_rows(&mut self, table: &str, columns: &[String], rows: &[Vec<SqlValue>]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let pending = self.buffers.entry(table.to_string()).or_insert_with(|| Pending {
            sql: format!("COPY {table} ({}) FROM STDIN", columns.join(", ")),
            binary: false,
            data: BytesMut::with_capacity(64 << 10),
        });
        for row in rows {
            for (i, v) in row.iter().enumerate() {
                if i > 0 {
                    pending.data.put_u8(b'\t');
                }
                match v {
                    SqlValue::Null => pending.data.put_slice(b"\\N"),
                    SqlValue::Text(s) => put_copy_text(&mut pending.data, s),
                    SqlValue::Int(i) => pending.data.put_slice(i.to_string().as_bytes()),
                    SqlValue::Bool(b) => pending.data.put_slice(if *b { b"t" } else { b"f" }),
                }
            }
            pending.data.put_u8(b'\n');
        }
        if pending.data.len() >= FLUSH_BYTES {
            self.hand_over(table)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `COPY` text escapes exactly the characters that would end a field or a row, or start an
    /// escape; everything else is copied as it is.
    #[test]
    fn copy_text_escapes_field_and_row_separators() {
        let mut buf = BytesMut::new();
        put_copy_text(&mut buf, "a\tb\nc\rd\\e \\N é");
        assert_eq!(&buf[..], "a\\tb\\nc\\rd\\\\e \\\\N é".as_bytes());
    }

    /// A binary tuple is the field count, then each field's length and bytes; NULL is length
    /// -1, and the resource goes as its exact text.
    #[test]
    fn binary_tuple_layout() {
        let json = r#"{"resourceType":"Patient","id":"p1", "x":1.50}"#;
        let r = RawResource::from_json(
            json,
            None,
            fhirsync_core::Dataset::new("Patient"),
            fhirsync_core::FhirVersion::R4,
            "https://x/R4",
        )
        .unwrap();
        let mut buf = BytesMut::new();
        put_row(&mut buf, &r).unwrap();
        let mut expected = BytesMut::new();
        expected.put_i16(7);
        let hash = r.hash.to_hex();
        for field in
            [Some("p1"), None, Some("R4"), Some("https://x/R4"), Some("Patient"), Some(&hash), Some(json)]
        {
            match field {
                Some(f) => {
                    expected.put_i32(f.len() as i32);
                    expected.put_slice(f.as_bytes());
                }
                None => expected.put_i32(-1),
            }
        }
        assert_eq!(buf, expected);
        assert_eq!(COPY_HEADER.len(), 19, "signature, flags and header extension length");
    }
}
