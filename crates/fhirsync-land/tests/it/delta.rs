//! The scenario on the Delta Lake destination, read back by replaying each table's
//! `_delta_log` JSON commits by hand and reading the Parquet files they name (no delta-rs on
//! the read side): active files for the rows, `cdc` files (or the added and removed files of a
//! commit without them) for the change data feed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fhirsync_land::{DeltaConfig, Destination, DestinationConfig, LandOptions, Method};
use serde_json::Value;
use tempfile::TempDir;

use crate::files::{cell_text, parquet_batches, strings};
use crate::support::*;

/// A temporary Delta root (tables and state in one folder).
pub struct DeltaHarness {
    dir: TempDir,
}

/// One commit of a table's log.
#[derive(Debug, Default)]
pub struct Commit {
    pub run_id: Option<String>,
    pub method: Option<String>,
    pub adds: Vec<String>,
    pub removes: Vec<String>,
    pub cdc: Vec<String>,
}

/// A table's log replayed.
#[derive(Debug, Default)]
pub struct Log {
    /// Logical name (`metaData.name`).
    pub name: String,
    pub configuration: BTreeMap<String, String>,
    pub commits: Vec<Commit>,
    /// Files of the latest version.
    pub active: BTreeSet<String>,
}

impl Log {
    /// Replays `<table>/_delta_log/*.json` in version order.
    pub fn read(table: &Path) -> Log {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(table.join("_delta_log"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        let mut log = Log::default();
        for (version, path) in paths.iter().enumerate() {
            assert_eq!(path.file_stem().unwrap().to_str().unwrap(), format!("{version:020}"));
            let mut commit = Commit::default();
            for line in std::fs::read_to_string(path).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                let path_of = |a: &Value| a["path"].as_str().unwrap().to_string();
                if let Some(a) = v.get("add") {
                    log.active.insert(path_of(a));
                    commit.adds.push(path_of(a));
                } else if let Some(a) = v.get("remove") {
                    log.active.remove(&path_of(a));
                    commit.removes.push(path_of(a));
                } else if let Some(a) = v.get("cdc") {
                    commit.cdc.push(path_of(a));
                } else if let Some(m) = v.get("metaData") {
                    log.name = m["name"].as_str().unwrap_or_default().to_string();
                    for (k, v) in m["configuration"].as_object().unwrap() {
                        log.configuration.insert(k.clone(), v.as_str().unwrap_or_default().to_string());
                    }
                } else if let Some(info) = v.get("commitInfo") {
                    commit.run_id = info.get("fhirsync.runId").and_then(Value::as_str).map(str::to_string);
                    commit.method = info.get("fhirsync.method").and_then(Value::as_str).map(str::to_string);
                }
            }
            log.commits.push(commit);
        }
        log
    }

    /// The run of the latest commit.
    pub fn latest_run(&self) -> Option<String> {
        self.commits.last().and_then(|c| c.run_id.clone())
    }
}

/// One row of a type table's change data feed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CdfRow {
    pub change_type: String,
    pub id: String,
    pub content_hash: String,
    pub last_seen_run: Option<String>,
}

impl DeltaHarness {
    pub fn new() -> Self {
        DeltaHarness { dir: tempfile::tempdir().unwrap() }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn config(&self) -> DestinationConfig {
        DestinationConfig::Delta(DeltaConfig::new(self.dir.path().to_str().unwrap()))
    }

    /// Table folders (type tables, or view tables with `views`).
    fn tables(&self, views: bool) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.join("_delta_log").is_dir())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("view_") == views)
            .collect();
        out.sort();
        out
    }

    /// The change data feed of the commits `run_id` made to type table `table`, as a Delta
    /// reader derives it: the commit's `cdc` files, or its added files as inserts and removed
    /// files as deletes when it has none.
    pub fn cdf(&self, table: &str, run_id: &str) -> Vec<CdfRow> {
        let dir = self.dir.path().join(table);
        let log = Log::read(&dir);
        let mut out = Vec::new();
        for c in log.commits.iter().filter(|c| c.run_id.as_deref() == Some(run_id)) {
            let files: Vec<(&String, Option<&str>)> = if c.cdc.is_empty() {
                c.adds
                    .iter()
                    .map(|p| (p, Some("insert")))
                    .chain(c.removes.iter().map(|p| (p, Some("delete"))))
                    .collect()
            } else {
                c.cdc.iter().map(|p| (p, None)).collect()
            };
            for (path, fixed) in files {
                for b in parquet_batches(&dir.join(path)) {
                    let (id, hash, last) =
                        (strings(&b, "id"), strings(&b, "content_hash"), strings(&b, "last_seen_run"));
                    let types = fixed.is_none().then(|| strings(&b, "_change_type"));
                    for i in 0..b.num_rows() {
                        out.push(CdfRow {
                            change_type: fixed
                                .map_or_else(|| types.as_ref().unwrap()[i].clone().unwrap(), str::to_string),
                            id: id[i].clone().unwrap(),
                            content_hash: hash[i].clone().unwrap(),
                            last_seen_run: last[i].clone(),
                        });
                    }
                }
            }
        }
        sorted(out)
    }
}

