//! How the Delta destination stages: one staging file per resource type and bucket (stem
//! `<Type>.b<bucket>of<buckets>`), so a commit reads one bucket at a time, and its own line
//! format, a JSON array head then a tab then the resource as received:
//!
//! ```text
//! [<seq>,"<id>","<patient_id>"|null,"<fhir_version>","<source>","<dataset>","<content_hash>"]\t{...}
//! ```
//!
//! `seq` orders every line of a run across files (the last copy of a resource wins): the run's
//! generation (0, then one more at each resume, kept in the staging folder) in the high bits,
//! a counter in the low ones. The head is compact serde JSON, which escapes every tab, so the
//! first tab of a line ends it; the resource is never parsed again.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::Path;

use fhirsync_core::RawResource;
use serde::Deserialize;

use crate::destinations::files::layout::write_atomic;
use crate::destinations::files::staging::Staging;
use crate::{Error, Result};

/// Bits of `seq` below the generation.
const GENERATION_SHIFT: u32 = 40;
/// Read buffer of a staging scan.
const READ_BUFFER: usize = 1 << 20;
/// File in the staging folder holding the run's generation.
const GENERATION_FILE: &str = "delta-generation";

/// The staging stem of bucket `bucket` (of `buckets`) of `resource_type`.
pub(super) fn stem(resource_type: &str, bucket: i32, buckets: u32) -> String {
    format!("{resource_type}.b{bucket}of{buckets}")
}

/// A staging stem read back: resource type, bucket and bucket count; `None` for a stem of the
/// earlier one-file-per-type layout (`<Type>`).
pub(super) fn parse_stem(stem: &str) -> Option<(&str, i32, u32)> {
    let (resource_type, rest) = stem.rsplit_once(".b")?;
    let (bucket, buckets) = rest.split_once("of")?;
    Some((resource_type, bucket.parse().ok()?, buckets.parse().ok()?))
}

/// The head of a staged line (borrowed unless escaped).
#[derive(Debug, Deserialize)]
pub(super) struct Head<'a>(
    pub u64,
    #[serde(borrow)] pub Cow<'a, str>,
    #[serde(borrow)] pub Option<Cow<'a, str>>,
    #[serde(borrow)] pub Cow<'a, str>,
    #[serde(borrow)] pub Cow<'a, str>,
    #[serde(borrow)] pub Cow<'a, str>,
    #[serde(borrow)] pub Cow<'a, str>,
);

impl Head<'_> {
    pub(super) fn seq(&self) -> u64 {
        self.0
    }
    pub(super) fn id(&self) -> &str {
        &self.1
    }
    pub(super) fn patient_id(&self) -> Option<&str> {
        self.2.as_deref()
    }
    pub(super) fn fhir_version(&self) -> &str {
        &self.3
    }
    pub(super) fn source(&self) -> &str {
        &self.4
    }
    pub(super) fn dataset(&self) -> &str {
        &self.5
    }
    pub(super) fn content_hash(&self) -> &str {
        &self.6
    }
}

/// Appends the head of `r`'s staged line and its tab to `out` (the line is the head, the
/// resource's JSON and a newline); `dataset` is `r.dataset` as text.
pub(super) fn encode_head(out: &mut Vec<u8>, seq: u64, r: &RawResource, dataset: &str) -> Result<()> {
    let hash = r.hash.hex();
    let head =
        (seq, &r.id, r.patient_id.as_deref(), r.fhir_version.as_str(), &r.source, dataset, hash.as_str());
    serde_json::to_writer(&mut *out, &head)
        .map_err(|source| Error::Json { action: "encoding a staged line", source })?;
    out.push(b'\t');
    Ok(())
}

/// Splits a staged line (without its newline) into its head and resource bytes.
pub(super) fn parse(line: &[u8]) -> std::result::Result<(Head<'_>, &[u8]), String> {
    let tab =
        line.iter().position(|&b| b == b'\t').ok_or_else(|| "a staged line without its tab".to_string())?;
    let head: Head<'_> = serde_json::from_slice(&line[..tab]).map_err(|e| e.to_string())?;
    Ok((head, &line[tab + 1..]))
}

/// The resource of a staged line as text.
pub(super) fn resource_text(resource: &[u8]) -> std::result::Result<&str, String> {
    std::str::from_utf8(resource).map_err(|e| e.to_string())
}

