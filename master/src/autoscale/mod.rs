//! Autoscaling the worker service on Docker Swarm (`FAENA_AUTOSCALE=MIN:MAX`,
//! off by default). Swarm has no autoscaler of its own; this one scales on
//! what the master knows — how long jobs wait and how many, per kind — not
//! on CPU.
//!
//! Every `FAENA_AUTOSCALE_EVERY_MS` it reads the service's replica count
//! from the Docker Engine API (the socket mounted into the master on a
//! manager), asks the [`policy`] and carries out its decision: up, by
//! updating the service; down, by first draining the workers on the slots
//! Swarm will remove (no new work; each finishes what it runs, within
//! `FAENA_AUTOSCALE_DRAIN_MS`) and then lowering the count (their SIGTERM
//! drain hands back anything left, which is requeued without costing an
//! attempt). Every decision is logged, counted
//! (`faena_autoscale_decisions_total{direction}`) and shown on the
//! dashboard with its reason.
//!
//! - [`policy`]: when and how far, as a pure function of load and time.
//! - [`docker`]: the Engine API calls.

pub mod docker;
pub mod policy;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faena_common::args::ConfigError;
use faena_proto::ids::WorkerId;
use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::coordinator::Coordinator;
use crate::metrics::Metrics;
use docker::Docker;
use policy::{Decision, Observed, Policy, Settings, WorkerLoad, slot_of};

/// Decisions the dashboard is shown (the newest).
const KEEP_DECISIONS: usize = 20;

#[derive(Debug, Clone, clap::Args)]
pub struct AutoscaleArgs {
    /// Scale the worker service between MIN and MAX replicas (e.g. 2:10);
    /// off when unset.
    #[arg(long, env = "FAENA_AUTOSCALE")]
    pub autoscale: Option<String>,
    /// The Swarm service to scale.
    #[arg(long, env = "FAENA_AUTOSCALE_SERVICE", default_value = "faena_worker")]
    pub autoscale_service: String,
    /// Scale up when a job has waited this long.
    #[arg(long, env = "FAENA_AUTOSCALE_WAIT_MS", default_value_t = 10_000)]
    pub autoscale_wait_ms: u64,
    /// Scale down only after this long with nothing waiting and idle workers.
    #[arg(long, env = "FAENA_AUTOSCALE_COOLDOWN_SECS", default_value_t = 120)]
    pub autoscale_cooldown_secs: u64,
    /// After scaling up, how long the new workers get to register before more are added.
    #[arg(long, env = "FAENA_AUTOSCALE_SETTLE_SECS", default_value_t = 120)]
    pub autoscale_settle_secs: u64,
    /// How often it looks.
    #[arg(long, env = "FAENA_AUTOSCALE_EVERY_MS", default_value_t = 5_000)]
    pub autoscale_every_ms: u64,
    /// Longest wait for the workers being removed to finish what they run.
    #[arg(long, env = "FAENA_AUTOSCALE_DRAIN_MS", default_value_t = 30_000)]
    pub autoscale_drain_ms: u64,
    /// The Docker Engine API socket.
    #[arg(long, env = "FAENA_DOCKER_SOCKET", default_value = "/var/run/docker.sock")]
    pub docker_socket: PathBuf,
}

impl AutoscaleArgs {
    /// The policy's settings, or None when autoscaling is off.
    pub fn settings(&self) -> Result<Option<Settings>, ConfigError> {
        let Some(range) = self.autoscale.as_deref().filter(|r| !r.trim().is_empty()) else { return Ok(None) };
        let bad = || ConfigError(format!("FAENA_AUTOSCALE={range:?}: expected MIN:MAX with 0 <= MIN <= MAX, MAX >= 1"));
        let (min, max) = range.split_once(':').ok_or_else(bad)?;
        let (min, max): (u32, u32) = (min.trim().parse().map_err(|_| bad())?, max.trim().parse().map_err(|_| bad())?);
        if min > max || max == 0 {
            return Err(bad());
        }
        Ok(Some(Settings {
            min,
            max,
            wait: Duration::from_millis(self.autoscale_wait_ms),
            cooldown: Duration::from_secs(self.autoscale_cooldown_secs),
            settle: Duration::from_secs(self.autoscale_settle_secs),
        }))
    }
}

