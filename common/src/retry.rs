//! The one retry policy every reconnect and retry loop uses: exponential
//! backoff with full jitter between a floor and a cap, an optional limit on
//! tries, and a server's own `Retry-After` honoured (up to a ceiling).
//!
//! A [`Policy`] is a value; [`Policy::start`] gives a [`Backoff`] that counts
//! the tries of one loop. Jitter spreads the retries of many workers that lost
//! the same master or broker at once, so they do not come back in step.

use std::time::Duration;

/// How a loop waits between tries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// The first delay (before jitter).
    pub initial: Duration,
    /// The longest delay the backoff itself grows to.
    pub max: Duration,
    /// Growth per try.
    pub multiplier: f64,
    /// Fraction of each delay that is random: 0 = none, 0.5 = ±50 %.
    pub jitter: f64,
    /// Most tries in all (the first included); `None` = retry until stopped.
    pub max_tries: Option<u32>,
    /// The longest wait a server's `Retry-After` may ask for.
    pub max_retry_after: Duration,
}

impl Policy {
    /// Reconnecting to a broker or a master: fast at first, then every few
    /// seconds, for as long as it takes.
    pub const RECONNECT: Policy = Policy {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(2),
        multiplier: 2.0,
        jitter: 0.5,
        max_tries: None,
        max_retry_after: Duration::from_secs(30),
    };

    /// Delivering a result the master must get: quick retries, capped low,
    /// so a restarted master hears of it within seconds.
    pub const DELIVERY: Policy = Policy { initial: Duration::from_millis(50), ..Self::RECONNECT };

    /// Calling a remote service that may rate-limit (an AI provider).
    pub fn calls(max_tries: u32) -> Policy {
        Policy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(8),
            multiplier: 2.0,
            jitter: 0.5,
            max_tries: Some(max_tries.max(1)),
            max_retry_after: Duration::from_secs(60),
        }
    }

    pub fn start(self) -> Backoff {
        Backoff { policy: self, tries: 0 }
    }

    /// The delay after `failed` failed tries (≥ 1), before jitter.
    pub fn base(&self, failed: u32) -> Duration {
        let exp = self.multiplier.powi(failed.saturating_sub(1).min(64) as i32);
        let secs = (self.initial.as_secs_f64() * exp).min(self.max.as_secs_f64());
        Duration::from_secs_f64(secs.max(0.0))
    }
}

/// The state of one retrying loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    tries: u32,
}

impl Backoff {
    /// Tries failed so far.
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// Records a failed try; the delay before the next one, or `None` when
    /// the policy's tries are used up. `retry_after` is what the other side
    /// asked for; it wins (capped) over the computed delay.
    pub fn next(&mut self, retry_after: Option<Duration>) -> Option<Duration> {
        self.tries = self.tries.saturating_add(1);
        if self.policy.max_tries.is_some_and(|m| self.tries >= m) {
            return None;
        }
        if let Some(after) = retry_after {
            return Some(after.min(self.policy.max_retry_after));
        }
        let base = self.policy.base(self.tries).as_secs_f64();
        let jitter = self.policy.jitter.clamp(0.0, 1.0);
        let factor = 1.0 - jitter + 2.0 * jitter * rand::random::<f64>();
        Some(Duration::from_secs_f64(base * factor))
    }

    /// The delay before the next try of a loop that never gives up (its
    /// policy has no try limit, as [`Policy::RECONNECT`] and
    /// [`Policy::DELIVERY`]); capped at the policy's `max` should one be set.
    pub fn wait(&mut self) -> Duration {
        self.next(None).unwrap_or(self.policy.max)
    }

    /// Starts over after a success (a reconnect that held).
    pub fn reset(&mut self) {
        self.tries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_up_to_the_cap() {
        let mut b = Policy::RECONNECT.start();
        let mut last_base = Duration::ZERO;
        for n in 1..=12 {
            let d = b.next(None).expect("unbounded");
            let base = Policy::RECONNECT.base(n);
            assert!(base >= last_base, "never shrinks");
            assert!(d.as_secs_f64() >= base.as_secs_f64() * 0.5 - 1e-9, "{n}: {d:?} vs {base:?}");
            assert!(d.as_secs_f64() <= base.as_secs_f64() * 1.5 + 1e-9, "{n}: {d:?} vs {base:?}");
            last_base = base;
        }
        assert_eq!(last_base, Duration::from_secs(2), "capped");
        assert!(b.wait() <= Duration::from_secs(3), "an endless loop always gets a delay");
        b.reset();
        assert_eq!(b.tries(), 0);
        assert!(b.next(None).expect("again") <= Duration::from_millis(150));
    }

    #[test]
    fn provider_calls_back_off_from_half_a_second_to_eight() {
        // Moved here with the AI provider's loop, which now uses this policy.
        let mut b = Policy { max_tries: None, ..Policy::calls(1) }.start();
        for n in 1..12 {
            let d = b.next(None).expect("unbounded").as_secs_f64();
            let base = (0.5 * 2f64.powi(n - 1)).min(8.0);
            assert!(d >= base * 0.5 && d <= base * 1.5, "{n}: {d}");
        }
    }

    #[test]
    fn jitter_spreads_retries() {
        let delays: Vec<Duration> = (0..50).map(|_| Policy::RECONNECT.start().next(None).expect("d")).collect();
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 10, "50 loops do not retry in step: {delays:?}");
    }

    #[test]
    fn tries_are_bounded_and_retry_after_wins_up_to_its_ceiling() {
        let mut b = Policy::calls(3).start();
        assert_eq!(b.next(Some(Duration::from_millis(1500))), Some(Duration::from_millis(1500)));
        assert_eq!(b.next(Some(Duration::from_secs(3600))), Some(Duration::from_secs(60)));
        assert_eq!(b.next(None), None, "three tries in all");
        assert_eq!(Policy::calls(0).start().next(None), None, "at least one try, never a retry");
    }
}
