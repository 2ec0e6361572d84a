//! The versioned JSON payloads carried over MQTT. Each is encoded as one JSON
//! object with `"v": 1`; decoding checks the version before the shape, so a
//! newer peer gets "unsupported version", not a confusing field error.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{FencingToken, InstanceId, JobId, WorkerId};
use crate::jobs::JobKind;
use crate::{PAYLOAD_VERSION, WireError};

/// Encode/decode with the version envelope.
pub trait Payload: Serialize + DeserializeOwned {
    fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Versioned<'a, T> {
            v: u32,
            #[serde(flatten)]
            body: &'a T,
        }
        // Serialising these plain structs to a Vec cannot fail.
        serde_json::to_vec(&Versioned { v: PAYLOAD_VERSION, body: self }).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        #[derive(Deserialize)]
        struct Peek {
            v: Option<u32>,
        }
        let peek: Peek = serde_json::from_slice(bytes)?;
        supported(peek.v)?;
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// A payload's `v`, checked before its shape: a newer peer gets
/// "unsupported version", not a confusing field error.
fn supported(v: Option<u32>) -> Result<(), WireError> {
    match v {
        None => Err(WireError::MissingVersion),
        Some(PAYLOAD_VERSION) => Ok(()),
        Some(found) => Err(WireError::Version { found }),
    }
}

/// One attempt of one job, sent to the chosen worker's jobs topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkUnit {
    pub job_id: JobId,
    pub attempt: u32,
    /// Fencing token: results are accepted only with the current one.
    pub token: FencingToken,
    pub kind: JobKind,
    pub params: Value,
    /// Names of secrets (e.g. `api_key`) the worker fetches over gRPC for
    /// this attempt; their values never travel on the broker.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// For a job submitted `after` others: each parent's result (null for
    /// one that did not succeed, under `after_policy: "always"`), by id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parents: Option<serde_json::Map<String, serde_json::Value>>,
}
impl Payload for WorkUnit {}

impl WorkUnit {
    /// Attempt `attempt` of job `job_id`, fenced by `token`: no secrets to
    /// fetch, no parents' results.
    pub fn new(job_id: JobId, attempt: u32, token: FencingToken, kind: JobKind, params: Value) -> Self {
        Self { job_id, attempt, token, kind, params, secrets: Vec::new(), parents: None }
    }
}

/// Most units in one message on a jobs topic.
pub const MAX_BATCH_UNITS: usize = 256;
/// Most bytes of one message of several units; a unit larger than this
/// goes alone, as a single unit.
pub const MAX_BATCH_BYTES: usize = 1 << 20;

/// Several units in one message on a worker's jobs topic,
/// `{"v":1,"units":[...]}`, for a worker that registered `unit_batches`:
/// one publish, one routing and one acknowledgement for all of them.
/// Built a unit at a time, each unit's JSON written once.
#[derive(Debug)]
pub struct UnitBatch {
    buf: Vec<u8>,
    units: usize,
}