impl Harness for DeltaHarness {
    fn open(&self) -> Box<dyn Destination> {
        fhirsync_land::open(&self.config()).unwrap()
    }

    fn rows(&self) -> Vec<Landed> {
        let mut out = Vec::new();
        for table in self.tables(false) {
            let log = Log::read(&table);
            // Null `last_seen_run`: seen by the run of the table's latest commit.
            let latest = log.latest_run();
            for file in &log.active {
                for b in parquet_batches(&table.join(file)) {
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
                            resource_type: log.name.clone(),
                            fhir_version: ver[i].clone().unwrap(),
                            id: id[i].clone().unwrap(),
                            patient_id: pat[i].clone(),
                            dataset: ds[i].clone().unwrap(),
                            source: src[i].clone().unwrap(),
                            content_hash: hash[i].clone().unwrap(),
                            resource: res[i].clone().unwrap(),
                            first_seen_run: first[i].clone().unwrap(),
                            last_seen_run: last[i].clone().or_else(|| latest.clone()).unwrap(),
                        });
                    }
                }
            }
        }
        sorted(out)
    }

    /// The resource changes of a reload-and-compare run: its CDF without updates of
    /// `last_seen_run` only (the CDF of a full load or reload is a replace of the table).
    fn changes(&self, run_id: &str) -> Vec<Change> {
        let mut out = Vec::new();
        for table in self.tables(false) {
            let compared = Log::read(&table).commits.iter().any(|c| {
                c.run_id.as_deref() == Some(run_id) && c.method.as_deref() == Some("reload-and-compare")
            });
            if !compared {
                continue;
            }
            let name = table.file_name().unwrap().to_str().unwrap().to_string();
            let resource_type = Log::read(&table).name;
            let cdf = self.cdf(&name, run_id);
            let pre: BTreeMap<&str, &str> = cdf
                .iter()
                .filter(|r| r.change_type == "update_preimage")
                .map(|r| (r.id.as_str(), r.content_hash.as_str()))
                .collect();
            for r in &cdf {
                let (op, before, after) = match r.change_type.as_str() {
                    "insert" => ("I", None, Some(r.content_hash.clone())),
                    "delete" => ("D", Some(r.content_hash.clone()), None),
                    "update_postimage" => {
                        ("U", pre.get(r.id.as_str()).map(|h| h.to_string()), Some(r.content_hash.clone()))
                    }
                    _ => continue,
                };
                // An update of `last_seen_run` only is not a change of the resource.
                if op == "U" && before.as_deref() == after.as_deref() {
                    continue;
                }
                out.push(Change {
                    operation: op.into(),
                    resource_type: resource_type.clone(),
                    id: r.id.clone(),
                    before_hash: before,
                    after_hash: after,
                });
            }
        }
        sorted(out)
    }

    fn exits(&self) -> Vec<String> {
        let Ok(text) = std::fs::read_to_string(self.dir.path().join("_fhirsync/cohort_exits.json")) else {
            return Vec::new();
        };
        let v: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
        v.keys().cloned().collect()
    }

    fn runs(&self) -> Vec<RunRow> {
        let Ok(text) = std::fs::read_to_string(self.dir.path().join("_fhirsync/runs.json")) else {
            return Vec::new();
        };
        let v: Vec<Value> = serde_json::from_str(&text).unwrap();
        let s = |r: &Value, k: &str| r[k].as_str().unwrap().to_string();
        v.iter()
            .map(|r| RunRow { run_id: s(r, "run_id"), method: s(r, "method"), status: s(r, "status") })
            .collect()
    }

    fn view_rows(&self, table: &str, columns: &[&str]) -> Vec<Vec<Option<String>>> {
        let dir = self.dir.path().join(table);
        let log = Log::read(&dir);
        let mut out = Vec::new();
        for file in &log.active {
            for b in parquet_batches(&dir.join(file)) {
                for i in 0..b.num_rows() {
                    out.push(columns.iter().map(|c| cell_text(&b, c, i)).collect());
                }
            }
        }
        sorted(out)
    }
}

