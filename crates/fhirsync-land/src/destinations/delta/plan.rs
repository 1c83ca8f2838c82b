//! What a run does to each row of a type table, decided from keys alone: the staged lines'
//! heads and the key columns of the table's files, joined by key group so that only one
//! group's keys are in memory (a grace hash join over [`Spill`]s). The decisions are written
//! by bucket ([`Write`]: a staged line to write; [`Fix`]: an old row that does not stay as it
//! is) for the pass that writes the files, one bucket at a time.
//!
//! Rows match by `(fhir_version, id)` whatever their bucket: a resource whose patient changed
//! is an update that moves it to its new bucket, and a resource staged under two patients
//! keeps only its last copy.

use std::collections::{BTreeSet, HashMap, HashSet};

use arrow_array::Array;

use fhirsync_core::RunScope;

use super::spill::{Fields, Record, Spill, put_u32, put_u64, put_u128};
use super::staged;
use super::store::{BATCH_ROWS, DataFile, Table, Tables};
use crate::config::Method;
use crate::destination::RunMetrics;
use crate::destinations::files::staging::{KeyHasher, Staging, hash_prefix};
use crate::{Error, Result};

/// Columns the key scan reads.
const KEY_COLUMNS: [&str; 7] =
    ["id", "patient_id", "fhir_version", "dataset", "content_hash", "first_seen_run", "last_seen_run"];
/// Key records per group the join holds in memory (both sides), at most about.
const GROUP_RECORDS: u64 = 128 * 1024;
/// Bytes per staged line, and per key line, assumed when sizing the groups (they are rarely
/// smaller).
pub(super) const MIN_LINE_BYTES: u64 = 384;
const MIN_KEY_BYTES: u64 = 96;
/// An interned string that is not there: a null `last_seen_run`, or the run's own id as
/// `first_seen_run`.
pub(super) const NONE: u32 = u32::MAX;

/// The run-wide inputs of a table's apply.
pub(super) struct Ctx<'a> {
    pub run_id: &'a str,
    pub method: Method,
    pub scope: &'a RunScope,
    /// The completed scopes as `version \u{1} patient \u{1} dataset`.
    pub complete: HashSet<String>,
    pub evaluate_exits: bool,
    pub delete_exits: bool,
}

impl Ctx<'_> {
    pub(super) fn compare(&self) -> bool {
        self.method == Method::ReloadAndCompare
    }

    /// Whether a row not re-read may be deleted, and whether its patient left the cohort.
    fn unread(&self, key: &mut String, version: &str, patient: Option<&str>, dataset: &str) -> (bool, bool) {
        let exited = self.evaluate_exits && patient.is_some_and(|p| !self.scope.cohort.contains(p));
        let in_cohort = patient.is_none_or(|p| self.scope.cohort.contains(p));
        let mut complete = |patient: Option<&str>| {
            key.clear();
            key.push_str(version);
            key.push('\u{1}');
            key.push_str(patient.unwrap_or(""));
            key.push('\u{1}');
            key.push_str(dataset);
            self.complete.contains(key.as_str())
        };
        let deletable = complete(patient) || (in_cohort && complete(None)) || (exited && self.delete_exits);
        (deletable, exited)
    }
}

/// The key `scope_key` of a completed scope in [`Ctx::complete`].
pub(super) fn scope_key(version: &str, patient: Option<&str>, dataset: &str) -> String {
    format!("{version}\u{1}{}\u{1}{dataset}", patient.unwrap_or(""))
}

/// Strings interned to `u32` (run ids, exited patients).
#[derive(Default)]
pub(super) struct Interner {
    list: Vec<String>,
    map: HashMap<String, u32>,
}

impl Interner {
    pub(super) fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.map.get(s) {
            return i;
        }
        let i = self.list.len() as u32;
        self.list.push(s.to_string());
        self.map.insert(s.to_string(), i);
        i
    }

    /// The string of `id` (`None` for [`NONE`]).
    pub(super) fn get(&self, id: u32) -> Option<&str> {
        self.list.get(id as usize).map(String::as_str)
    }
}

