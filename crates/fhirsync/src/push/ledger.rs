//! The push ledger: what has been sent to which FHIR base, kept next to the sync state.
//!
//! One file per FHIR base and resource type:
//! `<[sync] state_dir>/push-ledger/<Type>@<host[_port]_path>.ndjson` (every character other than
//! letters, digits, `.` and `-` becomes `_`), mode 0600 in a 0700 folder on Unix. Its first line
//! names it, the others are events, appended and fsynced one by one:
//!
//! ```text
//! {"ledger":"fhirsync-push","version":1,"base":"https://host/api/FHIR/R4","type":"Observation"}
//! {"hash":"<sha-256 hex of the input line>","state":"pending","at":"2026-05-01T10:00:00Z"}
//! {"hash":"<same>","state":"done","id":"eAbC123","at":"2026-05-01T10:00:01Z"}
//! ```
//!
//! The last event of a hash is its state: `pending` (written before the POST; with an `id` when
//! the server answered with a `Location` whose response could not be read completely),
//! `done` (the server's id, or none when it sent no `Location`), `duplicate` (Epic refused it as
//! already on the chart, 59141) or `failed` (the server refused it; it may be sent again). The
//! ledger holds hashes, server ids and times only — no resource content.
//!
//! A crash can leave a torn last line: if it does not parse it is cut off on the next open
//! (it was not fsynced, so the POST it announced was never sent); a damaged line before the last
//! one stops the push.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;
use url::Url;

/// Folder under `[sync] state_dir` that holds the ledgers.
pub const LEDGER_DIR: &str = "push-ledger";
/// `ledger` value of the header line.
const LEDGER_KIND: &str = "fhirsync-push";
/// Format version of the header line.
const LEDGER_VERSION: u32 = 1;

/// Ledger failures; each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The folder or file cannot be created or opened.
    #[error("cannot open the push ledger {path}: {source}; check that [sync] state_dir is writable")]
    Open {
        /// Ledger file or folder.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// Another push holds the ledger.
    #[error(
        "another fhirsync push is sending to the same endpoint and type (ledger {path} is locked): wait for it to finish"
    )]
    Busy {
        /// Ledger file.
        path: PathBuf,
    },
    /// An event could not be written durably.
    #[error(
        "cannot write the push ledger {path}: {source}; the push stops so that nothing is sent unrecorded"
    )]
    Write {
        /// Ledger file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// A line other than the last is not a ledger event.
    #[error(
        "the push ledger {path} is damaged at line {line} ({problem}); restore it from a backup, or move it \
         aside only after checking on the server that none of its pending creates were filed"
    )]
    Damaged {
        /// Ledger file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        problem: String,
    },
    /// The file's header names another endpoint or type (file name collision).
    #[error(
        "the push ledger {path} belongs to {found}, not to {expected}; move it aside or set another [sync] state_dir"
    )]
    Mismatch {
        /// Ledger file.
        path: PathBuf,
        /// `Type at base` in the header.
        found: String,
        /// `Type at base` of this push.
        expected: String,
    },
}

/// State of one input resource on the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// POST about to be sent or sent, answer not (fully) received.
    Pending,
    /// Filed.
    Done,
    /// Refused as a duplicate (59141): already on the chart.
    Duplicate,
    /// Refused by the server; safe to send again.
    Failed,
}

/// The latest state of one hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// State.
    pub state: State,
    /// Server id, when known.
    pub id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    ledger: String,
    version: u32,
    base: String,
    #[serde(rename = "type")]
    resource_type: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Event {
    hash: String,
    state: State,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    at: String,
}

/// An open, locked ledger (the lock is released on drop).
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: File,
    entries: HashMap<String, Entry>,
}

/// `<state_dir>/push-ledger/<Type>@<host[_port]_path>.ndjson`.
pub fn path_for(state_dir: &Path, base: &Url, resource_type: &str) -> PathBuf {
    let mut place = base.host_str().unwrap_or("local").to_string();
    if let Some(port) = base.port() {
        place.push_str(&format!("_{port}"));
    }
    place.push_str(base.path().trim_end_matches('/'));
    let safe = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect()
    };
    state_dir.join(LEDGER_DIR).join(format!("{}@{}.ndjson", safe(resource_type), safe(&place)))
}

/// The base as written in the header (no trailing `/`).
fn base_text(base: &Url) -> String {
    base.as_str().trim_end_matches('/').to_string()
}

