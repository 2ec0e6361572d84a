//! The durable job store, behind one contract (`faena-store-contract`,
//! re-exported here): the engine's changes go in as [`StoreOp`]s,
//! unfinished jobs come back as [`RestoredJob`]s; the REST side reads jobs,
//! pages and histories (`contract.rs`).
//! Backends: SQLite (`sqlite/`, one file, the default, or several with a
//! writer each, `shards.rs`) and PostgreSQL (`pg/`, the store for a
//! cluster).
//!
//! One writer thread owns the backend's write connection (a SQLite store
//! of shards: one a file) and commits in
//! groups (`writer.rs`): it takes every operation queued so far, applies
//! them in one transaction, commits, and only then runs the callbacks
//! waiting on them (the 202 of a submission, the final event of a job).
//! Many concurrent submissions therefore share one commit instead of
//! paying one each. Reads use connections of their own.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
pub mod shards;
mod sqlite;
mod writer;
pub use contract::{DEFAULT_PAGE, JobFilter, MAX_PAGE, Page, Retention, Transition};
pub use faena_store_contract::{Firing, HeldKey, NamedKind, Outcome, RestoredJob, StoreOp, rfc3339};
pub use pg::MAX_WRITERS;
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
    #[error("the store's shards: {0}")]
    Shards(String),
    #[error("{0}")]
    InUse(String),
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
    /// The row id and time of the next `Insert` (always in the same
    /// message): a store of shards numbers jobs in the order they were queued.
    Row(writer::Stamp),
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
                Cmd::Op(_) | Cmd::Row(_) => {}
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
    /// Each shard's read connection and file, shard 0 first (`shards.rs`).
    Sqlite(Arc<[SqliteShard]>),
    Postgres(deadpool_postgres::Pool),
}

struct SqliteShard {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

#[derive(Clone)]
pub struct Store {
    /// Each writer's queue: one, or a SQLite store's shards' in order.
    tx: Arc<[mpsc::Sender<Cmd>]>,
    reader: Reader,
    healthy: Arc<[Arc<AtomicBool>]>,
    /// A store of shards (or of PostgreSQL writers): the row ids its jobs
    /// take, in the order queued, and the callbacks waiting on every writer.
    sharded: Option<(Arc<shards::Numbering>, Arc<shards::Joiner>)>,
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
    /// generations (what [`Store::prune`] drops). A store made with
    /// shards opens with them.
    pub fn open(path: &Path, sync: SyncMode, retention: Retention) -> Result<Self, StoreError> {
        Self::open_sharded(path, sync, retention, None)
    }

    /// The same, its jobs spread over `shards` files each with a writer of
    /// its own (`shards.rs`): the number a new store is made with, and
    /// that an existing one must have been made with (none: as it was).
    pub fn open_sharded(
        path: &Path,
        sync: SyncMode,
        retention: Retention,
        shards: Option<usize>,
    ) -> Result<Self, StoreError> {
        let mut writers = Vec::new();
        let mut readers = Vec::new();
        let (opened, numbering) = shards::open(path, sync, retention, shards)?;
        let sharded = (opened.len() > 1).then(|| (Arc::new(numbering), Arc::new(shards::Joiner::new(opened.len()))));
        for o in opened {
            writers.push(o.writer);
            readers.push(SqliteShard { conn: Arc::new(Mutex::new(o.reader)), path: o.path });
        }
        Self::start(writers, Reader::Sqlite(readers.into()), retention, unfenced(), None, sharded)
    }

    /// How many shards the store's jobs are spread over: SQLite's files,
    /// or PostgreSQL's writers.
    pub fn shards(&self) -> usize {
        self.tx.len()
    }

    /// Connects to the PostgreSQL store at `url` (`postgres://…`),
    /// migrating its schema first.
    pub async fn connect(url: &str, retention: Retention) -> Result<Self, StoreError> {
        Self::connect_writers(url, retention, 1).await
    }

