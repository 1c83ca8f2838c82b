//! Writing files that hold secrets: mode 0600 from creation, written to a temporary file in the
//! same directory and renamed into place (readers never see a half-written file).

use std::io::Write;
use std::path::Path;

use crate::{Error, Result};

/// Atomically writes `bytes` to `path` with mode 0600 (Unix). With `overwrite == false` an
/// existing `path` is an [`Error::Exists`].
pub(crate) fn write_private(path: &Path, bytes: &[u8], overwrite: bool) -> Result<()> {
    if !overwrite && path.exists() {
        return Err(Error::Exists { path: path.to_path_buf() });
    }
    let file_err =
        |action: &'static str| move |source| Error::File { action, path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(file_err("create the directory of"))?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "secret".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(file_err("write"))
}
