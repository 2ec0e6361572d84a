//! The engine's side of mining units: carving one for a worker, passing
//! every unit event to the [`Mining`](super::mining::Mining) sub-machine,
//! and applying the [`Verdict`] it returns to the mining job.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use faena_proto::api::JobEvent;
use faena_proto::ids::{JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobSpec, JobState};
use faena_proto::mine::{MineParams, MineProgress, UnitOutput};

use super::mining::{Late, MinedUnit, Verdict};
use super::{ActiveJob, Effect, Engine, Lease, LeaseError, LeaseRef, MinedProgress, Now, Outcome, RestoredJob};
use super::{RetiredUnit, StoreOp, UnitWork};
use crate::queue::Lane;
use crate::scheduler::Availability;
use faena_verify::VerifiedShares;

impl Engine {
    /// Carves a unit of mining job `id` sized for `worker` and sends it.
    pub(super) fn dispatch_unit(&mut self, now: Now, id: JobId, worker: WorkerId) {
        let speed = self.workers.get(&worker).map(|w| self.workers.speed(w)).unwrap_or(1.0);
        let total = self.workers.total_speed(Lane::of(JobKind::RandomxMine));
        let unit = JobId::beside(id);
        let Some(carved) = self.mining.carve(id, unit, &worker, speed, total, now.mono) else {
            self.queue.remove(&id);
            return;
        };
        if !self.mining.has_pending(&id) {
            self.queue.remove(&id);
        }
        if carved.first {
            self.effects.push(Effect::Store(StoreOp::Started { id, worker: worker.to_string(), at_ms: now.wall_ms }));
            self.effects
                .push(Effect::Notify { job: id, event: JobEvent::Running { worker: worker.to_string(), attempt: 1 } });
        }
        self.spawn_unit(now, id, unit, JobSpec::RandomxMine(carved.params), carved.attempts, worker);
    }

    /// Whether `id` is a unit of a mining job (whose reports carry shares to verify).
    pub fn is_mining_unit(&self, id: &JobId) -> bool {
        self.mining.job_of(id).is_some()
    }

    /// What a mining unit covers and the nonces its job already accepted,
    /// for the verifier; None when the lease is not a mining unit's.
    pub fn unit_work(&mut self, worker: &WorkerId, lease: &LeaseRef) -> Result<Option<UnitWork>, LeaseError> {
        self.check_lease(worker, lease)?;
        if self.mining.job_of(&lease.job_id).is_none() {
            return Ok(None);
        }
        let Some(JobSpec::RandomxMine(params)) = self.jobs.get(&lease.job_id).map(|j| &*j.spec) else {
            return Ok(None);
        };
        let Some(job) = self.mining.job_of(&lease.job_id) else { return Ok(None) };
        Ok(Some(UnitWork { job, params: params.clone(), known: self.mining.known_nonces(&lease.job_id) }))
    }

    /// Replaces mining job `job`'s template (a new block or pool job): its
    /// units out are stopped and retired, and the new template is split
    /// among the workers at once. Shares for the old template that arrive
    /// within `grace` count as stale. Returns how many units were retired;
    /// None when `job` is not a live mining job or `params` are not a valid
    /// template.
    pub fn replace_template(&mut self, now: Now, job: JobId, params: MineParams, grace: Duration) -> Option<usize> {
        let template = self.mining.template_id(&job)?;
        let retired = self.mining.replace_template(&job, params.clone(), now.mono, grace)?;
        let count = retired.len();
        if let Some(j) = self.jobs.get_mut(&job) {
            j.spec = Arc::new(JobSpec::RandomxMine(params));
        }
        self.retired.retain(|_, r| r.until > now.mono);
        for (unit, worker) in retired {
            if let Some(ActiveJob { spec, lease: Some(lease), .. }) = self.jobs.get(&unit)
                && let JobSpec::RandomxMine(p) = &**spec
            {
                let work = UnitWork { job, params: p.clone(), known: HashSet::new() };
                let until = now.mono + grace;
                self.retired.insert(unit, RetiredUnit { lease: lease.clone(), work, template, until });
            }
            self.stop_unit(now, unit, worker, format!("job {job} moved to a new template"));
        }
        let verdict = self.mining.settle(job, now.mono);
        self.apply_verdict(now, job, verdict, None);
        self.schedule(now);
        Some(count)
    }

