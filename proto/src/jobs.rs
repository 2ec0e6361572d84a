//! Job kinds, their parameters (validated here, once, for every entry point),
//! their outputs and their progress payloads.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::WireError;
pub use crate::ai::AiParams;
pub use crate::kind::{CustomKind, JobKind};
pub use crate::mine::MineParams;

/// Queue priority: `high` before `normal` before `low`, then oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    High,
    #[default]
    Normal,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Lifecycle of a job as users see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Delayed: queued at its `run_at` (or its next attempt's time).
    Scheduled,
    /// Waiting for the jobs it runs after.
    Waiting,
}

impl JobState {
    pub const ALL: [JobState; 7] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Scheduled,
        JobState::Waiting,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Scheduled => "scheduled",
            JobState::Waiting => "waiting",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Succeeded, failed or cancelled: nothing more happens to it.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    }
}

/// Longest `noop` delay: an hour is plenty for a test or drill job.
pub const MAX_NOOP_DELAY_MS: u64 = 3_600_000;
/// Most inputs in one `randomx.hash` batch.
pub const MAX_HASH_INPUTS: usize = 10_000;
/// Largest RandomX key or single input, in bytes.
pub const MAX_HASH_BYTES: usize = 64 * 1024;

/// `noop`: returns its payload, optionally after a delay (for drills and tests).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoopParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoopOutput {
    pub payload: Value,
}

/// `randomx.hash`: one input or a batch, as UTF-8 text or (with `hex`) hex.
/// `hex` applies to the key and the inputs alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashParams {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<String>>,
    #[serde(default)]
    pub hex: bool,
}

impl HashParams {
    fn bytes(&self, field: &str, s: &str) -> Result<Vec<u8>, WireError> {
        let bytes = if self.hex {
            decode_hex(s).map_err(|e| WireError::Params(format!("{field}: {e}")))?
        } else {
            s.as_bytes().to_vec()
        };
        if bytes.len() > MAX_HASH_BYTES {
            return Err(WireError::Params(format!("{field} is over {MAX_HASH_BYTES} bytes")));
        }
        Ok(bytes)
    }

    pub fn key_bytes(&self) -> Result<Vec<u8>, WireError> {
        let key = self.bytes("key", &self.key)?;
        if key.is_empty() {
            return Err(WireError::Params("key must not be empty".into()));
        }
        Ok(key)
    }

    /// The inputs in order; a single `input` is a batch of one.
    pub fn input_bytes(&self) -> Result<Vec<Vec<u8>>, WireError> {
        match (&self.input, &self.inputs) {
            (Some(one), None) => Ok(vec![self.bytes("input", one)?]),
            (None, Some(many)) if many.is_empty() => Err(WireError::Params("inputs must not be empty".into())),
            (None, Some(many)) if many.len() > MAX_HASH_INPUTS => {
                Err(WireError::Params(format!("at most {MAX_HASH_INPUTS} inputs per job")))
            }
            (None, Some(many)) => many.iter().map(|s| self.bytes("inputs[]", s)).collect(),
            (Some(_), Some(_)) => Err(WireError::Params("give either input or inputs, not both".into())),
            (None, None) => Err(WireError::Params("input (or inputs) is required".into())),
        }
    }

    pub fn is_batch(&self) -> bool {
        self.inputs.is_some()
    }
}

/// `{"hash"}` for one input, `{"hashes"}` for a batch; lowercase hex.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HashOutput {
    One { hash: String },
    Many { hashes: Vec<String> },
}

/// Progress of a hashing batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HashProgress {
    pub done: u64,
    pub total: u64,
}

/// A job's kind with its validated parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum JobSpec {
    Noop(NoopParams),
    RandomxHash(HashParams),
    RandomxMine(MineParams),
    AiQuery(AiParams),
    /// A custom kind's params: any JSON, carried as given.
    Custom(CustomKind, Value),
}

impl JobSpec {
    /// Validates `params` for `kind`: the one gate every entry point goes through.
    pub fn parse(kind: &str, params: Value) -> Result<Self, WireError> {
        let kind = JobKind::parse(kind)?;
        Self::parse_kind(kind, params)
    }

    pub fn parse_kind(kind: JobKind, params: Value) -> Result<Self, WireError> {
        if let JobKind::Custom(custom) = kind {
            return Ok(JobSpec::Custom(custom, params));
        }
        let params = if params.is_null() { Value::Object(Default::default()) } else { params };
        match kind {
            JobKind::Noop => {
                let p: NoopParams = from_value(kind, params)?;
                if p.delay_ms.is_some_and(|d| d > MAX_NOOP_DELAY_MS) {
                    return Err(WireError::Params(format!("delay_ms is over {MAX_NOOP_DELAY_MS}")));
                }
                Ok(JobSpec::Noop(p))
            }
            JobKind::RandomxHash => {
                let p: HashParams = from_value(kind, params)?;
                p.key_bytes()?;
                p.input_bytes()?;
                Ok(JobSpec::RandomxHash(p))
            }
            JobKind::RandomxMine => {
                let p: MineParams = from_value(kind, params)?;
                p.work()?;
                Ok(JobSpec::RandomxMine(p))
            }
            JobKind::AiQuery => {
                let p: AiParams = from_value(kind, params)?;
                p.validate()?;
                Ok(JobSpec::AiQuery(p))
            }
            JobKind::Custom(custom) => Ok(JobSpec::Custom(custom, params)),
        }
    }

