//! What one client may cost the master through the page: limits per client
//! address (sessions, questions, other jobs, across all its sessions — a new
//! `hello` is not a fresh allowance), a rate on every event of a socket, and
//! idle sessions forgotten.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use faena_common::bucket::TokenBucket;

/// Events a socket may send per second (bursts of 4×).
pub const EVENTS_PER_SECOND: f64 = 5.0;
/// Shares a page's mining job stops at (each is re-hashed by the master).
pub const MAX_SHARES: u32 = 100;

/// The per-address limits (`FAENA_WEB_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebLimits {
    /// Sessions one address may keep.
    pub sessions: usize,
    /// Questions one address may ask per minute, all its sessions together.
    pub asks_per_minute: usize,
    /// Hashing and mining jobs one address may start per minute.
    pub jobs_per_minute: usize,
    /// A session with no socket and no running job is forgotten after this.
    pub idle: Duration,
}

impl Default for WebLimits {
    fn default() -> Self {
        Self { sessions: 100, asks_per_minute: 10, jobs_per_minute: 30, idle: Duration::from_secs(3600) }
    }
}

const MINUTE: Duration = Duration::from_secs(60);

/// A rolling one-minute count.
#[derive(Debug, Default)]
struct PerMinute(VecDeque<Instant>);

impl PerMinute {
    /// Takes one if fewer than `limit` were taken in the last minute.
    fn take(&mut self, limit: usize, now: Instant) -> bool {
        while self.0.front().is_some_and(|t| now.saturating_duration_since(*t) >= MINUTE) {
            self.0.pop_front();
        }
        let ok = self.0.len() < limit;
        if ok {
            self.0.push_back(now);
        }
        ok
    }

    fn is_empty(&self, now: Instant) -> bool {
        self.0.back().is_none_or(|t| now.saturating_duration_since(*t) >= MINUTE)
    }
}

#[derive(Debug, Default)]
struct Client {
    sessions: usize,
    asks: PerMinute,
    jobs: PerMinute,
}

/// Per-address counts; an address with nothing left in them is dropped.
#[derive(Debug, Default)]
pub struct Limits {
    cfg: WebLimits,
    clients: HashMap<IpAddr, Client>,
}

/// What a client is asking to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spend {
    Ask,
    Job,
}

impl Limits {
    pub fn new(cfg: WebLimits) -> Self {
        Self { cfg, clients: HashMap::new() }
    }

    pub fn config(&self) -> &WebLimits {
        &self.cfg
    }

    /// A new session for `addr`; Err when it has too many.
    pub fn open_session(&mut self, addr: IpAddr) -> Result<(), String> {
        let limit = self.cfg.sessions;
        let c = self.clients.entry(addr).or_default();
        if c.sessions >= limit {
            return Err(format!(
                "too many sessions from your address (at most {limit}); reuse one, or wait for idle ones to expire"
            ));
        }
        c.sessions += 1;
        Ok(())
    }

    pub fn close_session(&mut self, addr: IpAddr, now: Instant) {
        if let Some(c) = self.clients.get_mut(&addr) {
            c.sessions = c.sessions.saturating_sub(1);
        }
        self.forget_idle(addr, now);
    }

    /// One question or job for `addr`; Err with what to tell it when over.
    pub fn spend(&mut self, addr: IpAddr, what: Spend, now: Instant) -> Result<(), String> {
        let (asks, jobs) = (self.cfg.asks_per_minute, self.cfg.jobs_per_minute);
        let c = self.clients.entry(addr).or_default();
        let ok = match what {
            Spend::Ask => c.asks.take(asks, now),
            Spend::Job => c.jobs.take(jobs, now),
        };
        let out = match (ok, what) {
            (true, _) => Ok(()),
            (false, Spend::Ask) => Err(format!("slow down: at most {asks} questions a minute from your address")),
            (false, Spend::Job) => Err(format!("slow down: at most {jobs} hashing or mining jobs a minute")),
        };
        self.forget_idle(addr, now);
        out
    }

    fn forget_idle(&mut self, addr: IpAddr, now: Instant) {
        if self.clients.get(&addr).is_some_and(|c| c.sessions == 0 && c.asks.is_empty(now) && c.jobs.is_empty(now)) {
            self.clients.remove(&addr);
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.clients.len()
    }
}

/// One socket's event rate: [`EVENTS_PER_SECOND`], in bursts of 4×.
pub fn socket_events(now: Instant) -> TokenBucket {
    TokenBucket::full(EVENTS_PER_SECOND, EVENTS_PER_SECOND * 4.0, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_limited_across_its_sessions_and_forgotten_when_idle() {
        let cfg = WebLimits::default();
        let (mut l, t0) = (Limits::new(cfg), Instant::now());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..cfg.sessions {
            l.open_session(a).expect("under the cap");
        }
        assert!(l.open_session(a).is_err(), "one more is refused");
        l.open_session(b).expect("another address has its own");
        for _ in 0..cfg.asks_per_minute {
            l.spend(a, Spend::Ask, t0).expect("under the rate");
        }
        assert!(l.spend(a, Spend::Ask, t0).is_err_and(|e| e.contains("questions a minute")));
        l.spend(a, Spend::Job, t0).expect("jobs are counted apart");
        l.spend(a, Spend::Ask, t0 + MINUTE).expect("a minute later");
        for _ in 0..cfg.sessions {
            l.close_session(a, t0 + MINUTE * 3);
        }
        l.close_session(b, t0 + MINUTE * 3);
        assert_eq!(l.tracked(), 0, "nothing kept for idle addresses");
    }

    #[test]
    fn a_socket_gets_a_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut b = socket_events(t0);
        let burst = (0..100).take_while(|_| b.take(t0)).count();
        assert_eq!(burst, (EVENTS_PER_SECOND * 4.0) as usize);
        assert!(b.take(t0 + Duration::from_millis(200)), "one more after 1/rate");
        assert!(!b.take(t0 + Duration::from_millis(200)));
    }
}
