//! What the pool asks of the job engine, and nothing more: the pool sits
//! below the coordinator, which implements [`JobEngine`] and hands itself in.
//! The Faena workers mine a source through one `randomx.mine` job of the
//! engine; the pool starts it, replaces its template in place, and stops it.

use std::time::Duration;

use faena_proto::ids::JobId;
use faena_proto::mine::MineParams;
use futures::future::BoxFuture;

/// The engine did not take a source's mining job.
#[derive(Debug, thiserror::Error)]
#[error("the job engine did not take the mining job: {0}")]
pub struct NotStarted(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// The job engine, as the pool sees it.
pub trait JobEngine: Send + Sync + std::fmt::Debug {
    /// Starts a job the Faena workers mine `params` through.
    fn start_mining(&self, job: JobId, params: MineParams) -> BoxFuture<'_, Result<(), NotStarted>>;

    /// Cancels a source's job (the source went away).
    fn stop(&self, job: JobId) -> BoxFuture<'_, ()>;

    /// Gives a running mining job a new template; the units it retired, or
    /// `None` when the job is no longer running (start another).
    fn replace_template(&self, job: JobId, params: MineParams, grace: Duration) -> BoxFuture<'_, Option<usize>>;

    /// Whether `job` is still queued or running.
    fn is_active(&self, job: JobId) -> BoxFuture<'_, bool>;

    /// The measured speed (H/s, 0 before a measurement) of every registered
    /// worker that mines; empty when none does.
    fn mining_workers(&self) -> BoxFuture<'_, Vec<f64>>;
}
