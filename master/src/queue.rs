//! The bounded priority queue of jobs waiting for a worker: per job kind,
//! ordered by priority then age. Pure data structure, no I/O.
//!
//! Jobs are kept per lane — kind, plus the AI provider a job names — so that
//! a lane no worker can take right now never blocks the lanes behind it; the
//! global order (priority, then sequence number) is still what positions
//! report and what dispatch follows. Every rank is also in one
//! [`RankedSet`], so a job's position costs O(log n) however deep the queue.

use std::collections::{BTreeMap, HashMap};

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

/// Sort key: priority first, then the submission sequence number.
pub type Rank = (Priority, u64);

#[derive(Debug, Default)]
pub struct Queue {
    by_lane: HashMap<Lane, BTreeMap<Rank, JobId>>,
    ranks: HashMap<JobId, (Lane, Rank)>,
    order: RankedSet<Rank>,
    per_priority: [usize; 3],
}

impl Queue {
    pub fn len(&self) -> usize {
        self.ranks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranks.is_empty()
    }

    /// Queued jobs per priority, high first.
    pub fn depth_by_priority(&self) -> [usize; 3] {
        self.per_priority
    }

    /// Adds a job (a job already queued stays where it is); returns how
    /// many queued jobs are ahead of it.
    pub fn push(&mut self, id: JobId, lane: Lane, rank: Rank) -> u64 {
        if let Some((_, at)) = self.ranks.get(&id) {
            return self.order.rank(at) as u64;
        }
        let ahead = self.order.rank(&rank) as u64;
        self.by_lane.entry(lane).or_default().insert(rank, id);
        self.ranks.insert(id, (lane, rank));
        self.order.insert(rank);
        self.per_priority[rank.0.index()] += 1;
        ahead
    }

    pub fn remove(&mut self, id: &JobId) -> bool {
        let Some((lane, rank)) = self.ranks.remove(id) else { return false };
        if let Some(q) = self.by_lane.get_mut(&lane) {
            q.remove(&rank);
            if q.is_empty() {
                self.by_lane.remove(&lane);
            }
        }
        self.order.remove(&rank);
        self.per_priority[rank.0.index()] -= 1;
        true
    }

    pub fn contains(&self, id: &JobId) -> bool {
        self.ranks.contains_key(id)
    }

    /// The first waiting job of every lane, in global order.
    pub fn heads(&self) -> Vec<(Rank, Lane, JobId)> {
        let mut heads: Vec<_> = self
            .by_lane
            .iter()
            .filter_map(|(lane, q)| q.first_key_value().map(|(rank, id)| (*rank, *lane, *id)))
            .collect();
        heads.sort_unstable_by_key(|h| h.0);
        heads
    }

    /// Jobs ahead of `id` across all kinds, or None if it is not queued. O(log n).
    pub fn position(&self, id: &JobId) -> Option<u64> {
        self.ranks.get(id).map(|(_, rank)| self.order.rank(rank) as u64)
    }

    /// The lanes that have jobs waiting.
    pub fn lanes(&self) -> Vec<Lane> {
        self.by_lane.iter().filter(|(_, q)| !q.is_empty()).map(|(l, _)| *l).collect()
    }

    /// Per lane: how many jobs wait, and the longest-queued of each
    /// priority (the lowest sequence number). O(lanes × log n).
    pub fn lane_heads(&self) -> Vec<(Lane, usize, Vec<JobId>)> {
        self.by_lane
            .iter()
            .map(|(lane, q)| {
                let heads = Priority::ALL
                    .iter()
                    .filter_map(|p| q.range((*p, 0)..=(*p, u64::MAX)).next().map(|(_, id)| *id))
                    .collect();
                (*lane, q.len(), heads)
            })
            .collect()
    }

    /// The jobs waiting in `lane`, oldest first within each priority.
    pub fn in_lane(&self, lane: &Lane) -> Vec<JobId> {
        self.by_lane.get(lane).map(|q| q.values().copied().collect()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_by_priority_then_age_across_kinds() {
        let mut q = Queue::default();
        let ids: Vec<JobId> = (0..4).map(|_| JobId::new()).collect();
        assert_eq!(q.push(ids[0], Lane::of(JobKind::Noop), (Priority::Low, 0)), 0);
        assert_eq!(q.push(ids[1], Lane::of(JobKind::RandomxHash), (Priority::Normal, 1)), 0);
        assert_eq!(q.push(ids[2], Lane::of(JobKind::Noop), (Priority::High, 2)), 0);
        assert_eq!(q.push(ids[3], Lane::of(JobKind::Noop), (Priority::Normal, 3)), 2);
        assert_eq!(q.position(&ids[0]), Some(3));
        let heads: Vec<JobId> = q.heads().into_iter().map(|h| h.2).collect();
        assert_eq!(heads, vec![ids[2], ids[1]]);
        assert_eq!(q.depth_by_priority(), [1, 2, 1]);
        // A requeued job goes back to its old place.
        let back = JobId::new();
        assert_eq!(q.push(back, Lane::of(JobKind::Noop), (Priority::Normal, 0)), 1);
        assert!(q.remove(&back));
        assert!(q.remove(&ids[2]));
        assert!(!q.remove(&ids[2]));
        assert_eq!(q.position(&ids[0]), Some(2));
        assert_eq!(q.position(&ids[3]), Some(1));
        assert_eq!(q.len(), 3);
    }
}
