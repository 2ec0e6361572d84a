//! REST bodies of the master's `/api` (and the SSE events of `/api/jobs/{id}/events`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::JobId;
use crate::jobs::{JobState, Priority};
use crate::options::{AfterPolicy, AfterRef, RetryPolicy};

/// The header in which a forwarder (a standby master, the edge) tells the
/// master whose request it passes on, signed with the cluster token
/// (`faena_common::signing::vouch`); the master believes it only with that
/// signature, and takes it off every request.
pub const CLIENT_HEADER: &str = "x-faena-client";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitRequest {
    pub kind: String,
    #[serde(default)]
    pub params: Value,
    #[serde(default)]
    pub priority: Option<Priority>,
    /// The submitter's own API key for an `ai.query` job: kept only in the
    /// master's memory and handed to the worker that runs the job, never
    /// stored, published or logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<crate::secret::Secret>,
    #[serde(flatten)]
    pub options: SubmitOptions,
}

/// What a submit may ask beyond kind and parameters (see
/// [`crate::options`]); every field optional.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SubmitOptions {
    /// RFC 3339: the job is `scheduled` until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// Or: this many milliseconds from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_after_ms: Option<u64>,
    /// Jobs this one waits for (`waiting`): ids, or indexes in its batch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<AfterRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_policy: Option<AfterPolicy>,
    /// A second submit with the same key gets this job's id back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// Seconds the key holds from submission; none: while the job is not finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_for: Option<u64>,
    /// Dispatch is fair between groups; a group may be limited (`PUT /api/groups/{name}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// An attempt running longer is cancelled and fails with `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

impl SubmitOptions {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitResponse {
    pub id: JobId,
    pub state: JobState,
    /// Jobs ahead of this one in the queue (0 = next to run).
    pub position: u64,
    /// The job was not made: one with the same `unique_key` holds it (`id` is that job's).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchRequest {
    pub jobs: Vec<SubmitRequest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub jobs: Vec<SubmitResponse>,
}

/// A job as `GET /api/jobs/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobView {
    pub id: JobId,
    pub kind: String,
    pub state: JobState,
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339 timestamps.
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// A running mining job's progress (`MineProgress`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Value>,
    /// For a unit of a mining job: that job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<JobId>,
    /// Why a queued job cannot start: no registered worker runs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// The failed or cancelled job this one retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<JobId>,
    /// The job that retried this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried_as: Option<JobId>,
    /// A `scheduled` job's time to queue (its run_at, or its next attempt's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// What the engine ended a failed job for, when it did: `timeout`,
    /// `dependency_failed`, `no_worker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// What it was submitted with (`group`, `after`, `unique_key`…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<crate::options::JobOptions>,
}

/// A worker as `GET /api/workers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerView {
    pub id: String,
    pub state: String,
    pub slots: u32,
    pub running: u32,
    pub kinds: Vec<String>,
    pub cores: u32,
    pub memory_bytes: u64,
    pub aes_ni: bool,
    pub huge_pages: bool,
    /// RandomX modes it runs (`fast`, `light`).
    #[serde(default)]
    pub randomx_modes: Vec<String>,
    pub hashrate: f64,
    /// AI providers it offers (`gemini`, `openai`).
    #[serde(default)]
    pub ai_providers: Vec<String>,
    /// `ai.query` units it runs at once.
    #[serde(default)]
    pub ai_slots: u32,
    /// The model each of its providers answers with by default, as
    /// `provider/model` (what `GET /v1/models` lists).
    #[serde(default)]
    pub ai_models: Vec<String>,
    /// Invalid mining shares since it registered (over the limit: `quarantined`).
    #[serde(default)]
    pub invalid_shares: u32,
    pub version: String,
    /// The live configuration it runs, and the settings it refused; null
    /// for a worker that does not take live configuration.
    #[serde(default)]
    pub config: Option<crate::settings::Applied>,
    /// Milliseconds since the master last heard from it.
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

/// Every 4xx/5xx answer: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What `GET /api/jobs/{id}/events` streams; the SSE event name is `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum JobEvent {
    Queued {
        position: u64,
    },
    /// Waiting for its time (RFC 3339): delayed, or its retry backing off.
    Scheduled {
        run_at: String,
    },
    Running {
        worker: String,
        attempt: u32,
    },
    Progress {
        worker: String,
        attempt: u32,
        data: Value,
    },
    /// Back in the queue after a worker was lost or its lease ran out.
    Requeued {
        reason: String,
        /// An AI answer cut off with it goes on from where it stopped (its
        /// pieces so far stay; the next come numbered on), rather than
        /// starting again.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        continues: bool,
    },
    Succeeded {
        result: Value,
        worker: String,
        attempt: u32,
    },
    Failed {
        error: String,
        /// Why the engine ended it, when it did (`timeout`, `dependency_failed`, `no_worker`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
    },
    Cancelled,
}

impl JobEvent {
    pub fn name(&self) -> &'static str {
        match self {
            JobEvent::Queued { .. } => "queued",
            JobEvent::Running { .. } => "running",
            JobEvent::Progress { .. } => "progress",
            JobEvent::Requeued { .. } => "requeued",
            JobEvent::Succeeded { .. } => "succeeded",
            JobEvent::Failed { .. } => "failed",
            JobEvent::Scheduled { .. } => "scheduled",
            JobEvent::Cancelled => "cancelled",
        }
    }

    pub fn is_final(&self) -> bool {
        matches!(self, JobEvent::Succeeded { .. } | JobEvent::Failed { .. } | JobEvent::Cancelled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies_round_trip() {
        let req: SubmitRequest = serde_json::from_value(json!({"kind": "noop"})).expect("minimal request");
        assert_eq!(req.priority, None);
        assert!(serde_json::from_value::<SubmitRequest>(json!({"kind": "noop", "priority": "urgent"})).is_err());
        for e in [
            JobEvent::Queued { position: 3 },
            JobEvent::Progress { worker: "w".into(), attempt: 1, data: json!({"done": 1}) },
            JobEvent::Cancelled,
        ] {
            let v = serde_json::to_value(&e).expect("ser");
            assert_eq!(v["type"], json!(e.name()));
            assert_eq!(serde_json::from_value::<JobEvent>(v).ok(), Some(e));
        }
    }
}
