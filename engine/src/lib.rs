//! faena-engine: the master's job engine — accepted jobs, their leases and
//! attempts, and worker liveness. Pure: no I/O, time passed in; every
//! decision comes out as an [`Effect`] for the master's coordinator to
//! carry out in order (persist, publish, notify). Its own crate, below the
//! master that wires it to the store, the broker and the web side, as
//! rumqttc keeps its protocol state apart from its event loop.
//!
//! Semantics: at-least-once delivery, exactly-once outcome. Each dispatch is a
//! new attempt with a fresh [`FencingToken`]; only the current holder's
//! outcome is accepted, a repeat of an accepted outcome is a harmless
//! duplicate, and anything else is stale.
//!
//! Mining jobs are split by the [`mining`] sub-machine: the engine keeps such
//! a job's queue entry (it stays queued while part of its range is left) and
//! each unit's lease — a unit is a job of its own, stored, leased, retried —
//! forwards every unit event to the sub-machine and applies its verdict.
//!
//! Costs stay flat as the work grows: leases and silent workers expire from
//! time-ordered [`deadlines`], a worker's held leases are found through its
//! own running set, and queue positions are O(log n) (see [`crate::queue`]).
//!
//! - [`flow`]: dispatch, requeue, finish, placement.
//! - [`ops`]: a job's live view, re-prioritising, load, retiring workers.
//! - [`units`]: mining units — carving, their reports and verdicts.
//! - [`queue`] (over [`ranked`]'s order-statistic set) and [`scheduler`]:
//!   the waiting jobs and which worker gets the next one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use faena_proto::ai::ProviderSet;
use faena_proto::ids::{FencingToken, InstanceId, JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobSpec, JobState, Priority};
use faena_proto::mqtt::{Control, WorkerState};
use faena_proto::secret::Secret;
use serde_json::Value;

pub mod deadlines;
mod deps;
mod firing;
mod flow;
pub mod groups;
mod later;
pub mod mining;
mod ops;
pub mod queue;
pub mod ranked;
pub mod scheduler;
pub mod schedules;
mod submit;
mod types;
pub mod unique;
mod units;

use deadlines::Deadlines;
use deps::Deps;
pub use firing::ScheduleError;
use groups::Groups;
use mining::Mining;
pub use submit::{Accepted, SubmitError};
pub use types::*;
use unique::UniqueKeys;

use crate::queue::{Group, Lane, NO_GROUP, Queue};
use crate::scheduler::{Availability, Scheduler, Worker};

/// How many finished jobs are remembered to recognise duplicate results.
const RECENT_FINISHED: usize = 100_000;

#[derive(Debug, Clone)]
struct Lease {
    worker: WorkerId,
    attempt: u32,
    token: FencingToken,
    /// Read back from the store after a restart: its worker has not claimed it yet.
    restored: bool,
    /// Its unit has gone out (see [`Engine::sent`]): its term runs only from then.
    sent: bool,
}

#[derive(Debug, Clone)]
struct ActiveJob {
    spec: Arc<JobSpec>,
    lane: Lane,
    priority: Priority,
    /// How often its priority has changed under this master (at most
    /// [`MAX_PRIORITY_CHANGES`]).
    moves: u8,
    seq: u64,
    created_at_ms: u64,
    attempts: u32,
    enqueued_at: Instant,
    lease: Option<Lease>,
    /// The failed or cancelled job this one retries.
    retry_of: Option<JobId>,
    /// What it was submitted with beyond kind and parameters.
    opts: Option<Arc<faena_proto::options::JobOptions>>,
    /// Set while it is scheduled: when it queues (wall clock, ms).
    run_at_ms: Option<u64>,
    /// Its parents' results, by id, once they all ended (for its unit).
    parents: Option<Arc<serde_json::Map<String, Value>>>,
    group: Group,
    /// Its fair-share place, once it was queued (it goes back there).
    tag: Option<u64>,
}

impl ActiveJob {
    fn new(spec: Arc<JobSpec>, priority: Priority, seq: u64, now: Now) -> Self {
        let providers = match &*spec {
            JobSpec::AiQuery(p) => ProviderSet::of(&p.order()),
            _ => ProviderSet::default(),
        };
        Self {
            lane: Lane { kind: spec.kind(), providers },
            spec,
            priority,
            moves: 0,
            seq,
            created_at_ms: now.wall_ms,
            attempts: 0,
            enqueued_at: now.mono,
            lease: None,
            retry_of: None,
            opts: None,
            run_at_ms: None,
            parents: None,
            group: NO_GROUP,
            tag: None,
        }
    }

