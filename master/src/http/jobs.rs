//! Finding jobs and acting on them: `GET /api/jobs` (newest first,
//! filtered, a page at a time), `PATCH /api/jobs/{id}` (a new priority) and
//! `POST /api/jobs/{id}/retry` (a failed or cancelled job run again as a
//! new job linked to it).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use faena_proto::api::{SubmitOptions, SubmitRequest};
use faena_proto::ids::JobId;
use faena_proto::jobs::{JobKind, JobSpec, JobState, Priority};
use faena_proto::secret::Secret;
use serde_json::json;

use super::submit::new_job;
use super::{AppError, AppState, check_accepting, find, not_active, not_found, parse_body, parse_id, stored};
use crate::coordinator::CoordError;
use crate::engine::{NewJob, Unmovable};
use crate::store::{DEFAULT_PAGE, JobFilter, MAX_PAGE};
/// `GET /api/jobs`'s query: every field optional.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<String>,
    kind: Option<String>,
    worker: Option<String>,
    priority: Option<String>,
    /// A mining job: list its units.
    parent: Option<String>,
    /// A recurring schedule: list its firings.
    schedule: Option<String>,
    /// RFC 3339, or milliseconds since the UNIX epoch.
    since: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

impl ListQuery {
    fn filter(self) -> Result<JobFilter, AppError> {
        let bad = |what: &str| AppError::bad_request("bad_query", what.to_owned());
        let one_of = |v: &str, all: &[&str]| format!("{v:?} is not one of {}", all.join(", "));
        let state = match self.state.as_deref() {
            None => None,
            Some(s) => Some(
                JobState::parse(s)
                    .ok_or_else(|| bad(&format!("state: {}", one_of(s, &JobState::ALL.map(JobState::as_str)))))?,
            ),
        };
        let priority = match self.priority.as_deref() {
            None => None,
            Some(p) => Some(faena_proto::jobs::Priority::parse(p).ok_or_else(|| {
                bad(&format!("priority: {}", one_of(p, &faena_proto::jobs::Priority::ALL.map(|p| p.as_str()))))
            })?),
        };
        let kind = match self.kind.as_deref() {
            None => None,
            Some(k) => Some(JobKind::parse(k).map_err(|e| bad(&format!("kind: {e}")))?),
        };
        let since_ms = match self.since.as_deref() {
            None => None,
            Some(s) => Some(parse_since(s).ok_or_else(|| {
                bad(&format!("since: {s:?} is neither an RFC 3339 time nor milliseconds since 1970"))
            })?),
        };
        let before =
            match self.cursor.as_deref() {
                None => None,
                Some(c) => Some(c.parse::<i64>().ok().filter(|c| *c > 0).ok_or_else(|| {
                    bad("cursor: not a cursor this API gave (use next_cursor from the previous page)")
                })?),
            };
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(bad(&format!("limit: {limit} is not within 1..={MAX_PAGE}")));
        }
        let parent = match self.parent.as_deref() {
            None => None,
            Some(p) => Some(p.parse().map_err(|e| bad(&format!("parent: {e}")))?),
        };
        if let Some(s) = &self.schedule {
            faena_proto::options::check_name("schedule", s).map_err(|e| bad(&e.to_string()))?;
        }
        Ok(JobFilter {
            state,
            kind,
            worker: self.worker,
            priority,
            parent,
            schedule: self.schedule,
            since_ms,
            before,
            limit,
        })
    }
}

