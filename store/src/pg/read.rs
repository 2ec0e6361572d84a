//! Reading jobs back from PostgreSQL: the unfinished ones at start-up, one
//! job, its parameters, its history — any master can serve these.

use deadpool_postgres::Pool;
use faena_proto::api::JobView;
use faena_proto::ids::JobId;
use faena_proto::jobs::{JobKind, JobSpec};
use tokio_postgres::Row;
use uuid::Uuid;

use std::collections::HashMap;

use faena_proto::jobs::JobState;

use super::{VIEW_COLUMNS, VIEW_WIDTH, view};
use crate::contract::PRIORITY_DETAIL_LIKE;
use crate::{Firing, HeldKey, NamedKind, Outcome, RestoredJob, StoreError, Transition};

async fn client(pool: &Pool) -> Result<deadpool_postgres::Client, StoreError> {
    pool.get().await.map_err(|e| StoreError::Pool(e.to_string()))
}

pub(crate) async fn load_unfinished(pool: &Pool) -> Result<Vec<RestoredJob>, StoreError> {
    let mut c = client(pool).await?;
    // The jobs and their priority changes as of one moment.
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let rows = tx
        .query(
            "SELECT id, kind, params, priority, seq, created_at, attempts, state, worker, token, parent, result, retry_of, opts, run_at
                 FROM jobs WHERE listed_state = 'open'
                    OR (state = 'succeeded' AND parent IN
                        (SELECT id FROM jobs WHERE parent IS NULL AND listed_state = 'open' AND state IN ('queued', 'running')))
                 ORDER BY seq",
            &[],
        )
        .await?;
    // Read from the partial index made for them (schema migration 9): the
    // pattern is written out, not bound, so the planner can use it.
    let sql = format!(
        "SELECT job_id, count(*) FROM transitions WHERE detail LIKE '{PRIORITY_DETAIL_LIKE}'
            AND job_id IN (SELECT id FROM jobs WHERE listed_state = 'open') GROUP BY job_id"
    );
    let mut changes = HashMap::new();
    for r in tx.query(&sql, &[]).await? {
        changes.insert(r.try_get::<_, Uuid>(0)?, r.try_get::<_, i64>(1)?);
    }
    tx.commit().await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: Uuid = r.try_get(0)?;
        match restored(&r, changes.get(&id).copied().unwrap_or(0))? {
            Some(job) => out.push(job),
            None => {
                let kind: String = r.try_get(1)?;
                tracing::error!(job = %id, kind = %kind, "cannot restore a stored job (unknown kind, invalid parameters or corrupt row); left as is");
            }
        }
    }
    Ok(out)
}

fn restored(r: &Row, priority_changes: i64) -> Result<Option<RestoredJob>, StoreError> {
    let uuid = |i: usize| r.try_get::<_, Option<Uuid>>(i).map(|u| u.map(|u| u.to_string()));
    Ok(crate::contract::StoredJob {
        id: r.try_get::<_, Uuid>(0)?.to_string(),
        kind: r.try_get(1)?,
        params: r.try_get(2)?,
        priority: r.try_get(3)?,
        seq: r.try_get(4)?,
        created: r.try_get(5)?,
        attempts: u32::try_from(r.try_get::<_, i32>(6)?).unwrap_or(0),
        state: r.try_get(7)?,
        worker: r.try_get(8)?,
        token: r.try_get(9)?,
        parent: uuid(10)?,
        result: r.try_get(11)?,
        retry_of: uuid(12)?,
        opts: r.try_get(13)?,
        run_at: r.try_get(14)?,
        priority_changes,
    }
    .restore())
}

/// The state of each of `ids` found, with its result once it succeeded.
pub(crate) async fn outcomes(pool: &Pool, ids: &[JobId]) -> Result<HashMap<JobId, Outcome>, StoreError> {
    let c = client(pool).await?;
    let ids: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
    let stmt = c
        .prepare_cached(
            "SELECT id, state, CASE WHEN state = 'succeeded' THEN result END FROM jobs WHERE id = ANY($1::uuid[])",
        )
        .await?;
    let mut out = HashMap::new();
    for r in c.query(&stmt, &[&ids]).await? {
        let (id, state, result): (Uuid, String, Option<String>) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        if let Some(state) = JobState::parse(&state) {
            out.insert(JobId(id), (state, result.and_then(|r| serde_json::from_str(&r).ok())));
        }
    }
    Ok(out)
}

