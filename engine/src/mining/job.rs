//! One mining job: its current template (parameters and range ledger), the
//! template it replaced while that one's late shares are still welcome, the
//! verified shares, and each participant's tally.
//!
//! Sizing (guided self-scheduling): a participant's slice is half its speed's
//! share of what is left — `left × speed / (2 × total speed)` — capped at
//! [`UNIT_MAX_SECS`] of its work and at least [`UNIT_MIN_SECS`]. The first
//! round thus divides the range among the capable workers in proportion to
//! their speed; slices shrink as the range runs out, so participants finish
//! close together; and whatever one gives back (it died, left, or drained)
//! goes back to be re-split among those still there, as does what is left
//! for one that joins or finishes early.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use faena_proto::ids::{JobId, WorkerId};
use faena_proto::mine::{FoundShare, MineOutput, MineParams, MineProgress, Share, WorkerTally};

use super::ledger::{Ledger, Slice};

/// Longest slice, in seconds of the participant's measured (or estimated)
/// speed: bounds how long a joining worker can find nothing left to take.
pub const UNIT_MAX_SECS: f64 = 30.0;
/// Shortest slice: below a second, dispatch overhead starts to show.
pub const UNIT_MIN_SECS: f64 = 1.0;
/// Never fewer nonces than this in a slice (unless fewer are left).
const UNIT_MIN_NONCES: u64 = 16;

/// What a template is: its parameters (key, blob, target, range) and ledger.
#[derive(Debug, Clone)]
pub(super) struct Template {
    pub id: u32,
    pub params: MineParams,
    pub ledger: Ledger,
}

impl Template {
    fn new(id: u32, params: MineParams) -> Option<Self> {
        let work = params.work().ok()?;
        Some(Self { id, ledger: Ledger::new(u64::from(work.start), work.count), params })
    }
}

#[derive(Debug, Clone)]
pub(super) struct MiningJob {
    pub template: Template,
    /// The template this one replaced, and until when its shares count (as stale).
    pub previous: Option<(Template, Instant)>,
    max_shares: Option<u32>,
    /// Verified shares by (template, nonce).
    shares: BTreeMap<(u32, u32), FoundShare>,
    /// Shares not shown to watchers yet.
    new_shares: Vec<FoundShare>,
    tallies: BTreeMap<String, WorkerTally>,
    stale: u32,
    started: Option<Instant>,
}

fn tally_for(worker: &str) -> WorkerTally {
    WorkerTally { worker: worker.to_owned(), hashes: 0, hashrate: 0.0, shares: 0, invalid_shares: 0 }
}

impl MiningJob {
    /// None when the parameters are not a valid mining job (checked at submission).
    pub fn new(params: MineParams) -> Option<Self> {
        let max_shares = params.max_shares;
        Some(Self {
            template: Template::new(0, params)?,
            previous: None,
            max_shares,
            shares: BTreeMap::new(),
            new_shares: Vec::new(),
            tallies: BTreeMap::new(),
            stale: 0,
            started: None,
        })
    }

    pub fn is_started(&self) -> bool {
        self.started.is_some()
    }

    pub fn mark_started(&mut self, now: Instant) {
        self.started.get_or_insert(now);
    }

    /// Carves a slice for `unit` on a participant of `speed` H/s among
    /// capable ones totalling `total` H/s: its parameters and the attempts
    /// already spent on that range.
    pub fn carve(
        &mut self,
        unit: JobId,
        participant: WorkerId,
        speed: f64,
        total: f64,
        now: Instant,
    ) -> Option<(MineParams, u32)> {
        let left = self.template.ledger.pending() as f64;
        let share = left * speed / (2.0 * total.max(speed).max(f64::MIN_POSITIVE));
        let want = share.min(speed * UNIT_MAX_SECS).max(speed * UNIT_MIN_SECS).max(UNIT_MIN_NONCES as f64);
        let (start, count, attempts) = self.template.ledger.give_out(unit, participant, want.ceil() as u64)?;
        self.mark_started(now);
        let max_shares = self.max_shares.map(|m| m.saturating_sub(self.shares.len() as u32).max(1));
        Some((self.template.params.unit(start as u32, count, max_shares), attempts))
    }

    fn tally(&mut self, worker: &str) -> &mut WorkerTally {
        self.tallies.entry(worker.to_owned()).or_insert_with(|| tally_for(worker))
    }

    /// Records shares verified for template `template`; a nonce accepted
    /// before counts once. Returns how many were new; those are shown to
    /// watchers with the next progress.
    pub fn add_shares(&mut self, template: u32, worker: &str, shares: &[Share]) -> u32 {
        self.insert_shares(template, worker, shares, true)
    }

    /// Records shares accepted before a restart: counted, not news.
    pub fn restore_shares(&mut self, worker: &str, shares: &[Share]) {
        self.insert_shares(self.template.id, worker, shares, false);
    }

