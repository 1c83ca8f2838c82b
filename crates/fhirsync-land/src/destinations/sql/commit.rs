//! The commit transaction of the SQL engine (see the parent module for the protocol).

use std::collections::BTreeSet;

use fhirsync_core::RunScope;
use fhirsync_views::View;

use super::schema::{
    self, CHANGES, COHORT, COLUMNS, EXITS, HISTORY, RUNS, STAGE_CHANGES, STAGE_SCOPES, STAGE_TYPES, TYPES,
    UPSERT, quote_ident, type_table,
};
use super::{Params, SqlBackend, SqlDestination, SqlValue, now};
use crate::config::{Method, OnCohortExit};
use crate::destination::RunMetrics;
use crate::run::{ChangeOp, RunStatus};
use crate::{Error, Result};

/// What every statement of one commit needs to know.
pub(super) struct Ctx {
    /// The run id.
    pub(super) run_id: String,
    pub(super) method: Method,
    /// The commit time (RFC 3339).
    pub(super) now: String,
    pub(super) delete_exits: bool,
    pub(super) compare: bool,
    pub(super) history: bool,
    /// Whether a patient-less scope completed (a cohort-level scope: bulk export × type).
    pub(super) cohort_scopes: bool,
    /// Resource types whose table this commit created (empty, with no user objects on it).
    pub(super) created: BTreeSet<String>,
}

impl<B: SqlBackend> SqlDestination<B> {
    /// Applies the staged run; called inside the commit transaction.
    pub(super) fn apply(
        &mut self,
        run: &super::ActiveRun,
        scope: &RunScope,
        views: &[View],
        report: &serde_json::Value,
    ) -> Result<RunMetrics> {
        let complete: Vec<_> = scope.complete.iter().cloned().collect();
        self.insert_scopes(&run.id, &complete)?;
        let mut ctx = self.commit_ctx(run)?;
        let staged_types = self.staged_types()?;
        let types = self.type_tables(&mut ctx, &staged_types)?;
        let mut m = RunMetrics {
            run_id: run.id.clone(),
            method: run.method.as_str().to_string(),
            ..Default::default()
        };
        if run.method != Method::FullLoad {
            m.cohort_exits = self.flag_cohort_exits(&ctx, scope, &types)?;
        }
        for (t, table) in &types {
            match self.d().splits_rows() {
                true => self.apply_split_type(&ctx, t, table, staged_types.contains(t), &mut m)?,
                false => self.apply_type(&ctx, t, table, staged_types.contains(t), &mut m)?,
            }
        }
        m.view_rows = self.materialise_views(run, views)?;
        self.finish_run(&ctx, RunStatus::committed(scope), &m, report)?;
        self.backend.execute(&format!("DELETE FROM {}", self.d().t(COHORT)), &[])?;
        self.clear_staging()?;
        Ok(m)
    }

    /// The commit's [`Ctx`] for `run`.
    fn commit_ctx(&mut self, run: &super::ActiveRun) -> Result<Ctx> {
        let d = self.d().clone();
        let sql = format!("SELECT {} FROM {} WHERE patient_id = ''", d.text("count(*)"), d.t(STAGE_SCOPES));
        let cohort_scopes = self.count("counting cohort-level scopes", &sql, &Params::new(&d))? > 0;
        Ok(Ctx {
            run_id: run.id.clone(),
            method: run.method,
            now: now(),
            delete_exits: run.options.on_cohort_exit == OnCohortExit::Delete,
            compare: run.method == Method::ReloadAndCompare,
            // A full load seeds the history (every row valid from it), so history is complete from
            // the first run; a plain reload has no change detection to feed it.
            history: run.options.history && matches!(run.method, Method::ReloadAndCompare | Method::FullLoad),
            cohort_scopes,
            created: BTreeSet::new(),
        })
    }

    /// The resource types staged in this run.
    pub(super) fn staged_types(&mut self) -> Result<BTreeSet<String>> {
        let sql = format!("SELECT resource_type FROM {}", self.d().t(STAGE_TYPES));
        let rows = self.backend.query(&sql, &[])?;
        Ok(rows.into_iter().filter_map(|r| r.into_iter().next()?).collect())
    }

