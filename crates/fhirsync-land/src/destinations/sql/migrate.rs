//! Schema versions of the SQL destinations (what each version is: [`crate::schema_version`]).
//! [`stored_version`] reads the target's version before anything is written and refuses a
//! newer one; [`SqlDestination::migrate`] then brings an older target to
//! [`SQL_SCHEMA_VERSION`] step by step, recording each version reached, and records the
//! current version in a new target.

use super::schema::{self, Dialect, LEGACY_STAGE, ROW_COLUMNS, SCHEMA_VERSION, STAGE_SCOPES, STAGE_TYPES};
use super::{Params, SqlBackend, SqlDestination, count, now};
use crate::schema_version::{FHIRSYNC_VERSION, SQL_SCHEMA_VERSION, UNVERSIONED, refuse_newer};
use crate::{Error, Result};

/// One migration: the version it reaches, and the step (run inside a transaction).
type Migration<S> = (u32, fn(&mut S) -> Result<()>);

/// The target's schema version, read without writing anything: `None` for a target without
/// fhirsync's run table (new), [`UNVERSIONED`] for one written before versions were recorded.
///
/// Fails with [`Error::SchemaTooNew`] for a version above [`SQL_SCHEMA_VERSION`], with
/// [`Error::SchemaVersionUnreadable`] for a version record that is not a number.
pub(crate) fn stored_version<B: SqlBackend>(backend: &mut B) -> Result<Option<u32>> {
    let d = backend.dialect().clone();
    if table_exists(backend, "looking for the schema version table", SCHEMA_VERSION)? {
        let rows = backend.query(
            &format!(
                "SELECT {}, fhirsync_version FROM {} ORDER BY version DESC LIMIT 1",
                d.text("version"),
                d.t(SCHEMA_VERSION)
            ),
            &[],
        )?;
        if let Some(row) = rows.into_iter().next() {
            let mut cells = row.into_iter();
            let (value, written_by) = (cells.next().flatten(), cells.next().flatten());
            let version = value.as_deref().and_then(|v| v.parse().ok()).ok_or_else(|| {
                Error::SchemaVersionUnreadable {
                    destination: backend.describe(),
                    value: value.clone().unwrap_or_else(|| "NULL".into()),
                }
            })?;
            // `fhirsync_version` is NOT NULL; the fallback only words the message.
            let written_by = written_by.as_deref().unwrap_or("of an unknown version");
            refuse_newer(&backend.describe(), version, written_by, SQL_SCHEMA_VERSION)?;
            return Ok(Some(version));
        }
    }
    let has_runs = table_exists(backend, "looking for the runs table", schema::RUNS)?;
    Ok(has_runs.then_some(UNVERSIONED))
}

/// Whether the destination has a table named `name`; `what` names the look-up.
fn table_exists<B: SqlBackend>(backend: &mut B, what: &'static str, name: &str) -> Result<bool> {
    let d = backend.dialect().clone();
    let mut p = Params::new(&d);
    let sql = d.table_count_sql(name, &mut p);
    Ok(count(backend, what, &sql, p.values())? > 0)
}

impl<B: SqlBackend> SqlDestination<B> {
    /// The migrations, in order: the version each reaches and its step.
    fn migrations() -> [Migration<Self>; 1] {
        [(2, Self::migrate_to_v2)]
    }

    /// Brings a target found at `found` ([`stored_version`], read before the bookkeeping DDL)
    /// to [`SQL_SCHEMA_VERSION`]: each migration in its own transaction, with the row of the
    /// version it reaches. A new target (`None`) records the current version.
    pub(super) fn migrate(&mut self, found: Option<u32>) -> Result<()> {
        let Some(from) = found else {
            return self.in_transaction(|this| this.record_version(SQL_SCHEMA_VERSION));
        };
        for (to, step) in Self::migrations().into_iter().filter(|(to, _)| *to > from) {
            self.in_transaction(|this| {
                step(this)?;
                this.record_version(to)
            })?;
            tracing::info!(from, to, "Migrated the target's schema.");
        }
        Ok(())
    }

    /// Records that the target reached `version`, in the open transaction.
    fn record_version(&mut self, version: u32) -> Result<()> {
        let d = self.d().clone();
        self.backend.batch(&d.schema_version_ddl())?;
        let mut p = Params::new(&d);
        let sql = format!(
            "INSERT INTO {} (version, applied_at, fhirsync_version) VALUES ({}, {}, {}) ON CONFLICT DO NOTHING",
            d.t(SCHEMA_VERSION),
            p.bind(i64::from(version)),
            p.bind_time(Some(&now())),
            p.bind(FHIRSYNC_VERSION)
        );
        self.backend.execute(&sql, p.values())?;
        Ok(())
    }

    /// 1 → 2: an unfinished run staged in an earlier layout (the single `_fhirsync_stage`
    /// table, PostgreSQL new-rows tables not named per run or keyed) cannot be resumed, so it is
    /// abandoned and its staging dropped; SQLite type tables move to the split layout.
    fn migrate_to_v2(&mut self) -> Result<()> {
        self.drop_legacy_stage()?;
        self.split_legacy_tables()?;
        self.abandon_legacy_new_rows_tables()
    }

