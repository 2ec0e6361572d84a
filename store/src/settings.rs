//! The live configuration's versions, beside the jobs (the SQLite file, or
//! the PostgreSQL database): one row per version, so the current one
//! survives a restart and earlier ones say what was set when. Written
//! rarely, on its own connection.

use std::path::Path;
use std::sync::Arc;

use faena_proto::settings::ClusterConfig;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Reader, Store, StoreError};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS config_versions (
    version INTEGER PRIMARY KEY,
    doc TEXT NOT NULL,
    at INTEGER NOT NULL
);
";

/// [`SCHEMA`] in the attached database `schema` (a store being copied).
pub(crate) fn schema_in(schema: &str) -> String {
    SCHEMA.replace("EXISTS config_versions", &format!("EXISTS {schema}.config_versions"))
}

/// Where the versions are: SQLite's file, or the PostgreSQL store's
/// `config_versions` table (so every master reads the same).
#[derive(Debug, Clone)]
pub enum SettingsDb {
    Sqlite(Arc<Mutex<Connection>>),
    Postgres(deadpool_postgres::Pool),
}

impl SettingsDb {
    /// The versions in the SQLite file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self::Sqlite(Arc::new(Mutex::new(conn))))
    }

    /// Beside the job store: in its PostgreSQL database, or in the SQLite
    /// file at `path`.
    pub fn beside(store: &Store, path: &Path) -> Result<Self, StoreError> {
        match &store.reader {
            Reader::Postgres(pool) => Ok(Self::Postgres(pool.clone())),
            Reader::Sqlite(..) => Self::open(path),
        }
    }

    /// The newest version stored; the empty version 0 when none is.
    pub async fn current(&self) -> Result<ClusterConfig, StoreError> {
        let doc: Option<String> = match self {
            Self::Sqlite(conn) => {
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || {
                    conn.lock()
                        .query_row("SELECT doc FROM config_versions ORDER BY version DESC LIMIT 1", [], |r| r.get(0))
                        .optional()
                })
                .await
                .map_err(StoreError::Task)??
            }
            Self::Postgres(pool) => {
                let c = pool.get().await.map_err(|e| StoreError::Pool(e.to_string()))?;
                let row = c.query_opt("SELECT doc FROM config_versions ORDER BY version DESC LIMIT 1", &[]).await?;
                row.map(|r| r.try_get(0)).transpose()?
            }
        };
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

    /// Stores a new version (durably: the answer to a change waits for
    /// it); a version is written once.
    pub async fn save(&self, config: &ClusterConfig) -> Result<(), StoreError> {
        let doc = serde_json::to_string(config)?;
        let (version, at) = (config.version as i64, config.updated_ms as i64);
        match self {
            Self::Sqlite(conn) => {
                let conn = conn.clone();
                tokio::task::spawn_blocking(move || {
                    conn.lock().execute(
                        "INSERT INTO config_versions (version, doc, at) VALUES (?1, ?2, ?3)",
                        params![version, doc, at],
                    )
                })
                .await
                .map_err(StoreError::Task)??;
            }
            Self::Postgres(pool) => {
                let c = pool.get().await.map_err(|e| StoreError::Pool(e.to_string()))?;
                c.execute("INSERT INTO config_versions (version, doc, at) VALUES ($1, $2, $3)", &[&version, &doc, &at])
                    .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn check(open: impl Fn() -> SettingsDb) {
        let db = open();
        assert_eq!(db.current().await.expect("read").version, 0);
        for v in 1..=3 {
            let mut c = ClusterConfig { version: v, updated_ms: 10 * v, ..Default::default() };
            c.all.insert("worker.slots".into(), serde_json::json!(v));
            db.save(&c).await.expect("save");
        }
        let again = ClusterConfig { version: 2, ..Default::default() };
        assert!(db.save(&again).await.is_err(), "a version is written once");
        drop(db);
        let c = open().current().await.expect("read");
        assert_eq!((c.version, c.all["worker.slots"].clone()), (3, serde_json::json!(3)));
    }

    #[tokio::test]
    async fn the_newest_version_is_read_back_and_versions_are_unique_on_sqlite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("faena.db");
        check(|| SettingsDb::open(&path).expect("open")).await;
    }

    #[tokio::test]
    async fn the_newest_version_is_read_back_and_versions_are_unique_on_postgres() {
        let pg = crate::harness::Postgres::start();
        let store = Store::connect(&pg.url(), crate::Retention::OFF).await.expect("connects");
        check(|| SettingsDb::beside(&store, std::path::Path::new("unused")).expect("beside")).await;
    }
}
