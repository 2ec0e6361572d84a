//! `faena-ha-bench`: what a standby master costs when nothing fails.
//!
//! `cargo run --release -p faena-testkit --bin faena-ha-bench -- [jobs=20000] [low-load samples=2000]`
//!
//! One PostgreSQL (the store's harness) and one Mosquitto; a master with
//! `faena-bench`'s two workers runs `faena-bench`'s phases alone, then
//! beside a standby (clients still calling the leader), then through the
//! standby (every request forwarded), then alone again, all in one run.
//! Prints each run and the ratios to the first.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_testkit::bench::{Figures, jobs_and_samples, phases, worker_slots};
use faena_testkit::mosquitto::Mosquitto;
use faena_testkit::{Api, Cluster, MasterOpts};

#[tokio::main]
async fn main() {
    let (jobs, samples) = jobs_and_samples();
    let slots = worker_slots();
    let pg = faena_store::harness::Postgres::start();
    let broker_dir = tempfile::tempdir().expect("dir");
    let mosquitto = Mosquitto::start(broker_dir.path()).await;
    let extra = vec![("FAENA_STORE_URL".to_owned(), pg.url())];
    let opts = MasterOpts { broker: mosquitto.broker(), extra, heartbeat_ms: 2000, ..MasterOpts::default() };
    let mut c = Cluster::start(opts).await;
    c.add_worker("bench-1", slots).await;
    c.add_worker("bench-2", slots).await;
    c.wait_workers(2).await;
    let pid = c.master().pid();
    println!(
        "faena-ha-bench: {jobs} noop jobs, 2 workers x {slots} slots, PostgreSQL 127.0.0.1:{}, Mosquitto, {} cores",
        pg.port,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
    );

    println!("one master:");
    let alone = phases(&c, pid, "noop", jobs, samples).await;
    let (mut standby, b) = c.add_master("standby").await;
    println!("leader and standby, clients calling the leader:");
    let beside = phases(&c, pid, "noop", jobs, samples).await;
    let leader = std::mem::replace(&mut c.api, Api::new(&b.http));
    println!("leader and standby, clients calling the standby (forwarded):");
    let through = phases(&c, pid, "noop", jobs, samples).await;
    c.api = leader;
    standby.terminate().await;
    println!("one master again:");
    let again = phases(&c, pid, "noop", jobs, samples).await;

    // Against the mean of the two runs alone (the first warms the store).
    let base = |f: fn(&Figures) -> f64| (f(&alone) + f(&again)) / 2.0;
    let (batch, one, p99) = (base(|f| f.batch.0), base(|f| f.one_by_one.0), base(|f| f.p99));
    println!();
    println!(
        "alone (mean of both runs)          batch {batch:.0} jobs/s   one-by-one {one:.0} jobs/s   low-load p99 {p99:.2} ms"
    );
    for (name, f) in [("beside a standby / alone", &beside), ("through the standby / alone", &through)] {
        println!(
            "{name:<34} batch jobs/s {:.2}x   one-by-one jobs/s {:.2}x   low-load p99 {:.2} ms",
            f.batch.0 / batch,
            f.one_by_one.0 / one,
            f.p99
        );
    }
}