    /// The resource types the commit applies, with their tables: the registered ones plus
    /// every staged type, whose table is created (and noted in [`Ctx::created`]) if missing.
    /// A full load makes the target exactly the staged data, so unstaged types are dropped.
    fn type_tables(
        &mut self,
        ctx: &mut Ctx,
        staged_types: &BTreeSet<String>,
    ) -> Result<BTreeSet<(String, String)>> {
        let d = self.d().clone();
        let mut types: BTreeSet<(String, String)> = self.registered_types()?.into_iter().collect();
        for t in staged_types {
            let table = type_table(t)?;
            if types.insert((t.clone(), table.clone())) {
                ctx.created.insert(t.clone());
                self.backend.batch(&d.type_ddl(&table))?;
                let mut p = Params::new(&d);
                let sql = format!(
                    "INSERT INTO {} (resource_type, table_name) VALUES ({}, {}) ON CONFLICT DO NOTHING",
                    d.t(TYPES),
                    p.bind(t),
                    p.bind(&table)
                );
                self.backend.execute(&sql, p.values())?;
            }
        }
        if ctx.method == Method::FullLoad {
            let unstaged: Vec<_> = types.iter().filter(|(t, _)| !staged_types.contains(t)).cloned().collect();
            types.retain(|(t, _)| staged_types.contains(t));
            for (t, table) in unstaged {
                self.drop_type(ctx, &t, &table)?;
            }
        }
        Ok(types)
    }

    /// Drops resource type `resource_type` (table `table`) from the target; with history, its
    /// open versions end here.
    fn drop_type(&mut self, ctx: &Ctx, resource_type: &str, table: &str) -> Result<()> {
        let d = self.d().clone();
        self.backend.batch(&d.drop_type_sql(table))?;
        let mut p = Params::new(&d);
        let sql = format!("DELETE FROM {} WHERE resource_type = {}", d.t(TYPES), p.bind(resource_type));
        self.backend.execute(&sql, p.values())?;
        if ctx.history {
            let mut p = Params::new(&d);
            let sql = format!(
                "UPDATE {} SET valid_to = {}, valid_to_run = {} WHERE resource_type = {} AND valid_to IS NULL",
                d.t(HISTORY),
                p.bind_time(Some(&ctx.now)),
                p.bind(&ctx.run_id),
                p.bind(resource_type)
            );
            self.backend.execute(&sql, p.values())?;
        }
        Ok(())
    }

    /// Finishes the run's row: `status`, end time, counts and report.
    fn finish_run(
        &mut self,
        ctx: &Ctx,
        status: RunStatus,
        m: &RunMetrics,
        report: &serde_json::Value,
    ) -> Result<()> {
        let d = self.d().clone();
        let report = serde_json::to_string(report)
            .map_err(|source| Error::Json { action: "storing the run report", source })?;
        let mut p = Params::new(&d);
        let sql = format!(
            "UPDATE {runs} SET status = {status}, ended_at = {now}, staged = {}, inserted = {}, updated = {}, \
             deleted = {}, unchanged = {}, kept = {}, cohort_exits = {}, view_rows = {}, errors = NULL, report = {} \
             WHERE run_id = {run}",
            p.bind(m.staged),
            p.bind(m.inserted),
            p.bind(m.updated),
            p.bind(m.deleted),
            p.bind(m.unchanged),
            p.bind(m.kept),
            p.bind(m.cohort_exits),
            p.bind(m.view_rows),
            p.bind_json(report),
            runs = d.t(RUNS),
            status = p.bind(status.as_str()),
            now = p.bind_time(Some(&ctx.now)),
            run = p.bind(&ctx.run_id),
        );
        self.backend.execute(&sql, p.values())?;
        Ok(())
    }

