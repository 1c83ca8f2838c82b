//! Configuration: the `[extract]` table of the fhirsync TOML file, and the `[connection]` table
//! it reads the endpoints and the default patient list from ([`ConnectionConfig`], defined in
//! `fhirsync-core` because authentication and the FHIR client borrow it too).
//!
//! ```toml
//! [extract]
//! mode = "search"
//! datasets = ["Patient", "Observation:laboratory", "Condition"]
//! concurrency = 4
//! rate_limit = 10.0
//! ```
//!
//! Unknown keys are rejected with their name (`deny_unknown_fields`).

use std::collections::BTreeMap;
use std::time::Duration;

use fhirsync_core::FhirVersion;
pub use fhirsync_core::connection::{ConnectionConfig, ENV_PREFIX, Endpoints};
use fhirsync_fhir::outage;
use fhirsync_fhir::politeness::DEFAULT_LATENCY_FACTOR;
use fhirsync_fhir::{
    ClientConfig, ConcurrencyConfig, OutagePolicy, RateLimit, RetryPolicy, SchedulePolicy, Window,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Default `_count` page size (Epic's default and maximum).
pub const DEFAULT_PAGE_SIZE: u32 = 1000;
/// Default number of concurrent requests (Epic asks apps to throttle themselves).
pub const DEFAULT_CONCURRENCY: usize = 4;
/// Default requests per second.
pub const DEFAULT_RATE_LIMIT: f64 = fhirsync_fhir::client::DEFAULT_RATE_PER_SECOND;
/// Default token-bucket burst.
pub const DEFAULT_RATE_BURST: u32 = fhirsync_fhir::client::DEFAULT_RATE_BURST;
/// Default request timeout in seconds.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 120;
/// Default restarts of one search after Epic's 4113 "session expired".
pub const DEFAULT_MAX_SESSION_RESTARTS: u32 = 3;
/// Default Observation categories (each is a separately licensed Epic API).
pub const DEFAULT_OBSERVATION_CATEGORIES: &[&str] = &["laboratory", "vital-signs", "social-history"];
/// Default Condition categories (problems, encounter diagnoses, health concerns).
pub const DEFAULT_CONDITION_CATEGORIES: &[&str] =
    &["problem-list-item", "encounter-diagnosis", "health-concern"];
/// Default CarePlan categories. Epic's R4 statement makes `category` a required CarePlan search
/// parameter; these are the SNOMED codes of Epic's CarePlan APIs (longitudinal 38717003,
/// encounter-level 734163000) and US Core's `assess-plan`.
pub const DEFAULT_CAREPLAN_CATEGORIES: &[&str] = &["38717003", "734163000", "assess-plan"];
/// Default maximum length of one NDJSON line in a Bulk file (64 MiB).
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 * 1024 * 1024;
/// Default parallel NDJSON downloads.
pub const DEFAULT_DOWNLOAD_CONCURRENCY: usize = 4;
/// Default shortest wait between Bulk status polls, in seconds.
pub const DEFAULT_POLL_FLOOR_SECS: u64 = 1;
/// Default longest wait between Bulk status polls, in seconds (Epic suggests up to 30 min).
pub const DEFAULT_POLL_CEILING_SECS: u64 = 1800;
/// Default total time allowed for a Bulk export to become ready, in seconds.
pub const DEFAULT_BULK_TIMEOUT_SECS: u64 = 24 * 3600;
/// Identifier system Epic uses for patient lists on R4 (`systemlist` is the STU3 spelling).
pub const R4_PATIENT_LIST_SYSTEM: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.2.806567";

/// Splits `system|value` (e.g. `systemlist|6442`).
pub fn parse_list_identifier(id: &str) -> Result<(String, String)> {
    match id.split_once('|') {
        Some((s, v)) if !s.trim().is_empty() && !v.trim().is_empty() => {
            Ok((s.trim().to_string(), v.trim().to_string()))
        }
        _ => Err(Error::InvalidConfig {
            key: "patient_list_identifier".into(),
            problem: format!("`{id}` is not `system|value`; Epic's form is e.g. `systemlist|6442`"),
        }),
    }
}

/// How resources are fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Per-patient searches (refreshes; Epic's recommended use).
    #[default]
    Search,
    /// Group `$export` (initial loads of a registry; once per Group per 24 h at Epic).
    Bulk,
}

/// Which search rules the server follows (`[extract] server`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// Epic when the CapabilityStatement's `software.name` or `publisher` says Epic, else
    /// generic.
    #[default]
    Auto,
    /// Epic's rules: Observation, Condition and CarePlan are searched per category (each is a
    /// separately licensed API, and Epic requires a category or code).
    Epic,
    /// Any other SMART-on-FHIR server: one search per type without category, unless its
    /// statement documents the category as required.
    Generic,
}

