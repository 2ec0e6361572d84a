//! Per-participant accounting: a Faena worker or a Stratum miner (by its
//! login), with its verified, invalid and stale shares, blocks found, and a
//! hashrate estimated from verified shares — the sum of their difficulties
//! over the last minute, ten minutes and hour, divided by the window (or by
//! the time since it was first seen, when that is shorter).

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use faena_proto::mining::{Hashrates, ParticipantShares, ParticipantView};

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Worker,
    Stratum,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Worker => "worker",
            Self::Stratum => "stratum",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "worker" => Some(Self::Worker),
            "stratum" => Some(Self::Stratum),
            _ => None,
        }
    }
}

/// Who did the work.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Participant {
    pub name: String,
    pub kind: Kind,
}

impl Participant {
    pub fn worker(name: &str) -> Self {
        Self { name: name.to_owned(), kind: Kind::Worker }
    }

    pub fn stratum(name: &str) -> Self {
        Self { name: name.to_owned(), kind: Kind::Stratum }
    }
}

/// A participant's record, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub source: String,
    pub valid: u64,
    pub invalid: u64,
    pub stale: u64,
    pub blocks: u64,
}

#[derive(Debug)]
struct Tally {
    record: Record,
    first_seen: Instant,
    /// Verified shares of the last hour: when, and their difficulty.
    recent: VecDeque<(Instant, u64)>,
}

#[derive(Debug, Default)]
pub struct Accounts {
    tallies: HashMap<Participant, Tally>,
    /// What was counted since the last [`Accounts::take_unsaved`]: the
    /// store adds it to what it holds (several masters count at once).
    unsaved: HashMap<Participant, Record>,
    /// Difficulties of valid shares since the last [`Accounts::take_work`].
    work: HashMap<Participant, u64>,
}

/// Forgets shares older than the hour the hashrates look at.
fn trim(recent: &mut VecDeque<(Instant, u64)>, now: Instant) {
    while recent.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > HOUR) {
        recent.pop_front();
    }
}

/// Most participants kept: a new one is made by its first valid share
/// (real work), and past this many not at all.
pub const MAX_PARTICIPANTS: usize = 100_000;

impl Record {
    fn add(&mut self, other: &Record) {
        self.source.clone_from(&other.source);
        self.valid += other.valid;
        self.invalid += other.invalid;
        self.stale += other.stale;
        self.blocks += other.blocks;
    }
}

impl Accounts {
    /// `who`'s tally; a new one only when `create` (real work), while there is room.
    fn tally(&mut self, who: &Participant, now: Instant, create: bool) -> Option<&mut Tally> {
        if !self.tallies.contains_key(who) && (!create || self.tallies.len() >= MAX_PARTICIPANTS) {
            return None;
        }
        Some(self.tallies.entry(who.clone()).or_insert_with(|| Tally {
            record: Record::default(),
            first_seen: now,
            recent: VecDeque::new(),
        }))
    }

    /// Counts `counted` on `who`'s tally and on what is still to be saved;
    /// a new tally only when `create` (a valid share), while there is room.
    fn count(
        &mut self,
        who: &Participant,
        source: &str,
        now: Instant,
        create: bool,
        counted: Record,
    ) -> Option<&mut Tally> {
        let counted = Record { source: source.to_owned(), ..counted };
        self.tally(who, now, create)?.record.add(&counted);
        self.unsaved.entry(who.clone()).or_default().add(&counted);
        self.tallies.get_mut(who)
    }

    /// What another master counted and saved itself: on the views only.
    /// `work` is the sum of its valid shares' difficulties.
    pub fn merge(&mut self, who: &Participant, counted: Record, work: u64, now: Instant) {
        let create = counted.valid > 0 || counted.blocks > 0;
        let Some(t) = self.tally(who, now, create) else { return };
        t.record.add(&counted);
        if work > 0 {
            t.recent.push_back((now, work));
            trim(&mut t.recent, now);
        }
    }

