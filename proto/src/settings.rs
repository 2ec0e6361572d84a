//! Live configuration: the cluster settings the master keeps, versioned, in
//! its store, and publishes retained and signed on `{p}/config`
//! ([`SignedConfig`]). Workers apply them without restarting and report the
//! version they run ([`Applied`]).
//!
//! A setting is set for every worker (`all`) or for one (`workers.{id}`,
//! which wins). A worker without a setting runs what its own flags say.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ai::Provider;
use crate::ids::WorkerId;
use crate::mqtt::Payload;

/// Workers that may have settings of their own (bounds the retained message).
pub const MAX_WORKER_SCOPES: usize = 4096;
/// Most settings one update may carry.
pub const MAX_SETTINGS_PER_UPDATE: usize = 64;
/// Most slots (or AI slots) a worker may be given.
pub const MAX_SLOTS: u32 = 4096;
const MAX_THREADS: u64 = 1024;
const MAX_TEXT: usize = 256;
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// The keys, as `PUT /api/config` and `faena config set` name them.
pub const KEYS: [&str; 7] = [
    "worker.slots",
    "worker.ai_slots",
    "worker.randomx_threads",
    "worker.log_level",
    "ai.providers",
    "ai.model.gemini",
    "ai.model.openai",
];

/// One setting with its value checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// Units (other than `ai.query`) a worker runs at once.
    Slots(u32),
    /// `ai.query` units a worker runs at once.
    AiSlots(u32),
    /// Threads a RandomX batch or mining unit runs on.
    RandomxThreads(usize),
    /// The log filter (`EnvFilter` syntax: `info`, `faena_worker=debug,warn`).
    LogLevel(String),
    /// The order providers are tried in when a job names none.
    AiProviders(Vec<Provider>),
    /// The model asked when a job names none.
    AiModel(Provider, String),
}

impl Setting {
    /// Checks `value` for `key`; numbers may come as strings and the
    /// provider order as `"a,b"` (what a command line gives).
    pub fn parse(key: &str, value: &Value) -> Result<Self, String> {
        match key {
            "worker.slots" => Ok(Self::Slots(number(key, value, u64::from(MAX_SLOTS))? as u32)),
            "worker.ai_slots" => Ok(Self::AiSlots(number(key, value, u64::from(MAX_SLOTS))? as u32)),
            "worker.randomx_threads" => Ok(Self::RandomxThreads(number(key, value, MAX_THREADS)? as usize)),
            "worker.log_level" => log_filter(text(key, value)?).map(|f| Self::LogLevel(f.to_owned())),
            "ai.providers" => providers(value).map(Self::AiProviders),
            "ai.model.local" => Err("ai.model.local cannot change live: the local model is the GGUF file a worker \
                 loads at start (FAENA_LOCAL_MODEL); restart the worker with another file"
                .into()),
            _ => match key.strip_prefix("ai.model.").and_then(Provider::parse) {
                Some(p) => model(text(key, value)?).map(|m| Self::AiModel(p, m.to_owned())),
                None => Err(format!("unknown setting {key:?} (known: {}, ai.model.local)", KEYS.join(", "))),
            },
        }
    }

    /// The value as stored and published (numbers as numbers, the order as a list).
    pub fn value(&self) -> Value {
        match self {
            Self::Slots(n) | Self::AiSlots(n) => Value::from(*n),
            Self::RandomxThreads(n) => Value::from(*n as u64),
            Self::LogLevel(s) | Self::AiModel(_, s) => Value::from(s.as_str()),
            Self::AiProviders(ps) => Value::from(ps.iter().map(|p| p.as_str()).collect::<Vec<_>>()),
        }
    }
}

fn number(key: &str, value: &Value, max: u64) -> Result<u64, String> {
    let n = match value {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    n.filter(|n| (1..=max).contains(n)).ok_or_else(|| format!("{key} must be a whole number 1..={max}, not {value}"))
}

fn text<'a>(key: &str, value: &'a Value) -> Result<&'a str, String> {
    match value.as_str().map(str::trim) {
        Some(s) if !s.is_empty() && s.len() <= MAX_TEXT => Ok(s),
        _ => Err(format!("{key} must be a non-empty string of at most {MAX_TEXT} bytes, not {value}")),
    }
}