/// Which patients to extract (`[extract.cohort]`); sources are combined and de-duplicated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CohortConfig {
    /// Patient list `system|value` (defaults to `connection.patient_list_identifier`).
    #[serde(default)]
    pub patient_list: Option<String>,
    /// FHIR id of a Group (Epic registry): members read from `Group/{id}`; the exported Group in bulk mode.
    #[serde(default)]
    pub group: Option<String>,
    /// Explicit patient FHIR ids.
    #[serde(default)]
    pub patient_ids: Vec<String>,
    /// Patient identifiers `system|value`, resolved with `Patient?identifier=`.
    #[serde(default)]
    pub identifiers: Vec<String>,
    /// Version used to read the patient list (default: STU3 when configured, else R4).
    #[serde(default)]
    pub list_version: Option<FhirVersion>,
}

impl CohortConfig {
    /// True when no source is set.
    pub fn is_empty(&self) -> bool {
        self.patient_list.is_none()
            && self.group.is_none()
            && self.patient_ids.is_empty()
            && self.identifiers.is_empty()
    }
}

/// Retry bounds of one request, and the run-level outage policy above them (`[extract.retry]`).
///
/// ```toml
/// [extract.retry]
/// max_retries = 5               # per request
/// max_outage_secs = 900         # wait out an unavailable server this long; 0 = off
/// outage_consecutive_failures = 10
/// outage_window = 20
/// outage_failure_ratio = 0.5
/// first_probe_ms = 2000
/// max_probe_interval_secs = 15
/// ```
///
/// When `outage_consecutive_failures` attempts in a row fail, or `outage_failure_ratio` of the
/// last `outage_window` attempts (5xx, 429, timeouts, resets), or a request is about to give up
/// with no success anywhere since it began, the server counts as unavailable: all requests wait,
/// one probe is sent after `first_probe_ms`, then at doubling intervals up to
/// `max_probe_interval_secs` (never earlier than a `Retry-After`), and work resumes when a probe
/// succeeds. Failures during the outage do not spend a request's `max_retries`. After
/// `max_outage_secs` the run stops with an error saying how long the server was down; it is
/// resumable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first attempt on 429/5xx/timeouts/resets.
    pub max_retries: u32,
    /// Base delay of exponential backoff, milliseconds.
    pub base_delay_ms: u64,
    /// Cap of one backoff delay, milliseconds.
    pub max_delay_ms: u64,
    /// Shortest honoured `Retry-After`, seconds.
    pub retry_after_floor_secs: u64,
    /// Longest honoured `Retry-After`, seconds (longer asks are clamped).
    pub retry_after_ceiling_secs: u64,
    /// Longest outage waited out, seconds (default 900); 0 switches the outage policy off
    /// (each request then gives up after its own retries).
    pub max_outage_secs: u64,
    /// Failed attempts in a row that make the server count as unavailable (default 10).
    pub outage_consecutive_failures: usize,
    /// Recent attempts the failure ratio is taken over (default 20).
    pub outage_window: usize,
    /// Share of failed attempts among the last `outage_window` that makes the server count as
    /// unavailable, 0 < ratio ≤ 1 (default 0.5).
    pub outage_failure_ratio: f64,
    /// Wait before the first probe of an unavailable server, milliseconds (default 2000).
    pub first_probe_ms: u64,
    /// Longest wait between two probes, seconds (default 15); the wait doubles after each
    /// failed probe.
    pub max_probe_interval_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        let p = RetryPolicy::default();
        RetryConfig {
            max_retries: p.max_retries,
            base_delay_ms: p.base_delay.as_millis() as u64,
            max_delay_ms: p.max_delay.as_millis() as u64,
            retry_after_floor_secs: p.retry_after_floor.as_secs(),
            retry_after_ceiling_secs: p.retry_after_ceiling.as_secs(),
            max_outage_secs: outage::DEFAULT_MAX_OUTAGE.as_secs(),
            outage_consecutive_failures: outage::DEFAULT_CONSECUTIVE_FAILURES,
            outage_window: outage::DEFAULT_WINDOW,
            outage_failure_ratio: outage::DEFAULT_FAILURE_RATIO,
            first_probe_ms: outage::DEFAULT_FIRST_PROBE.as_millis() as u64,
            max_probe_interval_secs: outage::DEFAULT_MAX_PROBE_INTERVAL.as_secs(),
        }
    }
}

