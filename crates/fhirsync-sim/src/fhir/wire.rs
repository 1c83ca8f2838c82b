//! What goes on the wire: content negotiation (XML unless JSON is asked for, as at Epic),
//! JSON with `resourceType` first, OperationOutcomes with Epic's code system, IIS's HTML 404.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Value, json};

use super::order::ordered;
use super::xml;

/// Epic's code system for OperationOutcome details.
pub const EPIC_OUTCOME_SYSTEM: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.2.657369";
/// Content type of JSON answers.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";
/// Content type of XML answers.
pub const FHIR_XML: &str = "application/fhir+xml; charset=utf-8";

/// Response serialisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// FHIR JSON.
    Json,
    /// FHIR XML (Epic's default).
    Xml,
}

fn json_media(m: &str) -> bool {
    matches!(m, "json" | "application/json" | "application/fhir+json" | "application/json+fhir")
}

impl Format {
    /// Epic's rule: JSON when `_format` or `Accept` asks for it, XML otherwise (also for `*/*`).
    pub(crate) fn negotiate(headers: &HeaderMap, format_param: Option<&str>) -> Format {
        if let Some(f) = format_param {
            return if json_media(f.trim()) { Format::Json } else { Format::Xml };
        }
        let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
        for media in accept.split(',') {
            let media = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            if json_media(&media) {
                return Format::Json;
            }
            if matches!(media.as_str(), "application/xml" | "application/fhir+xml" | "application/xml+fhir") {
                return Format::Xml;
            }
        }
        Format::Xml
    }
}

/// Serialises JSON in FHIR element order (`resourceType` first), recursively; `.0` is the
/// property name of the value (it selects the datatype order).
pub(crate) struct Ordered<'a>(pub &'a str, pub &'a Value);

impl Serialize for Ordered<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.1 {
            Value::Object(obj) => {
                let mut map = s.serialize_map(Some(obj.len()))?;
                for (k, v) in ordered(self.0, obj) {
                    map.serialize_entry(k, &Ordered(k, v))?;
                }
                map.end()
            }
            Value::Array(items) => s.collect_seq(items.iter().map(|v| Ordered(self.0, v))),
            other => other.serialize(s),
        }
    }
}

/// JSON bytes of `value` in FHIR element order.
pub(crate) fn json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(&Ordered("", value)).unwrap_or_default()
}

/// Serialised body and content type of `value`.
pub(crate) fn encode(format: Format, value: &Value) -> (Vec<u8>, &'static str) {
    match format {
        Format::Json => (json_bytes(value), FHIR_JSON),
        Format::Xml => (xml::to_xml(value).into_bytes(), FHIR_XML),
    }
}

/// A FHIR answer.
pub(crate) fn fhir(status: StatusCode, format: Format, value: &Value) -> Response {
    let (body, content_type) = encode(format, value);
    bytes(status, content_type, body)
}

/// An answer with a serialised body.
pub(crate) fn bytes(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// One issue of an OperationOutcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    /// `fatal`, `error`, `warning`, `information`.
    pub severity: &'static str,
    /// FHIR issue type (`processing`, `not-found`, `value`, …).
    pub code: &'static str,
    /// Epic's numeric code.
    pub epic_code: &'static str,
    /// Text of the code.
    pub text: String,
    /// Extra detail, when any.
    pub diagnostics: Option<String>,
    /// Element the issue is about (`/f:id`), also emitted as `expression` without `/f:`.
    pub location: Option<&'static str>,
}

impl Issue {
    /// An issue without diagnostics.
    pub(crate) fn new(
        severity: &'static str,
        code: &'static str,
        epic_code: &'static str,
        text: &str,
    ) -> Issue {
        Issue { severity, code, epic_code, text: text.to_string(), diagnostics: None, location: None }
    }

    /// Adds diagnostics.
    pub(crate) fn with_diagnostics(mut self, d: impl Into<String>) -> Issue {
        self.diagnostics = Some(d.into());
        self
    }