impl Ledger {
    /// Opens (creating it if needed) and locks the ledger of `resource_type` at `base`.
    pub fn open(state_dir: &Path, base: &Url, resource_type: &str) -> Result<Ledger, LedgerError> {
        let path = path_for(state_dir, base, resource_type);
        let dir = path.parent().unwrap_or(state_dir).to_path_buf();
        create_private_dir(&dir).map_err(|source| LedgerError::Open { path: dir.clone(), source })?;
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file =
            options.open(&path).map_err(|source| LedgerError::Open { path: path.clone(), source })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(LedgerError::Busy { path }),
            Err(std::fs::TryLockError::Error(source)) => return Err(LedgerError::Open { path, source }),
        }
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(|source| LedgerError::Open { path: path.clone(), source })?;
        let header = Header {
            ledger: LEDGER_KIND.into(),
            version: LEDGER_VERSION,
            base: base_text(base),
            resource_type: resource_type.into(),
        };
        let mut ledger = Ledger { path, file, entries: HashMap::new() };
        let keep = ledger.load(&text, &header)?;
        if keep < text.len() {
            warn!(path = %ledger.path.display(), "Cutting off a torn last line of the push ledger.");
            ledger
                .file
                .set_len(keep as u64)
                .and_then(|()| ledger.file.sync_data())
                .map_err(|source| LedgerError::Write { path: ledger.path.clone(), source })?;
        } else if !text.is_empty() && !text.ends_with('\n') {
            ledger.write_durably(b"\n")?;
        }
        if keep == 0 {
            ledger.append(&header)?;
            sync_dir(&dir);
        }
        Ok(ledger)
    }

    /// Reads the entries without creating, locking or repairing anything (for `--dry-run`);
    /// empty when there is no ledger yet.
    pub fn peek(
        state_dir: &Path,
        base: &Url,
        resource_type: &str,
    ) -> Result<HashMap<String, Entry>, LedgerError> {
        let path = path_for(state_dir, base, resource_type);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(source) => return Err(LedgerError::Open { path, source }),
        };
        let header = Header {
            ledger: LEDGER_KIND.into(),
            version: LEDGER_VERSION,
            base: base_text(base),
            resource_type: resource_type.into(),
        };
        let mut entries = HashMap::new();
        parse(&path, &text, &header, &mut entries)?;
        Ok(entries)
    }

    /// Parses `text` into the entries; returns the length of the well-formed prefix.
    fn load(&mut self, text: &str, expected: &Header) -> Result<usize, LedgerError> {
        parse(&self.path, text, expected, &mut self.entries)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The latest state of `hash`.
    pub fn get(&self, hash: &str) -> Option<&Entry> {
        self.entries.get(hash)
    }

    /// Appends `state` for `hash` and fsyncs it before returning.
    pub fn record(&mut self, hash: &str, state: State, id: Option<&str>) -> Result<(), LedgerError> {
        let event = Event {
            hash: hash.to_string(),
            state,
            id: id.map(str::to_string),
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        self.append(&event)?;
        self.entries.insert(hash.to_string(), Entry { state, id: event.id });
        Ok(())
    }

    fn append(&mut self, value: &impl Serialize) -> Result<(), LedgerError> {
        let mut line = serde_json::to_string(value)
            .map_err(|e| LedgerError::Write { path: self.path.clone(), source: std::io::Error::other(e) })?;
        line.push('\n');
        self.write_durably(line.as_bytes())
    }

    /// One `write` of the whole line (O_APPEND), then fsync.
    fn write_durably(&mut self, bytes: &[u8]) -> Result<(), LedgerError> {
        self.file
            .write_all(bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|source| LedgerError::Write { path: self.path.clone(), source })
    }
}

/// Parses a ledger file; returns the length of its well-formed prefix (shorter than `text` only
/// when the last line is torn; 0 for an empty file or a torn header).
fn parse(
    path: &Path,
    text: &str,
    expected: &Header,
    entries: &mut HashMap<String, Entry>,
) -> Result<usize, LedgerError> {
    let damaged =
        |line: usize, problem: String| LedgerError::Damaged { path: path.to_path_buf(), line, problem };
    let mut offset = 0;
    for (i, raw) in text.split_inclusive('\n').enumerate() {
        let last = offset + raw.len() == text.len();
        let torn = last && !raw.ends_with('\n');
        let body = raw.trim_end_matches(['\n', '\r']);
        if i == 0 {
            match serde_json::from_str::<Header>(body) {
                Ok(h) if h.ledger == LEDGER_KIND && h.version == LEDGER_VERSION => {
                    if h.base != expected.base || h.resource_type != expected.resource_type {
                        return Err(LedgerError::Mismatch {
                            path: path.to_path_buf(),
                            found: format!("{} at {}", h.resource_type, h.base),
                            expected: format!("{} at {}", expected.resource_type, expected.base),
                        });
                    }
                }
                Ok(h) => {
                    return Err(damaged(
                        1,
                        format!("not a version {LEDGER_VERSION} push ledger ({} {})", h.ledger, h.version),
                    ));
                }
                // Torn while the ledger was being created: nothing was recorded yet.
                Err(_) if torn => return Ok(0),
                Err(e) => return Err(damaged(1, format!("not a push ledger header: {e}"))),
            }
        } else if !body.trim().is_empty() {
            match serde_json::from_str::<Event>(body) {
                Ok(event) => {
                    entries.insert(event.hash, Entry { state: event.state, id: event.id });
                }
                Err(_) if torn => return Ok(offset),
                Err(e) => return Err(damaged(i + 1, e.to_string())),
            }
        }
        offset += raw.len();
    }
    Ok(offset)
}

/// Creates `dir` (and parents); the ledger folder itself is 0700 on Unix.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Makes a new file's directory entry durable (Unix); best effort elsewhere.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        warn!(path = %dir.display(), error = %e, "Cannot fsync the push ledger folder.");
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Url {
        Url::parse("https://fhir.example.org:8443/api/FHIR/R4/").unwrap()
    }

    /// Events survive a reopen; the last event of a hash wins; the file holds no resource content.
    #[test]
    fn events_are_durable_and_last_wins() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut l = Ledger::open(dir.path(), &base(), "Observation").unwrap();
            l.record("aa", State::Pending, None).unwrap();
            l.record("aa", State::Done, Some("e1")).unwrap();
            l.record("bb", State::Pending, None).unwrap();
            l.record("cc", State::Duplicate, None).unwrap();
        }
        let l = Ledger::open(dir.path(), &base(), "Observation").unwrap();
        assert_eq!(l.get("aa"), Some(&Entry { state: State::Done, id: Some("e1".into()) }));
        assert_eq!(l.get("bb").map(|e| e.state), Some(State::Pending));
        assert_eq!(l.get("cc").map(|e| e.state), Some(State::Duplicate));
        assert!(l.path().ends_with("push-ledger/Observation@fhir.example.org_8443_api_FHIR_R4.ndjson"));
        let text = std::fs::read_to_string(l.path()).unwrap();
        assert_eq!(text.lines().count(), 5, "{text}");
        assert!(text.lines().skip(1).all(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v.as_object().unwrap().keys().all(|k| ["hash", "state", "id", "at"].contains(&k.as_str()))
        }));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(l.path()).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    /// A second open of the same ledger while the first is held is refused.
    #[test]
    fn second_push_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Ledger::open(dir.path(), &base(), "Condition").unwrap();
        let err = Ledger::open(dir.path(), &base(), "Condition").unwrap_err();
        assert!(matches!(err, LedgerError::Busy { .. }), "{err}");
    }

    /// A torn last line (crash during the write) is cut off; later appends stay readable.
    #[test]
    fn torn_last_line_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let mut l = Ledger::open(dir.path(), &base(), "Observation").unwrap();
            l.record("aa", State::Pending, None).unwrap();
            l.path().to_path_buf()
        };
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"hash":"bb","sta"#).unwrap();
        drop(f);
        {
            let mut l = Ledger::open(dir.path(), &base(), "Observation").unwrap();
            assert_eq!(l.get("bb"), None);
            l.record("aa", State::Done, Some("e9")).unwrap();
        }
        let l = Ledger::open(dir.path(), &base(), "Observation").unwrap();
        assert_eq!(l.get("aa").and_then(|e| e.id.as_deref()), Some("e9"));
    }

    /// A damaged line before the last one, or another endpoint's header, stops the push with the file named.
    #[test]
    fn damaged_or_foreign_ledger_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), &base(), "Observation");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let header = r#"{"ledger":"fhirsync-push","version":1,"base":"https://fhir.example.org:8443/api/FHIR/R4","type":"Observation"}"#;
        std::fs::write(
            &path,
            format!("{header}\nnot json\n{{\"hash\":\"a\",\"state\":\"done\",\"at\":\"x\"}}\n"),
        )
        .unwrap();
        let err = Ledger::open(dir.path(), &base(), "Observation").unwrap_err();
        assert!(matches!(err, LedgerError::Damaged { line: 2, .. }), "{err}");
        assert!(err.to_string().contains("Observation@"), "{err}");
        std::fs::write(&path, header.replace("R4", "STU3") + "\n").unwrap();
        let err = Ledger::open(dir.path(), &base(), "Observation").unwrap_err();
        assert!(matches!(err, LedgerError::Mismatch { .. }), "{err}");
        assert!(Ledger::peek(dir.path(), &base(), "Condition").unwrap().is_empty(), "no ledger yet");
    }
}
