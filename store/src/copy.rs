//! Moving a store from one machine to a cluster: copies a SQLite store's
//! jobs, their history and the live configuration's versions into a
//! PostgreSQL store (`faena store copy`). Jobs go in row-id order, a batch
//! per transaction with their history, so a copy that stops (killed, the
//! server gone) resumes where the last committed batch ended; at the end
//! the counts on both sides are compared. Run it with the master stopped.
//! A SQLite store can also be copied into a new SQLite store of another
//! number of shards ([`into_sqlite`]).

use std::path::Path;

use rusqlite::Connection;
use uuid::Uuid;

use crate::StoreError;
use crate::pg::write::{INSERT, RECORD};
use crate::sqlite::generations::{JOB_COLUMNS, Layout, listed_in};

mod into_sqlite;
#[cfg(test)]
mod tests;

pub use into_sqlite::into_sqlite;

/// How far a copy got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// Jobs copied by this run (those copied before it are skipped).
    pub jobs: u64,
    pub history: u64,
    pub config_versions: u64,
    /// From `mining.db` beside the store, when there is one: sources,
    /// blocks and tallies copied (each once).
    pub mining: (u64, u64, u64),
    /// Jobs (and history rows) on each side once done: equal when whole.
    pub source_jobs: u64,
    pub target_jobs: u64,
    pub source_history: u64,
    pub target_history: u64,
}

impl CopyReport {
    pub fn is_whole(&self) -> bool {
        self.source_jobs == self.target_jobs && self.source_history == self.target_history
    }
}

type JobRow = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    String,
    i32,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
);

/// What a job row holds beyond [`JobRow`]: options, run_at, schedule.
type JobExtra = (Option<String>, Option<i64>, Option<String>);