mod delta_dest {
    use super::*;
    use crate::scenario::scenario_tests;

    scenario_tests!(Some(DeltaHarness::new()));

    fn all(patients: &[&str]) -> fhirsync_core::RunScope {
        run_scope(patients, scopes_of(patients))
    }

    /// A full load lands every resource in one commit per type table, partitioned by bucket,
    /// with the change data feed enabled and the run id in the commit.
    #[test]
    fn full_load_is_one_commit_per_table() {
        let h = DeltaHarness::new();
        let res = [patient("p1", "A"), patient("p2", "B"), obs("o1", "p1", "1.50"), obs("o2", "p2", "2")];
        let m = land(&mut *h.open(), Method::FullLoad, &LandOptions::default(), &res, all(&["p1", "p2"]))
            .unwrap();
        assert_eq!((m.staged, m.inserted), (4, 4));
        let obs_log = Log::read(&h.root().join("observation"));
        assert_eq!(obs_log.name, "Observation");
        assert_eq!(obs_log.commits.len(), 1);
        assert_eq!(obs_log.latest_run().as_deref(), Some(m.run_id.as_str()));
        assert_eq!(obs_log.configuration.get("delta.enableChangeDataFeed").map(String::as_str), Some("true"));
        assert!(obs_log.active.iter().all(|f| f.starts_with("bucket=")), "{:?}", obs_log.active);
        assert_eq!(h.rows().len(), 4);
        // Every landed row was seen by the load: `last_seen_run` is null in the files.
        for f in &obs_log.active {
            for b in parquet_batches(&h.root().join("observation").join(f)) {
                assert!(strings(&b, "last_seen_run").iter().all(Option::is_none));
            }
        }
    }

    /// Reload-and-compare with one update, one delete and one insert rewrites only the touched
    /// files and its change data feed shows exactly those changes with their images.
    #[test]
    fn compare_writes_the_change_data_feed() {
        let h = DeltaHarness::new();
        let patients: Vec<String> = (0..40).map(|i| format!("p{i}")).collect();
        let ps: Vec<&str> = patients.iter().map(String::as_str).collect();
        let mut first: Vec<_> = ps.iter().map(|p| patient(p, "X")).collect();
        first.extend(ps.iter().map(|p| obs(&format!("o-{p}"), p, "1.0")));
        let mut dest = h.open();
        land(&mut *dest, Method::FullLoad, &LandOptions::default(), &first, all(&ps)).unwrap();
        let before = Log::read(&h.root().join("observation")).active;

        // o-p0 edited, o-p1 gone, o-new added for p2.
        let mut second: Vec<_> = ps.iter().map(|p| patient(p, "X")).collect();
        second.extend(ps.iter().skip(2).map(|p| obs(&format!("o-{p}"), p, "1.0")));
        second.push(obs("o-p0", "p0", "9.5"));
        second.push(obs("o-new", "p2", "3"));
        let m =
            land(&mut *dest, Method::ReloadAndCompare, &LandOptions::default(), &second, all(&ps)).unwrap();
        assert_eq!((m.inserted, m.updated, m.deleted, m.unchanged), (1, 1, 1, 78));
        let cdf = h.cdf("observation", &m.run_id);
        let kinds: Vec<(&str, &str)> = cdf.iter().map(|r| (r.change_type.as_str(), r.id.as_str())).collect();
        assert_eq!(
            sorted(kinds),
            sorted(vec![
                ("delete", "o-p1"),
                ("insert", "o-new"),
                ("update_postimage", "o-p0"),
                ("update_preimage", "o-p0")
            ])
        );
        let pre = cdf.iter().find(|r| r.change_type == "update_preimage").unwrap();
        assert_eq!(pre.content_hash, obs("o-p0", "p0", "1.0").hash.to_hex());
        // Nothing changed in the Patient table: no file of it was rewritten.
        let patient_log = Log::read(&h.root().join("patient"));
        assert!(patient_log.commits.last().unwrap().adds.is_empty());
        assert!(h.cdf("patient", &m.run_id).is_empty());
        // Copy-on-write: most Observation files are untouched.
        let after = Log::read(&h.root().join("observation")).active;
        assert!(before.intersection(&after).count() >= before.len() - 3, "{before:?} -> {after:?}");
    }

