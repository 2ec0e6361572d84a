//! What the pool counts, and nothing more: the pool says what happened,
//! the layer above keeps the counters (the master's Prometheus registry
//! implements [`Meter`] and hands itself in, as it does [`crate::JobEngine`]).

use faena_verify::KeyState;

/// Where the pool's counts go.
pub trait Meter: Send + Sync + std::fmt::Debug {
    /// A verification's verdicts; `unverified` are shares the master could
    /// not check (not the miner's fault, never silently dropped).
    fn shares_checked(&self, valid: usize, invalid: usize, unverified: usize);

    /// `n` shares on a mining source: `valid`, `invalid`, `stale`,
    /// `over_budget` or `block_throttled`.
    fn pool_shares(&self, verdict: &'static str, n: u64);

    /// A Stratum connection refused or an address banned: `banned`,
    /// `too_many`, `full` or `ban`.
    fn stratum_refused(&self, reason: &'static str);

    /// A Stratum connection opened (`true`) or closed.
    fn stratum_connection(&self, open: bool);

    /// The verifier's keys as they stand, by how each is hashed.
    fn verifier_keys(&self, keys: &[KeyState]);

    /// A block found and submitted: accepted or not.
    fn block(&self, accepted: bool);

    /// A share sent to an upstream pool: accepted or not.
    fn upstream(&self, accepted: bool);

    /// A standby master's feed of this leader's pool opened (`true`) or
    /// closed; `following` standbys follow now.
    fn follower_feed(&self, opened: bool, following: usize);
}
