//! Live configuration on the master: the current [`ClusterConfig`], each
//! change checked, stored as a new version, then published retained and
//! signed on `{p}/config` (workers apply it without restarting) and handed
//! to every worker that registers. `GET`/`PUT /api/config` and the CLI's
//! `faena config` read and change it.

use std::sync::Arc;

use faena_common::signing;
use faena_proto::mqtt::{Payload, now_ms};
use faena_proto::secret::Secret;
use faena_proto::settings::{ClusterConfig, ConfigUpdate};
use parking_lot::Mutex;

use crate::mqtt::MqttOut;
use crate::store::StoreError;
use crate::store::settings::SettingsDb;

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("{0}")]
    Invalid(String),
    #[error("the configuration is at version {current}, not {expected}: read it again and retry")]
    Conflict { current: u64, expected: u64 },
    #[error("the store cannot save the configuration right now: {0}")]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone)]
pub struct LiveConfig {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Arc<SettingsDb>,
    token: Secret,
    mqtt: MqttOut,
    /// The current version, and it as published (signed, encoded once).
    current: Mutex<(ClusterConfig, String)>,
    /// One change at a time: each is made against the one before.
    writing: tokio::sync::Mutex<()>,
}

impl LiveConfig {
    /// The stored version, published at once.
    pub async fn load(db: SettingsDb, token: Secret, mqtt: MqttOut) -> Result<Self, StoreError> {
        let config = db.current().await?;
        if config.version > 0 {
            tracing::info!(version = config.version, "live configuration restored from the store");
        }
        let published = publish(&token, &mqtt, &config);
        let inner = Inner {
            db: Arc::new(db),
            token,
            mqtt,
            current: Mutex::new((config, published)),
            writing: tokio::sync::Mutex::new(()),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    pub fn current(&self) -> ClusterConfig {
        self.inner.current.lock().0.clone()
    }

    /// The current version as published (what `RegisterResponse.config` carries).
    pub fn signed_json(&self) -> String {
        self.inner.current.lock().1.clone()
    }

    /// Checks, stores and publishes a change; answers with the new version.
    pub async fn change(&self, update: ConfigUpdate) -> Result<ClusterConfig, ChangeError> {
        let _one = self.inner.writing.lock().await;
        let mut next = self.current();
        if let Some(expected) = update.version.filter(|v| *v != next.version) {
            return Err(ChangeError::Conflict { current: next.version, expected });
        }
        next.apply(&update).map_err(ChangeError::Invalid)?;
        next.version += 1;
        next.updated_ms = now_ms();
        let (db, saved) = (self.inner.db.clone(), next.clone());
        db.save(&saved).await?;
        let published = publish(&self.inner.token, &self.inner.mqtt, &next);
        *self.inner.current.lock() = (next.clone(), published);
        let keys: Vec<&str> = update.settings.keys().map(String::as_str).collect();
        let scope = update.worker.as_deref().unwrap_or("all workers");
        tracing::info!(version = next.version, scope, keys = ?keys, "live configuration changed");
        Ok(next)
    }
}

/// Signs `config`, publishes it, and returns it as published.
fn publish(token: &Secret, mqtt: &MqttOut, config: &ClusterConfig) -> String {
    let published = String::from_utf8(signing::seal(token, config).encode()).unwrap_or_default();
    mqtt.set_config(published.clone().into_bytes());
    published
}
