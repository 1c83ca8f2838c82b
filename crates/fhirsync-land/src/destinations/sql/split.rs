//! The commit of one resource type in SQLite's split layout ([`Dialect::splits_rows`]): rows
//! in `_fhirsync_rows_<type>`, their `last_seen_run` in `_fhirsync_seen_<type>`.
//!
//! Staging left the new and changed rows in the shadow (every row, in a full load) and the
//! `_row` of every row staged unchanged in the re-read table. The commit:
//! 1. writes the `I`/`U` change records, and merges the shadow into the rows table: in place,
//!    or, when the updates are spread over it, by swapping in the copy
//!    [`SqlDestination::prebuild_rows`] wrote before the commit. When the rows table is empty
//!    or replaced by a full load, the shadow itself is swapped in (every row then new: none is
//!    left to delete or keep);
//! 2. adds the shadow's rows to the re-read table, which then lists every row re-read;
//! 3. finds the rows not re-read (skipped when [`SqlDestination::all_reread`] shows there are
//!    none), writes their `D` records and deletes the deletable ones;
//! 4. turns the re-read table into the new seen table: `ALTER TABLE ... ADD COLUMN
//!    last_seen_run ... DEFAULT <run>` gives every row this run without rewriting it (SQLite
//!    reads the default for rows stored without the column); rows kept unread are copied in
//!    with their old `last_seen_run`; then drop and rename.
//!
//! An unchanged reload so writes no row of the rows table, only the narrow re-read table.
//!
//! [`Dialect::splits_rows`]: super::schema::Dialect::splits_rows

use super::commit::{Counts, Ctx};
use super::params::run_id_default;
use super::schema::{
    ROW_COLUMNS, UPSERT, next_rows_table, reread_table, seen_table, shadow_table, type_table,
};
use super::{Params, SqlBackend, SqlDestination};
use crate::Result;
use crate::config::Method;
use crate::destination::RunMetrics;

/// The tables of one resource type in the split layout, quoted (`rows_name` unquoted).
struct SplitTables {
    rows_name: String,
    rows: String,
    shadow: String,
    reread: String,
    seen: String,
}

impl SplitTables {
    fn new(d: &super::schema::Dialect, table: &str) -> Self {
        let rows_name = d.rows_table(table);
        SplitTables {
            rows: d.t(&rows_name),
            rows_name,
            shadow: d.t(&shadow_table(table)),
            reread: d.t(&reread_table(table)),
            seen: d.t(&seen_table(table)),
        }
    }
}

impl<B: SqlBackend> SqlDestination<B> {
    /// Applies one resource type in the split layout; see the module docs.
    pub(super) fn apply_split_type(
        &mut self,
        ctx: &Ctx,
        resource_type: &str,
        table: &str,
        has_shadow: bool,
        m: &mut RunMetrics,
    ) -> Result<()> {
        let d = self.d().clone();
        if !has_shadow {
            // Nothing staged: empty staging tables let the same statements find the deletes.
            self.backend.batch(&d.shadow_table_ddl(table, &ctx.run_id)?)?;
        }
        let tables = SplitTables::new(&d, table);
        let full_load = ctx.method == Method::FullLoad;
        let before = self.count_rows("counting landed rows", &tables.rows)?;
        let shadowed = self.count_rows("counting staged rows", &tables.shadow)?;
        let staged = self.split_staged_keys(&tables, shadowed)?;
        let all_reread = !full_load && has_shadow && self.all_reread(resource_type, table, staged, before)?;
        if ctx.compare {
            self.write_changes(ctx, resource_type, &tables.shadow)?;
        }
        // 1. The shadow's rows into the rows table; 2. the re-read table lists every row re-read.
        // `replaced`: every row is new, none was re-read and none is left to delete or keep.
        let replaced = full_load || before == 0;
        let swap = replaced && !self.has_user_objects(&tables.rows_name)?;
        match swap {
            true => {
                self.backend.batch(&d.replace_table_sql(&tables.rows_name, &shadow_table(table)))?;
                let sql = format!("INSERT INTO {} (_row) SELECT _row FROM {}", tables.reread, tables.rows);
                self.backend.execute(&sql, &[])?;
            }
            false => self.merge_split_rows(resource_type, table, &tables, full_load, shadowed)?,
        }
        let after = match swap {
            true => shadowed,
            false => self.count_rows("counting landed rows", &tables.rows)?,
        };
        // 3. Rows not re-read: change records, deletes and counts.
        let counts = match replaced {
            true => Counts { inserted: after, ..Counts::default() },
            false => {
                self.split_not_reread(ctx, resource_type, &tables, all_reread, [before, staged, after])?
            }
        };
        if ctx.history {
            let staged_rows = match replaced {
                true => format!("{} s", tables.rows),
                false => format!("{} s JOIN {} r ON r._row = s._row", tables.rows, tables.reread),
            };
            self.write_history(ctx, resource_type, &staged_rows)?;
        }
        // 4. The re-read table becomes the seen table.
        self.renew_seen(ctx, table, &tables, !replaced && !all_reread)?;
        counts.add_to(m, staged, ctx.compare);
        Ok(())
    }

