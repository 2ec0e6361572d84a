//! Share verification: the master re-hashes every share a worker reports
//! (light mode, a cached key material with pooled VMs per key) and accepts
//! it only if the nonce is in the unit's range, the hash matches and it
//! meets the target. Runs on blocking threads, never on the coordinator's
//! task; at most `threads` hashes at once across all checks.

use std::collections::HashSet;
use std::sync::Arc;

use faena_proto::ids::WorkerId;
use faena_proto::jobs::{decode_hex, encode_hex};
use faena_proto::mine::{MineParams, Share, UnitOutput, UnitProgress};
use faena_randomx::mine::meets;
use faena_randomx::{Flags, KeyCache, Material, Mode};
use serde_json::Value;
use tokio::sync::Semaphore;

use crate::coordinator::{CoordError, Coordinator};
use crate::engine::LeaseRef;
use crate::metrics::Metrics;

/// Light-mode keys kept (256 MiB each).
const KEYS_KEPT: usize = 2;

#[derive(Debug)]
pub struct Verifier {
    keys: Arc<KeyCache>,
    flags: Flags,
    threads: usize,
    permits: Arc<Semaphore>,
}

/// The verdict on a batch of shares.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub valid: Vec<Share>,
    /// Each rejected share with the reason.
    pub invalid: Vec<(Share, String)>,
}

impl Verifier {
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        // Huge pages are not worth reserving for verification; JIT and AES are.
        let flags = Flags::detect().with_large_pages(false);
        Self { keys: Arc::default(), flags, threads, permits: Arc::new(Semaphore::new(threads)) }
    }

    /// Checks `shares` of the unit `params`; shares whose nonce is in `known`
    /// (accepted before) or repeated are dropped, neither valid nor invalid.
    pub async fn check(&self, params: &MineParams, known: &HashSet<u32>, shares: Vec<Share>) -> Checked {
        let mut out = Checked::default();
        let Ok(work) = params.work() else {
            out.invalid = shares.into_iter().map(|s| (s, "the unit's parameters are invalid".into())).collect();
            return out;
        };
        let mut seen = known.clone();
        let mut todo = Vec::new();
        for share in shares {
            if !seen.insert(share.nonce) {
                continue;
            }
            match decode_hex(&share.hash).ok().and_then(|h| <[u8; 32]>::try_from(h).ok()) {
                _ if !work.contains(share.nonce) => out.invalid.push((share, "nonce outside the unit's range".into())),
                None => out.invalid.push((share, "hash is not 32 bytes of hex".into())),
                Some(claimed) if !meets(&claimed, work.target) => {
                    out.invalid.push((share, "hash does not meet the target".into()))
                }
                Some(claimed) => todo.push((share, claimed)),
            }
        }
        if todo.is_empty() {
            return out;
        }
        let n = todo.len().min(self.threads);
        let Ok(_permits) = self.permits.clone().acquire_many_owned(n as u32).await else { return out };
        let (keys, flags) = (self.keys.clone(), self.flags);
        let verdicts = tokio::task::spawn_blocking(move || {
            let material =
                keys.get_or_build(&work.key, KEYS_KEPT, || Material::build(flags, Mode::Light, &work.key, 1));
            let material = match material {
                Ok(m) => m,
                Err(e) => return todo.into_iter().map(|(s, _)| (s, Err(format!("could not verify: {e}")))).collect(),
            };
            let chunk = todo.len().div_ceil(n);
            std::thread::scope(|scope| {
                let handles: Vec<_> = todo
                    .chunks(chunk)
                    .map(|part| {
                        let (material, work) = (&material, &work);
                        scope.spawn(move || {
                            let mut vm = material.vm();
                            part.iter()
                                .map(|(share, claimed)| {
                                    let verdict = match vm.as_mut().map(|vm| vm.hash(&work.input(share.nonce))) {
                                        Ok(hash) if hash == *claimed => Ok(()),
                                        Ok(hash) => {
                                            Err(format!("hash mismatch (the nonce hashes to {})", encode_hex(&hash)))
                                        }
                                        Err(e) => Err(format!("could not verify: {e}")),
                                    };
                                    (share.clone(), verdict)
                                })
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect::<Vec<_>>()
            })
        })
        .await
        .unwrap_or_default();
        for (share, verdict) in verdicts {
            match verdict {
                Ok(()) => out.valid.push(share),
                Err(reason) => out.invalid.push((share, reason)),
            }
        }
        out
    }
}

/// Which report of a mining unit is being vetted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Progress,
    Output,
}

#[derive(Debug, thiserror::Error)]
pub enum VetError {
    /// The report does not match the contract (a bad request).
    #[error("{0}")]
    Malformed(String),
    #[error(transparent)]
    Coord(#[from] CoordError),
}

impl Verifier {
    /// Vets a worker's report before the master takes it: if the lease is a
    /// mining unit's, checks the report's shape, re-hashes its shares, keeps
    /// the valid ones and counts the rest against the worker (which may
    /// quarantine it). Anything that is not a mining unit's passes through.
    pub async fn vet(
        &self,
        coord: &Coordinator,
        metrics: &Metrics,
        worker: &WorkerId,
        lease: &LeaseRef,
        mut data: Value,
        report: Report,
    ) -> Result<Value, VetError> {
        let Some((params, known)) = coord.unit_work(worker.clone(), lease.clone()).await? else { return Ok(data) };
        let what = match report {
            Report::Progress => "progress",
            Report::Output => "output",
        };
        if !data.is_object() {
            return Err(VetError::Malformed(format!("mining unit {what} must be a JSON object")));
        }
        // Check the shape first, so a malformed report costs no hashing.
        let found: Vec<Share> =
            serde_json::from_value(data.get_mut("shares").map(Value::take).unwrap_or(Value::Array(vec![])))
                .map_err(|e| VetError::Malformed(format!("mining unit {what}: shares: {e}")))?;
        data["shares"] = Value::Array(vec![]);
        let shape = match report {
            Report::Progress => serde_json::from_value::<UnitProgress>(data.clone()).map(|_| ()),
            Report::Output => serde_json::from_value::<UnitOutput>(data.clone()).map(|_| ()),
        };
        shape.map_err(|e| VetError::Malformed(format!("mining unit {what} does not match the contract: {e}")))?;
        if found.is_empty() {
            return Ok(data);
        }
        let checked = self.check(&params, &known, found).await;
        metrics.shares_checked(checked.valid.len(), checked.invalid.len());
        for (share, reason) in &checked.invalid {
            tracing::warn!(worker = %worker, unit = %lease.job_id, nonce = share.nonce, reason = %reason, "invalid share rejected");
        }
        if !checked.invalid.is_empty() {
            coord.invalid_shares(worker.clone(), lease.job_id, checked.invalid.len() as u32).await;
        }
        data["shares"] = serde_json::to_value(checked.valid).unwrap_or(Value::Array(vec![]));
        Ok(data)
    }
}

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
        let reasons: Vec<&str> = checked.invalid.iter().map(|(_, r)| r.as_str()).collect();
        assert!(reasons.iter().any(|r| r.contains("outside")), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("hex")), "{reasons:?}");
        assert!(reasons.iter().filter(|r| r.contains("mismatch") || r.contains("target")).count() >= 2, "{reasons:?}");
        let checked = verifier.check(&params, &HashSet::new(), vec![other]).await;
        assert_eq!(checked.invalid.len(), 1, "a real hash under another nonce is rejected");
    }
}
