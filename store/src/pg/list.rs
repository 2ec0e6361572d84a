//! Listing jobs for `GET /api/jobs` from PostgreSQL: the same pages as
//! SQLite's (newest first, keyed on the row id), each filter on an index
//! of (value, row id), so a page is read newest first off it.
//!
//! The indexes key on the columns the server derives (migration 8): an
//! ended job by its state (`listed_state`) and worker (`listed_worker`),
//! every unfinished job under `listed_state = 'open'`. An unfinished state
//! is found among the open jobs; a worker's jobs are its ended ones and
//! the open ones it holds, two ranges read newest first and merged.

use deadpool_postgres::Pool;
use faena_proto::jobs::JobState;
use tokio_postgres::types::ToSql;

use super::{VIEW_COLUMNS, view};
use crate::{JobFilter, MAX_PAGE, Page, StoreError};

type Args = Vec<Box<dyn ToSql + Sync + Send>>;

/// Adds `v` to the statement's parameters; its placeholder.
fn arg(args: &mut Args, v: Box<dyn ToSql + Sync + Send>) -> String {
    args.push(v);
    format!("${}", args.len())
}

pub(crate) async fn list(pool: &Pool, f: &JobFilter) -> Result<Page, StoreError> {
    let (sql, args, limit) = statement(f);
    let c = pool.get().await.map_err(|e| StoreError::Pool(e.to_string()))?;
    let stmt = c.prepare_cached(&sql).await?;
    let rows = c.query(&stmt, &params(&args)).await?;
    let mut jobs = Vec::with_capacity(limit);
    for r in rows.iter().take(limit) {
        let id: uuid::Uuid = r.try_get(1)?;
        jobs.push((r.try_get::<_, i64>(0)?, view(faena_proto::ids::JobId(id), r, 2)?));
    }
    // One more than the page says there is more: the next page starts
    // below the last shown.
    let next = if rows.len() > limit { jobs.last().map(|(row, _)| *row) } else { None };
    Ok(Page { jobs: jobs.into_iter().map(|(_, v)| v).collect(), next })
}

fn params(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect()
}

/// The page's statement (one more row than the page, to know whether there
/// is another), its parameters and the page's size.
fn statement(f: &JobFilter) -> (String, Args, usize) {
    let mut args = Args::new();
    let mut common = match f.parent {
        Some(p) => format!("parent = {}", arg(&mut args, Box::new(p.0))),
        None => "parent IS NULL".to_owned(),
    };
    if let Some(k) = f.kind {
        common.push_str(&format!(" AND kind = {}", arg(&mut args, Box::new(k.as_str()))));
    }
    if let Some(p) = f.priority {
        common.push_str(&format!(" AND priority = {}", arg(&mut args, Box::new(p.as_str()))));
    }
    if let Some(s) = &f.schedule {
        common.push_str(&format!(" AND schedule = {}", arg(&mut args, Box::new(s.clone()))));
    }
    if let Some(since) = f.since_ms {
        let n = arg(&mut args, Box::new(i64::try_from(since).unwrap_or(i64::MAX)));
        // Jobs are stored in `created_at` order: nothing before the first
        // job of the window can match, so the walk stops there (found by a
        // search over row ids, migration 11; none: nothing matches).
        common.push_str(&format!(" AND created_at >= {n} AND row_id >= faena_first_row_since({n})"));
    }
    if let Some(before) = f.before {
        common.push_str(&format!(" AND row_id < {}", arg(&mut args, Box::new(before))));
    }
    if let Some(s) = f.state {
        let state = arg(&mut args, Box::new(s.as_str()));
        common.push_str(&match s.is_final() {
            true => format!(" AND listed_state = {state}"),
            false => format!(" AND listed_state = 'open' AND state = {state}"),
        });
    }
    let limit = f.limit.clamp(1, MAX_PAGE);
    let n = arg(&mut args, Box::new(limit as i64 + 1));
    let select = |filter: &str| {
        format!("SELECT row_id, id, {VIEW_COLUMNS} FROM jobs WHERE {filter} ORDER BY row_id DESC LIMIT {n}")
    };
    let sql = match &f.worker {
        None => select(&common),
        Some(w) => {
            let w = arg(&mut args, Box::new(w.clone()));
            let ended = || select(&format!("{common} AND listed_worker = {w}"));
            let held = |open: &str| select(&format!("{common}{open} AND worker = {w}"));
            match f.state.map(JobState::is_final) {
                Some(true) => ended(),
                // `common` keeps to the open jobs already.
                Some(false) => held(""),
                None => format!(
                    "SELECT * FROM (({}) UNION ALL ({})) AS j ORDER BY row_id DESC LIMIT {n}",
                    ended(),
                    held(" AND listed_state = 'open'")
                ),
            }
        }
    };
    (sql, args, limit)
}

