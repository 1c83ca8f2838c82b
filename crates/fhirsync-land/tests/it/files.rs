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
                    if rt.starts_with("view_") {
                        continue;
                    }
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
        let current = self.current().unwrap();
        let mut out = Vec::new();
        match self.kind {
            Kind::Parquet => {
                for b in parquet_batches(&current.join(table).join("part-0.parquet")) {
                    let cols: Vec<Vec<Option<String>>> = columns.iter().map(|c| strings(&b, c)).collect();
                    for i in 0..b.num_rows() {
                        out.push(cols.iter().map(|c| c[i].clone()).collect());
                    }
                }
            }
            Kind::Ndjson => {
                for line in json_lines(&current.join(format!("{table}.ndjson"))) {
                    let v: Value = serde_json::from_str(&line).unwrap();
                    out.push(columns.iter().map(|c| text(&v, c)).collect());
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