    /// Records patients in the target who are not in the cohort; returns how many were flagged.
    fn flag_cohort_exits(
        &mut self,
        ctx: &Ctx,
        scope: &RunScope,
        types: &BTreeSet<(String, String)>,
    ) -> Result<u64> {
        let d = self.d().clone();
        self.backend.execute(&format!("DELETE FROM {}", d.t(COHORT)), &[])?;
        if scope.cohort.is_empty() {
            // An empty cohort more likely means "no patient list" than "everyone left".
            tracing::warn!("Run has an empty cohort; cohort exits are not evaluated.");
            return Ok(0);
        }
        let cohort: Vec<Vec<SqlValue>> = scope.cohort.iter().map(|p| vec![SqlValue::from(p)]).collect();
        self.backend.insert_rows(&d.t(COHORT), &[quote_ident("patient_id")], &cohort)?;
        for (_, table) in types {
            // The table's distinct patients, one `patient_id` index seek each (a loose index scan),
            // instead of reading every row's index entry: ~10x less work with 100 rows a patient.
            let mut p = Params::new(&d);
            let sql = format!(
                "WITH RECURSIVE p (patient_id) AS (SELECT min(patient_id) FROM {t} \
                 UNION ALL SELECT (SELECT min(u.patient_id) FROM {t} u WHERE u.patient_id > p.patient_id) \
                 FROM p WHERE p.patient_id IS NOT NULL) \
                 INSERT INTO {exits} (patient_id, first_flagged_run, last_flagged_run, flagged_at, rows_deleted) \
                 SELECT p.patient_id, {run}, {run}, {now}, {del} FROM p \
                 WHERE p.patient_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {cohort} c WHERE c.patient_id = p.patient_id) \
                 ON CONFLICT (patient_id) DO UPDATE SET last_flagged_run = excluded.last_flagged_run, \
                 flagged_at = excluded.flagged_at, rows_deleted = excluded.rows_deleted",
                exits = d.t(EXITS),
                run = p.bind(&ctx.run_id),
                now = p.bind_time(Some(&ctx.now)),
                del = p.bind(ctx.delete_exits),
                t = d.t(&d.rows_table(table)),
                cohort = d.t(COHORT),
            );
            self.backend.execute(&sql, p.values())?;
        }
        // Patients back in the cohort are no longer flagged.
        self.backend.execute(
            &format!(
                "DELETE FROM {exits} WHERE patient_id IN (SELECT patient_id FROM {cohort})",
                exits = d.t(EXITS),
                cohort = d.t(COHORT)
            ),
            &[],
        )?;
        let mut p = Params::new(&d);
        let sql = format!(
            "SELECT {} FROM {} WHERE last_flagged_run = {}",
            d.text("count(*)"),
            d.t(EXITS),
            p.bind(&ctx.run_id)
        );
        self.count("counting cohort exits", &sql, &p)
    }

