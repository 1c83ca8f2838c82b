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
use super::schema::{
    ROW_COLUMNS, STAGE_TYPES, UPSERT, lit, next_rows_table, reread_table, seen_table, shadow_table,
    type_table,
};
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
        let before = self.count("counting landed rows", &format!("SELECT {text} FROM {rows}"))?;
        let shadowed = self.count("counting staged rows", &format!("SELECT {text} FROM {shadow}"))?;
        // Keys staged: the re-read rows, and the shadow's keys not among them.
        let mut staged = self.count("counting re-read rows", &format!("SELECT {text} FROM {reread}"))?;
        if shadowed > 0 {
            staged += self.count(
                "counting staged keys",
                &format!(
                    "SELECT {text} FROM {shadow} s WHERE NOT EXISTS (SELECT 1 FROM {rows} t JOIN {reread} r \
                 ON r._row = t._row WHERE t.fhir_version = s.fhir_version AND t.id = s.id)"
                ),
            )?;
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
            self.backend.batch(&d.replace_table_sql(&rows_name, &shadow_table(table)))?;
            self.backend.execute(&format!("INSERT INTO {reread} (_row) SELECT _row FROM {rows}"))?;
        } else {
            if full_load {
                self.backend.execute(&format!("DELETE FROM {rows}"))?;
            }
            if shadowed > 0 {
                let prebuilt = self.prebuilt.get(resource_type).cloned();
                match prebuilt {
                    Some(p) if !full_load && self.prebuilt_current(table, &p)? => {
                        self.swap_in_prebuilt(table)?
                    }
                    _ => {
                        // `WHERE TRUE`: SQLite would read `ON CONFLICT` as a join constraint without it.
                        self.backend.execute(&format!(
                            "INSERT INTO {rows} ({ROW_COLUMNS}) SELECT {ROW_COLUMNS} FROM {shadow} WHERE TRUE {UPSERT}"
                        ))?;
                    }
                }
                self.backend.execute(&format!(
                    "INSERT INTO {reread} (_row) SELECT t._row FROM {shadow} s JOIN {rows} t \
                     ON t.fhir_version = s.fhir_version AND t.id = s.id WHERE TRUE ON CONFLICT DO NOTHING"
                ))?;
            }
            self.backend.batch(&format!("DROP TABLE {shadow}"))?;
        }
        let after = match swap {
            true => shadowed,
            false => self.count("counting landed rows", &format!("SELECT {text} FROM {rows}"))?,
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
        self.backend.batch(&d.replace_table_sql(&seen_table(table), &reread_table(table)))?;
        counts.add_to(m, staged, ctx.compare);
        Ok(())
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
        let d = self.d().clone();
        let staged = self.backend.query(&format!("SELECT resource_type FROM {}", d.t(STAGE_TYPES)))?;
        for resource_type in staged.into_iter().filter_map(|r| r.into_iter().next()?) {
            if !self.tables.contains(&resource_type) {
                continue;
            }
            let table = type_table(&resource_type)?;
            let rows_name = d.rows_table(&table);
            let (rows, shadow, next) =
                (d.t(&rows_name), d.t(&shadow_table(&table)), d.t(&next_rows_table(&table)));
            let text = d.text("count(*)");
            let before = self.count("counting landed rows", &format!("SELECT {text} FROM {rows}"))?;
            let updated = self.count(
                "counting updated rows",
                &format!(
                    "SELECT {text} FROM {shadow} s WHERE EXISTS (SELECT 1 FROM {rows} t \
                 WHERE t.fhir_version = s.fhir_version AND t.id = s.id)"
                ),
            )?;
            if before == 0 || updated * REBUILD_DIVISOR < before || self.has_user_objects(&rows_name)? {
                continue;
            }
            let state = Prebuilt { rows: before, last_row: self.last_row(&table)? };
            let ddl = d.next_rows_ddl(&table, run_id);
            self.in_transaction(|this| this.backend.batch(&format!("DROP TABLE IF EXISTS {next}; {ddl}")))?;
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
            let mut after: Option<String> = None;
            loop {
                let from = after.as_deref().map_or(String::new(), |r| format!("WHERE t._row > {r}"));
                let copied = self.in_transaction(|this| {
                    this.backend.execute(&format!("{copy} {from} ORDER BY t._row LIMIT {chunk}"))
                })?;
                if copied == 0 {
                    break;
                }
                after = self
                    .backend
                    .query(&format!("SELECT CAST(max(_row) AS TEXT) FROM {next}"))?
                    .into_iter()
                    .next()
                    .and_then(|r| r.into_iter().next()?);
            }
            tracing::debug!(table = %table, rows = before, updated, "Rows table rewritten ahead of the commit.");
            self.prebuilt.insert(resource_type, state);
        }
        Ok(())
    }

    /// Whether type `table`'s rows table is still as it was when [`SqlDestination::prebuild_rows`]
    /// began copying it (row count and last row), and the copy is whole.
    fn prebuilt_current(&mut self, table: &str, prebuilt: &Prebuilt) -> Result<bool> {
        let d = self.d().clone();
        let text = d.text("count(*)");
        let rows =
            self.count("counting landed rows", &format!("SELECT {text} FROM {}", d.t(&d.rows_table(table))))?;
        let copied = self
            .count("counting copied rows", &format!("SELECT {text} FROM {}", d.t(&next_rows_table(table))))?;
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
