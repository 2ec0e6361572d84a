//! What the job engine hands the store and gets back from it: the state
//! changes to make durable ([`StoreOp`], in order) and the unfinished jobs
//! read back at start-up ([`RestoredJob`]). Plain data, no I/O: every
//! backend takes and gives exactly these.

use std::sync::Arc;
use std::time::Duration;

use faena_proto::api::JobView;
use faena_proto::ids::{FencingToken, JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobSpec, JobState, Priority};
use faena_proto::options::{ErrorCode, JobOptions};
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
    /// Queued, running, scheduled or waiting (a unit that succeeded: succeeded).
    pub state: JobState,
    /// What it was submitted with beyond kind and parameters.
    pub opts: Option<Arc<JobOptions>>,
    /// A scheduled job's time to queue (ms since the UNIX epoch).
    pub run_at_ms: Option<u64>,
    /// For a job submitted `after` others: those that had ended, and how.
    pub ended_parents: Vec<(JobId, Outcome)>,
}

/// The states a job is not finished in, as a condition for SQLite (on
/// PostgreSQL, `listed_state = 'open'`): an `IN` list of more than two
/// values makes SQLite build a temporary table each time it checks it,
/// and as a partial index's predicate that is on every update of a job
/// (it halved batch dispatch); `OR`s are checked in place. The index and
/// the queries that should use it say it the same way.
pub(crate) const UNFINISHED_SQLITE: &str =
    "(state = 'queued' OR state = 'running' OR state = 'scheduled' OR state = 'waiting')";

/// A job as a dependent sees it: its state, and its result once it succeeded.
pub type Outcome = (JobState, Option<Value>);

/// A key `unique_key` holds: the job that holds it, and until when (ms
/// since the UNIX epoch; none: until the job finishes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldKey {
    pub key: String,
    pub job: JobId,
    pub until_ms: Option<u64>,
}

/// What a named document is: a group's limits, a recurring schedule, an
/// AI client's key (its hash, never the key) or a key's usage on one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamedKind {
    Group,
    Schedule,
    AiKey,
    AiUsage,
}

impl NamedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NamedKind::Group => "group",
            NamedKind::Schedule => "schedule",
            NamedKind::AiKey => "ai_key",
            NamedKind::AiUsage => "ai_usage",
        }
    }
}

/// A recurring schedule's last firing: when it was for, and the job it
/// made (none when it made none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    pub at_ms: u64,
    pub job: Option<JobId>,
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
        /// Queued, or: scheduled (run_at later), waiting (for parents),
        /// failed at once (a parent had failed) — then Finished follows.
        state: JobState,
        /// Stored with the job when it asks for anything (its unique key
        /// is then held: `unique_keys`).
        opts: Option<Arc<JobOptions>>,
        run_at_ms: Option<u64>,
    },
    /// A scheduled or waiting job's time came (or its parents ended):
    /// queued now, or scheduled until `run_at_ms`.
    Released {
        id: JobId,
        state: JobState,
        run_at_ms: Option<u64>,
        attempts: u32,
        detail: String,
        at_ms: u64,
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
        /// Set when its retry policy waits before the next attempt: the
        /// job is scheduled until then.
        run_at_ms: Option<u64>,
    },
    Finished {
        id: JobId,
        state: JobState,
        attempts: u32,
        worker: Option<String>,
        result: Option<Value>,
        error: Option<String>,
        at_ms: u64,
        /// A `unique_key` held while the job was not finished: free now.
        release_key: Option<String>,
    },
    /// A recurring schedule fired for `at_ms` without making a job (its
    /// previous job still ran, it was created, or missed firings were
    /// let go). A firing that makes a job is recorded by that job's
    /// Insert (its `schedule` and `fired_for_ms`), in the same commit.
    Fired {
        schedule: String,
        at_ms: u64,
    },
    /// A named document (JSON) stored, or with none removed.
    Named {
        kind: NamedKind,
        name: String,
        doc: Option<String>,
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
