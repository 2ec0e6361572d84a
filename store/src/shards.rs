//! A SQLite store over several files, its shards, each with its own writer
//! thread: SQLite commits one transaction at a time a file, so one file
//! bounds how many jobs a second a master can store durably, where several
//! files commit (and fsync) side by side.
//!
//! - A job lives in one shard for its life: [`JobId::shard`], the last
//!   byte of its id. A mining job's units and a job's retry are made with
//!   ids beside it ([`JobId::beside`]), so what is read together (a mining
//!   job and its units at a restart, a job and its retry) is in one file,
//!   and a job's unique key and schedule firing are stored in its own
//!   transaction, as on one file. Named documents and firings that made no
//!   job are in shard 0.
//! - Row ids come from one counter for every shard (`RowIds`), so a row id
//!   names one job in the store and listing merges the shards' pages by it.
//! - A callback waits for every shard's writer ([`Joiner`]): it runs once
//!   all that was queued before it, in any shard, is committed.
//! - Shard 0 is the file the store is named by; shard `k` is beside it
//!   (`faena.db` → `faena.1.db`). Each file records its place (`shards`
//!   table): the number of shards is fixed when the store is made, and a
//!   store opened with another number, or with a file missing or from
//!   another store, is refused with what to do.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use faena_store_contract::StoreOp;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension};

use crate::sqlite::generations::RowIds;
use crate::sqlite::{self, Writer};
use crate::writer::Stamp;
use crate::{Callback, Cmd, CommitFailed, Retention, StoreError, SyncMode};

pub(crate) mod read;

/// Most shards a store can have: eight, which divides the 256 values of
/// the byte a job's shard is read from (so jobs spread evenly over any
/// power of two up to it), commits 6× the jobs a second of one file on 16
/// cores (BENCHMARKS.md), and leaves a copy room to attach them all.
pub const MAX_SHARDS: usize = 8;

/// The file of shard `k` of the store named by `path`: `path` itself for
/// shard 0, else beside it with `.k` before its extension.
pub fn shard_path(path: &Path, k: usize) -> PathBuf {
    if k == 0 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.{k}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{k}"),
    };
    path.with_file_name(name)
}

/// One shard opened: its writer, a connection for reads, its file.
pub(crate) struct Opened {
    pub writer: Writer,
    pub reader: Connection,
    pub path: PathBuf,
}

