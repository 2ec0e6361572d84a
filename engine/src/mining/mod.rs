//! The mining sub-machine: `randomx.mine` jobs whose nonce space is shared by
//! participants. It owns the split jobs, the unit → job index and each
//! template's range ledger; its fields are private. Pure: no I/O, time
//! passed in.
//!
//! The job engine keeps each mining job's queue entry and each unit's lease,
//! and tells this machine what happened to a unit — progress, done, lost,
//! failed, invalid shares. The machine answers with a [`Verdict`] the engine
//! applies: go on, put the job back in the queue (a range is waiting again),
//! finish it with its output, or fail it.
//!
//! Participants are Faena workers today (each unit is a slice sized by its
//! speed, see [`job`]); a Stratum miner taking a slice of the same job is the
//! same bookkeeping. A job's template can be replaced while it runs (a new
//! block): the old template's slices are retired, shares verified for it stay
//! accepted, and late ones count as stale until its grace period ends.

mod job;
mod ledger;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use faena_proto::ids::{JobId, WorkerId};
use faena_proto::mine::{MineOutput, MineParams, MineProgress, UnitOutput};

use faena_verify::VerifiedShares;
use job::MiningJob;
pub use job::{UNIT_MAX_SECS, UNIT_MIN_SECS};

/// What the engine does with a mining job after a unit event.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Nothing changes for the job's queue entry; watchers hear the progress, if any.
    Continue(Option<MineProgress>),
    /// Part of the range waits to be handed out: the job must be queued.
    Requeue(Option<MineProgress>),
    /// The job is done (its range mined, or `max_shares` found).
    Finish(MineOutput),
    Fail(String),
}

/// A unit carved from a job, for the engine to lease and send.
#[derive(Debug, Clone, PartialEq)]
pub struct Carved {
    pub params: MineParams,
    /// Attempts already spent on this range (a lost unit's range keeps them).
    pub attempts: u32,
    /// The job's first unit: it starts running now.
    pub first: bool,
}

/// A finished unit's report, its shares verified.
#[derive(Debug, Clone, PartialEq)]
pub struct MinedUnit {
    pub hashes: u64,
    pub hashrate: f64,
    pub elapsed_ms: u64,
    pub shares: VerifiedShares,
}

/// A mining job that ended, with what was still out.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub units: Vec<(JobId, WorkerId)>,
    pub workers: String,
}

/// How a share for an older template is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Late {
    /// For the template it replaced, within the grace period: counted stale.
    Stale,
    /// Too old: not counted.
    Expired,
}

#[derive(Debug, Default)]
pub struct Mining {
    jobs: HashMap<JobId, MiningJob>,
    /// Which job each unit out belongs to.
    units: HashMap<JobId, JobId>,
}

