//! Patients: demographics, Epic identifiers (OIDs) and Epic extensions.

use fhirsync_core::FhirVersion;
use serde_json::{Value, json};

use super::{Generator, date_before};
use crate::fhir::catalog::Dataset;

/// Epic's FHIR-id identifier system of the sandbox ("EPIC" type).
const OID_EPIC_ID: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0";
/// MRN identifier system ("EPI" type) of the sandbox.
const OID_MRN: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14";
/// CEID identifier system.
const OID_CEID: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.3.688884.100";
/// External identifier system.
const OID_EXTERNAL: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.2.698084";
/// Code system of Epic's sex values.
const OID_SEX: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.10.698084.130.657370.19999000";

/// A published Epic sandbox test patient.
#[derive(Debug)]
pub(crate) struct SandboxPatient {
    pub id: &'static str,
    pub family: &'static str,
    pub given: &'static [&'static str],
    pub gender: &'static str,
    pub birth_date: &'static str,
    pub mrn: &'static str,
    /// Item counts that differ from the generator's draw (first-page counts seen in the sandbox).
    pub counts: &'static [(Dataset, usize)],
}

/// Epic's published sandbox patients (fhir.epic.com test patients), used as patients `0..10`.
/// Birth dates of Elijah Davis, Olivia Roberts and Theodore Mychart are not published; the dates
/// here are placeholders.
pub(crate) const SANDBOX: &[SandboxPatient] = &[
    SandboxPatient {
        id: "erXuFYUfucBZaryVksYEcMg3",
        family: "Lopez",
        given: &["Camila", "Maria"],
        gender: "female",
        birth_date: "1987-09-12",
        mrn: "203713",
        counts: &[(Dataset::Vitals, 245), (Dataset::Documents, 70)],
    },
    SandboxPatient {
        id: "eq081-VQEgP8drUUqCWzHfw3",
        family: "Lin",
        given: &["Derrick"],
        gender: "male",
        birth_date: "1973-06-03",
        mrn: "203711",
        counts: &[(Dataset::Vitals, 1210), (Dataset::SocialHistory, 3)],
    },
    SandboxPatient {
        id: "eAB3mDIBBcyUKviyzrxsnAw3",
        family: "Powell",
        given: &["Desiree", "Caroline"],
        gender: "female",
        birth_date: "2014-11-14",
        mrn: "203714",
        counts: &[(Dataset::Immunizations, 7), (Dataset::Vitals, 388)],
    },
    SandboxPatient {
        id: "egqBHVfQlt4Bw3XGXoxVxHg3",
        family: "Davis",
        given: &["Elijah"],
        gender: "male",
        birth_date: "1993-01-14",
        mrn: "203709",
        counts: &[(Dataset::Allergies, 3)],
    },
    SandboxPatient {
        id: "eIXesllypH3M9tAA5WdJftQ3",
        family: "Ross",
        given: &["Linda", "Jane"],
        gender: "female",
        birth_date: "1969-04-27",
        mrn: "203712",
        counts: &[],
    },
    SandboxPatient {
        id: "eh2xYHuzl9nkSFVvV3osUHg3",
        family: "Roberts",
        given: &["Olivia"],
        gender: "female",
        birth_date: "1990-02-20",
        mrn: "203715",
        counts: &[],
    },
    SandboxPatient {
        id: "e0w0LEDCYtfckT6N.CkJKCw3",
        family: "McGinnis",
        given: &["Warren", "James"],
        gender: "male",
        birth_date: "1952-05-24",
        mrn: "203710",
        counts: &[(Dataset::Allergies, 2)],
    },
    SandboxPatient {
        id: "eD.LxhDyX35TntF77l7etUA3",
        family: "Argonaut",
        given: &["Jason"],
        gender: "male",
        birth_date: "1985-08-01",
        mrn: "203716",
        counts: &[(Dataset::Problems, 7), (Dataset::Medications, 9)],
    },
    SandboxPatient {
        id: "evYS76EX6LLeCX2PlRLhvwg3",
        family: "Argonaut",
        given: &["Jessica"],
        gender: "female",
        birth_date: "1985-08-01",
        mrn: "203717",
        counts: &[],
    },
    SandboxPatient {
        id: "e63wRTbPfr1p8UW81d8Seiw3",
        family: "Mychart",
        given: &["Theodore"],
        gender: "male",
        birth_date: "1948-07-07",
        mrn: "203718",
        counts: &[(Dataset::SocialHistory, 4)],
    },
];

const FAMILY: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
];
const GIVEN_F: &[&str] = &[
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Elizabeth",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Lisa",
    "Nancy",
    "Betty",
    "Sandra",
    "Margaret",
    "Ashley",
    "Emily",
    "Olivia",
    "Sophia",
    "Ava",
];
const GIVEN_M: &[&str] = &[
    "James",
    "Robert",
    "John",
    "Michael",
    "David",
    "William",
    "Richard",
    "Joseph",
    "Thomas",
    "Charles",
    "Christopher",
    "Daniel",
    "Matthew",
    "Anthony",
    "Mark",
    "Steven",
    "Paul",
    "Andrew",
    "Joshua",
    "Kevin",
];
const CITIES: &[(&str, &str, &str)] = &[
    ("MADISON", "WI", "53703"),
    ("VERONA", "WI", "53593"),
    ("GARLAND", "TX", "75043"),
    ("SPRINGFIELD", "IL", "62701"),
    ("COLUMBUS", "OH", "43004"),
    ("PORTLAND", "OR", "97201"),
];
const STREETS: &[&str] = &["Main St", "Oak Ave", "Johnson St", "Elm Dr", "Park Rd", "Mineral Point Rd"];

/// MRN of generated patient `i` is `MRN_BASE + i`.
pub(crate) const MRN_BASE: usize = 300_000;

