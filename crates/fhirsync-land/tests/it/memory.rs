//! The file destinations' commit holds a bounded number of view rows and change records,
//! whatever the volume: measured with a per-thread heap counter (this binary's global
//! allocator, [`Tracking`]), so the figures are exact and independent of timing. The commit
//! runs on the calling thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use fhirsync_land::{DestinationConfig, LandOptions, Method, NdjsonConfig, ParquetConfig};

use crate::support::*;

/// The system allocator, counting the bytes live on each thread and their peak.
pub struct Tracking;

thread_local! {
    static LIVE: Cell<i64> = const { Cell::new(0) };
    static PEAK: Cell<i64> = const { Cell::new(0) };
}

fn count(delta: i64) {
    // `try_with`: a thread being torn down has no counters any more.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + delta;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

#[allow(unsafe_code)] // An allocator is an unsafe trait; the only way to count the heap exactly.
// SAFETY: every call goes to `System` with the caller's arguments unchanged; the counters only
// read the sizes.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, passed on as it is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        // SAFETY: `p` came from `System` with `layout` (every allocation goes there).
        unsafe { System.dealloc(p, layout) };
        count(-(layout.size() as i64));
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`, and the caller upholds `realloc`'s contract.
        let q = unsafe { System.realloc(p, layout, new_size) };
        if !q.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        q
    }
}

/// Runs `f` and returns the most heap this thread held during it above what it held before.
fn peak_during<T>(f: impl FnOnce() -> T) -> (T, i64) {
    let start = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(start));
    let out = f();
    (out, PEAK.with(Cell::get) - start)
}

/// A destination config for a folder.
type Config = fn(&Path) -> DestinationConfig;

/// `n` Observations of 20 patients; `edited` changes every value.
fn observations(n: usize, edited: bool) -> Vec<fhirsync_core::RawResource> {
    (0..n)
        .map(|i| {
            let value = format!("{}.{:02}", i % 500, if edited { 1 + i % 90 } else { i % 100 });
            obs(&format!("o{i:06}"), &format!("p{}", i % 20), &value)
        })
        .collect()
}

/// The heap the commits of a full load, then of a reload-and-compare that changes every row,
/// of `n` Observations with the shipped views peak at (row groups of 1,024 rows, so that the
/// writers' open row groups stay small too).
fn commit_peaks(config: Config, n: usize) -> (i64, i64) {
    let dir = tempfile::tempdir().unwrap();
    let views = fhirsync_views::default_views();
    let patients: Vec<String> = (0..20).map(|p| format!("p{p}")).collect();
    let cohort: Vec<&str> = patients.iter().map(String::as_str).collect();
    let mut peaks = [0; 2];
    for (peak, (method, edited)) in
        peaks.iter_mut().zip([(Method::FullLoad, false), (Method::ReloadAndCompare, true)])
    {
        let mut dest = fhirsync_land::open(&config(dir.path())).unwrap();
        dest.begin(method, &LandOptions { replace: true, ..LandOptions::default() }).unwrap();
        dest.stage(&observations(n, edited)).unwrap();
        let scope = run_scope(&cohort, scopes_of(&cohort));
        let (m, p) = peak_during(|| dest.commit(&scope, &views, &serde_json::json!({})).unwrap());
        assert!(m.view_rows >= n as u64, "{m:?}");
        *peak = p;
    }
    (peaks[0], peaks[1])
}

/// Four times the Observations (with four times the view rows and change records) raise the
/// peak heap of a full load's commit by less than 64 bytes per added row, and of a
/// reload-and-compare that changes every row by less than 256, on both file formats. What
/// still grows is the index of staged keys (24 bytes per row), the Parquet footer (per row
/// group) and, in the compare, the records of replaced rows kept for the pass over staging
/// (about 170 bytes each, in memory below an 8 MiB budget, then on disk). A view row held in
/// memory is about a kilobyte, a change record about 450 bytes.
#[test]
fn commit_heap_does_not_grow_with_view_rows() {
    let parquet: Config =
        |dir| DestinationConfig::Parquet(ParquetConfig { row_group_rows: 1024, ..ParquetConfig::new(dir) });
    let ndjson: Config = |dir| DestinationConfig::Ndjson(NdjsonConfig::new(dir));
    for (name, config) in [("parquet", parquet), ("ndjson", ndjson)] {
        let (n, m) = (1_500, 6_000);
        let (full_n, compare_n) = commit_peaks(config, n);
        let (full_m, compare_m) = commit_peaks(config, m);
        let added = (m - n) as i64;
        eprintln!("{name}: full load {full_n} -> {full_m}, compare {compare_n} -> {compare_m} bytes");
        assert!(full_m - full_n < 64 * added, "{name} full load: {full_n} -> {full_m}");
        assert!(compare_m - compare_n < 256 * added, "{name} compare: {compare_n} -> {compare_m}");
    }
}
