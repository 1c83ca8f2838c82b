//! The rows of one bucket of a type table, written into its new data file (and change data
//! file): staged lines appended column by column, and the rows of a rewritten file filtered
//! batch by batch with Arrow kernels (no row is materialised).

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::compute::filter;
use deltalake::kernel::Action as LogAction;

use super::plan::{Action, Change, Fix, Interner, NONE};
use super::staged::Head;
use super::store::{BATCH_ROWS, FileWriter, Table, Tables};
use super::views::ChangeLog;
// The landing columns of a type table's files are those of the Parquet type files (here only
// `patient_id` and `last_seen_run` may be null); the table adds the partition column `bucket`.
use crate::destinations::parquet::writer::COLUMNS;
use crate::{Error, Result};

/// Bytes of staged rows buffered before they become a batch.
const BUFFER_BYTES: usize = 1 << 20;
/// The change data feed column.
pub(super) const CHANGE_TYPE: &str = "_change_type";
/// Indexes of `id` and `fhir_version` in [`COLUMNS`].
const ID: usize = 0;
const FHIR_VERSION: usize = 2;
/// Index of `resource` in [`COLUMNS`].
const RESOURCE: usize = 6;
/// Index of `last_seen_run` in [`COLUMNS`].
const LAST_SEEN: usize = 8;

/// The schema of a type table's files.
pub(super) fn file_schema() -> SchemaRef {
    Arc::new(Schema::new(
        COLUMNS
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, matches!(*c, "patient_id" | "last_seen_run")))
            .collect::<Vec<_>>(),
    ))
}

/// `schema` with the change data feed column.
pub(super) fn with_change_type(schema: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(CHANGE_TYPE, DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

fn arrow_err(action: &'static str) -> impl FnOnce(arrow_schema::ArrowError) -> Error {
    move |source| Error::Arrow { action, source }
}

/// Column `name` of `batch` as strings.
pub(super) fn strings<'a>(batch: &'a RecordBatch, name: &str, table: &str) -> Result<&'a StringArray> {
    let corrupt = |detail: String| Error::CorruptState { path: table.into(), detail };
    batch
        .column_by_name(name)
        .ok_or_else(|| corrupt(format!("column `{name}` is missing")))?
        .as_string_opt::<i32>()
        .ok_or_else(|| corrupt(format!("column `{name}` is not a string column")))
}

/// Staged rows column by column, until they become a batch.
struct Buffer {
    columns: Vec<StringBuilder>,
    rows: usize,
    bytes: usize,
}

impl Buffer {
    fn new(columns: usize) -> Self {
        Buffer { columns: Self::builders(columns), rows: 0, bytes: 0 }
    }

    /// Builders sized for a full buffer, so appending never copies what they hold.
    fn builders(columns: usize) -> Vec<StringBuilder> {
        (0..columns)
            .map(|i| {
                let bytes = if i == RESOURCE { BUFFER_BYTES + (64 << 10) } else { BATCH_ROWS * 64 };
                StringBuilder::with_capacity(BATCH_ROWS, bytes)
            })
            .collect()
    }

    fn push(&mut self, head: &Head<'_>, resource: &str, first_seen: &str, change: Option<&str>) {
        let c = &mut self.columns;
        c[0].append_value(head.id());
        c[1].append_option(head.patient_id());
        c[2].append_value(head.fhir_version());
        c[3].append_value(head.source());
        c[4].append_value(head.dataset());
        c[5].append_value(head.content_hash());
        c[6].append_value(resource);
        c[7].append_value(first_seen);
        c[8].append_null();
        if let Some(change) = change {
            c[9].append_value(change);
        }
        self.rows += 1;
        self.bytes += resource.len() + 256;
    }

    fn full(&self) -> bool {
        self.rows >= BATCH_ROWS || self.bytes >= BUFFER_BYTES
    }