impl Default for UnitBatch {
    fn default() -> Self {
        Self { buf: format!(r#"{{"v":{PAYLOAD_VERSION},"units":["#).into_bytes(), units: 0 }
    }
}

impl UnitBatch {
    /// A unit's JSON as a batch holds it (no version of its own).
    pub fn json(unit: &WorkUnit) -> Vec<u8> {
        // Serialising this plain struct to a Vec cannot fail.
        serde_json::to_vec(unit).unwrap_or_default()
    }

    /// Whether the unit whose JSON is `unit` fits in the message: at most
    /// [`MAX_BATCH_UNITS`] units and [`MAX_BATCH_BYTES`] bytes with it.
    pub fn fits(&self, unit: &[u8]) -> bool {
        self.units < MAX_BATCH_UNITS && self.buf.len() + 1 + unit.len() + 2 <= MAX_BATCH_BYTES
    }

    /// Adds a unit's JSON ([`UnitBatch::json`]); see [`UnitBatch::fits`].
    pub fn push(&mut self, unit: &[u8]) {
        if self.units > 0 {
            self.buf.push(b',');
        }
        self.buf.extend_from_slice(unit);
        self.units += 1;
    }

    pub fn len(&self) -> usize {
        self.units
    }

    pub fn is_empty(&self) -> bool {
        self.units == 0
    }

    /// The message, and a new empty batch in its place.
    pub fn take(&mut self) -> Vec<u8> {
        let mut done = std::mem::take(self);
        done.buf.extend_from_slice(b"]}");
        done.buf
    }
}

/// A message on a jobs topic: one unit, or several ([`UnitBatch`]).
pub fn decode_units(bytes: &[u8]) -> Result<Vec<WorkUnit>, WireError> {
    #[derive(Deserialize)]
    struct Peek {
        v: Option<u32>,
        units: Option<serde::de::IgnoredAny>,
    }
    #[derive(Deserialize)]
    struct Batch {
        units: Vec<WorkUnit>,
    }
    let peek: Peek = serde_json::from_slice(bytes)?;
    supported(peek.v)?;
    match peek.units {
        Some(_) => Ok(serde_json::from_slice::<Batch>(bytes)?.units),
        None => Ok(vec![serde_json::from_slice(bytes)?]),
    }
}

/// Orders from the master to one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Control {
    /// Stop this attempt now; its result would be ignored.
    Cancel { job_id: JobId, attempt: u32 },
    /// Take no new work, finish or hand back the running units.
    Drain,
}
impl Payload for Control {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerState {
    /// Building a RandomX dataset: registered, but its first units wait.
    Initialising,
    Online,
    Draining,
    Offline,
}

/// A worker's retained status; its last will is the same with `offline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerStatus {
    pub worker_id: WorkerId,
    pub instance_id: InstanceId,
    pub state: WorkerState,
    pub slots: u32,
    pub running: u32,
    #[serde(default)]
    pub kinds: Vec<String>,
    #[serde(default)]
    pub hashrate: f64,
    /// The live configuration version it runs (0: none).
    #[serde(default)]
    pub config_version: u64,
    pub ts_ms: u64,
}
impl Payload for WorkerStatus {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MasterState {
    Online,
    /// Shutting down: takes no new jobs, still takes the results of running ones.
    Draining,
    Offline,
}

/// The master's retained status; workers re-register when the instance changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasterStatus {
    pub instance_id: InstanceId,
    pub state: MasterState,
    pub ts_ms: u64,
    /// On a store several masters share: the leading master (its web
    /// address) and the epoch of its lease.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
}
impl Payload for MasterStatus {}

/// One log event, as published on the logs topic (one JSON object per message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub ts_ms: u64,
    pub level: String,
    /// `master` or `worker:{id}`.
    pub component: String,
    pub target: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
}
impl Payload for LogLine {}