    /// A commit that dies after its type tables committed (here: a view fails) converges on
    /// the rerun: the committed tables are skipped with their counts, the rest is committed.
    #[test]
    fn commit_restarted_after_a_crash_converges() {
        let h = DeltaHarness::new();
        let first = [patient("p1", "A"), obs("o1", "p1", "1")];
        land(&mut *h.open(), Method::FullLoad, &LandOptions::default(), &first, all(&["p1"])).unwrap();
        let second = [patient("p1", "A2"), obs("o1", "p1", "2"), obs("o2", "p1", "3")];
        let bad_view = fhirsync_views::View::from_json(&serde_json::json!({
            "resourceType": "ViewDefinition", "name": "bad", "resource": "Observation",
            "select": [{"column": [{"name": "n", "path": "status", "type": "integer"}]}]
        }))
        .unwrap();
        let mut dest = h.open();
        let start = dest.begin(Method::ReloadAndCompare, &LandOptions::default()).unwrap();
        dest.stage(&second).unwrap();
        for s in scopes_of(&["p1"]) {
            dest.scope_complete(&s).unwrap();
        }
        let err = dest.commit(&all(&["p1"]), &[bad_view], &serde_json::json!({})).unwrap_err();
        assert!(err.to_string().contains("bad"), "{err}");
        // The process dies here: no `fail`, the run stays `running`.
        drop(dest);
        let rows_after_crash = h.rows();
        assert_eq!(Log::read(&h.root().join("patient")).commits.len(), 2);
        assert_eq!(Log::read(&h.root().join("observation")).commits.len(), 2);

        let mut dest = h.open();
        let again = dest.begin(Method::ReloadAndCompare, &LandOptions::default()).unwrap();
        assert!(again.resumed);
        assert_eq!(again.run_id, start.run_id);
        let m = dest.commit(&all(&["p1"]), &[crate::scenario::obs_view()], &serde_json::json!({})).unwrap();
        assert_eq!(Log::read(&h.root().join("patient")).commits.len(), 2, "committed tables are skipped");
        assert_eq!(Log::read(&h.root().join("observation")).commits.len(), 2);
        assert_eq!((m.staged, m.inserted, m.updated, m.unchanged), (3, 1, 2, 0));
        assert_eq!(m.view_rows, 2);
        assert_eq!(h.rows(), rows_after_crash);
        assert_eq!(h.runs().last().unwrap().status, "succeeded");
        assert_eq!(
            h.view_rows("view_obs_values", &["obs_id"]),
            vec![vec![Some("o1".into())], vec![Some("o2".into())]]
        );
    }

    /// Rows of a scope that did not complete are kept and marked stale (`last_seen_run` set
    /// to the run that last saw them); a later complete run clears the mark.
    #[test]
    fn gaps_keep_rows_marked_stale() {
        let h = DeltaHarness::new();
        let mut dest = h.open();
        let res = [patient("p1", "A"), obs("o1", "p1", "1"), obs("o2", "p1", "2")];
        let r1 =
            land(&mut *dest, Method::FullLoad, &LandOptions::default(), &res, all(&["p1"])).unwrap().run_id;
        let mut complete = scopes_of(&["p1"]);
        complete.remove(&scope("p1", lab()));
        let m = land(
            &mut *dest,
            Method::ReloadAndCompare,
            &LandOptions::default(),
            &[patient("p1", "A")],
            run_scope(&["p1"], complete),
        )
        .unwrap();
        assert_eq!((m.deleted, m.kept), (0, 2));
        let stale: Vec<(String, String)> = h
            .rows()
            .into_iter()
            .filter(|r| r.resource_type == "Observation")
            .map(|r| (r.id, r.last_seen_run))
            .collect();
        assert_eq!(stale, vec![("o1".to_string(), r1.clone()), ("o2".to_string(), r1.clone())]);
        // The stale mark is an update in the feed with an unchanged content hash.
        let cdf = h.cdf("observation", &m.run_id);
        assert!(
            cdf.iter()
                .any(|r| r.change_type == "update_postimage"
                    && r.last_seen_run.as_deref() == Some(r1.as_str()))
        );
        assert!(h.changes(&m.run_id).is_empty());
        let m3 =
            land(&mut *dest, Method::ReloadAndCompare, &LandOptions::default(), &res, all(&["p1"])).unwrap();
        assert_eq!(m3.unchanged, 3);
        assert!(h.rows().iter().all(|r| r.last_seen_run == m3.run_id));
    }

