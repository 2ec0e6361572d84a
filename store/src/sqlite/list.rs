//! Listing jobs for `GET /api/jobs`: newest first, filtered, a page at a
//! time. Pages are keyed on the row id (the order jobs were stored in,
//! unique across generations), so a page costs the same on the millionth
//! job as on the first and a job stored meanwhile never shifts the pages
//! after it. Each filter has an index whose entries are in row-id order;
//! each generation gives its page, and the pages are merged. A mining
//! job's units are left out (their job stands for them).

use faena_proto::api::JobView;
use rusqlite::Connection;
use rusqlite::types::Value as Sql;

use super::created::created_at_or_after;
use super::generations::listed;
use super::{VIEW_COLUMNS, view};
use crate::{JobFilter, MAX_PAGE, Page, StoreError};

/// The page of `f` from `jobs` (by row id), newest first: those of every
/// shard of a store, each from [`rows`]. The views carry no result
/// (`GET /api/jobs/{id}` has it) and no queue position.
pub(crate) fn page(mut jobs: Vec<(i64, JobView)>, f: &JobFilter) -> Page {
    let limit = f.limit.clamp(1, MAX_PAGE);
    jobs.sort_unstable_by_key(|(rowid, _)| std::cmp::Reverse(*rowid));
    // One more than the page says there is more: the next page starts
    // below the last shown.
    let next = (jobs.len() > limit).then(|| jobs[limit - 1].0);
    jobs.truncate(limit);
    Page { jobs: jobs.into_iter().map(|(_, v)| v).collect(), next }
}

/// The jobs `f` selects in this file, newest first, with their row ids:
/// one more than a page, for each generation.
pub(crate) fn rows(conn: &Connection, f: &JobFilter) -> Result<Vec<(i64, JobView)>, StoreError> {
    let Statement { sql, mut args, first } = statement(f);
    let tx = conn.unchecked_transaction()?;
    let mut jobs: Vec<(i64, JobView)> = Vec::with_capacity(f.limit.clamp(1, MAX_PAGE) + 1);
    for (table, _) in listed(&tx)? {
        // A generation with no job in the window has nothing to show.
        if let Some((since, at)) = first {
            match created_at_or_after(&tx, &table, since)? {
                Some(row) => args[at] = Sql::Integer(row),
                None => continue,
            }
        }
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
    Ok(jobs)
}

/// A page's statement, its generation's table left as `{jobs}`.
struct Statement {
    sql: String,
    args: Vec<Sql>,
    /// A `since=` window's time and the argument its first row goes in.
    first: Option<(i64, usize)>,
}

fn statement(f: &JobFilter) -> Statement {
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
    if let Some(s) = &f.schedule {
        and("schedule = ?", Sql::Text(s.clone()));
    }
    // Jobs are stored in `created_at` order (the store keeps it so):
    // nothing before the first job of the window can match, so the walk
    // stops there instead of reading the rest of the history.
    let since = f.since_ms.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
    if let Some(since) = since {
        and("created_at >= ?", Sql::Integer(since));
    }
    if let Some(before) = f.before {
        and("rowid < ?", Sql::Integer(before));
    }
    // The window's first row, each generation's own (set below).
    if since.is_some() {
        and("rowid >= ?", Sql::Integer(i64::MIN));
    }
    let first = since.map(|since| (since, args.len() - 1));
    let limit = f.limit.clamp(1, MAX_PAGE);
    sql.push_str(" ORDER BY rowid DESC LIMIT ?");
    args.push(Sql::Integer(limit as i64 + 1));
    Statement { sql, args, first }
}

#[cfg(test)]
mod tests {
    use faena_proto::ids::{FencingToken, JobId};
    use faena_proto::jobs::{JobKind, Priority};

    use crate::tests::{insert, wait_commit};
    use crate::{JobFilter, Retention, Store, StoreOp, SyncMode};

    /// The kind, worker and priority indexes hold top-level jobs only (a
    /// mining job's units write no entry in them); a store made when they
    /// were whole has them made again when it opens; a page filtered by
    /// one is read off it; and the pages list the top-level job and leave
    /// its unit out.
    #[tokio::test]
    async fn the_listings_own_indexes_hold_top_level_jobs_even_in_a_store_made_before() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("faena.db");
        let (parent, unit) = (JobId::new(), JobId::new());
        {
            let store = Store::open(&path, SyncMode::Normal, Retention::OFF).expect("opens");
            let mut of_parent = insert(unit, 2, None);
            if let StoreOp::Insert { parent: p, .. } = &mut of_parent {
                *p = Some(parent);
            }
            store.write(insert(parent, 1, None));
            store.write(of_parent);
            for id in [parent, unit] {
                let token = FencingToken::new();
                store.write(StoreOp::Dispatched { id, attempt: 1, worker: "w1".into(), token, at_ms: 5 });
            }
            wait_commit(&store).await;
        }
        // As a store of before had them: whole.
        let conn = rusqlite::Connection::open(&path).expect("file");
        conn.execute_batch(
            "DROP INDEX jobs_kind; DROP INDEX jobs_worker; DROP INDEX jobs_priority;
             CREATE INDEX jobs_kind ON jobs(kind);
             CREATE INDEX jobs_worker ON jobs(worker) WHERE worker IS NOT NULL;
             CREATE INDEX jobs_priority ON jobs(priority);",
        )
        .expect("indexes of before");
        let store = Store::open(&path, SyncMode::Normal, Retention::OFF).expect("opens again");
        for index in ["jobs_kind", "jobs_worker", "jobs_priority"] {
            let sql: String = conn
                .query_row("SELECT sql FROM sqlite_master WHERE name = ?1", [index], |r| r.get(0))
                .expect("the index is there");
            assert!(sql.contains("parent IS NULL"), "{sql}");
        }
        // The listing's own statement for each filter implies the index's
        // terms, so SQLite reads the page off it.
        let filters = [
            ("jobs_kind (kind=?)", JobFilter { kind: Some(JobKind::Noop), ..Default::default() }),
            ("jobs_worker (worker=?)", JobFilter { worker: Some("w1".into()), ..Default::default() }),
            ("jobs_priority (priority=?)", JobFilter { priority: Some(Priority::Normal), ..Default::default() }),
        ];
        for (index, f) in &filters {
            let super::Statement { sql, args, .. } = super::statement(f);
            let sql = format!("EXPLAIN QUERY PLAN {}", sql.replace("{jobs}", "jobs"));
            let plan: String = conn.query_row(&sql, rusqlite::params_from_iter(&args), |r| r.get(3)).expect("plans");
            assert!(plan.contains(&format!("USING INDEX {index}")), "{f:?}: {plan}");
        }
        for (_, f) in filters {
            let page = store.list(&JobFilter { limit: 10, ..f.clone() }).await.expect("lists");
            let ids: Vec<JobId> = page.jobs.iter().map(|j| j.id).collect();
            assert_eq!(ids, [parent], "{f:?}");
        }
    }
}