impl Mining {
    /// Takes a job on; false when its parameters are not a mining job's.
    pub fn add(&mut self, id: JobId, params: MineParams) -> bool {
        match MiningJob::new(params) {
            Some(job) => {
                self.jobs.insert(id, job);
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, job: &JobId) -> bool {
        self.jobs.contains_key(job)
    }

    /// The job a unit out belongs to.
    pub fn job_of(&self, unit: &JobId) -> Option<JobId> {
        self.units.get(unit).copied()
    }

    pub fn is_started(&self, job: &JobId) -> bool {
        self.jobs.get(job).is_some_and(MiningJob::is_started)
    }

    /// Participants with a slice of `job` out: they get no second one.
    pub fn holders(&self, job: &JobId) -> HashSet<WorkerId> {
        let Some(j) = self.jobs.get(job) else { return HashSet::new() };
        j.template.ledger.slices().map(|(_, s)| s.participant.clone()).collect()
    }

    /// Carves the next unit of `job` for `participant` (`speed` H/s among
    /// capable participants totalling `total`), recorded as `unit`.
    pub fn carve(
        &mut self,
        job: JobId,
        unit: JobId,
        participant: &WorkerId,
        speed: f64,
        total: f64,
        now: Instant,
    ) -> Option<Carved> {
        let j = self.jobs.get_mut(&job)?;
        let first = !j.is_started();
        let (params, attempts) = j.carve(unit, participant.clone(), speed, total, now)?;
        self.units.insert(unit, job);
        Some(Carved { params, attempts, first })
    }

    /// Whether `job` has range left to hand out.
    pub fn has_pending(&self, job: &JobId) -> bool {
        self.jobs.get(job).is_some_and(|j| j.template.ledger.has_pending())
    }

    /// What the verifier needs to check a unit's shares: the nonces its job
    /// already accepted for the unit's template.
    pub fn known_nonces(&self, unit: &JobId) -> HashSet<u32> {
        self.unit_job(unit).map(|(_, j)| j.known_nonces()).unwrap_or_default()
    }

    fn unit_job(&self, unit: &JobId) -> Option<(JobId, &MiningJob)> {
        let id = self.units.get(unit)?;
        Some((*id, self.jobs.get(id)?))
    }

    fn unit_job_mut(&mut self, unit: &JobId) -> Option<(JobId, &mut MiningJob)> {
        let id = *self.units.get(unit)?;
        Some((id, self.jobs.get_mut(&id)?))
    }

    /// A unit's progress report with its verified shares: what watchers
    /// hear about it, then the verdict (the job may now have its shares).
    pub fn progress(
        &mut self,
        unit: &JobId,
        hashes: u64,
        hashrate: f64,
        shares: &VerifiedShares,
        now: Instant,
    ) -> (Option<MineProgress>, Verdict) {
        let Some((job, j)) = self.unit_job_mut(unit) else { return (None, Verdict::Continue(None)) };
        let Some(worker) = j.template.ledger.slice(unit).map(|s| s.participant.to_string()) else {
            return (None, Verdict::Continue(None));
        };
        j.template.ledger.progress(unit, hashes, hashrate);
        j.add_shares(j.template.id, &worker, shares.as_slice());
        let shown = j.progress();
        let verdict = if j.enough_shares() { self.settle(job, now) } else { Verdict::Continue(None) };
        (Some(shown), verdict)
    }

    /// A unit finished. Also returns what to store as its result: its
    /// report with every share accepted in its range (those reported with
    /// progress included), so a restart loses none.
    pub fn done(&mut self, unit: &JobId, out: MinedUnit, now: Instant) -> (Verdict, Option<UnitOutput>) {
        let Some((job, j)) = self.unit_job_mut(unit) else { return (Verdict::Continue(None), None) };
        let Some(worker) = j.template.ledger.slice(unit).map(|s| s.participant.to_string()) else {
            return (Verdict::Continue(None), None);
        };
        j.add_shares(j.template.id, &worker, out.shares.as_slice());
        let stored = j.template.ledger.slice(unit).map(|s| UnitOutput {
            shares: j.slice_shares(s),
            hashes: out.hashes,
            hashrate: out.hashrate,
            elapsed_ms: out.elapsed_ms,
        });
        j.template.ledger.finish(unit, out.hashes);
        j.credit(&worker, out.hashes, out.hashrate);
        self.units.remove(unit);
        (self.settle(job, now), stored)
    }

    /// A unit was lost (its participant died, left, or gave it back): its
    /// range goes back to be handed out again, `attempts` spent on it.
    pub fn lost(&mut self, unit: &JobId, attempts: u32, now: Instant) -> Verdict {
        let Some(job) = self.units.remove(unit) else { return Verdict::Continue(None) };
        if let Some(j) = self.jobs.get_mut(&job) {
            j.template.ledger.give_back(unit, attempts);
        }
        self.settle(job, now)
    }

    /// A unit failed for good: so does its job.
    pub fn failed(&mut self, unit: &JobId, worker: &WorkerId, error: &str) -> Verdict {
        if let Some((_, j)) = self.unit_job_mut(unit) {
            j.template.ledger.drop_slice(unit);
        }
        self.units.remove(unit);
        Verdict::Fail(format!("a unit on {worker} failed: {error}"))
    }

    /// Counts shares of a unit the verifier rejected.
    pub fn invalid(&mut self, unit: &JobId, worker: &WorkerId, n: u32) {
        if let Some((_, j)) = self.unit_job_mut(unit) {
            j.add_invalid(worker.as_str(), n);
        }
    }

    /// `n` shares verified against template `template` of `job`, which is
    /// no longer current: stale within the grace period, else expired.
    pub fn late_shares(&mut self, job: &JobId, template: u32, n: usize, now: Instant) -> Late {
        let Some(j) = self.jobs.get_mut(job) else { return Late::Expired };
        match &j.previous {
            Some((t, until)) if t.id == template && now < *until => {
                j.add_stale(u32::try_from(n).unwrap_or(u32::MAX));
                Late::Stale
            }
            _ => Late::Expired,
        }
    }

    /// Replaces `job`'s template (a new block): returns the retired units,
    /// which the engine stops. Shares of the old one count as stale for `grace`.
    pub fn replace_template(
        &mut self,
        job: &JobId,
        params: MineParams,
        now: Instant,
        grace: Duration,
    ) -> Option<Vec<(JobId, WorkerId)>> {
        let j = self.jobs.get_mut(job)?;
        let retired = j.replace(params, now + grace)?;
        let mut out = Vec::with_capacity(retired.len());
        for (unit, s) in retired {
            j.credit(s.participant.as_str(), s.hashes, s.hashrate);
            self.units.remove(&unit);
            out.push((unit, s.participant));
        }
        Some(out)
    }

    /// The current template's id (starts at 0, one more per replacement).
    pub fn template_id(&self, job: &JobId) -> Option<u32> {
        self.jobs.get(job).map(|j| j.template.id)
    }

    /// Takes the job out: it is over. Returns the units still out.
    pub fn end(&mut self, job: &JobId) -> Option<Ended> {
        let j = self.jobs.remove(job)?;
        let units: Vec<(JobId, WorkerId)> =
            j.template.ledger.slices().map(|(u, s)| (*u, s.participant.clone())).collect();
        for (u, _) in &units {
            self.units.remove(u);
        }
        Some(Ended { units, workers: j.worker_list() })
    }

    /// What `job` needs now: finished, queued again, or nothing.
    pub fn settle(&mut self, job: JobId, now: Instant) -> Verdict {
        let Some(j) = self.jobs.get_mut(&job) else { return Verdict::Continue(None) };
        if j.enough_shares() || j.is_complete() {
            return Verdict::Finish(j.output(now));
        }
        let progress = j.is_started().then(|| j.progress());
        if j.template.ledger.has_pending() { Verdict::Requeue(progress) } else { Verdict::Continue(progress) }
    }

    /// Progress as of now and the participants so far, for a status query.
    pub fn view(&self, job: &JobId) -> Option<(MineProgress, String)> {
        let j = self.jobs.get(job)?;
        Some((j.snapshot(), j.worker_list()))
    }

    /// The participants that have taken part, comma-separated.
    pub fn worker_list(&self, job: &JobId) -> Option<String> {
        self.jobs.get(job).map(MiningJob::worker_list)
    }

    /// A unit that was out when the master restarted.
    pub fn restore_out(&mut self, job: JobId, unit: JobId, start: u64, count: u64, worker: WorkerId, now: Instant) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.template.ledger.restore_out(unit, start, count, worker);
            j.mark_started(now);
            self.units.insert(unit, job);
        }
    }

    /// A unit that finished before a restart, with its stored result.
    pub fn restore_done(&mut self, job: JobId, start: u64, count: u64, worker: &str, out: &UnitOutput, now: Instant) {
        if let Some(j) = self.jobs.get_mut(&job) {
            j.template.ledger.restore_done(start, count, out.hashes, worker);
            j.mark_started(now);
            j.credit(worker, out.hashes, out.hashrate);
            j.restore_shares(worker, &out.shares);
        }
    }

    /// Mining jobs held, for the engine to settle after a restore.
    pub fn job_ids(&self) -> Vec<JobId> {
        self.jobs.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests;
