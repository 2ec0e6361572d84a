//! The mining records that outlive the master: sources (with their
//! credentials: the file stays on the master's volume, never on the wire),
//! blocks found, and each participant's tally. Its own SQLite file beside
//! the job store; written from blocking tasks, tallies in batches.

use std::path::Path;
use std::sync::Arc;

use faena_proto::ids::JobId;
use faena_proto::mining::{BlockView, SourceSpec};
use parking_lot::Mutex;
use rusqlite::{Connection, params};

use super::accounts::{Kind, Participant, Record};
use crate::store::StoreError;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sources (
    id TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    job TEXT
);
CREATE TABLE IF NOT EXISTS blocks (
    source TEXT NOT NULL,
    height INTEGER NOT NULL,
    hash TEXT NOT NULL,
    participant TEXT NOT NULL,
    accepted INTEGER NOT NULL,
    reason TEXT,
    at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS participants (
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    source TEXT NOT NULL,
    valid INTEGER NOT NULL,
    invalid INTEGER NOT NULL,
    stale INTEGER NOT NULL,
    blocks INTEGER NOT NULL,
    PRIMARY KEY (name, kind)
);
";

#[derive(Debug, Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

/// Everything read back at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Each source with the job its workers mined it through, if any.
    pub sources: Vec<(String, SourceSpec, Option<JobId>)>,
    pub blocks: Vec<(String, BlockView)>,
    pub participants: Vec<(Participant, Record)>,
}

impl Db {
    pub fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        // It holds pool passwords: its owner's alone, whatever the umask.
        faena_common::secrets::ensure_private(path).map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                Some(e.to_string()),
            )
        })?;
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "busy_timeout", 5000)?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self { conn: Arc::new(Mutex::new(conn)) })
    }

    pub fn load(&self) -> Result<Loaded, rusqlite::Error> {
        let conn = self.conn.lock();
        let mut out = Loaded::default();
        let mut stmt = conn.prepare("SELECT id, spec, job FROM sources ORDER BY created_at")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?)))?;
        for row in rows {
            let (id, spec, job) = row?;
            let job = job.and_then(|j| j.parse().ok());
            match serde_json::from_str(&spec) {
                Ok(spec) => out.sources.push((id, spec, job)),
                Err(e) => {
                    tracing::error!(source = %id, error = %e, "a stored mining source could not be read; skipped")
                }
            }
        }
        let mut stmt =
            conn.prepare("SELECT source, height, hash, participant, accepted, reason, at FROM blocks ORDER BY at")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                BlockView {
                    height: r.get::<_, i64>(1)? as u64,
                    hash: r.get(2)?,
                    participant: r.get(3)?,
                    accepted: r.get(4)?,
                    reason: r.get(5)?,
                    at_ms: r.get::<_, i64>(6)? as u64,
                },
            ))
        })?;
        for row in rows {
            out.blocks.push(row?);
        }
        let mut stmt = conn.prepare("SELECT name, kind, source, valid, invalid, stale, blocks FROM participants")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                Record {
                    source: r.get(2)?,
                    valid: r.get::<_, i64>(3)? as u64,
                    invalid: r.get::<_, i64>(4)? as u64,
                    stale: r.get::<_, i64>(5)? as u64,
                    blocks: r.get::<_, i64>(6)? as u64,
                },
            ))
        })?;
        for row in rows {
            let (name, kind, record) = row?;
            if let Some(kind) = Kind::parse(&kind) {
                out.participants.push((Participant { name, kind }, record));
            }
        }
        Ok(out)
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        match tokio::task::spawn_blocking(move || f(&mut conn.lock())).await {
            Ok(r) => r.map_err(StoreError::Sql),
            Err(e) => Err(StoreError::Task(e)),
        }
    }

    pub async fn add_source(&self, id: String, spec: &SourceSpec, at_ms: u64) -> Result<(), StoreError> {
        let spec = serde_json::to_string(spec)?;
        self.run(move |c| {
            c.execute("INSERT INTO sources (id, spec, created_at) VALUES (?1, ?2, ?3)", params![id, spec, at_ms as i64])
                .map(|_| ())
        })
        .await
    }

    /// The job a source's workers mine it through (adopted after a restart).
    pub async fn set_job(&self, id: String, job: JobId) -> Result<(), StoreError> {
        let job = job.to_string();
        self.run(move |c| c.execute("UPDATE sources SET job = ?2 WHERE id = ?1", params![id, job]).map(|_| ())).await
    }

    pub async fn remove_source(&self, id: String) -> Result<(), StoreError> {
        self.run(move |c| c.execute("DELETE FROM sources WHERE id = ?1", params![id]).map(|_| ())).await
    }

    pub async fn add_block(&self, source: String, b: BlockView) -> Result<(), StoreError> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO blocks (source, height, hash, participant, accepted, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![source, b.height as i64, b.hash, b.participant, b.accepted, b.reason, b.at_ms as i64],
            )
            .map(|_| ())
        })
        .await
    }

    pub async fn save_tallies(&self, rows: Vec<(Participant, Record)>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.run(move |c| {
            let tx = c.transaction()?;
            {
                let mut stmt = tx.prepare_cached(
                    "INSERT INTO participants (name, kind, source, valid, invalid, stale, blocks)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (name, kind) DO UPDATE SET source = ?3, valid = ?4, invalid = ?5, stale = ?6, blocks = ?7",
                )?;
                for (p, r) in &rows {
                    stmt.execute(params![
                        p.name,
                        p.kind.as_str(),
                        r.source,
                        r.valid as i64,
                        r.invalid as i64,
                        r.stale as i64,
                        r.blocks as i64
                    ])?;
                }
            }
            tx.commit()
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #[cfg(unix)]
    #[test]
    fn the_mining_store_is_its_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("faena-mining-db-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("mining.db");
        let _db = super::Db::open(&path).expect("opens");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "pool passwords are in it");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
