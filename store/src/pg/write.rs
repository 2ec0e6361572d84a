//! The PostgreSQL backend's side of the writer. A group's operations are
//! folded per job (`group.rs`), then sent as at most three multi-row
//! statements — new jobs, changed jobs, history rows — with those beside
//! them (`side.rs`), pipelined on one connection in one transaction: one
//! round trip and one commit for the whole group.
//!
//! Each group reads its transaction's id first. When the connection is
//! lost after a group's statements ran but before its COMMIT was answered,
//! whether it committed is unknown: the writer asks PostgreSQL once it is
//! connected again, and sends again only what was not stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio_postgres::{Client, Config, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;

mod group;
mod side;
#[cfg(test)]
mod tests;
use group::Group;

use crate::writer::Apply;
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
/// taken over: the engine lets a key go only once it is free). The one
/// statement of a group's keys that waits for another writer's (the
/// others skip what is locked), its rows in key order: writers side by
/// side wait for one another in one order, never in a circle (a deadlock
/// PostgreSQL breaks only after a second, by failing a group).
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

/// Keys whose time ran out, after the group's own are taken. Rows another
/// writer's group holds are left to it: it takes them over or deletes them.
const EXPIRE_KEYS: &str = "DELETE FROM unique_keys WHERE key IN
    (SELECT key FROM unique_keys WHERE until_ms < $1 FOR UPDATE SKIP LOCKED)";

/// Keys held while their job was not finished, freed as it finished. A row
/// another writer's group holds is being taken over by a job the engine let
/// have the key after this one: that group replaces the holder.
const FREE_KEYS: &str = "DELETE FROM unique_keys WHERE key IN
    (SELECT k.key FROM unique_keys AS k JOIN UNNEST($1::text[], $2::uuid[]) AS f(key, job)
        ON k.key = f.key AND k.job = f.job
     FOR UPDATE OF k SKIP LOCKED)";

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

/// Marks the caller's transaction as this writer's group `$2` (migration
/// 10): what the writer asks about when the connection was lost before the
/// group's COMMIT was answered. Not the transaction's id: a standby
/// promoted in the old primary's place may have given that id to another
/// transaction, which a lost group was then taken for (the store's own
/// failover drill lost a job's result so).
const MARK: &str = "INSERT INTO faena_writer_groups (writer, seq, at_ms) VALUES ($1, $2, $3)
    ON CONFLICT (writer) DO UPDATE SET seq = excluded.seq, at_ms = excluded.at_ms";

/// The last group of this writer's that committed. The row lock waits for
/// nothing: a transaction that still holds it (the lost connection's server
/// process is still at it) answers "locked", and the writer asks again.
const MARKED: &str = "SELECT seq FROM faena_writer_groups WHERE writer = $1 FOR UPDATE NOWAIT";

/// The SQLSTATE of a row lock `NOWAIT` could not take.
const LOCKED: &str = "55P03";

/// Marks of writers gone for [`FORGET_AFTER_MS`] (one row a master's run).
const FORGET_WRITERS: &str = "DELETE FROM faena_writer_groups WHERE at_ms < $1";

/// A day: no writer's unanswered group waits that long to be asked about.
const FORGET_AFTER_MS: u64 = 86_400_000;

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

/// How the writer's statements are planned. They reach jobs by key only.
/// Planned anew for each group (the readers' `force_custom_plan`), the
/// update of 150 or more jobs was planned as a hash join over the whole
/// table while the table was young: 7.5-13 ms a group, against 2-3 ms by
/// the primary key; and planning the three statements of a small group
/// cost its commit about 0.2 ms. So joins are nested loops over indexes
/// and each statement is planned once per connection: with sequential
/// scans off, that plan reads an index even when made while `jobs` was
/// empty (a generic plan made then used to scan the table for good).
pub(crate) const WRITER_PLANS: &str = "SET enable_hashjoin = off; SET enable_mergejoin = off; \
    SET enable_seqscan = off; SET plan_cache_mode = auto";

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
    mark: Statement,
    marked: Statement,
    take_keys: Statement,
    free_keys: Statement,
    expire_keys: Statement,
    put_named: Statement,
    delete_named: Statement,
    fired: Statement,
}

