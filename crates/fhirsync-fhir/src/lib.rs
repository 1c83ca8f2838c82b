//! FHIR HTTP client for fhirsync.
//!
//! - [`FhirClient`]: bearer auth from a [`TokenProvider`] (401 → invalidate and
//!   retry once), `Accept: application/fhir+json` on every request, a global rate limit and an
//!   adaptive concurrency limit ([`politeness`]), explicit retry classification ([`retry`]), a run-level outage breaker above the retries
//!   ([`outage`]), and Epic's budgets: peak/off-peak rates and a daily request budget ([`schedule`]).
//! - [`bundle`]: searchset pages with each resource kept as its exact JSON bytes; outcome entries
//!   returned separately; paging only by `next` links.
//! - [`outcome`]: OperationOutcome issues with Epic's codes (4101, 59204, 4113, ...).
//! - [`record`]: `--record DIR`, one JSON file per answer for offline replay, without secrets.

pub mod bundle;
pub mod client;
pub mod error;
pub mod outage;
pub mod outcome;
pub mod politeness;
pub mod record;
pub mod retry;
pub mod schedule;

pub use bundle::SearchPage;
pub use client::{
    ClientConfig, ClientStats, FhirClient, RateLimit, Request, Response, StreamingResponse, join,
};
pub use error::{Error, NetworkFailure, Result, WorkLeft};
/// The token seam (defined in `fhirsync-core`, implemented by `fhirsync-auth`).
pub use fhirsync_core::{BoxFuture, ConnectionConfig, StaticToken, TokenError, TokenProvider};
pub use outage::OutagePolicy;
pub use outcome::{EPIC_CODE_SYSTEM, Effect, Exclusion, Outcome, codes};
pub use politeness::ConcurrencyConfig;
pub use record::Recorder;
pub use retry::{Decision, RetryPolicy, RetryReason};
pub use schedule::{SchedulePolicy, Window};

use url::Url;

/// A URL safe for logs and errors: scheme, host, port and path, with query values and
/// credentials hidden (`…/Observation?patient=…&category=…`). Query values can carry patient
/// ids; user-info can carry secrets.
pub fn redact_url(url: &Url) -> String {
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    out.push_str(url.path());
    let keys: Vec<String> = url.query_pairs().map(|(k, _)| format!("{k}=…")).collect();
    if !keys.is_empty() {
        out.push('?');
        out.push_str(&keys.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Query values and credentials never appear in a redacted URL.
    #[test]
    fn redaction_hides_values_and_userinfo() {
        let u = Url::parse("https://user:pw@ehr.example:8443/FHIR/R4/Observation?patient=e123&category=lab")
            .unwrap();
        let r = redact_url(&u);
        assert_eq!(r, "https://ehr.example:8443/FHIR/R4/Observation?patient=…&category=…");
    }
}
