//! Code tables of the synthetic data (LOINC, SNOMED CT, ICD-10-CM, RxNorm, CVX).

/// A vital sign or lab: LOINC code, display, unit, low, high, decimals.
pub(super) type Measure = (&'static str, &'static str, &'static str, f64, f64, i32);

pub(super) const VITALS: &[Measure] = &[
    ("8867-4", "Heart rate", "/min", 52.0, 110.0, 0),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 95.0, 165.0, 0),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]", 55.0, 100.0, 0),
    ("8310-5", "Body temperature", "Cel", 36.1, 38.4, 1),
    ("9279-1", "Respiratory rate", "/min", 10.0, 24.0, 0),
    ("29463-7", "Body weight", "kg", 45.0, 130.0, 1),
    ("8302-2", "Body height", "cm", 150.0, 195.0, 1),
    ("2708-6", "Oxygen saturation in Arterial blood", "%", 90.0, 100.0, 0),
];

pub(super) const LABS: &[Measure] = &[
    ("2345-7", "Glucose [Mass/volume] in Serum or Plasma", "mg/dL", 65.0, 210.0, 0),
    ("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL", 0.5, 1.8, 2),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 10.0, 17.5, 1),
    ("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL", 3.5, 12.0, 1),
    ("2951-2", "Sodium [Moles/volume] in Serum or Plasma", "mmol/L", 131.0, 148.0, 0),
    ("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L", 3.2, 5.4, 1),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.6, 10.5, 1),
    ("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma", "mg/dL", 120.0, 290.0, 0),
];

/// Social history: LOINC code, display, SNOMED answer code, answer display.
pub(super) const SOCIAL: &[(&str, &str, &str, &str)] = &[
    ("72166-2", "Tobacco smoking status", "8517006", "Former smoker"),
    ("72166-2", "Tobacco smoking status", "266919005", "Never smoker"),
    ("11331-6", "History of Alcohol use", "228274009", "Drinks alcohol"),
    ("76689-9", "Sex assigned at birth", "248152002", "Female"),
];

/// Conditions: ICD-10-CM, SNOMED CT, text.
pub(super) const CONDITIONS: &[(&str, &str, &str)] = &[
    ("I10", "38341003", "Hypertension"),
    ("E11.9", "44054006", "Type 2 diabetes mellitus"),
    ("J45.909", "195967001", "Asthma"),
    ("E78.5", "55822004", "Hyperlipidemia"),
    ("M54.50", "279039007", "Low back pain"),
    ("F41.1", "21897009", "Generalized anxiety disorder"),
    ("K21.9", "235595009", "Gastroesophageal reflux disease"),
    ("N39.0", "68566005", "Urinary tract infection"),
    ("Z72.0", "77176002", "Tobacco use"),
    ("E66.9", "414916001", "Obesity"),
];

/// Medications: RxNorm, text.
pub(super) const MEDICATIONS: &[(&str, &str)] = &[
    ("197361", "amLODIPine 5 MG tablet"),
    ("860975", "metFORMIN 500 MG tablet"),
    ("617314", "atorvastatin 10 MG tablet"),
    ("313782", "acetaminophen 325 MG tablet"),
    ("745679", "albuterol 90 MCG/ACTUATION inhaler"),
    ("310965", "ibuprofen 200 MG tablet"),
    ("314077", "lisinopril 20 MG tablet"),
];

/// Allergies: SNOMED CT substance, text, category.
pub(super) const ALLERGIES: &[(&str, &str, &str)] = &[
    ("764146007", "Penicillin", "medication"),
    ("256349002", "Peanut", "food"),
    ("111088007", "Latex", "environment"),
    ("387406002", "Sulfonamide", "medication"),
    ("227493005", "Cashew nut", "food"),
];

/// Procedures: SNOMED CT, text.
pub(super) const PROCEDURES: &[(&str, &str)] = &[
    ("80146002", "Appendectomy"),
    ("73761001", "Colonoscopy"),
    ("399208008", "Chest X-ray"),
    ("173422009", "Tonsillectomy"),
    ("85548006", "Prostatectomy"),
    ("46706006", "Replacement of cardiac pacemaker"),
];

/// Immunizations: CVX, text.
pub(super) const VACCINES: &[(&str, &str)] = &[
    ("140", "Influenza, seasonal, injectable, preservative free"),
    ("208", "COVID-19 vaccine, mRNA, Pfizer"),
    ("115", "Tdap"),
    ("33", "Pneumococcal polysaccharide PPV23"),
    ("08", "Hepatitis B, adolescent or pediatric"),
];

/// Diagnostic reports: LOINC, text.
pub(super) const REPORTS: &[(&str, &str)] = &[
    ("58410-2", "CBC panel - Blood by Automated count"),
    ("24323-8", "Comprehensive metabolic 2000 panel"),
    ("57698-3", "Lipid panel with direct LDL"),
    ("24357-6", "Urinalysis macro (dipstick) panel"),
];

/// Document types: LOINC, text.
pub(super) const DOCUMENTS: &[(&str, &str)] = &[
    ("11506-3", "Progress Note"),
    ("18842-5", "Discharge Summary"),
    ("34117-2", "History & Physical"),
    ("11488-4", "Consult Note"),
];

/// Encounter classes: v3 ActCode, display, type text.
pub(super) const ENCOUNTER_CLASSES: &[(&str, &str, &str)] = &[
    ("AMB", "ambulatory", "Office Visit"),
    ("AMB", "ambulatory", "Telemedicine"),
    ("IMP", "inpatient encounter", "Hospital Encounter"),
    ("EMER", "emergency", "Emergency Department"),
];
