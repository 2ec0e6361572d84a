//! A unit that arrives before the answer to the registration it came under,
//! and one revoked while its outcome is on its way.

#![allow(clippy::expect_used)]

use std::sync::Arc;

use faena_proto::grpc::master_server::Master;
use faena_proto::grpc::{self as pb, SESSION_METADATA};
use faena_proto::ids::{FencingToken, InstanceId, JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobSpec};
use faena_proto::mqtt::WorkUnit;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tonic::{Request, Response, Status};

use super::Runner;
use crate::exec::{Executor, JobContext, JobFailure, Registry};
use crate::fake_master::{nope, serve, until};
use crate::metrics::Metrics;

/// A master that takes calls only with the session `s1`, as the real one
/// does once the worker is registered; it records what it took and refused.
#[derive(Default, Clone)]
struct Strict {
    calls: Arc<Mutex<Calls>>,
}

#[derive(Default, Debug)]
struct Calls {
    progress: Vec<Value>,
    results: usize,
    refused: usize,
}

impl Strict {
    fn admit<T>(&self, r: &Request<T>) -> Result<(), Status> {
        match r.metadata().get(SESSION_METADATA).and_then(|v| v.to_str().ok()) {
            Some("s1") => Ok(()),
            _ => {
                self.calls.lock().refused += 1;
                Err(Status::aborted("the worker's registration has another session"))
            }
        }
    }
}

#[tonic::async_trait]
impl Master for Strict {
    async fn register(&self, _: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        nope()
    }
    async fn heartbeat(&self, _: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        nope()
    }
    async fn report_progress(&self, r: Request<pb::ProgressRequest>) -> Result<Response<pb::ProgressResponse>, Status> {
        self.admit(&r)?;
        let p = serde_json::from_str(&r.get_ref().progress_json).expect("JSON");
        self.calls.lock().progress.push(p);
        Ok(Response::new(pb::ProgressResponse::default()))
    }
    async fn submit_result(&self, r: Request<pb::ResultRequest>) -> Result<Response<pb::ResultResponse>, Status> {
        self.admit(&r)?;
        self.calls.lock().results += 1;
        Ok(Response::new(pb::ResultResponse { duplicate: false }))
    }
    async fn submit_results(&self, r: Request<pb::ResultsRequest>) -> Result<Response<pb::ResultsResponse>, Status> {
        self.admit(&r)?;
        let n = r.get_ref().results.len();
        self.calls.lock().results += n;
        let ok = pb::ResultStatus { code: 0, message: String::new(), duplicate: false };
        Ok(Response::new(pb::ResultsResponse { statuses: vec![ok; n] }))
    }
    async fn fetch_secret(&self, _: Request<pb::SecretRequest>) -> Result<Response<pb::SecretResponse>, Status> {
        nope()
    }
    async fn broker_login(
        &self,
        _: Request<pb::BrokerLoginRequest>,
    ) -> Result<Response<pb::BrokerLoginResponse>, Status> {
        nope()
    }
    async fn report_config(&self, _: Request<pb::ConfigReport>) -> Result<Response<pb::ConfigReportResponse>, Status> {
        nope()
    }
}

/// Writes two pieces at once, as a provider's first tokens come.
#[derive(Debug)]
struct Streams;

impl Executor for Streams {
    fn execute(&self, _: JobSpec, ctx: JobContext) -> BoxFuture<'static, Result<Value, JobFailure>> {
        Box::pin(async move {
            ctx.report(json!({"seq": 0, "text": "w0 "})).await;
            ctx.report(json!({"seq": 1, "text": "w1 "})).await;
            Ok(json!({"text": "w0 w1 "}))
        })
    }
}

/// A strict master, its session, and a runner of one slot running `noop`
/// units with `executor`.
fn one_slot(executor: Arc<dyn Executor>) -> (Strict, crate::client::Session, Arc<Runner>) {
    let master = Strict::default();
    let (client, session) = serve(master.clone());
    let registry = Registry::default().with(JobKind::Noop, executor);
    let id = WorkerId::parse("w1").expect("id");
    let metrics = Arc::new(Metrics::default());
    let runner = Arc::new(Runner::new(id, InstanceId::new(), (1, 0), registry, (client, session.clone()), metrics));
    (master, session, runner)
}

#[tokio::test]
async fn a_unit_that_comes_before_the_registrations_answer_loses_no_progress() {
    let (master, session, runner) = one_slot(Arc::new(Streams));
    // The registration is on its way when the unit comes.
    session.registering();
    runner.start(WorkUnit::new(JobId::new(), 1, FencingToken::new(), JobKind::Noop, json!({})));
    // The unit's first call either waits for the answer or reaches the master.
    until("the unit's first call", || session.waiting() > 0 || master.calls.lock().refused > 0).await;
    session.set("s1");
    until("the unit's result", || master.calls.lock().results == 1).await;
    let calls = master.calls.lock();
    let texts: Vec<&str> = calls.progress.iter().filter_map(|p| p["text"].as_str()).collect();
    assert_eq!(texts, ["w0 ", "w1 "], "every piece, in order: {calls:?}");
    assert_eq!(calls.refused, 0, "nothing went without the session");
}

/// Answers at once, reporting nothing on the way.
#[derive(Debug)]
struct Quiet;

impl Executor for Quiet {
    fn execute(&self, _: JobSpec, _: JobContext) -> BoxFuture<'static, Result<Value, JobFailure>> {
        Box::pin(async { Ok(json!({})) })
    }
}

#[tokio::test]
async fn a_unit_whose_outcome_is_on_its_way_is_not_cancelled_and_its_outcome_is_delivered() {
    let (master, session, runner) = one_slot(Arc::new(Quiet));
    // The master is away (no session yet): the unit's calls wait for it.
    session.registering();
    let job = JobId::new();
    runner.start(WorkUnit::new(job, 1, FencingToken::new(), JobKind::Noop, json!({})));
    until("the unit's outcome waits to be delivered", || runner.running.lock().get(&job).is_some_and(|r| r.reporting))
        .await;
    // A heartbeat's answer lists it as revoked (the master took its outcome).
    assert!(!runner.cancel(job, 1), "nothing was left to stop");
    session.set("s1");
    until("the unit's result", || master.calls.lock().results == 1).await;
    until("the unit is forgotten", || runner.running_count() == 0).await;
    assert!(!runner.cancel(job, 1), "no such unit any more");
}