/// Copies the SQLite store at `from` into the PostgreSQL store at `to`,
/// `batch` jobs a transaction; stops after `max_batches` when given (a
/// test's interrupted copy). `progress` hears the jobs copied so far.
pub async fn copy(
    from: &Path,
    to: &str,
    batch: usize,
    max_batches: Option<usize>,
    mut progress: impl FnMut(u64),
) -> Result<CopyReport, StoreError> {
    if !from.is_file() {
        return Err(StoreError::Copy(format!("no SQLite store at {}", from.display())));
    }
    // No master may write the store while it is copied.
    let _held = crate::sqlite::lock::take(from, crate::sqlite::lock::WAIT)?;
    // Both stores brought up to date first, as a master starting on each
    // would (a store from an older build gets its columns and generations).
    let (source, schemas, gens) = open_as_one(from)?;
    drop(crate::Store::connect(to, crate::Retention::OFF).await?);
    let target = crate::pg::tls::parse(to)?;
    let (mut client, conn) = target.config.connect(target.tls).await?;
    let driver = tokio::spawn(conn);
    let mut report = CopyReport::default();
    // Every generation's jobs, in row-id order (unique across them).
    let union = gens
        .iter()
        .map(|(j, _)| format!("SELECT rowid, {JOB_COLUMNS} FROM {j} WHERE rowid > ?1"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let select = format!("SELECT * FROM ({union}) ORDER BY rowid LIMIT ?2");
    // Resumes after the last job a previous run committed: the target must
    // hold nothing but what this source gave it.
    let mut after: i64 = client.query_one("SELECT coalesce(max(row_id), 0) FROM jobs", &[]).await?.try_get(0)?;
    if after > 0 {
        let theirs: Uuid = client.query_one("SELECT id FROM jobs WHERE row_id = $1", &[&after]).await?.try_get(0)?;
        let ours = gens.iter().find_map(|(j, _)| {
            source.query_row(&format!("SELECT id FROM {j} WHERE rowid = ?1"), [after], |r| r.get::<_, String>(0)).ok()
        });
        if ours.as_deref() != Some(theirs.to_string().as_str()) {
            return Err(StoreError::Copy(
                "the target store already holds jobs that are not this store's: copy into an empty one".into(),
            ));
        }
    }
    let mut batches = 0;
    loop {
        if max_batches.is_some_and(|m| batches >= m) {
            break;
        }
        let (rows, extra, trails): (Vec<JobRow>, Vec<JobExtra>, Vec<Option<String>>) = {
            let mut stmt = source.prepare_cached(&select)?;
            let mapped = stmt.query_map(rusqlite::params![after, batch as i64], |r| {
                let row: JobRow = (
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                    r.get(12)?,
                    r.get(13)?,
                    r.get(14)?,
                    r.get(15)?,
                );
                Ok((row, (r.get(16)?, r.get(17)?, r.get(18)?), r.get(19)?))
            })?;
            let all: Vec<(JobRow, JobExtra, Option<String>)> = mapped.collect::<Result<_, _>>()?;
            let (rows, (extra, trails)) = all.into_iter().map(|(row, extra, trail)| (row, (extra, trail))).unzip();
            (rows, extra, trails)
        };
        let Some(last) = rows.last().map(|r| r.0) else { break };
        let history = history_of(&source, &gens, &rows, &trails)?;
        let tx = client.transaction().await?;
        insert_jobs(&tx, &rows, &extra).await?;
        insert_history(&tx, &history).await?;
        tx.commit().await?;
        report.jobs += rows.len() as u64;
        report.history += history.len() as u64;
        after = last;
        batches += 1;
        progress(report.jobs);
    }
    report.config_versions = copy_config(&source, &client).await?;
    for schema in &schemas {
        copy_keys(&source, schema, &client).await?;
        copy_firings(&source, schema, &client).await?;
    }
    copy_named(&source, &client).await?;
    let mining = from.with_file_name("mining.db");
    if mining.is_file() {
        report.mining = copy_mining(&mining, &mut client).await?;
    }
    (report.source_jobs, report.source_history) = counts(&source, &gens)?;
    let target = |sql: &'static str| async { client.query_one(sql, &[]).await?.try_get::<_, i64>(0) };
    report.target_jobs = target("SELECT count(*) FROM jobs").await? as u64;
    report.target_history = target("SELECT count(*) FROM transitions").await? as u64;
    // A bulk load outruns autovacuum: without statistics the planner reads
    // a filtered listing of a million jobs whole (100 ms) instead of a
    // page off its index. The master starts on an analysed store.
    client.batch_execute("ANALYZE jobs; ANALYZE transitions").await?;
    drop(client);
    let _ = driver.await;
    Ok(report)
}

/// A SQLite store read as one: its connection, schemas, generations' tables.
type OpenAsOne = (Connection, Vec<String>, Vec<(String, String)>);

/// The SQLite store at `path` opened as a master would open it (a store
/// from an older build gets its columns and generations) and read as one:
/// a store of several shards with each of its files attached (row ids are
/// the store's, unique across them). With it, the schemas it reads, `main`
/// first, and every generation's tables.
fn open_as_one(path: &Path) -> Result<OpenAsOne, StoreError> {
    let conn = crate::sqlite::open(path, crate::SyncMode::Normal)?;
    Layout::open(&conn, faena_proto::mqtt::now_ms() as i64)?;
    let schemas = crate::shards::attach(&conn, path)?;
    let gens = schemas.iter().map(|s| listed_in(&conn, s)).collect::<Result<Vec<_>, _>>()?.concat();
    Ok((conn, schemas, gens))
}

/// The jobs and history rows (a job's trail counted by its steps, as a
/// copy into PostgreSQL writes them) of a SQLite store's generations `gens`.
fn counts(conn: &Connection, gens: &[(String, String)]) -> Result<(u64, u64), StoreError> {
    let count = |sql: String| conn.query_row(&sql, [], |r| r.get::<_, i64>(0));
    let (mut jobs, mut history) = (0, 0);
    for (j, t) in gens {
        jobs += count(format!("SELECT count(*) FROM {j}"))? as u64;
        history += count(format!("SELECT count(*) FROM {t}"))? as u64;
        history += count(crate::sqlite::count_steps(j))? as u64;
    }
    Ok((jobs, history))
}

type HistoryRow = (String, i64, String, i32, Option<String>, Option<String>);

/// The history of the jobs in `rows`, each job's in order: the rows of
/// its generation's history table, then its trail (`trails`, row by row).
fn history_of(
    source: &Connection,
    gens: &[(String, String)],
    rows: &[JobRow],
    trails: &[Option<String>],
) -> Result<Vec<HistoryRow>, StoreError> {
    let ids = serde_json::to_string(&rows.iter().map(|r| &r.1).collect::<Vec<_>>())?;
    let mut out = Vec::new();
    for (_, t) in gens {
        let mut stmt = source.prepare_cached(&format!(
            "SELECT job_id, at, state, attempt, worker, detail FROM {t}
             WHERE job_id IN (SELECT value FROM json_each(?1)) ORDER BY rowid"
        ))?;
        let mapped =
            stmt.query_map([&ids], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?;
        for row in mapped {
            out.push(row?);
        }
    }
    for (row, trail) in rows.iter().zip(trails) {
        for t in crate::sqlite::steps(trail.as_deref().unwrap_or_default())? {
            out.push((row.1.clone(), t.at_ms as i64, t.state, t.attempt as i32, t.worker, t.detail));
        }
    }
    Ok(out)
}

fn uuid(s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|e| StoreError::Copy(format!("a stored id {s:?} is not a UUID: {e}")))
}

async fn insert_jobs(
    tx: &tokio_postgres::Transaction<'_>,
    rows: &[JobRow],
    extra: &[JobExtra],
) -> Result<(), StoreError> {
    // The writer's own statement; a job copied by an earlier run is skipped.
    let stmt = tx.prepare(&format!("{INSERT} ON CONFLICT (id) DO NOTHING")).await?;
    let ids = rows.iter().map(|r| uuid(&r.1)).collect::<Result<Vec<_>, _>>()?;
    let opt = |v: &Option<String>| v.as_deref().map(uuid).transpose();
    let parents = rows.iter().map(|r| opt(&r.14)).collect::<Result<Vec<_>, _>>()?;
    let retries = rows.iter().map(|r| opt(&r.15)).collect::<Result<Vec<_>, _>>()?;
    let col_i64 = |f: fn(&JobRow) -> i64| rows.iter().map(f).collect::<Vec<_>>();
    let col_str = |f: fn(&JobRow) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    let col_opt = |f: fn(&JobRow) -> Option<&str>| rows.iter().map(f).collect::<Vec<_>>();
    let attempts: Vec<i32> = rows.iter().map(|r| r.7).collect();
    let finished: Vec<Option<i64>> = rows.iter().map(|r| r.13).collect();
    tx.execute(
        &stmt,
        &[
            &col_i64(|r| r.0),
            &ids,
            &col_str(|r| &r.2),
            &col_str(|r| &r.3),
            &col_str(|r| &r.4),
            &col_i64(|r| r.5),
            &col_str(|r| &r.6),
            &attempts,
            &col_opt(|r| r.8.as_deref()),
            &col_opt(|r| r.9.as_deref()),
            &col_opt(|r| r.10.as_deref()),
            &col_opt(|r| r.11.as_deref()),
            &col_i64(|r| r.12),
            &finished,
            &parents,
            &retries,
            &extra.iter().map(|e| e.0.as_deref()).collect::<Vec<_>>(),
            &extra.iter().map(|e| e.1).collect::<Vec<_>>(),
            &extra.iter().map(|e| e.2.as_deref()).collect::<Vec<_>>(),
        ],
    )
    .await?;
    Ok(())
}

async fn insert_history(tx: &tokio_postgres::Transaction<'_>, rows: &[HistoryRow]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids = rows.iter().map(|r| uuid(&r.0)).collect::<Result<Vec<_>, _>>()?;
    let at: Vec<i64> = rows.iter().map(|r| r.1).collect();
    let states: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    let attempts: Vec<i32> = rows.iter().map(|r| r.3).collect();
    let workers: Vec<Option<&str>> = rows.iter().map(|r| r.4.as_deref()).collect();
    let details: Vec<Option<&str>> = rows.iter().map(|r| r.5.as_deref()).collect();
    // Copied history was written by one master, without a fence.
    tx.execute(RECORD, &[&ids, &at, &states, &attempts, &workers, &details, &None::<i64>]).await?;
    Ok(())
}

/// The live configuration's versions (those the target lacks); how many.
/// The unique keys still held (a copy resumed copies them again: the same rows).
async fn copy_keys(source: &Connection, schema: &str, client: &tokio_postgres::Client) -> Result<(), StoreError> {
    let now = faena_proto::mqtt::now_ms() as i64;
    let mut stmt = source.prepare(&format!(
        "SELECT key, job, until_ms FROM {schema}.unique_keys WHERE until_ms IS NULL OR until_ms > ?1"
    ))?;
    let rows =
        stmt.query_map([now], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<i64>>(2)?)))?;
    for row in rows {
        let (key, job, until) = row?;
        client
            .execute(
                "INSERT INTO unique_keys (key, job, until_ms) VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
                &[&key, &uuid(&job)?, &until],
            )
            .await?;
    }
    Ok(())
}

