//! The row of a file snapshot, and its NDJSON line codec (used by the NDJSON destination and
//! by the staging files of both file destinations).

use fhirsync_core::RawResource;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{Error, Result};

/// One landed resource in a file snapshot (columns as in the SQL tables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub id: String,
    pub patient_id: Option<String>,
    pub fhir_version: String,
    pub source: String,
    pub dataset: String,
    pub content_hash: String,
    pub resource: String,
    pub first_seen_run: String,
    pub last_seen_run: String,
}

impl Row {
    /// A staged resource as a row first and last seen in `run_id`.
    pub(crate) fn staged(r: &RawResource, run_id: &str) -> Row {
        Row {
            id: r.id.clone(),
            patient_id: r.patient_id.clone(),
            fhir_version: r.fhir_version.as_str().to_string(),
            source: r.source.clone(),
            dataset: r.dataset.to_string(),
            content_hash: r.hash.to_hex(),
            resource: r.json.to_string(),
            first_seen_run: run_id.to_string(),
            last_seen_run: run_id.to_string(),
        }
    }
}

/// A row without its resource, borrowed: the columns a compare reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head<'a> {
    pub id: &'a str,
    pub patient_id: Option<&'a str>,
    pub fhir_version: &'a str,
    pub source: &'a str,
    pub dataset: &'a str,
    pub content_hash: &'a str,
    pub first_seen_run: &'a str,
    pub last_seen_run: &'a str,
}

impl Row {
    /// The row's head.
    pub(crate) fn head(&self) -> Head<'_> {
        Head {
            id: &self.id,
            patient_id: self.patient_id.as_deref(),
            fhir_version: &self.fhir_version,
            source: &self.source,
            dataset: &self.dataset,
            content_hash: &self.content_hash,
            first_seen_run: &self.first_seen_run,
            last_seen_run: &self.last_seen_run,
        }
    }
}

/// The head fields of a line (borrowed unless escaped; the resource is skipped).
#[derive(Deserialize)]
struct HeadIn<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    patient_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    fhir_version: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(borrow)]
    dataset: Cow<'a, str>,
    #[serde(borrow)]
    content_hash: Cow<'a, str>,
    #[serde(borrow)]
    first_seen_run: Cow<'a, str>,
    #[serde(borrow)]
    last_seen_run: Cow<'a, str>,
}

#[derive(Serialize)]
struct HeadOut<'a> {
    id: &'a str,
    patient_id: Option<&'a str>,
    fhir_version: &'a str,
    source: &'a str,
    dataset: &'a str,
    content_hash: &'a str,
    first_seen_run: &'a str,
    last_seen_run: &'a str,
}

#[derive(Deserialize)]
struct LineIn<'a> {
    id: String,
    patient_id: Option<String>,
    fhir_version: String,
    source: String,
    dataset: String,
    content_hash: String,
    first_seen_run: String,
    last_seen_run: String,
    #[serde(borrow)]
    resource: &'a RawValue,
}

/// Appends `row` as one JSON line; the resource is embedded byte-exact.
pub(crate) fn write_line(out: &mut Vec<u8>, row: &Row) -> Result<()> {
    let head = HeadOut {
        id: &row.id,
        patient_id: row.patient_id.as_deref(),
        fhir_version: &row.fhir_version,
        source: &row.source,
        dataset: &row.dataset,
        content_hash: &row.content_hash,
        first_seen_run: &row.first_seen_run,
        last_seen_run: &row.last_seen_run,
    };
    serde_json::to_writer(&mut *out, &head)
        .map_err(|source| Error::Json { action: "encoding a row", source })?;
    out.pop(); // the closing brace
    out.extend_from_slice(b",\"resource\":");
    out.extend_from_slice(row.resource.as_bytes());
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// Parses the head of one line written by [`write_line`] and lends it to `f`; the resource is
/// skipped, not copied.
pub(crate) fn with_head<T>(
    line: &str,
    f: impl FnOnce(Head<'_>) -> T,
) -> std::result::Result<T, serde_json::Error> {
    let l: HeadIn<'_> = serde_json::from_str(line)?;
    Ok(f(Head {
        id: &l.id,
        patient_id: l.patient_id.as_deref(),
        fhir_version: &l.fhir_version,
        source: &l.source,
        dataset: &l.dataset,
        content_hash: &l.content_hash,
        first_seen_run: &l.first_seen_run,
        last_seen_run: &l.last_seen_run,
    }))
}

/// Parses one line written by [`write_line`].
pub(crate) fn read_line(line: &str) -> std::result::Result<Row, serde_json::Error> {
    let l: LineIn<'_> = serde_json::from_str(line)?;
    Ok(Row {
        id: l.id,
        patient_id: l.patient_id,
        fhir_version: l.fhir_version,
        source: l.source,
        dataset: l.dataset,
        content_hash: l.content_hash,
        resource: l.resource.get().to_string(),
        first_seen_run: l.first_seen_run,
        last_seen_run: l.last_seen_run,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row survives the line codec and its resource bytes stay exact (`1.50`, spacing).
    #[test]
    fn line_round_trip_is_byte_exact() {
        let row = Row {
            id: "o1".into(),
            patient_id: None,
            fhir_version: "R4".into(),
            source: "s".into(),
            dataset: "Observation:laboratory".into(),
            content_hash: "ab".into(),
            resource: r#"{"resourceType":"Observation", "id":"o1","v":1.50}"#.into(),
            first_seen_run: "r1".into(),
            last_seen_run: "r2".into(),
        };
        let mut out = Vec::new();
        write_line(&mut out, &row).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("}\n"));
        assert_eq!(read_line(text.trim_end()).unwrap(), row);
        with_head(text.trim_end(), |h| assert_eq!(h, row.head())).unwrap();
    }
}
