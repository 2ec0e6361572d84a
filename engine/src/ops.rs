//! What operators see and do: a job's live view, a new priority for a
//! waiting job, what waits and runs (the dashboard's and the autoscaler's
//! load), and workers taken out of placement before they are removed.

use std::time::Duration;

use faena_proto::ids::{JobId, WorkerId};
use faena_proto::jobs::{JobKind, JobState, Priority};

use faena_store_contract::NamedKind;

use super::groups::{GroupView, GroupsFull, Limits};
use super::{ActiveView, Effect, Engine, KindLoad, Load, MAX_PRIORITY_CHANGES, Now, StoreOp, Unmovable};
use crate::LeaseError;

impl Engine {
    /// A worker applied a live configuration: the slots it now has count
    /// from the next dispatch (0: unchanged), and it runs `applied`.
    pub fn worker_config(
        &mut self,
        now: Now,
        worker: &WorkerId,
        instance: faena_proto::ids::InstanceId,
        (slots, ai_slots): (u32, u32),
        applied: faena_proto::settings::Applied,
    ) -> Result<(), LeaseError> {
        let w = self
            .workers
            .get_mut(worker)
            .filter(|w| w.instance == instance)
            .ok_or_else(|| LeaseError::UnknownWorker(worker.clone()))?;
        if slots > 0 {
            w.caps.slots = slots;
        }
        if ai_slots > 0 && w.caps.kinds.contains(&JobKind::AiQuery) {
            w.caps.ai_slots = ai_slots;
        }
        w.config = Some(applied);
        self.schedule(now);
        Ok(())
    }

    pub fn view(&self, id: &JobId) -> Option<ActiveView> {
        let job = self.jobs.get(id)?;
        let split = self.mining.view(id);
        let state = self.state_of(id)?;
        let running = state == JobState::Running;
        let waiting = (state == JobState::Queued && !self.workers.anyone_offers(&job.lane))
            .then(|| format!("no registered worker runs {}", job.lane));
        let worker = match &split {
            Some((_, workers)) => Some(workers.clone()).filter(|w| !w.is_empty()),
            None => job.lease.as_ref().map(|l| l.worker.to_string()),
        };
        Some(ActiveView {
            kind: job.kind(),
            state,
            priority: job.priority,
            position: if running { None } else { self.queue.position(id) },
            worker,
            attempts: job.attempts,
            created_at_ms: job.created_at_ms,
            progress: split.map(|(p, _)| p),
            parent: self.mining.job_of(id),
            waiting,
            retry_of: job.retry_of,
            run_at_ms: job.run_at_ms,
            opts: job.opts.clone(),
        })
    }

    /// Moves a job not yet running to `priority`: a queued one takes the
    /// place the new priority gives it (among equals, by age); a scheduled
    /// or waiting one queues at it when its time comes. A mining job's units not
    /// yet handed out follow it (units out on workers finish as they
    /// are). A unit stands for its mining job. Returns the job moved.
    pub fn reprioritise(&mut self, now: Now, id: JobId, priority: Priority) -> Result<JobId, Unmovable> {
        let id = self.mining.job_of(&id).unwrap_or(id);
        let split = self.mining.contains(&id);
        let Some(job) = self.jobs.get_mut(&id) else { return Err(Unmovable::NotActive(id)) };
        if job.lease.is_some() && !split {
            return Err(Unmovable::Running(id));
        }
        let was = job.priority;
        if was == priority {
            return Ok(id);
        }
        if job.moves >= MAX_PRIORITY_CHANGES {
            return Err(Unmovable::TooManyChanges(id));
        }
        job.moves += 1;
        job.priority = priority;
        // Its place at the new priority: behind its group's jobs there.
        job.tag = None;
        let (attempts, since) = (job.attempts, job.enqueued_at);
        if self.queue.remove(&id) {
            self.enqueue(now, id);
            if let Some(job) = self.jobs.get_mut(&id) {
                job.enqueued_at = since;
            }
        }
        let state = self.state_of(&id).unwrap_or(JobState::Queued);
        self.effects.push(Effect::Store(StoreOp::Reprioritised {
            id,
            priority,
            was,
            state,
            attempts,
            at_ms: now.wall_ms,
        }));
        self.schedule(now);
        Ok(id)
    }

