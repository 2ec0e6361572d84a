//! Checkpoints off the commit path. SQLite's own automatic checkpoint runs
//! inside the commit that takes the write-ahead log past its threshold:
//! that commit (and whatever waits on it, such as a unit going out to a
//! worker) pays for copying the log into the database and syncing it. Here
//! a commit past [`Limits::background`] only asks a thread of its own, on
//! its own connection, to copy the log back (`PASSIVE`: it holds up neither
//! the writer nor a reader); the writer's next commit then starts the log
//! again from its beginning, rewriting it in place rather than growing it.
//!
//! A log written to without pause never comes back fully copied to a
//! commit that could start it again (each commit adds to it while the copy
//! runs), so past [`Limits::inline`] the commit checkpoints itself, as
//! SQLite's own does: the log stays bounded under any load.

use std::path::Path;
use std::sync::mpsc;

use rusqlite::Connection;
use rusqlite::hooks::Wal;

use crate::{StoreError, SyncMode};

/// The log's size, in pages, past which a checkpoint is asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// The background thread's (SQLite's own default for its automatic one).
    pub background: i32,
    /// The commit's own, for a log the background could not start again.
    pub inline: i32,
}

impl Limits {
    pub(crate) const DEFAULT: Self = Self { background: 1_000, inline: 4_000 };
}

/// Moves `writer`'s checkpoints to a thread of their own, on a second
/// connection to `path`. The thread ends when `writer` is dropped.
pub(crate) fn offload(writer: &mut Connection, path: &Path, sync: SyncMode, limits: Limits) -> Result<(), StoreError> {
    let conn = super::open(path, sync)?;
    // One request waits at most: a commit while a checkpoint runs needs
    // no second one, the next commit asks again.
    let (ask, asked) = mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("faena-store-checkpoint".into())
        .spawn(move || {
            while asked.recv().is_ok() {
                if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                    tracing::warn!(error = %e, "the store's background checkpoint failed; the next commit asks again");
                }
            }
        })
        .map_err(StoreError::Spawn)?;
    // Replaces SQLite's automatic checkpoint, which is itself this hook.
    writer.wal_hook(Some(move |wal: &mut Wal, pages: std::ffi::c_int| {
        if pages >= limits.inline {
            // Busy while the background one finishes: the next commit
            // tries again (the background is not asked meanwhile). An
            // error here would fail a commit that has happened.
            let _ = wal.checkpoint_v2(rusqlite::wal::CheckpointMode::PASSIVE);
        } else if pages >= limits.background {
            let _ = ask.try_send(());
        }
        Ok(())
    }))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use std::time::{Duration, Instant};

    use super::*;

    fn file_len(path: &Path) -> u64 {
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
    }

    #[test]
    fn commits_leave_checkpoints_to_their_thread_and_the_log_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.db");
        let mut writer = crate::sqlite::open(&path, SyncMode::Full).expect("opens");
        let limits = Limits { background: 100, inline: 400 };
        offload(&mut writer, &path, SyncMode::Full, limits).expect("offloads");
        // SQLite's own checkpoint in the commit is off.
        let auto: i64 = writer.query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0)).expect("reads");
        assert_eq!(auto, 0);
        writer.execute("CREATE TABLE t (v BLOB)", []).expect("creates");
        let page = writer.query_row("PRAGMA page_size", [], |r| r.get::<_, i64>(0)).expect("reads") as u64;
        let insert = |n: usize| {
            for _ in 0..n {
                writer.execute("INSERT INTO t VALUES (zeroblob(3000))", []).expect("inserts");
            }
        };
        // Past the background's threshold, short of the commit's own (a
        // few pages a commit): only the thread can copy the log into the
        // database, which grows.
        let before = file_len(&path);
        insert(60);
        let deadline = Instant::now() + Duration::from_secs(30);
        while file_len(&path) <= before {
            assert!(Instant::now() < deadline, "no checkpoint copied the log back");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Written to without pause, the log is still started again.
        let more = 2_000;
        insert(more);
        let wal = file_len(&path.with_extension("db-wal"));
        assert!(wal < 3 * limits.inline as u64 * page, "the log grew to {wal} bytes ({more} rows written)");
    }
}