/// A staged line's key, and where the line is.
#[derive(Debug, Clone, Copy)]
pub(super) struct StagedKey {
    pub key: u128,
    pub seq: u64,
    pub bucket: u32,
    pub hash: [u8; 16],
    /// Offset and length (without the newline) of the line in its bucket's staging file.
    pub offset: u64,
    pub len: u32,
}

impl Record for StagedKey {
    const SIZE: usize = 56;
    fn write(&self, out: &mut Vec<u8>) {
        put_u128(out, self.key);
        put_u64(out, self.seq);
        put_u32(out, self.bucket);
        out.extend_from_slice(&self.hash);
        put_u64(out, self.offset);
        put_u32(out, self.len);
    }
    fn read(bytes: &[u8]) -> Self {
        let mut f = Fields(bytes);
        StagedKey {
            key: f.u128(),
            seq: f.u64(),
            bucket: f.u32(),
            hash: f.bytes16(),
            offset: f.u64(),
            len: f.u32(),
        }
    }
}

impl StagedKey {
    /// The key of staged line `line` at `offset` of bucket `bucket`'s file.
    pub(super) fn of(
        hasher: &KeyHasher,
        head: &staged::Head<'_>,
        bucket: usize,
        offset: u64,
        line: &[u8],
    ) -> std::result::Result<StagedKey, String> {
        let hash = hash_prefix(head.content_hash())
            .ok_or_else(|| "a staged content hash that is not hex".to_string())?;
        Ok(StagedKey {
            key: hasher.key(head.fhir_version(), head.id()),
            seq: head.seq(),
            bucket: bucket as u32,
            hash,
            offset,
            len: line.len() as u32,
        })
    }
}

/// An old row's key and what the join needs of it.
#[derive(Debug, Clone, Copy)]
struct OldKey {
    key: u128,
    file: u32,
    row: u32,
    hash: [u8; 16],
    first_seen: u32,
    last_seen: u32,
    /// Whether the row may be deleted when not re-read.
    deletable: bool,
    /// The row's patient when it left the cohort, else [`NONE`].
    exited: u32,
}

impl Record for OldKey {
    const SIZE: usize = 53;
    fn write(&self, out: &mut Vec<u8>) {
        put_u128(out, self.key);
        put_u32(out, self.file);
        put_u32(out, self.row);
        out.extend_from_slice(&self.hash);
        put_u32(out, self.first_seen);
        put_u32(out, self.last_seen);
        out.push(u8::from(self.deletable));
        put_u32(out, self.exited);
    }
    fn read(bytes: &[u8]) -> Self {
        let mut f = Fields(bytes);
        OldKey {
            key: f.u128(),
            file: f.u32(),
            row: f.u32(),
            hash: f.bytes16(),
            first_seen: f.u32(),
            last_seen: f.u32(),
            deletable: f.u8() != 0,
            exited: f.u32(),
        }
    }
}

/// The change data feed type of a written row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    None,
    Insert,
    PostImage,
}

/// A staged line to write (the last copy of its resource), with its `first_seen_run`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Write {
    pub seq: u64,
    /// Offset and length of the line in its bucket's staging file.
    pub offset: u64,
    pub len: u32,
    /// Interned, or [`NONE`] for the run itself.
    pub first_seen: u32,
    pub change: Change,
}

impl Record for Write {
    const SIZE: usize = 25;
    fn write(&self, out: &mut Vec<u8>) {
        put_u64(out, self.seq);
        put_u64(out, self.offset);
        put_u32(out, self.len);
        put_u32(out, self.first_seen);
        out.push(self.change as u8);
    }
    fn read(bytes: &[u8]) -> Self {
        let mut f = Fields(bytes);
        let (seq, offset, len, first_seen) = (f.u64(), f.u64(), f.u32(), f.u32());
        let change = match f.u8() {
            1 => Change::Insert,
            2 => Change::PostImage,
            _ => Change::None,
        };
        Write { seq, offset, len, first_seen, change }
    }
}

