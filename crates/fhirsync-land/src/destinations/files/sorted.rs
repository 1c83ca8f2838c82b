//! Records sorted on disk (an external merge sort), for what a commit learns about rows in one
//! order and uses in another: [`SpillSort`] holds up to a byte budget of records in memory,
//! writes each full batch sorted to a run file of its own folder, and merges the runs when read
//! back ([`Sorted`]). The folder is scratch: it is removed when the sort is dropped, and a
//! killed commit's is removed by the next attempt with the rest of the commit's scratch folder.
//!
//! [`KeyIndex`] looks records up by a 128-bit key: in memory while they fit a budget, else in
//! a file sorted by key, of which memory holds one key per 1 KiB block (a lookup reads one).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::layout::{mkdirs, remove_dir};
use crate::{Error, Result};

/// Read buffer of each run while merging.
const RUN_BUFFER: usize = 64 << 10;

/// A record of a [`SpillSort`].
pub(super) trait Record: Ord + Sized {
    /// Appends the record's encoding to `out`.
    fn encode(&self, out: &mut Vec<u8>);
    /// Reads one record that [`Record::encode`] wrote; `None` at the end of the input.
    fn decode(input: &mut dyn BufRead) -> std::io::Result<Option<Self>>;
    /// The bytes the record holds in memory, counted against the budget.
    fn size(&self) -> usize;
}

/// Records being collected for a sort (see the module docs).
pub(super) struct SpillSort<T> {
    dir: PathBuf,
    budget: usize,
    held: usize,
    records: Vec<T>,
    runs: Vec<PathBuf>,
}

impl<T: Record> SpillSort<T> {
    /// An empty sort holding up to `budget` bytes of records in memory; runs go to the folder
    /// `dir` (created when the first run is written, removed with the sort).
    pub(super) fn new(dir: PathBuf, budget: usize) -> Self {
        SpillSort { dir, budget, held: 0, records: Vec::new(), runs: Vec::new() }
    }

    /// Adds a record.
    pub(super) fn push(&mut self, record: T) -> Result<()> {
        self.held += record.size();
        self.records.push(record);
        if self.held >= self.budget { self.spill() } else { Ok(()) }
    }

    /// Writes the records held as one sorted run.
    fn spill(&mut self) -> Result<()> {
        if self.runs.is_empty() {
            remove_dir(&self.dir)?;
            mkdirs(&self.dir)?;
        }
        let path = self.dir.join(format!("run-{}", self.runs.len()));
        let file = File::create(&path).map_err(Error::io("writing a sort run", &path))?;
        let mut out = BufWriter::with_capacity(RUN_BUFFER, file);
        self.records.sort_unstable();
        let mut buf = Vec::new();
        for r in self.records.drain(..) {
            buf.clear();
            r.encode(&mut buf);
            out.write_all(&buf).map_err(Error::io("writing a sort run", &path))?;
        }
        out.flush().map_err(Error::io("writing a sort run", &path))?;
        // The spare capacity goes too: the next run starts small again.
        self.records = Vec::new();
        self.held = 0;
        self.runs.push(path);
        Ok(())
    }

    /// The records in order; the sort is left empty.
    pub(super) fn sorted(&mut self) -> Result<Sorted<T>> {
        if self.runs.is_empty() {
            let mut records = std::mem::take(&mut self.records);
            records.sort_unstable();
            self.held = 0;
            let runs = Runs { dir: self.dir.clone(), paths: Vec::new() };
            return Ok(Sorted {
                memory: records.into_iter(),
                readers: Vec::new(),
                heap: BinaryHeap::new(),
                runs,
            });
        }
        if !self.records.is_empty() {
            self.spill()?;
        }
        let runs = Runs { dir: self.dir.clone(), paths: std::mem::take(&mut self.runs) };
        let mut readers = Vec::with_capacity(runs.paths.len());
        let mut heap = BinaryHeap::with_capacity(runs.paths.len());
        for (i, path) in runs.paths.iter().enumerate() {
            let file = File::open(path).map_err(Error::io("reading a sort run", path))?;
            let mut reader = BufReader::with_capacity(RUN_BUFFER, file);
            if let Some(r) = T::decode(&mut reader).map_err(Error::io("reading a sort run", path))? {
                heap.push(Reverse((r, i)));
            }
            readers.push(reader);
        }
        Ok(Sorted { memory: Vec::new().into_iter(), readers, heap, runs })
    }
}