impl RetryConfig {
    /// The outage policy, `None` when `max_outage_secs = 0`.
    pub fn outage_policy(&self) -> Option<OutagePolicy> {
        (self.max_outage_secs > 0).then(|| OutagePolicy {
            window: self.outage_window.max(1),
            failure_ratio: self.outage_failure_ratio,
            consecutive_failures: self.outage_consecutive_failures.max(1),
            first_probe: Duration::from_millis(self.first_probe_ms.max(1)),
            max_probe_interval: Duration::from_secs(self.max_probe_interval_secs)
                .max(Duration::from_millis(self.first_probe_ms.max(1))),
            max_outage: Duration::from_secs(self.max_outage_secs),
            log_every: outage::DEFAULT_LOG_EVERY,
        })
    }
}

/// Epic's budgets (`[extract.schedule]`), all optional.
///
/// ```toml
/// [extract.schedule]
/// peak = "07:00-19:00"          # local time of the host (set TZ to choose the zone)
/// peak_rate = 2.0               # requests per second inside the window
/// off_peak_rate = 10.0          # requests per second outside it
/// daily_request_budget = 50000  # HTTP requests per calendar day, counted per run
/// ```
///
/// Epic asks apps to stay under ≤ 1 % of the customer's operational database at peak and ≤ 5 %
/// off-peak. `peak_rate` and `off_peak_rate` replace `rate_limit` inside and outside the window
/// (unset = `rate_limit`; 0 = unlimited; `rate_burst` applies to both). The budget counts every
/// HTTP attempt (retries included) from the start of a run, resetting at local midnight; it is
/// not carried from one run to the next. A run that reaches it stops with an error saying so and
/// is resumable: the next run continues where it stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Peak window `HH:MM-HH:MM` in the host's local time; an end before the start runs over
    /// midnight (`22:00-06:00`).
    pub peak: Option<String>,
    /// Requests per second inside `peak` (replaces `rate_limit` there; 0 = unlimited).
    pub peak_rate: Option<f64>,
    /// Requests per second outside `peak` (replaces `rate_limit` there; 0 = unlimited).
    pub off_peak_rate: Option<f64>,
    /// HTTP requests allowed per calendar day (local time), counted per run; unset = no budget.
    pub daily_request_budget: Option<u64>,
}

impl ScheduleConfig {
    /// Checks values; errors name the key and the expected form.
    pub fn validate(&self) -> Result<()> {
        if let Some(p) = &self.peak {
            p.parse::<Window>().map_err(|e| invalid("schedule.peak", e.to_string()))?;
        } else if self.peak_rate.is_some() || self.off_peak_rate.is_some() {
            return Err(invalid(
                "schedule.peak",
                "peak_rate / off_peak_rate need a window: set peak = \"HH:MM-HH:MM\", e.g. \"07:00-19:00\"",
            ));
        }
        for (key, rate) in
            [("schedule.peak_rate", self.peak_rate), ("schedule.off_peak_rate", self.off_peak_rate)]
        {
            if let Some(r) = rate
                && (!r.is_finite() || r < 0.0)
            {
                return Err(invalid(key, "must be ≥ 0 requests per second (0 = unlimited)"));
            }
        }
        if self.daily_request_budget == Some(0) {
            return Err(invalid(
                "schedule.daily_request_budget",
                "must be at least 1 (leave it unset for no budget)",
            ));
        }
        Ok(())
    }

