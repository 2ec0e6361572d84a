//! The dispatch benchmark's phases, shared by `faena-bench` and
//! `faena-pg-bench`: `noop` (or any kind's) jobs through a running cluster,
//! batch, one by one and at low load, each timed end to end.

use std::time::{Duration, Instant};

use faena_proto::settings::MAX_SLOTS;
use futures::StreamExt;
use serde_json::json;

use crate::process::{ThreadTimes, cpu_seconds, machine_idle, thread_cpu};
use crate::{Cluster, eventually};

/// Slots of each of the bench's two workers unless `FAENA_BENCH_SLOTS` says.
const WORKER_SLOTS: u32 = 128;

/// Slots of each of the bench's two workers: `FAENA_BENCH_SLOTS` (1 to a
/// worker's own limit, [`MAX_SLOTS`]), else 128. The slots bound the jobs in
/// flight, so they bound jobs/s at slots ÷ the time a job holds one (its
/// dispatch's commit, the trip to the worker and its result's way back):
/// a larger machine may need more of them to show what the master can do.
pub fn worker_slots() -> u32 {
    or_exit(slots(std::env::var("FAENA_BENCH_SLOTS").ok().as_deref()))
}

/// `FAENA_BENCH_SLOTS`'s value, if set, as slots.
fn slots(v: Option<&str>) -> Result<u32, String> {
    Ok(bounded("FAENA_BENCH_SLOTS", v, MAX_SLOTS)?.unwrap_or(WORKER_SLOTS))
}

/// Most groups `FAENA_BENCH_GROUPS` takes: a master's default
/// `FAENA_MAX_GROUPS`.
const MAX_BENCH_GROUPS: u32 = 10_000;

/// How many fair-share groups the bench's jobs are spread over, in turn:
/// `FAENA_BENCH_GROUPS` (1 to 10,000), else none (no `group` field). The
/// coordinator keeps a queue head per group, so this shows what many
/// tenants cost dispatch.
pub fn job_groups() -> Option<u32> {
    or_exit(groups(std::env::var("FAENA_BENCH_GROUPS").ok().as_deref()))
}

/// `FAENA_BENCH_GROUPS`'s value, if set, as a number of groups.
fn groups(v: Option<&str>) -> Result<Option<u32>, String> {
    bounded("FAENA_BENCH_GROUPS", v, MAX_BENCH_GROUPS)
}

/// Setting `name`'s value `v`, if set, as a number from 1 to `max`.
fn bounded(name: &str, v: Option<&str>, max: u32) -> Result<Option<u32>, String> {
    let Some(v) = v else { return Ok(None) };
    match v.parse() {
        Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
        _ => Err(format!("{name} must be a number from 1 to {max}, not {v:?}")),
    }
}

/// The bench's setting, or its error said and exit status 2.
fn or_exit<T>(setting: Result<T, String>) -> T {
    setting.unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    })
}

/// Job `i`'s body: `kind` with its params, in its group when the bench
/// spreads them over `groups`.
fn job(kind: &str, i: usize, groups: Option<u32>) -> serde_json::Value {
    let mut body = json!({"kind": kind, "params": params(kind, i)});
    if let Some(n) = groups {
        body["group"] = json!(format!("bench-{}", i % n as usize));
    }
    body
}

/// A master (`extra` settings besides the bench's) and the bench's two
/// workers, registered.
pub async fn cluster(extra: Vec<(String, String)>) -> Cluster {
    cluster_with(crate::MasterOpts { extra, ..crate::MasterOpts::default() }).await
}

/// The same, from `opts` (the bench's heartbeat set).
pub async fn cluster_with(opts: crate::MasterOpts) -> Cluster {
    let slots = worker_slots();
    let opts = crate::MasterOpts { heartbeat_ms: 2000, ..opts };
    let mut c = Cluster::start(opts).await;
    c.add_worker("bench-1", slots).await;
    c.add_worker("bench-2", slots).await;
    c.wait_workers(2).await;
    c
}

/// The master's environment for a PostgreSQL store at `url`: the store
/// and, where the bench was given `FAENA_STORE_WRITERS`, its writers.
pub fn pg_store_env(url: String) -> Vec<(String, String)> {
    let writers = std::env::var("FAENA_STORE_WRITERS").ok().map(|w| ("FAENA_STORE_WRITERS".to_owned(), w));
    [("FAENA_STORE_URL".to_owned(), url)].into_iter().chain(writers).collect()
}

/// The phases' sizes from the command line: `[jobs=20000] [low-load samples=2000]`.
/// The bench's settings from the environment are checked here too, so a bad
/// one stops a bench before it starts a process.
pub fn jobs_and_samples() -> (usize, usize) {
    let _ = (worker_slots(), job_groups());
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    (args.first().copied().unwrap_or(20_000), args.get(1).copied().unwrap_or(2_000))
}

/// Jobs per `POST /api/jobs/batch`.
pub const BATCH: usize = 1_000;
/// Concurrent clients of the one-by-one phase.
pub const CLIENTS: usize = 64;

