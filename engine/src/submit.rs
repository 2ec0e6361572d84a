//! Jobs coming in: submitted (all of a batch or none; a duplicate of a
//! held unique key answered with its holder; parents resolved, a batch's
//! own in order) and read back from the store after a restart.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use faena_proto::ids::JobId;
use faena_proto::jobs::{JobSpec, JobState};
use faena_proto::options::JobOptions;
use faena_store_contract::{HeldKey, Outcome};

use super::deps::{self, Ended};
use super::{ActiveJob, Effect, Engine, Lease, NewJob, Now, QueueFull, RestoredJob, StoreOp};

/// A job as a submit answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    pub id: JobId,
    /// Jobs ahead of it in the dispatch order (0 when not queued).
    pub position: u64,
    /// None for a duplicate whose holder ended long enough ago that only
    /// the store knows how.
    pub state: Option<JobState>,
    /// Not made: `id` is the job that holds its unique key.
    pub duplicate: bool,
}

/// Why a submission was refused whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Full(#[from] QueueFull),
    #[error(transparent)]
    Keys(#[from] super::unique::KeysFull),
    #[error(transparent)]
    Groups(#[from] super::groups::GroupsFull),
    #[error("after: job {0} is unknown (never submitted, or removed by retention)")]
    UnknownParent(JobId),
    #[error("after: job {0} is a unit of a mining job; name its mining job instead")]
    UnitParent(JobId),
    #[error("after: these jobs wait for each other in a cycle (job {0} is on it)")]
    Cycle(JobId),
    /// A parent ended here a moment ago and the store has not committed
    /// it yet: asked again once it has, the submission goes through.
    #[error("after: job {0} has just ended; submit again")]
    Settling(JobId),
}

impl Engine {
    /// Accepts all of `jobs` or none.
    pub fn submit(&mut self, now: Now, jobs: Vec<NewJob>) -> Result<Vec<Accepted>, SubmitError> {
        self.submit_after(now, jobs, &HashMap::new())
    }

    /// Accepts all of `jobs` or none. `known` holds what the store says
    /// of parents the engine may no longer hold (ended before).
    pub fn submit_after(
        &mut self,
        now: Now,
        jobs: Vec<NewJob>,
        known: &HashMap<JobId, Outcome>,
    ) -> Result<Vec<Accepted>, SubmitError> {
        // A job whose key is held (or taken earlier in this batch) is not made.
        let mut holders: HashMap<usize, JobId> = HashMap::new();
        let mut taken: HashMap<&str, JobId> = HashMap::new();
        for (i, j) in jobs.iter().enumerate() {
            let Some(key) = j.opts.as_ref().and_then(|o| o.unique_key.as_deref()) else { continue };
            match self.unique.holder(key, now).or_else(|| taken.get(key).copied()) {
                Some(holder) => {
                    holders.insert(i, holder);
                }
                None => {
                    taken.insert(key, j.id);
                }
            }
        }
        let fresh = jobs.len() - holders.len();
        if self.held() + fresh > self.cfg.queue_capacity {
            return Err(QueueFull { capacity: self.cfg.queue_capacity }.into());
        }
        self.unique.check_room(taken.len())?;
        let groups = jobs.iter().enumerate().filter(|(i, _)| !holders.contains_key(i));
        self.groups.check_room(groups.filter_map(|(_, j)| j.opts.as_ref()?.group.as_deref()))?;
        // A batch job naming a duplicate waits for its holder.
        let alias: HashMap<JobId, JobId> = holders.iter().map(|(i, h)| (jobs[*i].id, *h)).collect();
        let batch: HashSet<JobId> =
            jobs.iter().enumerate().filter(|(i, _)| !holders.contains_key(i)).map(|(_, j)| j.id).collect();
        let mut ended: HashMap<JobId, Ended> = HashMap::new();
        let mut graph = Vec::with_capacity(fresh);
        let mut index = Vec::with_capacity(fresh);
        for (i, j) in jobs.iter().enumerate().filter(|(i, _)| !holders.contains_key(i)) {
            let after = j.opts.as_ref().map(|o| o.after.as_slice()).unwrap_or_default();
            let parents: Vec<JobId> = after.iter().map(|p| alias.get(p).copied().unwrap_or(*p)).collect();
            for p in &parents {
                self.check_parent(*p, &batch, known, &mut ended)?;
            }
            graph.push((j.id, parents));
            index.push(i);
        }
        let order = deps::in_order(&graph).map_err(SubmitError::Cycle)?;

        let mut jobs: Vec<Option<NewJob>> = jobs.into_iter().map(Some).collect();
        let mut made = Vec::with_capacity(order.len());
        for g in order {
            let (i, parents) = (index[g], std::mem::take(&mut graph[g].1));
            let Some(j) = jobs[i].take() else { continue };
            let id = j.id;
            let answer = self.make(now, j, &parents, &ended);
            made.push((i, id, answer));
        }
        // Answers known at once (the result cache) end their jobs now,
        // once every job of the batch is in place to hear of it.
        for (_, id, answer) in &mut made {
            if let Some(answer) = answer.take() {
                self.finish(now, *id, JobState::Succeeded, Some(answer), None);
            }
            if self.deps.is_waiting(id) {
                self.to_settle.push(*id);
            }
        }
        self.settle(now);
        // Dispatched before the answer is made: a job that a free slot took
        // answers `running`, committed with its dispatch in one group.
        self.schedule(now);
        let state_of = |id: &JobId| self.state_of(id).or_else(|| self.recent.get(id).map(|f| f.state));
        let mut out: Vec<Option<Accepted>> = vec![None; jobs.len()];
        for (i, holder) in &holders {
            out[*i] = Some(Accepted { id: *holder, position: 0, state: state_of(holder), duplicate: true });
        }
        for (i, id, _) in made {
            let position = self.queue.position(&id).unwrap_or(0);
            out[i] = Some(Accepted { id, position, state: state_of(&id), duplicate: false });
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Whether `p` may be waited for; records it in `ended` if it ended.
    fn check_parent(
        &self,
        p: JobId,
        batch: &HashSet<JobId>,
        known: &HashMap<JobId, Outcome>,
        ended: &mut HashMap<JobId, Ended>,
    ) -> Result<(), SubmitError> {
        if self.mining.job_of(&p).is_some() {
            return Err(SubmitError::UnitParent(p));
        }
        if batch.contains(&p) || self.jobs.contains_key(&p) || ended.contains_key(&p) {
            return Ok(());
        }
        match known.get(&p) {
            Some((state, result)) if state.is_final() => {
                ended.insert(p, (*state, result.clone().map(Arc::new)));
                Ok(())
            }
            Some(_) => Err(SubmitError::Settling(p)),
            None if self.recent.contains_key(&p) => Err(SubmitError::Settling(p)),
            None => Err(SubmitError::UnknownParent(p)),
        }
    }

    /// Records one new job and puts it where it starts: waiting for its
    /// parents, scheduled, or queued. Gives back the answer it was made
    /// with, if any (it ends the job once the batch is in place).
    fn make(
        &mut self,
        now: Now,
        j: NewJob,
        parents: &[JobId],
        ended: &HashMap<JobId, Ended>,
    ) -> Option<serde_json::Value> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let spec = Arc::new(j.spec);
        if let JobSpec::RandomxMine(p) = &*spec {
            self.mining.add(j.id, p.clone());
        }
        let mut job = ActiveJob::new(spec.clone(), j.priority, seq, now);
        job.retry_of = j.retry_of;
        job.opts = j.opts.clone().filter(|o| !o.is_default());
        let opts = job.opts.clone().unwrap_or_default();
        if let Some(group) = &opts.group {
            job.group = self.groups.join(group);
        }
        if let Some(key) = &opts.unique_key {
            self.unique.take(key.clone(), j.id, opts.unique_for_s, now);
        }
        self.jobs.insert(j.id, job);
        let (state, run_at_ms) = if !parents.is_empty() {
            self.deps.add(j.id, parents, opts.after_policy, ended);
            (JobState::Waiting, None)
        } else if j.answer.is_some() {
            (JobState::Queued, None)
        } else {
            self.place(now, j.id)
        };
        self.effects.push(Effect::Store(StoreOp::Insert {
            id: j.id,
            spec,
            priority: j.priority,
            seq,
            at_ms: now.wall_ms,
            parent: None,
            retry_of: j.retry_of,
            state,
            opts: j.opts.filter(|o| !o.is_default()),
            run_at_ms,
        }));
        j.answer
    }

    /// Reloads unfinished jobs after a restart. Running ones keep their lease
    /// for [`super::EngineConfig::recovery_grace`] so their worker can
    /// re-register and claim them instead of the job running twice. A
    /// mining job gets its split back: finished units count as done,
    /// running ones stay out, the rest of its range is handed out again.
    /// Scheduled jobs wait for their time again, waiting ones for the
    /// parents still unfinished.
    pub fn restore(&mut self, now: Now, jobs: Vec<RestoredJob>) {
        let mut waiting = Vec::new();
        for mut j in jobs {
            self.next_seq = self.next_seq.max(j.seq + 1);
            let lease = j.lease.take().map(|(worker, attempt, token)| Lease {
                worker,
                attempt,
                token,
                restored: true,
                sent: true,
            });
            if let Some(parent) = j.parent {
                self.restore_unit(now, j, parent, lease);
                continue;
            }
            let spec = Arc::new(j.spec);
            let mut job = ActiveJob::new(spec.clone(), j.priority, j.seq, now);
            job.created_at_ms = j.created_at_ms;
            job.attempts = j.attempts;
            job.moves = u8::try_from(j.priority_changes).unwrap_or(u8::MAX);
            job.retry_of = j.retry_of;
            job.opts = j.opts.clone();
            if let Some(group) = j.opts.as_ref().and_then(|o| o.group.as_deref()) {
                // A restart keeps every group its jobs name, past the bound if need be.
                job.group = self.groups.join(group);
            }
            let split = match &*spec {
                JobSpec::RandomxMine(p) => self.mining.add(j.id, p.clone()),
                _ => false,
            };
            let ended: HashMap<JobId, Ended> =
                j.ended_parents.into_iter().map(|(p, (s, r))| (p, (s, r.map(Arc::new)))).collect();
            if let Some(o) = &job.opts
                && !o.after.is_empty()
                && j.state != JobState::Waiting
            {
                job.parents = Some(Arc::new(parent_results(o, &ended)));
            }
            self.jobs.insert(j.id, job);
            match (lease, j.state) {
                _ if split => {}
                (Some(lease), _) => self.hold(j.id, lease, Some(now.mono + self.cfg.recovery_grace())),
                (None, JobState::Waiting) => waiting.push((j.id, ended)),
                (None, JobState::Scheduled) => self.delay(now, j.id, j.run_at_ms.unwrap_or(now.wall_ms)),
                (None, _) => {
                    self.enqueue(now, j.id);
                }
            }
        }
        for (id, ended) in waiting {
            let Some(opts) = self.jobs.get(&id).and_then(|j| j.opts.clone()) else { continue };
            // A parent neither ended nor held here was lost with its row:
            // the dependent is not kept waiting for ever.
            let gone = JobState::Cancelled;
            let ended: HashMap<JobId, Ended> = opts
                .after
                .iter()
                .filter(|p| !self.jobs.contains_key(p))
                .map(|p| (*p, ended.get(p).cloned().unwrap_or((gone, None))))
                .collect();
            self.deps.add(id, &opts.after, opts.after_policy, &ended);
            self.to_settle.push(id);
        }
        for id in self.mining.job_ids() {
            let verdict = self.mining.settle(id, now.mono);
            self.apply_verdict(now, id, verdict, None);
        }
        self.settle(now);
    }

    /// Reloads the unique keys the store holds.
    pub fn restore_keys(&mut self, now: Now, keys: Vec<HeldKey>) {
        for k in keys {
            self.unique.restore(k.key, k.job, k.until_ms, now);
        }
    }
}

/// Results by parent id, for a restored job that was released already
/// (its parents all ended): null for any the store no longer has.
fn parent_results(opts: &JobOptions, ended: &HashMap<JobId, Ended>) -> serde_json::Map<String, serde_json::Value> {
    opts.after
        .iter()
        .map(|p| {
            let r = ended.get(p).and_then(|(_, r)| r.as_deref().cloned()).unwrap_or(serde_json::Value::Null);
            (p.to_string(), r)
        })
        .collect()
}
