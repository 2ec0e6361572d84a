//! One miner connection's rules, with no I/O and the time passed in (as
//! rumqttc's `state.rs`): the login checks, the request rate, when a silent
//! connection is dropped, the pre-checks a submit passes before it costs a
//! hash, the jobs it may still submit to, and vardiff. The session around it
//! ([`super::session`]) only moves lines between the socket and this.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use faena_common::bucket::TokenBucket;
use faena_proto::mine::MineParams;
use faena_proto::secret::Secret;
use faena_proto::stratum::{ALGO, LoginParams, parse_nonce};

use crate::PoolConfig;
use faena_verify::{NonceRefused, admit, parse_hash};

/// Jobs a miner may still submit to (older ones are "Invalid job id").
pub const JOBS_KEPT: usize = 32;
/// Malformed lines tolerated before the connection is closed.
pub const GARBAGE_LIMIT: u32 = 10;
/// The longest login name taken.
pub const MAX_NAME: usize = 256;

/// What becomes of a line the miner sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Handle it.
    Go,
    /// Over the request rate: refuse it, keep the connection.
    Slow,
    /// Far past the rate: not a miner; refuse it and close.
    Cut,
}

/// A job the miner was sent and may submit to.
#[derive(Debug)]
pub struct MinerJob {
    pub id: String,
    pub seq: u64,
    pub difficulty: u64,
    /// The network's (or pool's) target: a share meeting it is urgent.
    pub upstream: u64,
    pub params: MineParams,
    /// Nonces accepted on it (duplicates are refused).
    pub seen: HashSet<u32>,
}

/// A submit that passed the pre-checks: it is worth a hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Where its job is in [`Miner::jobs`].
    pub at: usize,
    pub nonce: u32,
    pub hash: [u8; 32],
}

/// Why a submit is refused before any hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Precheck {
    #[error("Invalid job id")]
    UnknownJob,
    #[error("Malformed nonce")]
    Nonce,
    #[error("Malformed result")]
    Result,
    #[error("Nonce outside your slice")]
    Slice,
    #[error("Duplicate share")]
    Duplicate,
}

impl Precheck {
    /// Whether it counts against the miner (a job id it no longer has is
    /// XMRig's normal race with a new job, not misbehaviour).
    pub fn is_invalid_share(self) -> bool {
        !matches!(self, Self::UnknownJob)
    }
}

/// Why a login is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginRefused {
    #[error("Unauthenticated: wrong password")]
    Password,
    #[error("Invalid login: 1 to 256 printable characters")]
    Name,
    #[error("Unsupported algorithm: this pool mines rx/0")]
    Algo,
}

/// Checks a login: the password when the pool has one, the name, the
/// algorithms; answers the name to mine under.
pub fn check_login<'a>(p: &'a LoginParams, password: Option<&Secret>) -> Result<&'a str, LoginRefused> {
    if let Some(want) = password
        && !want.constant_time_eq(p.pass.as_deref().unwrap_or_default())
    {
        return Err(LoginRefused::Password);
    }
    let name = p.login.trim();
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(LoginRefused::Name);
    }
    if p.algo.as_ref().is_some_and(|a| !a.iter().any(|x| x == ALGO || x == "rx")) {
        return Err(LoginRefused::Algo);
    }
    Ok(name)
}

/// The rules one connection is held to.
#[derive(Debug, Clone)]
pub struct Rules {
    pub rate: f64,
    pub burst: f64,
    pub idle: Duration,
    pub login_timeout: Duration,
    pub invalid_limit: u32,
    pub min_difficulty: u64,
}

impl From<&PoolConfig> for Rules {
    fn from(c: &PoolConfig) -> Self {
        Self {
            rate: c.rate,
            burst: c.burst,
            idle: c.idle,
            login_timeout: c.login_timeout,
            invalid_limit: c.invalid_limit,
            min_difficulty: c.min_difficulty.max(1),
        }
    }
}

/// One connection's state.
#[derive(Debug)]
pub struct Miner {
    rules: Rules,
    requests: TokenBucket,
    logged_in: bool,
    /// When the connection is dropped unless a line arrives first.
    deadline: Instant,
    garbage: u32,
    invalid: u32,
    /// Whether it has had a share accepted: a miner's own record only takes
    /// invalid shares from a connection that has shown real work, so no one
    /// can put junk on another miner's name.
    proven: bool,
    pub difficulty: u64,
    jobs: VecDeque<MinerJob>,
    next_job: u64,
    /// Verified shares since the last retarget: their difficulties.
    since_retarget: Vec<u64>,
    retargeted: Instant,
}

