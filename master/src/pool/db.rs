//! The mining records that outlive the master: sources (with their
//! credentials: the file stays on the master's volume, never on the wire),
//! blocks found, and each participant's tally. Its own SQLite file beside
//! the job store; written from blocking tasks, tallies in batches.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

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
        // Tallies from before `seen_at` count as seen when it arrived.
        let has: bool =
            conn.query_row("SELECT COUNT(*) FROM pragma_table_info('participants') WHERE name = 'seen_at'", [], |r| {
                r.get(0)
            })?;
        if !has {
            conn.execute_batch("ALTER TABLE participants ADD COLUMN seen_at INTEGER NOT NULL DEFAULT 0")?;
            let now = faena_proto::mqtt::now_ms() as i64;
            conn.execute("UPDATE participants SET seen_at = ?1", [now])?;
        }
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
                    "INSERT INTO participants (name, kind, source, valid, invalid, stale, blocks, seen_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (name, kind) DO UPDATE
                     SET source = ?3, valid = ?4, invalid = ?5, stale = ?6, blocks = ?7, seen_at = ?8",
                )?;
                let now = faena_proto::mqtt::now_ms() as i64;
                for (p, r) in &rows {
                    stmt.execute(params![
                        p.name,
                        p.kind.as_str(),
                        r.source,
                        r.valid as i64,
                        r.invalid as i64,
                        r.stale as i64,
                        r.blocks as i64,
                        now
                    ])?;
                }
            }
            tx.commit()
        })
        .await
    }
}

impl Db {
    /// The mining store's own retention: blocks found more than `age` ago,
    /// blocks beyond a source's newest `keep_blocks` (what it lists) and
    /// participants whose tallies have not moved for `age` are deleted;
    /// how many blocks and participants went.
    pub async fn prune(&self, age: Duration, keep_blocks: usize, now_ms: u64) -> Result<(usize, usize), StoreError> {
        let cutoff = (now_ms as i64).saturating_sub(age.as_millis() as i64);
        self.run(move |c| {
            let tx = c.transaction()?;
            let old = tx.execute("DELETE FROM blocks WHERE at < ?1", [cutoff])?;
            let surplus = tx.execute(
                "DELETE FROM blocks WHERE rowid IN (SELECT rowid FROM
                   (SELECT rowid, ROW_NUMBER() OVER (PARTITION BY source ORDER BY at DESC, rowid DESC) AS n FROM blocks)
                 WHERE n > ?1)",
                [keep_blocks as i64],
            )?;
            let quiet = tx.execute("DELETE FROM participants WHERE seen_at < ?1", [cutoff])?;
            tx.commit()?;
            Ok((old + surplus, quiet))
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

    #[tokio::test]
    async fn old_blocks_surplus_blocks_and_quiet_tallies_go() {
        use faena_proto::mining::BlockView;

        use super::super::accounts::{Participant, Record};
        let dir = std::env::temp_dir().join(format!("faena-mining-prune-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let db = super::Db::open(&dir.join("mining.db")).expect("opens");
        let day = 86_400_000u64;
        let now = faena_proto::mqtt::now_ms();
        let block = |height: u64, at_ms: u64| BlockView {
            height,
            hash: format!("{height:064x}"),
            participant: "w1".into(),
            accepted: true,
            reason: None,
            at_ms,
        };
        // Source a: 2 blocks a year old, 5 recent; source b: 3 recent.
        for (h, at) in [(1, now - 400 * day), (2, now - 400 * day)] {
            db.add_block("a".into(), block(h, at)).await.expect("adds");
        }
        for h in 3..8 {
            db.add_block("a".into(), block(h, now - 8 + h)).await.expect("adds");
        }
        for h in 1..4 {
            db.add_block("b".into(), block(h, now - 4 + h)).await.expect("adds");
        }
        let record = Record { source: "a".into(), valid: 1, invalid: 0, stale: 0, blocks: 0 };
        let (quiet, busy) = (Participant::worker("quiet"), Participant::worker("busy"));
        db.save_tallies(vec![(quiet.clone(), record.clone()), (busy.clone(), record)]).await.expect("saves");
        db.conn
            .lock()
            .execute("UPDATE participants SET seen_at = ?1 WHERE name = 'quiet'", [(now - 400 * day) as i64])
            .expect("ages");

        // A year's retention and the newest 4 blocks per source.
        let (blocks, participants) =
            db.prune(std::time::Duration::from_secs(365 * 86_400), 4, now).await.expect("prunes");
        assert_eq!((blocks, participants), (2 + 1, 1));
        let loaded = db.load().expect("loads");
        let heights = |source: &str| -> Vec<u64> {
            loaded.blocks.iter().filter(|(s, _)| s == source).map(|(_, b)| b.height).collect()
        };
        assert_eq!(heights("a"), [4, 5, 6, 7], "the old ones, then the oldest beyond four");
        assert_eq!(heights("b"), [1, 2, 3]);
        let names: Vec<&str> = loaded.participants.iter().map(|(p, _)| p.name.as_str()).collect();
        assert_eq!(names, ["busy"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
