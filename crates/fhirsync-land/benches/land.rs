//! Landing benchmarks on 100k realistic (~1 KB) Observation resources into SQLite:
//! full load, plain reload of unchanged data, and reload-and-compare of unchanged data; and into
//! Parquet: reload-and-compare of unchanged data and of data with 1 resource in 10,000 edited;
//! with the `delta` feature into Delta Lake: full load and reload-and-compare of unchanged data.
//!
//! Goals (issue 5): ≤ 5 CPU-s per 1 M resources (multiply the 100k times by 10), compare ≤ 1.2 ×
//! reload, peak RSS < 256 MB. Set `FHIRSYNC_BENCH_PROFILE=1` to also print CPU seconds (user +
//! system, from /proc/thread-self/stat) and peak RSS (VmHWM) of one full load, two reloads, a
//! compare, and a compare with 1 resource in 20 edited before the divan timings (`only`: skip the timings); `FHIRSYNC_BENCH_RESOURCES=1000000`
//! profiles another size, and `FHIRSYNC_BENCH_METHODS=full-load,reload` profiles only those methods.
//! `FHIRSYNC_BENCH_DESTINATION=parquet` (or `ndjson`, or `delta` when built with `--features
//! delta`) profiles that destination instead of SQLite,
//! and `FHIRSYNC_BENCH_VIEWS=default` commits with the shipped views (as `fhirsync sync` does).
//!
//! The input is generated batch by batch on a producer thread while landing (a few search pages
//! in memory, as in a real run), so peak RSS is that of landing. The profile counts the CPU of
//! the landing thread only (SQLite writes and checkpoints on the thread that commits) and resets
//! the peak (`/proc/self/clear_refs`) before each method.

/// The allocator the `fhirsync` binary uses (see its `main.rs`): a producer thread allocates
/// the resources the landing thread frees, as extraction and landing do in a run.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use fhirsync_core::{Dataset, FhirVersion, RawResource, RunScope, ScopeKey};
use fhirsync_land::{
    Destination, DestinationConfig, LandOptions, Method, NdjsonConfig, ParquetConfig, SqliteConfig,
};
use fhirsync_views::View;

/// Resources per run.
const RESOURCES: usize = 100_000;
/// Observations per patient.
const PER_PATIENT: usize = 100;
/// Resources per `stage` call (one search page is typically 100-1000).
const BATCH: usize = 1_000;

/// Observation `i`; `edited` changes its value (an amended result).
fn observation(i: usize, edited: bool) -> RawResource {
    let patient = format!("e{:07}", i / PER_PATIENT);
    let json = format!(
        r#"{{"resourceType":"Observation","id":"eObs{i:09}.lab","basedOn":[{{"reference":"ServiceRequest/eSR{i:08}","display":"Basic metabolic panel"}}],"status":"final","category":[{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"laboratory","display":"Laboratory"}}],"text":"Laboratory"}}],"code":{{"coding":[{{"system":"http://loinc.org","code":"2345-7","display":"Glucose [Mass/volume] in Serum or Plasma"}},{{"system":"urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14","code":"1555"}}],"text":"Glucose"}},"subject":{{"reference":"Patient/{patient}","display":"Patient, Test"}},"encounter":{{"reference":"Encounter/eEnc{enc:08}","identifier":{{"use":"usual","system":"urn:oid:1.2.840.114350.1.13.0.1.7.3.698084.8","value":"{enc}"}},"display":"Office Visit"}},"effectiveDateTime":"2023-0{m}-1{d}T14:3{d}:00Z","issued":"2023-0{m}-1{d}T15:02:11Z","performer":[{{"reference":"Practitioner/ePract{p:05}","type":"Practitioner","display":"Physician, Family Medicine, MD"}}],"valueQuantity":{{"value":{v}.{f:02},"unit":"mg/dL","system":"http://unitsofmeasure.org","code":"mg/dL"}},"interpretation":[{{"coding":[{{"system":"urn:oid:1.2.840.114350.1.13.0.1.7.4.698084.10655","code":"N","display":"Normal"}}],"text":"Normal"}}],"referenceRange":[{{"low":{{"value":70,"unit":"mg/dL"}},"high":{{"value":99,"unit":"mg/dL"}},"text":"70 - 99 mg/dL"}}]}}"#,
        enc = i / 10,
        m = 1 + i % 9,
        d = i % 10,
        p = i % 997,
        v = 70 + i % 60,
        f = if edited { 100 + i % 100 } else { i % 100 },
    );
    let dataset = Dataset::with_category("Observation", "laboratory");
    RawResource::from_json(json, Some(patient), dataset, FhirVersion::R4, "https://fhir.example/api/FHIR/R4")
        .unwrap()
}

