//! The mining loop: hash a block blob over a nonce range on every thread,
//! keep the hashes that meet the target.
//!
//! Each thread takes a contiguous slice of the range and its own VM over the
//! shared dataset, and hashes pipelined (`_first`/`_next`/`_last`) as
//! RandomX's benchmark and miners do. A share is a hash whose last 8 bytes,
//! read as a little-endian integer, are below the 64-bit target (Monero's and
//! XMRig's convention; `faena_proto::mine` turns difficulties and stratum
//! targets into it).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::progress::Progress;
use crate::{Material, RxError};

/// What to hash: `blob` with a 4-byte little-endian nonce at `nonce_offset`,
/// for nonces `start .. start + count`.
#[derive(Debug, Clone)]
pub struct Work<'a> {
    pub blob: &'a [u8],
    pub nonce_offset: usize,
    pub start: u32,
    pub count: u64,
    pub target: u64,
    pub max_shares: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub nonce: u32,
    pub hash: [u8; 32],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mined {
    pub shares: Vec<Share>,
    pub hashes: u64,
    pub elapsed: Duration,
}

/// Whether `hash` meets `target` (the hash's high 64 bits, little-endian).
pub fn meets(hash: &[u8; 32], target: u64) -> bool {
    let mut high = [0u8; 8];
    high.copy_from_slice(&hash[24..32]);
    u64::from_le_bytes(high) < target
}

/// Mines `work` on `threads` threads (blocking). `on_share` sees each share
/// as it is found, `progress(hashes)` is called about once a second; `stop`
/// ends it early (the shares found so far stand).
pub fn mine(
    material: &Arc<Material>,
    threads: usize,
    work: &Work<'_>,
    stop: &AtomicBool,
    progress: &(dyn Fn(u64) + Sync),
    on_share: &(dyn Fn(&Share) + Sync),
) -> Result<Mined, RxError> {
    let end = work.nonce_offset + 4;
    if work.blob.len() < end {
        return Err(RxError::Input(format!(
            "blob is {} bytes; the nonce needs bytes {}..{end}",
            work.blob.len(),
            work.nonce_offset
        )));
    }
    if work.count == 0 || u64::from(work.start) + work.count > 1 << 32 {
        return Err(RxError::Input("the nonce range must be 1..=2^32 nonces within 32 bits".into()));
    }
    let threads = (threads as u64).clamp(1, work.count);
    let counter = Progress::new(progress);
    let shares = Mutex::new(Vec::new());
    let full = AtomicBool::new(false);
    let started = Instant::now();
    let vms = (0..threads).map(|_| material.vm()).collect::<Result<Vec<_>, _>>()?;
    std::thread::scope(|s| {
        for (t, mut vm) in vms.into_iter().enumerate() {
            let first = work.count * t as u64 / threads;
            let last = work.count * (t as u64 + 1) / threads;
            let (counter, shares, full) = (&counter, &shares, &full);
            s.spawn(move || {
                let mut buf = work.blob.to_vec();
                let base = u64::from(work.start) + first;
                vm.hash_pipelined(
                    last - first,
                    &mut buf,
                    |i, buf| buf[work.nonce_offset..end].copy_from_slice(&((base + i) as u32).to_le_bytes()),
                    |i, hash| {
                        if meets(hash, work.target) {
                            let share = Share { nonce: (base + i) as u32, hash: *hash };
                            on_share(&share);
                            let mut found = shares.lock();
                            found.push(share);
                            if work.max_shares.is_some_and(|m| found.len() >= m) {
                                full.store(true, Ordering::Relaxed);
                            }
                        }
                        counter.add(1);
                        !full.load(Ordering::Relaxed)
                    },
                    stop,
                );
            });
        }
    });
    let mut shares = shares.into_inner();
    shares.sort_by_key(|s| s.nonce);
    if let Some(m) = work.max_shares {
        shares.truncate(m);
    }
    Ok(Mined { shares, hashes: counter.total(), elapsed: started.elapsed() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Flags, Mode};

    fn light(key: &[u8]) -> Arc<Material> {
        Arc::new(Material::build(Flags::detect(), Mode::Light, key, 2).expect("material"))
    }

    #[test]
    fn targets_follow_the_monero_convention() {
        let mut hash = [0xffu8; 32];
        assert!(!meets(&hash, u64::MAX));
        hash[31] = 0x00;
        assert!(meets(&hash, u64::MAX / 2));
        assert!(!meets(&hash, u64::MAX >> 9));
    }

    #[test]
    fn every_share_meets_the_target_and_rehashes_the_same() {
        let material = light(b"mine test key");
        let blob: Vec<u8> = (0u8..76).collect();
        let target = u64::MAX / 8;
        let work = Work { blob: &blob, nonce_offset: 39, start: 1_000, count: 96, target, max_shares: None };
        let mined = mine(&material, 2, &work, &AtomicBool::new(false), &|_| {}, &|_| {}).expect("mines");
        assert_eq!(mined.hashes, 96);
        // About one in eight meets difficulty 8; all that do are found.
        let mut vm = material.vm().expect("vm");
        let mut expected = vec![];
        for nonce in 1_000u32..1_096 {
            let mut input = blob.clone();
            input[39..43].copy_from_slice(&nonce.to_le_bytes());
            let hash = vm.hash(&input);
            if meets(&hash, target) {
                expected.push(Share { nonce, hash });
            }
        }
        assert!(!expected.is_empty());
        assert_eq!(mined.shares, expected);
    }

    #[test]
    fn stops_at_max_shares_and_on_request() {
        let material = light(b"mine test key");
        let blob = vec![7u8; 76];
        let work =
            Work { blob: &blob, nonce_offset: 39, start: 0, count: 10_000, target: u64::MAX, max_shares: Some(3) };
        let mined = mine(&material, 2, &work, &AtomicBool::new(false), &|_| {}, &|_| {}).expect("mines");
        assert_eq!(mined.shares.len(), 3);
        assert!(mined.hashes < 10_000);
        let stopped =
            mine(&material, 2, &Work { max_shares: None, ..work.clone() }, &AtomicBool::new(true), &|_| {}, &|_| {})
                .expect("mines");
        assert!(stopped.hashes <= 2, "{}", stopped.hashes);
        let short = Work { blob: &blob[..40], ..work.clone() };
        assert!(matches!(
            mine(&material, 1, &short, &AtomicBool::new(false), &|_| {}, &|_| {}),
            Err(RxError::Input(_))
        ));
        let past_end = Work { start: u32::MAX, count: 2, ..work };
        assert!(matches!(
            mine(&material, 1, &past_end, &AtomicBool::new(false), &|_| {}, &|_| {}),
            Err(RxError::Input(_))
        ));
    }
}
