//! `faena-config-bench`: how long a live configuration change takes to
//! reach every worker of a cluster of real `faena-worker` processes.
//!
//! `cargo build --release --bins && ./target/release/faena-config-bench [workers] [changes]`
//! (defaults: 100 workers, 20 changes).
//!
//! Each change is a `PUT /api/config` of `worker.slots` for every worker.
//! Per change it measures, from the moment the PUT is sent:
//! - applied: until each worker's status on the broker shows the new
//!   version (the worker checked the signature and resized its slots);
//! - reported: until `GET /api/config` shows every worker running it (the
//!   master took each worker's report: the next dispatch counts the slots).
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use faena_proto::mqtt::{Payload, WorkerStatus};
use faena_testkit::{Cluster, Listener, MasterOpts, eventually};
use serde_json::json;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let workers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let changes: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let mut c = Cluster::start(MasterOpts { heartbeat_ms: 2_000, ..Default::default() }).await;
    let started = Instant::now();
    for i in 0..workers {
        c.add_worker_with(&format!("cw{i:03}"), 1, &[("FAENA_RANDOMX_THREADS", "1")]).await;
    }
    c.wait_workers(workers).await;
    println!("{workers} workers registered in {:.1} s", started.elapsed().as_secs_f64());
    let mut statuses = Listener::start(&c.addrs.mqtt, "config-bench", "faena/workers/+/status").await;

    let (mut applied, mut reported) = (Vec::new(), Vec::new());
    for version in 1..=changes {
        while statuses.messages.try_recv().is_ok() {}
        let sent = Instant::now();
        let body = json!({"settings": {"worker.slots": 1 + version % 4}});
        let (status, view) = c.api.put("/api/config", &body).await;
        assert!(status.is_success() && view["version"] == version, "{status} {view}");
        let mut seen: HashMap<String, f64> = HashMap::new();
        while seen.len() < workers {
            let (_, p) = tokio::time::timeout(Duration::from_secs(60), statuses.messages.recv())
                .await
                .expect("every worker applies within a minute")
                .expect("listener");
            let s = WorkerStatus::decode(&p).expect("status");
            if s.config_version >= version {
                seen.entry(s.worker_id.to_string()).or_insert_with(|| sent.elapsed().as_secs_f64() * 1e3);
            }
        }
        applied.extend(seen.values());
        eventually("every worker reported the version", || async {
            let (_, view) = c.api.get("/api/config").await;
            let all = view["reported"]
                .as_object()
                .is_some_and(|r| r.len() == workers && r.values().all(|a| a["version"].as_u64() >= Some(version)));
            all.then_some(())
        })
        .await;
        reported.push(sent.elapsed().as_secs_f64() * 1e3);
    }
    applied.sort_by(f64::total_cmp);
    reported.sort_by(f64::total_cmp);
    println!("changes: {changes}, workers: {workers}");
    println!(
        "applied on a worker (ms):        p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        percentile(&applied, 0.5),
        percentile(&applied, 0.9),
        percentile(&applied, 0.99),
        applied[applied.len() - 1]
    );
    println!(
        "all {workers} reported to master (ms): p50 {:.1}  p90 {:.1}  max {:.1}",
        percentile(&reported, 0.5),
        percentile(&reported, 0.9),
        reported[reported.len() - 1]
    );
}
