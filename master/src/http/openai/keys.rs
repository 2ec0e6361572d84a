//! Keys for AI clients (`/v1/*`): made by `POST /api/keys` (the key is
//! shown once), stored as its SHA-256 only, listed and revoked. Each may
//! carry limits: tokens a UTC day, requests at once (its group's
//! `max_running`), the models it may use. Usage (prompt and completion
//! tokens, requests) is counted per key and day and stored, so a restart or
//! a new leader does not forget what was spent.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::store::{NamedKind, Store, StoreError, StoreOp, rfc3339};

/// What every key starts with, so a leaked one is easy to spot and to tell
/// from the cluster's API token.
pub const KEY_PREFIX: &str = "fk-";
/// Most keys (revoked ones included), so names cannot grow the map unbounded.
pub const MAX_KEYS: usize = 10_000;
/// Most models a key may be limited to.
pub const MAX_MODELS: usize = 32;

/// A key as stored and listed: never the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub name: String,
    /// SHA-256 of the key, hex.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub hash: String,
    /// The key's first characters, to recognise it by.
    pub shown: String,
    pub created_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_per_day: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<u32>,
    /// Models it may use (`provider/model` or `provider`); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

impl KeyRecord {
    /// Whether this key may ask `provider`'s `model`.
    pub fn allows(&self, provider: Option<&str>, model: Option<&str>) -> bool {
        self.models.is_empty()
            || self.models.iter().any(|m| match (m.split_once('/'), provider) {
                (Some((p, name)), Some(q)) => p == q && Some(name) == model,
                (None, Some(q)) => m == q,
                _ => false,
            })
    }

    /// The group its requests share the AI slots in.
    pub fn group(&self) -> String {
        format!("ai:{}", self.name)
    }
}

/// What `POST /api/keys` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    #[serde(default)]
    pub tokens_per_day: Option<u64>,
    #[serde(default)]
    pub max_concurrent: Option<u32>,
    #[serde(default)]
    pub models: Vec<String>,
}

impl NewKey {
    pub fn check(&self) -> Result<(), String> {
        // The group name adds "ai:".
        if self.name.len() > faena_proto::options::MAX_NAME - 3 {
            return Err(format!("name: at most {} characters", faena_proto::options::MAX_NAME - 3));
        }
        faena_proto::options::check_name("name", &self.name).map_err(|e| e.to_string())?;
        if self.tokens_per_day == Some(0) || self.max_concurrent == Some(0) {
            return Err("tokens_per_day and max_concurrent must be at least 1 (leave one out for no limit)".into());
        }
        if self.models.len() > MAX_MODELS {
            return Err(format!("models: at most {MAX_MODELS}"));
        }
        for m in &self.models {
            let (provider, model) = m.split_once('/').map_or((m.as_str(), None), |(p, n)| (p, Some(n)));
            if faena_proto::ai::Provider::parse(provider).is_none() {
                return Err(format!("models: {m:?} is not provider/model or a provider (gemini, openai, local)"));
            }
            if let Some(model) = model {
                faena_proto::ai::check_model_name(model)?;
            }
        }
        Ok(())
    }
}

/// Tokens and requests of one key on one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub requests: u64,
}

impl DayUsage {
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a key named {0:?} exists; revoke it first")]
    Exists(String),
    #[error("no key named {0:?}")]
    Unknown(String),
    #[error("{MAX_KEYS} keys exist (revoked ones count); revoke and delete some first")]
    Full,
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Default)]
struct Inner {
    /// By name, revoked ones too.
    keys: HashMap<String, KeyRecord>,
    /// Hash → name, for the keys in force.
    by_hash: HashMap<String, String>,
    /// Each key's usage on the day it was last used (days since 1970).
    usage: HashMap<String, (u64, DayUsage)>,
}

/// The keys in force, with their usage today; shared by the handlers.
#[derive(Debug, Clone)]
pub struct Keys {
    inner: Arc<RwLock<Inner>>,
    store: Store,
    /// Most keys kept ([`MAX_KEYS`]).
    limit: usize,
}

fn day(now_ms: u64) -> u64 {
    now_ms / 86_400_000
}

fn usage_name(key: &str, day: u64) -> String {
    format!("{key}/{day}")
}

