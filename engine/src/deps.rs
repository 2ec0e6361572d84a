//! Dependencies: jobs submitted `after` others wait (`waiting`) until every
//! parent has ended. With the default policy a parent that fails or is
//! cancelled dooms its dependents at once (`dependency_failed`); with
//! `always` they wait for every parent, however it ends. A dependent
//! collects its parents' results as they come, for its unit.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use faena_proto::ids::JobId;
use faena_proto::jobs::JobState;
use faena_proto::options::AfterPolicy;
use serde_json::Value;

/// A parent's end as its dependents see it: its state, its result if it
/// succeeded.
pub type Ended = (JobState, Option<Arc<Value>>);

#[derive(Debug)]
struct Waiting {
    left: HashSet<JobId>,
    policy: AfterPolicy,
    /// Every parent in the order named, and how each ended (so far).
    parents: Vec<(JobId, Option<Ended>)>,
}

/// What becomes of a dependent once a parent ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every parent ended as its policy asks: it may run, with these results.
    Ready(serde_json::Map<String, Value>),
    /// A parent did not succeed: it fails.
    Doomed { parent: JobId, state: JobState },
}

#[derive(Debug, Default)]
pub struct Deps {
    waiting: HashMap<JobId, Waiting>,
    /// For each parent still running, the jobs waiting on it.
    dependents: HashMap<JobId, Vec<JobId>>,
}

impl Deps {
    /// How many jobs wait.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_waiting(&self, id: &JobId) -> bool {
        self.waiting.contains_key(id)
    }

    /// `id` waits for `parents`: those in `ended` have ended already, the
    /// rest have not.
    pub fn add(&mut self, id: JobId, parents: &[JobId], policy: AfterPolicy, ended: &HashMap<JobId, Ended>) {
        let mut left = HashSet::new();
        let mut named = Vec::with_capacity(parents.len());
        for p in parents {
            if named.iter().any(|(n, _)| n == p) {
                continue;
            }
            match ended.get(p) {
                Some(e) => named.push((*p, Some(e.clone()))),
                None => {
                    left.insert(*p);
                    self.dependents.entry(*p).or_default().push(id);
                    named.push((*p, None));
                }
            }
        }
        self.waiting.insert(id, Waiting { left, policy, parents: named });
    }

    /// What `id`'s parents decide now, if they decide yet.
    pub fn verdict(&self, id: &JobId) -> Option<Verdict> {
        let w = self.waiting.get(id)?;
        if w.policy == AfterPolicy::Succeeded
            && let Some((parent, (state, _))) =
                w.parents.iter().find_map(|(p, e)| e.as_ref().filter(|e| e.0 != JobState::Succeeded).map(|e| (*p, e)))
        {
            return Some(Verdict::Doomed { parent, state: *state });
        }
        if !w.left.is_empty() {
            return None;
        }
        let results = w
            .parents
            .iter()
            .map(|(p, e)| {
                let result = e.as_ref().and_then(|(_, r)| r.as_deref().cloned()).unwrap_or(Value::Null);
                (p.to_string(), result)
            })
            .collect();
        Some(Verdict::Ready(results))
    }

    /// `parent` ended: the dependents whose verdict it may have decided.
    pub fn ended(&mut self, parent: JobId, end: Ended) -> Vec<JobId> {
        let Some(deps) = self.dependents.remove(&parent) else { return Vec::new() };
        for d in &deps {
            if let Some(w) = self.waiting.get_mut(d) {
                w.left.remove(&parent);
                if let Some(slot) = w.parents.iter_mut().find(|(p, _)| *p == parent) {
                    slot.1 = Some(end.clone());
                }
            }
        }
        deps
    }

    /// `id` no longer waits (it was released, or ended itself).
    pub fn remove(&mut self, id: &JobId) {
        let Some(w) = self.waiting.remove(id) else { return };
        for p in w.left {
            if let Some(d) = self.dependents.get_mut(&p) {
                d.retain(|x| x != id);
                if d.is_empty() {
                    self.dependents.remove(&p);
                }
            }
        }
    }

    /// Whether anything waits on `id`.
    pub fn has_dependents(&self, id: &JobId) -> bool {
        self.dependents.contains_key(id)
    }
}

/// `jobs` (each with the parents it names) in an order where every parent
/// in the batch comes before its dependents; `Err` with a job on a cycle.
pub fn in_order(jobs: &[(JobId, Vec<JobId>)]) -> Result<Vec<usize>, JobId> {
    let at: HashMap<JobId, usize> = jobs.iter().enumerate().map(|(i, (id, _))| (*id, i)).collect();
    let mut blocking = vec![0usize; jobs.len()];
    let mut unblocks: Vec<Vec<usize>> = vec![Vec::new(); jobs.len()];
    for (i, (_, parents)) in jobs.iter().enumerate() {
        let inside: HashSet<usize> = parents.iter().filter_map(|p| at.get(p).copied()).collect();
        blocking[i] = inside.len();
        for p in inside {
            unblocks[p].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..jobs.len()).rev().filter(|i| blocking[*i] == 0).collect();
    let mut order = Vec::with_capacity(jobs.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for &d in unblocks[i].iter().rev() {
            blocking[d] -= 1;
            if blocking[d] == 0 {
                ready.push(d);
            }
        }
    }
    match order.len() == jobs.len() {
        true => Ok(order),
        false => Err(jobs[(0..jobs.len()).find(|i| blocking[*i] > 0).unwrap_or(0)].0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dependent_is_ready_once_all_succeed_and_doomed_by_the_first_failure() {
        let (a, b, c, d) = (JobId::new(), JobId::new(), JobId::new(), JobId::new());
        let mut deps = Deps::default();
        let done = HashMap::from([(a, (JobState::Succeeded, Some(Arc::new(Value::from(1)))))]);
        deps.add(c, &[a, b, b], AfterPolicy::Succeeded, &done);
        deps.add(d, &[b], AfterPolicy::Always, &HashMap::new());
        assert_eq!(deps.verdict(&c), None, "b has not ended");
        assert_eq!(deps.ended(b, (JobState::Failed, None)), vec![c, d]);
        assert_eq!(deps.verdict(&c), Some(Verdict::Doomed { parent: b, state: JobState::Failed }));
        let Some(Verdict::Ready(results)) = deps.verdict(&d) else { panic!("d runs anyway") };
        assert_eq!(results.get(&b.to_string()), Some(&Value::Null));
        deps.remove(&c);
        deps.remove(&d);
        assert_eq!(deps.waiting(), 0);
        assert!(!deps.has_dependents(&b));
    }

    #[test]
    fn a_batch_is_ordered_parents_first_and_a_cycle_is_named() {
        let ids: Vec<JobId> = (0..4).map(|_| JobId::new()).collect();
        let outside = JobId::new();
        let jobs = vec![(ids[0], vec![ids[2]]), (ids[1], vec![]), (ids[2], vec![ids[1], outside]), (ids[3], vec![])];
        let order = in_order(&jobs).expect("no cycle");
        let pos = |i: usize| order.iter().position(|x| *x == i).expect("all there");
        assert!(pos(1) < pos(2) && pos(2) < pos(0));
        let cycle = vec![(ids[0], vec![ids[1]]), (ids[1], vec![ids[0]]), (ids[2], vec![])];
        assert!(matches!(in_order(&cycle), Err(id) if id == ids[0] || id == ids[1]));
    }
}
