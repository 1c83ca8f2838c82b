//! What each FHIR version serves: resource types, which searches need a patient, which types
//! accept `create`, and the synthetic datasets (type + category) behind them.
//!
//! Type lists follow Epic's sandbox CapabilityStatements (R4 59 types, STU3 35, DSTU2 17). A type
//! that is in the list but has no synthetic data answers searches with an outcome-only bundle; a
//! type outside the list gets IIS's HTML 404, as at Epic.
//!
//! Datasets: Observation (laboratory, vital-signs, social-history), Condition (problem-list-item,
//! encounter-diagnosis, health-concern), Encounter, MedicationRequest (the same orders are
//! DSTU2's MedicationOrder: same ids, same data), AllergyIntolerance, Procedure, Immunization,
//! DiagnosticReport, DocumentReference, R4 CarePlan (categories 38717003, 734163000,
//! assess-plan) and R4 CareTeam (data only in the generic SMART profile). RelatedPerson is an
//! `_id`-only type, as its R4 statement declares.

use fhirsync_core::FhirVersion;

/// R4 resource types in Epic's sandbox CapabilityStatement.
const R4_TYPES: &[&str] = &[
    "Account",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "Binary",
    "BodyStructure",
    "CarePlan",
    "CareTeam",
    "Claim",
    "Communication",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "Device",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "Endpoint",
    "EpisodeOfCare",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "Group",
    "ImagingStudy",
    "Immunization",
    "ImmunizationRecommendation",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationRequest",
    "NutritionOrder",
    "Observation",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchStudy",
    "ResearchSubject",
    "ServiceRequest",
    "Specimen",
    "Substance",
    "Task",
    "ValueSet",
];

/// STU3 resource types served by the simulator (Epic's STU3 statement subset).
const STU3_TYPES: &[&str] = &[
    "AllergyIntolerance",
    "Appointment",
    "Binary",
    "CarePlan",
    "CareTeam",
    "Condition",
    "Consent",
    "Coverage",
    "Device",
    "DiagnosticReport",
    "DocumentReference",
    "Encounter",
    "Endpoint",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "Immunization",
    "List",
    "Location",
    "Medication",
    "MedicationRequest",
    "MedicationStatement",
    "Observation",
    "Organization",
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "ProcedureRequest",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "Schedule",
    "Slot",
    "Specimen",
];

/// DSTU2 resource types in Epic's sandbox Conformance.
const DSTU2_TYPES: &[&str] = &[
    "AllergyIntolerance",
    "Binary",
    "CarePlan",
    "Condition",
    "Device",
    "DiagnosticReport",
    "DocumentReference",
    "FamilyMemberHistory",
    "Goal",
    "Immunization",
    "Medication",
    "MedicationOrder",
    "MedicationStatement",
    "Observation",
    "Patient",
    "Practitioner",
    "Procedure",
];

/// Types whose search is answerable only with `_id` (no patient needed, none allowed).
const ID_ONLY_TYPES: &[&str] = &[
    "Account",
    "Binary",
    "Claim",
    "ConceptMap",
    "Contract",
    "Endpoint",
    "Group",
    "Measure",
    "Media",
    "Medication",
    "Organization",
    "Provenance",
    "Questionnaire",
    "RequestGroup",
    "Specimen",
    "Substance",
    "ValueSet",
    "Location",
    "Practitioner",
    "PractitionerRole",
    "ResearchStudy",
    "Schedule",
    "Slot",
    // R4 statement (2026-05-11): only `_id` and `_count`, although older lists said patient.
    "RelatedPerson",
];

/// Types whose `create` Epic advertises, per version.
const R4_CREATE: &[&str] = &[
    "AllergyIntolerance",
    "BodyStructure",
    "Communication",
    "ConceptMap",
    "Condition",
    "DocumentReference",
    "Observation",
    "Patient",
    "Procedure",
    "QuestionnaireResponse",
    "ServiceRequest",
];
const STU3_CREATE: &[&str] =
    &["AllergyIntolerance", "Condition", "DocumentReference", "Goal", "Observation", "Patient"];

/// Resource types served by `version`.
pub(crate) fn types(version: FhirVersion) -> &'static [&'static str] {
    match version {
        FhirVersion::R4 => R4_TYPES,
        FhirVersion::Stu3 => STU3_TYPES,
        FhirVersion::Dstu2 => DSTU2_TYPES,
    }
}

/// True when `version` serves `ty`.
pub(crate) fn serves(version: FhirVersion, ty: &str) -> bool {
    types(version).contains(&ty)
}

/// True when a search of `ty` must name a patient (`patient` or `subject`).
pub(crate) fn patient_scoped(ty: &str) -> bool {
    ty != "Patient" && ty != "List" && !ID_ONLY_TYPES.contains(&ty)
}

/// True when `version` accepts `POST {base}/{ty}`.
pub(crate) fn creatable(version: FhirVersion, ty: &str) -> bool {
    match version {
        FhirVersion::R4 => R4_CREATE.contains(&ty),
        FhirVersion::Stu3 => STU3_CREATE.contains(&ty),
        FhirVersion::Dstu2 => false,
    }
}

/// Id tag of Patient records.
pub(crate) const TAG_PATIENT: u8 = 1;
/// Id tag of records created through `POST` or added by a test.
pub(crate) const TAG_CREATED: u8 = 0xC0;
/// Id tag of patient lists.
pub(crate) const TAG_LIST: u8 = 0xD0;

