//! How a job moves: placed on a worker (a new attempt with a fresh token),
//! put back in the queue, or ended — and what each step records, publishes
//! and tells watchers.

use std::sync::Arc;
use std::time::Duration;

use faena_proto::api::JobEvent;
use faena_proto::ids::{FencingToken, JobId, WorkerId};
use faena_proto::jobs::{JobSpec, JobState};
use faena_proto::mqtt::{Control, WorkUnit};
use faena_proto::options::ErrorCode;
use serde_json::Value;

use crate::queue::Lane;

use super::{ActiveJob, Effect, Engine, Finished, Lease, Now, RECENT_FINISHED, StoreOp};

impl Engine {
    /// The master did not run for `missed` (stopped, starved of CPU or
    /// suspended) while its workers did, and what they sent meanwhile is
    /// still on its way in. Silences and leases count the master's running
    /// time: their deadlines move on by `missed`. A worker that is really
    /// gone is still lost, one term after the master woke.
    pub fn resumed(&mut self, missed: Duration) {
        self.silence.postpone(missed);
        self.lease_deadlines.postpone(missed);
    }

    /// Places queued jobs on free slots until none fits: each time, the
    /// first head in dispatch order that a worker can take. A mining job
    /// takes one unit per worker at a time (each unit uses all the worker's
    /// threads).
    ///
    /// There is a head per lane and group, so a search starts only while
    /// some worker has a free slot, reads the heads only as far as the
    /// first that fits (not a copy of them all), and asks for a worker once
    /// per lane: a lane no worker has room for has none for its other heads
    /// either (a mining job's exclusions only take workers away).
    pub(super) fn schedule(&mut self, now: Now) {
        self.settle(now);
        if self.dispatch_paused {
            return;
        }
        let mut full: Vec<Lane> = Vec::new();
        while self.workers.has_room() {
            full.clear();
            let found = self.queue.heads().find_map(|(lane, id)| {
                if full.contains(&lane) {
                    return None;
                }
                let split = self.mining.contains(&id);
                let holders = if split { self.mining.holders(&id) } else { Default::default() };
                match self.workers.pick(lane, |w| holders.contains(w)) {
                    Some(worker) => Some((id, worker, split)),
                    None => {
                        if !split {
                            full.push(lane);
                        }
                        None
                    }
                }
            });
            let Some((id, worker, split)) = found else { break };
            if split {
                self.dispatch_unit(now, id, worker);
            } else {
                self.dispatch(now, id, worker);
            }
        }
    }

