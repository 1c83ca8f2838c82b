//! View tables of the file destinations: `view_<name>` in every snapshot.
//!
//! A view over a type whose file the new snapshot keeps is kept too (hard-linked) unless it was
//! redefined. A view over a rewritten type is carried: the rows of the previous view file whose
//! resource did not change are copied as they are, and only the changed resources are
//! flattened. A new or redefined view, or one without a previous file of this layout, is
//! flattened from every row of its type.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use fhirsync_views::View;
use serde_json::Value;

use super::staging::KeyHasher;
use super::{FileDestination, Row, SnapshotFormat};
use crate::views::{CellValue, cell_value};
use crate::{Error, Result};

/// How a view's new file is built.
pub(super) enum ViewMode {
    /// From every row of its type.
    Full,
    /// From the previous file `old`, minus the rows of the resources in `drop`, plus the
    /// changed resources.
    Carry { old: PathBuf, drop: HashSet<u128> },
}

/// One view being built during the commit of its type.
pub(super) struct ViewBuild<'v> {
    pub view: &'v View,
    pub table: String,
    pub mode: ViewMode,
    /// The flattened rows (`_fhir_version`, `_id`, then the view's columns).
    pub rows: Vec<Vec<CellValue>>,
}

impl ViewBuild<'_> {
    /// Whether a row must be flattened for this view: always when built in full, else only a
    /// changed one.
    fn wants(&self, changed: bool) -> bool {
        changed || matches!(self.mode, ViewMode::Full)
    }
}

/// Flattens the resource `resource` (`fhir_version`, `id`) into every build that wants it
/// (`changed`: the resource is new or changed in this run). It is parsed once for all of them.
pub(super) fn flatten(
    builds: &mut [ViewBuild<'_>],
    fhir_version: &str,
    id: &str,
    resource: &str,
    changed: bool,
) -> Result<()> {
    if !builds.iter().any(|b| b.wants(changed)) {
        return Ok(());
    }
    let value: Value = serde_json::from_str(resource)
        .map_err(|source| Error::Json { action: "parsing a landed resource for a view", source })?;
    for b in builds.iter_mut().filter(|b| b.wants(changed)) {
        let view = b.view;
        let rows = view.evaluate(&value).map_err(|source| Error::View {
            view: view.name().to_string(),
            resource_type: view.resource().to_string(),
            id: id.to_string(),
            source: Box::new(source),
        })?;
        for values in rows {
            let mut out = vec![CellValue::Text(fhir_version.to_string()), CellValue::Text(id.to_string())];
            for (c, v) in view.columns().iter().zip(values) {
                out.push(cell_value(view, c, v)?);
            }
            b.rows.push(out);
        }
    }
    Ok(())
}

/// Marks a resource's view rows for removal from every carried view.
pub(super) fn drop_resource(builds: &mut [ViewBuild<'_>], key: u128) {
    for b in builds {
        if let ViewMode::Carry { drop, .. } = &mut b.mode {
            drop.insert(key);
        }
    }
}

impl<F: SnapshotFormat> FileDestination<F> {
    /// Writes the built views into `version`; returns the number of rows flattened.
    pub(super) fn write_views(
        &self,
        version: &Path,
        builds: Vec<ViewBuild<'_>>,
        hasher: &KeyHasher,
    ) -> Result<u64> {
        let mut flattened = 0;
        for b in builds {
            flattened += b.rows.len() as u64;
            match &b.mode {
                ViewMode::Full => self.format.write_view(version, &b.table, b.view, &b.rows)?,
                ViewMode::Carry { old, drop } => {
                    let mut keep =
                        |fhir_version: &str, id: &str| !drop.contains(&hasher.key(fhir_version, id));
                    self.format.carry_view(old, version, &b.table, b.view, &mut keep, &b.rows)?;
                }
            }
        }
        Ok(flattened)
    }

    /// Flattens every row of the type file `source` (if any) into the builds.
    pub(super) fn flatten_file(&self, source: Option<&Path>, builds: &mut [ViewBuild<'_>]) -> Result<()> {
        if let Some(source) = source {
            self.format.read(source, &mut |row| flatten_row(builds, &row, false))?;
        }
        Ok(())
    }
}

/// [`flatten`] of a row.
pub(super) fn flatten_row(builds: &mut [ViewBuild<'_>], row: &Row, changed: bool) -> Result<()> {
    flatten(builds, &row.fhir_version, &row.id, &row.resource, changed)
}
