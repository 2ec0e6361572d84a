//! The bounded priority queue of jobs waiting for a worker: per job kind,
//! ordered by priority then age. Pure data structure, no I/O.
//!
//! Jobs are kept per lane — kind, plus the AI provider a job names — and
//! group, so that a lane no worker can take right now, or a group at its
//! limit, never blocks those behind it; the global order (priority, then
//! fair share between groups, then age) is still what positions report and
//! what dispatch follows. Every key is also in one [`RankedSet`], so a
//! job's position costs O(log n) however deep the queue.

use std::collections::{BTreeMap, HashMap, HashSet};

use faena_proto::ai::ProviderSet;
use faena_proto::ids::JobId;
use faena_proto::jobs::{JobKind, Priority};

use crate::ranked::RankedSet;

/// What a worker must offer to take a job: its kind and, for an AI query
/// that names them, one of its providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lane {
    pub kind: JobKind,
    pub providers: ProviderSet,
}

impl Lane {
    pub fn of(kind: JobKind) -> Self {
        Self { kind, providers: ProviderSet::default() }
    }
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.providers.is_empty() {
            false => write!(f, "{} (provider {})", self.kind, self.providers),
            true => write!(f, "{}", self.kind),
        }
    }
}

/// Where a job is submitted from, for fairness: a group's index
/// ([`NO_GROUP`]: none). The engine names them.
pub type Group = u32;

/// Jobs submitted without a group share this one.
pub const NO_GROUP: Group = 0;

/// What a job is queued by: its priority and sequence number.
pub type Rank = (Priority, u64);

/// The dispatch order: priority, then the job's fair-share tag, then its
/// sequence number. Within a priority each group's jobs are tagged one
/// step apart (a step of [`STEP`] / its weight), starting from the tag
/// last dispatched there (or after the group's own last), so the groups'
/// jobs interleave: a group that queues a million jobs takes every other
/// place, not the next million. With one group, tags follow submission:
/// the order is priority, then age, as without groups.
type Key = (Priority, u64, u64);

/// A fair-share step at weight 1.
pub const STEP: u64 = 1 << 20;

#[derive(Debug, Default)]
pub struct Queue {
    /// One ordered queue per lane and group.
    subs: HashMap<(Lane, Group), BTreeMap<Key, JobId>>,
    at: HashMap<JobId, (Lane, Group, Key)>,
    order: RankedSet<Key>,
    /// The first job of every sub-queue whose group may run, in dispatch order.
    heads: BTreeMap<Key, (Lane, JobId)>,
    /// Groups whose jobs wait (at their concurrency or rate limit).
    blocked: HashSet<Group>,
    /// The lanes each group has jobs in.
    group_lanes: HashMap<Group, HashSet<Lane>>,
    per_priority: [usize; 3],
    /// Per priority, the largest tag dispatched (the fair-share clock).
    clock: [u64; 3],
    /// Per group and priority with jobs queued: its last tag and how many.
    tails: HashMap<(Group, Priority), (u64, usize)>,
    /// Groups weighed other than 1.
    weights: HashMap<Group, u32>,
}

impl Queue {
    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// Queued jobs per priority, high first.
    pub fn depth_by_priority(&self) -> [usize; 3] {
        self.per_priority
    }

    /// Adds a job (a job already queued stays where it is) with its
    /// fair-share `tag` when it had one (requeued: back to its place), else
    /// a new one. Returns how many queued jobs are ahead of it, and its tag.
    pub fn push(&mut self, id: JobId, lane: Lane, group: Group, rank: Rank, tag: Option<u64>) -> (u64, u64) {
        if let Some((_, _, key)) = self.at.get(&id) {
            return (self.order.rank(key) as u64, key.1);
        }
        let (priority, seq) = rank;
        let tail = self.tails.entry((group, priority)).or_insert((0, 0));
        let tag = tag.unwrap_or_else(|| {
            let step = STEP / u64::from(self.weights.get(&group).copied().unwrap_or(1).max(1));
            tail.0.max(self.clock[priority.index()]) + step
        });
        *tail = (tail.0.max(tag), tail.1 + 1);
        let key = (priority, tag, seq);
        let ahead = self.order.rank(&key) as u64;
        let sub = self.subs.entry((lane, group)).or_default();
        let old_head = sub.first_key_value().map(|(k, _)| *k);
        sub.insert(key, id);
        if !self.blocked.contains(&group) && old_head.is_none_or(|h| key < h) {
            if let Some(h) = old_head {
                self.heads.remove(&h);
            }
            self.heads.insert(key, (lane, id));
        }
        self.group_lanes.entry(group).or_default().insert(lane);
        self.at.insert(id, (lane, group, key));
        self.order.insert(key);
        self.per_priority[priority.index()] += 1;
        (ahead, tag)
    }

