//! `faena-list-bench`: `GET /api/jobs` on a store of 1,000,000 jobs, and
//! what the listing's indexes cost each write.
//!
//! `cargo run --release -p faena-testkit --bin faena-list-bench -- [jobs] [rounds]`
//!
//! 1. Write cost: the same 100,000 jobs (inserted, then finished: what
//!    every job costs the store) into a store with the listing's indexes
//!    and into one without them; rows/s of each and their ratio.
//! 2. Fills a store with `jobs` jobs (default 1,000,000) as a month of
//!    traffic looks: four kinds, five states, three priorities, twenty
//!    workers, a mining job's units, oldest first.
//! 3. Times each filtered page (`rounds` times each, default 200): the
//!    first page and pages deep in the history (a cursor picked at random),
//!    in the store alone, then (the bench having let go of the store, which
//!    on SQLite is one process's at a time) over HTTP from a release
//!    `faena-master` on it, as a client sees it. Prints p50 / p99 / max.
//!
//! `FAENA_BENCH_STORE=postgres`: steps 2 and 3 on a PostgreSQL of the
//! bench's own (the test harness's: initdb on a free loopback port); step 1
//! is SQLite's and is skipped.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use faena_proto::ids::JobId;
use faena_proto::jobs::{JobKind, JobSpec, JobState, Priority};
use faena_store::StoreOp;
use faena_store::{JobFilter, Retention, Store, SyncMode};
use faena_testkit::bench::committed;
use serde_json::json;

const DAY_MS: u64 = 86_400_000;
const START_MS: u64 = 1_790_000_000_000;

/// A small deterministic generator: the same store every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn spec(kind: JobKind, i: u64) -> JobSpec {
    let params = match kind {
        JobKind::Noop => json!({"payload": i}),
        JobKind::RandomxHash => json!({"key": "test key 000", "input": format!("input {i}")}),
        JobKind::RandomxMine => json!({"key": "6b", "blob": "00".repeat(76), "difficulty": 1000, "nonce_count": 1000}),
        JobKind::AiQuery => json!({"prompt": format!("question {i}")}),
        JobKind::Custom(_) => json!({"text": format!("text {i}")}),
    };
    JobSpec::parse_kind(kind, params).expect("valid")
}

/// Writes `n` jobs as the engine would: inserted, dispatched, finished.
fn fill(store: &Store, n: u64, rng: &mut Rng) {
    let span = 30 * DAY_MS;
    let mut mine_parent = None;
    for i in 0..n {
        let at_ms = START_MS + span * i / n.max(1);
        let kind = match rng.below(100) {
            0..50 => JobKind::Noop,
            50..75 => JobKind::RandomxHash,
            75..95 => JobKind::AiQuery,
            _ => JobKind::RandomxMine,
        };
        let priority = match rng.below(10) {
            0 => Priority::High,
            1 => Priority::Low,
            _ => Priority::Normal,
        };
        let state = match rng.below(1000) {
            0..850 => JobState::Succeeded,
            850..930 => JobState::Failed,
            930..999 => JobState::Cancelled,
            _ => JobState::Queued,
        };
        let id = JobId::new();
        // One job in ten of a mining job is one of its units.
        let parent = match kind {
            JobKind::RandomxMine if rng.below(10) > 0 => mine_parent,
            _ => None,
        };
        if kind == JobKind::RandomxMine && parent.is_none() {
            mine_parent = Some(id);
        }
        let seq = i;
        store.write(StoreOp::Insert {
            id,
            spec: Arc::new(spec(kind, i)),
            priority,
            seq,
            at_ms,
            parent,
            retry_of: None,
            state: JobState::Queued,
            opts: None,
            run_at_ms: None,
        });
        if state == JobState::Queued {
            continue;
        }
        let worker = format!("worker-{}", rng.below(20) + 1);
        let token = faena_proto::ids::FencingToken::new();
        store.write(StoreOp::Dispatched { id, attempt: 1, worker: worker.clone(), token, at_ms: at_ms + 1 });
        let (result, error) = match state {
            JobState::Succeeded => (Some(json!({"payload": i})), None),
            JobState::Failed => (None, Some("failed on purpose".to_owned())),
            _ => (None, None),
        };
        store.write(StoreOp::Finished {
            id,
            state,
            attempts: 1,
            worker: Some(worker),
            result,
            error,
            at_ms: at_ms + 5,
            release_key: None,
        });
        if i % 50_000 == 0 {
            committed(store);
        }
    }
    committed(store);
}

