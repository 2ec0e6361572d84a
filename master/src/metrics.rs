//! Prometheus metrics of the master, served at `/metrics`.

use faena_proto::jobs::{JobState, Priority};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

mod groups;

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
    /// The job store's size on disk (database and write-ahead log).
    pub store_bytes: Gauge,
    /// Jobs the retention deleted.
    pub pruned: Counter,
    /// How long workers ran attempts, as they report it.
    pub run_time: Histogram,
    /// Shares on mining sources (workers' and Stratum miners'), by verdict.
    pool_shares: Family<Labels, Counter>,
    blocks: Family<Labels, Counter>,
    upstream: Family<Labels, Counter>,
    /// Open Stratum connections.
    stratum_connections: Gauge,
    /// Stratum connections refused, and addresses banned, by reason.
    stratum_refused: Family<Labels, Counter>,
    /// Standby masters' feeds of this leader's pool: opened, and open now.
    pool_feeds: Counter,
    pool_followers: Gauge,
    /// Live source keys in the verifier, by what their shares are hashed with.
    verifier_keys: Family<Labels, Gauge>,
    /// Web sessions the master keeps (chat, key, jobs).
    pub web_sessions: Gauge,
    /// Output tokens of answered AI queries, by provider.
    ai_tokens: Family<Labels, Counter>,
    /// A provider that could not answer (before a retry or a hand-over), by provider.
    ai_errors: Family<Labels, Counter>,
    /// OpenAI-API requests by how they were answered (`ok` or the error's code).
    openai_requests: Family<Labels, Counter>,
    /// Registered workers by availability.
    workers_state: Family<Labels, Gauge>,
    /// How long the longest-waiting queued job of each kind has waited.
    oldest_wait: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// 1 while the store commits, the broker is connected, the master accepts jobs.
    store_healthy: Gauge,
    broker_connected: Gauge,
    /// 1 for a mining source in error, 0 otherwise, by source id.
    source_error: Family<Vec<(&'static str, String)>, Gauge>,
    /// Each group's jobs, by state (queued, running).
    group_jobs: std::sync::Arc<groups::GroupJobs>,
    /// The autoscaler's decisions carried out, by direction, and the replicas it last read.
    autoscale: Family<Labels, Counter>,
    pub autoscale_replicas: Gauge,
    /// When the autoscaler (its own service) last reported, in UNIX seconds; 0 before.
    pub autoscaler_reported: Gauge,
    /// Queue waits and run times of the last seconds, for the dashboard's percentiles.
    pub recent_wait: Window,
    pub recent_run: Window,
}

/// The observations of the last [`Window::SPAN`] (at most [`Window::CAP`]
/// of them, the newest): percentiles over a moving window, which a
/// cumulative histogram cannot give.
#[derive(Debug, Default)]
pub struct Window {
    seen: parking_lot::Mutex<std::collections::VecDeque<(std::time::Instant, f64)>>,
}

/// Percentiles of a [`Window`], in seconds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub n: usize,
}

impl Window {
    pub const SPAN: std::time::Duration = std::time::Duration::from_secs(10);
    pub const CAP: usize = 4096;

    pub fn observe(&self, at: std::time::Instant, secs: f64) {
        let mut seen = self.seen.lock();
        if seen.len() == Self::CAP {
            seen.pop_front();
        }
        seen.push_back((at, secs));
    }

