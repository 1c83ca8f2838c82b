//! The writer lock of SQLite and file destinations: one writer per destination, wherever it
//! runs, and no lock that needs a hand.
//!
//! The lock is a file where the data lives (next to the SQLite database, inside a file
//! destination's `_fhirsync` folder), held two ways at once:
//!
//! - an OS lock on the open file ([`File::try_lock`]): it dies with the process, so on one host a
//!   second writer fails fast and a killed run's lock is free at once;
//! - its content, JSON with the holder's host, pid, run id and a heartbeat refreshed every
//!   [`HEARTBEAT`] while the run lasts: a writer on another host sharing the folder (where the OS
//!   lock may not reach) sees a fresh heartbeat and fails fast; a heartbeat older than [`STALE`]
//!   is a dead run.
//!
//! A lock taken over from a dead run logs a warning naming it. The file is never deleted
//! (deleting it would let two processes lock two different files); a released lock says so in
//! its content.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// How often a holder refreshes its heartbeat.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(30);
/// Age after which a heartbeat from another host counts as a dead run.
pub(crate) const STALE: Duration = Duration::from_secs(120);

/// What the lock file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Holder {
    /// Host name of the holder.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// Its run, once begun.
    #[serde(default)]
    pub run_id: Option<String>,
    /// When it took the lock (RFC 3339).
    pub since: String,
    /// Its last heartbeat (RFC 3339).
    pub heartbeat: String,
    /// Set when the holder let the lock go.
    #[serde(default)]
    pub released: bool,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "held by host {} pid {}", self.host, self.pid)?;
        if let Some(run) = &self.run_id {
            write!(f, " run {run}")?;
        }
        write!(f, ", last heartbeat {}", self.heartbeat)
    }
}

/// This machine's host name (`unknown` when it cannot be read).
pub(crate) fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()))
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

struct Shared {
    file: Mutex<File>,
    holder: Mutex<Holder>,
    stop: AtomicBool,
}

/// A held writer lock; released (and its heartbeat stopped) on drop.
pub(crate) struct WriterLock {
    shared: Arc<Shared>,
    path: PathBuf,
    heartbeat: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterLock").field("path", &self.path).finish()
    }
}

fn write_holder(file: &mut File, holder: &Holder, path: &Path) -> Result<()> {
    let bytes =
        serde_json::to_vec(holder).map_err(|source| Error::Json { action: "encoding the lock", source })?;
    // In place: the OS lock belongs to this file, so it is never replaced.
    file.rewind().map_err(Error::io("writing the lock", path))?;
    file.write_all(&bytes).map_err(Error::io("writing the lock", path))?;
    file.set_len(bytes.len() as u64).map_err(Error::io("writing the lock", path))?;
    file.sync_data().map_err(Error::io("writing the lock", path))
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

fn age(heartbeat: &str) -> Option<Duration> {
    let at = chrono::DateTime::parse_from_rfc3339(heartbeat).ok()?;
    (chrono::Utc::now() - at.with_timezone(&chrono::Utc)).to_std().ok().or(Some(Duration::ZERO))
}

impl WriterLock {
    /// Takes the lock at `path` for `destination` (used in messages), or fails with
    /// [`Error::Locked`] naming the holder. A dead holder's lock is taken over with a warning.
    pub(crate) fn acquire(path: &Path, destination: &str) -> Result<WriterLock> {
        WriterLock::acquire_with(path, destination, HEARTBEAT)
    }

    /// [`WriterLock::acquire`] with the heartbeat refreshed every `every`.
    fn acquire_with(path: &Path, destination: &str, every: Duration) -> Result<WriterLock> {
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(Error::io("opening the writer lock", path))?;
        let locked = |holder: Option<Holder>| Error::Locked {
            destination: destination.to_string(),
            holder: holder.map_or_else(|| format!("lock `{}` is held", path.display()), |h| h.to_string()),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(locked(read_holder(&mut file))),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("taking the writer lock", path)(e)),
        }
        let host = host_name();
        if let Some(previous) = read_holder(&mut file).filter(|h| !h.released) {
            let fresh = age(&previous.heartbeat).is_some_and(|a| a < STALE);
            if previous.host != host && fresh {
                // Another host, alive: the OS lock does not reach across hosts on this folder.
                return Err(locked(Some(previous)));
            }
            tracing::warn!(
                host = %previous.host,
                pid = previous.pid,
                run_id = previous.run_id.as_deref().unwrap_or("-"),
                heartbeat = %previous.heartbeat,
                "Taking over the writer lock of a run that died; it is marked interrupted."
            );
        }
        let now = crate::destinations::sql::now();
        let holder = Holder {
            host,
            pid: std::process::id(),
            run_id: None,
            since: now.clone(),
            heartbeat: now,
            released: false,
        };
        write_holder(&mut file, &holder, path)?;
        let shared = Arc::new(Shared {
            file: Mutex::new(file),
            holder: Mutex::new(holder),
            stop: AtomicBool::new(false),
        });
        let beat = Arc::clone(&shared);
        let beat_path = path.to_path_buf();
        let heartbeat = std::thread::Builder::new()
            .name("fhirsync-lock".into())
            .spawn(move || heartbeat_loop(&beat, &beat_path, every))
            .map_err(Error::io("starting the lock heartbeat", path))?;
        Ok(WriterLock { shared, path: path.to_path_buf(), heartbeat: Some(heartbeat) })
    }

    /// Records the run that holds the lock.
    pub(crate) fn set_run(&self, run_id: &str) {
        let mut holder = self.shared.holder.lock().unwrap_or_else(|p| p.into_inner());
        holder.run_id = Some(run_id.to_string());
        let mut file = self.shared.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = write_holder(&mut file, &holder, &self.path) {
            tracing::warn!(%error, "Could not record the run in the writer lock.");
        }
    }
}

