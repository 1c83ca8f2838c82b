//! Records sorted on disk (an external merge sort), for what a commit learns about rows in one
//! order and uses in another: [`SpillSort`] holds up to a byte budget of records in memory,
//! writes each full batch sorted to a run file of its own folder, and merges the runs when read
//! back ([`Sorted`]). The folder is scratch: it is removed when the sort is dropped, and a
//! killed commit's is removed by the next attempt with the rest of the commit's scratch folder.

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
}
