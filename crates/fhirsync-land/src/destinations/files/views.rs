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
//!
//! Rows go to their file as they are flattened (the format's sink holds a bounded number, see
//! [`super::ViewSink`]), so a commit's memory does not grow with its views' rows.

use std::path::{Path, PathBuf};

use fhirsync_views::View;
use serde_json::Value;

use super::commit::remove_path;
use super::layout::views_dir;
use super::{FileDestination, Row, SnapshotFormat, ViewSink};
use crate::destinations::sql::schema::view_table;
use crate::views::{TableColumn, table_columns, table_row};
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
    /// From the previous file `old`, minus the rows of the resources that changed or went, plus
    /// the changed resources.
    Carry { old: PathBuf },
}

/// One view being built during the commit of its type. Its rows go to its file as they are
/// flattened (the sink holds a bounded number of them), never all at once in memory.
pub(super) struct ViewBuild<'v> {
    pub view: &'v View,
    /// The file name ([`view_name`]).
    pub name: String,
    /// The table's columns ([`table_columns`]).
    pub columns: Vec<TableColumn>,
    pub mode: ViewMode,
    /// Where the rows go: from the start when built in full; when carried, once the previous
    /// rows are copied ([`FileDestination::open_carried`]). A carried view without one (the
    /// old file has other columns) is built in full when its type file is complete.
    sink: Option<Box<dyn ViewSink>>,
    /// The rows flattened for it.
    pub flattened: u64,
}

impl<'v> ViewBuild<'v> {
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
            let row = table_row(view, fhir_version, id, values)?;
            b.flattened += 1;
            if let Some(sink) = &mut b.sink {
                sink.write(row)?;
            }
        }
    }
    Ok(())
}

impl<F: SnapshotFormat> FileDestination<F> {
    /// A build of `view` in `mode` into the version folder `version`; one built in full starts
    /// its file (`spill`: a folder for scratch files).
    pub(super) fn view_build<'v>(
        &self,
        view: &'v View,
        mode: ViewMode,
        version: &Path,
        spill: &Path,
    ) -> Result<ViewBuild<'v>> {
        let (name, columns) = (view_name(view)?, table_columns(view)?);
        let sink = match mode {
            ViewMode::Full => Some(self.full_view_sink(version, &name, &columns, spill)?),
            ViewMode::Carry { .. } => None,
        };
        Ok(ViewBuild { view, name, columns, mode, sink, flattened: 0 })
    }

    /// Starts the file of a view built in full (never written through a kept file's link).
    fn full_view_sink(
        &self,
        version: &Path,
        name: &str,
        columns: &[TableColumn],
        spill: &Path,
    ) -> Result<Box<dyn ViewSink>> {
        remove_path(&self.format.view_path(version, name))?;
        let spill = spill.join(format!("view-{name}.arrows"));
        self.format.view_writer(&views_dir(version), name, columns, &spill)
    }

    /// Starts the files of the carried builds with the previous rows of the resources `keep`
    /// accepts by `(fhir_version, id)`.
    pub(super) fn open_carried(
        &self,
        builds: &mut [ViewBuild<'_>],
        version: &Path,
        keep: &mut dyn FnMut(&str, &str) -> Result<bool>,
    ) -> Result<()> {
        for b in builds {
            if let ViewMode::Carry { old } = &b.mode {
                remove_path(&self.format.view_path(version, &b.name))?;
                b.sink = self.format.carry_view(old, &views_dir(version), &b.name, &b.columns, keep)?;
            }
        }
        Ok(())
    }

    /// Completes the built views in `version` (whose type files are complete); a carried view
    /// whose new rows outgrew the previous file's columns is built in full from the new type
    /// file. Returns the number of rows flattened.
    pub(super) fn finish_views(
        &self,
        version: &Path,
        builds: Vec<ViewBuild<'_>>,
        spill: &Path,
    ) -> Result<u64> {
        let mut flattened = 0;
        for mut b in builds {
            let carried = match b.sink.take() {
                Some(sink) => sink.finish()?,
                None => false,
            };
            flattened += b.flattened;
            if !carried {
                // The changed rows outgrew the previous file's columns: flatten the new type file.
                let sink = self.full_view_sink(version, &b.name, &b.columns, spill)?;
                let mut full = [ViewBuild { mode: ViewMode::Full, sink: Some(sink), flattened: 0, ..b }];
                let source = self.format.type_path(version, full[0].view.resource());
                self.flatten_file(source.exists().then_some(source.as_path()), &mut full)?;
                let [full] = full;
                flattened += full.flattened;
                if let Some(sink) = full.sink {
                    sink.finish()?;
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
