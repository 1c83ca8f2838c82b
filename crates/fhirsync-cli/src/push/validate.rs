//! Validation of a push file, line by line, before any request is sent.

use fhirsync_core::ContentHash;
use fhirsync_extract::cohort::patient_id_of_reference;
use serde_json::{Map, Value, json};

use super::PUSH_IDENTIFIER_SYSTEM;

/// Types whose `identifier` is a single Identifier, not a list (R4/STU3).
const SINGLE_IDENTIFIER_TYPES: &[&str] = &["QuestionnaireResponse", "ConceptMap", "Bundle"];

/// What every line must satisfy.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Expected `resourceType` (`--type`).
    pub resource_type: String,
    /// The type is searched per patient: a `subject`/`patient` reference to a Patient is required.
    pub needs_patient: bool,
    /// Add a `urn:fhirsync:push` identifier to resources that have none.
    pub add_identifier: bool,
}

/// A valid line, ready to send.
#[derive(Clone)]
pub struct Prepared {
    /// 1-based line number in the input file.
    pub line: usize,
    /// The resource to POST (client `id` removed, push identifier added if configured).
    pub resource: Map<String, Value>,
    /// FHIR id of the patient it belongs to, if any.
    pub patient: Option<String>,
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub problem: String,
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
            Ok((resource, patient, notes)) => ok.push(Prepared { line, resource, patient, notes }),
            Err(problem) => bad.push(Invalid { line, problem }),
        }
    }
    (ok, bad)
}

type Checked = (Map<String, Value>, Option<String>, Vec<String>);

fn validate_line(raw: &str, rules: &Rules) -> Result<Checked, String> {
    let value: Value = serde_json::from_str(raw).map_err(|e| format!("not valid JSON: {e}"))?;
    let Value::Object(mut resource) = value else {
        return Err("not a JSON object: each line must be one FHIR resource".into());
    };
    let ty = &rules.resource_type;
    match resource.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == ty => {}
        Some(t) => return Err(format!("resourceType is {t}, expected {ty} (--type {ty})")),
        None => return Err(format!("no resourceType: add \"resourceType\": \"{ty}\"")),
    }
    let mut notes = Vec::new();
    if resource.remove("id").is_some() {
        notes.push("client id dropped: the server assigns ids".to_string());
    }
    let patient = if rules.needs_patient && ty != "Patient" {
        Some(patient_reference(&resource).map_err(|p| {
            format!("{p}: set subject.reference (or patient.reference) to \"Patient/<FHIR id>\"")
        })?)
    } else {
        None
    };
    if rules.add_identifier && identifiers(&resource).is_empty() {
        let key = ContentHash::of(Value::Object(resource.clone()).to_string().as_bytes()).to_hex();
        let identifier = json!({"system": PUSH_IDENTIFIER_SYSTEM, "value": key});
        let value = if SINGLE_IDENTIFIER_TYPES.contains(&ty.as_str()) {
            identifier
        } else {
            Value::Array(vec![identifier])
        };
        resource.insert("identifier".into(), value);
        notes.push(format!("identifier {PUSH_IDENTIFIER_SYSTEM}|{key} added"));
    }
    Ok((resource, patient, notes))
}

/// The patient id of `subject.reference` or `patient.reference`.
pub fn patient_reference(resource: &Map<String, Value>) -> Result<String, String> {
    let mut seen = None;
    for field in ["subject", "patient"] {
        let Some(reference) = resource.get(field).and_then(|v| v.get("reference")).and_then(Value::as_str)
        else {
            continue;
        };
        match patient_id_of_reference(reference) {
            Some(id) => return Ok(id.to_string()),
            None => seen = Some(format!("{field}.reference does not point to a Patient")),
        }
    }
    Err(seen.unwrap_or_else(|| "no patient reference".to_string()))
}

/// The resource's identifiers as `(system, value)` (list or single form).
pub fn identifiers(resource: &Map<String, Value>) -> Vec<(String, String)> {
    let items: Vec<&Value> = match resource.get("identifier") {
        Some(Value::Array(a)) => a.iter().collect(),
        Some(v @ Value::Object(_)) => vec![v],
        _ => Vec::new(),
    };
    items
        .into_iter()
        .filter_map(|i| {
            let value = i.get("value")?.as_str()?;
            let system = i.get("system").and_then(Value::as_str).unwrap_or_default();
            Some((system.to_string(), value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules { resource_type: "Observation".into(), needs_patient: true, add_identifier: true }
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
        assert!(bad[0].problem.contains("not valid JSON"));
        assert!(bad[1].problem.contains("not a JSON object"));
        assert!(bad[2].problem.contains("resourceType is Condition"), "{}", bad[2].problem);
        assert!(bad[3].problem.contains("no patient reference"), "{}", bad[3].problem);
        assert!(bad[4].problem.contains("does not point to a Patient"), "{}", bad[4].problem);
    }

    /// A valid line loses its id, keeps its patient, and gets a stable push identifier.
    #[test]
    fn valid_line_is_prepared_with_a_stable_key() {
        let line = r#"{"resourceType":"Observation","id":"x","subject":{"reference":"Patient/p1"},"code":{"text":"t"}}"#;
        let (a, _) = validate_all(line, &rules());
        let (b, _) = validate_all(line, &rules());
        assert_eq!(a.len(), 1);
        assert!(!a[0].resource.contains_key("id"));
        assert_eq!(a[0].patient.as_deref(), Some("p1"));
        let key = identifiers(&a[0].resource);
        assert_eq!(key.len(), 1);
        assert_eq!(key[0].0, PUSH_IDENTIFIER_SYSTEM);
        assert_eq!(key, identifiers(&b[0].resource));
        assert!(a[0].notes.iter().any(|n| n.contains("id dropped")));
    }

    /// A resource's own identifier is kept and no push identifier is added.
    #[test]
    fn own_identifier_is_kept() {
        let line = r#"{"resourceType":"Observation","subject":{"reference":"Patient/p1"},"identifier":[{"system":"urn:lab","value":"42"}]}"#;
        let (a, _) = validate_all(line, &rules());
        assert_eq!(identifiers(&a[0].resource), vec![("urn:lab".to_string(), "42".to_string())]);
    }
}
