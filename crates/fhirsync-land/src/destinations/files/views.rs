//! View tables of the file destinations: `view_<name>` next to the resource types in every
//! snapshot, re-flattened from the new snapshot's rows at each commit (a snapshot is rewritten
//! anyway, so there is no cheaper incremental path to keep in sync).

use std::path::Path;

use fhirsync_views::View;

use super::{Chunked, FileDestination, SnapshotFormat};
use crate::Result;
use crate::destinations::sql::schema::view_table;
use crate::views::{CellValue, cell_value, flatten};

impl<F: SnapshotFormat> FileDestination<F> {
    /// Writes every view into `version`, streaming its rows out in chunks; returns the number
    /// of rows.
    pub(super) fn materialise_views(&self, version: &Path, views: &[View]) -> Result<u64> {
        let mut written = 0;
        for view in views {
            let table = view_table(view.name())?;
            let source = self.format.type_path(version, view.resource());
            let mut out = Chunked::new(self.format.view_sink(version, &table, view)?);
            if source.exists() {
                self.format.read(&source, &mut |row| {
                    for values in flatten(view, &row.id, &row.resource)? {
                        let mut cells =
                            vec![CellValue::Text(row.fhir_version.clone()), CellValue::Text(row.id.clone())];
                        for (c, v) in view.columns().iter().zip(values) {
                            cells.push(cell_value(view, c, v)?);
                        }
                        out.push(cells)?;
                    }
                    Ok(())
                })?;
            }
            written += out.finish()?;
        }
        Ok(written)
    }
}
