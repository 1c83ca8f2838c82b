//! What a run writes into each table (see the module docs of `delta` for the model).
//!
//! Per type table:
//! 1. plan (`plan.rs`): join the keys of the staged lines with the key columns of the table's
//!    files, by key group, into the decisions: which staged lines to write (and their
//!    `first_seen_run`), which old rows change, and so which files are touched (every file,
//!    for full-load and reload);
//! 2. one bucket at a time (`rows.rs`): write the bucket's staged lines that the plan names,
//!    then rewrite its touched files with only the rows that stay (reload-and-compare keeps
//!    the unchanged and kept ones, reload only the kept ones), into one new data file, with
//!    the change data feed rows of a reload-and-compare that touched files;
//! 3. commit: remove the touched files, add the new ones.
//!
//! So the staged resources are read once (the plan reads only the heads), and memory holds one
//! key group and one bucket's decisions, never the table. The counts and flagged patients of a
//! table are saved before its commit, so a commit restarted after a crash reuses them for the
//! tables already committed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use deltalake::kernel::Action;
use deltalake::protocol::{DeltaOperation, SaveMode};
use fhirsync_core::{RunScope, ScopeKey};
use fhirsync_views::View;
use serde::{Deserialize, Serialize};

use super::plan::{Change, Ctx, Interner, Plan, Write, scope_key};
use super::rows::{BucketFiles, file_schema};
use super::store::{BUCKET, DataFile, NewTable, SOURCE_PROPERTY, Table, Tables, run_version};
use super::views::{ChangeLog, Changes, Source};
use super::writer::DeltaDestination;
use super::{load, plan, staged};
use crate::config::{Method, OnCohortExit};
use crate::destination::RunMetrics;
use crate::destinations::files::commit::{ExitRecord, read_exits};
use crate::destinations::files::layout::{remove_dir, write_atomic};
use crate::destinations::files::run_book::ActiveRun;
use crate::destinations::files::staging::Staging;
use crate::destinations::sql::schema::type_table;
use crate::{Error, Result};

/// File (inside a state's `_fhirsync/`) with the patients flagged as having left the cohort.
const EXITS_FILE: &str = "cohort_exits.json";
/// A bucket's planned lines are read with one sequential read of its staging file when they
/// are at least 1/`SPARSE_SHARE` of its bytes, else one by one.
const SPARSE_SHARE: u64 = 8;

/// `schema` with the partition column `bucket`.
pub(super) fn with_bucket(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(BUCKET, DataType::Int32, false));
    Arc::new(Schema::new(fields))
}

/// The saved outcome of one table's apply (written before its commit).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct TableResult {
    /// Staged bytes of the type when it was applied: a resumed run that staged more re-applies.
    #[serde(default)]
    pub staged_bytes: u64,
    pub metrics: RunMetrics,
    pub flagged: BTreeSet<String>,
    /// Whether any row was inserted, updated or deleted (views over it are rebuilt).
    pub changed: bool,
}

pub(super) fn overwrite_op() -> DeltaOperation {
    DeltaOperation::Write {
        mode: SaveMode::Overwrite,
        partition_by: Some(vec![BUCKET.to_string()]),
        predicate: None,
    }
}

pub(super) fn merge_op() -> DeltaOperation {
    DeltaOperation::Merge {
        predicate: None,
        merge_predicate: Some("target.fhir_version = source.fhir_version AND target.id = source.id".into()),
        matched_predicates: Vec::new(),
        not_matched_predicates: Vec::new(),
        not_matched_by_source_predicates: Vec::new(),
    }
}

/// The run's inputs for its tables.
fn run_ctx<'a>(run: &'a ActiveRun, staging: &Staging, scope: &'a RunScope) -> Result<Ctx<'a>> {
    let carry = run.method != Method::FullLoad;
    let evaluate_exits = carry && !scope.cohort.is_empty();
    if carry && scope.cohort.is_empty() {
        tracing::warn!("Run has an empty cohort; cohort exits are not evaluated.");
    }
    let key =
        |s: &ScopeKey| scope_key(s.fhir_version.as_str(), s.patient_id.as_deref(), &s.dataset.to_string());
    let mut complete: HashSet<_> = scope.complete.iter().map(key).collect();
    staging.for_each_completed(&mut |s| {
        complete.insert(key(&s));
        Ok(())
    })?;
    Ok(Ctx {
        run_id: &run.id,
        method: run.method,
        scope,
        complete,
        evaluate_exits,
        delete_exits: run.options.on_cohort_exit == OnCohortExit::Delete,
    })
}

