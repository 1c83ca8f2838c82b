//! The scenario on the file destinations (Parquet, NDJSON), read back with the Parquet reader
//! and plain JSON parsing, through the `current` symlink that external tools use.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::{Array, RecordBatch};
use fhirsync_land::{Destination, DestinationConfig, NdjsonConfig, ParquetConfig};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use serde_json::value::RawValue;
use tempfile::TempDir;

use crate::support::*;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Parquet,
    Ndjson,
}

/// A temporary destination folder.
pub struct FileHarness {
    dir: TempDir,
    kind: Kind,
}

impl FileHarness {
    pub fn new(kind: Kind) -> Self {
        FileHarness { dir: tempfile::tempdir().unwrap(), kind }
    }

    pub fn config(&self) -> DestinationConfig {
        match self.kind {
            Kind::Parquet => DestinationConfig::Parquet(ParquetConfig::new(self.dir.path())),
            Kind::Ndjson => DestinationConfig::Ndjson(NdjsonConfig::new(self.dir.path())),
        }
    }

    /// The snapshot readers see, if any (checks the symlink and `CURRENT` agree).
    pub fn current(&self) -> Option<PathBuf> {
        let link = self.dir.path().join("current");
        let pointer = std::fs::read_to_string(self.dir.path().join("_fhirsync/CURRENT")).ok()?;
        let target = std::fs::read_link(&link).unwrap();
        assert_eq!(target, Path::new("versions").join(pointer.trim()));
        Some(link)
    }
}

/// Every record batch of a Parquet file.
pub fn parquet_batches(path: &Path) -> Vec<RecordBatch> {
    let reader =
        ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap().build().unwrap();
    reader.map(Result::unwrap).collect()
}

/// Column `name` of a batch as optional strings.
pub fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
    let col = batch.column_by_name(name).unwrap_or_else(|| panic!("column {name}"));
    let s = col.as_string::<i32>();
    (0..s.len()).map(|i| (!s.is_null(i)).then(|| s.value(i).to_string())).collect()
}

fn json_lines(path: &Path) -> Vec<String> {
    BufReader::new(File::open(path).unwrap()).lines().map(Result::unwrap).collect()
}

fn text(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

impl FileHarness {
    /// The run of the current snapshot.
    pub fn current_run(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("_fhirsync/CURRENT")).unwrap().trim().to_string()
    }

    /// `current/_fhirsync/files.json`.
    pub fn manifest(&self) -> Value {
        let path = self.dir.path().join("current/_fhirsync/files.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The rows of the current snapshot exactly as stored.
    pub fn raw_rows(&self) -> Vec<Landed> {
        let Some(current) = self.current() else { return Vec::new() };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&current).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            match self.kind {
                Kind::Parquet => {
                    let Some(rt) = name.strip_prefix("resource_type=") else { continue };
                    for b in parquet_batches(&path.join("part-0.parquet")) {
                        let col = |n: &str| strings(&b, n);
                        let (id, pat, ver, src, ds, hash, res, first, last) = (
                            col("id"),
                            col("patient_id"),
                            col("fhir_version"),
                            col("source"),
                            col("dataset"),
                            col("content_hash"),
                            col("resource"),
                            col("first_seen_run"),
                            col("last_seen_run"),
                        );
                        for i in 0..b.num_rows() {
                            out.push(Landed {
                                resource_type: rt.to_string(),
                                fhir_version: ver[i].clone().unwrap(),
                                id: id[i].clone().unwrap(),
                                patient_id: pat[i].clone(),
                                dataset: ds[i].clone().unwrap(),
                                source: src[i].clone().unwrap(),
                                content_hash: hash[i].clone().unwrap(),
                                resource: res[i].clone().unwrap(),
                                first_seen_run: first[i].clone().unwrap(),
                                last_seen_run: last[i].clone().unwrap(),
                            });
                        }
                    }
                }
                Kind::Ndjson => {
                    let Some(rt) = name.strip_suffix(".ndjson") else { continue };
                    for line in json_lines(&path) {
                        #[derive(serde::Deserialize)]
                        struct L<'a> {
                            #[serde(borrow)]
                            resource: &'a RawValue,
                        }
                        let raw: L<'_> = serde_json::from_str(&line).unwrap();
                        let v: Value = serde_json::from_str(&line).unwrap();
                        out.push(Landed {
                            resource_type: rt.to_string(),
                            fhir_version: text(&v, "fhir_version").unwrap(),
                            id: text(&v, "id").unwrap(),
                            patient_id: text(&v, "patient_id"),
                            dataset: text(&v, "dataset").unwrap(),
                            source: text(&v, "source").unwrap(),
                            content_hash: text(&v, "content_hash").unwrap(),
                            resource: raw.resource.get().to_string(),
                            first_seen_run: text(&v, "first_seen_run").unwrap(),
                            last_seen_run: text(&v, "last_seen_run").unwrap(),
                        });
                    }
                }
            }
        }
        sorted(out)
    }

    /// The file of view table `table` (`view_<name>`) in the current snapshot: under `views/`,
    /// named without the `view_` prefix.
    pub fn view_path(&self, table: &str) -> PathBuf {
        let name = table.strip_prefix("view_").unwrap();
        let views = self.current().unwrap().join("views");
        match self.kind {
            Kind::Parquet => views.join(name).join("part-0.parquet"),
            Kind::Ndjson => views.join(format!("{name}.ndjson")),
        }
    }
}

