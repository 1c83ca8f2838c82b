//! The per-patient search crawl.
//!
//! Every (patient, planned dataset) pair is a scope. Scopes run concurrently (the client's
//! concurrency limit is the real cap); each pages through `next` links and emits one
//! [`ExtractEvent::Resources`] per page, then [`ExtractEvent::ScopeComplete`] if — and only if —
//! every page was read, no request failed, and no outcome entry made it a gap
//! ([`fhirsync_fhir::Effect`]). 4101 ("no results") is a complete, empty scope. A 59204/59205
//! that names a withheld sub-type ("Condition - Outside Record Problems") is an exclusion: the
//! scope stays complete, unless the run has an [`ExclusionBaseline`] (from the last committed
//! run) for the dataset that lacks that sub-type: then the licence narrowed, and the scope is a
//! [`GapReason::LicenceNarrowed`] gap.
//!
//! Epic's 4113 ("session for cached search results expired") restarts the search from its first
//! page. Resources of the interrupted pass may then be sent twice; landing stages by
//! (scope, type, id), so a repeat overwrites itself; the report counts them apart.
//!
//! A failed scope is reported as a gap and the run goes on; credential failures (401 after a
//! refresh, token endpoint errors) abort the run, since every further request would fail too.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use fhirsync_core::{ExtractEvent, RawResource, ScopeKey};
use fhirsync_fhir::{Effect, Exclusion, FhirClient, Outcome, codes, join, redact_url};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc::Sender;
use tracing::{debug, warn};
use url::Url;

use crate::error::{Error, Result};
use crate::plan::{Plan, PlannedDataset};
use crate::progress::{DatasetCounters, Progress};
use crate::report::{ExclusionBaseline, ExtractReport, GapReason, dataset_key};

/// How a pass of a scope's search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// At its last page, or at a failure booked as the scope's gap.
    Done,
    /// A 4113 expired the search session: search again from the first page.
    Restart,
}

/// The result of one scope.
struct ScopeResult {
    scope: ScopeKey,
    resources: u64,
    /// Resources of passes interrupted by a 4113 restart (sent again by the next pass).
    resent: u64,
    pages: u64,
    codes: Vec<String>,
    restarts: u32,
    withheld: BTreeSet<Exclusion>,
    gap: Option<GapReason>,
}

impl ScopeResult {
    /// Books the outcome issues of one page: codes, exclusions, and the first gap they imply.
    fn book(&mut self, outcomes: &[Outcome]) {
        for o in outcomes {
            if let Some(code) = &o.epic_code {
                self.codes.push(code.clone());
            }
            match o.effect() {
                Effect::Neutral => {}
                Effect::Excluded(e) => {
                    self.withheld.insert(e);
                }
                Effect::Gap(detail) => {
                    self.gap.get_or_insert_with(|| GapReason::from_outcome(o, detail));
                }
            }
        }
    }
}

/// Inputs of a crawl.
pub(crate) struct Crawl<'a> {
    pub client: &'a FhirClient,
    pub plan: &'a Plan,
    pub patients: &'a [String],
    pub skip: &'a BTreeSet<ScopeKey>,
    pub max_restarts: u32,
    pub baseline: Option<&'a ExclusionBaseline>,
    pub progress: &'a Progress,
    pub tx: &'a Sender<ExtractEvent>,
}