    /// Adds a location (and the matching expression).
    pub(crate) fn at(mut self, location: &'static str) -> Issue {
        self.location = Some(location);
        self
    }

    /// 4101: no results.
    pub(crate) fn no_results() -> Issue {
        Issue::new("warning", "processing", "4101", "Resource request returns no results.")
    }

    /// 59008: unknown id (as the sandbox answers).
    pub(crate) fn unknown_id() -> Issue {
        Issue::new("fatal", "not-found", "59008", "The FHIR ID provided was not found.")
            .with_diagnostics("Invalid FHIR ID provided")
            .at("/f:id")
    }

    /// 59204: the client's licence does not cover sub-type `subtype` of `ty` ("Client not
    /// authorized for Condition - Outside Record Problems. …", as the sandbox words it).
    pub(crate) fn client_suppressed(ty: &str, subtype: &str) -> Issue {
        Issue::new("warning", "suppressed", "59204", CLIENT_SUPPRESSED_TEXT).with_diagnostics(format!(
            "Client not authorized for {ty} - {subtype}. Search results of this type have not been included."
        ))
    }

    /// 59205: the (background) user may not view sub-type `subtype` of `ty` ("User not
    /// authorized for Procedure - External Radiotherapy Summary. …").
    pub(crate) fn user_suppressed(ty: &str, subtype: &str) -> Issue {
        Issue::new("warning", "suppressed", "59205", USER_SUPPRESSED_TEXT).with_diagnostics(format!(
            "User not authorized for {ty} - {subtype}. Search results of this type have not been included."
        ))
    }

    /// 59204 for a dataset the client's registration leaves out (`key` = `Type:category` or
    /// `Type`): the sub-type is the category's title ("Observation - Social History").
    pub(crate) fn unlicensed(key: &str) -> Issue {
        match key.split_once(':') {
            Some((ty, category)) => Issue::client_suppressed(ty, &title(category)),
            None => Issue::new("warning", "suppressed", "59204", CLIENT_SUPPRESSED_TEXT).with_diagnostics(
                format!(
                    "Client not authorized for {key}. Search results of this type have not been included."
                ),
            ),
        }
    }

    /// 59100: a Patient search parameter was ignored.
    pub(crate) fn ignored_param(name: &str) -> Issue {
        Issue::new(
            "information",
            "invalid",
            "59100",
            "Content invalid against the specification or a profile.",
        )
        .with_diagnostics(format!("Unknown parameter: {}. Parameter has been ignored.", name.to_uppercase()))
    }

    /// 4110: no usable search parameter (the search names none this type supports).
    pub(crate) fn no_params(ty: &str) -> Issue {
        Issue::new("fatal", "required", "4110", "No parameters are provided in the search request.")
            .with_diagnostics(format!("{ty} can only be searched by _id."))
    }

    /// 4111: a required search parameter is missing.
    pub(crate) fn required_missing(diagnostics: impl Into<String>) -> Issue {
        Issue::new("fatal", "required", "4111", "A required search parameter is missing.")
            .with_diagnostics(diagnostics)
    }

    /// 59141: the create would duplicate a record already on the chart.
    pub(crate) fn duplicate(diagnostics: impl Into<String>) -> Issue {
        Issue::new("fatal", "duplicate", "59141", "An attempt was made to create a duplicate record.")
            .with_diagnostics(diagnostics)
    }
}

/// Details text of 59204, verbatim from the sandbox.
const CLIENT_SUPPRESSED_TEXT: &str = "The authenticated client's search request applies to a sub-resource \
    that the client is not authorized for. Results of this sub-type will not be returned.";
/// Details text of 59205, verbatim from the sandbox.
const USER_SUPPRESSED_TEXT: &str = "The authenticated user's search request applies to a sub-resource \
    that the user is not authorized to view. Results of this sub-type will not be returned.";