    /// The client's schedule (an unparsable window, refused by [`Self::validate`], is ignored).
    pub fn policy(&self) -> SchedulePolicy {
        SchedulePolicy {
            peak: self.peak.as_deref().and_then(|p| p.parse().ok()),
            peak_rate: self.peak_rate,
            off_peak_rate: self.off_peak_rate,
            daily_request_budget: self.daily_request_budget,
        }
    }
}

/// Bulk `$export` settings (`[extract.bulk]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkConfig {
    /// `_typeFilter` queries, e.g. `Observation?category=laboratory`.
    pub type_filters: Vec<String>,
    /// Shortest wait between status polls, seconds (also the floor for `Retry-After`).
    pub poll_floor_secs: u64,
    /// Longest wait between status polls, seconds.
    pub poll_ceiling_secs: u64,
    /// Give up waiting for the export after this many seconds (the status URL stays saved).
    pub timeout_secs: u64,
    /// Parallel NDJSON file downloads.
    pub download_concurrency: usize,
    /// Longest accepted NDJSON line, bytes.
    pub max_line_bytes: usize,
    /// Send `DELETE` to the status URL once every file is downloaded.
    pub delete_when_done: bool,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            type_filters: Vec::new(),
            poll_floor_secs: DEFAULT_POLL_FLOOR_SECS,
            poll_ceiling_secs: DEFAULT_POLL_CEILING_SECS,
            timeout_secs: DEFAULT_BULK_TIMEOUT_SECS,
            download_concurrency: DEFAULT_DOWNLOAD_CONCURRENCY,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            delete_when_done: true,
        }
    }
}

/// What to extract and how politely (`[extract]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractConfig {
    /// `search` (per-patient searches) or `bulk` (Group `$export`).
    pub mode: Mode,
    /// `auto` (default), `epic` or `generic`: whether Epic's per-category search rules apply.
    pub server: ServerKind,
    /// Datasets to fetch: `Type` or `Type:category` (e.g. `Observation:laboratory`). Empty =
    /// every patient-scoped type the endpoints can search, plus `Patient`.
    pub datasets: Vec<String>,
    /// Which patients.
    pub cohort: CohortConfig,
    /// Categories searched one by one for category-split types on Epic (Epic licenses them
    /// separately), or on a server whose statement documents `category` as required. Elsewhere a
    /// type is searched once, without category, so nothing the server holds is left out.
    /// Default: Observation, Condition and CarePlan categories, see the `DEFAULT_*_CATEGORIES`
    /// constants.
    pub categories: BTreeMap<String, Vec<String>>,
    /// `_count` page size; 0 = the server's default.
    pub page_size: u32,
    /// Maximum requests in flight.
    pub concurrency: usize,
    /// Minimum requests in flight when adapting.
    pub min_concurrency: usize,
    /// Lower concurrency on throttling and latency growth, raise it back on success (AIMD).
    pub adaptive_concurrency: bool,
    /// Requests per second (token bucket); 0 = unlimited.
    pub rate_limit: f64,
    /// Requests allowed in a burst.
    pub rate_burst: u32,
    /// Timeout of one request, seconds.
    pub request_timeout_secs: u64,
    /// Restarts of one search after Epic's 4113 "session expired" before the scope is given up.
    pub max_session_restarts: u32,
    /// After each complete scope, ask the server for `_summary=count` of the same search and
    /// book a gap when it counts more or fewer resources than were read. Off by default (one
    /// more request per scope); never on Epic, whose `Bundle.total` counts a page's entries.
    pub verify_counts: bool,
    /// Retry bounds and outage policy.
    pub retry: RetryConfig,
    /// Peak window, per-period rates and daily request budget.
    pub schedule: ScheduleConfig,
    /// Bulk settings.
    pub bulk: BulkConfig,
}

