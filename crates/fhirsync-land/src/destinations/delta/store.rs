//! Delta tables under the destination's root: connecting to the object store, opening and
//! creating tables, reading and writing their Parquet files, and the one commit per run.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::{CommitData, CommitProperties};
use deltalake::kernel::{Action, AddCDCFile, Remove, StructType, Transaction};
use deltalake::logstore::{CommitOrBytes, LogStoreRef};
use deltalake::operations::create::CreateBuilder;
use deltalake::protocol::DeltaOperation;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError, TableProperty};
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path as StorePath;
use object_store::{DynObjectStore, ObjectStore, ObjectStoreExt};
use parquet::arrow::ProjectionMask;
#[allow(deprecated)]
use parquet::arrow::async_reader::{ParquetObjectReader, ParquetRecordBatchStreamBuilder};
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use url::Url;

use crate::{Error, Result};

/// The partition column of every table.
pub(crate) const BUCKET: &str = "bucket";
/// Table property holding a table's bucket count.
const BUCKETS_PROPERTY: &str = "fhirsync.buckets";
/// Table property holding the resource type (type tables) or view name (view tables).
pub(crate) const SOURCE_PROPERTY: &str = "fhirsync.source";
/// Table property holding a view table's signature (a changed view rebuilds its table).
pub(crate) const SIGNATURE_PROPERTY: &str = "fhirsync.viewSignature";
/// Application id of the `txn` action every commit carries.
const APP_ID: &str = "fhirsync";
/// Commit-info key with the run id.
const RUN_KEY: &str = "fhirsync.runId";
/// Rows per Arrow batch handed to a writer, or read from a file's key columns.
pub(crate) const BATCH_ROWS: usize = 4096;
/// Rows per batch read with the `resource` column.
const ROW_BATCH_ROWS: usize = 1024;
/// zstd level of every file.
const ZSTD_LEVEL: i32 = 1;
/// File name extension of every data and change file.
const EXTENSION: &str = "zstd.parquet";
/// Rows per row group at most.
const ROW_GROUP_ROWS: usize = 64 * 1024;
/// Data and dictionary page size limit.
const PAGE_BYTES: usize = 256 << 10;
/// Buffer of an upload to an object store (a multipart upload's part size once exceeded;
/// 5 MiB is S3's least part size), and to a local folder.
const REMOTE_UPLOAD_BYTES: usize = 5 << 20;
const LOCAL_UPLOAD_BYTES: usize = 1 << 20;
/// Parts of a multipart upload in flight at once.
const UPLOADS: usize = 2;
/// A checkpoint every this many commits (as delta-rs's own writers do).
const CHECKPOINT_EVERY: u64 = 100;
/// Encoded bytes after which a row group is flushed: a writer holds its open row group.
const ROW_GROUP_BYTES: usize = 4 << 20;

fn delta_err(action: &'static str, table: &str) -> impl FnOnce(DeltaTableError) -> Error + use<> {
    let table = table.to_string();
    move |source| Error::Delta { action, table, source: Box::new(source) }
}

fn store_err(action: &'static str, path: &StorePath) -> impl FnOnce(object_store::Error) -> Error + use<> {
    let table = path.to_string();
    move |source| Error::Delta { action, table, source: Box::new(DeltaTableError::ObjectStore { source }) }
}

fn parquet_err(path: &StorePath) -> impl FnOnce(parquet::errors::ParquetError) -> Error + use<> {
    let path = std::path::PathBuf::from(path.as_ref());
    move |source| Error::Parquet { path, source }
}

/// The run's `txn` version: the start time (ms) in its UUIDv7 id, so later runs have larger ones.
pub(crate) fn run_version(run_id: &str) -> Result<i64> {
    let invalid = || Error::InvalidRunId { run_id: run_id.to_string() };
    let stamp = uuid::Uuid::parse_str(run_id).map_err(|_| invalid())?.get_timestamp().ok_or_else(invalid)?;
    let (secs, nanos) = stamp.to_unix();
    let ms = i64::try_from(secs).ok().and_then(|s| s.checked_mul(1000)).ok_or_else(invalid)?;
    Ok(ms + i64::from(nanos / 1_000_000))
}