    pub fn remove(&mut self, id: &JobId) -> bool {
        let Some((lane, group, key)) = self.at.remove(id) else { return false };
        if let Some(sub) = self.subs.get_mut(&(lane, group)) {
            let was_head = sub.first_key_value().is_some_and(|(k, _)| *k == key);
            sub.remove(&key);
            if was_head
                && self.heads.remove(&key).is_some()
                && let Some((k, next)) = sub.first_key_value()
            {
                self.heads.insert(*k, (lane, *next));
            }
            if sub.is_empty() {
                self.subs.remove(&(lane, group));
                if let Some(lanes) = self.group_lanes.get_mut(&group) {
                    lanes.remove(&lane);
                    if lanes.is_empty() {
                        self.group_lanes.remove(&group);
                    }
                }
            }
        }
        if let Some(tail) = self.tails.get_mut(&(group, key.0)) {
            tail.1 -= 1;
            if tail.1 == 0 {
                self.tails.remove(&(group, key.0));
            }
        }
        self.order.remove(&key);
        self.per_priority[key.0.index()] -= 1;
        true
    }

    /// Takes a job out to run it: the fair-share clock moves to its tag.
    pub fn dispatched(&mut self, id: &JobId) {
        if let Some((_, _, (priority, tag, _))) = self.at.get(id).copied() {
            let clock = &mut self.clock[priority.index()];
            *clock = (*clock).max(tag);
        }
        self.remove(id);
    }

    pub fn contains(&self, id: &JobId) -> bool {
        self.at.contains_key(id)
    }

