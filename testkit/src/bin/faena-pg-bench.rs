//! `faena-pg-bench`: Faena's PostgreSQL store beside Graphile Worker on the
//! same PostgreSQL server, and beside Faena's own SQLite store, in one run.
//!
//! `./scripts/bench-postgres.sh [jobs] [low-load samples]` (builds, installs
//! Graphile Worker from npm into `bench/graphile`, runs this).
//!
//! One PostgreSQL (Debian's server, initdb'd on a free loopback port; fsync
//! and `synchronous_commit` on) holds two databases: `graphile`, where
//! Graphile Worker (`bench/graphile/run.mjs`, one worker process, concurrency
//! 24 and 10 by default: `FAENA_BENCH_GRAPHILE_CONCURRENCY=24,10`) adds
//! `jobs` no-op jobs in batches of 1,000 and runs them, then adds `samples`
//! one at a time (add→start); and `faena`, the store of a real master with
//! two workers running `faena-bench`'s phases (batch, one by one, low load
//! submit→result). Then the same master on SQLite. Prints each, and the
//! ratios the store is judged by. `FAENA_STORE_WRITERS=N` gives the master
//! on PostgreSQL N writers. Every job is durable in each: committed
//! before its add/submit returns.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_store::harness::Postgres;
use faena_testkit::bench::{Figures, cluster, jobs_and_samples, phases};

/// What one Graphile Worker run printed.
#[derive(Debug, serde::Deserialize)]
struct Graphile {
    jobs_per_s: f64,
    concurrency: u32,
    add_to_start_ms: Latency,
}

#[derive(Debug, serde::Deserialize)]
struct Latency {
    p50: f64,
    p99: f64,
}

fn graphile(url: &str, jobs: usize, samples: usize, concurrency: u32) -> Graphile {
    let dir = faena_testkit::repo().join("bench/graphile");
    assert!(
        dir.join("node_modules/graphile-worker").exists(),
        "Graphile Worker is not installed: run scripts/bench-postgres.sh (npm ci in bench/graphile)"
    );
    let out = std::process::Command::new("node")
        .arg(dir.join("run.mjs"))
        .args([url, &jobs.to_string(), &samples.to_string(), &concurrency.to_string()])
        .current_dir(&dir)
        .output()
        .expect("node runs");
    assert!(out.status.success(), "Graphile Worker's run failed: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout);
    let g: Graphile = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    println!(
        "graphile     {jobs:>7} jobs  {:>9.0} jobs/s  concurrency {:>3}  add→start p50 {:.2} ms  p99 {:.2} ms",
        g.jobs_per_s, g.concurrency, g.add_to_start_ms.p50, g.add_to_start_ms.p99
    );
    g
}

async fn faena(store_url: Option<String>, jobs: usize, samples: usize) -> Figures {
    let extra = store_url.map(faena_testkit::bench::pg_store_env).unwrap_or_default();
    let mut c = cluster(extra).await;
    let pid = c.master().pid();
    phases(&c, pid, "noop", jobs, samples).await
}

#[tokio::main]
async fn main() {
    let (jobs, samples) = jobs_and_samples();
    let concurrency: Vec<u32> = std::env::var("FAENA_BENCH_GRAPHILE_CONCURRENCY")
        .unwrap_or_else(|_| "24,10".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let pg = Postgres::start();
    pg.sql("CREATE DATABASE graphile");
    println!(
        "faena-pg-bench: {jobs} jobs, {samples} low-load samples, PostgreSQL on 127.0.0.1:{}, {} cores",
        pg.port,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );

    let url = pg.url();
    let graphile_url = format!("{}/graphile", url.rsplit_once('/').map_or(url.as_str(), |(base, _)| base));
    let runs: Vec<Graphile> = concurrency.iter().map(|&c| graphile(&graphile_url, jobs, samples, c)).collect();
    println!("faena on PostgreSQL (the same server):");
    let on_pg = faena(Some(pg.url()), jobs, samples).await;
    println!("faena on SQLite:");
    let on_sqlite = faena(None, jobs, samples).await;

    let best = runs.iter().max_by(|a, b| a.jobs_per_s.total_cmp(&b.jobs_per_s)).expect("a Graphile run");
    let best_p99 = runs.iter().map(|g| g.add_to_start_ms.p99).fold(f64::INFINITY, f64::min);
    println!();
    println!(
        "faena(pg) / graphile (best, concurrency {})   batch jobs/s {:.2}x   one-by-one jobs/s {:.2}x",
        best.concurrency,
        on_pg.batch.0 / best.jobs_per_s,
        on_pg.one_by_one.0 / best.jobs_per_s
    );
    println!(
        "faena(pg) / faena(sqlite)                    batch jobs/s {:.2}x   one-by-one jobs/s {:.2}x",
        on_pg.batch.0 / on_sqlite.batch.0,
        on_pg.one_by_one.0 / on_sqlite.one_by_one.0
    );
    println!(
        "low-load p99: faena(pg) submit→running {:.2} ms, →result {:.2} ms   graphile add→start {:.2} ms (best)   \
         faena(sqlite) {:.2} / {:.2} ms",
        on_pg.running_p99, on_pg.p99, best_p99, on_sqlite.running_p99, on_sqlite.p99
    );
}
