//! Configuration of the FHIR side: synthetic data size, patient lists, groups, paging, Bulk.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default number of synthetic patients.
pub const DEFAULT_PATIENTS: usize = 50;
/// Default generator seed.
pub const DEFAULT_SEED: u64 = 42;
/// Epic's default and maximum `_count`.
pub const DEFAULT_PAGE_SIZE: usize = 1000;
/// Default lifetime of a paging session.
pub const DEFAULT_SESSION_TTL_SECS: u64 = 600;
/// Default patient list id (`systemlist|6442`, Qlik's example value).
pub const DEFAULT_LIST_ID: u32 = 6442;
/// Default Bulk Group id: the Epic sandbox Group.
pub const DEFAULT_GROUP_ID: &str = "e3iabhmS8rsueyz7vaimuiaSmfGvi.QwjVXJANlPOgR83";
/// Default number of status polls answered with 202 before a Bulk export is ready.
pub const DEFAULT_BULK_POLLS: u32 = 2;
/// Default `Retry-After` (seconds) on Bulk status polls.
pub const DEFAULT_BULK_RETRY_AFTER_SECS: u64 = 1;
/// Default Bulk kick-off window per Group and client (Epic: 24 h).
pub const DEFAULT_BULK_WINDOW_SECS: u64 = 24 * 3600;
/// Default maximum lines per Bulk NDJSON file.
pub const DEFAULT_BULK_FILE_LINES: usize = 3000;
/// Default lifetime of a finished Bulk export's files (Epic deletes them after 14 days).
pub const DEFAULT_BULK_FILES_EXPIRE_SECS: u64 = 14 * 24 * 3600;

/// Which patients belong to a list or group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Members {
    /// Every synthetic patient.
    All,
    /// Patients `0..n` (capped at the number of patients).
    First(usize),
    /// These patient indices (out-of-range indices are skipped).
    Indices(Vec<usize>),
}

impl Members {
    /// Patient indices, given `patients` synthetic patients.
    pub fn resolve(&self, patients: usize) -> Vec<usize> {
        match self {
            Members::All => (0..patients).collect(),
            Members::First(n) => (0..(*n).min(patients)).collect(),
            Members::Indices(v) => v.iter().copied().filter(|&i| i < patients).collect(),
        }
    }
}

/// A patient list served by `List?code=patientlist&identifier=systemlist|{id}` (STU3) and
/// `List?code=patients&identifier=urn:oid:1.2.840.114350.1.13.0.1.7.2.806567|{id}` (R4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatientListConfig {
    /// Epic record id of the list (the `N` in `systemlist|N`).
    pub id: u32,
    /// Title of the list.
    pub title: String,
    /// Members.
    pub members: Members,
}

/// A Group (Epic registry) readable at `Group/{id}` and exportable with `$export`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// FHIR id of the Group.
    pub id: String,
    /// Name of the Group.
    pub name: String,
    /// Members.
    pub members: Members,
}

/// What a [`BulkFault`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BulkFaultKind {
    /// The export of a resource type fails on the server: the type gets no output file, and the
    /// manifest's `error[]` carries an OperationOutcome "Failed to export N.Type.ndjson".
    /// `target` is the type; `times` counts kick-offs.
    ExportError,
    /// Downloads of an output or error file answer `410 Gone`. `target` is the file name
    /// (`Condition-1.ndjson`, `error-1.ndjson`); `times` counts downloads.
    Gone,
    /// Downloads of an output file end half-way: plain files stop in the middle of a line, gzip
    /// files stop before the gzip trailer. `target` is the file name; `times` counts downloads.
    Truncated,
}

/// A Bulk fault that hits its target the next `times` times (so a retry, or the next run,
/// succeeds). Set at start-up in [`BulkConfig::faults`] or at run time with
/// `FhirState::bulk_fault`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkFault {
    /// What breaks.
    pub kind: BulkFaultKind,
    /// The resource type ([`BulkFaultKind::ExportError`]) or output file name.
    pub target: String,
    /// How many times.
    pub times: u32,
}

