//! Nothing fills the disk: finished jobs (and their history) older than the
//! retention period, or beyond the newest `keep`, are deleted in small
//! batches by the store's own writer, inside its next commit group (a
//! savepoint of its transaction: no fsync of their own, and a failed
//! deletion never fails the group), so dispatch never waits long behind one. SQLite reuses the freed
//! pages, so the file stops growing once deletions keep pace. Unfinished
//! jobs, and the finished units of a mining job still running (a restart
//! needs them), are never deleted.

use std::time::Duration;

use rusqlite::{Connection, params_from_iter};

use super::StoreError;

/// What to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished jobs created longer ago than this are deleted.
    pub age: Option<Duration>,
    /// At most this many jobs, newest first, are kept (finished ones beyond go).
    pub keep: Option<u64>,
    /// Jobs deleted per batch.
    pub batch: usize,
}

impl Retention {
    pub fn is_off(&self) -> bool {
        self.age.is_none() && self.keep.is_none()
    }
}

/// Deletes one batch of what `r` lets go, as of `now_ms`; how many jobs.
pub(super) fn prune(conn: &Connection, r: Retention, now_ms: i64) -> Result<usize, StoreError> {
    // Age by creation time; the count by insertion order (rowid: jobs made
    // in the same millisecond are still told apart).
    let created_before = r.age.map_or(i64::MIN, |a| now_ms.saturating_sub(a.as_millis() as i64));
    // Rows are only ever deleted from the old end, so the newest `keep`
    // are those above max(rowid) - keep: found in O(log n), where an
    // OFFSET would walk `keep` rows on every batch.
    let rowid_upto = match r.keep {
        Some(keep) => conn
            .query_row("SELECT max(rowid) FROM jobs", [], |row| row.get::<_, Option<i64>>(0))?
            .map_or(i64::MIN, |max| max.saturating_sub(keep as i64)),
        None => i64::MIN,
    };
    if created_before == i64::MIN && rowid_upto == i64::MIN {
        return Ok(0);
    }
    let ids: Vec<String> = {
        let mut stmt = conn.prepare_cached(
            "SELECT id FROM jobs
             WHERE (created_at < ?1 OR rowid <= ?2) AND state IN ('succeeded', 'failed', 'cancelled')
               AND (parent IS NULL OR parent NOT IN (SELECT id FROM jobs WHERE state IN ('queued', 'running')))
             ORDER BY rowid LIMIT ?3",
        )?;
        let rows = stmt.query_map(rusqlite::params![created_before, rowid_upto, r.batch as i64], |row| row.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    if ids.is_empty() {
        return Ok(0);
    }
    let marks = vec!["?"; ids.len()].join(",");
    conn.execute(&format!("DELETE FROM transitions WHERE job_id IN ({marks})"), params_from_iter(&ids))?;
    conn.execute(&format!("DELETE FROM jobs WHERE id IN ({marks})"), params_from_iter(&ids))?;
    Ok(ids.len())
}

#[cfg(test)]
mod tests;
