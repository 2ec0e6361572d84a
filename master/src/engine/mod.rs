//! The master's domain state machine: accepted jobs, their leases and
//! attempts, and worker liveness. Pure: no I/O, time passed in; every
//! decision comes out as an [`Effect`] for the coordinator to carry out in
//! order (persist, publish, notify).
//!
//! Semantics: at-least-once delivery, exactly-once outcome. Each dispatch is a
//! new attempt with a fresh fencing token; only the current holder's outcome
//! is accepted, a repeat of an accepted outcome is a harmless duplicate, and
//! anything else is stale.
//!
//! A mining job is split (see [`split`]): it stays in the queue while part of
//! its nonce range is left to hand out, and each unit carved from it is a job
//! of its own — stored, leased, retried — whose `parent` is the mining job. A
//! unit that is lost gives its range back to be split again; a unit that
//! fails for good fails the job; the job succeeds once its range is done or
//! it has `max_shares`, and cancelling it cancels its units.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Instant;

use faena_proto::api::JobEvent;
use faena_proto::ids::{InstanceId, JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobState, Priority};
use faena_proto::mqtt::{Control, WorkUnit, WorkerState};
use serde_json::Value;

pub mod split;
mod types;

use faena_proto::ai::Provider;
use faena_proto::mine::{UnitOutput, UnitProgress};
use split::Split;
pub use types::*;

use crate::queue::{Lane, Queue};
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
    /// A unit's mining job.
    parent: Option<JobId>,
    /// A mining job's split; it is never leased itself.
    split: Option<Box<Split>>,
    lane: Lane,
}

impl ActiveJob {
    /// A unit (with a `parent`) or a job; a mining job gets its split.
    fn new(kind: JobKind, params: Value, priority: Priority, seq: u64, now: Now, parent: Option<JobId>) -> Self {
        let splits = kind == JobKind::RandomxMine && parent.is_none();
        let split = if splits { Split::new(&params).map(Box::new) } else { None };
        let provider = match kind {
            JobKind::AiQuery => params.get("provider").and_then(Value::as_str).and_then(Provider::parse),
            _ => None,
        };
        Self {
            lane: Lane { kind, provider },
            kind,
            params,
            priority,
            seq,
            created_at_ms: now.wall_ms,
            attempts: 0,
            enqueued_at: now.mono,
            lease: None,
            parent,
            split,
        }
    }
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
    /// When a registered worker last offered each lane that has jobs waiting.
    lane_seen: HashMap<Lane, Instant>,
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
            lane_seen: HashMap::new(),
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

    /// Units out on workers.
    pub fn running(&self) -> usize {
        self.jobs.values().filter(|j| j.lease.is_some()).count()
    }

