//! Validation of a push file, line by line, before any request is sent.

use fhirsync_core::ContentHash;
use fhirsync_extract::cohort::patient_id_of_reference;
use serde_json::{Map, Value};

/// What every line must satisfy.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Expected `resourceType` (`--type`).
    pub resource_type: String,
    /// The type is searched per patient: a `subject`/`patient` reference to a Patient is required.
    pub needs_patient: bool,
}

/// A valid line, ready to send.
#[derive(Clone)]
pub struct Prepared {
    /// 1-based line number in the input file.
    pub line: usize,
    /// SHA-256 (hex) of the line exactly as in the file, without its line ending: the ledger key.
    pub hash: String,
    /// The resource to POST (client `id` removed).
    pub resource: Map<String, Value>,
    /// Remarks for the result file (e.g. "id dropped").
    pub notes: Vec<String>,
}

/// Debug without the resource (patient data).
impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("line", &self.line).field("notes", &self.notes).finish()
    }
}

/// A line that cannot be sent.
#[derive(Debug)]
pub struct Invalid {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub problem: LineProblem,
}

/// Why a line of a push file cannot be sent; the text names the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineProblem {
    /// The line is not JSON.
    #[error("not valid JSON: {source}")]
    NotJson {
        /// The parser's error.
        source: serde_json::Error,
    },
    /// The line is JSON, but not an object.
    #[error("not a JSON object: each line must be one FHIR resource")]
    NotAnObject,
    /// The resource is of another type than `--type`.
    #[error("resourceType is {found}, expected {expected} (--type {expected})")]
    WrongType {
        /// The line's `resourceType`.
        found: String,
        /// The type pushed.
        expected: String,
    },
    /// The resource has no `resourceType`.
    #[error("no resourceType: add \"resourceType\": \"{expected}\"")]
    NoResourceType {
        /// The type pushed.
        expected: String,
    },
    /// A per-patient type without a usable patient reference.
    #[error("{source}: set subject.reference (or patient.reference) to \"Patient/<FHIR id>\"")]
    NoPatient {
        /// What is wrong with the references.
        source: PatientReferenceError,
    },
}

/// Why a resource yields no patient id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatientReferenceError {
    /// Neither `subject.reference` nor `patient.reference` is set.
    #[error("no patient reference")]
    Missing,
    /// The reference is set but not to a Patient (e.g. `Group/1`).
    #[error("{field}.reference does not point to a Patient")]
    NotAPatient {
        /// `subject` or `patient`.
        field: &'static str,
    },
}

/// Validates every line of `text`; blank lines are skipped.
pub fn validate_all(text: &str, rules: &Rules) -> (Vec<Prepared>, Vec<Invalid>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        if raw.trim().is_empty() {
            continue;
        }
        match validate_line(raw, rules) {
            Ok((resource, notes)) => {
                let hash = ContentHash::of(raw.as_bytes()).to_hex();
                ok.push(Prepared { line, hash, resource, notes });
            }
            Err(problem) => bad.push(Invalid { line, problem }),
        }
    }
    (ok, bad)
}

type Checked = (Map<String, Value>, Vec<String>);

fn validate_line(raw: &str, rules: &Rules) -> Result<Checked, LineProblem> {
    let value: Value = serde_json::from_str(raw).map_err(|source| LineProblem::NotJson { source })?;
    let Value::Object(mut resource) = value else {
        return Err(LineProblem::NotAnObject);
    };
    let ty = &rules.resource_type;
    match resource.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == ty => {}
        Some(t) => return Err(LineProblem::WrongType { found: t.to_string(), expected: ty.clone() }),
        None => return Err(LineProblem::NoResourceType { expected: ty.clone() }),
    }
    let mut notes = Vec::new();
    if resource.remove("id").is_some() {
        notes.push("client id dropped: the server assigns ids".to_string());
    }
    if rules.needs_patient && ty != "Patient" {
        patient_reference(&resource).map_err(|source| LineProblem::NoPatient { source })?;
    }
    Ok((resource, notes))
}

/// The patient id of `subject.reference` or `patient.reference`.
pub fn patient_reference(resource: &Map<String, Value>) -> Result<String, PatientReferenceError> {
    let mut seen = None;
    for field in ["subject", "patient"] {
        let Some(reference) = resource.get(field).and_then(|v| v.get("reference")).and_then(Value::as_str)
        else {
            continue;
        };
        match patient_id_of_reference(reference) {
            Some(id) => return Ok(id.to_string()),
            None => seen = Some(PatientReferenceError::NotAPatient { field }),
        }
    }
    Err(seen.unwrap_or(PatientReferenceError::Missing))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules { resource_type: "Observation".into(), needs_patient: true }
    }

    /// Each kind of bad line is rejected with its line number and a problem naming the fix.
    #[test]
    fn bad_lines_are_named() {
        let text = "not json\n[1]\n{\"resourceType\":\"Condition\"}\n\n{\"resourceType\":\"Observation\"}\n\
                    {\"resourceType\":\"Observation\",\"subject\":{\"reference\":\"Group/1\"}}\n";
        let (ok, bad) = validate_all(text, &rules());
        assert!(ok.is_empty());
        let lines: Vec<usize> = bad.iter().map(|b| b.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 5, 6]);
        let problems: Vec<String> = bad.iter().map(|b| b.problem.to_string()).collect();
        assert!(problems[0].contains("not valid JSON"));
        assert!(problems[1].contains("not a JSON object"));
        assert!(problems[2].contains("resourceType is Condition"), "{}", problems[2]);
        assert!(problems[3].contains("no patient reference"), "{}", problems[3]);
        assert!(problems[4].contains("does not point to a Patient"), "{}", problems[4]);
        assert!(matches!(
            bad[4].problem,
            LineProblem::NoPatient { source: PatientReferenceError::NotAPatient { field: "subject" } }
        ));
    }

    /// A valid line loses its id; its key is the SHA-256 of the line as written, so any edit changes it.
    #[test]
    fn valid_line_is_keyed_by_its_exact_text() {
        let line = r#"{"resourceType":"Observation","id":"x","subject":{"reference":"Patient/p1"},"code":{"text":"t"}}"#;
        let (a, _) = validate_all(line, &rules());
        assert_eq!(a.len(), 1);
        assert!(!a[0].resource.contains_key("id"));
        assert!(a[0].notes.iter().any(|n| n.contains("id dropped")));
        assert_eq!(a[0].hash, ContentHash::of(line.as_bytes()).to_hex());
        let (crlf, _) = validate_all(&format!("{line}\r\n"), &rules());
        assert_eq!(crlf[0].hash, a[0].hash, "the line ending is not part of the key");
        let spaced = line.replace(",\"code\"", ", \"code\"");
        let (b, _) = validate_all(&spaced, &rules());
        assert_ne!(b[0].hash, a[0].hash);
    }
}
