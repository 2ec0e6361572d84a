//! `faena-autoscaler`: scales the worker service on Docker Swarm between
//! MIN and MAX replicas (`FAENA_AUTOSCALE=MIN:MAX`). Swarm has no
//! autoscaler of its own; this one scales on what the master knows — how
//! long jobs wait and how many, per kind — not on CPU.
//!
//! It runs as its own small service, on a manager and published nowhere:
//! the only process with the Docker socket, which it uses for two calls
//! (read the worker service, update its replicas). The master, which faces
//! the internet, has neither root nor the socket; the autoscaler reaches it
//! like any client, through its REST API with the API token.
//!
//! Every `FAENA_AUTOSCALE_EVERY_MS` it reads the service's replica count,
//! the master's load and workers, asks the [`policy`] and carries out its
//! decision: up, by updating the service; down, by first draining the
//! workers on the slots Swarm will remove (no new work; each finishes what
//! it runs, within `FAENA_AUTOSCALE_DRAIN_MS`) and then lowering the count
//! (their SIGTERM drain hands back anything left, which is requeued without
//! costing an attempt). Every decision is logged and reported to the master,
//! which counts it (`faena_autoscale_decisions_total{direction}`) and shows
//! it on the dashboard with its reason.
//!
//! - [`policy`]: when and how far, as a pure function of load and time.
//! - [`docker`]: the Engine API calls.
//! - [`master`]: the master's API calls.

pub mod docker;
pub mod master;
pub mod policy;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use faena_common::args::ConfigError;
use faena_proto::scaling::{AutoscalerView, Decision as Made, MAX_DECISIONS};
use tokio_util::sync::CancellationToken;

use docker::Docker;
use master::Master;
use policy::{Decision, Observed, Policy, Settings, WorkerLoad, slot_of};

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "faena-autoscaler",
    version,
    about = "Scales Faena's Swarm worker service from what waits on the master"
)]
pub struct AutoscaleArgs {
    /// Scale the worker service between MIN and MAX replicas (e.g. 2:10).
    #[arg(long, env = "FAENA_AUTOSCALE")]
    pub autoscale: String,
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
    /// The master's REST API.
    #[arg(long, env = "FAENA_URL", default_value = "http://127.0.0.1:8888")]
    pub url: String,
    /// The master's API token (prefer the file: arguments show in `ps`).
    #[arg(long, env = "FAENA_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    #[arg(long, env = "FAENA_API_TOKEN_FILE")]
    pub api_token_file: Option<PathBuf>,
    /// CA certificate(s) (PEM) trusted for an https:// master; the system's roots when unset.
    #[arg(long, env = "FAENA_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// JSON log lines on stderr.
    #[arg(long, env = "FAENA_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

impl AutoscaleArgs {
    /// The policy's settings.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        let range = self.autoscale.as_str();
        let bad = || ConfigError(format!("FAENA_AUTOSCALE={range:?}: expected MIN:MAX with 0 <= MIN <= MAX, MAX >= 1"));
        let (min, max) = range.split_once(':').ok_or_else(bad)?;
        let (min, max): (u32, u32) = (min.trim().parse().map_err(|_| bad())?, max.trim().parse().map_err(|_| bad())?);
        if min > max || max == 0 {
            return Err(bad());
        }
        Ok(Settings {
            min,
            max,
            wait: Duration::from_millis(self.autoscale_wait_ms),
            cooldown: Duration::from_secs(self.autoscale_cooldown_secs),
            settle: Duration::from_secs(self.autoscale_settle_secs),
        })
    }

    /// The client of the master's API.
    pub fn master(&self) -> Result<Master, ConfigError> {
        let token = faena_common::secrets::resolve_optional(
            "FAENA_API_TOKEN",
            self.api_token.as_deref(),
            self.api_token_file.as_deref(),
        )
        .map_err(|e| ConfigError(e.to_string()))?;
        let tls = faena_common::tls::TlsArgs { tls_ca_file: self.tls_ca_file.clone(), ..Default::default() };
        Master::new(&self.url, token, &tls).map_err(|e| ConfigError(e.to_string()))
    }
}

/// The autoscaler: runs until `stop`.
#[derive(Debug)]
pub struct Autoscaler {
    args: AutoscaleArgs,
    policy: Policy,
    master: Master,
    docker: Docker,
    view: AutoscalerView,
}

