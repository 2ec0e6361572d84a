//! A `randomx.mine` job split into units: its nonce range, what is still to
//! hand out, what is out on which worker, what is done, the shares found.
//! Pure bookkeeping; the engine decides when to carve and what to do when a
//! unit ends.
//!
//! Sizing (guided self-scheduling): a worker's unit is half its speed's share
//! of what is left — `left × speed / (2 × total speed)` — capped at
//! [`UNIT_MAX_SECS`] of its work and at least [`UNIT_MIN_SECS`]. The first
//! round thus divides the range among the capable workers in proportion to
//! their speed; units shrink as the range runs out, so workers finish close
//! together; and whatever a worker gives back (it died, left, or drained)
//! goes back into the pool to be re-split among those still there, as does
//! what is left for a worker that joins or finishes early.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use faena_proto::ids::{JobId, WorkerId};
use faena_proto::mine::{FoundShare, MineOutput, MineParams, MineProgress, MinedRange, Share, WorkerTally};

/// Longest unit, in seconds of the worker's measured (or estimated) speed:
/// bounds how long a joining worker can find nothing left to take.
pub const UNIT_MAX_SECS: f64 = 30.0;
/// Shortest unit: below a second, dispatch overhead starts to show.
pub const UNIT_MIN_SECS: f64 = 1.0;
/// Never fewer nonces than this in a unit (unless fewer are left).
const UNIT_MIN_NONCES: u64 = 16;

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

/// A unit out on a worker.
#[derive(Debug, Clone)]
pub struct Unit {
    pub start: u64,
    pub count: u64,
    pub worker: WorkerId,
    pub hashes: u64,
    pub hashrate: f64,
}

#[derive(Debug, Clone)]
pub struct Split {
    params: MineParams,
    start: u64,
    count: u64,
    max_shares: Option<u32>,
    pub pending: Ranges,
    pub units: HashMap<JobId, Unit>,
    done: Vec<MinedRange>,
    shares: BTreeMap<u32, FoundShare>,
    new_shares: Vec<FoundShare>,
    tallies: BTreeMap<String, WorkerTally>,
    started: Option<Instant>,
}

impl Split {
    /// None when the parameters are not a valid mining job (checked at submission).
    pub fn new(params: &serde_json::Value) -> Option<Self> {
        let params: MineParams = serde_json::from_value(params.clone()).ok()?;
        let work = params.work().ok()?;
        let mut pending = Ranges::default();
        pending.insert(u64::from(work.start), work.count, 0);
        Some(Self {
            params,
            start: u64::from(work.start),
            count: work.count,
            max_shares: work.max_shares,
            pending,
            units: HashMap::new(),
            done: Vec::new(),
            shares: BTreeMap::new(),
            new_shares: Vec::new(),
            tallies: BTreeMap::new(),
            started: None,
        })
    }

    pub fn is_started(&self) -> bool {
        self.started.is_some()
    }

    /// Carves the next unit for a worker of `speed` H/s among capable workers
    /// totalling `total` H/s: its parameters and the attempts already used on
    /// that range.
    pub fn carve(&mut self, speed: f64, total: f64, now: Instant) -> Option<(MineParams, u32, u64, u64)> {
        let left = self.pending.total() as f64;
        let share = left * speed / (2.0 * total.max(speed).max(f64::MIN_POSITIVE));
        let want = share.min(speed * UNIT_MAX_SECS).max(speed * UNIT_MIN_SECS).max(UNIT_MIN_NONCES as f64);
        let (start, count, attempts) = self.pending.take(want.ceil() as u64)?;
        self.started.get_or_insert(now);
        let max_shares = self.max_shares.map(|m| m.saturating_sub(self.shares.len() as u32).max(1));
        Some((self.params.unit(start as u32, count, max_shares), attempts, start, count))
    }

    pub fn add_unit(&mut self, id: JobId, start: u64, count: u64, worker: WorkerId) {
        self.units.insert(id, Unit { start, count, worker, hashes: 0, hashrate: 0.0 });
    }

    /// A unit's range goes back to be handed out again.
    pub fn give_back(&mut self, id: &JobId, attempts: u32) {
        if let Some(u) = self.units.remove(id) {
            self.pending.insert(u.start, u.count, attempts);
        }
    }

    fn tally(&mut self, worker: &str) -> &mut WorkerTally {
        self.tallies.entry(worker.to_owned()).or_insert_with(|| WorkerTally {
            worker: worker.to_owned(),
            hashes: 0,
            hashrate: 0.0,
            shares: 0,
            invalid_shares: 0,
        })
    }

