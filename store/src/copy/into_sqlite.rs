//! Copying a SQLite store into a new SQLite store, with as many shards as
//! asked (`faena store copy --to sqlite:PATH --shards N`): how a store made
//! in one file moves onto several, or back, or is compacted. Every job
//! goes to the shard its id names, keeping its row id, so the copy lists,
//! restores and numbers on as the source did.
//!
//! The new store is built under names of its own beside the target
//! (`.faena.db.copy`, `.faena.db.1.copy`…) and takes the target's names
//! only once it is whole, shard 0 last: a copy that stops part way leaves
//! no store at the target, and the next run starts again from nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use faena_proto::ids::JobId;
use rusqlite::Connection;
use rusqlite::functions::FunctionFlags;

use super::{CopyReport, counts, open_as_one};
use crate::StoreError;
use crate::shards::{MAX_SHARDS, shard_path};
use crate::sqlite::generations::{HISTORY_COLUMNS, JOB_COLUMNS, Layout};

/// Copies the SQLite store at `from` (one file or several) into a new
/// SQLite store of `shards` files at `to`, with the live configuration's
/// versions and the mining store beside it. Refused when anything of a
/// store is at `to` already.
pub fn into_sqlite(from: &Path, to: &Path, shards: usize) -> Result<CopyReport, StoreError> {
    let refuse = |why: String| Err(StoreError::Copy(why));
    if !(1..=MAX_SHARDS).contains(&shards) {
        return refuse(format!("{shards} shards: a store has 1 to {MAX_SHARDS}"));
    }
    if !from.is_file() {
        return refuse(format!("no SQLite store at {}", from.display()));
    }
    let mining = from.with_file_name("mining.db");
    let target_mining = to.with_file_name("mining.db");
    let taken = (0..MAX_SHARDS).map(|k| shard_path(to, k)).chain([target_mining.clone()]).find(|p| p.exists());
    if let Some(p) = taken {
        return refuse(format!("{} exists: copy into a new store (a directory with no store in it)", p.display()));
    }
    let Some(name) = to.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return refuse(format!("{}: name the new store's file (e.g. faena.db)", to.display()));
    };
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(StoreError::File)?;
    }
    // No master writes the source while it is copied, and no master or
    // other copy opens the new store while it is built.
    let _source = crate::sqlite::lock::take(from, crate::sqlite::lock::WAIT)?;
    let _target = crate::sqlite::lock::take(to, Duration::ZERO)?;
    let building = to.with_file_name(format!(".{name}.copy"));
    let building_mining = to.with_file_name(".mining.db.copy");
    // What a run that stopped part way left, ours by name.
    for p in (0..MAX_SHARDS).map(|k| shard_path(&building, k)).chain([building_mining.clone()]) {
        remove_with_journal(&p)?;
    }

    let files: Vec<PathBuf> = (0..shards).map(|k| shard_path(&building, k)).collect();
    let built = build(from, &files, &mining, &building_mining);
    if !built.as_ref().is_ok_and(CopyReport::is_whole) {
        for p in files.iter().chain([&building_mining]) {
            remove_with_journal(p)?;
        }
        return built;
    }
    // Shard 0 names the store: it takes its name last.
    for (k, file) in files.iter().enumerate().rev() {
        std::fs::rename(file, shard_path(to, k)).map_err(StoreError::File)?;
        if k == 0 && building_mining.is_file() {
            std::fs::rename(&building_mining, &target_mining).map_err(StoreError::File)?;
        }
    }
    built
}

/// The new store built at `files` (and the mining store at `mining_to`
/// when `mining` is there), counted as a master would read it.
fn build(from: &Path, files: &[PathBuf], mining: &Path, mining_to: &Path) -> Result<CopyReport, StoreError> {
    let shards = files.len();
    let (source, schemas, gens) = open_as_one(from)?;
    source.create_scalar_function("faena_shard", 2, FunctionFlags::SQLITE_DETERMINISTIC, |ctx| {
        let id: String = ctx.get(0)?;
        let n: i64 = ctx.get(1)?;
        let id: JobId = id
            .parse()
            .map_err(|_| rusqlite::Error::UserFunctionError(format!("a stored job id {id:?} is not a UUID").into()))?;
        Ok(id.shard(n as usize) as i64)
    })?;

    let mut report = CopyReport::default();
    (report.source_jobs, report.source_history) = counts(&source, &gens)?;
    for (k, file) in files.iter().enumerate() {
        let (jobs, versions) = fill(&source, &schemas, &gens, file, k, shards)?;
        report.jobs += jobs;
        report.config_versions += versions;
    }
    drop(source);
    if mining.is_file() {
        let conn = Connection::open(mining)?;
        conn.execute("VACUUM INTO ?1", [mining_to.to_string_lossy()])?;
        let copied = Connection::open(mining_to)?;
        let count = |t: &str| copied.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get::<_, i64>(0));
        report.mining = (count("sources")? as u64, count("blocks")? as u64, count("participants")? as u64);
    }

    // Counted as a master would read the new store: its shards as one.
    let (target, _, built) = open_as_one(&files[0])?;
    (report.target_jobs, report.target_history) = counts(&target, &built)?;
    // A new store: all of its history is this run's, rows and trails' steps.
    report.history = report.target_history;
    drop(target);
    Ok(report)
}

