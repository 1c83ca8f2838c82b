//! The ViewDefinitions shipped for common Epic R4 resources (`views/*.json`, embedded at build
//! time). Each has an `id` column (`getResourceKey()`), so the landing layer can re-flatten one
//! changed resource, and a `patient_id` column where the resource belongs to a patient.

use crate::View;

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

/// The views shipped for the common Epic resources, compiled.
///
/// # Panics
/// Only if an embedded view file is invalid, which the crate's tests rule out
/// (`default_views_compile`); the files are part of the source, not user input.
pub fn default_views() -> Vec<View> {
    DEFAULT_VIEW_FILES
        .iter()
        .map(|(file, text)| {
            let json: serde_json::Value = serde_json::from_str(text)
                .unwrap_or_else(|e| panic!("embedded view {file} is not JSON: {e}"));
            View::from_json(&json).unwrap_or_else(|e| panic!("embedded view {file} is invalid: {e}"))
        })
        .collect()
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
}