/// A cell of a typed Parquet column as text: decimals at the column's scale, dates
/// `YYYY-MM-DD`, timestamps RFC 3339 in UTC.
pub fn cell_text(batch: &RecordBatch, name: &str, i: usize) -> Option<String> {
    use arrow_array::types::{Date32Type, Decimal128Type, Int64Type, TimestampMicrosecondType};
    use arrow_schema::{DataType, TimeUnit};
    let col = batch.column_by_name(name).unwrap_or_else(|| panic!("column {name}"));
    if col.is_null(i) {
        return None;
    }
    Some(match col.data_type() {
        DataType::Utf8 => col.as_string::<i32>().value(i).to_string(),
        DataType::Int64 => col.as_primitive::<Int64Type>().value(i).to_string(),
        DataType::Boolean => col.as_boolean().value(i).to_string(),
        DataType::Decimal128(..) => col.as_primitive::<Decimal128Type>().value_as_string(i),
        DataType::Date32 => col.as_primitive::<Date32Type>().value_as_date(i).unwrap().to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => {
            let t = col.as_primitive::<TimestampMicrosecondType>().value_as_datetime(i).unwrap();
            t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        }
        other => panic!("column {name} has unexpected type {other}"),
    })
}

/// A JSON value as text: strings as they are, numbers as written, `null` as `None`.
fn json_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl Harness for FileHarness {
    fn open(&self) -> Box<dyn Destination> {
        fhirsync_land::open(&self.config()).unwrap()
    }

    /// The rows as readers see them: a row whose `last_seen_run` is its type's `seen_as` in
    /// the snapshot's `_fhirsync/files.json` was seen by the snapshot's run (a kept file keeps
    /// the run that wrote it), as the destination documents.
    fn rows(&self) -> Vec<Landed> {
        if self.current().is_none() {
            return Vec::new();
        }
        let run = self.current_run();
        let manifest = self.manifest();
        let mut rows = self.raw_rows();
        for r in &mut rows {
            if manifest["types"][&r.resource_type]["seen_as"].as_str() == Some(r.last_seen_run.as_str()) {
                r.last_seen_run = run.clone();
            }
        }
        sorted(rows)
    }

    fn changes(&self, run_id: &str) -> Vec<Change> {
        let dir = self.dir.path().join("changes").join(format!("run_id={run_id}"));
        let mut out = Vec::new();
        match self.kind {
            Kind::Parquet => {
                let path = dir.join("part-0.parquet");
                if !path.exists() {
                    return out;
                }
                for b in parquet_batches(&path) {
                    let (op, rt, id, before, after) = (
                        strings(&b, "operation"),
                        strings(&b, "resource_type"),
                        strings(&b, "id"),
                        strings(&b, "before_hash"),
                        strings(&b, "after_hash"),
                    );
                    for i in 0..b.num_rows() {
                        out.push(Change {
                            operation: op[i].clone().unwrap(),
                            resource_type: rt[i].clone().unwrap(),
                            id: id[i].clone().unwrap(),
                            before_hash: before[i].clone(),
                            after_hash: after[i].clone(),
                        });
                    }
                }
            }
            Kind::Ndjson => {
                let path = dir.join("changes.ndjson");
                if !path.exists() {
                    return out;
                }
                for line in json_lines(&path) {
                    let v: Value = serde_json::from_str(&line).unwrap();
                    out.push(Change {
                        operation: text(&v, "operation").unwrap(),
                        resource_type: text(&v, "resource_type").unwrap(),
                        id: text(&v, "id").unwrap(),
                        before_hash: text(&v, "before_hash"),
                        after_hash: text(&v, "after_hash"),
                    });
                }
            }
        }
        sorted(out)
    }

    fn exits(&self) -> Vec<String> {
        let Some(current) = self.current() else { return Vec::new() };
        let text = std::fs::read_to_string(current.join("_fhirsync/cohort_exits.json")).unwrap();
        let v: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
        v.keys().cloned().collect()
    }

    fn runs(&self) -> Vec<RunRow> {
        let path = self.dir.path().join("_fhirsync/runs.json");
        let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
        let v: Vec<Value> = serde_json::from_str(&text).unwrap();
        v.iter()
            .map(|r| RunRow {
                run_id: text_of(r, "run_id"),
                method: text_of(r, "method"),
                status: text_of(r, "status"),
            })
            .collect()
    }

    fn view_rows(&self, table: &str, columns: &[&str]) -> Vec<Vec<Option<String>>> {
        let mut out = Vec::new();
        match self.kind {
            Kind::Parquet => {
                for b in parquet_batches(&self.view_path(table)) {
                    for i in 0..b.num_rows() {
                        out.push(columns.iter().map(|c| cell_text(&b, c, i)).collect());
                    }
                }
            }
            Kind::Ndjson => {
                for line in json_lines(&self.view_path(table)) {
                    let v: Value = serde_json::from_str(&line).unwrap();
                    out.push(columns.iter().map(|c| json_text(&v[*c])).collect());
                }
            }
        }
        sorted(out)
    }
}

