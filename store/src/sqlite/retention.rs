//! Nothing fills the disk: finished jobs (and their history) older than the
//! retention period, or beyond the newest `keep`, go — a whole generation
//! at a time (see `generations.rs`), dropped by the store's own writer
//! inside its next commit group (a savepoint of its transaction: no fsync
//! of its own, and a failed drop never fails the group). SQLite reuses the
//! freed pages, so the file stops growing. Unfinished jobs, and the
//! finished units of a mining job still running (a restart needs them),
//! are never deleted: they move to the newest generation first (once a few
//! generations behind are out of retention too: until then the oldest
//! waits for them to finish).

use rusqlite::Connection;

use super::created::newest_created;
use super::generations::{Gen, HISTORY_COLUMNS, JOB_COLUMNS, Layout, tables};
use crate::contract::UNFINISHED_SQLITE;
use crate::{Retention, StoreError};

/// How many generations, oldest first, must be out of retention before
/// the oldest is dropped though some of its jobs must stay (and so be
/// moved). Until then it waits for them to finish: under a deep queue the
/// oldest generation out of retention still holds queued jobs, and moving
/// them costs what storing them did.
const PATIENCE: usize = 4;

/// Whether every job in `g` is out of `r` as of `now_ms`.
fn out_of_retention(conn: &Connection, g: &Gen, next_row: i64, r: Retention, now_ms: i64) -> Result<bool, StoreError> {
    let one = |sql: &str| conn.query_row(&format!("{sql} FROM {}", g.jobs), [], |row| row.get::<_, Option<i64>>(0));
    let by_count = match r.keep {
        Some(keep) => one("SELECT max(rowid)")?.is_none_or(|row| row < next_row - keep as i64),
        None => false,
    };
    let by_age = match r.age {
        Some(age) => newest_created(conn, &g.jobs)?.is_none_or(|at| at < now_ms.saturating_sub(age.as_millis() as i64)),
        None => false,
    };
    Ok(by_count || by_age)
}

/// Drops the oldest generation if every job in it is out of `r` as of
/// `now_ms`, after moving what must stay to the newest; how many jobs went.
pub(super) fn prune(conn: &Connection, layout: &mut Layout, r: Retention, now_ms: i64) -> Result<usize, StoreError> {
    let [oldest, _, ..] = layout.gens.as_slice() else { return Ok(0) };
    if !out_of_retention(conn, oldest, layout.row_ids.next(), r, now_ms)? {
        return Ok(0);
    }
    let (j, t) = (oldest.jobs.clone(), oldest.history.clone());
    // What stays: unfinished jobs, and the units of a mining job still
    // running (wherever that job is).
    let parents: Vec<String> = conn
        .prepare(&format!("SELECT DISTINCT parent FROM {j} WHERE parent IS NOT NULL"))?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let mut running = Vec::new();
    for parent in parents {
        for g in &layout.gens {
            let sql = format!("SELECT count(*) FROM {} WHERE id = ?1 AND {UNFINISHED_SQLITE}", g.jobs);
            if conn.query_row(&sql, [&parent], |row| row.get::<_, i64>(0))? > 0 {
                running.push(parent);
                break;
            }
        }
    }
    let running = serde_json::to_string(&running)?;
    let stays = format!(
        "SELECT id FROM {j} WHERE {UNFINISHED_SQLITE}
         UNION SELECT id FROM {j} WHERE parent IN (SELECT value FROM json_each(?1))"
    );
    let staying: i64 = conn.query_row(&format!("SELECT count(*) FROM ({stays})"), [&running], |row| row.get(0))?;
    if staying > 0 {
        let behind = layout.gens.iter().skip(1).take(PATIENCE - 1).collect::<Vec<_>>();
        let mut overdue = behind.len() == PATIENCE - 1 && layout.gens.len() > PATIENCE;
        for g in behind {
            overdue = overdue && out_of_retention(conn, g, layout.row_ids.next(), r, now_ms)?;
        }
        if !overdue {
            return Ok(0);
        }
    }
    let (nj, nt) = tables(layout.newest().id);
    let moved = conn.execute(
        &format!(
            "INSERT INTO {nj} (rowid, {JOB_COLUMNS}) SELECT rowid, {JOB_COLUMNS} FROM {j} WHERE id IN ({stays}) ORDER BY rowid"
        ),
        [&running],
    )?;
    conn.execute(
        &format!(
            "INSERT INTO {nt} ({HISTORY_COLUMNS}) SELECT {HISTORY_COLUMNS} FROM {t} WHERE job_id IN ({stays}) ORDER BY rowid"
        ),
        [&running],
    )?;
    let total: i64 = conn.query_row(&format!("SELECT count(*) FROM {j}"), [], |row| row.get(0))?;
    conn.execute_batch(&format!("DROP TABLE {j}; DROP TABLE {t};"))?;
    conn.execute("DELETE FROM generations WHERE gen = ?1", [oldest.id])?;
    layout.dropped_oldest(moved as u64);
    Ok(usize::try_from(total).unwrap_or(0).saturating_sub(moved))
}

#[cfg(test)]
mod tests;