impl Keys {
    /// The stored keys, and what each spent today.
    pub async fn load(store: Store) -> Result<Self, StoreError> {
        let mut inner = Inner::default();
        for (name, doc) in store.named(NamedKind::AiKey).await? {
            match serde_json::from_str::<KeyRecord>(&doc) {
                Ok(k) => {
                    if k.revoked_at.is_none() {
                        inner.by_hash.insert(k.hash.clone(), name.clone());
                    }
                    inner.keys.insert(name, k);
                }
                Err(e) => tracing::error!(key = %name, error = %e, "a stored AI key does not parse; left out"),
            }
        }
        let today = day(faena_proto::mqtt::now_ms());
        for (name, doc) in store.named(NamedKind::AiUsage).await? {
            let Some((key, d)) = name.rsplit_once('/') else { continue };
            if d.parse::<u64>().ok() == Some(today)
                && let Ok(u) = serde_json::from_str::<DayUsage>(&doc)
            {
                inner.usage.insert(key.to_owned(), (today, u));
            }
        }
        Ok(Self { inner: Arc::new(RwLock::new(inner)), store, limit: MAX_KEYS })
    }

    /// The key in force that `secret` is, if any.
    pub fn find(&self, secret: &str) -> Option<KeyRecord> {
        let hash = faena_common::signing::fingerprint(secret);
        let inner = self.inner.read();
        inner.by_hash.get(&hash).and_then(|name| inner.keys.get(name)).cloned()
    }

    pub fn list(&self) -> Vec<(KeyRecord, DayUsage)> {
        let today = day(faena_proto::mqtt::now_ms());
        let inner = self.inner.read();
        let mut out: Vec<(KeyRecord, DayUsage)> = inner
            .keys
            .values()
            .map(|k| {
                let used = inner.usage.get(&k.name).filter(|(d, _)| *d == today).map(|(_, u)| *u);
                (KeyRecord { hash: String::new(), ..k.clone() }, used.unwrap_or_default())
            })
            .collect();
        out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        out
    }

    /// Makes a key: its record (stored once this returns) and the key itself.
    pub async fn create(&self, new: NewKey) -> Result<(KeyRecord, String), KeyError> {
        let secret = format!("{KEY_PREFIX}{}", hex::encode(rand::random::<[u8; 32]>()));
        let record = KeyRecord {
            name: new.name.clone(),
            hash: faena_common::signing::fingerprint(&secret),
            shown: format!("{}…", &secret[..KEY_PREFIX.len() + 4]),
            created_at: rfc3339(faena_proto::mqtt::now_ms()),
            tokens_per_day: new.tokens_per_day,
            max_concurrent: new.max_concurrent,
            models: new.models,
            revoked_at: None,
        };
        {
            let inner = self.inner.read();
            match inner.keys.get(&new.name) {
                Some(k) if k.revoked_at.is_none() => return Err(KeyError::Exists(new.name)),
                None if inner.keys.len() >= self.limit => return Err(KeyError::Full),
                _ => {}
            }
        }
        self.put(&record).await?;
        let mut inner = self.inner.write();
        inner.by_hash.insert(record.hash.clone(), record.name.clone());
        inner.keys.insert(record.name.clone(), record.clone());
        Ok((KeyRecord { hash: String::new(), ..record }, secret))
    }

    /// Revokes key `name`: refused from now on (kept, listed as revoked).
    pub async fn revoke(&self, name: &str) -> Result<KeyRecord, KeyError> {
        let record = {
            let inner = self.inner.read();
            let k = inner.keys.get(name).ok_or_else(|| KeyError::Unknown(name.to_owned()))?;
            KeyRecord { revoked_at: Some(rfc3339(faena_proto::mqtt::now_ms())), ..k.clone() }
        };
        // Out of force at once, before the store has it.
        self.inner.write().by_hash.remove(&record.hash);
        self.put(&record).await?;
        self.inner.write().keys.insert(name.to_owned(), record.clone());
        Ok(KeyRecord { hash: String::new(), ..record })
    }

    /// Tokens key `name` spent today.
    pub fn spent_today(&self, name: &str) -> u64 {
        let today = day(faena_proto::mqtt::now_ms());
        let inner = self.inner.read();
        inner.usage.get(name).filter(|(d, _)| *d == today).map_or(0, |(_, u)| u.tokens())
    }

    /// Counts one answered request against key `name` (stored with the
    /// next commit).
    pub fn spend(&self, name: &str, prompt_tokens: u64, completion_tokens: u64) {
        let today = day(faena_proto::mqtt::now_ms());
        let used = {
            let mut inner = self.inner.write();
            if !inner.keys.contains_key(name) {
                return;
            }
            let entry = inner.usage.entry(name.to_owned()).or_insert((today, DayUsage::default()));
            if entry.0 != today {
                *entry = (today, DayUsage::default());
            }
            entry.1.prompt_tokens += prompt_tokens;
            entry.1.completion_tokens += completion_tokens;
            entry.1.requests += 1;
            entry.1
        };
        let doc = serde_json::to_string(&used).ok();
        self.store.write(StoreOp::Named { kind: NamedKind::AiUsage, name: usage_name(name, today), doc });
    }

