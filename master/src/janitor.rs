//! Runs the store's retention in the background: a generation at a time
//! while there is one to drop (each with one of the writer's commit
//! groups), then once a second; and keeps the store's size on disk in
//! `faena_store_bytes`.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::store::Store;

/// The pause between two generations dropped: the writer's other work goes first.
const BETWEEN_DROPS: Duration = Duration::from_millis(5);
const IDLE: Duration = Duration::from_secs(1);

pub async fn run(store: Store, metrics: Arc<Metrics>, cancel: CancellationToken) {
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
        match store.bytes().await {
            Ok(n) => {
                metrics.store_bytes.set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::debug!(error = %e, "the store's size could not be read"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}
