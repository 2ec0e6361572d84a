//! The durable job store, behind one contract (`faena-store-contract`,
//! re-exported here): the engine's changes go in as [`StoreOp`]s,
//! unfinished jobs come back as [`RestoredJob`]s; the REST side reads jobs,
//! pages and histories (`contract.rs`).
//! Backends: SQLite (`sqlite/`, one file, the default) and PostgreSQL
//! (`pg/`, the store for a cluster).
//!
//! One writer thread owns the backend's write connection and commits in
//! groups (`writer.rs`): it takes every operation queued so far, applies
//! them in one transaction, commits, and only then runs the callbacks
//! waiting on them (the 202 of a submission, the final event of a job).
//! Many concurrent submissions therefore share one commit instead of
//! paying one each. Reads use connections of their own.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;

use faena_proto::api::JobView;
use faena_proto::ids::JobId;
use faena_proto::jobs::JobSpec;
use parking_lot::Mutex;
use rusqlite::Connection;

mod contract;
pub mod copy;
#[cfg(any(test, feature = "harness"))]
pub mod harness;
pub mod mining;
mod pg;
pub mod settings;
mod sqlite;
mod writer;
pub use contract::{DEFAULT_PAGE, JobFilter, MAX_PAGE, Page, Retention, Transition};
pub use faena_store_contract::{Firing, HeldKey, NamedKind, Outcome, RestoredJob, StoreOp, rfc3339};
pub use pg::lease::{Election, Leader};

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
    #[error("postgres: {}", pg_reason(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("a store file: {0}")]
    File(#[source] std::io::Error),
    #[error("copying the store: {0}")]
    Copy(String),
    #[error("the store is led by a newer epoch than this master's {epoch}: its writes are refused")]
    Fenced { epoch: i64 },
    #[error("TLS to postgres: {0}")]
    Tls(String),
    #[error("postgres connection pool: {0}")]
    Pool(String),
    #[error("the store's schema is version {found}, newer than this build knows ({known}): run a newer master")]
    Schema { found: i32, known: i32 },
}

impl StoreError {
    /// Whether the server may answer if asked again: it could not be
    /// reached or was going away (no SQLSTATE, class 08 connection
    /// exception, 57P shutting down or starting up), or it is a replica
    /// not yet promoted (25006 read-only). Refusals of what was asked (a
    /// wrong password, a missing database, a bad URL, a newer schema) are
    /// not: asking again changes nothing.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Postgres(e) => match e.code().map(|c| c.code()) {
                None => true,
                Some(code) => code.starts_with("08") || code.starts_with("57P") || code == "25006",
            },
            Self::Unavailable => true,
            _ => false,
        }
    }
}

/// What the server said (its SQLSTATE and message: "53100: could not
/// extend file …: No space left on device"), not only "db error".
fn pg_reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

/// A store's fence before [`Store::fence`] is called: nothing is checked.
pub(crate) const UNFENCED: i64 = i64::MIN;

fn unfenced() -> Arc<std::sync::atomic::AtomicI64> {
    Arc::new(std::sync::atomic::AtomicI64::new(UNFENCED))
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
    /// A [`Batch`]: taken into one group whole.
    Many(Vec<Cmd>),
    /// One step of retention, with the group it arrived with.
    Prune(tokio::sync::oneshot::Sender<Result<usize, StoreError>>),
}

/// Writes and callbacks gathered by one caller, to be queued together
/// with [`Store::send`] (what [`Store::write`] and [`Store::after_commit`]
/// queue one by one). A batch dropped unsent tells its callbacks the
/// store is unavailable.
#[derive(Default)]
pub struct Batch {
    cmds: Vec<Cmd>,
}

impl Batch {
    pub fn write(&mut self, op: StoreOp) {
        self.cmds.push(Cmd::Op(op));
    }

    pub fn after_commit(&mut self, f: impl FnOnce(Result<(), CommitFailed>) + Send + 'static) {
        self.cmds.push(Cmd::AfterCommit(Box::new(f)));
    }

    fn fail(cmds: Vec<Cmd>) {
        for cmd in cmds {
            match cmd {
                Cmd::AfterCommit(f) => f(Err(CommitFailed(Arc::new(StoreError::Unavailable)))),
                Cmd::Prune(reply) => {
                    let _ = reply.send(Err(StoreError::Unavailable));
                }
                Cmd::Many(cmds) => Self::fail(cmds),
                Cmd::Op(_) => {}
            }
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        Self::fail(std::mem::take(&mut self.cmds));
    }
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("cmds", &self.cmds.len()).finish()
    }
}