    /// Applies one resource type where one table holds its rows (PostgreSQL): change records,
    /// deletes, then a merge of the new-rows table into the table, and counts.
    fn apply_type(
        &mut self,
        ctx: &Ctx,
        resource_type: &str,
        table: &str,
        has_new_rows: bool,
        m: &mut RunMetrics,
    ) -> Result<()> {
        let d = self.d().clone();
        let new_rows_name = d.new_rows_name(table, &ctx.run_id);
        let full_load = ctx.method == Method::FullLoad;
        // A full load into a table this commit created: the new-rows table itself becomes the table
        // (nothing can depend on the new, empty one), so every row is written once.
        let swap = full_load && has_new_rows && ctx.created.contains(resource_type);
        match has_new_rows {
            // Nothing staged: an empty new-rows table lets the same statements find the deletes.
            false => self.backend.batch(&d.rows_ddl(&new_rows_name, None))?,
            true => self.backend.batch(&d.new_rows_finish_sql(&new_rows_name, !swap))?,
        }
        let (t, new_rows) = (d.t(table), d.t(&new_rows_name));
        let staged = self.count_rows("counting staged rows", &new_rows)?;
        if swap {
            if ctx.history {
                self.write_history(ctx, resource_type, &format!("{new_rows} s"))?;
            }
            self.backend.batch(&format!(
                "DROP TABLE {t}; ALTER TABLE {new_rows} RENAME TO {name}; \
                 ALTER TABLE {t} ADD PRIMARY KEY (fhir_version, id);\n{ddl}",
                name = schema::quote_ident(table),
                ddl = d.type_ddl(table),
            ))?;
            Counts { inserted: staged, ..Counts::default() }.add_to(m, staged, ctx.compare);
            return Ok(());
        }
        // Keys of rows that were not staged again. Only key columns are read, so the database can
        // answer from the primary-key index instead of scanning the (wide) table rows.
        let not_staged = format!(
            "(t.fhir_version, t.id) IN (SELECT u.fhir_version, u.id FROM {t} u WHERE NOT EXISTS \
             (SELECT 1 FROM {new_rows} s WHERE s.fhir_version = u.fhir_version AND s.id = u.id))"
        );
        let one = OneTable { resource_type, t, new_rows, not_staged, staged };
        let deletable = self.deletable(ctx);
        let counts = match (full_load, ctx.compare) {
            // The target becomes exactly the staged data.
            (true, _) => {
                if ctx.history {
                    self.write_history(ctx, resource_type, &format!("{} s", one.new_rows))?;
                }
                Counts { inserted: staged, ..Counts::default() }
            }
            (false, true) => self.compare_one_table(ctx, &one, &deletable)?,
            (false, false) => self.reload_one_table(&one, &deletable)?,
        };
        self.merge_one_table(&one, &deletable, full_load, counts.gone)?;
        counts.add_to(m, staged, ctx.compare);
        Ok(())
    }

    /// Reload-and-compare of one table: change records of the staged keys and of the rows not
    /// staged again that go, history, and the counts.
    fn compare_one_table(&mut self, ctx: &Ctx, one: &OneTable<'_>, deletable: &Condition) -> Result<Counts> {
        let d = self.d().clone();
        let OneTable { resource_type, t, new_rows, not_staged, staged } = one;
        let mut p = Params::new(&d);
        let sql = format!(
            "INSERT INTO {stage_changes} (resource_type, fhir_version, id, before_hash) \
             SELECT {rt}, s.fhir_version, s.id, t.content_hash FROM {new_rows} s \
             LEFT JOIN {t} t ON t.fhir_version = s.fhir_version AND t.id = s.id \
             WHERE t.id IS NULL OR t.content_hash <> s.content_hash",
            stage_changes = d.t(STAGE_CHANGES),
            rt = p.bind(*resource_type),
        );
        self.backend.execute(&sql, p.values())?;
        let before = self.count_rows("counting landed rows", t)?;
        self.write_changes(ctx, resource_type, new_rows)?;
        let gone = self.write_deletes(ctx, resource_type, t, &deletable.after(not_staged))?;
        if ctx.history {
            self.write_history(ctx, resource_type, &format!("{new_rows} s"))?;
        }
        let (inserted, updated) = self.inserted_updated(ctx, resource_type)?;
        // Rows before = staged again (staged but not inserted) + gone + kept.
        let kept = before.saturating_sub(staged.saturating_sub(inserted) + gone);
        Ok(Counts { inserted, updated, gone, kept })
    }

    /// Plain reload of one table: the counts of the rows not staged again, of those that go, and of
    /// the new ones.
    fn reload_one_table(&mut self, one: &OneTable<'_>, deletable: &Condition) -> Result<Counts> {
        let before = self.count_rows("counting landed rows", &one.t)?;
        let (not_staged, gone) = self.not_restaged(&one.t, &one.not_staged, deletable)?;
        let kept = not_staged.saturating_sub(gone);
        // Rows before = staged again + gone + kept; the rest of the staged rows are new.
        let inserted = one.staged.saturating_sub(before.saturating_sub(gone + kept));
        Ok(Counts { inserted, updated: 0, gone, kept })
    }