    /// Percentiles of what was observed since `now - SPAN`; None if nothing was.
    pub fn percentiles(&self, now: std::time::Instant) -> Option<Percentiles> {
        let mut values: Vec<f64> = {
            let mut seen = self.seen.lock();
            while seen.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > Self::SPAN) {
                seen.pop_front();
            }
            seen.iter().map(|(_, v)| *v).collect()
        };
        if values.is_empty() {
            return None;
        }
        values.sort_unstable_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Some(Percentiles { p50: at(0.5), p95: at(0.95), p99: at(0.99), n: values.len() })
    }
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
        registry.register(
            "jobs_active",
            "Jobs not yet ended, by state (queued, running, scheduled, waiting)",
            jobs_current.clone(),
        );
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
        let store_bytes = Gauge::default();
        registry.register(
            "store_bytes",
            "The job store's size on disk (database and write-ahead log)",
            store_bytes.clone(),
        );
        let pruned = Counter::default();
        registry.register("store_pruned_jobs", "Finished jobs deleted by the retention", pruned.clone());
        let stratum_connections = Gauge::default();
        registry.register("stratum_connections", "Open Stratum connections", stratum_connections.clone());
        let stratum_refused = Family::<Labels, Counter>::default();
        registry.register(
            "stratum_refused",
            "Stratum connections refused and addresses banned, by reason",
            stratum_refused.clone(),
        );
        let pool_feeds = Counter::default();
        registry.register("pool_feeds", "Feeds of this leader's pool opened by standby masters", pool_feeds.clone());
        let pool_followers = Gauge::default();
        registry.register("pool_followers", "Standby masters following this leader's pool", pool_followers.clone());
        let verifier_keys = Family::<Labels, Gauge>::default();
        registry.register(
            "verifier_keys",
            "Live mining keys in the share verifier, by what their shares are hashed with (fast, light, none)",
            verifier_keys.clone(),
        );
        let web_sessions = Gauge::default();
        registry.register("web_sessions", "Web sessions kept (chat, key, jobs)", web_sessions.clone());
        let ai_tokens = Family::<Labels, Counter>::default();
        registry.register("ai_tokens", "Output tokens of answered AI queries, by provider", ai_tokens.clone());
        let ai_errors = Family::<Labels, Counter>::default();
        registry.register(
            "ai_provider_errors",
            "Times a provider could not answer (before a retry or a hand-over), by provider",
            ai_errors.clone(),
        );
        let openai_requests = Family::<Labels, Counter>::default();
        registry.register(
            "openai_requests",
            "Requests to /v1/chat/completions by how they were answered: ok, or the error's code",
            openai_requests.clone(),
        );
        let workers_state = Family::<Labels, Gauge>::default();
        registry.register("workers_state", "Registered workers by state", workers_state.clone());
        let oldest_wait = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "queue_oldest_wait_seconds",
            "How long the longest-waiting queued job of each kind has waited (mining jobs left out)",
            oldest_wait.clone(),
        );
        let store_healthy = Gauge::default();
        registry.register("store_healthy", "1 while the job store commits", store_healthy.clone());
        // Set once: the runtime the master runs in (none in a unit test).
        let threads = Gauge::<i64>::default();
        registry.register(
            "master_threads",
            "Threads the master's async work runs on (FAENA_MASTER_THREADS)",
            threads.clone(),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            threads.set(runtime.metrics().num_workers() as i64);
        }
        let broker_connected = Gauge::default();
        registry.register(
            "broker_connected",
            "1 while the master is connected to the broker",
            broker_connected.clone(),
        );
        let group_jobs = std::sync::Arc::new(groups::GroupJobs::default());
        registry.register_collector(Box::new(group_jobs.clone()));
        let source_error = Family::<Vec<(&'static str, String)>, Gauge>::default();
        registry.register("mining_source_error", "1 for a mining source in error, by source", source_error.clone());
        let autoscale = Family::<Labels, Counter>::default();
        registry.register(
            "autoscale_decisions",
            "Times the autoscaler scaled the worker service, by direction",
            autoscale.clone(),
        );
        let autoscaler_reported = Gauge::default();
        registry.register(
            "autoscaler_report_timestamp_seconds",
            "When faena-autoscaler last reported to this master (UNIX seconds; 0: never)",
            autoscaler_reported.clone(),
        );
        let autoscale_replicas = Gauge::default();
        registry.register(
            "autoscale_replicas",
            "The worker service's replicas as the autoscaler last read them",
            autoscale_replicas.clone(),
        );
        Self {
            autoscale,
            autoscale_replicas,
            autoscaler_reported,
            workers_state,
            oldest_wait,
            store_healthy,
            broker_connected,
            source_error,
            group_jobs,
            ai_tokens,
            ai_errors,
            openai_requests,
            recent_wait: Window::default(),
            recent_run: Window::default(),
            registry,
            pool_shares,
            blocks,
            upstream,
            store_bytes,
            pruned,
            stratum_connections,
            stratum_refused,
            pool_feeds,
            pool_followers,
            verifier_keys,
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

    /// Workers per state, and how long each kind's longest-waiting job has waited.
    pub fn set_load(&self, states: &[(&'static str, usize)], load: &crate::engine::Load) {
        for (state, n) in states {
            self.workers_state.get_or_create(&vec![("state", *state)]).set(*n as i64);
        }
        self.jobs_current.get_or_create(&vec![("state", "scheduled")]).set(load.scheduled as i64);
        self.jobs_current.get_or_create(&vec![("state", "waiting")]).set(load.waiting as i64);
        self.oldest_wait.clear();
        for k in &load.kinds {
            self.oldest_wait.get_or_create(&vec![("kind", k.kind.as_str())]).set(k.oldest_wait_ms as f64 / 1000.0);
        }
    }

    /// Each group's queued and running jobs: `(group, queued, running)`
    /// (groups left out are gone from the next scrape).
    pub fn set_groups<'a>(&self, counts: impl IntoIterator<Item = (&'a str, usize, u32)>) {
        self.group_jobs.set(counts);
    }

    /// The autoscaler scaled `direction` (`up` or `down`) `n` more times.
    pub fn autoscaled(&self, direction: &'static str, n: u64) {
        self.autoscale.get_or_create(&vec![("direction", direction)]).inc_by(n);
    }

    pub fn set_health(&self, store: bool, broker: bool) {
        self.store_healthy.set(i64::from(store));
        self.broker_connected.set(i64::from(broker));
    }

    /// Each mining source, and whether it is in error.
    pub fn set_sources(&self, sources: impl IntoIterator<Item = (String, bool)>) {
        self.source_error.clear();
        for (id, error) in sources {
            self.source_error.get_or_create(&vec![("source", id)]).set(i64::from(error));
        }
    }

    /// Counts a verification's verdicts; `unverified` are shares the master
    /// could not check (not the worker's fault, never silently dropped).
    pub fn shares_checked(&self, valid: usize, invalid: usize, unverified: usize) {
        self.shares.get_or_create(&vec![("verdict", "valid")]).inc_by(valid as u64);
        self.shares.get_or_create(&vec![("verdict", "invalid")]).inc_by(invalid as u64);
        self.shares.get_or_create(&vec![("verdict", "unverified")]).inc_by(unverified as u64);
    }

    /// A job waited `secs` in the queue before it was dispatched.
    pub fn waited(&self, secs: f64) {
        self.dispatch_latency.observe(secs);
        self.recent_wait.observe(std::time::Instant::now(), secs);
    }

    /// A worker ran an attempt for `secs`.
    pub fn ran(&self, secs: f64) {
        self.run_time.observe(secs);
        self.recent_run.observe(std::time::Instant::now(), secs);
    }

    pub fn ai_tokens(&self, provider: faena_proto::ai::Provider, n: u64) {
        self.ai_tokens.get_or_create(&vec![("provider", provider.as_str())]).inc_by(n);
    }

    pub fn ai_error(&self, provider: faena_proto::ai::Provider) {
        self.ai_errors.get_or_create(&vec![("provider", provider.as_str())]).inc();
    }

    /// An OpenAI-API request answered `code` (`ok`, or an error's code).
    pub fn openai_request(&self, code: &'static str) {
        self.openai_requests.get_or_create(&vec![("answer", code)]).inc();
    }

    /// The counters the dashboard turns into rates, as they stand.
    pub fn totals(&self) -> serde_json::Value {
        let jobs: serde_json::Map<String, serde_json::Value> =
            JobState::ALL.iter().zip(&self.transitions).map(|(s, c)| (s.as_str().into(), c.get().into())).collect();
        let per = |f: &Family<Labels, Counter>, label: &'static str, values: &[&'static str]| {
            values
                .iter()
                .map(|v| ((*v).to_owned(), serde_json::Value::from(f.get_or_create(&vec![(label, *v)]).get())))
                .collect::<serde_json::Map<_, _>>()
        };
        let providers = faena_proto::ai::Provider::ALL.map(|p| p.as_str());
        serde_json::json!({
            "jobs": jobs,
            "redeliveries": self.redeliveries.get(),
            "shares": per(&self.shares, "verdict", &["valid", "invalid", "unverified"]),
            "ai_tokens": per(&self.ai_tokens, "provider", &providers),
            "ai_errors": per(&self.ai_errors, "provider", &providers),
        })
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The pool's counts land in the master's registry.
impl crate::pool::Meter for Metrics {
    fn shares_checked(&self, valid: usize, invalid: usize, unverified: usize) {
        Metrics::shares_checked(self, valid, invalid, unverified);
    }

    fn pool_shares(&self, verdict: &'static str, n: u64) {
        self.pool_shares.get_or_create(&vec![("verdict", verdict)]).inc_by(n);
    }

    fn stratum_refused(&self, reason: &'static str) {
        self.stratum_refused.get_or_create(&vec![("reason", reason)]).inc();
    }

    fn stratum_connection(&self, open: bool) {
        if open {
            self.stratum_connections.inc();
        } else {
            self.stratum_connections.dec();
        }
    }

    fn verifier_keys(&self, keys: &[crate::verify::KeyState]) {
        for hashing in ["fast", "light", "none"] {
            let n = keys.iter().filter(|k| k.hashing == hashing).count();
            self.verifier_keys.get_or_create(&vec![("hashing", hashing)]).set(n as i64);
        }
    }

    fn block(&self, accepted: bool) {
        self.blocks.get_or_create(&vec![("accepted", if accepted { "true" } else { "false" })]).inc();
    }

    fn upstream(&self, accepted: bool) {
        self.upstream.get_or_create(&vec![("verdict", if accepted { "accepted" } else { "rejected" })]).inc();
    }

    fn follower_feed(&self, opened: bool, following: usize) {
        if opened {
            self.pool_feeds.inc();
        }
        self.pool_followers.set(i64::try_from(following).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn a_window_gives_percentiles_of_its_last_seconds_only() {
        let w = Window::default();
        let t0 = Instant::now();
        assert_eq!(w.percentiles(t0), None);
        w.observe(t0, 100.0);
        for i in 1..=100 {
            w.observe(t0 + Window::SPAN, f64::from(i));
        }
        let p = w.percentiles(t0 + Window::SPAN + Duration::from_millis(1)).expect("some");
        assert_eq!((p.n, p.p50, p.p95, p.p99), (100, 51.0, 95.0, 99.0), "the old 100.0 is gone");
        for i in 0..Window::CAP {
            w.observe(t0 + Window::SPAN, i as f64);
        }
        assert_eq!(w.percentiles(t0 + Window::SPAN).map(|p| p.n), Some(Window::CAP), "bounded");
    }

    #[test]
    fn totals_name_every_counter_the_dashboard_reads() {
        let m = Metrics::default();
        m.entered(JobState::Succeeded);
        m.ai_tokens(faena_proto::ai::Provider::Local, 7);
        m.ai_error(faena_proto::ai::Provider::Gemini);
        let t = m.totals();
        assert_eq!(t["jobs"]["succeeded"], 1);
        assert_eq!(t["ai_tokens"]["local"], 7);
        assert_eq!(t["ai_errors"]["gemini"], 1);
        assert_eq!(t["shares"]["invalid"], 0);
        assert!(m.render().contains("faena_ai_tokens_total{provider=\"local\"} 7"));
    }
}

#[cfg(test)]
mod monitoring_tests {
    use super::Metrics;

    /// The `faena_*` metric names (as registered: no `_total`, `_bucket`,
    /// `_sum`, `_count`) that `text` refers to, the workers' left out.
    pub(crate) fn referenced(text: &str) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        let bytes = text.as_bytes();
        let mut at = 0;
        while let Some(found) = text[at..].find("faena_") {
            let start = at + found;
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
                end += 1;
            }
            let mut name = &text[start..end];
            for suffix in ["_total", "_bucket", "_sum", "_count"] {
                name = name.strip_suffix(suffix).unwrap_or(name);
            }
            if !name.starts_with("faena_worker_") && !name.ends_with('_') {
                names.insert(name.to_owned());
            }
            at = end.max(start + 1);
        }
        names
    }

    #[test]
    fn the_alerts_and_the_grafana_board_use_only_metrics_the_master_exports() {
        // A labelled family is exported once it has a sample: give each one.
        let m = Metrics::default();
        m.shares_checked(1, 1, 0);
        crate::pool::Meter::pool_shares(&m, "invalid", 1);
        crate::pool::Meter::block(&m, true);
        crate::pool::Meter::upstream(&m, true);
        m.ai_tokens(faena_proto::ai::Provider::Local, 1);
        m.ai_error(faena_proto::ai::Provider::Local);
        m.set_sources([("solo".to_owned(), true)]);
        let kinds =
            vec![crate::engine::KindLoad { kind: faena_proto::jobs::JobKind::Noop, queued: 1, oldest_wait_ms: 1 }];
        m.set_load(&[("online", 1)], &crate::engine::Load { kinds, ..Default::default() });
        m.set_gauges([0; 3], 0, 0, 0);
        let exported: Vec<String> = m
            .render()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE ").and_then(|t| t.split(' ').next()).map(str::to_owned))
            .collect();
        for (file, text) in [
            ("alerts.yml", include_str!("../../monitoring/alerts.yml")),
            ("alerts.test.yml", include_str!("../../monitoring/alerts.test.yml")),
            ("grafana-dashboard.json", include_str!("../../monitoring/grafana-dashboard.json")),
        ] {
            let used = referenced(text);
            assert!(!used.is_empty(), "{file}");
            for name in used {
                assert!(exported.contains(&name), "{file} uses {name}, which the master does not export");
            }
        }
    }
}
