//! Listing jobs for `GET /api/jobs` from PostgreSQL: the same pages as
//! SQLite's (newest first, keyed on the row id), each filter on an index
//! of (value, row id), so a page is read newest first off it.

use deadpool_postgres::Pool;
use tokio_postgres::types::ToSql;

use super::{VIEW_COLUMNS, view};
use crate::{JobFilter, MAX_PAGE, Page, StoreError};

pub(crate) async fn list(pool: &Pool, f: &JobFilter) -> Result<Page, StoreError> {
    let mut sql = format!("SELECT row_id, id, {VIEW_COLUMNS} FROM jobs WHERE ");
    let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
    let arg = |args: &mut Vec<Box<dyn ToSql + Sync + Send>>, v: Box<dyn ToSql + Sync + Send>| {
        args.push(v);
        format!("${}", args.len())
    };
    match f.parent {
        Some(p) => sql.push_str(&format!("parent = {}", arg(&mut args, Box::new(p.0)))),
        None => sql.push_str("parent IS NULL"),
    }
    if let Some(s) = f.state {
        sql.push_str(&format!(" AND state = {}", arg(&mut args, Box::new(s.as_str()))));
    }
    if let Some(k) = f.kind {
        sql.push_str(&format!(" AND kind = {}", arg(&mut args, Box::new(k.as_str()))));
    }
    if let Some(w) = &f.worker {
        sql.push_str(&format!(" AND worker = {}", arg(&mut args, Box::new(w.clone()))));
    }
    if let Some(p) = f.priority {
        sql.push_str(&format!(" AND priority = {}", arg(&mut args, Box::new(p.as_str()))));
    }
    if let Some(s) = &f.schedule {
        sql.push_str(&format!(" AND schedule = {}", arg(&mut args, Box::new(s.clone()))));
    }
    if let Some(since) = f.since_ms {
        let n = arg(&mut args, Box::new(i64::try_from(since).unwrap_or(i64::MAX)));
        // Jobs are stored in `created_at` order: nothing before the first
        // job of the window can match, so the walk stops there.
        sql.push_str(&format!(
            " AND created_at >= {n} AND row_id >= (SELECT row_id FROM jobs WHERE created_at >= {n} ORDER BY created_at, row_id LIMIT 1)"
        ));
    }
    if let Some(before) = f.before {
        sql.push_str(&format!(" AND row_id < {}", arg(&mut args, Box::new(before))));
    }
    let limit = f.limit.clamp(1, MAX_PAGE);
    sql.push_str(&format!(" ORDER BY row_id DESC LIMIT {}", arg(&mut args, Box::new(limit as i64 + 1))));

    let c = pool.get().await.map_err(|e| StoreError::Pool(e.to_string()))?;
    let stmt = c.prepare_cached(&sql).await?;
    let params: Vec<&(dyn ToSql + Sync)> = args.iter().map(|a| a.as_ref() as &(dyn ToSql + Sync)).collect();
    let rows = c.query(&stmt, &params).await?;
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
