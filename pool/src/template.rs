//! A template: one blob to mine, from monerod or a pool, and how its nonce
//! space is shared. The top nonce byte (blob byte 42) names a slot: slot 0
//! is the Faena workers' (split by speed by the engine), slots 1..=255 go to
//! Stratum miners one each (XMRig keeps that byte in nicehash mode). A pool
//! that fixes the byte itself leaves only its 2^24 nonces: the workers'.

use std::sync::Arc;

use faena_proto::jobs::encode_hex;
use faena_proto::mine::{DEFAULT_NONCE_OFFSET, MineParams, target_for_difficulty};
use faena_proto::stratum::NICEHASH_BYTE;
use serde::{Deserialize, Serialize};

/// Nonces behind one top-byte value.
pub const SLOT_NONCES: u64 = 1 << 24;
/// Slots a blob has for Stratum miners (1..=255).
pub const MINER_SLOTS: u32 = 255;

/// What a pool's job carries that a block template does not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upstream {
    pub job_id: String,
    /// The pool's share target.
    pub target: u64,
}

/// Serialized as the leader feeds it to the other masters: without the
/// block, which only the leader submits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    /// Unique across the masters: the leader's epoch in the top bits.
    pub seq: u64,
    /// Which blob of the source this is (daemon: one per extra nonce; past
    /// 255 miners another is fetched).
    pub group: u32,
    pub key: Vec<u8>,
    /// The key the chain moves to next, when the node says (Monero's
    /// `next_seed_hash`, known 64 blocks ahead of the switch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_key: Option<Vec<u8>>,
    pub blob: Vec<u8>,
    pub height: Option<u64>,
    /// The network's difficulty (a daemon's template).
    pub network_difficulty: Option<u64>,
    /// The full block, for `submit_block` (a daemon's template).
    #[serde(skip)]
    pub block: Option<Vec<u8>>,
    pub upstream: Option<Upstream>,
    /// The top nonce byte a pool fixed (nicehash), if any.
    pub fixed_byte: Option<u8>,
}

impl Template {
    /// The target a share must meet to be a block (daemon) or to go to the pool.
    pub fn upstream_target(&self) -> u64 {
        match (&self.upstream, self.network_difficulty) {
            (Some(u), _) => u.target,
            (None, Some(d)) => target_for_difficulty(d),
            (None, None) => 0,
        }
    }

    /// The difficulty of [`Template::upstream_target`]: miners never get a higher one,
    /// or hashes good enough upstream would go unreported.
    pub fn upstream_difficulty(&self) -> u64 {
        faena_proto::stratum::difficulty_of(self.upstream_target())
    }

    /// Whether Stratum miners can be given slots of it.
    pub fn has_miner_slots(&self) -> bool {
        self.fixed_byte.is_none()
    }

    /// The range the Faena workers mine: slot 0, or the pool's fixed byte.
    pub fn worker_range(&self) -> (u32, u64) {
        (u32::from(self.fixed_byte.unwrap_or(0)) << 24, SLOT_NONCES)
    }

    /// The blob as sent for `slot`: its top nonce byte set, the rest zero.
    pub fn blob_for(&self, slot: u8) -> Vec<u8> {
        let mut blob = self.blob.clone();
        let at = DEFAULT_NONCE_OFFSET as usize;
        if blob.len() >= at + 4 {
            blob[at..at + 3].fill(0);
            blob[NICEHASH_BYTE] = slot;
        }
        blob
    }

    /// A `randomx.mine` job over nonces `[start, start + count)` of this blob at `target`.
    pub fn params(&self, start: u32, count: u64, target: u64) -> MineParams {
        MineParams {
            key: encode_hex(&self.key),
            blob: encode_hex(&self.blob_for((start >> 24) as u8)),
            target: Some(encode_hex(&target.to_le_bytes())),
            difficulty: None,
            nonce_offset: None,
            nonce_start: Some(start),
            nonce_count: Some(count),
            max_shares: None,
            next_key: self.next_key.as_deref().map(encode_hex),
        }
    }

    /// What the Faena workers mine at `difficulty` (capped at the upstream one).
    pub fn worker_params(&self, difficulty: u64) -> MineParams {
        let (start, count) = self.worker_range();
        let d = difficulty.clamp(1, self.upstream_difficulty().max(1));
        self.params(start, count, target_for_difficulty(d))
    }

    /// What miner slot `slot` covers, at `target`.
    pub fn slot_params(&self, slot: u8, target: u64) -> MineParams {
        self.params(u32::from(slot) << 24, SLOT_NONCES, target)
    }

    /// The block with `nonce` written in, for `submit_block`.
    pub fn block_with(&self, nonce: u32) -> Option<Vec<u8>> {
        let mut block = self.block.clone()?;
        let at = DEFAULT_NONCE_OFFSET as usize;
        block.get_mut(at..at + 4)?.copy_from_slice(&nonce.to_le_bytes());
        Some(block)
    }
}

/// A source's current templates, one per group: what its miners and workers mine.
#[derive(Debug, Clone, PartialEq)]
pub struct Work {
    pub templates: Vec<Arc<Template>>,
}

impl Work {
    pub fn group(&self, group: u32) -> Option<&Arc<Template>> {
        self.templates.get(group as usize)
    }

    /// The template workers mine (group 0).
    pub fn main(&self) -> Option<&Arc<Template>> {
        self.templates.first()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(fixed: Option<u8>) -> Template {
        Template {
            seq: 1,
            group: 0,
            key: vec![1; 32],
            next_key: None,
            blob: vec![7; 76],
            height: Some(5),
            network_difficulty: Some(200),
            block: Some(vec![9; 120]),
            upstream: None,
            fixed_byte: fixed,
        }
    }

    #[test]
    fn slots_own_the_top_nonce_byte() {
        let t = template(None);
        let blob = t.blob_for(7);
        assert_eq!(&blob[39..43], &[0, 0, 0, 7]);
        assert_eq!(&blob[..39], &t.blob[..39]);
        let p = t.slot_params(7, 1000).work().expect("valid");
        assert_eq!((p.start, p.count), (7 << 24, SLOT_NONCES));
        assert!(p.contains(0x07ff_ffff) && !p.contains(0x0800_0000));
        let w = t.worker_params(1_000_000).work().expect("valid");
        assert_eq!((w.start, w.count, w.target), (0, SLOT_NONCES, target_for_difficulty(200)));
    }

    #[test]
    fn a_fixed_byte_leaves_workers_its_range_and_miners_nothing() {
        let t = template(Some(0x5a));
        assert!(!t.has_miner_slots());
        let w = t.worker_params(50).work().expect("valid");
        assert_eq!((w.start, w.count), (0x5a << 24, SLOT_NONCES));
        assert_eq!(w.input(w.start)[42], 0x5a);
    }

    #[test]
    fn the_next_key_goes_out_with_the_workers_and_the_miners_work() {
        let mut t = template(None);
        assert_eq!(t.worker_params(10).next_key, None);
        t.next_key = Some(vec![2; 32]);
        let hex = Some("02".repeat(32));
        assert_eq!((t.worker_params(10).next_key, t.slot_params(3, 1).next_key), (hex.clone(), hex));
        let work = t.worker_params(10).work().expect("valid");
        assert_eq!(work.next_key, Some(vec![2; 32]));
    }

    #[test]
    fn blocks_carry_the_nonce_little_endian_at_39() {
        let b = template(None).block_with(0x0102_0304).expect("block");
        assert_eq!(&b[39..43], &[4, 3, 2, 1]);
    }
}