/// Resources per profiled run: `FHIRSYNC_BENCH_RESOURCES` or [`RESOURCES`].
fn profile_resources() -> usize {
    std::env::var("FHIRSYNC_BENCH_RESOURCES").ok().and_then(|v| v.parse().ok()).unwrap_or(RESOURCES)
}

/// Whether the profile runs method `name`: `FHIRSYNC_BENCH_METHODS` (comma-separated names, e.g.
/// `full-load`) or all of them.
fn profile_selected(name: &str) -> bool {
    std::env::var("FHIRSYNC_BENCH_METHODS").map_or(true, |v| v.split(',').any(|m| m.trim() == name))
}

/// The input, one batch (search page) at a time; with `edit_every = Some(n)` every n-th
/// resource is edited.
fn batches(resources: usize, edit_every: Option<usize>) -> impl Iterator<Item = Vec<RawResource>> {
    let edited = move |i: usize| edit_every.is_some_and(|n| i.is_multiple_of(n));
    (0..resources).step_by(BATCH).map(move |start| {
        (start..(start + BATCH).min(resources)).map(|i| observation(i, edited(i))).collect()
    })
}

fn run_scope(resources: usize) -> RunScope {
    let patients = resources.div_ceil(PER_PATIENT);
    RunScope {
        cohort: (0..patients).map(|p| format!("e{p:07}")).collect(),
        complete: (0..patients)
            .map(|p| ScopeKey {
                fhir_version: FhirVersion::R4,
                patient_id: Some(format!("e{p:07}")),
                dataset: Dataset::with_category("Observation", "laboratory"),
            })
            .collect(),
        gaps: 0,
    }
}

/// The destinations the profile can land into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Parquet,
    Ndjson,
    #[cfg(feature = "delta")]
    Delta,
}

impl Kind {
    /// `FHIRSYNC_BENCH_DESTINATION` (`sqlite`, the default, `parquet` or `ndjson`).
    fn from_env() -> Kind {
        match std::env::var("FHIRSYNC_BENCH_DESTINATION").as_deref() {
            Ok("parquet") => Kind::Parquet,
            Ok("ndjson") => Kind::Ndjson,
            #[cfg(feature = "delta")]
            Ok("delta") => Kind::Delta,
            Ok("sqlite") | Err(_) => Kind::Sqlite,
            Ok(other) => panic!("FHIRSYNC_BENCH_DESTINATION={other}: give sqlite, parquet or ndjson"),
        }
    }

    /// The database file (SQLite) or folder (Parquet, NDJSON) inside `dir`.
    fn target(self, dir: &Path) -> PathBuf {
        dir.join(match self {
            Kind::Sqlite => "land.db",
            Kind::Parquet => "parquet",
            Kind::Ndjson => "ndjson",
            #[cfg(feature = "delta")]
            Kind::Delta => "delta",
        })
    }
}

fn open(kind: Kind, path: &Path) -> Box<dyn Destination> {
    let config = match kind {
        Kind::Sqlite => {
            DestinationConfig::Sqlite(SqliteConfig { path: path.to_path_buf(), ..SqliteConfig::default() })
        }
        Kind::Parquet => DestinationConfig::Parquet(ParquetConfig::new(path)),
        Kind::Ndjson => DestinationConfig::Ndjson(NdjsonConfig::new(path)),
        #[cfg(feature = "delta")]
        Kind::Delta => DestinationConfig::Delta(fhirsync_land::DeltaConfig::new(path.to_str().unwrap())),
    };
    fhirsync_land::open(&config).unwrap()
}

/// The views a commit materialises: the shipped ones with `FHIRSYNC_BENCH_VIEWS=default`, else none.
fn bench_views() -> Vec<View> {
    match std::env::var("FHIRSYNC_BENCH_VIEWS").as_deref() {
        Ok("default") => fhirsync_views::default_views(),
        _ => Vec::new(),
    }
}

/// Lands `resources` resources generated on another thread; returns the landing thread's CPU
/// seconds and the syscall MiB (read, written) at the end of staging.
fn land(
    kind: Kind,
    path: &Path,
    method: Method,
    scope: &RunScope,
    views: &[View],
    resources: usize,
    edit_every: Option<usize>,
) -> (f64, (f64, f64)) {
    let mut dest = open(kind, path);
    dest.begin(method, &LandOptions { replace: true, ..LandOptions::default() }).unwrap();
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    let producer = std::thread::spawn(move || {
        for batch in batches(resources, edit_every) {
            if tx.send(batch).is_err() {
                break;
            }
        }
    });
    for batch in rx {
        dest.stage(&batch).unwrap();
    }
    producer.join().unwrap();
    for s in &scope.complete {
        dest.scope_complete(s).unwrap();
    }
    dest.checkpoint().unwrap();
    let staged_at = (cpu_seconds(), io_mib());
    dest.commit(scope, views, &serde_json::json!({})).unwrap();
    staged_at
}