    /// The same, with `writers` writer threads (1 to [`MAX_WRITERS`]),
    /// each on a connection of its own: a job's changes all go to one of
    /// them (by its id, as to a SQLite store's shard), so the server runs
    /// that many commit groups side by side where one connection's server
    /// process was the limit. New jobs are numbered as they are queued, as
    /// over shards; [`Store::load_unfinished`], which a master reads when
    /// it starts to lead, numbers on after the jobs other masters stored
    /// meanwhile. Retention runs on the first writer.
    pub async fn connect_writers(url: &str, retention: Retention, writers: usize) -> Result<Self, StoreError> {
        let fence = unfenced();
        let (writers, pool, election) = pg::open_store(url, retention, fence.clone(), writers).await?;
        let sharded = match writers.len() {
            1 => None,
            n => {
                let numbering = shards::Numbering::after(pg::read::newest(&pool).await?);
                Some((Arc::new(numbering), Arc::new(shards::Joiner::new(n))))
            }
        };
        Self::start(writers, Reader::Postgres(pool), retention, fence, Some(election), sharded)
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

    /// Starts a writer thread on each of `backends` (a store's shards).
    fn start(
        backends: Vec<impl writer::Apply>,
        reader: Reader,
        retention: Retention,
        fence: Arc<std::sync::atomic::AtomicI64>,
        election: Option<Election>,
        sharded: Option<(Arc<shards::Numbering>, Arc<shards::Joiner>)>,
    ) -> Result<Self, StoreError> {
        let (mut tx, mut healthy) = (Vec::new(), Vec::new());
        for (k, backend) in backends.into_iter().enumerate() {
            let (sender, rx) = mpsc::channel();
            let flag = Arc::new(AtomicBool::new(true));
            let mine = flag.clone();
            let joiner = sharded.as_ref().map(|(_, j)| j.clone());
            let done = move |messages| {
                if let Some(j) = &joiner {
                    j.committed(k, messages);
                }
            };
            std::thread::Builder::new()
                .name("faena-store".into())
                .spawn(move || writer::run(backend, rx, mine, done))
                .map_err(StoreError::Spawn)?;
            tx.push(sender);
            healthy.push(flag);
        }
        Ok(Self { tx: tx.into(), reader, healthy: healthy.into(), sharded, retention, fence, election })
    }

    /// Every job that was queued or running, in submission order, and the
    /// units that succeeded of the mining jobs among them.
    /// A job waiting for others gets those that had ended, and how.
    pub async fn load_unfinished(&self) -> Result<Vec<RestoredJob>, StoreError> {
        let mut jobs = match &self.reader {
            Reader::Sqlite(s) => {
                let mut all: Vec<RestoredJob> =
                    shards::read::each(s, sqlite::read::load_unfinished).await?.into_iter().flatten().collect();
                all.sort_by_key(|j| j.seq);
                all
            }
            Reader::Postgres(p) => {
                // Before this master stores anything: after what others stored.
                if let Some((numbering, _)) = &self.sharded {
                    numbering.raise(pg::read::newest(p).await?);
                }
                pg::read::load_unfinished(p).await?
            }
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
            Reader::Sqlite(s) => shards::read::outcomes(s, ids).await,
            Reader::Postgres(p) => pg::read::outcomes(p, &ids).await,
        }
    }

    /// The unique keys held at `now_ms` (read back with the unfinished jobs).
    pub async fn held_keys(&self, now_ms: u64) -> Result<Vec<HeldKey>, StoreError> {
        match &self.reader {
            Reader::Sqlite(s) => shards::read::held_keys(s, now_ms).await,
            Reader::Postgres(p) => pg::read::held_keys(p, now_ms).await,
        }
    }

    /// Every document of `kind` stored (name, JSON), by name.
    pub async fn named(&self, kind: NamedKind) -> Result<Vec<(String, String)>, StoreError> {
        match &self.reader {
            Reader::Sqlite(s) => shards::read::on(s, 0, move |c| sqlite::read::named(c, kind)).await,
            Reader::Postgres(p) => pg::read::named(p, kind).await,
        }
    }

    /// Each recurring schedule's last firing, by name.
    pub async fn firings(&self) -> Result<HashMap<String, Firing>, StoreError> {
        match &self.reader {
            Reader::Sqlite(s) => shards::read::firings(s).await,
            Reader::Postgres(p) => pg::read::firings(p).await,
        }
    }

    /// A job as stored (finished jobs are only here).
    pub async fn get(&self, id: JobId) -> Result<Option<JobView>, StoreError> {
        match &self.reader {
            Reader::Sqlite(s) => shards::read::on(s, id.shard(s.len()), move |c| sqlite::read::get(c, id)).await,
            Reader::Postgres(p) => pg::read::get(p, id).await,
        }
    }

    /// What job `id` ran: its kind and parameters as submitted.
    pub async fn spec(&self, id: JobId) -> Result<Option<JobSpec>, StoreError> {
        match &self.reader {
            Reader::Sqlite(s) => shards::read::on(s, id.shard(s.len()), move |c| sqlite::read::spec(c, id)).await,
            Reader::Postgres(p) => pg::read::spec(p, id).await,
        }
    }

    /// Job `id`'s recorded state changes, oldest first.
    pub async fn history(&self, id: JobId) -> Result<Vec<Transition>, StoreError> {
        match &self.reader {
            Reader::Sqlite(s) => shards::read::on(s, id.shard(s.len()), move |c| sqlite::read::history(c, id)).await,
            Reader::Postgres(p) => pg::read::history(p, id).await,
        }
    }

    /// The jobs `f` selects, newest first, one page. The views carry no
    /// result (`GET /api/jobs/{id}` has it) and no queue position.
    pub async fn list(&self, f: &JobFilter) -> Result<Page, StoreError> {
        match &self.reader {
            Reader::Sqlite(s) => shards::read::list(s, f).await,
            Reader::Postgres(p) => pg::list::list(p, f).await,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.iter().all(|h| h.load(Ordering::Relaxed))
    }

    /// Queues a write; it commits with the next group.
    pub fn write(&self, op: StoreOp) {
        match self.sharded {
            None => {
                let _ = self.tx[0].send(Cmd::Op(op));
            }
            // Routed and numbered as a batch of one.
            Some(_) => self.send(&mut Batch { cmds: vec![Cmd::Op(op)] }),
        }
    }

    /// Runs `f` once everything queued before it is committed (or failed),
    /// in every shard.
    pub fn after_commit(&self, f: impl FnOnce(Result<(), CommitFailed>) + Send + 'static) {
        let cmd = Cmd::AfterCommit(Box::new(f));
        match self.sharded {
            None => {
                if let Err(mpsc::SendError(cmd)) = self.tx[0].send(cmd) {
                    Batch::fail(vec![cmd]);
                }
            }
            Some(_) => self.send(&mut Batch { cmds: vec![cmd] }),
        }
    }

    /// Queues what `batch` gathered, in its order, as one message: the
    /// writer takes it into one group whole, so changes made together
    /// (a job stored and dispatched) cost one commit, not one each. Over
    /// shards, each writer gets its part as one message.
    pub fn send(&self, batch: &mut Batch) {
        if batch.cmds.is_empty() {
            return;
        }
        let cmds = std::mem::take(&mut batch.cmds);
        let Some((ids, joiner)) = &self.sharded else {
            if let Err(mpsc::SendError(Cmd::Many(cmds))) = self.tx[0].send(Cmd::Many(cmds)) {
                Batch::fail(cmds);
            }
            return;
        };
        let (parts, callbacks) = shards::split(cmds, self.tx.len(), ids);
        for (k, part) in parts.into_iter().enumerate().filter(|(_, p)| !p.is_empty()) {
            joiner.send(k, &self.tx[k], Cmd::Many(part));
        }
        if let Some(f) = callbacks {
            joiner.after(f, &self.tx[0]);
        }
    }

    /// The store's size on disk: SQLite's files and their write-ahead
    /// logs, or the PostgreSQL database's.
    pub async fn bytes(&self) -> Result<u64, StoreError> {
        match &self.reader {
            Reader::Sqlite(s) => {
                let files = s.iter().flat_map(|s| [s.path.clone(), s.path.with_extension("db-wal")]);
                Ok(files.filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum())
            }
            Reader::Postgres(p) => pg::read::bytes(p).await,
        }
    }

    /// What the store keeps.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Drops the oldest generation (of each shard) if all of it is out of
    /// retention (on the writer, with the current commit group); how many
    /// jobs went.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        // PostgreSQL's writers share one set of tables: the first prunes it.
        let writers = if matches!(self.reader, Reader::Postgres(_)) { 1 } else { self.tx.len() };
        let mut replies = Vec::with_capacity(writers);
        for (k, tx) in self.tx.iter().enumerate().take(writers) {
            let (reply, rx) = tokio::sync::oneshot::channel();
            match &self.sharded {
                Some((_, joiner)) => joiner.send(k, tx, Cmd::Prune(reply)),
                None => tx.send(Cmd::Prune(reply)).map_err(|_| StoreError::Unavailable)?,
            }
            replies.push(rx);
        }
        let mut pruned = 0;
        for rx in replies {
            pruned += rx.await.map_err(|_| StoreError::Unavailable)??;
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests;