/// Title of a category code, as Epic names sub-types: `social-history` → `Social History`,
/// `LDA-property` → `LDA Property`, `sdoh` → `SDOH`; numeric (SNOMED) codes stay as they are.
pub(crate) fn title(code: &str) -> String {
    if code.eq_ignore_ascii_case("sdoh") {
        return "SDOH".to_string();
    }
    code.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
        })
        .collect::<Vec<String>>()
        .join(" ")
}

/// An OperationOutcome with `issues`.
pub(crate) fn outcome(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = issues
        .iter()
        .map(|i| {
            let mut v = json!({
                "severity": i.severity,
                "code": i.code,
                "details": {
                    "coding": [{"system": EPIC_OUTCOME_SYSTEM, "code": i.epic_code, "display": i.text}],
                    "text": i.text,
                },
            });
            if let Some(obj) = v.as_object_mut() {
                if let Some(d) = &i.diagnostics {
                    obj.insert("diagnostics".into(), d.clone().into());
                }
                if let Some(l) = i.location {
                    obj.insert("location".into(), json!([l]));
                    obj.insert("expression".into(), json!([l.trim_start_matches("/f:")]));
                }
            }
            v
        })
        .collect();
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

/// An OperationOutcome answer.
pub(crate) fn error(status: StatusCode, format: Format, issues: &[Issue]) -> Response {
    fhir(status, format, &outcome(issues))
}

/// 59008: unknown id.
pub(crate) fn not_found(format: Format) -> Response {
    error(StatusCode::NOT_FOUND, format, &[Issue::unknown_id()])
}

/// IIS's HTML 404, which Epic answers for unknown resource types and operations.
pub(crate) fn html_404() -> Response {
    const PAGE: &str = concat!(
        "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Strict//EN\" ",
        "\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd\">\r\n",
        "<html xmlns=\"http://www.w3.org/1999/xhtml\">\r\n<head>\r\n",
        "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=iso-8859-1\"/>\r\n",
        "<title>404 - File or directory not found.</title>\r\n</head>\r\n<body>\r\n",
        "<div id=\"header\"><h1>Server Error</h1></div>\r\n<div id=\"content\">\r\n",
        " <div class=\"content-container\"><fieldset>\r\n",
        "  <h2>404 - File or directory not found.</h2>\r\n",
        "  <h3>The resource you are looking for might have been removed, had its name changed, ",
        "or is temporarily unavailable.</h3>\r\n </fieldset></div>\r\n</div>\r\n</body>\r\n</html>\r\n",
    );
    (StatusCode::NOT_FOUND, [(header::CONTENT_TYPE, "text/html")], PAGE).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No Accept and `*/*` give XML; the JSON media types and `_format=json` give JSON.
    #[test]
    fn negotiates_like_epic() {
        let mut h = HeaderMap::new();
        assert_eq!(Format::negotiate(&h, None), Format::Xml);
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert_eq!(Format::negotiate(&h, None), Format::Xml);
        assert_eq!(Format::negotiate(&h, Some("json")), Format::Json);
        for json in ["application/fhir+json", "application/json", "application/json+fhir; q=0.9"] {
            h.insert(header::ACCEPT, HeaderValue::from_str(json).unwrap());
            assert_eq!(Format::negotiate(&h, None), Format::Json, "{json}");
        }
    }

    /// JSON output starts with `resourceType`, also in nested resources.
    #[test]
    fn resource_type_comes_first() {
        let v = json!({"resourceType": "Bundle", "a": 1, "entry": [{"resource": {"id": "x", "resourceType": "Patient"}}]});
        let s = String::from_utf8(json_bytes(&v)).unwrap();
        assert!(s.starts_with("{\"resourceType\":\"Bundle\""), "{s}");
        assert!(s.contains("{\"resourceType\":\"Patient\",\"id\":\"x\"}"), "{s}");
        assert!(s.ends_with("}}],\"a\":1}"), "FHIR elements first, unknown keys last: {s}");
    }
}