    /// The difficulties of the valid shares counted since the last call,
    /// by participant (what a follower reports with its counts).
    pub fn take_work(&mut self) -> HashMap<Participant, u64> {
        std::mem::take(&mut self.work)
    }

    /// A record read back from the store at start-up.
    pub fn restore(&mut self, who: Participant, record: Record, now: Instant) {
        self.tallies.insert(who, Tally { record, first_seen: now, recent: VecDeque::new() });
    }

    pub fn valid(&mut self, who: &Participant, source: &str, difficulty: u64, now: Instant) {
        let Some(t) = self.count(who, source, now, true, Record { valid: 1, ..Record::default() }) else { return };
        t.recent.push_back((now, difficulty));
        trim(&mut t.recent, now);
        *self.work.entry(who.clone()).or_default() += difficulty;
    }

    pub fn invalid(&mut self, who: &Participant, source: &str, n: u64, now: Instant) {
        self.count(who, source, now, false, Record { invalid: n, ..Record::default() });
    }

    pub fn stale(&mut self, who: &Participant, source: &str, n: u64, now: Instant) {
        self.count(who, source, now, false, Record { stale: n, ..Record::default() });
    }

    pub fn block(&mut self, who: &Participant, source: &str, now: Instant) {
        self.count(who, source, now, true, Record { blocks: 1, ..Record::default() });
    }

    /// What was counted since the last call, for the store to add.
    pub fn take_unsaved(&mut self) -> Vec<(Participant, Record)> {
        std::mem::take(&mut self.unsaved).into_iter().collect()
    }

    /// Counts the store could not take: saved with the next ones.
    pub fn unsave(&mut self, rows: Vec<(Participant, Record)>) {
        for (who, counted) in rows {
            let mine = self.unsaved.entry(who).or_default();
            let source = std::mem::take(&mut mine.source);
            mine.add(&counted);
            // The newer source stays, if one was counted meanwhile.
            if !source.is_empty() {
                mine.source = source;
            }
        }
    }