/// The writer's connection (made again after a failure) and what it
/// knows of the store.
pub(crate) struct Writer {
    rt: tokio::runtime::Runtime,
    config: Config,
    tls: MakeRustlsConnect,
    conn: Option<Conn>,
    retention: Retention,
    /// The row id the next job gets (read from the store on connecting).
    next_row: i64,
    /// The newest job's `created_at` (jobs' `created_at` never goes down
    /// in the order they are stored; listing by `since` relies on it).
    created: i64,
    /// The leader's epoch each group is fenced with ([`UNFENCED`]: none).
    fence: Arc<AtomicI64>,
    /// This writer's name in `faena_writer_groups`, and the mark its next
    /// group gets.
    writer: uuid::Uuid,
    next_mark: i64,
    /// A group whose statements ran but whose COMMIT went unanswered.
    /// Asked about once connected again.
    unsure: Option<Unsure>,
    /// How many of the operations given again are known to be stored.
    stored: usize,
}

/// A group whose COMMIT went unanswered: its mark, and how many of the
/// operations given again it holds (the writer gives a failed group again,
/// with what arrived since).
#[derive(Debug, Clone, Copy)]
struct Unsure {
    mark: i64,
    upto: usize,
}

impl Writer {
    pub(crate) fn new(
        config: Config,
        tls: MakeRustlsConnect,
        retention: Retention,
        fence: Arc<AtomicI64>,
    ) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StoreError::Spawn)?;
        Ok(Self {
            rt,
            config,
            tls,
            conn: None,
            retention,
            next_row: 1,
            created: 0,
            fence,
            writer: uuid::Uuid::new_v4(),
            next_mark: 1,
            unsure: None,
            stored: 0,
        })
    }
}