/// One decision carried out (or tried).
#[derive(Debug, Clone, Serialize)]
pub struct Made {
    /// Milliseconds since the UNIX epoch.
    pub at: u64,
    pub from: u32,
    pub to: u32,
    pub reason: String,
    /// Workers drained before a scale-down.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drained: Vec<String>,
    /// Set when the Engine API refused it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the dashboard shows of the autoscaler.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub service: String,
    pub min: u32,
    pub max: u32,
    /// The service's replicas as last read.
    pub replicas: Option<u32>,
    pub scaled_up: u64,
    pub scaled_down: u64,
    pub decisions: VecDeque<Made>,
    /// The last failure to reach the Engine API, until it answers again.
    pub error: Option<String>,
}

/// The autoscaler's state, shared with the dashboard's feed.
#[derive(Debug, Clone)]
pub struct Status(Arc<Mutex<View>>);

impl Status {
    pub fn new(service: &str, settings: &Settings) -> Self {
        Self(Arc::new(Mutex::new(View {
            service: service.to_owned(),
            min: settings.min,
            max: settings.max,
            replicas: None,
            scaled_up: 0,
            scaled_down: 0,
            decisions: VecDeque::new(),
            error: None,
        })))
    }

    pub fn view(&self) -> View {
        self.0.lock().clone()
    }

    fn record(&self, made: Made) {
        let mut v = self.0.lock();
        if made.error.is_none() {
            if made.to > made.from {
                v.scaled_up += 1;
            } else {
                v.scaled_down += 1;
            }
            v.replicas = Some(made.to);
        }
        v.decisions.push_back(made);
        while v.decisions.len() > KEEP_DECISIONS {
            v.decisions.pop_front();
        }
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The autoscaler: runs until `stop`.
#[derive(Debug)]
pub struct Autoscaler {
    pub args: AutoscaleArgs,
    pub policy: Policy,
    pub coord: Coordinator,
    pub metrics: Arc<Metrics>,
    pub status: Status,
}

impl Autoscaler {
    pub async fn run(mut self, stop: CancellationToken) {
        let docker = match Docker::new(&self.args.docker_socket) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "autoscaling is off: no Docker Engine API client");
                self.status.0.lock().error = Some(e.to_string());
                return;
            }
        };
        let service = self.args.autoscale_service.clone();
        let (min, max) = (self.policy.settings.min, self.policy.settings.max);
        tracing::info!(%service, min, max, "autoscaling the worker service");
        // Workers drained for the last scale-down, until they are gone.
        let mut retired: Option<(Instant, Vec<String>)> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(self.args.autoscale_every_ms.max(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let replicas = match docker.replicas(&service).await {
                Ok(r) => r,
                Err(e) => {
                    let mut v = self.status.0.lock();
                    if v.error.as_deref() != Some(e.0.as_str()) {
                        tracing::warn!(error = %e, %service, "autoscaler cannot read the worker service");
                    }
                    v.error = Some(e.0);
                    continue;
                }
            };
            {
                let mut v = self.status.0.lock();
                v.replicas = Some(replicas);
                v.error = None;
            }
            self.metrics.autoscale_replicas.set(i64::from(replicas));
            let Some(observed) = self.observe(replicas).await else { return };
            if let Some((at, ids)) = &retired {
                let left: Vec<&String> =
                    ids.iter().filter(|id| observed.workers.iter().any(|w| &w.id == *id)).collect();
                // Swarm balances tasks across nodes before it looks at slot
                // numbers: on a multi-node swarm it may stop other tasks than
                // the drained ones. Those stay: they take work again.
                let overdue = at.elapsed() > 2 * Duration::from_millis(self.args.autoscale_drain_ms);
                if left.is_empty() || overdue {
                    if !left.is_empty() {
                        tracing::warn!(workers = ?left, "Swarm kept workers the autoscaler drained; they take work again");
                    }
                    let _ = self.coord.retire(Vec::new()).await;
                    retired = None;
                }
            }
            match self.policy.decide(Instant::now(), &observed) {
                Decision::Hold => {}
                Decision::Up { to, reason } => {
                    self.scale(&docker, replicas, to, reason, Vec::new()).await;
                }
                Decision::Down { to, reason, remove } => {
                    if !self.drain(&remove, &stop).await {
                        return;
                    }
                    if self.scale(&docker, replicas, to, reason, remove.clone()).await {
                        retired = Some((Instant::now(), remove));
                    }
                }
            }
        }
    }

