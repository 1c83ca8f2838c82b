//! Patients: demographics, Epic identifiers (OIDs) and Epic extensions.
//!
//! Every patient carries the identifier set the sandbox returns (`epic-facts.md` §3.5), in its
//! order: `CEID`, `EPIC`, `EXTERNAL`, `FHIR`, `FHIR STU3`, `INTERNAL` (the EXTERNAL value
//! left-padded with spaces to 10 characters), `EPI` (the MRN, system
//! `urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14`), `MYCHARTLOGIN` (only for patients with a
//! MyChart login), `WPRINTERNAL`, and an SSN (system `urn:oid:2.16.840.1.113883.4.1`, no type;
//! always in the never-issued 9xx area). No identifier is typed `MRN`. Every generated value
//! encodes the patient index, so `Patient?identifier=` resolves any of them without a scan.

use fhirsync_core::FhirVersion;
use serde_json::{Value, json};

use super::{Generator, date_before};
use crate::fhir::catalog::Dataset;

/// `EPIC` identifier system of the sandbox.
pub(crate) const OID_EPIC_ID: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.0";
/// MRN identifier system (`EPI` type) of the sandbox.
pub(crate) const OID_MRN: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.14";
/// `CEID` identifier system.
pub(crate) const OID_CEID: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.3.688884.100";
/// `EXTERNAL` and `INTERNAL` identifier system.
pub(crate) const OID_EXTERNAL: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.2.698084";
/// `MYCHARTLOGIN` identifier system.
pub(crate) const OID_MYCHART: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.3.878082.110";
/// `WPRINTERNAL` identifier system.
pub(crate) const OID_WPR: &str = "urn:oid:1.2.840.114350.1.13.0.1.7.2.878082";
/// US Social Security Number system.
pub(crate) const OID_SSN: &str = "urn:oid:2.16.840.1.113883.4.1";
/// `FHIR` (DSTU2 id) identifier system.
pub(crate) const SYS_FHIR_DSTU2: &str = "http://open.epic.com/FHIR/StructureDefinition/patient-dstu2-fhir-id";
/// `FHIR STU3` identifier system.
pub(crate) const SYS_FHIR: &str = "http://open.epic.com/FHIR/StructureDefinition/patient-fhir-id";
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
    /// MyChart login (`MYCHARTLOGIN` identifier), when the patient has one.
    pub mychart: Option<&'static str>,
    /// `EPIC` identifier value.
    pub epic: &'static str,
    /// `EXTERNAL` identifier value (`INTERNAL` is the same, left-padded with spaces).
    pub external: &'static str,
    /// `WPRINTERNAL` identifier value.
    pub wpr: &'static str,
    /// Item counts that differ from the generator's draw (first-page counts seen in the sandbox).
    pub counts: &'static [(Dataset, usize)],
}