/// Opens (or makes) the store named by `path` with its shards: `wanted`
/// of them for a new store (one when not given), and for an existing
/// store the number it was made with, which `wanted` must then match.
/// With them, how the store's new jobs are numbered.
pub(crate) fn open(
    path: &Path,
    sync: SyncMode,
    retention: Retention,
    wanted: Option<usize>,
) -> Result<(Vec<Opened>, Numbering), StoreError> {
    let refuse = |why: String| Err(StoreError::Shards(why));
    if let Some(w) = wanted
        && !(1..=MAX_SHARDS).contains(&w)
    {
        return refuse(format!("{w} shards: a store has 1 to {MAX_SHARDS}"));
    }
    let lock = sqlite::lock::take(path, sqlite::lock::WAIT)?;
    let (conn, layout) = sqlite::open_for_writes(path, sync)?;
    let place = marked(&conn)?;
    let shards = match (place, wanted) {
        (Some((0, made)), w) if w.is_none_or(|w| w == made) => made,
        (Some((0, made)), Some(w)) => {
            return refuse(format!(
                "the store at {} was made with {made} shard(s), not {w}: set FAENA_STORE_SHARDS={made} (or leave it unset): the number is fixed when a store is made",
                path.display()
            ));
        }
        (Some((k, made)), _) => {
            return refuse(format!("{} is shard {k} of {made} of a store, not the file that names it", path.display()));
        }
        (None, w) => {
            let w = w.unwrap_or(1);
            if w > 1 && layout.row_ids.next() > 1 {
                return refuse(format!(
                    "the store at {} holds jobs in one file and cannot be split into {w} shards in place: leave FAENA_STORE_SHARDS unset, or copy it into a new store (faena store copy --from sqlite:{} --to sqlite:NEW/faena.db --shards {w}) and start on that",
                    path.display(),
                    path.display()
                ));
            }
            w
        }
    };
    let mut opened = vec![(conn, layout, path.to_path_buf())];
    for k in 1..shards {
        let file = shard_path(path, k);
        if place.is_some() && !file.is_file() {
            return refuse(format!(
                "shard {k} of the store at {} is missing ({}): the jobs in it are gone unless it is put back",
                path.display(),
                file.display()
            ));
        }
        let (conn, layout) = sqlite::open_for_writes(&file, sync)?;
        match marked(&conn)? {
            Some(p) if p == (k, shards) => {}
            Some((j, of)) => {
                return refuse(format!("{} is shard {j} of {of}, not shard {k} of {shards}", file.display()));
            }
            None if layout.row_ids.next() > 1 => {
                return refuse(format!("{} holds jobs of another store, not shard {k}", file.display()));
            }
            None => mark(&conn, k, shards)?,
        }
        opened.push((conn, layout, file));
    }
    // The first file last: a store is made once every shard is.
    if place.is_none() {
        mark(&opened[0].0, 0, shards)?;
    }
    let ids = RowIds::from(opened.iter().map(|(_, l, _)| l.row_ids.next()).max().unwrap_or(1));
    let mut opened: Vec<Opened> = opened
        .into_iter()
        .map(|(conn, mut layout, path)| {
            layout.share(ids.clone(), shards);
            let reader = sqlite::open(&path, sync)?;
            Ok(Opened { writer: Writer::new(conn, layout, retention), reader, path })
        })
        .collect::<Result<_, StoreError>>()?;
    let lock = Arc::new(lock);
    for o in &mut opened {
        o.writer.hold(lock.clone());
    }
    let newest = opened.iter().map(|o| o.writer.newest_created()).max().unwrap_or(0);
    Ok((opened, Numbering { ids, newest: Mutex::new(newest) }))
}

/// How a store of shards numbers its new jobs as they are queued: row ids
/// from the store's counter, and `created_at` never below the job's queued
/// before, so both grow together over every shard, as on one file (listing
/// by `since` reads the first row of a window off that order).
pub(crate) struct Numbering {
    ids: RowIds,
    newest: Mutex<i64>,
}

impl Numbering {
    /// Numbering that goes on after the job `newest` names (row id, time)
    /// of a store's own (none: an empty store).
    pub(crate) fn after(newest: Option<(i64, i64)>) -> Self {
        let (row, created) = newest.unwrap_or((0, 0));
        Self { ids: RowIds::from(row + 1), newest: Mutex::new(created) }
    }

    /// Goes on after `newest` too, where other masters stored jobs since.
    pub(crate) fn raise(&self, newest: Option<(i64, i64)>) {
        if let Some((row, created)) = newest {
            let mut at = self.newest.lock();
            *at = (*at).max(created);
            self.ids.raise(row + 1);
        }
    }

    pub(crate) fn stamp(&self, at_ms: u64) -> Stamp {
        let mut newest = self.newest.lock();
        *newest = (*newest).max(at_ms as i64);
        Stamp { row: self.ids.take(), created: *newest }
    }
}

/// Attaches the other shards of the store `conn` is open on (its first
/// file, at `path`) to it, each brought up to date as a master opening it
/// would: the schemas to read jobs from, `main` first.
pub(crate) fn attach(conn: &Connection, path: &Path) -> Result<Vec<String>, StoreError> {
    let shards = made_with(conn, path)?;
    let mut schemas = vec!["main".to_owned()];
    for k in 1..shards {
        let file = shard_path(path, k);
        if !file.is_file() {
            return Err(StoreError::Shards(format!("shard {k} of {} is missing ({})", path.display(), file.display())));
        }
        let shard = sqlite::open(&file, SyncMode::Normal)?;
        crate::sqlite::generations::Layout::open(&shard, faena_proto::mqtt::now_ms() as i64)?;
        drop(shard);
        let schema = format!("s{k}");
        conn.execute("ATTACH DATABASE ?1 AS ?2", rusqlite::params![file.to_string_lossy(), schema])?;
        schemas.push(schema);
    }
    Ok(schemas)
}

