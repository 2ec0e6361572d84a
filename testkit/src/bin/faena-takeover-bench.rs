//! `faena-takeover-bench`: how long losing the leading master costs.
//!
//! `cargo run --release -p faena-testkit --bin faena-takeover-bench -- [rounds=20] [lease ms=3000]`
//!
//! Two masters on one PostgreSQL (the store's harness) and one Mosquitto,
//! two workers told of both (`FAENA_MASTER_URL` with both), and a steady
//! load of short `noop` jobs submitted through either master. Each round
//! kills the leader with `kill -9` and times, from the kill, the first
//! unit the new leader dispatched (its first `running` row in the store
//! under the new epoch); the killed master is started again and stands
//! by. At the end every acknowledged job must have succeeded exactly once.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use faena_testkit::mosquitto::Mosquitto;
use faena_testkit::process::Proc;
use faena_testkit::{Cluster, MasterAddrs, MasterOpts, eventually, get_json};
use serde_json::{Value, json};

fn now_ms() -> i64 {
    faena_proto::mqtt::now_ms() as i64
}

async fn health(http: &str) -> Option<Value> {
    get_json(http, "/healthz").await
}

/// One master of the pair: its directory in the cluster's, its process, its addresses.
struct Master {
    dir: &'static str,
    proc: Option<Proc>,
    addrs: MasterAddrs,
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let rounds = args.first().copied().unwrap_or(20) as usize;
    let lease = args.get(1).copied().unwrap_or(3_000);
    let pg = faena_store::harness::Postgres::start();
    let broker_dir = tempfile::tempdir().expect("dir");
    let mosquitto = Mosquitto::start(broker_dir.path()).await;
    let extra = vec![("FAENA_STORE_URL".to_owned(), pg.url()), ("FAENA_LEADER_LEASE_MS".to_owned(), lease.to_string())];
    let mut c = Cluster::start(MasterOpts { broker: mosquitto.broker(), extra, ..MasterOpts::default() }).await;
    let (second, b) = c.add_master("second").await;
    let mut masters = [
        Master { dir: "", proc: c.master.take(), addrs: c.addrs.clone() },
        Master { dir: "second", proc: Some(second), addrs: b.clone() },
    ];
    // Workers are told of both masters ("http://" is put in front of it).
    c.addrs.grpc = format!("{},http://{}", masters[0].addrs.grpc, b.grpc);
    for w in ["w1", "w2"] {
        c.add_worker(w, 8).await;
    }
    println!(
        "faena-takeover-bench: {rounds} rounds, lease {lease} ms, 2 masters, 2 workers x 8 slots, PostgreSQL 127.0.0.1:{}",
        pg.port
    );

    // The steady load: a job every 10 ms through either master, retried
    // until acknowledged.
    let acknowledged = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        let https = [masters[0].addrs.http.clone(), b.http.clone()];
        tokio::spawn(async move {
            let client = faena_common::tls::http_client().timeout(Duration::from_secs(2)).build().expect("client");
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let body = json!({"kind": "noop", "params": {"delay_ms": 5}});
                let url = format!("http://{}/api/jobs", https[n % 2]);
                if let Ok(resp) = client.post(url).json(&body).send().await
                    && resp.status() == 202
                    && let Ok(v) = resp.json::<Value>().await
                    && let Some(id) = v["id"].as_str()
                {
                    acknowledged.lock().push(id.to_owned());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    let mut takeovers = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        // A leader that has dispatched under its epoch, and a standby.
        let (leader, epoch) = eventually("one master leads and dispatches", || {
            let https: Vec<String> = masters.iter().map(|m| m.addrs.http.clone()).collect();
            let pg = &pg;
            async move {
                let (mut lead, mut standing) = (None, 0);
                for (i, http) in https.iter().enumerate() {
                    let h = health(http).await?;
                    match h["role"].as_str() {
                        Some("leader") => lead = Some((i, h["epoch"].as_i64()?)),
                        Some("standby") => standing += 1,
                        _ => return None,
                    }
                }
                let (i, epoch) = lead.filter(|_| standing == 1)?;
                let ran =
                    pg.sql(&format!("SELECT count(*) FROM transitions WHERE epoch = {epoch} AND state = 'running'"));
                (ran != "0").then_some((i, epoch))
            }
        })
        .await;
        let killed_at = now_ms();
        masters[leader].proc.as_mut().expect("running").kill9().await;
        let first = eventually("the new leader dispatches", || {
            let pg = &pg;
            async move {
                let at = pg.sql(&format!(
                    "SELECT coalesce(min(at), 0) FROM transitions WHERE epoch > {epoch} AND state = 'running'"
                ));
                at.parse::<i64>().ok().filter(|at| *at > 0)
            }
        })
        .await;
        let took = (first - killed_at).max(0) as f64;
        println!("round {round:>2}: leader {} killed, new leader dispatched after {took:>6.0} ms", leader + 1);
        takeovers.push(took);
        let m = &masters[leader];
        let (proc, addrs) = c.start_master_in(m.dir, Some(&m.addrs)).await;
        masters[leader].proc = Some(proc);
        masters[leader].addrs = addrs;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = load.await;

    let ids = acknowledged.lock().clone();
    let list = ids.iter().map(|id| format!("'{id}'")).collect::<Vec<_>>().join(",");
    let unfinished = format!(
        "SELECT coalesce(string_agg(id::text || ' ' || state, ', '), '') FROM jobs WHERE id IN ({list}) AND state <> 'succeeded'"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = pg.sql(&unfinished);
        if left.is_empty() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "acknowledged jobs not succeeded: {left}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing =
        ids.len() - pg.sql(&format!("SELECT count(*) FROM jobs WHERE id IN ({list})")).parse::<usize>().unwrap_or(0);
    assert_eq!(missing, 0, "acknowledged jobs missing from the store");
    let succeeded = pg.sql(&format!("SELECT count(*) FROM jobs WHERE state = 'succeeded' AND id IN ({list})"));
    let twice = pg.sql(
        "SELECT count(*) FROM (SELECT job_id FROM transitions WHERE state = 'succeeded' GROUP BY job_id HAVING count(*) > 1) d",
    );
    takeovers.sort_by(f64::total_cmp);
    let pick = |q: f64| takeovers[((takeovers.len() as f64 * q).ceil() as usize).clamp(1, takeovers.len()) - 1];
    println!(
        "takeover     {rounds} kills  p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  (lease {lease} ms)",
        pick(0.5),
        pick(0.99),
        takeovers[takeovers.len() - 1]
    );
    println!("jobs         {} acknowledged, {succeeded} succeeded, {twice} ended twice", ids.len());
    assert_eq!(succeeded, ids.len().to_string(), "every acknowledged job succeeded");
    assert_eq!(twice, "0", "no job ended twice");
}