/// Bucket of a partition key (the patient id, or the id of a row without one): FNV-1a 64.
pub(crate) fn bucket_of(key: &str, buckets: u32) -> i32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(buckets.max(1))) as i32
}

/// The bucket of a landed row: its patient, or its id when it has none.
pub(crate) fn row_bucket(patient: Option<&str>, id: &str, buckets: u32) -> i32 {
    bucket_of(patient.unwrap_or(id), buckets)
}

/// The root under which the tables live.
pub(crate) struct Tables {
    rt: tokio::runtime::Runtime,
    root: Url,
    /// Object store for remote roots (pointing at the bucket's root); `None` for a folder.
    remote: Option<Arc<DynObjectStore>>,
}

impl Tables {
    /// Connects to `uri`: a folder (created) or an object-store URL with credentials from the
    /// environment.
    pub(crate) fn connect(uri: &str) -> Result<Tables> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(Error::io("starting the Delta runtime", uri))?;
        let bad = |detail: String| Error::InvalidDeltaUri { uri: uri.to_string(), detail };
        let is_remote = uri.split_once("://").is_some_and(|(scheme, _)| scheme != "file");
        if !is_remote {
            let dir = std::path::PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri));
            std::fs::create_dir_all(&dir).map_err(Error::io("creating the Delta root", &dir))?;
            let abs = dir.canonicalize().map_err(Error::io("resolving the Delta root", &dir))?;
            let root = Url::from_directory_path(&abs)
                .map_err(|()| bad("not an absolute folder path".to_string()))?;
            return Ok(Tables { rt, root, remote: None });
        }
        let mut root = Url::parse(uri).map_err(|e| bad(e.to_string()))?;
        if !root.path().ends_with('/') {
            root.set_path(&format!("{}/", root.path()));
        }
        let store: Arc<DynObjectStore> = match root.scheme() {
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(root.as_str())
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(root.as_str())
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            "az" | "abfs" | "abfss" | "azure" | "adl" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(root.as_str())
                    .build()
                    .map_err(|e| bad(e.to_string()))?,
            ),
            other => {
                return Err(bad(format!(
                    "unsupported scheme `{other}`: use a folder, s3://, gs:// or az:// (abfss://)"
                )));
            }
        };
        super::remote::register_log_store(&root);
        Ok(Tables { rt, root, remote: Some(store) })
    }

    /// The root URL without credentials.
    pub(crate) fn describe(&self) -> String {
        let mut u = self.root.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.to_string()
    }

    /// Runs `f` on the destination's runtime.
    pub(crate) fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    fn table_url(&self, name: &str) -> Result<Url> {
        self.root.join(&format!("{name}/")).map_err(|e| Error::InvalidDeltaUri {
            uri: self.root.to_string(),
            detail: format!("table `{name}`: {e}"),
        })
    }

    /// Opens table `name` (loaded, or not yet created).
    pub(crate) async fn open(&self, name: &str) -> Result<Table> {
        let url = self.table_url(name)?;
        if let Ok(dir) = url.to_file_path() {
            // A local table's folder must exist to be loaded (or created).
            std::fs::create_dir_all(&dir).map_err(Error::io("creating a table folder", &dir))?;
        }
        let mut builder = DeltaTableBuilder::from_url(url.clone()).map_err(delta_err("opening", name))?;
        if let Some(store) = &self.remote {
            builder = builder.with_storage_backend(store.clone(), url);
        }
        let mut delta = builder.build().map_err(delta_err("opening", name))?;
        let exists = match delta.load().await {
            Ok(()) => true,
            Err(DeltaTableError::NotATable(_)) => false,
            Err(e) => return Err(delta_err("loading", name)(e)),
        };
        Ok(Table { name: name.to_string(), delta, exists, remote: self.remote.is_some() })
    }

    /// Names of the folders right under the root that hold a Delta table.
    pub(crate) async fn table_names(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        match &self.remote {
            None => {
                let dir = self.root.to_file_path().map_err(|()| Error::InvalidDeltaUri {
                    uri: self.root.to_string(),
                    detail: "not a local folder".into(),
                })?;
                for entry in std::fs::read_dir(&dir).map_err(Error::io("listing the Delta root", &dir))? {
                    let entry = entry.map_err(Error::io("listing the Delta root", &dir))?;
                    if entry.path().join("_delta_log").is_dir()
                        && let Some(name) = entry.file_name().to_str()
                    {
                        names.push(name.to_string());
                    }
                }
            }
            Some(store) => {
                let prefix = StorePath::from_url_path(self.root.path())
                    .map_err(|e| store_err("listing the root", &StorePath::from(""))(e.into()))?;
                let listing = store
                    .list_with_delimiter(Some(&prefix))
                    .await
                    .map_err(store_err("listing the root", &prefix))?;
                for p in listing.common_prefixes {
                    if let Some(name) = p.filename() {
                        let log = p.clone().join("_delta_log");
                        let mut inside = store.list(Some(&log));
                        if inside
                            .next()
                            .await
                            .transpose()
                            .map_err(store_err("listing a table", &log))?
                            .is_some()
                        {
                            names.push(name.to_string());
                        }
                    }
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes table `name` with every file in it (a view whose columns changed).
    pub(crate) async fn drop_table(&self, name: &str) -> Result<()> {
        match &self.remote {
            None => {
                let dir = self.root.to_file_path().map_err(|()| Error::InvalidDeltaUri {
                    uri: self.root.to_string(),
                    detail: "not a local folder".into(),
                })?;
                crate::destinations::files::layout::remove_dir(&dir.join(name))
            }
            Some(store) => {
                let url = self.table_url(name)?;
                let prefix = StorePath::from_url_path(url.path())
                    .map_err(|e| store_err("deleting a table", &StorePath::from(name))(e.into()))?;
                let paths: Vec<_> = store
                    .list(Some(&prefix))
                    .map_ok(|m| m.location)
                    .try_collect()
                    .await
                    .map_err(store_err("deleting a table", &prefix))?;
                for p in paths {
                    store.delete(&p).await.map_err(store_err("deleting a table", &p))?;
                }
                Ok(())
            }
        }
    }

    /// Whether any table under the root holds a row (full-load refuses such a target).
    pub(crate) fn holds_data(&self) -> Result<bool> {
        self.block_on(async {
            for name in self.table_names().await? {
                let t = self.open(&name).await?;
                if t.exists && !t.files()?.is_empty() {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    }
}

/// One data file of a table's current version.
#[derive(Debug, Clone)]
pub(crate) struct DataFile {
    /// Path relative to the table root.
    pub path: StorePath,
    /// The action that removes it.
    pub remove: Remove,
    /// Its `bucket` partition value (`None` if it has none).
    pub bucket: Option<i32>,
    /// Its row count, from its statistics.
    pub rows: Option<u64>,
}

/// The record batches of one file, read one at a time.
#[allow(deprecated)]
pub(crate) struct Batches {
    path: StorePath,
    stream: parquet::arrow::async_reader::ParquetRecordBatchStream<ParquetObjectReader>,
}

impl Batches {
    /// The next batch, `None` after the last.
    pub(crate) async fn next(&mut self) -> Result<Option<RecordBatch>> {
        self.stream.next().await.transpose().map_err(parquet_err(&self.path))
    }
}

/// One table.
pub(crate) struct Table {
    pub name: String,
    pub delta: DeltaTable,
    /// False until the table's first commit.
    pub exists: bool,
    /// Whether it lives in an object store (not a local folder).
    pub remote: bool,
}

/// Metadata of a new table.
pub(crate) struct NewTable<'a> {
    /// Logical name (resource type or view name).
    pub source: &'a str,
    /// Arrow schema including the `bucket` column.
    pub schema: &'a SchemaRef,
    pub buckets: u32,
    /// View signature (view tables).
    pub signature: Option<&'a str>,
}

impl Table {
    /// The table's object store (rooted at the table folder).
    pub(crate) fn store(&self) -> Arc<DynObjectStore> {
        self.delta.object_store()
    }

    /// Deletes a file this run wrote but will not commit (`path` relative to the table).
    pub(crate) async fn delete_file(&self, path: &str) -> Result<()> {
        let path = StorePath::from(path);
        self.store().delete(&path).await.map_err(store_err("deleting an uncommitted file", &path))
    }

    /// The files of the current version (none before the first commit).
    pub(crate) fn files(&self) -> Result<Vec<DataFile>> {
        if !self.exists {
            return Ok(Vec::new());
        }
        let snapshot = self.delta.snapshot().map_err(delta_err("reading the file list", &self.name))?;
        let mut out = Vec::new();
        for f in snapshot.log_data() {
            let bucket = f.partition_values_map().get(BUCKET).cloned().flatten().and_then(|b| b.parse().ok());
            let rows = f.num_records().map(|n| n as u64);
            out.push(DataFile { path: f.object_store_path(), remove: f.remove_action(true), bucket, rows });
        }
        Ok(out)
    }

    /// A table property (`None` for a table not yet created, or without the property).
    pub(crate) fn property(&self, key: &str) -> Result<Option<String>> {
        if !self.exists {
            return Ok(None);
        }
        let snapshot = self.delta.snapshot().map_err(delta_err("reading the metadata of", &self.name))?;
        Ok(snapshot.metadata().configuration().get(key).cloned())
    }

    /// The bucket count the table was created with, else (a new table) `default`.
    pub(crate) fn buckets(&self, default: u32) -> Result<u32> {
        let Some(value) = self.property(BUCKETS_PROPERTY)? else { return Ok(default) };
        value.parse().ok().filter(|b| *b > 0).ok_or_else(|| Error::CorruptState {
            path: self.name.clone().into(),
            detail: format!("table property {BUCKETS_PROPERTY} = `{value}` is not a bucket count"),
        })
    }

    /// The `txn` version of the last fhirsync commit.
    pub(crate) async fn txn_version(&self) -> Result<Option<i64>> {
        if !self.exists {
            return Ok(None);
        }
        let snapshot = self.delta.snapshot().map_err(delta_err("reading transactions", &self.name))?;
        snapshot
            .transaction_version(self.delta.log_store().as_ref(), APP_ID)
            .await
            .map_err(delta_err("reading transactions", &self.name))
    }

    /// The run id of the latest commit, if fhirsync made it.
    pub(crate) async fn latest_run(&self) -> Result<Option<String>> {
        if !self.exists {
            return Ok(None);
        }
        let infos: Vec<_> = self
            .delta
            .history(Some(1))
            .try_collect()
            .await
            .map_err(delta_err("reading history", &self.name))?;
        Ok(infos.first().and_then(|i| i.info.get(RUN_KEY)).and_then(|v| v.as_str()).map(str::to_string))
    }

    /// A stream of the batches of one data file, with only `columns` when given (range reads,
    /// so a key scan does not download the `resource` column).
    pub(crate) async fn read(&self, path: &StorePath, columns: Option<&[&str]>) -> Result<Batches> {
        #[allow(deprecated)]
        let reader = ParquetObjectReader::new(self.store(), path.clone());
        let builder = ParquetRecordBatchStreamBuilder::new(reader).await.map_err(parquet_err(path))?;
        let builder = match &columns {
            Some(cols) => {
                let mask = ProjectionMask::columns(builder.parquet_schema(), cols.iter().copied());
                builder.with_projection(mask)
            }
            None => builder,
        };
        // Rows with their resource are about 1 KB each; key columns a few dozen bytes.
        let rows = match columns {
            Some(cols) if !cols.contains(&"resource") => BATCH_ROWS,
            _ => ROW_BATCH_ROWS,
        };
        let stream = builder.with_batch_size(rows).build().map_err(parquet_err(path))?;
        Ok(Batches { path: path.clone(), stream })
    }

    /// Commits `changes` as the run's one commit on this table (creating it with `new` on its
    /// first commit). An empty change list still commits: the run's `txn` and id mark the table
    /// as seen by the run.
    pub(crate) async fn commit(
        &mut self,
        run_id: &str,
        method: &str,
        actions: Vec<Action>,
        new: &NewTable<'_>,
        operation: DeltaOperation,
    ) -> Result<()> {
        let metadata: HashMap<String, serde_json::Value> = [
            (RUN_KEY.to_string(), serde_json::Value::from(run_id)),
            ("fhirsync.method".to_string(), serde_json::Value::from(method)),
            (
                "userMetadata".to_string(),
                serde_json::Value::from(format!("fhirsync run {run_id} ({method})")),
            ),
        ]
        .into_iter()
        .collect();
        let txn = Transaction::new(APP_ID, run_version(run_id)?);
        let properties = CommitProperties::default()
            .with_metadata(metadata.clone())
            .with_application_transaction(txn.clone());
        let properties_metadata = metadata;
        if !self.exists {
            let schema: StructType =
                new.schema.as_ref().try_into_kernel().map_err(|e: deltalake::arrow::error::ArrowError| {
                    Error::Arrow { action: "converting a schema for Delta", source: e }
                })?;
            let mut config = vec![
                (BUCKETS_PROPERTY.to_string(), Some(new.buckets.to_string())),
                (SOURCE_PROPERTY.to_string(), Some(new.source.to_string())),
            ];
            if let Some(sig) = new.signature {
                config.push((SIGNATURE_PROPERTY.to_string(), Some(sig.to_string())));
            }
            let create = CreateBuilder::new()
                .with_log_store(self.delta.log_store())
                .with_table_name(new.source)
                .with_columns(schema.fields().cloned())
                .with_partition_columns([BUCKET])
                .with_configuration_property(TableProperty::EnableChangeDataFeed, Some("true"))
                .with_raise_if_key_not_exists(false)
                .with_configuration(config)
                .with_actions(actions.into_iter().filter(|a| !matches!(a, Action::Remove(_))))
                .with_commit_properties(properties);
            self.delta = create.await.map_err(delta_err("creating", &self.name))?;
            self.exists = true;
            return Ok(());
        }
        // delta-rs without DataFusion refuses to commit to a table with the change data feed
        // on (its own writers could not write `_change_data`); this one writes the feed itself,
        // so it writes the commit entry directly: the same JSON actions, put-if-absent.
        let log_store: LogStoreRef = self.delta.log_store();
        let snapshot = self.delta.snapshot().map_err(delta_err("committing", &self.name))?;
        let version = snapshot.version() + 1;
        let data = CommitData::new(actions, operation, properties_metadata, vec![txn]);
        let bytes = data.get_bytes().map_err(|e| delta_err("committing", &self.name)(e.into()))?;
        log_store
            .write_commit_entry(version, CommitOrBytes::LogBytes(bytes), uuid::Uuid::new_v4())
            .await
            .map_err(|e| delta_err("committing", &self.name)(e.into()))?;
        tracing::debug!(table = %self.name, version, "Delta commit.");
        self.delta.update_state().await.map_err(delta_err("reloading after commit", &self.name))?;
        if version % CHECKPOINT_EVERY == 0 {
            deltalake::checkpoints::create_checkpoint(&self.delta, None)
                .await
                .map_err(delta_err("writing a checkpoint", &self.name))?;
        }
        Ok(())
    }
}

/// Writes one Parquet file of a table's bucket (opened on the first row), which becomes an
/// `add` (data) or `cdc` (change data feed) action. The writer holds one row group in memory,
/// at most [`ROW_GROUP_BYTES`] encoded.
pub(crate) struct FileWriter {
    store: Arc<DynObjectStore>,
    /// Arrow schema of the file (without `bucket`).
    schema: SchemaRef,
    bucket: i32,
    /// `part` for data files, `cdc` for change data files (under `_change_data/`).
    cdc: bool,
    open: Option<(StorePath, AsyncArrowWriter<BufWriter>)>,
    rows: u64,
    upload_bytes: usize,
}

/// Writer settings of every file (see the README's Delta section for the readers checked).
fn writer_properties() -> Result<WriterProperties> {
    let level =
        ZstdLevel::try_new(ZSTD_LEVEL).map_err(|source| Error::Parquet { path: "zstd".into(), source })?;
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(level))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_data_page_size_limit(PAGE_BYTES)
        .set_dictionary_page_size_limit(PAGE_BYTES);
    // Unique per row: no dictionary to try, and no page statistics worth their cost.
    for column in ["id", "content_hash", "resource"] {
        props = props
            .set_column_dictionary_enabled(ColumnPath::from(column), false)
            .set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    Ok(props.build())
}

impl FileWriter {
    /// A writer into `table`'s bucket `bucket`.
    pub(crate) fn new(table: &Table, schema: SchemaRef, bucket: i32, cdc: bool) -> Self {
        let upload_bytes = if table.remote { REMOTE_UPLOAD_BYTES } else { LOCAL_UPLOAD_BYTES };
        FileWriter { store: table.store(), schema, bucket, cdc, open: None, rows: 0, upload_bytes }
    }

    /// The file schema.
    pub(crate) fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Appends `batch` (of [`FileWriter::schema`]).
    pub(crate) async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.open.is_none() {
            let name =
                format!("{}-{}.{EXTENSION}", if self.cdc { "cdc" } else { "part" }, uuid::Uuid::now_v7());
            let dir = format!("{BUCKET}={}", self.bucket);
            let path = if self.cdc {
                StorePath::from("_change_data").join(dir.as_str()).join(name.as_str())
            } else {
                StorePath::from(dir.as_str()).join(name.as_str())
            };
            let writer = BufWriter::with_capacity(self.store.clone(), path.clone(), self.upload_bytes)
                .with_max_concurrency(UPLOADS);
            let arrow = AsyncArrowWriter::try_new(writer, self.schema.clone(), Some(writer_properties()?))
                .map_err(parquet_err(&path))?;
            self.open = Some((path, arrow));
        }
        let (path, writer) = self.open.as_mut().expect("opened above");
        writer.write(batch).await.map_err(parquet_err(path))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Closes the file and returns its action (`None` if nothing was written).
    pub(crate) async fn finish(self) -> Result<Option<Action>> {
        let Some((path, writer)) = self.open else { return Ok(None) };
        writer.close().await.map_err(parquet_err(&path))?;
        let meta = self.store.head(&path).await.map_err(store_err("reading a written file", &path))?;
        let size = i64::try_from(meta.size).unwrap_or(i64::MAX);
        let partition_values = HashMap::from([(BUCKET.to_string(), Some(self.bucket.to_string()))]);
        Ok(Some(if self.cdc {
            Action::Cdc(AddCDCFile {
                path: path.to_string(),
                size,
                partition_values,
                data_change: false,
                tags: None,
            })
        } else {
            Action::Add(deltalake::kernel::Add {
                path: path.to_string(),
                partition_values,
                size,
                modification_time: meta.last_modified.timestamp_millis(),
                data_change: true,
                stats: Some(format!("{{\"numRecords\":{}}}", self.rows)),
                tags: None,
                deletion_vector: None,
                base_row_id: None,
                default_row_commit_version: None,
                clustering_provider: None,
            })
        }))
    }
}
