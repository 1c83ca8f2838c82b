//! The commit transaction of the SQL engine (see the parent module for the protocol).

use std::collections::BTreeSet;

use fhirsync_core::RunScope;
use fhirsync_views::View;

use super::schema::{
    self, CHANGES, COHORT, COLUMNS, EXITS, HISTORY, RUNS, STAGE_CHANGES, STAGE_SCOPES, STAGE_TYPES, TYPES,
    UPSERT, lit, lit_list, type_table,
};
use super::{SqlBackend, SqlDestination, insert_scopes_sql, now};
use crate::config::{Method, OnCohortExit};
use crate::destination::RunMetrics;
use crate::run::{ChangeOp, RunStatus};
use crate::{Error, Result};

/// Names and literals used by every statement of one commit.
pub(super) struct Ctx {
    /// The run id, as a literal.
    pub(super) run: String,
    /// The run id.
    pub(super) run_id: String,
    pub(super) method: Method,
    /// The commit time, as a literal.
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
        let d = self.d().clone();
        let complete: Vec<_> = scope.complete.iter().cloned().collect();
        let sql = insert_scopes_sql(&d, &run.id, &complete);
        if !sql.is_empty() {
            self.backend.batch(&sql)?;
        }
        let text = d.text("count(*)");
        let cohort_scopes = self.count(
            "counting cohort-level scopes",
            &format!("SELECT {text} FROM {} WHERE patient_id = ''", d.t(STAGE_SCOPES)),
        )? > 0;
        let mut ctx = Ctx {
            run: lit(&run.id),
            run_id: run.id.clone(),
            method: run.method,
            now: d.ts_lit(&now()),
            delete_exits: run.options.on_cohort_exit == OnCohortExit::Delete,
            compare: run.method == Method::ReloadAndCompare,
            // A full load seeds the history (every row valid from it), so history is complete from
            // the first run; a plain reload has no change detection to feed it.
            history: run.options.history && matches!(run.method, Method::ReloadAndCompare | Method::FullLoad),
            cohort_scopes,
            created: BTreeSet::new(),
        };

        // Resource-type tables: registered ones plus every staged type.
        let mut types: BTreeSet<(String, String)> = self.registered_types()?.into_iter().collect();
        let staged_types = self.backend.query(&format!("SELECT resource_type FROM {}", d.t(STAGE_TYPES)))?;
        let staged_types: BTreeSet<String> =
            staged_types.into_iter().filter_map(|r| r.into_iter().next()?).collect();
        for t in &staged_types {
            let table = type_table(t)?;
            if types.insert((t.clone(), table.clone())) {
                ctx.created.insert(t.clone());
                self.backend.batch(&d.type_ddl(&table))?;
                self.backend.execute(&format!(
                    "INSERT INTO {} (resource_type, table_name) VALUES ({}, {}) ON CONFLICT DO NOTHING",
                    d.t(TYPES),
                    lit(t),
                    lit(&table)
                ))?;
            }
        }
        if run.method == Method::FullLoad {
            // Full load: the target becomes exactly the staged data; unstaged types go.
            for (t, table) in std::mem::take(&mut types) {
                if staged_types.contains(&t) {
                    types.insert((t, table));
                } else {
                    self.backend.batch(&format!(
                        "{} DELETE FROM {} WHERE resource_type = {};",
                        d.drop_type_sql(&table),
                        d.t(TYPES),
                        lit(&t)
                    ))?;
                    if ctx.history {
                        // The type is gone from the target: its open versions end here.
                        self.backend.execute(&format!(
                            "UPDATE {} SET valid_to = {}, valid_to_run = {} WHERE resource_type = {} AND valid_to IS NULL",
                            d.t(HISTORY),
                            ctx.now,
                            ctx.run,
                            lit(&t)
                        ))?;
                    }
                }
            }
        }

