//! View tables of the file destinations: `views/<name>` inside every snapshot (their own root,
//! beside the resource types), with the typed columns of [`crate::views::table_columns`].
//!
//! A view over a type whose file the new snapshot keeps is kept too (hard-linked) unless it was
//! redefined or its column mapping changed. A view over a rewritten type is carried: the rows
//! of the previous view file whose resource did not change are copied as they are, and only
//! the changed resources are flattened (if their cells do not fit the previous file's column
//! types, a Parquet decimal needing more digits, the view is flattened in full instead). A new
//! or redefined view, or one without a previous file of this layout, is flattened from every
//! row of its type.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use fhirsync_views::View;
use serde_json::Value;

use super::layout::views_dir;
use super::staging::KeyHasher;
use super::{FileDestination, Row, SnapshotFormat};
use crate::destinations::sql::schema::view_table;
use crate::views::{CellValue, TableColumn, table_columns, table_row};
use crate::{Error, Result};

/// The name of `view`'s file in the view root: its name in lower case, validated as the SQL
/// destinations validate it (which prefix it with `view_`).
pub(super) fn view_name(view: &View) -> Result<String> {
    view_table(view.name())?;
    Ok(view.name().to_ascii_lowercase())
}

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
    /// The file name ([`view_name`]).
    pub name: String,
    /// The table's columns ([`table_columns`]).
    pub columns: Vec<TableColumn>,
    pub mode: ViewMode,
    /// The flattened rows, cells in `columns` order.
    pub rows: Vec<Vec<CellValue>>,
}

impl<'v> ViewBuild<'v> {
    /// A build of `view` with no rows yet.
    pub(super) fn new(view: &'v View, mode: ViewMode) -> Result<Self> {
        Ok(ViewBuild { view, name: view_name(view)?, columns: table_columns(view)?, mode, rows: Vec::new() })
    }

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
            b.rows.push(table_row(view, fhir_version, id, values)?);
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
    /// Writes the built views into the view root of `version` (whose type files are complete);
    /// returns the number of rows flattened.
    pub(super) fn write_views(
        &self,
        version: &Path,
        builds: Vec<ViewBuild<'_>>,
        hasher: &KeyHasher,
    ) -> Result<u64> {
        let dir = views_dir(version);
        let mut flattened = 0;
        for b in builds {
            flattened += b.rows.len() as u64;
            let carried = match &b.mode {
                ViewMode::Full => {
                    self.format.write_view(&dir, &b.name, &b.columns, &b.rows)?;
                    true
                }
                ViewMode::Carry { old, drop } => {
                    let mut keep =
                        |fhir_version: &str, id: &str| !drop.contains(&hasher.key(fhir_version, id));
                    self.format.carry_view(old, &dir, &b.name, &b.columns, &mut keep, &b.rows)?
                }
            };
            if !carried {
                // The changed rows outgrew the previous file's columns: flatten the new type file.
                let mut full = [ViewBuild { mode: ViewMode::Full, rows: Vec::new(), ..b }];
                let source = self.format.type_path(version, full[0].view.resource());
                self.flatten_file(source.exists().then_some(source.as_path()), &mut full)?;
                let [full] = full;
                flattened += full.rows.len() as u64;
                self.format.write_view(&dir, &full.name, &full.columns, &full.rows)?;
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
