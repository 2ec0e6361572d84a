//! The durable job store: one SQLite file in WAL mode.
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
use std::time::Instant;

use faena_common::retry::Policy;
use faena_proto::api::JobView;
use faena_proto::ids::{FencingToken, JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobSpec, JobState, Priority};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

mod contract;
mod list;
mod retention;
pub mod settings;
pub use contract::{RestoredJob, StoreOp};
pub use list::{DEFAULT_PAGE, JobFilter, MAX_PAGE, Page};
pub use retention::Retention;

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
    /// One batch of retention, after the group it arrived with.
    Prune(Retention, tokio::sync::oneshot::Sender<Result<usize, StoreError>>),
}

#[derive(Clone)]
pub struct Store {
    tx: mpsc::Sender<Cmd>,
    reader: Arc<Mutex<Connection>>,
    healthy: Arc<AtomicBool>,
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

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    priority TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    token TEXT,
    result TEXT,
    error TEXT,
    created_at INTEGER NOT NULL,
    finished_at INTEGER,
    parent TEXT,
    retry_of TEXT
);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs(seq) WHERE state IN ('queued', 'running');
CREATE TABLE IF NOT EXISTS transitions (
    job_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    worker TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS transitions_job ON transitions(job_id);
";

/// Runs after [`SCHEMA`]: brings a store made by an older build up to date.
fn migrate(conn: &Connection) -> Result<(), StoreError> {
    for column in ["parent", "retry_of"] {
        let has: bool =
            conn.query_row("SELECT COUNT(*) FROM pragma_table_info('jobs') WHERE name = ?1", [column], |r| r.get(0))?;
        if !has {
            conn.execute_batch(&format!("ALTER TABLE jobs ADD COLUMN {column} TEXT"))?;
        }
        conn.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS jobs_{column} ON jobs({column}) WHERE {column} IS NOT NULL"
        ))?;
    }
    conn.execute_batch(list::INDEXES)?;
    Ok(())
}

fn open(path: &Path, sync: SyncMode) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", if sync == SyncMode::Full { "FULL" } else { "NORMAL" })?;
    conn.pragma_update(None, "busy_timeout", 5000)?;
    Ok(conn)
}

