//! The PostgreSQL backend's side of the writer. A group's operations are
//! folded per job (a job stored and finished in the same group is stored
//! finished), then sent as at most three multi-row statements — new jobs,
//! changed jobs, history rows — pipelined on one connection in one
//! transaction: one round trip and one commit for the whole group.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use faena_proto::ids::JobId;
use tokio_postgres::{Client, Config, Statement};
use tokio_postgres_rustls::MakeRustlsConnect;
use uuid::Uuid;

mod side;
use side::KeyChange;

use crate::contract::{fired_by, held_key, inserted_detail, opts_column, requeued_state};
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
}

impl Writer {
    pub(crate) fn new(
        config: Config,
        tls: MakeRustlsConnect,
        retention: Retention,
        fence: Arc<AtomicI64>,
    ) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(StoreError::Spawn)?;
        Ok(Self { rt, config, tls, conn: None, retention, next_row: 1, created: 0, fence })
    }
}

impl Apply for Writer {
    fn apply(&mut self, ops: &[StoreOp], prunes: usize) -> Result<Vec<Result<usize, StoreError>>, StoreError> {
        let rt = &self.rt;
        let result = rt.block_on(async {
            if self.conn.is_none() {
                let conn = connect(&self.config, &self.tls).await?;
                let row = conn
                    .client
                    .query_one("SELECT coalesce(max(row_id), 0), coalesce(max(created_at), 0) FROM jobs", &[])
                    .await?;
                self.next_row = self.next_row.max(row.try_get::<_, i64>(0)? + 1);
                self.created = self.created.max(row.try_get(1)?);
                self.conn = Some(conn);
            }
            let Some(conn) = self.conn.as_mut() else { return Err(StoreError::Unavailable) };
            let mut next_row = self.next_row;
            let mut created = self.created;
            let group = Group::fold(ops, &mut next_row, &mut created);
            let epoch = self.fence.load(Ordering::Relaxed);
            let (client, insert, update, record) = (&conn.client, &conn.insert, &conn.update, &conn.record);
            if prunes == 0 {
                // One round trip: BEGIN, the fence, the group's statements
                // and COMMIT are sent together and answered together. Any
                // failure aborts the transaction, and the server takes the
                // COMMIT that follows as a ROLLBACK: nothing applied.
                let (begin, fenced, inserted, updated, recorded, keys, named, commit) = tokio::join!(
                    async { client.batch_execute("BEGIN").await.map_err(StoreError::from) },
                    fence(client, &conn.fence, epoch),
                    group.insert(client, insert),
                    group.update(client, update),
                    group.record(client, record, epoch),
                    group.keys(client, [&conn.expire_keys, &conn.take_keys, &conn.free_keys], created),
                    group.named(client, [&conn.put_named, &conn.delete_named, &conn.fired]),
                    async { client.batch_execute("COMMIT").await.map_err(StoreError::from) },
                );
                // Every answer is awaited (join, not try_join: which future
                // a join polls first varies), so the fence's refusal is
                // told as such, not as the aborted statements behind it.
                fenced?;
                begin.and(inserted).and(updated).and(recorded).and(keys).and(named).and(commit)?;
                self.next_row = next_row;
                self.created = created;
                return Ok(Vec::new());
            }
            let mut tx = conn.client.transaction().await?;
            let (fenced, inserted, updated, recorded, keys, named) = tokio::join!(
                fence(tx.client(), &conn.fence, epoch),
                group.insert(tx.client(), insert),
                group.update(tx.client(), update),
                group.record(tx.client(), record, epoch),
                group.keys(tx.client(), [&conn.expire_keys, &conn.take_keys, &conn.free_keys], created),
                group.named(tx.client(), [&conn.put_named, &conn.delete_named, &conn.fired])
            );
            fenced?;
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
            tx.commit().await?;
            self.next_row = next_row;
            self.created = created;
            Ok(pruned)
        });
        if matches!(result, Err(ref e) if !matches!(e, StoreError::Fenced { .. })) {
            // Whatever failed, the next try starts on a fresh connection.
            self.conn = None;
        }
        result
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

/// attempts, token, result, error, finished_at: what a dispatch, requeue
/// or finish sets together.
type Rest = (i32, Option<String>, Option<String>, Option<String>, Option<i64>);

/// One history row: job, at, state, attempt, worker, detail.
type HistoryRow = (Uuid, i64, String, i32, Option<String>, Option<String>);

/// What a group changes in one job that was stored before it.
#[derive(Debug, Default)]
struct Patch {
    priority: Option<String>,
    state: Option<String>,
    worker: Option<Option<String>>,
    rest: Option<Rest>,
    run_at: Option<Option<i64>>,
}

/// A job stored by this group, as it stands at its end.
#[derive(Debug)]
struct New {
    row: i64,
    id: Uuid,
    kind: String,
    params: String,
    priority: String,
    seq: i64,
    created_at: i64,
    parent: Option<Uuid>,
    retry_of: Option<Uuid>,
    state: &'static str,
    opts: Option<String>,
    run_at: Option<i64>,
    schedule: Option<String>,
    patch: Patch,
}

/// A group folded per job: new jobs, changes to older ones, history rows
/// in order.
#[derive(Debug, Default)]
struct Group {
    new: Vec<New>,
    new_at: HashMap<JobId, usize>,
    changed: Vec<(Uuid, Patch)>,
    changed_at: HashMap<JobId, usize>,
    history: Vec<HistoryRow>,
    keys: HashMap<String, KeyChange>,
    /// Each named document's last write in the group (none: removed).
    named: HashMap<(&'static str, String), Option<String>>,
    /// Each schedule's last firing in the group.
    fired: HashMap<String, (i64, Option<Uuid>)>,
}

impl Group {
    fn fold(ops: &[StoreOp], next_row: &mut i64, created: &mut i64) -> Self {
        let mut g = Self::default();
        for op in ops {
            match op {
                StoreOp::Insert { id, spec, priority, seq, at_ms, parent, retry_of, state, opts, run_at_ms } => {
                    *created = (*created).max(*at_ms as i64);
                    if let Some((key, until)) = held_key(opts, *created) {
                        g.keys.insert(key, KeyChange::Take(id.0, until));
                    }
                    if let Some((schedule, at)) = fired_by(opts) {
                        g.fired.insert(schedule, (at, Some(id.0)));
                    }
                    g.new_at.insert(*id, g.new.len());
                    g.new.push(New {
                        row: *next_row,
                        id: id.0,
                        kind: spec.kind().as_str().to_owned(),
                        params: spec.params_json().to_string(),
                        priority: priority.as_str().to_owned(),
                        seq: *seq as i64,
                        created_at: *created,
                        parent: parent.map(|p| p.0),
                        retry_of: retry_of.map(|r| r.0),
                        state: state.as_str(),
                        opts: opts_column(opts),
                        run_at: run_at_ms.map(|r| r as i64),
                        schedule: opts.as_ref().and_then(|o| o.schedule.clone()),
                        patch: Patch::default(),
                    });
                    *next_row += 1;
                    let detail = inserted_detail(*parent, *retry_of, *run_at_ms);
                    g.history.push((id.0, *created, state.as_str().into(), 0, None, detail));
                }
                StoreOp::Fired { schedule, at_ms } => {
                    g.fired.insert(schedule.clone(), (*at_ms as i64, None));
                }
                StoreOp::Named { kind, name, doc } => {
                    g.named.insert((kind.as_str(), name.clone()), doc.clone());
                }
                StoreOp::Released { id, state, run_at_ms, attempts, detail, at_ms } => {
                    let p = g.patch(*id);
                    p.state = Some(state.as_str().into());
                    p.run_at = Some(run_at_ms.map(|r| r as i64));
                    let row =
                        (id.0, *at_ms as i64, state.as_str().into(), *attempts as i32, None, Some(detail.clone()));
                    g.history.push(row);
                }
                StoreOp::Reprioritised { id, priority, was, state, attempts, at_ms } => {
                    g.patch(*id).priority = Some(priority.as_str().to_owned());
                    let detail = format!("priority {} (was {})", priority.as_str(), was.as_str());
                    g.history.push((id.0, *at_ms as i64, state.as_str().into(), *attempts as i32, None, Some(detail)));
                }
                StoreOp::Started { id, worker, at_ms } => {
                    let p = g.patch(*id);
                    p.state = Some("running".into());
                    p.worker = Some(Some(worker.clone()));
                    let detail = Some("split into units".to_owned());
                    g.history.push((id.0, *at_ms as i64, "running".into(), 1, Some(worker.clone()), detail));
                }
                StoreOp::Dispatched { id, attempt, worker, token, at_ms } => {
                    let p = g.patch(*id);
                    p.state = Some("running".into());
                    p.worker = Some(Some(worker.clone()));
                    p.rest = Some((*attempt as i32, Some(token.as_str().to_owned()), None, None, None));
                    p.run_at = Some(None);
                    g.history.push((
                        id.0,
                        *at_ms as i64,
                        "running".into(),
                        *attempt as i32,
                        Some(worker.clone()),
                        None,
                    ));
                }
                StoreOp::Requeued { id, attempts, reason, at_ms, run_at_ms } => {
                    let p = g.patch(*id);
                    let state = requeued_state(*run_at_ms);
                    p.state = Some(state.into());
                    p.worker = Some(None);
                    p.rest = Some((*attempts as i32, None, None, None, None));
                    p.run_at = Some(run_at_ms.map(|r| r as i64));
                    g.history.push((id.0, *at_ms as i64, state.into(), *attempts as i32, None, Some(reason.clone())));
                }
                StoreOp::Finished { id, state, attempts, worker, result, error, at_ms, release_key } => {
                    if let Some(key) = release_key {
                        g.keys.insert(key.clone(), KeyChange::Free(id.0));
                    }
                    let p = g.patch(*id);
                    p.run_at = Some(None);
                    p.state = Some(state.as_str().into());
                    p.worker = Some(worker.clone());
                    let result = result.as_ref().map(|r| r.to_string());
                    p.rest = Some((*attempts as i32, None, result, error.clone(), Some(*at_ms as i64)));
                    let (w, e) = (worker.clone(), error.clone());
                    g.history.push((id.0, *at_ms as i64, state.as_str().into(), *attempts as i32, w, e));
                }
            }
        }
        g
    }

    /// The changes to job `id`: on its new row if this group stored it.
    fn patch(&mut self, id: JobId) -> &mut Patch {
        if let Some(&i) = self.new_at.get(&id) {
            return &mut self.new[i].patch;
        }
        let i = *self.changed_at.entry(id).or_insert_with(|| {
            self.changed.push((id.0, Patch::default()));
            self.changed.len() - 1
        });
        &mut self.changed[i].1
    }

    async fn insert(&self, tx: &Client, stmt: &Statement) -> Result<(), StoreError> {
        if self.new.is_empty() {
            return Ok(());
        }
        let n = &self.new;
        let col = |f: fn(&New) -> Option<String>| n.iter().map(f).collect::<Vec<_>>();
        let rest = |j: &New| j.patch.rest.clone().unwrap_or((0, None, None, None, None));
        let (rows, ids): (Vec<i64>, Vec<Uuid>) = (n.iter().map(|j| j.row).collect(), n.iter().map(|j| j.id).collect());
        let kinds: Vec<&str> = n.iter().map(|j| j.kind.as_str()).collect();
        let params: Vec<&str> = n.iter().map(|j| j.params.as_str()).collect();
        let priorities: Vec<&str> = n.iter().map(|j| j.patch.priority.as_deref().unwrap_or(&j.priority)).collect();
        let seqs: Vec<i64> = n.iter().map(|j| j.seq).collect();
        let states: Vec<&str> = n.iter().map(|j| j.patch.state.as_deref().unwrap_or(j.state)).collect();
        let attempts: Vec<i32> = n.iter().map(|j| rest(j).0).collect();
        let workers = col(|j| j.patch.worker.clone().flatten());
        let tokens = col(|j| j.patch.rest.as_ref().and_then(|r| r.1.clone()));
        let results = col(|j| j.patch.rest.as_ref().and_then(|r| r.2.clone()));
        let errors = col(|j| j.patch.rest.as_ref().and_then(|r| r.3.clone()));
        let created: Vec<i64> = n.iter().map(|j| j.created_at).collect();
        let finished: Vec<Option<i64>> = n.iter().map(|j| j.patch.rest.as_ref().and_then(|r| r.4)).collect();
        let parents: Vec<Option<Uuid>> = n.iter().map(|j| j.parent).collect();
        let retries: Vec<Option<Uuid>> = n.iter().map(|j| j.retry_of).collect();
        let opts = col(|j| j.opts.clone());
        let run_at: Vec<Option<i64>> = n.iter().map(|j| j.patch.run_at.unwrap_or(j.run_at)).collect();
        let schedules = col(|j| j.schedule.clone());
        tx.execute(
            stmt,
            &[
                &rows,
                &ids,
                &kinds,
                &params,
                &priorities,
                &seqs,
                &states,
                &attempts,
                &workers,
                &tokens,
                &results,
                &errors,
                &created,
                &finished,
                &parents,
                &retries,
                &opts,
                &run_at,
                &schedules,
            ],
        )
        .await?;
        Ok(())
    }

    async fn update(&self, tx: &Client, stmt: &Statement) -> Result<(), StoreError> {
        if self.changed.is_empty() {
            return Ok(());
        }
        let c = &self.changed;
        let ids: Vec<Uuid> = c.iter().map(|(id, _)| *id).collect();
        let priorities: Vec<Option<&str>> = c.iter().map(|(_, p)| p.priority.as_deref()).collect();
        let states: Vec<Option<&str>> = c.iter().map(|(_, p)| p.state.as_deref()).collect();
        let set_worker: Vec<bool> = c.iter().map(|(_, p)| p.worker.is_some()).collect();
        let workers: Vec<Option<&str>> = c.iter().map(|(_, p)| p.worker.as_ref().and_then(|w| w.as_deref())).collect();
        let set_rest: Vec<bool> = c.iter().map(|(_, p)| p.rest.is_some()).collect();
        let rest = |p: &Patch| p.rest.clone().unwrap_or((0, None, None, None, None));
        let attempts: Vec<i32> = c.iter().map(|(_, p)| rest(p).0).collect();
        let tokens: Vec<Option<String>> = c.iter().map(|(_, p)| rest(p).1).collect();
        let results: Vec<Option<String>> = c.iter().map(|(_, p)| rest(p).2).collect();
        let errors: Vec<Option<String>> = c.iter().map(|(_, p)| rest(p).3).collect();
        let finished: Vec<Option<i64>> = c.iter().map(|(_, p)| rest(p).4).collect();
        let set_run_at: Vec<bool> = c.iter().map(|(_, p)| p.run_at.is_some()).collect();
        let run_at: Vec<Option<i64>> = c.iter().map(|(_, p)| p.run_at.flatten()).collect();
        tx.execute(
            stmt,
            &[
                &ids,
                &priorities,
                &states,
                &set_worker,
                &workers,
                &set_rest,
                &attempts,
                &tokens,
                &results,
                &errors,
                &finished,
                &set_run_at,
                &run_at,
            ],
        )
        .await?;
        Ok(())
    }

    /// The group's history rows, each naming `epoch` (none when unfenced).
    async fn record(&self, tx: &Client, stmt: &Statement, epoch: i64) -> Result<(), StoreError> {
        if self.history.is_empty() {
            return Ok(());
        }
        let h = &self.history;
        let ids: Vec<Uuid> = h.iter().map(|r| r.0).collect();
        let at: Vec<i64> = h.iter().map(|r| r.1).collect();
        let states: Vec<&str> = h.iter().map(|r| r.2.as_str()).collect();
        let attempts: Vec<i32> = h.iter().map(|r| r.3).collect();
        let workers: Vec<Option<&str>> = h.iter().map(|r| r.4.as_deref()).collect();
        let details: Vec<Option<&str>> = h.iter().map(|r| r.5.as_deref()).collect();
        let epoch = (epoch != UNFENCED).then_some(epoch);
        tx.execute(stmt, &[&ids, &at, &states, &attempts, &workers, &details, &epoch]).await?;
        Ok(())
    }
}
