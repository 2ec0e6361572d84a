//! What the store offers beyond the engine's contract
//! (`faena-store-contract`, re-exported at the crate root): what to keep,
//! and what the REST side reads (filters, pages, histories); and what both
//! backends share: a stored job's columns as they read them, and how a
//! change becomes columns and history rows.

use std::sync::Arc;
use std::time::Duration;

use faena_proto::api::JobView;
use faena_proto::ids::{FencingToken, JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobSpec, JobState, Priority};
use faena_proto::options::{ErrorCode, JobOptions};
use serde::Serialize;

use crate::RestoredJob;

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished jobs created longer ago than this are deleted.
    pub age: Option<Duration>,
    /// At least this many jobs, newest first, are kept (finished ones
    /// beyond go, a generation at a time).
    pub keep: Option<u64>,
}

impl Retention {
    /// Keeps every job.
    pub const OFF: Self = Self { age: None, keep: None };

    pub fn is_off(&self) -> bool {
        self.age.is_none() && self.keep.is_none()
    }
}

/// Jobs in a page when the request names no limit.
pub const DEFAULT_PAGE: usize = 50;
/// Most jobs in one page.
pub const MAX_PAGE: usize = 500;

/// Which jobs, and where the page starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<JobKind>,
    pub worker: Option<String>,
    pub priority: Option<Priority>,
    /// The units of this mining job (instead of jobs that are not units).
    pub parent: Option<JobId>,
    /// The firings of this recurring schedule.
    pub schedule: Option<String>,
    /// Submitted at or after this (ms since the UNIX epoch).
    pub since_ms: Option<u64>,
    /// Only jobs stored before this cursor (the previous page's `next`).
    pub before: Option<i64>,
    /// 1..=[`MAX_PAGE`].
    pub limit: usize,
}

/// One page of jobs, newest first, and the cursor of the next page (none
/// when this is the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub jobs: Vec<JobView>,
    pub next: Option<i64>,
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

/// The states a job is not finished in, as a condition for SQLite (on
/// PostgreSQL, `listed_state = 'open'`): an `IN` list of more than two
/// values makes SQLite build a temporary table each time it checks it,
/// and as a partial index's predicate that is on every update of a job
/// (it halved batch dispatch); `OR`s are checked in place. The index and
/// the queries that should use it say it the same way.
pub(crate) const UNFINISHED_SQLITE: &str =
    "(state = 'queued' OR state = 'running' OR state = 'scheduled' OR state = 'waiting')";

/// A priority change's line in a job's history.
pub(crate) fn priority_detail(priority: Priority, was: Priority) -> String {
    format!("priority {} (was {})", priority.as_str(), was.as_str())
}

/// [`priority_detail`]'s lines, as a `LIKE` pattern both backends count
/// when they restore a job (`RestoredJob::priority_changes`).
pub(crate) const PRIORITY_DETAIL_LIKE: &str = "priority % (was %)";

/// A stored job's columns as both backends read them (ids already parsed
/// where the backend's type is a UUID; text otherwise).
#[derive(Debug)]
pub(crate) struct StoredJob {
    pub id: String,
    pub kind: String,
    pub params: String,
    pub priority: String,
    pub seq: i64,
    pub created: i64,
    pub attempts: u32,
    pub state: String,
    pub worker: Option<String>,
    pub token: Option<String>,
    pub parent: Option<String>,
    pub result: Option<String>,
    pub retry_of: Option<String>,
    pub opts: Option<String>,
    pub run_at: Option<i64>,
    /// Its history's priority changes.
    pub priority_changes: i64,
}

