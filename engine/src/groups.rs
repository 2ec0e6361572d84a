//! Groups: a tenant, a customer, an API key — whatever a submitter names
//! in `group`. Dispatch is fair between them within each priority (the
//! queue's fair-share tags, weighted), and a group may be limited: at most
//! `max_running` of its jobs out at once, at most `rate` dispatched per
//! second or minute. A group at a limit is held back in the queue (its
//! jobs keep their places) and let go when one of its jobs ends or its
//! next token is due. Group names come from clients: at most
//! `capacity` groups are known at once (those with jobs or limits).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use faena_common::bucket::TokenBucket;
use serde::{Deserialize, Serialize};

use super::deadlines::Deadlines;
use crate::queue::{Group, NO_GROUP};

/// A dispatch rate: `n` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub n: u32,
    pub per: Duration,
}

impl Rate {
    /// `"N/s"`, `"N/min"` or `"N/h"`, N ≥ 1.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("rate {s:?} is not N/s, N/min or N/h with N at least 1");
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "min" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if n == 0 {
            return Err(format!(
                "rate {s:?}: a group rate of 0 would never run a job; remove the group's limits to pause nothing, or cancel its jobs"
            ));
        }
        Ok(Self { n, per })
    }

    fn per_second(&self) -> f64 {
        f64::from(self.n) / self.per.as_secs_f64()
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "s",
            60 => "min",
            _ => "h",
        };
        write!(f, "{}/{unit}", self.n)
    }
}

/// Most a group's weight may be.
pub const MAX_WEIGHT: u32 = 1_000;

/// What a group is allowed, as `PUT /api/groups/{name}` sets it and the
/// store keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<u32>,
    /// `"N/s"`, `"N/min"` or `"N/h"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Its share against groups of weight 1 (1..=1000; 1 when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

impl Limits {
    pub fn check(&self) -> Result<(), String> {
        if self.max_running == Some(0) {
            return Err("max_running must be at least 1 (a group that may run nothing never ends)".into());
        }
        if let Some(r) = &self.rate {
            Rate::parse(r)?;
        }
        if self.weight.is_some_and(|w| !(1..=MAX_WEIGHT).contains(&w)) {
            return Err(format!("weight must be 1..={MAX_WEIGHT}"));
        }
        Ok(())
    }

    fn rate(&self) -> Option<Rate> {
        self.rate.as_deref().and_then(|r| Rate::parse(r).ok())
    }
}

/// Too many groups are known: a new one is refused until some empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{capacity} groups have jobs or limits, the most this master keeps; retry once some have none")]
pub struct GroupsFull {
    pub capacity: usize,
}

/// A group as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupView {
    pub name: String,
    /// Its jobs not yet ended (queued, scheduled, waiting or running).
    pub jobs: usize,
    pub queued: usize,
    pub running: u32,
    #[serde(flatten)]
    pub limits: Limits,
    /// Held back now: at `max_running`, or waiting for its rate.
    pub held: bool,
}

#[derive(Debug)]
struct Known {
    name: String,
    jobs: usize,
    running: u32,
    limits: Option<Limits>,
    bucket: Option<TokenBucket>,
}

#[derive(Debug)]
pub struct Groups {
    ids: HashMap<String, Group>,
    known: HashMap<Group, Known>,
    next: Group,
    /// Rate-limited groups with jobs waiting, by when their next token comes.
    pub(super) due: Deadlines<Group>,
    capacity: usize,
}

impl Groups {
    pub fn new(capacity: usize) -> Self {
        Self { ids: HashMap::new(), known: HashMap::new(), next: NO_GROUP + 1, due: Deadlines::default(), capacity }
    }

    pub fn id(&self, name: &str) -> Option<Group> {
        self.ids.get(name).copied()
    }