fn text_of(v: &Value, k: &str) -> String {
    text(v, k).unwrap()
}

/// Parquet destination tests.
mod parquet_dest {
    use super::*;
    use crate::scenario::scenario_tests;

    scenario_tests!(Some(FileHarness::new(Kind::Parquet)));

    /// History is refused with a message naming the alternative.
    #[test]
    fn history_is_refused() {
        let h = FileHarness::new(Kind::Parquet);
        let opts = fhirsync_land::LandOptions { history: true, ..Default::default() };
        let err = h.open().begin(fhirsync_land::Method::ReloadAndCompare, &opts).unwrap_err();
        assert!(err.to_string().contains("history"), "{err}");
    }

    /// Views are typed in Parquet: Decimal128(38, s) holding the exact values, Date32, UTC
    /// microsecond timestamps, Boolean, Int64; companions and text stay Utf8.
    #[test]
    fn typed_view_columns() {
        let h = FileHarness::new(Kind::Parquet);
        let forms = crate::typed::Forms {
            decimals: ["1.50", "0.10", "100.00", "123456789012345678.90"],
            instants: [
                "2019-04-01T08:30:00Z",
                "2020-03-01T04:59:59.500Z",
                "2019-04-01T08:30:00.123Z",
                "2019-04-01T12:00:00.123456Z",
            ],
            date: "1970-06-15",
            booleans: ["false", "true"],
        };
        crate::typed::typed_columns(&h, &forms);
        let types = |table: &str| -> Vec<(String, String)> {
            let b = &parquet_batches(&h.view_path(table))[0];
            b.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect()
        };
        let ts = arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into()));
        let want = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
            pairs.iter().map(|(n, t)| (n.to_string(), t.clone())).collect()
        };
        let utf8 = "Utf8".to_string();
        assert_eq!(
            types("view_obs_typed"),
            want(&[
                ("_fhir_version", utf8.clone()),
                ("_id", utf8.clone()),
                ("value", "Decimal128(38, 2)".into()),
                ("effective", ts.to_string()),
                ("effective_text", utf8.clone()),
                ("issued", ts.to_string()),
                ("issued_text", utf8.clone()),
            ])
        );
        assert_eq!(
            types("view_patient_typed"),
            want(&[
                ("_fhir_version", utf8.clone()),
                ("_id", utf8.clone()),
                ("birth_date", "Date32".into()),
                ("birth_date_text", utf8.clone()),
                ("deceased", "Boolean".into()),
                ("births", "Int64".into()),
            ])
        );
    }

    /// Views have their own root: `current/*/*.parquet` (the README's DuckDB glob) matches
    /// exactly the resource-type files.
    #[test]
    fn views_are_not_beside_the_types() {
        let h = FileHarness::new(Kind::Parquet);
        let views = [crate::scenario::obs_view()];
        let mut dest = h.open();
        let all = run_scope(&["p1"], scopes_of(&["p1"]));
        let resources = [patient("p1", "Alpha"), obs("o1", "p1", "1.5")];
        land_with_views(
            &mut *dest,
            fhirsync_land::Method::FullLoad,
            &Default::default(),
            &resources,
            all,
            &views,
        )
        .unwrap();
        let current = h.current().unwrap();
        let mut depth_two: Vec<String> = Vec::new();
        for dir in std::fs::read_dir(&current).unwrap() {
            let dir = dir.unwrap().path();
            for f in std::fs::read_dir(&dir).into_iter().flatten() {
                let f = f.unwrap().path();
                if f.extension().is_some_and(|e| e == "parquet") {
                    depth_two.push(f.strip_prefix(&current).unwrap().display().to_string());
                }
            }
        }
        depth_two.sort();
        assert_eq!(
            depth_two,
            ["resource_type=Observation/part-0.parquet", "resource_type=Patient/part-0.parquet"]
        );
        assert!(current.join("views/obs_values/part-0.parquet").is_file());
    }

    /// Old snapshots are pruned: only the current one and the one before it remain.
    #[test]
    fn keeps_two_versions() {
        let h = FileHarness::new(Kind::Parquet);
        let mut dest = h.open();
        let mut ids = Vec::new();
        for v in ["1", "2", "3"] {
            let m = land(
                &mut *dest,
                fhirsync_land::Method::ReloadAndCompare,
                &Default::default(),
                &[obs("o1", "p1", v)],
                run_scope(&["p1"], scopes_of(&["p1"])),
            )
            .unwrap();
            ids.push(m.run_id);
        }
        let mut left: Vec<String> = std::fs::read_dir(h.dir.path().join("versions"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ids[1..].to_vec());
    }
}