    /// Deletes the rows that go (a full load: every row) and upserts the new-rows table into the
    /// table, then drops the new-rows table.
    fn merge_one_table(
        &mut self,
        one: &OneTable<'_>,
        deletable: &Condition,
        full_load: bool,
        gone: u64,
    ) -> Result<()> {
        let OneTable { t, new_rows, not_staged, .. } = one;
        if full_load {
            self.backend.execute(&format!("DELETE FROM {t}"), &[])?;
        } else if gone > 0 {
            let goes = deletable.after(not_staged);
            self.backend
                .execute(&format!("DELETE FROM {t} AS t WHERE {}", goes.sql), goes.params.values())?;
        }
        // `WHERE TRUE`: SQLite would read `ON CONFLICT` as a join constraint without it.
        self.backend.execute(
            &format!(
                "INSERT INTO {t} ({COLUMNS}) SELECT {COLUMNS} FROM {new_rows} s WHERE TRUE \
                 {UPSERT}, last_seen_run = excluded.last_seen_run"
            ),
            &[],
        )?;
        self.backend.batch(&format!("DROP TABLE {new_rows}"))
    }

    /// The rows of `table` (quoted), counted; `what` names the count.
    pub(super) fn count_rows(&mut self, what: &'static str, table: &str) -> Result<u64> {
        let d = self.d().clone();
        self.count(what, &format!("SELECT {} FROM {table}", d.text("count(*)")), &Params::new(&d))
    }

    /// Whether a row `t` not staged again may be deleted: its scope completed in this run, or a
    /// patient-less scope of its (version, dataset) completed and the row has no patient or its
    /// patient is in this run's cohort, or (with `on_cohort_exit = delete`) its patient left the
    /// cohort.
    ///
    /// A patient-less complete scope is a cohort-level read (a bulk export × type): it covers
    /// every row of the cohort, never rows of patients who left it (those are flagged exits,
    /// kept unless `on_cohort_exit = delete`). The cohort table is filled by
    /// `flag_cohort_exits`; an empty cohort covers patient-less rows only.
    pub(super) fn deletable(&self, ctx: &Ctx) -> Condition {
        let d = self.d();
        let mut params = Params::new(d);
        let scopes = d.t(STAGE_SCOPES);
        let own = format!(
            "EXISTS (SELECT 1 FROM {scopes} c WHERE c.fhir_version = t.fhir_version \
             AND c.patient_id = COALESCE(t.patient_id, '') AND c.dataset = t.dataset)"
        );
        // EXISTS, not `IN`: never NULL (a patient-less row), so `NOT deletable` keeps it.
        let mut any = vec![own];
        if ctx.cohort_scopes {
            any.push(format!(
                "(EXISTS (SELECT 1 FROM {scopes} c WHERE c.fhir_version = t.fhir_version \
                 AND c.patient_id = '' AND c.dataset = t.dataset) \
                 AND EXISTS (SELECT 1 FROM {} k WHERE k.patient_id = t.patient_id))",
                d.t(COHORT)
            ));
        }
        if ctx.delete_exits {
            any.push(format!(
                "EXISTS (SELECT 1 FROM {} e WHERE e.patient_id = t.patient_id AND e.last_flagged_run = {})",
                d.t(EXITS),
                params.bind(&ctx.run_id)
            ));
        }
        let sql = match any.len() {
            1 => any.remove(0),
            _ => format!("({})", any.join(" OR ")),
        };
        Condition { sql, params }
    }

    /// Writes the `I` and `U` change records of type `resource_type` from the changes noted
    /// for it and the staged rows in `new_rows`.
    pub(super) fn write_changes(&mut self, ctx: &Ctx, resource_type: &str, new_rows: &str) -> Result<()> {
        let d = self.d().clone();
        let mut p = Params::new(&d);
        // A key noted while staging may have been staged again since with the old content.
        let sql = format!(
            "INSERT INTO {changes} (run_id, changed_at, operation, resource_type, fhir_version, id, patient_id, before_hash, after_hash) \
             SELECT {run}, {now}, CASE WHEN c.before_hash IS NULL THEN {insert} ELSE {update} END, {rt}, s.fhir_version, s.id, \
             s.patient_id, c.before_hash, s.content_hash \
             FROM {stage_changes} c JOIN {new_rows} s ON s.fhir_version = c.fhir_version AND s.id = c.id \
             WHERE c.resource_type = {rt} AND (c.before_hash IS NULL OR c.before_hash <> s.content_hash)",
            changes = d.t(CHANGES),
            stage_changes = d.t(STAGE_CHANGES),
            run = p.bind(&ctx.run_id),
            now = p.bind_time(Some(&ctx.now)),
            insert = p.bind(ChangeOp::Insert.as_str()),
            update = p.bind(ChangeOp::Update.as_str()),
            rt = p.bind(resource_type),
        );
        self.backend.execute(&sql, p.values())?;
        Ok(())
    }

