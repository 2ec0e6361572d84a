//! `faena-writer-bench`: the SQLite store's writer alone, the one thread
//! every job passes, beside the least SQLite does to keep a job.
//!
//! `cargo run --release -p faena-testkit --bin faena-writer-bench -- [jobs] [group] [rounds] [shape] [shards]`
//!
//! `jobs` `noop` jobs (default 100,000) go through a store of their own
//! (SQLite, fsync on every commit, as a master's default) in commit groups
//! of `group` (256), each job stored, dispatched and ended. `shape` says
//! how those fall into groups: `apart` (the default) stores a group's jobs
//! and dispatches and ends them in the next, as a master at full load
//! writes them (a job waits in the queue for a slot); `arrival` stores and
//! dispatches them in one group and ends them in the next (free slots take
//! each job as it comes: one by one); `together` does all three in one
//! group. The floor is the same three
//! writes a job (an insert, two updates by id) on a bare table with no
//! index but its key and no history, in the same groups with the same
//! fsync. `rounds` (default 3) alternate the two. Prints each round's
//! CPU a job of the writer's threads and of the floor's, and the ratio of
//! their medians: how many bare SQLite jobs one Faena job costs; then the
//! medians of their jobs/s.
//!
//! `shards` (default 1) splits the jobs over that many stores side by side,
//! each its own file and writer thread, fed by a thread of its own (and the
//! floor over as many files): what a store with a writer per shard could
//! commit, and whether the commits' fsyncs of separate files overlap.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use faena_proto::ids::{FencingToken, JobId};
use faena_proto::jobs::{JobKind, JobSpec, JobState, Priority};
use faena_store::{Retention, Store, StoreOp, SyncMode};
use faena_testkit::bench::{committed, median};
use faena_testkit::process::{this_thread_cpu, thread_cpu};
use serde_json::json;

fn cpu_of(thread: &str) -> f64 {
    thread_cpu(std::process::id() as i32).get(thread).map(|t| t.cpu).unwrap_or(0.0)
}

/// How a job's three writes fall into commit groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Stored in one group, dispatched and ended in the next: a full
    /// queue, where a job waits for a slot (batches at full load).
    Apart,
    /// Stored and dispatched in one group, ended in the next: workers with
    /// free slots take each job as it arrives (one by one).
    Arrival,
    /// All three in one group.
    Together,
}

impl Shape {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "apart" => Some(Self::Apart),
            "arrival" => Some(Self::Arrival),
            "together" => Some(Self::Together),
            _ => None,
        }
    }
}

/// The store's writer over `shards` stores side by side: CPU seconds a
/// job (every writer thread's), jobs a second (all of them).
fn writer(dir: &Path, jobs: u64, group: u64, shape: Shape, shards: u64) -> (f64, f64) {
    let stores: Vec<Store> = (0..shards)
        .map(|k| Store::open(&dir.join(format!("faena-{k}.db")), SyncMode::Full, Retention::OFF).expect("store"))
        .collect();
    let (before, started) = (cpu_of("faena-store"), Instant::now());
    std::thread::scope(|s| {
        for store in &stores {
            s.spawn(move || feed(store, jobs / shards, group, shape));
        }
    });
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_of("faena-store") - before;
    (cpu / jobs as f64, jobs as f64 / wall)
}

/// Stores, dispatches and ends `jobs` jobs through `store`, a commit group
/// at a time.
fn feed(store: &Store, jobs: u64, group: u64, shape: Shape) {
    let now = faena_proto::mqtt::now_ms();
    let dispatch = |ids: &[JobId], g: u64| {
        let worker = format!("bench-{}", g % 2 + 1);
        for id in ids {
            let (worker, token) = (worker.clone(), FencingToken::new());
            store.write(StoreOp::Dispatched { id: *id, attempt: 1, worker, token, at_ms: now + 1 });
        }
    };
    let finish = |ids: &[JobId], g: u64| {
        for id in ids {
            store.write(StoreOp::Finished {
                id: *id,
                state: JobState::Succeeded,
                attempts: 1,
                worker: Some(format!("bench-{}", g % 2 + 1)),
                result: Some(json!({"ok": true})),
                error: None,
                at_ms: now + 2,
                release_key: None,
            });
        }
    };
    let groups = jobs / group;
    let mut last: Vec<JobId> = Vec::new();
    // One group more than there are jobs' groups, to end the last of them.
    for g in 0..=groups {
        let ids: Vec<JobId> = if g < groups { (0..group).map(|_| JobId::new()).collect() } else { Vec::new() };
        for (i, id) in ids.iter().enumerate() {
            let seq = g * group + i as u64;
            let spec = JobSpec::parse_kind(JobKind::Noop, json!({"payload": seq})).expect("noop");
            store.write(StoreOp::Insert {
                id: *id,
                spec: Arc::new(spec),
                priority: Priority::Normal,
                seq,
                at_ms: now,
                parent: None,
                retry_of: None,
                state: JobState::Queued,
                opts: None,
                run_at_ms: None,
            });
        }
        let before = g.wrapping_sub(1);
        match shape {
            Shape::Apart => {
                dispatch(&last, before);
                finish(&last, before);
            }
            Shape::Arrival => {
                dispatch(&ids, g);
                finish(&last, before);
            }
            Shape::Together => {
                dispatch(&ids, g);
                finish(&ids, g);
            }
        }
        // One group at a time, as a master's commit groups come.
        committed(store);
        last = ids;
    }
}

