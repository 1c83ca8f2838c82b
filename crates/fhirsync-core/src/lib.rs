//! Shared data model of fhirsync.
//!
//! The types here are the hand-off between the stages of the data flow:
//! auth → fhir client → **extract** → [`RawResource`] stream + [`RunScope`] → **land** → views.
//!
//! A [`RawResource`] keeps the exact JSON bytes the server sent (the source of truth), the
//! coordinates the landing layer needs (type, id, patient, dataset, FHIR version, endpoint) and a
//! SHA-256 [`ContentHash`] of those bytes, which reload-and-compare uses to detect changes
//! (Epic sends no `meta.lastUpdated`/`versionId`, so a content hash is the only change signal).

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod connection;
#[cfg(feature = "http")]
pub mod net;
pub mod secret;
pub mod token;
#[cfg(feature = "http")]
pub mod transport;

pub use connection::{ConnectionConfig, Endpoints, UrlError};
#[cfg(feature = "http")]
pub use net::NetworkFailure;
pub use secret::{SecretError, SecretRef};
pub use token::{BoxFuture, StaticToken, TokenError, TokenProvider};
#[cfg(feature = "http")]
pub use transport::TransportSetupError;

/// Errors of the core model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A FHIR version name that is not DSTU2, STU3 or R4.
    #[error("unknown FHIR version `{name}`: use DSTU2, STU3 or R4")]
    UnknownFhirVersion {
        /// The name given.
        name: String,
    },
    /// A resource without `resourceType` or `id`.
    #[error("resource is missing `{field}`: every landed resource needs `resourceType` and `id`")]
    MissingField {
        /// The missing JSON member.
        field: &'static str,
    },
    /// Bytes that are not a JSON object.
    #[error("resource is not valid JSON: {source}")]
    Json {
        /// The parse error.
        #[from]
        source: serde_json::Error,
    },
    /// A `[connection]` setting is missing or wrong.
    #[error("invalid configuration `{key}`: {problem}")]
    Setting {
        /// Key, e.g. `connection.client_id`.
        key: &'static str,
        /// What is wrong and how to fix it.
        problem: &'static str,
    },
    /// A URL setting, or the `FHIRSYNC_*` variable overriding it, is not a usable URL.
    #[error("invalid configuration `{key}`: {source}")]
    InvalidUrl {
        /// Key (`connection.https_proxy`) or environment variable (`FHIRSYNC_FHIR_R4_ENDPOINT`).
        key: String,
        /// Why the URL is refused.
        #[source]
        source: UrlError,
    },
    /// A secret was written inline in the configuration file.
    #[error(
        "`{key}` must not hold the secret itself: write `env:VARIABLE` (or set {env_override}) or `file:/path/to/secret`"
    )]
    InlineSecret {
        /// Key, e.g. `connection.client_secret`.
        key: &'static str,
        /// The environment override that may carry the value directly.
        env_override: &'static str,
    },
    /// A secret reference could not be resolved.
    #[error("cannot read `{key}` from {origin}")]
    SecretUnavailable {
        /// Key.
        key: &'static str,
        /// `environment variable X` or a path.
        origin: String,
        /// Why.
        #[source]
        source: SecretError,
    },
}

impl Error {
    /// Whether this is a configuration problem (a `[connection]` setting), not bad data.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::Setting { .. }
                | Error::InvalidUrl { .. }
                | Error::InlineSecret { .. }
                | Error::SecretUnavailable { .. }
        )
    }
}

/// `Result` with the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The FHIR releases Epic serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum FhirVersion {
    /// FHIR 1.0.2.
    Dstu2,
    /// FHIR 3.0.1.
    Stu3,
    /// FHIR 4.0.1 (Epic's primary API).
    R4,
}

impl FhirVersion {
    /// All versions, newest first.
    pub const ALL: [FhirVersion; 3] = [FhirVersion::R4, FhirVersion::Stu3, FhirVersion::Dstu2];

    /// The path segment Epic uses (`R4`, `STU3`, `DSTU2`).
    pub fn as_str(self) -> &'static str {
        match self {
            FhirVersion::Dstu2 => "DSTU2",
            FhirVersion::Stu3 => "STU3",
            FhirVersion::R4 => "R4",
        }
    }
}