impl DeltaDestination {
    /// Commits every type table and view of the run; returns its counts.
    pub(super) fn apply(
        &mut self,
        run: &ActiveRun,
        staging: &Staging,
        scope: &RunScope,
        views: &[View],
    ) -> Result<RunMetrics> {
        let ctx = run_ctx(run, staging, scope)?;
        let results_dir = self.layout.meta().join("commits").join(&run.id);
        // Scratch files of this commit only (a restarted commit starts them again).
        let work = self.layout.meta().join("work");
        remove_dir(&work)?;
        let mut m =
            RunMetrics { run_id: run.id.clone(), method: run.method.as_str().into(), ..Default::default() };
        let mut flagged = BTreeSet::new();
        let mut changed = HashSet::new();
        let mut logs: HashMap<String, Changes> = HashMap::new();
        for (t, stems) in self.type_stems(staging)? {
            let name = type_table(&t)?;
            let mut table = self.store.block_on(self.store.open(&name))?;
            let stems = match stems {
                Some(stems) => stems,
                None => {
                    let buckets = table.buckets(self.buckets)?;
                    (0..buckets).map(|b| staged::stem(&t, b as i32, buckets)).collect()
                }
            };
            let path = results_dir.join(format!("{name}.json"));
            let (r, log) = apply_type(&ctx, &self.store, staging, &stems, &mut table, &work, &path)?;
            add_counts(&mut m, &r.metrics);
            flagged.extend(r.flagged);
            if r.changed {
                changed.insert(t.clone());
            }
            if let Some(log) = log {
                logs.insert(t.clone(), log);
            }
        }
        m.cohort_exits = flagged.len() as u64;
        for view in views {
            let source = match (changed.contains(view.resource()), logs.get(view.resource())) {
                (false, _) => Source::Unchanged,
                (true, Some(changes)) => Source::Changed(changes),
                (true, None) => Source::Replaced,
            };
            m.view_rows += self.apply_view(&ctx, view, source, &results_dir, &work)?;
        }
        self.save_exits(&ctx, &flagged, &run.id)?;
        remove_dir(&work)?;
        Ok(m)
    }

    /// Every type staged (with its staging stems) or already landed (`None`: nothing staged).
    fn type_stems(&self, staging: &Staging) -> Result<BTreeMap<String, Option<Vec<String>>>> {
        let tables = &self.store;
        let mut types: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
        for stem in staging.types()? {
            if staged::parse_keys_stem(&stem).is_some() {
                continue;
            }
            let (t, _, buckets) = staged::parse_stem(&stem).ok_or_else(|| Error::CorruptState {
                path: staging.dir().to_path_buf(),
                detail: format!("staging file `{stem}` is not a Delta bucket file"),
            })?;
            types.insert(
                t.to_string(),
                Some((0..buckets).map(|b| staged::stem(t, b as i32, buckets)).collect()),
            );
        }
        for name in tables.block_on(tables.table_names())? {
            if name.starts_with("view_") {
                continue;
            }
            let t = tables.block_on(tables.open(&name))?;
            if let Some(source) = t.property(SOURCE_PROPERTY)? {
                types.entry(source).or_insert(None);
            }
        }
        Ok(types)
    }

    /// Updates `_fhirsync/cohort_exits.json` as the file destinations do.
    fn save_exits(&self, ctx: &Ctx<'_>, flagged: &BTreeSet<String>, run_id: &str) -> Result<()> {
        let path = self.layout.meta().join(EXITS_FILE);
        let mut exits = read_exits(&path)?;
        if !ctx.evaluate_exits {
            return Ok(());
        }
        let now = crate::destinations::sql::now();
        exits.retain(|p, _| !ctx.scope.cohort.contains(p));
        for p in flagged {
            let first = exits.get(p).map_or_else(|| run_id.to_string(), |e| e.first_flagged_run.clone());
            exits.insert(
                p.clone(),
                ExitRecord {
                    first_flagged_run: first,
                    last_flagged_run: run_id.into(),
                    flagged_at: now.clone(),
                    rows_deleted: ctx.delete_exits,
                },
            );
        }
        let json = serde_json::to_vec_pretty(&exits)
            .map_err(|source| Error::Json { action: "encoding cohort exits", source })?;
        write_atomic(&path, &json)
    }
}

fn add_counts(m: &mut RunMetrics, t: &RunMetrics) {
    m.staged += t.staged;
    m.inserted += t.inserted;
    m.updated += t.updated;
    m.deleted += t.deleted;
    m.unchanged += t.unchanged;
    m.kept += t.kept;
    m.view_rows += t.view_rows;
}

