//! `faena-retention-bench`: what the store's retention costs, and whether
//! it holds the store's size.
//!
//! `cargo run --release -p faena-testkit --bin faena-retention-bench -- [jobs] [chunk] [keep]`
//!
//! Two masters (embedded broker, durable store, two workers each): one
//! keeps the newest `keep` jobs (`FAENA_RETENTION_JOBS`, default 100,000),
//! the other keeps every job. Each gets `jobs` `noop` jobs (default
//! 5,000,000) in chunks of `chunk` (250,000) submitted in batches of 1,000,
//! the two taking turns chunk by chunk, so both see the same machine.
//! Prints each chunk's jobs/s and both stores' size on disk, then the ratio
//! of the two masters' batch jobs/s and how the kept store's size moved
//! over the second half of the run.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::time::Instant;

use faena_testkit::{Cluster, MasterOpts, eventually};
use serde_json::json;

const BATCH: usize = 1_000;

async fn succeeded(c: &Cluster) -> u64 {
    let text = c.api.text("/metrics").await;
    faena_testkit::sample(&text, "faena_jobs_total{state=\"succeeded\"}").unwrap_or(0.0) as u64
}

fn store_bytes(c: &Cluster) -> u64 {
    let db = c.dir.path().join("data/faena.db");
    [db.clone(), db.with_extension("db-wal")].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

/// Runs one chunk through `c`; its jobs/s.
async fn chunk(c: &Cluster, jobs: usize) -> f64 {
    let base = succeeded(c).await;
    let body: Vec<_> = (0..BATCH).map(|i| json!({"kind": "noop", "params": {"payload": i}})).collect();
    let start = Instant::now();
    for _ in 0..jobs.div_ceil(BATCH) {
        let (status, answer) = c.api.post("/api/jobs/batch", &json!({"jobs": body})).await;
        assert_eq!(status, 202, "{answer}");
    }
    let target = base + (jobs.div_ceil(BATCH) * BATCH) as u64;
    eventually("the chunk's results", || async { (succeeded(c).await >= target).then_some(()) }).await;
    (jobs.div_ceil(BATCH) * BATCH) as f64 / start.elapsed().as_secs_f64()
}

async fn master(dir_note: &str, retention_jobs: Option<u64>) -> Cluster {
    let mut extra = vec![("FAENA_STORE_SYNC".to_owned(), "full".to_owned())];
    match retention_jobs {
        Some(keep) => extra.push(("FAENA_RETENTION_JOBS".to_owned(), keep.to_string())),
        None => extra.push(("FAENA_RETENTION".to_owned(), "off".to_owned())),
    }
    let mut c = Cluster::start(MasterOpts { queue_capacity: 1_000_000, extra, ..MasterOpts::default() }).await;
    for w in ["w1", "w2"] {
        c.add_worker(&format!("{dir_note}-{w}"), 128).await;
    }
    c.wait_workers(2).await;
    c
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let jobs = args.first().copied().unwrap_or(5_000_000);
    let size = args.get(1).copied().unwrap_or(250_000).max(BATCH);
    let keep = args.get(2).copied().unwrap_or(100_000) as u64;
    let kept = master("kept", Some(keep)).await;
    let all = master("all", None).await;
    println!("{jobs} noop jobs each, chunks of {size}; retention keeps {keep}");
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let mut sizes = Vec::new();
    let chunks = jobs.div_ceil(size);
    for n in 0..chunks {
        // Alternate which goes first, so neither always runs on a warmer machine.
        let order: [(&Cluster, bool); 2] =
            if n % 2 == 0 { [(&kept, true), (&all, false)] } else { [(&all, false), (&kept, true)] };
        for (c, retained) in order {
            let rate = chunk(c, size).await;
            if retained { with.push(rate) } else { without.push(rate) }
        }
        sizes.push(store_bytes(&kept));
        println!(
            "chunk {:>3}/{chunks}  retention {:>8.0} jobs/s  none {:>8.0} jobs/s  store: retention {:>8.1} MiB  none {:>8.1} MiB",
            n + 1,
            with[n],
            without[n],
            mib(store_bytes(&kept)),
            mib(store_bytes(&all)),
        );
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (w, wo) = (mean(&with), mean(&without));
    let half = sizes.len() / 2;
    let (mid, last) = (sizes.get(half).copied().unwrap_or(0), sizes.last().copied().unwrap_or(0));
    println!("batch jobs/s: retention {w:.0}, none {wo:.0}, ratio {:.3}", w / wo);
    println!(
        "kept store: {:.1} MiB at half-way, {:.1} MiB at the end ({:+.1} %); without retention {:.1} MiB",
        mib(mid),
        mib(last),
        (last as f64 / mid.max(1) as f64 - 1.0) * 100.0,
        mib(store_bytes(&all))
    );
}
