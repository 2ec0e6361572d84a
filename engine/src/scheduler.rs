//! Which worker gets the next job: the registry of workers with their
//! capabilities, free slots and speed, and the placement rule. Pure, no I/O;
//! time comes in as an argument so tests drive it with a fake clock.
//!
//! Placement: among online workers that run the kind and have a free slot,
//! the one with the largest share of free slots wins, ties going to the
//! faster worker, then to the id. No prefetch: a worker never holds more
//! units than it has slots.
//!
//! Speed: the hashrate a worker measured on real work; until it has one, an
//! estimate from its capabilities (cores × 1.5 with AES-NI, ÷8 in light
//! mode) scaled by the H/s per estimated unit of the workers that measured
//! (or, before anyone has, by [`DEFAULT_HS_PER_UNIT`], so speeds read as H/s
//! and mining units get a sensible first size).
//!
//! Quarantine: a worker that submitted too many invalid mining shares gets
//! no more work until it registers again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use faena_proto::ai::Provider;
use faena_proto::ids::{InstanceId, JobId, WorkerId};
use faena_proto::jobs::JobKind;
use faena_randomx::Mode;

use crate::queue::Lane;

#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    pub kinds: HashSet<JobKind>,
    /// Units of any kind but `ai.query` at once.
    pub slots: u32,
    /// `ai.query` units at once (I/O-bound, counted apart).
    pub ai_slots: u32,
    pub cores: u32,
    pub memory_bytes: u64,
    pub aes_ni: bool,
    pub huge_pages: bool,
    pub randomx_modes: Vec<Mode>,
    pub ai_providers: Vec<Provider>,
    /// The model each provider answers with by default.
    pub ai_models: Vec<(Provider, String)>,
    pub version: String,
    /// It reads several units in one message on its jobs topic.
    pub unit_batches: bool,
}

/// H/s per estimated unit before any worker has measured: a fast-mode core
/// with AES-NI (1.5 units) does ~300 H/s; this errs low, so first mining
/// units are short rather than long.
pub const DEFAULT_HS_PER_UNIT: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Online,
    /// Finishing what it has; gets nothing new.
    Draining,
    /// Sent too many invalid shares; gets nothing new until it registers again.
    Quarantined,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Online => "online",
            Availability::Draining => "draining",
            Availability::Quarantined => "quarantined",
        }
    }
}

/// The jobs a worker runs, by kind, with how many are AI queries: its free
/// slots are asked for on every placement, for every worker, and are
/// counted in O(1) however many it runs (counting the map each time cost
/// a placement O(workers × slots)).
#[derive(Debug, Clone, Default)]
pub struct Running {
    jobs: HashMap<JobId, JobKind>,
    ai: u32,
}

impl Running {
    /// Adds (or replaces) job `id`; the kind it had.
    pub fn insert(&mut self, id: JobId, kind: JobKind) -> Option<JobKind> {
        let was = self.jobs.insert(id, kind);
        if kind == JobKind::AiQuery {
            self.ai += 1;
        }
        if was == Some(JobKind::AiQuery) {
            self.ai -= 1;
        }
        was
    }