    /// A resource whose patient changed (here p1 merged into p2: p1 left the cohort, so its
    /// rows are kept) is one update that moves it from p1's bucket to p2's, never a second row.
    #[test]
    fn a_resource_moved_to_another_patient_lands_once() {
        let h = DeltaHarness::new();
        let mut dest = h.open();
        let first = [patient("p1", "A"), patient("p2", "B"), obs("o1", "p1", "1")];
        let r1 = land(&mut *dest, Method::FullLoad, &LandOptions::default(), &first, all(&["p1", "p2"]))
            .unwrap()
            .run_id;
        let second = [patient("p2", "B"), obs("o1", "p2", "1")];
        let m = land(&mut *dest, Method::ReloadAndCompare, &LandOptions::default(), &second, all(&["p2"]))
            .unwrap();
        assert_eq!((m.updated, m.inserted, m.kept, m.cohort_exits), (1, 0, 1, 1));
        let o: Vec<_> = h.rows().into_iter().filter(|r| r.resource_type == "Observation").collect();
        assert_eq!(o.len(), 1, "{o:?}");
        assert_eq!((o[0].patient_id.as_deref(), o[0].first_seen_run.as_str()), (Some("p2"), r1.as_str()));
        // p1 and p2 hash to buckets 10 and 7.
        let active = Log::read(&h.root().join("observation")).active;
        assert!(active.iter().all(|f| f.starts_with("bucket=7/")), "{active:?}");
        let kinds: Vec<String> = h.cdf("observation", &m.run_id).into_iter().map(|r| r.change_type).collect();
        assert_eq!(kinds, vec!["update_postimage".to_string(), "update_preimage".to_string()]);
    }

    /// A resource staged under two patients in one run lands once, as its last copy, for a
    /// full load and for reload-and-compare.
    #[test]
    fn a_resource_staged_twice_lands_its_last_copy() {
        let h = DeltaHarness::new();
        let mut dest = h.open();
        let (a, b) = (obs("o1", "p1", "1"), obs("o1", "p2", "2"));
        let ps = [patient("p1", "A"), patient("p2", "B")];
        let first = [ps[0].clone(), ps[1].clone(), a.clone(), b.clone()];
        let m =
            land(&mut *dest, Method::FullLoad, &LandOptions::default(), &first, all(&["p1", "p2"])).unwrap();
        assert_eq!((m.staged, m.inserted), (3, 3));
        let only = |h: &DeltaHarness| -> Vec<(Option<String>, String)> {
            h.rows()
                .into_iter()
                .filter(|r| r.resource_type == "Observation")
                .map(|r| (r.patient_id, r.content_hash))
                .collect()
        };
        assert_eq!(only(&h), vec![(Some("p2".to_string()), b.hash.to_hex())]);
        let second = [ps[0].clone(), ps[1].clone(), b, a.clone()];
        let m =
            land(&mut *dest, Method::ReloadAndCompare, &LandOptions::default(), &second, all(&["p1", "p2"]))
                .unwrap();
        assert_eq!((m.staged, m.updated, m.unchanged), (3, 1, 2));
        assert_eq!(only(&h), vec![(Some("p1".to_string()), a.hash.to_hex())]);
    }