/// Epic's published sandbox patients (fhir.epic.com test patients), used as patients `0..10`,
/// with the ids and MRNs of `epic-facts.md` §8 (Jason Argonaut: EPI 203675, as the sandbox read
/// shows). Birth dates of Elijah Davis, Olivia Roberts and Theodore Mychart are not published;
/// the dates here are placeholders, and so are the MRNs of Jessica Argonaut (203717) and Theodore
/// Mychart (203718), which the table does not give. Jason's EPIC/EXTERNAL/WPRINTERNAL values and
/// MyChart login are the ones the sandbox returned; the other patients' are made up in the same
/// shape. MyChart logins: the three the test-patient page lists, plus Jason's.
pub(crate) const SANDBOX: &[SandboxPatient] = &[
    SandboxPatient {
        id: "erXuFYUfucBZaryVksYEcMg3",
        family: "Lopez",
        given: &["Camila", "Maria"],
        gender: "female",
        birth_date: "1987-09-12",
        mrn: "203713",
        mychart: Some("FHIRCAMILA"),
        epic: "E4004",
        external: "Z6129",
        wpr: "701",
        counts: &[(Dataset::Vitals, 245), (Dataset::Documents, 70)],
    },
    SandboxPatient {
        id: "eq081-VQEgP8drUUqCWzHfw3",
        family: "Lin",
        given: &["Derrick"],
        gender: "male",
        birth_date: "1973-06-03",
        mrn: "203711",
        mychart: Some("FHIRDERRICK"),
        epic: "E4002",
        external: "Z6127",
        wpr: "702",
        counts: &[
            (Dataset::Vitals, 1210),
            (Dataset::SocialHistory, 3),
            (Dataset::CarePlansLongitudinal, 1),
            (Dataset::CarePlansEncounter, 2),
            (Dataset::CarePlansAssessPlan, 1),
        ],
    },
    SandboxPatient {
        id: "eAB3mDIBBcyUKviyzrxsnAw3",
        family: "Powell",
        given: &["Desiree", "Caroline"],
        gender: "female",
        birth_date: "2014-11-14",
        mrn: "203714",
        mychart: Some("FHIRDESIREE"),
        epic: "E4005",
        external: "Z6130",
        wpr: "703",
        counts: &[(Dataset::Immunizations, 7), (Dataset::Vitals, 388)],
    },
    SandboxPatient {
        id: "egqBHVfQlt4Bw3XGXoxVxHg3",
        family: "Davis",
        given: &["Elijah"],
        gender: "male",
        birth_date: "1993-01-14",
        mrn: "203709",
        mychart: None,
        epic: "E4006",
        external: "Z6131",
        wpr: "704",
        counts: &[(Dataset::Allergies, 3)],
    },
    SandboxPatient {
        id: "eIXesllypH3M9tAA5WdJftQ3",
        family: "Ross",
        given: &["Linda", "Jane"],
        gender: "female",
        birth_date: "1969-04-27",
        mrn: "203712",
        mychart: None,
        epic: "E4007",
        external: "Z6132",
        wpr: "705",
        counts: &[],
    },
    SandboxPatient {
        id: "eh2xYHuzl9nkSFVvV3osUHg3",
        family: "Roberts",
        given: &["Olivia"],
        gender: "female",
        birth_date: "1990-02-20",
        mrn: "203715",
        mychart: None,
        epic: "E4008",
        external: "Z6133",
        wpr: "706",
        counts: &[],
    },
    SandboxPatient {
        id: "e0w0LEDCYtfckT6N.CkJKCw3",
        family: "McGinnis",
        given: &["Warren", "James"],
        gender: "male",
        birth_date: "1952-05-24",
        mrn: "203710",
        mychart: None,
        epic: "E4009",
        external: "Z6134",
        wpr: "707",
        counts: &[(Dataset::Allergies, 2)],
    },
    SandboxPatient {
        id: "eD.LxhDyX35TntF77l7etUA3",
        family: "Argonaut",
        given: &["Jason"],
        gender: "male",
        birth_date: "1985-08-01",
        mrn: "203675",
        mychart: Some("FHIRJASON"),
        epic: "E3967",
        external: "Z6091",
        wpr: "733",
        counts: &[(Dataset::Problems, 7), (Dataset::Medications, 9)],
    },
    SandboxPatient {
        id: "evYS76EX6LLeCX2PlRLhvwg3",
        family: "Argonaut",
        given: &["Jessica"],
        gender: "female",
        birth_date: "1985-08-01",
        mrn: "203717",
        mychart: None,
        epic: "E3968",
        external: "Z6092",
        wpr: "734",
        counts: &[],
    },
    SandboxPatient {
        id: "e63wRTbPfr1p8UW81d8Seiw3",
        family: "Mychart",
        given: &["Theodore"],
        gender: "male",
        birth_date: "1948-07-07",
        mrn: "203718",
        mychart: None,
        epic: "E4010",
        external: "Z6135",
        wpr: "708",
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
/// `EPIC` value of generated patient `i` is `E{EPIC_BASE + i}`.
const EPIC_BASE: usize = 100_000;
/// `EXTERNAL` value of generated patient `i` is `Z{EXTERNAL_BASE + i}`.
const EXTERNAL_BASE: usize = 100_000;
/// `WPRINTERNAL` value of generated patient `i` is `WPR_BASE + i`.
const WPR_BASE: usize = 1_000_000;
/// Base of created patients' `EPIC` and `EXTERNAL` values (beyond any generated one).
const CREATED_BASE: u32 = 9_000_000;
/// SSNs are `9` followed by the 8 digits of `(i * SSN_FACTOR + seed) mod 10^8`.
const SSN_FACTOR: u64 = 7919;
const SSN_SPACE: u64 = 100_000_000;
/// CEIDs are `FHR` followed by 12 base-36 digits of `(i * CEID_FACTOR + seed) mod 36^12`.
const CEID_FACTOR: u64 = 2_147_483_647;
const CEID_SPACE: u64 = 4_738_381_338_321_616_896; // 36^12
const BASE36: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// One patient identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ident {
    /// `type.text` (`None` for the SSN).
    pub type_text: Option<&'static str>,
    /// System.
    pub system: &'static str,
    /// Value.
    pub value: String,
}

impl Ident {
    fn new(type_text: Option<&'static str>, system: &'static str, value: impl Into<String>) -> Ident {
        Ident { type_text, system, value: value.into() }
    }

    /// The FHIR `Identifier`.
    pub(crate) fn to_json(&self) -> Value {
        let mut v = json!({"use": "usual", "system": self.system, "value": self.value});
        if let Some(t) = self.type_text {
            v["type"] = if t == "EXTERNAL" {
                json!({"coding": [{"system": "http://hl7.org/fhir/us/carin-bb/CodeSystem/C4BBIdentifierType", "code": "um"}], "text": t})
            } else {
                json!({"text": t})
            };
        }
        v
    }

    /// True when this identifier answers `identifier=[system|]value` (values compare trimmed).
    pub(crate) fn matches(&self, system: Option<&str>, value: &str) -> bool {
        system.is_none_or(|s| s == self.system) && self.value.trim() == value.trim()
    }
}

/// `(a * x) mod m`'s inverse factor: `x` with `a * x ≡ 1 (mod m)` (`a` coprime with `m`).
fn mod_inverse(a: u64, m: u64) -> u64 {
    let (mut t, mut new_t) = (0i128, 1i128);
    let (mut r, mut new_r) = (i128::from(m), i128::from(a % m));
    while new_r != 0 {
        let q = r / new_r;
        (t, new_t) = (new_t, t - q * new_t);
        (r, new_r) = (new_r, r - q * new_r);
    }
    t.rem_euclid(i128::from(m)) as u64
}

fn ssn(seed: u64, i: usize) -> String {
    let n =
        ((i as u128 * u128::from(SSN_FACTOR) + u128::from(seed % SSN_SPACE)) % u128::from(SSN_SPACE)) as u64;
    let d = format!("{n:08}");
    format!("9{}-{}-{}", &d[..2], &d[2..4], &d[4..])
}

fn ssn_index(seed: u64, value: &str) -> Option<usize> {
    let digits: String = value.chars().filter(char::is_ascii_digit).collect();
    let n: u64 = digits.strip_prefix('9')?.parse().ok()?;
    if digits.len() != 9 {
        return None;
    }
    let shifted =
        (u128::from(n) + u128::from(SSN_SPACE) - u128::from(seed % SSN_SPACE)) % u128::from(SSN_SPACE);
    Some(((shifted * u128::from(mod_inverse(SSN_FACTOR, SSN_SPACE))) % u128::from(SSN_SPACE)) as usize)
}

fn ceid(seed: u64, n: u64) -> String {
    let mut v = ((u128::from(n) * u128::from(CEID_FACTOR) + u128::from(seed % CEID_SPACE))
        % u128::from(CEID_SPACE)) as u64;
    let mut digits = [b'0'; 12];
    for d in digits.iter_mut().rev() {
        *d = BASE36[(v % 36) as usize];
        v /= 36;
    }
    format!("FHR{}", String::from_utf8_lossy(&digits))
}

fn ceid_index(seed: u64, value: &str) -> Option<usize> {
    let body = value.strip_prefix("FHR")?;
    if body.len() != 12 {
        return None;
    }
    let mut v: u128 = 0;
    for c in body.bytes() {
        v = v * 36 + BASE36.iter().position(|&b| b == c.to_ascii_uppercase())? as u128;
    }
    let space = u128::from(CEID_SPACE);
    let shifted = (v + space - u128::from(seed % CEID_SPACE)) % space;
    Some(((shifted * u128::from(mod_inverse(CEID_FACTOR, CEID_SPACE))) % space) as usize)
}

fn padded(external: &str) -> String {
    format!("{external:>10}")
}

/// The Epic identifiers of patient `i`, in the sandbox's order.
pub(super) fn identifiers(g: &Generator, i: usize) -> Vec<Ident> {
    let id = g.patient_id(i);
    let d = demographics(g, i);
    let (epic, external, wpr, mychart) = match g.sandbox(i) {
        Some(p) => {
            (p.epic.to_string(), p.external.to_string(), p.wpr.to_string(), p.mychart.map(str::to_string))
        }
        None => {
            let mut r = g.rng(&[i as u64, 0x3C4A]);
            let login = r.chance(40).then(|| format!("{}{i}", d.given[0].to_uppercase()));
            (
                format!("E{}", EPIC_BASE + i),
                format!("Z{}", EXTERNAL_BASE + i),
                format!("{}", WPR_BASE + i),
                login,
            )
        }
    };
    let mut out = vec![
        Ident::new(Some("CEID"), OID_CEID, ceid(g.seed, i as u64)),
        Ident::new(Some("EPIC"), OID_EPIC_ID, epic),
        Ident::new(Some("EXTERNAL"), OID_EXTERNAL, external.clone()),
        Ident::new(Some("FHIR"), SYS_FHIR_DSTU2, id.clone()),
        Ident::new(Some("FHIR STU3"), SYS_FHIR, id),
        Ident::new(Some("INTERNAL"), OID_EXTERNAL, padded(&external)),
        Ident::new(Some("EPI"), OID_MRN, d.mrn),
    ];
    if let Some(login) = mychart {
        out.push(Ident::new(Some("MYCHARTLOGIN"), OID_MYCHART, login));
    }
    out.push(Ident::new(Some("WPRINTERNAL"), OID_WPR, wpr));
    out.push(Ident::new(None, OID_SSN, ssn(g.seed, i)));
    out
}

/// The identifiers Epic gives a Patient created through `POST` (`n` = creation counter): the
/// sandbox's read-back carried CEID, EPIC, EXTERNAL, FHIR, FHIR STU3 and INTERNAL, and none of
/// the client's identifiers (no MRN, no SSN).
pub(crate) fn created_identifiers(seed: u64, n: u32, id: &str) -> Vec<Value> {
    let external = format!("Z{}", CREATED_BASE + n);
    [
        Ident::new(Some("CEID"), OID_CEID, ceid(seed ^ 0xC4EA, u64::from(n))),
        Ident::new(Some("EPIC"), OID_EPIC_ID, format!("E{}", CREATED_BASE + n)),
        Ident::new(Some("EXTERNAL"), OID_EXTERNAL, external.clone()),
        Ident::new(Some("FHIR"), SYS_FHIR_DSTU2, id),
        Ident::new(Some("FHIR STU3"), SYS_FHIR, id),
        Ident::new(Some("INTERNAL"), OID_EXTERNAL, padded(&external)),
    ]
    .iter()
    .map(Ident::to_json)
    .collect()
}

/// Patients whose identifier matches `[system|]value` (any system when `system` is `None`).
pub(super) fn by_identifier(g: &Generator, system: Option<&str>, value: &str) -> Vec<usize> {
    let v = value.trim();
    let number = |prefix: &str, base: usize| -> Option<usize> {
        v.strip_prefix(prefix)?.parse::<usize>().ok()?.checked_sub(base)
    };
    let mut candidates: Vec<usize> = Vec::new();
    if let Some(super::Record::Patient(i)) = g.decode(v) {
        candidates.push(i);
    }
    candidates.extend(number("", MRN_BASE));
    candidates.extend(number("E", EPIC_BASE));
    candidates.extend(number("Z", EXTERNAL_BASE));
    candidates.extend(number("", WPR_BASE));
    candidates.extend(ssn_index(g.seed, v));
    candidates.extend(ceid_index(g.seed, v));
    let digits = v.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    if digits.len() < v.len() {
        candidates.extend(digits.parse::<usize>().ok());
    }
    if g.sandbox_identities {
        candidates.extend(0..SANDBOX.len());
    }
    candidates.sort_unstable();
    candidates.dedup();
    candidates
        .into_iter()
        .filter(|&i| i < g.patients())
        .filter(|&i| identifiers(g, i).iter().any(|id| id.matches(system, v)))
        .collect()
}

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
        "identifier": identifiers(g, i).iter().map(Ident::to_json).collect::<Vec<Value>>(),
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
