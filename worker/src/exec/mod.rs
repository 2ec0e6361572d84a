//! Executors: one per job kind, behind the [`Executor`] trait, so the runner
//! neither knows nor cares what a unit computes.

pub mod ai;
pub mod mine;
pub mod noop;
pub mod randomx;

use std::collections::HashMap;
use std::sync::Arc;

use faena_proto::grpc as pb;
use faena_proto::jobs::{JobKind, JobSpec};
use faena_proto::secret::Secret;
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, SESSION_WAIT, Session};

/// Why a unit did not produce an output, and whether another try may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobFailure {
    pub message: String,
    pub retryable: bool,
    /// It stopped because it was cancelled (by the master, or a drain):
    /// nothing to report as a failure.
    pub cancelled: bool,
}

impl JobFailure {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false, cancelled: false }
    }

    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true, cancelled: false }
    }

    pub fn cancelled() -> Self {
        Self { message: "cancelled".into(), retryable: false, cancelled: true }
    }

    /// The same failure, its message prefixed with where it happened.
    pub fn context(self, at: &str) -> Self {
        Self { message: format!("{at}: {}", self.message), ..self }
    }
}

/// Fetches the secrets a unit refers to from the master, for its lease only.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub client: Client,
    /// Waited on before asking: a unit may start before the answer to the
    /// registration it came under was read.
    pub session: Session,
    pub worker: String,
    pub lease: pb::Lease,
    /// The names the unit refers to; others are never asked for.
    pub names: Vec<String>,
}

/// What an executor gets besides its parameters.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// Cancelled when the master cancels the job or revokes the lease.
    pub cancel: CancellationToken,
    progress: mpsc::Sender<Value>,
    secrets: Option<Secrets>,
}

impl JobContext {
    pub fn new(cancel: CancellationToken, progress: mpsc::Sender<Value>) -> Self {
        Self { cancel, progress, secrets: None }
    }

    pub fn with_secrets(mut self, secrets: Option<Secrets>) -> Self {
        self.secrets = secrets;
        self
    }

    /// Reports progress; dropped rather than queued without bound if the master is slow.
    pub fn progress(&self, value: Value) {
        let _ = self.progress.try_send(value);
    }

    /// Reports progress that must all arrive, in order (streamed text):
    /// waits while the reports before it are on their way.
    pub async fn report(&self, value: Value) {
        let _ = self.progress.send(value).await;
    }

    /// The unit's secret `name`, if the unit refers to one. A unit that
    /// refers to a secret the master no longer has fails: its key was lost
    /// (a master restart), and running with another key would be wrong.
    pub async fn secret(&self, name: &str) -> Result<Option<Secret>, JobFailure> {
        let Some(s) = self.secrets.as_ref().filter(|s| s.names.iter().any(|n| n == name)) else { return Ok(None) };
        let req =
            pb::SecretRequest { worker_id: s.worker.clone(), lease: Some(s.lease.clone()), name: name.to_owned() };
        s.session.current(SESSION_WAIT).await;
        match s.client.clone().fetch_secret(req).await {
            Ok(resp) => Ok(Some(Secret::new(resp.into_inner().value))),
            Err(e) if e.code() == tonic::Code::NotFound => Err(JobFailure::permanent(format!(
                "the job's own {name} is no longer held by the master (it restarted); submit the job again"
            ))),
            Err(e) => {
                Err(JobFailure::retryable(format!("could not fetch the job's {name} from the master: {}", e.message())))
            }
        }
    }
}

pub trait Executor: Send + Sync + std::fmt::Debug {
    fn execute(&self, spec: JobSpec, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobFailure>>;
}

/// The executors this worker has, by kind; the kinds it advertises.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    executors: HashMap<JobKind, Arc<dyn Executor>>,
}

impl Registry {
    pub fn with(mut self, kind: JobKind, executor: Arc<dyn Executor>) -> Self {
        self.executors.insert(kind, executor);
        self
    }

    pub fn get(&self, kind: JobKind) -> Option<&Arc<dyn Executor>> {
        self.executors.get(&kind)
    }

    pub fn kinds(&self) -> Vec<JobKind> {
        let mut kinds: Vec<JobKind> = self.executors.keys().copied().collect();
        kinds.sort_by_key(|k| k.as_str());
        kinds
    }
}