impl StoredJob {
    /// The job to restore, or none if a column does not parse.
    pub(crate) fn restore(self) -> Option<RestoredJob> {
        let Self {
            id,
            kind,
            params,
            priority,
            seq,
            created,
            attempts,
            state,
            worker,
            token,
            parent,
            result,
            retry_of,
            opts,
            run_at,
            priority_changes,
        } = self;
        let done = match (state.as_str(), &worker, result) {
            ("succeeded", Some(w), Some(r)) => Some((w.clone(), serde_json::from_str(&r).ok()?)),
            _ => None,
        };
        let lease = match (state.as_str(), worker, token) {
            ("running", Some(w), Some(t)) => Some((WorkerId::parse(&w).ok()?, attempts, FencingToken::parse(&t).ok()?)),
            _ => None,
        };
        let parent = match parent {
            Some(p) => Some(p.parse().ok()?),
            None => None,
        };
        let spec = JobSpec::parse_kind(JobKind::parse(&kind).ok()?, serde_json::from_str(&params).ok()?).ok()?;
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
            state: JobState::parse(&state)?,
            opts: match opts {
                Some(o) => Some(Arc::new(serde_json::from_str(&o).ok()?)),
                None => None,
            },
            run_at_ms: run_at.and_then(|r| u64::try_from(r).ok()),
            ended_parents: Vec::new(),
            priority_changes: u32::try_from(priority_changes).unwrap_or(0),
        })
    }
}

/// The firing a new job records: its schedule, the time it was for.
pub(crate) fn fired_by(opts: &Option<Arc<JobOptions>>) -> Option<(String, i64)> {
    let o = opts.as_ref()?;
    Some((o.schedule.clone()?, o.fired_for_ms? as i64))
}

/// The `unique_keys` row a new job holds: its key, and until when (none:
/// until it finishes), counted from `created_ms`.
pub(crate) fn held_key(opts: &Option<Arc<JobOptions>>, created_ms: i64) -> Option<(String, Option<i64>)> {
    let o = opts.as_ref()?;
    let until = o.unique_for_s.map(|s| created_ms.saturating_add(s as i64 * 1000));
    Some((o.unique_key.clone()?, until))
}

/// A new job's first history row's detail.
pub(crate) fn inserted_detail(parent: Option<JobId>, retry_of: Option<JobId>, run_at: Option<u64>) -> Option<String> {
    match (parent, retry_of, run_at) {
        (Some(p), _, _) => Some(format!("unit of job {p}")),
        (None, Some(r), _) => Some(format!("retry of job {r}")),
        (None, None, Some(at)) => Some(format!("runs at {}", crate::rfc3339(at))),
        (None, None, None) => None,
    }
}

/// The state a requeued job is stored in: scheduled while its retry waits.
pub(crate) fn requeued_state(run_at_ms: Option<u64>) -> &'static str {
    if run_at_ms.is_some() { "scheduled" } else { "queued" }
}

/// A job's options as a column: none when it asks for nothing.
pub(crate) fn opts_column(opts: &Option<Arc<JobOptions>>) -> Option<String> {
    opts.as_ref().filter(|o| !o.is_default()).and_then(|o| serde_json::to_string(o.as_ref()).ok())
}

/// The columns every job listing shows, as both backends read them.
#[derive(Debug)]
pub(crate) struct ViewColumns {
    pub kind: String,
    pub priority: String,
    pub state: String,
    pub attempts: u32,
    pub worker: Option<String>,
    pub error: Option<String>,
    pub created: i64,
    pub finished: Option<i64>,
    pub run_at: Option<i64>,
    pub opts: Option<String>,
}

impl ViewColumns {
    /// Job `id` as stored: without result, parent, position, progress or
    /// waiting reason.
    pub(crate) fn view(self, id: JobId) -> JobView {
        let ms = |v: i64| crate::rfc3339(u64::try_from(v).unwrap_or(0));
        JobView {
            id,
            kind: self.kind,
            priority: Priority::parse(&self.priority).unwrap_or_default(),
            state: JobState::parse(&self.state).unwrap_or(JobState::Failed),
            attempts: self.attempts,
            worker: self.worker,
            error: self.error.clone(),
            created_at: ms(self.created),
            finished_at: self.finished.map(ms),
            position: None,
            result: None,
            progress: None,
            parent: None,
            waiting: None,
            retry_of: None,
            retried_as: None,
            run_at: self.run_at.map(ms),
            error_code: self.error.as_deref().and_then(ErrorCode::of).map(|c| c.as_str().to_owned()),
            options: self.opts.and_then(|o| serde_json::from_str(&o).ok()),
        }
    }
}
