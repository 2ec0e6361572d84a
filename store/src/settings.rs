//! The live configuration's versions, in the job store's SQLite file: one
//! row per version, so the current one survives a restart and earlier ones
//! say what was set when. Written rarely, on its own connection.

use std::path::Path;

use faena_proto::settings::ClusterConfig;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS config_versions (
    version INTEGER PRIMARY KEY,
    doc TEXT NOT NULL,
    at INTEGER NOT NULL
);
";

#[derive(Debug)]
pub struct SettingsDb {
    conn: Mutex<Connection>,
}

impl SettingsDb {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn: Mutex::new(conn) })
    }

    /// The newest version stored; the empty version 0 when none is.
    pub fn current(&self) -> Result<ClusterConfig, StoreError> {
        let doc: Option<String> = self
            .conn
            .lock()
            .query_row("SELECT doc FROM config_versions ORDER BY version DESC LIMIT 1", [], |r| r.get(0))
            .optional()?;
        match doc.map(|d| serde_json::from_str(&d)) {
            None => Ok(ClusterConfig::default()),
            Some(Ok(c)) => Ok(c),
            Some(Err(e)) => {
                // Written by this code from a checked value: only a hand edit gets here.
                tracing::error!(error = %e, "the stored live configuration cannot be read; starting from none");
                Ok(ClusterConfig::default())
            }
        }
    }

    /// Stores a new version (durably: the answer to a change waits for it).
    pub fn save(&self, config: &ClusterConfig) -> Result<(), StoreError> {
        let doc = serde_json::to_string(config).unwrap_or_default();
        self.conn.lock().execute(
            "INSERT INTO config_versions (version, doc, at) VALUES (?1, ?2, ?3)",
            params![config.version as i64, doc, config.updated_ms as i64],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_version_is_read_back_and_versions_are_unique() {
        let dir = std::env::temp_dir().join(format!("faena-settings-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("faena.db");
        let db = SettingsDb::open(&path).expect("open");
        assert_eq!(db.current().expect("read").version, 0);
        for v in 1..=3 {
            let mut c = ClusterConfig { version: v, updated_ms: 10 * v, ..Default::default() };
            c.all.insert("worker.slots".into(), serde_json::json!(v));
            db.save(&c).expect("save");
        }
        assert!(db.save(&ClusterConfig { version: 2, ..Default::default() }).is_err(), "a version is written once");
        drop(db);
        let c = SettingsDb::open(&path).expect("reopen").current().expect("read");
        assert_eq!((c.version, c.all["worker.slots"].clone()), (3, serde_json::json!(3)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
