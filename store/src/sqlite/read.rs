//! Reading jobs back: the unfinished ones at start-up, one job, its
//! parameters, its history. Each read is one read transaction over every
//! generation (so a generation dropped meanwhile is seen whole or not at
//! all, and a job moved out of it is seen exactly once).

use faena_proto::api::JobView;
use faena_proto::ids::JobId;
use faena_proto::jobs::{JobKind, JobSpec};
use rusqlite::{Connection, OptionalExtension, Row};

use std::collections::HashMap;

use faena_proto::jobs::JobState;

use super::generations::listed;
use super::{VIEW_COLUMNS, VIEW_WIDTH, view};
use crate::contract::{PRIORITY_DETAIL_LIKE, UNFINISHED_SQLITE};
use crate::{Firing, HeldKey, NamedKind, Outcome, RestoredJob, StoreError, Transition};

const RESTORED_COLUMNS: &str = "id, kind, params, priority, seq, created_at, attempts, state, worker, token, parent, result, retry_of, opts, run_at";

/// The restored columns of generation `(jobs, history)`'s rows, and the
/// priority changes in each job's history: those in its trail and, where
/// the generation's history table has rows (jobs stored before trails),
/// those rows whose detail is one.
fn restored_select(tx: &Connection, jobs: &str, history: &str) -> Result<String, StoreError> {
    let trail = super::history::count_priority_changes();
    let legacy: bool = tx.query_row(&format!("SELECT EXISTS (SELECT 1 FROM {history})"), [], |r| r.get(0))?;
    let rows = match legacy {
        true => format!(
            " + (SELECT count(*) FROM {history} h WHERE h.job_id = {jobs}.id AND h.detail LIKE '{PRIORITY_DETAIL_LIKE}')"
        ),
        false => String::new(),
    };
    Ok(format!("SELECT {RESTORED_COLUMNS}, coalesce({trail}, 0){rows} FROM {jobs}"))
}

/// Every job that was queued or running, in submission order, and the
/// units that succeeded of the mining jobs among them.
pub(crate) fn load_unfinished(conn: &Connection) -> Result<Vec<RestoredJob>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let gens = listed(&tx)?;
    let selects: Vec<String> =
        gens.iter().map(|(jobs, history)| restored_select(&tx, jobs, history)).collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for select in &selects {
        read_restored(&tx, &format!("{select} WHERE {UNFINISHED_SQLITE}"), [], &mut out)?;
    }
    // A running mining job's units may be in any generation.
    let running: Vec<String> = out.iter().filter(|j| j.parent.is_none()).map(|j| j.id.to_string()).collect();
    if !running.is_empty() {
        let running = serde_json::to_string(&running)?;
        for select in &selects {
            let sql = format!("{select} WHERE parent IN (SELECT value FROM json_each(?1)) AND state = 'succeeded'");
            read_restored(&tx, &sql, [&running], &mut out)?;
        }
    }
    out.sort_by_key(|j| j.seq);
    Ok(out)
}

/// A job as stored (finished jobs are only here).
pub(crate) fn get(conn: &Connection, id: JobId) -> Result<Option<JobView>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let gens = listed(&tx)?;
    let key = id.to_string();
    let id_of = |v: Option<String>| v.and_then(|v| v.parse().ok());
    let mut found = None;
    for (jobs, _) in &gens {
        let sql = format!("SELECT {VIEW_COLUMNS}, result, parent, retry_of FROM {jobs} WHERE id = ?1");
        found = tx
            .prepare_cached(&sql)?
            .query_row([&key], |r| {
                let mut v = view(id, r, 0)?;
                v.result = r.get::<_, Option<String>>(VIEW_WIDTH)?.and_then(|r| serde_json::from_str(&r).ok());
                v.parent = id_of(r.get(VIEW_WIDTH + 1)?);
                v.retry_of = id_of(r.get(VIEW_WIDTH + 2)?);
                Ok(v)
            })
            .optional()?;
        if found.is_some() {
            break;
        }
    }
    let Some(mut v) = found else { return Ok(None) };
    for (jobs, _) in &gens {
        let sql = format!("SELECT id FROM {jobs} WHERE retry_of = ?1 LIMIT 1");
        v.retried_as = id_of(tx.prepare_cached(&sql)?.query_row([&key], |r| r.get(0)).optional()?);
        if v.retried_as.is_some() {
            break;
        }
    }
    Ok(Some(v))
}

/// What job `id` ran: its kind and parameters as submitted.
pub(crate) fn spec(conn: &Connection, id: JobId) -> Result<Option<JobSpec>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let key = id.to_string();
    for (jobs, _) in listed(&tx)? {
        let mut stmt = tx.prepare_cached(&format!("SELECT kind, params FROM {jobs} WHERE id = ?1"))?;
        let row = stmt.query_row([&key], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).optional()?;
        if let Some((kind, params)) = row {
            return Ok(JobKind::parse(&kind)
                .ok()
                .zip(serde_json::from_str(&params).ok())
                .and_then(|(kind, params)| JobSpec::parse_kind(kind, params).ok()));
        }
    }
    Ok(None)
}

