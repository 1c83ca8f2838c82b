//! The crate's error type.

use std::path::PathBuf;

/// Errors of the landing layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `full-load` was asked to write into a destination that already holds data.
    #[error(
        "the {destination} destination already holds landed data: full-load only writes into an empty target; \
         set `replace = true` (CLI `--replace`) to overwrite it, or use `--method reload-and-compare` to update it"
    )]
    TargetNotEmpty {
        /// Destination kind and location, without credentials.
        destination: String,
    },
    /// A type table of an earlier version's layout carries a user's indexes or triggers, which
    /// moving its rows to the split layout would drop.
    #[error(
        "table `{table}` was written by an earlier fhirsync version and carries indexes or triggers fhirsync did not \
         create: this version keeps the rows in `_fhirsync_rows_{table}` and makes `{table}` a view over them, which \
         would drop those objects. Nothing was changed. Drop them, run again, then re-create them on \
         `_fhirsync_rows_{table}`"
    )]
    UpgradeBlocked {
        /// The type table.
        table: String,
    },
    /// The target was written by a newer fhirsync, in a layout this one does not know.
    #[error(
        "{destination} has schema version {found}, written by fhirsync {written_by}; this fhirsync {running} \
         knows schema versions up to {supported}. Nothing was changed: upgrade fhirsync to {written_by} or \
         later to use this target"
    )]
    SchemaTooNew {
        /// Destination kind and location, without credentials.
        destination: String,
        /// The target's schema version.
        found: u32,
        /// The fhirsync version that wrote it.
        written_by: String,
        /// The highest schema version this fhirsync knows.
        supported: u32,
        /// This fhirsync's version.
        running: &'static str,
    },
    /// The target's schema version record holds something that is not a version.
    #[error("the schema version of {destination} cannot be read: `{value}` is not a version number")]
    SchemaVersionUnreadable {
        /// Destination kind and location, without credentials.
        destination: String,
        /// The stored value.
        value: String,
    },
    /// A query that returns one number (a count, a version) returned something else.
    #[error("{destination}: {what} returned {} instead of a number", found_text(.found))]
    NotANumber {
        /// Destination kind and location, without credentials.
        destination: String,
        /// What was being counted.
        what: &'static str,
        /// The value returned (`None`: no row or NULL).
        found: Option<String>,
    },
    /// A resource type that cannot become a table name.
    #[error(
        "resource type `{resource_type}` cannot be landed: resource types must be ASCII letters and digits starting with a letter"
    )]
    InvalidResourceType {
        /// The rejected type.
        resource_type: String,
    },
    /// A view name that cannot become a table name.
    #[error(
        "view name `{name}` cannot become a table name: use ASCII letters, digits and `_`, starting with a letter"
    )]
    InvalidViewName {
        /// The rejected name.
        name: String,
    },
    /// A run id (read back from the runs table) that is not the text of a UUID, so it cannot
    /// be written as a column default in DDL.
    #[error("run id `{run_id}` is not one fhirsync writes: run ids are UUIDs (letters, digits and `-`)")]
    InvalidRunId {
        /// The rejected id.
        run_id: String,
    },
    /// An option combination the destination does not support.
    #[error("the {destination} destination does not support {option}: {fix}")]
    Unsupported {
        /// Destination kind.
        destination: &'static str,
        /// The option.
        option: &'static str,
        /// What to do instead.
        fix: &'static str,
    },
    /// A call out of order (e.g. `stage` before `begin`).
    #[error("landing API misuse: {0} (call begin, then stage/scope_complete, then commit or fail)")]
    NoActiveRun(&'static str),
    /// SQLite failed.
    #[error("SQLite error while {action}: {source}")]
    Sqlite {
        /// What was being done.
        action: &'static str,
        /// The driver error.
        source: rusqlite::Error,
    },
    /// PostgreSQL failed; the message carries the server's own words (or the OS/TLS cause).
    #[error("PostgreSQL error while {action}: {}", pg_cause(.source))]
    #[cfg(feature = "postgres")]
    Postgres {
        /// What was being done.
        action: &'static str,
        /// The driver error.
        source: tokio_postgres::Error,
    },
    /// A resource too large for PostgreSQL's `COPY` (a field is at most 2 GiB).
    #[error("resource {resource_type}/{id} is too large for PostgreSQL (more than 2 GiB)")]
    PostgresValueTooLarge {
        /// Its type.
        resource_type: String,
        /// Its id.
        id: String,
    },
    /// The background task that streams staged rows to PostgreSQL stopped (its connection's
    /// runtime is gone); the run's staging so far is kept for a resume.
    #[error("the PostgreSQL copy task stopped; rerun to resume")]
    PostgresCopyTask,
    /// The TLS handshake with PostgreSQL failed (most often: a certificate from a CA that is
    /// not trusted, or a host name it does not cover).
    #[error(
        "PostgreSQL TLS handshake with `{host}` failed: {}. Set `ca_file` in [destination] to the PEM of the \
         CA that signed the server certificate, connect with the host name the certificate names, or add \
         `sslmode=disable` to the url for a server without TLS", pg_cause(.source)
    )]
    #[cfg(feature = "postgres")]
    PostgresTls {
        /// Host connected to.
        host: String,
        /// The driver error.
        source: tokio_postgres::Error,
    },
    /// The server asked for a password and the configured variable is not set.
    #[error(
        "PostgreSQL at `{host}` asks for the password of user `{user}`, but the environment variable {variable} \
         (`password_env` in [destination]) is not set: export it, or set `password_env` to the variable that holds it"
    )]
    PostgresPasswordMissing {
        /// Host connected to.
        host: String,
        /// User name.
        user: String,
        /// The environment variable read for the password.
        variable: String,
    },
    /// The PostgreSQL url holds a password.
    #[error(
        "the PostgreSQL `url` in [destination] must not hold the password: remove it from the url and put it in an \
         environment variable named by `password_env = \"{variable}\"` (the default)"
    )]
    InlinePassword {
        /// The variable that should hold it.
        variable: String,
    },
    /// Another process writes to the destination.
    #[error(
        "another fhirsync run is writing to {destination} ({holder}): wait for it to finish; a run that died \
         releases the lock by itself"
    )]
    Locked {
        /// Destination kind and location, without credentials.
        destination: String,
        /// Who holds the lock (host, pid, run id where known).
        holder: String,
    },
    /// The PostgreSQL CA file holds no usable certificate.
    #[error("`{path}` (PostgreSQL `ca_file`) holds no usable PEM certificate: {reason}")]
    PostgresCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The TLS library refused its own settings (no protocol version the crypto provider supports).
    #[error("PostgreSQL TLS could not be set up: {reason}")]
    PostgresTlsSetup {
        /// The TLS library's reason.
        reason: String,
    },
    /// The PostgreSQL URL could not be parsed.
    #[error("invalid PostgreSQL url (expected `postgresql://user@host:port/db`): {}", pg_cause(.source))]
    #[cfg(feature = "postgres")]
    PostgresUrl {
        /// The parse error (never contains the password).
        source: tokio_postgres::Error,
    },
    /// File system I/O failed.
    #[error("I/O error on `{path}` while {action}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file destination's own files are damaged.
    #[error(
        "corrupt landing file `{path}`: {detail}; remove the destination folder's `_fhirsync/staging` or restore it"
    )]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The run history (`_fhirsync_runs` or `_fhirsync/runs.json`) holds a value that cannot be read.
    #[error("cannot read the run history of {destination}: {detail}")]
    RunHistory {
        /// Destination kind and location, without credentials.
        destination: String,
        /// The unreadable value and why.
        detail: String,
    },
    /// Parquet / Arrow encoding failed.
    #[error("Parquet error on `{path}`: {source}")]
    #[cfg(feature = "parquet")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The writer/reader error.
        source: parquet::errors::ParquetError,
    },
    /// A Delta Lake table operation failed.
    #[cfg(feature = "delta")]
    #[error("Delta Lake error on table `{table}` while {action}: {}", crate::error::chain(.source.as_ref()))]
    Delta {
        /// What was being done.
        action: &'static str,
        /// The table (or object path).
        table: String,
        /// The delta-rs error.
        source: Box<deltalake::DeltaTableError>,
    },
    /// The Delta destination's `uri` cannot be used.
    #[error("the Delta destination `uri = \"{uri}\"` cannot be used: {detail}")]
    InvalidDeltaUri {
        /// The configured uri.
        uri: String,
        /// Why, and what to do.
        detail: String,
    },
    /// The destination needs a cargo feature this binary was built without.
    #[error(
        "this fhirsync was built without the {destination} destination: build it with `cargo build --release --features {feature}`"
    )]
    FeatureMissing {
        /// Destination kind.
        destination: &'static str,
        /// The cargo feature that brings it.
        feature: &'static str,
    },
    /// Arrow batch construction failed.
    #[error("Arrow error while {action}: {source}")]
    #[cfg(feature = "parquet")]
    Arrow {
        /// What was being done.
        action: &'static str,
        /// The error.
        source: arrow_schema::ArrowError,
    },
    /// Serialising landing metadata failed.
    #[error("JSON error while {action}: {source}")]
    Json {
        /// What was being done.
        action: &'static str,
        /// The error.
        source: serde_json::Error,
    },
    /// A ViewDefinition failed while flattening resources.
    #[error("view `{view}` failed on {resource_type}/{id}: {source}")]
    View {
        /// View name.
        view: String,
        /// Resource type.
        resource_type: String,
        /// Resource id.
        id: String,
        /// The view runner's error.
        source: Box<fhirsync_views::Error>,
    },
    /// A view produced a value its declared column type cannot hold.
    #[error(
        "view `{view}` column `{column}` is declared {expected} but produced a {found}; fix the column's `type` in the ViewDefinition"
    )]
    ViewValue {
        /// View name.
        view: String,
        /// Column name.
        column: String,
        /// Declared type.
        expected: String,
        /// JSON kind received.
        found: String,
    },
    /// A cell that does not fit the Arrow type of its column.
    #[error("column `{column}` is {arrow_type} but got a {cell} value that does not fit it")]
    CellType {
        /// Column name.
        column: String,
        /// The column's Arrow type.
        arrow_type: String,
        /// Kind of the cell (never its value).
        cell: &'static str,
    },
    /// A date/dateTime column's companion `<column>_text` is also a column of the view.
    #[error(
        "view `{view}` has a column `{companion}`, the name fhirsync gives the text of date/dateTime column `{column}`; rename one of them"
    )]
    ViewColumnClash {
        /// View name.
        view: String,
        /// The date/dateTime column.
        column: String,
        /// The companion name already taken.
        companion: String,
    },
    /// The blocking landing task panicked or was cancelled.
    #[error("the landing worker stopped unexpectedly: {0}")]
    Worker(#[from] tokio::task::JoinError),
}

/// `Result` with the landing [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cause of a PostgreSQL error in the server's or the system's words, once: the server's
/// message (with its detail and hint) for a database error, else the error followed by each
/// source in its chain whose text is not already shown.
#[cfg(feature = "postgres")]
pub(crate) fn pg_cause(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        let mut text = format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code());
        if let Some(detail) = db.detail() {
            text.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = db.hint() {
            text.push_str(&format!("; hint: {hint}"));
        }
        return text;
    }
    chain(error)
}

/// `error: source: source ...`, skipping a source whose text the line already contains.
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// `nothing` or the value in backquotes, for [`Error::NotANumber`].
fn found_text(found: &Option<String>) -> String {
    found.as_deref().map_or_else(|| "nothing".to_string(), |v| format!("`{v}`"))
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { action, path, source }
    }
}
