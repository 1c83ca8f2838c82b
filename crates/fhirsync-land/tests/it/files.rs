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
fn cell_text(batch: &RecordBatch, name: &str, i: usize) -> Option<String> {
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

    fn rows(&self) -> Vec<Landed> {
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
