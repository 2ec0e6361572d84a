//! `randomx.mine`: parameters, the shares and progress a worker reports for
//! its nonce range, and the job's output and progress as users see them.
//!
//! A share is a hash whose last 8 bytes, read as a little-endian integer, are
//! below the 64-bit target — Monero's and XMRig's rule. The target is given
//! either as `difficulty` (`target = u64::MAX / difficulty`) or as a stratum
//! `target`: hex, 4 bytes (compact, as pools send it) or 8 bytes, little-endian.
//!
//! The master splits a job's nonce range into units, one per worker at a
//! time; each unit is a `randomx.mine` work unit whose `nonce_start` and
//! `nonce_count` cover its part, so a worker needs to know nothing more.

use serde::{Deserialize, Serialize};

use crate::WireError;
use crate::jobs::decode_hex;

/// Where Monero block blobs keep the nonce.
pub const DEFAULT_NONCE_OFFSET: u32 = 39;
/// Largest block blob accepted, in bytes (Monero's are ~76).
pub const MAX_BLOB_BYTES: usize = 16 * 1024;
/// Largest key (Monero's seed hash is 32 bytes).
pub const MAX_KEY_BYTES: usize = 256;
/// Most shares one job may ask for: each costs the master a verification.
pub const MAX_SHARES: u32 = 100_000;
/// The whole 32-bit nonce space.
pub const NONCE_SPACE: u64 = 1 << 32;
/// The most shares a client's mining job may have the master re-hash.
pub const MAX_VERIFIED_SHARES: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MineParams {
    /// RandomX key (Monero: the seed hash), hex.
    pub key: String,
    /// Block hashing blob, hex; the nonce is written into it at `nonce_offset`.
    pub blob: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce_offset: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce_start: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce_count: Option<u64>,
    /// Stop once this many shares are found (across all workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shares: Option<u32>,
    /// The key the chain moves to next (Monero's `next_seed_hash`), hex: a
    /// worker with room for a second dataset builds it while it mines this
    /// one, so hashing does not stop at the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_key: Option<String>,
}

/// The parameters, checked and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MineWork {
    pub key: Vec<u8>,
    pub blob: Vec<u8>,
    pub target: u64,
    pub nonce_offset: usize,
    pub start: u32,
    pub count: u64,
    pub max_shares: Option<u32>,
    pub next_key: Option<Vec<u8>>,
}

impl MineWork {
    /// One past the last nonce.
    pub fn end(&self) -> u64 {
        u64::from(self.start) + self.count
    }

    /// Whether `nonce` lies in this work's range.
    pub fn contains(&self, nonce: u32) -> bool {
        nonce >= self.start && u64::from(nonce) < self.end()
    }

    /// The blob with `nonce` written in: what is hashed for that nonce.
    pub fn input(&self, nonce: u32) -> Vec<u8> {
        let mut input = self.blob.clone();
        input[self.nonce_offset..self.nonce_offset + 4].copy_from_slice(&nonce.to_le_bytes());
        input
    }
}

