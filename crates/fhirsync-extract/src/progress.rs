//! Live progress counters (lock-free reads, for a progress bar).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Counters of one dataset.
#[derive(Debug, Default)]
pub struct DatasetCounters {
    /// Scopes (patients) finished, complete or not.
    pub scopes_done: AtomicU64,
    /// Resources emitted.
    pub resources: AtomicU64,
    /// Pages (or NDJSON files) read.
    pub pages: AtomicU64,
}

/// Progress of a run. Share it (`Arc<Progress>`) with the progress bar; all counters are atomics.
#[derive(Debug, Default)]
pub struct Progress {
    /// Scopes planned in this run (after resume skips); set once the plan and cohort are known.
    pub scopes_total: AtomicU64,
    /// Scopes finished (complete, gap or failed).
    pub scopes_done: AtomicU64,
    /// Scopes that failed.
    pub scopes_failed: AtomicU64,
    /// Resources emitted.
    pub resources: AtomicU64,
    /// Pages (or NDJSON files) read.
    pub pages: AtomicU64,
    datasets: Mutex<BTreeMap<String, Arc<DatasetCounters>>>,
}

/// A point-in-time copy of [`Progress`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ProgressSnapshot {
    /// Scopes planned.
    pub scopes_total: u64,
    /// Scopes finished.
    pub scopes_done: u64,
    /// Scopes failed.
    pub scopes_failed: u64,
    /// Resources emitted.
    pub resources: u64,
    /// Pages read.
    pub pages: u64,
    /// Per dataset (`Type[:category]`): (scopes done, resources).
    pub datasets: BTreeMap<String, (u64, u64)>,
}

impl Progress {
    /// A fresh, shareable progress.
    pub fn new() -> Arc<Progress> {
        Arc::new(Progress::default())
    }

    /// Counters of one dataset (created on first use).
    pub fn dataset(&self, name: &str) -> Arc<DatasetCounters> {
        self.datasets.lock().unwrap().entry(name.to_string()).or_default().clone()
    }

    /// Copies all counters.
    pub fn snapshot(&self) -> ProgressSnapshot {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProgressSnapshot {
            scopes_total: l(&self.scopes_total),
            scopes_done: l(&self.scopes_done),
            scopes_failed: l(&self.scopes_failed),
            resources: l(&self.resources),
            pages: l(&self.pages),
            datasets: self
                .datasets
                .lock()
                .unwrap()
                .iter()
                .map(|(k, c)| (k.clone(), (l(&c.scopes_done), l(&c.resources))))
                .collect(),
        }
    }

    pub(crate) fn add_page(&self, ds: &DatasetCounters, resources: usize) {
        self.pages.fetch_add(1, Ordering::Relaxed);
        self.resources.fetch_add(resources as u64, Ordering::Relaxed);
        ds.pages.fetch_add(1, Ordering::Relaxed);
        ds.resources.fetch_add(resources as u64, Ordering::Relaxed);
    }

    pub(crate) fn scope_done(&self, ds: &DatasetCounters, failed: bool) {
        self.scopes_done.fetch_add(1, Ordering::Relaxed);
        ds.scopes_done.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.scopes_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