impl Default for ExtractConfig {
    fn default() -> Self {
        let cats = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ExtractConfig {
            mode: Mode::Search,
            server: ServerKind::Auto,
            datasets: Vec::new(),
            cohort: CohortConfig::default(),
            categories: BTreeMap::from([
                ("Observation".to_string(), cats(DEFAULT_OBSERVATION_CATEGORIES)),
                ("Condition".to_string(), cats(DEFAULT_CONDITION_CATEGORIES)),
                ("CarePlan".to_string(), cats(DEFAULT_CAREPLAN_CATEGORIES)),
            ]),
            page_size: DEFAULT_PAGE_SIZE,
            concurrency: DEFAULT_CONCURRENCY,
            min_concurrency: 1,
            adaptive_concurrency: true,
            rate_limit: DEFAULT_RATE_LIMIT,
            rate_burst: DEFAULT_RATE_BURST,
            request_timeout_secs: DEFAULT_REQUEST_TIMEOUT_SECS,
            max_session_restarts: DEFAULT_MAX_SESSION_RESTARTS,
            verify_counts: false,
            retry: RetryConfig::default(),
            schedule: ScheduleConfig::default(),
            bulk: BulkConfig::default(),
        }
    }
}

fn invalid(key: &str, problem: impl Into<String>) -> Error {
    Error::InvalidConfig { key: format!("extract.{key}"), problem: problem.into() }
}