        let mut m = RunMetrics {
            run_id: run.id.clone(),
            method: run.method.as_str().to_string(),
            ..Default::default()
        };
        if run.method != Method::FullLoad {
            m.cohort_exits = self.flag_cohort_exits(&ctx, scope, &types)?;
        }
        for (t, table) in &types {
            match d.splits_rows() {
                true => self.apply_split_type(&ctx, t, table, staged_types.contains(t), &mut m)?,
                false => self.apply_type(&ctx, t, table, staged_types.contains(t), &mut m)?,
            }
        }
        m.view_rows = self.materialise_views(run, views)?;

        let report = serde_json::to_string(report)
            .map_err(|source| Error::Json { action: "storing the run report", source })?;
        self.backend.execute(&format!(
            "UPDATE {runs} SET status = {status}, ended_at = {now}, staged = {}, inserted = {}, updated = {}, \
             deleted = {}, unchanged = {}, kept = {}, cohort_exits = {}, view_rows = {}, errors = NULL, report = {} \
             WHERE run_id = {run}",
            m.staged,
            m.inserted,
            m.updated,
            m.deleted,
            m.unchanged,
            m.kept,
            m.cohort_exits,
            m.view_rows,
            lit(&report),
            runs = d.t(RUNS),
            status = lit(RunStatus::committed(scope).as_str()),
            now = ctx.now,
            run = ctx.run,
        ))?;
        self.backend.execute(&format!("DELETE FROM {}", d.t(COHORT)))?;
        self.clear_staging()?;
        Ok(m)
    }

    /// Records patients in the target who are not in the cohort; returns how many were flagged.
    fn flag_cohort_exits(
        &mut self,
        ctx: &Ctx,
        scope: &RunScope,
        types: &BTreeSet<(String, String)>,
    ) -> Result<u64> {
        let d = self.d().clone();
        self.backend.execute(&format!("DELETE FROM {}", d.t(COHORT)))?;
        if scope.cohort.is_empty() {
            // An empty cohort more likely means "no patient list" than "everyone left".
            tracing::warn!("Run has an empty cohort; cohort exits are not evaluated.");
            return Ok(0);
        }
        let ids: Vec<&String> = scope.cohort.iter().collect();
        for chunk in ids.chunks(500) {
            let values: Vec<String> = chunk.iter().map(|p| format!("({})", lit(p))).collect();
            self.backend.execute(&format!(
                "INSERT INTO {} (patient_id) VALUES {}",
                d.t(COHORT),
                values.join(", ")
            ))?;
        }
        for (_, table) in types {
            // The table's distinct patients, one `patient_id` index seek each (a loose index scan),
            // instead of reading every row's index entry: ~10x less work with 100 rows a patient.
            self.backend.execute(&format!(
                "WITH RECURSIVE p (patient_id) AS (SELECT min(patient_id) FROM {t} \
                 UNION ALL SELECT (SELECT min(u.patient_id) FROM {t} u WHERE u.patient_id > p.patient_id) \
                 FROM p WHERE p.patient_id IS NOT NULL) \
                 INSERT INTO {exits} (patient_id, first_flagged_run, last_flagged_run, flagged_at, rows_deleted) \
                 SELECT p.patient_id, {run}, {run}, {now}, {del} FROM p \
                 WHERE p.patient_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {cohort} c WHERE c.patient_id = p.patient_id) \
                 ON CONFLICT (patient_id) DO UPDATE SET last_flagged_run = excluded.last_flagged_run, \
                 flagged_at = excluded.flagged_at, rows_deleted = excluded.rows_deleted",
                exits = d.t(EXITS),
                run = ctx.run,
                now = ctx.now,
                del = if ctx.delete_exits { "TRUE" } else { "FALSE" },
                t = d.t(&d.rows_table(table)),
                cohort = d.t(COHORT),
            ))?;
        }
        // Patients back in the cohort are no longer flagged.
        self.backend.execute(&format!(
            "DELETE FROM {exits} WHERE patient_id IN (SELECT patient_id FROM {cohort})",
            exits = d.t(EXITS),
            cohort = d.t(COHORT)
        ))?;
        let text = d.text("count(*)");
        self.count(
            "counting cohort exits",
            &format!("SELECT {text} FROM {} WHERE last_flagged_run = {}", d.t(EXITS), ctx.run),
        )
    }

    /// Applies one resource type where one table holds its rows (PostgreSQL): change records,
    /// deletes, then a merge of the shadow into the table, and counts.
    fn apply_type(
        &mut self,
        ctx: &Ctx,
        resource_type: &str,
        table: &str,
        has_shadow: bool,
        m: &mut RunMetrics,
    ) -> Result<()> {
        let d = self.d().clone();
        let shadow_name = d.shadow_name(table, &ctx.run_id);
        let full_load = ctx.method == Method::FullLoad;
        // A full load into a table this commit created: the shadow itself becomes the table
        // (nothing can depend on the new, empty one), so every row is written once.
        let swap = full_load && has_shadow && ctx.created.contains(resource_type);
        if !has_shadow {
            // Nothing staged: an empty shadow lets the same statements find the deletes.
            self.backend.batch(&d.rows_ddl(&shadow_name, None))?;
        } else {
            self.backend.batch(&d.shadow_finish_sql(&shadow_name, !swap))?;
        }
        let (t, shadow) = (d.t(table), d.t(&shadow_name));
        let rt = lit(resource_type);
        let text = d.text("count(*)");
        let staged = self.count("counting staged rows", &format!("SELECT {text} FROM {shadow}"))?;
        if swap {
            if ctx.history {
                self.write_history(ctx, &rt, &format!("{shadow} s"))?;
            }
            self.backend.batch(&format!(
                "DROP TABLE {t}; ALTER TABLE {shadow} RENAME TO {name}; \
                 ALTER TABLE {t} ADD PRIMARY KEY (fhir_version, id);\n{ddl}",
                name = schema::quote_ident(table),
                ddl = d.type_ddl(table),
            ))?;
            Counts { inserted: staged, ..Counts::default() }.add_to(m, staged, ctx.compare);
            return Ok(());
        }
        // Keys of rows that were not re-read. Only key columns are read, so the database can
        // answer from the primary-key index instead of scanning the (wide) table rows.
        let not_staged = format!(
            "(t.fhir_version, t.id) IN (SELECT u.fhir_version, u.id FROM {t} u WHERE NOT EXISTS \
             (SELECT 1 FROM {shadow} s WHERE s.fhir_version = u.fhir_version AND s.id = u.id))"
        );
        let deletable = self.deletable_sql(ctx);
        let before = self.count("counting landed rows", &format!("SELECT {text} FROM {t}"))?;
        // Rows not re-read: how many go and how many stay, and the insert/update counts.
        let counts = if full_load {
            // The target becomes exactly the staged data.
            if ctx.history {
                self.write_history(ctx, &rt, &format!("{shadow} s"))?;
            }
            Counts { inserted: staged, ..Counts::default() }
        } else if ctx.compare {
            self.backend.execute(&format!(
                "INSERT INTO {stage_changes} (resource_type, fhir_version, id, before_hash) \
                 SELECT {rt}, s.fhir_version, s.id, t.content_hash FROM {shadow} s \
                 LEFT JOIN {t} t ON t.fhir_version = s.fhir_version AND t.id = s.id \
                 WHERE t.id IS NULL OR t.content_hash <> s.content_hash",
                stage_changes = d.t(STAGE_CHANGES),
            ))?;
            self.write_changes(ctx, &rt, &shadow)?;
            let gone = self.write_deletes(ctx, &rt, &t, &format!("{not_staged} AND {deletable}"))?;
            if ctx.history {
                self.write_history(ctx, &rt, &format!("{shadow} s"))?;
            }
            let (inserted, updated) = self.inserted_updated(ctx, &rt)?;
            // Rows before = re-read (staged but not inserted) + gone + kept.
            let kept = before.saturating_sub(staged.saturating_sub(inserted) + gone);
            Counts { inserted, updated, gone, kept }
        } else {
            let (not_staged, gone) = self.not_reread(&t, &not_staged, &deletable)?;
            let kept = not_staged.saturating_sub(gone);
            // Rows before = re-read + gone + kept; the rest of the staged rows are new.
            let inserted = staged.saturating_sub(before.saturating_sub(gone + kept));
            Counts { inserted, updated: 0, gone, kept }
        };
        if full_load {
            self.backend.execute(&format!("DELETE FROM {t}"))?;
        } else if counts.gone > 0 {
            self.backend.execute(&format!("DELETE FROM {t} AS t WHERE {not_staged} AND {deletable}"))?;
        }
        // `WHERE TRUE`: SQLite would read `ON CONFLICT` as a join constraint without it.
        self.backend.execute(&format!(
            "INSERT INTO {t} ({COLUMNS}) SELECT {COLUMNS} FROM {shadow} s WHERE TRUE \
             {UPSERT}, last_seen_run = excluded.last_seen_run"
        ))?;
        self.backend.batch(&format!("DROP TABLE {shadow}"))?;
        counts.add_to(m, staged, ctx.compare);
        Ok(())
    }

    /// Whether a row `t` not re-read may be deleted: its scope completed in this run, or a
    /// patient-less scope of its (version, dataset) completed and the row has no patient or its
    /// patient is in this run's cohort, or (with `on_cohort_exit = delete`) its patient left the
    /// cohort.
    ///
    /// A patient-less complete scope is a cohort-level read (a bulk export × type): it covers
    /// every row of the cohort, never rows of patients who left it (those are flagged exits,
    /// kept unless `on_cohort_exit = delete`). The cohort table is filled by
    /// `flag_cohort_exits`; an empty cohort covers patient-less rows only.
    pub(super) fn deletable_sql(&self, ctx: &Ctx) -> String {
        let d = self.d();
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
                ctx.run
            ));
        }
        match any.len() {
            1 => any.remove(0),
            _ => format!("({})", any.join(" OR ")),
        }
    }

    /// Writes the `I` and `U` change records of type `rt` (a literal) from the changes noted
    /// for it and the staged rows in `shadow`.
    pub(super) fn write_changes(&mut self, ctx: &Ctx, rt: &str, shadow: &str) -> Result<()> {
        let d = self.d().clone();
        let (run, now) = (&ctx.run, &ctx.now);
        // A key noted while staging may have been staged again since with the old content.
        self.backend.execute(&format!(
            "INSERT INTO {changes} (run_id, changed_at, operation, resource_type, fhir_version, id, patient_id, before_hash, after_hash) \
             SELECT {run}, {now}, CASE WHEN c.before_hash IS NULL THEN {insert} ELSE {update} END, {rt}, s.fhir_version, s.id, \
             s.patient_id, c.before_hash, s.content_hash \
             FROM {stage_changes} c JOIN {shadow} s ON s.fhir_version = c.fhir_version AND s.id = c.id \
             WHERE c.resource_type = {rt} AND (c.before_hash IS NULL OR c.before_hash <> s.content_hash)",
            changes = d.t(CHANGES),
            stage_changes = d.t(STAGE_CHANGES),
            insert = lit(ChangeOp::Insert.as_str()),
            update = lit(ChangeOp::Update.as_str()),
        ))?;
        Ok(())
    }

    /// Writes a `D` change record for every row `t` of `rows` matching `condition`; returns how many.
    pub(super) fn write_deletes(&mut self, ctx: &Ctx, rt: &str, rows: &str, condition: &str) -> Result<u64> {
        let changes = self.d().t(CHANGES);
        let (run, now) = (&ctx.run, &ctx.now);
        self.backend.execute(&format!(
            "INSERT INTO {changes} (run_id, changed_at, operation, resource_type, fhir_version, id, patient_id, before_hash, after_hash) \
             SELECT {run}, {now}, {delete}, {rt}, t.fhir_version, t.id, t.patient_id, t.content_hash, NULL \
             FROM {rows} t WHERE {condition}",
            delete = lit(ChangeOp::Delete.as_str()),
        ))
    }

    /// How many `I` and `U` records this run wrote for type `rt`.
    pub(super) fn inserted_updated(&mut self, ctx: &Ctx, rt: &str) -> Result<(u64, u64)> {
        let d = self.d().clone();
        let ops = self.backend.query(&format!(
            "SELECT operation, {} FROM {} WHERE run_id = {} AND resource_type = {rt} \
             AND operation IN ({}) GROUP BY operation",
            d.text("count(*)"),
            d.t(CHANGES),
            ctx.run,
            lit_list(&[ChangeOp::Insert, ChangeOp::Update], ChangeOp::as_str),
        ))?;
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

    /// How many rows `t` of `rows` match `not_reread`, and how many of those are `deletable`.
    pub(super) fn not_reread(&mut self, rows: &str, not_reread: &str, deletable: &str) -> Result<(u64, u64)> {
        let d = self.d().clone();
        let counts = self.backend.query(&format!(
            "SELECT {}, {} FROM {rows} t WHERE {not_reread}",
            d.text("count(*)"),
            d.text(&format!("COALESCE(SUM(CASE WHEN {deletable} THEN 1 ELSE 0 END), 0)"))
        ))?;
        let row = counts.first().map_or(&[][..], Vec::as_slice);
        Ok((self.cell(row, 0, "counting rows not re-read")?, self.cell(row, 1, "counting deletable rows")?))
    }

    /// Integer cell `i` of a query row; a missing cell or one that is not a number is an
    /// error.
    fn cell(&self, row: &[super::Cell], i: usize, what: &'static str) -> Result<u64> {
        super::number(row.get(i).and_then(|c| c.as_deref()), what, || self.backend.describe())
    }

    /// Whether `table` (a rows table) carries indexes or triggers fhirsync did not create.
    pub(super) fn has_user_objects(&mut self, table: &str) -> Result<bool> {
        match self.d().user_objects_sql(table) {
            Some(sql) => Ok(self.count("counting user indexes and triggers", &sql)? > 0),
            None => Ok(false),
        }
    }

    /// Type-2 history: closes the open version of updated/deleted rows (a full load: of every
    /// row, since the target is replaced) and opens a version for every staged row `s` of
    /// `staged` (a FROM clause) without an open one (new, updated, or never historised before).
    pub(super) fn write_history(&mut self, ctx: &Ctx, rt: &str, staged: &str) -> Result<()> {
        let d = self.d().clone();
        let (h, changes) = (d.t(HISTORY), d.t(CHANGES));
        let (run, now) = (&ctx.run, &ctx.now);
        let ops = lit_list(&[ChangeOp::Update, ChangeOp::Delete], ChangeOp::as_str);
        let closed = match ctx.method {
            Method::FullLoad => String::new(),
            _ => format!(
                " AND EXISTS (SELECT 1 FROM {changes} c \
                 WHERE c.run_id = {run} AND c.resource_type = {rt} AND c.operation IN ({ops}) \
                 AND c.fhir_version = h.fhir_version AND c.id = h.id)"
            ),
        };
        self.backend.execute(&format!(
            "UPDATE {h} AS h SET valid_to = {now}, valid_to_run = {run} \
             WHERE h.resource_type = {rt} AND h.valid_to IS NULL{closed}"
        ))?;
        self.backend.execute(&format!(
            "INSERT INTO {h} (resource_type, fhir_version, id, patient_id, content_hash, resource, valid_from, valid_from_run) \
             SELECT {rt}, s.fhir_version, s.id, s.patient_id, s.content_hash, s.resource, {now}, {run} \
             FROM {staged} WHERE NOT EXISTS (SELECT 1 FROM {h} h \
             WHERE h.resource_type = {rt} AND h.fhir_version = s.fhir_version AND h.id = s.id AND h.valid_to IS NULL)"
        ))?;
        Ok(())
    }
}

/// How one type's rows fared in a commit.
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) inserted: u64,
    pub(super) updated: u64,
    /// Rows not re-read that were deleted.
    pub(super) gone: u64,
    /// Rows not re-read that were kept.
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