/// `level` or `target=level`, comma separated.
fn log_filter(s: &str) -> Result<&str, String> {
    let bad = |d: &str| format!("worker.log_level: {d:?} is not a level ({}) or target=level", LEVELS.join(", "));
    for directive in s.split(',') {
        let (target, level) = directive.split_once('=').unwrap_or(("", directive));
        let target_ok = target.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-'));
        if !target_ok || !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(bad(directive));
        }
    }
    Ok(s)
}

fn model(s: &str) -> Result<&str, String> {
    crate::ai::check_model_name(s).map(|()| s)
}

fn providers(value: &Value) -> Result<Vec<Provider>, String> {
    let names: Vec<&str> = match value {
        Value::String(s) => s.split(',').map(str::trim).collect(),
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap_or("?")).collect(),
        _ => Vec::new(),
    };
    let mut out = Vec::new();
    for name in names {
        let p = Provider::parse(name)
            .ok_or_else(|| format!("ai.providers: unknown provider {name:?} (gemini, openai, local)"))?;
        if out.contains(&p) {
            return Err(format!("ai.providers names {name} twice"));
        }
        out.push(p);
    }
    match out.is_empty() {
        true => Err("ai.providers must name at least one provider, e.g. [\"local\", \"gemini\"]".into()),
        false => Ok(out),
    }
}

/// Settings by key, values already checked.
pub type Scope = BTreeMap<String, Value>;

/// The whole live configuration, one version of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// 0: nothing set yet. Each change adds one.
    pub version: u64,
    #[serde(default)]
    pub updated_ms: u64,
    /// For every worker.
    #[serde(default)]
    pub all: Scope,
    /// For one worker each; wins over `all`.
    #[serde(default)]
    pub workers: BTreeMap<String, Scope>,
}

/// A change: `PUT /api/config`'s body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigUpdate {
    /// Key to value; `null` removes the key from the scope.
    pub settings: Map<String, Value>,
    /// One worker's scope; absent: every worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The version this change was made against; a different current one
    /// refuses it (409), so two operators do not overwrite each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
}

impl ClusterConfig {
    /// What applies to `worker`: `all`, overridden by its own scope.
    pub fn for_worker(&self, worker: &str) -> Scope {
        let mut out = self.all.clone();
        if let Some(own) = self.workers.get(worker) {
            out.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out
    }

    /// Applies `update` (every entry checked first: all or nothing); the
    /// caller gives the new version and time.
    pub fn apply(&mut self, update: &ConfigUpdate) -> Result<(), String> {
        if update.settings.is_empty() {
            return Err("settings is empty: nothing to change".into());
        }
        if update.settings.len() > MAX_SETTINGS_PER_UPDATE {
            return Err(format!("at most {MAX_SETTINGS_PER_UPDATE} settings per change"));
        }
        let mut checked = Vec::new();
        for (key, value) in &update.settings {
            let value = match value {
                Value::Null => None,
                v => Some(Setting::parse(key, v)?.value()),
            };
            checked.push((key.clone(), value));
        }
        let scope = match &update.worker {
            None => &mut self.all,
            Some(w) => {
                WorkerId::parse(w).map_err(|e| format!("worker: {e}"))?;
                if !self.workers.contains_key(w) && self.workers.len() >= MAX_WORKER_SCOPES {
                    return Err(format!("at most {MAX_WORKER_SCOPES} workers may have settings of their own"));
                }
                self.workers.entry(w.clone()).or_default()
            }
        };
        for (key, value) in checked {
            match value {
                Some(v) => scope.insert(key, v),
                None => scope.remove(&key),
            };
        }
        self.workers.retain(|_, s| !s.is_empty());
        Ok(())
    }
}

/// A [`ClusterConfig`] as published: `doc` is its JSON, `sig` the hex
/// HMAC-SHA256 of `doc` under a key derived from the cluster token
/// (`faena_common::signing`), so a message forged on the broker is refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedConfig {
    pub doc: String,
    pub sig: String,
}
impl Payload for SignedConfig {}

/// A setting a worker did not apply, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub key: String,
    pub reason: String,
}

