//! Share verification: the master re-hashes every share a worker or a
//! Stratum miner reports (light mode, or fast mode with a 2 GiB dataset for
//! live sources' keys when configured so, light until it is ready: see
//! [`keys`]; pooled VMs per key) and accepts
//! it only if the nonce is in the unit's range and not accepted before, the
//! hash matches and it meets the target. [`admit`] is the one range and
//! duplicate filter (the Stratum session asks it too, before a share costs
//! any budget). Runs on blocking threads, never on the coordinator's
//! task; at most `threads` hashes at once across all checks.
//!
//! What passes comes out as [`VerifiedShares`], which only this module can
//! make: the engine takes shares in no other form. A share that could not be
//! checked (key material failed to build, a hashing thread died) is neither
//! valid nor invalid: it comes back as `unverified`, for the caller to count
//! and log.
//!
//! Within a check, shares are hashed lowest claimed hash first, so one that
//! would be a block is checked before the time limit can cut the rest; an
//! urgent check ([`Verifier::check_urgent`], a share that claims to meet
//! the network's target) has a thread of its own when all are busy.
//!
//! Its capacity is measured from the work it does: the time per hash of each
//! batch feeds a moving average, and [`Verifier::capacity`] turns it into
//! shares per second across its threads (the Stratum server budgets by it).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use faena_proto::jobs::{decode_hex, encode_hex};
use faena_proto::mine::{MineParams, Share};
use faena_randomx::mine::meets;
use faena_randomx::{Flags, Mode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

mod keys;

pub use keys::KeyState;
use keys::Keys;

/// Shares the master re-hashed and found valid for one unit's work. Only
/// [`Verifier::check`] makes non-empty ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifiedShares(Vec<Share>);

impl VerifiedShares {
    /// No shares: nothing to verify.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    pub fn as_slice(&self) -> &[Share] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Shares a test vouches for (engine tests feed made-up hashes).
    #[cfg(any(test, feature = "test-support"))]
    pub fn assume_verified(shares: Vec<Share>) -> Self {
        Self(shares)
    }
}

#[derive(Debug)]
pub struct Verifier {
    keys: Arc<Keys>,
    mode: Mode,
    threads: usize,
    permits: Arc<Semaphore>,
    /// One more thread for urgent checks when every other is busy.
    urgent: Arc<Semaphore>,
    /// Pinnings asked for so far (their order).
    pins: AtomicU64,
    /// Moving average of the seconds one hash takes on one thread (f64 bits; 0 = not measured yet).
    secs_per_hash: Arc<AtomicU64>,
    /// How long one check may take: what is not hashed by then comes back
    /// unverified (not credited), so a report is always answered before its
    /// sender gives up and sends it again.
    deadline: Duration,
}

/// The default [`Verifier::deadline`]: well inside a worker's 30 s call timeout.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The verdict on a batch of shares.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub valid: VerifiedShares,
    /// Each rejected share with the reason: the worker's fault.
    pub invalid: Vec<(Share, Rejection)>,
    /// Shares the master could not check, with the reason: not the worker's fault.
    pub unverified: Vec<(Share, String)>,
}

/// Why a share is rejected: the sender's fault, never counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the unit's parameters are invalid")]
    BadUnit,
    #[error("nonce outside the unit's range")]
    OutsideRange,
    #[error("hash is not 32 bytes of hex")]
    NotHex,
    /// What the miner claims does not even meet the target.
    #[error("hash does not meet the target")]
    AboveTarget,
    /// The nonce hashes to something else than what was claimed.
    #[error("hash mismatch (the nonce hashes to {0})")]
    Mismatch(String),
}

/// Why a nonce is not looked at: outside what was handed out, or taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceRefused {
    Outside,
    Duplicate,
}

/// The one range and duplicate filter, for every path a share comes by (a
/// Stratum miner's submit before it costs any budget, a worker's report,
/// the verifier itself): `nonce` must lie in the `count` nonces from
/// `start` and not be in `seen`.
pub fn admit(start: u32, count: u64, seen: &HashSet<u32>, nonce: u32) -> Result<(), NonceRefused> {
    if nonce < start || u64::from(nonce) >= u64::from(start) + count {
        return Err(NonceRefused::Outside);
    }
    if seen.contains(&nonce) {
        return Err(NonceRefused::Duplicate);
    }
    Ok(())
}

/// A share's claimed hash, 64 hex digits: the one place shares' hashes are decoded.
pub fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    decode_hex(hex).ok().and_then(|h| <[u8; 32]>::try_from(h).ok())
}

/// What re-hashing one share found.
#[derive(Debug)]
enum Verdict {
    Valid,
    /// The worker's fault: the hash is not what the nonce gives.
    Invalid(Rejection),
    /// The master's: it could not hash (no VM).
    Unverified(String),
}

type Verdicts = Vec<(Share, Verdict)>;

impl Verifier {
    /// A light-mode verifier on `threads` threads.
    pub fn new(threads: usize) -> Self {
        Self::with_mode(threads, Mode::Light)
    }

