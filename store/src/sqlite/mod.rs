//! The SQLite backend: one file in WAL mode, jobs in generations
//! (`generations.rs`) so that retention drops whole tables. One writer
//! connection (the store's writer thread, `write.rs`) and one for reads.

use std::path::Path;

use faena_proto::api::JobView;
use faena_proto::ids::JobId;
use rusqlite::Connection;

use crate::{StoreError, SyncMode};

mod checkpoint;
mod created;
pub(crate) mod generations;
mod history;
pub(crate) mod list;
pub(crate) mod lock;
pub(crate) mod read;
mod retention;
mod write;

pub(crate) use history::{count_steps, steps};
pub(crate) use write::Writer;

/// How much of the store file is mapped into memory for reading (a store
/// under retention fits): the pages read through it show in the master's
/// RSS, as the kernel's page cache they are.
const MMAP_BYTES: i64 = 256 << 20;

/// The version of the store file's layout this build writes, kept in the
/// file's `user_version`. A build refuses a file with a higher one before
/// it changes anything in it: an older master (a rollback) would misread
/// a layout made after it, as the PostgreSQL store's migrations refuse a
/// newer schema. Raised by a change an older build would misread or undo;
/// columns and indexes an older build ignores or makes again do not.
/// Files made before it was kept say 0 and are marked as they open.
pub(crate) const LAYOUT_VERSION: i32 = 1;

/// Opens the store file at `path` for writing: the writer's connection
/// (its checkpoints on a thread of their own) and its generations.
pub(crate) fn open_for_writes(path: &Path, sync: SyncMode) -> Result<(Connection, generations::Layout), StoreError> {
    let mut conn = open(path, sync)?;
    let found: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > LAYOUT_VERSION {
        return Err(StoreError::Schema { found, known: LAYOUT_VERSION });
    }
    checkpoint::offload(&mut conn, path, sync, checkpoint::Limits::DEFAULT)?;
    let layout = generations::Layout::open(&conn, faena_proto::mqtt::now_ms() as i64)?;
    if found < LAYOUT_VERSION {
        conn.pragma_update(None, "user_version", LAYOUT_VERSION)?;
    }
    Ok((conn, layout))
}

pub(crate) fn open(path: &Path, sync: SyncMode) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if sync == SyncMode::Full { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    // Pages are read through a mapping, not a read call each: dropping a
    // generation visits every page of it.
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    // A few statements per generation and listing filter.
    conn.set_prepared_statement_cache_capacity(512);
    Ok(conn)
}

/// The columns [`view`] reads, in its order.
const VIEW_COLUMNS: &str = "kind, priority, state, attempts, worker, error, created_at, finished_at, run_at, opts";
/// How many columns [`VIEW_COLUMNS`] names.
const VIEW_WIDTH: usize = 10;

/// Job `id` as stored, from [`VIEW_COLUMNS`] starting at column `at`.
fn view(id: JobId, r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<JobView> {
    Ok(crate::contract::ViewColumns {
        kind: r.get(at)?,
        priority: r.get(at + 1)?,
        state: r.get(at + 2)?,
        attempts: r.get(at + 3)?,
        worker: r.get(at + 4)?,
        error: r.get(at + 5)?,
        created: r.get(at + 6)?,
        finished: r.get(at + 7)?,
        run_at: r.get(at + 8)?,
        opts: r.get(at + 9)?,
    }
    .view(id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    fn layout_version(path: &Path) -> i32 {
        let conn = Connection::open(path).expect("opens");
        conn.pragma_query_value(None, "user_version", |r| r.get(0)).expect("reads")
    }

    fn set_layout_version(path: &Path, v: i32) {
        Connection::open(path).expect("opens").pragma_update(None, "user_version", v).expect("sets");
    }

    #[test]
    fn a_store_is_marked_with_its_layout_and_one_made_by_a_newer_build_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("faena.db");
        drop(open_for_writes(&path, SyncMode::Full).expect("a new store opens"));
        assert_eq!(layout_version(&path), LAYOUT_VERSION);
        set_layout_version(&path, 0);
        drop(open_for_writes(&path, SyncMode::Full).expect("a store made before the version was kept opens"));
        assert_eq!(layout_version(&path), LAYOUT_VERSION, "and is marked");

        set_layout_version(&path, LAYOUT_VERSION + 1);
        let conn = Connection::open(&path).expect("opens");
        conn.execute_batch("DROP INDEX jobs_state").expect("a layout this build would change");
        drop(conn);
        let refused = crate::Store::open(&path, SyncMode::Full, crate::Retention::OFF).expect_err("refused");
        assert!(
            matches!(refused, StoreError::Schema { found, known } if found == LAYOUT_VERSION + 1 && known == LAYOUT_VERSION),
            "{refused:?}"
        );
        assert!(refused.to_string().contains("newer than this build knows"), "{refused}");
        let conn = Connection::open(&path).expect("opens");
        let index: Option<String> =
            conn.query_row("SELECT name FROM sqlite_master WHERE name = 'jobs_state'", [], |r| r.get(0)).ok();
        assert_eq!(index, None, "nothing in it changed");
        assert_eq!(layout_version(&path), LAYOUT_VERSION + 1);
    }
}