/// A live setting that replaced what the worker's own settings said:
/// `worker.slots = 3` over `FAENA_WORKER_SLOTS=1`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub key: String,
    pub value: Value,
    /// What it replaced and where that came from (`FAENA_WORKER_SLOTS=1`,
    /// `--slots 1`, `default 2 (one per core)`).
    pub own: String,
}

impl std::fmt::Display for Override {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={} (overrides {})", self.key, shown(&self.value), self.own)
    }
}

/// A value as a command line would give it: `3`, `info`, `local,gemini`.
pub fn shown(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(shown).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The configuration a worker runs: its version, what it refused, and
/// what it runs instead of its own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<Refusal>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<Override>,
}

/// `GET /api/config`: the current version, and what each registered
/// worker reported running.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigView {
    #[serde(flatten)]
    pub config: ClusterConfig,
    #[serde(default)]
    pub reported: BTreeMap<String, Applied>,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn update(settings: Value, worker: Option<&str>) -> ConfigUpdate {
        let Value::Object(settings) = settings else { panic!("an object") };
        ConfigUpdate { settings, worker: worker.map(str::to_owned), version: None }
    }

    #[test]
    fn settings_are_checked_and_normalised() {
        assert_eq!(Setting::parse("worker.slots", &json!("4")), Ok(Setting::Slots(4)));
        assert_eq!(Setting::parse("worker.slots", &json!(4)).map(|s| s.value()), Ok(json!(4)));
        for bad in [json!(0), json!(5000), json!("x"), json!(-1), json!(1.5), json!(null)] {
            assert!(Setting::parse("worker.slots", &bad).is_err(), "{bad}");
        }
        assert_eq!(
            Setting::parse("ai.providers", &json!("local, gemini")).map(|s| s.value()),
            Ok(json!(["local", "gemini"]))
        );
        assert!(Setting::parse("ai.providers", &json!(["local", "local"])).is_err());
        assert!(Setting::parse("ai.providers", &json!(["bard"])).is_err());
        assert!(Setting::parse("ai.providers", &json!([])).is_err());
        assert!(Setting::parse("worker.log_level", &json!("faena_worker=debug,warn")).is_ok());
        assert!(Setting::parse("worker.log_level", &json!("loud")).is_err());
        assert!(Setting::parse("worker.log_level", &json!("a b=info")).is_err());
        assert_eq!(
            Setting::parse("ai.model.gemini", &json!("gemini-2.5-pro")),
            Ok(Setting::AiModel(Provider::Gemini, "gemini-2.5-pro".into()))
        );
        assert!(Setting::parse("ai.model.gemini", &json!("a b")).is_err());
        for bad in ["", "..", "../x", "a/b", "a..b", ".hidden", &"m".repeat(129)] {
            assert!(Setting::parse("ai.model.gemini", &json!(bad)).is_err(), "{bad:?} would go into the URL path");
        }
        let local = Setting::parse("ai.model.local", &json!("x.gguf")).unwrap_err();
        assert!(local.contains("cannot change live"), "{local}");
        assert!(Setting::parse("worker.colour", &json!(1)).unwrap_err().contains("unknown setting"));
    }

    #[test]
    fn a_worker_scope_wins_and_null_removes() {
        let mut c = ClusterConfig::default();
        c.apply(&update(json!({"worker.slots": 2, "ai.providers": "local"}), None)).unwrap();
        c.apply(&update(json!({"worker.slots": 8}), Some("w-1"))).unwrap();
        assert_eq!(c.for_worker("w-1")["worker.slots"], json!(8));
        assert_eq!(c.for_worker("w-2")["worker.slots"], json!(2));
        assert_eq!(c.for_worker("w-1")["ai.providers"], json!(["local"]));
        c.apply(&update(json!({"worker.slots": null}), Some("w-1"))).unwrap();
        assert!(c.workers.is_empty(), "an emptied scope goes");
        let before = c.clone();
        let err = c.apply(&update(json!({"worker.slots": 3, "worker.ai_slots": 0}), None)).unwrap_err();
        assert!(err.contains("worker.ai_slots"), "{err}");
        assert_eq!(c, before, "all or nothing");
        assert!(c.apply(&update(json!({"worker.slots": 1}), Some("no/such"))).is_err());
        assert!(c.apply(&update(json!({}), None)).is_err());
    }
}
