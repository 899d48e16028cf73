//! The embedded store's connections: a fixed pool of long-lived connections (their prepared
//! statements stay cached) used on tokio's blocking pool; a semaphore bounds how many run at
//! once, so a burst of misses queues instead of opening connections.
//!
//! The pool follows the file at its path. Open connections keep the file they opened, so
//! a file deleted or replaced (a backup restored by renaming it into place) would otherwise
//! go unnoticed: before a connection is used (at most once a second, and whenever asked,
//! as `ping` does) the path's device and inode are compared with those of the file opened.
//! A file that is gone fails every request (fail closed, `/readyz` 503) rather than
//! answering from the unlinked file; a different file is reopened. Either way the old
//! connections are closed first, once the old file's WAL is checkpointed and emptied, so
//! that the new file does not take its pages for its own.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use super::StoreError;
use super::file::{FileId, ServerLock};

/// The connections to the store file, and what is known of that file.
pub(super) struct Pool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    /// The file the connections are open on.
    file: Mutex<Watch>,
    /// One check of the file (and reopen) at a time.
    checking: tokio::sync::Mutex<()>,
    /// Held by a server (see `file`), renewed by the checks.
    lock: Mutex<Option<ServerLock>>,
    /// Run on each file opened (the schema migrations).
    prepare: Prepare,
}

/// What is run on each file opened.
pub(super) type Prepare = fn(&mut Connection) -> rusqlite::Result<()>;

/// What the last check of the path found.
struct Watch {
    /// The file the connections are open on; `None` while the path names no file.
    id: Option<FileId>,
    checked: Instant,
}

/// Connections open at most (readers run in parallel in WAL mode; more than a few per core
/// only adds contention).
const POOL_SIZE: usize = 4;

/// How often the path is compared with the file opened (a `stat`), at most.
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl Pool {
    /// Opens (creating when missing) the database at `path` and runs `prepare` on it (and
    /// on every file that replaces it); a server passes its `lock`.
    pub(super) fn open(
        path: &Path,
        lock: Option<ServerLock>,
        prepare: Prepare,
    ) -> Result<Self, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: path.display().to_string(),
            reason,
        };
        create_parent(path)?;
        let mut conn = connect(path, true).map_err(|e| open_err(e.to_string()))?;
        prepare(&mut conn).map_err(|e| open_err(e.to_string()))?;
        let id = FileId::of(path).map_err(|e| open_err(e.to_string()))?;
        Ok(Self {
            path: path.to_owned(),
            idle: Mutex::new(vec![conn]),
            permits: Arc::new(Semaphore::new(POOL_SIZE)),
            file: Mutex::new(Watch {
                id,
                checked: Instant::now(),
            }),
            checking: tokio::sync::Mutex::new(()),
            lock: Mutex::new(lock),
            prepare,
        })
    }

    /// Compares the file at the path with the one the connections are open on (unless
    /// done less than [`FILE_CHECK_INTERVAL`] ago and not `now`): the same, nothing to do;
    /// none, [`StoreError::Gone`]; another, the connections are reopened on it.
    pub(super) async fn follow_file(self: &Arc<Self>, now: bool) -> Result<(), StoreError> {
        if !now && let Some(verdict) = self.recent_verdict() {
            return verdict;
        }
        let _one = self.checking.lock().await;
        if !now && let Some(verdict) = self.recent_verdict() {
            return verdict;
        }
        let pool = self;
        let found = FileId::of(&pool.path)
            .map_err(|e| StoreError::Query(format!("cannot check the store file: {e}")))?;
        let known = lock(&pool.file).id;
        if found != known {
            match found {
                None => {
                    tracing::error!(
                        path = %pool.path.display(),
                        "the store file is gone: store requests fail until a file is back at its path"
                    );
                    self.reopen(false).await?;
                }
                Some(_) => {
                    tracing::warn!(
                        path = %pool.path.display(),
                        was_gone = known.is_none(),
                        "the store file was replaced: reopening the store on the file now at its path"
                    );
                    self.reopen(true).await?;
                }
            }
        }
        *lock(&pool.file) = Watch {
            id: found,
            checked: Instant::now(),
        };
        if let Some(server) = lock(&pool.lock).as_mut()
            && let Err(e) = server.renew_if_lost()
        {
            tracing::warn!(error = %e, "cannot renew the store's lock file");
        }
        self.verdict(found)
    }

    /// The last check's verdict, if it is recent.
    fn recent_verdict(&self) -> Option<Result<(), StoreError>> {
        let watch = lock(&self.file);
        (watch.checked.elapsed() < FILE_CHECK_INTERVAL).then(|| self.verdict(watch.id))
    }

    fn verdict(&self, id: Option<FileId>) -> Result<(), StoreError> {
        match id {
            Some(_) => Ok(()),
            None => Err(StoreError::Gone {
                path: self.path.display().to_string(),
            }),
        }
    }

    /// Closes every connection (waiting for those in use), then opens one on the file at
    /// the path when `open_new`.
    async fn reopen(self: &Arc<Self>, open_new: bool) -> Result<(), StoreError> {
        let pool = self.clone();
        let all = pool
            .permits
            .clone()
            .acquire_many_owned(POOL_SIZE as u32)
            .await
            .map_err(|e| StoreError::Query(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _all = all;
            let old = std::mem::take(&mut *lock(&pool.idle));
            // The `-wal` file at the path holds the old file's pages, and SQLite neither
            // checkpoints nor removes it when closing a file that was moved: a new file at
            // the path would take those pages for its own. Emptying it first prevents that.
            if let Some(conn) = old.first()
                && let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            {
                tracing::warn!(error = %e, "cannot empty the old store file's WAL");
            }
            drop(old);
            if !open_new {
                return Ok(());
            }
            let mut conn = connect(&pool.path, false).map_err(query_err)?;
            (pool.prepare)(&mut conn).map_err(query_err)?;
            lock(&pool.idle).push(conn);
            Ok(())
        })
        .await
        .map_err(|e| StoreError::Query(format!("store task failed: {e}")))?
    }

    /// Runs `f` on a pooled connection on the blocking pool.
    pub(super) async fn run<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.follow_file(false).await?;
        let pool = self.clone();
        let permit = pool
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Query(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = lock(&pool.idle).pop();
            let mut conn = match conn {
                Some(c) => c,
                // Never creates the file: one deleted since the last check stays gone.
                None => connect(&pool.path, false).map_err(query_err)?,
            };
            let result = f(&mut conn);
            lock(&pool.idle).push(conn);
            result
        })
        .await
        .map_err(|e| StoreError::Query(format!("store task failed: {e}")))?
    }
}

pub(super) fn create_parent(path: &Path) -> Result<(), StoreError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// A connection to the database at `path`, created when missing only if `create`.
fn connect(path: &Path, create: bool) -> rusqlite::Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // The query planner's stability guarantee: a plan never depends on a bound value.
    // Without it SQLite marks `WHERE hash = ?1` as plan-sensitive and re-prepares the
    // statement (the whole SQL parser) whenever a new hash is bound: 19% of the CPU of a
    // token lookup in the profile of bench (b), although the statement is cached.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

/// A lock whose holder panicked is still good: the data are a list or a value.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn query_err(e: rusqlite::Error) -> StoreError {
    StoreError::Query(e.to_string())
}
