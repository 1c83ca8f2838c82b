//! Table layout of the SQL destinations and the small dialect differences between SQLite and
//! PostgreSQL. Statements are built from identifiers quoted by [`quote_ident`] (table names
//! validated by [`type_table`] and [`view_table`]); every value is bound ([`Params`]), and
//! resource data goes through prepared statements or COPY.

use super::params::{Params, run_id_default};
use crate::{Error, Result};

/// Runs table: one row per run.
pub(crate) const RUNS: &str = "_fhirsync_runs";
/// Schema versions reached by the target, one row each (see [`crate::schema_version`]).
pub(crate) const SCHEMA_VERSION: &str = "_fhirsync_schema_version";
/// Staging table of schema version 1 (one table for every type); dropped by the migration to 2.
pub(crate) const LEGACY_STAGE: &str = "_fhirsync_stage";
/// Prefix of the new-rows tables: durable staging of the current run, one per resource type,
/// shaped like the type table (`_fhirsync_new_observation`). SQLite's holds the new and changed
/// rows, PostgreSQL's every staged row. Stored name ("new": of this run), kept so that a run
/// staged by an earlier version resumes.
const NEW_ROWS_PREFIX: &str = "_fhirsync_new_";
/// Registry of the current run's new-rows tables.
pub(crate) const STAGE_TYPES: &str = "_fhirsync_stage_types";
/// Keys staged by reload-and-compare that are new or whose hash differs from the target's
/// (with the target's hash), found while staging.
pub(crate) const STAGE_CHANGES: &str = "_fhirsync_stage_changes";
/// Scopes whose resources are completely staged (persisted with the rows).
pub(crate) const STAGE_SCOPES: &str = "_fhirsync_stage_scopes";
/// Registry of resource-type tables.
pub(crate) const TYPES: &str = "_fhirsync_types";
/// Change records written by reload-and-compare.
pub(crate) const CHANGES: &str = "_fhirsync_changes";
/// The committing run's cohort (scratch table, filled inside the commit transaction).
pub(crate) const COHORT: &str = "_fhirsync_cohort";
/// Patients in the target who left the cohort.
pub(crate) const EXITS: &str = "_fhirsync_cohort_exits";
/// Optional type-2 history.
pub(crate) const HISTORY: &str = "_fhirsync_history";
/// Registry of materialised view tables.
pub(crate) const VIEWS: &str = "_fhirsync_views";

/// Columns of a type table, in order (and of a PostgreSQL new-rows table).
pub(crate) const COLUMNS: &str =
    "id, patient_id, fhir_version, source, dataset, content_hash, resource, first_seen_run, last_seen_run";

/// Columns of a SQLite rows table and new-rows table: a type table's without `last_seen_run`,
/// which the last-seen table holds (see [`Dialect::splits_rows`]).
pub(crate) const ROW_COLUMNS: &str =
    "id, patient_id, fhir_version, source, dataset, content_hash, resource, first_seen_run";

/// Prefix of SQLite's rows tables (`_fhirsync_rows_observation`).
const ROWS_PREFIX: &str = "_fhirsync_rows_";
/// Prefix of SQLite's last-seen tables: the `last_seen_run` of each row of a rows table
/// (`_fhirsync_seen_observation`; stored name).
const LAST_SEEN_PREFIX: &str = "_fhirsync_seen_";
/// Prefix of SQLite's restaged tables: the `_row` of each landed row whose key the current run
/// staged again (while staging: the unchanged ones; from the commit's merge on: all of them).
/// Stored name ("re-read": read again from the server), kept so that a staged run resumes.
const RESTAGED_PREFIX: &str = "_fhirsync_reread_";
/// Prefix of the rebuilt rows tables: the copy of a rows table with the new rows' content that
/// SQLite writes ahead of a commit to swap in for it (stored name: "next" rows table).
const REBUILT_PREFIX: &str = "_fhirsync_next_";
/// Copy number of a row in a PostgreSQL new-rows table (later copies of a key win).
pub(crate) const COPY_SEQ: &str = "_seq";

