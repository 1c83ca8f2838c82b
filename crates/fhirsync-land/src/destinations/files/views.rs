//! View tables of the file destinations: `views/<name>` inside every snapshot (their own root,
//! beside the resource types), re-flattened from the new snapshot's rows at each commit (a
//! snapshot is rewritten anyway, so there is no cheaper incremental path to keep in sync).

use std::path::Path;

use fhirsync_views::View;

use super::layout::views_dir;
use super::{FileDestination, SnapshotFormat};
use crate::Result;
use crate::destinations::sql::schema::view_table;
use crate::views::{CellValue, flatten, table_columns, table_row};

impl<F: SnapshotFormat> FileDestination<F> {
    /// Writes every view into `version`; returns the number of rows.
    pub(super) fn materialise_views(&self, version: &Path, views: &[View]) -> Result<u64> {
        let mut written = 0;
        let dir = views_dir(version);
        for view in views {
            // Validates the name as the SQL destinations do; the files drop the `view_` prefix.
            view_table(view.name())?;
            let columns = table_columns(view)?;
            let source = self.format.type_path(version, view.resource());
            let mut rows: Vec<Vec<CellValue>> = Vec::new();
            if source.exists() {
                self.format.read(&source, &mut |row| {
                    for values in flatten(view, &row.id, &row.resource)? {
                        rows.push(table_row(view, &row.fhir_version, &row.id, values)?);
                    }
                    Ok(())
                })?;
            }
            written += rows.len() as u64;
            self.format.write_view(&dir, &view.name().to_ascii_lowercase(), &columns, &rows)?;
        }
        Ok(written)
    }
}
