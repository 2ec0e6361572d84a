//! When to scale the worker service, as a pure function of what waits, what
//! runs and the time (passed in, so tests run it under a fake clock).
//!
//! - **Up** when some kind's longest-waiting job has waited past the
//!   threshold: by as many workers as that backlog needs (at the workers'
//!   slots each), at least one, never above MAX. After scaling up it waits
//!   for the new workers to register (or for one settle period) before it
//!   adds more, so a slow start does not send it straight to MAX.
//! - **Down** only after a cool-down: nothing has waited and some workers
//!   have been idle for the whole cool-down (and it has been that long
//!   since the last change). It removes idle workers' worth of replicas,
//!   never below MIN. The replicas Swarm removes are the highest-numbered
//!   task slots, so those workers are named in the decision: the
//!   autoscaler drains them first (they get no new work, and finish or hand
//!   back what they run) and only then lowers the count.
//! - Never below MIN or above MAX: a service outside the range is brought
//!   back into it first.

use std::time::{Duration, Instant};

use faena_proto::scaling::KindLoad;

/// The autoscaler's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub min: u32,
    pub max: u32,
    /// Scale up when a job has waited this long.
    pub wait: Duration,
    /// Scale down only after this long with nothing waiting and idle workers.
    pub cooldown: Duration,
    /// After scaling up, how long to wait for the new workers before adding more.
    pub settle: Duration,
}

/// A registered worker as the autoscaler sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerLoad {
    pub id: String,
    /// Its Swarm task slot (from an id ending in `-<slot>`), if it has one.
    pub slot: Option<u32>,
    pub slots: u32,
    pub running: u32,
}

/// What the autoscaler looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// The service's replica count now.
    pub replicas: u32,
    pub workers: Vec<WorkerLoad>,
    /// Per kind with jobs waiting (mining jobs left out).
    pub kinds: Vec<KindLoad>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Hold,
    Up {
        to: u32,
        reason: String,
    },
    /// Drain `remove` (the workers on the slots that go), then scale to `to`.
    Down {
        to: u32,
        reason: String,
        remove: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub settings: Settings,
    last_change: Option<Instant>,
    last_up: Option<(Instant, u32)>,
    calm_since: Option<Instant>,
}

impl Policy {
    pub fn new(settings: Settings) -> Self {
        Self { settings, last_change: None, last_up: None, calm_since: None }
    }

    pub fn decide(&mut self, now: Instant, o: &Observed) -> Decision {
        let (min, max) = (self.settings.min, self.settings.max);
        if o.replicas < min {
            return self.up(now, min, format!("{} replicas is below the minimum {min}", o.replicas));
        }
        if o.replicas > max {
            let remove = highest_slots(o, max);
            return self.down(now, max, format!("{} replicas is above the maximum {max}", o.replicas), remove);
        }
        let late: Vec<&KindLoad> =
            o.kinds.iter().filter(|k| k.queued > 0 && k.oldest_wait_ms >= millis(self.settings.wait)).collect();
        if let Some(worst) = late.iter().max_by_key(|k| k.oldest_wait_ms) {
            self.calm_since = None;
            if o.replicas >= max {
                return Decision::Hold;
            }
            // Workers asked for last time that have not registered yet.
            if let Some((at, to)) = self.last_up
                && (o.workers.len() as u32) < to.min(o.replicas)
                && now.saturating_duration_since(at) < self.settings.settle
            {
                return Decision::Hold;
            }
            let waiting: usize = late.iter().map(|k| k.queued).sum();
            let per_worker = average_slots(o);
            let needed = (waiting as u32).div_ceil(per_worker).max(1);
            let to = o.replicas.saturating_add(needed).min(max);
            let reason = format!(
                "{waiting} {} waiting, the longest {:.1} s (over {:.1} s)",
                late.iter().map(|k| k.kind.as_str()).collect::<Vec<_>>().join("/"),
                worst.oldest_wait_ms as f64 / 1000.0,
                self.settings.wait.as_secs_f64(),
            );
            return self.up(now, to, reason);
        }
        let waiting: usize = o.kinds.iter().map(|k| k.queued).sum();
        // A replica whose worker has not registered runs nothing either.
        let busy = o.workers.iter().filter(|w| w.running > 0).count() as u32;
        let starting = self.last_up.is_some_and(|(at, _)| {
            (o.workers.len() as u32) < o.replicas && now.saturating_duration_since(at) < self.settings.settle
        });
        if waiting > 0 || busy >= o.replicas || o.replicas <= min || starting {
            self.calm_since = None;
            return Decision::Hold;
        }
        let calm = *self.calm_since.get_or_insert(now);
        let since_change = self.last_change.map_or(Duration::MAX, |c| now.saturating_duration_since(c));
        if now.saturating_duration_since(calm) < self.settings.cooldown || since_change < self.settings.cooldown {
            return Decision::Hold;
        }
        let to = busy.max(min);
        if to >= o.replicas {
            return Decision::Hold;
        }
        let reason = format!(
            "nothing waited and {} of {} workers were idle for {:.0} s",
            o.replicas - busy,
            o.replicas,
            self.settings.cooldown.as_secs_f64()
        );
        let remove = highest_slots(o, to);
        self.down(now, to, reason, remove)
    }

    fn up(&mut self, now: Instant, to: u32, reason: String) -> Decision {
        self.last_change = Some(now);
        self.last_up = Some((now, to));
        self.calm_since = None;
        Decision::Up { to, reason }
    }

    fn down(&mut self, now: Instant, to: u32, reason: String, remove: Vec<String>) -> Decision {
        self.last_change = Some(now);
        self.last_up = None;
        self.calm_since = None;
        Decision::Down { to, reason, remove }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Slots per worker, on average over those registered (1 if none).
fn average_slots(o: &Observed) -> u32 {
    let total: u32 = o.workers.iter().map(|w| w.slots).sum();
    (total / (o.workers.len() as u32).max(1)).max(1)
}

/// The workers Swarm removes when the service goes down to `to` replicas:
/// those on task slots above `to` (Swarm removes the highest slots first).
fn highest_slots(o: &Observed, to: u32) -> Vec<String> {
    let mut ids: Vec<String> =
        o.workers.iter().filter(|w| w.slot.is_some_and(|s| s > to)).map(|w| w.id.clone()).collect();
    ids.sort();
    ids
}

/// A worker id's task slot: the number after its last `-` (stack.yml names
/// workers `worker-{{.Task.Slot}}`).
pub fn slot_of(id: &str) -> Option<u32> {
    id.rsplit_once('-').and_then(|(_, n)| n.parse().ok())
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