/// Conflict clause of an insert into a type table or new-rows table: a later copy of a key
/// replaces the content and keeps `first_seen_run` (callers merging into the table add
/// `last_seen_run`).
pub(crate) const UPSERT: &str = "ON CONFLICT (fhir_version, id) DO UPDATE SET patient_id = excluded.patient_id, \
     source = excluded.source, dataset = excluded.dataset, content_hash = excluded.content_hash, \
     resource = excluded.resource";

/// SQL flavour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// SQLite 3.4x (bundled).
    Sqlite,
    /// PostgreSQL, all tables in `schema`.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Postgres {
        /// Target schema.
        schema: String,
    },
}

impl Dialect {
    /// Qualified, quoted table name.
    pub(crate) fn t(&self, name: &str) -> String {
        match self {
            Dialect::Sqlite => quote_ident(name),
            Dialect::Postgres { schema } => format!("{}.{}", quote_ident(schema), quote_ident(name)),
        }
    }

    /// Column type of resource JSON.
    pub(crate) fn json(&self) -> &'static str {
        match self {
            Dialect::Sqlite => "TEXT",
            Dialect::Postgres { .. } => "json",
        }
    }

    /// Column type of timestamps.
    pub(crate) fn ts(&self) -> &'static str {
        match self {
            Dialect::Sqlite => "TEXT",
            Dialect::Postgres { .. } => "timestamptz",
        }
    }

    /// Column type of counters.
    pub(crate) fn int(&self) -> &'static str {
        match self {
            Dialect::Sqlite => "INTEGER",
            Dialect::Postgres { .. } => "bigint",
        }
    }

    /// Auto-increment primary key column type.
    pub(crate) fn serial_pk(&self) -> &'static str {
        match self {
            Dialect::Sqlite => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Dialect::Postgres { .. } => "bigserial PRIMARY KEY",
        }
    }

    /// Statement opening a write transaction.
    pub(crate) fn begin(&self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres { .. } => "BEGIN",
        }
    }

    /// Casts any expression to text in query results.
    pub(crate) fn text(&self, expr: &str) -> String {
        format!("CAST({expr} AS TEXT)")
    }

    /// DDL of the bookkeeping tables.
    pub(crate) fn bookkeeping_ddl(&self) -> String {
        let (json, ts, int, serial) = (self.json(), self.ts(), self.int(), self.serial_pk());
        let schema = match self {
            Dialect::Sqlite => String::new(),
            Dialect::Postgres { schema } => format!("CREATE SCHEMA IF NOT EXISTS {};\n", quote_ident(schema)),
        };
        format!(
            "{schema}\
             CREATE TABLE IF NOT EXISTS {runs} (run_id TEXT PRIMARY KEY, method TEXT NOT NULL, status TEXT NOT NULL, \
               started_at {ts} NOT NULL, ended_at {ts}, staged {int} NOT NULL DEFAULT 0, inserted {int} NOT NULL DEFAULT 0, \
               updated {int} NOT NULL DEFAULT 0, deleted {int} NOT NULL DEFAULT 0, unchanged {int} NOT NULL DEFAULT 0, \
               kept {int} NOT NULL DEFAULT 0, cohort_exits {int} NOT NULL DEFAULT 0, view_rows {int} NOT NULL DEFAULT 0, \
               errors TEXT, report {json});\n\
             CREATE TABLE IF NOT EXISTS {stage_types} (resource_type TEXT PRIMARY KEY, table_name TEXT NOT NULL);\n\
             CREATE TABLE IF NOT EXISTS {stage_changes} (resource_type TEXT NOT NULL, fhir_version TEXT NOT NULL, \
               id TEXT NOT NULL, before_hash TEXT, PRIMARY KEY (resource_type, fhir_version, id));\n\
             CREATE TABLE IF NOT EXISTS {scopes} (run_id TEXT NOT NULL, fhir_version TEXT NOT NULL, patient_id TEXT NOT NULL, \
               dataset TEXT NOT NULL, PRIMARY KEY (fhir_version, patient_id, dataset));\n\
             CREATE TABLE IF NOT EXISTS {types} (resource_type TEXT PRIMARY KEY, table_name TEXT NOT NULL);\n\
             CREATE TABLE IF NOT EXISTS {changes} (seq {serial}, run_id TEXT NOT NULL, changed_at {ts} NOT NULL, \
               operation TEXT NOT NULL, resource_type TEXT NOT NULL, fhir_version TEXT NOT NULL, id TEXT NOT NULL, \
               patient_id TEXT, before_hash TEXT, after_hash TEXT);\n\
             CREATE INDEX IF NOT EXISTS _fhirsync_changes_run ON {changes} (run_id, resource_type);\n\
             CREATE TABLE IF NOT EXISTS {cohort} (patient_id TEXT PRIMARY KEY);\n\
             CREATE TABLE IF NOT EXISTS {exits} (patient_id TEXT PRIMARY KEY, first_flagged_run TEXT NOT NULL, \
               last_flagged_run TEXT NOT NULL, flagged_at {ts} NOT NULL, rows_deleted BOOLEAN NOT NULL);\n\
             CREATE TABLE IF NOT EXISTS {history} (resource_type TEXT NOT NULL, fhir_version TEXT NOT NULL, id TEXT NOT NULL, \
               patient_id TEXT, content_hash TEXT NOT NULL, resource {json} NOT NULL, valid_from {ts} NOT NULL, \
               valid_from_run TEXT NOT NULL, valid_to {ts}, valid_to_run TEXT);\n\
             CREATE INDEX IF NOT EXISTS _fhirsync_history_key ON {history} (resource_type, fhir_version, id);\n\
             CREATE TABLE IF NOT EXISTS {views} (view_name TEXT PRIMARY KEY, resource_type TEXT NOT NULL, table_name TEXT NOT NULL, signature TEXT NOT NULL);\n",
            runs = self.t(RUNS),
            stage_types = self.t(STAGE_TYPES),
            stage_changes = self.t(STAGE_CHANGES),
            scopes = self.t(STAGE_SCOPES),
            types = self.t(TYPES),
            changes = self.t(CHANGES),
            cohort = self.t(COHORT),
            exits = self.t(EXITS),
            history = self.t(HISTORY),
            views = self.t(VIEWS),
        )
    }

    /// DDL of the schema version table (created with its first row, in the same transaction).
    pub(crate) fn schema_version_ddl(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (version INTEGER PRIMARY KEY, applied_at {} NOT NULL, \
               fhirsync_version TEXT NOT NULL);\n",
            self.t(SCHEMA_VERSION),
            self.ts()
        )
    }

    /// Whether resource rows and their `last_seen_run` live in two tables (SQLite).
    ///
    /// Every run changes the `last_seen_run` of every row it stages again. In one table an
    /// unchanged reload would rewrite every (wide) row; SQLite in WAL mode then writes each page
    /// twice. So SQLite keeps the rows in `_fhirsync_rows_<type>` (with an explicit `_row` key,
    /// which `VACUUM` keeps) and `last_seen_run` in the narrow `_fhirsync_seen_<type>` keyed by
    /// `_row`. The type table's name is a view joining the two, with exactly a type table's
    /// columns. A reload writes only the rows that changed, and a new last-seen table.
    ///
    /// Every column of the view is a plain column reference, so it keeps its declared type (`PRAGMA
    /// table_info`), which readers such as DuckDB's SQLite scanner map to their types; so every row
    /// has a last-seen row. The view's join is a left join: a row never hides.
    ///
    /// Staging looks each key up in the rows table (a local index probe in SQLite), so an unchanged
    /// row is only noted in the restaged table. PostgreSQL updates rows in place with MVCC, keeps
    /// one table, and compares in set-based statements at commit.
    pub(crate) fn splits_rows(&self) -> bool {
        matches!(self, Dialect::Sqlite)
    }

    /// The table holding type `table`'s rows (unquoted): the rows table where
    /// [`Dialect::splits_rows`], else the type table itself.
    pub(crate) fn rows_table(&self, table: &str) -> String {
        match self {
            Dialect::Sqlite => format!("{ROWS_PREFIX}{table}"),
            Dialect::Postgres { .. } => table.to_string(),
        }
    }

    /// DDL of one resource type (`table` unquoted, already validated): the type table, or
    /// where [`Dialect::splits_rows`] its rows table, last-seen table and view.
    pub(crate) fn type_ddl(&self, table: &str) -> String {
        let rows = self.rows_table(table);
        let mut ddl = self.rows_ddl(&rows, Some(&format!("{rows}_patient_id")));
        if self.splits_rows() {
            ddl.push_str(&format!(
                "{last_seen}CREATE VIEW IF NOT EXISTS {t} AS SELECT d.id, d.patient_id, d.fhir_version, d.source, \
                   d.dataset, d.content_hash, d.resource, d.first_seen_run, s.last_seen_run \
                   FROM {rows} d LEFT JOIN {last_seen_t} s ON s._row = d._row;\n",
                last_seen = self.last_seen_ddl(&last_seen_table(table)),
                t = self.t(table),
                rows = self.t(&rows),
                last_seen_t = self.t(&last_seen_table(table)),
            ));
        }
        ddl
    }

    /// Drops resource type `table` (every object [`Dialect::type_ddl`] creates).
    pub(crate) fn drop_type_sql(&self, table: &str) -> String {
        match self {
            Dialect::Sqlite => format!(
                "DROP VIEW IF EXISTS {}; DROP TABLE IF EXISTS {}; DROP TABLE IF EXISTS {};",
                self.t(table),
                self.t(&self.rows_table(table)),
                self.t(&last_seen_table(table))
            ),
            Dialect::Postgres { .. } => format!("DROP TABLE IF EXISTS {};", self.t(table)),
        }
    }

    /// DDL of a table shaped like type `table`'s rows table (or a new-rows table of it), with a
    /// `patient_id` index named `index` (none when `None`).
    pub(crate) fn rows_ddl(&self, name: &str, index: Option<&str>) -> String {
        let mut ddl = match self {
            Dialect::Sqlite => format!(
                "CREATE TABLE IF NOT EXISTS {t} (_row INTEGER PRIMARY KEY, id TEXT NOT NULL, patient_id TEXT, \
                   fhir_version TEXT NOT NULL, source TEXT NOT NULL, dataset TEXT NOT NULL, content_hash TEXT NOT NULL, \
                   resource TEXT NOT NULL, first_seen_run TEXT NOT NULL, UNIQUE (fhir_version, id));\n",
                t = self.t(name),
            ),
            Dialect::Postgres { .. } => format!(
                "CREATE TABLE IF NOT EXISTS {t} (id TEXT NOT NULL, patient_id TEXT, fhir_version TEXT NOT NULL, \
                   source TEXT NOT NULL, dataset TEXT NOT NULL, content_hash TEXT NOT NULL, resource {json} NOT NULL, \
                   first_seen_run TEXT NOT NULL, last_seen_run TEXT NOT NULL, PRIMARY KEY (fhir_version, id));\n",
                t = self.t(name),
                json = self.json(),
            ),
        };
        if let Some(index) = index {
            ddl.push_str(&format!(
                "CREATE INDEX IF NOT EXISTS {} ON {} (patient_id);\n",
                quote_ident(index),
                self.t(name)
            ));
        }
        ddl
    }

    /// DDL of a last-seen table (SQLite): `last_seen_run` of each row of a rows table.
    pub(crate) fn last_seen_ddl(&self, name: &str) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (_row INTEGER PRIMARY KEY, last_seen_run TEXT NOT NULL);\n",
            self.t(name)
        )
    }

    /// DDL of the new-rows table staging `table` in run `run_id`.
    ///
    /// SQLite swaps the new-rows table in as the rows table when that is empty or replaced (a full
    /// load), so it carries the `patient_id` index, named per run because SQLite cannot rename an
    /// index and the table's current index keeps its name. SQLite also records the rows it staged
    /// unchanged in a restaged table. PostgreSQL copies every staged row into an append-only
    /// new-rows table (no index, so `COPY` only appends; `_seq` numbers the copies, the run columns
    /// default to the run), which the commit reduces to the last copy of each key and keys (see
    /// [`Dialect::new_rows_finish_sql`]).
    pub(crate) fn new_rows_ddl(&self, table: &str, run_id: &str) -> Result<String> {
        Ok(match self {
            Dialect::Sqlite => {
                let rows = self.rows_table(table);
                let index = format!("{rows}_patient_id_{}", run_suffix(run_id));
                let mut ddl = self.rows_ddl(&new_rows_table(table), Some(&index));
                ddl.push_str(&format!(
                    "CREATE TABLE IF NOT EXISTS {} (_row INTEGER PRIMARY KEY);\n",
                    self.t(&restaged_table(table))
                ));
                ddl
            }
            Dialect::Postgres { .. } => format!(
                "CREATE TABLE IF NOT EXISTS {t} (id TEXT NOT NULL, patient_id TEXT, fhir_version TEXT NOT NULL, \
                   source TEXT NOT NULL, dataset TEXT NOT NULL, content_hash TEXT NOT NULL, resource {json} NOT NULL, \
                   first_seen_run TEXT NOT NULL DEFAULT {run}, last_seen_run TEXT NOT NULL DEFAULT {run}, \
                   {COPY_SEQ} bigint GENERATED ALWAYS AS IDENTITY);\n",
                t = self.t(&self.new_rows_name(table, run_id)),
                json = self.json(),
                run = run_id_default(run_id)?,
            ),
        })
    }

    /// PostgreSQL: reduces an append-only new-rows table (`name` unquoted) to the last copy of each
    /// key, then drops its copy numbers and run defaults, which leaves exactly a type table's
    /// columns; with `keyed`, adds the primary key the commit's joins use.
    pub(crate) fn new_rows_finish_sql(&self, name: &str, keyed: bool) -> String {
        let t = self.t(name);
        let key = match keyed {
            true => ", ADD PRIMARY KEY (fhir_version, id)",
            false => "",
        };
        format!(
            "DELETE FROM {t} s USING (SELECT fhir_version, id, max({COPY_SEQ}) AS last FROM {t} \
               GROUP BY fhir_version, id HAVING count(*) > 1) d \
               WHERE s.fhir_version = d.fhir_version AND s.id = d.id AND s.{COPY_SEQ} < d.last;\n\
             ALTER TABLE {t} DROP COLUMN {COPY_SEQ}, ALTER COLUMN first_seen_run DROP DEFAULT, \
               ALTER COLUMN last_seen_run DROP DEFAULT{key};\n"
        )
    }

    /// The new-rows table of type table `table` in run `run_id`. PostgreSQL names it per run
    /// (`_fhirsync_new_observation_<8 characters of the run id>`, at most 63 bytes), so two
    /// processes can never meet in one new-rows table; SQLite keeps `_fhirsync_new_<table>`, which
    /// its split layout swaps in by name (its file has one writer at a time).
    pub(crate) fn new_rows_name(&self, table: &str, run_id: &str) -> String {
        match self {
            Dialect::Sqlite => new_rows_table(table),
            Dialect::Postgres { .. } => {
                let suffix: String = run_suffix(run_id).chars().take(8).collect();
                format!("{}_{suffix}", new_rows_table(table))
            }
        }
    }

    /// DDL of the table that replaces type `table`'s rows table when run `run_id` rewrites it
    /// (SQLite); its `patient_id` index is named per run, like the new-rows table's.
    pub(crate) fn rebuilt_rows_ddl(&self, table: &str, run_id: &str) -> String {
        let index = format!("{}_patient_id_{}n", self.rows_table(table), run_suffix(run_id));
        self.rows_ddl(&rebuilt_rows_table(table), Some(&index))
    }

    /// The highest `_row` of type `table`'s rows as text, where the backend splits rows: a row
    /// added by anyone since staging began raises it.
    pub(crate) fn last_row_sql(&self, table: &str) -> Option<String> {
        match self {
            Dialect::Sqlite => {
                Some(format!("SELECT CAST(max(_row) AS TEXT) FROM {}", self.t(&self.rows_table(table))))
            }
            Dialect::Postgres { .. } => None,
        }
    }

    /// Drops table `table` and renames table `with` (both unquoted) to its name, in the open
    /// transaction (SQLite). Legacy rename: views that name `table` (the type's view, a user's)
    /// are not checked while it is briefly missing, and resolve to the renamed table by name.
    pub(crate) fn replace_table_sql(&self, table: &str, with: &str) -> String {
        format!(
            "DROP TABLE {}; PRAGMA legacy_alter_table = ON; ALTER TABLE {} RENAME TO {}; \
             PRAGMA legacy_alter_table = OFF;",
            self.t(table),
            self.t(with),
            quote_ident(table)
        )
    }

    /// Counts the tables named `name` (0 or 1) in the destination, binding into `p`.
    pub(crate) fn table_count_sql(&self, name: &str, p: &mut Params) -> String {
        match self {
            Dialect::Sqlite => format!(
                "SELECT CAST(count(*) AS TEXT) FROM sqlite_master WHERE type = 'table' AND name = {}",
                p.bind(name)
            ),
            Dialect::Postgres { schema } => format!(
                "SELECT CAST(count(*) AS TEXT) FROM information_schema.tables WHERE table_schema = {} \
                 AND table_name = {}",
                p.bind(schema),
                p.bind(name)
            ),
        }
    }

    /// Counts indexes and triggers on `table` (a rows table, or a type table of an earlier
    /// layout) that fhirsync did not create (its own are the primary key and
    /// `<table>_patient_id[_<run>]`), binding into `p`; `None` where tables are never swapped.
    pub(crate) fn user_objects_sql(&self, table: &str, p: &mut Params) -> Option<String> {
        match self {
            Dialect::Sqlite => Some(format!(
                "SELECT CAST(count(*) AS TEXT) FROM sqlite_master WHERE type IN ('index', 'trigger') \
                 AND tbl_name = {} AND sql IS NOT NULL AND name <> {} AND name NOT LIKE {} ESCAPE '\\'",
                p.bind(table),
                p.bind(format!("{table}_patient_id")),
                p.bind(format!("{}\\_patient\\_id\\_%", table.replace('_', "\\_")))
            )),
            Dialect::Postgres { .. } => None,
        }
    }
}