pub(crate) fn history(conn: &Connection, id: JobId) -> Result<Vec<Transition>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let key = id.to_string();
    // A job's history is in the generation its row is in: the rows of its
    // history table (a job stored before trails), then its trail.
    for (jobs, history) in listed(&tx)? {
        let trail = tx
            .prepare_cached(&format!("SELECT trail FROM {jobs} WHERE id = ?1"))?
            .query_row([&key], |r| r.get::<_, Option<String>>(0))
            .optional()?;
        let Some(trail) = trail else { continue };
        let sql = format!("SELECT at, state, attempt, worker, detail FROM {history} WHERE job_id = ?1 ORDER BY rowid");
        let mut stmt = tx.prepare_cached(&sql)?;
        let rows = stmt.query_map([&key], |r| {
            Ok(Transition {
                at_ms: r.get::<_, i64>(0)? as u64,
                state: r.get(1)?,
                attempt: r.get(2)?,
                worker: r.get(3)?,
                detail: r.get(4)?,
            })
        })?;
        let mut found: Vec<Transition> = rows.collect::<Result<_, _>>()?;
        found.extend(super::history::steps(trail.as_deref().unwrap_or_default())?);
        return Ok(found);
    }
    Ok(Vec::new())
}

/// Runs `sql` (selecting [`RESTORED_COLUMNS`]) and adds the jobs it reads
/// to `out`; a row that does not parse is logged and left as is.
fn read_restored(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
    out: &mut Vec<RestoredJob>,
) -> Result<(), StoreError> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query(args)?;
    while let Some(r) = rows.next()? {
        let id: String = r.get(0)?;
        match restored(r)? {
            Some(job) => out.push(job),
            None => {
                let kind: String = r.get(1)?;
                tracing::error!(job = %id, kind = %kind, "cannot restore a stored job (unknown kind, invalid parameters or corrupt row); left as is");
            }
        }
    }
    Ok(())
}

/// One row of [`RESTORED_COLUMNS`] as a job, or none if it does not parse.
fn restored(r: &Row<'_>) -> rusqlite::Result<Option<RestoredJob>> {
    Ok(crate::contract::StoredJob {
        id: r.get(0)?,
        kind: r.get(1)?,
        params: r.get(2)?,
        priority: r.get(3)?,
        seq: r.get(4)?,
        created: r.get(5)?,
        attempts: r.get(6)?,
        state: r.get(7)?,
        worker: r.get(8)?,
        token: r.get(9)?,
        parent: r.get(10)?,
        result: r.get(11)?,
        retry_of: r.get(12)?,
        opts: r.get(13)?,
        run_at: r.get(14)?,
        priority_changes: r.get(15)?,
    }
    .restore())
}

/// The state of each of `ids` found, with its result once it succeeded.
pub(crate) fn outcomes(conn: &Connection, ids: &[JobId]) -> Result<HashMap<JobId, Outcome>, StoreError> {
    let tx = conn.unchecked_transaction()?;
    let wanted = serde_json::to_string(&ids.iter().map(|i| i.to_string()).collect::<Vec<_>>())?;
    let mut out = HashMap::new();
    for (jobs, _) in listed(&tx)? {
        let sql = format!(
            "SELECT id, state, CASE WHEN state = 'succeeded' THEN result END FROM {jobs}
             WHERE id IN (SELECT value FROM json_each(?1))"
        );
        let mut stmt = tx.prepare_cached(&sql)?;
        let mut rows = stmt.query([&wanted])?;
        while let Some(r) = rows.next()? {
            let (id, state, result): (String, String, Option<String>) = (r.get(0)?, r.get(1)?, r.get(2)?);
            if let (Ok(id), Some(state)) = (id.parse(), JobState::parse(&state)) {
                out.insert(id, (state, result.and_then(|r| serde_json::from_str(&r).ok())));
            }
        }
    }
    Ok(out)
}

/// The unique keys still held at `now_ms`.
pub(crate) fn held_keys(conn: &Connection, now_ms: u64) -> Result<Vec<HeldKey>, StoreError> {
    let mut stmt =
        conn.prepare("SELECT key, job, until_ms FROM unique_keys WHERE until_ms IS NULL OR until_ms > ?1")?;
    let mut rows = stmt.query([now_ms as i64])?;
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let (key, job, until): (String, String, Option<i64>) = (r.get(0)?, r.get(1)?, r.get(2)?);
        if let Ok(job) = job.parse() {
            out.push(HeldKey { key, job, until_ms: until.and_then(|u| u64::try_from(u).ok()) });
        }
    }
    Ok(out)
}

/// Every document of `kind` (name, JSON), by name.
pub(crate) fn named(conn: &Connection, kind: NamedKind) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare("SELECT name, doc FROM named WHERE kind = ?1 ORDER BY name")?;
    let rows = stmt.query_map([kind.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Each recurring schedule's last firing, by name.
pub(crate) fn firings(conn: &Connection) -> Result<HashMap<String, Firing>, StoreError> {
    let mut stmt = conn.prepare("SELECT name, at_ms, job FROM schedule_firings")?;
    let mut rows = stmt.query([])?;
    let mut out = HashMap::new();
    while let Some(r) = rows.next()? {
        let (name, at, job): (String, i64, Option<String>) = (r.get(0)?, r.get(1)?, r.get(2)?);
        out.insert(name, Firing { at_ms: u64::try_from(at).unwrap_or(0), job: job.and_then(|j| j.parse().ok()) });
    }
    Ok(out)
}
