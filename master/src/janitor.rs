//! Runs the store's retention in the background: a generation at a time
//! while there is one to drop (each with one of the writer's commit
//! groups), then once a second; and keeps the store's size on disk in
//! `faena_store_bytes`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::Store;

/// The pause between two generations dropped: the writer's other work goes first.
const BETWEEN_DROPS: Duration = Duration::from_millis(5);
const IDLE: Duration = Duration::from_secs(1);

pub async fn run(store: Store, db: PathBuf, metrics: Arc<Metrics>, cancel: CancellationToken) {
    loop {
        let mut pause = IDLE;
        if !store.retention().is_off() {
            match store.prune().await {
                Ok(0) => {}
                Ok(n) => {
                    metrics.pruned.inc_by(n as u64);
                    pause = BETWEEN_DROPS;
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
