//! The master's domain state machine: accepted jobs, their leases and
//! attempts, and worker liveness. Pure: no I/O, time passed in; every
//! decision comes out as an [`Effect`] for the coordinator to carry out in
//! order (persist, publish, notify).
//!
//! Semantics: at-least-once delivery, exactly-once outcome. Each dispatch is a
//! new attempt with a fresh fencing token; only the current holder's outcome
//! is accepted, a repeat of an accepted outcome is a harmless duplicate, and
//! anything else is stale.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use faena_proto::api::JobEvent;
use faena_proto::ids::{InstanceId, JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobState, Priority};
use faena_proto::mqtt::{Control, WorkUnit, WorkerState};
use serde_json::Value;

mod types;

pub use types::*;

use crate::queue::Queue;
use crate::scheduler::{Availability, Scheduler, Worker};

/// How many finished jobs are remembered to recognise duplicate results.
const RECENT_FINISHED: usize = 100_000;

#[derive(Debug, Clone)]
struct Lease {
    worker: WorkerId,
    attempt: u32,
    token: String,
    expires: Instant,
    /// Read back from the store after a restart: its worker has not claimed it yet.
    restored: bool,
}

#[derive(Debug, Clone)]
struct ActiveJob {
    kind: JobKind,
    params: Value,
    priority: Priority,
    seq: u64,
    created_at_ms: u64,
    attempts: u32,
    enqueued_at: Instant,
    lease: Option<Lease>,
}

#[derive(Debug)]
struct Finished {
    state: JobState,
    attempt: u32,
    token: Option<String>,
}