pub(super) fn save_result(path: &Path, r: &TableResult) -> Result<()> {
    let json =
        serde_json::to_vec(r).map_err(|source| Error::Json { action: "encoding a table result", source })?;
    write_atomic(path, &json)
}

/// The saved result of a table this run already committed (a commit restarted after a crash).
pub(super) fn already_committed(
    ctx: &Ctx<'_>,
    tables: &Tables,
    table: &Table,
    path: &Path,
) -> Result<Option<TableResult>> {
    let version = run_version(ctx.run_id)?;
    if tables.block_on(table.txn_version())?.is_none_or(|v| v < version) {
        return Ok(None);
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        // No saved result: apply the table again (the rerun converges to the same rows).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io("reading a committed table's result", path)(e)),
    };
    let corrupt =
        |e: serde_json::Error| Error::CorruptState { path: path.to_path_buf(), detail: e.to_string() };
    serde_json::from_slice(&bytes).map(Some).map_err(corrupt)
}

/// Applies the staged rows of a type (in `stems`, one per bucket) to its table; see the
/// module docs.
fn apply_type(
    ctx: &Ctx<'_>,
    tables: &Tables,
    staging: &Staging,
    stems: &[String],
    table: &mut Table,
    work: &Path,
    result_path: &Path,
) -> Result<(TableResult, Option<Changes>)> {
    let buckets = stems.len() as u32;
    if table.exists && table.buckets(buckets)? != buckets {
        return Err(Error::CorruptState {
            path: staging.dir().to_path_buf(),
            detail: format!(
                "staged in {buckets} buckets for table `{}` of {}",
                table.name,
                table.buckets(buckets)?
            ),
        });
    }
    let staged_bytes = plan::staged_bytes(staging, stems)?;
    if let Some(done) = already_committed(ctx, tables, table, result_path)?
        && done.staged_bytes == staged_bytes
    {
        tracing::info!(table = %table.name, "Table already committed by this run before a restart; skipped.");
        return Ok((done, None));
    }
    let files = table.files()?;
    let work = work.join(&table.name);
    let applied = if ctx.method == Method::FullLoad {
        let (mut actions, metrics) = load::full_load(ctx, tables, table, staging, stems, &work)?;
        actions.extend(files.iter().map(|f| Action::Remove(f.remove.clone())));
        Applied { actions, metrics, flagged: BTreeSet::new(), changes: None }
    } else {
        let prev_run = tables.block_on(table.latest_run())?;
        let keys = staged::keys_stem(&source_of(stems));
        let prev_run = prev_run.as_deref();
        let input =
            plan::Inputs { tables, table, staging, stems, keys: &keys, files: &files, prev_run, work: &work };
        carry(ctx, &input, &work.with_file_name(format!("{}.changes", table.name)))?
    };
    let Applied { actions, metrics: m, flagged, changes } = applied;
    remove_dir(&work)?;
    let compare = ctx.compare();
    let changed = m.inserted + m.updated + m.deleted > 0 || (!compare && (!files.is_empty() || m.staged > 0));
    let result = TableResult { staged_bytes, metrics: m, flagged, changed };
    save_result(result_path, &result)?;
    let schema = with_bucket(&file_schema());
    let resource_type = table.property(SOURCE_PROPERTY)?.unwrap_or_else(|| source_of(stems));
    let new = NewTable { source: &resource_type, schema: &schema, buckets, signature: None };
    let op = if compare { merge_op() } else { overwrite_op() };
    tables.block_on(table.commit(ctx.run_id, ctx.method.as_str(), actions, &new, op))?;
    Ok((result, changes))
}

/// The resource type of a type's staging stems.
fn source_of(stems: &[String]) -> String {
    stems.first().and_then(|s| staged::parse_stem(s)).map(|(t, _, _)| t.to_string()).unwrap_or_default()
}

/// What a table's apply writes: the actions (removed and added files), the counts, the
/// flagged patients and, for a reload-and-compare, the changed resources for its views.
struct Applied {
    actions: Vec<Action>,
    metrics: RunMetrics,
    flagged: BTreeSet<String>,
    changes: Option<Changes>,
}