impl fmt::Display for FhirVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FhirVersion {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "DSTU2" => Ok(FhirVersion::Dstu2),
            "STU3" => Ok(FhirVersion::Stu3),
            "R4" => Ok(FhirVersion::R4),
            _ => Err(Error::UnknownFhirVersion { name: s.to_string() }),
        }
    }
}

/// SHA-256 of a resource's JSON bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Hashes `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(Sha256::digest(bytes).into())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        self.hex().as_str().to_string()
    }

    /// Lower-case hex without allocating (for per-row hot paths).
    pub fn hex(&self) -> Hex {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (pair, b) in out.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[(b >> 4) as usize];
            pair[1] = DIGITS[(b & 15) as usize];
        }
        Hex(out)
    }
}

/// A [`ContentHash`] as 64 lower-case hex digits, on the stack.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hex([u8; 64]);

impl Hex {
    /// The digits as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever written, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hex({})", self.as_str())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", &self.to_hex()[..12])
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A dataset is what one search (or one bulk type) yields: a resource type, optionally narrowed
/// by a category, e.g. `Observation:laboratory`, `Condition:problem-list-item`, `Patient`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Dataset {
    /// FHIR resource type, e.g. `Observation`.
    pub resource_type: String,
    /// Category the search was narrowed to, if any.
    pub category: Option<String>,
}

impl Dataset {
    /// A dataset for a whole resource type.
    pub fn new(resource_type: impl Into<String>) -> Self {
        Dataset { resource_type: resource_type.into(), category: None }
    }

    /// A dataset narrowed to one category.
    pub fn with_category(resource_type: impl Into<String>, category: impl Into<String>) -> Self {
        Dataset { resource_type: resource_type.into(), category: Some(category.into()) }
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.category {
            Some(c) => write!(f, "{}:{}", self.resource_type, c),
            None => f.write_str(&self.resource_type),
        }
    }
}

impl FromStr for Dataset {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        Ok(match s.split_once(':') {
            Some((t, c)) => Dataset::with_category(t, c),
            None => Dataset::new(s),
        })
    }
}

/// The unit of completeness: one dataset fetched for one patient (or without a patient, for
/// datasets that are not patient-scoped). Reload-and-compare deletes rows only inside scopes
/// whose fetch completed in the run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScopeKey {
    /// FHIR version of the endpoint read.
    pub fhir_version: FhirVersion,
    /// Patient FHIR id, `None` for unscoped datasets.
    pub patient_id: Option<String>,
    /// What was searched.
    pub dataset: Dataset,
}

/// One resource as received, ready to land.
#[derive(Clone)]
pub struct RawResource {
    /// `resourceType` of the resource.
    pub resource_type: String,
    /// Logical id (`id`).
    pub id: String,
    /// Patient the resource was fetched for (the search's `patient` parameter), if any.
    pub patient_id: Option<String>,
    /// The dataset (search) that produced it.
    pub dataset: Dataset,
    /// FHIR version of the endpoint it came from.
    pub fhir_version: FhirVersion,
    /// Base URL of the endpoint it came from.
    pub source: String,
    /// SHA-256 of `json`.
    pub hash: ContentHash,
    /// The exact JSON bytes of the resource.
    pub json: Box<str>,
}

impl RawResource {
    /// Builds a resource from its JSON text, reading `resourceType` and `id` from it.
    ///
    /// Fails if the text is not a JSON object with string `resourceType` and `id`.
    pub fn from_json(
        json: impl Into<Box<str>>,
        patient_id: Option<String>,
        dataset: Dataset,
        fhir_version: FhirVersion,
        source: impl Into<String>,
    ) -> Result<Self> {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(rename = "resourceType", borrow)]
            resource_type: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow)]
            id: Option<std::borrow::Cow<'a, str>>,
        }
        let json: Box<str> = json.into();
        let head: Head<'_> = serde_json::from_str(&json)?;
        let resource_type =
            head.resource_type.ok_or(Error::MissingField { field: "resourceType" })?.into_owned();
        let id = head.id.ok_or(Error::MissingField { field: "id" })?.into_owned();
        let hash = ContentHash::of(json.as_bytes());
        Ok(RawResource {
            resource_type,
            id,
            patient_id,
            dataset,
            fhir_version,
            source: source.into(),
            hash,
            json,
        })
    }

    /// The scope this resource belongs to.
    pub fn scope(&self) -> ScopeKey {
        ScopeKey {
            fhir_version: self.fhir_version,
            patient_id: self.patient_id.clone(),
            dataset: self.dataset.clone(),
        }
    }
}

