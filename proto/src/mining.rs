//! The REST bodies of mining with the outside world: sources of work
//! (monerod, a pool), participants and the verifier's capacity.

use serde::{Deserialize, Serialize};

/// `POST /api/mining/sources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceSpec {
    /// Solo mining from monerod's JSON-RPC (`http://host:18081`).
    Daemon { url: String, wallet: String },
    /// A Stratum pool: `stratum+tcp://host:port` or `stratum+ssl://…`, one
    /// URL or a list to fail over along.
    Pool {
        url: Urls,
        user: String,
        #[serde(default)]
        pass: Option<String>,
    },
}

/// One URL or several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Urls {
    One(String),
    Many(Vec<String>),
}

impl Urls {
    pub fn list(&self) -> Vec<String> {
        match self {
            Self::One(u) => vec![u.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    Connecting,
    Mining,
    Error,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceShares {
    pub valid: u64,
    pub invalid: u64,
    pub stale: u64,
    pub upstream_accepted: u64,
    pub upstream_rejected: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockView {
    pub height: u64,
    /// The block's id as the node reports it (the PoW hash when it refused the block).
    pub hash: String,
    pub participant: String,
    pub accepted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub at_ms: u64,
}

/// `GET /api/mining/sources/{id}`: a source as it is now. No password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceView {
    pub id: String,
    pub kind: String,
    pub url: String,
    pub state: SourceState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wallet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// The network's difficulty (daemon) or the pool's share difficulty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub difficulty: Option<u64>,
    /// The Faena job its workers mine (the page can watch it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Stratum miners on it now.
    pub miners: u32,
    /// Templates it has had (one more per block or pool job).
    #[serde(default)]
    pub templates: u64,
    /// Workers' units stopped because a new template replaced theirs.
    #[serde(default)]
    pub retired_units: u64,
    pub shares: SourceShares,
    pub blocks: Vec<BlockView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceList {
    pub sources: Vec<SourceView>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParticipantShares {
    pub valid: u64,
    pub invalid: u64,
    pub stale: u64,
}

/// Hashrate from verified shares (sum of their difficulties over the window), H/s.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hashrates {
    #[serde(rename = "1m")]
    pub m1: f64,
    #[serde(rename = "10m")]
    pub m10: f64,
    #[serde(rename = "1h")]
    pub h1: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParticipantView {
    pub name: String,
    /// `worker` (a Faena worker) or `stratum` (a miner, by its login).
    pub kind: String,
    pub source: String,
    pub shares: ParticipantShares,
    pub hashrate: Hashrates,
    pub blocks: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Participants {
    pub participants: Vec<ParticipantView>,
}

/// `GET /api/mining/verifier`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierView {
    /// `fast` or `light`.
    pub mode: String,
    pub threads: u32,
    /// Shares per second it can check, as measured (None before it hashed).
    pub capacity: Option<f64>,
    /// Shares per second Stratum miners may send (a share of the capacity).
    pub budget: f64,
    /// Stratum shares turned away over the budget.
    pub over_budget: u64,
    /// The share interval vardiff aims at now (stretched when many miners share the budget).
    pub share_interval_secs: f64,
    pub miners: u32,
    /// The live sources' keys: what their shares are hashed with now.
    #[serde(default)]
    pub keys: Vec<VerifierKey>,
}

/// One live source key in the verifier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerifierKey {
    /// The key's first 8 bytes, hex.
    pub key: String,
    /// `fast`, `light` (the dataset is not ready: shares are still verified), or `none`.
    pub hashing: String,
    /// The fast dataset: `ready`, `building`, `failed` (retrying) or `off` (light mode).
    pub dataset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub building_secs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
