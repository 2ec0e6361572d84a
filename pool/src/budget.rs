//! Shares per second Stratum miners may have verified, all together: a
//! token bucket refilled at the budget (a share of the verifier's measured
//! capacity) from the pool's start, in bursts of 2 s, with a part that
//! connections with no accepted share may use between them. No I/O, the
//! time passed in.

use std::time::Instant;

use faena_common::bucket::TokenBucket;

/// The part of the verification budget connections with no accepted share
/// may use between them.
const UNPROVEN_SHARE: f64 = 0.25;

#[derive(Debug)]
pub(crate) struct Budget {
    /// Made at the first share, when the budget's rate is first known,
    /// and filled at that rate from `since`: a pool up for 2 s holds its
    /// whole burst.
    bucket: Option<TokenBucket>,
    since: Instant,
    /// What connections that have not had a share accepted yet may use,
    /// all together: junk from many addresses cannot crowd out miners who
    /// have shown real work.
    unproven: TokenBucket,
    /// Shares refused for the budget, by this or by an address's part.
    pub(crate) over: u64,
}

impl Budget {
    /// The whole starts empty at `now` and fills at the budget's rate from
    /// then; the unproven part starts with a flurry of 16 (both follow the
    /// budget from the first share on).
    pub(crate) fn new(now: Instant) -> Self {
        Self { bucket: None, since: now, unproven: TokenBucket::full(1.0, 16.0, now), over: 0 }
    }

    /// Takes one share from the unproven part unless `proven`, and from
    /// the whole, at `rate` shares a second. A share the whole refuses
    /// leaves the unproven part as it was: a spent whole costs the
    /// unproven nothing.
    pub(crate) fn take(&mut self, rate: f64, proven: bool, now: Instant) -> bool {
        let since = self.since;
        let whole = self.bucket.get_or_insert_with(|| TokenBucket::empty(rate, rate * 2.0, since));
        whole.set_rate(rate, rate * 2.0, now);
        let unproven = (rate * UNPROVEN_SHARE).max(1.0);
        self.unproven.set_rate(unproven, (unproven * 2.0).max(16.0), now);
        if !proven && !self.unproven.take(now) {
            return false;
        }
        if whole.take(now) {
            return true;
        }
        if !proven {
            self.unproven.give_back();
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_share_the_whole_refuses_costs_the_unproven_nothing() {
        let t = Instant::now();
        let mut b = Budget::new(t);
        // The whole starts empty: 100 unproven shares at once are all
        // refused, and the unproven part's 16 are still there after.
        assert_eq!((0..100).filter(|_| b.take(4.0, false, t)).count(), 0);
        // 4 s later the whole holds its burst of 8 (2 s at 4/s): all of
        // them go to unproven shares, which have kept their 16.
        let later = t + Duration::from_secs(4);
        assert_eq!((0..100).filter(|_| b.take(4.0, false, later)).count(), 8);
    }

    #[test]
    fn the_whole_fills_at_the_budgets_rate_from_the_start() {
        let t = Instant::now();
        let mut b = Budget::new(t);
        // The first share comes 3 s after the start, the budget then known
        // to be 10 shares/s: the whole holds its burst of 20 (2 s), not
        // what a placeholder rate would have put there.
        let first = t + Duration::from_secs(3);
        assert_eq!((0..100).filter(|_| b.take(10.0, true, first)).count(), 20);
        // Then the rate: 1 s more, 10 more.
        let later = first + Duration::from_secs(1);
        assert_eq!((0..100).filter(|_| b.take(10.0, true, later)).count(), 10);
    }

    #[test]
    fn the_unproven_use_only_their_part_and_the_proven_the_rest() {
        let t = Instant::now();
        let mut b = Budget::new(t);
        let later = t + Duration::from_secs(10);
        // 100 shares/s, bursts of 200; the unproven 25/s, bursts of 50.
        b.take(100.0, true, t);
        assert_eq!((0..500).filter(|_| b.take(100.0, false, later)).count(), 50);
        assert_eq!((0..500).filter(|_| b.take(100.0, true, later)).count(), 150);
        assert_eq!((0..500).filter(|_| b.take(100.0, true, later)).count(), 0);
    }
}
