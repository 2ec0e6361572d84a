//! The engine's vocabulary: configuration, clock, the jobs and leases it is
//! told about, the effects it asks for, and its answers and errors. Inside
//! the engine a job is its typed [`JobSpec`]; JSON appears only in what goes
//! to the store and the wire (results, progress shown to watchers).

use std::time::{Duration, Instant};

use faena_proto::api::JobEvent;
use faena_proto::ids::{FencingToken, InstanceId, JobId, WorkerId};
use faena_proto::jobs::{JobSpec, JobState, Priority};
use faena_proto::mine::{MineParams, MineProgress};
use faena_proto::mqtt::{Control, WorkUnit};
use faena_proto::secret::Secret;
use serde_json::Value;

use super::mining::MinedUnit;
use crate::scheduler::Capabilities;
use faena_verify::VerifiedShares;

pub use faena_store_contract::{RestoredJob, StoreOp};

/// Who submitted a job: the master's answer cache keeps each submitter's
/// answers apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitter {
    /// A REST or CLI caller (they share the API token).
    Api,
    /// One web session.
    Session(String),
    /// The master itself (mining sources): nothing to cache.
    Master,
}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub queue_capacity: usize,
    pub max_attempts: u32,
    pub heartbeat: Duration,
    /// Invalid mining shares a worker may submit before it is quarantined.
    pub invalid_share_limit: u32,
    /// A queued job fails when no registered worker has offered its kind
    /// (and provider) for this long.
    pub no_worker_timeout: Duration,
    /// A quarantined worker id gets no work for this long, however often
    /// it registers again.
    pub quarantine: Duration,
    /// Most unique keys held at once.
    pub max_unique_keys: usize,
    /// Most groups known at once (with jobs or limits).
    pub max_groups: usize,
}

impl EngineConfig {
    /// A lease not renewed for two heartbeats is lost.
    pub fn lease_ttl(&self) -> Duration {
        self.heartbeat * 2
    }

    /// After a master restart, how long a running job waits for its worker to
    /// reconnect and claim it before it is queued again.
    pub fn recovery_grace(&self) -> Duration {
        self.lease_ttl() * 3
    }
}

/// The clock, as the engine sees it: monotonic for deadlines, wall for records.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub mono: Instant,
    pub wall_ms: u64,
}

impl Now {
    pub fn system() -> Self {
        Self { mono: Instant::now(), wall_ms: faena_proto::mqtt::now_ms() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRef {
    pub job_id: JobId,
    pub attempt: u32,
    pub token: FencingToken,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: JobId,
    pub spec: JobSpec,
    pub priority: Priority,
    /// An answer already known (the result cache): the job is recorded and
    /// succeeds at once, without a worker.
    pub answer: Option<Value>,
    /// The submitter's own API key: the coordinator keeps it in memory;
    /// the engine never sees it.
    pub api_key: Option<faena_proto::secret::Secret>,
    /// Who asked: the result cache answers each from their own questions.
    pub submitter: Submitter,
    /// The failed or cancelled job this one retries.
    pub retry_of: Option<JobId>,
    /// What it asks beyond kind and parameters (none: nothing).
    pub opts: Option<std::sync::Arc<faena_proto::options::JobOptions>>,
}

impl NewJob {
    pub fn new(id: JobId, spec: JobSpec, priority: Priority) -> Self {
        Self { id, spec, priority, answer: None, api_key: None, submitter: Submitter::Api, retry_of: None, opts: None }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Store(StoreOp),
    /// A unit to publish to `worker` once the changes before it are stored;
    /// then the caller tells [`Engine::sent`](crate::Engine::sent), and its
    /// lease's term starts, or [`Engine::not_sent`](crate::Engine::not_sent).
    Dispatch {
        worker: WorkerId,
        unit: WorkUnit,
        waited: Duration,
    },
    Control {
        worker: WorkerId,
        control: Control,
    },
    /// Final events must only be shown once the preceding store ops are durable.
    Notify {
        job: JobId,
        event: JobEvent,
    },
    /// A lost mining unit's range went back to its job to be split again: a
    /// redelivery, though no unit is requeued (metrics count it as one).
    RangeReturned {
        job: JobId,
    },
}

/// How an attempt ended, as the worker reported it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Output of any kind but a mining unit's (JSON, as the worker sent it).
    Success(Value),
    /// A mining unit's output, its shares verified.
    Mined(MinedUnit),
    Failure {
        message: String,
        retryable: bool,
    },
    HandedBack(String),
}

/// A mining unit's progress report, its shares verified.
#[derive(Debug, Clone, PartialEq)]
pub struct MinedProgress {
    pub hashes: u64,
    pub hashrate: f64,
    pub shares: VerifiedShares,
}

/// What the verifier needs to check a mining unit's shares.
#[derive(Debug, Clone, PartialEq)]
pub struct UnitWork {
    /// The mining job the unit is part of.
    pub job: JobId,
    /// The unit's own parameters (its template and range).
    pub params: MineParams,
    /// Nonces its job already accepted for that template.
    pub known: std::collections::HashSet<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("worker {0} is not registered (register again)")]
    UnknownWorker(WorkerId),
    #[error("job {0} is unknown")]
    UnknownJob(JobId),
    #[error("stale lease for job {job} attempt {attempt}: {reason}")]
    Stale { job: JobId, attempt: u32, reason: String },
    #[error("worker id {0} is in use by another live instance; register once it has stopped or gone silent")]
    InUse(WorkerId),
    #[error("worker {0}: this call does not carry the worker's current session (register again)")]
    Session(WorkerId),
}

/// Why a job's priority cannot change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmovable {
    #[error("job {0} is not queued or running")]
    NotActive(JobId),
    #[error("job {0} is running on a worker; only a mining job's range not yet handed out can change priority")]
    Running(JobId),
    #[error(
        "job {0} has changed priority {MAX_PRIORITY_CHANGES} times, the most a job may; cancel it and submit it again"
    )]
    TooManyChanges(JobId),
}