    /// Keys staged: the re-read rows, and the shadow's keys (`shadowed` rows) not among them.
    fn split_staged_keys(&mut self, tables: &SplitTables, shadowed: u64) -> Result<u64> {
        let SplitTables { rows, shadow, reread, .. } = tables;
        let mut staged = self.count_rows("counting re-read rows", reread)?;
        if shadowed > 0 {
            let d = self.d().clone();
            let sql = format!(
                "SELECT {} FROM {shadow} s WHERE NOT EXISTS (SELECT 1 FROM {rows} t JOIN {reread} r \
                 ON r._row = t._row WHERE t.fhir_version = s.fhir_version AND t.id = s.id)",
                d.text("count(*)")
            );
            staged += self.count("counting staged keys", &sql, &Params::new(&d))?;
        }
        Ok(staged)
    }

    /// Merges the shadow (`shadowed` rows) into the rows table that was not swapped out (a full
    /// load empties it first): by swapping in the rows table rewritten ahead of the commit when
    /// it is still current, else in place; the re-read table then lists every row re-read.
    fn merge_split_rows(
        &mut self,
        resource_type: &str,
        table: &str,
        tables: &SplitTables,
        full_load: bool,
        shadowed: u64,
    ) -> Result<()> {
        let SplitTables { rows, shadow, reread, .. } = tables;
        if full_load {
            self.backend.execute(&format!("DELETE FROM {rows}"), &[])?;
        }
        if shadowed > 0 {
            let prebuilt = self.prebuilt.get(resource_type).cloned();
            match prebuilt {
                Some(p) if !full_load && self.prebuilt_current(table, &p)? => self.swap_in_prebuilt(table)?,
                _ => {
                    // `WHERE TRUE`: SQLite would read `ON CONFLICT` as a join constraint without it.
                    let sql = format!(
                        "INSERT INTO {rows} ({ROW_COLUMNS}) SELECT {ROW_COLUMNS} FROM {shadow} WHERE TRUE {UPSERT}"
                    );
                    self.backend.execute(&sql, &[])?;
                }
            }
            let sql = format!(
                "INSERT INTO {reread} (_row) SELECT t._row FROM {shadow} s JOIN {rows} t \
                 ON t.fhir_version = s.fhir_version AND t.id = s.id WHERE TRUE ON CONFLICT DO NOTHING"
            );
            self.backend.execute(&sql, &[])?;
        }
        self.backend.batch(&format!("DROP TABLE {shadow}"))
    }

    /// The rows not re-read (none when `all_reread`) of a rows table that had `before` rows,
    /// had `staged` keys staged and holds `after` rows after the merge: their `D` records,
    /// the deletes of the deletable ones, and the counts.
    fn split_not_reread(
        &mut self,
        ctx: &Ctx,
        resource_type: &str,
        tables: &SplitTables,
        all_reread: bool,
        [before, staged, after]: [u64; 3],
    ) -> Result<Counts> {
        let (rows, reread) = (&tables.rows, &tables.reread);
        let not_reread = format!("NOT EXISTS (SELECT 1 FROM {reread} r WHERE r._row = t._row)");
        let deletable = self.deletable(ctx);
        let (not_staged, gone) = match all_reread {
            true => (0, 0),
            false if ctx.compare => {
                let gone = self.write_deletes(ctx, resource_type, rows, &deletable.after(&not_reread))?;
                (after.saturating_sub(staged), gone)
            }
            false => self.not_reread(rows, &not_reread, &deletable)?,
        };
        if gone > 0 {
            let goes = deletable.after(&not_reread);
            self.backend
                .execute(&format!("DELETE FROM {rows} AS t WHERE {}", goes.sql), goes.params.values())?;
        }
        let (inserted, updated) = match ctx.compare {
            true => self.inserted_updated(ctx, resource_type)?,
            false => (after.saturating_sub(before), 0),
        };
        Ok(Counts { inserted, updated, gone, kept: not_staged.saturating_sub(gone) })
    }

