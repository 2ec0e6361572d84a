//! How the pool side is tuned: the master's Stratum and mining flags.

use std::sync::Arc;
use std::time::Duration;

use faena_proto::secret::Secret;

/// How the pool side is tuned (flags of the master).
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The interval between a miner's shares vardiff aims at.
    pub share_interval: Duration,
    pub start_difficulty: u64,
    pub min_difficulty: u64,
    /// Difficulty of the Faena workers' shares on a daemon source; 0 sizes
    /// it from their measured speed (one share per interval each).
    pub worker_difficulty: u64,
    /// How long shares for a replaced template still count (as stale).
    pub stale_grace: Duration,
    /// Invalid shares before a miner's address is banned.
    pub invalid_limit: u32,
    pub ban: Duration,
    /// Miners' connections in all, and from one address.
    pub max_connections: usize,
    pub max_per_address: u32,
    /// The part of the verification budget one address may use.
    pub address_share: f64,
    pub max_line: usize,
    /// Requests per second a connection may make (and its burst).
    pub rate: f64,
    pub burst: f64,
    /// A connection silent this long is dropped.
    pub idle: Duration,
    /// A connection has this long to log in.
    pub login_timeout: Duration,
    /// How often a daemon source asks monerod for a new block.
    pub poll: Duration,
    /// How often a daemon source takes a fresh template anyway (new transactions).
    pub template_refresh: Duration,
    /// Share of the verifier's measured capacity Stratum miners may use.
    pub budget_share: f64,
    /// Miners must log in with this password, when set.
    pub password: Option<Arc<Secret>>,
    /// The cluster token: a connection another master or the edge passes
    /// on starts with its miner's address signed with it
    /// ([`faena_proto::stratum::FORWARDED_PREFACE`]), and is counted by that address.
    pub forwarders: Option<Arc<Secret>>,
    /// Blocks and tallies untouched this long leave the mining store.
    pub mining_retention: Option<Duration>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            share_interval: Duration::from_secs(30),
            start_difficulty: 10_000,
            min_difficulty: 100,
            worker_difficulty: 0,
            stale_grace: Duration::from_secs(10),
            invalid_limit: 10,
            ban: Duration::from_secs(600),
            max_connections: 10_000,
            max_per_address: 32,
            address_share: 0.25,
            max_line: 16 * 1024,
            rate: 10.0,
            burst: 40.0,
            idle: Duration::from_secs(600),
            login_timeout: Duration::from_secs(15),
            poll: Duration::from_millis(500),
            template_refresh: Duration::from_secs(60),
            budget_share: 0.8,
            password: None,
            forwarders: None,
            mining_retention: None,
        }
    }
}
