//! The commit of one resource type in SQLite's split layout ([`Dialect::splits_rows`]): rows
//! in `_fhirsync_rows_<type>`, their `last_seen_run` in `_fhirsync_seen_<type>`.
//!
//! Staging left the new and changed rows in the shadow (every row, in a full load) and the
//! `_row` of every row staged unchanged in the re-read table. The commit:
//! 1. writes the `I`/`U` change records, and merges the shadow into the rows table, or, when
//!    that is empty or replaced by a full load, swaps the shadow in as the rows table (every
//!    row then new: none is left to delete or keep);
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
use super::schema::{ROW_COLUMNS, UPSERT, lit, quote_ident, reread_table, seen_table, shadow_table};
use super::{SqlBackend, SqlDestination};
use crate::Result;
use crate::config::Method;
use crate::destination::RunMetrics;

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
            self.backend.batch(&d.shadow_table_ddl(table, &ctx.run_id))?;
        }
        let rows_name = d.rows_table(table);
        let (rows, shadow, reread, seen) =
            (d.t(&rows_name), d.t(&shadow_table(table)), d.t(&reread_table(table)), d.t(&seen_table(table)));
        let rt = lit(resource_type);
        let text = d.text("count(*)");
        let full_load = ctx.method == Method::FullLoad;
        let before = self.count(&format!("SELECT {text} FROM {rows}"))?;
        let shadowed = self.count(&format!("SELECT {text} FROM {shadow}"))?;
        // Keys staged: the re-read rows, and the shadow's keys not among them.
        let mut staged = self.count(&format!("SELECT {text} FROM {reread}"))?;
        if shadowed > 0 {
            staged += self.count(&format!(
                "SELECT {text} FROM {shadow} s WHERE NOT EXISTS (SELECT 1 FROM {rows} t JOIN {reread} r \
                 ON r._row = t._row WHERE t.fhir_version = s.fhir_version AND t.id = s.id)"
            ))?;
        }
        let all_reread = !full_load && has_shadow && self.all_reread(resource_type, table, staged, before)?;
        if ctx.compare {
            self.write_changes(ctx, &rt, &shadow)?;
        }

        // 1. The shadow's rows into the rows table; 2. the re-read table lists every row re-read.
        // `replaced`: every row is new, none was re-read and none is left to delete or keep.
        let replaced = full_load || before == 0;
        let swap = replaced && !self.has_user_objects(&rows_name)?;
        if swap {
            // Legacy rename: the type's view, and user views, are not checked (the table is
            // briefly missing) and resolve to the new table by name.
            self.backend.batch(&format!(
                "DROP TABLE {rows}; PRAGMA legacy_alter_table = ON; ALTER TABLE {shadow} RENAME TO {plain}; \
                 PRAGMA legacy_alter_table = OFF;",
                plain = quote_ident(&rows_name),
            ))?;
            self.backend.execute(&format!("INSERT INTO {reread} (_row) SELECT _row FROM {rows}"))?;
        } else {
            if full_load {
                self.backend.execute(&format!("DELETE FROM {rows}"))?;
            }
            if shadowed > 0 {
                // `WHERE TRUE`: SQLite would read `ON CONFLICT` as a join constraint without it.
                self.backend.batch(&format!(
                    "INSERT INTO {rows} ({ROW_COLUMNS}) SELECT {ROW_COLUMNS} FROM {shadow} WHERE TRUE {UPSERT}; \
                     INSERT INTO {reread} (_row) SELECT t._row FROM {shadow} s JOIN {rows} t \
                     ON t.fhir_version = s.fhir_version AND t.id = s.id WHERE TRUE ON CONFLICT DO NOTHING;"
                ))?;
            }
            self.backend.batch(&format!("DROP TABLE {shadow}"))?;
        }
        let after = match swap {
            true => shadowed,
            false => self.count(&format!("SELECT {text} FROM {rows}"))?,
        };

        // 3. Rows not re-read: change records, deletes and counts.
        let counts = if replaced {
            Counts { inserted: after, ..Counts::default() }
        } else {
            let not_reread = format!("NOT EXISTS (SELECT 1 FROM {reread} r WHERE r._row = t._row)");
            let deletable = self.deletable_sql(ctx);
            let (not_staged, gone) = match all_reread {
                true => (0, 0),
                false if ctx.compare => {
                    let gone =
                        self.write_deletes(ctx, &rt, &rows, &format!("{not_reread} AND {deletable}"))?;
                    (after.saturating_sub(staged), gone)
                }
                false => self.not_reread(&rows, &not_reread, &deletable)?,
            };
            if gone > 0 {
                self.backend
                    .execute(&format!("DELETE FROM {rows} AS t WHERE {not_reread} AND {deletable}"))?;
            }
            let (inserted, updated) = match ctx.compare {
                true => self.inserted_updated(ctx, &rt)?,
                false => (after.saturating_sub(before), 0),
            };
            Counts { inserted, updated, gone, kept: not_staged.saturating_sub(gone) }
        };

        if ctx.history {
            let staged_rows = match replaced {
                true => format!("{rows} s"),
                false => format!("{rows} s JOIN {reread} r ON r._row = s._row"),
            };
            self.write_history(ctx, &rt, &staged_rows)?;
        }

        // 4. The re-read table becomes the seen table.
        self.backend.batch(&format!(
            "ALTER TABLE {reread} ADD COLUMN last_seen_run TEXT NOT NULL DEFAULT {run}",
            run = ctx.run
        ))?;
        if !replaced && !all_reread {
            // The rows kept unread keep their `last_seen_run`.
            self.backend.execute(&format!(
                "INSERT INTO {reread} (_row, last_seen_run) SELECT o._row, o.last_seen_run FROM {seen} o \
                 WHERE EXISTS (SELECT 1 FROM {rows} t WHERE t._row = o._row) \
                 AND NOT EXISTS (SELECT 1 FROM {reread} r WHERE r._row = o._row)"
            ))?;
        }
        self.backend.batch(&format!(
            "DROP TABLE {seen}; PRAGMA legacy_alter_table = ON; ALTER TABLE {reread} RENAME TO {plain}; \
             PRAGMA legacy_alter_table = OFF;",
            plain = quote_ident(&seen_table(table)),
        ))?;
        counts.add_to(m, staged, ctx.compare);
        Ok(())
    }
}
