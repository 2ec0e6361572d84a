//! What the master keeps of the autoscaler, which runs as its own service
//! (`faena-autoscaler`) and reports its state through the API: the latest
//! report, for the dashboard, and its decisions, counted in the metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use faena_proto::scaling::AutoscalerView;
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::metrics::Metrics;

/// A report older than this is shown as the autoscaler gone quiet.
pub const QUIET_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Last {
    view: Option<(Instant, AutoscalerView)>,
    /// The totals last counted (an autoscaler that restarted counts from 0).
    counted: (u64, u64),
}

/// The autoscaler's reports (shared by the API and the dashboard's feed).
#[derive(Debug, Clone, Default)]
pub struct Reports(Arc<Mutex<Last>>);

impl Reports {
    /// Takes a checked report: its new decisions are counted once.
    pub fn report(&self, view: AutoscalerView, metrics: &Metrics) {
        let mut last = self.0.lock();
        let (up, down) = last.counted;
        let new = |now: u64, before: u64| if now >= before { now - before } else { now };
        metrics.autoscaled("up", new(view.scaled_up, up));
        metrics.autoscaled("down", new(view.scaled_down, down));
        if let Some(r) = view.replicas {
            metrics.autoscale_replicas.set(i64::from(r));
        }
        let now_s = faena_proto::mqtt::now_ms() / 1000;
        metrics.autoscaler_reported.set(i64::try_from(now_s).unwrap_or(i64::MAX));
        last.counted = (view.scaled_up, view.scaled_down);
        last.view = Some((Instant::now(), view));
    }

    /// The latest report with its age, or null before the first.
    pub fn view(&self) -> Value {
        match &self.0.lock().view {
            Some((at, v)) => {
                let age = at.elapsed();
                let mut out = serde_json::to_value(v).unwrap_or_default();
                out["reported_ms_ago"] = json!(u64::try_from(age.as_millis()).unwrap_or(u64::MAX));
                out["quiet"] = json!(age > QUIET_AFTER);
                out
            }
            None => Value::Null,
        }
    }
}

#[cfg(test)]
mod tests {
    use faena_proto::scaling::AutoscalerView;

    use super::Reports;
    use crate::metrics::Metrics;

    fn view(up: u64, down: u64) -> AutoscalerView {
        AutoscalerView {
            service: "faena_worker".into(),
            min: 1,
            max: 3,
            replicas: Some(2),
            scaled_up: up,
            scaled_down: down,
            decisions: vec![],
            error: None,
        }
    }

    #[test]
    fn each_decision_is_counted_once_across_reports_and_restarts() {
        let (reports, metrics) = (Reports::default(), Metrics::default());
        assert!(reports.view().is_null());
        reports.report(view(1, 0), &metrics);
        reports.report(view(1, 0), &metrics);
        reports.report(view(2, 1), &metrics);
        // The autoscaler restarted: its totals start again.
        reports.report(view(1, 0), &metrics);
        let page = metrics.render();
        assert!(page.contains("faena_autoscale_decisions_total{direction=\"up\"} 3"), "{page}");
        assert!(page.contains("faena_autoscale_decisions_total{direction=\"down\"} 1"), "{page}");
        assert!(page.contains("faena_autoscale_replicas 2"), "{page}");
        assert!(!page.contains("faena_autoscaler_report_timestamp_seconds 0\n"), "{page}");
        let v = reports.view();
        assert_eq!(v["scaled_up"], 1);
        assert_eq!(v["quiet"], false);
    }
}