impl Miner {
    pub fn new(rules: Rules, start_difficulty: u64, now: Instant) -> Self {
        Self {
            requests: TokenBucket::full(rules.rate, rules.burst, now),
            deadline: now + rules.login_timeout,
            logged_in: false,
            garbage: 0,
            invalid: 0,
            proven: false,
            difficulty: start_difficulty.max(1),
            jobs: VecDeque::new(),
            next_job: 0,
            since_retarget: Vec::new(),
            retargeted: now,
            rules,
        }
    }

    /// When the connection is to be dropped if nothing arrives before:
    /// the login deadline, then the idle time after the last line. Jobs
    /// sent to the miner and retargets do not move it.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// A line arrived: whether to handle it, within the request rate.
    pub fn admit(&mut self, now: Instant) -> Admit {
        if self.logged_in {
            self.deadline = now + self.rules.idle;
        }
        let balance = self.requests.spend(now);
        if balance >= 0.0 {
            Admit::Go
        } else if balance < -self.rules.burst {
            Admit::Cut
        } else {
            Admit::Slow
        }
    }

    pub fn logged_in(&mut self, now: Instant) {
        self.logged_in = true;
        self.deadline = now + self.rules.idle;
    }

    /// A malformed line; true when it is one too many (close).
    pub fn garbage(&mut self) -> bool {
        self.garbage += 1;
        self.garbage > GARBAGE_LIMIT
    }

    /// An invalid share; true when this connection is past the limit.
    pub fn invalid(&mut self) -> bool {
        self.invalid += 1;
        self.invalid > self.rules.invalid_limit
    }

    /// Whether an accepted share has shown this connection does real work.
    pub fn is_proven(&self) -> bool {
        self.proven
    }

    /// The verification budget is spent: the miner is asked for fewer shares.
    pub fn over_budget(&mut self) {
        self.difficulty = self.difficulty.saturating_mul(2);
    }

    /// Files a job sent to the miner; answers its id.
    pub fn push_job(&mut self, seq: u64, difficulty: u64, upstream: u64, params: MineParams) -> String {
        self.next_job += 1;
        let id = format!("{:x}", self.next_job);
        self.jobs.push_front(MinerJob { id: id.clone(), seq, difficulty, upstream, params, seen: HashSet::new() });
        self.jobs.truncate(JOBS_KEPT);
        id
    }

    /// The template of the job sent last.
    pub fn current_seq(&self) -> Option<u64> {
        self.jobs.front().map(|j| j.seq)
    }

    pub fn job(&self, at: usize) -> Option<&MinerJob> {
        self.jobs.get(at)
    }

    /// The checks a submit passes before it is worth a hash: a job the
    /// miner has, a well-formed nonce in its slot, a 32-byte result, not
    /// already taken.
    pub fn precheck(&self, job_id: &str, nonce: &str, result: &str, slot: u8) -> Result<Candidate, Precheck> {
        let at = self.jobs.iter().position(|j| j.id == job_id).ok_or(Precheck::UnknownJob)?;
        let nonce = parse_nonce(nonce).map_err(|_| Precheck::Nonce)?;
        let hash = parse_hash(result).ok_or(Precheck::Result)?;
        // The slot's slice is the top byte of the nonce.
        match admit(u32::from(slot) << 24, 1 << 24, &self.jobs[at].seen, nonce) {
            Err(NonceRefused::Outside) => Err(Precheck::Slice),
            Err(NonceRefused::Duplicate) => Err(Precheck::Duplicate),
            Ok(()) => Ok(Candidate { at, nonce, hash }),
        }
    }

    /// A verified share was taken: it counts once, and towards vardiff when
    /// it was for the current template (`fresh`).
    pub fn accepted(&mut self, c: &Candidate, fresh: bool) {
        self.proven = true;
        if let Some(job) = self.jobs.get_mut(c.at) {
            job.seen.insert(c.nonce);
            if fresh {
                self.since_retarget.push(job.difficulty);
            }
        }
    }

    /// Vardiff: after a few shares or a few intervals, moves the difficulty
    /// towards one share per `interval` at the speed the shares show (at
    /// most 4× each way); the new difficulty when it moved by 10 % or more.
    pub fn retarget(&mut self, interval: Duration, now: Instant) -> Option<u64> {
        if !self.logged_in {
            return None;
        }
        let interval = interval.as_secs_f64();
        let since = now.saturating_duration_since(self.retargeted).as_secs_f64();
        let n = self.since_retarget.len();
        if n < 4 && since < interval * 4.0 {
            return None;
        }
        let work: u64 = self.since_retarget.drain(..).sum();
        self.retargeted = now;
        let old = self.difficulty as f64;
        let wanted = if n == 0 { old / 4.0 } else { work as f64 / since.max(0.001) * interval };
        let new = wanted.clamp(old / 4.0, old * 4.0).max(self.rules.min_difficulty as f64).round() as u64;
        if (new as f64 - old).abs() / old < 0.1 {
            return None;
        }
        self.difficulty = new;
        Some(new)
    }
}

#[cfg(test)]
mod tests;
