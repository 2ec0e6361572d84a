//! The durable job store: one SQLite file in WAL mode, jobs in generations
//! (`generations.rs`) so that retention drops whole tables.
//!
//! One writer thread owns the write connection and commits in groups: it takes
//! every operation queued so far, applies them in one transaction, commits,
//! and only then runs the callbacks waiting on them (the 202 of a submission,
//! the final event of a job). Many concurrent submissions therefore share one
//! fsync instead of paying one each. Reads use a second connection.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use faena_proto::api::JobView;
use faena_proto::ids::JobId;
use faena_proto::jobs::{JobState, Priority};
use parking_lot::Mutex;
use rusqlite::Connection;
use serde::Serialize;

mod contract;
mod generations;
mod list;
mod read;
mod retention;
pub mod settings;
mod writer;
pub use contract::{RestoredJob, StoreOp};
pub use list::{DEFAULT_PAGE, JobFilter, MAX_PAGE, Page};
pub use retention::Retention;

/// How much of the store file is mapped into memory for reading (a store
/// under retention fits): the pages read through it show in the master's
/// RSS, as the kernel's page cache they are.
const MMAP_BYTES: i64 = 256 << 20;

/// Most operations committed in one transaction.
const MAX_GROUP: usize = 20_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("could not start the store's writer thread")]
    Spawn(#[source] std::io::Error),
    #[error("the store cannot commit right now (see the log); it retries by itself")]
    Unavailable,
    #[error("the store's task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("encoding a record: {0}")]
    Encode(#[from] serde_json::Error),
}

/// A group commit that failed: every change in it was lost, and whoever
/// waited on it is told why.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the job store could not commit")]
pub struct CommitFailed(#[source] pub Arc<StoreError>);

/// How hard a commit pushes to disk: `full` survives power loss,
/// `normal` survives a crash of the master process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncMode {
    Full,
    Normal,
}

type Callback = Box<dyn FnOnce(Result<(), CommitFailed>) + Send>;

enum Cmd {
    Op(StoreOp),
    AfterCommit(Callback),
    /// One step of retention, with the group it arrived with.
    Prune(tokio::sync::oneshot::Sender<Result<usize, StoreError>>),
}

#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Cmd>,
    reader: Arc<Mutex<Connection>>,
    healthy: Arc<AtomicBool>,
    retention: Retention,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("healthy", &self.is_healthy()).finish_non_exhaustive()
    }
}

/// One recorded state change of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub at_ms: u64,
    pub state: String,
    pub attempt: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

fn open(path: &Path, sync: SyncMode) -> Result<Connection, StoreError> {
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

impl Store {
    /// Opens (or makes) the store at `path`; `retention` sizes its
    /// generations (what [`Store::prune`] drops).
    pub fn open(path: &Path, sync: SyncMode, retention: Retention) -> Result<Self, StoreError> {
        let writer = open(path, sync)?;
        let layout = generations::Layout::open(&writer, faena_proto::mqtt::now_ms() as i64)?;
        let reader = open(path, sync)?;
        let (tx, rx) = mpsc::channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        std::thread::Builder::new()
            .name("faena-store".into())
            .spawn(move || writer::run(writer, layout, retention, rx, flag))
            .map_err(StoreError::Spawn)?;
        Ok(Self { tx, reader: Arc::new(Mutex::new(reader)), healthy, retention })
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Queues a write; it commits with the next group.
    pub fn write(&self, op: StoreOp) {
        let _ = self.tx.send(Cmd::Op(op));
    }

    /// Runs `f` once everything queued before it is committed (or failed).
    pub fn after_commit(&self, f: impl FnOnce(Result<(), CommitFailed>) + Send + 'static) {
        if let Err(mpsc::SendError(Cmd::AfterCommit(f))) = self.tx.send(Cmd::AfterCommit(Box::new(f))) {
            f(Err(CommitFailed(Arc::new(StoreError::Unavailable))));
        }
    }

    /// What the store keeps.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Drops the oldest generation if all of it is out of retention (on the
    /// writer, with the current commit group); how many jobs went.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Cmd::Prune(tx)).map_err(|_| StoreError::Unavailable)?;
        rx.await.map_err(|_| StoreError::Unavailable)?
    }
}

/// The columns [`view`] reads, in its order.
const VIEW_COLUMNS: &str = "kind, priority, state, attempts, worker, error, created_at, finished_at";

/// Job `id` as stored, from [`VIEW_COLUMNS`] starting at column `at`;
/// without result, parent, position, progress or waiting reason.
fn view(id: JobId, r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<JobView> {
    let ms = |v: i64| rfc3339(u64::try_from(v).unwrap_or(0));
    Ok(JobView {
        id,
        kind: r.get(at)?,
        priority: Priority::parse(&r.get::<_, String>(at + 1)?).unwrap_or_default(),
        state: JobState::parse(&r.get::<_, String>(at + 2)?).unwrap_or(JobState::Failed),
        attempts: r.get(at + 3)?,
        worker: r.get(at + 4)?,
        error: r.get(at + 5)?,
        created_at: ms(r.get(at + 6)?),
        finished_at: r.get::<_, Option<i64>>(at + 7)?.map(ms),
        position: None,
        result: None,
        progress: None,
        parent: None,
        waiting: None,
        retry_of: None,
        retried_as: None,
    })
}

pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests;
