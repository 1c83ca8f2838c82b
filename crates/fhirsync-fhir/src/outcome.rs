//! OperationOutcome parsing.
//!
//! Epic reports search conditions as OperationOutcome issues coded in its own code system
//! ([`EPIC_CODE_SYSTEM`]) under `issue.details.coding`: 4101 "no results", 59204 "not authorized
//! for a sub-resource" (a silent permission gap), 4113 "cached search session expired", 4122
//! "unknown parameter ignored", and so on. They come either as `search.mode = "outcome"` entries
//! inside a 200 searchset Bundle, or as the body of a 4xx response.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Epic's OperationOutcome code system.
pub const EPIC_CODE_SYSTEM: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.2.657369";

/// Well-known Epic outcome codes.
pub mod codes {
    /// "Resource request returns no results": the search is complete and empty.
    pub const NO_RESULTS: &str = "4101";
    /// "Session ID for cached search results has expired": re-issue the search from the start.
    pub const SESSION_EXPIRED: &str = "4113";
    /// "Client is not authorized for a sub-resource": results of a sub-type were suppressed.
    pub const UNAUTHORIZED_SUB_RESOURCE: &str = "59204";
}

/// One issue of an OperationOutcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `issue.severity` (`fatal`, `error`, `warning`, `information`).
    pub severity: String,
    /// `issue.code` (FHIR issue type, e.g. `processing`, `suppressed`).
    pub issue_code: String,
    /// Epic's code from `issue.details.coding` in [`EPIC_CODE_SYSTEM`], if present.
    pub epic_code: Option<String>,
    /// `issue.details.text`, or the display of the Epic coding.
    pub text: Option<String>,
    /// `issue.diagnostics`.
    pub diagnostics: Option<String>,
}

impl Outcome {
    /// True when this issue carries Epic code `code`.
    pub fn is(&self, code: &str) -> bool {
        self.epic_code.as_deref() == Some(code)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.severity)?;
        if let Some(c) = &self.epic_code {
            write!(f, " {c}")?;
        }
        if let Some(t) = &self.text {
            write!(f, ": {t}")?;
        }
        if let Some(d) = &self.diagnostics {
            write!(f, " ({d})")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct OperationOutcomeWire {
    #[serde(default)]
    issue: Vec<IssueWire>,
}

#[derive(Deserialize)]
struct IssueWire {
    #[serde(default)]
    severity: String,
    #[serde(default)]
    code: String,
    details: Option<CodeableConceptWire>,
    diagnostics: Option<String>,
}

#[derive(Deserialize)]
struct CodeableConceptWire {
    #[serde(default)]
    coding: Vec<CodingWire>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct CodingWire {
    system: Option<String>,
    code: Option<String>,
    display: Option<String>,
}

/// Parses the issues of an OperationOutcome JSON text. Returns an empty list for anything that
/// is not a parseable OperationOutcome.
pub fn parse_outcome(json: &str) -> Vec<Outcome> {
    let Ok(oo) = serde_json::from_str::<OperationOutcomeWire>(json) else {
        return Vec::new();
    };
    oo.issue
        .into_iter()
        .map(|i| {
            let (epic_code, display, text) = match i.details {
                Some(d) => {
                    let epic = d.coding.into_iter().find(|c| c.system.as_deref() == Some(EPIC_CODE_SYSTEM));
                    let (code, display) = epic.map(|c| (c.code, c.display)).unwrap_or((None, None));
                    (code, display, d.text)
                }
                None => (None, None, None),
            };
            Outcome {
                severity: i.severity,
                issue_code: i.code,
                epic_code,
                text: text.or(display),
                diagnostics: i.diagnostics,
            }
        })
        .collect()
}

/// A one-line summary of a list of outcomes (for error messages).
pub fn summarize(outcomes: &[Outcome]) -> String {
    outcomes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Epic code is taken from the coding in Epic's system, not from other codings.
    #[test]
    fn epic_code_is_read_from_epic_system() {
        let json = r#"{"resourceType":"OperationOutcome","issue":[{"severity":"warning","code":"suppressed",
          "details":{"coding":[{"system":"http://other","code":"x"},
          {"system":"urn:oid:1.2.840.114350.1.13.0.1.7.2.657369","code":"59204","display":"not authorized"}],
          "text":"Client not authorized"},"diagnostics":"Condition - Outside Record Problems"}]}"#;
        let o = parse_outcome(json);
        assert_eq!(o.len(), 1);
        assert!(o[0].is(codes::UNAUTHORIZED_SUB_RESOURCE));
        assert_eq!(o[0].text.as_deref(), Some("Client not authorized"));
        assert_eq!(o[0].severity, "warning");
        assert!(summarize(&o).contains("59204"));
    }

    /// Garbage is not an outcome.
    #[test]
    fn garbage_yields_no_outcomes() {
        assert!(parse_outcome("<html>").is_empty());
    }
}
