//! The PostgreSQL backend: the store for a cluster (`FAENA_STORE_URL`).
//! The writer thread keeps one connection of its own and commits each
//! group in one transaction of at most three multi-row statements
//! (`write.rs`), whatever the number of jobs in it; reads come from a
//! small pool. The schema is migrated at start, under a lock (`schema.rs`).

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use faena_proto::api::JobView;
use faena_proto::ids::JobId;
use faena_proto::jobs::{JobState, Priority};
use tokio_postgres::{Config, NoTls, Row};

use crate::{Retention, StoreError, rfc3339};

pub(crate) mod list;
pub(crate) mod read;
mod schema;
mod write;

pub(crate) use write::Writer;

/// Connections the readers share.
const READERS: usize = 8;
/// Longest wait for a connection to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a statement may run before the server cancels it (and the
/// group is tried again).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to the store at `url`, brings its schema up to date, and
/// returns its writer and the readers' pool.
pub(crate) async fn open_store(url: &str, retention: Retention) -> Result<(Writer, Pool), StoreError> {
    let mut config = Config::from_str(url)?;
    config.application_name("faena-master");
    // A server that does not answer is a failure to retry, not a hang.
    config.connect_timeout(CONNECT_TIMEOUT);
    config.keepalives_idle(Duration::from_secs(10));
    // Notices ("already exists, skipping") are not news for the log.
    config.options(format!("-c statement_timeout={} -c client_min_messages=warning", STATEMENT_TIMEOUT.as_millis()));
    let (mut client, conn) = config.connect(NoTls).await?;
    let driver = tokio::spawn(conn);
    schema::migrate(&mut client).await?;
    drop(client);
    let _ = driver.await;
    let manager =
        Manager::from_config(config.clone(), NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
    let pool = Pool::builder(manager).max_size(READERS).build().map_err(|e| StoreError::Pool(e.to_string()))?;
    Ok((Writer::new(config, retention)?, pool))
}

/// The columns [`view`] reads, in its order.
const VIEW_COLUMNS: &str = "kind, priority, state, attempts, worker, error, created_at, finished_at";

/// Job `id` as stored, from [`VIEW_COLUMNS`] starting at column `at`.
fn view(id: JobId, r: &Row, at: usize) -> Result<JobView, StoreError> {
    let ms = |v: i64| rfc3339(u64::try_from(v).unwrap_or(0));
    Ok(JobView {
        id,
        kind: r.try_get(at)?,
        priority: Priority::parse(r.try_get(at + 1)?).unwrap_or_default(),
        state: JobState::parse(r.try_get(at + 2)?).unwrap_or(JobState::Failed),
        attempts: u32::try_from(r.try_get::<_, i32>(at + 3)?).unwrap_or(0),
        worker: r.try_get(at + 4)?,
        error: r.try_get(at + 5)?,
        created_at: ms(r.try_get(at + 6)?),
        finished_at: r.try_get::<_, Option<i64>>(at + 7)?.map(ms),
        position: None,
        result: None,
        progress: None,
        parent: None,
        waiting: None,
        retry_of: None,
        retried_as: None,
    })
}