fn write_rate(dir: &Path, with_indexes: bool, n: u64) -> f64 {
    let path = dir.join(format!("write-{with_indexes}.db"));
    let store = Store::open(&path, SyncMode::Normal, Retention::OFF).expect("store");
    if !with_indexes {
        let conn = rusqlite::Connection::open(&path).expect("db");
        for index in ["jobs_state", "jobs_kind", "jobs_worker", "jobs_priority"] {
            conn.execute_batch(&format!("DROP INDEX {index}")).expect("drop");
        }
    }
    let started = Instant::now();
    fill(&store, n, &mut Rng(7));
    n as f64 / started.elapsed().as_secs_f64()
}

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort();
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1000.0;
    format!("p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms", at(0.5), at(0.99), at(1.0))
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let jobs = args.first().copied().unwrap_or(1_000_000);
    let rounds = args.get(1).copied().unwrap_or(200) as usize;
    let dir = tempfile_dir();

    let pg =
        (std::env::var("FAENA_BENCH_STORE").as_deref() == Ok("postgres")).then(faena_store::harness::Postgres::start);

    // 1. What the indexes cost a write.
    if pg.is_none() {
        let n = 100_000;
        let with = write_rate(&dir, true, n);
        let without = write_rate(&dir, false, n);
        println!("write cost of the listing's indexes ({n} jobs, each inserted, dispatched, finished; sync normal):");
        println!("  without the indexes {without:>9.0} jobs/s");
        println!("  with the indexes    {with:>9.0} jobs/s   ratio {:.2}", with / without);
    }

    // 2. A month of traffic.
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let store = match &pg {
        Some(pg) => {
            println!("store: PostgreSQL on 127.0.0.1:{}", pg.port);
            Store::connect(&pg.url(), Retention::OFF).await.expect("store")
        }
        None => Store::open(&data.join("faena.db"), SyncMode::Normal, Retention::OFF).expect("store"),
    };
    let started = Instant::now();
    fill(&store, jobs, &mut Rng(42));
    println!("filled {jobs} jobs in {:.1} s", started.elapsed().as_secs_f64());
    if let Some(pg) = &pg {
        // The statistics a store that grew over a month has (autovacuum
        // analyses a table each time it grows by a tenth); a bulk fill in
        // seconds is ahead of them.
        pg.sql("ANALYZE");
    }
    let newest = store.list(&JobFilter { limit: 1, ..Default::default() }).await.expect("list").jobs;
    assert_eq!(newest.len(), 1);

    let since_recent = START_MS + 29 * DAY_MS;
    let since_month = START_MS + DAY_MS;
    let queries: Vec<(String, JobFilter)> = vec![
        ("(none)".into(), JobFilter::default()),
        ("state=failed".into(), JobFilter { state: Some(JobState::Failed), ..Default::default() }),
        (
            "kind=ai.query&state=succeeded".into(),
            JobFilter { kind: Some(JobKind::AiQuery), state: Some(JobState::Succeeded), ..Default::default() },
        ),
        ("kind=ai.query".into(), JobFilter { kind: Some(JobKind::AiQuery), ..Default::default() }),
        ("kind=randomx.mine".into(), JobFilter { kind: Some(JobKind::RandomxMine), ..Default::default() }),
        ("worker=worker-7".into(), JobFilter { worker: Some("worker-7".into()), ..Default::default() }),
        (
            "priority=high&kind=randomx.hash".into(),
            JobFilter { priority: Some(Priority::High), kind: Some(JobKind::RandomxHash), ..Default::default() },
        ),
        (
            "kind=randomx.mine&state=failed".into(),
            JobFilter { kind: Some(JobKind::RandomxMine), state: Some(JobState::Failed), ..Default::default() },
        ),
        ("state=queued".into(), JobFilter { state: Some(JobState::Queued), ..Default::default() }),
        (format!("since={since_recent}"), JobFilter { since_ms: Some(since_recent), ..Default::default() }),
        (
            format!("since={since_month}&state=cancelled"),
            JobFilter { since_ms: Some(since_month), state: Some(JobState::Cancelled), ..Default::default() },
        ),
    ];
    // 3. Each page in the store alone, then over HTTP from a master on it
    // (the same cursors: one generator seed a pass). A SQLite store is
    // one process's at a time, so the bench lets go of it before the
    // master opens it.
    let pages = |rng: &mut Rng, deep: bool| -> Vec<Option<i64>> {
        (0..rounds).map(|_| deep.then(|| 1 + rng.below(jobs * 9 / 10) as i64 + (jobs / 10) as i64)).collect()
    };
    let mut in_store = Vec::new();
    let mut rng = Rng(9);
    for (_, filter) in &queries {
        for deep in [false, true] {
            let (mut times, mut lens) = (Vec::new(), Vec::new());
            for cursor in pages(&mut rng, deep) {
                let t = Instant::now();
                let page = store.list(&JobFilter { before: cursor, limit: 50, ..filter.clone() }).await.expect("list");
                times.push(t.elapsed());
                lens.push(page.jobs.len());
            }
            in_store.push((times, lens));
        }
    }
    drop(store);

    // The master on it.
    let master = std::env::current_exe().expect("exe").with_file_name("faena-master");
    let port = free_port();
    let mut command = std::process::Command::new(&master);
    if let Some(pg) = &pg {
        command.env("FAENA_STORE_URL", pg.url());
    }
    let mut child = command
        .env("FAENA_DATA_DIR", &data)
        // The month of history is the bench's fixed data: nothing ages out
        // of it while pages are timed.
        .env("FAENA_RETENTION", "off")
        .env("FAENA_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("FAENA_GRPC_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("FAENA_MQTT_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("FAENA_WEB_DIR", dir.join("no-web"))
        .env("FAENA_LOG_JSON", "true")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("master.log")).expect("master log"))
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start ({e}): cargo build --release --bins", master.display()));
    let http = faena_common::tls::http_client().no_proxy().build().expect("client");
    let base = format!("http://127.0.0.1:{port}");
    let up = Instant::now();
    while http.get(format!("{base}/healthz")).send().await.map(|r| !r.status().is_success()).unwrap_or(true) {
        let exited = child.try_wait().expect("master status");
        if exited.is_some() || up.elapsed() > Duration::from_secs(120) {
            let log = std::fs::read_to_string(dir.join("master.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!("the master did not come up ({exited:?}); its log ends:\n{}", tail.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    println!(
        "\nGET /api/jobs?<filter>&limit=50 on {jobs} jobs, {rounds} rounds each (first page, then a random deep page):"
    );
    let mut rng = Rng(9);
    let mut in_store = in_store.into_iter();
    for (query, _) in &queries {
        for deep in [false, true] {
            let (store_times, lens) = in_store.next().expect("timed in the store");
            let mut over_http = Vec::new();
            for (cursor, len) in pages(&mut rng, deep).into_iter().zip(lens) {
                let mut url = format!("{base}/api/jobs?limit=50");
                if query != "(none)" {
                    url.push('&');
                    url.push_str(query);
                }
                if let Some(c) = cursor {
                    url.push_str(&format!("&cursor={c}"));
                }
                let t = Instant::now();
                let resp = http.get(&url).send().await.expect("GET");
                assert!(resp.status().is_success(), "{url}: {}", resp.status());
                let body: serde_json::Value = resp.json().await.expect("json");
                over_http.push(t.elapsed());
                assert_eq!(body["jobs"].as_array().map(Vec::len), Some(len), "{url}");
            }
            let page = if deep { "deep " } else { "first" };
            println!("  {query:<42} {page}  http {}", percentiles(over_http));
            println!("  {:<42} {page}  store {}", "", percentiles(store_times));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("faena-list-bench-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}
