//! The embedded store's file as seen from outside SQLite: its identity (device and inode),
//! so that a file deleted or replaced under a running server is noticed, and the lock file
//! (`<store>.lock`) that a server holds, so that the command line can tell that one runs.
//!
//! The lock is an advisory `flock`: shared for servers (several may use one file), probed
//! with a non-blocking exclusive lock by the command line. The kernel drops it when the
//! server exits, however it exits, so a stale lock file holds no lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

/// Which file a path names: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
}

/// A shared lock on `<store>.lock`, held while a server uses the store.
pub(super) struct ServerLock {
    store: PathBuf,
    file: File,
}

impl FileId {
    /// The file at `path` now; `None` when there is none.
    pub(super) fn of(path: &Path) -> io::Result<Option<Self>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(Self::from(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl From<&std::fs::Metadata> for FileId {
    fn from(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

impl ServerLock {
    /// Creates `<store>.lock` when missing and takes a shared lock on it.
    pub(super) fn acquire(store: &Path) -> io::Result<Self> {
        let path = lock_path(store);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        // Blocks only while a command probes the lock (a few microseconds).
        flock(&file, FlockOperation::LockShared)?;
        Ok(Self {
            store: store.to_owned(),
            file,
        })
    }

    /// Takes the lock again on a new lock file when the one held was deleted or replaced
    /// (`rm authgate.db*` removes it with the store), so that commands still see the server.
    pub(super) fn renew_if_lost(&mut self) -> io::Result<()> {
        let held = FileId::from(&self.file.metadata()?);
        if FileId::of(&lock_path(&self.store))? != Some(held) {
            *self = Self::acquire(&self.store)?;
        }
        Ok(())
    }
}

/// `<store>.lock`, next to the store file.
pub fn lock_path(store: &Path) -> PathBuf {
    let mut name = store.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Whether a running server holds the store at `store` (its lock file is locked).
pub fn held_by_server(store: &Path) -> io::Result<bool> {
    let file = match File::open(lock_path(store)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    // The probe's own lock goes with `file` at the end of this function.
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(false),
        Err(Errno::WOULDBLOCK) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_lock_is_seen_until_dropped_and_survives_its_file_being_removed() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("a.db");
        assert!(!held_by_server(&store).unwrap(), "no lock file");
        let mut lock = ServerLock::acquire(&store).unwrap();
        let second = ServerLock::acquire(&store).unwrap();
        assert!(held_by_server(&store).unwrap());
        drop(second);
        assert!(held_by_server(&store).unwrap(), "still held by the first");
        std::fs::remove_file(lock_path(&store)).unwrap();
        assert!(!held_by_server(&store).unwrap());
        lock.renew_if_lost().unwrap();
        assert!(held_by_server(&store).unwrap(), "renewed on a new file");
        drop(lock);
        assert!(!held_by_server(&store).unwrap(), "released");
    }
}
