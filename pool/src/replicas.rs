//! Stratum on every master: the leader's side, and the wire between it and
//! the other masters' follower pools ([`super::follower`]).
//!
//! The leader owns the sources — their templates, the blocks submitted to
//! monerod, the connection to an upstream pool — and every miner's seat, so
//! no two miners anywhere mine the same nonces. A standby master mirrors the
//! leader's work through a feed it keeps open ([`Hello`], then
//! [`FeedLine`]s), asks the leader for a seat when a miner logs in, verifies
//! that miner's shares with its own verifier and adds their counts to the
//! store itself: verification grows with the masters. A share good enough
//! for upstream comes back to the leader as [`Found`]; what a follower
//! counted is [`Report`]ed, so the leader's views show every miner. A
//! follower's seats are its feed's: when the feed closes they are freed,
//! and when it opens again (on a new leader, too) they are claimed back.

use std::time::Instant;

use faena_proto::mining::{SourceShares, SourceSpec};
use faena_randomx::mine::meets;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::accounts::{Kind, Participant, Record};
use super::{Pool, Template};
use faena_verify::parse_hash;

/// Masters that may follow one leader at once.
pub const MAX_REPLICAS: usize = 64;

/// Most bytes in one line of the feed, or one request of a follower's.
pub const MAX_LINE: usize = 1 << 20;

/// A miner's seat: a slot of one of a source's blobs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatAt {
    pub source: String,
    pub group: u32,
    pub slot: u8,
}

/// A follower opening its feed: who it is, and the seats its miners hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    pub replica: String,
    #[serde(default)]
    pub seats: Vec<SeatAt>,
}

/// A source's current templates, as the followers mirror them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mirror {
    pub id: String,
    /// Without a pool's password ([`super::follower::public_spec`]).
    pub spec: SourceSpec,
    pub templates: Vec<Template>,
}

/// One line of the feed (JSON, newline-terminated).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedLine {
    /// First: the seats claimed in the [`Hello`] that others hold now
    /// (their miners must log in again).
    Refused { seats: Vec<SeatAt> },
    /// Every source with its templates, each time any of them changes.
    Work { sources: Vec<Mirror> },
    /// Nothing changed; the leader is there.
    Alive,
}

/// A share a follower verified that meets its template's upstream target:
/// a block for monerod, or a share for the upstream pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Found {
    pub source: String,
    pub seq: u64,
    pub nonce: u32,
    pub hash: String,
    pub participant: String,
}

/// What a follower counted since its last report (and added to the store).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub replica: String,
    #[serde(default)]
    pub sources: Vec<(String, SourceShares)>,
    #[serde(default)]
    pub participants: Vec<Counted>,
}

/// One participant's counts in a [`Report`]; `work` is the sum of its valid
/// shares' difficulties (the leader's hashrate estimate).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Counted {
    pub name: String,
    pub kind: String,
    pub source: String,
    pub valid: u64,
    pub invalid: u64,
    pub stale: u64,
    pub blocks: u64,
    pub work: u64,
}

impl Counted {
    pub fn new(who: &Participant, record: &Record, work: u64) -> Self {
        Self {
            name: who.name.clone(),
            kind: who.kind.as_str().to_owned(),
            source: record.source.clone(),
            valid: record.valid,
            invalid: record.invalid,
            stale: record.stale,
            blocks: record.blocks,
            work,
        }
    }
}

/// Why the leader turned a follower's request away.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("{MAX_REPLICAS} masters follow already")]
    TooMany,
    #[error("this master has no open feed: open it first")]
    NoFeed,
    #[error("{0}")]
    NoSeat(String),
    #[error("no template {seq} of source {id} (replaced, or the source is gone)")]
    NoTemplate { id: String, seq: u64 },
    #[error("the hash does not meet the template's upstream target")]
    NotUpstream,
}

impl Pool {
    /// A follower's feed opens (again): the seats it held before are let
    /// go, those it claims and nobody took meanwhile are its own again.
    /// Returns the feed's generation and the claimed seats it lost.
    pub fn replica_joined(&self, hello: &Hello) -> Result<(u64, Vec<SeatAt>), Refused> {
        let generation = {
            let mut reps = self.inner.replicas.lock();
            if !reps.live.contains_key(&hello.replica) && reps.live.len() >= MAX_REPLICAS {
                return Err(Refused::TooMany);
            }
            reps.generation += 1;
            let g = reps.generation;
            reps.live.insert(hello.replica.clone(), g);
            self.inner.metrics.follower_feed(true, reps.live.len());
            g
        };
        let mut st = self.inner.state.lock();
        for s in st.sources.values_mut() {
            s.free_remote(&hello.replica);
        }
        let cap = self.inner.cfg.max_connections;
        let mut refused = Vec::new();
        for (i, seat) in hello.seats.iter().enumerate() {
            let key = (seat.group, seat.slot);
            let taken = match st.sources.get_mut(&seat.source) {
                Some(s) if i < cap && seat.slot != 0 && !s.slots.contains(&key) => {
                    s.slots.insert(key);
                    s.remote.insert(key, hello.replica.clone());
                    true
                }
                _ => false,
            };
            if !taken {
                refused.push(seat.clone());
            }
        }
        Ok((generation, refused))
    }

