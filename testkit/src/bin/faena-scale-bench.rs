//! `faena-scale-bench`: what the master costs as the work grows. A real
//! release master (embedded broker, durable store) with 1,000 simulated
//! workers (light in-process MQTT + gRPC clients that register, heartbeat
//! every interval and complete units on demand), at queue depths of 1,000,
//! 10,000 and 100,000 `noop` jobs — a fresh master for each depth.
//!
//! `cargo run --release -p faena-testkit --bin faena-scale-bench -- [workers] [depths…]`
//!
//! The master runs its embedded broker (rumqttd, inside its process, so its
//! memory and CPU count), or with `FAENA_SCALE_BROKER=mosquitto` the stack's
//! broker, Mosquitto with its accounts and ACL, as a process of its own
//! (its RSS is printed apart).
//!
//! Per depth it prints: master RSS; master CPU per heartbeat (a quiet window
//! in which every worker holds a unit and only heartbeats and ticks run);
//! the coordinator's mean tick time (from `faena_coordinator_tick_seconds`);
//! the cost of a queue-position query (`GET /api/jobs/{id}` of a job deep in
//! the queue: latency and master CPU); master CPU per dispatch (workers
//! complete a budget of units, each freed slot takes the next queued job);
//! then the same with 1,000 SSE watchers of queued jobs, whose positions
//! move with every dispatch. Last, the ratios of the deepest queue to the
//! shallowest. A line ends with what went other than planned, if anything:
//! leases the master took back from a live simulated worker, results it
//! refused as no longer that worker's, result calls that failed (the fleet
//! gives their budget back and sends them again, so none stalls the run),
//! workers it dropped that registered again, and heartbeats the fleet
//! itself sent more than an interval late (its own share of those drops).
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use faena_testkit::process::{cpu_seconds, rss_mib};
use faena_testkit::sim::{Fleet, start_fleet};
use faena_testkit::{Broker, Cluster, MasterOpts, Mosquitto, eventually, sample};
use serde_json::json;

const HEARTBEAT: Duration = Duration::from_secs(1);
const WINDOW: Duration = Duration::from_secs(5);
const BATCH: usize = 1_000;
const WATCHERS: usize = 1_000;
const QUERIES: usize = 2_000;

async fn metric(c: &Cluster, name: &str) -> f64 {
    sample(&c.api.text("/metrics").await, name).unwrap_or(0.0)
}