    /// A verifier in `mode`: fast builds a 2 GiB dataset per key (on all
    /// `threads`) and hashes several times faster than light.
    pub fn with_mode(threads: usize, mode: Mode) -> Self {
        let threads = threads.max(1);
        // Huge pages are not worth reserving for verification; JIT and AES are.
        let flags = Flags::detect().with_large_pages(false);
        Self {
            keys: Arc::new(Keys::new(flags, mode, dataset_threads())),
            mode,
            threads,
            permits: Arc::new(Semaphore::new(threads)),
            urgent: Arc::new(Semaphore::new(1)),
            pins: AtomicU64::new(0),
            secs_per_hash: Arc::default(),
            deadline: DEADLINE,
        }
    }

    /// The same verifier with another time limit per check.
    pub fn with_deadline(self, deadline: Duration) -> Self {
        Self { deadline, ..self }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Shares per second it can check across its threads, as measured so
    /// far; None before its first hash.
    pub fn capacity(&self) -> Option<f64> {
        let secs = f64::from_bits(self.secs_per_hash.load(Ordering::Relaxed));
        (secs > 0.0).then(|| self.threads as f64 / secs)
    }

    /// Makes `keys` the live sources' keys (newest first): each gets its
    /// light material now and, in fast mode, a dataset built in the
    /// background; then the hash rate is measured on what is there, so the
    /// capacity is known before the first share. Keys no longer live are let go.
    /// `generation` (from [`Verifier::next_pin`], taken when the keys were
    /// decided) keeps a late, older pinning from undoing a newer one.
    pub async fn pin(&self, generation: u64, keys: Vec<Vec<u8>>) -> Result<f64, String> {
        let first = keys.first().cloned();
        let k = self.keys.clone();
        tokio::task::spawn_blocking(move || k.pin(generation, &keys)).await.map_err(|e| e.to_string())?;
        let Some(key) = first else { return Ok(self.capacity().unwrap_or_default()) };
        let probe: Vec<Share> =
            (0..8 * self.threads as u32).map(|n| Share { nonce: n, hash: "00".repeat(32) }).collect();
        let params = MineParams {
            key: faena_proto::jobs::encode_hex(&key),
            blob: "00".repeat(76),
            target: None,
            difficulty: Some(1),
            nonce_offset: None,
            nonce_start: None,
            nonce_count: None,
            max_shares: None,
            next_key: None,
        };
        let checked = self.check(&params, &HashSet::new(), probe).await;
        if let Some((_, why)) = checked.unverified.first() {
            return Err(why.clone());
        }
        self.capacity().ok_or_else(|| "nothing was hashed".to_owned())
    }

    /// The order of a pinning decided now.
    pub fn next_pin(&self) -> u64 {
        self.pins.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// The live keys' state: what their shares are hashed with, the dataset's progress.
    pub fn key_states(&self) -> Vec<KeyState> {
        self.keys.states()
    }

    /// Whether shares of a live key are hashed in fast mode now.
    pub fn fast_ready(&self) -> bool {
        self.keys.fast_ready()
    }

    /// Threads for hashing `wanted` shares (at most all of them), waited for
    /// until `until`; an urgent check that finds none free takes the one
    /// kept for it. Why not, when none came.
    async fn threads_for(
        &self,
        wanted: usize,
        urgent: bool,
        until: Instant,
    ) -> Result<(OwnedSemaphorePermit, usize), &'static str> {
        let n = wanted.min(self.threads) as u32;
        let waited = match urgent.then(|| self.permits.clone().try_acquire_many_owned(n)) {
            Some(Ok(p)) => return Ok((p, n as usize)),
            Some(Err(_)) => tokio::time::timeout_at(until.into(), self.urgent.clone().acquire_owned()).await,
            None => tokio::time::timeout_at(until.into(), self.permits.clone().acquire_many_owned(n)).await,
        };
        match waited {
            Ok(Ok(p)) => {
                let n = p.num_permits();
                Ok((p, n))
            }
            Ok(Err(_)) => Err("the verifier is shutting down"),
            Err(_) => Err(TIME_LIMIT),
        }
    }

    /// Stops taking checks (the master is shutting down): checks waiting for
    /// a thread, and later ones, end at once with their shares `unverified`.
    pub fn close(&self) {
        self.permits.close();
        self.urgent.close();
    }

    /// Checks `shares` of the unit `params`; shares whose nonce is in `known`
    /// (accepted before) or repeated are dropped, neither valid nor invalid.
    pub async fn check(&self, params: &MineParams, known: &HashSet<u32>, shares: Vec<Share>) -> Checked {
        self.check_as(params, known, shares, false).await
    }

    /// [`Verifier::check`] for a share that claims to be a block: when every
    /// thread is busy it takes the one kept for such shares.
    pub async fn check_urgent(&self, params: &MineParams, known: &HashSet<u32>, shares: Vec<Share>) -> Checked {
        self.check_as(params, known, shares, true).await
    }

    async fn check_as(&self, params: &MineParams, known: &HashSet<u32>, shares: Vec<Share>, urgent: bool) -> Checked {
        let until = Instant::now() + self.deadline;
        let mut out = Checked::default();
        let Ok(work) = params.work() else {
            out.invalid = shares.into_iter().map(|s| (s, Rejection::BadUnit)).collect();
            return out;
        };
        let mut seen = known.clone();
        let mut todo = Vec::new();
        for share in shares {
            let admitted = admit(work.start, work.count, &seen, share.nonce);
            seen.insert(share.nonce);
            match (admitted, parse_hash(&share.hash)) {
                // Sent before: neither valid nor invalid.
                (Err(NonceRefused::Duplicate), _) => {}
                (Err(NonceRefused::Outside), _) => out.invalid.push((share, Rejection::OutsideRange)),
                (Ok(()), None) => out.invalid.push((share, Rejection::NotHex)),
                (Ok(()), Some(claimed)) if !meets(&claimed, work.target) => {
                    out.invalid.push((share, Rejection::AboveTarget));
                }
                (Ok(()), Some(claimed)) => todo.push((share, claimed)),
            }
        }
        if todo.is_empty() {
            return out;
        }
        // Lowest claimed hash first: a block is checked before any cut-off.
        todo.sort_by_key(|(_, claimed)| {
            let mut high = [0u8; 8];
            high.copy_from_slice(&claimed[24..32]);
            u64::from_le_bytes(high)
        });
        let (_permits, n) = match self.threads_for(todo.len(), urgent, until).await {
            Ok(taken) => taken,
            Err(why) => {
                out.unverified = todo.into_iter().map(|(s, _)| (s, why.into())).collect();
                return out;
            }
        };
        let keys = self.keys.clone();
        let measured = self.secs_per_hash.clone();
        let pending: Vec<Share> = todo.iter().map(|(s, _)| s.clone()).collect();
        let task = tokio::task::spawn_blocking(move || {
            let material = keys.material(&work.key);
            let material = match material {
                Ok(m) => m,
                Err(e) => {
                    return (Vec::new(), todo.into_iter().map(|(s, _)| (s, format!("key material: {e}"))).collect());
                }
            };
            let chunk = todo.len().div_ceil(n);
            let started = Instant::now();
            let hashed = todo.len();
            let out = std::thread::scope(|scope| {
                let handles: Vec<_> = todo
                    .chunks(chunk)
                    .map(|part| {
                        let (material, work) = (&material, &work);
                        let handle = scope.spawn(move || {
                            let mut vm = material.vm();
                            part.iter()
                                .map(|(share, claimed)| {
                                    if Instant::now() >= until {
                                        return (share.clone(), Verdict::Unverified(TIME_LIMIT.into()));
                                    }
                                    let verdict = match vm.as_mut().map(|vm| vm.hash(&work.input(share.nonce))) {
                                        Ok(hash) if hash == *claimed => Verdict::Valid,
                                        Ok(hash) => Verdict::Invalid(Rejection::Mismatch(encode_hex(&hash))),
                                        Err(e) => Verdict::Unverified(format!("could not verify: {e}")),
                                    };
                                    (share.clone(), verdict)
                                })
                                .collect::<Verdicts>()
                        });
                        (part, handle)
                    })
                    .collect();
                let mut verdicts = Verdicts::new();
                let mut failed = Vec::new();
                for (part, handle) in handles {
                    match handle.join() {
                        Ok(v) => verdicts.extend(v),
                        Err(_) => failed.extend(part.iter().map(|(s, _)| (s.clone(), "a hashing thread died".into()))),
                    }
                }
                (verdicts, failed)
            });
            // Each thread hashed about `chunk` inputs in the elapsed time —
            // unless the time limit cut it short: not a measurement then.
            if Instant::now() < until {
                let per_hash = started.elapsed().as_secs_f64() / chunk.min(hashed).max(1) as f64;
                let old = f64::from_bits(measured.load(Ordering::Relaxed));
                let avg = if old > 0.0 { old * 0.8 + per_hash * 0.2 } else { per_hash };
                measured.store(avg.to_bits(), Ordering::Relaxed);
            }
            out
        });
        let (verdicts, failed) = match task.await {
            Ok(v) => v,
            Err(e) => {
                (Vec::new(), pending.into_iter().map(|s| (s, format!("verification task failed: {e}"))).collect())
            }
        };
        out.unverified = failed;
        let mut valid = Vec::new();
        for (share, verdict) in verdicts {
            match verdict {
                Verdict::Valid => valid.push(share),
                Verdict::Invalid(reason) => out.invalid.push((share, reason)),
                Verdict::Unverified(reason) => out.unverified.push((share, reason)),
            }
        }
        out.valid = VerifiedShares(valid);
        out
    }
}

/// Threads a dataset is built on: all the machine has (the build runs once
/// per key, beside the hashing).
fn dataset_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

/// Why a share came back unverified when the check ran out of time.
const TIME_LIMIT: &str = "not verified within the time limit (FAENA_VERIFY_DEADLINE_MS); not counted";

#[cfg(test)]
mod tests;
