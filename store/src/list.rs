//! Listing jobs for `GET /api/jobs`: newest first, filtered, a page at a
//! time. Pages are keyed on the row id (the order jobs were stored in,
//! unique across generations), so a page costs the same on the millionth
//! job as on the first and a job stored meanwhile never shifts the pages
//! after it. Each filter has an index whose entries are in row-id order;
//! each generation gives its page, and the pages are merged. A mining
//! job's units are left out (their job stands for them).

use faena_proto::api::JobView;
use faena_proto::ids::JobId;
use faena_proto::jobs::{JobKind, JobState, Priority};
use rusqlite::types::Value as Sql;

use super::generations::listed;
use super::{Store, StoreError, VIEW_COLUMNS, view};

/// Jobs in a page when the request names no limit.
pub const DEFAULT_PAGE: usize = 50;
/// Most jobs in one page.
pub const MAX_PAGE: usize = 500;

/// Which jobs, and where the page starts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<JobKind>,
    pub worker: Option<String>,
    pub priority: Option<Priority>,
    /// The units of this mining job (instead of jobs that are not units).
    pub parent: Option<JobId>,
    /// Submitted at or after this (ms since the UNIX epoch).
    pub since_ms: Option<u64>,
    /// Only jobs stored before this cursor (the previous page's `next`).
    pub before: Option<i64>,
    /// 1..=[`MAX_PAGE`].
    pub limit: usize,
}

/// One page of jobs, newest first, and the cursor of the next page (none
/// when this is the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub jobs: Vec<JobView>,
    pub next: Option<i64>,
}

impl Store {
    /// The jobs `f` selects, newest first, one page. The views carry no
    /// result (`GET /api/jobs/{id}` has it) and no queue position.
    pub fn list(&self, f: &JobFilter) -> Result<Page, StoreError> {
        let mut sql = format!("SELECT rowid, id, {VIEW_COLUMNS} FROM {{jobs}} WHERE ");
        let mut args: Vec<Sql> = Vec::new();
        match f.parent {
            Some(p) => {
                sql.push_str("parent = ?");
                args.push(Sql::Text(p.to_string()));
            }
            None => sql.push_str("parent IS NULL"),
        }
        let mut and = |clause: &str, value: Sql| {
            sql.push_str(" AND ");
            sql.push_str(clause);
            args.push(value);
        };
        if let Some(s) = f.state {
            and("state = ?", Sql::Text(s.as_str().into()));
        }
        if let Some(k) = f.kind {
            and("kind = ?", Sql::Text(k.as_str().into()));
        }
        if let Some(w) = &f.worker {
            and("worker = ?", Sql::Text(w.clone()));
        }
        if let Some(p) = f.priority {
            and("priority = ?", Sql::Text(p.as_str().into()));
        }
        if let Some(since) = f.since_ms {
            let since = Sql::Integer(i64::try_from(since).unwrap_or(i64::MAX));
            and("created_at >= ?", since.clone());
            // Jobs are stored in `created_at` order (the store keeps it so):
            // nothing before the first job of the window can match, so the
            // walk stops there instead of reading the rest of the history.
            and("rowid >= (SELECT rowid FROM {jobs} WHERE created_at >= ? ORDER BY created_at, rowid LIMIT 1)", since);
        }
        if let Some(before) = f.before {
            and("rowid < ?", Sql::Integer(before));
        }
        let limit = f.limit.clamp(1, MAX_PAGE);
        sql.push_str(" ORDER BY rowid DESC LIMIT ?");
        args.push(Sql::Integer(limit as i64 + 1));

        let conn = self.reader.lock();
        let tx = conn.unchecked_transaction()?;
        let mut jobs: Vec<(i64, JobView)> = Vec::with_capacity(limit + 1);
        for (table, _) in listed(&tx)? {
            let mut stmt = tx.prepare_cached(&sql.replace("{jobs}", &table))?;
            let mut rows = stmt.query(rusqlite::params_from_iter(&args))?;
            while let Some(r) = rows.next()? {
                let (rowid, id) = (r.get::<_, i64>(0)?, r.get::<_, String>(1)?);
                match id.parse() {
                    Ok(id) => jobs.push((rowid, view(id, r, 2)?)),
                    Err(_) => tracing::error!(job = %id, "a stored job id does not parse; left out of the listing"),
                }
            }
        }
        jobs.sort_unstable_by_key(|(rowid, _)| std::cmp::Reverse(*rowid));
        // One more than the page says there is more: the next page starts
        // below the last shown.
        let next = (jobs.len() > limit).then(|| jobs[limit - 1].0);
        jobs.truncate(limit);
        Ok(Page { jobs: jobs.into_iter().map(|(_, v)| v).collect(), next })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use faena_proto::jobs::JobSpec;

    use super::*;
    use crate::StoreOp;
    use crate::SyncMode;

    #[test]
    fn since_holds_when_the_clock_steps_back() {
        let dir = std::env::temp_dir().join(format!("faena-list-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let store = Store::open(&dir.join("faena.db"), SyncMode::Normal, crate::Retention::OFF).expect("opens");
        // Submitted at 1000, 3000, then 2000 (the master's clock stepped back).
        let ids: Vec<JobId> = (0..3).map(|_| JobId::new()).collect();
        for (seq, (id, at_ms)) in ids.iter().zip([1000, 3000, 2000]).enumerate() {
            let spec = Arc::new(JobSpec::parse("noop", serde_json::json!({})).expect("valid"));
            let op = StoreOp::Insert {
                id: *id,
                spec,
                priority: Priority::Normal,
                seq: seq as u64,
                at_ms,
                parent: None,
                retry_of: None,
            };
            store.write(op);
        }
        let (tx, rx) = std::sync::mpsc::channel();
        store.after_commit(move |r| {
            let _ = tx.send(r.is_ok());
        });
        assert_eq!(rx.recv(), Ok(true));
        let listed = |since_ms| {
            let page = store.list(&JobFilter { since_ms: Some(since_ms), limit: 10, ..Default::default() });
            page.expect("lists").jobs.into_iter().map(|j| j.id).collect::<Vec<_>>()
        };
        // The last job is stored as created at 3000, not before the one ahead of it.
        assert_eq!(listed(2500), vec![ids[2], ids[1]]);
        assert_eq!(listed(3001), Vec::<JobId>::new());
        assert_eq!(listed(0), vec![ids[2], ids[1], ids[0]]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