    /// Sends `id` to `worker` as a new attempt.
    pub(super) fn dispatch(&mut self, now: Now, id: JobId, worker: WorkerId) {
        self.queue.dispatched(&id);
        let Some(job) = self.jobs.get_mut(&id) else { return };
        let group = job.group;
        job.attempts += 1;
        let token = FencingToken::new();
        let attempt = job.attempts;
        let kind = job.kind();
        let unit = WorkUnit {
            parents: job.parents.as_deref().cloned(),
            ..WorkUnit::new(id, attempt, token.clone(), kind, job.spec.params_json())
        };
        let waited = now.mono.saturating_duration_since(job.enqueued_at);
        let timeout = job.opts.as_ref().and_then(|o| o.timeout_ms);
        let lease = Lease { worker: worker.clone(), attempt, token: token.clone(), restored: false, sent: false };
        self.hold(id, lease, None);
        if let Some(ms) = timeout {
            self.timeouts.set(id, now.mono + std::time::Duration::from_millis(ms));
        }
        if group != crate::queue::NO_GROUP {
            self.groups.started(group, now.mono);
            self.refresh_group(now, group);
        }
        if let Some(w) = self.workers.get_mut(&worker) {
            w.running.insert(id, kind);
        }
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

    /// The units of these attempts went out to their workers. Their
    /// leases' terms start now, not at dispatch: a unit waits for the
    /// commit of its dispatch before it is published, and a slow commit
    /// must not run out a lease that its worker cannot have renewed.
    pub fn sent(&mut self, now: Now, attempts: &[(JobId, u32)]) {
        for (id, attempt) in attempts {
            let Some(lease) = self.jobs.get_mut(id).and_then(|j| j.lease.as_mut()) else { continue };
            if lease.attempt == *attempt && !lease.sent {
                lease.sent = true;
                self.lease_deadlines.set(*id, now.mono + self.cfg.lease_ttl());
            }
        }
    }

    /// The units of these attempts did not go out (this master did not
    /// hold the lead, or their dispatch could not be stored): their jobs go
    /// back to the queue, and the attempt does not count.
    pub fn not_sent(&mut self, now: Now, attempts: &[(JobId, u32)]) {
        for (id, attempt) in attempts {
            let current = self.jobs.get(id).and_then(|j| j.lease.as_ref()).is_some_and(|l| l.attempt == *attempt);
            if current {
                self.requeue(now, *id, "its unit was not sent".into(), false);
            }
        }
        self.schedule(now);
    }

    pub(super) fn release_lease(&mut self, now: Now, id: JobId) -> Option<Lease> {
        let job = self.jobs.get_mut(&id)?;
        let lease = job.lease.take()?;
        let group = job.group;
        self.lease_deadlines.remove(&id);
        self.timeouts.remove(&id);
        if group != crate::queue::NO_GROUP {
            self.groups.stopped(group);
            self.refresh_group(now, group);
        }
        if let Some(w) = self.workers.get_mut(&lease.worker) {
            w.running.remove(&id);
        }
        Some(lease)
    }

    /// Puts an attempt back: the job waits again (a unit's range goes back
    /// to its mining job; with a retry policy, scheduled until its backoff
    /// ends), or fails once its attempts are used up.
    pub(super) fn requeue(&mut self, now: Now, id: JobId, reason: String, counts: bool) {
        let worker = self.release_lease(now, id).map(|l| l.worker);
        let Some(job) = self.jobs.get_mut(&id) else { return };
        if !counts {
            job.attempts = job.attempts.saturating_sub(1);
        }
        let attempts = job.attempts;
        let retry = job.opts.as_ref().and_then(|o| o.retry);
        if attempts >= retry.map_or(self.cfg.max_attempts, |r| r.max_attempts) {
            let error = match ErrorCode::of(&reason) {
                Some(code) => code.error(format!("gave up after {attempts} attempts: {reason}")),
                None => format!("gave up after {attempts} attempts: {reason}"),
            };
            match (self.mining.job_of(&id), worker) {
                (Some(_), Some(worker)) => self.unit_failed(now, id, &worker, error),
                _ => self.finish(now, id, JobState::Failed, None, Some(error)),
            }
            return;
        }
        if self.mining.job_of(&id).is_some() {
            self.unit_lost(now, id, attempts, &reason);
            return;
        }
        let wait = match retry {
            Some(r) if counts => r.backoff.delay_ms(attempts, self.random()),
            _ => 0,
        };
        let run_at_ms = (wait > 0).then(|| now.wall_ms + wait);
        match run_at_ms {
            Some(at) => self.delay(now, id, at),
            None => {
                self.enqueue(now, id);
            }
        }
        self.effects.push(Effect::Store(StoreOp::Requeued {
            id,
            attempts,
            reason: reason.clone(),
            at_ms: now.wall_ms,
            run_at_ms,
        }));
        self.effects.push(Effect::Notify { job: id, event: JobEvent::Requeued { reason, continues: false } });
        if let Some(at) = run_at_ms {
            self.effects.push(Effect::Notify {
                job: id,
                event: JobEvent::Scheduled { run_at: faena_store_contract::rfc3339(at) },
            });
        }
    }

    /// Ends a job for good (a mining job: and every unit it still has out).
    pub(super) fn finish(
        &mut self,
        now: Now,
        id: JobId,
        state: JobState,
        result: Option<Value>,
        error: Option<String>,
    ) {
        if self.retire(now, id, state, result, error).is_none() {
            return;
        }
        let Some(ended) = self.mining.end(&id) else { return };
        for (unit, worker) in ended.units {
            self.stop_unit(now, unit, worker, format!("job {id} ended"));
        }
    }

    /// Stops a mining unit its job no longer wants (the job ended, or moved
    /// to a new template): its worker is told to cancel it, and it is
    /// recorded as cancelled with `note`.
    pub(super) fn stop_unit(&mut self, now: Now, unit: JobId, worker: WorkerId, note: String) {
        if let Some(l) = self.jobs.get(&unit).and_then(|j| j.lease.as_ref()) {
            let control = Control::Cancel { job_id: unit, attempt: l.attempt };
            self.effects.push(Effect::Control { worker, control });
        }
        self.retire(now, unit, JobState::Cancelled, None, Some(note));
    }

    /// Ends a job's life here: records the final state and remembers it for
    /// recognising duplicate results. No knock-on effects (see `finish`).
    pub(super) fn retire(
        &mut self,
        now: Now,
        id: JobId,
        state: JobState,
        result: Option<Value>,
        error: Option<String>,
    ) -> Option<(ActiveJob, Option<Lease>)> {
        let lease = self.release_lease(now, id);
        self.queue.remove(&id);
        let job = self.jobs.remove(&id)?;
        if job.group != crate::queue::NO_GROUP {
            self.groups.leave(job.group);
        }
        self.delayed.remove(&id);
        self.deps.remove(&id);
        if self.deps.has_dependents(&id) {
            let end = (state, result.clone().map(Arc::new));
            let decided = self.deps.ended(id, end);
            self.to_settle.extend(decided);
        }
        let release_key =
            job.opts.as_ref().and_then(|o| o.unique_key.clone()).filter(|key| self.unique.finished(key, id));
        let worker = match self.mining.worker_list(&id) {
            Some(list) => Some(list).filter(|w| !w.is_empty()),
            None => lease.as_ref().map(|l| l.worker.to_string()),
        };
        let event = match (&state, &result, &error) {
            (JobState::Succeeded, Some(r), _) => JobEvent::Succeeded {
                result: r.clone(),
                worker: worker.clone().unwrap_or_default(),
                attempt: job.attempts,
            },
            (JobState::Cancelled, _, _) => JobEvent::Cancelled,
            _ => {
                let error = error.clone().unwrap_or_else(|| "failed".into());
                JobEvent::Failed { code: ErrorCode::of(&error).map(|c| c.as_str().to_owned()), error }
            }
        };
        self.effects.push(Effect::Store(StoreOp::Finished {
            id,
            state,
            attempts: job.attempts,
            worker,
            result,
            error,
            at_ms: now.wall_ms,
            release_key,
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

    /// Records a new job carved out of another (a mining unit) and sends it.
    pub(super) fn spawn_unit(
        &mut self,
        now: Now,
        parent: JobId,
        unit: JobId,
        spec: JobSpec,
        attempts: u32,
        to: WorkerId,
    ) {
        let Some(priority) = self.jobs.get(&parent).map(|j| j.priority) else { return };
        let seq = self.next_seq;
        self.next_seq += 1;
        let spec = Arc::new(spec);
        self.effects.push(Effect::Store(StoreOp::Insert {
            id: unit,
            spec: spec.clone(),
            priority,
            seq,
            at_ms: now.wall_ms,
            parent: Some(parent),
            retry_of: None,
            state: JobState::Queued,
            opts: None,
            run_at_ms: None,
        }));
        let mut job = ActiveJob::new(spec, priority, seq, now);
        job.attempts = attempts;
        self.jobs.insert(unit, job);
        self.dispatch(now, unit, to);
    }
}
