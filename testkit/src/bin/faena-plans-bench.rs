//! `faena-plans-bench`: what issue 30's job semantics cost and give, on a
//! real master (embedded broker, SQLite store, fsync on) with the bench's
//! two workers.
//!
//! ```text
//! faena-plans-bench cost [jobs=20000] [rounds=3]
//!     batch jobs/s of plain noop jobs on FAENA_BENCH_BASELINE_MASTER (a
//!     master built before these features) and on this build, interleaved
//!     round by round; then this build with every job in a group and with a
//!     unique key.
//! faena-plans-bench fairness [a=200000] [b=100]
//!     group A submits `a` jobs, then group B `b`, all queued before the
//!     workers start: B's wait from the first dispatch to its own (each
//!     job's history), without groups and with them, in the same run.
//! faena-plans-bench timers [jobs=1000000] [spread_s=3600] [watch_s=600]
//!     `jobs` delayed jobs spread evenly over `spread_s` from a minute
//!     after the submissions start: the master's RSS and coordinator tick
//!     once they are all in, then for `watch_s` how late each sampled job
//!     was queued after its run_at.
//! ```
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use faena_testkit::bench::{BATCH, cluster_with, median, percentile, worker_slots};
use faena_testkit::process::rss_mib;
use faena_testkit::{Cluster, MasterOpts, eventually, sample};
use serde_json::{Value, json};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n = |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    match args.first().map(String::as_str) {
        Some("cost") => cost(n(1, 20_000), n(2, 3)).await,
        Some("fairness") => fairness(n(1, 200_000), n(2, 100)).await,
        Some("timers") => timers(n(1, 1_000_000), n(2, 3_600), n(3, 600)).await,
        _ => {
            eprintln!("usage: faena-plans-bench cost|fairness|timers [sizes] (see the source's head)");
            std::process::exit(2);
        }
    }
}

fn opts(master_bin: Option<PathBuf>, capacity: usize) -> MasterOpts {
    MasterOpts {
        master_bin,
        queue_capacity: capacity,
        extra: vec![("FAENA_STORE_SYNC".into(), "full".into())],
        ..MasterOpts::default()
    }
}

async fn succeeded(c: &Cluster) -> u64 {
    let text = c.api.text("/metrics").await;
    sample(&text, "faena_jobs_total{state=\"succeeded\"}").unwrap_or(0.0) as u64
}

async fn wait_succeeded(c: &Cluster, target: u64) {
    eventually("all results", || async { (succeeded(c).await >= target).then_some(()) }).await;
}

/// Submits `jobs` in batches, each job's body from `make`; their ids.
async fn submit(c: &Cluster, jobs: usize, make: impl Fn(usize) -> Value) -> Vec<String> {
    let mut ids = Vec::with_capacity(jobs);
    for start in (0..jobs).step_by(BATCH) {
        let body: Vec<Value> = (start..(start + BATCH).min(jobs)).map(&make).collect();
        let (status, answer) = c.api.post("/api/jobs/batch", &json!({"jobs": body})).await;
        assert_eq!(status, 202, "{answer}");
        ids.extend(answer["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()));
    }
    ids
}

/// Batch jobs/s of `jobs` jobs made by `make`, after a warm-up.
async fn batch_rate(c: &Cluster, jobs: usize, make: impl Fn(usize) -> Value) -> f64 {
    let before = succeeded(c).await;
    submit(c, 2_000, |i| json!({"kind": "noop", "params": {"payload": i}})).await;
    wait_succeeded(c, before + 2_000).await;
    let base = succeeded(c).await;
    let start = Instant::now();
    submit(c, jobs, make).await;
    wait_succeeded(c, base + jobs as u64).await;
    jobs as f64 / start.elapsed().as_secs_f64()
}

async fn cost(jobs: usize, rounds: usize) {
    let baseline = std::env::var_os("FAENA_BENCH_BASELINE_MASTER").map(PathBuf::from);
    let Some(baseline) = baseline.filter(|p| p.exists()) else {
        panic!("FAENA_BENCH_BASELINE_MASTER must name a faena-master built before issue 30 (see BENCHMARKS.md)");
    };
    println!("cost: {jobs} noop jobs in batches of {BATCH}, {rounds} rounds, before and after interleaved");
    let plain = |i: usize| json!({"kind": "noop", "params": {"payload": i}});
    let (mut before, mut after) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Alternate which goes first, so drift in the machine falls on both.
        let order: [Option<PathBuf>; 2] =
            if round % 2 == 0 { [Some(baseline.clone()), None] } else { [None, Some(baseline.clone())] };
        for bin in order {
            let is_before = bin.is_some();
            let c = cluster_with(opts(bin, 100_000)).await;
            let rate = batch_rate(&c, jobs, plain).await;
            println!("round {round}  {:<6}  {rate:>8.0} jobs/s", if is_before { "before" } else { "after" });
            if is_before { before.push(rate) } else { after.push(rate) }
        }
    }
    let c = cluster_with(opts(None, 100_000)).await;
    let all = batch_rate(&c, jobs, |i| {
        json!({"kind": "noop", "params": {"payload": i}, "group": format!("tenant-{}", i % 16), "unique_key": format!("job-{i}")})
    })
    .await;
    let (b, a) = (median(before), median(after));
    println!("median   before {b:>8.0} jobs/s   after {a:>8.0} jobs/s   after/before {:.3}", a / b);
    println!("every job in one of 16 groups with a unique key: {all:.0} jobs/s ({:.3} of plain after)", all / a);
}

/// When each of `ids` first ran (ms since the epoch, from its history), sorted.
async fn started(c: &Cluster, ids: &[String]) -> Vec<u64> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let history = c.api.history(id).await;
        let ran = history.iter().find(|t| t["state"] == "running").and_then(|t| t["at_ms"].as_u64());
        out.push(ran.expect("every job ran"));
    }
    out.sort();
    out
}