impl ExtractConfig {
    /// Parses an `[extract]` table body.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text)
            .map_err(|e| Error::ConfigSyntax { table: "extract", message: e.message().into() })
    }

    /// Checks values; `connection` supplies the default patient list.
    pub fn validate(&self, connection: &ConnectionConfig) -> Result<()> {
        if let Some(id) = &connection.patient_list_identifier {
            parse_list_identifier(id)?;
        }
        if self.concurrency == 0 {
            return Err(invalid("concurrency", "must be at least 1"));
        }
        if self.min_concurrency == 0 || self.min_concurrency > self.concurrency {
            return Err(invalid("min_concurrency", "must be between 1 and `concurrency`"));
        }
        if !self.rate_limit.is_finite() || self.rate_limit < 0.0 {
            return Err(invalid("rate_limit", "must be ≥ 0 requests per second (0 = unlimited)"));
        }
        if self.rate_burst == 0 {
            return Err(invalid("rate_burst", "must be at least 1"));
        }
        if self.page_size > DEFAULT_PAGE_SIZE {
            return Err(invalid("page_size", format!("Epic's maximum `_count` is {DEFAULT_PAGE_SIZE}")));
        }
        if self.retry.retry_after_floor_secs > self.retry.retry_after_ceiling_secs {
            return Err(invalid("retry.retry_after_floor_secs", "must not exceed retry_after_ceiling_secs"));
        }
        let ratio = self.retry.outage_failure_ratio;
        if !ratio.is_finite() || ratio <= 0.0 || ratio > 1.0 {
            return Err(invalid(
                "retry.outage_failure_ratio",
                "must be a share above 0 and at most 1, e.g. 0.5",
            ));
        }
        if self.retry.outage_window == 0 {
            return Err(invalid("retry.outage_window", "must be at least 1 request"));
        }
        if self.retry.outage_consecutive_failures == 0 {
            return Err(invalid("retry.outage_consecutive_failures", "must be at least 1"));
        }
        self.schedule.validate()?;
        if self.bulk.download_concurrency == 0 {
            return Err(invalid("bulk.download_concurrency", "must be at least 1"));
        }
        for d in &self.datasets {
            if d.trim().is_empty() || d.starts_with(':') {
                return Err(invalid("datasets", format!("`{d}` is not `Type` or `Type:category`")));
            }
        }
        for id in self.cohort.identifiers.iter().chain(self.cohort.patient_list.iter()) {
            parse_list_identifier(id)
                .map_err(|_| invalid("cohort", format!("`{id}` is not `system|value`")))?;
        }
        let cohort = self.effective_cohort(connection);
        match self.mode {
            Mode::Search if cohort.is_empty() => Err(invalid(
                "cohort",
                "no patients: set extract.cohort.patient_list / group / patient_ids / identifiers, \
                 or connection.patient_list_identifier",
            )),
            Mode::Bulk if cohort.group.is_none() => {
                Err(invalid("cohort.group", "bulk mode exports a Group: set the Group's FHIR id"))
            }
            _ => Ok(()),
        }
    }

    /// The cohort, with `connection.patient_list_identifier` as the default patient list.
    pub fn effective_cohort(&self, connection: &ConnectionConfig) -> CohortConfig {
        let mut c = self.cohort.clone();
        if c.patient_list.is_none()
            && c.group.is_none()
            && c.patient_ids.is_empty()
            && c.identifiers.is_empty()
        {
            c.patient_list = connection.patient_list_identifier.clone();
        }
        c
    }

    /// The FHIR client settings these options describe (the client reads the transport
    /// settings of `[connection]` itself: [`fhirsync_fhir::FhirClient::with_connection`]).
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            concurrency: ConcurrencyConfig {
                max: self.concurrency.max(1),
                min: self.min_concurrency.max(1),
                adaptive: self.adaptive_concurrency,
                latency_factor: DEFAULT_LATENCY_FACTOR,
            },
            rate_limit: (self.rate_limit > 0.0)
                .then_some(RateLimit { per_second: self.rate_limit, burst: self.rate_burst.max(1) }),
            retry: RetryPolicy {
                max_retries: self.retry.max_retries,
                base_delay: Duration::from_millis(self.retry.base_delay_ms),
                max_delay: Duration::from_millis(self.retry.max_delay_ms),
                retry_after_floor: Duration::from_secs(self.retry.retry_after_floor_secs),
                retry_after_ceiling: Duration::from_secs(self.retry.retry_after_ceiling_secs),
            },
            outage: self.retry.outage_policy(),
            schedule: self.schedule.policy(),
            request_timeout: Duration::from_secs(self.request_timeout_secs.max(1)),
            ..ClientConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnectionConfig {
        ConnectionConfig {
            client_id: Some("c".into()),
            fhir_r4_endpoint: Some(url::Url::parse("https://ehr.example/api/FHIR/R4").unwrap()),
            ..ConnectionConfig::default()
        }
    }

    /// An unknown key in [extract] is named in the error.
    #[test]
    fn unknown_extract_key_is_named() {
        let err = ExtractConfig::from_toml("concurency = 4").unwrap_err();
        assert!(err.to_string().contains("concurency"), "{err}");
        let err = ExtractConfig::from_toml("[cohort]\npatient_lst = \"a|b\"").unwrap_err();
        assert!(err.to_string().contains("patient_lst"), "{err}");
    }

    /// An unknown key in [connection] is named in the error.
    #[test]
    fn unknown_connection_key_is_named() {
        let err = toml::from_str::<ConnectionConfig>("client_idd = \"x\"").unwrap_err();
        assert!(err.to_string().contains("client_idd"), "{err}");
    }

    /// Search mode needs a cohort; the connection's patient list is the default.
    #[test]
    fn cohort_defaults_to_connection_list() {
        let x = ExtractConfig::default();
        assert!(x.validate(&conn()).unwrap_err().to_string().contains("cohort"));
        let mut c = conn();
        c.patient_list_identifier = Some("systemlist|6442".into());
        x.validate(&c).unwrap();
        assert_eq!(x.effective_cohort(&c).patient_list.as_deref(), Some("systemlist|6442"));
        let bulk = ExtractConfig { mode: Mode::Bulk, ..ExtractConfig::default() };
        assert!(bulk.validate(&c).unwrap_err().to_string().contains("cohort.group"));
    }

    /// A full [extract] table parses with nested tables.
    #[test]
    fn full_extract_table_parses() {
        let x = ExtractConfig::from_toml(
            r#"
            mode = "bulk"
            datasets = ["Patient", "Observation:laboratory"]
            concurrency = 8
            rate_limit = 0
            [cohort]
            group = "g1"
            [categories]
            Observation = ["laboratory"]
            [retry]
            max_retries = 2
            [bulk]
            type_filters = ["Observation?category=laboratory"]
            "#,
        )
        .unwrap();
        assert_eq!(x.mode, Mode::Bulk);
        assert_eq!(x.retry.max_retries, 2);
        assert!(x.client_config().rate_limit.is_none());
        x.validate(&conn()).unwrap();
    }

    /// [extract.retry] outage keys and [extract.schedule] parse into the client settings.
    #[test]
    fn outage_and_schedule_tables_build_the_client_config() {
        let x = ExtractConfig::from_toml(
            r#"
            [retry]
            max_outage_secs = 120
            outage_consecutive_failures = 4
            first_probe_ms = 500
            max_probe_interval_secs = 10
            [schedule]
            peak = "07:00-19:00"
            peak_rate = 2.0
            off_peak_rate = 10
            daily_request_budget = 50000
            "#,
        )
        .unwrap();
        let mut c = conn();
        c.patient_list_identifier = Some("systemlist|6442".into());
        x.validate(&c).unwrap();
        let cc = x.client_config();
        let o = cc.outage.unwrap();
        assert_eq!(o.max_outage, Duration::from_secs(120));
        assert_eq!(o.consecutive_failures, 4);
        assert_eq!(o.first_probe, Duration::from_millis(500));
        assert_eq!(o.max_probe_interval, Duration::from_secs(10));
        assert_eq!(o.window, outage::DEFAULT_WINDOW);
        assert_eq!(cc.schedule.peak.unwrap().to_string(), "07:00-19:00");
        assert_eq!(cc.schedule.peak_rate, Some(2.0));
        assert_eq!(cc.schedule.off_peak_rate, Some(10.0));
        assert_eq!(cc.schedule.daily_request_budget, Some(50000));
        // Defaults: outage policy on (900 s), no schedule; 0 switches the policy off.
        let d = ExtractConfig::default().client_config();
        assert_eq!(d.outage.unwrap().max_outage, Duration::from_secs(900));
        assert_eq!(d.schedule, SchedulePolicy::default());
        let off = ExtractConfig::from_toml("[retry]\nmax_outage_secs = 0").unwrap();
        assert!(off.client_config().outage.is_none());
    }

    /// Bad schedule and outage values are refused with the key and the expected form.
    #[test]
    fn bad_schedule_and_outage_values_are_named() {
        let mut c = conn();
        c.patient_list_identifier = Some("systemlist|6442".into());
        let err = |toml: &str| ExtractConfig::from_toml(toml).unwrap().validate(&c).unwrap_err().to_string();
        let e = err("[schedule]\npeak = \"7h-19h\"");
        assert!(e.contains("extract.schedule.peak") && e.contains("HH:MM-HH:MM"), "{e}");
        let e = err("[schedule]\npeak_rate = 2.0");
        assert!(e.contains("extract.schedule.peak") && e.contains("need a window"), "{e}");
        let e = err("[schedule]\npeak = \"07:00-19:00\"\noff_peak_rate = -1");
        assert!(e.contains("off_peak_rate"), "{e}");
        let e = err("[schedule]\ndaily_request_budget = 0");
        assert!(e.contains("daily_request_budget"), "{e}");
        let e = err("[retry]\noutage_failure_ratio = 1.5");
        assert!(e.contains("outage_failure_ratio"), "{e}");
        let e = ExtractConfig::from_toml("[schedule]\npeak_hours = \"07:00-19:00\"").unwrap_err().to_string();
        assert!(e.contains("peak_hours"), "unknown key named: {e}");
    }
}