    /// Whether `names` (new or known) fit.
    pub fn check_room<'a>(&self, names: impl Iterator<Item = &'a str>) -> Result<(), GroupsFull> {
        let mut new: Vec<&str> = names.filter(|n| !self.ids.contains_key(*n)).collect();
        new.sort_unstable();
        new.dedup();
        match self.known.len() + new.len() > self.capacity {
            true => Err(GroupsFull { capacity: self.capacity }),
            false => Ok(()),
        }
    }

    fn intern(&mut self, name: &str) -> Group {
        if let Some(g) = self.ids.get(name) {
            return *g;
        }
        let g = self.next;
        self.next += 1;
        self.ids.insert(name.to_owned(), g);
        self.known.insert(g, Known { name: name.to_owned(), jobs: 0, running: 0, limits: None, bucket: None });
        g
    }

    /// A job of `name` is made (room checked before).
    pub fn join(&mut self, name: &str) -> Group {
        let g = self.intern(name);
        if let Some(k) = self.known.get_mut(&g) {
            k.jobs += 1;
        }
        g
    }

    /// A job of `g` ended.
    pub fn leave(&mut self, g: Group) {
        if let Some(k) = self.known.get_mut(&g) {
            k.jobs = k.jobs.saturating_sub(1);
        }
        self.forget_if_idle(g);
    }

    fn forget_if_idle(&mut self, g: Group) {
        if self.known.get(&g).is_some_and(|k| k.jobs == 0 && k.running == 0 && k.limits.is_none()) {
            if let Some(k) = self.known.remove(&g) {
                self.ids.remove(&k.name);
            }
            self.due.remove(&g);
        }
    }

    /// Sets (or with none, removes) `name`'s limits; its id and weight.
    pub fn set_limits(&mut self, name: &str, limits: Option<Limits>, now: Instant) -> (Group, u32) {
        let g = self.intern(name);
        if let Some(k) = self.known.get_mut(&g) {
            let rate = limits.as_ref().and_then(Limits::rate);
            k.bucket = match (rate, k.bucket.take()) {
                (None, _) => None,
                (Some(r), Some(mut b)) => {
                    b.set_rate(r.per_second(), f64::from(r.n), now);
                    Some(b)
                }
                (Some(r), None) => Some(TokenBucket::full(r.per_second(), f64::from(r.n), now)),
            };
            k.limits = limits;
        }
        let weight = self.weight(g);
        self.forget_if_idle(g);
        (g, weight)
    }

    pub fn weight(&self, g: Group) -> u32 {
        self.known.get(&g).and_then(|k| k.limits.as_ref()?.weight).unwrap_or(1)
    }

    /// Whether `g` may have a job dispatched now; if its rate holds it,
    /// when it may next.
    pub fn may_run(&mut self, g: Group, now: Instant) -> Result<(), Option<Instant>> {
        let Some(k) = self.known.get_mut(&g) else { return Ok(()) };
        if k.limits.as_ref().and_then(|l| l.max_running).is_some_and(|m| k.running >= m) {
            return Err(None);
        }
        match k.bucket.as_mut().map(|b| b.ready_in(now)) {
            Some(wait) if !wait.is_zero() => Err(Some(now + wait)),
            _ => Ok(()),
        }
    }

    /// One of `g`'s jobs went out to a worker.
    pub fn started(&mut self, g: Group, now: Instant) {
        if let Some(k) = self.known.get_mut(&g) {
            k.running += 1;
            if let Some(b) = k.bucket.as_mut() {
                b.take(now);
            }
        }
    }

    /// One of `g`'s jobs came back from its worker.
    pub fn stopped(&mut self, g: Group) {
        if let Some(k) = self.known.get_mut(&g) {
            k.running = k.running.saturating_sub(1);
        }
        self.forget_if_idle(g);
    }

    pub fn name(&self, g: Group) -> Option<&str> {
        self.known.get(&g).map(|k| k.name.as_str())
    }

    /// Every known group: (id, name, jobs, running, limits).
    pub fn all(&self) -> impl Iterator<Item = (Group, &str, usize, u32, Option<&Limits>)> {
        self.known.iter().map(|(g, k)| (*g, k.name.as_str(), k.jobs, k.running, k.limits.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_zero_is_refused() {
        assert_eq!(Rate::parse("10/s"), Ok(Rate { n: 10, per: Duration::from_secs(1) }));
        assert_eq!(Rate::parse("3/min").map(|r| r.to_string()), Ok("3/min".into()));
        for bad in ["0/s", "10", "ten/s", "5/day", "-1/s"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert!(Rate::parse("0/s").unwrap_err().contains("never run"));
        assert!(Limits { max_running: Some(0), ..Default::default() }.check().is_err());
        assert!(Limits { weight: Some(0), ..Default::default() }.check().is_err());
    }

    #[test]
    fn limits_hold_a_group_back_and_idle_groups_are_forgotten_within_the_bound() {
        let t0 = Instant::now();
        let mut g = Groups::new(2);
        let limits = Limits { max_running: Some(1), rate: Some("2/s".into()), weight: None };
        let (a, _) = g.set_limits("a", Some(limits), t0);
        assert_eq!(g.may_run(a, t0), Ok(()));
        g.started(a, t0);
        assert_eq!(g.may_run(a, t0), Err(None), "at max_running");
        g.stopped(a);
        g.started(a, t0);
        g.stopped(a);
        assert_eq!(g.may_run(a, t0), Err(Some(t0 + Duration::from_millis(500))), "both tokens spent");
        assert_eq!(g.may_run(a, t0 + Duration::from_millis(500)), Ok(()));
        let b = g.join("b");
        assert_eq!(g.check_room(["c"].into_iter()), Err(GroupsFull { capacity: 2 }));
        assert!(g.check_room(["a", "b"].into_iter()).is_ok());
        g.leave(b);
        assert_eq!(g.id("b"), None, "no jobs and no limits: forgotten");
        assert!(g.check_room(["c"].into_iter()).is_ok());
        g.set_limits("a", None, t0);
        assert_eq!(g.id("a"), None);
    }
}
