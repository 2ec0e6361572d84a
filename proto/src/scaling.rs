//! What the autoscaler (`faena-autoscaler`, its own service) and the master
//! say to each other over the master's REST API: the load it reads
//! (`GET /api/load`), the workers it drains before a scale-down
//! (`PUT /api/workers/draining`) and the state it reports for the
//! dashboard and metrics (`PUT /api/autoscaler`).

use serde::{Deserialize, Serialize};

use crate::WireError;

/// Decisions an autoscaler report carries (the newest).
pub const MAX_DECISIONS: usize = 20;
/// Longest reason, error or service name in a report, in bytes.
pub const MAX_TEXT: usize = 1024;
/// Most workers one drain names.
pub const MAX_DRAINED: usize = 1024;
/// Longest a drain holds before the master gives the workers their work
/// back by itself (an autoscaler that died mid-drain strands nobody).
pub const MAX_DRAIN_MS: u64 = 600_000;

/// What waits and what runs (`GET /api/load`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadView {
    /// Queued jobs per priority: high, normal, low.
    pub depth: [usize; 3],
    pub queued: usize,
    /// Units out on workers.
    pub running: usize,
    /// Jobs waiting for their time (or their next attempt's).
    #[serde(default)]
    pub scheduled: usize,
    /// Jobs waiting for the jobs they run after.
    #[serde(default)]
    pub waiting: usize,
    /// Per job kind with jobs waiting (mining jobs left out: they take
    /// whatever workers there are and are never "late").
    pub kinds: Vec<KindLoad>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KindLoad {
    pub kind: String,
    pub queued: usize,
    /// How long the longest-waiting of them has waited.
    pub oldest_wait_ms: u64,
}

/// `PUT /api/workers/draining`: `workers` get no new work for `for_ms`
/// (what they run goes on); an empty list gives work back to all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    pub workers: Vec<String>,
    pub for_ms: u64,
}

impl DrainRequest {
    pub fn check(&self) -> Result<(), WireError> {
        if self.workers.len() > MAX_DRAINED {
            return Err(WireError::Params(format!("at most {MAX_DRAINED} workers per drain")));
        }
        if self.for_ms == 0 || self.for_ms > MAX_DRAIN_MS {
            return Err(WireError::Params(format!("for_ms must be 1..={MAX_DRAIN_MS}")));
        }
        Ok(())
    }
}

/// One decision the autoscaler carried out (or tried).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Milliseconds since the UNIX epoch.
    pub at: u64,
    pub from: u32,
    pub to: u32,
    pub reason: String,
    /// Workers drained before a scale-down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drained: Vec<String>,
    /// Set when the Docker Engine API refused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The autoscaler's state (`PUT /api/autoscaler`; the dashboard shows it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoscalerView {
    pub service: String,
    pub min: u32,
    pub max: u32,
    /// The service's replicas as last read.
    pub replicas: Option<u32>,
    /// Scale-ups and scale-downs carried out since the autoscaler started.
    pub scaled_up: u64,
    pub scaled_down: u64,
    /// The newest decisions, oldest first.
    pub decisions: Vec<Decision>,
    /// The last failure (to reach the Engine API or the master), until it clears.
    #[serde(default)]
    pub error: Option<String>,
}

impl AutoscalerView {
    /// Bounds what a report may hold: the master keeps it in memory and
    /// shows it on every dashboard.
    pub fn check(&self) -> Result<(), WireError> {
        if self.decisions.len() > MAX_DECISIONS {
            return Err(WireError::Params(format!("at most {MAX_DECISIONS} decisions")));
        }
        let texts = std::iter::once(&self.service)
            .chain(&self.error)
            .chain(self.decisions.iter().flat_map(|d| std::iter::once(&d.reason).chain(&d.error)));
        if texts.clone().any(|t| t.len() > MAX_TEXT) {
            return Err(WireError::Params(format!("a name, reason or error over {MAX_TEXT} bytes")));
        }
        if self.decisions.iter().any(|d| d.drained.len() > MAX_DRAINED || d.drained.iter().any(|w| w.len() > 256)) {
            return Err(WireError::Params("a decision drains too many workers or names one too long".into()));
        }
        if self.min > self.max {
            return Err(WireError::Params("min above max".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> AutoscalerView {
        AutoscalerView {
            service: "faena_worker".into(),
            min: 1,
            max: 3,
            replicas: Some(2),
            scaled_up: 1,
            scaled_down: 0,
            decisions: vec![Decision { at: 1, from: 1, to: 2, reason: "r".into(), drained: vec![], error: None }],
            error: None,
        }
    }

    #[test]
    fn reports_and_drains_are_bounded() {
        assert!(view().check().is_ok());
        let mut v = view();
        v.decisions = vec![v.decisions[0].clone(); MAX_DECISIONS + 1];
        assert!(v.check().is_err());
        let mut v = view();
        v.decisions[0].reason = "x".repeat(MAX_TEXT + 1);
        assert!(v.check().is_err());
        let mut v = view();
        v.error = Some("x".repeat(MAX_TEXT + 1));
        assert!(v.check().is_err());
        let mut v = view();
        v.decisions[0].drained = vec!["w".into(); MAX_DRAINED + 1];
        assert!(v.check().is_err());
        assert!(DrainRequest { workers: vec![], for_ms: 1 }.check().is_ok());
        assert!(DrainRequest { workers: vec![], for_ms: 0 }.check().is_err());
        assert!(DrainRequest { workers: vec![], for_ms: MAX_DRAIN_MS + 1 }.check().is_err());
        assert!(DrainRequest { workers: vec!["w".into(); MAX_DRAINED + 1], for_ms: 1 }.check().is_err());
        let unknown = r#"{"workers": [], "for_ms": 1, "extra": 1}"#;
        assert!(serde_json::from_str::<DrainRequest>(unknown).is_err());
    }
}