    fn kind(&self) -> JobKind {
        self.spec.kind()
    }
}

#[derive(Debug)]
struct Finished {
    state: JobState,
    attempt: u32,
    token: Option<FencingToken>,
}

#[derive(Debug)]
pub struct Engine {
    cfg: EngineConfig,
    queue: Queue,
    jobs: HashMap<JobId, ActiveJob>,
    mining: Mining,
    workers: Scheduler,
    /// When each lease runs out unless renewed.
    lease_deadlines: Deadlines<JobId>,
    /// When each worker is given up on unless it is heard from.
    silence: Deadlines<WorkerId>,
    /// Leases read back after a restart, by the worker that held them.
    restored: HashMap<WorkerId, HashSet<JobId>>,
    next_seq: u64,
    recent: HashMap<JobId, Finished>,
    recent_order: VecDeque<JobId>,
    effects: Vec<Effect>,
    /// When a registered worker last offered each lane that has jobs waiting.
    lane_seen: HashMap<Lane, Instant>,
    /// When the workers the autoscaler drains get work back by themselves.
    draining_until: Option<Instant>,
    /// Mining units retired with their template, whose late shares still
    /// count (as stale) for the grace period.
    retired: HashMap<JobId, RetiredUnit>,
    /// Worker ids quarantined for invalid shares, and until when: a new
    /// registration does not lift it sooner.
    quarantined: HashMap<WorkerId, Instant>,
    /// Set while the store cannot commit: nothing new is handed out.
    dispatch_paused: bool,
    /// Scheduled jobs, by when they queue.
    delayed: Deadlines<JobId>,
    /// Attempts that have a time limit, by when it runs out.
    timeouts: Deadlines<JobId>,
    /// Jobs waiting for others, and who waits on whom.
    deps: Deps,
    /// Waiting jobs one of whose parents ended: decided at the next step.
    to_settle: Vec<JobId>,
    unique: UniqueKeys,
    groups: Groups,
    schedules: schedules::Schedules,
    /// The engine's own random numbers (backoff jitter).
    rng: u64,
}