    fn batch(&mut self, schema: &SchemaRef) -> Result<RecordBatch> {
        let fresh = Self::builders(self.columns.len());
        let builders = std::mem::replace(&mut self.columns, fresh);
        let columns: Vec<ArrayRef> =
            builders.into_iter().map(|mut b| Arc::new(b.finish()) as ArrayRef).collect();
        self.rows = 0;
        self.bytes = 0;
        RecordBatch::try_new(schema.clone(), columns).map_err(arrow_err("building a batch"))
    }
}

/// The files one bucket's pass writes: its data file and, when the commit writes the change
/// data feed, its change file.
pub(super) struct BucketFiles<'a> {
    tables: &'a Tables,
    run_id: &'a str,
    data: FileWriter,
    cdc: Option<FileWriter>,
    staged: Buffer,
    changes: Buffer,
    /// Where a reload-and-compare notes its changed resources for the views.
    log: Option<&'a mut ChangeLog>,
}

impl<'a> BucketFiles<'a> {
    pub(super) fn new(tables: &'a Tables, table: &Table, run_id: &'a str, bucket: i32, cdc: bool) -> Self {
        let schema = file_schema();
        let cdc = cdc.then(|| FileWriter::new(table, with_change_type(&schema), bucket, true));
        BucketFiles {
            tables,
            run_id,
            data: FileWriter::new(table, schema, bucket, false),
            cdc,
            staged: Buffer::new(COLUMNS.len()),
            changes: Buffer::new(COLUMNS.len() + 1),
            log: None,
        }
    }

    /// Notes every inserted, updated and deleted resource in `log`.
    pub(super) fn with_log(mut self, log: Option<&'a mut ChangeLog>) -> Self {
        self.log = log;
        self
    }

    /// Appends a staged resource (`first_seen` [`NONE`]: this run) with its change.
    pub(super) fn stage(
        &mut self,
        head: &Head<'_>,
        resource: &str,
        first_seen: u32,
        change: Change,
        strings: &Interner,
    ) -> Result<()> {
        let first =
            if first_seen == NONE { self.run_id } else { strings.get(first_seen).unwrap_or(self.run_id) };
        self.staged.push(head, resource, first, None);
        if self.staged.full() {
            let batch = self.staged.batch(self.data.schema())?;
            self.tables.block_on(self.data.write(&batch))?;
        }
        let change = match change {
            Change::None => return Ok(()),
            Change::Insert => "insert",
            Change::PostImage => "update_postimage",
        };
        if let Some(log) = self.log.as_mut() {
            log.changed(head.fhir_version(), head.id(), resource)?;
        }
        if let Some(cdc) = self.cdc.as_mut() {
            self.changes.push(head, resource, first, Some(change));
            if self.changes.full() {
                let batch = self.changes.batch(cdc.schema())?;
                self.tables.block_on(cdc.write(&batch))?;
            }
        }
        Ok(())
    }