/// Group A's jobs, then B's, are all queued before any worker runs; then
/// the workers start. B's wait is counted from the first dispatch (when
/// the workers began), so the workers' start-up weighs on neither.
async fn fairness(a: usize, b: usize) {
    let slots = worker_slots();
    println!(
        "fairness: group A submits {a} noop jobs, then group B {b}, all queued before 2 workers x {slots} slots start"
    );
    let mut p99s = Vec::new();
    for grouped in [false, true] {
        let mut c = Cluster::start(MasterOpts { heartbeat_ms: 2000, ..opts(None, a + b + 10_000) }).await;
        let group = |g: &str| if grouped { json!(g) } else { Value::Null };
        let (ga, gb) = (group("a"), group("b"));
        let first = submit(&c, a, |i| json!({"kind": "noop", "params": {"payload": i}, "group": ga})).await;
        let ids = submit(&c, b, |i| json!({"kind": "noop", "params": {"payload": i}, "group": gb})).await;
        c.add_worker("bench-1", slots).await;
        c.add_worker("bench-2", slots).await;
        wait_succeeded(&c, (a + b) as u64).await;
        let began = started(&c, &first[..1]).await[0].min(started(&c, &ids[..1]).await[0]);
        let w: Vec<Duration> =
            started(&c, &ids).await.into_iter().map(|t| Duration::from_millis(t.saturating_sub(began))).collect();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (p50, p99, max) = (ms(percentile(&w, 0.5)), ms(percentile(&w, 0.99)), ms(*w.last().unwrap()));
        println!(
            "{:<14} B waited after dispatch began: p50 {p50:>9.1} ms  p99 {p99:>9.1} ms  max {max:>9.1} ms",
            if grouped { "with groups" } else { "without groups" }
        );
        p99s.push(p99.max(1.0));
    }
    println!("B's p99 wait without groups / with groups: {:.0}x (1 ms is the history's resolution)", p99s[0] / p99s[1]);
}

async fn tick_seconds(c: &Cluster) -> (f64, f64) {
    let text = c.api.text("/metrics").await;
    let get = |name: &str| sample(&text, name).unwrap_or(0.0);
    (get("faena_coordinator_tick_seconds_sum"), get("faena_coordinator_tick_seconds_count"))
}

async fn timers(jobs: usize, spread_s: usize, watch_s: usize) {
    let mut c = cluster_with(opts(None, jobs + 10_000)).await;
    let pid = c.master().pid();
    let rss0 = rss_mib(pid);
    let start = faena_proto::mqtt::now_ms() + 60_000;
    let spread = spread_s as u64 * 1000;
    let at = move |i: usize| start + spread * i as u64 / jobs as u64;
    println!("timers: {jobs} jobs delayed over {spread_s} s from a minute on; watching {watch_s} s");
    let t = Instant::now();
    let ids = submit(&c, jobs, |i| json!({"kind": "noop", "params": {}, "run_at": faena_store::rfc3339(at(i))})).await;
    println!(
        "submitted in {:.1} s; master RSS {rss0:.0} MiB before, {:.0} MiB with them all",
        t.elapsed().as_secs_f64(),
        rss_mib(pid)
    );
    let load = c.api.get("/api/load").await.1;
    assert_eq!(load["scheduled"].as_u64(), Some(jobs as u64), "{load}");
    // The tick with them all held, before any is due.
    let (s0, n0) = tick_seconds(&c).await;
    tokio::time::sleep(Duration::from_millis(start.saturating_sub(faena_proto::mqtt::now_ms()).saturating_sub(2_000)))
        .await;
    let (s1, n1) = tick_seconds(&c).await;
    println!(
        "coordinator tick with {jobs} scheduled: {:.1} µs mean over {} ticks",
        (s1 - s0) / (n1 - n0).max(1.0) * 1e6,
        n1 - n0
    );
    tokio::time::sleep(Duration::from_secs(watch_s as u64)).await;
    let (s2, n2) = tick_seconds(&c).await;
    println!(
        "coordinator tick while they fire: {:.1} µs mean over {} ticks; RSS {:.0} MiB",
        (s2 - s1) / (n2 - n1).max(1.0) * 1e6,
        n2 - n1,
        rss_mib(pid)
    );
    // How late each sampled job that came due was queued.
    // The jobs due by a second ago (a job due this very moment may not be
    // queued yet: that is not late).
    let elapsed = faena_proto::mqtt::now_ms().saturating_sub(start + 1_000).min(spread);
    let due = (jobs as u64 * elapsed / spread) as usize;
    let step = (due / 2_000).max(1);
    let mut late = Vec::new();
    for i in (0..due).step_by(step) {
        let history = c.api.history(&ids[i]).await;
        let queued = history.iter().find(|t| t["detail"] == "its time came").and_then(|t| t["at_ms"].as_u64());
        let queued = queued.unwrap_or_else(|| panic!("job {} (due {}) was not queued: {history:?}", ids[i], at(i)));
        late.push(Duration::from_millis(queued.saturating_sub(at(i))));
    }
    late.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{} of the {due} jobs due in the window sampled: queued after their time p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms (clock resolution: 1 ms)",
        late.len(),
        ms(percentile(&late, 0.5)),
        ms(percentile(&late, 0.99)),
        ms(*late.last().unwrap())
    );
}