    /// Early versions staged every type in one `_fhirsync_stage` table. Its unfinished run
    /// cannot be resumed by this version (its completed scopes would have no rows), so the run
    /// is abandoned and the table dropped; the landed tables are untouched.
    fn drop_legacy_stage(&mut self) -> Result<()> {
        let d = self.d().clone();
        if !table_exists(&mut self.backend, "looking for the legacy staging table", LEGACY_STAGE)? {
            return Ok(());
        }
        tracing::warn!(
            "Abandoning an unfinished run staged by an earlier fhirsync version; the next run starts afresh."
        );
        self.abandon_unfinished()?;
        self.backend.batch(&format!("DELETE FROM {}; DROP TABLE {};", d.t(STAGE_SCOPES), d.t(LEGACY_STAGE)))
    }

    /// Earlier versions kept each type's rows, with `last_seen_run`, in the type table itself.
    /// Where the backend splits rows ([`Dialect::splits_rows`]), such a table's rows move to the
    /// split layout, keeping their row ids, and its name becomes the view. An unfinished run
    /// staged in the old layout cannot be resumed, so it is abandoned.
    fn split_legacy_tables(&mut self) -> Result<()> {
        let d = self.d().clone();
        if !d.splits_rows() {
            return Ok(());
        }
        let mut abandoned = false;
        for (_, table) in self.registered_types()? {
            if !table_exists(&mut self.backend, "looking for a type table", &table)? {
                continue;
            }
            if self.has_user_objects(&table)? {
                return Err(Error::UpgradeBlocked { table });
            }
            if !std::mem::replace(&mut abandoned, true) {
                self.abandon_unfinished()?;
                self.clear_staging()?;
            }
            let old = format!("_fhirsync_old_{table}");
            // Legacy rename: user views naming the table are left as they are and resolve to
            // the type's view by name.
            self.backend.batch(&format!(
                "PRAGMA legacy_alter_table = ON; ALTER TABLE {t} RENAME TO {old_q}; PRAGMA legacy_alter_table = OFF;\n\
                 {ddl}\
                 INSERT INTO {rows} (_row, {ROW_COLUMNS}) SELECT rowid, {ROW_COLUMNS} FROM {old_t};\n\
                 INSERT INTO {last_seen} (_row, last_seen_run) SELECT rowid, last_seen_run FROM {old_t};\n\
                 DROP TABLE {old_t};",
                t = d.t(&table),
                old_q = schema::quote_ident(&old),
                ddl = d.type_ddl(&table),
                rows = d.t(&d.rows_table(&table)),
                last_seen = d.t(&schema::last_seen_table(&table)),
                old_t = d.t(&old),
            ))?;
            tracing::info!(table = %table, "Moved a type table to the split layout.");
        }
        Ok(())
    }

    /// PostgreSQL new-rows tables of version 1 were named without their run, or keyed instead of
    /// append-only (no `_seq` copy number). The latest unfinished run's staging is resumable
    /// only if every registered new-rows table is the append-only one named for it; otherwise its
    /// staged rows would be missed, so the run is abandoned and its staging dropped.
    fn abandon_legacy_new_rows_tables(&mut self) -> Result<()> {
        let d = self.d().clone();
        let Dialect::Postgres { schema: pg_schema } = &d else { return Ok(()) };
        let latest = self.latest_unfinished()?.map(|(run_id, _)| run_id);
        let staged = self
            .backend
            .query(&format!("SELECT resource_type, table_name FROM {}", d.t(STAGE_TYPES)), &[])?;
        let mut resumable = true;
        for row in staged {
            let mut cells = row.into_iter().flatten();
            let (Some(resource_type), Some(new_rows)) = (cells.next(), cells.next()) else { continue };
            let table = schema::type_table(&resource_type)?;
            let named = latest.as_deref().is_some_and(|run_id| d.new_rows_name(&table, run_id) == new_rows);
            let mut p = Params::new(&d);
            let copy_numbers = format!(
                "SELECT CAST(count(*) AS TEXT) FROM information_schema.columns WHERE table_schema = {} \
                 AND table_name = {} AND column_name = {}",
                p.bind(pg_schema),
                p.bind(&new_rows),
                p.bind(schema::COPY_SEQ)
            );
            if !named
                || self.count("looking for the copy numbers of a new-rows table", &copy_numbers, &p)? != 1
            {
                resumable = false;
                break;
            }
        }
        if !resumable {
            tracing::warn!(
                "The unfinished run was staged by an earlier fhirsync version; the next run starts afresh."
            );
            self.abandon_unfinished()?;
            self.clear_staging()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destinations::sqlite::SqliteBackend;

    /// The last migration reaches the version this fhirsync writes, and they are in order.
    #[test]
    fn migrations_end_at_the_current_version() {
        let versions: Vec<u32> =
            SqlDestination::<SqliteBackend>::migrations().iter().map(|(to, _)| *to).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        assert_eq!(versions.last(), Some(&SQL_SCHEMA_VERSION));
        assert!(versions[0] > UNVERSIONED);
    }
}
