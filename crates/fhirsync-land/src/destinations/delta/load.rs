//! A full load of one type table in one pass over the staging: each bucket's staged lines are
//! written as they are read, their keys spilled by key group on the way. A key staged more
//! than once (a resumed run re-sent it, or it came under two patients) is found afterwards;
//! the buckets holding a superseded copy are written again without it.

use std::collections::{BTreeMap, HashSet};

use deltalake::kernel::Action;

use super::commit::write_all_lines;
use super::plan::{Ctx, Interner, MIN_LINE_BYTES, StagedKey, group, groups, staged_bytes};
use super::rows::BucketFiles;
use super::spill::Spill;
use super::store::{Table, Tables};
use crate::destination::RunMetrics;
use crate::destinations::files::staging::{KeyHasher, Staging};
use crate::{Error, Result};

/// Writes every bucket of a full load; returns the actions of the files written and the counts.
pub(super) fn full_load(
    ctx: &Ctx<'_>,
    tables: &Tables,
    table: &Table,
    staging: &Staging,
    stems: &[String],
    work: &std::path::Path,
) -> Result<(Vec<Action>, RunMetrics)> {
    let hasher = KeyHasher::default();
    let strings = Interner::default();
    let staged = staged_bytes(staging, stems)?;
    let mut keys: Spill<StagedKey> = Spill::new(work, "keys", groups(staged / MIN_LINE_BYTES));
    let mut written: Vec<Vec<Action>> = Vec::with_capacity(stems.len());
    for (bucket, stem) in stems.iter().enumerate() {
        let path = staging.file(stem);
        let mut out = BucketFiles::new(tables, table, ctx.run_id, bucket as i32, false);
        let parts = keys.parts();
        write_all_lines(&path, &mut out, &strings, &mut |head, offset, line| {
            let key = StagedKey::of(&hasher, head, bucket, offset, line)
                .map_err(|detail| Error::CorruptState { path: path.clone(), detail })?;
            keys.push(group(key.key, parts), &key)?;
            Ok(true)
        })?;
        written.push(out.finish()?);
    }
    let (unique, superseded) = dedupe(&mut keys)?;
    for (bucket, seqs) in superseded {
        tracing::info!(table = %table.name, bucket, copies = seqs.len(), "Resources staged twice; the bucket is written again with their last copies.");
        for action in std::mem::take(&mut written[bucket]) {
            if let Action::Add(add) = action {
                tables.block_on(table.delete_file(&add.path))?;
            }
        }
        let path = staging.file(&stems[bucket]);
        let mut out = BucketFiles::new(tables, table, ctx.run_id, bucket as i32, false);
        write_all_lines(&path, &mut out, &strings, &mut |head, _, _| Ok(!seqs.contains(&head.seq())))?;
        written[bucket] = out.finish()?;
    }
    let metrics = RunMetrics { staged: unique, inserted: unique, ..RunMetrics::default() };
    Ok((written.into_iter().flatten().collect(), metrics))
}

/// The number of distinct keys, and the `seq`s of the superseded copies by bucket.
fn dedupe(keys: &mut Spill<StagedKey>) -> Result<(u64, BTreeMap<usize, HashSet<u64>>)> {
    let mut unique = 0u64;
    let mut superseded: BTreeMap<usize, HashSet<u64>> = BTreeMap::new();
    for g in 0..keys.parts() {
        let mut group = keys.take(g)?;
        group.sort_unstable_by_key(|k| (k.key, k.seq));
        for run in group.chunk_by(|a, b| a.key == b.key) {
            unique += 1;
            for k in &run[..run.len() - 1] {
                superseded.entry(k.bucket as usize).or_default().insert(k.seq);
            }
        }
    }
    Ok((unique, superseded))
}
