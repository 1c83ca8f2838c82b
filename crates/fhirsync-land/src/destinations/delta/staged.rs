//! The Delta destination's staging format: one staging file per resource type and bucket (stem
//! `<Type>.b<bucket>of<buckets>`), so a commit reads one bucket at a time, in its own line
//! format, a JSON array head then a tab then the resource as received:
//!
//! ```text
//! [<seq>,"<id>","<patient_id>"|null,"<fhir_version>","<source>","<dataset>","<content_hash>"]\t{...}
//! ```
//!
//! and, for reload and reload-and-compare, one keys file per type (stem `<Type>.keys`) with a
//! line per staged line, so a commit plans without reading the resources:
//!
//! ```text
//! [<seq>,<bucket>,<offset>,<length>,"<fhir_version>","<id>","<content_hash>"]
//! ```
//!
//! `seq` orders every line of a run across files (the last copy of a resource wins): the run's
//! generation (0, then one more at each resume, kept in the staging folder) in the high bits,
//! a counter in the low ones. The head is compact serde JSON, which escapes every tab, so the
//! first tab of a line ends it; the resource is never parsed again. A key line is written after
//! its data line; one whose data line a kill lost is dropped on resume ([`trim_keys`]).

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
/// Suffix of a keys file's stem.
const KEYS: &str = "keys";
/// File in the staging folder holding the run's generation.
const GENERATION_FILE: &str = "delta-generation";

/// The staging stem of bucket `bucket` (of `buckets`) of `resource_type`.
pub(super) fn stem(resource_type: &str, bucket: i32, buckets: u32) -> String {
    format!("{resource_type}.b{bucket}of{buckets}")
}

/// The staging stem of `resource_type`'s keys file.
pub(super) fn keys_stem(resource_type: &str) -> String {
    format!("{resource_type}.{KEYS}")
}

/// The resource type of a keys file's stem.
pub(super) fn parse_keys_stem(stem: &str) -> Option<&str> {
    stem.strip_suffix(KEYS)?.strip_suffix('.')
}

/// A staging stem read back: resource type, bucket and bucket count; `None` for a keys file
/// or a stem of the earlier one-file-per-type layout (`<Type>`).
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

/// A line of a keys file (strings borrowed unless escaped).
#[derive(Debug, Deserialize)]
pub(super) struct KeyLine<'a>(
    pub u64,
    pub u32,
    pub u64,
    pub u32,
    #[serde(borrow)] pub Cow<'a, str>,
    #[serde(borrow)] pub Cow<'a, str>,
    #[serde(borrow)] pub Cow<'a, str>,
);

impl KeyLine<'_> {
    pub(super) fn seq(&self) -> u64 {
        self.0
    }
    pub(super) fn bucket(&self) -> u32 {
        self.1
    }
    /// Offset and length (without its newline) of the data line in its bucket's file.
    pub(super) fn offset(&self) -> u64 {
        self.2
    }
    pub(super) fn len(&self) -> u32 {
        self.3
    }
    pub(super) fn fhir_version(&self) -> &str {
        &self.4
    }
    pub(super) fn id(&self) -> &str {
        &self.5
    }
    pub(super) fn content_hash(&self) -> &str {
        &self.6
    }
}

/// Appends the key line (with its newline) of `r`, staged as `seq` in `bucket` at `offset`
/// with `len` bytes.
pub(super) fn encode_key(
    out: &mut Vec<u8>,
    seq: u64,
    bucket: u32,
    offset: u64,
    len: u32,
    r: &RawResource,
) -> Result<()> {
    let hash = r.hash.hex();
    let key = (seq, bucket, offset, len, r.fhir_version.as_str(), &r.id, hash.as_str());
    serde_json::to_writer(&mut *out, &key)
        .map_err(|source| Error::Json { action: "encoding a staged key", source })?;
    out.push(b'\n');
    Ok(())
}

/// Parses a key line (without its newline).
pub(super) fn parse_key(line: &[u8]) -> std::result::Result<KeyLine<'_>, String> {
    serde_json::from_slice(line).map_err(|e| e.to_string())
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

/// Cuts each keys file at its first line whose data line is not wholly in its bucket file (a
/// kill can leave a key line whose data line never reached the disk). Every line after it
/// was staged after the last checkpoint, so its scope is fetched again by the resumed run.
/// Runs on resume, before anything is staged.
pub(super) fn trim_keys(staging: &Staging) -> Result<()> {
    let stems = staging.types()?;
    for stem in &stems {
        let Some(resource_type) = parse_keys_stem(stem) else { continue };
        let mut lens = std::collections::HashMap::new();
        for data in &stems {
            if let Some((t, bucket, _)) = parse_stem(data)
                && t == resource_type
            {
                lens.insert(bucket as u32, file_len(&staging.file(data))?);
            }
        }
        let path = staging.file(stem);
        let mut cut: Option<u64> = None;
        scan(&path, &mut |offset, line| {
            let fits = parse_key(line)
                .is_ok_and(|k| k.offset() + u64::from(k.len()) < lens.get(&k.bucket()).copied().unwrap_or(0));
            if !fits && cut.is_none() {
                cut = Some(offset);
            }
            Ok(())
        })?;
        if let Some(at) = cut {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(Error::io("trimming a staged keys file", &path))?;
            file.set_len(at).map_err(Error::io("trimming a staged keys file", &path))?;
            tracing::warn!(resource_type, "Dropped staged keys whose lines a kill lost.");
        }
    }
    Ok(())
}

