//! Fixed-size records partitioned into parts, each buffered in memory (at most
//! [`PART_BUFFER`] bytes, and [`BUFFERS`] over all parts) and then appended to its own file:
//! the commit writes its key records by key group and its decisions by bucket, and reads one
//! part at a time, so its memory is one part, never the table.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use crate::destinations::files::layout::mkdirs;
use crate::{Error, Result};

/// Bytes a part buffers before they go to its file, at most.
const PART_BUFFER: usize = 64 << 10;
/// Bytes all the parts of a spill buffer together, at most (more parts buffer less each).
const BUFFERS: usize = 2 << 20;
/// Bytes a part buffers, at least.
const MIN_PART_BUFFER: usize = 4 << 10;

/// A record of [`Record::SIZE`] bytes.
pub(super) trait Record: Sized {
    const SIZE: usize;
    /// Appends the record's `SIZE` bytes.
    fn write(&self, out: &mut Vec<u8>);
    /// Reads a record from exactly `SIZE` bytes.
    fn read(bytes: &[u8]) -> Self;
}

struct Part {
    buf: Vec<u8>,
    file: Option<File>,
}

/// Records of type `R` in `parts` parts, spilled under `dir` as `<name>-<part>`.
pub(super) struct Spill<R: Record> {
    dir: PathBuf,
    name: &'static str,
    parts: Vec<Part>,
    /// Bytes each part buffers.
    buffer: usize,
    _record: PhantomData<R>,
}

impl<R: Record> Spill<R> {
    pub(super) fn new(dir: &Path, name: &'static str, parts: usize) -> Self {
        let parts: Vec<Part> = (0..parts.max(1)).map(|_| Part { buf: Vec::new(), file: None }).collect();
        let buffer = (BUFFERS / parts.len()).clamp(MIN_PART_BUFFER, PART_BUFFER);
        Spill { dir: dir.to_path_buf(), name, parts, buffer, _record: PhantomData }
    }

    pub(super) fn parts(&self) -> usize {
        self.parts.len()
    }

    fn path(&self, part: usize) -> PathBuf {
        self.dir.join(format!("{}-{part}", self.name))
    }

    /// Appends `record` to part `part`.
    pub(super) fn push(&mut self, part: usize, record: &R) -> Result<()> {
        record.write(&mut self.parts[part].buf);
        if self.parts[part].buf.len() >= self.buffer {
            self.flush(part)?;
        }
        Ok(())
    }

    fn flush(&mut self, part: usize) -> Result<()> {
        let path = self.path(part);
        let p = &mut self.parts[part];
        if p.file.is_none() {
            mkdirs(&self.dir)?;
            let file = OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .map_err(Error::io("creating a commit work file", &path))?;
            p.file = Some(file);
        }
        let file = p.file.as_mut().expect("opened above");
        file.write_all(&p.buf).map_err(Error::io("writing a commit work file", &path))?;
        p.buf.clear();
        Ok(())
    }

    /// Takes every record of part `part` (its file is deleted).
    pub(super) fn take(&mut self, part: usize) -> Result<Vec<R>> {
        let path = self.path(part);
        let p = &mut self.parts[part];
        let mut bytes = Vec::new();
        if let Some(mut file) = p.file.take() {
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(0)).map_err(Error::io("reading a commit work file", &path))?;
            file.read_to_end(&mut bytes).map_err(Error::io("reading a commit work file", &path))?;
            drop(file);
            std::fs::remove_file(&path).map_err(Error::io("removing a commit work file", &path))?;
        }
        bytes.append(&mut p.buf);
        p.buf = Vec::new();
        Ok(bytes.chunks_exact(R::SIZE).map(R::read).collect())
    }
}

/// Little-endian field codecs of the records.
pub(super) fn put_u128(out: &mut Vec<u8>, v: u128) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(super) fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}
pub(super) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Reads fixed-size fields in order from a record's bytes.
pub(super) struct Fields<'a>(pub &'a [u8]);

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split at N")
    }
    pub(super) fn u128(&mut self) -> u128 {
        u128::from_le_bytes(self.take())
    }
    pub(super) fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
    pub(super) fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    pub(super) fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    pub(super) fn bytes16(&mut self) -> [u8; 16] {
        self.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Pair(u64, u32);

    impl Record for Pair {
        const SIZE: usize = 12;
        fn write(&self, out: &mut Vec<u8>) {
            put_u64(out, self.0);
            put_u32(out, self.1);
        }
        fn read(bytes: &[u8]) -> Self {
            let mut f = Fields(bytes);
            Pair(f.u64(), f.u32())
        }
    }

    /// Records come back per part in the order pushed, from memory and from the part's file.
    #[test]
    fn parts_keep_their_records_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spill: Spill<Pair> = Spill::new(dir.path(), "t", 3);
        let n = 4 * PART_BUFFER / Pair::SIZE;
        for i in 0..n as u64 {
            spill.push((i % 3) as usize, &Pair(i, i as u32 * 7)).unwrap();
        }
        assert!(dir.path().join("t-1").exists(), "a full part spills to its file");
        for part in 0..3 {
            let got = spill.take(part).unwrap();
            let want: Vec<Pair> =
                (0..n as u64).filter(|i| i % 3 == part as u64).map(|i| Pair(i, i as u32 * 7)).collect();
            assert_eq!(got, want);
        }
        assert!(!dir.path().join("t-1").exists());
        assert!(spill.take(0).unwrap().is_empty());
    }
}
