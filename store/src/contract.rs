//! What the job engine hands the store and gets back from it: the state
//! changes to make durable ([`StoreOp`], in order) and the unfinished jobs
//! read back at start-up ([`RestoredJob`]). Plain data, no I/O: every
//! backend takes and gives exactly these.

use std::sync::Arc;
use std::time::Duration;

use faena_proto::api::JobView;
use faena_proto::ids::{FencingToken, JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobSpec, JobState, Priority};
use serde::Serialize;
use serde_json::Value;

/// A job read back from the store at start-up.
#[derive(Debug, Clone)]
pub struct RestoredJob {
    pub id: JobId,
    pub spec: JobSpec,
    pub priority: Priority,
    pub seq: u64,
    pub created_at_ms: u64,
    pub attempts: u32,
    /// Set when the job was running: worker, attempt, token.
    pub lease: Option<(WorkerId, u32, FencingToken)>,
    /// For a unit of a split (mining) job: that job.
    pub parent: Option<JobId>,
    /// For a unit that already succeeded: its worker and output.
    pub done: Option<(String, Value)>,
    /// The failed or cancelled job this one retries.
    pub retry_of: Option<JobId>,
}

/// A state change to make durable, in the order given.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreOp {
    Insert {
        id: JobId,
        spec: Arc<JobSpec>,
        priority: Priority,
        seq: u64,
        at_ms: u64,
        /// Set for the units of a split (mining) job.
        parent: Option<JobId>,
        /// The failed or cancelled job this one retries.
        retry_of: Option<JobId>,
    },
    /// A waiting job (or a mining job's range not yet handed out) moved to
    /// another priority.
    Reprioritised {
        id: JobId,
        priority: Priority,
        was: Priority,
        state: JobState,
        attempts: u32,
        at_ms: u64,
    },
    /// A split job's first unit went out: the job is running.
    Started {
        id: JobId,
        worker: String,
        at_ms: u64,
    },
    Dispatched {
        id: JobId,
        attempt: u32,
        worker: String,
        token: FencingToken,
        at_ms: u64,
    },
    Requeued {
        id: JobId,
        attempts: u32,
        reason: String,
        at_ms: u64,
    },
    Finished {
        id: JobId,
        state: JobState,
        attempts: u32,
        worker: Option<String>,
        result: Option<Value>,
        error: Option<String>,
        at_ms: u64,
    },
}

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
}

impl StoredJob {
    /// The job to restore, or none if a column does not parse.
    pub(crate) fn restore(self) -> Option<RestoredJob> {
        let Self { id, kind, params, priority, seq, created, attempts, state, worker, token, parent, result, retry_of } =
            self;
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
        })
    }
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
            error: self.error,
            created_at: ms(self.created),
            finished_at: self.finished.map(ms),
            position: None,
            result: None,
            progress: None,
            parent: None,
            waiting: None,
            retry_of: None,
            retried_as: None,
        }
    }
}