/// Refuses a staging folder of the earlier one-file-per-type layout (a run killed under an
/// earlier version): its lines carry no `seq` and no bucket.
pub(super) fn check_layout(staging: &Staging) -> Result<()> {
    for stem in staging.types()? {
        if parse_stem(&stem).is_none() && parse_keys_stem(&stem).is_none() {
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

    /// Bucket stems name their type and bucket, keys stems their type; the earlier
    /// one-file-per-type stems parse as neither.
    #[test]
    fn stems_name_type_and_bucket() {
        assert_eq!(stem("Observation", 3, 16), "Observation.b3of16");
        assert_eq!(parse_stem("Observation.b3of16"), Some(("Observation", 3, 16)));
        assert_eq!(parse_keys_stem(&keys_stem("Observation")), Some("Observation"));
        assert_eq!(parse_stem("Observation.keys"), None);
        assert_eq!((parse_stem("Observation"), parse_keys_stem("Observation")), (None, None));
    }

    /// A key line reads back what was encoded.
    #[test]
    fn key_lines_round_trip() {
        let r = RawResource::from_json(
            r#"{"resourceType":"Patient","id":"p\"1"}"#,
            None,
            Dataset::new("Patient"),
            FhirVersion::R4,
            "s",
        )
        .unwrap();
        let mut out = Vec::new();
        encode_key(&mut out, 9, 3, 1234, 56, &r).unwrap();
        let k = parse_key(out.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!((k.seq(), k.bucket(), k.offset(), k.len()), (9, 3, 1234, 56));
        assert_eq!((k.fhir_version(), k.id(), k.content_hash()), ("R4", "p\"1", r.hash.to_hex().as_str()));
    }

    /// On resume, a keys file is cut at its first key whose data line a kill lost, and keeps
    /// the keys before it.
    #[test]
    fn resume_drops_keys_of_lost_lines() {
        let dir = tempfile::tempdir().unwrap();
        let mut staging = Staging::create(dir.path().join("s"), "run", None).unwrap();
        let r = RawResource::from_json(
            r#"{"resourceType":"Patient","id":"p"}"#,
            None,
            Dataset::new("Patient"),
            FhirVersion::R4,
            "s",
        )
        .unwrap();
        let (data, keys) = (stem("Patient", 0, 1), keys_stem("Patient"));
        let mut offset = 0u64;
        for seq in 0..3 {
            let mut line = Vec::new();
            encode_head(&mut line, seq, &r, "Patient").unwrap();
            line.extend_from_slice(r.json.as_bytes());
            let len = line.len() as u32;
            line.push(b'\n');
            staging.append(&data, &[&line]).unwrap();
            let mut key = Vec::new();
            encode_key(&mut key, seq, 0, offset, len, &r).unwrap();
            staging.append(&keys, &[&key]).unwrap();
            offset += u64::from(len) + 1;
        }
        staging.checkpoint().unwrap();
        // The last data line never reached the disk; its key did.
        let data_path = staging.file(&data);
        let cut = file_len(&data_path).unwrap() - (offset / 3);
        std::fs::OpenOptions::new().write(true).open(&data_path).unwrap().set_len(cut).unwrap();
        trim_keys(&staging).unwrap();
        let mut seqs = Vec::new();
        scan(&staging.file(&keys), &mut |_, line| {
            seqs.push(parse_key(line).unwrap().seq());
            Ok(())
        })
        .unwrap();
        assert_eq!(seqs, vec![0, 1]);
    }

    /// Staging more files than it keeps open closes and reopens them without losing a line.
    #[test]
    fn many_staging_files_keep_every_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut staging = Staging::create(dir.path().join("s"), "run", None).unwrap();
        let stems: Vec<String> = (0..300).map(|b| stem("Observation", b, 300)).collect();
        for round in 0..2 {
            for s in &stems {
                staging.append(s, &[format!("{s}-{round}\n").as_bytes()]).unwrap();
            }
        }
        staging.checkpoint().unwrap();
        for s in &stems {
            let mut lines = Vec::new();
            scan(&staging.file(s), &mut |_, line| {
                lines.push(String::from_utf8(line.to_vec()).unwrap());
                Ok(())
            })
            .unwrap();
            assert_eq!(lines, vec![format!("{s}-0"), format!("{s}-1")]);
        }
    }
}