    async fn observe(&self, replicas: u32) -> Option<Observed> {
        let load = self.coord.load().await.ok()?;
        let workers = self.coord.workers().await.ok()?;
        let workers = workers
            .into_iter()
            .filter(|w| w.state != "quarantined")
            .map(|w| WorkerLoad { slot: slot_of(&w.id), id: w.id, slots: w.slots, running: w.running })
            .collect();
        Some(Observed { replicas, workers, kinds: load.kinds })
    }

    /// Takes new work away from `remove` and waits (at most the drain
    /// time) until they run nothing. False when the master stops meanwhile.
    async fn drain(&self, remove: &[String], stop: &CancellationToken) -> bool {
        let ids: Vec<WorkerId> = remove.iter().filter_map(|id| WorkerId::parse(id).ok()).collect();
        if self.coord.retire(ids).await.is_err() {
            return false;
        }
        let until = Instant::now() + Duration::from_millis(self.args.autoscale_drain_ms);
        while Instant::now() < until {
            let Ok(workers) = self.coord.workers().await else { return false };
            if !workers.iter().any(|w| remove.contains(&w.id) && w.running > 0) {
                break;
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        true
    }

    /// Sets the service to `to` replicas; whether the Engine API took it.
    async fn scale(&self, docker: &Docker, from: u32, to: u32, reason: String, drained: Vec<String>) -> bool {
        let service = &self.args.autoscale_service;
        let direction = if to > from { "up" } else { "down" };
        let result = docker.scale(service, to).await;
        match &result {
            Ok(()) => {
                tracing::info!(%service, from, to, %reason, drained = ?drained, "autoscaler scaled the worker service {direction}");
                self.metrics.autoscaled(direction);
            }
            Err(e) => {
                tracing::warn!(%service, from, to, %reason, error = %e, "autoscaler could not scale the worker service");
                // Workers drained for a scale-down that did not happen take work again.
                let _ = self.coord.retire(Vec::new()).await;
            }
        }
        let error = result.err().map(|e| e.0);
        let done = error.is_none();
        self.status.record(Made { at: now_ms(), from, to, reason, drained, error });
        done
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: super::AutoscaleArgs,
    }

    fn settings(range: &str) -> Result<Option<(u32, u32)>, String> {
        let cli = Cli::try_parse_from(["x".to_owned(), format!("--autoscale={range}")]).expect("parses");
        cli.args.settings().map(|s| s.map(|s| (s.min, s.max))).map_err(|e| e.to_string())
    }

    #[test]
    fn min_max_is_checked() {
        assert_eq!(settings("2:5"), Ok(Some((2, 5))));
        assert_eq!(settings(" 0 : 3 "), Ok(Some((0, 3))));
        assert_eq!(settings(""), Ok(None), "off");
        for bad in ["5:2", "0:0", "3", "a:b", "-1:4"] {
            let e = settings(bad).expect_err(bad);
            assert!(e.contains("expected MIN:MAX"), "{bad}: {e}");
        }
        assert_eq!(Cli::try_parse_from(["x"]).expect("defaults").args.settings().map(|s| s.is_none()).ok(), Some(true));
    }
}