/// How many shards the SQLite store named by `path` was made with (one for
/// a store made before shards).
pub fn count(path: &Path) -> Result<usize, StoreError> {
    if !path.is_file() {
        return Err(StoreError::Copy(format!("no SQLite store at {}", path.display())));
    }
    made_with(&sqlite::open(path, SyncMode::Normal)?, path)
}

/// How many shards the store whose first file (`path`) `conn` is open on
/// was made with; refused for another shard's file.
fn made_with(conn: &Connection, path: &Path) -> Result<usize, StoreError> {
    match marked(conn)? {
        None => Ok(1),
        Some((0, n)) => Ok(n),
        Some((k, n)) => Err(StoreError::Shards(format!(
            "{} is shard {k} of {n} of a store: name the store's first file",
            path.display()
        ))),
    }
}

/// The place a store file records: (its shard, of how many).
fn marked(conn: &Connection) -> Result<Option<(usize, usize)>, StoreError> {
    conn.execute_batch("CREATE TABLE IF NOT EXISTS shards (shard INTEGER NOT NULL, of INTEGER NOT NULL)")?;
    let row = conn.query_row("SELECT shard, of FROM shards LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?))).optional()?;
    match row {
        None => Ok(None),
        Some((k, n)) if (1..=MAX_SHARDS as i64).contains(&n) && (0..n).contains(&k) => {
            Ok(Some((k as usize, n as usize)))
        }
        Some((k, n)) => {
            Err(StoreError::Shards(format!("a store file records shard {k} of {n}, which is not a place in a store")))
        }
    }
}

/// Records a new file's place: shard `k` of `of` (a store being copied).
pub(crate) fn mark_new(conn: &Connection, k: usize, of: usize) -> Result<(), StoreError> {
    marked(conn)?;
    mark(conn, k, of)
}

fn mark(conn: &Connection, k: usize, of: usize) -> Result<(), StoreError> {
    conn.execute("INSERT INTO shards (shard, of) VALUES (?1, ?2)", [k as i64, of as i64])?;
    Ok(())
}

/// The shard `op` goes to.
pub(crate) fn route(op: &StoreOp, shards: usize) -> usize {
    match op {
        StoreOp::Insert { id, .. }
        | StoreOp::Released { id, .. }
        | StoreOp::Reprioritised { id, .. }
        | StoreOp::Started { id, .. }
        | StoreOp::Dispatched { id, .. }
        | StoreOp::Requeued { id, .. }
        | StoreOp::Finished { id, .. } => id.shard(shards),
        StoreOp::Fired { .. } | StoreOp::Named { .. } => 0,
    }
}

/// What a caller queued, as each of `shards` writers gets it: each change
/// to its shard, in order, a new job with the row id it takes from `ids`
/// (so row ids follow the order jobs were queued in, over every shard);
/// and its callbacks, together in order (they would run at the end of the
/// one group on one file), for the [`Joiner`].
pub(crate) fn split(cmds: Vec<Cmd>, shards: usize, ids: &Numbering) -> (Vec<Vec<Cmd>>, Option<Callback>) {
    let mut by: Vec<Vec<Cmd>> = (0..shards).map(|_| Vec::new()).collect();
    let mut callbacks = Vec::new();
    sort(cmds, shards, ids, &mut by, &mut callbacks);
    let all = (!callbacks.is_empty()).then(|| {
        Box::new(move |r: Result<(), CommitFailed>| {
            for cb in callbacks {
                cb(r.clone());
            }
        }) as Callback
    });
    (by, all)
}

fn sort(cmds: Vec<Cmd>, shards: usize, ids: &Numbering, by: &mut [Vec<Cmd>], callbacks: &mut Vec<Callback>) {
    for cmd in cmds {
        match cmd {
            Cmd::Op(op) => {
                let mine = &mut by[route(&op, shards)];
                if let StoreOp::Insert { at_ms, .. } = op {
                    mine.push(Cmd::Row(ids.stamp(at_ms)));
                }
                mine.push(Cmd::Op(op));
            }
            Cmd::AfterCommit(cb) => callbacks.push(cb),
            Cmd::Many(cmds) => sort(cmds, shards, ids, by, callbacks),
            // Retention is asked of each shard apart (`Store::prune`).
            Cmd::Prune(_) => by[0].push(cmd),
            // Stamped here; no caller can give one.
            Cmd::Row(_) => {}
        }
    }
}

/// Callbacks that wait for every shard's writer, without a message to each
/// of them: each shard counts the messages queued to its writer and those
/// its writer has committed (or answered); a callback notes the counts
/// queued when it is made and runs, on a writer, once every shard has
/// committed that many. Counts only grow and are noted in turn under the
/// lock, and callbacks run one writer at a time (`turn`), so they run in
/// the order they were made, as on one file.
pub(crate) struct Joiner {
    queued: Vec<AtomicU64>,
    committed: Vec<AtomicU64>,
    waiting: Mutex<VecDeque<(Vec<u64>, Callback)>>,
    turn: Mutex<()>,
    /// A writer is gone while the store is not (its thread ended): what
    /// waits, and what would, can never complete and hears so at once.
    broken: AtomicBool,
}

impl Joiner {
    pub(crate) fn new(shards: usize) -> Self {
        let counts = || (0..shards).map(|_| AtomicU64::new(0)).collect();
        let waiting = Mutex::new(VecDeque::new());
        Self { queued: counts(), committed: counts(), waiting, turn: Mutex::new(()), broken: AtomicBool::new(false) }
    }

    /// Queues `cmd` to shard `k`'s writer (`tx`), counted. What cannot be
    /// sent (the writer is gone) fails its callbacks and every callback
    /// waiting, as one file's store fails a batch it cannot queue.
    pub(crate) fn send(&self, k: usize, tx: &mpsc::Sender<Cmd>, cmd: Cmd) {
        self.queued[k].fetch_add(1, Ordering::AcqRel);
        if let Err(mpsc::SendError(cmd)) = tx.send(cmd) {
            crate::Batch::fail(vec![cmd]);
            self.broken.store(true, Ordering::Release);
            let waiting: Vec<_> = self.waiting.lock().drain(..).collect();
            for (_, f) in waiting {
                f(Err(unavailable()));
            }
        }
    }

    /// Runs `f` once every message queued to any shard so far is committed.
    /// Where they all are already, shard 0's writer (`tx0`) is woken to run
    /// it (never the caller, which may hold what `f` takes).
    pub(crate) fn after(&self, f: Callback, tx0: &mpsc::Sender<Cmd>) {
        if self.broken.load(Ordering::Acquire) {
            return f(Err(unavailable()));
        }
        let reached = {
            let mut waiting = self.waiting.lock();
            let needs: Vec<u64> = self.queued.iter().map(|q| q.load(Ordering::Acquire)).collect();
            let reached = self.reached(&needs);
            waiting.push_back((needs, f));
            reached
        };
        if reached {
            self.send(0, tx0, Cmd::Many(Vec::new()));
        }
    }

    /// Shard `k`'s writer committed (or answered) `messages` more: runs
    /// the callbacks every shard has now reached.
    pub(crate) fn committed(&self, k: usize, messages: u64) {
        if messages == 0 {
            return;
        }
        self.committed[k].fetch_add(messages, Ordering::AcqRel);
        let _turn = self.turn.lock();
        let mut ready = Vec::new();
        {
            let mut waiting = self.waiting.lock();
            while waiting.front().is_some_and(|(needs, _)| self.reached(needs)) {
                ready.extend(waiting.pop_front().map(|(_, f)| f));
            }
        }
        for f in ready {
            f(Ok(()));
        }
    }

    fn reached(&self, needs: &[u64]) -> bool {
        self.committed.iter().zip(needs).all(|(c, n)| c.load(Ordering::Acquire) >= *n)
    }
}

impl Drop for Joiner {
    /// The store and its writers are gone: whatever still waits hears so.
    fn drop(&mut self) {
        for (_, f) in self.waiting.get_mut().drain(..) {
            f(Err(unavailable()));
        }
    }
}

fn unavailable() -> CommitFailed {
    CommitFailed(Arc::new(StoreError::Unavailable))
}

#[cfg(test)]
mod tests;