/// What happens to an old row of a rewritten file that does not stay as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Replaced by its staged copy (an `update_preimage` in the feed).
    Updated,
    /// Gone (a `delete`).
    Deleted,
    /// Stays with `last_seen_run` set to [`Fix::last`] (an update of that column in the
    /// feed when it differs; in a reload, every row carried over).
    SetLast,
}

/// An old row's [`Action`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Fix {
    pub file: u32,
    pub row: u32,
    pub action: Action,
    /// Interned `last_seen_run`, or [`NONE`] for null.
    pub last: u32,
}

impl Record for Fix {
    const SIZE: usize = 13;
    fn write(&self, out: &mut Vec<u8>) {
        put_u32(out, self.file);
        put_u32(out, self.row);
        out.push(self.action as u8);
        put_u32(out, self.last);
    }
    fn read(bytes: &[u8]) -> Self {
        let mut f = Fields(bytes);
        let (file, row) = (f.u32(), f.u32());
        let action = match f.u8() {
            0 => Action::Updated,
            1 => Action::Deleted,
            _ => Action::SetLast,
        };
        Fix { file, row, action, last: f.u32() }
    }
}

/// A type table's decisions.
pub(super) struct Plan {
    /// Staged lines to write, by bucket.
    pub writes: Spill<Write>,
    /// Old rows that change, by the bucket of their file.
    pub fixes: Spill<Fix>,
    /// Files rewritten (or, for full-load and reload, read for rows carried over).
    pub touched: BTreeSet<u32>,
    /// Run ids and exited patients by interned id.
    pub strings: Interner,
    pub metrics: RunMetrics,
    pub flagged: BTreeSet<String>,
}

/// The inputs of [`plan`] for one type table.
pub(super) struct Inputs<'a> {
    pub tables: &'a Tables,
    pub table: &'a Table,
    pub staging: &'a Staging,
    /// The staging stem of each bucket.
    pub stems: &'a [String],
    /// The staging stem of the type's keys file.
    pub keys: &'a str,
    pub files: &'a [DataFile],
    /// The run of the table's latest commit.
    pub prev_run: Option<&'a str>,
    /// Folder for the spilled records.
    pub work: &'a std::path::Path,
}

/// Decides what a reload or reload-and-compare does to every row of the table (see the module
/// docs; a full load needs no plan, see `load.rs`).
pub(super) fn plan(ctx: &Ctx<'_>, input: &Inputs<'_>) -> Result<Plan> {
    let buckets = input.stems.len();
    let old_rows: u64 = input.files.iter().map(|f| f.rows.unwrap_or(BATCH_ROWS as u64)).sum();
    let key_bytes = super::staged::file_len(&input.staging.file(input.keys))?;
    let groups = groups(old_rows + key_bytes / MIN_KEY_BYTES);
    let hasher = KeyHasher::default();
    let mut strings = Interner::default();
    let mut staged: Spill<StagedKey> = Spill::new(input.work, "staged", groups);
    scan_staged(input, &hasher, &mut staged)?;
    let mut old: Spill<OldKey> = Spill::new(input.work, "old", groups);
    scan_old(ctx, input, &hasher, &mut strings, &mut old)?;
    let prev = input.prev_run.map(|r| strings.id(r));
    let mut join = Join {
        ctx,
        prev,
        files: input.files,
        buckets,
        plan: Plan {
            writes: Spill::new(input.work, "writes", buckets),
            fixes: Spill::new(input.work, "fixes", buckets),
            touched: BTreeSet::new(),
            strings,
            metrics: RunMetrics::default(),
            flagged: BTreeSet::new(),
        },
    };
    for g in 0..groups {
        join.group(staged.take(g)?, old.take(g)?)?;
    }
    if !ctx.compare() {
        // A reload replaces every file.
        join.plan.touched = (0..input.files.len() as u32).collect();
    }
    Ok(join.plan)
}

