//! The PostgreSQL backend's side of the writer. A group's operations are
//! folded per job (`group.rs`), then sent as at most three multi-row
//! statements — new jobs, changed jobs, history rows — with those beside
//! them (`side.rs`), pipelined on one connection in one transaction: one
//! round trip and one commit for the whole group. Each group's
//! transaction is chained to the one before it (`faena_link`), so the
//! writer's loop (`pipeline.rs`) sends the next group while the last one
//! commits.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, Config, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

mod group;
pub(crate) mod pipeline;
mod side;
#[cfg(test)]
mod tests;
use group::Group;

use crate::{Retention, StoreError, StoreOp, UNFENCED};

pub(crate) const INSERT: &str = "INSERT INTO jobs (row_id, id, kind, params, priority, seq, state, attempts, worker, token, result, error, created_at, finished_at, parent, retry_of, opts, run_at, schedule)
    SELECT * FROM UNNEST($1::int8[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], $8::int4[], $9::text[], $10::text[], $11::text[], $12::text[], $13::int8[], $14::int8[], $15::uuid[], $16::uuid[], $17::text[], $18::int8[], $19::text[])";

const UPDATE: &str = "UPDATE jobs AS j SET
        priority = coalesce(u.priority, j.priority),
        state = coalesce(u.state, j.state),
        worker = CASE WHEN u.set_worker THEN u.worker ELSE j.worker END,
        attempts = CASE WHEN u.set_rest THEN u.attempts ELSE j.attempts END,
        token = CASE WHEN u.set_rest THEN u.token ELSE j.token END,
        result = CASE WHEN u.set_rest THEN u.result ELSE j.result END,
        error = CASE WHEN u.set_rest THEN u.error ELSE j.error END,
        finished_at = CASE WHEN u.set_rest THEN u.finished_at ELSE j.finished_at END,
        run_at = CASE WHEN u.set_run_at THEN u.run_at ELSE j.run_at END
    FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bool[], $5::text[], $6::bool[], $7::int4[], $8::text[], $9::text[], $10::text[], $11::int8[], $12::bool[], $13::int8[])
        AS u(id, priority, state, set_worker, worker, set_rest, attempts, token, result, error, finished_at, set_run_at, run_at)
    WHERE j.id = u.id";

/// Unique keys taken by the group's new jobs (an expired holder's row is
/// taken over: the engine lets a key go only once it is free).
const TAKE_KEYS: &str = "INSERT INTO unique_keys (key, job, until_ms)
    SELECT * FROM UNNEST($1::text[], $2::uuid[], $3::int8[])
    ON CONFLICT (key) DO UPDATE SET job = excluded.job, until_ms = excluded.until_ms";

/// Named documents (groups' limits, schedules) written by the group.
const PUT_NAMED: &str = "INSERT INTO named (kind, name, doc) SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[])
    ON CONFLICT (kind, name) DO UPDATE SET doc = excluded.doc";
const DELETE_NAMED: &str = "DELETE FROM named AS n USING UNNEST($1::text[], $2::text[]) AS d(kind, name)
    WHERE n.kind = d.kind AND n.name = d.name";

/// Schedules' last firings (and the jobs they made).
const FIRED: &str =
    "INSERT INTO schedule_firings (name, at_ms, job) SELECT * FROM UNNEST($1::text[], $2::int8[], $3::uuid[])
    ON CONFLICT (name) DO UPDATE SET at_ms = excluded.at_ms, job = excluded.job";

/// Keys whose time ran out, before new ones are taken.
const EXPIRE_KEYS: &str = "DELETE FROM unique_keys WHERE until_ms < $1";

/// Keys held while their job was not finished, freed as it finished.
const FREE_KEYS: &str = "DELETE FROM unique_keys AS k USING UNNEST($1::text[], $2::uuid[]) AS f(key, job)
    WHERE k.key = f.key AND k.job = f.job";

pub(crate) const RECORD: &str = "INSERT INTO transitions (job_id, at, state, attempt, worker, detail, epoch)
    SELECT *, $7::int8 FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::int4[], $5::text[], $6::text[])";