    fn insert_shares(&mut self, template: u32, worker: &str, shares: &[Share], news: bool) -> u32 {
        let mut added = 0;
        for s in shares {
            let key = (template, s.nonce);
            if self.shares.contains_key(&key) {
                continue;
            }
            let found = FoundShare { nonce: s.nonce, hash: s.hash.clone(), worker: worker.to_owned() };
            if news {
                self.new_shares.push(found.clone());
            }
            self.shares.insert(key, found);
            added += 1;
        }
        self.tally(worker).shares += added;
        added
    }

    pub fn add_stale(&mut self, n: u32) {
        self.stale = self.stale.saturating_add(n);
    }

    pub fn add_invalid(&mut self, worker: &str, n: u32) {
        self.tally(worker).invalid_shares += n;
    }

    /// Adds what a finished or restored range did to its participant's tally.
    pub fn credit(&mut self, worker: &str, hashes: u64, hashrate: f64) {
        let t = self.tally(worker);
        t.hashes += hashes;
        t.hashrate = hashrate;
    }

    /// Nonces of the current template's accepted shares (for the verifier).
    pub fn known_nonces(&self) -> HashSet<u32> {
        let id = self.template.id;
        self.shares.range((id, 0)..=(id, u32::MAX)).map(|((_, n), _)| *n).collect()
    }

    /// The accepted shares of the current template inside `slice`.
    pub fn slice_shares(&self, slice: &Slice) -> Vec<Share> {
        let id = self.template.id;
        self.shares
            .range((id, 0)..=(id, u32::MAX))
            .filter(|((_, n), _)| slice.contains(*n))
            .map(|(_, s)| Share { nonce: s.nonce, hash: s.hash.clone() })
            .collect()
    }

    pub fn enough_shares(&self) -> bool {
        self.max_shares.is_some_and(|m| self.shares.len() >= m as usize)
    }

    /// The current template is fully mined.
    pub fn is_complete(&self) -> bool {
        self.template.ledger.is_complete()
    }

    fn hashes(&self) -> u64 {
        self.tallies.values().map(|t| t.hashes).sum::<u64>()
            + self.template.ledger.slices().map(|(_, s)| s.hashes).sum::<u64>()
    }

    fn workers(&self) -> Vec<WorkerTally> {
        let mut out = self.tallies.clone();
        for (_, s) in self.template.ledger.slices() {
            let name = s.participant.to_string();
            let t = out.entry(name.clone()).or_insert_with(|| tally_for(&name));
            t.hashes += s.hashes;
            if s.hashrate > 0.0 {
                t.hashrate = s.hashrate;
            }
        }
        out.into_values().collect()
    }

    /// Speed of the participants on the job now: each one's latest rate.
    fn hashrate(&self, workers: &[WorkerTally]) -> f64 {
        let busy: HashSet<String> = self.template.ledger.slices().map(|(_, s)| s.participant.to_string()).collect();
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
        let workers = self.workers();
        let (_, count) = self.template.ledger.range();
        MineProgress {
            hashes: self.hashes(),
            hashrate: self.hashrate(&workers),
            remaining: count.saturating_sub(self.template.ledger.finished()),
            shares: self.shares.len() as u32,
            stale_shares: self.stale,
            new_shares: Vec::new(),
            workers,
        }
    }

    /// The participants that have taken part, comma-separated.
    pub fn worker_list(&self) -> String {
        self.workers().into_iter().map(|t| t.worker).collect::<Vec<_>>().join(",")
    }

    /// The job's result once it is over.
    pub fn output(&self, now: Instant) -> MineOutput {
        let elapsed = self.started.map(|t| now.saturating_duration_since(t)).unwrap_or_default();
        let hashes = self.hashes();
        let mut shares: Vec<FoundShare> = self.shares.values().cloned().collect();
        if let Some(m) = self.max_shares {
            shares.truncate(m as usize);
        }
        let mut ranges = self.template.ledger.done().to_vec();
        ranges.sort_by_key(|r| r.start);
        let secs = elapsed.as_secs_f64();
        MineOutput {
            shares,
            hashes,
            hashrate: if secs > 0.0 { hashes as f64 / secs } else { 0.0 },
            elapsed_ms: elapsed.as_millis() as u64,
            invalid_shares: self.tallies.values().map(|t| t.invalid_shares).sum(),
            stale_shares: self.stale,
            workers: self.workers(),
            ranges,
        }
    }

    /// Replaces the template: the current one's slices are retired and
    /// returned; its shares stay accepted and late ones count as stale until
    /// `grace_until`. None (nothing changed) when `params` are invalid.
    pub fn replace(&mut self, params: MineParams, grace_until: Instant) -> Option<Vec<(JobId, Slice)>> {
        let next = Template::new(self.template.id.wrapping_add(1), params)?;
        let mut old = std::mem::replace(&mut self.template, next);
        let retired = old.ledger.retire();
        self.previous = Some((old, grace_until));
        Some(retired)
    }
}