/// Bytes staged in `stems`.
pub(super) fn staged_bytes(staging: &Staging, stems: &[String]) -> Result<u64> {
    let mut bytes = 0;
    for stem in stems {
        bytes += staged::file_len(&staging.file(stem))?;
    }
    Ok(bytes)
}

/// How many key groups hold the keys of `records` rows.
pub(super) fn groups(records: u64) -> usize {
    (records / GROUP_RECORDS + 1).min(4096) as usize
}

/// The key group of a key.
pub(super) fn group(key: u128, groups: usize) -> usize {
    (key as u64 % groups as u64) as usize
}

/// Spills the key of every staged line, from the type's keys file.
fn scan_staged(input: &Inputs<'_>, hasher: &KeyHasher, out: &mut Spill<StagedKey>) -> Result<()> {
    let groups = out.parts();
    let path = input.staging.file(input.keys);
    if !path.exists() && staged_bytes(input.staging, input.stems)? > 0 {
        return Err(Error::CorruptState { path, detail: "staged lines without their keys file".into() });
    }
    staged::scan(&path, &mut |_, line| {
        let corrupt = |detail: String| Error::CorruptState { path: path.clone(), detail };
        let k = staged::parse_key(line).map_err(corrupt)?;
        let hash = hash_prefix(k.content_hash())
            .ok_or_else(|| corrupt("a staged content hash that is not hex".into()))?;
        let key = StagedKey {
            key: hasher.key(k.fhir_version(), k.id()),
            seq: k.seq(),
            bucket: k.bucket(),
            hash,
            offset: k.offset(),
            len: k.len(),
        };
        out.push(group(key.key, groups), &key)
    })
}

/// [`Ctx::unread`] of the rows of one patient and dataset, which come together: the last
/// answer is reused.
#[derive(Default)]
struct UnreadMemo {
    /// Scratch for the scope key.
    key: String,
    /// Version, patient and dataset of the last answer, and the answer.
    last: Option<(String, Option<String>, String)>,
    answer: (bool, bool),
}

impl UnreadMemo {
    fn get(&mut self, ctx: &Ctx<'_>, version: &str, patient: Option<&str>, dataset: &str) -> (bool, bool) {
        let same = self
            .last
            .as_ref()
            .is_some_and(|(v, p, d)| v == version && p.as_deref() == patient && d == dataset);
        if !same {
            self.answer = ctx.unread(&mut self.key, version, patient, dataset);
            self.last = Some((version.to_string(), patient.map(str::to_string), dataset.to_string()));
        }
        self.answer
    }
}

/// Spills the key of every row of the table's files, with what the join needs of it.
fn scan_old(
    ctx: &Ctx<'_>,
    input: &Inputs<'_>,
    hasher: &KeyHasher,
    strings: &mut Interner,
    out: &mut Spill<OldKey>,
) -> Result<()> {
    let groups = out.parts();
    let name = &input.table.name;
    let mut memo = UnreadMemo::default();
    for (file, f) in input.files.iter().enumerate() {
        let mut batches = input.tables.block_on(input.table.read(&f.path, Some(&KEY_COLUMNS)))?;
        let mut row = 0u32;
        while let Some(batch) = input.tables.block_on(batches.next())? {
            let col = |c: &str| super::rows::strings(&batch, c, name);
            let (id, patient, version, dataset, hash, first, last_seen) = (
                col("id")?,
                col("patient_id")?,
                col("fhir_version")?,
                col("dataset")?,
                col("content_hash")?,
                col("first_seen_run")?,
                col("last_seen_run")?,
            );
            for r in 0..batch.num_rows() {
                let p = (!patient.is_null(r)).then(|| patient.value(r));
                let (v, d) = (version.value(r), dataset.value(r));
                let (deletable, exited) = memo.get(ctx, v, p, d);
                let hash = hash_prefix(hash.value(r)).ok_or_else(|| Error::CorruptState {
                    path: name.into(),
                    detail: "a content hash that is not hex".into(),
                })?;
                let key = hasher.key(v, id.value(r));
                let record = OldKey {
                    key,
                    file: file as u32,
                    row,
                    hash,
                    first_seen: strings.id(first.value(r)),
                    last_seen: if last_seen.is_null(r) { NONE } else { strings.id(last_seen.value(r)) },
                    deletable,
                    exited: match (exited, p) {
                        (true, Some(p)) => strings.id(p),
                        _ => NONE,
                    },
                };
                out.push(group(key, groups), &record)?;
                row += 1;
            }
        }
    }
    Ok(())
}