    /// Writes a `D` change record for every row `t` of `rows` matching `condition`; returns how
    /// many.
    pub(super) fn write_deletes(
        &mut self,
        ctx: &Ctx,
        resource_type: &str,
        rows: &str,
        condition: &Condition,
    ) -> Result<u64> {
        let changes = self.d().t(CHANGES);
        let mut p = condition.params.clone();
        let sql = format!(
            "INSERT INTO {changes} (run_id, changed_at, operation, resource_type, fhir_version, id, patient_id, before_hash, after_hash) \
             SELECT {run}, {now}, {delete}, {rt}, t.fhir_version, t.id, t.patient_id, t.content_hash, NULL \
             FROM {rows} t WHERE {condition}",
            run = p.bind(&ctx.run_id),
            now = p.bind_time(Some(&ctx.now)),
            delete = p.bind(ChangeOp::Delete.as_str()),
            rt = p.bind(resource_type),
            condition = condition.sql,
        );
        self.backend.execute(&sql, p.values())
    }

    /// How many `I` and `U` records this run wrote for type `resource_type`.
    pub(super) fn inserted_updated(&mut self, ctx: &Ctx, resource_type: &str) -> Result<(u64, u64)> {
        let d = self.d().clone();
        let mut p = Params::new(&d);
        let sql = format!(
            "SELECT operation, {} FROM {} WHERE run_id = {} AND resource_type = {} \
             AND operation IN ({}) GROUP BY operation",
            d.text("count(*)"),
            d.t(CHANGES),
            p.bind(&ctx.run_id),
            p.bind(resource_type),
            p.bind_list([ChangeOp::Insert, ChangeOp::Update].map(ChangeOp::as_str)),
        );
        let ops = self.backend.query(&sql, p.values())?;
        let mut counts = (0, 0);
        for row in &ops {
            let n = self.cell(row, 1, "counting change records")?;
            match row.first().and_then(|c| c.as_deref()) {
                Some(op) if op == ChangeOp::Insert.as_str() => counts.0 = n,
                Some(op) if op == ChangeOp::Update.as_str() => counts.1 = n,
                _ => {}
            }
        }
        Ok(counts)
    }

    /// How many rows `t` of `rows` match `not_restaged`, and how many of those are `deletable`.
    pub(super) fn not_restaged(
        &mut self,
        rows: &str,
        not_restaged: &str,
        deletable: &Condition,
    ) -> Result<(u64, u64)> {
        let d = self.d().clone();
        let sql = format!(
            "SELECT {}, {} FROM {rows} t WHERE {not_restaged}",
            d.text("count(*)"),
            d.text(&format!("COALESCE(SUM(CASE WHEN {} THEN 1 ELSE 0 END), 0)", deletable.sql))
        );
        let counts = self.backend.query(&sql, deletable.params.values())?;
        let row = counts.first().map_or(&[][..], Vec::as_slice);
        Ok((
            self.cell(row, 0, "counting rows not staged again")?,
            self.cell(row, 1, "counting deletable rows")?,
        ))
    }

    /// Integer cell `i` of a query row; a missing cell or one that is not a number is an
    /// error.
    fn cell(&self, row: &[super::Cell], i: usize, what: &'static str) -> Result<u64> {
        super::number(row.get(i).and_then(|c| c.as_deref()), what, || self.backend.describe())
    }

