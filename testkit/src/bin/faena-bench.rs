//! `faena-bench`: end-to-end throughput and latency of `noop` jobs through a
//! real master (embedded broker, durable store) and two real workers.
//!
//! `cargo run --release -p faena-testkit --bin faena-bench -- [jobs] [low-load samples]`
//!
//! 1. Batch: `jobs` jobs in `POST /api/jobs/batch` calls of 1,000, then every result.
//! 2. One by one: `jobs` single `POST /api/jobs` from 64 concurrent clients.
//! 3. Low load: one job at a time; submit → final event, as a client sees it.
//!
//! Prints jobs/s (submit of the first job to the last result), latency
//! percentiles, and the master's CPU time per job (from /proc).
//!
//! `FAENA_BENCH_DASHBOARDS=N` keeps N dashboards connected to the master's
//! `/ops` feed throughout (`web/tests/ops-clients.mjs`: the page's own
//! socket.io client, one snapshot a second each), to measure what they cost;
//! `FAENA_BENCH_IDLE_SECS=S` first measures the master's CPU over S idle
//! seconds (the feed's own cost, apart from any job).
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use faena_testkit::process::cpu_seconds;
use faena_testkit::{Cluster, MasterOpts, eventually};
use futures::StreamExt;
use serde_json::json;

const BATCH: usize = 1_000;
const CLIENTS: usize = 64;
const WORKER_SLOTS: u32 = 128;

async fn succeeded(c: &Cluster) -> u64 {
    let text = c.api.text("/metrics").await;
    faena_testkit::sample(&text, "faena_jobs_total{state=\"succeeded\"}").unwrap_or(0.0) as u64
}

async fn wait_succeeded(c: &Cluster, target: u64) {
    eventually("all results", || async { (succeeded(c).await >= target).then_some(()) }).await;
}

fn report(name: &str, jobs: usize, elapsed: Duration, cpu: f64) {
    println!(
        "{name:<12} {jobs:>7} jobs  {:>9.0} jobs/s  {:>6.2} s  master CPU {:>6.1} µs/job",
        jobs as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64(),
        cpu * 1e6 / jobs as f64
    );
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let jobs = args.first().copied().unwrap_or(20_000);
    let samples = args.get(1).copied().unwrap_or(2_000);
    let sync = std::env::var("FAENA_STORE_SYNC").unwrap_or_else(|_| "full".into());
    let opts = MasterOpts {
        extra: vec![("FAENA_STORE_SYNC".into(), sync.clone())],
        heartbeat_ms: 2000,
        ..MasterOpts::default()
    };
    let mut c = Cluster::start(opts).await;
    c.add_worker("bench-1", WORKER_SLOTS).await;
    c.add_worker("bench-2", WORKER_SLOTS).await;
    c.wait_workers(2).await;
    let pid = c.master().pid();
    println!(
        "faena-bench: {jobs} noop jobs, 2 workers x {WORKER_SLOTS} slots, store sync={sync}, {} cores",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );

    let dashboards: usize = std::env::var("FAENA_BENCH_DASHBOARDS").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut watching = match dashboards {
        0 => None,
        n => Some(Dashboards::open(&c, n).await),
    };
    println!("faena-bench: {dashboards} dashboards connected to /ops");

    let idle: u64 = std::env::var("FAENA_BENCH_IDLE_SECS").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
    if idle > 0 {
        let cpu0 = cpu_seconds(pid);
        tokio::time::sleep(Duration::from_secs(idle)).await;
        let per_s = (cpu_seconds(pid) - cpu0) / idle as f64;
        println!("idle         {idle:>7} s     master CPU {:>6.2} ms/s", per_s * 1e3);
    }

    // Warm-up: connections, caches, page faults.
    let warm: Vec<_> = (0..2_000).map(|_| json!({"kind": "noop"})).collect();
    for chunk in warm.chunks(BATCH) {
        c.api.post("/api/jobs/batch", &json!({"jobs": chunk})).await;
    }
    wait_succeeded(&c, 2_000).await;

    // 1. Batch submission.
    let base = succeeded(&c).await;
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let body: Vec<_> = (0..BATCH).map(|i| json!({"kind": "noop", "params": {"payload": i}})).collect();
    for _ in 0..jobs.div_ceil(BATCH) {
        let (status, answer) = c.api.post("/api/jobs/batch", &json!({"jobs": body})).await;
        assert_eq!(status, 202, "{answer}");
    }
    let submitted = jobs.div_ceil(BATCH) * BATCH;
    wait_succeeded(&c, base + submitted as u64).await;
    report("batch", submitted, start.elapsed(), cpu_seconds(pid) - cpu0);

    // 2. One by one, from concurrent clients.
    let base = succeeded(&c).await;
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let api = c.api.clone();
    futures::stream::iter(0..jobs)
        .for_each_concurrent(CLIENTS, |i| {
            let api = api.clone();
            async move {
                let (status, _) = api.submit("noop", json!({"payload": i}), None).await;
                assert_eq!(status, 202);
            }
        })
        .await;
    wait_succeeded(&c, base + jobs as u64).await;
    report("one-by-one", jobs, start.elapsed(), cpu_seconds(pid) - cpu0);

    // 3. Low load: one job at a time.
    let mut latencies = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let id = c.api.submit_ok("noop", json!({}), None).await;
        let mut events = c.api.events(&id).await;
        while let Some((name, _)) = events.next().await {
            if name == "succeeded" {
                break;
            }
        }
        latencies.push(t.elapsed());
    }
    latencies.sort();
    println!(
        "low load     {samples:>7} jobs  submit→result p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    if let Some(d) = watching.take() {
        println!("dashboards   {dashboards} received {} snapshots", d.close().await);
    }
}

/// Dashboards on the `/ops` feed, kept by a node process.
struct Dashboards {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Dashboards {
    async fn open(c: &Cluster, n: usize) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new("node")
            .arg(faena_testkit::repo().join("web/tests/ops-clients.mjs"))
            .arg(format!("http://{}", c.addrs.http))
            .arg(n.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs (scripts/test.sh installs it)");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(90), lines.next_line()).await;
        assert!(matches!(ready, Ok(Ok(Some(ref l))) if l == "READY"), "dashboards did not connect: {ready:?}");
        Self { child, lines }
    }

    /// Closes them; how many snapshots they received in all.
    async fn close(mut self) -> u64 {
        drop(self.child.stdin.take());
        let line = self.lines.next_line().await.ok().flatten().unwrap_or_default();
        let _ = self.child.wait().await;
        line.strip_prefix("snapshots ").and_then(|n| n.parse().ok()).unwrap_or(0)
    }
}
