//! Runs work units: one task per unit, bounded by the slots, each cancellable.
//! A unit stays in the running set until the master has its outcome, so
//! heartbeats keep its lease alive while a result waits for a restarting master.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faena_proto::grpc::{self as pb, result_request};
use faena_proto::ids::{FencingToken, InstanceId, JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobSpec};
use faena_proto::mqtt::WorkUnit;
use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Code;

use crate::client::{Client, SESSION_WAIT, Session};
use crate::exec::{JobContext, JobFailure, Registry, Secrets};
use crate::metrics::Metrics;
use crate::results::Results;

#[derive(Debug)]
struct Running {
    kind: JobKind,
    attempt: u32,
    token: FencingToken,
    cancel: CancellationToken,
    /// Its outcome is settled and on its way to the master: nothing is left
    /// to stop (a heartbeat's answer may still list it as revoked, the
    /// master having taken that very outcome).
    reporting: bool,
}

#[derive(Debug)]
pub struct Runner {
    pub worker_id: WorkerId,
    pub instance: InstanceId,
    /// Units at once (other than `ai.query`), and `ai.query` units at once:
    /// changed live by [`Runner::resize`].
    slots: AtomicU32,
    ai_slots: AtomicU32,
    /// The live configuration version this worker runs (0: none).
    pub config_version: AtomicU64,
    pub registry: Registry,
    pub metrics: Arc<Metrics>,
    /// Set when the master must hear from us again (it restarted or forgot us).
    pub need_register: Notify,
    client: Client,
    /// The registration's session the client's calls carry.
    session: Session,
    /// Outcomes go to the master through this, several to a call.
    results: Results,
    permits: Arc<Semaphore>,
    /// `ai.query` units run on their own slots (I/O-bound).
    ai_permits: Arc<Semaphore>,
    running: Mutex<HashMap<JobId, Running>>,
    draining: AtomicBool,
    handing_back: AtomicBool,
    tracker: TaskTracker,
    /// Small jobs beside the units (a configuration report, giving up
    /// slots): owned here and stopped by [`Runner::stop_chores`].
    chores: TaskTracker,
    stop_chores: CancellationToken,
}

impl Runner {
    pub fn new(
        worker_id: WorkerId,
        instance: InstanceId,
        slots: (u32, u32),
        registry: Registry,
        (client, session): (Client, Session),
        metrics: Arc<Metrics>,
    ) -> Self {
        let (slots, ai_slots) = slots;
        Self {
            worker_id,
            instance,
            slots: AtomicU32::new(slots),
            ai_slots: AtomicU32::new(ai_slots),
            config_version: AtomicU64::new(0),
            registry,
            metrics,
            need_register: Notify::new(),
            results: Results::start(client.clone()),
            client,
            session,
            permits: Arc::new(Semaphore::new(slots as usize)),
            ai_permits: Arc::new(Semaphore::new(ai_slots as usize)),
            running: Mutex::new(HashMap::new()),
            draining: AtomicBool::new(false),
            handing_back: AtomicBool::new(false),
            tracker: TaskTracker::new(),
            chores: TaskTracker::new(),
            stop_chores: CancellationToken::new(),
        }
    }

    /// Runs `chore` until it ends or [`Runner::stop_chores`].
    pub fn spawn_chore(&self, chore: impl std::future::Future<Output = ()> + Send + 'static) {
        let stop = self.stop_chores.clone();
        self.chores.spawn(async move { stop.run_until_cancelled(chore).await });
    }

    /// Stops the chores still running and waits for them.
    pub async fn stop_chores(&self) {
        self.stop_chores.cancel();
        self.chores.close();
        self.chores.wait().await;
    }

    /// (slots, ai_slots) now.
    pub fn slots(&self) -> (u32, u32) {
        (self.slots.load(Ordering::Relaxed), self.ai_slots.load(Ordering::Relaxed))
    }

