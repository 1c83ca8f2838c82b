//! The sub-types production Epic withholds from every search (`epic-facts.md` §3.5).
//!
//! Records that came from other organisations (Care Everywhere, "Outside Record") are not
//! covered by an ordinary client licence, so the sandbox attaches a 59204 warning naming them to
//! every search of AllergyIntolerance, Condition, DiagnosticReport, Encounter, Immunization,
//! MedicationRequest, Observation and Procedure, with or without data; DocumentReference carries
//! none. Procedure also carries a 59205 for the background user. The wording follows the
//! sandbox captures (the-map phase-b, 2026-04-26):
//!
//! | search | withheld sub-types |
//! |---|---|
//! | AllergyIntolerance, Encounter, Immunization, MedicationRequest (MedicationOrder on DSTU2) | 59204 `Outside Record` |
//! | Procedure | 59205 `External Radiotherapy Summary` (user), then 59204 `Outside Record` |
//! | DiagnosticReport | 59204 `Outside Record Results` |
//! | Condition `problem-list-item` | `Outside Record Problems` |
//! | Condition `encounter-diagnosis` | `Outside Record Encounter Diagnosis` |
//! | Condition `health-concern` | `Outside Record Problems` and `Outside Record Health Concern` (as captured) |
//! | Condition, other category `c` | `Outside Record <Title of c>` |
//! | Condition without category | the three above |
//! | Observation `laboratory` / `vital-signs` | `Outside Record Results` / `Outside Record Vital Signs` |
//! | Observation, other category `c` | `Outside Record <Title of c>` (`social-history` → `Outside Record Social History`) |
//! | Observation by `code` only | Results, Vital Signs and Social History |
//!
//! The same issues come on every call of the same search, whatever the data, and every FHIR
//! version carries them (the sandbox measured R4; the simulator applies the rule to STU3 and
//! DSTU2 too). Only the [`ServerProfile::Epic`](super::config::ServerProfile) profile sends them.

use super::wire::{Issue, title};

/// Sub-type text of the Outside-Record issues for one category.
fn category_subtypes(ty: &str, category: &str) -> Vec<String> {
    let named = |s: &str| vec![format!("Outside Record {s}")];
    match (ty, category) {
        ("Condition", "problem-list-item") => named("Problems"),
        ("Condition", "encounter-diagnosis") => named("Encounter Diagnosis"),
        ("Condition", "health-concern") => {
            vec!["Outside Record Problems".to_string(), "Outside Record Health Concern".to_string()]
        }
        ("Observation", "laboratory") => named("Results"),
        ("Observation", "vital-signs") => named("Vital Signs"),
        (_, c) => named(&title(c)),
    }
}

/// Categories assumed when a categorised type is searched without `category`.
fn default_categories(ty: &str) -> &'static [&'static str] {
    match ty {
        "Condition" => &["problem-list-item", "encounter-diagnosis", "health-concern"],
        "Observation" => &["laboratory", "vital-signs", "social-history"],
        _ => &[],
    }
}

/// The issues Epic attaches to a search of `ty` for `categories` (the codes of the `category`
/// parameter, empty when absent), in the order the sandbox sends them.
pub(crate) fn withheld(ty: &str, categories: &[&str]) -> Vec<Issue> {
    let subtypes: Vec<String> = match ty {
        "AllergyIntolerance" | "Encounter" | "Immunization" | "MedicationRequest" | "MedicationOrder"
        | "Procedure" => vec!["Outside Record".to_string()],
        "DiagnosticReport" => vec!["Outside Record Results".to_string()],
        "Condition" | "Observation" => {
            let cats: Vec<&str> =
                if categories.is_empty() { default_categories(ty).to_vec() } else { categories.to_vec() };
            let mut out: Vec<String> = Vec::new();
            for c in cats {
                for s in category_subtypes(ty, c) {
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
            out
        }
        _ => Vec::new(),
    };
    let mut issues = Vec::with_capacity(subtypes.len() + 1);
    if ty == "Procedure" {
        issues.push(Issue::user_suppressed(ty, "External Radiotherapy Summary"));
    }
    issues.extend(subtypes.iter().map(|s| Issue::client_suppressed(ty, s)));
    issues
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diagnostics(issues: &[Issue]) -> Vec<String> {
        issues
            .iter()
            .map(|i| format!("{} {}", i.epic_code, i.diagnostics.clone().unwrap_or_default()))
            .collect()
    }

    /// The sub-type wording matches the sandbox captures, Procedure carries 59205 first, and
    /// DocumentReference carries nothing.
    #[test]
    fn wording_follows_the_sandbox() {
        let tail = ". Search results of this type have not been included.";
        assert_eq!(
            diagnostics(&withheld("Condition", &["problem-list-item"])),
            [format!("59204 Client not authorized for Condition - Outside Record Problems{tail}")]
        );
        assert_eq!(
            diagnostics(&withheld("Condition", &["health-concern"])),
            [
                format!("59204 Client not authorized for Condition - Outside Record Problems{tail}"),
                format!("59204 Client not authorized for Condition - Outside Record Health Concern{tail}"),
            ]
        );
        assert_eq!(
            diagnostics(&withheld("Procedure", &[])),
            [
                format!("59205 User not authorized for Procedure - External Radiotherapy Summary{tail}"),
                format!("59204 Client not authorized for Procedure - Outside Record{tail}"),
            ]
        );
        assert_eq!(
            diagnostics(&withheld("Observation", &["vital-signs", "LDA-property"])),
            [
                format!("59204 Client not authorized for Observation - Outside Record Vital Signs{tail}"),
                format!("59204 Client not authorized for Observation - Outside Record LDA Property{tail}"),
            ]
        );
        assert_eq!(withheld("Condition", &[]).len(), 3, "no category: every Condition category");
        assert!(withheld("DocumentReference", &[]).is_empty());
        assert!(withheld("CarePlan", &["38717003"]).is_empty());
    }
}