#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    queue: Queue,
    jobs: HashMap<JobId, ActiveJob>,
    workers: Scheduler,
    next_seq: u64,
    recent: HashMap<JobId, Finished>,
    recent_order: VecDeque<JobId>,
    effects: Vec<Effect>,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        Self {
            cfg,
            queue: Queue::default(),
            jobs: HashMap::new(),
            workers: Scheduler::default(),
            next_seq: 0,
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            effects: Vec::new(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    pub fn workers(&self) -> &Scheduler {
        &self.workers
    }

    pub fn running(&self) -> usize {
        self.jobs.len() - self.queue.len()
    }

    /// Reloads unfinished jobs after a restart. Running ones keep their lease
    /// for [`EngineConfig::recovery_grace`] so their worker can re-register
    /// and claim them instead of the job running twice.
    pub fn restore(&mut self, now: Now, jobs: Vec<RestoredJob>) {
        for j in jobs {
            self.next_seq = self.next_seq.max(j.seq + 1);
            let lease = j.lease.map(|(worker, attempt, token)| Lease {
                worker,
                attempt,
                token,
                expires: now.mono + self.cfg.recovery_grace(),
                restored: true,
            });
            if lease.is_none() {
                self.queue.push(j.id, j.kind, (j.priority, j.seq));
            }
            let job = ActiveJob {
                kind: j.kind,
                params: j.params,
                priority: j.priority,
                seq: j.seq,
                created_at_ms: j.created_at_ms,
                attempts: j.attempts,
                enqueued_at: now.mono,
                lease,
            };
            self.jobs.insert(j.id, job);
        }
    }

    /// Accepts all of `jobs` or none; returns each id with its queue position.
    pub fn submit(&mut self, now: Now, jobs: Vec<NewJob>) -> Result<Vec<(JobId, u64)>, QueueFull> {
        if self.queue.len() + jobs.len() > self.cfg.queue_capacity {
            return Err(QueueFull { capacity: self.cfg.queue_capacity });
        }
        let mut accepted = Vec::with_capacity(jobs.len());
        for j in jobs {
            let seq = self.next_seq;
            self.next_seq += 1;
            let kind = j.spec.kind();
            let params = j.spec.params_json();
            self.effects.push(Effect::Store(StoreOp::Insert {
                id: j.id,
                kind,
                params: params.clone(),
                priority: j.priority,
                seq,
                at_ms: now.wall_ms,
            }));
            let position = self.queue.push(j.id, kind, (j.priority, seq));
            let job = ActiveJob {
                kind,
                params,
                priority: j.priority,
                seq,
                created_at_ms: now.wall_ms,
                attempts: 0,
                enqueued_at: now.mono,
                lease: None,
            };
            self.jobs.insert(j.id, job);
            accepted.push((j.id, position));
        }
        self.schedule(now);
        Ok(accepted)
    }

    /// Cancels a queued or running job; false if it is not active.
    pub fn cancel(&mut self, now: Now, id: JobId) -> bool {
        let Some(job) = self.jobs.get(&id) else { return false };
        if let Some(lease) = &job.lease {
            let control = Control::Cancel { job_id: id, attempt: lease.attempt };
            self.effects.push(Effect::Control { worker: lease.worker.clone(), control });
        }
        self.finish(now, id, JobState::Cancelled, None, None);
        self.schedule(now);
        true
    }

    pub fn view(&self, id: &JobId) -> Option<ActiveView> {
        let job = self.jobs.get(id)?;
        Some(ActiveView {
            kind: job.kind,
            state: if job.lease.is_some() { JobState::Running } else { JobState::Queued },
            priority: job.priority,
            position: self.queue.position(id),
            worker: job.lease.as_ref().map(|l| l.worker.to_string()),
            attempts: job.attempts,
            created_at_ms: job.created_at_ms,
        })
    }

    pub fn register(&mut self, now: Now, reg: Registration) -> RegisterOutcome {
        if let Some(old) = self.workers.get(&reg.worker)
            && old.instance != reg.instance
        {
            self.drop_worker(now, &reg.worker, "worker restarted", true);
        }
        self.workers.insert(Worker {
            id: reg.worker.clone(),
            instance: reg.instance,
            caps: reg.caps,
            running: Default::default(),
            last_seen: now.mono,
            availability: Availability::Online,
            hashrate: 0.0,
        });
        let mut out = RegisterOutcome::default();
        for lease in reg.running {
            if self.renew(now, &reg.worker, &lease) {
                if let Some(l) = self.jobs.get_mut(&lease.job_id).and_then(|j| j.lease.as_mut()) {
                    l.restored = false;
                }
                if let Some(w) = self.workers.get_mut(&reg.worker) {
                    w.running.insert(lease.job_id);
                }
                out.adopted.push(lease);
            } else {
                out.revoked.push(lease);
            }
        }
        // Units the previous master gave this worker that it does not have
        // (lost on the way when the master died) need not wait for their grace.
        let lost: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.lease.as_ref().is_some_and(|l| l.restored && l.worker == reg.worker))
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.requeue(now, id, format!("worker {} re-registered without it", reg.worker), true);
        }
        self.schedule(now);
        out
    }

    /// Renews the leases a worker reports; returns those it must drop.
    pub fn heartbeat(
        &mut self,
        now: Now,
        worker: &WorkerId,
        instance: InstanceId,
        running: &[LeaseRef],
        hashrate: f64,
    ) -> Result<Vec<LeaseRef>, LeaseError> {
        let w = self.live_worker(worker, Some(instance))?;
        w.last_seen = now.mono;
        w.hashrate = hashrate;
        Ok(running.iter().filter(|l| !self.renew(now, worker, l)).cloned().collect())
    }

    pub fn progress(&mut self, now: Now, worker: &WorkerId, lease: &LeaseRef, data: Value) -> Result<(), LeaseError> {
        self.check_lease(worker, lease)?;
        self.renew(now, worker, lease);
        let event = JobEvent::Progress { worker: worker.to_string(), attempt: lease.attempt, data };
        self.effects.push(Effect::Notify { job: lease.job_id, event });
        Ok(())
    }

    /// Applies an attempt's outcome. `Ok(true)` means it had been accepted already.
    pub fn complete(
        &mut self,
        now: Now,
        worker: &WorkerId,
        lease: &LeaseRef,
        outcome: Outcome,
    ) -> Result<bool, LeaseError> {
        if let Err(e) = self.check_lease(worker, lease) {
            let repeat = self.recent.get(&lease.job_id).is_some_and(|f| {
                f.state != JobState::Cancelled && f.attempt == lease.attempt && f.token.as_deref() == Some(&lease.token)
            });
            return if repeat { Ok(true) } else { Err(e) };
        }
        let id = lease.job_id;
        match outcome {
            Outcome::Success(result) => self.finish(now, id, JobState::Succeeded, Some(result), None),
            Outcome::Failure { message, retryable: true } => self.requeue(now, id, message, true),
            Outcome::Failure { message, retryable: false } => {
                self.finish(now, id, JobState::Failed, None, Some(message))
            }
            Outcome::HandedBack(reason) => self.requeue(now, id, reason, false),
        }
        self.schedule(now);
        Ok(false)
    }

    /// A worker's own status report (retained status or its last will).
    pub fn worker_state(&mut self, now: Now, worker: &WorkerId, instance: InstanceId, state: WorkerState) {
        let Some(w) = self.workers.get_mut(worker) else { return };
        if w.instance != instance {
            return;
        }
        match state {
            // A worker that drained first has reported every unit it started;
            // what it still holds never reached it, so that is no attempt.
            WorkerState::Offline => {
                let drained = w.availability == Availability::Draining;
                self.drop_worker(now, worker, "worker went offline", !drained);
            }
            WorkerState::Draining => w.availability = Availability::Draining,
            WorkerState::Online => w.availability = Availability::Online,
            WorkerState::Starting | WorkerState::Initialising => {}
        }
        self.schedule(now);
    }

    /// Drops silent workers and requeues expired leases.
    pub fn tick(&mut self, now: Now) {
        if let Some(deadline) = now.mono.checked_sub(self.cfg.lease_ttl()) {
            for w in self.workers.silent_since(deadline) {
                self.drop_worker(now, &w, "worker missed its heartbeats", true);
            }
        }
        let expired: Vec<(JobId, WorkerId)> = self
            .jobs
            .iter()
            .filter_map(|(id, j)| j.lease.as_ref().filter(|l| l.expires <= now.mono).map(|l| (*id, l.worker.clone())))
            .collect();
        for (id, worker) in expired {
            self.requeue(now, id, format!("lease expired on worker {worker}"), true);
        }
        self.schedule(now);
    }

    fn live_worker(&mut self, worker: &WorkerId, instance: Option<InstanceId>) -> Result<&mut Worker, LeaseError> {
        match self.workers.get_mut(worker) {
            Some(w) if instance.is_none_or(|i| i == w.instance) => Ok(w),
            _ => Err(LeaseError::UnknownWorker(worker.clone())),
        }
    }

    pub fn check_lease(&mut self, worker: &WorkerId, lease: &LeaseRef) -> Result<(), LeaseError> {
        self.live_worker(worker, None)?;
        let job = self.jobs.get(&lease.job_id).ok_or(LeaseError::UnknownJob(lease.job_id))?;
        let stale = |reason: String| LeaseError::Stale { job: lease.job_id, attempt: lease.attempt, reason };
        let current = job.lease.as_ref().ok_or_else(|| stale("the job is waiting in the queue".into()))?;
        if current.attempt != lease.attempt {
            return Err(stale(format!("the current attempt is {}", current.attempt)));
        }
        if current.worker != *worker || current.token != lease.token {
            return Err(stale("the lease is held by someone else".into()));
        }
        Ok(())
    }

    fn renew(&mut self, now: Now, worker: &WorkerId, lease: &LeaseRef) -> bool {
        let ttl = self.cfg.lease_ttl();
        match self.jobs.get_mut(&lease.job_id).and_then(|j| j.lease.as_mut()) {
            Some(l) if l.worker == *worker && l.attempt == lease.attempt && l.token == lease.token => {
                l.expires = now.mono + ttl;
                true
            }
            _ => false,
        }
    }

    fn drop_worker(&mut self, now: Now, worker: &WorkerId, reason: &str, counts: bool) {
        if self.workers.remove(worker).is_none() {
            return;
        }
        let held: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.lease.as_ref().is_some_and(|l| l.worker == *worker))
            .map(|(id, _)| *id)
            .collect();
        for id in held {
            self.requeue(now, id, format!("{reason} ({worker})"), counts);
        }
    }

    fn release_lease(&mut self, id: JobId) -> Option<Lease> {
        let lease = self.jobs.get_mut(&id)?.lease.take()?;
        if let Some(w) = self.workers.get_mut(&lease.worker) {
            w.running.remove(&id);
        }
        Some(lease)
    }

    fn requeue(&mut self, now: Now, id: JobId, reason: String, counts: bool) {
        self.release_lease(id);
        let Some(job) = self.jobs.get_mut(&id) else { return };
        if !counts {
            job.attempts = job.attempts.saturating_sub(1);
        }
        if job.attempts >= self.cfg.max_attempts {
            let error = format!("gave up after {} attempts: {reason}", job.attempts);
            self.finish(now, id, JobState::Failed, None, Some(error));
            return;
        }
        job.enqueued_at = now.mono;
        let (kind, rank, attempts) = (job.kind, (job.priority, job.seq), job.attempts);
        self.queue.push(id, kind, rank);
        self.effects.push(Effect::Store(StoreOp::Requeued {
            id,
            attempts,
            reason: reason.clone(),
            at_ms: now.wall_ms,
        }));
        self.effects.push(Effect::Notify { job: id, event: JobEvent::Requeued { reason } });
    }

    fn finish(&mut self, now: Now, id: JobId, state: JobState, result: Option<Value>, error: Option<String>) {
        let lease = self.release_lease(id);
        self.queue.remove(&id);
        let Some(job) = self.jobs.remove(&id) else { return };
        let worker = lease.as_ref().map(|l| l.worker.to_string());
        let event = match (&state, &result, &error) {
            (JobState::Succeeded, Some(r), _) => JobEvent::Succeeded {
                result: r.clone(),
                worker: worker.clone().unwrap_or_default(),
                attempt: job.attempts,
            },
            (JobState::Cancelled, _, _) => JobEvent::Cancelled,
            _ => JobEvent::Failed { error: error.clone().unwrap_or_else(|| "failed".into()) },
        };
        self.effects.push(Effect::Store(StoreOp::Finished {
            id,
            state,
            attempts: job.attempts,
            worker,
            result,
            error,
            at_ms: now.wall_ms,
        }));
        self.effects.push(Effect::Notify { job: id, event });
        let (attempt, token) = lease.map(|l| (l.attempt, Some(l.token))).unwrap_or((job.attempts, None));
        self.recent.insert(id, Finished { state, attempt, token });
        self.recent_order.push_back(id);
        if self.recent_order.len() > RECENT_FINISHED
            && let Some(old) = self.recent_order.pop_front()
        {
            self.recent.remove(&old);
        }
    }

    /// Places queued jobs on free slots until none fits.
    fn schedule(&mut self, now: Now) {
        'placing: loop {
            for (_, kind, id) in self.queue.heads() {
                if let Some(worker) = self.workers.pick(kind) {
                    self.dispatch(now, id, worker);
                    continue 'placing;
                }
            }
            break;
        }
    }

    fn dispatch(&mut self, now: Now, id: JobId, worker: WorkerId) {
        self.queue.remove(&id);
        let Some(job) = self.jobs.get_mut(&id) else { return };
        job.attempts += 1;
        let token = uuid::Uuid::new_v4().simple().to_string();
        job.lease = Some(Lease {
            worker: worker.clone(),
            attempt: job.attempts,
            token: token.clone(),
            expires: now.mono + self.cfg.lease_ttl(),
            restored: false,
        });
        if let Some(w) = self.workers.get_mut(&worker) {
            w.running.insert(id);
        }
        let unit = WorkUnit {
            job_id: id,
            attempt: job.attempts,
            token: token.clone(),
            kind: job.kind,
            params: job.params.clone(),
        };
        let waited = now.mono.saturating_duration_since(job.enqueued_at);
        let attempt = job.attempts;
        self.effects.push(Effect::Store(StoreOp::Dispatched {
            id,
            attempt,
            worker: worker.to_string(),
            token,
            at_ms: now.wall_ms,
        }));
        self.effects.push(Effect::Notify { job: id, event: JobEvent::Running { worker: worker.to_string(), attempt } });
        self.effects.push(Effect::Dispatch { worker, unit, waited });
    }
}

#[cfg(test)]
mod tests;
