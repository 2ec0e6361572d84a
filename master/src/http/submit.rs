//! Submitting jobs: `POST /api/jobs` and `POST /api/jobs/batch`. A request
//! becomes a [`NewJob`] here (its kind's parameters checked in
//! `faena_proto::jobs`, its options in `faena_proto::options`); parents
//! named by id that the engine may no longer hold are read from the store
//! first, so a job can run after one that ended long ago.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use faena_proto::api::{BatchRequest, BatchResponse, SubmitOptions, SubmitRequest, SubmitResponse};
use faena_proto::ids::JobId;
use faena_proto::jobs::{JobKind, JobSpec, JobState};
use faena_proto::options::{AfterRef, JobOptions, MAX_DELAY_MS};

use super::{AppError, AppState, MAX_BATCH, check_accepting, parse_body, stored};
use crate::coordinator::CoordError;
use crate::engine::{Accepted, NewJob, SubmitError};

/// Most jobs outside a batch its jobs may name in `after`, together.
pub const MAX_BATCH_PARENTS: usize = 10_000;

/// Builds job `id` from its request; `batch` holds the ids of its batch
/// (`after` by index names them).
pub(super) fn new_job(req: SubmitRequest, id: JobId, batch: &[JobId]) -> Result<NewJob, AppError> {
    let spec =
        JobSpec::parse(&req.kind, req.params).map_err(|e| AppError::bad_request("invalid_job", e.to_string()))?;
    let mut spec = spec;
    if let JobSpec::RandomxMine(p) = &spec {
        p.check_share_cost().map_err(|e| AppError::bad_request("invalid_job", e.to_string()))?;
    }
    if let JobSpec::AiQuery(p) = &mut spec {
        if p.own_key && req.api_key.is_none() {
            return Err(AppError::bad_request("invalid_job", "own_key is set by the master; send api_key instead"));
        }
        p.own_key = req.api_key.is_some();
    }
    let api_key = match req.api_key {
        Some(_) if spec.kind() != JobKind::AiQuery => {
            return Err(AppError::bad_request("invalid_job", "api_key is only used by ai.query jobs"));
        }
        Some(k) if k.expose().trim().is_empty() || k.expose().len() > 4096 => {
            return Err(AppError::bad_request("invalid_job", "api_key must be 1..=4096 characters"));
        }
        key => key,
    };
    let opts = options(req.options, spec.kind(), batch, faena_proto::mqtt::now_ms())?;
    Ok(NewJob { api_key, opts, ..NewJob::new(id, spec, req.priority.unwrap_or_default()) })
}

/// A submit's options in their stored form (none when it asks for nothing).
pub(super) fn options(
    o: SubmitOptions,
    kind: JobKind,
    batch: &[JobId],
    now_ms: u64,
) -> Result<Option<Arc<JobOptions>>, AppError> {
    let bad = |m: String| AppError::bad_request("invalid_option", m);
    if o.is_empty() {
        return Ok(None);
    }
    let run_at_ms = match (o.run_at.as_deref(), o.run_after_ms) {
        (Some(_), Some(_)) => return Err(bad("give run_at or run_after_ms, not both".into())),
        (Some(at), None) => Some(parse_time(at).ok_or_else(|| bad(format!("run_at: {at:?} is not an RFC 3339 time")))?),
        (None, Some(ms)) => Some(now_ms.saturating_add(ms)),
        (None, None) => None,
    };
    if run_at_ms.is_some_and(|at| at > now_ms.saturating_add(MAX_DELAY_MS)) {
        return Err(bad(format!("run_at: at most {} days ahead", MAX_DELAY_MS / 86_400_000)));
    }
    let mut after = Vec::with_capacity(o.after.len());
    for r in &o.after {
        after.push(match r {
            AfterRef::Id(id) => *id,
            AfterRef::Index(i) => *batch.get(*i).ok_or_else(|| {
                bad(format!("after: index {i} names no job of this batch (it has {} jobs)", batch.len()))
            })?,
        });
    }
    let opts = JobOptions {
        run_at_ms,
        after,
        after_policy: o.after_policy.unwrap_or_default(),
        unique_key: o.unique_key,
        unique_for_s: o.unique_for,
        group: o.group,
        timeout_ms: o.timeout_ms,
        retry: o.retry,
        schedule: None,
        fired_for_ms: None,
    };
    opts.check().map_err(|e| bad(e.to_string()))?;
    if kind == JobKind::RandomxMine
        && (opts.run_at_ms.is_some() || !opts.after.is_empty() || opts.timeout_ms.is_some() || opts.retry.is_some())
    {
        let m = "a randomx.mine job is split into units the pool leases and retries itself: it takes no run_at, after, timeout_ms or retry";
        return Err(bad(m.into()));
    }
    Ok(Some(Arc::new(opts)))
}

