//! `faena-restore-bench`: how long a master that starts, or takes over,
//! takes to read back its unfinished jobs, on each backend.
//!
//! `cargo run --release -p faena-testkit --bin faena-restore-bench -- [jobs=100000] [rounds=5]`
//!
//! Stores `jobs` queued jobs (one in a hundred with a priority change, so
//! the count of changes each job made is read back too) in a SQLite file
//! and in a PostgreSQL of its own (the store's harness: Debian's server,
//! initdb'd on a free loopback port), then reads them back `rounds` times
//! on each, the backends taking turns. Prints each round and the medians,
//! and PostgreSQL's against SQLite's.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use faena_proto::ids::JobId;
use faena_proto::jobs::{JobSpec, JobState, Priority};
use faena_store::harness::Postgres;
use faena_store::{Retention, Store, StoreOp, SyncMode};
use faena_testkit::bench::{committed, median};

/// Stores `jobs` queued jobs, every hundredth moved to high priority.
fn fill(store: &Store, jobs: u64) {
    let spec = Arc::new(JobSpec::parse("noop", serde_json::json!({})).expect("valid"));
    for seq in 0..jobs {
        let id = JobId::new();
        store.write(StoreOp::Insert {
            id,
            spec: spec.clone(),
            priority: Priority::Normal,
            seq,
            at_ms: 1_000 + seq,
            parent: None,
            retry_of: None,
            state: JobState::Queued,
            opts: None,
            run_at_ms: None,
        });
        if seq % 100 == 0 {
            let (priority, was, state) = (Priority::High, Priority::Normal, JobState::Queued);
            store.write(StoreOp::Reprioritised { id, priority, was, state, attempts: 0, at_ms: 1_000 + seq });
        }
    }
    committed(store);
}

/// One read back: its time, after checking what it read.
async fn restore(store: &Store, jobs: u64) -> Duration {
    let started = Instant::now();
    let restored = store.load_unfinished().await.expect("loads");
    let took = started.elapsed();
    assert_eq!(restored.len() as u64, jobs, "every job read back");
    let moved = restored.iter().filter(|j| j.priority_changes == 1).count() as u64;
    assert_eq!(moved, jobs.div_ceil(100), "each change counted");
    took
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let jobs = args.first().copied().unwrap_or(100_000);
    let rounds = args.get(1).copied().unwrap_or(5).max(1) as usize;
    let dir = tempfile::tempdir().expect("tmp dir");
    let pg = Postgres::start();
    let sqlite = Store::open(&dir.path().join("jobs.db"), SyncMode::Full, Retention::OFF).expect("opens");
    let postgres = Store::connect(&pg.url(), Retention::OFF).await.expect("connects");
    for (name, store) in [("sqlite", &sqlite), ("postgres", &postgres)] {
        let started = Instant::now();
        // `fill` waits for the commit on this thread; the runtime's other
        // threads keep the PostgreSQL connection going meanwhile.
        tokio::task::block_in_place(|| fill(store, jobs));
        println!("{name}: {jobs} jobs stored in {:.2} s", started.elapsed().as_secs_f64());
    }
    let (mut s, mut p) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // The backends take turns, each first in every other round.
        let order: [(&str, &Store); 2] = match round % 2 {
            0 => [("sqlite", &sqlite), ("postgres", &postgres)],
            _ => [("postgres", &postgres), ("sqlite", &sqlite)],
        };
        for (name, store) in order {
            let took = restore(store, jobs).await;
            println!("round {}: {name} read back {jobs} jobs in {:.1} ms", round + 1, took.as_secs_f64() * 1e3);
            if name == "sqlite" { s.push(took.as_secs_f64()) } else { p.push(took.as_secs_f64()) }
        }
    }
    let (s, p) = (median(s), median(p));
    let per = |secs: f64| secs * 1e6 / jobs as f64;
    println!(
        "median: sqlite {:.1} ms ({:.2} µs a job), postgres {:.1} ms ({:.2} µs a job)",
        s * 1e3,
        per(s),
        p * 1e3,
        per(p)
    );
    println!("postgres / sqlite: {:.2}", p / s);
}
