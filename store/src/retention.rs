//! Nothing fills the disk: finished jobs (and their history) older than the
//! retention period, or beyond the newest `keep`, are deleted in small
//! batches by the store's own writer, inside its next commit group (a
//! savepoint of its transaction: no fsync of their own, and a failed
//! deletion never fails the group), so dispatch never waits long behind one. SQLite reuses the freed
//! pages, so the file stops growing once deletions keep pace. Unfinished
//! jobs, and the finished units of a mining job still running (a restart
//! needs them), are never deleted.

use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params_from_iter};

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

/// One batch: the oldest finished jobs up to a row id (`?1`), at most `?2`;
/// a mining job's units stay while it runs.
const BATCH: &str = "SELECT rowid, id FROM jobs
     WHERE rowid <= ?1 AND +state IN ('succeeded', 'failed', 'cancelled')
       AND (parent IS NULL OR NOT EXISTS
            (SELECT 1 FROM jobs p WHERE p.id = jobs.parent AND p.state IN ('queued', 'running')))
     ORDER BY rowid LIMIT ?2";

/// Deletes one batch of what `r` lets go, as of `now_ms`; how many jobs.
///
/// Jobs are stored in creation order (`created_at` never goes back as the
/// row id grows), so both limits are a row-id bound: the newest `keep` are
/// above `max(rowid) - keep`, and those created before the cut-off end at
/// the last row the `created_at` index finds before it — each found in
/// O(log n). The batch is then read in row-id order from the oldest row
/// up to that bound and no further: what it costs is what it deletes, not
/// a scan of every finished job kept.
pub(super) fn prune(conn: &Connection, r: Retention, now_ms: i64) -> Result<usize, StoreError> {
    let by_age = match r.age {
        Some(age) => conn
            .query_row(
                "SELECT rowid FROM jobs WHERE created_at < ?1 ORDER BY created_at DESC LIMIT 1",
                [now_ms.saturating_sub(age.as_millis() as i64)],
                |row| row.get::<_, i64>(0),
            )
            .optional()?
            .unwrap_or(i64::MIN),
        None => i64::MIN,
    };
    let by_count = match r.keep {
        Some(keep) => conn
            .query_row("SELECT max(rowid) FROM jobs", [], |row| row.get::<_, Option<i64>>(0))?
            .map_or(i64::MIN, |max| max.saturating_sub(keep as i64)),
        None => i64::MIN,
    };
    let bound = by_age.max(by_count);
    if bound == i64::MIN {
        return Ok(0);
    }
    // `+state`: the row-id range drives the scan, not the state index
    // (which would walk every finished job kept, then sort them).
    let (rowids, ids): (Vec<i64>, Vec<String>) = {
        let mut stmt = conn.prepare_cached(BATCH)?;
        let rows = stmt.query_map(rusqlite::params![bound, r.batch as i64], |row| Ok((row.get(0)?, row.get(1)?)))?;
        rows.collect::<Result<Vec<(i64, String)>, _>>()?.into_iter().unzip()
    };
    if ids.is_empty() {
        return Ok(0);
    }
    let marks = vec!["?"; ids.len()].join(",");
    conn.execute(&format!("DELETE FROM transitions WHERE job_id IN ({marks})"), params_from_iter(&ids))?;
    conn.execute(&format!("DELETE FROM jobs WHERE rowid IN ({marks})"), params_from_iter(&rowids))?;
    Ok(ids.len())
}

#[cfg(test)]
mod tests;