    pub fn kind(&self) -> JobKind {
        match self {
            JobSpec::Noop(_) => JobKind::Noop,
            JobSpec::RandomxHash(_) => JobKind::RandomxHash,
            JobSpec::RandomxMine(_) => JobKind::RandomxMine,
            JobSpec::AiQuery(_) => JobKind::AiQuery,
            JobSpec::Custom(custom, _) => JobKind::Custom(*custom),
        }
    }

    /// [`Self::params_json`] as JSON text, written straight from the
    /// parameters (the store keeps them so, once a job).
    pub fn params_text(&self) -> String {
        let s = match self {
            JobSpec::Noop(p) => serde_json::to_string(p),
            JobSpec::RandomxHash(p) => serde_json::to_string(p),
            JobSpec::RandomxMine(p) => serde_json::to_string(p),
            JobSpec::AiQuery(p) => serde_json::to_string(p),
            JobSpec::Custom(_, params) => return params.to_string(),
        };
        s.unwrap_or_else(|_| "null".into())
    }

    pub fn params_json(&self) -> Value {
        let v = match self {
            JobSpec::Noop(p) => serde_json::to_value(p),
            JobSpec::RandomxHash(p) => serde_json::to_value(p),
            JobSpec::RandomxMine(p) => serde_json::to_value(p),
            JobSpec::AiQuery(p) => serde_json::to_value(p),
            JobSpec::Custom(_, params) => return params.clone(),
        };
        v.unwrap_or(Value::Null)
    }
}

/// Deserialises parameters with the path of the offending field in the error
/// (`noop params: delay_ms: invalid type ...`).
fn from_value<T: serde::de::DeserializeOwned>(kind: JobKind, params: Value) -> Result<T, WireError> {
    serde_path_to_error::deserialize(params).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            WireError::Params(format!("{kind} params: {inner}"))
        } else {
            WireError::Params(format!("{kind} params: {path}: {inner}"))
        }
    })
}

/// Decodes lowercase or uppercase hex with a message a person can act on.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err("hex must have an even number of digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("not hex at offset {i}"))
        })
        .collect()
}

pub fn encode_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_and_unknown_kinds() {
        for k in JobKind::ALL {
            assert_eq!(JobKind::parse(k.as_str()).ok(), Some(k));
        }
        let e = JobSpec::parse("bitcoin.mine", json!({})).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("unknown job kind") && e.contains("noop"), "{e}");
    }

    #[test]
    fn custom_params_are_carried_as_given() {
        for params in [json!({"text": "a b"}), json!([1, 2]), json!("text"), Value::Null] {
            let spec = JobSpec::parse("x.wordcount", params.clone()).expect("valid");
            assert_eq!(spec.kind().as_str(), "x.wordcount");
            assert_eq!(spec.params_json(), params);
            let text: Value = serde_json::from_str(&spec.params_text()).expect("the text is JSON");
            assert_eq!(text, params, "the text is the same parameters");
            assert_eq!(JobSpec::parse_kind(spec.kind(), spec.params_json()).ok(), Some(spec));
        }
        assert!(JobSpec::parse("x.", json!({})).is_err());
    }

    #[test]
    fn params_are_validated() {
        assert!(JobSpec::parse("noop", Value::Null).is_ok());
        assert!(JobSpec::parse("noop", json!({"payload": [1, 2], "delay_ms": 5})).is_ok());
        assert!(JobSpec::parse("noop", json!({"delay_ms": MAX_NOOP_DELAY_MS + 1})).is_err());
        assert!(JobSpec::parse("noop", json!({"bogus": 1})).is_err());
        assert!(JobSpec::parse("noop", json!("text")).is_err());
        assert!(JobSpec::parse("randomx.hash", json!({"key": "k", "input": "x"})).is_ok());
        assert!(JobSpec::parse("randomx.hash", json!({"key": "6b", "inputs": ["00", "ff"], "hex": true})).is_ok());
        for bad in [
            json!({"key": "k"}),
            json!({"key": "", "input": "x"}),
            json!({"key": "k", "input": "x", "inputs": ["y"]}),
            json!({"key": "k", "inputs": []}),
            json!({"key": "zz", "input": "00", "hex": true}),
            json!({"key": "abc", "input": "00", "hex": true}),
            json!({"input": "x"}),
        ] {
            assert!(JobSpec::parse("randomx.hash", bad.clone()).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = JobSpec::parse("randomx.hash", json!({"key": "k", "inputs": ["a", "b"]})).expect("valid");
        assert_eq!(JobSpec::parse_kind(spec.kind(), spec.params_json()).ok(), Some(spec.clone()));
        let text: Value = serde_json::from_str(&spec.params_text()).expect("the text is JSON");
        assert_eq!(text, spec.params_json(), "the text the store keeps is the same parameters");
        let out = HashOutput::Many { hashes: vec!["00".into()] };
        let back: HashOutput = serde_json::from_value(serde_json::to_value(&out).expect("ser")).expect("de");
        assert_eq!(back, out);
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(decode_hex("00Ff10").ok(), Some(vec![0, 255, 16]));
        assert!(decode_hex("0").is_err());
        assert!(decode_hex("é1").is_err());
        assert_eq!(encode_hex(&[0, 255, 16]), "00ff10");
    }
}