/// RFC 3339 (or milliseconds since 1970), as ms since the UNIX epoch.
pub(super) fn parse_time(s: &str) -> Option<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Some(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    u64::try_from(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// Submits `jobs`: parents named outside the batch are looked up in the
/// store first. A parent that ended here a moment ago, not yet stored, is
/// waited for (the store's next commit) and looked up again.
pub(crate) async fn submit_jobs(state: &AppState, jobs: Vec<NewJob>) -> Result<Vec<Accepted>, AppError> {
    let ids: HashSet<JobId> = jobs.iter().map(|j| j.id).collect();
    let parents: Vec<JobId> = jobs
        .iter()
        .filter_map(|j| j.opts.as_ref())
        .flat_map(|o| o.after.iter().copied())
        .filter(|p| !ids.contains(p))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if parents.len() > MAX_BATCH_PARENTS {
        let m = format!("after: a batch's jobs name at most {MAX_BATCH_PARENTS} jobs outside it, together");
        return Err(AppError::bad_request("invalid_option", m));
    }
    let lookup = || async {
        match parents.is_empty() {
            true => Ok(HashMap::new()),
            false => state.store.outcomes(parents.clone()).await,
        }
    };
    let mut known = lookup().await?;
    for tries_left in (0..3).rev() {
        match state.coord.submit_after(jobs.clone(), known).await {
            Err(CoordError::Refused(SubmitError::Settling(_))) if tries_left > 0 => {
                state.coord.flushed().await?;
                known = lookup().await?;
            }
            other => return Ok(other?),
        }
    }
    Err(CoordError::Stopped.into())
}

/// How a submit answers one job: a duplicate with its holder's state.
async fn response(state: &AppState, a: Accepted) -> Result<SubmitResponse, AppError> {
    let job_state = match a.state {
        Some(s) => s,
        None => stored(state, a.id).await?.map_or(JobState::Succeeded, |v| v.state),
    };
    Ok(SubmitResponse { id: a.id, state: job_state, position: a.position, duplicate: a.duplicate })
}

pub(super) async fn submit(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    check_accepting(&state)?;
    let id = JobId::new();
    let job = new_job(parse_body(body)?, id, &[])?;
    let accepted = submit_jobs(&state, vec![job]).await?;
    let a = accepted.first().copied().ok_or(CoordError::Stopped)?;
    let status = if a.duplicate { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(response(&state, a).await?)).into_response())
}

pub(super) async fn submit_batch(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    check_accepting(&state)?;
    let req: BatchRequest = parse_body(body)?;
    if req.jobs.is_empty() || req.jobs.len() > MAX_BATCH {
        return Err(AppError::bad_request("bad_batch", format!("a batch holds 1 to {MAX_BATCH} jobs")));
    }
    let ids: Vec<JobId> = req.jobs.iter().map(|_| JobId::new()).collect();
    let jobs = req
        .jobs
        .into_iter()
        .zip(&ids)
        .enumerate()
        .map(|(i, (j, id))| new_job(j, *id, &ids).map_err(|e| e.prefixed(&format!("jobs[{i}]"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(jobs.len());
    for a in submit_jobs(&state, jobs).await? {
        out.push(response(&state, a).await?);
    }
    Ok((StatusCode::ACCEPTED, Json(BatchResponse { jobs: out })).into_response())
}
