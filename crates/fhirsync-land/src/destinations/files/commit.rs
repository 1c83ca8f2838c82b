//! The commit of a file destination: build the new snapshot, then switch to it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use fhirsync_core::RunScope;
use fhirsync_views::View;
use serde::{Deserialize, Serialize};

use super::index::Index;
use super::layout::{mkdirs, remove_dir, sync_dir, write_atomic};
use super::staging::Staging;
use super::{ActiveRun, ChangeRow, Chunked, FileDestination, RowSink, RunRecord, SnapshotFormat};
use crate::config::{Method, OnCohortExit};
use crate::destination::RunMetrics;
use crate::destinations::sql::now;
use crate::{Error, Result};

/// File (inside a version's `_fhirsync/`) with the patients flagged as having left the cohort.
const EXITS_FILE: &str = "cohort_exits.json";

/// One flagged patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub first_flagged_run: String,
    pub last_flagged_run: String,
    pub flagged_at: String,
    pub rows_deleted: bool,
}

/// The scratch index's file inside the staging folder.
const INDEX_FILE: &str = "commit-index.sqlite";

impl<F: SnapshotFormat> FileDestination<F> {
    /// Writes the new snapshot and switches readers to it.
    ///
    /// Memory stays flat whatever the volume: rows stream from the staging files and the
    /// previous snapshot into the new one, the keys and completed scopes looked up per row are
    /// in an on-disk [`Index`], and change records and view rows are written in chunks.
    pub(super) fn apply(
        &mut self,
        run: &ActiveRun,
        staging: &Staging,
        scope: &RunScope,
        views: &[View],
        report: &serde_json::Value,
    ) -> Result<RunMetrics> {
        let now = now();
        let compare = run.method == Method::ReloadAndCompare;
        let carry = run.method != Method::FullLoad;
        let old_current = self.layout.current_version()?;
        let prev = if carry { old_current.clone() } else { None };
        let prev_dir = prev.as_ref().map(|v| self.layout.version(v));
        let index = Index::create(&staging.dir().join(INDEX_FILE))?;
        let add = |s: &fhirsync_core::ScopeKey| {
            index.add_complete(s.fhir_version.as_str(), s.patient_id.as_deref(), &s.dataset.to_string())
        };
        staging.for_each_completed(&mut |s| add(&s))?;
        for s in &scope.complete {
            add(s)?;
        }
        let evaluate_exits = carry && !scope.cohort.is_empty();
        if carry && scope.cohort.is_empty() {
            tracing::warn!("Run has an empty cohort; cohort exits are not evaluated.");
        }
        let delete_exits = run.options.on_cohort_exit == OnCohortExit::Delete;

        let tmp = self.layout.versions().join(format!(".{}.tmp", run.id));
        remove_dir(&tmp)?;
        mkdirs(&tmp.join("_fhirsync"))?;
        let mut types: BTreeSet<String> = staging.types()?.into_iter().collect();
        if let Some(dir) = &prev_dir {
            types.extend(self.format.types_in(dir)?);
        }

        let mut m =
            RunMetrics { run_id: run.id.clone(), method: run.method.as_str().into(), ..Default::default() };
        let mut changes = match compare {
            true => {
                let dir = self.layout.changes(&run.id);
                remove_dir(&dir)?;
                mkdirs(&dir)?;
                Some(Chunked::new(self.format.changes_sink(&dir)?))
            }
            false => None,
        };
        let mut flagged: BTreeSet<String> = BTreeSet::new();
        for t in &types {
            // Pass 1: index the staged rows (later copies win).
            index.next_type()?;
            staging
                .scan(t, &mut |line, row| index.stage(&row.fhir_version, &row.id, line, &row.content_hash))?;
            let path = self.format.type_path(&tmp, t);
            let mut sink: Option<Box<dyn RowSink>> = None;
            let write = |sink: &mut Option<Box<dyn RowSink>>, row: &super::Row| -> Result<()> {
                if sink.is_none() {
                    *sink = Some(self.format.writer(&path)?);
                }
                sink.as_mut().map_or(Ok(()), |s| s.write(row))
            };
            let change =
                |op: &str, row: &super::Row, before: Option<String>, after: Option<String>| ChangeRow {
                    run_id: run.id.clone(),
                    changed_at: now.clone(),
                    operation: op.into(),
                    resource_type: t.clone(),
                    fhir_version: row.fhir_version.clone(),
                    id: row.id.clone(),
                    patient_id: row.patient_id.clone(),
                    before_hash: before,
                    after_hash: after,
                };
            // The previous snapshot: remember old hashes, carry over or delete the rest.
            if let Some(dir) = &prev_dir {
                let old_path = self.format.type_path(dir, t);
                if old_path.exists() {
                    self.format.read(&old_path, &mut |row| {
                        if index.mark_old(
                            &row.fhir_version,
                            &row.id,
                            &row.content_hash,
                            &row.first_seen_run,
                        )? {
                            return Ok(());
                        }
                        let exited = evaluate_exits
                            && row.patient_id.as_ref().is_some_and(|p| !scope.cohort.contains(p));
                        if exited && let Some(p) = &row.patient_id {
                            flagged.insert(p.clone());
                        }
                        // Its own scope completed, or a cohort-level (patient-less) scope of
                        // its dataset did and the row has no patient or one in the cohort.
                        let in_cohort = row.patient_id.as_ref().is_none_or(|p| scope.cohort.contains(p));
                        let deletable =
                            index.is_complete(&row.fhir_version, row.patient_id.as_deref(), &row.dataset)?
                                || (in_cohort && index.is_complete(&row.fhir_version, None, &row.dataset)?)
                                || (exited && delete_exits);
                        if deletable {
                            m.deleted += 1;
                            if let Some(c) = changes.as_mut() {
                                c.push(change("D", &row, Some(row.content_hash.clone()), None).cells())?;
                            }
                            Ok(())
                        } else {
                            m.kept += 1;
                            write(&mut sink, &row)
                        }
                    })?;
                }
            }
            // Pass 2: the staged rows, in staging order, skipping superseded copies.
            staging.scan(t, &mut |line, mut row| {
                let Some(s) = index.get(&row.fhir_version, &row.id)? else { return Ok(()) };
                if s.line != line {
                    return Ok(());
                }
                m.staged += 1;
                let op = match s.old {
                    None => {
                        m.inserted += 1;
                        Some(("I", None))
                    }
                    Some((old_hash, first_seen)) => {
                        row.first_seen_run = first_seen;
                        if !compare {
                            None
                        } else if old_hash != s.hash {
                            m.updated += 1;
                            Some(("U", Some(old_hash)))
                        } else {
                            m.unchanged += 1;
                            None
                        }
                    }
                };
                if let (Some(c), Some((op, before))) = (changes.as_mut(), op) {
                    c.push(change(op, &row, before, Some(s.hash)).cells())?;
                }
                write(&mut sink, &row)
            })?;
            if let Some(sink) = sink {
                sink.finish()?;
            }
        }
        drop(index);

        m.cohort_exits = flagged.len() as u64;
        let exits = self.next_exits(
            prev_dir.as_deref(),
            scope,
            evaluate_exits,
            &flagged,
            &run.id,
            &now,
            delete_exits,
        )?;
        let exits_json = serde_json::to_vec_pretty(&exits)
            .map_err(|source| Error::Json { action: "encoding cohort exits", source })?;
        write_atomic(&tmp.join("_fhirsync").join(EXITS_FILE), &exits_json)?;
        if let Some(c) = changes {
            c.finish()?;
        }
        m.view_rows = self.materialise_views(&tmp, views)?;

        let record = RunRecord {
            run_id: run.id.clone(),
            method: run.method.as_str().into(),
            status: crate::destination::committed_status(scope).into(),
            started_at: String::new(),
            ended_at: Some(now.clone()),
            metrics: Some(m.clone()),
            errors: None,
            report: Some(report.clone()),
        };
        let record_json = serde_json::to_vec_pretty(&record)
            .map_err(|source| Error::Json { action: "encoding the run record", source })?;
        write_atomic(&tmp.join("_fhirsync").join("run.json"), &record_json)?;
        sync_dir(&tmp);

        // Publish: rename the finished folder into place, then switch (the commit point).
        let final_dir = self.layout.version(&run.id);
        remove_dir(&final_dir)?;
        fs::rename(&tmp, &final_dir).map_err(Error::io("publishing a snapshot", &final_dir))?;
        sync_dir(&self.layout.versions());
        self.layout.switch_to(&run.id)?;

        let mut runs = self.load_runs()?;
        if let Some(r) = runs.iter_mut().find(|r| r.run_id == run.id) {
            let started_at = std::mem::take(&mut r.started_at);
            *r = RunRecord { started_at, ..record };
        }
        self.save_runs(&runs)?;
        remove_dir(staging.dir())?;
        self.prune_versions(&run.id, old_current.as_deref())?;
        Ok(m)
    }

