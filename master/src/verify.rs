//! Share verification: the master re-hashes every share a worker or a
//! Stratum miner reports (light mode, or fast mode with a 2 GiB dataset when
//! configured so; a cached key material with pooled VMs per key) and accepts
//! it only if the nonce is in the unit's range and not accepted before, the
//! hash matches and it meets the target. This is the one range and
//! duplicate filter. Runs on blocking threads, never on the coordinator's
//! task; at most `threads` hashes at once across all checks.
//!
//! What passes comes out as [`VerifiedShares`], which only this module can
//! make: the engine takes shares in no other form. A share that could not be
//! checked (key material failed to build, a hashing thread died) is neither
//! valid nor invalid: it comes back as `unverified`, for the caller to count
//! and log.
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
use faena_randomx::{Flags, KeyCache, Material, Mode};
use tokio::sync::Semaphore;

/// Light-mode keys kept (256 MiB each).
const KEYS_KEPT: usize = 2;
/// Fast-mode keys kept (a 2 GiB dataset each).
const FAST_KEYS_KEPT: usize = 1;

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
    #[cfg(test)]
    pub fn assume_verified(shares: Vec<Share>) -> Self {
        Self(shares)
    }
}

#[derive(Debug)]
pub struct Verifier {
    keys: Arc<KeyCache>,
    flags: Flags,
    mode: Mode,
    threads: usize,
    permits: Arc<Semaphore>,
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
            keys: Arc::default(),
            flags,
            mode,
            threads,
            permits: Arc::new(Semaphore::new(threads)),
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

