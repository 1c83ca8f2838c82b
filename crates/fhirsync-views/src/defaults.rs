//! The ViewDefinitions shipped for common Epic R4 resources (`views/*.json`, embedded at build
//! time). Each has an `id` column (`getResourceKey()`), so the landing layer can re-flatten one
//! changed resource, and a `patient_id` column where the resource belongs to a patient.
//!
//! Site settings ([`DefaultViewSettings`]) are view constants: `patient.json` declares
//! `%mrn_system` (empty: matches no identifier), and [`default_views_with`] sets it to the
//! configured MRN system before compiling. The `mrn` column then takes, in this order, the
//! identifier of that system, the one Epic types `EPI` (Epic's MRN, system
//! `urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14` in the sandbox; there is no "MRN" type text at
//! Epic), one typed `MRN` by text or `MR` by HL7 v2-0203 code (other servers).

use serde_json::Value;

use crate::{Error, Result, View};

/// Name of the constant of `patient.json` that holds the configured MRN identifier system.
pub const MRN_SYSTEM_CONSTANT: &str = "mrn_system";

/// Site settings of the shipped views (`[views]` in `fhirsync.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DefaultViewSettings {
    /// Identifier system of the site's MRN (`[views] mrn_identifier`, e.g.
    /// `urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14`). When set, `view_patient.mrn` takes the
    /// identifier of this system first, before Epic's `EPI` type text and `MRN`.
    pub mrn_identifier: Option<String>,
}

impl DefaultViewSettings {
    /// Checks the settings: the MRN system must be a URI without spaces and without a `|value`.
    pub fn validate(&self) -> Result<()> {
        let Some(system) = &self.mrn_identifier else { return Ok(()) };
        let invalid =
            |problem| Error::InvalidSetting { setting: "mrn_identifier", value: system.clone(), problem };
        if system.trim().is_empty() {
            return Err(invalid("is empty; remove the setting or give the MRN's identifier system"));
        }
        if system.contains('|') {
            return Err(invalid(
                "give the identifier system only, without `|value`, e.g. urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14",
            ));
        }
        if system.chars().any(char::is_whitespace) || !system.contains(':') {
            return Err(invalid(
                "is not an identifier system URI; give one such as urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14",
            ));
        }
        Ok(())
    }
}

/// File name and JSON text of every default view.
pub(crate) const DEFAULT_VIEW_FILES: [(&str, &str); 11] = [
    ("patient.json", include_str!("../views/patient.json")),
    ("observation.json", include_str!("../views/observation.json")),
    ("observation_component.json", include_str!("../views/observation_component.json")),
    ("condition.json", include_str!("../views/condition.json")),
    ("encounter.json", include_str!("../views/encounter.json")),
    ("medication_request.json", include_str!("../views/medication_request.json")),
    ("allergy_intolerance.json", include_str!("../views/allergy_intolerance.json")),
    ("procedure.json", include_str!("../views/procedure.json")),
    ("immunization.json", include_str!("../views/immunization.json")),
    ("diagnostic_report.json", include_str!("../views/diagnostic_report.json")),
    ("document_reference.json", include_str!("../views/document_reference.json")),
];

/// The views shipped for the common Epic resources, compiled, without site settings.
///
/// # Panics
/// Only if an embedded view file is invalid, which the crate's tests rule out
/// (`default_views_compile`); the files are part of the source, not user input.
pub fn default_views() -> Vec<View> {
    compile_defaults(&DefaultViewSettings::default())
}

/// The shipped views with the site's settings applied (see the module docs).
///
/// Fails only if the settings are invalid ([`DefaultViewSettings::validate`]).
///
/// # Panics
/// As [`default_views`]: only for an invalid embedded view file.
pub fn default_views_with(settings: &DefaultViewSettings) -> Result<Vec<View>> {
    settings.validate()?;
    Ok(compile_defaults(settings))
}

fn compile_defaults(settings: &DefaultViewSettings) -> Vec<View> {
    DEFAULT_VIEW_FILES
        .iter()
        .map(|(file, text)| {
            let mut json: Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("embedded view {file} is not JSON: {e}"));
            if let Some(system) = &settings.mrn_identifier {
                set_constant(&mut json, MRN_SYSTEM_CONSTANT, system.trim());
            }
            View::from_json(&json).unwrap_or_else(|e| panic!("embedded view {file} is invalid: {e}"))
        })
        .collect()
}

/// Sets the value of the view constant `name` (whatever its `value[x]`), if the view has it.
fn set_constant(view: &mut Value, name: &str, value: &str) {
    let Some(list) = view.get_mut("constant").and_then(Value::as_array_mut) else { return };
    for c in list.iter_mut().filter_map(Value::as_object_mut) {
        if c.get("name").and_then(Value::as_str) != Some(name) {
            continue;
        }
        for (key, v) in c.iter_mut() {
            if key.starts_with("value") {
                *v = Value::String(value.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every embedded view parses, compiles, and has an `id` column first.
    #[test]
    fn default_views_compile() {
        let views = default_views();
        assert_eq!(views.len(), DEFAULT_VIEW_FILES.len());
        for v in &views {
            assert_eq!(v.columns()[0].name, "id", "view {} must start with id", v.name());
        }
    }

    /// The configured MRN system replaces the patient view's constant; bad systems are refused
    /// with the setting named.
    #[test]
    fn mrn_identifier_setting() {
        let with = |s: &str| DefaultViewSettings { mrn_identifier: Some(s.to_string()) };
        let views = default_views_with(&with("urn:oid:1.2.3")).unwrap();
        assert_eq!(views.len(), DEFAULT_VIEW_FILES.len());
        let patient = serde_json::json!({"resourceType": "Patient", "id": "p",
            "identifier": [{"type": {"text": "EPI"}, "value": "1"}, {"system": "urn:oid:1.2.3", "value": "2"}]});
        let mrn = |views: &[View]| {
            let v = views.iter().find(|v| v.name() == "patient").unwrap();
            let i = v.columns().iter().position(|c| c.name == "mrn").unwrap();
            v.evaluate(&patient).unwrap()[0][i].clone()
        };
        assert_eq!(mrn(&views), "2");
        assert_eq!(mrn(&default_views()), "1");
        for bad in ["", "  ", "urn:oid:1.2.3|203713", "urn:oid:1.2 3", "203713"] {
            let e = default_views_with(&with(bad)).unwrap_err().to_string();
            assert!(e.starts_with("views.mrn_identifier"), "{e}");
        }
        assert!(default_views_with(&DefaultViewSettings::default()).is_ok());
    }
}