    /// The cohort-exit list of the new snapshot: patients found outside the cohort in this run,
    /// plus earlier flags of patients still outside it.
    #[allow(clippy::too_many_arguments)]
    fn next_exits(
        &self,
        prev_dir: Option<&std::path::Path>,
        scope: &RunScope,
        evaluate: bool,
        flagged: &BTreeSet<String>,
        run_id: &str,
        now: &str,
        rows_deleted: bool,
    ) -> Result<BTreeMap<String, ExitRecord>> {
        let mut exits: BTreeMap<String, ExitRecord> = match prev_dir {
            Some(dir) => read_exits(&dir.join("_fhirsync").join(EXITS_FILE))?,
            None => BTreeMap::new(),
        };
        if !evaluate {
            return Ok(exits);
        }
        exits.retain(|p, _| !scope.cohort.contains(p));
        for p in flagged {
            let first = exits.get(p).map_or_else(|| run_id.to_string(), |e| e.first_flagged_run.clone());
            exits.insert(
                p.clone(),
                ExitRecord {
                    first_flagged_run: first,
                    last_flagged_run: run_id.into(),
                    flagged_at: now.into(),
                    rows_deleted,
                },
            );
        }
        Ok(exits)
    }

    /// Keeps the new version and the one before it (a reader may still be reading it).
    fn prune_versions(&self, current: &str, prev: Option<&str>) -> Result<()> {
        let dir = self.layout.versions();
        for entry in fs::read_dir(&dir).map_err(Error::io("listing versions", &dir))? {
            let entry = entry.map_err(Error::io("listing versions", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name != current && Some(name.as_str()) != prev && !name.starts_with('.') {
                remove_dir(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// Reads a cohort-exit file (empty if missing).
pub(crate) fn read_exits(path: &std::path::Path) -> Result<BTreeMap<String, ExitRecord>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Error::CorruptState { path: path.to_path_buf(), detail: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(Error::io("reading cohort exits", path)(e)),
    }
}