    /// Builds the material for `key` now (a fast-mode dataset takes a while)
    /// and measures the hash rate on it, so the capacity is known before the
    /// first share.
    pub async fn prepare(&self, key: Vec<u8>) -> Result<f64, String> {
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
        };
        let checked = self.check(&params, &HashSet::new(), probe).await;
        if let Some((_, why)) = checked.unverified.first() {
            return Err(why.clone());
        }
        self.capacity().ok_or_else(|| "nothing was hashed".to_owned())
    }

    /// Stops taking checks (the master is shutting down): checks waiting for
    /// a thread, and later ones, end at once with their shares `unverified`.
    pub fn close(&self) {
        self.permits.close();
    }

    /// Checks `shares` of the unit `params`; shares whose nonce is in `known`
    /// (accepted before) or repeated are dropped, neither valid nor invalid.
    pub async fn check(&self, params: &MineParams, known: &HashSet<u32>, shares: Vec<Share>) -> Checked {
        let until = Instant::now() + self.deadline;
        let mut out = Checked::default();
        let Ok(work) = params.work() else {
            out.invalid = shares.into_iter().map(|s| (s, Rejection::BadUnit)).collect();
            return out;
        };
        let mut seen = known.clone();
        let mut todo = Vec::new();
        for share in shares {
            if !seen.insert(share.nonce) {
                continue;
            }
            match parse_hash(&share.hash) {
                _ if !work.contains(share.nonce) => out.invalid.push((share, Rejection::OutsideRange)),
                None => out.invalid.push((share, Rejection::NotHex)),
                Some(claimed) if !meets(&claimed, work.target) => out.invalid.push((share, Rejection::AboveTarget)),
                Some(claimed) => todo.push((share, claimed)),
            }
        }
        if todo.is_empty() {
            return out;
        }
        let n = todo.len().min(self.threads);
        let permits = tokio::time::timeout_at(until.into(), self.permits.clone().acquire_many_owned(n as u32)).await;
        let _permits = match permits {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                out.unverified = todo.into_iter().map(|(s, _)| (s, "the verifier is shutting down".into())).collect();
                return out;
            }
            Err(_) => {
                out.unverified = todo.into_iter().map(|(s, _)| (s, TIME_LIMIT.into())).collect();
                return out;
            }
        };
        let (keys, flags, mode, threads) = (self.keys.clone(), self.flags, self.mode, self.threads);
        let measured = self.secs_per_hash.clone();
        let pending: Vec<Share> = todo.iter().map(|(s, _)| s.clone()).collect();
        let task = tokio::task::spawn_blocking(move || {
            let kept = if mode == Mode::Fast { FAST_KEYS_KEPT } else { KEYS_KEPT };
            let material = keys.get_or_build(&work.key, kept, || Material::build(flags, mode, &work.key, threads));
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

/// Why a share came back unverified when the check ran out of time.
const TIME_LIMIT: &str = "not verified within the time limit (FAENA_VERIFY_DEADLINE_MS); not counted";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn accepts_real_shares_and_rejects_every_kind_of_fake() {
        let params: MineParams = serde_json::from_value(json!({
            "key": "6b6579", "blob": "02".repeat(76), "difficulty": 3, "nonce_start": 100, "nonce_count": 30
        }))
        .expect("params");
        let work = params.work().expect("work");
        // Find real shares the way a worker would.
        let material = Arc::new(Material::build(Flags::detect(), Mode::Light, &work.key, 1).expect("material"));
        let mut vm = material.vm().expect("vm");
        let mut real = Vec::new();
        let mut miss = None;
        for nonce in 100..130u32 {
            let hash = vm.hash(&work.input(nonce));
            if meets(&hash, work.target) {
                real.push(Share { nonce, hash: encode_hex(&hash) });
            } else {
                miss = Some(Share { nonce, hash: encode_hex(&hash) });
            }
        }
        assert!(real.len() >= 2, "difficulty 3 over 30 nonces");
        let miss = miss.expect("some nonce misses difficulty 3");
        let verifier = Verifier::new(2);
        let mut shares = real.clone();
        shares.push(real[0].clone());
        let checked = verifier.check(&params, &HashSet::new(), shares).await;
        assert_eq!(checked.valid.len(), real.len(), "{:?}", checked.invalid);
        assert!(checked.invalid.is_empty());

        let forged = Share { nonce: real[1].nonce, hash: "00".repeat(32) };
        let wrong_nonce = Share { nonce: real[0].nonce + 1000, ..real[0].clone() };
        let taken = [real[0].nonce, real[1].nonce, miss.nonce];
        let free = (100..130u32).find(|n| !taken.contains(n)).expect("a free nonce");
        let garbage = Share { nonce: free, hash: "zz".into() };
        let other = Share { nonce: real[1].nonce ^ 1, hash: real[1].hash.clone() };
        let known: HashSet<u32> = [real[0].nonce].into();
        let checked = verifier.check(&params, &known, vec![real[0].clone(), forged, wrong_nonce, garbage, miss]).await;
        assert!(checked.valid.is_empty());
        let reasons: Vec<String> = checked.invalid.iter().map(|(_, r)| r.to_string()).collect();
        assert!(reasons.iter().any(|r| r.contains("outside")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("hex")), "{reasons:?}");
        assert!(reasons.iter().filter(|r| r.contains("mismatch") || r.contains("target")).count() >= 2, "{reasons:?}");
        let checked = verifier.check(&params, &HashSet::new(), vec![other]).await;
        assert_eq!(checked.invalid.len(), 1, "a real hash under another nonce is rejected");
    }

    #[tokio::test]
    async fn fast_mode_verifies_what_light_mode_found() {
        let params: MineParams = serde_json::from_value(json!({
            "key": "666173742d6d6f6465", "blob": "04".repeat(76), "difficulty": 2, "nonce_start": 0, "nonce_count": 16
        }))
        .expect("params");
        let work = params.work().expect("work");
        let material = Arc::new(Material::build(Flags::detect(), Mode::Light, &work.key, 1).expect("material"));
        let mut vm = material.vm().expect("vm");
        let mut shares = Vec::new();
        for nonce in 0..16u32 {
            let hash = vm.hash(&work.input(nonce));
            if meets(&hash, work.target) {
                shares.push(Share { nonce, hash: encode_hex(&hash) });
            }
        }
        assert!(!shares.is_empty(), "difficulty 2 over 16 nonces");
        let mut forged = shares[0].clone();
        forged.hash = "00".repeat(32);
        forged.nonce = (0..16u32).find(|n| !shares.iter().any(|s| s.nonce == *n)).expect("a non-share nonce");
        // The dataset takes a while to build (all threads); the checks are quick after.
        let verifier = Verifier::with_mode(2, Mode::Fast).with_deadline(Duration::from_secs(600));
        let checked = verifier.check(&params, &HashSet::new(), [shares.clone(), vec![forged]].concat()).await;
        assert_eq!(checked.valid.len(), shares.len(), "{:?}", checked.unverified);
        assert_eq!(checked.invalid.len(), 1, "the forged share is caught in fast mode too");
    }

    #[tokio::test]
    async fn shares_that_cannot_be_checked_come_back_unverified_never_dropped() {
        let params: MineParams = serde_json::from_value(json!({
            "key": "6b6579", "blob": "02".repeat(76), "difficulty": 1, "nonce_start": 0, "nonce_count": 10
        }))
        .expect("params");
        let verifier = Verifier::new(1);
        verifier.close();
        let shares: Vec<Share> = (0..3).map(|n| Share { nonce: n, hash: "00".repeat(32) }).collect();
        let checked = verifier.check(&params, &HashSet::new(), shares).await;
        assert!(checked.valid.is_empty() && checked.invalid.is_empty(), "not the worker's fault: {checked:?}");
        assert_eq!(checked.unverified.len(), 3, "every share is accounted for");
        assert!(checked.unverified.iter().all(|(_, why)| why.contains("shutting down")));
    }

    #[tokio::test]
    async fn a_check_ends_at_its_time_limit_and_leaves_the_rest_unverified() {
        let params: MineParams = serde_json::from_value(json!({
            "key": "6c696d6974", "blob": "03".repeat(76), "difficulty": 1, "nonce_start": 0, "nonce_count": 100000
        }))
        .expect("params");
        // Difficulty 1: any hash meets the target, so each share costs a real hash to refute.
        let shares: Vec<Share> = (0..100_000).map(|n| Share { nonce: n, hash: "00".repeat(32) }).collect();
        let verifier = Verifier::new(1).with_deadline(Duration::from_secs(3));
        let checked = verifier.check(&params, &HashSet::new(), shares).await;
        assert!(!checked.unverified.is_empty(), "100,000 light-mode hashes do not fit in 3 s");
        assert!(checked.unverified.iter().all(|(_, why)| why.contains("time limit")));
        assert_eq!(
            checked.valid.len() + checked.invalid.len() + checked.unverified.len(),
            100_000,
            "all accounted for"
        );
    }
}
