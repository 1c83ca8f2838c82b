//! The row of a file snapshot, and its NDJSON line codec (used by the NDJSON destination and
//! by the staging files of both file destinations).

use fhirsync_core::RawResource;
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

/// The key fields of a staged line, borrowed (the Delta destination's index pass).
#[cfg_attr(not(feature = "delta"), allow(dead_code))]
#[derive(Deserialize)]
pub(crate) struct Head<'a> {
    /// Resource id.
    #[serde(borrow)]
    pub id: std::borrow::Cow<'a, str>,
    /// FHIR version.
    #[serde(borrow)]
    pub fhir_version: std::borrow::Cow<'a, str>,
    /// SHA-256 hex of the resource.
    #[serde(borrow)]
    pub content_hash: std::borrow::Cow<'a, str>,
}

/// Parses only the key fields of a line written by [`write_line`], without reading the
/// resource: the head fields come first, and `,"resource":` cannot occur inside them (their
/// quotes are escaped). `buf` holds the head while the result borrows it.
#[cfg_attr(not(feature = "delta"), allow(dead_code))]
pub(crate) fn read_head<'a>(
    line: &str,
    buf: &'a mut String,
) -> std::result::Result<Head<'a>, serde_json::Error> {
    buf.clear();
    match line.find(",\"resource\":") {
        Some(end) => {
            buf.push_str(&line[..end]);
            buf.push('}');
        }
        None => buf.push_str(line),
    }
    serde_json::from_str(buf)
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
        let mut buf = String::new();
        let head = read_head(text.trim_end(), &mut buf).unwrap();
        assert_eq!((&*head.id, &*head.fhir_version, &*head.content_hash), ("o1", "R4", "ab"));
    }
}