/// One batch of retention: the oldest finished jobs up to a row id (`$1`),
/// at most `$2`, a mining job's units kept while it runs; their history
/// goes with them.
const PRUNE: &str = "WITH doomed AS (
        SELECT id FROM jobs
        WHERE row_id <= $1 AND state IN ('succeeded', 'failed', 'cancelled')
          AND (parent IS NULL OR NOT EXISTS
               (SELECT 1 FROM jobs p WHERE p.id = jobs.parent AND p.state IN ('queued', 'running')))
        ORDER BY row_id LIMIT $2
    ), history AS (DELETE FROM transitions WHERE job_id IN (SELECT id FROM doomed))
    DELETE FROM jobs WHERE id IN (SELECT id FROM doomed)";

/// Holds the leader's row, shared, for the rest of the transaction: a
/// takeover (which updates it) waits for this group's commit, and a group
/// that starts after it finds another epoch, fails with [`FENCED`] and
/// commits nothing (`faena_fence`, migration 4).
const FENCE: &str = "SELECT faena_fence($1)";

/// The SQLSTATE `faena_fence` raises for a deposed epoch.
const FENCED: &str = "FA001";

/// Moves the writer's chain from the group before (`$1`) to this one
/// (`$2`), holding its row for the rest of the transaction; fails it
/// (SQLSTATE FA002) unless the group before committed (`faena_link`,
/// migration 8).
const LINK: &str = "SELECT faena_link($1, $2)";

/// Checks the fence inside the caller's transaction: [`StoreError::Fenced`]
/// when `epoch` no longer leads the store; nothing when it is [`UNFENCED`].
async fn fence(client: &Client, stmt: &Statement, epoch: i64) -> Result<(), StoreError> {
    if epoch == UNFENCED {
        return Ok(());
    }
    match client.execute(stmt, &[&epoch]).await {
        Err(e) if e.code().is_some_and(|c| c.code() == FENCED) => Err(StoreError::Fenced { epoch }),
        other => other.map(drop).map_err(StoreError::from),
    }
}

/// Jobs deleted per step of retention.
const PRUNE_BATCH: i64 = 1_000;

/// A connection and its prepared statements.
#[derive(Debug)]
struct Conn {
    client: Client,
    insert: Statement,
    update: Statement,
    record: Statement,
    prune: Statement,
    fence: Statement,
    link: Statement,
    take_keys: Statement,
    free_keys: Statement,
    expire_keys: Statement,
    put_named: Statement,
    delete_named: Statement,
    fired: Statement,
}

/// What a committed group answers: each step of retention's count.
pub(crate) type Pruned = Vec<Result<usize, StoreError>>;

/// A group on its way to the server.
#[derive(Debug)]
pub(crate) struct Sent {
    /// Answers once the group's statements ran (the server is committing
    /// it); none once heard.
    pub ran: Option<oneshot::Receiver<()>>,
    /// Answers once the group committed, or failed.
    pub done: JoinHandle<Result<Pruned, StoreError>>,
    /// The link the chain moves to when it commits.
    pub link: i64,
}

/// The writer's connection (made again after a failure) and what it
/// knows of the store.
pub(crate) struct Writer {
    /// The writer thread's runtime, taken when its loop starts.
    rt: Option<tokio::runtime::Runtime>,
    config: Config,
    tls: MakeRustlsConnect,
    conn: Option<Arc<Conn>>,
    retention: Retention,
    /// The row id the next job gets, after every group sent (read from
    /// the store on connecting; ids skipped by a group sent again are
    /// never reused, so ids still grow in the order jobs are committed).
    next_row: i64,
    /// The newest job's `created_at` (jobs' `created_at` never goes down
    /// in the order they are stored; listing by `since` relies on it).
    created: i64,
    /// The chain's link after the last group sent.
    link: i64,
    /// The leader's epoch each group is fenced with ([`UNFENCED`]: none).
    fence: Arc<AtomicI64>,
}