impl Apply for Writer {
    /// One writer numbers its jobs itself; several are given each job's
    /// row id and time (`stamps`) as jobs are queued, as shards are.
    fn apply(
        &mut self,
        ops: &[StoreOp],
        stamps: &[crate::writer::Stamp],
        prunes: usize,
    ) -> Result<Vec<Result<usize, StoreError>>, StoreError> {
        let rt = &self.rt;
        let result = rt.block_on(async {
            if self.conn.is_none() {
                let conn = connect(&self.config, &self.tls).await?;
                let row = conn
                    .client
                    // The last job stored is the newest (`created` above).
                    .query_opt("SELECT row_id, created_at FROM jobs ORDER BY row_id DESC LIMIT 1", &[])
                    .await?;
                if let Some(row) = row {
                    self.next_row = self.next_row.max(row.try_get::<_, i64>(0)? + 1);
                    self.created = self.created.max(row.try_get(1)?);
                }
                let gone = faena_proto::mqtt::now_ms().saturating_sub(FORGET_AFTER_MS) as i64;
                conn.client.execute(FORGET_WRITERS, &[&gone]).await?;
                self.conn = Some(conn);
            }
            let Some(conn) = self.conn.as_mut() else { return Err(StoreError::Unavailable) };
            if let Some(Unsure { mark, upto }) = self.unsure {
                let marked = match conn.client.query_opt(&conn.marked, &[&self.writer]).await {
                    Ok(row) => row.map(|r| r.try_get::<_, i64>(0)).transpose()?,
                    // The lost connection's server process is still at it.
                    Err(e) if e.code().is_some_and(|c| c.code() == LOCKED) => return Err(StoreError::Unavailable),
                    Err(e) => return Err(e.into()),
                };
                let committed = marked.is_some_and(|m| m >= mark);
                // Stored, its answer lost with the connection: not again.
                if committed {
                    self.stored = upto;
                }
                tracing::info!(committed, "the group whose COMMIT went unanswered, asked about");
                self.unsure = None;
            }
            let (stored, ops) = ops.split_at(self.stored.min(ops.len()));
            // Past the stamps of the new jobs among those stored.
            let stamps = stamps.get(inserts(stored)..).unwrap_or_default();
            // What a group whose COMMIT goes unanswered holds of those given.
            let upto = self.stored + ops.len();
            let mut next_row = self.next_row;
            let mut created = self.created;
            let group = Group::fold(ops, stamps, &mut next_row, &mut created);
            let epoch = self.fence.load(Ordering::Relaxed);
            let mark = self.next_mark;
            self.next_mark += 1;
            let now = faena_proto::mqtt::now_ms() as i64;
            let marking = [&self.writer as &(dyn tokio_postgres::types::ToSql + Sync), &mark, &now];
            let (client, insert, update, record) = (&conn.client, &conn.insert, &conn.update, &conn.record);
            if prunes == 0 {
                // One round trip: BEGIN, the fence, the group's statements
                // and COMMIT are sent together and answered together. Any
                // failure aborts the transaction, and the server takes the
                // COMMIT that follows as a ROLLBACK: nothing applied.
                let (begin, fenced, marked, inserted, updated, recorded, keys, named, commit) = tokio::join!(
                    async { client.batch_execute("BEGIN").await.map_err(StoreError::from) },
                    fence(client, &conn.fence, epoch),
                    client.execute(&conn.mark, &marking),
                    group.insert(client, insert),
                    group.update(client, update),
                    group.record(client, record, epoch),
                    group.keys(client, [&conn.take_keys, &conn.expire_keys, &conn.free_keys], created),
                    group.named(client, [&conn.put_named, &conn.delete_named, &conn.fired]),
                    async { client.batch_execute("COMMIT").await.map_err(StoreError::from) },
                );
                // Every answer is awaited (join, not try_join: which future
                // a join polls first varies), so the fence's refusal is
                // told as such, not as the aborted statements behind it.
                fenced?;
                begin?;
                marked?;
                inserted.and(updated).and(recorded).and(keys).and(named)?;
                // Every statement ran: only the COMMIT's answer is missing.
                commit.inspect_err(|_| self.unsure = Some(Unsure { mark, upto }))?;
                self.next_row = next_row;
                self.created = created;
                return Ok(Vec::new());
            }
            let mut tx = conn.client.transaction().await?;
            let (fenced, marked, inserted, updated, recorded, keys, named) = tokio::join!(
                fence(tx.client(), &conn.fence, epoch),
                tx.client().execute(&conn.mark, &marking),
                group.insert(tx.client(), insert),
                group.update(tx.client(), update),
                group.record(tx.client(), record, epoch),
                group.keys(tx.client(), [&conn.take_keys, &conn.expire_keys, &conn.free_keys], created),
                group.named(tx.client(), [&conn.put_named, &conn.delete_named, &conn.fired])
            );
            fenced?;
            marked?;
            inserted.and(updated).and(recorded).and(keys).and(named)?;
            let mut pruned = Vec::with_capacity(prunes);
            for _ in 0..prunes {
                let sp = tx.savepoint("prune").await?;
                let step = prune(&sp, &conn.prune, self.retention).await;
                match step {
                    Ok(n) => {
                        sp.commit().await?;
                        pruned.push(Ok(n));
                    }
                    Err(e) => {
                        sp.rollback().await?;
                        pruned.push(Err(e));
                    }
                }
            }
            tx.commit().await.inspect_err(|_| self.unsure = Some(Unsure { mark, upto }))?;
            self.next_row = next_row;
            self.created = created;
            Ok(pruned)
        });
        match &result {
            Ok(_) => self.stored = 0,
            // Refused whole and never given again.
            Err(StoreError::Fenced { .. }) => (self.stored, self.unsure) = (0, None),
            // Whatever failed, the next try starts on a fresh connection.
            Err(_) => self.conn = None,
        }
        result
    }
}

/// How many of `ops` store a new job (each takes a stamp).
fn inserts(ops: &[StoreOp]) -> usize {
    ops.iter().filter(|op| matches!(op, StoreOp::Insert { .. })).count()
}

async fn connect(config: &Config, tls: &MakeRustlsConnect) -> Result<Conn, StoreError> {
    let (client, connection) = config.connect(tls.clone()).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "the store's write connection closed");
        }
    });
    client.batch_execute(WRITER_PLANS).await?;
    Ok(Conn {
        insert: client.prepare(INSERT).await?,
        update: client.prepare(UPDATE).await?,
        record: client.prepare(RECORD).await?,
        prune: client.prepare(PRUNE).await?,
        fence: client.prepare(FENCE).await?,
        mark: client.prepare(MARK).await?,
        marked: client.prepare(MARKED).await?,
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
async fn prune(tx: &tokio_postgres::Transaction<'_>, stmt: &Statement, r: Retention) -> Result<usize, StoreError> {
    let now = faena_proto::mqtt::now_ms() as i64;
    let by_age = match r.age {
        Some(age) => tx
            .query_one(
                // The last job created before the cutoff: the one before
                // the first at or after it, or the newest if none is.
                "SELECT coalesce(faena_first_row_since($1) - 1, (SELECT max(row_id) FROM jobs))",
                &[&now.saturating_sub(age.as_millis() as i64)],
            )
            .await?
            .try_get::<_, Option<i64>>(0)?,
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
