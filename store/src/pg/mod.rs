//! The PostgreSQL backend: the store for a cluster (`FAENA_STORE_URL`).
//! The writer thread keeps one connection of its own and commits each
//! group in one transaction of at most three multi-row statements
//! (`write.rs`), whatever the number of jobs in it; reads come from a
//! small pool. The schema is migrated at start, under a lock (`schema.rs`).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use faena_proto::api::JobView;
use faena_proto::ids::JobId;
use tokio_postgres::Row;

use crate::{Retention, StoreError};

pub(crate) mod lease;
pub(crate) mod list;
pub(crate) mod read;
mod schema;
#[cfg(test)]
mod tests;
pub(crate) mod tls;
pub(crate) mod write;

pub(crate) use write::Writer;

/// Connections the readers share.
const READERS: usize = 8;
/// Longest wait for a connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a statement may run before the server cancels it (and the
/// group is tried again).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a session of this master may sit inside a transaction between
/// statements before the server ends it. None does so on purpose; a
/// connection lost before its COMMIT reached the server leaves its
/// transaction open there, holding its rows' locks, and the writer waits
/// to learn that it was rolled back before it sends the group again.
const IDLE_IN_TRANSACTION: Duration = Duration::from_secs(60);

/// Most writers a PostgreSQL store has: as many as a SQLite store has
/// shards (`shards::MAX_SHARDS`).
pub const MAX_WRITERS: usize = crate::shards::MAX_SHARDS;

/// Connects to the store at `url`, brings its schema up to date, and
/// returns its `writers` writers (each its own connection) and the
/// readers' pool.
pub(crate) async fn open_store(
    url: &str,
    retention: Retention,
    fence: std::sync::Arc<std::sync::atomic::AtomicI64>,
    writers: usize,
) -> Result<(Vec<Writer>, Pool, lease::Election), StoreError> {
    if !(1..=MAX_WRITERS).contains(&writers) {
        return Err(StoreError::Shards(format!("{writers} writers: a PostgreSQL store has 1 to {MAX_WRITERS}")));
    }
    let tls::Target { mut config, tls } = tls::parse(url)?;
    config.application_name("faena-master");
    // A server that does not answer is a failure to retry, not a hang.
    config.connect_timeout(CONNECT_TIMEOUT);
    config.keepalives_idle(Duration::from_secs(10));
    // Notices ("already exists, skipping") are not news for the log.
    // Custom plans for the readers: their statements are prepared once
    // per connection, and a generic plan made while `jobs` was small (a
    // seq scan) stayed cached as it grew, until autovacuum's next ANALYZE
    // (it cost the writer 4 ms per finish on a store 40,000 jobs deep).
    // Planning anew costs tens of microseconds and sees the table as it
    // is. The writer plans its own way (`write::WRITER_PLANS`).
    // A page read off an index of its filter fetches rows scattered over
    // the table; the server's default prices each such fetch as a read
    // from disk, 4× one in order (`random_page_cost`). A store's listed
    // pages are in memory, so the planner read `kind=randomx.mine` (one
    // row in 200 at the top level) by walking every row newest first
    // instead: 10,000 rows for a page of 50, 2-4 ms against 0.1-0.4
    // (BENCHMARKS.md). 1.1 is the server's own advice for data in cache.
    // The URL's own `options` come last and win (`?options=-c%20statement_timeout%3D5000`).
    let theirs = config.get_options().map(|o| format!(" {o}")).unwrap_or_default();
    config.options(format!(
        "-c statement_timeout={} -c idle_in_transaction_session_timeout={} -c client_min_messages=warning \
         -c plan_cache_mode=force_custom_plan -c random_page_cost=1.1{theirs}",
        STATEMENT_TIMEOUT.as_millis(),
        IDLE_IN_TRANSACTION.as_millis()
    ));
    let (mut client, conn) = config.connect(tls.clone()).await?;
    let driver = tokio::spawn(conn);
    schema::migrate(&mut client).await?;
    drop(client);
    let _ = driver.await;
    let manager =
        Manager::from_config(config.clone(), tls.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(manager).max_size(READERS).build().map_err(|e| StoreError::Pool(e.to_string()))?;
    // The lease on a connection of its own: a renewal never queues behind readers.
    let manager =
        Manager::from_config(config.clone(), tls.clone(), ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let lease = Pool::builder(manager).max_size(1).build().map_err(|e| StoreError::Pool(e.to_string()))?;
    // Each writer connects at its first group: a standby holds no
    // connection that a failover of the store's own would leave dead.
    let writers: Vec<Writer> = (0..writers)
        .map(|_| Writer::new(config.clone(), tls.clone(), retention, fence.clone()))
        .collect::<Result<_, _>>()?;
    Ok((writers, pool, lease::Election::new(lease)))
}

/// The columns [`view`] reads, in its order.
const VIEW_COLUMNS: &str = "kind, priority, state, attempts, worker, error, created_at, finished_at, run_at, opts";
/// How many columns [`VIEW_COLUMNS`] names.
const VIEW_WIDTH: usize = 10;

/// Job `id` as stored, from [`VIEW_COLUMNS`] starting at column `at`.
fn view(id: JobId, r: &Row, at: usize) -> Result<JobView, StoreError> {
    Ok(crate::contract::ViewColumns {
        kind: r.try_get(at)?,
        priority: r.try_get(at + 1)?,
        state: r.try_get(at + 2)?,
        attempts: u32::try_from(r.try_get::<_, i32>(at + 3)?).unwrap_or(0),
        worker: r.try_get(at + 4)?,
        error: r.try_get(at + 5)?,
        created: r.try_get(at + 6)?,
        finished: r.try_get(at + 7)?,
        run_at: r.try_get(at + 8)?,
        opts: r.try_get(at + 9)?,
    }
    .view(id))
}