impl MineParams {
    /// Validates everything and decodes the hex fields.
    pub fn work(&self) -> Result<MineWork, WireError> {
        let bad = |m: String| WireError::Params(m);
        let key = decode_hex(&self.key).map_err(|e| bad(format!("key: {e}")))?;
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            return Err(bad(format!("key must be 1..={MAX_KEY_BYTES} bytes of hex")));
        }
        let blob = decode_hex(&self.blob).map_err(|e| bad(format!("blob: {e}")))?;
        if blob.len() > MAX_BLOB_BYTES {
            return Err(bad(format!("blob is over {MAX_BLOB_BYTES} bytes")));
        }
        let nonce_offset = self.nonce_offset.unwrap_or(DEFAULT_NONCE_OFFSET) as usize;
        if blob.len() < nonce_offset + 4 {
            return Err(bad(format!(
                "blob is {} bytes; the 4-byte nonce at nonce_offset {nonce_offset} needs at least {}",
                blob.len(),
                nonce_offset + 4
            )));
        }
        let target = match (&self.target, self.difficulty) {
            (Some(t), None) => parse_target(t).map_err(|e| bad(format!("target: {e}")))?,
            (None, Some(0)) => return Err(bad("difficulty must be at least 1".into())),
            (None, Some(d)) => target_for_difficulty(d),
            (Some(_), Some(_)) => return Err(bad("give either target or difficulty, not both".into())),
            (None, None) => return Err(bad("target (hex) or difficulty is required".into())),
        };
        let start = self.nonce_start.unwrap_or(0);
        let room = NONCE_SPACE - u64::from(start);
        let count = self.nonce_count.unwrap_or(room);
        if count == 0 || count > room {
            return Err(bad(format!("nonce_count must be 1..={room} from nonce_start {start} (nonces are 32-bit)")));
        }
        if self.max_shares.is_some_and(|m| m == 0 || m > MAX_SHARES) {
            return Err(bad(format!("max_shares must be 1..={MAX_SHARES}")));
        }
        let next_key = match &self.next_key {
            None => None,
            Some(k) => match decode_hex(k) {
                Ok(k) if !k.is_empty() && k.len() <= MAX_KEY_BYTES => Some(k),
                _ => return Err(bad(format!("next_key must be 1..={MAX_KEY_BYTES} bytes of hex"))),
            },
        };
        Ok(MineWork { key, blob, target, nonce_offset, start, count, max_shares: self.max_shares, next_key })
    }

    /// Refuses a client's job that would have the master re-hash more than
    /// [`MAX_VERIFIED_SHARES`] shares: difficulty 1 over a large range makes
    /// as many shares as nonces. The job must then raise its difficulty or
    /// cap its shares (`max_shares`). (The master's own jobs, mining a
    /// source, are bounded by vardiff instead.)
    pub fn check_share_cost(&self) -> Result<(), WireError> {
        let w = self.work()?;
        let difficulty = u64::MAX / w.target.max(1);
        let expected = w.count / difficulty.max(1);
        let bound = w.max_shares.map_or(expected, |m| expected.min(u64::from(m)));
        if bound <= MAX_VERIFIED_SHARES {
            return Ok(());
        }
        let least = w.count.div_ceil(MAX_VERIFIED_SHARES);
        Err(WireError::Params(format!(
            "difficulty {difficulty} over {count} nonces means about {expected} shares for the master to re-hash; \
             the limit is {MAX_VERIFIED_SHARES}: set difficulty to at least {least}, or max_shares to at most {MAX_VERIFIED_SHARES}",
            count = w.count
        )))
    }

    /// The same job narrowed to `count` nonces from `start`, wanting at most
    /// `max_shares`: the parameters of one unit of it.
    pub fn unit(&self, start: u32, count: u64, max_shares: Option<u32>) -> Self {
        Self { nonce_start: Some(start), nonce_count: Some(count), max_shares, ..self.clone() }
    }
}

/// The 64-bit target for a difficulty (`u64::MAX / difficulty`).
pub fn target_for_difficulty(difficulty: u64) -> u64 {
    u64::MAX / difficulty.max(1)
}

/// A stratum target: 8 bytes little-endian, or 4 (compact) as pools send them,
/// widened the way XMRig does (`u64::MAX / (u32::MAX / t32)`).
pub fn parse_target(hex: &str) -> Result<u64, String> {
    let raw = decode_hex(hex)?;
    match raw.len() {
        8 => Ok(u64::from_le_bytes(raw.try_into().map_err(|_| "8 bytes")?)),
        4 => {
            let t32 = u32::from_le_bytes(raw.try_into().map_err(|_| "4 bytes")?);
            if t32 == 0 {
                return Err("a zero target can never be met".into());
            }
            Ok(u64::MAX / (u64::from(u32::MAX) / u64::from(t32)))
        }
        n => Err(format!("must be 4 or 8 bytes of little-endian hex, not {n}")),
    }
}

/// A hash that meets the target, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub nonce: u32,
    /// The RandomX hash, hex.
    pub hash: String,
}

/// A verified share, as the job's output and progress show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundShare {
    pub nonce: u32,
    pub hash: String,
    pub worker: String,
}

/// Worker → master, about once a second while a unit runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitProgress {
    /// Hashes done in this unit so far.
    pub hashes: u64,
    /// Current speed on this unit, H/s.
    pub hashrate: f64,
    /// Shares found since the previous report.
    #[serde(default)]
    pub shares: Vec<Share>,
}

/// Worker → master: the outcome of one unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnitOutput {
    /// Every share the unit found (including those already reported).
    pub shares: Vec<Share>,
    pub hashes: u64,
    pub hashrate: f64,
    pub elapsed_ms: u64,
}

/// One worker's part in a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerTally {
    pub worker: String,
    pub hashes: u64,
    /// Its latest speed on this job, H/s.
    pub hashrate: f64,
    pub shares: u32,
    pub invalid_shares: u32,
}

/// A nonce range a worker finished (`hashes` < `count` when it stopped early
/// because the job had its shares).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MinedRange {
    pub start: u32,
    pub count: u64,
    pub hashes: u64,
    pub worker: String,
}