#[cfg(test)]
mod tests {
    use faena_proto::jobs::JobState;

    /// The window's first row (`faena_first_row_since`, migration 11) over
    /// row ids with gaps (pruned and copied jobs) and runs of one time,
    /// against a walk of every row, for every bound from before the oldest
    /// to past the newest; and none in an empty table.
    #[tokio::test]
    async fn the_windows_first_row_is_found_over_gaps_in_the_row_ids() {
        let pg = crate::harness::Postgres::start();
        crate::Store::connect(&pg.url(), crate::Retention::OFF).await.expect("migrates");
        assert_eq!(pg.sql("SELECT faena_first_row_since(0) IS NULL"), "t", "no job, no row");
        // Row ids 3, 4, 7, 8, 9, 15, 16, …: times in runs, never going down.
        let rows = [3, 4, 7, 8, 9, 15, 16, 17, 30, 31, 32, 33, 60, 61, 100];
        let times = [10, 10, 12, 12, 12, 13, 20, 20, 20, 21, 25, 25, 25, 40, 41];
        let values: Vec<String> = rows
            .iter()
            .zip(times)
            .map(|(r, t)| format!("({r}, gen_random_uuid(), 'noop', '{{}}', 'normal', {r}, 'succeeded', {t})"))
            .collect();
        pg.sql(&format!(
            "INSERT INTO jobs (row_id, id, kind, params, priority, seq, state, created_at) VALUES {}",
            values.join(", ")
        ));
        for since in 0..=45 {
            let walked =
                pg.sql(&format!("SELECT coalesce(min(row_id)::text, 'none') FROM jobs WHERE created_at >= {since}"));
            let found = pg.sql(&format!("SELECT coalesce(faena_first_row_since({since})::text, 'none')"));
            assert_eq!(found, walked, "since {since}");
        }
    }

    /// The planner's picture of the pages the columns that go together make
    /// (migration 12), as the readers' connections plan them, on a store
    /// shaped as the list bench's: a kind whose rows are mostly units
    /// (`kind=randomx.mine`: one row in 20, one in 200 at the top level)
    /// is read off `jobs_kind`, first page and deep, not by walking
    /// `jobs_row` newest first (10,000 rows for a page); its count at the
    /// top level is within twice what there is; and the queued jobs (one
    /// in 100) are read newest first off `jobs_state`, not every open
    /// job fetched and sorted.
    #[tokio::test]
    async fn pages_whose_filters_go_together_are_read_off_their_indexes() {
        let pg = crate::harness::Postgres::start();
        let store = crate::Store::connect(&pg.url(), crate::Retention::OFF).await.expect("opens");
        let crate::Reader::Postgres(pool) = &store.reader else { unreachable!("a PostgreSQL store") };
        pg.sql(
            "INSERT INTO jobs (row_id, id, kind, params, priority, seq, state, created_at, parent) \
             SELECT i, gen_random_uuid(), CASE WHEN i % 20 = 0 THEN 'randomx.mine' WHEN i % 5 = 0 THEN 'ai.query' \
             ELSE 'noop' END, '{}', 'normal', i, CASE WHEN i % 100 = 1 THEN 'queued' ELSE 'succeeded' END, i, \
             CASE WHEN i % 20 = 0 AND i % 200 <> 0 THEN gen_random_uuid() END \
             FROM generate_series(1, 200000) AS i; ANALYZE jobs",
        );
        let c = pool.get().await.expect("a reader");
        let explain = async |f: &crate::JobFilter| -> Vec<String> {
            let (sql, args, _) = super::statement(f);
            let plan = c.query(&format!("EXPLAIN {sql}"), &super::params(&args)).await.expect("explains");
            plan.iter().map(|r| r.get(0)).collect()
        };
        for before in [None, Some(100_000)] {
            let mine = crate::JobFilter {
                kind: Some(faena_proto::jobs::JobKind::RandomxMine),
                before,
                limit: 50,
                ..Default::default()
            };
            let plan = explain(&mine).await;
            assert!(plan[1].contains("Index Scan Backward using jobs_kind on jobs"), "{before:?}: {plan:#?}");
            let all = explain(&crate::JobFilter { limit: 1_000_000, ..mine }).await;
            let rows: f64 = all[1].split("rows=").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).expect("rows");
            let there = if before.is_some() { 500.0 } else { 1_000.0 };
            assert!(rows >= there / 2.0 && rows <= there * 2.0, "{before:?}: {rows} rows for {there}: {all:#?}");
            let queued = crate::JobFilter { state: Some(JobState::Queued), before, limit: 50, ..Default::default() };
            let plan = explain(&queued).await;
            assert!(plan[1].contains("Index Scan Backward using jobs_state on jobs"), "{before:?}: {plan:#?}");
        }
    }
}