impl<T> Drop for SpillSort<T> {
    fn drop(&mut self) {
        if !self.runs.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The run files of a sort, removed with their folder when dropped.
struct Runs {
    dir: PathBuf,
    paths: Vec<PathBuf>,
}

impl Drop for Runs {
    fn drop(&mut self) {
        if !self.paths.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The records of a [`SpillSort`] in order, merged from its runs.
pub(super) struct Sorted<T> {
    /// The records, when they all fitted in memory.
    memory: std::vec::IntoIter<T>,
    readers: Vec<BufReader<File>>,
    /// The next record of each run, with the run's index.
    heap: BinaryHeap<Reverse<(T, usize)>>,
    runs: Runs,
}

impl<T: Record> Sorted<T> {
    /// Sorted `records` (already in order), as a sort that held them all gives them.
    fn of(records: Vec<T>) -> Self {
        let runs = Runs { dir: PathBuf::new(), paths: Vec::new() };
        Sorted { memory: records.into_iter(), readers: Vec::new(), heap: BinaryHeap::new(), runs }
    }

    /// All the records, if the sort held them all in memory (nothing is left to read then).
    fn take_memory(&mut self) -> Option<Vec<T>> {
        self.runs.paths.is_empty().then(|| std::mem::take(&mut self.memory).collect())
    }

    /// The next record, without taking it.
    pub(super) fn peek(&self) -> Option<&T> {
        match self.heap.peek() {
            Some(Reverse((r, _))) => Some(r),
            None => self.memory.as_slice().first(),
        }
    }

    /// Takes the next record.
    pub(super) fn pop(&mut self) -> Result<Option<T>> {
        let Some(Reverse((r, i))) = self.heap.pop() else { return Ok(self.memory.next()) };
        let path = &self.runs.paths[i];
        if let Some(next) = T::decode(&mut self.readers[i]).map_err(Error::io("reading a sort run", path))? {
            self.heap.push(Reverse((next, i)));
        }
        Ok(Some(r))
    }
}

/// A [`Record`] with a 128-bit key and a fixed size in a [`KeyIndex`] file. Among records of
/// one key, the index keeps the first in sort order.
pub(super) trait Keyed: Record + Clone {
    /// Bytes of the record in a file.
    const SIZE: usize;
    fn key(&self) -> [u64; 2];
    /// Writes [`Keyed::SIZE`] bytes, the key first (big-endian, as [`key_of`] reads it).
    fn put(&self, out: &mut [u8]);
    /// Reads what [`Keyed::put`] wrote.
    fn get(bytes: &[u8]) -> Self;
}

/// The key at the start of a record's bytes.
pub(super) fn key_of(bytes: &[u8]) -> [u64; 2] {
    let word = |i: usize| u64::from_be_bytes(bytes[i..i + 8].try_into().unwrap_or_default());
    [word(0), word(8)]
}

/// Bytes read per lookup in a [`KeyIndex`] file.
const BLOCK_BYTES: usize = 1024;

/// Records by key (see the module docs).
pub(super) enum KeyIndex<R> {
    Memory(Vec<R>),
    /// `blocks`: the first key of each block; the file is removed with the index.
    File {
        file: File,
        path: PathBuf,
        blocks: Vec<[u64; 2]>,
        rows: usize,
    },
}

impl<R: Keyed> KeyIndex<R> {
    /// The records of `sort`, the first of each key; `each` sees every one kept, in key
    /// order. They stay in memory if the sort held them all and they take at most `memory`
    /// bytes; else they go to the file `path`.
    pub(super) fn build(
        sort: &mut SpillSort<R>,
        path: &Path,
        memory: usize,
        each: &mut dyn FnMut(&R),
    ) -> Result<Self> {
        let mut sorted = sort.sorted()?;
        if let Some(mut records) = sorted.take_memory() {
            records.dedup_by_key(|r| r.key());
            if records.len() * std::mem::size_of::<R>() <= memory {
                records.iter().for_each(each);
                records.shrink_to_fit();
                return Ok(KeyIndex::Memory(records));
            }
            sorted = Sorted::of(records);
        }
        Self::write(&mut sorted, path, each)
    }

    /// Writes the sorted records to the file `path`.
    fn write(sorted: &mut Sorted<R>, path: &Path, each: &mut dyn FnMut(&R)) -> Result<Self> {
        let per_block = BLOCK_BYTES / R::SIZE;
        let file = File::create(path).map_err(Error::io("writing a key index", path))?;
        let mut out = BufWriter::with_capacity(RUN_BUFFER, file);
        let (mut blocks, mut rows, mut last) = (Vec::new(), 0usize, None);
        let mut buf = vec![0u8; R::SIZE];
        while let Some(r) = sorted.pop()? {
            let key = r.key();
            if last == Some(key) {
                continue;
            }
            last = Some(key);
            each(&r);
            if rows.is_multiple_of(per_block) {
                blocks.push(key);
            }
            r.put(&mut buf);
            out.write_all(&buf).map_err(Error::io("writing a key index", path))?;
            rows += 1;
        }
        out.flush().map_err(Error::io("writing a key index", path))?;
        drop(out);
        let file = File::open(path).map_err(Error::io("reading a key index", path))?;
        blocks.shrink_to_fit();
        Ok(KeyIndex::File { file, path: path.to_path_buf(), blocks, rows })
    }

    /// The record of `key`, if any.
    pub(super) fn find(&self, key: [u64; 2]) -> Result<Option<R>> {
        let (file, path, blocks, rows) = match self {
            KeyIndex::Memory(records) => {
                let i = records.binary_search_by_key(&key, Keyed::key);
                return Ok(i.ok().map(|i| records[i].clone()));
            }
            KeyIndex::File { file, path, blocks, rows } => (file, path, blocks, *rows),
        };
        let block = match blocks.partition_point(|first| *first <= key) {
            0 => return Ok(None),
            n => n - 1,
        };
        let per_block = BLOCK_BYTES / R::SIZE;
        let start = block * per_block;
        let mut buf = [0u8; BLOCK_BYTES];
        let buf = &mut buf[..per_block.min(rows - start) * R::SIZE];
        read_at(file, buf, (start * R::SIZE) as u64).map_err(Error::io("reading a key index", path))?;
        let record = |i: usize| &buf[i * R::SIZE..(i + 1) * R::SIZE];
        let (mut lo, mut hi) = (0, buf.len() / R::SIZE);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match key_of(record(mid)).cmp(&key) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(R::get(record(mid)))),
            }
        }
        Ok(None)
    }
}

impl<R> Drop for KeyIndex<R> {
    fn drop(&mut self) {
        if let KeyIndex::File { path, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Reads `buf.len()` bytes at `offset`.
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(not(unix))]
    {
        use std::io::{Read, Seek};
        let mut f = file;
        f.seek(std::io::SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
}

/// Reads exactly `buf.len()` bytes, or none at the end of the input (`false`).
pub(super) fn read_record_bytes(input: &mut dyn BufRead, buf: &mut [u8]) -> std::io::Result<bool> {
    if input.fill_buf()?.is_empty() {
        return Ok(false);
    }
    input.read_exact(buf)?;
    Ok(true)
}

/// Reads a string of `len` bytes written by [`Record::encode`].
pub(super) fn read_string(input: &mut dyn BufRead, len: usize) -> std::io::Result<String> {
    let mut bytes = vec![0; len];
    input.read_exact(&mut bytes)?;
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The folder of a sort named `name` inside the commit's scratch folder `scratch`.
pub(super) fn sort_dir(scratch: &Path, name: &str) -> PathBuf {
    scratch.join(format!("sort-{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    struct Num(u64, String);

    impl Record for Num {
        fn encode(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.0.to_le_bytes());
            out.extend_from_slice(&(self.1.len() as u32).to_le_bytes());
            out.extend_from_slice(self.1.as_bytes());
        }
        fn decode(input: &mut dyn BufRead) -> std::io::Result<Option<Self>> {
            let mut head = [0u8; 12];
            if !read_record_bytes(input, &mut head)? {
                return Ok(None);
            }
            let n = u64::from_le_bytes(head[..8].try_into().unwrap());
            let len = u32::from_le_bytes(head[8..].try_into().unwrap()) as usize;
            Ok(Some(Num(n, read_string(input, len)?)))
        }
        fn size(&self) -> usize {
            8 + self.1.len()
        }
    }

    fn sorted_out(budget: usize, dir: &Path) -> Vec<Num> {
        let mut sort = SpillSort::new(dir.join("s"), budget);
        for i in 0..1000u64 {
            sort.push(Num((i * 7919) % 1000, format!("v{i}"))).unwrap();
        }
        let mut sorted = sort.sorted().unwrap();
        drop(sort);
        let mut out = Vec::new();
        while let Some(first) = sorted.peek().map(|n| n.0) {
            let r = sorted.pop().unwrap().unwrap();
            assert_eq!(r.0, first);
            out.push(r);
        }
        out
    }

    /// Records come back in order whether they fitted in memory or went through many runs,
    /// and the runs' folder goes with the sort.
    #[test]
    fn records_come_back_sorted_with_or_without_runs() {
        let dir = tempfile::tempdir().unwrap();
        let in_memory = sorted_out(usize::MAX, dir.path());
        let spilled = sorted_out(100, dir.path());
        assert_eq!(in_memory.len(), 1000);
        assert!(in_memory.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(in_memory, spilled);
        assert!(!dir.path().join("s").exists());
    }

    /// A keyed record: the key, then which copy it is (the lower copy sorts first and is kept).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    struct Pair([u64; 2], u64);

    impl Record for Pair {
        fn encode(&self, out: &mut Vec<u8>) {
            let mut b = [0u8; 24];
            self.put(&mut b);
            out.extend_from_slice(&b);
        }
        fn decode(input: &mut dyn BufRead) -> std::io::Result<Option<Self>> {
            let mut b = [0u8; 24];
            Ok(read_record_bytes(input, &mut b)?.then(|| Pair::get(&b)))
        }
        fn size(&self) -> usize {
            24
        }
    }

    impl Keyed for Pair {
        const SIZE: usize = 24;
        fn key(&self) -> [u64; 2] {
            self.0
        }
        fn put(&self, out: &mut [u8]) {
            out[..8].copy_from_slice(&self.0[0].to_be_bytes());
            out[8..16].copy_from_slice(&self.0[1].to_be_bytes());
            out[16..].copy_from_slice(&self.1.to_le_bytes());
        }
        fn get(bytes: &[u8]) -> Self {
            Pair(key_of(bytes), u64::from_le_bytes(bytes[16..24].try_into().unwrap()))
        }
    }

    /// In memory or in a file (many blocks, runs on disk), an index finds every key's first
    /// copy in sort order, finds no absent key (before, between and after the stored ones), and
    /// shows each kept record once; the file goes with the index.
    #[test]
    fn key_index_finds_the_first_copy_in_memory_and_in_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = |i: u64| [i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i + 1];
        for (memory, budget) in [(usize::MAX, usize::MAX), (0, 1000)] {
            let mut sort = SpillSort::new(dir.path().join("sort"), budget);
            for i in 0..2000u64 {
                // Every key twice, the copy to keep (1) pushed last.
                sort.push(Pair(key(i * 2), 2)).unwrap();
                sort.push(Pair(key(i * 2), 1)).unwrap();
            }
            let path = dir.path().join("index");
            let mut seen = 0;
            let index = KeyIndex::build(&mut sort, &path, memory, &mut |_| seen += 1).unwrap();
            assert_eq!(seen, 2000);
            assert_eq!(matches!(index, KeyIndex::File { .. }), memory == 0);
            for i in 0..2000u64 {
                assert_eq!(index.find(key(i * 2)).unwrap(), Some(Pair(key(i * 2), 1)), "{i}");
                assert_eq!(index.find(key(i * 2 + 1)).unwrap(), None, "{i}");
            }
            assert_eq!(index.find([0, 0]).unwrap(), None);
            assert_eq!(index.find([u64::MAX, u64::MAX]).unwrap(), None);
            drop(index);
            assert!(!path.exists());
        }
    }
}
