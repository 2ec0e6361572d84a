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

/// Opens the store file at `path` for writing: the writer's connection
/// (its checkpoints on a thread of their own) and its generations.
pub(crate) fn open_for_writes(path: &Path, sync: SyncMode) -> Result<(Connection, generations::Layout), StoreError> {
    let mut conn = open(path, sync)?;
    checkpoint::offload(&mut conn, path, sync, checkpoint::Limits::DEFAULT)?;
    let layout = generations::Layout::open(&conn, faena_proto::mqtt::now_ms() as i64)?;
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