/// Shard `k` of `shards` of the new store, at `file`: its jobs (keeping
/// their row ids), their history, unique keys and schedule firings, and in
/// shard 0 the named documents and the live configuration's versions.
/// Written through `source`, the new file attached to it, in one
/// transaction; what it copied: jobs, and the configuration's versions.
fn fill(
    source: &Connection,
    schemas: &[String],
    gens: &[(String, String)],
    file: &Path,
    k: usize,
    shards: usize,
) -> Result<(u64, u64), StoreError> {
    {
        // Made as a master makes a store: its tables, and its place.
        let conn = crate::sqlite::open(file, crate::SyncMode::Normal)?;
        Layout::open(&conn, faena_proto::mqtt::now_ms() as i64)?;
        crate::shards::mark_new(&conn, k, shards)?;
    }
    source.execute("ATTACH DATABASE ?1 AS copy", [file.to_string_lossy()])?;
    let filled = (|| {
        let tx = source.unchecked_transaction()?;
        let (n, k) = (shards as i64, k as i64);
        let (mut jobs, mut versions) = (0, 0);
        for (j, t) in gens {
            jobs += tx.execute(
                &format!(
                    "INSERT INTO copy.jobs (rowid, {JOB_COLUMNS}) SELECT rowid, {JOB_COLUMNS} FROM {j}
                     WHERE faena_shard(id, ?1) = ?2 ORDER BY rowid"
                ),
                [n, k],
            )? as u64;
            tx.execute(
                &format!(
                    "INSERT INTO copy.transitions ({HISTORY_COLUMNS}) SELECT {HISTORY_COLUMNS} FROM {t}
                     WHERE faena_shard(job_id, ?1) = ?2 ORDER BY rowid"
                ),
                [n, k],
            )?;
        }
        for s in schemas {
            // A key found in two shards (taken again after its time ran
            // out) is the newer job's; a schedule's latest firing is kept.
            tx.execute(
                &format!(
                    "INSERT INTO copy.unique_keys (key, job, until_ms) SELECT key, job, until_ms FROM {s}.unique_keys
                     WHERE faena_shard(job, ?1) = ?2
                     ON CONFLICT (key) DO UPDATE SET job = excluded.job, until_ms = excluded.until_ms WHERE excluded.job > job"
                ),
                [n, k],
            )?;
            tx.execute(
                &format!(
                    "INSERT INTO copy.schedule_firings (name, at_ms, job) SELECT name, at_ms, job FROM {s}.schedule_firings
                     WHERE CASE WHEN job IS NULL THEN ?2 = 0 ELSE faena_shard(job, ?1) = ?2 END
                     ON CONFLICT (name) DO UPDATE SET at_ms = excluded.at_ms, job = excluded.job WHERE excluded.at_ms >= at_ms"
                ),
                [n, k],
            )?;
        }
        if k == 0 {
            tx.execute_batch("INSERT INTO copy.named (kind, name, doc) SELECT kind, name, doc FROM main.named")?;
            let has_versions: bool = tx.query_row(
                "SELECT count(*) > 0 FROM main.sqlite_master WHERE type = 'table' AND name = 'config_versions'",
                [],
                |r| r.get(0),
            )?;
            if has_versions {
                tx.execute_batch(&crate::settings::schema_in("copy"))?;
                versions = tx.execute(
                    "INSERT INTO copy.config_versions (version, doc, at) SELECT version, doc, at FROM main.config_versions",
                    [],
                )? as u64;
            }
        }
        tx.commit()?;
        Ok::<_, StoreError>((jobs, versions))
    })();
    source.execute("DETACH DATABASE copy", [])?;
    filled
}

/// Removes `path` and the journal files SQLite keeps beside it.
fn remove_with_journal(path: &Path) -> Result<(), StoreError> {
    let name = path.as_os_str().to_owned();
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = name.clone();
        p.push(suffix);
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(StoreError::File(e)),
            _ => {}
        }
    }
    Ok(())
}