    /// The first waiting job of every lane and group that may run, in
    /// dispatch order (read as far as needed: there is one per group).
    pub fn heads(&self) -> impl Iterator<Item = (Lane, JobId)> + '_ {
        self.heads.values().copied()
    }

    /// Holds back (or lets go again) every job of `group`.
    pub fn block(&mut self, group: Group, blocked: bool) {
        let changed = if blocked { self.blocked.insert(group) } else { self.blocked.remove(&group) };
        if !changed {
            return;
        }
        for lane in self.group_lanes.get(&group).into_iter().flatten() {
            let Some((key, id)) = self.subs.get(&(*lane, group)).and_then(|s| s.first_key_value()) else { continue };
            match blocked {
                true => self.heads.remove(key),
                false => self.heads.insert(*key, (*lane, *id)),
            };
        }
    }

    /// Whether `group` is held back now.
    pub fn is_blocked(&self, group: Group) -> bool {
        self.blocked.contains(&group)
    }

    /// A group's weight from now on: its new jobs come `weight` times as
    /// often as a group of weight 1's.
    pub fn set_weight(&mut self, group: Group, weight: u32) {
        match weight {
            1 => self.weights.remove(&group),
            w => self.weights.insert(group, w.max(1)),
        };
    }

    /// Jobs ahead of `id` in the dispatch order, or None if it is not
    /// queued. O(log n).
    pub fn position(&self, id: &JobId) -> Option<u64> {
        self.at.get(id).map(|(_, _, key)| self.order.rank(key) as u64)
    }

    /// The lanes that have jobs waiting.
    pub fn lanes(&self) -> Vec<Lane> {
        let lanes: HashSet<Lane> = self.subs.keys().map(|(l, _)| *l).collect();
        lanes.into_iter().collect()
    }

    /// Per lane: how many jobs wait, and the longest-queued of each
    /// priority in each group (the lowest sequence number among them is
    /// the lane's oldest). O(sub-queues × log n).
    pub fn lane_heads(&self) -> Vec<(Lane, usize, Vec<JobId>)> {
        let mut lanes: HashMap<Lane, (usize, Vec<JobId>)> = HashMap::new();
        for ((lane, _), q) in &self.subs {
            let entry = lanes.entry(*lane).or_default();
            entry.0 += q.len();
            // Each priority's first, from one to the next present: one
            // look-up a priority with jobs (and one past the last).
            let mut next = q.first_key_value();
            while let Some((&(p, _, _), id)) = next {
                entry.1.push(*id);
                next = Priority::ALL.get(p.index() + 1).and_then(|lower| q.range((*lower, 0, 0)..).next());
            }
        }
        lanes.into_iter().map(|(lane, (n, heads))| (lane, n, heads)).collect()
    }

    /// The jobs waiting in `lane`, in dispatch order within each group.
    pub fn in_lane(&self, lane: &Lane) -> Vec<JobId> {
        self.subs.iter().filter(|((l, _), _)| l == lane).flat_map(|(_, q)| q.values().copied()).collect()
    }

    /// Jobs queued in `group`.
    pub fn group_len(&self, group: Group) -> usize {
        Priority::ALL.iter().filter_map(|p| self.tails.get(&(group, *p))).map(|t| t.1).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(q: &mut Queue, id: JobId, kind: JobKind, group: Group, rank: Rank) -> u64 {
        q.push(id, Lane::of(kind), group, rank, None).0
    }

    #[test]
    fn orders_by_priority_then_age_across_kinds() {
        let mut q = Queue::default();
        let ids: Vec<JobId> = (0..4).map(|_| JobId::new()).collect();
        assert_eq!(push(&mut q, ids[0], JobKind::Noop, NO_GROUP, (Priority::Low, 0)), 0);
        assert_eq!(push(&mut q, ids[1], JobKind::RandomxHash, NO_GROUP, (Priority::Normal, 1)), 0);
        assert_eq!(push(&mut q, ids[2], JobKind::Noop, NO_GROUP, (Priority::High, 2)), 0);
        assert_eq!(push(&mut q, ids[3], JobKind::Noop, NO_GROUP, (Priority::Normal, 3)), 2);
        assert_eq!(q.position(&ids[0]), Some(3));
        let heads: Vec<JobId> = q.heads().map(|h| h.1).collect();
        assert_eq!(heads, vec![ids[2], ids[1]]);
        assert_eq!(q.depth_by_priority(), [1, 2, 1]);
        // A job taken out to run and put back goes back to its old place.
        let tag = q.push(ids[1], Lane::of(JobKind::RandomxHash), NO_GROUP, (Priority::Normal, 1), None).1;
        q.dispatched(&ids[1]);
        assert_eq!(push(&mut q, JobId::new(), JobKind::Noop, NO_GROUP, (Priority::Normal, 9)), 2);
        assert_eq!(q.push(ids[1], Lane::of(JobKind::RandomxHash), NO_GROUP, (Priority::Normal, 1), Some(tag)).0, 1);
        assert!(q.remove(&ids[2]));
        assert!(!q.remove(&ids[2]));
        assert_eq!(q.position(&ids[1]), Some(0));
        assert_eq!(q.position(&ids[0]), Some(3));
        assert_eq!(q.len(), 4);
    }

    #[test]
    fn lane_heads_are_each_priority_s_first_in_each_group() {
        let mut q = Queue::default();
        let ids: Vec<JobId> = (0..7).map(|_| JobId::new()).collect();
        let (a, b) = (1, 2);
        for (i, (group, priority)) in [
            (a, Priority::Normal),
            (a, Priority::Low),
            (a, Priority::Normal),
            (a, Priority::High),
            (b, Priority::Low),
            (b, Priority::Low),
        ]
        .into_iter()
        .enumerate()
        {
            push(&mut q, ids[i], JobKind::Noop, group, (priority, i as u64));
        }
        push(&mut q, ids[6], JobKind::RandomxHash, a, (Priority::Normal, 6));
        let mut lanes = q.lane_heads();
        lanes.sort_by_key(|(_, n, _)| *n);
        let [(hash, 1, hash_heads), (noop, 6, noop_heads)] = &mut lanes[..] else { panic!("{lanes:?}") };
        assert_eq!((*hash, hash_heads.as_slice()), (Lane::of(JobKind::RandomxHash), &ids[6..]));
        assert_eq!(*noop, Lane::of(JobKind::Noop));
        noop_heads.sort();
        let mut want = vec![ids[3], ids[0], ids[1], ids[4]];
        want.sort();
        assert_eq!(*noop_heads, want, "a's high, normal and low firsts, b's low first");
    }

    #[test]
    fn groups_take_turns_within_a_priority_and_positions_say_so() {
        let mut q = Queue::default();
        let (a, b) = (1, 2);
        let flood: Vec<JobId> = (0..1_000).map(|_| JobId::new()).collect();
        for (n, id) in flood.iter().enumerate() {
            push(&mut q, *id, JobKind::Noop, a, (Priority::Normal, n as u64));
        }
        // Ten of a's jobs run; then b comes with three.
        for id in &flood[..10] {
            q.dispatched(id);
        }
        let few: Vec<JobId> = (0..3).map(|_| JobId::new()).collect();
        let at: Vec<u64> = few
            .iter()
            .enumerate()
            .map(|(n, id)| push(&mut q, *id, JobKind::Noop, b, (Priority::Normal, 2_000 + n as u64)))
            .collect();
        assert_eq!(at, [1, 3, 5], "every other place, not behind a's 990");
        let order: Vec<JobId> = (0..6)
            .map(|_| {
                let (_, id) = q.heads().next().expect("a head");
                q.dispatched(&id);
                id
            })
            .collect();
        assert_eq!(order, [flood[10], few[0], flood[11], few[1], flood[12], few[2]]);
        // A weight of 3: three of c's for each of a's.
        q.set_weight(3, 3);
        let c: Vec<JobId> = (0..6).map(|_| JobId::new()).collect();
        for (n, id) in c.iter().enumerate() {
            push(&mut q, *id, JobKind::Noop, 3, (Priority::Normal, 3_000 + n as u64));
        }
        let next: Vec<JobId> = (0..8)
            .map(|_| {
                let (_, id) = q.heads().next().expect("a head");
                q.dispatched(&id);
                id
            })
            .collect();
        assert_eq!(next.iter().filter(|id| c.contains(id)).count(), 6, "{next:?}");
        // A blocked group waits; the others go on.
        q.block(a, true);
        assert!(q.heads().all(|(_, id)| !flood.contains(&id)));
        assert_eq!(q.heads().count(), 0);
        q.block(a, false);
        assert_eq!(q.heads().count(), 1);
        assert_eq!(q.group_len(a), 1_000 - 13 - 2);
    }
}