/// A unit retired with its template: a report its worker sends after that
/// (shares found before the cancel reached it) is verified and counted stale.
#[derive(Debug, Clone)]
struct RetiredUnit {
    lease: Lease,
    work: UnitWork,
    template: u32,
    until: Instant,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Self {
        Self {
            queue: Queue::default(),
            jobs: HashMap::new(),
            mining: Mining::default(),
            workers: Scheduler::default(),
            lease_deadlines: Deadlines::default(),
            silence: Deadlines::default(),
            restored: HashMap::new(),
            next_seq: 0,
            recent: HashMap::new(),
            recent_order: VecDeque::new(),
            effects: Vec::new(),
            lane_seen: HashMap::new(),
            draining_until: None,
            retired: HashMap::new(),
            quarantined: HashMap::new(),
            dispatch_paused: false,
            delayed: Deadlines::default(),
            timeouts: Deadlines::default(),
            deps: Deps::default(),
            to_settle: Vec::new(),
            unique: UniqueKeys::new(cfg.max_unique_keys),
            groups: Groups::new(cfg.max_groups),
            schedules: Default::default(),
            rng: 0x9E37_79B9_7F4A_7C15,
            cfg,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Stops handing out work while the store cannot record it, and starts
    /// again once it can. Leases do not run out meanwhile (a unit whose
    /// dispatch waits on the store has not reached its worker, which cannot
    /// renew it); on resuming, every lease gets a full term again.
    pub fn pause_dispatch(&mut self, now: Now, paused: bool) {
        if std::mem::replace(&mut self.dispatch_paused, paused) && !paused {
            let held: Vec<JobId> = self
                .jobs
                .iter()
                .filter(|(_, j)| j.lease.as_ref().is_some_and(|l| l.sent && !l.restored))
                .map(|(id, _)| *id)
                .collect();
            for id in held {
                self.lease_deadlines.set(id, now.mono + self.cfg.lease_ttl());
            }
            self.schedule(now);
        }
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
        self.lease_deadlines.len()
    }

    /// Cancels a job that has not ended (a unit: its whole mining job);
    /// false if it is not active.
    pub fn cancel(&mut self, now: Now, id: JobId) -> bool {
        let id = self.mining.job_of(&id).unwrap_or(id);
        let Some(job) = self.jobs.get(&id) else { return false };
        if let Some(lease) = &job.lease {
            let control = Control::Cancel { job_id: id, attempt: lease.attempt };
            self.effects.push(Effect::Control { worker: lease.worker.clone(), control });
        }
        self.finish(now, id, JobState::Cancelled, None, None);
        self.schedule(now);
        true
    }

    pub fn kind(&self, id: &JobId) -> Option<JobKind> {
        self.jobs.get(id).map(ActiveJob::kind)
    }

    /// A worker (re)registers. Refused while another instance under the same
    /// id is alive (heard from, not offline): registering must not knock a
    /// live worker off and cost its jobs an attempt. The same instance may
    /// register again (after a master restart, or a lost connection).
    pub fn register(&mut self, now: Now, reg: Registration) -> Result<RegisterOutcome, LeaseError> {
        self.may_claim(&reg.worker, reg.instance, reg.session.as_ref())?;
        let session = Secret::random();
        self.quarantined.retain(|_, until| *until > now.mono);
        let availability = match self.quarantined.contains_key(&reg.worker) {
            true => Availability::Quarantined,
            false => Availability::Online,
        };
        self.workers.insert(Worker {
            id: reg.worker.clone(),
            instance: reg.instance,
            caps: reg.caps,
            running: Default::default(),
            last_seen: now.mono,
            availability,
            hashrate: 0.0,
            invalid_shares: 0,
            session: session.clone(),
            config: Default::default(),
        });
        self.silence.set(reg.worker.clone(), now.mono + self.cfg.lease_ttl());
        let mut out = RegisterOutcome { session, ..RegisterOutcome::default() };
        for lease in reg.running {
            if self.renew(now, &reg.worker, &lease) {
                let kind = self.jobs.get_mut(&lease.job_id).and_then(|j| {
                    j.lease.as_mut()?.restored = false;
                    Some(j.kind())
                });
                if let (Some(w), Some(kind)) = (self.workers.get_mut(&reg.worker), kind) {
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
            .restored
            .remove(&reg.worker)
            .unwrap_or_default()
            .into_iter()
            .filter(|id| {
                self.jobs.get(id).and_then(|j| j.lease.as_ref()).is_some_and(|l| l.restored && l.worker == reg.worker)
            })
            .collect();
        for id in lost {
            self.requeue(now, id, format!("worker {} re-registered without it", reg.worker), true);
        }
        self.schedule(now);
        Ok(out)
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
        self.silence.set(worker.clone(), now.mono + self.cfg.lease_ttl());
        Ok(running.iter().filter(|l| !self.renew(now, worker, l)).cloned().collect())
    }

    /// Progress of a job that is not a mining unit (a mining unit's comes
    /// verified, through [`Engine::unit_progress`]; anything else from one is
    /// ignored).
    pub fn progress(&mut self, now: Now, worker: &WorkerId, lease: &LeaseRef, data: Value) -> Result<(), LeaseError> {
        self.check_lease(worker, lease)?;
        self.renew(now, worker, lease);
        if self.mining.job_of(&lease.job_id).is_some() {
            return Ok(());
        }
        let event = faena_proto::api::JobEvent::Progress { worker: worker.to_string(), attempt: lease.attempt, data };
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
                f.state != JobState::Cancelled && f.attempt == lease.attempt && f.token.as_ref() == Some(&lease.token)
            });
            return if repeat { Ok(true) } else { Err(e) };
        }
        let id = lease.job_id;
        if self.mining.job_of(&id).is_some() {
            self.end_unit(now, worker, id, outcome);
        } else {
            match outcome {
                Outcome::Success(result) => self.finish(now, id, JobState::Succeeded, Some(result), None),
                Outcome::Mined(_) => {
                    let error = "the worker sent a mining unit's output for a job that is not one".to_owned();
                    self.finish(now, id, JobState::Failed, None, Some(error));
                }
                Outcome::Failure { message, retryable: true } => self.requeue(now, id, message, true),
                Outcome::Failure { message, retryable: false } => {
                    self.finish(now, id, JobState::Failed, None, Some(message))
                }
                Outcome::HandedBack(reason) => self.requeue(now, id, reason, false),
            }
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
            // A quarantined worker stays so for its quarantine time.
            WorkerState::Online if w.availability == Availability::Quarantined => {}
            WorkerState::Online => w.availability = Availability::Online,
            WorkerState::Initialising => {}
        }
        self.schedule(now);
    }

    /// Drops silent workers and requeues expired leases: only what expired
    /// is looked at.
    pub fn tick(&mut self, now: Now) {
        self.unique.expire(now.mono);
        self.due(now);
        for w in self.silence.expired(now.mono) {
            self.drop_worker(now, &w, "worker missed its heartbeats", true);
        }
        let expired = if self.dispatch_paused { Vec::new() } else { self.lease_deadlines.expired(now.mono) };
        for id in expired {
            let Some(worker) = self.jobs.get(&id).and_then(|j| j.lease.as_ref()).map(|l| l.worker.clone()) else {
                continue;
            };
            self.requeue(now, id, format!("lease expired on worker {worker}"), true);
        }
        if self.draining_until.is_some_and(|until| now.mono >= until) {
            tracing::info!("the autoscaler's drain ran out: those workers take work again");
            self.draining_until = None;
            self.workers.set_retiring([]);
        }
        self.fail_unrunnable(now);
        self.schedule(now);
    }

    /// Fails queued jobs that no registered worker has offered to run for
    /// [`EngineConfig::no_worker_timeout`] (counted from when the job was
    /// queued or a worker last offered its lane, whichever is later):
    /// nobody can run them, so waiting longer only hides the problem. A lane
    /// offered within the timeout costs nothing here.
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
            if seen.is_some_and(|s| s > deadline) {
                continue;
            }
            let stale: Vec<JobId> = self
                .queue
                .in_lane(&lane)
                .into_iter()
                .filter(|id| {
                    self.jobs.get(id).is_some_and(|j| seen.map_or(j.enqueued_at, |s| s.max(j.enqueued_at)) <= deadline)
                })
                .collect();
            for id in stale {
                let error = faena_proto::options::ErrorCode::NoWorker.error(format!(
                    "no worker that runs {lane} registered within {}; start one that has it (see docs/workers.md) and submit again",
                    humantime::format_duration(self.cfg.no_worker_timeout)
                ));
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

    /// Whether a caller may act as `worker` — register it, or take its
    /// broker login: yes when no live instance holds the id, or when the
    /// caller is that instance and carries its session.
    pub fn may_claim(
        &self,
        worker: &WorkerId,
        instance: InstanceId,
        session: Option<&Secret>,
    ) -> Result<(), LeaseError> {
        match self.workers.get(worker) {
            Some(old)
                if old.instance != instance || !session.is_some_and(|s| old.session.constant_time_eq(s.expose())) =>
            {
                Err(LeaseError::InUse(worker.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Whether a call comes from the registration `worker` holds now.
    pub fn check_session(&self, worker: &WorkerId, session: Option<&str>) -> Result<(), LeaseError> {
        match self.workers.get(worker) {
            None => Err(LeaseError::UnknownWorker(worker.clone())),
            Some(w) if session.is_some_and(|s| w.session.constant_time_eq(s)) => Ok(()),
            Some(_) => Err(LeaseError::Session(worker.clone())),
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
        match self.jobs.get_mut(&lease.job_id).and_then(|j| j.lease.as_mut()) {
            Some(l) if l.worker == *worker && l.attempt == lease.attempt && l.token == lease.token => {
                // Its worker has it, whether or not the notice came yet.
                l.sent = true;
                self.lease_deadlines.set(lease.job_id, now.mono + self.cfg.lease_ttl());
                true
            }
            _ => false,
        }
    }

    /// Gives `id` the lease `lease`: until `expires` when given (a restored
    /// one, waiting for its worker); a new one has no term until its unit
    /// is out ([`Engine::sent`]).
    fn hold(&mut self, id: JobId, lease: Lease, expires: Option<Instant>) {
        if lease.restored {
            self.restored.entry(lease.worker.clone()).or_default().insert(id);
        }
        if let Some(job) = self.jobs.get_mut(&id) {
            if let Some(at) = expires {
                self.lease_deadlines.set(id, at);
            }
            job.lease = Some(lease);
        }
    }

    fn drop_worker(&mut self, now: Now, worker: &WorkerId, reason: &str, counts: bool) {
        let Some(w) = self.workers.remove(worker) else { return };
        self.silence.remove(worker);
        for id in w.running.keys() {
            self.requeue(now, *id, format!("{reason} ({worker})"), counts);
        }
    }
}

#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod later_tests;
#[cfg(test)]
mod mining_tests;
#[cfg(test)]
mod schedule_tests;
#[cfg(test)]
mod tests;
