//! The coordinator as the pool's [`JobEngine`]: a source's mining job is an
//! ordinary engine job, submitted by the master itself.

use std::time::Duration;

use faena_proto::ids::JobId;
use faena_proto::jobs::{JobSpec, Priority};
use faena_proto::mine::MineParams;
use futures::FutureExt;
use futures::future::BoxFuture;

use super::Coordinator;
use crate::engine::{NewJob, Submitter};
use crate::pool::{JobEngine, NotStarted};

impl JobEngine for Coordinator {
    fn start_mining(&self, job: JobId, params: MineParams) -> BoxFuture<'_, Result<(), NotStarted>> {
        let new =
            NewJob { submitter: Submitter::Master, ..NewJob::new(job, JobSpec::RandomxMine(params), Priority::Normal) };
        async move { self.submit(vec![new]).await.map(drop).map_err(|e| NotStarted(Box::new(e))) }.boxed()
    }

    fn stop(&self, job: JobId) -> BoxFuture<'_, ()> {
        async move {
            let _ = self.cancel(job).await;
        }
        .boxed()
    }

    fn replace_template(&self, job: JobId, params: MineParams, grace: Duration) -> BoxFuture<'_, Option<usize>> {
        Coordinator::replace_template(self, job, params, grace).boxed()
    }

    fn is_active(&self, job: JobId) -> BoxFuture<'_, bool> {
        async move { matches!(self.view(job).await, Ok(Some(_))) }.boxed()
    }

    fn mining_workers(&self) -> BoxFuture<'_, Vec<f64>> {
        async move {
            let workers = self.workers().await.unwrap_or_default();
            workers.into_iter().filter(|w| w.kinds.iter().any(|k| k == "randomx.mine")).map(|w| w.hashrate).collect()
        }
        .boxed()
    }
}
