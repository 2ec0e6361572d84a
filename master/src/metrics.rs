//! Prometheus metrics of the master, served at `/metrics`.

use faena_proto::jobs::{JobState, Priority};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    transitions: Vec<Counter>,
    queue_depth: Vec<Gauge>,
    jobs_current: Family<Labels, Gauge>,
    pub workers: Gauge,
    pub dispatch_latency: Histogram,
    pub redeliveries: Counter,
    pub rejected_callbacks: Counter,
    pub malformed_messages: Counter,
    pub shares: Family<Labels, Counter>,
    /// How long one coordinator tick (lease and worker expiry, placement) takes.
    pub tick: Histogram,
    /// How long workers ran attempts, as they report it.
    pub run_time: Histogram,
    /// Shares on mining sources (workers' and Stratum miners'), by verdict.
    pool_shares: Family<Labels, Counter>,
    blocks: Family<Labels, Counter>,
    upstream: Family<Labels, Counter>,
    /// Open Stratum connections.
    pub stratum_connections: Gauge,
    /// Web sessions the master keeps (chat, key, jobs).
    pub web_sessions: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("faena");
        let transitions_family = Family::<Labels, Counter>::default();
        registry.register("jobs", "Jobs that entered each state", transitions_family.clone());
        let transitions = JobState::ALL
            .iter()
            .map(|s| transitions_family.get_or_create(&vec![("state", s.as_str())]).clone())
            .collect();
        let depth_family = Family::<Labels, Gauge>::default();
        registry.register("queue_depth", "Jobs waiting in the queue, by priority", depth_family.clone());
        let queue_depth =
            Priority::ALL.iter().map(|p| depth_family.get_or_create(&vec![("priority", p.as_str())]).clone()).collect();
        let jobs_current = Family::<Labels, Gauge>::default();
        registry.register("jobs_active", "Jobs currently queued or running", jobs_current.clone());
        let workers = Gauge::default();
        registry.register("workers", "Registered workers", workers.clone());
        let dispatch_latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 20));
        registry.register(
            "dispatch_latency_seconds",
            "Time a job waited in the queue before it was dispatched",
            dispatch_latency.clone(),
        );
        let redeliveries = Counter::default();
        registry.register(
            "redeliveries",
            "Work units put back in the queue after a worker was lost or failed",
            redeliveries.clone(),
        );
        let rejected_callbacks = Counter::default();
        registry.register(
            "rejected_callbacks",
            "gRPC callbacks rejected (stale lease, unknown job, bad input)",
            rejected_callbacks.clone(),
        );
        let malformed_messages = Counter::default();
        registry.register("malformed_messages", "MQTT messages dropped as malformed", malformed_messages.clone());
        let tick = Histogram::new(exponential_buckets(0.000_001, 2.0, 24));
        registry.register(
            "coordinator_tick_seconds",
            "Time one coordinator tick takes (expiry of leases and silent workers, placement)",
            tick.clone(),
        );
        let run_time = Histogram::new(exponential_buckets(0.000_05, 2.0, 24));
        registry.register("run_seconds", "How long workers ran attempts, as they report it", run_time.clone());
        let shares = Family::<Labels, Counter>::default();
        registry.register("shares", "Mining shares the master re-hashed, by verdict", shares.clone());
        let pool_shares = Family::<Labels, Counter>::default();
        registry.register(
            "mining_shares",
            "Shares on mining sources from workers and Stratum miners, by verdict",
            pool_shares.clone(),
        );
        let blocks = Family::<Labels, Counter>::default();
        registry.register("mining_blocks", "Blocks submitted to a node, by whether it accepted them", blocks.clone());
        let upstream = Family::<Labels, Counter>::default();
        registry.register("mining_upstream_shares", "Shares sent to a pool, by its verdict", upstream.clone());
        let stratum_connections = Gauge::default();
        registry.register("stratum_connections", "Open Stratum connections", stratum_connections.clone());
        let web_sessions = Gauge::default();
        registry.register("web_sessions", "Web sessions kept (chat, key, jobs)", web_sessions.clone());
        Self {
            registry,
            pool_shares,
            blocks,
            upstream,
            stratum_connections,
            web_sessions,
            transitions,
            queue_depth,
            jobs_current,
            workers,
            dispatch_latency,
            redeliveries,
            rejected_callbacks,
            malformed_messages,
            shares,
            tick,
            run_time,
        }
    }
}

impl Metrics {
    pub fn entered(&self, state: JobState) {
        if let Some(c) = JobState::ALL.iter().position(|s| *s == state).and_then(|i| self.transitions.get(i)) {
            c.inc();
        }
    }

    pub fn set_gauges(&self, depth: [usize; 3], queued: usize, running: usize, workers: usize) {
        for (g, d) in self.queue_depth.iter().zip(depth) {
            g.set(d as i64);
        }
        self.jobs_current.get_or_create(&vec![("state", "queued")]).set(queued as i64);
        self.jobs_current.get_or_create(&vec![("state", "running")]).set(running as i64);
        self.workers.set(workers as i64);
    }

    /// Counts a verification's verdicts; `unverified` are shares the master
    /// could not check (not the worker's fault, never silently dropped).
    pub fn shares_checked(&self, valid: usize, invalid: usize, unverified: usize) {
        self.shares.get_or_create(&vec![("verdict", "valid")]).inc_by(valid as u64);
        self.shares.get_or_create(&vec![("verdict", "invalid")]).inc_by(invalid as u64);
        self.shares.get_or_create(&vec![("verdict", "unverified")]).inc_by(unverified as u64);
    }

    /// `n` shares on a mining source: `valid`, `invalid`, `stale`, or `over_budget`.
    pub fn pool_shares(&self, verdict: &'static str, n: u64) {
        self.pool_shares.get_or_create(&vec![("verdict", verdict)]).inc_by(n);
    }

    pub fn block(&self, accepted: bool) {
        self.blocks.get_or_create(&vec![("accepted", if accepted { "true" } else { "false" })]).inc();
    }

    pub fn upstream(&self, accepted: bool) {
        self.upstream.get_or_create(&vec![("verdict", if accepted { "accepted" } else { "rejected" })]).inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
