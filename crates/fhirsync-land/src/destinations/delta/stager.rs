//! Staging a run's resources in the Delta layout (`staged.rs`): each resource to the file of
//! its type and bucket, with its key line for reload and reload-and-compare.

use std::collections::HashMap;

use fhirsync_core::{Dataset, RawResource};

use super::staged;
use super::store::{Tables, row_bucket};
use crate::Result;
use crate::destinations::files::staging::Staging;
use crate::destinations::sql::schema::type_table;

/// The staging files of one type.
struct TypeFiles {
    /// Stem of each bucket's file.
    buckets: Vec<String>,
    /// Bytes in each bucket's file (the next line's offset).
    offsets: Vec<u64>,
    /// Stem of the keys file.
    keys: String,
}

impl TypeFiles {
    fn new(staging: &Staging, resource_type: &str, buckets: u32) -> Result<Self> {
        let stems: Vec<String> =
            (0..buckets).map(|b| staged::stem(resource_type, b as i32, buckets)).collect();
        let mut offsets = Vec::with_capacity(stems.len());
        for stem in &stems {
            offsets.push(staged::file_len(&staging.file(stem))?);
        }
        Ok(TypeFiles { buckets: stems, offsets, keys: staged::keys_stem(resource_type) })
    }
}

/// Stages resources into a run's staging folder.
pub(super) struct Stager {
    /// The next line's `seq`.
    seq: u64,
    types: HashMap<String, TypeFiles>,
    /// Whether key lines are written (reload and reload-and-compare).
    keys: bool,
    /// Encoding buffer of one line's head or key.
    line: Vec<u8>,
    /// The last staged resource's dataset and its text.
    dataset: (Dataset, String),
}

impl Stager {
    /// A stager for `staging`, a new folder or a `resumed` one (whose bucket counts it keeps).
    pub(super) fn start(staging: &Staging, resumed: bool, keys: bool) -> Result<Stager> {
        if resumed {
            staged::check_layout(staging)?;
            staged::trim_keys(staging)?;
        }
        let mut types = HashMap::new();
        for stem in staging.types()? {
            if let Some((resource_type, _, buckets)) = staged::parse_stem(&stem)
                && !types.contains_key(resource_type)
            {
                types.insert(resource_type.to_string(), TypeFiles::new(staging, resource_type, buckets)?);
            }
        }
        let seq = staged::first_seq(staging, resumed)?;
        Ok(Stager { seq, types, keys, line: Vec::new(), dataset: (Dataset::new(""), String::new()) })
    }

    /// Appends `resources` to their files (buffered until the staging's next checkpoint).
    /// A type's bucket count is its table's (or `default_buckets` for a new table), fixed
    /// from its first staged resource on.
    pub(super) fn stage(
        &mut self,
        staging: &mut Staging,
        tables: &Tables,
        default_buckets: u32,
        resources: &[RawResource],
    ) -> Result<()> {
        for r in resources {
            if !self.types.contains_key(&r.resource_type) {
                let table = tables.block_on(tables.open(&type_table(&r.resource_type)?))?;
                let files =
                    TypeFiles::new(staging, &r.resource_type, table.buckets(default_buckets)?.max(1))?;
                self.types.insert(r.resource_type.clone(), files);
            }
            let files = self.types.get_mut(&r.resource_type).expect("inserted above");
            let bucket = row_bucket(r.patient_id.as_deref(), &r.id, files.buckets.len() as u32) as usize;
            if self.dataset.0 != r.dataset {
                self.dataset = (r.dataset.clone(), r.dataset.to_string());
            }
            self.line.clear();
            staged::encode_head(&mut self.line, self.seq, r, &self.dataset.1)?;
            staging.append(&files.buckets[bucket], &[&self.line, r.json.as_bytes(), b"\n"])?;
            let (offset, len) = (files.offsets[bucket], self.line.len() + r.json.len());
            files.offsets[bucket] += len as u64 + 1;
            if self.keys {
                self.line.clear();
                staged::encode_key(&mut self.line, self.seq, bucket as u32, offset, len as u32, r)?;
                staging.append(&files.keys, &[&self.line])?;
            }
            self.seq += 1;
        }
        Ok(())
    }
}