/// The floor over `shards` files, a thread each: CPU seconds a job, jobs a
/// second.
fn floor(dir: &Path, jobs: u64, group: u64, shards: u64) -> (f64, f64) {
    let started = Instant::now();
    let floors: Vec<_> = (0..shards)
        .map(|k| {
            let path = dir.join(format!("floor-{k}.db"));
            std::thread::Builder::new()
                .name("faena-floor".into())
                .spawn(move || bare(&path, jobs / shards, group))
                .expect("thread")
        })
        .collect();
    let cpu: f64 = floors.into_iter().map(|f| f.join().expect("the floor ran")).sum();
    (cpu / jobs as f64, jobs as f64 / started.elapsed().as_secs_f64())
}

/// The same three writes a job on a bare table, on this thread: its CPU
/// seconds.
fn bare(path: &Path, jobs: u64, group: u64) -> f64 {
    let mut conn = rusqlite::Connection::open(path).expect("opens");
    conn.pragma_update(None, "journal_mode", "WAL").expect("wal");
    conn.pragma_update(None, "synchronous", "FULL").expect("full");
    conn.execute_batch("CREATE TABLE jobs (id TEXT PRIMARY KEY, state TEXT NOT NULL, body TEXT)").expect("table");
    let before = this_thread_cpu();
    for g in 0..jobs / group {
        let ids: Vec<String> = (0..group).map(|_| JobId::new().to_string()).collect();
        let tx = conn.transaction().expect("begins");
        for (i, id) in ids.iter().enumerate() {
            let body = json!({"payload": g * group + i as u64}).to_string();
            tx.prepare_cached("INSERT INTO jobs (id, state, body) VALUES (?1, 'queued', ?2)")
                .and_then(|mut s| s.execute(rusqlite::params![id, body]))
                .expect("inserts");
        }
        for id in &ids {
            tx.prepare_cached("UPDATE jobs SET state = 'running' WHERE id = ?1")
                .and_then(|mut s| s.execute([id]))
                .expect("updates");
        }
        for id in &ids {
            tx.prepare_cached("UPDATE jobs SET state = 'succeeded', body = ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(rusqlite::params![id, json!({"ok": true}).to_string()]))
                .expect("updates");
        }
        tx.commit().expect("commits");
    }
    this_thread_cpu() - before
}

fn main() {
    let arg = |i: usize, default: u64| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (jobs, group, rounds) = (arg(1, 100_000).max(1), arg(2, 256).clamp(1, 10_000), arg(3, 3).clamp(1, 100));
    let shards = arg(5, 1).clamp(1, 64);
    // Every store gets whole groups, as many as the others.
    let jobs = jobs.div_ceil(group * shards) * group * shards;
    let named = std::env::args().nth(4).unwrap_or_else(|| "apart".into());
    let Some(shape) = Shape::parse(&named) else {
        eprintln!("the shape is apart, arrival or together, not '{named}'");
        std::process::exit(2);
    };
    println!(
        "faena-writer-bench: {jobs} jobs in commit groups of {group} ({named}), {shards} store(s) side by side, \
         fsync on each commit, {rounds} rounds"
    );
    let (mut ours, mut bare, mut ours_rate, mut bare_rate) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let dir = tempfile::tempdir().expect("dir");
        let (w, w_rate) = writer(dir.path(), jobs, group, shape, shards);
        let (f, f_rate) = floor(dir.path(), jobs, group, shards);
        println!(
            "round {round}: writer {:6.2} µs/job {w_rate:7.0} jobs/s | floor {:6.2} µs/job {f_rate:7.0} jobs/s",
            w * 1e6,
            f * 1e6
        );
        ours.push(w);
        bare.push(f);
        ours_rate.push(w_rate);
        bare_rate.push(f_rate);
    }
    let (w, f) = (median(ours), median(bare));
    println!("medians: writer {:.2} µs/job, floor {:.2} µs/job, writer / floor {:.2}x", w * 1e6, f * 1e6, w / f);
    println!("medians: writer {:.0} jobs/s, floor {:.0} jobs/s", median(ours_rate), median(bare_rate));
}