/// How often one job's priority may change. Each change is in the job's
/// history, so a client repeating it would otherwise grow that without end.
pub const MAX_PRIORITY_CHANGES: u8 = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("queue is full ({capacity} jobs waiting); retry later")]
pub struct QueueFull {
    pub capacity: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub worker: WorkerId,
    pub instance: InstanceId,
    pub caps: Capabilities,
    pub running: Vec<LeaseRef>,
    /// The session the caller holds, if any: needed to register again
    /// while the master holds the worker live.
    pub session: Option<Secret>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct RegisterOutcome {
    pub adopted: Vec<LeaseRef>,
    pub revoked: Vec<LeaseRef>,
    /// The new session every later call of this worker must carry.
    pub session: Secret,
}

/// A live job as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveView {
    pub kind: faena_proto::jobs::JobKind,
    pub state: JobState,
    pub priority: Priority,
    pub position: Option<u64>,
    pub worker: Option<String>,
    pub attempts: u32,
    pub created_at_ms: u64,
    /// A split job's live progress.
    pub progress: Option<MineProgress>,
    /// The job a unit belongs to.
    pub parent: Option<JobId>,
    /// Why a queued job cannot start yet, when no worker could take it.
    pub waiting: Option<String>,
    /// The failed or cancelled job this one retries.
    pub retry_of: Option<JobId>,
    /// A scheduled job's time to queue (wall clock, ms).
    pub run_at_ms: Option<u64>,
    pub opts: Option<std::sync::Arc<faena_proto::options::JobOptions>>,
}

/// What waits and what runs, for the dashboard and the autoscaler.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Load {
    /// Queued jobs per priority: high, normal, low.
    pub depth: [usize; 3],
    pub queued: usize,
    /// Units out on workers.
    pub running: usize,
    /// Jobs waiting for their time (or their next attempt's).
    pub scheduled: usize,
    /// Jobs waiting for the jobs they run after.
    pub waiting: usize,
    /// Per job kind with jobs waiting (mining jobs left out: they take
    /// whatever workers there are and are never "late").
    pub kinds: Vec<KindLoad>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct KindLoad {
    pub kind: faena_proto::jobs::JobKind,
    pub queued: usize,
    /// How long the longest-waiting of them has waited.
    pub oldest_wait_ms: u64,
}