/// Bulk `$export` behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkConfig {
    /// Status polls answered with 202 (`X-Progress`, `Retry-After`) before the manifest.
    pub polls_before_ready: u32,
    /// `Retry-After` seconds on 202 status answers.
    pub retry_after_secs: u64,
    /// A second kick-off for the same Group by the same client within this many seconds is refused.
    pub kickoff_window_secs: u64,
    /// Maximum resources per NDJSON file.
    pub max_lines_per_file: usize,
    /// Lifetime of a finished export's files: the manifest's `Expires`; later downloads answer 410.
    pub files_expire_secs: u64,
    /// Serve NDJSON files gzip-encoded to clients that accept it (`Content-Encoding: gzip`).
    pub gzip: bool,
    /// Group members as `urn:uuid:` references to contained Patients that carry only the MRN
    /// identifier (resolvable through the exported Patient file), not `Patient/<id>`.
    pub urn_uuid_members: bool,
    /// A CapabilityStatement that declares only `read` (no `search-type`, no search parameters),
    /// like a bulk-only server: Group export must still work.
    pub read_only_statement: bool,
    /// Injected failures: `error[]` entries, 410s, truncated downloads.
    pub faults: Vec<BulkFault>,
}

impl Default for BulkConfig {
    fn default() -> Self {
        BulkConfig {
            polls_before_ready: DEFAULT_BULK_POLLS,
            retry_after_secs: DEFAULT_BULK_RETRY_AFTER_SECS,
            kickoff_window_secs: DEFAULT_BULK_WINDOW_SECS,
            max_lines_per_file: DEFAULT_BULK_FILE_LINES,
            files_expire_secs: DEFAULT_BULK_FILES_EXPIRE_SECS,
            gzip: false,
            urn_uuid_members: false,
            read_only_statement: false,
            faults: Vec::new(),
        }
    }
}

/// Which server the simulator plays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerProfile {
    /// Production Epic, as `epic-facts.md` describes it (the default): Outside-Record 59204 next
    /// to data, 59205 on Procedure, 4101 on empty results, required categories, altered creates.
    #[default]
    Epic,
    /// A generic, non-Epic SMART server: no required category on Observation/Condition/CarePlan,
    /// no Epic outcome entries in searchsets (an empty result is a searchset with `total: 0` and
    /// no entries), creates stored as sent, and CareTeam data served although the statement
    /// does not list CareTeam. Refused requests (403, 400, 404) keep their OperationOutcome bodies.
    GenericSmart,
}

/// Synthetic data, search behaviour and Bulk settings of the FHIR side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FhirConfig {
    /// Number of synthetic patients (generated on demand, so 100,000 costs no memory).
    pub patients: usize,
    /// Seed of the deterministic generator: same seed, same bytes.
    pub seed: u64,
    /// Give the first patients the published Epic sandbox identities (Camila Lopez, Derrick Lin, …).
    pub sandbox_identities: bool,
    /// Patient lists.
    pub lists: Vec<PatientListConfig>,
    /// Bulk-exportable Groups.
    pub groups: Vec<GroupConfig>,
    /// Default and maximum `_count` (Epic: 1000).
    pub max_page_size: usize,
    /// Lifetime of a paging session (`sessionID` in `next` links), in seconds.
    pub session_ttl_secs: u64,
    /// Bulk `$export` behaviour.
    pub bulk: BulkConfig,
    /// Which server to play: production Epic (default) or a generic SMART server.
    pub profile: ServerProfile,
}

impl Default for FhirConfig {
    fn default() -> Self {
        FhirConfig {
            patients: DEFAULT_PATIENTS,
            seed: DEFAULT_SEED,
            sandbox_identities: true,
            lists: vec![PatientListConfig {
                id: DEFAULT_LIST_ID,
                title: "Simulated cohort".to_string(),
                members: Members::All,
            }],
            groups: vec![GroupConfig {
                id: DEFAULT_GROUP_ID.to_string(),
                name: "Simulated registry".to_string(),
                members: Members::All,
            }],
            max_page_size: DEFAULT_PAGE_SIZE,
            session_ttl_secs: DEFAULT_SESSION_TTL_SECS,
            bulk: BulkConfig::default(),
            profile: ServerProfile::Epic,
        }
    }
}

impl FhirConfig {
    /// Paging session lifetime.
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }
}