    /// Reloads unfinished jobs after a restart. Running ones keep their lease
    /// for [`EngineConfig::recovery_grace`] so their worker can re-register
    /// and claim them instead of the job running twice. A mining job gets
    /// its split back: finished units count as done, running ones stay out,
    /// the rest of its range is handed out again.
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
            let mut job = ActiveJob::new(j.kind, j.params, j.priority, j.seq, now, j.parent);
            job.created_at_ms = j.created_at_ms;
            job.attempts = j.attempts;
            if let Some(parent) = j.parent {
                let range = Split::new(&job.params).map(|s| s.range());
                let split = self.jobs.get_mut(&parent).and_then(|p| p.split.as_mut());
                match (split, range, j.done, lease) {
                    (Some(split), Some((start, count)), Some((worker, output)), _) => {
                        if let Ok(out) = serde_json::from_value::<UnitOutput>(output) {
                            split.restore_done(start, count, &worker, &out, now.mono);
                        }
                    }
                    (Some(split), Some((start, count)), None, Some(lease)) => {
                        split.restore_out(j.id, start, count, lease.worker.clone(), now.mono);
                        job.lease = Some(lease);
                        self.jobs.insert(j.id, job);
                    }
                    (_, _, None, _) => self.effects.push(Effect::Store(StoreOp::Finished {
                        id: j.id,
                        state: JobState::Failed,
                        attempts: j.attempts,
                        worker: None,
                        result: None,
                        error: Some("not running when the master restarted; its range was handed out again".into()),
                        at_ms: now.wall_ms,
                    })),
                    _ => {}
                }
                continue;
            }
            if job.split.is_none() {
                if lease.is_none() {
                    self.queue.push(j.id, job.lane, (j.priority, j.seq));
                }
                job.lease = lease;
            }
            self.jobs.insert(j.id, job);
        }
        let splits: Vec<JobId> = self.jobs.iter().filter(|(_, j)| j.split.is_some()).map(|(id, _)| *id).collect();
        for id in splits {
            self.after_unit(now, id);
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
                parent: None,
            }));
            let job = ActiveJob::new(kind, params, j.priority, seq, now, None);
            let position = match j.answer {
                None => self.queue.push(j.id, job.lane, (j.priority, seq)),
                Some(_) => 0,
            };
            self.jobs.insert(j.id, job);
            if let Some(answer) = j.answer {
                self.finish(now, j.id, JobState::Succeeded, Some(answer), None);
            }
            accepted.push((j.id, position));
        }
        self.schedule(now);
        Ok(accepted)
    }

    /// Cancels a queued or running job (a unit: its whole mining job);
    /// false if it is not active.
    pub fn cancel(&mut self, now: Now, id: JobId) -> bool {
        let Some(mut job) = self.jobs.get(&id) else { return false };
        let mut id = id;
        if let Some(parent) = job.parent
            && let Some(p) = self.jobs.get(&parent)
        {
            (id, job) = (parent, p);
        }
        if let Some(lease) = &job.lease {
            let control = Control::Cancel { job_id: id, attempt: lease.attempt };
            self.effects.push(Effect::Control { worker: lease.worker.clone(), control });
        }
        self.finish(now, id, JobState::Cancelled, None, None);
        self.schedule(now);
        true
    }

    pub fn kind(&self, id: &JobId) -> Option<JobKind> {
        self.jobs.get(id).map(|j| j.kind)
    }

    pub fn view(&self, id: &JobId) -> Option<ActiveView> {
        let job = self.jobs.get(id)?;
        let running = job.lease.is_some() || job.split.as_ref().is_some_and(|s| s.is_started());
        let waiting = (!running && !self.workers.anyone_offers(&job.lane))
            .then(|| format!("no registered worker runs {}", job.lane));
        let worker = match &job.split {
            Some(s) => Some(s.worker_list()).filter(|w| !w.is_empty()),
            None => job.lease.as_ref().map(|l| l.worker.to_string()),
        };
        Some(ActiveView {
            kind: job.kind,
            state: if running { JobState::Running } else { JobState::Queued },
            priority: job.priority,
            position: if running { None } else { self.queue.position(id) },
            worker,
            attempts: job.attempts,
            created_at_ms: job.created_at_ms,
            progress: job.split.as_ref().and_then(|s| serde_json::to_value(s.snapshot()).ok()),
            parent: job.parent,
            waiting,
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
            invalid_shares: 0,
        });
        let mut out = RegisterOutcome::default();
        for lease in reg.running {
            if self.renew(now, &reg.worker, &lease) {
                if let Some(l) = self.jobs.get_mut(&lease.job_id).and_then(|j| j.lease.as_mut()) {
                    l.restored = false;
                }
                let kind = self.jobs.get(&lease.job_id).map_or(JobKind::Noop, |j| j.kind);
                if let Some(w) = self.workers.get_mut(&reg.worker) {
                    w.running.insert(lease.job_id, kind);
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
        if let Some(parent) = self.jobs.get(&lease.job_id).and_then(|j| j.parent) {
            // Shares here were verified by the caller (see `unit_work`).
            if let Ok(p) = serde_json::from_value::<UnitProgress>(data)
                && let Some(split) = self.split_mut(parent)
            {
                split.unit_progress(&lease.job_id, p.hashes, p.hashrate);
                split.add_shares(&lease.job_id, worker.as_str(), &p.shares);
                let data = serde_json::to_value(split.progress()).unwrap_or(Value::Null);
                let event = JobEvent::Progress { worker: worker.to_string(), attempt: lease.attempt, data };
                self.effects.push(Effect::Notify { job: parent, event });
                if self.split_mut(parent).is_some_and(|s| s.enough_shares()) {
                    self.after_unit(now, parent);
                    self.schedule(now);
                }
            }
            return Ok(());
        }
        let event = JobEvent::Progress { worker: worker.to_string(), attempt: lease.attempt, data };
        self.effects.push(Effect::Notify { job: lease.job_id, event });
        Ok(())
    }

    /// What a mining unit covers and the shares of it already accepted,
    /// for checking a worker's shares before they are reported; None when
    /// the lease is not a mining unit's.
    pub fn unit_work(
        &mut self,
        worker: &WorkerId,
        lease: &LeaseRef,
    ) -> Result<Option<(faena_proto::mine::MineParams, HashSet<u32>)>, LeaseError> {
        self.check_lease(worker, lease)?;
        let Some(job) = self.jobs.get(&lease.job_id) else { return Ok(None) };
        let (Some(parent), Ok(params)) = (job.parent, serde_json::from_value(job.params.clone())) else {
            return Ok(None);
        };
        let known = self.jobs.get(&parent).and_then(|p| p.split.as_ref()).map(|s| s.known_nonces()).unwrap_or_default();
        Ok(Some((params, known)))
    }

    /// Counts invalid shares from a worker against its mining job and the
    /// worker; over the limit the worker is quarantined (gets no more work
    /// until it registers again). True when this call quarantined it.
    pub fn invalid_shares(&mut self, worker: &WorkerId, unit: &JobId, n: u32) -> bool {
        if n == 0 {
            return false;
        }
        if let Some(parent) = self.jobs.get(unit).and_then(|j| j.parent)
            && let Some(split) = self.split_mut(parent)
        {
            split.add_invalid(worker.as_str(), n);
        }
        let limit = self.cfg.invalid_share_limit;
        let Some(w) = self.workers.get_mut(worker) else { return false };
        w.invalid_shares = w.invalid_shares.saturating_add(n);
        if w.invalid_shares > limit && w.availability != Availability::Quarantined {
            w.availability = Availability::Quarantined;
            return true;
        }
        false
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
            // A quarantined worker stays so until it registers again.
            WorkerState::Online if w.availability == Availability::Quarantined => {}
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
        self.fail_unrunnable(now);
        self.schedule(now);
    }

    /// Fails queued jobs that no registered worker has offered to run for
    /// [`EngineConfig::no_worker_timeout`] (counted from when the job was
    /// queued or a worker last offered its lane, whichever is later):
    /// nobody can run them, so waiting longer only hides the problem.
    fn fail_unrunnable(&mut self, now: Now) {
        let Some(deadline) = now.mono.checked_sub(self.cfg.no_worker_timeout) else { return };
        let lanes = self.queue.lanes();
        self.lane_seen.retain(|lane, _| lanes.contains(lane));
        for lane in lanes {
            if self.workers.anyone_offers(&lane) {
                self.lane_seen.insert(lane, now.mono);
                continue;
            }
            let seen = self.lane_seen.get(&lane).copied();
            let stale: Vec<JobId> = self
                .queue
                .in_lane(&lane)
                .into_iter()
                .filter(|id| {
                    self.jobs.get(id).is_some_and(|j| seen.map_or(j.enqueued_at, |s| s.max(j.enqueued_at)) <= deadline)
                })
                .collect();
            for id in stale {
                let error = format!(
                    "no worker that runs {lane} registered within {} s; start one that has it (see README) and submit again",
                    self.cfg.no_worker_timeout.as_secs()
                );
                self.finish(now, id, JobState::Failed, None, Some(error));
            }
        }
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
        if let Some(parent) = job.parent {
            let attempts = job.attempts;
            let note = format!("{reason}; its range goes back to job {parent}");
            self.retire(now, id, JobState::Failed, None, Some(note));
            if let Some(split) = self.split_mut(parent) {
                split.give_back(&id, attempts);
            }
            self.effects.push(Effect::RangeReturned { job: parent });
            self.effects.push(Effect::Notify {
                job: parent,
                event: JobEvent::Requeued { reason: format!("a unit was lost ({reason}); its range is split again") },
            });
            self.after_unit(now, parent);
            return;
        }
        job.enqueued_at = now.mono;
        let (lane, rank, attempts) = (job.lane, (job.priority, job.seq), job.attempts);
        self.queue.push(id, lane, rank);
        self.effects.push(Effect::Store(StoreOp::Requeued {
            id,
            attempts,
            reason: reason.clone(),
            at_ms: now.wall_ms,
        }));
        self.effects.push(Effect::Notify { job: id, event: JobEvent::Requeued { reason } });
    }

    fn finish(&mut self, now: Now, id: JobId, state: JobState, result: Option<Value>, error: Option<String>) {
        // A unit's stored result keeps every share it found, including those
        // accepted from its progress reports, so a restart loses none.
        let result = match (state, self.jobs.get(&id).and_then(|j| j.parent), result) {
            (JobState::Succeeded, Some(parent), Some(r)) => {
                let earlier = self.jobs.get(&parent).and_then(|p| p.split.as_ref()).map(|s| s.unit_shares(&id));
                Some(with_shares(r, earlier.unwrap_or_default()))
            }
            (_, _, r) => r,
        };
        let Some((job, lease)) = self.retire(now, id, state, result.clone(), error.clone()) else { return };
        if let Some(split) = job.split {
            // The job is over: so are its units.
            for (unit, u) in &split.units {
                if let Some(l) = self.jobs.get(unit).and_then(|j| j.lease.as_ref()) {
                    let control = Control::Cancel { job_id: *unit, attempt: l.attempt };
                    self.effects.push(Effect::Control { worker: u.worker.clone(), control });
                }
                self.retire(now, *unit, JobState::Cancelled, None, Some(format!("job {id} ended")));
            }
        }
        let Some(parent) = job.parent else { return };
        let worker = lease.map(|l| l.worker.to_string()).unwrap_or_default();
        match state {
            JobState::Succeeded => {
                let out = result.and_then(|r| serde_json::from_value::<UnitOutput>(r).ok());
                if let Some(split) = self.split_mut(parent) {
                    match out {
                        Some(out) => {
                            split.add_shares(&id, &worker, &out.shares);
                            split.unit_done(&id, out.hashes, out.hashrate);
                        }
                        None => split.give_back(&id, job.attempts),
                    }
                }
                self.after_unit(now, parent);
            }
            JobState::Failed => {
                let error = format!("a unit on {worker} failed: {}", error.unwrap_or_default());
                self.finish(now, parent, JobState::Failed, None, Some(error));
            }
            JobState::Cancelled | JobState::Queued | JobState::Running => {}
        }
    }

    fn split_mut(&mut self, id: JobId) -> Option<&mut Split> {
        self.jobs.get_mut(&id)?.split.as_deref_mut()
    }

    /// After a unit of `id` ended or came back: finishes the job if it has
    /// what it needs, else makes sure what is left is queued, and tells watchers.
    fn after_unit(&mut self, now: Now, id: JobId) {
        let Some(job) = self.jobs.get_mut(&id) else { return };
        let (lane, rank) = (job.lane, (job.priority, job.seq));
        let Some(split) = job.split.as_deref_mut() else { return };
        if split.enough_shares() || split.is_complete() {
            let result = serde_json::to_value(split.output(now.mono)).ok();
            self.finish(now, id, JobState::Succeeded, result, None);
            return;
        }
        let progress = serde_json::to_value(split.progress()).unwrap_or(Value::Null);
        if !split.pending.is_empty() && self.queue.position(&id).is_none() {
            self.queue.push(id, lane, rank);
            job.enqueued_at = now.mono;
        }
        if job.split.as_ref().is_some_and(|s| s.is_started()) {
            self.effects.push(Effect::Notify {
                job: id,
                event: JobEvent::Progress { worker: String::new(), attempt: 0, data: progress },
            });
        }
    }

    /// Ends a job's life here: records the final state and remembers it for
    /// recognising duplicate results. No knock-on effects (see `finish`).
    fn retire(
        &mut self,
        now: Now,
        id: JobId,
        state: JobState,
        result: Option<Value>,
        error: Option<String>,
    ) -> Option<(ActiveJob, Option<Lease>)> {
        let lease = self.release_lease(id);
        self.queue.remove(&id);
        let job = self.jobs.remove(&id)?;
        let worker = match &job.split {
            Some(s) => Some(s.worker_list()).filter(|w| !w.is_empty()),
            None => lease.as_ref().map(|l| l.worker.to_string()),
        };
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
        let (attempt, token) =
            lease.as_ref().map(|l| (l.attempt, Some(l.token.clone()))).unwrap_or((job.attempts, None));
        self.recent.insert(id, Finished { state, attempt, token });
        self.recent_order.push_back(id);
        if self.recent_order.len() > RECENT_FINISHED
            && let Some(old) = self.recent_order.pop_front()
        {
            self.recent.remove(&old);
        }
        Some((job, lease))
    }

    /// Places queued jobs on free slots until none fits. A mining job takes
    /// one unit per worker at a time (each unit uses all the worker's threads).
    fn schedule(&mut self, now: Now) {
        'placing: loop {
            for (_, lane, id) in self.queue.heads() {
                let holders: Option<HashSet<WorkerId>> = self
                    .jobs
                    .get(&id)
                    .and_then(|j| j.split.as_ref())
                    .map(|s| s.units.values().map(|u| u.worker.clone()).collect());
                let Some(worker) = self.workers.pick(lane, |w| holders.as_ref().is_some_and(|h| h.contains(w))) else {
                    continue;
                };
                if holders.is_some() {
                    self.dispatch_unit(now, id, worker);
                } else {
                    self.dispatch(now, id, worker);
                }
                continue 'placing;
            }
            break;
        }
    }

    /// Carves a unit of mining job `id` sized for `worker` and sends it.
    fn dispatch_unit(&mut self, now: Now, id: JobId, worker: WorkerId) {
        let speed = self.workers.get(&worker).map(|w| self.workers.speed(w)).unwrap_or(1.0);
        let total = self.workers.total_speed(Lane::of(JobKind::RandomxMine));
        let seq = self.next_seq;
        let Some(job) = self.jobs.get_mut(&id) else { return };
        let (kind, priority) = (job.kind, job.priority);
        let Some(split) = job.split.as_deref_mut() else { return };
        let first = !split.is_started();
        let Some((params, attempts, start, count)) = split.carve(speed, total, now.mono) else {
            self.queue.remove(&id);
            return;
        };
        let unit_id = JobId::new();
        split.add_unit(unit_id, start, count, worker.clone());
        if split.pending.is_empty() {
            self.queue.remove(&id);
        }
        self.next_seq += 1;
        let params = serde_json::to_value(params).unwrap_or(Value::Null);
        if first {
            self.effects.push(Effect::Store(StoreOp::Started { id, worker: worker.to_string(), at_ms: now.wall_ms }));
            self.effects
                .push(Effect::Notify { job: id, event: JobEvent::Running { worker: worker.to_string(), attempt: 1 } });
        }
        self.effects.push(Effect::Store(StoreOp::Insert {
            id: unit_id,
            kind,
            params: params.clone(),
            priority,
            seq,
            at_ms: now.wall_ms,
            parent: Some(id),
        }));
        let mut unit = ActiveJob::new(kind, params, priority, seq, now, Some(id));
        unit.attempts = attempts;
        self.jobs.insert(unit_id, unit);
        self.dispatch(now, unit_id, worker);
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
            w.running.insert(id, job.kind);
        }
        let unit = WorkUnit {
            job_id: id,
            attempt: job.attempts,
            token: token.clone(),
            kind: job.kind,
            params: job.params.clone(),
            secrets: Vec::new(),
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

/// `output` (a unit's) with `earlier` shares added where their nonce is new.
fn with_shares(output: Value, earlier: Vec<faena_proto::mine::Share>) -> Value {
    let Ok(mut out) = serde_json::from_value::<UnitOutput>(output.clone()) else { return output };
    let known: HashSet<u32> = out.shares.iter().map(|s| s.nonce).collect();
    out.shares.extend(earlier.into_iter().filter(|s| !known.contains(&s.nonce)));
    out.shares.sort_by_key(|s| s.nonce);
    serde_json::to_value(out).unwrap_or(output)
}

#[cfg(test)]
mod mining_tests;
#[cfg(test)]
mod tests;