/// The job's result: `{"shares", "hashes", "hashrate"}` plus who did what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MineOutput {
    pub shares: Vec<FoundShare>,
    pub hashes: u64,
    /// Hashes over wall time from the first unit's start to the end, H/s.
    pub hashrate: f64,
    pub elapsed_ms: u64,
    pub invalid_shares: u32,
    /// Shares for a template the job had already replaced, found within its grace period.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stale_shares: u32,
    pub workers: Vec<WorkerTally>,
    /// Finished ranges, by start: together they cover the requested range
    /// (unless the job stopped at `max_shares`).
    pub ranges: Vec<MinedRange>,
}

/// The job's progress as watchers see it (`progress` events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MineProgress {
    pub hashes: u64,
    /// Sum of the current speeds of the workers on it, H/s.
    pub hashrate: f64,
    /// Nonces of the requested range not yet finished.
    pub remaining: u64,
    pub shares: u32,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stale_shares: u32,
    /// Shares verified since the previous event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub new_shares: Vec<FoundShare>,
    pub workers: Vec<WorkerTally>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: serde_json::Value) -> Result<MineWork, String> {
        let p: MineParams = serde_json::from_value(v).map_err(|e| e.to_string())?;
        p.work().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_ranges() {
        let blob = "00".repeat(76);
        let w = params(json!({"key": "6b6579", "blob": blob, "difficulty": 1000})).expect("valid");
        assert_eq!((w.start, w.count, w.nonce_offset), (0, NONCE_SPACE, 39));
        assert_eq!(w.target, u64::MAX / 1000);
        assert_eq!(w.key, b"key");
        let w = params(json!({"key": "6b", "blob": blob, "difficulty": 1, "nonce_start": 10, "nonce_count": 5}))
            .expect("valid");
        assert!(w.contains(10) && w.contains(14) && !w.contains(15) && !w.contains(9));
        assert_eq!(&w.input(0x0403_0201)[39..43], &[1, 2, 3, 4]);
        let top = params(json!({"key": "6b", "blob": blob, "difficulty": 1, "nonce_start": u32::MAX}));
        assert_eq!(top.map(|w| w.count), Ok(1));
        let next = params(json!({"key": "6b", "blob": blob, "difficulty": 1, "next_key": "6e6578"}));
        assert_eq!(next.map(|w| w.next_key), Ok(Some(b"nex".to_vec())));
    }

    #[test]
    fn bad_params_say_what_is_wrong() {
        let blob = "00".repeat(76);
        for (bad, says) in [
            (json!({"key": "6b", "blob": blob}), "target (hex) or difficulty"),
            (json!({"key": "6b", "blob": blob, "difficulty": 0}), "at least 1"),
            (json!({"key": "6b", "blob": blob, "difficulty": 5, "target": "ffffffff"}), "not both"),
            (json!({"key": "6b", "blob": blob, "target": "ffffff"}), "4 or 8 bytes"),
            (json!({"key": "6b", "blob": blob, "target": "00000000"}), "zero target"),
            (json!({"key": "", "blob": blob, "difficulty": 1}), "key must be"),
            (json!({"key": "xy", "blob": blob, "difficulty": 1}), "key: not hex"),
            (json!({"key": "6b", "blob": "00".repeat(42), "difficulty": 1}), "needs at least 43"),
            (json!({"key": "6b", "blob": blob, "difficulty": 1, "nonce_count": 0}), "nonce_count"),
            (
                json!({"key": "6b", "blob": blob, "difficulty": 1, "nonce_start": 1, "nonce_count": NONCE_SPACE}),
                "32-bit",
            ),
            (json!({"key": "6b", "blob": blob, "difficulty": 1, "max_shares": 0}), "max_shares"),
            (json!({"key": "6b", "blob": blob, "difficulty": 1, "next_key": "zz"}), "next_key must be"),
            (json!({"key": "6b", "blob": blob, "difficulty": 1, "next_key": ""}), "next_key must be"),
        ] {
            let e = params(bad.clone()).err().unwrap_or_default();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn stratum_targets_widen_like_xmrig() {
        // Difficulty 5000 as a pool sends it: t32 = u32::MAX / 5000.
        let t32 = u32::MAX / 5000;
        let t = parse_target(&crate::jobs::encode_hex(&t32.to_le_bytes())).expect("4 bytes");
        assert_eq!(t, u64::MAX / (u64::from(u32::MAX) / u64::from(t32)));
        assert_eq!(u64::MAX / t, 5000);
        assert_eq!(parse_target("ffffffffffffff00"), Ok(0x00ff_ffff_ffff_ffff));
    }

    #[test]
    fn units_narrow_the_range_only() {
        let p: MineParams =
            serde_json::from_value(json!({"key": "6b", "blob": "00".repeat(76), "difficulty": 9})).expect("params");
        let unit = p.unit(100, 50, Some(2)).work().expect("valid unit");
        assert_eq!((unit.start, unit.count, unit.max_shares, unit.target), (100, 50, Some(2), u64::MAX / 9));
    }
}
