//! Schedules in the engine: made, changed and removed (stored as named
//! documents with the next commit), read back at start-up, and fired when
//! due — with `catch_up` deciding what firings missed while no master led
//! become, and `overlap` what a firing does while the previous one's job
//! has not ended.

use std::collections::HashMap;

use faena_store_contract::{Firing, NamedKind};

use super::schedules::{
    CatchUp, Compiled, MAX_CATCH_UP, MAX_SCHEDULES, ON_TIME, Overlap, Schedule, ScheduleSpec, ScheduleView,
};
use super::{Effect, Engine, Now, StoreOp};

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{0}")]
    Invalid(String),
    #[error("{MAX_SCHEDULES} schedules exist, the most a master keeps; delete one first")]
    Full,
}

impl Engine {
    /// Makes or replaces schedule `name`. A new one counts its firings from
    /// now; a changed one from its last firing.
    pub fn put_schedule(&mut self, now: Now, name: &str, spec: ScheduleSpec) -> Result<ScheduleView, ScheduleError> {
        let compiled = Compiled::new(spec, now.wall_ms).map_err(ScheduleError::Invalid)?;
        let doc = serde_json::to_string(&compiled.spec).map_err(|e| ScheduleError::Invalid(e.to_string()))?;
        let (last_ms, last_job) = match self.schedules.all.get(name) {
            Some(s) => (s.last_ms, s.last_job),
            None if self.schedules.all.len() >= MAX_SCHEDULES => return Err(ScheduleError::Full),
            None => {
                self.effects.push(Effect::Store(StoreOp::Fired { schedule: name.to_owned(), at_ms: now.wall_ms }));
                (now.wall_ms, None)
            }
        };
        self.effects.push(Effect::Store(StoreOp::Named {
            kind: NamedKind::Schedule,
            name: name.to_owned(),
            doc: Some(doc),
        }));
        self.schedules.all.insert(name.to_owned(), Schedule { compiled, last_ms, last_job, next_ms: None });
        self.schedules.arm(name, now);
        self.schedules.view(name).ok_or_else(|| ScheduleError::Invalid("gone".into()))
    }

    /// Removes schedule `name` (the jobs it made stay); false if there was none.
    pub fn delete_schedule(&mut self, name: &str) -> bool {
        if self.schedules.all.remove(name).is_none() {
            return false;
        }
        self.schedules.due.remove(&name.to_owned());
        self.effects.push(Effect::Store(StoreOp::Named {
            kind: NamedKind::Schedule,
            name: name.to_owned(),
            doc: None,
        }));
        true
    }

    pub fn schedules(&self) -> Vec<ScheduleView> {
        self.schedules.all.keys().filter_map(|n| self.schedules.view(n)).collect()
    }

    pub fn schedule_view(&self, name: &str) -> Option<ScheduleView> {
        self.schedules.view(name)
    }

    /// Schedules read back from the store, with their last firings (one
    /// with none counts from now). Firings missed meanwhile are due at once.
    pub fn restore_schedules(
        &mut self,
        now: Now,
        specs: Vec<(String, ScheduleSpec)>,
        firings: HashMap<String, Firing>,
    ) {
        for (name, spec) in specs {
            match Compiled::new(spec, now.wall_ms) {
                Ok(compiled) => {
                    let (last_ms, last_job) = firings.get(&name).map_or((now.wall_ms, None), |f| (f.at_ms, f.job));
                    self.schedules.all.insert(name.clone(), Schedule { compiled, last_ms, last_job, next_ms: None });
                    self.schedules.arm(&name, now);
                }
                Err(e) => tracing::error!(schedule = %name, error = %e, "a stored schedule no longer holds; left out"),
            }
        }
    }

    /// Fires the schedules that are due.
    pub(super) fn fire_due(&mut self, now: Now) {
        for name in self.schedules.due.expired(now.mono) {
            self.fire(now, &name);
        }
    }

    fn fire(&mut self, now: Now, name: &str) {
        let Some(s) = self.schedules.all.get(name) else { return };
        let (compiled, last) = (s.compiled.clone(), s.last_ms);
        let due = compiled.between(last, now.wall_ms, MAX_CATCH_UP);
        let Some(&newest) = due.last() else {
            self.schedules.arm(name, now);
            return;
        };
        let late = now.wall_ms.saturating_sub(newest) > ON_TIME.as_millis() as u64;
        let missed = due.len();
        let firings: Vec<u64> = match compiled.spec.catch_up {
            CatchUp::All => due,
            CatchUp::One => vec![newest],
            CatchUp::None if late => Vec::new(),
            CatchUp::None => vec![newest],
        };
        if firings.is_empty() {
            self.effects.push(Effect::Store(StoreOp::Fired { schedule: name.to_owned(), at_ms: newest }));
            tracing::info!(schedule = %name, missed, "missed firings let go (catch_up: none)");
        }
        for at in firings {
            self.fire_at(now, name, &compiled, at);
        }
        if let Some(s) = self.schedules.all.get_mut(name) {
            s.last_ms = newest;
        }
        self.schedules.arm(name, now);
    }

    /// One firing, for `at`: a job, unless the previous one still runs and
    /// `overlap` says skip.
    fn fire_at(&mut self, now: Now, name: &str, compiled: &Compiled, at: u64) {
        let previous = self.schedules.all.get(name).and_then(|s| s.last_job).filter(|j| self.jobs.contains_key(j));
        let after = match (compiled.spec.overlap, previous) {
            (Overlap::Skip, Some(running)) => {
                tracing::info!(schedule = %name, job = %running, "firing skipped: the previous firing's job has not ended");
                self.effects.push(Effect::Store(StoreOp::Fired { schedule: name.to_owned(), at_ms: at }));
                return;
            }
            (Overlap::Queue, previous) => previous,
            _ => None,
        };
        let job = compiled.job(name, at, after);
        let id = job.id;
        match self.submit(now, vec![job]) {
            Ok(_) => {
                if let Some(s) = self.schedules.all.get_mut(name) {
                    s.last_job = Some(id);
                }
            }
            Err(e) => {
                tracing::warn!(schedule = %name, error = %e, "a firing could not make its job");
                self.effects.push(Effect::Store(StoreOp::Fired { schedule: name.to_owned(), at_ms: at }));
            }
        }
    }
}