/// The `seq` of a staged line, read without parsing the rest of it.
pub(super) fn seq_of(line: &[u8]) -> Option<u64> {
    let digits = line.strip_prefix(b"[")?;
    let end = digits.iter().position(|&b| b == b',')?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// Bytes of staging file `path` (0 if there is none).
pub(super) fn file_len(path: &Path) -> Result<u64> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(Error::io("reading a staging file", path)(e)),
    }
}

/// Calls `f(offset, line)` for every line of staging file `path` (none if there is no file),
/// the line without its newline.
pub(super) fn scan(path: &Path, f: &mut dyn FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io("reading a staging file", path)(e)),
    };
    let mut reader = BufReader::with_capacity(READ_BUFFER, file);
    let mut line = Vec::with_capacity(1 << 16);
    let mut offset = 0u64;
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).map_err(Error::io("reading a staging file", path))?;
        if n == 0 {
            return Ok(());
        }
        f(offset, line.strip_suffix(b"\n").unwrap_or(&line))?;
        offset += n as u64;
    }
}

/// Reads the line of `len` bytes (without its newline) at `offset` of `file` into `buf`.
pub(super) fn read_at(file: &File, path: &Path, offset: u64, len: u32, buf: &mut Vec<u8>) -> Result<()> {
    buf.resize(len as usize, 0);
    file.read_exact_at(buf, offset).map_err(Error::io("reading a staging file", path))
}

/// The first `seq` of this process: the staging folder's generation, one more than the last
/// process's when `resumed` (saved before any line is staged).
pub(super) fn first_seq(staging: &Staging, resumed: bool) -> Result<u64> {
    let path = staging.dir().join(GENERATION_FILE);
    let generation = match std::fs::read_to_string(&path) {
        Ok(text) if resumed => {
            text.trim()
                .parse::<u64>()
                .map_err(|e| Error::CorruptState { path: path.clone(), detail: e.to_string() })?
                + 1
        }
        Ok(_) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => u64::from(resumed),
        Err(e) => return Err(Error::io("reading the staging generation", path)(e)),
    };
    write_atomic(&path, format!("{generation}\n").as_bytes())?;
    Ok(generation << GENERATION_SHIFT)
}

/// Refuses a staging folder of the earlier one-file-per-type layout (a run killed under an
/// earlier version): its lines carry no `seq` and no bucket.
pub(super) fn check_layout(staging: &Staging) -> Result<()> {
    for stem in staging.types()? {
        if parse_stem(&stem).is_none() {
            return Err(Error::CorruptState {
                path: staging.dir().to_path_buf(),
                detail:
                    "staged by an earlier fhirsync version; run with resume = false to start the run afresh"
                        .into(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use fhirsync_core::{Dataset, FhirVersion};

    use super::*;

    /// A staged line splits back into its head and the resource's exact bytes, whatever tabs
    /// or quotes the id and the resource hold; its `seq` reads without the rest.
    #[test]
    fn staged_lines_round_trip() {
        let json = "{\"resourceType\":\"Observation\",\t\"id\":\"a\\tb\\\"c\",\"v\":1.50}";
        let r = RawResource::from_json(json, None, Dataset::new("Observation"), FhirVersion::R4, "https://s")
            .unwrap();
        let mut line = Vec::new();
        encode_head(&mut line, (3 << GENERATION_SHIFT) + 7, &r, "Observation").unwrap();
        line.extend_from_slice(json.as_bytes());
        let (head, resource) = parse(&line).unwrap();
        assert_eq!(resource_text(resource).unwrap(), json);
        assert_eq!((head.id(), head.patient_id(), head.fhir_version()), ("a\tb\"c", None, "R4"));
        assert_eq!((head.source(), head.dataset()), ("https://s", "Observation"));
        assert_eq!(head.content_hash(), r.hash.to_hex());
        assert_eq!(seq_of(&line), Some(head.seq()));
        assert_eq!(head.seq(), (3 << GENERATION_SHIFT) + 7);
        assert!(parse(b"[1,\"x\"]").is_err());
    }

    /// Bucket stems name their type and bucket; the earlier one-file-per-type stems do not parse.
    #[test]
    fn stems_name_type_and_bucket() {
        assert_eq!(stem("Observation", 3, 16), "Observation.b3of16");
        assert_eq!(parse_stem("Observation.b3of16"), Some(("Observation", 3, 16)));
        assert_eq!(parse_stem("Observation"), None);
    }
}
