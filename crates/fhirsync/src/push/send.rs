//! The two requests of a push: the create (`POST`) and the read-back of a returned id.

use fhirsync_fhir::{FhirClient, Request};
use serde_json::Value;
use tracing::debug;
use url::Url;

use super::validate::Prepared;

/// Epic's "duplicate" refusal (e.g. an allergy already on the chart): nothing new was filed.
pub const DUPLICATE_CODE: &str = "59141";

/// Where creates go.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The FHIR client.
    pub client: &'a FhirClient,
    /// Endpoint base URL.
    pub base: &'a Url,
    /// Resource type.
    pub resource_type: &'a str,
}

/// What the server said to one create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 2xx read completely: filed, with the id of its `Location` if it sent one.
    Created(Option<String>),
    /// 2xx with a `Location`, but the rest of the answer was cut off.
    Cut {
        /// Id from the `Location`.
        id: String,
        /// How the answer failed.
        why: String,
    },
    /// Refused as already on the chart (59141).
    Duplicate(String),
    /// Refused (4xx other than 408/429): not filed.
    Refused(String),
    /// No definitive answer (timeout, dropped connection, 5xx, 429): it may or may not be filed.
    Unacknowledged(String),
}

/// Sends one `POST {base}/{Type}`. The FHIR client never re-sends a POST by itself. `Err` only
/// for failures that stop the whole push before the server processed anything (no token, 401).
pub async fn post(target: Target<'_>, item: &Prepared) -> Result<Answer, fhirsync_fhir::Error> {
    let url = fhirsync_fhir::join(target.base, target.resource_type)?;
    let body = Value::Object(item.resource.clone()).to_string();
    let request = Request::post_json(url, body);
    // Streaming, so the Location is kept even when the body that follows it is cut off.
    let resp = match target.client.execute_streaming(&request).await {
        Ok(resp) => resp,
        Err(e) if e.is_fatal_for_run() => return Err(e),
        Err(e) if e.has_outcome(DUPLICATE_CODE) => return Ok(Answer::Duplicate(e.to_string())),
        Err(e) if is_refusal(&e) => return Ok(Answer::Refused(e.to_string())),
        Err(e) => return Ok(Answer::Unacknowledged(e.to_string())),
    };
    let id = resp
        .response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .and_then(|l| id_from_location(l, target.resource_type));
    let status = resp.response.status().as_u16();
    match (resp.response.bytes().await, id) {
        (Ok(_), Some(id)) => Ok(Answer::Created(Some(id))),
        (Ok(body), None) if is_duplicate_outcome(&body) => {
            Ok(Answer::Duplicate(format!("HTTP {status} with OperationOutcome {DUPLICATE_CODE}")))
        }
        (Ok(_), None) => Ok(Answer::Created(None)),
        (Err(e), Some(id)) => {
            Ok(Answer::Cut { id, why: format!("HTTP {status}, then the answer broke off: {e}") })
        }
        (Err(e), None) => Ok(Answer::Unacknowledged(format!(
            "HTTP {status} without a Location, then the answer broke off: {e}"
        ))),
    }
}

/// A 2xx body that is an OperationOutcome carrying 59141.
fn is_duplicate_outcome(body: &[u8]) -> bool {
    fhirsync_fhir::outcome::parse_outcome(&String::from_utf8_lossy(body)).iter().any(|o| o.is(DUPLICATE_CODE))
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

/// What a read of a returned id showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// The server serves `{Type}/{id}`: the create was filed.
    Exists,
    /// 404 or 410: the server does not have it.
    Gone,
    /// The read failed otherwise; nothing can be concluded.
    Unknown(String),
}

/// `GET {base}/{Type}/{id}`.
pub async fn read_back(target: Target<'_>, id: &str) -> Result<Found, fhirsync_fhir::Error> {
    let url = fhirsync_fhir::join(target.base, &format!("{}/{id}", target.resource_type))?;
    match target.client.execute(&Request::get(url)).await {
        Ok(resp) => {
            let value: Option<Value> = serde_json::from_slice(&resp.body).ok();
            let ty = value.as_ref().and_then(|v| v.get("resourceType")).and_then(Value::as_str);
            if ty == Some(target.resource_type) {
                Ok(Found::Exists)
            } else {
                debug!(found = ?ty, "Read-back answered another resource type.");
                Ok(Found::Unknown(format!(
                    "reading {}/{id} answered {} instead",
                    target.resource_type,
                    ty.unwrap_or("no FHIR resource")
                )))
            }
        }
        Err(e) if e.is_fatal_for_run() => Err(e),
        Err(e) if matches!(e.status(), Some(404 | 410)) => Ok(Found::Gone),
        Err(e) => Ok(Found::Unknown(e.to_string())),
    }
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

    /// A 2xx OperationOutcome with 59141 is a duplicate; other bodies are not.
    #[test]
    fn duplicate_outcome_in_a_success_body() {
        let dup = br#"{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"duplicate","details":{"coding":[{"system":"urn:oid:1.2.840.114350.1.13.0.1.7.2.657369","code":"59141"}]}}]}"#;
        assert!(is_duplicate_outcome(dup));
        assert!(!is_duplicate_outcome(b""));
        assert!(!is_duplicate_outcome(br#"{"resourceType":"Observation"}"#));
    }
}