/// Jobs/s and master CPU µs/job of the batch and one-by-one phases, and the
/// low-load percentiles (ms): submit→result, and submit→running (the
/// dispatch committed and the job handed to a worker).
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub batch: (f64, f64),
    pub one_by_one: (f64, f64),
    pub p50: f64,
    pub p99: f64,
    pub running_p50: f64,
    pub running_p99: f64,
}

async fn succeeded(c: &Cluster) -> u64 {
    let text = c.api.text("/metrics").await;
    crate::sample(&text, "faena_jobs_total{state=\"succeeded\"}").unwrap_or(0.0) as u64
}

async fn wait_succeeded(c: &Cluster, target: u64) {
    eventually("all results", || async { (succeeded(c).await >= target).then_some(()) }).await;
}

fn report(name: &str, jobs: usize, elapsed: Duration, cpu: f64) -> (f64, f64) {
    let (rate, cpu_per_job) = (jobs as f64 / elapsed.as_secs_f64(), cpu * 1e6 / jobs as f64);
    println!(
        "{name:<12} {jobs:>7} jobs  {rate:>9.0} jobs/s  {:>6.2} s  master CPU {cpu_per_job:>6.1} µs/job",
        elapsed.as_secs_f64()
    );
    (rate, cpu_per_job)
}

/// Where the master's CPU went over a phase, thread by thread: µs per job,
/// cores busy (a single thread near 1.0 is what serialises the path) and
/// how long it waited for a core, as a share of the time it ran (near 1 or
/// more: the cores hold it back).
fn report_threads(pid: i32, before: &std::collections::BTreeMap<String, ThreadTimes>, jobs: usize, elapsed: Duration) {
    let mut spent: Vec<(String, ThreadTimes)> = thread_cpu(pid)
        .into_iter()
        .map(|(name, now)| {
            let b = before.get(&name).copied().unwrap_or_default();
            let spent = ThreadTimes { cpu: now.cpu - b.cpu, waited: now.waited - b.waited, threads: now.threads };
            (name, spent)
        })
        .filter(|(_, t)| t.cpu > 0.0)
        .collect();
    spent.sort_by(|a, b| b.1.cpu.total_cmp(&a.1.cpu));
    let line: Vec<String> = spent
        .iter()
        .map(|(name, t)| {
            let threads = if t.threads > 1 { format!(" ×{}", t.threads) } else { String::new() };
            let (per_job, cores) = (t.cpu * 1e6 / jobs as f64, t.cpu / elapsed.as_secs_f64());
            format!("{name}{threads} {per_job:.1} µs/job {cores:.2} cores wait {:.2}", t.waited / t.cpu)
        })
        .collect();
    println!("             master threads: {}", line.join(" | "));
}

/// What the rest of the machine spent so far: the cluster's workers' CPU,
/// the bench's own (its clients), and the cores' idle time, in seconds.
/// On a small machine these share the cores with the master.
#[derive(Debug, Clone, Copy)]
struct Rest {
    workers: f64,
    bench: f64,
    idle: f64,
}

impl Rest {
    fn now(c: &Cluster) -> Self {
        Self {
            workers: c.workers.iter().map(|w| cpu_seconds(w.pid())).sum(),
            bench: cpu_seconds(std::process::id() as i32),
            idle: machine_idle(),
        }
    }

    /// Prints what went where since `self`, a job and in cores.
    fn report(self, c: &Cluster, jobs: usize, elapsed: Duration) {
        let now = Self::now(c);
        let (per_job, cores) = (|s: f64| s * 1e6 / jobs as f64, |s: f64| s / elapsed.as_secs_f64());
        let (workers, bench) = (now.workers - self.workers, now.bench - self.bench);
        println!(
            "             the rest: workers {:.1} µs/job {:.2} cores | bench {:.1} µs/job {:.2} cores | idle {:.2} cores",
            per_job(workers),
            cores(workers),
            per_job(bench),
            cores(bench),
            cores(now.idle - self.idle)
        );
    }
}

fn params(kind: &str, i: usize) -> serde_json::Value {
    match kind {
        "noop" => json!({"payload": i}),
        _ => json!({"text": format!("job number {i}")}),
    }
}

/// Waits until everything `store` was given so far is committed: for the
/// benches that drive a store directly, one commit group at a time.
pub fn committed(store: &faena_store::Store) {
    let (tx, rx) = std::sync::mpsc::channel();
    store.after_commit(move |r| {
        let _ = tx.send(r.is_ok());
    });
    assert_eq!(rx.recv(), Ok(true), "the store commits");
}

/// The median of `v` (the mean of the middle two of an even count; 0 of
/// none): what the benches that alternate rounds report.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] }
}

/// The `q` quantile of sorted samples.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

