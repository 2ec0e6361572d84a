//! Executors: one per job kind, behind the [`Executor`] trait, so the runner
//! neither knows nor cares what a unit computes.

pub mod mine;
pub mod noop;
pub mod randomx;

use std::collections::HashMap;
use std::sync::Arc;

use faena_proto::jobs::{JobKind, JobSpec};
use futures::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why a unit did not produce an output, and whether another try may succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobFailure {
    pub message: String,
    pub retryable: bool,
}

impl JobFailure {
    pub fn permanent(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: false }
    }

    pub fn retryable(message: impl Into<String>) -> Self {
        Self { message: message.into(), retryable: true }
    }
}

/// What an executor gets besides its parameters.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// Cancelled when the master cancels the job or revokes the lease.
    pub cancel: CancellationToken,
    progress: mpsc::Sender<Value>,
}

impl JobContext {
    pub fn new(cancel: CancellationToken, progress: mpsc::Sender<Value>) -> Self {
        Self { cancel, progress }
    }

    /// Reports progress; dropped rather than queued without bound if the master is slow.
    pub fn progress(&self, value: Value) {
        let _ = self.progress.try_send(value);
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
