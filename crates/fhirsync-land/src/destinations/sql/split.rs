//! The commit of one resource type in SQLite's split layout ([`Dialect::splits_rows`]): rows in
//! `_fhirsync_rows_<type>`, their `last_seen_run` in `_fhirsync_seen_<type>`.
//!
//! Staging left the new and changed rows in the new-rows table (every row, in a full load) and the
//! `_row` of every row staged unchanged in the restaged table. The commit:
//! 1. writes the `I`/`U` change records, and merges the new-rows table into the rows table: in
//!    place, or, when the updates are spread over it, by swapping in the copy
//!    [`SqlDestination::rebuild_rows_ahead`] wrote before the commit. When the rows table is empty
//!    or replaced by a full load, the new-rows table itself is swapped in (every row then new: none
//!    is left to delete or keep);
//! 2. adds the new-rows table's rows to the restaged table, which then lists every row staged
//!    again;
//! 3. finds the rows not staged again (skipped when [`SqlDestination::all_restaged`] shows there
//!    are none), writes their `D` records and deletes the deletable ones;
//! 4. turns the restaged table into the new last-seen table: `ALTER TABLE ... ADD COLUMN
//!    last_seen_run ... DEFAULT <run>` gives every row this run without rewriting it (SQLite reads
//!    the default for rows stored without the column); rows kept unread are copied in with their
//!    old `last_seen_run`; then drop and rename.
//!
//! An unchanged reload so writes no row of the rows table, only the narrow restaged table.
//!
//! [`Dialect::splits_rows`]: super::schema::Dialect::splits_rows

use super::commit::{Counts, Ctx};
use super::params::run_id_default;
use super::schema::{
    ROW_COLUMNS, UPSERT, last_seen_table, new_rows_table, rebuilt_rows_table, restaged_table, type_table,
};
use super::{Params, SqlBackend, SqlDestination};
use crate::Result;
use crate::config::Method;
use crate::destination::RunMetrics;

/// The tables of one resource type in the split layout, quoted (`rows_name` unquoted).
struct SplitTables {
    rows_name: String,
    rows: String,
    new_rows: String,
    restaged: String,
    last_seen: String,
}