/// Milliseconds since the Unix epoch, for payload timestamps.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn round_trip<T: Payload + PartialEq + std::fmt::Debug>(value: T) {
        let bytes = value.encode();
        let v: Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(v["v"], json!(1));
        assert_eq!(T::decode(&bytes).expect("decodes"), value);
    }

    fn worker() -> WorkerId {
        WorkerId::parse("w1").expect("valid")
    }

    fn unit(n: u64) -> WorkUnit {
        WorkUnit::new(JobId::new(), 1, FencingToken::new(), JobKind::Noop, json!({"payload": n}))
    }

    #[test]
    fn a_jobs_topic_carries_one_unit_or_several() {
        let (a, b) = (unit(1), unit(2));
        assert_eq!(decode_units(&a.encode()).expect("one"), std::slice::from_ref(&a));
        let mut units = UnitBatch::default();
        for u in [&a, &b] {
            let json = UnitBatch::json(u);
            assert!(units.fits(&json));
            units.push(&json);
        }
        assert_eq!(units.len(), 2);
        let batch = units.take();
        assert!(units.is_empty(), "a new batch in its place");
        let v: Value = serde_json::from_slice(&batch).expect("json");
        assert_eq!((v["v"].clone(), v["units"].as_array().map(Vec::len)), (json!(1), Some(2)));
        assert_eq!(decode_units(&batch).expect("several"), [a, b]);
        assert!(matches!(decode_units(br#"{"units":[]}"#), Err(WireError::MissingVersion)));
        assert!(matches!(decode_units(br#"{"v":2,"units":[]}"#), Err(WireError::Version { found: 2 })));
        assert!(decode_units(br#"{"v":1,"units":[{"job_id":"x"}]}"#).is_err(), "a bad unit spoils its batch");
        assert!(decode_units(br#"{"v":1,"units":{}}"#).is_err());
    }

    #[test]
    fn a_batch_is_bounded_in_units_and_bytes() {
        let json = UnitBatch::json(&unit(1));
        let mut units = UnitBatch::default();
        while units.fits(&json) {
            units.push(&json);
        }
        assert_eq!(units.len(), MAX_BATCH_UNITS);
        assert_eq!(decode_units(&units.take()).expect("decodes").len(), MAX_BATCH_UNITS);
        // A unit of half the bytes fits once; with a second the message
        // would pass the bound, and a unit past it never fits.
        let half = UnitBatch::json(&WorkUnit { params: json!("x".repeat(MAX_BATCH_BYTES / 2)), ..unit(2) });
        assert!(units.fits(&half));
        units.push(&half);
        assert!(!units.fits(&half));
        assert!(units.take().len() <= MAX_BATCH_BYTES);
        let whole = UnitBatch::json(&WorkUnit { params: json!("x".repeat(MAX_BATCH_BYTES)), ..unit(3) });
        assert!(!UnitBatch::default().fits(&whole));
    }

    #[test]
    fn every_payload_round_trips() {
        round_trip(WorkUnit {
            job_id: JobId::new(),
            attempt: 2,
            token: FencingToken::new(),
            kind: JobKind::RandomxHash,
            params: json!({"key": "k", "input": "i"}),
            secrets: vec!["api_key".into()],
            parents: Some(serde_json::Map::from_iter([(JobId::new().to_string(), json!({"hash": "ab"}))])),
        });
        round_trip(Control::Cancel { job_id: JobId::new(), attempt: 1 });
        round_trip(Control::Drain);
        round_trip(WorkerStatus {
            worker_id: worker(),
            instance_id: InstanceId::new(),
            state: WorkerState::Online,
            slots: 4,
            running: 1,
            kinds: vec!["noop".into()],
            hashrate: 12.5,
            config_version: 7,
            ts_ms: now_ms(),
        });
        round_trip(MasterStatus {
            instance_id: InstanceId::new(),
            state: MasterState::Offline,
            ts_ms: 1,
            leader: None,
            epoch: None,
        });
        round_trip(MasterStatus {
            instance_id: InstanceId::new(),
            state: MasterState::Online,
            ts_ms: 2,
            leader: Some("10.0.1.7:8888".into()),
            epoch: Some(3),
        });
        let mut fields = Map::new();
        fields.insert("job".into(), json!("x"));
        round_trip(LogLine {
            ts_ms: 1,
            level: "INFO".into(),
            component: "master".into(),
            target: "t".into(),
            message: "m".into(),
            fields,
        });
    }

    #[test]
    fn versions_and_garbage_are_errors() {
        assert!(matches!(Control::decode(br#"{"v":2,"action":"drain"}"#), Err(WireError::Version { found: 2 })));
        assert!(matches!(Control::decode(br#"{"action":"drain"}"#), Err(WireError::MissingVersion)));
        for garbage in [
            &b""[..],
            b"\xff\xfe",
            b"null",
            b"[]",
            b"{\"v\":\"1\"}",
            b"{\"v\":1,\"action\":\"explode\"}",
            b"{\"v\":1}",
            b"{{{{",
        ] {
            assert!(Control::decode(garbage).is_err());
            assert!(WorkUnit::decode(garbage).is_err());
            assert!(WorkerStatus::decode(garbage).is_err());
            assert!(MasterStatus::decode(garbage).is_err());
        }
        let bad_worker = br#"{"v":1,"worker_id":"a/b","instance_id":"00000000-0000-0000-0000-000000000000","state":"online","slots":1,"running":0,"ts_ms":0}"#;
        assert!(WorkerStatus::decode(bad_worker).is_err());
    }
}
