//! `faena-mine-bench`: does splitting a mining job across workers lose
//! speed? Measures, in one run on one machine, each of two workers mining
//! alone, then both on one job, through a real master (embedded broker,
//! share verification) and real workers; prints the joint job's hashrate as
//! a ratio of the sum of the solo ones.
//!
//! `cargo run --release -p faena-testkit --bin faena-mine-bench`
//! env: `MODE` fast|light (fast), `THREADS` per worker (cores / 2, so the two
//! workers do not compete for cores), `SOLO_SECS` (20), `JOINT_SECS` (30),
//! `ROUNDS` of each measurement (2; medians are compared).
//!
//! Hashrates are job hashrates as users see them: hashes over the wall time
//! from the first unit's dispatch to the job's end, so dispatch, unit
//! boundaries, progress reports and the tail are all included.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_proto::mine::MineOutput;
use faena_testkit::bench::median;
use faena_testkit::{Cluster, MasterOpts};
use serde_json::{Value, json};

const KEY: &str = "6661656e61206d696e696e672062656e6368"; // "faena mining bench"

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Mines `nonces` from `start` (difficulty high enough that shares are rare:
/// verifying costs the master CPU the workers would otherwise use).
async fn mine(c: &Cluster, start: u64, nonces: u64, difficulty: u64) -> MineOutput {
    let params = json!({"key": KEY, "blob": "0c".repeat(76), "difficulty": difficulty,
                        "nonce_start": start, "nonce_count": nonces});
    let id = c.api.submit_ok("randomx.mine", params, None).await;
    let job = c.api.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    serde_json::from_value(job["result"].clone()).expect("mine output")
}

fn line(what: &str, out: &MineOutput) -> f64 {
    let per_worker: Vec<String> =
        out.workers.iter().map(|w| format!("{} {:.0} H/s ({} hashes)", w.worker, w.hashrate, w.hashes)).collect();
    println!(
        "{what:<10} {:>7} hashes in {:>6.2} s = {:>7.1} H/s   [{}]",
        out.hashes,
        out.elapsed_ms as f64 / 1000.0,
        out.hashrate,
        per_worker.join(", ")
    );
    out.hashrate
}

#[tokio::main]
async fn main() {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let mode: String = env("MODE", "fast".to_owned());
    let threads: usize = env("THREADS", (cores / 2).max(1));
    let solo_secs: u64 = env("SOLO_SECS", 20);
    let joint_secs: u64 = env("JOINT_SECS", 30);
    let rounds: usize = env("ROUNDS", 2);
    // A first guess of H/s per thread, only to size the jobs.
    let per_thread = if mode == "fast" { 300 } else { 35 };
    let solo_nonces = per_thread * threads as u64 * solo_secs;
    let joint_nonces = per_thread * 2 * threads as u64 * joint_secs;
    println!("faena-mine-bench: {mode} mode, 2 workers x {threads} threads, {cores} cores");

    let mut c = Cluster::start(MasterOpts { heartbeat_ms: 2000, ..MasterOpts::default() }).await;
    let threads_text = threads.to_string();
    let worker_env = [("FAENA_RANDOMX_MODE", mode.as_str()), ("FAENA_RANDOMX_THREADS", threads_text.as_str())];
    let mut next = 0u64;
    let mut take = |n: u64| {
        let start = next;
        next += n;
        start
    };

    // Each worker alone: it builds its dataset on a first small job (the
    // first also builds the master's verifying cache: difficulty 1 makes
    // every hash a share), then mines. a stops (drains, goes offline) first.
    c.add_worker_with("a", 1, &worker_env).await;
    c.wait_workers(1).await;
    mine(&c, take(16), 16, 1).await;
    let mut solo_a = Vec::new();
    for round in 1..=rounds {
        solo_a.push(line(&format!("solo a #{round}"), &mine(&c, take(solo_nonces), solo_nonces, u64::MAX / 4).await));
    }
    c.worker("a").terminate().await;
    c.wait_workers(0).await;
    c.add_worker_with("b", 1, &worker_env).await;
    c.wait_workers(1).await;
    mine(&c, take(16), 16, u64::MAX / 4).await;
    let mut solo_b = Vec::new();
    for round in 1..=rounds {
        solo_b.push(line(&format!("solo b #{round}"), &mine(&c, take(solo_nonces), solo_nonces, u64::MAX / 4).await));
    }
    let (solo_a, solo_b) = (median(solo_a), median(solo_b));

    // Both on one job, once a is back with its dataset built again: a
    // warm-up job long enough that the new a gets a unit of it.
    c.add_worker_with("a", 1, &worker_env).await;
    c.wait_workers(2).await;
    let warm = per_thread * threads as u64 * 10;
    mine(&c, take(warm), warm, u64::MAX / 4).await;
    let mut ratios = Vec::new();
    let mut efficiency = Vec::new();
    for round in 1..=rounds {
        let out = mine(&c, take(joint_nonces), joint_nonces, u64::MAX / 4).await;
        let joint = line(&format!("joint #{round}"), &out);
        ratios.push(joint / (solo_a + solo_b));
        // The same job's hashes against what its workers' own unit speeds
        // would give over its wall time: the cost of splitting alone.
        let speeds: f64 = out.workers.iter().map(|w| w.hashrate).sum();
        efficiency.push(joint / speeds);
    }
    let show = |v: &[f64]| v.iter().map(|r| format!("{:.1} %", r * 100.0)).collect::<Vec<_>>().join(", ");
    println!(
        "solo medians: a {solo_a:.1} H/s, b {solo_b:.1} H/s; joint / (solo a + solo b) = {:.1} % (median of {}: {}), target >= 95 %",
        median(ratios.clone()) * 100.0,
        ratios.len(),
        show(&ratios)
    );
    println!(
        "split efficiency (job H/s / sum of its workers' unit H/s) = {:.1} % (median of: {})",
        median(efficiency.clone()) * 100.0,
        show(&efficiency)
    );
    let workers: Vec<Value> = c.api.workers().await;
    for w in workers {
        println!("worker {} measured {:.0} H/s (heartbeat EWMA)", w["id"], w["hashrate"].as_f64().unwrap_or(0.0));
    }
}