impl SplitTables {
    fn new(d: &super::schema::Dialect, table: &str) -> Self {
        let rows_name = d.rows_table(table);
        SplitTables {
            rows: d.t(&rows_name),
            rows_name,
            new_rows: d.t(&new_rows_table(table)),
            restaged: d.t(&restaged_table(table)),
            last_seen: d.t(&last_seen_table(table)),
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
        has_new_rows: bool,
        m: &mut RunMetrics,
    ) -> Result<()> {
        let d = self.d().clone();
        if !has_new_rows {
            // Nothing staged: empty staging tables let the same statements find the deletes.
            self.backend.batch(&d.new_rows_ddl(table, &ctx.run_id)?)?;
        }
        let tables = SplitTables::new(&d, table);
        let full_load = ctx.method == Method::FullLoad;
        let before = self.count_rows("counting landed rows", &tables.rows)?;
        let written = self.count_rows("counting staged rows", &tables.new_rows)?;
        let staged = self.split_staged_keys(&tables, written)?;
        let all_restaged =
            !full_load && has_new_rows && self.all_restaged(resource_type, table, staged, before)?;
        if ctx.compare {
            self.write_changes(ctx, resource_type, &tables.new_rows)?;
        }
        // 1. The new-rows table's rows into the rows table; 2. the restaged table lists every row
        //    staged again.
        // `replaced`: every row is new, none was staged again and none is left to delete or keep.
        let replaced = full_load || before == 0;
        let swap = replaced && !self.has_user_objects(&tables.rows_name)?;
        match swap {
            true => {
                self.backend.batch(&d.replace_table_sql(&tables.rows_name, &new_rows_table(table)))?;
                let sql = format!("INSERT INTO {} (_row) SELECT _row FROM {}", tables.restaged, tables.rows);
                self.backend.execute(&sql, &[])?;
            }
            false => self.merge_split_rows(resource_type, table, &tables, full_load, written)?,
        }
        let after = match swap {
            true => written,
            false => self.count_rows("counting landed rows", &tables.rows)?,
        };
        // 3. Rows not staged again: change records, deletes and counts.
        let counts = match replaced {
            true => Counts { inserted: after, ..Counts::default() },
            false => {
                self.split_not_restaged(ctx, resource_type, &tables, all_restaged, [before, staged, after])?
            }
        };
        if ctx.history {
            let staged_rows = match replaced {
                true => format!("{} s", tables.rows),
                false => format!("{} s JOIN {} r ON r._row = s._row", tables.rows, tables.restaged),
            };
            self.write_history(ctx, resource_type, &staged_rows)?;
        }
        // 4. The restaged table becomes the last-seen table.
        self.renew_last_seen(ctx, table, &tables, !replaced && !all_restaged)?;
        counts.add_to(m, staged, ctx.compare);
        Ok(())
    }

    /// Keys staged: the restaged rows, and the new-rows table's keys (`written` rows) not among
    /// them.
    fn split_staged_keys(&mut self, tables: &SplitTables, written: u64) -> Result<u64> {
        let SplitTables { rows, new_rows, restaged, .. } = tables;
        let mut staged = self.count_rows("counting restaged rows", restaged)?;
        if written > 0 {
            let d = self.d().clone();
            let sql = format!(
                "SELECT {} FROM {new_rows} s WHERE NOT EXISTS (SELECT 1 FROM {rows} t JOIN {restaged} r \
                 ON r._row = t._row WHERE t.fhir_version = s.fhir_version AND t.id = s.id)",
                d.text("count(*)")
            );
            staged += self.count("counting staged keys", &sql, &Params::new(&d))?;
        }
        Ok(staged)
    }

    /// Merges the new-rows table (`written` rows) into the rows table that was not swapped out (a
    /// full load empties it first): by swapping in the rows table rewritten ahead of the commit
    /// when it is still current, else in place; the restaged table then lists every row staged
    /// again.
    fn merge_split_rows(
        &mut self,
        resource_type: &str,
        table: &str,
        tables: &SplitTables,
        full_load: bool,
        written: u64,
    ) -> Result<()> {
        let SplitTables { rows, new_rows, restaged, .. } = tables;
        if full_load {
            self.backend.execute(&format!("DELETE FROM {rows}"), &[])?;
        }
        if written > 0 {
            let rebuilt = self.rebuilt.get(resource_type).cloned();
            match rebuilt {
                Some(p) if !full_load && self.rebuild_still_current(table, &p)? => {
                    self.swap_in_rebuilt(table)?
                }
                _ => {
                    // `WHERE TRUE`: SQLite would read `ON CONFLICT` as a join constraint without
                    // it.
                    let sql = format!(
                        "INSERT INTO {rows} ({ROW_COLUMNS}) SELECT {ROW_COLUMNS} FROM {new_rows} WHERE TRUE {UPSERT}"
                    );
                    self.backend.execute(&sql, &[])?;
                }
            }
            let sql = format!(
                "INSERT INTO {restaged} (_row) SELECT t._row FROM {new_rows} s JOIN {rows} t \
                 ON t.fhir_version = s.fhir_version AND t.id = s.id WHERE TRUE ON CONFLICT DO NOTHING"
            );
            self.backend.execute(&sql, &[])?;
        }
        self.backend.batch(&format!("DROP TABLE {new_rows}"))
    }

    /// The rows not staged again (none when `all_restaged`) of a rows table that had `before` rows,
    /// had `staged` keys staged and holds `after` rows after the merge: their `D` records,
    /// the deletes of the deletable ones, and the counts.
    fn split_not_restaged(
        &mut self,
        ctx: &Ctx,
        resource_type: &str,
        tables: &SplitTables,
        all_restaged: bool,
        [before, staged, after]: [u64; 3],
    ) -> Result<Counts> {
        let (rows, restaged) = (&tables.rows, &tables.restaged);
        let not_restaged = format!("NOT EXISTS (SELECT 1 FROM {restaged} r WHERE r._row = t._row)");
        let deletable = self.deletable(ctx);
        let (not_staged, gone) = match all_restaged {
            true => (0, 0),
            false if ctx.compare => {
                let gone = self.write_deletes(ctx, resource_type, rows, &deletable.after(&not_restaged))?;
                (after.saturating_sub(staged), gone)
            }
            false => self.not_restaged(rows, &not_restaged, &deletable)?,
        };
        if gone > 0 {
            let goes = deletable.after(&not_restaged);
            self.backend
                .execute(&format!("DELETE FROM {rows} AS t WHERE {}", goes.sql), goes.params.values())?;
        }
        let (inserted, updated) = match ctx.compare {
            true => self.inserted_updated(ctx, resource_type)?,
            false => (after.saturating_sub(before), 0),
        };
        Ok(Counts { inserted, updated, gone, kept: not_staged.saturating_sub(gone) })
    }

    /// Turns the restaged table into the last-seen table: `ADD COLUMN ... DEFAULT <run>` gives
    /// every row this run without rewriting it; with `keep_unread`, the rows kept unread are copied
    /// in with their old `last_seen_run`; then it replaces the last-seen table.
    fn renew_last_seen(
        &mut self,
        ctx: &Ctx,
        table: &str,
        tables: &SplitTables,
        keep_unread: bool,
    ) -> Result<()> {
        let d = self.d().clone();
        let SplitTables { rows, restaged, last_seen, .. } = tables;
        self.backend.batch(&format!(
            "ALTER TABLE {restaged} ADD COLUMN last_seen_run TEXT NOT NULL DEFAULT {}",
            run_id_default(&ctx.run_id)?
        ))?;
        if keep_unread {
            let sql = format!(
                "INSERT INTO {restaged} (_row, last_seen_run) SELECT o._row, o.last_seen_run FROM {last_seen} o \
                 WHERE EXISTS (SELECT 1 FROM {rows} t WHERE t._row = o._row) \
                 AND NOT EXISTS (SELECT 1 FROM {restaged} r WHERE r._row = o._row)"
            );
            self.backend.execute(&sql, &[])?;
        }
        self.backend.batch(&d.replace_table_sql(&last_seen_table(table), &restaged_table(table)))
    }

    /// Runs before the commit transaction. Updating rows spread over a rows table rewrites nearly
    /// every page (SQLite writes a whole page, to the WAL and again at its checkpoint, for any
    /// change to it); in the one commit transaction that write is measured twice as costly as
    /// writing the table anew in checkpointed steps. So, for each staged type whose new-rows table
    /// updates at least 1 landed row in [`REBUILD_DIVISOR`], this writes the rows table with the
    /// new-rows table's content in place of the landed one into `_fhirsync_next_<type>`, in
    /// transactions of `chunk` rows (readers never see that table), and notes the rows table's
    /// state when it began. The commit swaps it in if the rows table is still in that state.
    pub(super) fn rebuild_rows_ahead(&mut self, run_id: &str, chunk: usize) -> Result<()> {
        self.rebuilt.clear();
        let staged = self.staged_types()?;
        for resource_type in staged {
            if !self.tables.contains(&resource_type) {
                continue;
            }
            let table = type_table(&resource_type)?;
            if let Some(state) = self.rebuild_type_ahead(&table, run_id, chunk)? {
                self.rebuilt.insert(resource_type, state);
            }
        }
        Ok(())
    }

    /// [`SqlDestination::rebuild_rows_ahead`] of type table `table`, if its new-rows table updates
    /// enough of its rows; returns the rows table's state when the copy began.
    fn rebuild_type_ahead(
        &mut self,
        table: &str,
        run_id: &str,
        chunk: usize,
    ) -> Result<Option<RebuildStart>> {
        let d = self.d().clone();
        let rows_name = d.rows_table(table);
        let (rows, new_rows) = (d.t(&rows_name), d.t(&new_rows_table(table)));
        let before = self.count_rows("counting landed rows", &rows)?;
        let sql = format!(
            "SELECT {} FROM {new_rows} s WHERE EXISTS (SELECT 1 FROM {rows} t \
             WHERE t.fhir_version = s.fhir_version AND t.id = s.id)",
            d.text("count(*)")
        );
        let updated = self.count("counting updated rows", &sql, &Params::new(&d))?;
        if before == 0 || updated * REBUILD_DIVISOR < before || self.has_user_objects(&rows_name)? {
            return Ok(None);
        }
        let state = RebuildStart { rows: before, last_row: self.last_row(table)? };
        let (rebuilt, ddl) = (d.t(&rebuilt_rows_table(table)), d.rebuilt_rows_ddl(table, run_id));
        self.in_transaction(|this| this.backend.batch(&format!("DROP TABLE IF EXISTS {rebuilt}; {ddl}")))?;
        self.copy_rows_ahead(&rows, &new_rows, &rebuilt, chunk)?;
        tracing::debug!(table = %table, rows = before, updated, "Rows table rewritten ahead of the commit.");
        Ok(Some(state))
    }

    /// Copies rows table `rows` into `rebuilt`, each row with the new-rows table's content where it
    /// holds the key, in `_row` order and transactions of `chunk` rows (all quoted).
    fn copy_rows_ahead(&mut self, rows: &str, new_rows: &str, rebuilt: &str, chunk: usize) -> Result<()> {
        let d = self.d().clone();
        // The new-rows table's value where it holds the key, else the landed one.
        let pick = |c: &str| format!("CASE WHEN s.id IS NULL THEN t.{c} ELSE s.{c} END");
        let copy = format!(
            "INSERT INTO {rebuilt} (_row, {ROW_COLUMNS}) SELECT t._row, t.id, {patient}, t.fhir_version, {source}, \
             {dataset}, {hash}, {resource}, t.first_seen_run FROM {rows} t LEFT JOIN {new_rows} s \
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
            let last = format!("SELECT {} FROM {rebuilt}", d.text("max(_row)"));
            after = Some(self.count("finding the last copied row", &last, &Params::new(&d))?);
        }
    }

    /// Whether type `table`'s rows table is still as it was when
    /// [`SqlDestination::rebuild_rows_ahead`] began copying it (row count and last row), and the
    /// copy is whole.
    fn rebuild_still_current(&mut self, table: &str, rebuilt: &RebuildStart) -> Result<bool> {
        let d = self.d().clone();
        let rows = self.count_rows("counting landed rows", &d.t(&d.rows_table(table)))?;
        let copied = self.count_rows("counting copied rows", &d.t(&rebuilt_rows_table(table)))?;
        Ok(rows == rebuilt.rows && copied == rows && self.last_row(table)? == rebuilt.last_row)
    }

    /// Adds the new-rows table's new keys to the rebuilt rows table and swaps it in for the rows
    /// table.
    fn swap_in_rebuilt(&mut self, table: &str) -> Result<()> {
        let d = self.d().clone();
        let rows_name = d.rows_table(table);
        let (rows, new_rows, rebuilt) =
            (d.t(&rows_name), d.t(&new_rows_table(table)), d.t(&rebuilt_rows_table(table)));
        self.backend.batch(&format!(
            "INSERT INTO {rebuilt} ({ROW_COLUMNS}) SELECT {ROW_COLUMNS} FROM {new_rows} s WHERE NOT EXISTS \
               (SELECT 1 FROM {rows} t WHERE t.fhir_version = s.fhir_version AND t.id = s.id) ORDER BY s._row;\n\
             {replace}",
            replace = d.replace_table_sql(&rows_name, &rebuilt_rows_table(table)),
        ))
    }
}

/// A rows table's state when [`SqlDestination::rebuild_rows_ahead`] began copying it.
#[derive(Debug, Clone)]
pub(super) struct RebuildStart {
    /// Its row count.
    rows: u64,
    /// Its [`super::schema::Dialect::last_row_sql`].
    last_row: Option<String>,
}

/// A rows table is rewritten ahead of the commit rather than updated in place when at least
/// 1 row in this many is updated: with ~45 rows of ~1.3 KB on a 64 KiB page, 1 row in 50
/// already touches more than half of the pages.
const REBUILD_DIVISOR: u64 = 50;
