//! View tables of the file destinations: `view_<name>` next to the resource types in every
//! snapshot, re-flattened from the new snapshot's rows at each commit (a snapshot is rewritten
//! anyway, so there is no cheaper incremental path to keep in sync).

use std::path::Path;

use fhirsync_views::View;

use super::{FileDestination, SnapshotFormat};
use crate::Result;
use crate::destinations::sql::schema::view_table;
use crate::views::{CellValue, cell_value, flatten};

impl<F: SnapshotFormat> FileDestination<F> {
    /// Writes every view into `version`; returns the number of rows.
    pub(super) fn materialise_views(&self, version: &Path, views: &[View]) -> Result<u64> {
        let mut written = 0;
        for view in views {
            let table = view_table(view.name())?;
            let source = self.format.type_path(version, view.resource());
            let mut rows: Vec<Vec<CellValue>> = Vec::new();
            if source.exists() {
                self.format.read(&source, &mut |row| {
                    for values in flatten(view, &row.id, &row.resource)? {
                        let mut out =
                            vec![CellValue::Text(row.fhir_version.clone()), CellValue::Text(row.id.clone())];
                        for (c, v) in view.columns().iter().zip(values) {
                            out.push(cell_value(view, c, v)?);
                        }
                        rows.push(out);
                    }
                    Ok(())
                })?;
            }
            written += rows.len() as u64;
            self.format.write_view(version, &table, view, &rows)?;
        }
        Ok(written)
    }
}