    /// Changes the slots live: more start at once; fewer take effect as
    /// running units finish (nothing running is stopped).
    pub fn resize(&self, (slots, ai_slots): (u32, u32)) {
        let adjust = |permits: &Arc<Semaphore>, from: u32, to: u32| {
            if to > from {
                permits.add_permits((to - from) as usize);
            } else if to < from {
                let want = from - to;
                let rest = want - permits.forget_permits(want as usize) as u32;
                if rest > 0 {
                    // The semaphore is fair: units waiting now start after these are taken.
                    let permits = permits.clone();
                    self.spawn_chore(async move {
                        if let Ok(p) = permits.acquire_many_owned(rest).await {
                            p.forget();
                        }
                    });
                }
            }
        };
        adjust(&self.permits, self.slots.swap(slots, Ordering::Relaxed), slots);
        adjust(&self.ai_permits, self.ai_slots.swap(ai_slots, Ordering::Relaxed), ai_slots);
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The client, once the registration on its way (if any) is answered:
    /// for calls about units, which the master refuses without the
    /// current session.
    async fn unit_client(&self) -> Client {
        self.session.current(SESSION_WAIT).await;
        self.client.clone()
    }

    pub fn running_count(&self) -> usize {
        self.running.lock().len()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The leases this worker holds, for register and heartbeat calls.
    pub fn leases(&self) -> Vec<pb::Lease> {
        self.running
            .lock()
            .iter()
            .map(|(id, r)| pb::Lease { job_id: id.to_string(), attempt: r.attempt, token: r.token.as_str().to_owned() })
            .collect()
    }

    /// Takes a unit from the jobs topic. A repeated delivery of the same
    /// attempt is ignored; a newer attempt replaces an older one.
    pub fn start(self: &Arc<Self>, unit: WorkUnit) {
        let cancel = CancellationToken::new();
        {
            let mut running = self.running.lock();
            if let Some(r) = running.get(&unit.job_id) {
                if r.attempt >= unit.attempt {
                    tracing::debug!(job = %unit.job_id, attempt = unit.attempt, "duplicate delivery ignored");
                    return;
                }
                r.cancel.cancel();
            }
            running.insert(
                unit.job_id,
                Running {
                    kind: unit.kind,
                    attempt: unit.attempt,
                    token: unit.token.clone(),
                    cancel: cancel.clone(),
                    reporting: false,
                },
            );
        }
        let this = self.clone();
        self.tracker.spawn(async move { this.run_unit(unit, cancel).await });
    }

    /// Stops an attempt the master no longer wants; its outcome is not
    /// reported. False when there was nothing to stop: no such attempt, or
    /// one whose outcome is already on its way.
    pub fn cancel(&self, job: JobId, attempt: u32) -> bool {
        match self.running.lock().get(&job).filter(|r| r.attempt == attempt) {
            Some(r) if r.reporting => {
                tracing::debug!(job = %job, attempt, "let go of a unit whose outcome is on its way");
                false
            }
            Some(r) => {
                tracing::info!(job = %job, attempt, "cancelling a running unit");
                r.cancel.cancel();
                true
            }
            None => false,
        }
    }

    pub fn revoke(&self, lease: &pb::Lease) {
        if let Ok(job) = lease.job_id.parse() {
            self.cancel(job, lease.attempt);
        }
    }

    /// Marks `unit`'s outcome as on its way: a cancel no longer applies.
    fn reporting(&self, unit: &WorkUnit) {
        if let Some(r) = self.running.lock().get_mut(&unit.job_id).filter(|r| r.attempt == unit.attempt) {
            r.reporting = true;
        }
    }

    async fn run_unit(self: Arc<Self>, unit: WorkUnit, cancel: CancellationToken) {
        let kind = unit.kind;
        let started = Instant::now();
        let outcome = if self.is_draining() {
            None
        } else {
            let permits = if kind == JobKind::AiQuery { &self.ai_permits } else { &self.permits };
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.ok(),
                () = cancel.cancelled() => None,
            };
            match permit {
                Some(_permit) => Some(self.execute(&unit, &cancel).await),
                None => None,
            }
        };
        let handing_back = self.handing_back.load(Ordering::Relaxed) || (open_ended(kind) && self.is_draining());
        let stopped = matches!(&outcome, Some(Err(f)) if f.cancelled);
        let outcome = match outcome {
            _ if (cancel.is_cancelled() || stopped) && !handing_back => {
                self.metrics.finished(kind, "cancelled");
                self.forget(&unit);
                return;
            }
            Some(Ok(output)) if !cancel.is_cancelled() => {
                self.metrics.finished(kind, "succeeded");
                result_request::Outcome::OutputJson(output.to_string())
            }
            Some(Err(failure)) if !cancel.is_cancelled() => {
                self.metrics.finished(kind, "failed");
                result_request::Outcome::Failure(pb::JobFailure {
                    message: failure.message,
                    retryable: failure.retryable,
                })
            }
            _ => {
                self.metrics.finished(kind, "handed_back");
                result_request::Outcome::HandedBack(format!("worker {} is shutting down", self.worker_id))
            }
        };
        self.reporting(&unit);
        self.submit(&unit, outcome, started.elapsed()).await;
        self.forget(&unit);
    }

    async fn execute(&self, unit: &WorkUnit, cancel: &CancellationToken) -> Result<serde_json::Value, JobFailure> {
        let spec =
            JobSpec::parse_kind(unit.kind, unit.params.clone()).map_err(|e| JobFailure::permanent(e.to_string()))?;
        let executor = self
            .registry
            .get(unit.kind)
            .ok_or_else(|| JobFailure::permanent(format!("worker {} does not run {} jobs", self.worker_id, unit.kind)))?
            .clone();
        let (progress_tx, mut progress_rx) = mpsc::channel(64);
        let started = Instant::now();
        self.metrics.running.inc();
        let secrets = (!unit.secrets.is_empty()).then(|| Secrets {
            client: self.client(),
            session: self.session.clone(),
            worker: self.worker_id.to_string(),
            lease: self.lease(unit),
            names: unit.secrets.clone(),
        });
        let ctx = JobContext::new(cancel.clone(), progress_tx).with_secrets(secrets);
        let fut = executor.execute(spec, ctx);
        tokio::pin!(fut);
        let result = loop {
            tokio::select! {
                r = &mut fut => break r,
                Some(p) = progress_rx.recv() => self.report_progress(unit, p).await,
            }
        };
        // What the unit reported just before it finished still goes out, in
        // order and before the result (the last pieces of a streamed answer).
        while let Ok(p) = progress_rx.try_recv() {
            self.report_progress(unit, p).await;
        }
        self.metrics.running.dec();
        self.metrics.duration.observe(started.elapsed().as_secs_f64());
        result
    }

    fn lease(&self, unit: &WorkUnit) -> pb::Lease {
        pb::Lease { job_id: unit.job_id.to_string(), attempt: unit.attempt, token: unit.token.as_str().to_owned() }
    }

    async fn report_progress(&self, unit: &WorkUnit, data: serde_json::Value) {
        let req = pb::ProgressRequest {
            worker_id: self.worker_id.to_string(),
            lease: Some(self.lease(unit)),
            progress_json: data.to_string(),
        };
        if let Err(s) = self.unit_client().await.report_progress(req).await {
            tracing::debug!(job = %unit.job_id, code = ?s.code(), "progress not delivered");
        }
    }

    /// Delivers an outcome until the master takes it or rejects it for good.
    async fn submit(&self, unit: &WorkUnit, outcome: result_request::Outcome, elapsed: Duration) {
        let req = pb::ResultRequest {
            worker_id: self.worker_id.to_string(),
            lease: Some(self.lease(unit)),
            outcome: Some(outcome),
            elapsed_us: elapsed.as_micros() as u64,
        };
        let mut backoff = faena_common::retry::Policy::DELIVERY.start();
        loop {
            self.session.current(SESSION_WAIT).await;
            match self.results.submit(&req).await {
                Ok(_) => return,
                Err(s) if s.code() == Code::Aborted => self.need_register.notify_one(),
                Err(s)
                    if matches!(
                        s.code(),
                        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Internal | Code::Cancelled
                    ) =>
                {
                    tracing::debug!(job = %unit.job_id, error = %s.message(), "master unreachable; result will be retried");
                }
                Err(s) => {
                    tracing::warn!(job = %unit.job_id, attempt = unit.attempt, code = ?s.code(), error = %s.message(), "master rejected the result; dropped");
                    return;
                }
            }
            self.metrics.result_retries.inc();
            tokio::time::sleep(backoff.wait()).await;
        }
    }

    fn forget(&self, unit: &WorkUnit) {
        let mut running = self.running.lock();
        if running.get(&unit.job_id).is_some_and(|r| r.attempt == unit.attempt) {
            running.remove(&unit.job_id);
        }
    }

    /// Stops taking work, lets running units finish for `timeout`, then hands
    /// the rest back and waits (bounded) for the master to hear of them.
    pub async fn drain(&self, timeout: Duration) {
        self.draining.store(true, Ordering::Relaxed);
        self.tracker.close();
        // A mining unit is a slice of a range the master re-splits at once:
        // waiting for it would only keep this worker from stopping.
        let mining: Vec<_> =
            self.running.lock().values().filter(|r| open_ended(r.kind)).map(|r| r.cancel.clone()).collect();
        if !mining.is_empty() {
            tracing::info!(
                units = mining.len(),
                "handing mining units back now: the master gives their ranges to other workers"
            );
            mining.iter().for_each(CancellationToken::cancel);
        }
        if tokio::time::timeout(timeout, self.tracker.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(left = self.running_count(), "drain timeout: handing running units back to the master");
        self.handing_back.store(true, Ordering::Relaxed);
        for r in self.running.lock().values() {
            r.cancel.cancel();
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
    }
}

/// A kind whose units are slices of a larger range, handed back on a drain
/// rather than finished.
fn open_ended(kind: JobKind) -> bool {
    kind == JobKind::RandomxMine
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use std::sync::Arc;
    use std::time::Duration;

    use faena_proto::ids::{InstanceId, WorkerId};
    use faena_proto::secret::Secret;

    use super::Runner;
    use crate::exec::Registry;
    use crate::metrics::Metrics;

    #[tokio::test]
    async fn slots_given_up_while_units_hold_them_stop_with_the_runner() {
        let tls = faena_common::tls::TlsArgs::default();
        let master = crate::client::connect("http://127.0.0.1:9", &Secret::new("t"), &tls).expect("lazy client");
        let id = WorkerId::parse("w1").expect("id");
        let runner =
            Runner::new(id, InstanceId::new(), (2, 0), Registry::default(), master, Arc::new(Metrics::default()));
        // Two units run: shrinking to none leaves a chore waiting for their slots.
        let held = runner.permits.clone().acquire_many_owned(2).await.expect("slots");
        runner.resize((0, 0));
        tokio::time::timeout(Duration::from_secs(10), runner.stop_chores()).await.expect("the chore stopped");
        drop(held);
        assert_eq!(runner.permits.available_permits(), 2, "the stopped chore took nothing");
    }
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod session_tests;