fn heartbeat_loop(shared: &Shared, path: &Path, every: Duration) {
    const TICK: Duration = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    while !shared.stop.load(Ordering::Acquire) {
        std::thread::sleep(TICK);
        waited += TICK;
        if waited < every {
            continue;
        }
        waited = Duration::ZERO;
        let mut holder = shared.holder.lock().unwrap_or_else(|p| p.into_inner());
        holder.heartbeat = crate::destinations::sql::now();
        let mut file = shared.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = write_holder(&mut file, &holder, path) {
            tracing::warn!(%error, "Could not refresh the writer lock's heartbeat.");
        }
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.heartbeat.take() {
            let _ = h.join();
        }
        let mut holder = self.shared.holder.lock().unwrap_or_else(|p| p.into_inner());
        holder.released = true;
        let mut file = self.shared.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(error) = write_holder(&mut file, &holder, &self.path) {
            tracing::warn!(%error, "Could not mark the writer lock released; the next run takes it over.");
        }
        let _ = file.unlock();
    }
}

/// Whether the lock at `path` is held by a live writer (read-only check for `status`): the OS
/// lock is held, or another host's heartbeat is fresh. A missing file is free.
pub(crate) fn is_held(path: &Path) -> bool {
    let Ok(mut file) = File::options().read(true).write(true).open(path) else { return false };
    match file.try_lock() {
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
        Ok(()) => {
            let held = read_holder(&mut file).is_some_and(|h| {
                !h.released && h.host != host_name() && age(&h.heartbeat).is_some_and(|a| a < STALE)
            });
            let _ = file.unlock();
            held
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second lock on the same file fails naming the holder's pid; after release it is free.
    #[test]
    fn second_writer_fails_then_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = WriterLock::acquire(&path, "test").unwrap();
        first.set_run("run-1");
        assert!(is_held(&path));
        let e = WriterLock::acquire(&path, "test").unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())) && e.contains("run-1"), "{e}");
        drop(first);
        assert!(!is_held(&path));
        WriterLock::acquire(&path, "test").unwrap();
    }

    /// The heartbeat in the lock file advances while the lock is held, and stops on release.
    #[test]
    fn heartbeat_is_refreshed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let lock = WriterLock::acquire_with(&path, "test", Duration::from_millis(100)).unwrap();
        let read = || -> Holder { serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap() };
        let first = read().heartbeat;
        let started = std::time::Instant::now();
        while read().heartbeat == first {
            assert!(started.elapsed() < Duration::from_secs(5), "the heartbeat never moved");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(lock);
        let last = read();
        assert!(last.released, "{last:?}");
    }

    /// A lock left by another host with a fresh heartbeat is refused; a stale one is taken over.
    #[test]
    fn other_host_heartbeat_decides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let mut holder = Holder {
            host: "elsewhere.example".into(),
            pid: 1,
            run_id: Some("r-other".into()),
            since: crate::destinations::sql::now(),
            heartbeat: crate::destinations::sql::now(),
            released: false,
        };
        std::fs::write(&path, serde_json::to_vec(&holder).unwrap()).unwrap();
        let e = WriterLock::acquire(&path, "test").unwrap_err().to_string();
        assert!(e.contains("elsewhere.example") && e.contains("r-other"), "{e}");
        holder.heartbeat = "2020-01-01T00:00:00.000Z".into();
        std::fs::write(&path, serde_json::to_vec(&holder).unwrap()).unwrap();
        WriterLock::acquire(&path, "test").expect("a stale lock is taken over");
    }
}