/// Groups' limits and recurring schedules (a copy resumed writes the same rows again).
async fn copy_named(source: &Connection, client: &tokio_postgres::Client) -> Result<(), StoreError> {
    let mut stmt = source.prepare("SELECT kind, name, doc FROM named")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
    for row in rows {
        let (kind, name, doc) = row?;
        client
            .execute(
                "INSERT INTO named (kind, name, doc) VALUES ($1, $2, $3) ON CONFLICT (kind, name) DO UPDATE SET doc = excluded.doc",
                &[&kind, &name, &doc],
            )
            .await?;
    }
    Ok(())
}

/// Each schedule's last firing, so a copied store fires nothing twice (the
/// latest of the shards').
async fn copy_firings(source: &Connection, schema: &str, client: &tokio_postgres::Client) -> Result<(), StoreError> {
    let mut stmt = source.prepare(&format!("SELECT name, at_ms, job FROM {schema}.schedule_firings"))?;
    let rows =
        stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, Option<String>>(2)?)))?;
    for row in rows {
        let (name, at, job) = row?;
        let job = job.as_deref().map(uuid).transpose()?;
        client
            .execute(
                "INSERT INTO schedule_firings (name, at_ms, job) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET at_ms = excluded.at_ms, job = excluded.job WHERE schedule_firings.at_ms <= excluded.at_ms",
                &[&name, &at, &job],
            )
            .await?;
    }
    Ok(())
}

