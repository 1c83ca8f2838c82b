//! One create, with the search-before-resend rule for unacknowledged creates (module docs of
//! [`crate::push`]).

use std::time::Duration;

use fhirsync_extract::plan::Capabilities;
use fhirsync_fhir::{FhirClient, Request};
use serde::Serialize;
use serde_json::Value;
use tracing::{info, warn};
use url::Url;

use super::same::{check_params, same_resource};
use super::validate::Prepared;

/// Most POSTs of one line (the first plus re-sends after a search found nothing).
pub const MAX_SENDS: u32 = 3;
/// Wait before the duplicate-check search, times the number of sends so far.
pub const CHECK_DELAY: Duration = Duration::from_millis(500);
/// Most search pages read by one duplicate check.
pub const MAX_CHECK_PAGES: usize = 100;

/// Result of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The server stored it (`id` set when it sent a `Location`).
    Created,
    /// Rejected before sending (validation) — nothing was sent.
    Invalid,
    /// The server refused it, or it was not stored after every attempt; safe to push again.
    Failed,
    /// Not acknowledged and the duplicate check could not run: check the server before re-pushing.
    Unconfirmed,
    /// Valid but not sent because other lines were invalid.
    Skipped,
}

/// One line of the result file.
#[derive(Debug, Clone, Serialize)]
pub struct LineResult {
    /// 1-based line number in the input file.
    pub line: usize,
    /// What happened.
    pub status: Status,
    /// Server id of the created resource.
    pub id: Option<String>,
    /// Why it failed (OperationOutcome text for server refusals).
    pub error: Option<String>,
    /// Remarks: id dropped, identifier added, found by search after an unacknowledged create.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl LineResult {
    fn new(item: &Prepared, status: Status) -> Self {
        LineResult { line: item.line, status, id: None, error: None, notes: item.notes.clone() }
    }
}

/// Where creates go.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The FHIR client.
    pub client: &'a FhirClient,
    /// Endpoint base URL.
    pub base: &'a Url,
    /// Resource type.
    pub resource_type: &'a str,
    /// The endpoint's capabilities (search parameters of the duplicate check).
    pub caps: &'a Capabilities,
}

/// Creates `item`. `Err` only for failures that stop the whole push (credentials, TLS setup).
pub async fn create(target: Target<'_>, item: &Prepared) -> Result<LineResult, fhirsync_fhir::Error> {
    let url = fhirsync_fhir::join(target.base, target.resource_type)?;
    let body = Value::Object(item.resource.clone()).to_string();
    let mut sends = 1;
    loop {
        let request = Request::post_json(url.clone(), body.clone());
        let unacknowledged = match target.client.execute(&request).await {
            Ok(resp) => {
                let mut r = LineResult::new(item, Status::Created);
                r.id = resp
                    .headers
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| id_from_location(l, target.resource_type));
                info!(line = item.line, "Resource created.");
                return Ok(r);
            }
            Err(e) if e.is_fatal_for_run() => return Err(e),
            Err(e) if is_refusal(&e) => {
                let mut r = LineResult::new(item, Status::Failed);
                r.error = Some(e.to_string());
                info!(line = item.line, status = ?e.status(), "Create refused.");
                return Ok(r);
            }
            Err(e) => e,
        };
        warn!(line = item.line, error = %unacknowledged, "Create not acknowledged; searching before any re-send.");
        tokio::time::sleep(CHECK_DELAY * sends).await;
        match find_existing(target, item).await {
            Ok(Some(id)) => {
                let mut r = LineResult::new(item, Status::Created);
                r.id = (!id.is_empty()).then_some(id);
                r.notes.push(format!(
                    "create not acknowledged ({unacknowledged}); found on the server by search, not re-sent"
                ));
                info!(line = item.line, "Unacknowledged create found on the server.");
                return Ok(r);
            }
            Ok(None) if sends < MAX_SENDS => {
                sends += 1;
                info!(line = item.line, attempt = sends, "Not on the server; re-sending the create.");
            }
            Ok(None) => {
                let mut r = LineResult::new(item, Status::Failed);
                r.error = Some(format!(
                    "create not acknowledged after {sends} attempts (last: {unacknowledged}); a search shows it was \
                     not stored: safe to push this line again"
                ));
                return Ok(r);
            }
            Err(why) => {
                let mut r = LineResult::new(item, Status::Unconfirmed);
                r.error = Some(format!(
                    "create not acknowledged ({unacknowledged}) and the duplicate check could not run ({why}): \
                     look for it on the server before pushing this line again"
                ));
                return Ok(r);
            }
        }
    }
}

/// A definitive answer from the server: the create was processed and refused (4xx other than
/// 408/429). Everything else (timeouts, dropped connections, 5xx, 429) is unacknowledged.
fn is_refusal(e: &fhirsync_fhir::Error) -> bool {
    use fhirsync_fhir::Error as E;
    match e {
        E::Status { status, .. } => (400..500).contains(status) && !matches!(status, 408 | 429),
        E::UnknownResourceType { .. } | E::InvalidUrl { .. } => true,
        _ => false,
    }
}

/// The id in `…/{Type}/{id}[/_history/{v}]`.
pub fn id_from_location(location: &str, ty: &str) -> Option<String> {
    let path = location.split(['?', '#']).next()?;
    let mut segments = path.split('/');
    segments.by_ref().find(|s| *s == ty)?;
    segments.next().filter(|id| !id.is_empty()).map(str::to_string)
}

/// Searches the server for `item` (see [`super::same`]); `Err` says why the check cannot run.
async fn find_existing(target: Target<'_>, item: &Prepared) -> Result<Option<String>, String> {
    let params = check_params(target.caps, target.resource_type, &item.resource, item.patient.as_deref())?;
    let client = target.client;
    let mut page =
        client.search(target.base, target.resource_type, &params).await.map_err(|e| e.to_string())?;
    let mut current = fhirsync_fhir::join(target.base, target.resource_type).map_err(|e| e.to_string())?;
    for _ in 0..MAX_CHECK_PAGES {
        for raw in &page.resources {
            let Ok(Value::Object(candidate)) = serde_json::from_str::<Value>(raw) else { continue };
            if same_resource(&item.resource, &candidate) {
                return Ok(Some(candidate.get("id").and_then(Value::as_str).unwrap_or_default().to_string()));
            }
        }
        let Some(next) = page.next.take() else { return Ok(None) };
        let url = current.join(&next).map_err(|e| format!("bad next link: {e}"))?;
        page = client.page(&url).await.map_err(|e| e.to_string())?;
        current = url;
    }
    Err(format!("more than {MAX_CHECK_PAGES} pages of candidates"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id is taken from absolute, relative and versioned Location headers.
    #[test]
    fn id_from_location_forms() {
        assert_eq!(
            id_from_location("https://x/api/FHIR/R4/Observation/e1", "Observation").as_deref(),
            Some("e1")
        );
        assert_eq!(id_from_location("Observation/e2/_history/1", "Observation").as_deref(), Some("e2"));
        assert_eq!(id_from_location("https://x/R4/Condition/e3", "Observation"), None);
    }
}