    /// A follower's feed closed: its seats are free (its miners are gone
    /// with it, or will claim them back when it opens the feed again).
    pub fn replica_left(&self, replica: &str, generation: u64) {
        {
            let mut reps = self.inner.replicas.lock();
            if reps.live.get(replica) != Some(&generation) {
                return;
            }
            reps.live.remove(replica);
            self.inner.metrics.follower_feed(false, reps.live.len());
        }
        for s in self.inner.state.lock().sources.values_mut() {
            s.free_remote(replica);
        }
    }

    /// A seat for one of `replica`'s miners, on the source with the fewest.
    pub fn replica_seat(&self, replica: &str) -> Result<SeatAt, Refused> {
        if !self.inner.replicas.lock().live.contains_key(replica) {
            return Err(Refused::NoFeed);
        }
        let held = self.inner.state.lock().sources.values().map(|s| s.held_by(replica)).sum::<usize>();
        if held >= self.inner.cfg.max_connections {
            return Err(Refused::NoSeat(format!("this master holds {held} seats already")));
        }
        let picked = self.pick_seat(Some(replica)).map_err(Refused::NoSeat)?;
        Ok(SeatAt { source: picked.0, group: picked.1, slot: picked.2 })
    }

    /// One of `replica`'s miners left its seat.
    pub fn replica_release(&self, replica: &str, seat: &SeatAt) {
        if let Some(s) = self.inner.state.lock().sources.get_mut(&seat.source) {
            let key = (seat.group, seat.slot);
            if s.remote.get(&key).is_some_and(|r| r == replica) {
                s.remote.remove(&key);
                s.slots.remove(&key);
            }
        }
    }

    /// Changes whenever a source's work does, or a source comes or goes.
    pub fn fed(&self) -> watch::Receiver<u64> {
        self.inner.fed.subscribe()
    }

    pub(super) fn feed_changed(&self) {
        self.inner.fed.send_modify(|n| *n += 1);
    }

    /// Every source with its current templates, for the followers.
    pub fn mirrors(&self) -> Vec<Mirror> {
        let st = self.inner.state.lock();
        st.sources
            .iter()
            .map(|(id, s)| {
                let work = s.work.borrow().clone();
                let templates = work.map(|w| w.templates.iter().map(|t| (**t).clone()).collect()).unwrap_or_default();
                Mirror { id: id.clone(), spec: super::follower::public_spec(&s.spec), templates }
            })
            .collect()
    }

    /// A follower's share good enough for upstream: submitted here, as if
    /// a miner of this master had found it.
    pub fn found(&self, f: &Found) -> Result<(), Refused> {
        let no_template = || Refused::NoTemplate { id: f.source.clone(), seq: f.seq };
        let hash = parse_hash(&f.hash).ok_or(Refused::NotUpstream)?;
        let (template, backend) = {
            let st = self.inner.state.lock();
            let s = st.sources.get(&f.source).ok_or_else(no_template)?;
            let (t, _) = s.template(f.seq, Instant::now()).ok_or_else(no_template)?;
            (t, s.backend.clone())
        };
        if !meets(&hash, template.upstream_target()) {
            return Err(Refused::NotUpstream);
        }
        let who = Participant::stratum(&f.participant);
        self.upstream(&f.source, &template, backend, &who, f.nonce, &hash);
        Ok(())
    }

    /// What a follower counted: on the sources' and participants' views
    /// (the follower saved it in the store itself).
    pub fn merge(&self, report: &Report) {
        let now = Instant::now();
        let mut st = self.inner.state.lock();
        for (id, shares) in &report.sources {
            if let Some(s) = st.sources.get_mut(id) {
                s.shares.valid += shares.valid;
                s.shares.stale += shares.stale;
                s.shares.invalid += shares.invalid;
            }
        }
        for c in &report.participants {
            let Some(kind) = Kind::parse(&c.kind) else { continue };
            let who = Participant { name: c.name.clone(), kind };
            let record = Record {
                source: c.source.clone(),
                valid: c.valid,
                invalid: c.invalid,
                stale: c.stale,
                blocks: c.blocks,
            };
            st.accounts.merge(&who, record, c.work, now);
        }
    }
}
