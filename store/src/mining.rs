//! The mining records that outlive the master: sources (with their
//! credentials — kept in the store, never on the wire), blocks found, and
//! each participant's tally. Beside the jobs: the PostgreSQL store's
//! database, or its own SQLite file (`mining.db`, its owner's alone) next
//! to the job store. Written rarely; tallies in batches.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use faena_proto::ids::JobId;
use faena_proto::mining::{BlockView, SourceSpec};
use parking_lot::Mutex;
use rusqlite::{Connection, params};

use crate::{Reader, Store, StoreError};

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

/// One participant's tally, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub name: String,
    /// `worker` or `stratum`.
    pub kind: String,
    pub source: String,
    pub valid: u64,
    pub invalid: u64,
    pub stale: u64,
    pub blocks: u64,
}

/// Everything read back at start-up.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Each source with the job its workers mined it through, if any.
    pub sources: Vec<(String, SourceSpec, Option<JobId>)>,
    pub blocks: Vec<(String, BlockView)>,
    pub tallies: Vec<Tally>,
}

#[derive(Debug, Clone)]
pub enum MiningDb {
    Sqlite(Arc<Mutex<Connection>>),
    Postgres(Pool),
}

/// A statement written for PostgreSQL (`$1`) as SQLite numbers its
/// parameters (`?1`; SQLite would take `$1` for a name, numbered by first use).
fn lite(sql: &str) -> String {
    sql.replace('$', "?")
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl MiningDb {
    /// The SQLite file at `path`, made its owner's alone (it holds pool
    /// passwords), whatever the umask.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        faena_common::secrets::ensure_private(path).map_err(StoreError::File)?;
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
            conn.execute("UPDATE participants SET seen_at = ?1", [faena_proto::mqtt::now_ms() as i64])?;
        }
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

    async fn sqlite<T: Send + 'static>(
        conn: &Arc<Mutex<Connection>>,
        f: impl FnOnce(&mut Connection) -> Result<T, rusqlite::Error> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = conn.clone();
        Ok(tokio::task::spawn_blocking(move || f(&mut conn.lock())).await.map_err(StoreError::Task)??)
    }

    async fn pg(pool: &Pool) -> Result<deadpool_postgres::Client, StoreError> {
        pool.get().await.map_err(|e| StoreError::Pool(e.to_string()))
    }

    pub async fn load(&self) -> Result<Loaded, StoreError> {
        // Sources as (id, spec, job), blocks as rows, tallies.
        type Raw = (Vec<(String, String, Option<String>)>, Vec<(String, BlockView)>, Vec<Tally>);
        let (sources, blocks, tallies): Raw = match self {
            Self::Sqlite(conn) => {
                Self::sqlite(conn, |c| {
                    let sources = c
                        .prepare("SELECT id, spec, job FROM sources ORDER BY created_at")?
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                        .collect::<Result<_, _>>()?;
                    let blocks = c
                        .prepare("SELECT source, height, hash, participant, accepted, reason, at FROM blocks ORDER BY at, rowid")?
                        .query_map([], |r| {
                            Ok((
                                r.get(0)?,
                                BlockView {
                                    height: u(r.get(1)?),
                                    hash: r.get(2)?,
                                    participant: r.get(3)?,
                                    accepted: r.get(4)?,
                                    reason: r.get(5)?,
                                    at_ms: u(r.get(6)?),
                                },
                            ))
                        })?
                        .collect::<Result<_, _>>()?;
                    let tallies = c
                        .prepare("SELECT name, kind, source, valid, invalid, stale, blocks FROM participants ORDER BY name, kind")?
                        .query_map([], |r| {
                            Ok(Tally {
                                name: r.get(0)?,
                                kind: r.get(1)?,
                                source: r.get(2)?,
                                valid: u(r.get(3)?),
                                invalid: u(r.get(4)?),
                                stale: u(r.get(5)?),
                                blocks: u(r.get(6)?),
                            })
                        })?
                        .collect::<Result<_, _>>()?;
                    Ok((sources, blocks, tallies))
                })
                .await?
            }
            Self::Postgres(pool) => {
                let c = Self::pg(pool).await?;
                let sources = c
                    .query("SELECT id, spec, job FROM sources ORDER BY created_at", &[])
                    .await?
                    .iter()
                    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                    .collect::<Result<_, tokio_postgres::Error>>()?;
                let blocks = c
                    .query("SELECT source, height, hash, participant, accepted, reason, at FROM blocks ORDER BY at, n", &[])
                    .await?
                    .iter()
                    .map(|r| {
                        Ok((
                            r.try_get(0)?,
                            BlockView {
                                height: u(r.try_get(1)?),
                                hash: r.try_get(2)?,
                                participant: r.try_get(3)?,
                                accepted: r.try_get(4)?,
                                reason: r.try_get(5)?,
                                at_ms: u(r.try_get(6)?),
                            },
                        ))
                    })
                    .collect::<Result<_, tokio_postgres::Error>>()?;
                let tallies = c
                    .query("SELECT name, kind, source, valid, invalid, stale, blocks FROM participants ORDER BY name, kind", &[])
                    .await?
                    .iter()
                    .map(|r| {
                        Ok(Tally {
                            name: r.try_get(0)?,
                            kind: r.try_get(1)?,
                            source: r.try_get(2)?,
                            valid: u(r.try_get(3)?),
                            invalid: u(r.try_get(4)?),
                            stale: u(r.try_get(5)?),
                            blocks: u(r.try_get(6)?),
                        })
                    })
                    .collect::<Result<_, tokio_postgres::Error>>()?;
                (sources, blocks, tallies)
            }
        };
        let mut out = Loaded { blocks, tallies, ..Loaded::default() };
        for (id, spec, job) in sources {
            let job = job.and_then(|j| j.parse().ok());
            match serde_json::from_str(&spec) {
                Ok(spec) => out.sources.push((id, spec, job)),
                Err(e) => {
                    tracing::error!(source = %id, error = %e, "a stored mining source could not be read; skipped")
                }
            }
        }
        Ok(out)
    }

    pub async fn add_source(&self, id: String, spec: &SourceSpec, at_ms: u64) -> Result<(), StoreError> {
        let spec = serde_json::to_string(spec)?;
        let sql = "INSERT INTO sources (id, spec, created_at) VALUES ($1, $2, $3)";
        match self {
            Self::Sqlite(conn) => {
                Self::sqlite(conn, move |c| c.execute(&lite(sql), params![id, spec, i(at_ms)]).map(drop)).await
            }
            Self::Postgres(pool) => Ok(Self::pg(pool).await?.execute(sql, &[&id, &spec, &i(at_ms)]).await.map(drop)?),
        }
    }

    /// The job a source's workers mine it through (adopted after a restart).
    pub async fn set_job(&self, id: String, job: JobId) -> Result<(), StoreError> {
        let (job, sql) = (job.to_string(), "UPDATE sources SET job = $2 WHERE id = $1");
        match self {
            Self::Sqlite(conn) => Self::sqlite(conn, move |c| c.execute(&lite(sql), params![id, job]).map(drop)).await,
            Self::Postgres(pool) => Ok(Self::pg(pool).await?.execute(sql, &[&id, &job]).await.map(drop)?),
        }
    }

    pub async fn remove_source(&self, id: String) -> Result<(), StoreError> {
        let sql = "DELETE FROM sources WHERE id = $1";
        match self {
            Self::Sqlite(conn) => Self::sqlite(conn, move |c| c.execute(&lite(sql), params![id]).map(drop)).await,
            Self::Postgres(pool) => Ok(Self::pg(pool).await?.execute(sql, &[&id]).await.map(drop)?),
        }
    }

    pub async fn add_block(&self, source: String, b: BlockView) -> Result<(), StoreError> {
        let sql = "INSERT INTO blocks (source, height, hash, participant, accepted, reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let (height, at) = (i(b.height), i(b.at_ms));
        match self {
            Self::Sqlite(conn) => {
                Self::sqlite(conn, move |c| {
                    c.execute(&lite(sql), params![source, height, b.hash, b.participant, b.accepted, b.reason, at])
                        .map(drop)
                })
                .await
            }
            Self::Postgres(pool) => Ok(Self::pg(pool)
                .await?
                .execute(sql, &[&source, &height, &b.hash, &b.participant, &b.accepted, &b.reason, &at])
                .await
                .map(drop)?),
        }
    }

    /// Adds these counts to the participants' tallies (making the ones not
    /// there yet), in one transaction: several masters, each counting the
    /// shares of its own miners, add up in the store.
    pub async fn add_tallies(&self, rows: Vec<Tally>) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = "INSERT INTO participants (name, kind, source, valid, invalid, stale, blocks, seen_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (name, kind) DO UPDATE
             SET source = excluded.source, valid = participants.valid + excluded.valid,
                 invalid = participants.invalid + excluded.invalid, stale = participants.stale + excluded.stale,
                 blocks = participants.blocks + excluded.blocks, seen_at = excluded.seen_at";
        let now = faena_proto::mqtt::now_ms() as i64;
        match self {
            Self::Sqlite(conn) => {
                Self::sqlite(conn, move |c| {
                    let tx = c.transaction()?;
                    {
                        let mut stmt = tx.prepare_cached(&lite(sql))?;
                        for t in &rows {
                            let counts = (i(t.valid), i(t.invalid), i(t.stale), i(t.blocks));
                            stmt.execute(params![
                                t.name, t.kind, t.source, counts.0, counts.1, counts.2, counts.3, now
                            ])?;
                        }
                    }
                    tx.commit()
                })
                .await
            }
            Self::Postgres(pool) => {
                let mut c = Self::pg(pool).await?;
                let tx = c.transaction().await?;
                let stmt = tx.prepare_cached(sql).await?;
                for t in &rows {
                    let counts = (i(t.valid), i(t.invalid), i(t.stale), i(t.blocks));
                    tx.execute(&stmt, &[&t.name, &t.kind, &t.source, &counts.0, &counts.1, &counts.2, &counts.3, &now])
                        .await?;
                }
                Ok(tx.commit().await?)
            }
        }
    }

    /// The mining store's own retention: blocks found more than `age` ago,
    /// blocks beyond a source's newest `keep_blocks` (what it lists) and
    /// participants whose tallies have not moved for `age` are deleted;
    /// how many blocks and participants went.
    pub async fn prune(&self, age: Duration, keep_blocks: usize, now_ms: u64) -> Result<(usize, usize), StoreError> {
        let cutoff = i(now_ms).saturating_sub(age.as_millis() as i64);
        let keep = keep_blocks as i64;
        match self {
            Self::Sqlite(conn) => {
                Self::sqlite(conn, move |c| {
                    let tx = c.transaction()?;
                    let old = tx.execute("DELETE FROM blocks WHERE at < ?1", [cutoff])?;
                    let surplus = tx.execute(
                        "DELETE FROM blocks WHERE rowid IN (SELECT rowid FROM
                           (SELECT rowid, ROW_NUMBER() OVER (PARTITION BY source ORDER BY at DESC, rowid DESC) AS n FROM blocks)
                         WHERE n > ?1)",
                        [keep],
                    )?;
                    let quiet = tx.execute("DELETE FROM participants WHERE seen_at < ?1", [cutoff])?;
                    tx.commit()?;
                    Ok((old + surplus, quiet))
                })
                .await
            }
            Self::Postgres(pool) => {
                let mut c = Self::pg(pool).await?;
                let tx = c.transaction().await?;
                let old = tx.execute("DELETE FROM blocks WHERE at < $1", &[&cutoff]).await?;
                let surplus = tx
                    .execute(
                        "DELETE FROM blocks WHERE n IN (SELECT n FROM
                           (SELECT n, ROW_NUMBER() OVER (PARTITION BY source ORDER BY at DESC, n DESC) AS k FROM blocks) ranked
                         WHERE k > $1)",
                        &[&keep],
                    )
                    .await?;
                let quiet = tx.execute("DELETE FROM participants WHERE seen_at < $1", &[&cutoff]).await?;
                tx.commit().await?;
                Ok(((old + surplus) as usize, quiet as usize))
            }
        }
    }

    /// Sets a participant's last change (tests age tallies with it).
    #[cfg(test)]
    async fn seen(&self, name: &str, at_ms: i64) {
        let sql = "UPDATE participants SET seen_at = $2 WHERE name = $1";
        match self {
            Self::Sqlite(conn) => {
                conn.lock().execute(&lite(sql), params![name, at_ms]).expect("ages");
            }
            Self::Postgres(pool) => {
                Self::pg(pool).await.expect("client").execute(sql, &[&name, &at_ms]).await.expect("ages");
            }
        }
    }
}

#[cfg(test)]
mod tests;