    /// Whether `table` (a rows table) carries indexes or triggers fhirsync did not create.
    pub(super) fn has_user_objects(&mut self, table: &str) -> Result<bool> {
        let mut p = Params::new(self.d());
        match self.d().user_objects_sql(table, &mut p) {
            Some(sql) => Ok(self.count("counting user indexes and triggers", &sql, &p)? > 0),
            None => Ok(false),
        }
    }

    /// Type-2 history: closes the open version of updated/deleted rows (a full load: of every
    /// row, since the target is replaced) and opens a version for every staged row `s` of
    /// `staged` (a FROM clause) without an open one (new, updated, or never historised before).
    pub(super) fn write_history(&mut self, ctx: &Ctx, resource_type: &str, staged: &str) -> Result<()> {
        let d = self.d().clone();
        let (h, changes) = (d.t(HISTORY), d.t(CHANGES));
        let mut p = Params::new(&d);
        let (run, now, rt) = (p.bind(&ctx.run_id), p.bind_time(Some(&ctx.now)), p.bind(resource_type));
        let closed = match ctx.method {
            Method::FullLoad => String::new(),
            _ => format!(
                " AND EXISTS (SELECT 1 FROM {changes} c \
                 WHERE c.run_id = {run} AND c.resource_type = {rt} AND c.operation IN ({ops}) \
                 AND c.fhir_version = h.fhir_version AND c.id = h.id)",
                ops = p.bind_list([ChangeOp::Update, ChangeOp::Delete].map(ChangeOp::as_str)),
            ),
        };
        let sql = format!(
            "UPDATE {h} AS h SET valid_to = {now}, valid_to_run = {run} \
             WHERE h.resource_type = {rt} AND h.valid_to IS NULL{closed}"
        );
        self.backend.execute(&sql, p.values())?;
        let mut p = Params::new(&d);
        let (run, now, rt) = (p.bind(&ctx.run_id), p.bind_time(Some(&ctx.now)), p.bind(resource_type));
        let sql = format!(
            "INSERT INTO {h} (resource_type, fhir_version, id, patient_id, content_hash, resource, valid_from, valid_from_run) \
             SELECT {rt}, s.fhir_version, s.id, s.patient_id, s.content_hash, s.resource, {now}, {run} \
             FROM {staged} WHERE NOT EXISTS (SELECT 1 FROM {h} h \
             WHERE h.resource_type = {rt} AND h.fhir_version = s.fhir_version AND h.id = s.id AND h.valid_to IS NULL)"
        );
        self.backend.execute(&sql, p.values())?;
        Ok(())
    }
}

/// One type's tables in a commit where one table holds its rows (PostgreSQL).
struct OneTable<'a> {
    resource_type: &'a str,
    /// The type table, quoted.
    t: String,
    /// The new-rows table, quoted.
    new_rows: String,
    /// The condition on a row `t` of the table that its key was not staged.
    not_staged: String,
    /// Keys staged.
    staged: u64,
}

/// A SQL condition with the values of its placeholders. A statement using it starts from a
/// clone of `params` and binds its own values after them.
#[derive(Debug, Clone)]
pub(super) struct Condition {
    pub(super) sql: String,
    pub(super) params: Params,
}

impl Condition {
    /// `first AND` this condition (`first` binds nothing).
    pub(super) fn after(&self, first: &str) -> Condition {
        Condition { sql: format!("{first} AND {}", self.sql), params: self.params.clone() }
    }
}

/// How one type's rows fared in a commit.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) inserted: u64,
    pub(super) updated: u64,
    /// Rows not staged again that were deleted.
    pub(super) gone: u64,
    /// Rows not staged again that were kept.
    pub(super) kept: u64,
}

impl Counts {
    /// Adds one type's counts, with its `staged` keys, to the run's.
    pub(super) fn add_to(&self, m: &mut RunMetrics, staged: u64, compare: bool) {
        m.staged += staged;
        m.deleted += self.gone;
        m.kept += self.kept;
        m.inserted += self.inserted;
        m.updated += self.updated;
        if compare {
            m.unchanged += staged.saturating_sub(self.inserted + self.updated);
        }
    }
}