    /// What a unit retired with its template covered, for verifying the
    /// shares in a report its worker sent after the retirement; None once
    /// the grace period is over or when the lease is not the retired one.
    pub fn late_unit(&self, now: Now, worker: &WorkerId, lease: &LeaseRef) -> Option<UnitWork> {
        let r = self.retired.get(&lease.job_id)?;
        let same = r.lease.worker == *worker && r.lease.attempt == lease.attempt && r.lease.token == lease.token;
        (same && now.mono < r.until).then(|| r.work.clone())
    }

    /// Verified shares of a retired unit: counted stale on its job while
    /// the grace period lasts (each nonce once).
    pub fn late_shares(&mut self, now: Now, unit: &JobId, shares: &VerifiedShares) -> Late {
        let Some(r) = self.retired.get_mut(unit).filter(|r| now.mono < r.until) else { return Late::Expired };
        let fresh = shares.as_slice().iter().filter(|s| r.work.known.insert(s.nonce)).count();
        self.mining.late_shares(&r.work.job, r.template, fresh, now.mono)
    }

    /// A mining unit's progress, its shares verified.
    pub fn unit_progress(
        &mut self,
        now: Now,
        worker: &WorkerId,
        lease: &LeaseRef,
        report: MinedProgress,
    ) -> Result<(), LeaseError> {
        self.check_lease(worker, lease)?;
        self.renew(now, worker, lease);
        let Some(job) = self.mining.job_of(&lease.job_id) else { return Ok(()) };
        let (shown, verdict) =
            self.mining.progress(&lease.job_id, report.hashes, report.hashrate, &report.shares, now.mono);
        if let Some(p) = shown {
            self.notify_progress(job, p, Some((worker, lease.attempt)));
        }
        self.apply_verdict(now, job, verdict, None);
        self.schedule(now);
        Ok(())
    }

    /// Counts invalid shares from a worker against its mining job and the
    /// worker; over the limit the worker id is quarantined: no more work for
    /// the configured time, registering again or not. True when this call
    /// quarantined it.
    pub fn invalid_shares(&mut self, now: Now, worker: &WorkerId, unit: &JobId, n: u32) -> bool {
        if n == 0 {
            return false;
        }
        self.mining.invalid(unit, worker, n);
        let limit = self.cfg.invalid_share_limit;
        let Some(w) = self.workers.get_mut(worker) else { return false };
        w.invalid_shares = w.invalid_shares.saturating_add(n);
        if w.invalid_shares > limit && w.availability != Availability::Quarantined {
            w.availability = Availability::Quarantined;
            self.quarantined.insert(worker.clone(), now.mono + self.cfg.quarantine);
            return true;
        }
        false
    }

    /// A mining unit's outcome.
    pub(super) fn end_unit(&mut self, now: Now, worker: &WorkerId, unit: JobId, outcome: Outcome) {
        match outcome {
            Outcome::Mined(out) => self.unit_done(now, unit, out),
            // Output that did not come through the verifier counts for nothing.
            Outcome::Success(_) => {
                let attempts = self.jobs.get(&unit).map_or(0, |j| j.attempts);
                self.release_lease(now, unit);
                self.unit_lost(now, unit, attempts, "its output was not a mining unit's");
            }
            Outcome::Failure { message, retryable: true } => self.requeue(now, unit, message, true),
            Outcome::Failure { message, retryable: false } => self.unit_failed(now, unit, worker, message),
            Outcome::HandedBack(reason) => self.requeue(now, unit, reason, false),
        }
    }

    fn unit_done(&mut self, now: Now, unit: JobId, out: MinedUnit) {
        let Some(job) = self.mining.job_of(&unit) else { return };
        let (verdict, stored) = self.mining.done(&unit, out, now.mono);
        let stored = stored.and_then(|o: UnitOutput| serde_json::to_value(o).ok());
        self.retire(now, unit, JobState::Succeeded, stored, None);
        self.apply_verdict(now, job, verdict, None);
    }