/// Debug shows coordinates and hash only: resource JSON is patient data and must not reach logs.
impl fmt::Debug for RawResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawResource")
            .field("resource_type", &self.resource_type)
            .field("dataset", &self.dataset.to_string())
            .field("fhir_version", &self.fhir_version)
            .field("hash", &self.hash)
            .field("bytes", &self.json.len())
            .finish()
    }
}

/// What a finished extraction tells the landing layer about completeness.
///
/// Landing may delete a previously landed row only if its scope completed (is in `complete`,
/// or was recorded with the landing's `scope_complete` from an extraction event); patients in
/// the target but not in `cohort` have left the cohort (flagged, deleted only on opt-in).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunScope {
    /// Patient ids of this run's cohort (de-duplicated).
    pub cohort: BTreeSet<String>,
    /// Scopes fetched completely: every page read, no failed request, nothing withheld that
    /// the previous complete read did not withhold too. Only rows of these scopes may be
    /// deleted. Empty (and left out of the JSON) when the extraction sent them to landing as
    /// events instead of listing them.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub complete: BTreeSet<ScopeKey>,
    /// Planned scopes that are not complete (gaps). A run with any ends "completed with gaps".
    #[serde(default)]
    pub gaps: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading `resourceType`/`id` works and the hash is the SHA-256 of the exact bytes.
    #[test]
    fn raw_resource_reads_head_and_hashes_bytes() {
        let json = r#"{"resourceType":"Patient","id":"e1","name":[{"text":"x"}]}"#;
        let r = RawResource::from_json(
            json,
            Some("e1".into()),
            Dataset::new("Patient"),
            FhirVersion::R4,
            "http://x/R4",
        )
        .unwrap();
        assert_eq!(r.resource_type, "Patient");
        assert_eq!(r.id, "e1");
        assert_eq!(r.hash, ContentHash::of(json.as_bytes()));
        assert_eq!(r.hash.to_hex().len(), 64);
        assert!(!format!("{r:?}").contains("name"));
    }

    /// The hex form is lower-case SHA-256, checked against the known digest of the empty input.
    #[test]
    fn content_hash_hex_is_sha256() {
        let hash = ContentHash::of(b"");
        let expected = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(hash.hex().as_str(), expected);
        assert_eq!(hash.to_hex(), expected);
    }

    /// A resource without an id is rejected with the field named.
    #[test]
    fn raw_resource_without_id_is_rejected() {
        let err = RawResource::from_json(
            r#"{"resourceType":"Patient"}"#,
            None,
            Dataset::new("Patient"),
            FhirVersion::R4,
            "",
        )
        .unwrap_err();
        assert!(err.to_string().contains("`id`"), "{err}");
    }

    /// Datasets round-trip through their `Type:category` text form.
    #[test]
    fn dataset_text_round_trip() {
        let d: Dataset = "Observation:vital-signs".parse().unwrap();
        assert_eq!(d, Dataset::with_category("Observation", "vital-signs"));
        assert_eq!(d.to_string(), "Observation:vital-signs");
        assert_eq!("Patient".parse::<Dataset>().unwrap().category, None);
    }
}

/// What extraction sends to landing, in order.
///
/// A scope's `ScopeComplete` is sent only after every resource of that scope has been sent, so a
/// destination that persists staged rows and completed scopes in one transaction can resume a
/// killed run without losing or double-counting anything.
#[derive(Debug, Clone)]
pub enum ExtractEvent {
    /// Resources fetched (one page, or one chunk of an NDJSON file).
    Resources(Vec<RawResource>),
    /// Every resource of this scope has been sent; the scope's fetch completed without gaps.
    ScopeComplete(ScopeKey),
}
