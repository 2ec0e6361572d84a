//! The one token bucket every rate limit uses (a Stratum connection's
//! requests, the verification budget, a page's events): `rate` tokens a
//! second up to `burst`, with the time passed in, so each limit is tested
//! under a fake clock.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A bucket that starts with its whole burst.
    pub fn full(rate: f64, burst: f64, now: Instant) -> Self {
        Self { rate, burst, tokens: burst, at: now }
    }

    /// A bucket that starts empty.
    pub fn empty(rate: f64, burst: f64, now: Instant) -> Self {
        Self { rate, burst, tokens: 0.0, at: now }
    }

    /// A new rate and burst from now on (a budget that follows a measurement).
    pub fn set_rate(&mut self, rate: f64, burst: f64, now: Instant) {
        self.refill(now);
        self.rate = rate;
        self.burst = burst;
        self.tokens = self.tokens.min(burst);
    }

    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = self.at.max(now);
    }

    /// Takes one token when there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Puts back a token taken for something that then did not happen (up
    /// to the burst).
    pub fn give_back(&mut self) {
        self.tokens = (self.tokens + 1.0).min(self.burst);
    }

    /// Spends one token whether or not there is one, and answers the balance
    /// left: below zero the request was over the rate, and how far below
    /// says how hard the client keeps pushing.
    pub fn spend(&mut self, now: Instant) -> f64 {
        self.refill(now);
        self.tokens -= 1.0;
        self.tokens
    }

    /// How long until a token is there (zero: one is now).
    pub fn ready_in(&mut self, now: Instant) -> std::time::Duration {
        self.refill(now);
        match self.tokens >= 1.0 || self.rate <= 0.0 {
            true => std::time::Duration::ZERO,
            false => std::time::Duration::from_secs_f64((1.0 - self.tokens) / self.rate),
        }
    }

    /// Whether the bucket is full again (nothing to remember about its owner).
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn takes_the_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(2.0, 4.0, t0);
        assert_eq!((0..6).filter(|_| b.take(t0)).count(), 4, "the burst");
        let later = t0 + Duration::from_millis(1500);
        assert_eq!((0..6).filter(|_| b.take(later)).count(), 3, "1.5 s at 2/s");
        assert!(!b.take(later));
        let much_later = later + Duration::from_secs(3600);
        assert_eq!((0..10).filter(|_| b.take(much_later)).count(), 4, "never more than the burst");
    }

    #[test]
    fn spending_goes_into_debt_that_time_pays_back() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(1.0, 2.0, t0);
        assert_eq!(b.spend(t0), 1.0);
        assert_eq!(b.spend(t0), 0.0);
        assert_eq!(b.spend(t0), -1.0);
        assert_eq!(b.spend(t0), -2.0);
        assert_eq!(b.spend(t0 + Duration::from_secs(3)), 0.0);
        assert!(!b.is_full(t0 + Duration::from_secs(3)));
        assert!(b.is_full(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn an_empty_bucket_and_a_new_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::empty(1.0, 10.0, t0);
        assert!(!b.take(t0));
        assert!(b.take(t0 + Duration::from_secs(1)));
        b.set_rate(100.0, 2.0, t0 + Duration::from_secs(1));
        let t = t0 + Duration::from_secs(2);
        assert_eq!((0..5).filter(|_| b.take(t)).count(), 2, "the new burst caps it");
        // A clock read out of order (two tasks) neither adds nor panics.
        assert!(!b.take(t0));
    }

    #[test]
    fn a_token_given_back_is_taken_again_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(1.0, 2.0, t0);
        assert!(b.take(t0) && b.take(t0) && !b.take(t0));
        b.give_back();
        assert!(b.take(t0) && !b.take(t0));
        (0..5).for_each(|_| b.give_back());
        assert_eq!((0..5).filter(|_| b.take(t0)).count(), 2, "never past the burst");
    }
}