/// A database holding the data, copied per iteration (database + WAL files).
struct Loaded {
    _dir: tempfile::TempDir,
    db: PathBuf,
}

static TEMPLATE: LazyLock<Loaded> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("template.db");
    land(Kind::Sqlite, &db, Method::FullLoad, &run_scope(RESOURCES), &[], RESOURCES, None);
    Loaded { _dir: dir, db }
});

/// A Parquet folder holding the data (no views), copied per iteration.
static PARQUET_TEMPLATE: LazyLock<Loaded> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("template");
    land(Kind::Parquet, &root, Method::FullLoad, &run_scope(RESOURCES), &[], RESOURCES, None);
    Loaded { _dir: dir, db: root }
});

/// Copies a folder tree, recreating symlinks as symlinks (the `current` link).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let ty = entry.file_type().unwrap();
        if ty.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if ty.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

fn parquet_copy() -> Loaded {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("parquet");
    copy_tree(&PARQUET_TEMPLATE.db, &root);
    Loaded { _dir: dir, db: root }
}

fn loaded_copy() -> Loaded {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("land.db");
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", TEMPLATE.db.display()));
        if from.exists() {
            std::fs::copy(&from, format!("{}{suffix}", db.display())).unwrap();
        }
    }
    Loaded { _dir: dir, db }
}

/// Full load of 100k resources into an empty SQLite file.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn sqlite_full_load_100k(bencher: divan::Bencher) {
    let scope = run_scope(RESOURCES);
    bencher.with_inputs(|| tempfile::tempdir().unwrap()).bench_local_values(|dir| {
        land(Kind::Sqlite, &dir.path().join("land.db"), Method::FullLoad, &scope, &[], RESOURCES, None);
        dir
    });
}

/// Plain reload of the same 100k resources over a loaded file.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn sqlite_reload_unchanged_100k(bencher: divan::Bencher) {
    let scope = run_scope(RESOURCES);
    bencher.with_inputs(loaded_copy).bench_local_values(|l| {
        land(Kind::Sqlite, &l.db, Method::Reload, &scope, &[], RESOURCES, None);
        l
    });
}

/// Reload-and-compare of the same (unchanged) 100k resources over a loaded file.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn sqlite_compare_unchanged_100k(bencher: divan::Bencher) {
    let scope = run_scope(RESOURCES);
    bencher.with_inputs(loaded_copy).bench_local_values(|l| {
        land(Kind::Sqlite, &l.db, Method::ReloadAndCompare, &scope, &[], RESOURCES, None);
        l
    });
}

/// Reload-and-compare of the same (unchanged) 100k resources over a loaded Parquet folder.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn parquet_compare_unchanged_100k(bencher: divan::Bencher) {
    let scope = run_scope(RESOURCES);
    bencher.with_inputs(parquet_copy).bench_local_values(|l| {
        land(Kind::Parquet, &l.db, Method::ReloadAndCompare, &scope, &[], RESOURCES, None);
        l
    });
}

/// Reload-and-compare of 100k resources, 1 in 10,000 edited, over a loaded Parquet folder.
#[divan::bench(sample_count = 3, sample_size = 1)]
fn parquet_compare_1_in_10000_edited_100k(bencher: divan::Bencher) {
    let scope = run_scope(RESOURCES);
    bencher.with_inputs(parquet_copy).bench_local_values(|l| {
        land(Kind::Parquet, &l.db, Method::ReloadAndCompare, &scope, &[], RESOURCES, Some(10_000));
        l
    });
}

/// A Delta root holding the data (no views), copied per iteration.
#[cfg(feature = "delta")]
static DELTA_TEMPLATE: LazyLock<Loaded> = LazyLock::new(|| {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("template");
    land(Kind::Delta, &root, Method::FullLoad, &run_scope(RESOURCES), &[], RESOURCES, None);
    Loaded { _dir: dir, db: root }
});

/// Full load of 100k resources into an empty Delta root.
#[cfg(feature = "delta")]
#[divan::bench(sample_count = 3, sample_size = 1)]
fn delta_full_load_100k(bencher: divan::Bencher) {
    let scope = run_scope(RESOURCES);
    bencher.with_inputs(|| tempfile::tempdir().unwrap()).bench_local_values(|dir| {
        land(Kind::Delta, &dir.path().join("delta"), Method::FullLoad, &scope, &[], RESOURCES, None);
        dir
    });
}

/// Reload-and-compare of the same (unchanged) 100k resources over a loaded Delta root.
#[cfg(feature = "delta")]
#[divan::bench(sample_count = 3, sample_size = 1)]
fn delta_compare_unchanged_100k(bencher: divan::Bencher) {
    let scope = run_scope(RESOURCES);
    bencher
        .with_inputs(|| {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("delta");
            copy_tree(&DELTA_TEMPLATE.db, &root);
            Loaded { _dir: dir, db: root }
        })
        .bench_local_values(|l| {
            land(Kind::Delta, &l.db, Method::ReloadAndCompare, &scope, &[], RESOURCES, None);
            l
        });
}