    /// Everyone, busiest first.
    pub fn view(&self, now: Instant) -> Vec<ParticipantView> {
        let mut out: Vec<ParticipantView> = self
            .tallies
            .iter()
            .map(|(p, t)| {
                let rate = |window: Duration| {
                    let sum: u64 = t
                        .recent
                        .iter()
                        .rev()
                        .take_while(|(at, _)| now.saturating_duration_since(*at) < window)
                        .map(|(_, d)| *d)
                        .sum();
                    let span = window.min(now.saturating_duration_since(t.first_seen)).as_secs_f64().max(1.0);
                    sum as f64 / span
                };
                ParticipantView {
                    name: p.name.clone(),
                    kind: p.kind.as_str().to_owned(),
                    source: t.record.source.clone(),
                    shares: ParticipantShares {
                        valid: t.record.valid,
                        invalid: t.record.invalid,
                        stale: t.record.stale,
                    },
                    hashrate: Hashrates {
                        m1: rate(Duration::from_secs(60)),
                        m10: rate(Duration::from_secs(600)),
                        h1: rate(HOUR),
                    },
                    blocks: t.record.blocks,
                }
            })
            .collect();
        out.sort_by(|a, b| b.hashrate.m10.total_cmp(&a.hashrate.m10).then_with(|| a.name.cmp(&b.name)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashrate_is_share_difficulty_over_the_window() {
        let mut a = Accounts::default();
        let t0 = Instant::now();
        let m = Participant::stratum("rig1");
        for i in 0..120u64 {
            a.valid(&m, "s", 3000, t0 + Duration::from_secs(i * 30));
        }
        a.invalid(&m, "s", 2, t0);
        a.stale(&m, "s", 1, t0);
        let now = t0 + Duration::from_secs(3570);
        let v = a.view(now);
        assert_eq!(v.len(), 1);
        assert_eq!((v[0].shares.valid, v[0].shares.invalid, v[0].shares.stale), (120, 2, 1));
        // One 3000-difficulty share per 30 s is 100 H/s on every window.
        for r in [v[0].hashrate.m1, v[0].hashrate.m10, v[0].hashrate.h1] {
            assert!((r - 100.0).abs() < 10.0, "{r}");
        }
        let unsaved = a.take_unsaved();
        assert_eq!(unsaved.len(), 1);
        assert_eq!((unsaved[0].1.valid, unsaved[0].1.invalid, unsaved[0].1.stale), (120, 2, 1));
        assert!(a.take_unsaved().is_empty());
    }

    /// Another master's counts show in the views, and are not saved here
    /// again (that master saved them); junk makes no participant.
    #[test]
    fn another_masters_counts_show_but_are_not_saved_again() {
        let mut a = Accounts::default();
        let t0 = Instant::now();
        let (rig, junk) = (Participant::stratum("rig1"), Participant::stratum("junk"));
        a.merge(&junk, Record { source: "s".into(), invalid: 9, ..Record::default() }, 0, t0);
        a.merge(&rig, Record { source: "s".into(), valid: 4, stale: 1, ..Record::default() }, 1200, t0);
        let v = a.view(t0 + Duration::from_secs(60));
        assert_eq!(v.len(), 1, "invalid shares alone make no participant");
        assert_eq!((v[0].name.as_str(), v[0].shares.valid, v[0].shares.stale), ("rig1", 4, 1));
        assert!((v[0].hashrate.m10 - 20.0).abs() < 1.0, "1,200 over a minute: {}", v[0].hashrate.m10);
        assert!(a.take_unsaved().is_empty() && a.take_work().is_empty());
        // This master's own valid shares are its work to report.
        a.valid(&rig, "s", 50, t0);
        a.valid(&rig, "s", 70, t0);
        assert_eq!(a.take_work().get(&rig), Some(&120));
        assert!(a.take_work().is_empty());
    }

    /// What the store could not take is saved with what comes next, added
    /// up; what it took is not saved twice.
    #[test]
    fn counts_the_store_did_not_take_are_saved_with_the_next() {
        let mut a = Accounts::default();
        let now = Instant::now();
        let m = Participant::stratum("rig1");
        a.valid(&m, "s1", 1, now);
        let failed = a.take_unsaved();
        a.valid(&m, "s2", 1, now);
        a.block(&m, "s2", now);
        a.unsave(failed);
        let next = a.take_unsaved();
        assert_eq!(next.len(), 1);
        assert_eq!((next[0].1.valid, next[0].1.blocks, next[0].1.source.as_str()), (2, 1, "s2"));
        assert!(a.take_unsaved().is_empty());
        let v = a.view(now);
        assert_eq!((v[0].shares.valid, v[0].blocks), (2, 1), "the view counted each once");
    }

    #[test]
    fn workers_and_miners_of_one_name_are_apart() {
        let mut a = Accounts::default();
        let now = Instant::now();
        a.valid(&Participant::worker("x"), "s", 1, now);
        a.valid(&Participant::stratum("x"), "s", 1, now);
        assert_eq!(a.view(now).len(), 2);
    }

    #[test]
    fn participants_are_made_by_valid_shares_and_bounded() {
        let now = Instant::now();
        let mut a = Accounts::default();
        a.invalid(&Participant::stratum("junk"), "s", 5, now);
        a.stale(&Participant::stratum("junk"), "s", 1, now);
        assert!(a.view(now).is_empty(), "invalid and stale shares make no participant");
        for n in 0..MAX_PARTICIPANTS + 10 {
            a.valid(&Participant::stratum(&format!("rig-{n}")), "s", 1, now);
        }
        assert_eq!(a.view(now).len(), MAX_PARTICIPANTS, "no more than the bound");
        a.valid(&Participant::stratum("rig-0"), "s", 1, now);
        a.invalid(&Participant::stratum("rig-0"), "s", 1, now);
        let rig0 = a.view(now).into_iter().find(|p| p.name == "rig-0").expect("kept");
        assert_eq!((rig0.shares.valid, rig0.shares.invalid), (2, 1), "a known participant's record still counts");
    }
}