async fn copy_config(source: &Connection, client: &tokio_postgres::Client) -> Result<u64, StoreError> {
    let exists: i64 = source.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'config_versions'",
        [],
        |r| r.get(0),
    )?;
    if exists == 0 {
        return Ok(0);
    }
    let mut stmt = source.prepare("SELECT version, doc, at FROM config_versions ORDER BY version")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
    let mut n = 0;
    for row in rows {
        let (version, doc, at) = row?;
        n += client
            .execute(
                "INSERT INTO config_versions (version, doc, at) VALUES ($1, $2, $3) ON CONFLICT (version) DO NOTHING",
                &[&version, &doc, &at],
            )
            .await?;
    }
    Ok(n)
}

/// The mining store beside the job store, in one transaction: sources
/// and tallies the target lacks, and the blocks when the target has none
/// (so a second run copies nothing twice); how many of each.
async fn copy_mining(path: &Path, client: &mut tokio_postgres::Client) -> Result<(u64, u64, u64), StoreError> {
    let loaded = crate::mining::MiningDb::open(path)?.load().await?;
    let tx = client.transaction().await?;
    let mut sources = 0;
    for (i, (id, spec, job)) in loaded.sources.iter().enumerate() {
        let (spec, job) = (serde_json::to_string(spec)?, job.map(|j| j.to_string()));
        sources += tx
            .execute(
                "INSERT INTO sources (id, spec, created_at, job) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
                &[id, &spec, &(i as i64), &job],
            )
            .await?;
    }
    let mut blocks = 0;
    let none: i64 = tx.query_one("SELECT count(*) FROM blocks", &[]).await?.try_get(0)?;
    if none == 0 {
        for (source, b) in &loaded.blocks {
            let (height, at) = (b.height as i64, b.at_ms as i64);
            blocks += tx
                .execute(
                    "INSERT INTO blocks (source, height, hash, participant, accepted, reason, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[source, &height, &b.hash, &b.participant, &b.accepted, &b.reason, &at],
                )
                .await?;
        }
    }
    let mut tallies = 0;
    let now = faena_proto::mqtt::now_ms() as i64;
    for t in &loaded.tallies {
        let counts = (t.valid as i64, t.invalid as i64, t.stale as i64, t.blocks as i64);
        tallies += tx
            .execute(
                "INSERT INTO participants (name, kind, source, valid, invalid, stale, blocks, seen_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name, kind) DO NOTHING",
                &[&t.name, &t.kind, &t.source, &counts.0, &counts.1, &counts.2, &counts.3, &now],
            )
            .await?;
    }
    tx.commit().await?;
    Ok((sources, blocks, tallies))
}