    /// Stores `record`, returning once it is committed.
    async fn put(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let doc = serde_json::to_string(record)?;
        self.store.write(StoreOp::Named { kind: NamedKind::AiKey, name: record.name.clone(), doc: Some(doc) });
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.store.after_commit(move |r| {
            let _ = tx.send(r);
        });
        match rx.await {
            Ok(Ok(())) => Ok(()),
            _ => Err(StoreError::Unavailable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Retention, SyncMode};

    fn new(name: &str) -> NewKey {
        NewKey { name: name.into(), tokens_per_day: None, max_concurrent: None, models: vec![] }
    }

    /// Returns once everything written so far is committed.
    async fn committed(store: &Store) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        store.after_commit(move |_| {
            let _ = tx.send(());
        });
        rx.await.expect("committed");
    }

    #[tokio::test]
    async fn keys_are_bounded_kept_hashed_and_counted_across_a_restart() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("faena.db");
        let store = Store::open(&path, SyncMode::Normal, Retention::OFF).expect("a store");
        let keys = Keys { limit: 2, ..Keys::load(store.clone()).await.expect("keys") };
        let (_, a) = keys.create(new("a")).await.expect("made");
        let (b_record, b) = keys.create(new("b")).await.expect("made");
        assert!(b_record.hash.is_empty(), "a record handed out carries no hash");
        assert!(matches!(keys.create(new("c")).await, Err(KeyError::Full)));
        assert!(matches!(keys.create(new("b")).await, Err(KeyError::Exists(_))));
        keys.revoke("a").await.expect("revoked");
        assert!(keys.find(&a).is_none() && keys.find(&b).is_some());
        assert!(matches!(keys.create(new("c")).await, Err(KeyError::Full)), "revoked keys count");
        keys.spend("b", 3, 4);
        keys.spend("nobody", 100, 100);
        assert_eq!(keys.spent_today("b"), 7);
        committed(&store).await;
        drop((keys, store));

        let store = Store::open(&path, SyncMode::Normal, Retention::OFF).expect("opened again");
        let keys = Keys::load(store).await.expect("keys");
        assert!(keys.find(&a).is_none(), "still revoked");
        assert_eq!(keys.find(&b).map(|k| k.name), Some("b".into()));
        assert_eq!(keys.spent_today("b"), 7);
        assert_eq!(keys.list().len(), 2);
        let bytes = std::fs::read(&path).expect("the store's file");
        assert!(!String::from_utf8_lossy(&bytes).contains(&b), "the key itself is not stored");
    }

    fn record(models: &[&str]) -> KeyRecord {
        KeyRecord {
            name: "team-a".into(),
            hash: String::new(),
            shown: "fk-1234…".into(),
            created_at: String::new(),
            tokens_per_day: None,
            max_concurrent: None,
            models: models.iter().map(|m| (*m).to_owned()).collect(),
            revoked_at: None,
        }
    }

    #[test]
    fn a_key_limited_to_models_allows_only_those() {
        assert!(record(&[]).allows(Some("gemini"), Some("x")));
        let k = record(&["local", "gemini/gemini-2.5-flash"]);
        assert!(k.allows(Some("local"), Some("anything")));
        assert!(k.allows(Some("gemini"), Some("gemini-2.5-flash")));
        assert!(!k.allows(Some("gemini"), Some("gemini-2.5-pro")));
        assert!(!k.allows(Some("openai"), None));
        assert!(!k.allows(None, None), "a limited key must name a provider");
    }

    #[test]
    fn new_keys_are_checked() {
        let new = |name: &str, models: &[&str]| NewKey {
            name: name.into(),
            tokens_per_day: None,
            max_concurrent: None,
            models: models.iter().map(|m| (*m).to_owned()).collect(),
        };
        assert!(new("team-a", &["local", "gemini/gemini-2.5-flash"]).check().is_ok());
        for (bad, says) in [
            (new("", &[]), "name"),
            (new("a b", &[]), "name"),
            (new(&"x".repeat(62), &[]), "at most 61"),
            (new("t", &["claude"]), "provider/model"),
            (new("t", &["gemini/../x"]), "model must be"),
            (NewKey { max_concurrent: Some(0), ..new("t", &[]) }, "at least 1"),
        ] {
            let e = bad.check().expect_err("refused");
            assert!(e.contains(says), "{e}");
        }
    }
}