fn parse_since(s: &str) -> Option<u64> {
    if let Ok(ms) = s.parse::<u64>() {
        return Some(ms);
    }
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    u64::try_from(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// `GET /api/jobs`: jobs newest first, filtered, a page at a time.
pub(super) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, AppError> {
    let Query(query) = query.map_err(|e| AppError::bad_request("bad_query", e.body_text()))?;
    let filter = query.filter()?;
    let page = state.store.list(&filter).await?;
    Ok(Json(json!({"jobs": page.jobs, "next_cursor": page.next.map(|n| n.to_string())})).into_response())
}

/// `PATCH /api/jobs/{id}`'s body.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    priority: Priority,
}

/// `PATCH /api/jobs/{id}` `{"priority"}`: a queued job takes the place its
/// new priority gives it; a mining job's units not yet handed out follow
/// (a unit's id stands for its mining job). Answers with the job as it now
/// is, once the change is stored.
pub(super) async fn reprioritise(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    let id = parse_id(&id)?;
    let patch: Patch = parse_body(body)?;
    match state.coord.reprioritise(id, patch.priority).await {
        Ok(moved) => Ok(Json(find(&state, moved).await?).into_response()),
        Err(CoordError::Unmovable(Unmovable::NotActive(_))) => Err(not_active(&state, id).await),
        Err(e) => Err(e.into()),
    }
}

/// `POST /api/jobs/{id}/retry`'s body: both optional (`{}` keeps them).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Retry {
    /// The new job's priority; the old one's by default.
    #[serde(default)]
    priority: Option<Priority>,
    /// For an `ai.query` job that ran on its submitter's own key: the key
    /// again (the master never kept it).
    #[serde(default)]
    api_key: Option<Secret>,
}

/// `POST /api/jobs/{id}/retry`: a failed or cancelled job runs again as a
/// new job with the same kind and parameters, linked both ways
/// (`retry_of` on the new job, `retried_as` on the old). A job is retried
/// once; retry the new job to go again.
pub(super) async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, AppError> {
    check_accepting(&state)?;
    let id = parse_id(&id)?;
    let req: Retry = match &body {
        Ok(bytes) if bytes.is_empty() => Retry::default(),
        _ => parse_body(body)?,
    };
    let conflict = |code, message: String| AppError::new(StatusCode::CONFLICT, code, message);
    let _one_at_a_time = state.retrying.lock().await;
    let Some(old) = stored(&state, id).await? else { return Err(not_found(id)) };
    if let Some(parent) = old.parent {
        return Err(conflict("unit", format!("job {id} is a unit of mining job {parent}: retry that job")));
    }
    if !matches!(old.state, JobState::Failed | JobState::Cancelled) {
        let message = format!("job {id} is {}: only a failed or cancelled job can be retried", old.state.as_str());
        return Err(conflict("not_retryable", message));
    }
    if let Some(again) = old.retried_as {
        return Err(conflict("already_retried", format!("job {id} was already retried as job {again}")));
    }
    let Some(mut spec) = state.store.spec(id).await? else {
        let message = format!("job {id}'s parameters are no longer valid for its kind {}", old.kind);
        return Err(conflict("not_retryable", message));
    };
    if let JobSpec::AiQuery(p) = &mut spec {
        if p.own_key && req.api_key.is_none() {
            let message =
                format!("job {id} ran on its submitter's own API key, which is never kept: send it as api_key");
            return Err(AppError::bad_request("api_key_needed", message));
        }
        p.own_key = false;
    }
    // It keeps its group, time limit and retry policy; not its place in
    // time, its parents or its unique key (the new job stands alone).
    let kept = old.options.unwrap_or_default();
    let options =
        SubmitOptions { group: kept.group, timeout_ms: kept.timeout_ms, retry: kept.retry, ..SubmitOptions::default() };
    let resubmit = SubmitRequest {
        kind: spec.kind().as_str().into(),
        params: spec.params_json(),
        priority: Some(req.priority.unwrap_or(old.priority)),
        api_key: req.api_key,
        options,
    };
    let job = NewJob { retry_of: Some(id), ..new_job(resubmit, JobId::beside(id), &[])? };
    let accepted = state.coord.submit(vec![job]).await?;
    let a = accepted.first().copied().ok_or(CoordError::Stopped)?;
    let body =
        json!({"id": a.id, "state": a.state.unwrap_or(JobState::Queued), "position": a.position, "retry_of": id});
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}
