//! Jobs that wait for a time or for other jobs: delayed jobs and retries
//! backing off (`scheduled`, kept in time order like the leases, so a
//! million cost nothing until they are due), jobs waiting for their parents
//! (`waiting`), and attempts that run out of time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use faena_proto::api::JobEvent;
use faena_proto::ids::JobId;
use faena_proto::jobs::JobState;
use faena_proto::mqtt::Control;
use faena_proto::options::ErrorCode;

use super::deps::Verdict;
use super::{Effect, Engine, Now, StoreOp};
use crate::queue::{Group, NO_GROUP};

impl Engine {
    /// A job's state now, if it is active here.
    pub(super) fn state_of(&self, id: &JobId) -> Option<JobState> {
        let job = self.jobs.get(id)?;
        Some(if job.lease.is_some() || self.mining.is_started(id) {
            JobState::Running
        } else if job.run_at_ms.is_some() {
            JobState::Scheduled
        } else if self.deps.is_waiting(id) {
            JobState::Waiting
        } else {
            JobState::Queued
        })
    }

    /// Jobs held here that are not running: what the capacity bounds.
    pub(super) fn held(&self) -> usize {
        self.queue.len() + self.delayed.len() + self.deps.waiting()
    }

    /// When the engine next has something due: a scheduled job, or an
    /// attempt's timeout. The coordinator wakes it then ([`Engine::wake`]).
    pub fn next_wake(&self) -> Option<Instant> {
        [self.delayed.next(), self.timeouts.next(), self.groups.due.next(), self.schedules.due.next()]
            .into_iter()
            .flatten()
            .min()
    }

    /// Queues the scheduled jobs whose time came and ends attempts that
    /// ran out of time.
    pub fn wake(&mut self, now: Now) {
        self.due(now);
        self.schedule(now);
    }

    pub(super) fn due(&mut self, now: Now) {
        self.fire_due(now);
        for group in self.groups.due.expired(now.mono) {
            self.refresh_group(now, group);
        }
        for id in self.delayed.expired(now.mono) {
            let Some(job) = self.jobs.get_mut(&id) else { continue };
            job.run_at_ms = None;
            let attempts = job.attempts;
            let detail = match attempts {
                0 => "its time came".to_owned(),
                n => format!("attempt {} is due", n + 1),
            };
            self.enqueue(now, id);
            self.released(now, id, JobState::Queued, None, attempts, detail);
        }
        for id in self.timeouts.expired(now.mono) {
            let Some(job) = self.jobs.get(&id) else { continue };
            let (Some(lease), Some(limit)) = (job.lease.clone(), job.opts.as_ref().and_then(|o| o.timeout_ms)) else {
                continue;
            };
            let control = Control::Cancel { job_id: id, attempt: lease.attempt };
            self.effects.push(Effect::Control { worker: lease.worker.clone(), control });
            let reason = ErrorCode::Timeout.error(format!("attempt {} ran past {limit} ms", lease.attempt));
            self.requeue(now, id, reason, true);
        }
    }

    /// Puts a job that may run where its `run_at` says: scheduled until
    /// then, or queued. Its state and time to queue, for the store.
    pub(super) fn place(&mut self, now: Now, id: JobId) -> (JobState, Option<u64>) {
        let run_at = self.jobs.get(&id).and_then(|j| j.opts.as_ref()?.run_at_ms).filter(|t| *t > now.wall_ms);
        match run_at {
            Some(t) => {
                self.delay(now, id, t);
                (JobState::Scheduled, Some(t))
            }
            None => {
                self.enqueue(now, id);
                (JobState::Queued, None)
            }
        }
    }

    /// Schedules `id` for `at_ms` (wall clock; now or before: the next wake).
    pub(super) fn delay(&mut self, now: Now, id: JobId, at_ms: u64) {
        if let Some(job) = self.jobs.get_mut(&id) {
            job.run_at_ms = Some(at_ms);
            let wait = Duration::from_millis(at_ms.saturating_sub(now.wall_ms));
            self.delayed.set(id, now.mono + wait);
        }
    }

    /// Queues `id` by its priority, its group's fair share and its age
    /// (back at its old place if it was queued before).
    pub(super) fn enqueue(&mut self, now: Now, id: JobId) -> u64 {
        let Some(job) = self.jobs.get_mut(&id) else { return 0 };
        job.enqueued_at = now.mono;
        let group = job.group;
        let (ahead, tag) = self.queue.push(id, job.lane, group, (job.priority, job.seq), job.tag);
        job.tag = Some(tag);
        // A group held back by its rate with nothing queued had no wake-up set.
        if self.queue.is_blocked(group) && self.groups.due.get(&group).is_none() {
            self.refresh_group(now, group);
        }
        ahead
    }

    /// Holds `group` back in the queue while it is at a limit (and wakes
    /// the engine when its rate lets it go again), or lets it go.
    pub(super) fn refresh_group(&mut self, now: Now, group: Group) {
        if group == NO_GROUP {
            return;
        }
        match self.groups.may_run(group, now.mono) {
            Ok(()) => {
                self.groups.due.remove(&group);
                self.queue.block(group, false);
            }
            Err(until) => {
                self.queue.block(group, true);
                match until {
                    Some(t) if self.queue.group_len(group) > 0 => self.groups.due.set(group, t),
                    _ => {
                        self.groups.due.remove(&group);
                    }
                }
            }
        }
    }

    /// Records and tells that a scheduled or waiting job moved on.
    fn released(
        &mut self,
        now: Now,
        id: JobId,
        state: JobState,
        run_at_ms: Option<u64>,
        attempts: u32,
        detail: String,
    ) {
        self.effects.push(Effect::Store(StoreOp::Released {
            id,
            state,
            run_at_ms,
            attempts,
            detail,
            at_ms: now.wall_ms,
        }));
        let event = match run_at_ms {
            Some(t) => JobEvent::Scheduled { run_at: faena_store_contract::rfc3339(t) },
            None => JobEvent::Queued { position: self.queue.position(&id).unwrap_or(0) },
        };
        self.effects.push(Effect::Notify { job: id, event });
    }

    /// Decides the waiting jobs whose parents ended: each runs (scheduled
    /// or queued, with its parents' results) or fails with
    /// `dependency_failed`, which may decide its own dependents in turn.
    pub(super) fn settle(&mut self, now: Now) {
        while let Some(id) = self.to_settle.pop() {
            match self.deps.verdict(&id) {
                None => {}
                Some(Verdict::Ready(results)) => {
                    self.deps.remove(&id);
                    let Some(job) = self.jobs.get_mut(&id) else { continue };
                    job.parents = Some(Arc::new(results));
                    let attempts = job.attempts;
                    let (state, run_at) = self.place(now, id);
                    self.released(now, id, state, run_at, attempts, "the jobs it runs after ended".into());
                }
                Some(Verdict::Doomed { parent, state }) => {
                    self.deps.remove(&id);
                    let error =
                        ErrorCode::DependencyFailed.error(format!("job {parent} it runs after {}", state.as_str()));
                    self.finish(now, id, JobState::Failed, None, Some(error));
                }
            }
        }
    }

    /// The next number of the engine's own generator (xorshift64*), for
    /// backoff jitter: spread, not secret.
    pub(super) fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}