/// A reload or reload-and-compare of one type table: plans, then writes bucket by bucket (a
/// reload-and-compare logs its changed resources in `log_dir`).
fn carry(ctx: &Ctx<'_>, input: &plan::Inputs<'_>, log_dir: &Path) -> Result<Applied> {
    let (tables, table, files) = (input.tables, input.table, input.files);
    let mut plan = plan::plan(ctx, input)?;
    let cdc = ctx.compare() && !plan.touched.is_empty();
    let mut actions: Vec<Action> =
        plan.touched.iter().map(|&i| Action::Remove(files[i as usize].remove.clone())).collect();
    let mut log = if ctx.compare() { Some(ChangeLog::create(log_dir)?) } else { None };
    for (bucket, stem) in input.stems.iter().enumerate() {
        let out = BucketFiles::new(tables, table, ctx.run_id, bucket as i32, cdc).with_log(log.as_mut());
        actions.extend(write_bucket(ctx, input, &mut plan, bucket, stem, out)?);
    }
    let changes = log.map(ChangeLog::finish).transpose()?;
    Ok(Applied { actions, metrics: plan.metrics, flagged: plan.flagged, changes })
}

/// One bucket's pass: its staged lines the plan writes, then its files with changed rows;
/// returns the actions of the files written.
fn write_bucket(
    ctx: &Ctx<'_>,
    input: &plan::Inputs<'_>,
    plan: &mut Plan,
    bucket: usize,
    stem: &str,
    mut out: BucketFiles<'_>,
) -> Result<Vec<Action>> {
    let mut writes = plan.writes.take(bucket)?;
    writes.sort_unstable_by_key(|w| w.seq);
    let mut fixes = plan.fixes.take(bucket)?;
    fixes.sort_unstable_by_key(|f| (f.file, f.row));
    if writes.is_empty() && fixes.is_empty() {
        return Ok(Vec::new());
    }
    write_planned(&input.staging.file(stem), &mut out, &plan.strings, &writes)?;
    let keep_others = ctx.compare();
    for chunk in fixes.chunk_by(|a, b| a.file == b.file) {
        let file: &DataFile = &input.files[chunk[0].file as usize];
        let mut it = chunk.iter().copied().peekable();
        let mut batches = input.tables.block_on(input.table.read(&file.path, None))?;
        let mut row = 0u32;
        while let Some(batch) = input.tables.block_on(batches.next())? {
            out.rewrite(&batch, row, &mut it, keep_others, &plan.strings, &input.table.name)?;
            row += batch.num_rows() as u32;
        }
    }
    out.finish()
}

/// Chooses a staged line by its head, offset and bytes.
pub(super) type Pick<'p> = dyn FnMut(&staged::Head<'_>, u64, &[u8]) -> Result<bool> + 'p;

/// Writes the staged lines of bucket file `path` that `pick(head, offset, line)` chooses, in
/// one sequential read, as new rows of this run.
pub(super) fn write_all_lines(
    path: &Path,
    out: &mut BucketFiles<'_>,
    strings: &Interner,
    pick: &mut Pick<'_>,
) -> Result<()> {
    staged::scan(path, &mut |offset, line| {
        let corrupt = |detail: String| Error::CorruptState { path: path.to_path_buf(), detail };
        let (head, resource) = staged::parse(line).map_err(corrupt)?;
        if !pick(&head, offset, line)? {
            return Ok(());
        }
        let resource = staged::resource_text(resource).map_err(corrupt)?;
        out.stage(&head, resource, plan::NONE, Change::None, strings)
    })
}

/// Writes the planned lines `writes` (in `seq` order) of bucket file `path`: with one
/// sequential read when they are a good share of the file, else reading only them.
fn write_planned(path: &Path, out: &mut BucketFiles<'_>, strings: &Interner, writes: &[Write]) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    let corrupt = |detail: String| Error::CorruptState { path: path.to_path_buf(), detail };
    let mut write = |line: &[u8], w: &Write| -> Result<()> {
        let (head, resource) = staged::parse(line).map_err(corrupt)?;
        if head.seq() != w.seq {
            return Err(corrupt("a staged line moved during the commit".into()));
        }
        let resource = staged::resource_text(resource).map_err(corrupt)?;
        out.stage(&head, resource, w.first_seen, w.change, strings)
    };
    let wanted: u64 = writes.iter().map(|w| u64::from(w.len) + 1).sum();
    if wanted * SPARSE_SHARE >= staged::file_len(path)? {
        let mut next = writes.iter().peekable();
        staged::scan(path, &mut |_, line| match next.next_if(|w| Some(w.seq) == staged::seq_of(line)) {
            Some(w) => write(line, w),
            None => Ok(()),
        })?;
        if next.peek().is_none() {
            return Ok(());
        }
        return Err(corrupt("a staged line went missing during the commit".into()));
    }
    let file = std::fs::File::open(path).map_err(Error::io("reading a staging file", path))?;
    let mut buf = Vec::new();
    for w in writes {
        staged::read_at(&file, path, w.offset, w.len, &mut buf)?;
        write(&buf, w)?;
    }
    Ok(())
}
