//! The commit transaction of the SQL engine (see the parent module for the protocol).

use std::collections::BTreeSet;

use fhirsync_core::RunScope;
use fhirsync_views::View;

use super::schema::{CHANGES, COHORT, EXITS, HISTORY, RUNS, STAGE, STAGE_SCOPES, TYPES, lit, type_table};
use super::{SqlBackend, SqlDestination, insert_scopes_sql, now};
use crate::config::{Method, OnCohortExit};
use crate::destination::RunMetrics;
use crate::{Error, Result};

/// Names and literals used by every statement of one commit.
struct Ctx {
    run: String,
    now: String,
    delete_exits: bool,
    compare: bool,
    history: bool,
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
        let ctx = Ctx {
            run: lit(&run.id),
            now: d.ts_lit(&now()),
            delete_exits: run.options.on_cohort_exit == OnCohortExit::Delete,
            compare: run.method == Method::ReloadAndCompare,
            history: run.options.history && run.method == Method::ReloadAndCompare,
        };
        let complete: Vec<_> = scope.complete.iter().cloned().collect();
        let sql = insert_scopes_sql(&d, &run.id, &complete);
        if !sql.is_empty() {
            self.backend.batch(&sql)?;
        }

        // Resource-type tables: registered ones plus every staged type.
        let mut types: BTreeSet<(String, String)> = self.registered_types()?.into_iter().collect();
        let staged_types =
            self.backend.query(&format!("SELECT DISTINCT resource_type FROM {}", d.t(STAGE)))?;
        let staged_types: BTreeSet<String> =
            staged_types.into_iter().filter_map(|r| r.into_iter().next()?).collect();
        for t in &staged_types {
            let table = type_table(t)?;
            if types.insert((t.clone(), table.clone())) {
                self.backend.batch(&d.type_table_ddl(&table))?;
                self.backend.execute(&format!(
                    "INSERT INTO {} (resource_type, table_name) VALUES ({}, {}) ON CONFLICT DO NOTHING",
                    d.t(TYPES),
                    lit(t),
                    lit(&table)
                ))?;
            }
        }
        if run.method == Method::FullLoad {
            // Full load: the target becomes exactly the staged data.
            for (t, table) in std::mem::take(&mut types) {
                if staged_types.contains(&t) {
                    self.backend.execute(&format!("DELETE FROM {}", d.t(&table)))?;
                    types.insert((t, table));
                } else {
                    self.backend.batch(&format!(
                        "DROP TABLE IF EXISTS {}; DELETE FROM {} WHERE resource_type = {};",
                        d.t(&table),
                        d.t(TYPES),
                        lit(&t)
                    ))?;
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
            self.apply_type(&ctx, t, table, &mut m)?;
        }
        m.view_rows = self.materialise_views(run, views)?;

        let report = serde_json::to_string(report)
            .map_err(|source| Error::Json { action: "storing the run report", source })?;
        self.backend.execute(&format!(
            "UPDATE {runs} SET status = 'succeeded', ended_at = {now}, staged = {}, inserted = {}, updated = {}, \
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
            now = ctx.now,
            run = ctx.run,
        ))?;
        self.backend.batch(&format!(
            "DELETE FROM {}; DELETE FROM {}; DELETE FROM {};",
            d.t(STAGE),
            d.t(STAGE_SCOPES),
            d.t(COHORT)
        ))?;
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
            self.backend.execute(&format!(
                "INSERT INTO {exits} (patient_id, first_flagged_run, last_flagged_run, flagged_at, rows_deleted) \
                 SELECT DISTINCT t.patient_id, {run}, {run}, {now}, {del} FROM {t} t \
                 WHERE t.patient_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {cohort} c WHERE c.patient_id = t.patient_id) \
                 ON CONFLICT (patient_id) DO UPDATE SET last_flagged_run = excluded.last_flagged_run, \
                 flagged_at = excluded.flagged_at, rows_deleted = excluded.rows_deleted",
                exits = d.t(EXITS),
                run = ctx.run,
                now = ctx.now,
                del = if ctx.delete_exits { "TRUE" } else { "FALSE" },
                t = d.t(table),
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
        self.count(&format!("SELECT {text} FROM {} WHERE last_flagged_run = {}", d.t(EXITS), ctx.run))
    }

    /// Applies one resource type: change records, deletes, upserts, counts.
    fn apply_type(&mut self, ctx: &Ctx, resource_type: &str, table: &str, m: &mut RunMetrics) -> Result<()> {
        let d = self.d().clone();
        let (t, stage, changes) = (d.t(table), d.t(STAGE), d.t(CHANGES));
        let rt = lit(resource_type);
        let run = &ctx.run;
        let now = &ctx.now;
        // Keys of rows that were not re-read. Only key columns are read, so both databases can
        // answer from the primary-key indexes instead of scanning the (wide) table rows.
        let not_staged = format!(
            "(t.fhir_version, t.id) IN (SELECT u.fhir_version, u.id FROM {t} u WHERE NOT EXISTS (SELECT 1 FROM {stage} s \
             WHERE s.resource_type = {rt} AND s.fhir_version = u.fhir_version AND s.id = u.id))"
        );
        let mut deletable = format!(
            "EXISTS (SELECT 1 FROM {scopes} c WHERE c.fhir_version = t.fhir_version \
             AND c.patient_id = COALESCE(t.patient_id, '') AND c.dataset = t.dataset)",
            scopes = d.t(STAGE_SCOPES)
        );
        if ctx.delete_exits {
            deletable = format!(
                "({deletable} OR t.patient_id IN (SELECT patient_id FROM {} WHERE last_flagged_run = {run}))",
                d.t(EXITS)
            );
        }
        let text = d.text("count(*)");
        let staged = self.count(&format!("SELECT {text} FROM {stage} WHERE resource_type = {rt}"))?;
        m.staged += staged;

        if ctx.compare {
            self.backend.execute(&format!(
                "INSERT INTO {changes} (run_id, changed_at, operation, resource_type, fhir_version, id, patient_id, before_hash, after_hash) \
                 SELECT {run}, {now}, CASE WHEN t.id IS NULL THEN 'I' ELSE 'U' END, s.resource_type, s.fhir_version, s.id, \
                 s.patient_id, t.content_hash, s.content_hash \
                 FROM {stage} s LEFT JOIN {t} t ON t.fhir_version = s.fhir_version AND t.id = s.id \
                 WHERE s.resource_type = {rt} AND (t.id IS NULL OR t.content_hash <> s.content_hash)"
            ))?;
            self.backend.execute(&format!(
                "INSERT INTO {changes} (run_id, changed_at, operation, resource_type, fhir_version, id, patient_id, before_hash, after_hash) \
                 SELECT {run}, {now}, 'D', {rt}, t.fhir_version, t.id, t.patient_id, t.content_hash, NULL \
                 FROM {t} t WHERE {not_staged} AND {deletable}"
            ))?;
            if ctx.history {
                self.write_history(ctx, resource_type)?;
            }
        }
        // Reload-and-compare already knows its deletes from the change records (an index
        // lookup per delete instead of a second scan of the table).
        let delete = if ctx.compare {
            format!(
                "DELETE FROM {t} WHERE (fhir_version, id) IN (SELECT fhir_version, id FROM {changes} \
                 WHERE run_id = {run} AND resource_type = {rt} AND operation = 'D')"
            )
        } else {
            format!("DELETE FROM {t} AS t WHERE {not_staged} AND {deletable}")
        };
        m.deleted += self.backend.execute(&delete)?;
        // Staged rows the table does not hold yet (all of them after a full load's DELETE).
        let new_rows = if ctx.compare {
            0
        } else {
            self.count(&format!(
                "SELECT {text} FROM {stage} s WHERE s.resource_type = {rt} \
                 AND NOT EXISTS (SELECT 1 FROM {t} t WHERE t.fhir_version = s.fhir_version AND t.id = s.id)"
            ))?
        };
        self.backend.execute(&format!(
            "INSERT INTO {t} (id, patient_id, fhir_version, source, dataset, content_hash, resource, first_seen_run, last_seen_run) \
             SELECT s.id, s.patient_id, s.fhir_version, s.source, s.dataset, s.content_hash, {json}, {run}, {run} \
             FROM {stage} s WHERE s.resource_type = {rt} \
             ON CONFLICT (fhir_version, id) DO UPDATE SET patient_id = excluded.patient_id, source = excluded.source, \
             dataset = excluded.dataset, content_hash = excluded.content_hash, resource = excluded.resource, \
             last_seen_run = excluded.last_seen_run",
            json = d.to_json("s.resource"),
        ))?;
        // Every staged row is now in the table (one per key), so the rest were kept; counting
        // rows reads an index, not the table.
        let rows = self.count(&format!("SELECT {text} FROM {t}"))?;
        m.kept += rows.saturating_sub(staged);
        if ctx.compare {
            let rows = self.backend.query(&format!(
                "SELECT operation, {text} FROM {changes} WHERE run_id = {run} AND resource_type = {rt} GROUP BY operation"
            ))?;
            let (mut ins, mut upd) = (0, 0);
            for row in rows {
                let n: u64 = row.get(1).and_then(|c| c.as_deref()).and_then(|s| s.parse().ok()).unwrap_or(0);
                match row.first().and_then(|c| c.as_deref()) {
                    Some("I") => ins = n,
                    Some("U") => upd = n,
                    _ => {}
                }
            }
            m.inserted += ins;
            m.updated += upd;
            m.unchanged += staged.saturating_sub(ins + upd);
        } else {
            m.inserted += new_rows;
        }
        Ok(())
    }

    /// Type-2 history: closes the open version of updated/deleted rows and opens a version for
    /// every staged row without an open one (new, updated, or never historised before).
    fn write_history(&mut self, ctx: &Ctx, resource_type: &str) -> Result<()> {
        let d = self.d().clone();
        let (h, stage, changes) = (d.t(HISTORY), d.t(STAGE), d.t(CHANGES));
        let (run, now, rt) = (&ctx.run, &ctx.now, lit(resource_type));
        self.backend.execute(&format!(
            "UPDATE {h} AS h SET valid_to = {now}, valid_to_run = {run} \
             WHERE h.resource_type = {rt} AND h.valid_to IS NULL AND EXISTS (SELECT 1 FROM {changes} c \
             WHERE c.run_id = {run} AND c.resource_type = {rt} AND c.operation IN ('U', 'D') \
             AND c.fhir_version = h.fhir_version AND c.id = h.id)"
        ))?;
        self.backend.execute(&format!(
            "INSERT INTO {h} (resource_type, fhir_version, id, patient_id, content_hash, resource, valid_from, valid_from_run) \
             SELECT s.resource_type, s.fhir_version, s.id, s.patient_id, s.content_hash, {json}, {now}, {run} \
             FROM {stage} s WHERE s.resource_type = {rt} AND NOT EXISTS (SELECT 1 FROM {h} h \
             WHERE h.resource_type = {rt} AND h.fhir_version = s.fhir_version AND h.id = s.id AND h.valid_to IS NULL)",
            json = d.to_json("s.resource"),
        ))?;
        Ok(())
    }
}