impl Crawl<'_> {
    /// Runs every scope not in `skip`; fills `report`.
    pub(crate) async fn run(&self, report: &mut ExtractReport) -> Result<()> {
        // Scopes are generated lazily (patient-major) so a large cohort costs no task list.
        let items = &self.plan.items;
        let total = self.patients.len() * items.len();
        let scope_at = |i: usize| -> (ScopeKey, &PlannedDataset) {
            let item = &items[i % items.len()];
            let scope = ScopeKey {
                fhir_version: item.version,
                patient_id: Some(self.patients[i / items.len()].clone()),
                dataset: item.dataset.clone(),
            };
            (scope, item)
        };
        let skipped = (0..total).filter(|&i| self.skip.contains(&scope_at(i).0)).count();
        self.progress.scopes_total.store((total - skipped) as u64, Ordering::Relaxed);
        // Twice the ceiling keeps a scope ready whenever a request slot frees up. (An explicit
        // refill loop rather than `buffer_unordered` with a closure keeps the future `Send`.)
        let width = self.client.max_concurrency() * 2;
        let mut next = 0usize;
        let mut running = FuturesUnordered::new();
        let mut failed = 0usize;
        let mut first_error = None;
        loop {
            while running.len() < width && next < total {
                let (scope, item) = scope_at(next);
                next += 1;
                report.scopes_planned += 1;
                if self.skip.contains(&scope) {
                    report.scopes_skipped += 1;
                    report.scope.complete.insert(scope);
                } else {
                    running.push(self.scope(scope, item));
                }
            }
            let Some(r) = running.next().await else { break };
            let r = r?;
            let dataset = r.scope.dataset.to_string();
            for code in &r.codes {
                report.count_outcome(&dataset, code);
            }
            report.session_restarts += u64::from(r.restarts);
            report.resources_resent += r.resent;
            if let Some(GapReason::Failed { error }) = &r.gap {
                failed += 1;
                first_error.get_or_insert_with(|| error.clone());
            }
            let key = dataset_key(&r.scope);
            // A scope read to its end (complete, or only narrowed) tells what is withheld now.
            let read_to_end = matches!(r.gap, None | Some(GapReason::LicenceNarrowed { .. }));
            if read_to_end {
                report.record_exclusions(&key, &r.withheld, r.gap.is_none());
            }
            report.finish_scope(r.scope, r.resources, r.pages, r.gap);
        }
        let attempted = report.scopes_planned - report.scopes_skipped;
        if attempted > 0 && failed as u64 == attempted {
            return Err(Error::AllScopesFailed { failed, first: first_error.unwrap_or_default() });
        }
        Ok(())
    }

    /// Fetches one scope completely (or until it fails): passes of its search until one ends
    /// without a 4113 restart, then the checks that make it complete. `Err` only for run-fatal
    /// errors.
    async fn scope(&self, scope: ScopeKey, item: &PlannedDataset) -> Result<ScopeResult> {
        let counters = self.progress.dataset(&item.dataset.to_string());
        let patient = scope.patient_id.clone().unwrap_or_default();
        let mut params = vec![(item.patient_param.to_string(), patient)];
        params.extend(item.params.iter().cloned());
        let mut r = ScopeResult {
            scope,
            resources: 0,
            resent: 0,
            pages: 0,
            codes: Vec::new(),
            restarts: 0,
            withheld: BTreeSet::new(),
            gap: None,
        };
        while self.pass(item, &params, &mut r, &counters).await? == Pass::Restart {}
        self.finish(item, &params, &mut r).await?;
        debug!(dataset = %item.dataset, resources = r.resources, pages = r.pages, complete = r.gap.is_none(), "Scope finished.");
        self.progress.scope_done(&counters, matches!(r.gap, Some(GapReason::Failed { .. })));
        Ok(r)
    }

    /// One pass of the scope's search, from its first page by `next` links to its last page,
    /// a failure (booked as a gap), or a 4113 (a restart while the budget allows).
    async fn pass(
        &self,
        item: &PlannedDataset,
        params: &[(String, String)],
        r: &mut ScopeResult,
        counters: &DatasetCounters,
    ) -> Result<Pass> {
        let mut url = join(&item.base, &item.dataset.resource_type)?;
        url.query_pairs_mut().extend_pairs(params);
        loop {
            let page = match self.client.page(&url).await {
                Ok(p) => p,
                Err(e) if e.has_outcome(codes::SESSION_EXPIRED) => return Ok(self.session_expired(r)),
                Err(e) if e.is_fatal_for_run() => return Err(e.into()),
                Err(e) => {
                    warn!(dataset = %item.dataset, error = %e, "Scope failed.");
                    r.gap = Some(GapReason::Failed { error: e.to_string() });
                    return Ok(Pass::Done);
                }
            };
            if page.has_outcome(codes::SESSION_EXPIRED) {
                return Ok(self.session_expired(r));
            }
            r.book(&page.outcomes);
            let n = page.resources.len();
            self.emit(item, &url, page.resources, r).await?;
            r.pages += 1;
            self.progress.add_page(counters, n);
            match page.next.map(|next| url.join(&next)) {
                Some(Ok(u)) => url = u,
                Some(Err(e)) => {
                    r.gap = Some(GapReason::Failed { error: format!("invalid next link: {e}") });
                    return Ok(Pass::Done);
                }
                None => return Ok(Pass::Done),
            }
        }
    }

    /// A 4113 ended the pass: booked, and a restart when the budget allows one.
    fn session_expired(&self, r: &mut ScopeResult) -> Pass {
        r.codes.push(codes::SESSION_EXPIRED.to_string());
        if self.restart(r) { Pass::Restart } else { Pass::Done }
    }

    /// Sends one page's resources to landing; one without `resourceType` or `id` makes the
    /// scope a gap (the others are sent).
    async fn emit(
        &self,
        item: &PlannedDataset,
        url: &Url,
        page: Vec<Box<str>>,
        r: &mut ScopeResult,
    ) -> Result<()> {
        if page.is_empty() {
            return Ok(());
        }
        let source = item.base.as_str().trim_end_matches('/');
        let mut batch = Vec::with_capacity(page.len());
        for json in page {
            let patient = r.scope.patient_id.clone();
            match RawResource::from_json(json, patient, item.dataset.clone(), item.version, source) {
                Ok(res) => batch.push(res),
                Err(e) => {
                    let err = Error::Resource { source_url: redact_url(url), source: e };
                    r.gap.get_or_insert(GapReason::Failed { error: err.to_string() });
                }
            }
        }
        r.resources += batch.len() as u64;
        self.tx.send(ExtractEvent::Resources(batch)).await.map_err(|_| Error::ReceiverClosed)
    }

    /// After the last pass: a licence narrowed since the baseline, or a count that differs
    /// (`verify_count`), is a gap; otherwise the scope is complete and landing is told so.
    async fn finish(
        &self,
        item: &PlannedDataset,
        params: &[(String, String)],
        r: &mut ScopeResult,
    ) -> Result<()> {
        if r.gap.is_none() {
            let key = dataset_key(&r.scope);
            r.gap = GapReason::narrowed(self.baseline, &key, &r.withheld);
        }
        if r.gap.is_none() && item.verify_count {
            r.gap = self.verify_count(item, params, r.resources).await?;
        }
        if r.gap.is_none() {
            self.tx
                .send(ExtractEvent::ScopeComplete(r.scope.clone()))
                .await
                .map_err(|_| Error::ReceiverClosed)?;
        }
        Ok(())
    }

    /// Asks the server how many resources the scope's search has (`_summary=count`); a gap when
    /// that differs from what was read. A server that cannot count is not a gap (logged).
    async fn verify_count(
        &self,
        item: &PlannedDataset,
        params: &[(String, String)],
        read: u64,
    ) -> Result<Option<GapReason>> {
        let mut url = join(&item.base, &item.dataset.resource_type)?;
        url.query_pairs_mut()
            .extend_pairs(params.iter().filter(|(k, _)| k != "_count"))
            .append_pair("_summary", "count");
        let total = match self.client.page(&url).await {
            Ok(page) => page.total,
            Err(e) if e.is_fatal_for_run() => return Err(e.into()),
            Err(e) => {
                debug!(dataset = %item.dataset, error = %e, "No _summary=count answer; count not verified.");
                None
            }
        };
        Ok(match total {
            Some(n) if n != read => Some(GapReason::Incomplete {
                code: None,
                detail: format!("the server counts {n} (_summary=count), {read} were read"),
            }),
            Some(_) => None,
            None => {
                debug!(dataset = %item.dataset, "The server gave no total; count not verified.");
                None
            }
        })
    }

    /// Counts a 4113 restart; false (and a gap) once the budget is spent. What the interrupted
    /// pass sent and booked is counted apart, and its outcomes are read again by the next pass.
    fn restart(&self, r: &mut ScopeResult) -> bool {
        if r.restarts < self.max_restarts {
            r.restarts += 1;
            r.resent += std::mem::take(&mut r.resources);
            r.withheld.clear();
            if !matches!(r.gap, Some(GapReason::Failed { .. })) {
                r.gap = None;
            }
            debug!(restarts = r.restarts, "Search session expired; restarting the search.");
            true
        } else {
            r.gap = Some(GapReason::SessionExpired { restarts: r.restarts });
            false
        }
    }
}