    /// After a reload-and-compare a view table is rewritten only in the bucket of the changed
    /// resource; a changed value with more decimals than its column holds rebuilds the table
    /// with the wider column.
    #[test]
    fn views_update_only_the_changed_buckets() {
        let h = DeltaHarness::new();
        let views = [crate::scenario::obs_view()];
        let mut res = vec![patient("p1", "A")];
        res.extend((0..40).map(|i| obs(&format!("o{i:02}"), "p1", "1.5")));
        let mut dest = h.open();
        let compare = LandOptions::default();
        land_with_views(&mut *dest, Method::FullLoad, &compare, &res, all(&["p1"]), &views).unwrap();
        let table = h.root().join("view_obs_values");
        let before = Log::read(&table).active;
        res[1] = obs("o00", "p1", "2.5");
        let m = land_with_views(&mut *dest, Method::ReloadAndCompare, &compare, &res, all(&["p1"]), &views)
            .unwrap();
        assert_eq!(m.updated, 1);
        let after = Log::read(&table).active;
        assert_eq!(
            (after.len(), before.difference(&after).count()),
            (before.len(), 1),
            "{before:?} -> {after:?}"
        );
        let values = |h: &DeltaHarness| -> Vec<String> {
            h.view_rows("view_obs_values", &["obs_id", "value"])
                .into_iter()
                .map(|r| format!("{}={}", r[0].clone().unwrap(), r[1].clone().unwrap()))
                .collect()
        };
        let mut want: Vec<String> = (1..40).map(|i| format!("o{i:02}=1.5")).collect();
        want.insert(0, "o00=2.5".into());
        assert_eq!(values(&h), want);
        res[2] = obs("o01", "p1", "1.25");
        land_with_views(&mut *dest, Method::ReloadAndCompare, &compare, &res, all(&["p1"]), &views).unwrap();
        let mut want: Vec<String> = (2..40).map(|i| format!("o{i:02}=1.50")).collect();
        want.splice(0..0, ["o00=2.50".to_string(), "o01=1.25".to_string()]);
        assert_eq!(values(&h), want);
    }

    /// An object-store URL without a local state folder is refused naming `state_dir`.
    #[test]
    fn object_store_needs_a_state_dir() {
        let err = fhirsync_land::open(&DestinationConfig::Delta(DeltaConfig::new("s3://bucket/prefix")))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("state_dir"), "{err}");
    }

    /// `status` reads the run history of a Delta destination.
    #[test]
    fn status_reads_the_runs() {
        let h = DeltaHarness::new();
        land(&mut *h.open(), Method::FullLoad, &LandOptions::default(), &[patient("p1", "A")], all(&["p1"]))
            .unwrap();
        let runs = fhirsync_land::recent_runs(&h.config(), 10).unwrap();
        assert_eq!(runs.len(), 1);
        let inserted = runs[0].metrics.as_ref().map(|m| m.inserted);
        assert_eq!((runs[0].status.as_str(), inserted), ("succeeded", Some(1)));
    }

    /// A new state folder records the current schema version; one a newer fhirsync wrote is
    /// refused by a writer and by `status`, naming both versions and the fix, and its run
    /// history is not written.
    #[test]
    fn newer_state_folder_is_refused() {
        let h = DeltaHarness::new();
        land(&mut *h.open(), Method::FullLoad, &LandOptions::default(), &[patient("p1", "A")], all(&["p1"]))
            .unwrap();
        let schema = h.dir.path().join("_fhirsync").join("schema.json");
        let record: Value = serde_json::from_slice(&std::fs::read(&schema).unwrap()).unwrap();
        assert_eq!(record["schema_version"], fhirsync_land::FILES_SCHEMA_VERSION);
        std::fs::write(&schema, r#"{"schema_version": 99, "fhirsync_version": "9.0.0"}"#).unwrap();
        let runs_file = h.dir.path().join("_fhirsync").join("runs.json");
        let before = std::fs::read(&runs_file).unwrap();
        for err in [
            fhirsync_land::open(&h.config()).err().expect("the open must fail"),
            fhirsync_land::recent_runs(&h.config(), 10).unwrap_err(),
        ] {
            let text = err.to_string();
            assert!(matches!(err, fhirsync_land::Error::SchemaTooNew { found: 99, .. }), "{text}");
            assert!(text.contains("fhirsync 9.0.0") && text.contains("upgrade fhirsync"), "{text}");
        }
        assert_eq!(std::fs::read(&runs_file).unwrap(), before);
    }
}
