//! The store's contract with the job engine: the state changes to make
//! durable ([`StoreOp`], in order) and what comes back at start-up
//! ([`RestoredJob`], held unique keys, schedules' last firings, parents'
//! outcomes). Plain data, no I/O: the engine speaks it without depending
//! on any backend, and every backend (`faena-store`: SQLite, PostgreSQL)
//! takes and gives exactly these.

use std::sync::Arc;

use faena_proto::ids::{FencingToken, JobId, WorkerId};
use faena_proto::jobs::{JobSpec, JobState, Priority};
use faena_proto::options::JobOptions;
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
    /// How many times its priority was changed, counted from its history:
    /// the bound on changes holds across restarts and takeovers.
    pub priority_changes: u32,
}

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

/// `ms` since the UNIX epoch as an RFC 3339 time, to the millisecond.
pub fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}
