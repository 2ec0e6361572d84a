//! One process at a time on a SQLite store: its writer holds an exclusive
//! lock on a file beside it (`faena.db.lock`) for as long as it runs. A
//! second master started on the same data directory would otherwise
//! dispatch the same queue as the first (SQLite serialises their commits
//! but not their decisions), and a copy taken while a master writes would
//! not be the store. The lock is the kernel's (`flock`): a master killed
//! with -9 lets go of it with its process.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::StoreError;

/// How long an opener waits for the lock: a master being replaced (or a
/// store closed and opened again in one process) lets go of it within
/// this, a master that runs on does not.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// The file locked for the store named by `path`.
pub(crate) fn path_of(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// An exclusive hold on the store named by `path`, until dropped.
#[derive(Debug)]
pub(crate) struct Held {
    /// Locked; closing it lets go.
    _file: File,
}

/// Takes the lock of the store named by `path`, waiting up to `wait` for
/// whoever holds it; refused, saying what to do, when it is still held.
pub(crate) fn take(path: &Path, wait: Duration) -> Result<Held, StoreError> {
    let file = path_of(path);
    let f = OpenOptions::new().create(true).truncate(false).write(true).open(&file).map_err(StoreError::File)?;
    let deadline = Instant::now() + wait;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(Held { _file: f }),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::InUse(format!(
                    "another process has the store at {} open (a master on this data directory, or `faena store copy` of it; {} is locked): stop it first, or give this one a data directory of its own",
                    path.display(),
                    file.display()
                )));
            }
            // A file system without locks (ENOLCK, 37: NFS without its lock daemon):
            // SQLite's own locks are as good there as they are anywhere.
            Err(TryLockError::Error(e))
                if e.kind() == std::io::ErrorKind::Unsupported || e.raw_os_error() == Some(37) =>
            {
                tracing::warn!(file = %file.display(), error = %e, "the store's file system takes no locks: nothing stops a second master on this data directory");
                return Ok(Held { _file: f });
            }
            Err(TryLockError::Error(e)) => return Err(StoreError::File(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_the_next_once_it_lets_go() {
        let dir = tempfile::tempdir().expect("dir");
        let store = dir.path().join("faena.db");
        let held = take(&store, Duration::ZERO).expect("free");
        let refused = take(&store, Duration::from_millis(50)).expect_err("held").to_string();
        assert!(refused.contains("another process has the store") && refused.contains("faena.db.lock"), "{refused}");
        // Let go while the next waits (or before it asks): it gets the lock.
        let waiter = std::thread::spawn(move || take(&store, WAIT).map(drop));
        drop(held);
        waiter.join().expect("joins").expect("taken once let go");
    }
}