/// User + system CPU seconds of the calling thread so far.
fn cpu_seconds() -> f64 {
    let (user, system) = cpu_split();
    user + system
}

/// User and system CPU seconds of the calling thread so far.
fn cpu_split() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, s)| s);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based) of stat, i.e. 11 and 12 after the `)`.
    (ticks(11) / 100.0, ticks(12) / 100.0)
}

/// Peak resident set size in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// MiB read and written through system calls so far (`rchar`, `wchar` of /proc/self/io): the
/// kernel copies behind SQLite's page reads and writes.
fn io_mib() -> (f64, f64) {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0.0, |b| b / (1024.0 * 1024.0))
    };
    (field("rchar:"), field("wchar:"))
}

/// Resets the peak RSS (VmHWM) to the current RSS; false if the kernel does not allow it.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

fn profile() {
    let resources = profile_resources();
    let scope = run_scope(resources);
    let (kind, views) = (Kind::from_env(), bench_views());
    let dir = tempfile::tempdir().unwrap();
    let db = kind.target(dir.path());
    // The first page stands for the rest (the generator varies only digits).
    let page = batches(resources, None).next().unwrap_or_default();
    let bytes: usize = page.iter().map(|r| r.json.len()).sum();
    println!(
        "profile: {kind:?}, {} views, {resources} resources, about {:.0} bytes each; CPU of the landing \
         thread; RSS before landing {:.0} MiB",
        views.len(),
        bytes as f64 / page.len().max(1) as f64,
        peak_rss_mib()
    );
    let mut per_method = Vec::new();
    // The first reload follows the full load; the compare/reload ratio is taken between the
    // second reload and the compare after it. Then 1 resource in 10,000 is edited (a quiet day),
    // and in the last run 1 resource in 20 (a busy day).
    for (name, method, edit_every) in [
        ("full-load", Method::FullLoad, None),
        ("reload (first)", Method::Reload, None),
        ("reload", Method::Reload, None),
        ("reload-and-compare", Method::ReloadAndCompare, None),
        ("compare (0.01 % edited)", Method::ReloadAndCompare, Some(10_000)),
        ("compare (5 % edited)", Method::ReloadAndCompare, Some(20)),
    ] {
        if !profile_selected(name) {
            continue;
        }
        let reset = reset_peak_rss();
        let (cpu0, wall0, io0) = (cpu_seconds(), std::time::Instant::now(), io_mib());
        let split0 = cpu_split();
        let (staged_at, staged_io) = land(kind, &db, method, &scope, &views, resources, edit_every);
        let cpu = cpu_seconds() - cpu0;
        let split = cpu_split();
        let wall = wall0.elapsed().as_secs_f64();
        let io = io_mib();
        println!(
            "profile: {name:<28} cpu {cpu:6.2} s (user {:5.2}, system {:5.2}; staging {:5.2} s, commit {:5.2} s; = {:5.1} \
             CPU-s per 1M), wall {wall:6.2} s, read {:.0} MiB, written {:.0} MiB (staging {:.0}), peak RSS {:.0} MiB{}",
            split.0 - split0.0,
            split.1 - split0.1,
            staged_at - cpu0,
            cpu - (staged_at - cpu0),
            cpu * 1_000_000.0 / resources as f64,
            io.0 - io0.0,
            io.1 - io0.1,
            staged_io.1 - io0.1,
            peak_rss_mib(),
            if reset { "" } else { " (since process start: clear_refs not allowed)" }
        );
        per_method.push((name, cpu, wall));
    }
    let measured = |name: &str| per_method.iter().find(|m| m.0 == name).map(|m| (m.1, m.2));
    if let (Some((reload_cpu, reload_wall)), Some((compare_cpu, compare_wall))) =
        (measured("reload"), measured("reload-and-compare"))
    {
        println!(
            "profile: compare / reload: cpu {:.2}x, wall {:.2}x",
            compare_cpu / reload_cpu,
            compare_wall / reload_wall
        );
    }
}

#[allow(unsafe_code)] // mimalloc's option setter, as in the binary.
fn main() {
    // SAFETY: as the binary's `tune_allocator` (the same option, purge delay 15, and value, 100
    // ms), before other threads exist.
    unsafe { libmimalloc_sys::mi_option_set_default(15, 100) }
    match std::env::var("FHIRSYNC_BENCH_PROFILE").as_deref() {
        Ok("only") => return profile(),
        Ok(_) => profile(),
        Err(_) => {}
    }
    divan::main();
}