    /// Takes job `id` out; the kind it had.
    pub fn remove(&mut self, id: &JobId) -> Option<JobKind> {
        let was = self.jobs.remove(id);
        if was == Some(JobKind::AiQuery) {
            self.ai -= 1;
        }
        was
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &JobId> {
        self.jobs.keys()
    }

    /// How many run in the class of AI queries (`ai`) or of the rest.
    fn busy(&self, ai: bool) -> u32 {
        let ai_jobs = self.ai as usize;
        let n = if ai { ai_jobs } else { self.jobs.len() - ai_jobs };
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

#[derive(Debug, Clone)]
pub struct Worker {
    pub id: WorkerId,
    pub instance: InstanceId,
    pub caps: Capabilities,
    pub running: Running,
    pub last_seen: Instant,
    pub availability: Availability,
    pub hashrate: f64,
    /// Invalid mining shares since it registered.
    pub invalid_shares: u32,
    /// What every call after its registration must carry.
    pub session: faena_proto::secret::Secret,
    /// The live configuration it reported running (None: it never reported
    /// one — a worker that does not take live configuration).
    pub config: Option<faena_proto::settings::Applied>,
}

impl Worker {
    fn slots_for(&self, kind: JobKind) -> u32 {
        if kind == JobKind::AiQuery { self.caps.ai_slots } else { self.caps.slots }
    }

    /// Free slots of the class `kind` runs in (AI queries or the rest).
    pub fn free_slots(&self, kind: JobKind) -> u32 {
        self.slots_for(kind).saturating_sub(self.running.busy(kind == JobKind::AiQuery))
    }

    /// Whether it can run jobs of `lane` at all (whatever its state).
    pub fn offers(&self, lane: &Lane) -> bool {
        self.caps.kinds.contains(&lane.kind) && lane.providers.met_by(&self.caps.ai_providers)
    }

    /// Speed from capabilities alone, in arbitrary units: cores, ×1.5 with
    /// AES-NI, ÷8 when it can only run RandomX in light mode.
    fn estimate(&self) -> f64 {
        let aes = if self.caps.aes_ni { 1.5 } else { 1.0 };
        let light_only = !self.caps.randomx_modes.contains(&Mode::Fast);
        f64::from(self.caps.cores.max(1)) * aes * if light_only { 0.125 } else { 1.0 }
    }
}

#[derive(Debug, Default)]
pub struct Scheduler {
    workers: BTreeMap<WorkerId, Worker>,
    /// Workers the autoscaler is about to remove: they get no new work.
    retiring: std::collections::HashSet<WorkerId>,
}

impl Scheduler {
    pub fn get(&self, id: &WorkerId) -> Option<&Worker> {
        self.workers.get(id)
    }

    pub fn get_mut(&mut self, id: &WorkerId) -> Option<&mut Worker> {
        self.workers.get_mut(id)
    }

    /// Adds or replaces a worker. Another instance under a retiring
    /// worker's id (a new task on its slot) is not retiring.
    pub fn insert(&mut self, worker: Worker) -> Option<Worker> {
        let (id, instance) = (worker.id.clone(), worker.instance);
        let old = self.workers.insert(id.clone(), worker);
        if old.as_ref().is_none_or(|o| o.instance != instance) {
            self.retiring.remove(&id);
        }
        old
    }

    pub fn remove(&mut self, id: &WorkerId) -> Option<Worker> {
        self.workers.remove(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// H/s per estimated unit, as measured on the workers that reported a
    /// hashrate (1 when none has): turns estimates into comparable speeds.
    fn scale(&self) -> f64 {
        let (sum, n) = self
            .workers
            .values()
            .filter(|w| w.hashrate > 0.0)
            .fold((0.0, 0u32), |(sum, n), w| (sum + w.hashrate / w.estimate(), n + 1));
        if n == 0 { DEFAULT_HS_PER_UNIT } else { sum / f64::from(n) }
    }

    /// A worker's speed, comparable across workers: its measured hashrate,
    /// else its estimate scaled by what measured workers achieve.
    pub fn speed(&self, w: &Worker) -> f64 {
        Self::speed_at(w, self.scale())
    }

    fn speed_at(w: &Worker, scale: f64) -> f64 {
        if w.hashrate > 0.0 { w.hashrate } else { w.estimate() * scale }
    }

    /// Online workers that run jobs of `lane`.
    fn capable(&self, lane: Lane) -> impl Iterator<Item = &Worker> {
        self.workers.values().filter(move |w| self.takes_work(w) && w.offers(&lane))
    }

    /// Whether `w` is given new work at all: online and not retiring.
    fn takes_work(&self, w: &Worker) -> bool {
        w.availability == Availability::Online && !self.retiring.contains(&w.id)
    }

    /// Takes new work away from `ids` (and gives it back to any retiring
    /// before that is not among them).
    pub fn set_retiring(&mut self, ids: impl IntoIterator<Item = WorkerId>) {
        self.retiring = ids.into_iter().collect();
    }

    /// A worker's state as views and metrics show it: a retiring worker
    /// is `draining` (it gets no new work), whatever it reported.
    pub fn shown_state(&self, w: &Worker) -> &'static str {
        match self.retiring.contains(&w.id) {
            true => Availability::Draining.as_str(),
            false => w.availability.as_str(),
        }
    }

    /// Whether any registered worker, in whatever state, offers `lane`.
    pub fn anyone_offers(&self, lane: &Lane) -> bool {
        self.workers.values().any(|w| w.offers(lane))
    }

    /// Summed speed of the online workers that run `lane`.
    pub fn total_speed(&self, lane: Lane) -> f64 {
        let scale = self.scale();
        self.capable(lane).map(|w| Self::speed_at(w, scale)).sum()
    }

    /// Whether any worker that takes new work has a free slot of either
    /// class: when none has, nothing can be placed, however many jobs (and
    /// groups) wait, and the placing loop need not look at them.
    pub fn has_room(&self) -> bool {
        self.workers
            .values()
            .any(|w| self.takes_work(w) && (w.free_slots(JobKind::Noop) > 0 || w.free_slots(JobKind::AiQuery) > 0))
    }

    /// The worker that should take a job of `lane` now, if any not
    /// `excluded` has a free slot.
    pub fn pick(&self, lane: Lane, excluded: impl Fn(&WorkerId) -> bool) -> Option<WorkerId> {
        let scale = self.scale();
        let kind = lane.kind;
        self.capable(lane)
            .filter(|w| w.free_slots(kind) > 0 && !excluded(&w.id))
            .max_by(|a, b| {
                let share = |w: &Worker| f64::from(w.free_slots(kind)) / f64::from(w.slots_for(kind).max(1));
                share(a)
                    .total_cmp(&share(b))
                    .then(Self::speed_at(a, scale).total_cmp(&Self::speed_at(b, scale)))
                    .then(b.id.cmp(&a.id))
            })
            .map(|w| w.id.clone())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn worker(id: &str, slots: u32, kinds: &[JobKind], now: Instant) -> Worker {
        Worker {
            id: WorkerId::parse(id).expect("valid id"),
            instance: InstanceId::new(),
            caps: Capabilities {
                kinds: kinds.iter().copied().collect(),
                slots,
                ai_slots: slots,
                cores: 2,
                memory_bytes: 1 << 30,
                aes_ni: true,
                huge_pages: false,
                randomx_modes: vec![Mode::Light],
                ai_providers: vec![],
                ai_models: vec![],
                version: "test".into(),
                unit_batches: false,
            },
            running: Running::default(),
            last_seen: now,
            availability: Availability::Online,
            hashrate: 0.0,
            invalid_shares: 0,
            config: Default::default(),
            session: Default::default(),
        }
    }

    #[test]
    fn picks_least_loaded_capable_worker_and_never_overfills() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        s.insert(worker("a", 2, &[JobKind::Noop], now));
        s.insert(worker("b", 2, &[JobKind::Noop, JobKind::RandomxHash], now));
        assert_eq!(s.pick(Lane::of(JobKind::RandomxHash), |_| false).map(|w| w.to_string()).as_deref(), Some("b"));
        let mut placed = Vec::new();
        while let Some(w) = s.pick(Lane::of(JobKind::Noop), |_| false) {
            placed.push(w.to_string());
            s.get_mut(&w).map(|w| w.running.insert(JobId::new(), JobKind::Noop));
        }
        placed.sort();
        assert_eq!(placed, ["a", "a", "b", "b"]);
        assert_eq!(s.pick(Lane::of(JobKind::Noop), |_| false), None);
    }

    /// AI queries and the rest have slots of their own, counted as jobs
    /// come, change kind and go.
    #[test]
    fn free_slots_follow_the_jobs_of_each_class() {
        let now = Instant::now();
        let mut w = worker("w", 3, &[JobKind::Noop, JobKind::AiQuery], now);
        w.caps.ai_slots = 2;
        let (a, b, c) = (JobId::new(), JobId::new(), JobId::new());
        let free = |w: &Worker| (w.free_slots(JobKind::Noop), w.free_slots(JobKind::AiQuery));
        assert_eq!(free(&w), (3, 2));
        w.running.insert(a, JobKind::Noop);
        w.running.insert(b, JobKind::AiQuery);
        assert_eq!(free(&w), (2, 1));
        // The same job again, now of the other class: counted once.
        assert_eq!(w.running.insert(b, JobKind::Noop), Some(JobKind::AiQuery));
        assert_eq!(free(&w), (1, 2));
        assert_eq!(w.running.insert(c, JobKind::AiQuery), None);
        w.running.insert(c, JobKind::AiQuery);
        assert_eq!(free(&w), (1, 1));
        assert_eq!(w.running.remove(&c), Some(JobKind::AiQuery));
        assert_eq!(w.running.remove(&c), None);
        w.running.remove(&a);
        w.running.remove(&b);
        assert_eq!((free(&w), w.running.len(), w.running.is_empty()), ((3, 2), 0, true));
        // Past its slots (a live setting lowered them) it has none free.
        for _ in 0..5 {
            w.running.insert(JobId::new(), JobKind::AiQuery);
        }
        assert_eq!(free(&w), (3, 0));
    }

    #[test]
    fn room_is_a_free_slot_of_either_class_on_a_worker_that_takes_work() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        assert!(!s.has_room(), "no workers");
        let mut w = worker("w", 1, &[JobKind::Noop, JobKind::AiQuery], now);
        w.caps.ai_slots = 1;
        w.running.insert(JobId::new(), JobKind::Noop);
        s.insert(w);
        assert!(s.has_room(), "its AI slot is free");
        let id = WorkerId::parse("w").expect("id");
        s.get_mut(&id).map(|w| w.running.insert(JobId::new(), JobKind::AiQuery));
        assert!(!s.has_room(), "both classes full");
        if let Some(w) = s.get_mut(&id) {
            w.caps.slots = 2;
        }
        assert!(s.has_room());
        s.set_retiring([id.clone()]);
        assert!(!s.has_room(), "a retiring worker takes no new work");
        s.set_retiring([]);
        if let Some(w) = s.get_mut(&id) {
            w.availability = Availability::Draining;
        }
        assert!(!s.has_room(), "nor a draining one");
    }

    #[test]
    fn draining_workers_get_nothing_and_speed_breaks_ties() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        let mut slow = worker("slow", 1, &[JobKind::RandomxHash], now);
        slow.hashrate = 100.0;
        let mut fast = worker("fast", 1, &[JobKind::RandomxHash], now);
        fast.hashrate = 600.0;
        s.insert(slow);
        s.insert(fast);
        assert_eq!(s.pick(Lane::of(JobKind::RandomxHash), |_| false).map(|w| w.to_string()).as_deref(), Some("fast"));
        if let Some(w) = s.get_mut(&WorkerId::parse("fast").expect("id")) {
            w.availability = Availability::Draining;
        }
        assert_eq!(s.pick(Lane::of(JobKind::RandomxHash), |_| false).map(|w| w.to_string()).as_deref(), Some("slow"));
    }
}

#[cfg(test)]
mod speed_tests {
    use super::tests::worker;
    use super::*;

    #[test]
    fn estimates_become_comparable_once_someone_has_measured() {
        let now = Instant::now();
        let mut s = Scheduler::default();
        let mut measured = worker("measured", 1, &[JobKind::RandomxHash], now);
        measured.caps.randomx_modes = vec![Mode::Fast];
        let mut big = worker("big", 1, &[JobKind::RandomxHash], now);
        big.caps.cores = 4;
        big.caps.randomx_modes = vec![Mode::Fast];
        let mut light = worker("light", 1, &[JobKind::RandomxHash], now);
        light.caps.cores = 8;
        // Before any measurement: 2 cores x 1.5 = 3 units at the default H/s per unit.
        assert_eq!(s.speed(&measured), 3.0 * DEFAULT_HS_PER_UNIT);
        measured.hashrate = 600.0;
        s.insert(measured);
        // 600 H/s over 3 units is 200 H/s per unit: 4 x 1.5 x 200, and 8 x 1.5 / 8 x 200.
        assert_eq!(s.speed(&big), 1200.0);
        assert_eq!(s.speed(&light), 300.0);
        s.insert(big);
        s.insert(light);
        assert_eq!(s.pick(Lane::of(JobKind::RandomxHash), |_| false).map(|w| w.to_string()).as_deref(), Some("big"));
    }
}