    /// Turns the re-read table into the seen table: `ADD COLUMN ... DEFAULT <run>` gives every
    /// row this run without rewriting it; with `keep_unread`, the rows kept unread are copied
    /// in with their old `last_seen_run`; then it replaces the seen table.
    fn renew_seen(&mut self, ctx: &Ctx, table: &str, tables: &SplitTables, keep_unread: bool) -> Result<()> {
        let d = self.d().clone();
        let SplitTables { rows, reread, seen, .. } = tables;
        self.backend.batch(&format!(
            "ALTER TABLE {reread} ADD COLUMN last_seen_run TEXT NOT NULL DEFAULT {}",
            run_id_default(&ctx.run_id)?
        ))?;
        if keep_unread {
            let sql = format!(
                "INSERT INTO {reread} (_row, last_seen_run) SELECT o._row, o.last_seen_run FROM {seen} o \
                 WHERE EXISTS (SELECT 1 FROM {rows} t WHERE t._row = o._row) \
                 AND NOT EXISTS (SELECT 1 FROM {reread} r WHERE r._row = o._row)"
            );
            self.backend.execute(&sql, &[])?;
        }
        self.backend.batch(&d.replace_table_sql(&seen_table(table), &reread_table(table)))
    }

    /// Runs before the commit transaction. Updating rows spread over a rows table rewrites
    /// nearly every page (SQLite writes a whole page, to the WAL and again at its checkpoint,
    /// for any change to it); in the one commit transaction that write is measured twice as
    /// costly as writing the table anew in checkpointed steps. So, for each staged type whose
    /// shadow updates at least 1 landed row in [`REBUILD_DIVISOR`], this writes the rows table
    /// with the shadow's content in place of the landed one into `_fhirsync_next_<type>`, in
    /// transactions of `chunk` rows (readers never see that table), and notes the rows table's
    /// state when it began. The commit swaps it in if the rows table is still in that state.
    pub(super) fn prebuild_rows(&mut self, run_id: &str, chunk: usize) -> Result<()> {
        self.prebuilt.clear();
        let staged = self.staged_types()?;
        for resource_type in staged {
            if !self.tables.contains(&resource_type) {
                continue;
            }
            let table = type_table(&resource_type)?;
            if let Some(state) = self.prebuild_type(&table, run_id, chunk)? {
                self.prebuilt.insert(resource_type, state);
            }
        }
        Ok(())
    }

    /// [`SqlDestination::prebuild_rows`] of type table `table`, if its shadow updates enough
    /// of its rows; returns the rows table's state when the copy began.
    fn prebuild_type(&mut self, table: &str, run_id: &str, chunk: usize) -> Result<Option<Prebuilt>> {
        let d = self.d().clone();
        let rows_name = d.rows_table(table);
        let (rows, shadow) = (d.t(&rows_name), d.t(&shadow_table(table)));
        let before = self.count_rows("counting landed rows", &rows)?;
        let sql = format!(
            "SELECT {} FROM {shadow} s WHERE EXISTS (SELECT 1 FROM {rows} t \
             WHERE t.fhir_version = s.fhir_version AND t.id = s.id)",
            d.text("count(*)")
        );
        let updated = self.count("counting updated rows", &sql, &Params::new(&d))?;
        if before == 0 || updated * REBUILD_DIVISOR < before || self.has_user_objects(&rows_name)? {
            return Ok(None);
        }
        let state = Prebuilt { rows: before, last_row: self.last_row(table)? };
        let (next, ddl) = (d.t(&next_rows_table(table)), d.next_rows_ddl(table, run_id));
        self.in_transaction(|this| this.backend.batch(&format!("DROP TABLE IF EXISTS {next}; {ddl}")))?;
        self.copy_rows_ahead(&rows, &shadow, &next, chunk)?;
        tracing::debug!(table = %table, rows = before, updated, "Rows table rewritten ahead of the commit.");
        Ok(Some(state))
    }