    /// Adds verified shares a unit found; those outside its range or already
    /// known are ignored. Returns how many were new.
    pub fn add_shares(&mut self, id: &JobId, worker: &str, shares: &[Share]) -> usize {
        let Some(u) = self.units.get(id) else { return 0 };
        let (start, end) = (u.start, u.start + u.count);
        let mut added = 0;
        for s in shares.iter().filter(|s| (start..end).contains(&u64::from(s.nonce))) {
            if self.shares.contains_key(&s.nonce) {
                continue;
            }
            let found = FoundShare { nonce: s.nonce, hash: s.hash.clone(), worker: worker.to_owned() };
            self.shares.insert(s.nonce, found.clone());
            self.new_shares.push(found);
            added += 1;
        }
        self.tally(worker).shares += added as u32;
        added
    }

    /// The accepted shares inside unit `id`'s range.
    pub fn unit_shares(&self, id: &JobId) -> Vec<Share> {
        let Some(u) = self.units.get(id) else { return Vec::new() };
        let (start, end) = (u.start, u.start + u.count);
        self.shares
            .values()
            .filter(|s| (start..end).contains(&u64::from(s.nonce)))
            .map(|s| Share { nonce: s.nonce, hash: s.hash.clone() })
            .collect()
    }

    pub fn add_invalid(&mut self, worker: &str, n: u32) {
        self.tally(worker).invalid_shares += n;
    }

    pub fn unit_progress(&mut self, id: &JobId, hashes: u64, hashrate: f64) {
        if let Some(u) = self.units.get_mut(id) {
            u.hashes = hashes.min(u.count);
            u.hashrate = hashrate;
        }
    }

    /// A unit finished: its range is done (`hashes` of it hashed).
    pub fn unit_done(&mut self, id: &JobId, hashes: u64, hashrate: f64) {
        let Some(u) = self.units.remove(id) else { return };
        let worker = u.worker.to_string();
        let t = self.tally(&worker);
        t.hashes += hashes;
        t.hashrate = hashrate;
        self.done.push(MinedRange { start: u.start as u32, count: u.count, hashes, worker });
    }

    /// Records a unit still out when the master restarted.
    pub fn restore_out(&mut self, id: JobId, start: u64, count: u64, worker: WorkerId, now: Instant) {
        self.pending.remove(start, count);
        self.started.get_or_insert(now);
        self.add_unit(id, start, count, worker);
    }

    /// Records a unit finished before a restart (read back from the store).
    pub fn restore_done(
        &mut self,
        start: u64,
        count: u64,
        worker: &str,
        output: &faena_proto::mine::UnitOutput,
        now: Instant,
    ) {
        self.pending.remove(start, count);
        self.started.get_or_insert(now);
        let t = self.tally(worker);
        t.hashes += output.hashes;
        t.hashrate = output.hashrate;
        self.done.push(MinedRange { start: start as u32, count, hashes: output.hashes, worker: worker.to_owned() });
        for s in &output.shares {
            let found = FoundShare { nonce: s.nonce, hash: s.hash.clone(), worker: worker.to_owned() };
            if self.shares.insert(s.nonce, found).is_none() {
                self.tally(worker).shares += 1;
            }
        }
    }

    pub fn enough_shares(&self) -> bool {
        self.max_shares.is_some_and(|m| self.shares.len() >= m as usize)
    }

    /// Nothing left to hand out and nothing out.
    pub fn is_complete(&self) -> bool {
        self.pending.is_empty() && self.units.is_empty()
    }

    fn hashes(&self) -> u64 {
        self.tallies.values().map(|t| t.hashes).sum::<u64>() + self.units.values().map(|u| u.hashes).sum::<u64>()
    }

    fn workers(&self) -> Vec<WorkerTally> {
        let mut out = self.tallies.clone();
        for u in self.units.values() {
            let t = out.entry(u.worker.to_string()).or_insert_with(|| WorkerTally {
                worker: u.worker.to_string(),
                hashes: 0,
                hashrate: 0.0,
                shares: 0,
                invalid_shares: 0,
            });
            t.hashes += u.hashes;
            if u.hashrate > 0.0 {
                t.hashrate = u.hashrate;
            }
        }
        out.into_values().collect()
    }

    /// Speed of the workers on the job now: each one's latest rate.
    fn hashrate(&self, workers: &[WorkerTally]) -> f64 {
        let busy: std::collections::HashSet<String> = self.units.values().map(|u| u.worker.to_string()).collect();
        workers.iter().filter(|t| busy.contains(&t.worker)).map(|t| t.hashrate).sum()
    }

    /// Progress for watchers; takes the shares not shown yet.
    pub fn progress(&mut self) -> MineProgress {
        let mut p = self.snapshot();
        p.new_shares = std::mem::take(&mut self.new_shares);
        p
    }

    /// Progress as of now, for a status query.
    pub fn snapshot(&self) -> MineProgress {
        let finished: u64 = self.done.iter().map(|r| r.count).sum();
        let workers = self.workers();
        MineProgress {
            hashes: self.hashes(),
            hashrate: self.hashrate(&workers),
            remaining: self.count.saturating_sub(finished),
            shares: self.shares.len() as u32,
            new_shares: Vec::new(),
            workers,
        }
    }