/// What Patient searches match on.
#[derive(Debug, Clone)]
pub(crate) struct Demographics {
    pub family: &'static str,
    pub given: Vec<&'static str>,
    pub gender: &'static str,
    pub birth_date: String,
    pub mrn: String,
}

impl Demographics {
    /// "Family, Given Middle", as Epic's reference displays.
    pub(crate) fn display(&self) -> String {
        format!("{}, {}", self.family, self.given.join(" "))
    }
}

pub(super) fn demographics(g: &Generator, i: usize) -> Demographics {
    if let Some(p) = g.sandbox(i) {
        return Demographics {
            family: p.family,
            given: p.given.to_vec(),
            gender: p.gender,
            birth_date: p.birth_date.to_string(),
            mrn: p.mrn.to_string(),
        };
    }
    let mut r = g.rng(&[i as u64, 0xDE40]);
    let female = r.chance(51);
    let pool = if female { GIVEN_F } else { GIVEN_M };
    let mut given = vec![*r.pick(pool)];
    if r.chance(50) {
        given.push(*r.pick(pool));
    }
    Demographics {
        family: FAMILY[r.below(FAMILY.len() as u64) as usize],
        given,
        gender: if female { "female" } else { "male" },
        birth_date: date_before(r.range(365, 95 * 365)),
        mrn: format!("{}", MRN_BASE + i),
    }
}

fn sex_extension(url: &str, gender: &str) -> Value {
    json!({
        "valueCodeableConcept": {"coding": [{"system": OID_SEX, "code": gender, "display": gender}]},
        "url": url,
    })
}

pub(super) fn resource(g: &Generator, i: usize, version: FhirVersion) -> Value {
    let d = demographics(g, i);
    let id = g.patient_id(i);
    let mut r = g.rng(&[i as u64, 0xAD0]);
    let (city, state, zip) = *r.pick(CITIES);
    let street = format!("{} {}", r.range(100, 9999), r.pick(STREETS));
    let full = format!("{} {}", d.given.join(" "), d.family);
    let race = *r.pick(&[
        ("2106-3", "White"),
        ("2054-5", "Black or African American"),
        ("2028-9", "Asian"),
        ("2131-1", "Other Race"),
    ]);
    let pronouns = if d.gender == "female" {
        ("LA29519-8", "she/her/her/hers/herself")
    } else {
        ("LA29518-0", "he/him/his/his/himself")
    };
    let mut patient = json!({
        "resourceType": "Patient",
        "id": id,
        "extension": [
            sex_extension("http://open.epic.com/FHIR/StructureDefinition/extension/legal-sex", d.gender),
            sex_extension("http://open.epic.com/FHIR/StructureDefinition/extension/sex-for-clinical-use", d.gender),
            {
                "extension": [
                    {"valueCoding": {"system": "urn:oid:2.16.840.1.113883.6.238", "code": race.0, "display": race.1}, "url": "ombCategory"},
                    {"valueString": race.1, "url": "text"},
                ],
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
            },
            {
                "extension": [{"valueString": "Unknown", "url": "text"}],
                "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity",
            },
            {
                "valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": pronouns.0, "display": pronouns.1}]},
                "url": "http://open.epic.com/FHIR/StructureDefinition/extension/calculated-pronouns-to-use-for-text",
            },
        ],
        "identifier": [
            {"use": "usual", "type": {"text": "EPIC"}, "system": OID_EPIC_ID, "value": format!("E{}", 4000 + i)},
            {"use": "usual", "type": {"text": "EPI"}, "system": OID_MRN, "value": d.mrn},
            {"use": "usual", "type": {"text": "FHIR STU3"}, "system": "http://open.epic.com/FHIR/StructureDefinition/patient-fhir-id", "value": id},
            {"use": "usual", "type": {"text": "CEID"}, "system": OID_CEID, "value": format!("FHR{:07}", r.below(10_000_000))},
            {"use": "usual", "type": {"text": "EXTERNAL"}, "system": OID_EXTERNAL, "value": format!("Z{}", 6000 + i)},
        ],
        "active": true,
        "name": [
            {"use": "official", "text": full, "family": d.family, "given": d.given},
            {"use": "usual", "text": full, "family": d.family, "given": d.given},
        ],
        "telecom": [
            {"system": "phone", "value": format!("608-555-{:04}", r.below(10_000)), "use": "home"},
            {"system": "email", "value": format!("{}.{}{}@example.org", d.given[0].to_lowercase(), d.family.to_lowercase(), i), "rank": 1},
        ],
        "gender": d.gender,
        "birthDate": d.birth_date,
        "deceasedBoolean": false,
        "address": [{"use": "home", "line": [street], "city": city, "state": state, "postalCode": zip, "country": "US"}],
        "maritalStatus": {"text": *r.pick(&["Single", "Married", "Divorced", "Widowed"])},
        "communication": [{
            "language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "en", "display": "English"}], "text": "English"},
            "preferred": true,
        }],
        "generalPractitioner": [{
            "reference": "Practitioner/eM5CWtq15N0WJeuCet5bJlQ3",
            "type": "Practitioner",
            "display": "Physician Family Medicine, MD",
        }],
        "managingOrganization": {"reference": "Organization/enRyWnSP963FYDpoks4NHOA3", "display": "Epic Hospital System"},
    });
    if version == FhirVersion::Dstu2
        && let Some(obj) = patient.as_object_mut()
    {
        obj.remove("generalPractitioner");
        obj.insert(
            "careProvider".into(),
            json!([{"reference": "Practitioner/eM5CWtq15N0WJeuCet5bJlQ3", "display": "Physician Family Medicine, MD"}]),
        );
    }
    patient
}
