//! The range ledger of one template: which nonces are still to hand out
//! (with the attempts already spent on them), which slices are out on which
//! participant, and which ranges are finished. Every nonce of the template's
//! range is in exactly one of those three places until the template is
//! retired, which is what the property tests check.

use std::collections::{BTreeMap, HashMap};

use faena_proto::ids::{JobId, WorkerId};
use faena_proto::mine::MinedRange;

/// Disjoint nonce ranges, each with the attempts used on it so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ranges(BTreeMap<u64, (u64, u32)>);

impl Ranges {
    pub fn total(&self) -> u64 {
        self.0.values().map(|(count, _)| count).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn insert(&mut self, start: u64, count: u64, attempts: u32) {
        if count > 0 {
            self.0.insert(start, (count, attempts));
        }
    }

    /// Takes up to `want` nonces from the lowest range.
    pub fn take(&mut self, want: u64) -> Option<(u64, u64, u32)> {
        let (&start, &(count, attempts)) = self.0.iter().next()?;
        self.0.remove(&start);
        let n = want.clamp(1, count);
        self.insert(start + n, count - n, attempts);
        Some((start, n, attempts))
    }

    /// Removes `[start, start + count)` wherever it overlaps.
    pub fn remove(&mut self, start: u64, count: u64) {
        let end = start + count;
        let overlapping: Vec<(u64, (u64, u32))> =
            self.0.range(..end).filter(|(s, (c, _))| *s + *c > start).map(|(s, v)| (*s, *v)).collect();
        for (s, (c, attempts)) in overlapping {
            self.0.remove(&s);
            if s < start {
                self.insert(s, start - s, attempts);
            }
            if s + c > end {
                self.insert(end, s + c - end, attempts);
            }
        }
    }
}

/// A slice of the range out on a participant (a Faena worker's unit today;
/// a Stratum miner's slice is the same bookkeeping under another name).
#[derive(Debug, Clone)]
pub struct Slice {
    pub start: u64,
    pub count: u64,
    pub participant: WorkerId,
    pub hashes: u64,
    pub hashrate: f64,
}

impl Slice {
    pub fn contains(&self, nonce: u32) -> bool {
        (self.start..self.start + self.count).contains(&u64::from(nonce))
    }
}

#[derive(Debug, Clone)]
pub struct Ledger {
    start: u64,
    count: u64,
    pending: Ranges,
    out: HashMap<JobId, Slice>,
    done: Vec<MinedRange>,
}

impl Ledger {
    pub fn new(start: u64, count: u64) -> Self {
        let mut pending = Ranges::default();
        pending.insert(start, count, 0);
        Self { start, count, pending, out: HashMap::new(), done: Vec::new() }
    }

    pub fn range(&self) -> (u64, u64) {
        (self.start, self.count)
    }

    pub fn pending(&self) -> u64 {
        self.pending.total()
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Nothing left to hand out and nothing out.
    pub fn is_complete(&self) -> bool {
        self.pending.is_empty() && self.out.is_empty()
    }

    /// Takes up to `want` nonces for `unit` on `participant`: (start, count,
    /// attempts already spent on that range).
    pub fn give_out(&mut self, unit: JobId, participant: WorkerId, want: u64) -> Option<(u64, u64, u32)> {
        let (start, count, attempts) = self.pending.take(want)?;
        self.out.insert(unit, Slice { start, count, participant, hashes: 0, hashrate: 0.0 });
        Some((start, count, attempts))
    }

    pub fn slice(&self, unit: &JobId) -> Option<&Slice> {
        self.out.get(unit)
    }

    pub fn slices(&self) -> impl Iterator<Item = (&JobId, &Slice)> {
        self.out.iter()
    }

    pub fn progress(&mut self, unit: &JobId, hashes: u64, hashrate: f64) {
        if let Some(s) = self.out.get_mut(unit) {
            s.hashes = hashes.min(s.count);
            s.hashrate = hashrate;
        }
    }

    /// A slice's range goes back to be handed out again.
    pub fn give_back(&mut self, unit: &JobId, attempts: u32) -> Option<Slice> {
        let s = self.out.remove(unit)?;
        self.pending.insert(s.start, s.count, attempts);
        Some(s)
    }

    /// A slice that failed for good: out of the ledger, its range neither done
    /// nor handed out again (its job fails).
    pub fn drop_slice(&mut self, unit: &JobId) -> Option<Slice> {
        self.out.remove(unit)
    }

    /// A slice is finished: its range is done, `hashes` of it hashed.
    pub fn finish(&mut self, unit: &JobId, hashes: u64) -> Option<Slice> {
        let s = self.out.remove(unit)?;
        self.done.push(MinedRange { start: s.start as u32, count: s.count, hashes, worker: s.participant.to_string() });
        Some(s)
    }

    /// The template is replaced: every slice out is retired (neither done
    /// nor handed out again) and nothing more is handed out.
    pub fn retire(&mut self) -> Vec<(JobId, Slice)> {
        self.pending = Ranges::default();
        self.out.drain().collect()
    }

    /// A slice that was out when the master restarted.
    pub fn restore_out(&mut self, unit: JobId, start: u64, count: u64, participant: WorkerId) {
        self.pending.remove(start, count);
        self.out.insert(unit, Slice { start, count, participant, hashes: 0, hashrate: 0.0 });
    }

    /// A range finished before a restart.
    pub fn restore_done(&mut self, start: u64, count: u64, hashes: u64, participant: &str) {
        self.pending.remove(start, count);
        self.done.push(MinedRange { start: start as u32, count, hashes, worker: participant.to_owned() });
    }

    pub fn done(&self) -> &[MinedRange] {
        &self.done
    }

    pub fn finished(&self) -> u64 {
        self.done.iter().map(|r| r.count).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_take_and_remove_without_overlap() {
        let mut r = Ranges::default();
        r.insert(0, 100, 0);
        r.remove(10, 5);
        r.remove(90, 20);
        assert_eq!(r.total(), 85);
        assert_eq!(r.take(8), Some((0, 8, 0)));
        assert_eq!(r.take(100), Some((8, 2, 0)));
        assert_eq!(r.take(100), Some((15, 75, 0)));
        assert_eq!(r.take(1), None);
    }

    #[test]
    fn every_nonce_is_pending_out_or_done() {
        let w = WorkerId::parse("w").expect("id");
        let mut l = Ledger::new(100, 50);
        let (a, b) = (JobId::new(), JobId::new());
        assert_eq!(l.give_out(a, w.clone(), 20), Some((100, 20, 0)));
        assert_eq!(l.give_out(b, w.clone(), 20), Some((120, 20, 0)));
        assert_eq!(l.pending(), 10);
        assert!(l.give_back(&a, 1).is_some());
        assert_eq!(l.pending(), 30);
        assert!(l.finish(&b, 20).is_some());
        assert_eq!((l.finished(), l.has_pending(), l.is_complete()), (20, true, false));
        let retired = l.retire();
        assert!(retired.is_empty() && l.is_complete());
    }
}
