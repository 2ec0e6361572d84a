//! Monero Stratum as XMRig 6.x speaks it: one JSON-RPC 2.0 object per line
//! over TCP. Faena's Stratum server, its pool client, the tests' miner and
//! the benchmark all use these types.
//!
//! - `login` `{login, pass, agent, algo: [..], rigid}` → `{id, job, extensions, status: "OK"}`
//! - server notification `job` `{blob, job_id, target, algo, height, seed_hash, id}`
//! - `submit` `{id, job_id, nonce, result, algo}` → `{status: "OK"}`
//! - `keepalived` `{id}` → `{status: "KEEPALIVED"}`
//!
//! Errors are `{"error": {"code": -1, "message": ...}}`. XMRig closes the
//! connection on messages starting "Unauthenticated" or "IP Address
//! currently banned"; any other error counts as a rejected share.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::jobs::{decode_hex, encode_hex};

/// The first line a forwarder (a standby, the edge) writes on a Stratum
/// connection it passes on, followed by the client's signed address: the
/// Stratum server counts the miner by that address (caps, bans, budget),
/// not by the forwarder's.
pub const FORWARDED_PREFACE: &str = "faena-client ";

/// The only algorithm Faena mines.
pub const ALGO: &str = "rx/0";
/// What the server announces at login.
pub const EXTENSIONS: [&str; 3] = ["algo", "nicehash", "keepalive"];
/// The top nonce byte's place in a Monero hashing blob (nonce at 39..43).
pub const NICEHASH_BYTE: usize = 42;

/// A line from a client: a call (with `id`) or, from a pool, a notification.
#[derive(Debug, Clone, Deserialize)]
pub struct Incoming {
    #[serde(default)]
    pub id: Value,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub params: Value,
    #[serde(default)]
    pub result: Value,
    #[serde(default)]
    pub error: Option<RpcError>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginParams {
    pub login: String,
    #[serde(default)]
    pub pass: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algo: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rigid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitParams {
    pub id: String,
    pub job_id: String,
    /// 4 bytes as they sit in the blob (little-endian), hex.
    pub nonce: String,
    /// The 32-byte RandomX hash, hex.
    pub result: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algo: Option<String>,
}

/// A job as a miner gets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub blob: String,
    pub job_id: String,
    pub target: String,
    #[serde(default)]
    pub algo: Option<String>,
    #[serde(default)]
    pub height: Option<u64>,
    #[serde(default)]
    pub seed_hash: Option<String>,
    /// The session id, in notifications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginResult {
    pub id: String,
    pub job: Job,
    #[serde(default)]
    pub extensions: Vec<String>,
    pub status: String,
}

/// A call, serialised as one line (with the trailing newline).
pub fn request(id: u64, method: &str, params: &impl Serialize) -> String {
    let v = serde_json::json!({"id": id, "jsonrpc": "2.0", "method": method, "params": params});
    format!("{v}\n")
}

/// A successful answer to call `id`, as one line.
pub fn response(id: &Value, result: &impl Serialize) -> String {
    let v = serde_json::json!({"id": id, "jsonrpc": "2.0", "error": null, "result": result});
    format!("{v}\n")
}

/// An error answer to call `id`, as one line.
pub fn error(id: &Value, message: &str) -> String {
    let v = serde_json::json!({"id": id, "jsonrpc": "2.0", "error": {"code": -1, "message": message}, "result": null});
    format!("{v}\n")
}

/// A `job` notification, as one line.
pub fn job_notification(job: &Job) -> String {
    let v = serde_json::json!({"jsonrpc": "2.0", "method": "job", "params": job});
    format!("{v}\n")
}

/// The target a miner is sent for `difficulty`: 4 bytes (compact, as pools
/// send it) while the difficulty fits, else 8; both little-endian hex.
pub fn target_hex(difficulty: u64) -> String {
    let d = difficulty.max(1);
    if d <= u64::from(u32::MAX) {
        encode_hex(&(u32::MAX / d as u32).max(1).to_le_bytes())
    } else {
        encode_hex(&(u64::MAX / d).to_le_bytes())
    }
}

/// A submitted nonce: 8 hex digits, the blob's 4 bytes (little-endian).
pub fn parse_nonce(hex: &str) -> Result<u32, String> {
    let raw = decode_hex(hex)?;
    let bytes: [u8; 4] = raw.try_into().map_err(|_| "nonce must be 4 bytes (8 hex digits)".to_owned())?;
    Ok(u32::from_le_bytes(bytes))
}

/// A nonce as a miner submits it.
pub fn nonce_hex(nonce: u32) -> String {
    encode_hex(&nonce.to_le_bytes())
}

/// The difficulty a 64-bit target stands for.
pub fn difficulty_of(target: u64) -> u64 {
    u64::MAX / target.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mine::parse_target;

    #[test]
    fn targets_round_trip_through_xmrigs_widening() {
        for d in [1u64, 200, 5000, 100_000, u64::from(u32::MAX), 1 << 40] {
            let t = parse_target(&target_hex(d)).expect("target");
            let back = difficulty_of(t);
            assert!(back >= d && back <= d + d / 1000 + 1, "{d} came back as {back}");
        }
        assert_eq!(target_hex(5000).len(), 8);
        assert_eq!(target_hex(1 << 40).len(), 16);
    }

    #[test]
    fn nonces_are_the_blobs_bytes() {
        assert_eq!(parse_nonce("01020304"), Ok(0x0403_0201));
        assert_eq!(nonce_hex(0x0403_0201), "01020304");
        assert!(parse_nonce("0102").is_err());
        assert!(parse_nonce("zz020304").is_err());
    }

    #[test]
    fn lines_are_single_json_objects() {
        let l = error(&Value::from(7), "Low difficulty share");
        assert!(l.ends_with('\n') && l.matches('\n').count() == 1);
        let v: Incoming = serde_json::from_str(l.trim()).expect("json");
        assert_eq!(v.error.map(|e| e.message), Some("Low difficulty share".into()));
    }
}
