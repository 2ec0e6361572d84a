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
//! percentiles, and the master's CPU time per job (from /proc), thread by
//! thread; then the rest of the machine's: the workers', the bench's own
//! and the cores' idle time (on a small machine they share the cores).
//!
//! `FAENA_BENCH_DASHBOARDS=N` keeps N dashboards connected to the master's
//! `/ops` feed throughout (`web/tests/ops-clients.mjs`: the page's own
//! socket.io client, one snapshot a second each), to measure what they cost;
//! `FAENA_BENCH_IDLE_SECS=S` first measures the master's CPU over S idle
//! seconds (the feed's own cost, apart from any job).
//!
//! `FAENA_BENCH_STORE=postgres` puts the job store on a PostgreSQL the
//! bench starts (Debian's server, initdb'd on a free loopback port), with
//! `FAENA_STORE_WRITERS` writers where that is set.
//!
//! `FAENA_BENCH_WORKERS=python` runs the same three phases with two Python
//! workers (`examples/python-worker`, `x.wordcount` on a three-word text) in
//! place of the Rust ones, after a reference run of `noop` on the Rust
//! workers on the same master, and prints the ratios: what a worker in
//! another language costs.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::time::Duration;

use faena_testkit::bench::{cluster, jobs_and_samples, phases, worker_slots};
use faena_testkit::process::cpu_seconds;
use faena_testkit::{Cluster, eventually};

#[tokio::main]
async fn main() {
    let (jobs, samples) = jobs_and_samples();
    let slots = worker_slots();
    let sync = std::env::var("FAENA_STORE_SYNC").unwrap_or_else(|_| "full".into());
    let mut extra = vec![("FAENA_STORE_SYNC".to_owned(), sync.clone())];
    // `FAENA_BENCH_STORE=postgres`: the job store on a PostgreSQL of the
    // bench's own (the test harness's: initdb on a free loopback port,
    // fsync and synchronous_commit on).
    let pg =
        (std::env::var("FAENA_BENCH_STORE").as_deref() == Ok("postgres")).then(faena_store::harness::Postgres::start);
    if let Some(pg) = &pg {
        extra.extend(faena_testkit::bench::pg_store_env(pg.url()));
        println!("store: PostgreSQL on 127.0.0.1:{}", pg.port);
    }
    let mut c = cluster(extra).await;
    let pid = c.master().pid();
    println!(
        "faena-bench: {jobs} noop jobs, 2 workers x {slots} slots, store sync={sync}, {} cores",
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

    let python = std::env::var("FAENA_BENCH_WORKERS").is_ok_and(|w| w == "python");
    let rust = phases(&c, pid, "noop", jobs, samples).await;
    if python {
        for w in ["bench-1", "bench-2"] {
            c.worker(w).terminate().await;
        }
        c.workers.clear();
        eventually("the Rust workers gone", || {
            let api = c.api.clone();
            async move { api.workers().await.iter().all(|w| w["state"] != "online").then_some(()) }
        })
        .await;
        c.add_python_worker("bench-py-1", slots, &[]).await;
        c.add_python_worker("bench-py-2", slots, &[]).await;
        println!("faena-bench: the same with 2 Python workers x {slots} slots, x.wordcount");
        let py = phases(&c, pid, "x.wordcount", jobs, samples).await;
        println!(
            "python/rust  batch jobs/s {:.2}x  one-by-one jobs/s {:.2}x  master CPU/job {:.2}x / {:.2}x  low-load p50 {:.2}x",
            py.batch.0 / rust.batch.0,
            py.one_by_one.0 / rust.one_by_one.0,
            py.batch.1 / rust.batch.1,
            py.one_by_one.1 / rust.one_by_one.1,
            py.p50 / rust.p50
        );
    }
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