impl Writer {
    pub(crate) fn new(
        config: Config,
        tls: MakeRustlsConnect,
        retention: Retention,
        fence: Arc<AtomicI64>,
    ) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StoreError::Spawn)?;
        Ok(Self { rt: Some(rt), config, tls, conn: None, retention, next_row: 1, created: 0, link: 0, fence })
    }

    /// Connects, when there is no connection: the chain's link as the store
    /// has it then (which of the groups a lost connection left unanswered
    /// committed); none when already connected.
    async fn connect(&mut self) -> Result<Option<i64>, StoreError> {
        if self.conn.is_some() {
            return Ok(None);
        }
        let conn = connect(&self.config, &self.tls).await?;
        let row = conn
            .client
            .query_one(
                "SELECT coalesce(max(row_id), 0), coalesce(max(created_at), 0),
                    (SELECT link FROM faena_chain WHERE id = 1) FROM jobs",
                &[],
            )
            .await?;
        self.next_row = self.next_row.max(row.try_get::<_, i64>(0)? + 1);
        self.created = self.created.max(row.try_get(1)?);
        self.link = row.try_get(2)?;
        self.conn = Some(Arc::new(conn));
        Ok(Some(self.link))
    }

    /// Drops the connection: whatever failed, the next group starts on a
    /// fresh one.
    fn disconnect(&mut self) {
        self.conn = None;
    }

    /// Sends `ops` and `prunes` steps of retention as one transaction
    /// chained after the last group sent, on a task of the writer's
    /// runtime; needs a connection ([`Writer::connect`]).
    fn send(&mut self, ops: &[StoreOp], prunes: usize) -> Result<Sent, StoreError> {
        let Some(conn) = self.conn.clone() else { return Err(StoreError::Unavailable) };
        let group = Group::fold(ops, &mut self.next_row, &mut self.created);
        let (prev, link) = (self.link, next_link(self.link));
        self.link = link;
        let (epoch, now, retention) = (self.fence.load(Ordering::Relaxed), self.created, self.retention);
        let (ran_tx, ran) = oneshot::channel();
        let done = tokio::spawn(async move {
            let tx = Tx { conn: &conn, group: &group, epoch, link: (prev, link), now };
            match prunes {
                0 => tx.commit(ran_tx).await.map(|()| Vec::new()),
                n => tx.commit_pruning(n, retention).await,
            }
        });
        Ok(Sent { ran: Some(ran), done, link })
    }
}

/// A link no group before it had: random, so a link in the store names
/// one group of one writer (another master's writer chains from the same
/// row after a takeover).
fn next_link(prev: i64) -> i64 {
    loop {
        let link = uuid::Uuid::new_v4().as_u64_pair().0 as i64;
        if link != prev {
            return link;
        }
    }
}

/// One group's transaction.
struct Tx<'a> {
    conn: &'a Conn,
    group: &'a Group,
    epoch: i64,
    /// The chain's link before the group, and after it.
    link: (i64, i64),
    /// The newest job's time: unique keys that ran out before it are freed.
    now: i64,
}

