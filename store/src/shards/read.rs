//! Reads over a SQLite store's shards, off the async threads: a job's own
//! reads in its shard, the rest from each shard in turn, merged.

use std::collections::HashMap;
use std::sync::Arc;

use faena_proto::ids::JobId;
use rusqlite::Connection;

use crate::sqlite;
use crate::{Firing, HeldKey, JobFilter, Outcome, Page, SqliteShard, StoreError};

/// `f` on shard `k`'s read connection.
pub(crate) async fn on<T: Send + 'static>(
    shards: &Arc<[SqliteShard]>,
    k: usize,
    f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let conn = shards[k].conn.clone();
    tokio::task::spawn_blocking(move || f(&conn.lock())).await.map_err(StoreError::Task)?
}

/// `f` on each shard's read connection in turn, shard 0 first.
pub(crate) async fn each<T: Send + 'static>(
    shards: &Arc<[SqliteShard]>,
    f: impl Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
) -> Result<Vec<T>, StoreError> {
    let shards = shards.clone();
    tokio::task::spawn_blocking(move || shards.iter().map(|s| f(&s.conn.lock())).collect())
        .await
        .map_err(StoreError::Task)?
}

/// The outcomes of `ids`, each asked of its own shard.
pub(crate) async fn outcomes(
    shards: &Arc<[SqliteShard]>,
    ids: Vec<JobId>,
) -> Result<HashMap<JobId, Outcome>, StoreError> {
    let n = shards.len();
    let mut by: Vec<Vec<JobId>> = vec![Vec::new(); n];
    for id in ids {
        by[id.shard(n)].push(id);
    }
    let shards = shards.clone();
    tokio::task::spawn_blocking(move || {
        let mut out = HashMap::new();
        for (s, ids) in shards.iter().zip(by).filter(|(_, ids)| !ids.is_empty()) {
            out.extend(sqlite::read::outcomes(&s.conn.lock(), &ids)?);
        }
        Ok(out)
    })
    .await
    .map_err(StoreError::Task)?
}

/// The unique keys held at `now_ms`, each stored with its job. A key
/// taken again by a job in another shard after its last holder's time ran
/// out can be found twice until that row is cleared: the newer job (ids
/// grow with time) holds it.
pub(crate) async fn held_keys(shards: &Arc<[SqliteShard]>, now_ms: u64) -> Result<Vec<HeldKey>, StoreError> {
    let mut by_key: HashMap<String, HeldKey> = HashMap::new();
    for k in each(shards, move |c| sqlite::read::held_keys(c, now_ms)).await?.into_iter().flatten() {
        match by_key.get(&k.key) {
            Some(held) if held.job >= k.job => {}
            _ => {
                by_key.insert(k.key.clone(), k);
            }
        }
    }
    Ok(by_key.into_values().collect())
}

/// Each schedule's last firing: the latest any shard stored (a firing
/// that made a job is stored with the job, one that made none in shard 0).
pub(crate) async fn firings(shards: &Arc<[SqliteShard]>) -> Result<HashMap<String, Firing>, StoreError> {
    let mut out: HashMap<String, Firing> = HashMap::new();
    for (name, f) in each(shards, sqlite::read::firings).await?.into_iter().flatten() {
        match out.get(&name) {
            Some(had) if had.at_ms >= f.at_ms => {}
            _ => {
                out.insert(name, f);
            }
        }
    }
    Ok(out)
}

/// One page of `f`: each shard's rows, merged by row id (one counter for
/// every shard, so the cursor means the same in each).
pub(crate) async fn list(shards: &Arc<[SqliteShard]>, f: &JobFilter) -> Result<Page, StoreError> {
    let filter = f.clone();
    let rows = each(shards, move |c| sqlite::list::rows(c, &filter)).await?;
    Ok(sqlite::list::page(rows.into_iter().flatten().collect(), f))
}