/// NDJSON destination tests.
mod ndjson_dest {
    use super::*;
    use crate::scenario::scenario_tests;

    scenario_tests!(Some(FileHarness::new(Kind::Ndjson)));

    /// NDJSON views write decimals as the number literal, collections as arrays, dates and UTC
    /// instants as strings, booleans and integers as JSON values.
    #[test]
    fn typed_view_columns() {
        let h = FileHarness::new(Kind::Ndjson);
        let forms = crate::typed::Forms {
            decimals: ["1.50", "0.10", "1e+2", "123456789012345678.9"],
            instants: [
                "2019-04-01T08:30:00Z",
                "2020-03-01T04:59:59.500Z",
                "2019-04-01T08:30:00.123Z",
                "2019-04-01T12:00:00.123456Z",
            ],
            date: "1970-06-15",
            booleans: ["false", "true"],
        };
        crate::typed::typed_columns(&h, &forms);
        let lines = json_lines(&h.view_path("view_obs_typed"));
        assert!(lines.iter().any(|l| l.contains(r#""value":1.50"#)), "{lines:?}");
        assert!(lines.iter().any(|l| l.contains(r#""value":123456789012345678.9"#)), "{lines:?}");
        let patients = json_lines(&h.view_path("view_patient_typed"));
        assert!(patients.iter().any(|l| l.contains(r#""births":2"#) && l.contains(r#""deceased":false"#)));
    }

    /// A staging line torn by a kill is cut off on resume and the run still commits.
    #[test]
    fn torn_staging_line_is_dropped() {
        let h = FileHarness::new(Kind::Ndjson);
        let run_id = {
            let mut dest = h.open();
            let start = dest.begin(fhirsync_land::Method::FullLoad, &Default::default()).unwrap();
            dest.stage(&[obs("o1", "p1", "1")]).unwrap();
            dest.checkpoint().unwrap();
            start.run_id
        };
        let staged = h.dir.path().join("_fhirsync/staging").join(&run_id).join("Observation.ndjson");
        let mut f = std::fs::OpenOptions::new().append(true).open(&staged).unwrap();
        std::io::Write::write_all(&mut f, b"{\"id\":\"o2\",\"patient").unwrap();
        drop(f);
        let mut dest = h.open();
        assert!(dest.begin(fhirsync_land::Method::FullLoad, &Default::default()).unwrap().resumed);
        let o2 = obs("o2", "p1", "2");
        dest.stage(std::slice::from_ref(&o2)).unwrap();
        let m = dest.commit(&run_scope(&["p1"], scopes_of(&["p1"])), &[], &serde_json::json!({})).unwrap();
        assert_eq!(m.staged, 2);
        assert_eq!(
            h.rows(),
            sorted(vec![landed(&obs("o1", "p1", "1"), &run_id, &run_id), landed(&o2, &run_id, &run_id)])
        );
    }
}

/// Incremental snapshots (both formats): what an unchanged or a small change writes, and that
/// readers get what a full load of the same data gives.
#[cfg(unix)]
mod incremental {
    use std::collections::BTreeMap;
    use std::os::unix::fs::MetadataExt;

    use fhirsync_land::{LandOptions, Method};

    use super::*;
    use crate::scenario::obs_view;

    /// The views of these tests: the shipped ones and the scenario's.
    fn views() -> Vec<fhirsync_views::View> {
        let mut v = fhirsync_views::default_views();
        v.push(obs_view());
        v
    }

    fn data() -> Vec<fhirsync_core::RawResource> {
        vec![
            patient("p1", "Alpha"),
            patient("p2", "Beta"),
            patient("p3", "Gamma"),
            obs("o1", "p1", "1.50"),
            obs("o2", "p1", "2.0"),
            obs("o3", "p2", "3"),
            obs("o4", "p3", "4"),
            practitioner("pr1"),
        ]
    }

    fn full_scope(patients: &[&str]) -> fhirsync_core::RunScope {
        let mut complete = scopes_of(patients);
        complete.insert(practitioner_scope());
        run_scope(&["p1", "p2", "p3"], complete)
    }

    fn run(
        h: &FileHarness,
        method: Method,
        resources: &[fhirsync_core::RawResource],
        scope: fhirsync_core::RunScope,
        views: &[fhirsync_views::View],
    ) -> fhirsync_land::RunMetrics {
        let opts = LandOptions { replace: true, ..LandOptions::default() };
        land_with_views(&mut *h.open(), method, &opts, resources, scope, views).unwrap()
    }

    /// Every data file of the current snapshot (not its `_fhirsync/`), by path inside it, with
    /// its inode and mtime.
    fn data_files(h: &FileHarness) -> BTreeMap<String, (u64, i64, i64)> {
        fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, (u64, i64, i64)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let entry = entry.unwrap();
                let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
                if name == "_fhirsync" {
                    continue;
                }
                let meta = entry.metadata().unwrap();
                if meta.is_dir() {
                    walk(&entry.path(), &format!("{name}/"), out);
                } else {
                    out.insert(name, (meta.ino(), meta.mtime(), meta.mtime_nsec()));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&h.current().unwrap().canonicalize().unwrap(), "", &mut out);
        out
    }

    /// The data files whose inode differs between two listings (or that only one has).
    fn rewritten(
        before: &BTreeMap<String, (u64, i64, i64)>,
        after: &BTreeMap<String, (u64, i64, i64)>,
    ) -> Vec<String> {
        let mut names: Vec<String> =
            after.iter().filter(|(k, v)| before.get(*k) != Some(*v)).map(|(k, _)| k.clone()).collect();
        names.extend(before.keys().filter(|k| !after.contains_key(*k)).cloned());
        names.sort();
        names
    }

    /// The file names of a resource type and of a view in the snapshot.
    fn type_file(kind: Kind, t: &str) -> String {
        match kind {
            Kind::Parquet => format!("resource_type={t}/part-0.parquet"),
            Kind::Ndjson => format!("{t}.ndjson"),
        }
    }

    /// The file of view table `table` (`view_<name>`): in the view root, without the prefix.
    fn view_file(kind: Kind, table: &str) -> String {
        let name = table.strip_prefix("view_").unwrap().to_ascii_lowercase();
        match kind {
            Kind::Parquet => format!("views/{name}/part-0.parquet"),
            Kind::Ndjson => format!("views/{name}.ndjson"),
        }
    }

    /// Every row of every view file of the current snapshot (by its file inside the snapshot,
    /// as [`view_file`] names it), each cell in a type-independent text form, sorted; plus each
    /// Parquet view's schema.
    fn all_view_rows(h: &FileHarness) -> BTreeMap<String, (String, Vec<Vec<String>>)> {
        let current = h.current().unwrap();
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(current.join("views")).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let file = match h.kind {
                Kind::Parquet => format!("views/{name}/part-0.parquet"),
                Kind::Ndjson if name.ends_with(".ndjson") => format!("views/{name}"),
                Kind::Ndjson => continue,
            };
            let (schema, mut rows) = match h.kind {
                Kind::Parquet => {
                    let path = current.join(&file);
                    let builder =
                        ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
                    let schema = format!("{:?}", builder.schema().fields());
                    let mut rows = Vec::new();
                    for b in builder.build().unwrap().map(Result::unwrap) {
                        for i in 0..b.num_rows() {
                            rows.push(b.columns().iter().map(|c| format!("{:?}", c.slice(i, 1))).collect());
                        }
                    }
                    (schema, rows)
                }
                Kind::Ndjson => {
                    let rows = json_lines(&current.join(&file))
                        .iter()
                        .map(|l| vec![serde_json::from_str::<Value>(l).unwrap().to_string()])
                        .collect();
                    (String::new(), rows)
                }
            };
            rows.sort();
            out.insert(file, (schema, rows));
        }
        out
    }

    /// The rows without the run columns, which differ between an incremental and a full load.
    fn content(rows: Vec<Landed>) -> Vec<Landed> {
        sorted(
            rows.into_iter()
                .map(|r| Landed { first_seen_run: String::new(), last_seen_run: String::new(), ..r })
                .collect(),
        )
    }

    fn unchanged_run_keeps_every_data_file(kind: Kind) {
        let h = FileHarness::new(kind);
        let (data, views) = (data(), views());
        let r1 = run(&h, Method::FullLoad, &data, full_scope(&["p1", "p2", "p3"]), &views).run_id;
        let before = data_files(&h);
        let view_rows = all_view_rows(&h);
        assert!(before.len() >= views.len() + 3, "{before:?}");

        let m = run(&h, Method::ReloadAndCompare, &data, full_scope(&["p1", "p2", "p3"]), &views);
        let r2 = m.run_id.clone();
        assert_eq!(
            (m.staged, m.unchanged, m.inserted, m.updated, m.deleted, m.view_rows),
            (8, 8, 0, 0, 0, 0)
        );
        assert_eq!(rewritten(&before, &data_files(&h)), Vec::<String>::new());
        assert!(h.changes(&r2).is_empty());
        assert_eq!(all_view_rows(&h), view_rows);
        // Stored rows keep the run that wrote them; `seen_as` says they were seen by this run.
        assert!(h.raw_rows().iter().all(|r| r.last_seen_run == r1));
        assert_eq!(h.manifest()["types"]["Observation"]["seen_as"], r1.as_str());
        assert_eq!(h.rows(), sorted(data.iter().map(|r| landed(r, &r1, &r2)).collect()));

        // A plain reload of the same data keeps them too.
        let r3 = run(&h, Method::Reload, &data, full_scope(&["p1", "p2", "p3"]), &views).run_id;
        assert_eq!(rewritten(&before, &data_files(&h)), Vec::<String>::new());
        assert_eq!(h.rows(), sorted(data.iter().map(|r| landed(r, &r1, &r3)).collect()));
    }

    fn one_change_rewrites_its_type_and_views_only(kind: Kind) {
        let h = FileHarness::new(kind);
        let (mut data, views) = (data(), views());
        let r1 = run(&h, Method::FullLoad, &data, full_scope(&["p1", "p2", "p3"]), &views).run_id;
        let before = data_files(&h);
        data[3] = obs("o1", "p1", "1.75");
        let m = run(&h, Method::ReloadAndCompare, &data, full_scope(&["p1", "p2", "p3"]), &views);
        assert_eq!((m.staged, m.unchanged, m.updated), (8, 7, 1));
        let mut expected = vec![type_file(kind, "Observation")];
        expected.extend(
            views
                .iter()
                .filter(|v| v.resource() == "Observation")
                .map(|v| view_file(kind, &format!("view_{}", v.name()))),
        );
        expected.sort();
        assert_eq!(rewritten(&before, &data_files(&h)), expected);
        // Only o1 was flattened again: the rows of the rewritten views with `_id` o1.
        let o1_rows: usize = all_view_rows(&h)
            .iter()
            .filter(|(f, _)| expected.contains(f))
            .map(|(_, (_, rows))| rows.iter().filter(|r| r.iter().any(|c| c.contains("\"o1\""))).count())
            .sum();
        assert!(o1_rows > 0);
        assert_eq!(m.view_rows, o1_rows as u64);
        let r2 = m.run_id;
        assert_eq!(
            h.changes(&r2),
            vec![change("U", "Observation", "o1", Some(&obs("o1", "p1", "1.50")), Some(&data[3]))]
        );
        assert_eq!(h.rows(), sorted(data.iter().map(|r| landed(r, &r1, &r2)).collect()));
    }

    fn incremental_runs_read_as_a_full_load(kind: Kind) {
        let (a, views) = (FileHarness::new(kind), views());
        let mut data = data();
        let r1 = run(&a, Method::FullLoad, &data, full_scope(&["p1", "p2", "p3"]), &views).run_id;
        // An edit, a delete, an insert and an edited patient.
        data[3] = obs("o1", "p1", "1.55");
        data.remove(4);
        data.push(obs("o5", "p2", "5.0"));
        data[1] = patient("p2", "Beta-Smith");
        let r2 = run(&a, Method::ReloadAndCompare, &data, full_scope(&["p1", "p2", "p3"]), &views).run_id;
        // p3's fetch fails: its rows are kept, not re-read, so they keep r2 as last seen.
        let without_p3: Vec<_> =
            data.iter().filter(|r| r.patient_id.as_deref() != Some("p3")).cloned().collect();
        let r3 = run(&a, Method::ReloadAndCompare, &without_p3, full_scope(&["p1", "p2"]), &views).run_id;
        let seen = |r: &fhirsync_core::RawResource, last: &str| {
            let first = if r.id == "o5" { &r2 } else { &r1 };
            landed(r, first, last)
        };
        assert_eq!(
            a.rows(),
            sorted(
                data.iter()
                    .map(|r| seen(r, if r.patient_id.as_deref() == Some("p3") { &r2 } else { &r3 }))
                    .collect()
            )
        );
        // p3 is back, unchanged; then nothing changes.
        let r4 = run(&a, Method::ReloadAndCompare, &data, full_scope(&["p1", "p2", "p3"]), &views).run_id;
        assert_eq!(a.rows(), sorted(data.iter().map(|r| seen(r, &r4)).collect()));
        let r5 = run(&a, Method::ReloadAndCompare, &data, full_scope(&["p1", "p2", "p3"]), &views).run_id;
        assert_eq!(a.rows(), sorted(data.iter().map(|r| seen(r, &r5)).collect()));

        let b = FileHarness::new(kind);
        run(&b, Method::FullLoad, &data, full_scope(&["p1", "p2", "p3"]), &views);
        assert_eq!(content(a.rows()), content(b.rows()));
        let (va, vb) = (all_view_rows(&a), all_view_rows(&b));
        assert_eq!(va.keys().collect::<Vec<_>>(), vb.keys().collect::<Vec<_>>());
        for (table, rows) in &va {
            assert_eq!(Some(rows), vb.get(table), "{table}");
        }
        assert!(va.values().map(|(_, r)| r.len()).sum::<usize>() >= data.len());
    }

    fn redefined_view_is_rebuilt(kind: Kind) {
        let h = FileHarness::new(kind);
        let data = data();
        run(&h, Method::FullLoad, &data, full_scope(&["p1", "p2", "p3"]), &[obs_view()]);
        let before = data_files(&h);
        // Same name and columns, another expression.
        let redefined = fhirsync_views::View::from_json(&serde_json::json!({
            "resourceType": "ViewDefinition",
            "name": "obs_values",
            "resource": "Observation",
            "select": [{"column": [
                {"name": "obs_id", "path": "id"},
                {"name": "value", "path": "valueQuantity.value", "type": "decimal"},
                {"name": "status", "path": "subject.reference"}
            ]}]
        }))
        .unwrap();
        let m = run(&h, Method::ReloadAndCompare, &data, full_scope(&["p1", "p2", "p3"]), &[redefined]);
        assert_eq!(m.view_rows, 4);
        assert_eq!(rewritten(&before, &data_files(&h)), vec![view_file(kind, "view_obs_values")]);
        let values: Vec<Option<String>> =
            h.view_rows("view_obs_values", &["status"]).into_iter().map(|mut r| r.remove(0)).collect();
        let patients = ["Patient/p1", "Patient/p1", "Patient/p2", "Patient/p3"];
        assert_eq!(values, patients.map(|p| Some(p.to_string())).to_vec());
    }

    fn outgrown_decimal_rebuilds_the_view(kind: Kind) {
        let (h, views) = (FileHarness::new(kind), [obs_view()]);
        let mut data = data();
        run(&h, Method::FullLoad, &data, full_scope(&["p1", "p2", "p3"]), &views);
        let before = data_files(&h);
        // Three fraction digits: more than the Parquet view's Decimal128(38, 2) holds.
        data[3] = obs("o1", "p1", "1.555");
        let m = run(&h, Method::ReloadAndCompare, &data, full_scope(&["p1", "p2", "p3"]), &views);
        assert_eq!((m.unchanged, m.updated), (7, 1));
        let file = view_file(kind, "view_obs_values");
        assert!(rewritten(&before, &data_files(&h)).contains(&file));
        // NDJSON carries the view (o1 flattened); Parquet flattens o1, then all four in full.
        let flattened = match kind {
            Kind::Parquet => 1 + 4,
            Kind::Ndjson => 1,
        };
        assert_eq!(m.view_rows, flattened);
        let values: Vec<Option<String>> =
            h.view_rows("view_obs_values", &["value"]).into_iter().map(|mut r| r.remove(0)).collect();
        let want = match kind {
            Kind::Parquet => ["1.555", "2.000", "3.000", "4.000"],
            Kind::Ndjson => ["1.555", "2.0", "3", "4"],
        };
        assert_eq!(values, want.map(|v| Some(v.to_string())).to_vec());

        let full = FileHarness::new(kind);
        run(&full, Method::FullLoad, &data, full_scope(&["p1", "p2", "p3"]), &views);
        assert_eq!(all_view_rows(&h), all_view_rows(&full));
        if kind == Kind::Parquet {
            assert!(all_view_rows(&h)[&file].0.contains("Decimal128(38, 3)"));
        }
    }

    fn unchanged_resources_stage_as_keys(kind: Kind) {
        let h = FileHarness::new(kind);
        let data = data();
        let r1 = run(&h, Method::FullLoad, &data, full_scope(&["p1", "p2", "p3"]), &[]).run_id;
        let before = data_files(&h);
        let edited = obs("o3", "p2", "3.5");
        let mut second = data.clone();
        second[5] = edited.clone();
        let start = kill_after_checkpoint(
            &h,
            Method::ReloadAndCompare,
            &LandOptions::default(),
            &second,
            &Default::default(),
            &[],
        );
        let staged = h.dir.path().join("_fhirsync/staging").join(&start.run_id);
        let lines: Vec<String> = ["Patient", "Observation", "Practitioner"]
            .iter()
            .flat_map(|t| json_lines(&staged.join(format!("{t}.ndjson"))))
            .collect();
        assert_eq!(lines.len(), 8);
        let rows: Vec<&String> = lines.iter().filter(|l| l.contains("resourceType")).collect();
        assert_eq!(rows.len(), 1, "{lines:?}");
        assert!(rows[0].contains("\"o3\""));
        assert!(lines.iter().filter(|l| !l.contains("resourceType")).all(|l| l.starts_with("[\"R4\",")));

        // The resumed run takes the seen rows from the snapshot.
        let mut dest = h.open();
        assert!(dest.begin(Method::ReloadAndCompare, &LandOptions::default()).unwrap().resumed);
        let m = complete_and_commit(&mut *dest, &["p1", "p2", "p3"], &["p1", "p2", "p3"]);
        assert_eq!((m.staged, m.unchanged, m.updated), (8, 7, 1));
        assert_eq!(rewritten(&before, &data_files(&h)), vec![type_file(kind, "Observation")]);
        assert_eq!(h.rows(), sorted(second.iter().map(|r| landed(r, &r1, &start.run_id)).collect()));
    }

    fn killed_commit_is_rebuilt(kind: Kind) {
        let h = FileHarness::new(kind);
        let data = data();
        let r1 = run(&h, Method::FullLoad, &data, full_scope(&["p1", "p2", "p3"]), &[]).run_id;
        let obs_file = h.dir.path().join("versions").join(&r1).join(type_file(kind, "Observation"));
        let obs_bytes = std::fs::read(&obs_file).unwrap();
        let mut second = data.clone();
        second[5] = obs("o3", "p2", "3.5");
        let start = kill_after_checkpoint(
            &h,
            Method::ReloadAndCompare,
            &LandOptions::default(),
            &second,
            &scopes_of(&["p1", "p2", "p3"]),
            &[],
        );
        // The kill hit the commit: a half-built snapshot holds links to the current files, and
        // one of an earlier killed run lies beside it.
        let versions = h.dir.path().join("versions");
        for tmp in [format!(".{}.tmp", start.run_id), ".0000-earlier.tmp".to_string()] {
            for t in ["Observation", "Patient"] {
                let to = versions.join(&tmp).join(type_file(kind, t));
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::hard_link(versions.join(&r1).join(type_file(kind, t)), &to).unwrap();
            }
        }
        // It also left the commit's scratch folders (sort runs, key files) in the run's staging.
        let staged = h.dir.path().join("_fhirsync/staging").join(&start.run_id);
        for scratch in
            ["commit/sort-staged/run-0", "commit/changes/part-0.parquet", "known/Observation.known"]
        {
            std::fs::create_dir_all(staged.join(scratch).parent().unwrap()).unwrap();
            std::fs::write(staged.join(scratch), b"torn").unwrap();
        }
        let mut dest = h.open();
        assert!(dest.begin(Method::ReloadAndCompare, &LandOptions::default()).unwrap().resumed);
        let m = complete_and_commit(&mut *dest, &["p1", "p2", "p3"], &["p1", "p2", "p3"]);
        assert_eq!((m.staged, m.unchanged, m.updated), (8, 7, 1));
        assert_eq!(h.rows(), sorted(second.iter().map(|r| landed(r, &r1, &start.run_id)).collect()));
        assert_eq!(h.changes(&start.run_id).len(), 1);
        // The previous snapshot's files were never written through a link.
        assert_eq!(std::fs::read(&obs_file).unwrap(), obs_bytes);
        let left: Vec<String> = std::fs::read_dir(&versions)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(sorted(left), sorted(vec![r1, start.run_id]));
    }

    macro_rules! incremental_tests {
        ($module:ident, $kind:expr) => {
            mod $module {
                use super::*;

                /// An unchanged reload-and-compare (and reload) keeps every data file (same
                /// inode and mtime), flattens nothing and records no change; readers see the
                /// rows as seen by the new run.
                #[test]
                fn unchanged_run_keeps_every_data_file() {
                    super::unchanged_run_keeps_every_data_file($kind);
                }

                /// One edited resource rewrites its type's file and the views over it, nothing
                /// else, and re-flattens only that resource.
                #[test]
                fn one_change_rewrites_its_type_and_views_only() {
                    super::one_change_rewrites_its_type_and_views_only($kind);
                }

                /// After edits, deletes, inserts, a gap and unchanged runs, rows and every view
                /// read exactly as a full load of the same data (run columns aside), and
                /// `last_seen_run` reads as the runs that saw each row.
                #[test]
                fn incremental_runs_read_as_a_full_load() {
                    super::incremental_runs_read_as_a_full_load($kind);
                }

                /// A view redefined under the same name is rebuilt although its type is kept.
                #[test]
                fn redefined_view_is_rebuilt() {
                    super::redefined_view_is_rebuilt($kind);
                }

                /// A changed decimal with more fraction digits than a carried Parquet view's
                /// column holds rebuilds that view in full; either way the view reads as a full
                /// load of the same data.
                #[test]
                fn outgrown_decimal_rebuilds_the_view() {
                    super::outgrown_decimal_rebuilds_the_view($kind);
                }

                /// Staging writes an unchanged resource as its key only, and a resumed run
                /// takes those rows from the snapshot.
                #[test]
                fn unchanged_resources_stage_as_keys() {
                    super::unchanged_resources_stage_as_keys($kind);
                }

                /// A commit killed while its snapshot held links to the current files (and its
                /// scratch folders were half written) is rebuilt on rerun without writing through
                /// them; half-built folders are removed.
                #[test]
                fn killed_commit_is_rebuilt() {
                    super::killed_commit_is_rebuilt($kind);
                }
            }
        };
    }

    incremental_tests!(parquet, Kind::Parquet);
    incremental_tests!(ndjson, Kind::Ndjson);
}