/// Double-quoted identifier.
pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Longest accepted resource type (the longest FHIR type has 30 letters); keeps new-rows-table
/// and index names within PostgreSQL's 63-byte identifiers.
const MAX_TYPE_LEN: usize = 40;

/// Table name of a resource type: the type lower-cased (`Observation` → `observation`).
///
/// Fails unless the type is ASCII letters/digits starting with a letter, which every FHIR
/// resource type is; anything else would be an injection or a corrupt input.
pub(crate) fn type_table(resource_type: &str) -> Result<String> {
    let mut chars = resource_type.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric())
        && resource_type.len() <= MAX_TYPE_LEN;
    if ok {
        Ok(resource_type.to_ascii_lowercase())
    } else {
        Err(Error::InvalidResourceType { resource_type: resource_type.to_string() })
    }
}

/// New-rows table of a type table (`observation` → `_fhirsync_new_observation`).
pub(crate) fn new_rows_table(table: &str) -> String {
    format!("{NEW_ROWS_PREFIX}{table}")
}

/// The last 12 letters and digits of a run id, reversed (UUIDv7 ids differ at the end): names
/// the indexes of tables a run creates.
fn run_suffix(run_id: &str) -> String {
    run_id.chars().filter(char::is_ascii_alphanumeric).rev().take(12).collect()
}

