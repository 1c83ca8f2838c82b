//! Folder layout and small durable-file helpers of the file destinations.
//!
//! ```text
//! <dir>/current -> versions/<run>          symlink switched atomically (unix)
//! <dir>/versions/<run>/...                 one complete snapshot per committed run: resource types
//!                                          (`resource_type=<Type>/`, `<Type>.ndjson`) at the top,
//! <dir>/versions/<run>/views/<view>...     view tables in their own root, so a glob over the
//!                                          types (`current/*/*.parquet`) never meets a view
//! <dir>/versions/<run>/_fhirsync/run.json  the run's metrics (written before the switch)
//! <dir>/versions/<run>/_fhirsync/cohort_exits.json
//! <dir>/changes/run_id=<run>/...           reload-and-compare change records
//! <dir>/_fhirsync/CURRENT                  name of the current version (the commit point)
//! <dir>/_fhirsync/runs.json                every run: method, status, times, counts, errors
//! <dir>/_fhirsync/schema.json              the folder's schema version (see `crate::schema_version`)
//! <dir>/_fhirsync/staging/<run>/           durable staging of the unfinished run
//! ```

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Paths of one file destination.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Self {
        Layout { root: root.to_path_buf() }
    }
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }
    pub(crate) fn meta(&self) -> PathBuf {
        self.root.join("_fhirsync")
    }
    /// The writer lock (see [`crate::lock`]).
    pub(crate) fn lock_file(&self) -> PathBuf {
        self.meta().join("lock")
    }
    pub(crate) fn runs_file(&self) -> PathBuf {
        self.meta().join("runs.json")
    }
    /// The schema version record (see [`crate::schema_version`]).
    pub(crate) fn schema_file(&self) -> PathBuf {
        self.meta().join("schema.json")
    }
    pub(crate) fn current_file(&self) -> PathBuf {
        self.meta().join("CURRENT")
    }
    pub(crate) fn staging(&self, run_id: &str) -> PathBuf {
        self.meta().join("staging").join(run_id)
    }
    pub(crate) fn versions(&self) -> PathBuf {
        self.root.join("versions")
    }
    pub(crate) fn version(&self, run_id: &str) -> PathBuf {
        self.versions().join(run_id)
    }
    pub(crate) fn changes(&self, run_id: &str) -> PathBuf {
        self.root.join("changes").join(format!("run_id={run_id}"))
    }
    pub(crate) fn current_link(&self) -> PathBuf {
        self.root.join("current")
    }

    /// The committed version, if any.
    pub(crate) fn current_version(&self) -> Result<Option<String>> {
        let path = self.current_file();
        match fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading the current version", path)(e)),
        }
    }

    /// Switches readers to `version`: first the `CURRENT` file (the commit point), then the
    /// `current` symlink, each replaced by an atomic rename.
    pub(crate) fn switch_to(&self, version: &str) -> Result<()> {
        write_atomic(&self.current_file(), version.as_bytes())?;
        #[cfg(unix)]
        {
            let tmp = self.root.join(format!(".current-{version}"));
            let _ = fs::remove_file(&tmp);
            std::os::unix::fs::symlink(Path::new("versions").join(version), &tmp)
                .map_err(Error::io("creating the current symlink", &tmp))?;
            fs::rename(&tmp, self.current_link())
                .map_err(Error::io("switching the current symlink", self.current_link()))?;
        }
        Ok(())
    }
}

/// The root of the view tables inside a version folder.
pub(crate) fn views_dir(version: &Path) -> PathBuf {
    version.join(VIEWS_DIR)
}

/// Name of the view root inside a version folder.
pub(crate) const VIEWS_DIR: &str = "views";

/// Writes `bytes` to `path` durably: temp file, fsync, rename, fsync of the folder.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(Error::io("creating a folder", dir))?;
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(Error::io("creating a file", &tmp))?;
    f.write_all(bytes).map_err(Error::io("writing a file", &tmp))?;
    f.sync_all().map_err(Error::io("syncing a file", &tmp))?;
    fs::rename(&tmp, path).map_err(Error::io("renaming a file", path))?;
    sync_dir(dir);
    Ok(())
}

/// Best-effort fsync of a folder so renames inside it survive a crash.
pub(crate) fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Creates a folder and its parents.
pub(crate) fn mkdirs(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(Error::io("creating a folder", dir))
}

/// Removes a folder tree if it exists.
pub(crate) fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("removing a folder", dir)(e)),
    }
}