/// The unique keys still held at `now_ms`.
pub(crate) async fn held_keys(pool: &Pool, now_ms: u64) -> Result<Vec<HeldKey>, StoreError> {
    let c = client(pool).await?;
    let rows = c
        .query(
            // A key held until its job ends is freed with the job's end;
            // the free skips a row another writer's group held then (see
            // `FREE_KEYS`), and stays behind if that group never commits.
            "SELECT key, job, until_ms FROM unique_keys AS k WHERE until_ms > $1
                OR (until_ms IS NULL AND EXISTS (SELECT 1 FROM jobs AS j
                    WHERE j.id = k.job AND j.state NOT IN ('succeeded', 'failed', 'cancelled')))",
            &[&(now_ms as i64)],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let until: Option<i64> = r.try_get(2)?;
        out.push(HeldKey {
            key: r.try_get(0)?,
            job: JobId(r.try_get(1)?),
            until_ms: until.and_then(|u| u64::try_from(u).ok()),
        });
    }
    Ok(out)
}

pub(crate) async fn get(pool: &Pool, id: JobId) -> Result<Option<JobView>, StoreError> {
    let c = client(pool).await?;
    let stmt = c
        .prepare_cached(&format!(
            "SELECT {VIEW_COLUMNS}, result, parent, retry_of,
                (SELECT id FROM jobs AS r WHERE r.retry_of = $1 LIMIT 1)
             FROM jobs WHERE id = $1"
        ))
        .await?;
    let Some(r) = c.query_opt(&stmt, &[&id.0]).await? else { return Ok(None) };
    let mut v = view(id, &r, 0)?;
    v.result = r.try_get::<_, Option<String>>(VIEW_WIDTH)?.and_then(|r| serde_json::from_str(&r).ok());
    v.parent = r.try_get::<_, Option<Uuid>>(VIEW_WIDTH + 1)?.map(JobId);
    v.retry_of = r.try_get::<_, Option<Uuid>>(VIEW_WIDTH + 2)?.map(JobId);
    v.retried_as = r.try_get::<_, Option<Uuid>>(VIEW_WIDTH + 3)?.map(JobId);
    Ok(Some(v))
}

pub(crate) async fn spec(pool: &Pool, id: JobId) -> Result<Option<JobSpec>, StoreError> {
    let c = client(pool).await?;
    let stmt = c.prepare_cached("SELECT kind, params FROM jobs WHERE id = $1").await?;
    let Some(r) = c.query_opt(&stmt, &[&id.0]).await? else { return Ok(None) };
    let (kind, params): (String, String) = (r.try_get(0)?, r.try_get(1)?);
    Ok(JobKind::parse(&kind)
        .ok()
        .zip(serde_json::from_str(&params).ok())
        .and_then(|(kind, params)| JobSpec::parse_kind(kind, params).ok()))
}

pub(crate) async fn history(pool: &Pool, id: JobId) -> Result<Vec<Transition>, StoreError> {
    let c = client(pool).await?;
    let stmt = c
        .prepare_cached("SELECT at, state, attempt, worker, detail FROM transitions WHERE job_id = $1 ORDER BY n")
        .await?;
    let rows = c.query(&stmt, &[&id.0]).await?;
    rows.iter()
        .map(|r| {
            Ok(Transition {
                at_ms: u64::try_from(r.try_get::<_, i64>(0)?).unwrap_or(0),
                state: r.try_get(1)?,
                attempt: u32::try_from(r.try_get::<_, i32>(2)?).unwrap_or(0),
                worker: r.try_get(3)?,
                detail: r.try_get(4)?,
            })
        })
        .collect()
}

/// The newest job's row id and `created_at` (the last job stored is the
/// newest), if any: where the numbering of new jobs goes on from.
pub(crate) async fn newest(pool: &Pool) -> Result<Option<(i64, i64)>, StoreError> {
    let c = client(pool).await?;
    let row = c.query_opt("SELECT row_id, created_at FROM jobs ORDER BY row_id DESC LIMIT 1", &[]).await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).transpose()
}

/// The database's size on disk.
pub(crate) async fn bytes(pool: &Pool) -> Result<u64, StoreError> {
    let c = client(pool).await?;
    let n: i64 = c.query_one("SELECT pg_database_size(current_database())", &[]).await?.try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Every document of `kind` (name, JSON), by name.
pub(crate) async fn named(pool: &Pool, kind: NamedKind) -> Result<Vec<(String, String)>, StoreError> {
    let c = client(pool).await?;
    let rows = c.query("SELECT name, doc FROM named WHERE kind = $1 ORDER BY name", &[&kind.as_str()]).await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// Each recurring schedule's last firing, by name.
pub(crate) async fn firings(pool: &Pool) -> Result<HashMap<String, Firing>, StoreError> {
    let c = client(pool).await?;
    let rows = c.query("SELECT name, at_ms, job FROM schedule_firings", &[]).await?;
    let mut out = HashMap::new();
    for r in rows {
        let (name, at, job): (String, i64, Option<Uuid>) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        out.insert(name, Firing { at_ms: u64::try_from(at).unwrap_or(0), job: job.map(JobId) });
    }
    Ok(out)
}
