//! What each client address may cost the Stratum server, across all its
//! connections and beyond them, with no I/O and the time passed in:
//! connections (per address and in all), its part of the verification
//! budget, and bans. A ban outlives the connection that earned it, as
//! pools' bans do: an address whose shares in the ban window are mostly
//! invalid is banned for the ban time, however often it reconnects. The
//! book is bounded: an address is remembered only while it has
//! connections, a ban, or a count in the current window, and at most
//! [`Addresses::capacity`] are remembered at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use faena_common::bucket::TokenBucket;

/// The limits (flags of the master).
#[derive(Debug, Clone)]
pub struct AddressRules {
    /// Connections in all.
    pub max_connections: usize,
    /// Connections from one address.
    pub max_per_address: u32,
    /// Invalid shares an address may send in a window before its ratio is
    /// looked at; past it, more invalid than valid shares is a ban.
    pub invalid_limit: u32,
    /// How long a ban lasts, and the window shares are counted in.
    pub ban: Duration,
    /// The part of the verification budget one address may use (0–1].
    pub budget_share: f64,
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("IP Address currently banned")]
    Banned,
    #[error("Too many connections from your address (limit {0})")]
    TooMany(u32),
    #[error("Server full: too many connections; try again later")]
    Full,
}

impl Refusal {
    /// Its metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Banned => "banned",
            Self::TooMany(_) => "too_many",
            Self::Full => "full",
        }
    }
}

#[derive(Debug)]
struct Record {
    connections: u32,
    banned_until: Option<Instant>,
    /// Shares it sent since `window`: valid and invalid.
    window: Instant,
    valid: u32,
    invalid: u32,
    /// Its part of the verification budget.
    quota: Option<TokenBucket>,
}

impl Record {
    fn new(now: Instant) -> Self {
        Self { connections: 0, banned_until: None, window: now, valid: 0, invalid: 0, quota: None }
    }

    fn banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|until| now < until)
    }

    /// Nothing about it is worth remembering any more.
    fn is_idle(&mut self, now: Instant, window: Duration) -> bool {
        self.connections == 0
            && !self.banned(now)
            && (self.valid + self.invalid == 0 || now.saturating_duration_since(self.window) >= window)
            && self.quota.as_mut().is_none_or(|q| q.is_full(now))
    }
}

#[derive(Debug)]
pub struct Addresses {
    rules: AddressRules,
    book: HashMap<IpAddr, Record>,
    connections: usize,
}

impl Addresses {
    pub fn new(rules: AddressRules) -> Self {
        Self { rules, book: HashMap::new(), connections: 0 }
    }

    /// Most addresses remembered at once: every connected one, and as many
    /// again with a ban or a count.
    pub fn capacity(&self) -> usize {
        self.rules.max_connections.saturating_mul(2).max(1024)
    }

    #[cfg(test)]
    fn connections(&self) -> usize {
        self.connections
    }

    /// The record of `ip`, made room for when new; None when the book is
    /// full of addresses that still matter.
    fn record(&mut self, ip: IpAddr, now: Instant) -> Option<&mut Record> {
        if !self.book.contains_key(&ip) && self.book.len() >= self.capacity() {
            let window = self.rules.ban;
            self.book.retain(|_, r| !r.is_idle(now, window));
            if self.book.len() >= self.capacity() {
                // Full of bans and counts: the ban that ends first goes.
                let oldest = self
                    .book
                    .iter()
                    .filter(|(_, r)| r.connections == 0)
                    .min_by_key(|(_, r)| r.banned_until.unwrap_or(r.window))
                    .map(|(ip, _)| *ip);
                self.book.remove(&oldest?);
            }
        }
        Some(self.book.entry(ip).or_insert_with(|| Record::new(now)))
    }

    /// A new connection from `ip`; [`Addresses::disconnect`] when it ends.
    pub fn connect(&mut self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if self.is_banned(ip, now) {
            return Err(Refusal::Banned);
        }
        if self.connections >= self.rules.max_connections {
            return Err(Refusal::Full);
        }
        let per = self.rules.max_per_address;
        let r = self.record(ip, now).ok_or(Refusal::Full)?;
        if r.connections >= per {
            return Err(Refusal::TooMany(per));
        }
        r.connections += 1;
        self.connections += 1;
        Ok(())
    }

    pub fn disconnect(&mut self, ip: IpAddr, now: Instant) {
        let window = self.rules.ban;
        let Some(r) = self.book.get_mut(&ip) else { return };
        if r.connections > 0 {
            r.connections -= 1;
            self.connections = self.connections.saturating_sub(1);
        }
        if r.is_idle(now, window) {
            self.book.remove(&ip);
        }
    }

    pub fn is_banned(&mut self, ip: IpAddr, now: Instant) -> bool {
        match self.book.get_mut(&ip) {
            Some(r) if r.banned(now) => true,
            Some(r) => {
                r.banned_until = None;
                false
            }
            None => false,
        }
    }

    pub fn ban(&mut self, ip: IpAddr, now: Instant) {
        let until = now + self.rules.ban;
        if let Some(r) = self.record(ip, now) {
            r.banned_until = Some(until);
        }
    }

    /// Takes one share's verification from the address's part of the
    /// budget (`budget` shares a second for all); false when it has used
    /// its part: the share is answered without hashing.
    pub fn take_quota(&mut self, ip: IpAddr, budget: f64, now: Instant) -> bool {
        // Bursts of 4 s, and never fewer than a miner's start-up flurry.
        let rate = (budget * self.rules.budget_share).max(1.0);
        let burst = (rate * 4.0).max(16.0);
        let Some(r) = self.record(ip, now) else { return false };
        let quota = r.quota.get_or_insert_with(|| TokenBucket::full(rate, burst, now));
        quota.set_rate(rate, burst, now);
        quota.take(now)
    }

    /// Puts back the token of a share [`Self::take_quota`] granted and the
    /// whole budget then refused: an address is not charged for shares
    /// nobody hashed.
    pub fn give_back_quota(&mut self, ip: IpAddr) {
        if let Some(q) = self.book.get_mut(&ip).and_then(|r| r.quota.as_mut()) {
            q.give_back();
        }
    }

    /// A verified verdict on one of the address's shares; true when the
    /// address is banned by it.
    pub fn verdict(&mut self, ip: IpAddr, valid: bool, now: Instant) -> bool {
        let AddressRules { invalid_limit, ban, .. } = self.rules;
        let Some(r) = self.record(ip, now) else { return false };
        if now.saturating_duration_since(r.window) >= ban {
            (r.window, r.valid, r.invalid) = (now, 0, 0);
        }
        if valid {
            r.valid = r.valid.saturating_add(1);
            return false;
        }
        r.invalid = r.invalid.saturating_add(1);
        if r.invalid > invalid_limit && r.invalid > r.valid {
            r.banned_until = Some(now + ban);
            (r.window, r.valid, r.invalid) = (now, 0, 0);
            return true;
        }
        false
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.book.len()
    }
}

#[cfg(test)]
mod tests;