/// Warms up, then runs the three phases on `c` (master `pid`): `jobs` jobs
/// in batches, `jobs` one by one from [`CLIENTS`] clients, and `samples`
/// jobs one at a time.
pub async fn phases(c: &Cluster, pid: i32, kind: &str, jobs: usize, samples: usize) -> Figures {
    // Warm-up: connections, caches, page faults.
    let groups = job_groups();
    let before = succeeded(c).await;
    let warm: Vec<_> = (0..2_000).map(|i| job(kind, i, groups)).collect();
    for chunk in warm.chunks(BATCH) {
        c.api.post("/api/jobs/batch", &json!({"jobs": chunk})).await;
    }
    wait_succeeded(c, before + 2_000).await;

    // 1. Batch submission.
    let base = succeeded(c).await;
    let (cpu0, threads0, rest0) = (cpu_seconds(pid), thread_cpu(pid), Rest::now(c));
    let start = Instant::now();
    let same: Vec<_> = (0..BATCH).map(|i| job(kind, i, None)).collect();
    for b in 0..jobs.div_ceil(BATCH) {
        // In groups, each batch takes the next groups in turn.
        let body = match groups {
            None => json!({"jobs": same}),
            Some(_) => json!({"jobs": (b * BATCH..(b + 1) * BATCH).map(|i| job(kind, i, groups)).collect::<Vec<_>>()}),
        };
        let (status, answer) = c.api.post("/api/jobs/batch", &body).await;
        assert_eq!(status, 202, "{answer}");
    }
    let submitted = jobs.div_ceil(BATCH) * BATCH;
    wait_succeeded(c, base + submitted as u64).await;
    let batch = report("batch", submitted, start.elapsed(), cpu_seconds(pid) - cpu0);
    report_threads(pid, &threads0, submitted, start.elapsed());
    rest0.report(c, submitted, start.elapsed());

    // 2. One by one, from concurrent clients.
    let base = succeeded(c).await;
    let (cpu0, threads0, rest0) = (cpu_seconds(pid), thread_cpu(pid), Rest::now(c));
    let start = Instant::now();
    let api = c.api.clone();
    futures::stream::iter(0..jobs)
        .for_each_concurrent(CLIENTS, |i| {
            let api = api.clone();
            async move {
                let (status, answer) = api.post("/api/jobs", &job(kind, i, groups)).await;
                assert_eq!(status, 202, "{answer}");
            }
        })
        .await;
    wait_succeeded(c, base + jobs as u64).await;
    let one_by_one = report("one-by-one", jobs, start.elapsed(), cpu_seconds(pid) - cpu0);
    report_threads(pid, &threads0, jobs, start.elapsed());
    rest0.report(c, jobs, start.elapsed());

    // 3. Low load: one job at a time.
    let mut latencies = Vec::with_capacity(samples);
    let mut running = Vec::with_capacity(samples);
    for _ in 0..samples {
        let t = Instant::now();
        let (status, made) = c.api.submit(kind, params(kind, 0), None).await;
        assert_eq!(status, reqwest::StatusCode::ACCEPTED, "submit answered {made}");
        let id = made["id"].as_str().expect("id").to_owned();
        // A `202` that says `running` was answered once the job's dispatch
        // was committed with it: the client knows it started from there.
        let mut ran = (made["state"] == "running").then(|| t.elapsed());
        let mut events = c.api.events(&id).await;
        while let Some((name, _)) = events.next().await {
            if name == "running" {
                ran.get_or_insert(t.elapsed());
            }
            if name == "succeeded" {
                break;
            }
        }
        latencies.push(t.elapsed());
        running.push(ran.unwrap_or_else(|| t.elapsed()));
    }
    latencies.sort();
    running.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (p50, p99) = (ms(percentile(&latencies, 0.5)), ms(percentile(&latencies, 0.99)));
    let (running_p50, running_p99) = (ms(percentile(&running, 0.5)), ms(percentile(&running, 0.99)));
    println!(
        "low load     {samples:>7} jobs  submit→result p50 {p50:.2} ms  p99 {p99:.2} ms  max {:.2} ms  \
         submit→running p50 {running_p50:.2} ms  p99 {running_p99:.2} ms",
        latencies.last().copied().map(ms).unwrap_or_default()
    );
    Figures { batch, one_by_one, p50, p99, running_p50, running_p99 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_median_of_odd_even_and_no_rounds() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn the_benchs_slots_stay_within_a_workers_limit() {
        assert_eq!(slots(None), Ok(WORKER_SLOTS));
        assert_eq!(slots(Some("1")), Ok(1));
        assert_eq!(slots(Some(&MAX_SLOTS.to_string())), Ok(MAX_SLOTS));
        for bad in ["0", "4097", "-1", "abc", ""] {
            assert!(slots(Some(bad)).is_err_and(|e| e.contains("from 1 to 4096")), "{bad}");
        }
    }

    #[test]
    fn the_benchs_groups_stay_within_a_masters_default_bound() {
        assert_eq!(groups(None), Ok(None));
        assert_eq!(groups(Some("1")), Ok(Some(1)));
        assert_eq!(groups(Some("10000")), Ok(Some(10_000)));
        for bad in ["0", "10001", "-1", "abc", ""] {
            assert!(groups(Some(bad)).is_err_and(|e| e.contains("from 1 to 10000")), "{bad}");
        }
        assert_eq!(job("noop", 7, Some(5))["group"], "bench-2");
        assert!(job("noop", 7, None).get("group").is_none());
    }
}