/// Where reads go.
#[derive(Clone)]
enum Reader {
    /// The read connection, and the database file's path.
    Sqlite(Arc<Mutex<Connection>>, Arc<Path>),
    Postgres(deadpool_postgres::Pool),
}

#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Cmd>,
    reader: Reader,
    healthy: Arc<AtomicBool>,
    retention: Retention,
    /// The leader's epoch the writer fences each group with (PostgreSQL).
    fence: Arc<std::sync::atomic::AtomicI64>,
    /// The leader's lease, on a store several masters can share.
    election: Option<Election>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("healthy", &self.is_healthy()).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or makes) the store at `path`; `retention` sizes its
    /// generations (what [`Store::prune`] drops).
    pub fn open(path: &Path, sync: SyncMode, retention: Retention) -> Result<Self, StoreError> {
        let (writer, reader) = sqlite::open_store(path, sync, retention)?;
        Self::start(writer, Reader::Sqlite(Arc::new(Mutex::new(reader)), path.into()), retention, unfenced(), None)
    }

    /// Connects to the PostgreSQL store at `url` (`postgres://…`),
    /// migrating its schema first.
    pub async fn connect(url: &str, retention: Retention) -> Result<Self, StoreError> {
        let fence = unfenced();
        let (writer, pool, election) = pg::open_store(url, retention, fence.clone()).await?;
        Self::start(writer, Reader::Postgres(pool), retention, fence, Some(election))
    }

    /// Fences every group committed from now on with the leader's `epoch`
    /// (PostgreSQL): in the group's own transaction the writer holds the
    /// leader's row shared and checks the epoch is still `epoch`; once
    /// another master has taken a newer one, every write of this store is
    /// refused whole ([`StoreError::Fenced`]), never applied in part. A
    /// SQLite store has one master and nothing to fence: it ignores this.
    pub fn fence(&self, epoch: i64) {
        self.fence.store(epoch, Ordering::Relaxed);
    }

    /// The leader's lease, where several masters can share this store
    /// (PostgreSQL); none on SQLite, whose one master always leads.
    pub fn election(&self) -> Option<&Election> {
        self.election.as_ref()
    }

    /// Starts the writer thread on `backend`.
    fn start(
        backend: impl writer::Apply,
        reader: Reader,
        retention: Retention,
        fence: Arc<std::sync::atomic::AtomicI64>,
        election: Option<Election>,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        std::thread::Builder::new()
            .name("faena-store".into())
            .spawn(move || writer::run(backend, rx, flag))
            .map_err(StoreError::Spawn)?;
        Ok(Self { tx, reader, healthy, retention, fence, election })
    }

    /// Runs a read on SQLite's read connection, off the async threads.
    async fn sqlite<T: Send + 'static>(
        conn: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || f(&conn.lock())).await.map_err(StoreError::Task)?
    }

    /// Every job that was queued or running, in submission order, and the
    /// units that succeeded of the mining jobs among them.
    /// A job waiting for others gets those that had ended, and how.
    pub async fn load_unfinished(&self) -> Result<Vec<RestoredJob>, StoreError> {
        let mut jobs = match &self.reader {
            Reader::Sqlite(c, _) => Self::sqlite(c, sqlite::read::load_unfinished).await?,
            Reader::Postgres(p) => pg::read::load_unfinished(p).await?,
        };
        let parents: std::collections::HashSet<JobId> =
            jobs.iter().filter_map(|j| j.opts.as_ref()).flat_map(|o| o.after.iter().copied()).collect();
        if parents.is_empty() {
            return Ok(jobs);
        }
        let ended: HashMap<JobId, Outcome> = self
            .outcomes(parents.into_iter().collect())
            .await?
            .into_iter()
            .filter(|(_, (state, _))| state.is_final())
            .collect();
        for j in &mut jobs {
            let after = j.opts.as_ref().map(|o| o.after.as_slice()).unwrap_or_default();
            j.ended_parents = after.iter().filter_map(|p| Some((*p, ended.get(p)?.clone()))).collect();
        }
        Ok(jobs)
    }

    /// The state of each of `ids` the store holds, with its result once
    /// it succeeded (what a job submitted `after` them needs to know).
    pub async fn outcomes(&self, ids: Vec<JobId>) -> Result<HashMap<JobId, Outcome>, StoreError> {
        match &self.reader {
            Reader::Sqlite(c, _) => Self::sqlite(c, move |c| sqlite::read::outcomes(c, &ids)).await,
            Reader::Postgres(p) => pg::read::outcomes(p, &ids).await,
        }
    }

    /// The unique keys held at `now_ms` (read back with the unfinished jobs).
    pub async fn held_keys(&self, now_ms: u64) -> Result<Vec<HeldKey>, StoreError> {
        match &self.reader {
            Reader::Sqlite(c, _) => Self::sqlite(c, move |c| sqlite::read::held_keys(c, now_ms)).await,
            Reader::Postgres(p) => pg::read::held_keys(p, now_ms).await,
        }
    }

    /// Every document of `kind` stored (name, JSON), by name.
    pub async fn named(&self, kind: NamedKind) -> Result<Vec<(String, String)>, StoreError> {
        match &self.reader {
            Reader::Sqlite(c, _) => Self::sqlite(c, move |c| sqlite::read::named(c, kind)).await,
            Reader::Postgres(p) => pg::read::named(p, kind).await,
        }
    }

    /// Each recurring schedule's last firing, by name.
    pub async fn firings(&self) -> Result<HashMap<String, Firing>, StoreError> {
        match &self.reader {
            Reader::Sqlite(c, _) => Self::sqlite(c, sqlite::read::firings).await,
            Reader::Postgres(p) => pg::read::firings(p).await,
        }
    }

    /// A job as stored (finished jobs are only here).
    pub async fn get(&self, id: JobId) -> Result<Option<JobView>, StoreError> {
        match &self.reader {
            Reader::Sqlite(c, _) => Self::sqlite(c, move |c| sqlite::read::get(c, id)).await,
            Reader::Postgres(p) => pg::read::get(p, id).await,
        }
    }

    /// What job `id` ran: its kind and parameters as submitted.
    pub async fn spec(&self, id: JobId) -> Result<Option<JobSpec>, StoreError> {
        match &self.reader {
            Reader::Sqlite(c, _) => Self::sqlite(c, move |c| sqlite::read::spec(c, id)).await,
            Reader::Postgres(p) => pg::read::spec(p, id).await,
        }
    }

    /// Job `id`'s recorded state changes, oldest first.
    pub async fn history(&self, id: JobId) -> Result<Vec<Transition>, StoreError> {
        match &self.reader {
            Reader::Sqlite(c, _) => Self::sqlite(c, move |c| sqlite::read::history(c, id)).await,
            Reader::Postgres(p) => pg::read::history(p, id).await,
        }
    }

    /// The jobs `f` selects, newest first, one page. The views carry no
    /// result (`GET /api/jobs/{id}` has it) and no queue position.
    pub async fn list(&self, f: &JobFilter) -> Result<Page, StoreError> {
        match &self.reader {
            Reader::Sqlite(c, _) => {
                let f = f.clone();
                Self::sqlite(c, move |c| sqlite::list::list(c, &f)).await
            }
            Reader::Postgres(p) => pg::list::list(p, f).await,
        }
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
        if let Err(mpsc::SendError(cmd)) = self.tx.send(Cmd::AfterCommit(Box::new(f))) {
            Batch::fail(vec![cmd]);
        }
    }

    /// Queues what `batch` gathered, in its order, as one message: the
    /// writer takes it into one group whole, so changes made together
    /// (a job stored and dispatched) cost one commit, not one each.
    pub fn send(&self, batch: &mut Batch) {
        if batch.cmds.is_empty() {
            return;
        }
        if let Err(mpsc::SendError(Cmd::Many(cmds))) = self.tx.send(Cmd::Many(std::mem::take(&mut batch.cmds))) {
            Batch::fail(cmds);
        }
    }

    /// The store's size on disk: SQLite's file and its write-ahead log, or
    /// the PostgreSQL database's.
    pub async fn bytes(&self) -> Result<u64, StoreError> {
        match &self.reader {
            Reader::Sqlite(_, path) => {
                let files = [path.to_path_buf(), path.with_extension("db-wal")];
                Ok(files.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum())
            }
            Reader::Postgres(p) => pg::read::bytes(p).await,
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

#[cfg(test)]
mod tests;