    /// Copies rows table `rows` into `next`, each row with the shadow's content where it holds
    /// the key, in `_row` order and transactions of `chunk` rows (all quoted).
    fn copy_rows_ahead(&mut self, rows: &str, shadow: &str, next: &str, chunk: usize) -> Result<()> {
        let d = self.d().clone();
        // The shadow's value where it holds the key, else the landed one.
        let pick = |c: &str| format!("CASE WHEN s.id IS NULL THEN t.{c} ELSE s.{c} END");
        let copy = format!(
            "INSERT INTO {next} (_row, {ROW_COLUMNS}) SELECT t._row, t.id, {patient}, t.fhir_version, {source}, \
             {dataset}, {hash}, {resource}, t.first_seen_run FROM {rows} t LEFT JOIN {shadow} s \
             ON s.fhir_version = t.fhir_version AND s.id = t.id",
            patient = pick("patient_id"),
            source = pick("source"),
            dataset = pick("dataset"),
            hash = pick("content_hash"),
            resource = pick("resource"),
        );
        let mut after: Option<u64> = None;
        loop {
            let mut p = Params::new(&d);
            let from = after.map_or(String::new(), |r| format!("WHERE t._row > {}", p.bind(r)));
            let sql = format!("{copy} {from} ORDER BY t._row LIMIT {}", p.bind(chunk as u64));
            let copied = self.in_transaction(|this| this.backend.execute(&sql, p.values()))?;
            if copied == 0 {
                return Ok(());
            }
            let last = format!("SELECT {} FROM {next}", d.text("max(_row)"));
            after = Some(self.count("finding the last copied row", &last, &Params::new(&d))?);
        }
    }

    /// Whether type `table`'s rows table is still as it was when [`SqlDestination::prebuild_rows`]
    /// began copying it (row count and last row), and the copy is whole.
    fn prebuilt_current(&mut self, table: &str, prebuilt: &Prebuilt) -> Result<bool> {
        let d = self.d().clone();
        let rows = self.count_rows("counting landed rows", &d.t(&d.rows_table(table)))?;
        let copied = self.count_rows("counting copied rows", &d.t(&next_rows_table(table)))?;
        Ok(rows == prebuilt.rows && copied == rows && self.last_row(table)? == prebuilt.last_row)
    }

    /// Adds the shadow's new keys to the prebuilt rows table and swaps it in for the rows table.
    fn swap_in_prebuilt(&mut self, table: &str) -> Result<()> {
        let d = self.d().clone();
        let rows_name = d.rows_table(table);
        let (rows, shadow, next) = (d.t(&rows_name), d.t(&shadow_table(table)), d.t(&next_rows_table(table)));
        self.backend.batch(&format!(
            "INSERT INTO {next} ({ROW_COLUMNS}) SELECT {ROW_COLUMNS} FROM {shadow} s WHERE NOT EXISTS \
               (SELECT 1 FROM {rows} t WHERE t.fhir_version = s.fhir_version AND t.id = s.id) ORDER BY s._row;\n\
             {replace}",
            replace = d.replace_table_sql(&rows_name, &next_rows_table(table)),
        ))
    }
}

/// A rows table's state when [`SqlDestination::prebuild_rows`] began copying it.
#[derive(Debug, Clone)]
pub(super) struct Prebuilt {
    /// Its row count.
    rows: u64,
    /// Its [`super::schema::Dialect::last_row_sql`].
    last_row: Option<String>,
}

/// A rows table is rewritten ahead of the commit rather than updated in place when at least
/// 1 row in this many is updated: with ~45 rows of ~1.3 KB on a 64 KiB page, 1 row in 50
/// already touches more than half of the pages.
const REBUILD_DIVISOR: u64 = 50;