impl Autoscaler {
    pub fn new(args: AutoscaleArgs) -> Result<Self, ConfigError> {
        let settings = args.settings()?;
        let master = args.master()?;
        let docker = Docker::new(&args.docker_socket).map_err(|e| ConfigError(e.to_string()))?;
        let view = AutoscalerView {
            service: args.autoscale_service.clone(),
            min: settings.min,
            max: settings.max,
            replicas: None,
            scaled_up: 0,
            scaled_down: 0,
            decisions: Vec::new(),
            error: None,
        };
        Ok(Self { args, policy: Policy::new(settings), master, docker, view })
    }

    pub async fn run(mut self, stop: CancellationToken) {
        let service = self.args.autoscale_service.clone();
        let (min, max) = (self.policy.settings.min, self.policy.settings.max);
        tracing::info!(%service, min, max, master = %self.args.url, "autoscaling the worker service");
        // Workers drained for the last scale-down, until they are gone.
        let mut retired: Option<(Instant, Vec<String>)> = None;
        let mut announced = false;
        let mut tick = tokio::time::interval(Duration::from_millis(self.args.autoscale_every_ms.max(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let step = self.step(&mut retired, &stop).await;
            if step.is_ok() && !announced {
                // Ready once it has seen both the service and the master.
                announced = true;
                let ready = serde_json::json!({"service": service, "replicas": self.view.replicas});
                faena_common::lifecycle::announce_ready(&ready);
            }
            self.failed(step.err());
            if let Err(e) = self.master.report(&self.view).await {
                tracing::debug!(error = %e, "could not report to the master");
            }
        }
    }

    /// Records (and logs once) what went wrong last, or that nothing did.
    fn failed(&mut self, error: Option<String>) {
        if error.is_some() && self.view.error != error {
            tracing::warn!(error = error.as_deref().unwrap_or_default(), "autoscaler cannot look");
        }
        self.view.error = error;
    }

    /// One look, and the decision carried out.
    async fn step(
        &mut self,
        retired: &mut Option<(Instant, Vec<String>)>,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let service = self.args.autoscale_service.clone();
        let replicas = self.docker.replicas(&service).await.map_err(|e| e.to_string())?;
        self.view.replicas = Some(replicas);
        let observed = self.observe(replicas).await.map_err(|e| e.to_string())?;
        if let Some((at, ids)) = retired.as_ref() {
            let left: Vec<&String> = ids.iter().filter(|id| observed.workers.iter().any(|w| &w.id == *id)).collect();
            // Swarm balances tasks across nodes before it looks at slot
            // numbers: on a multi-node swarm it may stop other tasks than
            // the drained ones. Those stay: they take work again.
            let overdue = at.elapsed() > 2 * self.drain_time();
            if left.is_empty() || overdue {
                if !left.is_empty() {
                    tracing::warn!(workers = ?left, "Swarm kept workers the autoscaler drained; they take work again");
                }
                self.master.drain(Vec::new(), self.drain_time()).await.map_err(|e| e.to_string())?;
                *retired = None;
            }
        }
        match self.policy.decide(Instant::now(), &observed) {
            Decision::Hold => {}
            Decision::Up { to, reason } => {
                self.scale(replicas, to, reason, Vec::new()).await;
            }
            Decision::Down { to, reason, remove } => {
                self.drain(&remove, stop).await.map_err(|e| e.to_string())?;
                if stop.is_cancelled() {
                    return Ok(());
                }
                if self.scale(replicas, to, reason, remove.clone()).await {
                    *retired = Some((Instant::now(), remove));
                }
            }
        }
        Ok(())
    }

    fn drain_time(&self) -> Duration {
        Duration::from_millis(self.args.autoscale_drain_ms)
    }

    async fn observe(&self, replicas: u32) -> Result<Observed, master::MasterError> {
        let load = self.master.load().await?;
        let workers = self.master.workers().await?;
        let workers = workers
            .into_iter()
            .filter(|w| w.state != "quarantined")
            .map(|w| WorkerLoad { slot: slot_of(&w.id), id: w.id, slots: w.slots, running: w.running })
            .collect();
        Ok(Observed { replicas, workers, kinds: load.kinds })
    }

    /// Takes new work away from `remove` and waits (at most the drain
    /// time) until they run nothing, or the autoscaler stops. The master
    /// gives them work back by itself if nothing follows the drain.
    async fn drain(&self, remove: &[String], stop: &CancellationToken) -> Result<(), master::MasterError> {
        // Held long enough for the scale-down and Swarm's removal after it.
        self.master.drain(remove.to_vec(), 3 * self.drain_time()).await?;
        let until = Instant::now() + self.drain_time();
        while Instant::now() < until {
            let workers = self.master.workers().await?;
            if !workers.iter().any(|w| remove.contains(&w.id) && w.running > 0) {
                break;
            }
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        Ok(())
    }

    /// Sets the service to `to` replicas; whether the Engine API took it.
    async fn scale(&mut self, from: u32, to: u32, reason: String, drained: Vec<String>) -> bool {
        let service = self.args.autoscale_service.clone();
        let direction = if to > from { "up" } else { "down" };
        let result = self.docker.scale(&service, to).await;
        match &result {
            Ok(()) => {
                tracing::info!(%service, from, to, %reason, drained = ?drained, "autoscaler scaled the worker service {direction}");
            }
            Err(e) => {
                tracing::warn!(%service, from, to, %reason, error = %e, "autoscaler could not scale the worker service");
                // Workers drained for a scale-down that did not happen take work again.
                let _ = self.master.drain(Vec::new(), self.drain_time()).await;
            }
        }
        let error = result.err().map(|e| e.0);
        let done = error.is_none();
        self.record(Made { at: faena_proto::mqtt::now_ms(), from, to, reason, drained, error });
        done
    }

    fn record(&mut self, made: Made) {
        let v = &mut self.view;
        if made.error.is_none() {
            if made.to > made.from {
                v.scaled_up += 1;
            } else {
                v.scaled_down += 1;
            }
            v.replicas = Some(made.to);
        }
        v.decisions.push(made);
        if v.decisions.len() > MAX_DECISIONS {
            v.decisions.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::AutoscaleArgs;

    fn settings(range: &str) -> Result<(u32, u32), String> {
        let args = AutoscaleArgs::try_parse_from(["x".to_owned(), format!("--autoscale={range}")]).expect("parses");
        args.settings().map(|s| (s.min, s.max)).map_err(|e| e.to_string())
    }

    #[test]
    fn min_max_is_checked() {
        assert_eq!(settings("2:5"), Ok((2, 5)));
        assert_eq!(settings(" 0 : 3 "), Ok((0, 3)));
        for bad in ["", "5:2", "0:0", "3", "a:b", "-1:4"] {
            let e = settings(bad).expect_err(bad);
            assert!(e.contains("expected MIN:MAX"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_master_url_is_checked() {
        let args = |url: &str| AutoscaleArgs::try_parse_from(["x", "--autoscale=1:2", "--url", url]).expect("parses");
        assert!(args("https://master:8888").master().is_ok());
        let e = args("master:8888").master().expect_err("no scheme");
        assert!(e.to_string().contains("expected http:// or https://"), "{e}");
    }
}

#[cfg(test)]
mod stack_tests {
    /// Each service's block of a stack file, by name (two-space indented keys under `services:`).
    fn services(stack: &str) -> Vec<(String, String)> {
        let body = stack.split_once("\nservices:\n").map_or("", |(_, b)| b);
        let mut out: Vec<(String, String)> = Vec::new();
        for line in body.lines() {
            if !line.starts_with(' ') && !line.trim().is_empty() {
                break;
            }
            match line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')) {
                Some(name) if !name.starts_with(' ') => out.push((name.to_owned(), String::new())),
                _ => {
                    if let Some((_, block)) = out.last_mut() {
                        block.push_str(line);
                        block.push('\n');
                    }
                }
            }
        }
        out
    }

    #[test]
    fn only_the_unpublished_autoscaler_gets_the_docker_socket_and_root() {
        for (file, stack) in [
            ("stack.yml", include_str!("../../stack.yml")),
            ("stack.autoscale.yml", include_str!("../../stack.autoscale.yml")),
            ("stack.monitoring.yml", include_str!("../../stack.monitoring.yml")),
            ("stack.test.yml", include_str!("../../stack.test.yml")),
        ] {
            let services = services(stack);
            assert!(!services.is_empty(), "{file}");
            for (name, block) in &services {
                let socket = block.contains("docker.sock");
                let root = block.contains("user: root");
                if name == "autoscaler" {
                    assert!(socket && !block.contains("ports:"), "{file}: the autoscaler has the socket, no ports");
                } else {
                    assert!(!(socket || name == "master" && root), "{file}: {name} has the socket or root");
                }
            }
        }
        let overlay = services(include_str!("../../stack.autoscale.yml"));
        assert_eq!(overlay.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["autoscaler"]);
    }
}