/// The table a run builds to replace a type's rows table (SQLite).
pub(crate) fn rebuilt_rows_table(table: &str) -> String {
    format!("{REBUILT_PREFIX}{table}")
}

/// Last-seen table of a type table (SQLite, see [`Dialect::splits_rows`]).
pub(crate) fn last_seen_table(table: &str) -> String {
    format!("{LAST_SEEN_PREFIX}{table}")
}

/// Restaged table of a type table: the rows staged unchanged in the current run (SQLite).
pub(crate) fn restaged_table(table: &str) -> String {
    format!("{RESTAGED_PREFIX}{table}")
}

/// Table name of a view: `view_<name>` lower-cased.
pub(crate) fn view_table(name: &str) -> Result<String> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 58;
    if ok {
        Ok(format!("view_{}", name.to_ascii_lowercase()))
    } else {
        Err(Error::InvalidViewName { name: name.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Identifiers escape double quotes.
    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    /// Resource types become lower-case table names; injection-shaped types are rejected.
    #[test]
    fn type_table_names() {
        assert_eq!(type_table("Observation").unwrap(), "observation");
        assert!(type_table("Observation; DROP TABLE x").is_err());
        assert!(type_table("_fhirsync_runs").is_err());
        assert!(type_table("").is_err());
        assert_eq!(view_table("patient_demographics").unwrap(), "view_patient_demographics");
        assert!(view_table("a-b").is_err());
    }
}