    /// The workers that have taken part, comma-separated.
    pub fn worker_list(&self) -> String {
        self.workers().into_iter().map(|t| t.worker).collect::<Vec<_>>().join(",")
    }

    /// Nonces of shares already accepted.
    pub fn known_nonces(&self) -> std::collections::HashSet<u32> {
        self.shares.keys().copied().collect()
    }

    /// The job's result once it is over.
    pub fn output(&self, now: Instant) -> MineOutput {
        let elapsed = self.started.map(|t| now.saturating_duration_since(t)).unwrap_or_default();
        let hashes = self.hashes();
        let mut shares: Vec<FoundShare> = self.shares.values().cloned().collect();
        if let Some(m) = self.max_shares {
            shares.truncate(m as usize);
        }
        let mut ranges = self.done.clone();
        ranges.sort_by_key(|r| r.start);
        let secs = elapsed.as_secs_f64();
        MineOutput {
            shares,
            hashes,
            hashrate: if secs > 0.0 { hashes as f64 / secs } else { 0.0 },
            elapsed_ms: elapsed.as_millis() as u64,
            invalid_shares: self.tallies.values().map(|t| t.invalid_shares).sum(),
            workers: self.workers(),
            ranges,
        }
    }

    /// The requested range, for checks.
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn split(start: u32, count: u64) -> Split {
        let p =
            json!({"key": "6b", "blob": "00".repeat(76), "difficulty": 10, "nonce_start": start, "nonce_count": count});
        Split::new(&p).expect("valid")
    }

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
    fn first_round_is_proportional_to_speed_and_units_shrink() {
        let now = Instant::now();
        let mut s = split(1000, 1_000_000);
        // A at 300 H/s and B at 100 H/s: A gets 3/8 of the range, B 1/8 of what is left.
        let (a, ..) = s.carve(300.0, 400.0, now).expect("unit");
        let a = a.work().expect("valid");
        assert_eq!((a.start, a.count), (1000, 9000), "capped at 30 s of A's work");
        let mut s = split(0, 10_000);
        let (a, ..) = s.carve(300.0, 400.0, now).expect("unit");
        let (b, ..) = s.carve(100.0, 400.0, now).expect("unit");
        let (a, b) = (a.work().expect("a"), b.work().expect("b"));
        assert_eq!((a.start, a.count), (0, 3750));
        assert_eq!((b.start, b.count), (3750, 782));
        // At the end, units never fall under a second of work.
        let (c, ..) = s.carve(300.0, 400.0, now).expect("unit");
        assert!(c.work().expect("c").count >= 300);
    }

    #[test]
    fn given_back_ranges_are_handed_out_again_and_everything_is_covered_once() {
        let now = Instant::now();
        let mut s = split(0, 5_000);
        let worker = |n: &str| WorkerId::parse(n).expect("id");
        let mut covered = Vec::new();
        let mut lost = None;
        let mut n = 0;
        while let Some((p, attempts, start, count)) = s.carve(100.0, 200.0, now) {
            let id = JobId::new();
            s.add_unit(id, start, count, worker("w"));
            n += 1;
            if n == 2 && lost.is_none() {
                lost = Some((id, start, count));
                s.give_back(&id, attempts + 1);
                continue;
            }
            let w = p.work().expect("valid");
            covered.push((u64::from(w.start), w.count));
            s.unit_done(&id, w.count, 100.0);
        }
        assert!(s.is_complete());
        covered.sort();
        let mut next = 0;
        for (start, count) in covered {
            assert_eq!(start, next, "no gap, no overlap");
            next = start + count;
        }
        assert_eq!(next, 5_000);
        let out = s.output(now);
        assert_eq!(out.hashes, 5_000);
        assert_eq!(out.ranges.iter().map(|r| r.count).sum::<u64>(), 5_000);
    }

    #[test]
    fn shares_count_once_and_only_inside_the_unit() {
        let now = Instant::now();
        let p = json!({"key": "6b", "blob": "00".repeat(76), "difficulty": 10, "nonce_count": 100, "max_shares": 2});
        let mut s = Split::new(&p).expect("valid");
        let (unit, _, start, count) = s.carve(10.0, 10.0, now).expect("unit");
        assert_eq!(unit.max_shares, Some(2));
        let id = JobId::new();
        s.add_unit(id, start, count, WorkerId::parse("w").expect("id"));
        let share = |nonce| Share { nonce, hash: "aa".into() };
        assert_eq!(s.add_shares(&id, "w", &[share(3), share(3), share(count as u32 + 5)]), 1);
        assert!(!s.enough_shares());
        assert_eq!(s.add_shares(&id, "w", &[share(3), share(7)]), 1);
        assert!(s.enough_shares());
        let progress = s.progress();
        assert_eq!((progress.shares, progress.new_shares.len()), (2, 2));
        assert!(s.progress().new_shares.is_empty());
    }
}
