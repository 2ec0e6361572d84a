//! Jobs by their time: the writer stores jobs in `created_at` order (a
//! job is never stored as created before the one ahead of it, whatever
//! the clock does, and a job moved to a newer generation keeps its row id
//! and its time), so a table's row ids grow with `created_at`. Its first
//! and last rows are its oldest and newest jobs, and the first job of a
//! `since=` window is a binary search over row ids, with no index of
//! `created_at` for the writer to keep up on every insert.

use rusqlite::{Connection, OptionalExtension};

use crate::StoreError;

/// The `created_at` of the first job stored in `table` (none if it is
/// empty): row ids grow with `created_at`, so it is the oldest.
pub(crate) fn oldest_created(conn: &Connection, table: &str) -> Result<Option<i64>, StoreError> {
    Ok(edge(conn, table, "ASC")?.map(|(_, created)| created))
}

/// The `created_at` of the last job stored in `table`: the newest.
pub(crate) fn newest_created(conn: &Connection, table: &str) -> Result<Option<i64>, StoreError> {
    Ok(edge(conn, table, "DESC")?.map(|(_, created)| created))
}

/// The row id and `created_at` of the first (`ASC`) or last (`DESC`) job
/// stored in `table`.
fn edge(conn: &Connection, table: &str, order: &str) -> Result<Option<(i64, i64)>, StoreError> {
    let sql = format!("SELECT rowid, created_at FROM {table} ORDER BY rowid {order} LIMIT 1");
    Ok(conn.prepare_cached(&sql)?.query_row([], |r| Ok((r.get(0)?, r.get(1)?))).optional()?)
}

/// The row id of the first job in `table` created at `since` or later, if
/// any. Jobs are stored in `created_at` order (the writer keeps it so, and
/// a moved job keeps its row id and its time), so this is a binary search
/// over the row ids, one look-up of the table's own key a step: about
/// 2·log₂ of the span of row ids, whatever the table holds.
pub(crate) fn created_at_or_after(conn: &Connection, table: &str, since: i64) -> Result<Option<i64>, StoreError> {
    let (Some((first, oldest)), Some((end, newest))) = (edge(conn, table, "ASC")?, edge(conn, table, "DESC")?) else {
        return Ok(None);
    };
    if oldest >= since {
        return Ok(Some(first));
    }
    if newest < since {
        return Ok(None);
    }
    let mut next = conn
        .prepare_cached(&format!("SELECT rowid, created_at FROM {table} WHERE rowid >= ?1 ORDER BY rowid LIMIT 1"))?;
    // The answer is after `lo` and at or before `hi`, the first row known
    // to be in the window.
    let (mut lo, mut hi, mut found) = (first, end, end);
    while hi.abs_diff(lo) > 1 {
        let mid = lo.saturating_add((hi.abs_diff(lo) / 2) as i64);
        match next.query_row([mid], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))).optional()? {
            Some((row, created)) if row < hi && created >= since => (hi, found) = (row, row),
            Some((row, _)) if row < hi => lo = row,
            // No row from `mid` to before `hi`.
            _ => hi = mid,
        }
    }
    Ok(Some(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The window's first row over row ids with gaps (moved and pruned
    /// jobs) and runs of one time, against a walk of every row.
    #[test]
    fn the_windows_first_row_is_found_over_gaps_in_the_row_ids() {
        let conn = Connection::open_in_memory().expect("in memory");
        conn.execute_batch("CREATE TABLE t (created_at INTEGER NOT NULL)").expect("table");
        let mut rows = Vec::new();
        let (mut row, mut at) = (3_i64, 100_i64);
        for i in 0..300_i64 {
            row += 1 + (i * 7919) % 13 + if i % 50 == 0 { 100_000 } else { 0 };
            at += (i * 31) % 3;
            conn.execute("INSERT INTO t (rowid, created_at) VALUES (?1, ?2)", [row, at]).expect("inserts");
            rows.push((row, at));
        }
        for since in 0..=at + 2 {
            let walked = rows.iter().find(|(_, at)| *at >= since).map(|(row, _)| *row);
            assert_eq!(created_at_or_after(&conn, "t", since).expect("searches"), walked, "since {since}");
        }
        assert_eq!(oldest_created(&conn, "t").expect("reads"), Some(100));
        assert_eq!(newest_created(&conn, "t").expect("reads"), Some(at));
        conn.execute_batch("DELETE FROM t").expect("empties");
        assert_eq!(created_at_or_after(&conn, "t", 0).expect("searches"), None);
        assert_eq!(newest_created(&conn, "t").expect("reads"), None);
    }
}