impl Tx<'_> {
    /// BEGIN, the group's statements and COMMIT, sent together and
    /// answered together; `ran` is told once the statements were answered
    /// (the server is committing). Any failure aborts the transaction, and
    /// the server takes the COMMIT that follows as a ROLLBACK: nothing
    /// applied.
    async fn commit(&self, ran: oneshot::Sender<()>) -> Result<(), StoreError> {
        let client = &self.conn.client;
        let (begin, statements, commit) = tokio::join!(
            async { client.batch_execute("BEGIN").await.map_err(StoreError::from) },
            async {
                let done = self.statements().await;
                let _ = ran.send(());
                done
            },
            async { client.batch_execute("COMMIT").await.map_err(StoreError::from) },
        );
        begin.and(statements).and(commit)
    }

    /// The same with `prunes` steps of retention after the statements,
    /// each in a savepoint of its own (a step that fails is undone alone),
    /// answered one by one.
    async fn commit_pruning(&self, prunes: usize, retention: Retention) -> Result<Pruned, StoreError> {
        let client = &self.conn.client;
        client.batch_execute("BEGIN").await?;
        self.statements().await?;
        let mut pruned = Vec::with_capacity(prunes);
        for _ in 0..prunes {
            client.batch_execute("SAVEPOINT prune").await?;
            match prune(client, &self.conn.prune, retention).await {
                Ok(n) => {
                    client.batch_execute("RELEASE SAVEPOINT prune").await?;
                    pruned.push(Ok(n));
                }
                Err(e) => {
                    client.batch_execute("ROLLBACK TO SAVEPOINT prune; RELEASE SAVEPOINT prune").await?;
                    pruned.push(Err(e));
                }
            }
        }
        client.batch_execute("COMMIT").await?;
        Ok(pruned)
    }

    /// The fence, the chain's link and the group's statements, all sent on
    /// the first poll. Every answer is awaited (join, not try_join: which
    /// future a join polls first after that varies), so a refusal is told
    /// as such, not as the aborted statements behind it: the fence's first
    /// (a deposed master's group is refused, never retried), then the
    /// link's (the group before did not commit: this one is sent again).
    async fn statements(&self) -> Result<(), StoreError> {
        let (c, g) = (self.conn, self.group);
        let client = &c.client;
        let (fenced, linked, inserted, updated, recorded, keys, named) = tokio::join!(
            fence(client, &c.fence, self.epoch),
            async { client.execute(&c.link, &[&self.link.0, &self.link.1]).await.map_err(StoreError::from) },
            g.insert(client, &c.insert),
            g.update(client, &c.update),
            g.record(client, &c.record, self.epoch),
            g.keys(client, [&c.expire_keys, &c.take_keys, &c.free_keys], self.now),
            g.named(client, [&c.put_named, &c.delete_named, &c.fired]),
        );
        fenced?;
        linked?;
        inserted.and(updated).and(recorded).and(keys).and(named)
    }
}

async fn connect(config: &Config, tls: &MakeRustlsConnect) -> Result<Conn, StoreError> {
    let (client, connection) = config.connect(tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "the store's write connection closed");
        }
    });
    Ok(Conn {
        insert: client.prepare(INSERT).await?,
        update: client.prepare(UPDATE).await?,
        record: client.prepare(RECORD).await?,
        prune: client.prepare(PRUNE).await?,
        fence: client.prepare(FENCE).await?,
        link: client.prepare(LINK).await?,
        take_keys: client.prepare(TAKE_KEYS).await?,
        free_keys: client.prepare(FREE_KEYS).await?,
        expire_keys: client.prepare(EXPIRE_KEYS).await?,
        put_named: client.prepare(PUT_NAMED).await?,
        delete_named: client.prepare(DELETE_NAMED).await?,
        fired: client.prepare(FIRED).await?,
        client,
    })
}

/// One step of retention: how many jobs went.
async fn prune(tx: &Client, stmt: &Statement, r: Retention) -> Result<usize, StoreError> {
    let now = faena_proto::mqtt::now_ms() as i64;
    let by_age = match r.age {
        Some(age) => tx
            .query_opt(
                "SELECT row_id FROM jobs WHERE created_at < $1 ORDER BY created_at DESC, row_id DESC LIMIT 1",
                &[&now.saturating_sub(age.as_millis() as i64)],
            )
            .await?
            .map(|row| row.try_get::<_, i64>(0))
            .transpose()?,
        None => None,
    };
    let by_count = match r.keep {
        Some(keep) => tx
            .query_one("SELECT max(row_id) FROM jobs", &[])
            .await?
            .try_get::<_, Option<i64>>(0)?
            .map(|max| max.saturating_sub(keep as i64)),
        None => None,
    };
    let Some(bound) = by_age.max(by_count) else { return Ok(0) };
    let n = tx.execute(stmt, &[&bound, &PRUNE_BATCH]).await?;
    Ok(usize::try_from(n).unwrap_or(0))
}
