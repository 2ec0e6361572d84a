//! Runs the store's retention in the background: a batch at a time while
//! there is something to delete (each between the writer's commit groups,
//! so dispatch waits at most one batch), then once a second; and keeps the
//! store's size on disk in `faena_store_bytes`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::{Retention, Store};

/// The pause between two full batches: the writer's other work goes first.
const BETWEEN_BATCHES: Duration = Duration::from_millis(5);
const IDLE: Duration = Duration::from_secs(1);

pub async fn run(store: Store, retention: Retention, db: PathBuf, metrics: Arc<Metrics>, cancel: CancellationToken) {
    loop {
        let mut pause = IDLE;
        if !retention.is_off() {
            match store.prune(retention).await {
                Ok(n) => {
                    metrics.pruned.inc_by(n as u64);
                    if n == retention.batch {
                        pause = BETWEEN_BATCHES;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "the retention could not delete old jobs; retrying"),
            }
        }
        metrics.store_bytes.set(size_on_disk(&db) as i64);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// The database file and its write-ahead log, in bytes.
fn size_on_disk(db: &std::path::Path) -> u64 {
    let wal = db.with_extension("db-wal");
    [db.to_path_buf(), wal].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}