/// Waits until `name` reads `want`; on a timeout, says where the jobs are.
async fn wait_metric(c: &Cluster, name: &str, want: f64) {
    let reached = async {
        while metric(c, name).await != want {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(faena_testkit::WAIT, reached).await.is_err() {
        stuck(c, name, want).await;
    }
}

/// Gives up waiting for `name` to read `want`, saying where the jobs are.
async fn stuck(c: &Cluster, name: &str, want: f64) -> ! {
    let text = c.api.text("/metrics").await;
    let at = ["faena_jobs_active", "faena_jobs_total", "faena_workers", "faena_redeliveries"];
    let seen: Vec<&str> = text.lines().filter(|l| at.iter().any(|m| l.starts_with(m))).collect();
    panic!("timed out waiting for {name} = {want}; the master says: {}", seen.join(", "));
}

/// Submits `n` noop jobs in batches; returns their ids in order.
async fn submit(c: &Cluster, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    let body: Vec<_> = (0..BATCH).map(|_| json!({"kind": "noop"})).collect();
    let mut left = n;
    while left > 0 {
        let take = left.min(BATCH);
        let (status, answer) = c.api.post("/api/jobs/batch", &json!({"jobs": &body[..take]})).await;
        assert_eq!(status, 202, "{answer}");
        ids.extend(answer["jobs"].as_array().expect("jobs").iter().map(|j| j["id"].as_str().expect("id").to_owned()));
        left -= take;
    }
    ids
}

#[derive(Debug, Default, Clone, Copy)]
struct Costs {
    hb_us: f64,
    tick_us: f64,
    query_us: f64,
    query_cpu_us: f64,
    dispatch_us: f64,
    /// Jobs submitted beyond the plan to refill the queue (see `refill`).
    refilled: u64,
}

/// The quiet window: heartbeats and ticks only.
async fn quiet(c: &Cluster, pid: i32, fleet: &Fleet) -> (f64, f64) {
    let (sum0, n0) = (
        metric(c, "faena_coordinator_tick_seconds_sum").await,
        metric(c, "faena_coordinator_tick_seconds_count").await,
    );
    let (cpu0, hb0) = (cpu_seconds(pid), fleet.heartbeats.load(Ordering::Relaxed));
    tokio::time::sleep(WINDOW).await; // a measuring window, not a wait for an event
    let (cpu, hb) = (cpu_seconds(pid) - cpu0, fleet.heartbeats.load(Ordering::Relaxed) - hb0);
    let (sum, n) = (
        metric(c, "faena_coordinator_tick_seconds_sum").await - sum0,
        metric(c, "faena_coordinator_tick_seconds_count").await - n0,
    );
    (cpu * 1e6 / hb.max(1) as f64, if n > 0.0 { sum * 1e6 / n } else { 0.0 })
}

/// Position queries of jobs deep in the queue: (latency µs, master CPU µs) each.
async fn queries(c: &Cluster, pid: i32, deep: &[String]) -> (f64, f64) {
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    for i in 0..QUERIES {
        let (status, job) = c.api.get(&format!("/api/jobs/{}", deep[i % deep.len()])).await;
        assert_eq!(status, 200);
        assert!(job["position"].as_u64().is_some(), "still queued: {job}");
    }
    let each = start.elapsed().as_secs_f64() * 1e6 / QUERIES as f64;
    (each, (cpu_seconds(pid) - cpu0) * 1e6 / QUERIES as f64)
}

/// Lets the fleet complete `k` units, each freeing a slot for a queued job; master CPU per dispatch.
async fn dispatches(c: &Cluster, pid: i32, fleet: &Fleet, k: usize) -> f64 {
    let done0 = metric(c, "faena_jobs_total{state=\"succeeded\"}").await;
    let cpu0 = cpu_seconds(pid);
    fleet.complete(k as i64);
    // At least k more (a job redelivered after a lost lease may end more
    // than once on the fleet's side, never twice in the store).
    let name = "faena_jobs_total{state=\"succeeded\"}";
    eventually(&format!("{name} >= {}", done0 + k as f64), || async {
        (metric(c, name).await >= done0 + k as f64).then_some(())
    })
    .await;
    (cpu_seconds(pid) - cpu0) * 1e6 / k as f64
}

/// Jobs the master has ended, in any final state.
async fn ended(c: &Cluster) -> f64 {
    let text = c.api.text("/metrics").await;
    ["succeeded", "failed", "cancelled"]
        .iter()
        .filter_map(|s| sample(&text, &format!("faena_jobs_total{{state=\"{s}\"}}")))
        .sum()
}

/// Tops the queue back up to `depth` after the `k` dispatches of a phase
/// that began with `ended0` jobs ended, and waits for it there. A job can
/// end other than by the fleet's budget (out of attempts after three lost
/// leases); each such job leaves the queue one short, so as many more are
/// submitted as jobs ended beyond `k`. How many those were.
async fn refill(c: &Cluster, depth: usize, ended0: f64, k: usize) -> u64 {
    submit(c, k).await;
    let (mut submitted, mut extra) = (k as f64, 0);
    let queued = "faena_jobs_active{state=\"queued\"}";
    let settled = async {
        while metric(c, queued).await != depth as f64 {
            let beyond = ended(c).await - ended0 - submitted;
            if beyond >= 1.0 {
                submit(c, beyond as usize).await;
                (submitted, extra) = (submitted + beyond, extra + beyond as u64);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(faena_testkit::WAIT, settled).await.is_err() {
        stuck(c, queued, depth as f64).await;
    }
    extra
}

async fn measure(c: &Cluster, pid: i32, fleet: &Fleet, deep: &[String], k: usize, depth: usize) -> Costs {
    // Jobs ended from here on, beyond the k the fleet completes, left the
    // queue short, whenever they ended.
    let ended0 = ended(c).await;
    let (hb_us, tick_us) = quiet(c, pid, fleet).await;
    let (query_us, query_cpu_us) = queries(c, pid, deep).await;
    let dispatch_us = dispatches(c, pid, fleet, k).await;
    // Top the queue back up to its depth for what comes next.
    let refilled = refill(c, depth, ended0, k).await;
    Costs { hb_us, tick_us, query_us, query_cpu_us, dispatch_us, refilled }
}

/// What went other than planned: leases the master took back from a live
/// simulated worker (redeliveries), results it refused as no longer that
/// worker's, calls that failed and were made again, workers it dropped for
/// late heartbeats that registered again, heartbeats the fleet sent more
/// than an interval late, jobs that ended other than by the fleet's budget
/// (the queue refilled for them). All 0 on a master and a fleet that keep up.
fn surprises(c_redeliveries: f64, fleet: &Fleet, refilled: u64) -> String {
    let (stale, failed) = (fleet.stale.load(Ordering::Relaxed), fleet.failed.load(Ordering::Relaxed));
    let (again, late) = (fleet.reregistered.load(Ordering::Relaxed), fleet.late.load(Ordering::Relaxed));
    if c_redeliveries == 0.0 && stale == 0 && failed == 0 && again == 0 && late == 0 && refilled == 0 {
        return String::new();
    }
    format!(
        "  (redeliveries {c_redeliveries}, stale results {stale}, failed result calls {failed}, registered again {again}, \
         heartbeats the fleet sent late {late}, jobs ended beyond the budget {refilled})"
    )
}

fn line(depth: usize, watchers: usize, rss: f64, c: Costs, surprises: String) {
    println!(
        "{depth:>7} {watchers:>8} {rss:>8.1} {:>9.1} {:>9.1} {:>10.1} {:>10.1} {:>11.1}{surprises}",
        c.hb_us, c.tick_us, c.query_us, c.query_cpu_us, c.dispatch_us
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let workers = args.first().copied().unwrap_or(1_000);
    let depths: Vec<usize> = if args.len() > 1 { args[1..].to_vec() } else { vec![1_000, 10_000, 100_000] };
    println!(
        "faena-scale-bench: {workers} simulated workers (1 slot each, heartbeat {} ms), noop jobs, {} cores",
        HEARTBEAT.as_millis(),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );
    println!("  depth watchers  RSS MiB  CPU/hb µs   tick µs  query µs  query CPU µs  CPU/dispatch µs");
    let mut rows = Vec::new();
    for &depth in &depths {
        let dir = tempfile::tempdir().expect("temp dir");
        let mosquitto = match std::env::var("FAENA_SCALE_BROKER").as_deref() {
            Ok("mosquitto") => Some(Mosquitto::start(dir.path()).await),
            _ => None,
        };
        let opts = MasterOpts {
            heartbeat_ms: HEARTBEAT.as_millis() as u32,
            queue_capacity: depth * 2 + workers + 10_000,
            broker: mosquitto.as_ref().map(Mosquitto::broker).unwrap_or(Broker::Embedded),
            ..MasterOpts::default()
        };
        let mut c = Cluster::start(opts).await;
        let pid = c.master().pid();
        let fleet = start_fleet(workers, &c.addrs.grpc, &c.addrs.mqtt, HEARTBEAT).await;
        wait_metric(&c, "faena_workers", workers as f64).await;
        let ids = submit(&c, workers + depth).await;
        wait_metric(&c, "faena_jobs_active{state=\"running\"}", workers as f64).await;
        wait_metric(&c, "faena_jobs_active{state=\"queued\"}", depth as f64).await;
        // The deepest jobs: still queued after every dispatch this run makes.
        let k = (depth / 2).min(5_000);
        let deep: Vec<String> = ids[ids.len() - (depth / 4).clamp(1, 1_000)..].to_vec();
        let plain = measure(&c, pid, &fleet, &deep, k, depth).await;
        let rss = rss_mib(pid);
        line(depth, 0, rss, plain, surprises(metric(&c, "faena_redeliveries_total").await, &fleet, plain.refilled));

        // 1,000 SSE watchers of queued jobs, spread over the queue's back half.
        let mut watched = Vec::with_capacity(WATCHERS);
        let span = &ids[ids.len() - depth / 2..];
        for i in 0..WATCHERS {
            let id = &span[i * span.len() / WATCHERS];
            let mut events = c.api.events(id).await;
            let first = events.next().await.expect("a snapshot");
            assert_eq!(first.0, "queued", "watching a queued job");
            watched.push(tokio::spawn(async move { while events.next().await.is_some() {} }));
        }
        let with = measure(&c, pid, &fleet, &deep, k, depth).await;
        let rss_w = rss_mib(pid);
        let refilled = plain.refilled + with.refilled;
        line(depth, WATCHERS, rss_w, with, surprises(metric(&c, "faena_redeliveries_total").await, &fleet, refilled));
        rows.push((depth, rss.max(rss_w), plain, with));
        if let Some(pid) = mosquitto.as_ref().and_then(|m| m.child.as_ref()).and_then(tokio::process::Child::id) {
            println!("        (Mosquitto, a process of its own: RSS {:.1} MiB)", rss_mib(pid as i32));
        }
        fleet.stop();
        for w in watched {
            w.abort();
        }
        drop(c);
    }
    if let (Some(first), Some(last)) = (rows.first(), rows.last())
        && rows.len() > 1
    {
        let r = |a: f64, b: f64| if a > 0.0 { b / a } else { f64::NAN };
        println!(
            "ratio {} / {} jobs: dispatch {:.2}x (watched {:.2}x), position query {:.2}x (watched {:.2}x), tick {:.2}x, heartbeat {:.2}x; max RSS {:.0} MiB",
            last.0,
            first.0,
            r(first.2.dispatch_us, last.2.dispatch_us),
            r(first.3.dispatch_us, last.3.dispatch_us),
            r(first.2.query_cpu_us, last.2.query_cpu_us),
            r(first.3.query_cpu_us, last.3.query_cpu_us),
            r(first.2.tick_us, last.2.tick_us),
            r(first.2.hb_us, last.2.hb_us),
            last.1
        );
    }
}