    /// A unit whose lease is already released was lost: its range goes back.
    pub(super) fn unit_lost(&mut self, now: Now, unit: JobId, attempts: u32, reason: &str) {
        let Some(job) = self.mining.job_of(&unit) else { return };
        let note = format!("{reason}; its range goes back to job {job}");
        self.retire(now, unit, JobState::Failed, None, Some(note));
        self.effects.push(Effect::RangeReturned { job });
        let reason = format!("a unit was lost ({reason}); its range is split again");
        self.effects.push(Effect::Notify { job, event: JobEvent::Requeued { reason, continues: false } });
        let verdict = self.mining.lost(&unit, attempts, now.mono);
        self.apply_verdict(now, job, verdict, None);
    }

    /// A unit failed for good: its mining job fails with it.
    pub(super) fn unit_failed(&mut self, now: Now, unit: JobId, worker: &WorkerId, error: String) {
        let Some(job) = self.mining.job_of(&unit) else { return };
        let verdict = self.mining.failed(&unit, worker, &error);
        self.retire(now, unit, JobState::Failed, None, Some(error));
        self.apply_verdict(now, job, verdict, None);
    }

    /// Carries out the sub-machine's verdict on mining job `job`; `from` is
    /// the unit report behind it, if any (named in the progress event).
    pub(super) fn apply_verdict(&mut self, now: Now, job: JobId, verdict: Verdict, from: Option<(&WorkerId, u32)>) {
        let progress = match verdict {
            Verdict::Finish(out) => {
                let result = serde_json::to_value(out).ok();
                self.finish(now, job, JobState::Succeeded, result, None);
                return;
            }
            Verdict::Fail(error) => {
                self.finish(now, job, JobState::Failed, None, Some(error));
                return;
            }
            Verdict::Requeue(progress) => {
                if self.jobs.contains_key(&job) && !self.queue.contains(&job) {
                    self.enqueue(now, job);
                }
                progress
            }
            Verdict::Continue(progress) => progress,
        };
        if let Some(p) = progress {
            self.notify_progress(job, p, from);
        }
    }

    fn notify_progress(&mut self, job: JobId, progress: MineProgress, from: Option<(&WorkerId, u32)>) {
        let data = serde_json::to_value(progress).unwrap_or_default();
        let (worker, attempt) = from.map(|(w, a)| (w.to_string(), a)).unwrap_or_default();
        self.effects.push(Effect::Notify { job, event: JobEvent::Progress { worker, attempt, data } });
    }

    /// A unit read back from the store: finished ones count as done for
    /// their job, running ones stay out on their worker, others failed.
    pub(super) fn restore_unit(&mut self, now: Now, j: RestoredJob, parent: JobId, lease: Option<Lease>) {
        let range = match &j.spec {
            JobSpec::RandomxMine(p) => p.work().ok().map(|w| (u64::from(w.start), w.count)),
            _ => None,
        };
        match (self.mining.contains(&parent), range, j.done, lease) {
            (true, Some((start, count)), Some((worker, output)), _) => {
                if let Ok(out) = serde_json::from_value::<UnitOutput>(output) {
                    self.mining.restore_done(parent, start, count, &worker, &out, now.mono);
                }
            }
            (true, Some((start, count)), None, Some(lease)) => {
                self.mining.restore_out(parent, j.id, start, count, lease.worker.clone(), now.mono);
                let mut job = ActiveJob::new(Arc::new(j.spec), j.priority, j.seq, now);
                job.created_at_ms = j.created_at_ms;
                job.attempts = j.attempts;
                self.jobs.insert(j.id, job);
                self.hold(j.id, lease, Some(now.mono + self.cfg.recovery_grace()));
            }
            (_, _, None, _) => self.effects.push(Effect::Store(StoreOp::Finished {
                id: j.id,
                state: JobState::Failed,
                attempts: j.attempts,
                worker: None,
                result: None,
                error: Some("not running when the master restarted; its range was handed out again".into()),
                at_ms: now.wall_ms,
                release_key: None,
            })),
            _ => {}
        }
    }
}