/// The join of one key group at a time.
struct Join<'a> {
    ctx: &'a Ctx<'a>,
    /// The run of the table's latest commit, interned.
    prev: Option<u32>,
    files: &'a [DataFile],
    buckets: usize,
    plan: Plan,
}

impl Join<'_> {
    fn group(&mut self, mut staged: Vec<StagedKey>, mut old: Vec<OldKey>) -> Result<()> {
        staged.sort_unstable_by_key(|s| (s.key, s.seq));
        old.sort_unstable_by_key(|o| o.key);
        let mut olds = old.into_iter().peekable();
        let mut i = 0;
        while i < staged.len() {
            // The last copy of the key wins.
            let mut j = i;
            while j + 1 < staged.len() && staged[j + 1].key == staged[i].key {
                j += 1;
            }
            let winner = staged[j];
            i = j + 1;
            while let Some(o) = olds.next_if(|o| o.key < winner.key) {
                self.unread(&o)?;
            }
            let o = olds.next_if(|o| o.key == winner.key);
            self.staged(&winner, o.as_ref())?;
        }
        for o in olds {
            self.unread(&o)?;
        }
        Ok(())
    }

    /// A staged resource (the last copy) and its old row.
    fn staged(&mut self, s: &StagedKey, old: Option<&OldKey>) -> Result<()> {
        let m = &mut self.plan.metrics;
        m.staged += 1;
        let compare = self.ctx.compare();
        let write =
            |first_seen, change| Write { seq: s.seq, offset: s.offset, len: s.len, first_seen, change };
        let w = match old {
            None => {
                m.inserted += 1;
                write(NONE, if compare { Change::Insert } else { Change::None })
            }
            Some(o) if !compare => write(o.first_seen, Change::None),
            Some(o) if o.hash != s.hash => {
                m.updated += 1;
                self.fix(o, Action::Updated, NONE)?;
                write(o.first_seen, Change::PostImage)
            }
            Some(o) => {
                m.unchanged += 1;
                if o.last_seen != NONE {
                    // Seen again: no longer stale.
                    self.fix(o, Action::SetLast, NONE)?;
                }
                return Ok(());
            }
        };
        self.plan.writes.push(s.bucket as usize, &w)
    }

    /// An old row not re-read.
    fn unread(&mut self, o: &OldKey) -> Result<()> {
        if o.exited != NONE
            && let Some(p) = self.plan.strings.get(o.exited)
        {
            self.plan.flagged.insert(p.to_string());
        }
        if o.deletable {
            self.plan.metrics.deleted += 1;
            return if self.ctx.compare() { self.fix(o, Action::Deleted, NONE) } else { Ok(()) };
        }
        self.plan.metrics.kept += 1;
        // Fresh until now: the last run that saw it is the table's latest.
        let last = if o.last_seen == NONE { self.prev.unwrap_or(NONE) } else { o.last_seen };
        if !self.ctx.compare() || last != o.last_seen {
            self.fix(o, Action::SetLast, last)?;
        }
        Ok(())
    }

    fn fix(&mut self, o: &OldKey, action: Action, last: u32) -> Result<()> {
        let file = &self.files[o.file as usize];
        let bucket = file.bucket.filter(|b| (0..self.buckets as i32).contains(b)).ok_or_else(|| {
            Error::CorruptState {
                path: file.path.to_string().into(),
                detail: format!("a data file outside the table's {} buckets", self.buckets),
            }
        })?;
        self.plan.touched.insert(o.file);
        self.plan.fixes.push(bucket as usize, &Fix { file: o.file, row: o.row, action, last })
    }
}