    /// The autoscaler will remove `ids`: they get no new work for `hold`
    /// (an empty list gives it back to all). What they run goes on. When
    /// `hold` runs out with no word from the autoscaler (it died between
    /// the drain and the scale-down) they take work again.
    pub fn retire_workers(&mut self, now: Now, ids: Vec<WorkerId>, hold: Duration) {
        self.draining_until = (!ids.is_empty()).then(|| now.mono + hold);
        self.workers.set_retiring(ids);
        self.schedule(now);
    }

    /// Sets (or with none, removes) group `name`'s limits, stored with the
    /// next commit; its jobs are held back or let go at once.
    pub fn set_group(&mut self, now: Now, name: &str, limits: Option<Limits>) -> Result<(), GroupsFull> {
        if self.groups.id(name).is_none() {
            self.groups.check_room(std::iter::once(name))?;
        }
        let doc = limits.as_ref().and_then(|l| serde_json::to_string(l).ok());
        self.apply_group(now, name, limits);
        self.effects.push(Effect::Store(StoreOp::Named { kind: NamedKind::Group, name: name.to_owned(), doc }));
        self.schedule(now);
        Ok(())
    }

    /// Groups' limits read back from the store.
    pub fn restore_groups(&mut self, now: Now, groups: Vec<(String, Limits)>) {
        for (name, limits) in groups {
            self.apply_group(now, &name, Some(limits));
        }
    }

    fn apply_group(&mut self, now: Now, name: &str, limits: Option<Limits>) {
        let (g, weight) = self.groups.set_limits(name, limits, now.mono);
        self.queue.set_weight(g, weight);
        self.refresh_group(now, g);
    }

    /// Every group with jobs or limits, by name.
    pub fn groups(&self) -> Vec<GroupView> {
        let mut all: Vec<GroupView> = self
            .groups
            .all()
            .map(|(g, name, jobs, running, limits)| GroupView {
                name: name.to_owned(),
                jobs,
                queued: self.queue.group_len(g),
                running,
                limits: limits.cloned().unwrap_or_default(),
                held: self.queue.is_blocked(g),
            })
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Each group with jobs or limits: its name, queued and running jobs,
    /// in no order (the metrics' copy, on every scrape: no sort, no copy).
    pub fn group_counts(&self) -> impl Iterator<Item = (&str, usize, u32)> {
        self.groups.all().map(|(g, name, _, running, _)| (name, self.queue.group_len(g), running))
    }

    /// What waits (per kind, and how long the longest has) and what runs.
    pub fn load(&self, now: Now) -> Load {
        let mut kinds: Vec<KindLoad> = Vec::new();
        for (lane, queued, heads) in self.queue.lane_heads() {
            if lane.kind == JobKind::RandomxMine {
                continue;
            }
            let oldest = heads
                .iter()
                .filter_map(|id| self.jobs.get(id))
                .map(|j| now.mono.saturating_duration_since(j.enqueued_at))
                .max()
                .unwrap_or_default();
            let oldest_wait_ms = u64::try_from(oldest.as_millis()).unwrap_or(u64::MAX);
            match kinds.iter_mut().find(|k| k.kind == lane.kind) {
                Some(k) => {
                    k.queued += queued;
                    k.oldest_wait_ms = k.oldest_wait_ms.max(oldest_wait_ms);
                }
                None => kinds.push(KindLoad { kind: lane.kind, queued, oldest_wait_ms }),
            }
        }
        kinds.sort_by_key(|k| k.kind.as_str());
        Load {
            depth: self.queue.depth_by_priority(),
            queued: self.queue.len(),
            running: self.running(),
            scheduled: self.delayed.len(),
            waiting: self.deps.waiting(),
            kinds,
        }
    }
}