    /// Rewrites one batch of an old file whose rows start at `first_row`: `fixes` (sorted by
    /// row) say which rows change; the others stay (`keep_others`: reload-and-compare) or go
    /// (reload: they were re-read).
    pub(super) fn rewrite(
        &mut self,
        batch: &RecordBatch,
        first_row: u32,
        fixes: &mut std::iter::Peekable<impl Iterator<Item = Fix>>,
        keep_others: bool,
        strings: &Interner,
        table: &str,
    ) -> Result<()> {
        let old_last = strings_col(batch, LAST_SEEN, table)?;
        let (ids, versions) = (strings_col(batch, ID, table)?, strings_col(batch, FHIR_VERSION, table)?);
        let n = batch.num_rows();
        let (mut keep, mut pre, mut post) = (
            BooleanBuilder::with_capacity(n),
            BooleanBuilder::with_capacity(n),
            BooleanBuilder::with_capacity(n),
        );
        let mut pre_kinds = StringBuilder::new();
        let mut last = StringBuilder::with_capacity(n, n * 36);
        for r in 0..n {
            let old = (!old_last.is_null(r)).then(|| old_last.value(r));
            let fix = fixes.next_if(|f| f.row == first_row + r as u32);
            let (kept, new_last, pre_kind) = match fix.map(|f| (f.action, f.last)) {
                None => (keep_others, old, None),
                Some((Action::Updated, _)) => (false, old, Some("update_preimage")),
                Some((Action::Deleted, _)) => {
                    if let Some(log) = self.log.as_mut() {
                        log.gone(versions.value(r), ids.value(r))?;
                    }
                    (false, old, Some("delete"))
                }
                Some((Action::SetLast, l)) => {
                    let l = if l == NONE { None } else { strings.get(l) };
                    (true, l, (l != old).then_some("update_preimage"))
                }
            };
            keep.append_value(kept);
            last.append_option(new_last);
            pre.append_value(pre_kind.is_some());
            post.append_value(kept && new_last != old);
            if let Some(kind) = pre_kind {
                pre_kinds.append_value(kind);
            }
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(COLUMNS.len());
        for (i, c) in COLUMNS.iter().enumerate() {
            columns.push(if i == LAST_SEEN { Arc::new(last.finish()) } else { column(batch, c, table)? });
        }
        let fixed = RecordBatch::try_new(self.data.schema().clone(), columns)
            .map_err(arrow_err("rewriting a batch"))?;
        self.write_filtered(&fixed, &keep.finish(), None)?;
        if self.cdc.is_some() {
            let original: Vec<ArrayRef> =
                COLUMNS.iter().map(|c| column(batch, c, table)).collect::<Result<_>>()?;
            let original = RecordBatch::try_new(self.data.schema().clone(), original)
                .map_err(arrow_err("rewriting a batch"))?;
            self.write_filtered(&original, &pre.finish(), Some(Arc::new(pre_kinds.finish())))?;
            let post = post.finish();
            let kinds = StringArray::from(vec!["update_postimage"; post.true_count()]);
            self.write_filtered(&fixed, &post, Some(Arc::new(kinds)))?;
        }
        Ok(())
    }

    /// Writes the rows of `batch` selected by `mask`: to the data file, or with `change` (the
    /// selected rows' change types) to the change file.
    fn write_filtered(
        &mut self,
        batch: &RecordBatch,
        mask: &BooleanArray,
        change: Option<ArrayRef>,
    ) -> Result<()> {
        if mask.true_count() == 0 {
            return Ok(());
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns() + 1);
        for c in batch.columns() {
            columns.push(filter(c, mask).map_err(arrow_err("filtering a batch"))?);
        }
        let writer = match change {
            None => &mut self.data,
            Some(kinds) => {
                columns.push(kinds);
                self.cdc.as_mut().expect("change rows only with a change file")
            }
        };
        let out =
            RecordBatch::try_new(writer.schema().clone(), columns).map_err(arrow_err("filtering a batch"))?;
        self.tables.block_on(writer.write(&out))
    }

    /// Writes what is buffered and closes the files; returns their actions.
    pub(super) fn finish(mut self) -> Result<Vec<LogAction>> {
        if self.staged.rows > 0 {
            let batch = self.staged.batch(self.data.schema())?;
            self.tables.block_on(self.data.write(&batch))?;
        }
        let mut actions: Vec<LogAction> = self.tables.block_on(self.data.finish())?.into_iter().collect();
        if let Some(mut cdc) = self.cdc {
            if self.changes.rows > 0 {
                let batch = self.changes.batch(cdc.schema())?;
                self.tables.block_on(cdc.write(&batch))?;
            }
            actions.extend(self.tables.block_on(cdc.finish())?);
        }
        Ok(actions)
    }
}

fn column(batch: &RecordBatch, name: &str, table: &str) -> Result<ArrayRef> {
    batch.column_by_name(name).cloned().ok_or_else(|| Error::CorruptState {
        path: table.into(),
        detail: format!("column `{name}` is missing"),
    })
}

fn strings_col<'a>(batch: &'a RecordBatch, index: usize, table: &str) -> Result<&'a StringArray> {
    strings(batch, COLUMNS[index], table)
}