impl Store {
    pub fn open(path: &Path, sync: SyncMode) -> Result<Self, StoreError> {
        let writer = open(path, sync)?;
        writer.execute_batch(SCHEMA)?;
        migrate(&writer)?;
        let reader = open(path, sync)?;
        let (tx, rx) = mpsc::channel();
        let healthy = Arc::new(AtomicBool::new(true));
        let flag = healthy.clone();
        std::thread::Builder::new()
            .name("faena-store".into())
            .spawn(move || write_loop(writer, rx, flag))
            .map_err(StoreError::Spawn)?;
        Ok(Self { tx, reader: Arc::new(Mutex::new(reader)), healthy })
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

    /// Deletes one batch of what `r` lets go (on the writer, after the
    /// current commit group); how many jobs.
    pub async fn prune(&self, r: Retention) -> Result<usize, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Cmd::Prune(r, tx)).map_err(|_| StoreError::Unavailable)?;
        rx.await.map_err(|_| StoreError::Unavailable)?
    }

    /// Every job that was queued or running, in submission order, and the
    /// units that succeeded of the mining jobs among them.
    pub fn load_unfinished(&self) -> Result<Vec<RestoredJob>, StoreError> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare(
            "SELECT id, kind, params, priority, seq, created_at, attempts, state, worker, token, parent, result, retry_of
             FROM jobs WHERE state IN ('queued', 'running')
                OR (state = 'succeeded' AND parent IN (SELECT id FROM jobs WHERE parent IS NULL AND state IN ('queued', 'running')))
             ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, u32>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<String>>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<String>>(10)?,
                r.get::<_, Option<String>>(11)?,
                r.get::<_, Option<String>>(12)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, params, priority, seq, created, attempts, state, worker, token, parent, result, retry_of) =
                row?;
            let parsed = (|| {
                let done = match (state.as_str(), &worker, result) {
                    ("succeeded", Some(w), Some(r)) => Some((w.clone(), serde_json::from_str(&r).ok()?)),
                    _ => None,
                };
                let lease = match (state.as_str(), worker, token) {
                    ("running", Some(w), Some(t)) => {
                        Some((WorkerId::parse(&w).ok()?, attempts, FencingToken::parse(&t).ok()?))
                    }
                    _ => None,
                };
                let parent = match parent {
                    Some(p) => Some(p.parse().ok()?),
                    None => None,
                };
                let spec =
                    JobSpec::parse_kind(JobKind::parse(&kind).ok()?, serde_json::from_str(&params).ok()?).ok()?;
                Some(RestoredJob {
                    id: id.parse().ok()?,
                    spec,
                    priority: Priority::parse(&priority)?,
                    seq: u64::try_from(seq).ok()?,
                    created_at_ms: u64::try_from(created).ok()?,
                    attempts,
                    lease,
                    parent,
                    done,
                    retry_of: retry_of.and_then(|r| r.parse().ok()),
                })
            })();
            match parsed {
                Some(job) => out.push(job),
                None => {
                    tracing::error!(job = %id, kind = %kind, "cannot restore a stored job (unknown kind, invalid parameters or corrupt row); left as is")
                }
            }
        }
        Ok(out)
    }

    /// A job as stored (finished jobs are only here).
    pub fn get(&self, id: JobId) -> Result<Option<JobView>, StoreError> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {VIEW_COLUMNS}, result, parent, retry_of,
                (SELECT id FROM jobs AS r WHERE r.retry_of = ?1 LIMIT 1)
             FROM jobs WHERE id = ?1"
        ))?;
        let id_of = |v: Option<String>| v.and_then(|v| v.parse().ok());
        let row = stmt
            .query_row([id.to_string()], |r| {
                let mut v = view(id, r, 0)?;
                v.result = r.get::<_, Option<String>>(8)?.and_then(|r| serde_json::from_str(&r).ok());
                v.parent = id_of(r.get(9)?);
                v.retry_of = id_of(r.get(10)?);
                v.retried_as = id_of(r.get(11)?);
                Ok(v)
            })
            .optional()?;
        Ok(row)
    }

    /// What job `id` ran: its kind and parameters as submitted.
    pub fn spec(&self, id: JobId) -> Result<Option<JobSpec>, StoreError> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached("SELECT kind, params FROM jobs WHERE id = ?1")?;
        let row =
            stmt.query_row([id.to_string()], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).optional()?;
        let Some((kind, params)) = row else { return Ok(None) };
        let spec = JobKind::parse(&kind)
            .ok()
            .zip(serde_json::from_str(&params).ok())
            .and_then(|(kind, params)| JobSpec::parse_kind(kind, params).ok());
        Ok(spec)
    }

    pub fn history(&self, id: JobId) -> Result<Vec<Transition>, StoreError> {
        let conn = self.reader.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT at, state, attempt, worker, detail FROM transitions WHERE job_id = ?1 ORDER BY rowid",
        )?;
        let rows = stmt.query_map([id.to_string()], |r| {
            Ok(Transition {
                at_ms: r.get::<_, i64>(0)? as u64,
                state: r.get(1)?,
                attempt: r.get(2)?,
                worker: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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

/// Commits what it is given, in order, in groups. A group that fails (disk
/// full, I/O error) is kept and tried again, with whatever arrived since,
/// until it commits (waits from [`Policy::DELIVERY`]: 50 ms growing to
/// 2 s): nothing queued is dropped and no callback runs before the changes
/// ahead of it are stored. The store reads as unhealthy meanwhile, so the
/// master takes no new jobs and hands out no work.
fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Cmd>, healthy: Arc<AtomicBool>) {
    // Jobs' `created_at` never goes down in the order they are stored (a
    // clock stepped back does not break it): listing by `since` relies on it.
    let mut created: i64 =
        conn.query_row("SELECT COALESCE(MAX(created_at), 0) FROM jobs", [], |r| r.get(0)).unwrap_or(0);
    let mut ops = Vec::new();
    let mut callbacks: Vec<Callback> = Vec::new();
    let mut prunes = Vec::new();
    let mut backoff = Policy::DELIVERY.start();
    let mut failed_at: Option<Instant> = None;
    loop {
        if ops.is_empty() && callbacks.is_empty() {
            match rx.recv() {
                Ok(cmd) => take(cmd, &mut ops, &mut callbacks, &mut prunes),
                Err(_) => return,
            }
        }
        let mut closed = false;
        while ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(cmd) => take(cmd, &mut ops, &mut callbacks, &mut prunes),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let retentions: Vec<Retention> = prunes.iter().map(|(r, _)| *r).collect();
        match apply(&mut conn, &ops, &mut created, &retentions) {
            Ok(pruned) => {
                if let Some(since) = failed_at.take() {
                    healthy.store(true, Ordering::Relaxed);
                    tracing::info!(
                        after_ms = since.elapsed().as_millis() as u64,
                        changes = ops.len(),
                        "the store commits again; the master resumes"
                    );
                }
                backoff.reset();
                ops.clear();
                for cb in callbacks.drain(..) {
                    cb(Ok(()));
                }
                for ((_, reply), n) in prunes.drain(..).zip(pruned) {
                    let _ = reply.send(n);
                }
            }
            Err(e) if closed => {
                tracing::error!(error = %e, changes = ops.len(), "the store could not commit before the master stopped; these changes are lost and their jobs run again after a restart");
                let failed = CommitFailed(Arc::new(e));
                for cb in callbacks.drain(..) {
                    cb(Err(failed.clone()));
                }
                return;
            }
            Err(e) => {
                if failed_at.is_none() {
                    failed_at = Some(Instant::now());
                    healthy.store(false, Ordering::Relaxed);
                    tracing::error!(error = %e, changes = ops.len(), "store write failed; the master takes no new jobs and hands out no work until it commits again (retrying)");
                }
                std::thread::sleep(backoff.wait());
            }
        }
    }
}

type PruneReply = tokio::sync::oneshot::Sender<Result<usize, StoreError>>;

fn take(cmd: Cmd, ops: &mut Vec<StoreOp>, callbacks: &mut Vec<Callback>, prunes: &mut Vec<(Retention, PruneReply)>) {
    match cmd {
        Cmd::Op(op) => ops.push(op),
        Cmd::AfterCommit(cb) => callbacks.push(cb),
        Cmd::Prune(r, reply) => prunes.push((r, reply)),
    }
}

/// Commits `ops` in one transaction. `created` is the newest job's
/// `created_at` so far: a job is never stored as created before it.
fn apply(
    conn: &mut Connection,
    ops: &[StoreOp],
    created: &mut i64,
    retentions: &[Retention],
) -> Result<Vec<Result<usize, StoreError>>, StoreError> {
    let mut newest = *created;
    let mut tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO jobs (id, kind, params, priority, seq, state, created_at, parent, retry_of) VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8)",
        )?;
        let mut reprioritise = tx.prepare_cached("UPDATE jobs SET priority = ?2 WHERE id = ?1")?;
        let mut started = tx.prepare_cached("UPDATE jobs SET state = 'running', worker = ?2 WHERE id = ?1")?;
        let mut update = tx.prepare_cached(
            "UPDATE jobs SET state = ?2, attempts = ?3, worker = ?4, token = ?5, result = ?6, error = ?7, finished_at = ?8 WHERE id = ?1",
        )?;
        let mut record = tx.prepare_cached(
            "INSERT INTO transitions (job_id, at, state, attempt, worker, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for op in ops {
            match op {
                StoreOp::Insert { id, spec, priority, seq, at_ms, parent, retry_of } => {
                    let id = id.to_string();
                    newest = newest.max(*at_ms as i64);
                    insert.execute(params![
                        id,
                        spec.kind().as_str(),
                        spec.params_json().to_string(),
                        priority.as_str(),
                        *seq as i64,
                        newest,
                        parent.map(|p| p.to_string()),
                        retry_of.map(|r| r.to_string())
                    ])?;
                    let detail = match (parent, retry_of) {
                        (Some(p), _) => Some(format!("unit of job {p}")),
                        (None, Some(r)) => Some(format!("retry of job {r}")),
                        (None, None) => None,
                    };
                    record.execute(params![id, newest, "queued", 0, None::<String>, detail])?;
                }
                StoreOp::Reprioritised { id, priority, was, state, attempts, at_ms } => {
                    let id = id.to_string();
                    reprioritise.execute(params![id, priority.as_str()])?;
                    let detail = format!("priority {} (was {})", priority.as_str(), was.as_str());
                    record.execute(params![id, *at_ms as i64, state.as_str(), attempts, None::<String>, detail])?;
                }
                StoreOp::Started { id, worker, at_ms } => {
                    let id = id.to_string();
                    started.execute(params![id, worker])?;
                    record.execute(params![id, *at_ms as i64, "running", 1, worker, "split into units"])?;
                }
                StoreOp::Dispatched { id, attempt, worker, token, at_ms } => {
                    let id = id.to_string();
                    update.execute(params![
                        id,
                        "running",
                        attempt,
                        worker,
                        token.as_str(),
                        None::<String>,
                        None::<String>,
                        None::<i64>
                    ])?;
                    record.execute(params![id, *at_ms as i64, "running", attempt, worker, None::<String>])?;
                }
                StoreOp::Requeued { id, attempts, reason, at_ms } => {
                    let id = id.to_string();
                    update.execute(params![
                        id,
                        "queued",
                        attempts,
                        None::<String>,
                        None::<String>,
                        None::<String>,
                        None::<String>,
                        None::<i64>
                    ])?;
                    record.execute(params![id, *at_ms as i64, "queued", attempts, None::<String>, reason])?;
                }
                StoreOp::Finished { id, state, attempts, worker, result, error, at_ms } => {
                    let id = id.to_string();
                    let result = result.as_ref().map(|r| r.to_string());
                    update.execute(params![
                        id,
                        state.as_str(),
                        attempts,
                        worker,
                        None::<String>,
                        result,
                        error,
                        *at_ms as i64
                    ])?;
                    record.execute(params![id, *at_ms as i64, state.as_str(), attempts, worker, error])?;
                }
            }
        }
    }
    // Retention rides in the same transaction, each batch in a savepoint.
    let now = faena_proto::mqtt::now_ms() as i64;
    let mut pruned = Vec::with_capacity(retentions.len());
    for r in retentions {
        let sp = tx.savepoint()?;
        pruned.push(match retention::prune(&sp, *r, now) {
            Ok(n) => sp.commit().map(|()| n).map_err(StoreError::from),
            Err(e) => Err(e),
        });
    }
    tx.commit()?;
    *created = newest;
    Ok(pruned)
}

#[cfg(test)]
mod tests;
