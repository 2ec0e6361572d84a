//! The dashboard's feed: the `/ops` Socket.IO namespace. Behind the API
//! token when one is set (the same handshake check as the page's own
//! namespace). Once a second, while any dashboard is connected, the master
//! takes one snapshot — what waits and runs, the counters the dashboard
//! turns into rates, the moving percentiles of queue wait and run time,
//! the workers, the groups and schedules, the autoscaler — and broadcasts it: the cost is one
//! snapshot a second however many dashboards watch, and nothing at all
//! while none does. A dashboard that connects gets a snapshot at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use socketioxide::SocketIo;
use socketioxide::extract::{SocketRef, State};
use socketioxide::handler::ConnectHandler;

use super::{Web, authorize};
use crate::coordinator::Coordinator;
use crate::metrics::Metrics;

/// The namespace dashboards connect to.
pub const NAMESPACE: &str = "/ops";
/// The event each snapshot comes as.
pub const SNAPSHOT: &str = "snapshot";
/// How often a snapshot goes out (while anyone watches).
pub const EVERY: Duration = Duration::from_secs(1);

/// Most groups and schedules a snapshot shows.
pub const SHOWN: usize = 50;

/// What the feed reads.
#[derive(Debug, Clone)]
pub struct Feed {
    pub coord: Coordinator,
    pub metrics: Arc<Metrics>,
    /// What the autoscaler (its own service) last reported, when it runs.
    pub autoscaler: crate::scaling::Reports,
}

impl Feed {
    /// One snapshot of the whole system.
    pub async fn snapshot(&self) -> Option<Value> {
        let load = self.coord.load().await.ok()?;
        let workers = self.coord.workers().await.ok()?;
        // The groups with the most jobs, and the schedules due soonest: a
        // snapshot stays small however many there are.
        let mut groups = self.coord.groups().await.ok()?;
        groups.sort_by(|a, b| b.jobs.cmp(&a.jobs).then_with(|| a.name.cmp(&b.name)));
        groups.truncate(SHOWN);
        let mut schedules = self.coord.schedules().await.ok()?;
        schedules.sort_by(|a, b| a.next_run_at.cmp(&b.next_run_at));
        schedules.truncate(SHOWN);
        let now = Instant::now();
        let at_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Some(json!({
            "at": at_ms as u64,
            "load": load,
            "totals": self.metrics.totals(),
            "wait": self.metrics.recent_wait.percentiles(now),
            "run": self.metrics.recent_run.percentiles(now),
            "workers": workers,
            "groups": groups,
            "schedules": schedules,
            "autoscale": self.autoscaler.view(),
        }))
    }
}

/// Opens the namespace on `io`.
pub(super) fn register(io: &SocketIo) {
    io.ns(NAMESPACE, on_connect.with(authorize));
}

async fn on_connect(socket: SocketRef, State(web): State<Web>) {
    if let Some(snapshot) = web.feed.snapshot().await {
        let _ = socket.emit(SNAPSHOT, &snapshot);
    }
}

/// Broadcasts a snapshot every [`EVERY`] to the connected dashboards, if any.
pub async fn broadcast(io: SocketIo, feed: Feed, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(ops) = io.of(NAMESPACE) else { return };
        if ops.clone().sockets().is_empty() {
            continue;
        }
        let Some(snapshot) = feed.snapshot().await else { return };
        let _ = ops.emit(SNAPSHOT, &snapshot).await;
    }
}
