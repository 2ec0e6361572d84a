//! What a mining source (a monerod or a pool Faena does not control) may
//! cost, with no I/O and the time passed in. A hostile or broken source
//! could otherwise send a new seed with every job (each a 2 GiB dataset
//! rebuild), a hundred jobs a second (each a template stored and the
//! workers' units republished), or a difficulty of 1 that makes every share
//! a block (one `submit_block` each).
//!
//! - Templates are taken at most one per [`MIN_TEMPLATE_INTERVAL`]; a newer
//!   one that comes sooner waits for its turn, replacing any that waited
//!   (so the latest is always mined, a little later).
//! - A new seed is taken at most once per [`SEED_COOLDOWN`] (Monero's
//!   changes every 2,048 blocks, about three days); a job with another one
//!   sooner is refused and the source says why.
//! - Blocks are submitted at most [`BLOCKS_PER_MINUTE`] a minute (bursts of
//!   [`BLOCK_BURST`]); past it a share is counted, not submitted. The blocks
//!   a source lists are its last [`BLOCKS_KEPT`].

use std::time::{Duration, Instant};

use faena_common::bucket::TokenBucket;

pub const MIN_TEMPLATE_INTERVAL: Duration = Duration::from_millis(200);
pub const SEED_COOLDOWN: Duration = Duration::from_secs(600);
pub const BLOCKS_PER_MINUTE: f64 = 60.0;
pub const BLOCK_BURST: f64 = 10.0;
pub const BLOCKS_KEPT: usize = 1000;
/// The largest reply read from a source's RPC (a block template is well
/// under a megabyte).
pub const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;

/// What to do with a template a source sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Now,
    /// Too soon after the last: take it at this time unless a newer one comes.
    At(Instant),
    /// A new seed within the cooldown: refused.
    SeedTooSoon,
}

#[derive(Debug)]
pub struct SourceLimits {
    last_template: Option<Instant>,
    key: Option<Vec<u8>>,
    key_changed: Option<Instant>,
    blocks: TokenBucket,
}

impl SourceLimits {
    pub fn new(now: Instant) -> Self {
        Self {
            last_template: None,
            key: None,
            key_changed: None,
            blocks: TokenBucket::full(BLOCKS_PER_MINUTE / 60.0, BLOCK_BURST, now),
        }
    }

    /// Whether a template with seed `key` is taken now.
    pub fn template(&mut self, key: &[u8], now: Instant) -> Take {
        let new_seed = self.key.as_deref().is_some_and(|k| k != key);
        if new_seed && self.key_changed.is_some_and(|at| now.saturating_duration_since(at) < SEED_COOLDOWN) {
            return Take::SeedTooSoon;
        }
        if let Some(last) = self.last_template
            && now.saturating_duration_since(last) < MIN_TEMPLATE_INTERVAL
        {
            return Take::At(last + MIN_TEMPLATE_INTERVAL);
        }
        self.last_template = Some(now);
        if new_seed {
            self.key_changed = Some(now);
        }
        if self.key.as_deref() != Some(key) {
            self.key = Some(key.to_vec());
        }
        Take::Now
    }

    /// Whether a block may be submitted now.
    pub fn block(&mut self, now: Instant) -> bool {
        self.blocks.take(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_paced_and_seeds_change_rarely() {
        let t = Instant::now();
        let mut l = SourceLimits::new(t);
        assert_eq!(l.template(b"a", t), Take::Now, "the first seed is no change");
        assert_eq!(l.template(b"a", t + Duration::from_millis(50)), Take::At(t + MIN_TEMPLATE_INTERVAL));
        let t1 = t + Duration::from_millis(250);
        assert_eq!(l.template(b"a", t1), Take::Now);
        let t2 = t1 + Duration::from_secs(1);
        assert_eq!(l.template(b"b", t2), Take::Now, "a seed change, the first in a while");
        let t3 = t2 + Duration::from_secs(1);
        assert_eq!(l.template(b"c", t3), Take::SeedTooSoon);
        assert_eq!(l.template(b"b", t3), Take::Now, "the current seed is still fine");
        let later = t2 + SEED_COOLDOWN;
        assert_eq!(l.template(b"c", later), Take::Now, "after the cooldown");
        // 100 jobs a second: at most five a second are taken.
        let mut taken = 0;
        for ms in 0..1000u64 {
            if l.template(b"c", later + Duration::from_millis(1000 + ms * 10)) == Take::Now {
                taken += 1;
            }
        }
        assert!(taken <= 50, "{taken} of 100 jobs over 10 s");
    }

    #[test]
    fn blocks_are_submitted_at_a_bounded_rate() {
        let t = Instant::now();
        let mut l = SourceLimits::new(t);
        assert_eq!((0..100).filter(|_| l.block(t)).count(), BLOCK_BURST as usize);
        assert!(l.block(t + Duration::from_secs(1)), "one a second after the burst");
        assert!(!l.block(t + Duration::from_secs(1)));
    }
}
