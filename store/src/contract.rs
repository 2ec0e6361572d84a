//! What the job engine hands the store and gets back from it: the state
//! changes to make durable ([`StoreOp`], in order) and the unfinished jobs
//! read back at start-up ([`RestoredJob`]). Plain data, no I/O: every
//! backend takes and gives exactly these.

use std::sync::Arc;

use faena_proto::ids::{FencingToken, JobId, WorkerId};
use faena_proto::jobs::{JobSpec, JobState, Priority};
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