/// One synthetic dataset: a resource type, optionally narrowed to one category.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Dataset {
    /// Observation, category laboratory.
    Labs,
    /// Observation, category vital-signs.
    Vitals,
    /// Observation, category social-history.
    SocialHistory,
    /// Condition, category problem-list-item.
    Problems,
    /// Condition, category encounter-diagnosis.
    EncounterDiagnoses,
    /// Condition, category health-concern.
    HealthConcerns,
    /// Encounter.
    Encounters,
    /// MedicationRequest (MedicationOrder on DSTU2).
    Medications,
    /// AllergyIntolerance.
    Allergies,
    /// Procedure.
    Procedures,
    /// Immunization.
    Immunizations,
    /// DiagnosticReport.
    Reports,
    /// DocumentReference.
    Documents,
    /// CarePlan, category 38717003 (longitudinal care plan); R4 only.
    CarePlansLongitudinal,
    /// CarePlan, category 734163000 (encounter-level care plan); R4 only.
    CarePlansEncounter,
    /// CarePlan, category assess-plan (assessment and plan of treatment); R4 only.
    CarePlansAssessPlan,
    /// CareTeam; R4 only, data only in the generic SMART profile.
    CareTeams,
}

impl Dataset {
    /// Every dataset, in search order.
    pub(crate) const ALL: [Dataset; 17] = [
        Dataset::Labs,
        Dataset::Vitals,
        Dataset::SocialHistory,
        Dataset::Problems,
        Dataset::EncounterDiagnoses,
        Dataset::HealthConcerns,
        Dataset::Encounters,
        Dataset::Medications,
        Dataset::Allergies,
        Dataset::Procedures,
        Dataset::Immunizations,
        Dataset::Reports,
        Dataset::Documents,
        Dataset::CarePlansLongitudinal,
        Dataset::CarePlansEncounter,
        Dataset::CarePlansAssessPlan,
        Dataset::CareTeams,
    ];

    /// Id tag of the dataset's records.
    pub(crate) fn tag(self) -> u8 {
        2 + self as u8
    }

    /// Dataset of an id tag.
    pub(crate) fn from_tag(tag: u8) -> Option<Dataset> {
        Dataset::ALL.get(usize::from(tag.checked_sub(2)?)).copied()
    }

    /// The resource type in `version` (`None` when that version does not serve it).
    pub(crate) fn resource_type(self, version: FhirVersion) -> Option<&'static str> {
        let ty = match self {
            Dataset::Labs | Dataset::Vitals | Dataset::SocialHistory => "Observation",
            Dataset::Problems | Dataset::EncounterDiagnoses | Dataset::HealthConcerns => "Condition",
            Dataset::Encounters => "Encounter",
            Dataset::Medications if version == FhirVersion::Dstu2 => "MedicationOrder",
            Dataset::Medications => "MedicationRequest",
            Dataset::Allergies => "AllergyIntolerance",
            Dataset::Procedures => "Procedure",
            Dataset::Immunizations => "Immunization",
            Dataset::Reports => "DiagnosticReport",
            Dataset::Documents => "DocumentReference",
            Dataset::CarePlansLongitudinal | Dataset::CarePlansEncounter | Dataset::CarePlansAssessPlan
                if version == FhirVersion::R4 =>
            {
                "CarePlan"
            }
            Dataset::CareTeams if version == FhirVersion::R4 => "CareTeam",
            Dataset::CarePlansLongitudinal
            | Dataset::CarePlansEncounter
            | Dataset::CarePlansAssessPlan
            | Dataset::CareTeams => return None,
        };
        serves(version, ty).then_some(ty)
    }

    /// The category code, for categorised types.
    pub(crate) fn category(self) -> Option<&'static str> {
        match self {
            Dataset::Labs => Some("laboratory"),
            Dataset::Vitals => Some("vital-signs"),
            Dataset::SocialHistory => Some("social-history"),
            Dataset::Problems => Some("problem-list-item"),
            Dataset::EncounterDiagnoses => Some("encounter-diagnosis"),
            Dataset::HealthConcerns => Some("health-concern"),
            Dataset::CarePlansLongitudinal => Some("38717003"),
            Dataset::CarePlansEncounter => Some("734163000"),
            Dataset::CarePlansAssessPlan => Some("assess-plan"),
            _ => None,
        }
    }

    /// Licensing key (`Type` or `Type:category`) as in `ClientRegistration::unauthorized_datasets`.
    pub(crate) fn license_key(self, version: FhirVersion) -> Option<String> {
        let ty = self.resource_type(version)?;
        Some(match self.category() {
            Some(c) => format!("{ty}:{c}"),
            None => ty.to_string(),
        })
    }

    /// Datasets behind `ty` in `version`.
    pub(crate) fn of_type(version: FhirVersion, ty: &str) -> impl Iterator<Item = Dataset> + '_ {
        Dataset::ALL.into_iter().filter(move |d| d.resource_type(version) == Some(ty))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MedicationOrder exists only on DSTU2 and MedicationRequest only on STU3/R4.
    #[test]
    fn medication_type_depends_on_version() {
        assert_eq!(Dataset::Medications.resource_type(FhirVersion::Dstu2), Some("MedicationOrder"));
        assert_eq!(Dataset::Medications.resource_type(FhirVersion::R4), Some("MedicationRequest"));
        assert_eq!(Dataset::Encounters.resource_type(FhirVersion::Dstu2), None);
        assert_eq!(Dataset::CarePlansLongitudinal.resource_type(FhirVersion::R4), Some("CarePlan"));
        assert_eq!(Dataset::CarePlansLongitudinal.resource_type(FhirVersion::Stu3), None);
        for d in Dataset::ALL {
            assert_eq!(Dataset::from_tag(d.tag()), Some(d));
        }
    }
}
