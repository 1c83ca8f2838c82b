//! OperationOutcome parsing.
//!
//! Epic reports search conditions as OperationOutcome issues coded in its own code system
//! ([`EPIC_CODE_SYSTEM`]) under `issue.details.coding`: 4101 "no results", 59204/59205 "not
//! authorized for a sub-resource" (client / user), 4113 "cached search session expired", 59100
//! "unknown parameter ignored", and so on. They come either as `search.mode = "outcome"`
//! entries inside a 200 searchset Bundle, or as the body of a 4xx response.
//!
//! [`Outcome::effect`] says what an issue means for the completeness of the search it came
//! with (see `epic-facts.md` §3.5):
//! - a 59204/59205 whose diagnostics name a sub-type ("Client not authorized for Condition -
//!   Outside Record Problems. ...") is an [`Exclusion`]: the organisation's own records were all
//!   returned, the named sub-type is withheld by licence; the search is complete for what the
//!   client may see;
//! - a 59204/59205 without a sub-type, 4119 "may be incomplete", 4118, 4127 "additional data may
//!   exist", and any `error`/`fatal` issue are a gap: the search cannot be proven complete;
//! - everything else (4101, 59100, information) is neutral.

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
    /// The same as 59204 for the (background) *user*: "User not authorized for ...".
    pub const USER_UNAUTHORIZED_SUB_RESOURCE: &str = "59205";
    /// "Data in patient context may be incomplete".
    pub const MAY_BE_INCOMPLETE: &str = "4119";
    /// "The user is not authorized" for the requested data.
    pub const USER_NOT_AUTHORIZED: &str = "4118";
    /// "Additional data may exist" (a result cap, not a page).
    pub const ADDITIONAL_DATA: &str = "4127";
    /// "Client not authorized" for the API (bulk, DSTU2).
    pub const CLIENT_NOT_AUTHORIZED: &str = "59130";
}

/// A sub-type that Epic withheld from a search by licence (59204) or user security (59205),
/// named in the outcome's diagnostics. Stable for a client: present on every call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Exclusion {
    /// Epic code: 59204 (client) or 59205 (user).
    pub code: String,
    /// The resource type named, e.g. `Condition`.
    pub resource_type: String,
    /// The withheld sub-type, e.g. `Outside Record Problems`.
    pub subtype: String,
}

impl fmt::Display for Exclusion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} - {}", self.resource_type, self.subtype)
    }
}

impl Exclusion {
    /// Reads "... not authorized for <Type> - <sub-type>. ..." from an outcome text; `None` when
    /// the text names no sub-type.
    pub fn parse(code: &str, text: &str) -> Option<Exclusion> {
        const MARK: &str = "not authorized for ";
        let start = text.find(MARK)? + MARK.len();
        let rest = &text[start..];
        // The named part ends at the first sentence end (". ") or the end of the text.
        let named = rest.split(". ").next().unwrap_or(rest).trim().trim_end_matches('.').trim();
        let (ty, subtype) = named.split_once(" - ")?;
        let (ty, subtype) = (ty.trim(), subtype.trim());
        let is_type = !ty.is_empty() && ty.chars().all(|c| c.is_ascii_alphanumeric());
        (is_type && !subtype.is_empty()).then(|| Exclusion {
            code: code.to_string(),
            resource_type: ty.to_string(),
            subtype: subtype.to_string(),
        })
    }
}

/// What one outcome issue means for the completeness of its search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// No bearing on completeness (4101 no results, 59100 ignored parameter, information).
    Neutral,
    /// A named sub-type withheld: complete for what the client may see.
    Excluded(Exclusion),
    /// The search cannot be proven complete; the text says why.
    Gap(String),
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

    /// What this issue means for the completeness of the search it came with (module docs).
    pub fn effect(&self) -> Effect {
        let code = self.epic_code.as_deref().unwrap_or("");
        match code {
            codes::UNAUTHORIZED_SUB_RESOURCE | codes::USER_UNAUTHORIZED_SUB_RESOURCE => {
                let named = [self.diagnostics.as_deref(), self.text.as_deref()]
                    .into_iter()
                    .flatten()
                    .find_map(|t| Exclusion::parse(code, t));
                match named {
                    Some(e) => Effect::Excluded(e),
                    None => Effect::Gap(format!("{code} results suppressed without a named sub-type")),
                }
            }
            codes::MAY_BE_INCOMPLETE => Effect::Gap("4119 data in patient context may be incomplete".into()),
            codes::USER_NOT_AUTHORIZED => Effect::Gap("4118 user not authorized".into()),
            codes::ADDITIONAL_DATA => Effect::Gap("4127 additional data may exist".into()),
            _ if matches!(self.severity.as_str(), "error" | "fatal") => Effect::Gap(format!("{self}")),
            _ => Effect::Neutral,
        }
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

    /// Epic's Outside-Record 59204 names a sub-type and is an exclusion, not a gap.
    #[test]
    fn outside_record_59204_is_an_exclusion() {
        let o = Outcome {
            severity: "warning".into(),
            issue_code: "suppressed".into(),
            epic_code: Some("59204".into()),
            text: Some("The authenticated client's search request applies to a sub-resource that the client is not authorized for. Results of this sub-type will not be returned.".into()),
            diagnostics: Some("Client not authorized for Condition - Outside Record Problems. Search results of this type have not been included.".into()),
        };
        let Effect::Excluded(e) = o.effect() else { panic!("{:?}", o.effect()) };
        assert_eq!(
            (e.code.as_str(), e.resource_type.as_str(), e.subtype.as_str()),
            ("59204", "Condition", "Outside Record Problems")
        );
        assert_eq!(e.to_string(), "Condition - Outside Record Problems");
    }

    /// A 59205 for the user names its sub-type too; one without a sub-type is a gap.
    #[test]
    fn user_59205_and_unnamed_59204() {
        let e = Exclusion::parse("59205", "User not authorized for Procedure - External Radiotherapy Summary. Search results of this type have not been included.").unwrap();
        assert_eq!(e.subtype, "External Radiotherapy Summary");
        assert_eq!(Exclusion::parse("59204", "AllergyIntolerance - Outside Record").map(|e| e.subtype), None);
        assert_eq!(
            Exclusion::parse("59204", "Client not authorized for AllergyIntolerance - Outside Record")
                .unwrap()
                .subtype,
            "Outside Record"
        );
        assert_eq!(
            Exclusion::parse(
                "59204",
                "Client not authorized for Condition. Search results of this type have not been included."
            ),
            None
        );
        let bare = Outcome {
            severity: "warning".into(),
            issue_code: "suppressed".into(),
            epic_code: Some("59204".into()),
            text: Some("not authorized".into()),
            diagnostics: None,
        };
        assert!(matches!(bare.effect(), Effect::Gap(_)));
    }

    /// 4119 and fatal issues are gaps; 4101 and 59100 are neutral.
    #[test]
    fn gaps_and_neutral_codes() {
        let issue = |sev: &str, code: &str| Outcome {
            severity: sev.into(),
            issue_code: "processing".into(),
            epic_code: Some(code.into()),
            text: None,
            diagnostics: None,
        };
        assert!(matches!(issue("warning", "4119").effect(), Effect::Gap(_)));
        assert!(matches!(issue("fatal", "59159").effect(), Effect::Gap(_)));
        assert_eq!(issue("warning", "4101").effect(), Effect::Neutral);
        assert_eq!(issue("information", "59100").effect(), Effect::Neutral);
    }

    /// Garbage is not an outcome.
    #[test]
    fn garbage_yields_no_outcomes() {
        assert!(parse_outcome("<html>").is_empty());
    }
}
