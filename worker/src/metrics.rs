//! Prometheus metrics of a worker, served with `/healthz` on `--metrics-addr`.

use faena_proto::jobs::JobKind;
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
    jobs: Family<Labels, Counter>,
    pub running: Gauge,
    pub duration: Histogram,
    pub result_retries: Counter,
    pub malformed_messages: Counter,
    /// What the worker runs now (its flags, or the live configuration).
    pub slots: Family<Labels, Gauge>,
    pub randomx_threads: Gauge,
    pub config_version: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("faena_worker");
        let jobs = Family::<Labels, Counter>::default();
        registry.register("jobs", "Units finished, by kind and outcome", jobs.clone());
        let running = Gauge::default();
        registry.register("running", "Units running now", running.clone());
        let duration = Histogram::new(exponential_buckets(0.000_05, 2.0, 24));
        registry.register("job_duration_seconds", "Time to run one unit", duration.clone());
        let result_retries = Counter::default();
        registry.register("result_retries", "Result submissions retried (master unreachable)", result_retries.clone());
        let malformed_messages = Counter::default();
        registry.register("malformed_messages", "MQTT messages dropped as malformed", malformed_messages.clone());
        let slots = Family::<Labels, Gauge>::default();
        registry.register("slots", "Units it runs at once, by class (work, ai)", slots.clone());
        let randomx_threads = Gauge::default();
        registry.register("randomx_threads", "Threads a RandomX batch or unit runs on", randomx_threads.clone());
        let config_version = Gauge::default();
        registry.register("config_version", "The live configuration version it runs (0: none)", config_version.clone());
        Self {
            registry,
            jobs,
            running,
            duration,
            result_retries,
            malformed_messages,
            slots,
            randomx_threads,
            config_version,
        }
    }
}

impl Metrics {
    /// `outcome` is one of `succeeded`, `failed`, `cancelled`, `handed_back`.
    pub fn finished(&self, kind: JobKind, outcome: &'static str) {
        self.jobs.get_or_create(&vec![("kind", kind.as_str()), ("outcome", outcome)]).inc();
    }

    /// The settings in force now.
    pub fn settings(&self, (slots, ai_slots): (u32, u32), randomx_threads: usize, config_version: u64) {
        self.slots.get_or_create(&vec![("class", "work")]).set(i64::from(slots));
        self.slots.get_or_create(&vec![("class", "ai")]).set(i64::from(ai_slots));
        self.randomx_threads.set(randomx_threads as i64);
        self.config_version.set(config_version as i64);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
