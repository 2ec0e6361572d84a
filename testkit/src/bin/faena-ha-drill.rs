//! `faena-ha-drill`: the chaos drill on several masters.
//!
//! `cargo run --release -p faena-testkit --bin faena-ha-drill -- [masters=2] [seconds=60] [jobs=10000]`
//!
//! N masters on one PostgreSQL and one Mosquitto (a 1 s lease, so that
//! many takeovers fit), three workers told of every master, `jobs` short
//! jobs submitted at once through any master and more all along. Every
//! 2–4 s, at random: `kill -9` of the leader, of a standby, of a worker or
//! of the broker (each started again a moment later), or the leader
//! paused (`SIGSTOP`) past its lease and woken. Then every acknowledged job
//! must have succeeded exactly once, and no master may have written
//! anything after a newer epoch's first write. `FAENA_DRILL_SEED` replays
//! a run's choices.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use faena_testkit::mosquitto::Mosquitto;
use faena_testkit::process::{Proc, signal};
use faena_testkit::{Cluster, MasterAddrs, MasterOpts, get_json};
use serde_json::{Value, json};

const LEASE_MS: u64 = 1_000;

/// xorshift64*: enough to pick, and replayable from its seed.
struct Pick(u64);

impl Pick {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}

struct Master {
    dir: String,
    proc: Option<Proc>,
    addrs: MasterAddrs,
}

async fn role(http: &str) -> Option<String> {
    get_json(http, "/healthz").await?["role"].as_str().map(str::to_owned)
}

/// Submits `n` jobs through `http` in batches; the acknowledged ids.
async fn submit(client: &reqwest::Client, http: &str, n: usize, tag: &str) -> Vec<String> {
    let jobs: Vec<Value> =
        (0..n).map(|i| json!({"kind": "noop", "params": {"payload": format!("{tag} {i}"), "delay_ms": 20}})).collect();
    let Ok(resp) = client.post(format!("http://{http}/api/jobs/batch")).json(&json!({"jobs": jobs})).send().await
    else {
        return vec![];
    };
    if resp.status() != 202 {
        return vec![];
    }
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    body["jobs"]
        .as_array()
        .map(|a| a.iter().filter_map(|j| j["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let masters_n = args.first().copied().unwrap_or(2).max(2) as usize;
    let seconds = args.get(1).copied().unwrap_or(60);
    let jobs = args.get(2).copied().unwrap_or(10_000) as usize;
    let seed = std::env::var("FAENA_DRILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    let mut pick = Pick(seed);
    let pg = faena_store::harness::Postgres::start();
    let broker_dir = tempfile::tempdir().expect("dir");
    let mut broker = Mosquitto::start(broker_dir.path()).await;
    let extra =
        vec![("FAENA_STORE_URL".to_owned(), pg.url()), ("FAENA_LEADER_LEASE_MS".to_owned(), LEASE_MS.to_string())];
    let mut c = Cluster::start(MasterOpts { broker: broker.broker(), extra, ..MasterOpts::default() }).await;
    let mut masters = vec![Master { dir: String::new(), proc: c.master.take(), addrs: c.addrs.clone() }];
    for i in 1..masters_n {
        let dir = format!("master-{}", i + 1);
        let (proc, addrs) = c.add_master(&dir).await;
        masters.push(Master { dir, proc: Some(proc), addrs });
    }
    let grpcs: Vec<String> = masters.iter().map(|m| m.addrs.grpc.clone()).collect();
    c.addrs.grpc = grpcs.join(",http://");
    let workers = ["w1", "w2", "w3"];
    for w in workers {
        c.add_worker(w, 8).await;
    }
    println!(
        "faena-ha-drill: {masters_n} masters, 3 workers x 8 slots, {jobs} jobs then more, {seconds} s of chaos, lease {LEASE_MS} ms, seed {seed}"
    );

    let https: Vec<String> = masters.iter().map(|m| m.addrs.http.clone()).collect();
    let client = faena_common::tls::http_client().timeout(Duration::from_secs(5)).build().expect("client");
    let acknowledged = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let mut first = 0;
    while first < jobs {
        let ids = submit(&client, &https[first % https.len()], 1_000.min(jobs - first), "first").await;
        first += ids.len();
        acknowledged.lock().extend(ids);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let (acknowledged, stop, https, client) = (acknowledged.clone(), stop.clone(), https.clone(), client.clone());
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let ids = submit(&client, &https[n % https.len()], 20, "more").await;
                acknowledged.lock().extend(ids);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let end = tokio::time::Instant::now() + Duration::from_secs(seconds);
    let mut events = std::collections::BTreeMap::<&str, usize>::new();
    while tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(2_000 + pick.below(2_000))).await;
        let mut roles = Vec::new();
        for m in &masters {
            roles.push(role(&m.addrs.http).await);
        }
        let leader = roles.iter().position(|r| r.as_deref() == Some("leader"));
        let standby = roles.iter().position(|r| r.as_deref() == Some("standby"));
        let event = match pick.below(5) {
            0 if leader.is_some() => "kill the leader",
            1 if standby.is_some() => "kill a standby",
            2 => "kill a worker",
            3 => "kill the broker",
            _ if leader.is_some() => "pause the leader",
            _ => "kill a worker",
        };
        println!(
            "{:>5.1} s  {event}",
            (Duration::from_secs(seconds) - (end - tokio::time::Instant::now())).as_secs_f64()
        );
        *events.entry(event).or_default() += 1;
        match event {
            "kill the leader" | "kill a standby" => {
                let i = if event == "kill the leader" { leader } else { standby }.expect("chosen only when there");
                masters[i].proc.as_mut().expect("running").kill9().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let (proc, addrs) = c.start_master_in(&masters[i].dir, Some(&masters[i].addrs)).await;
                masters[i].proc = Some(proc);
                masters[i].addrs = addrs;
            }
            "kill a worker" => {
                let w = workers[pick.below(3) as usize];
                if let Some(p) = c.workers.iter_mut().rev().find(|p| p.ready["worker_id"] == w) {
                    p.kill9().await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                c.add_worker(w, 8).await;
            }
            "kill the broker" => {
                broker.kill9().await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                broker.restart().await;
            }
            _ => {
                let pid = masters[leader.expect("chosen only when there")].proc.as_ref().expect("running").pid();
                let _ = signal(pid, "STOP");
                tokio::time::sleep(Duration::from_millis(LEASE_MS + 1_000)).await;
                let _ = signal(pid, "CONT");
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = feeder.await;

    let ids = acknowledged.lock().clone();
    // The acknowledged ids, in a table of the drill's own (too many for one command line).
    pg.sql("CREATE TABLE drill_acknowledged (id uuid PRIMARY KEY)");
    for chunk in ids.chunks(500) {
        let values = chunk.iter().map(|id| format!("('{id}')")).collect::<Vec<_>>().join(",");
        pg.sql(&format!("INSERT INTO drill_acknowledged VALUES {values} ON CONFLICT DO NOTHING"));
    }
    let list = "SELECT id FROM drill_acknowledged";
    let unfinished = format!("SELECT count(*) FROM jobs WHERE id IN ({list}) AND state <> 'succeeded'");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while pg.sql(&unfinished) != "0" {
        if tokio::time::Instant::now() > deadline {
            let left = pg.sql(&format!(
                "SELECT string_agg(id::text || ' ' || state, ', ') FROM (SELECT id, state FROM jobs WHERE id IN ({list}) AND state <> 'succeeded' LIMIT 20) j"
            ));
            panic!("acknowledged jobs not succeeded after the drill: {left}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stored = pg.sql(&format!("SELECT count(*) FROM jobs WHERE id IN ({list})"));
    let distinct = pg.sql("SELECT count(*) FROM drill_acknowledged");
    let twice = pg.sql(
        "SELECT count(*) FROM (SELECT job_id FROM transitions WHERE state = 'succeeded' GROUP BY job_id HAVING count(*) > 1) d",
    );
    let late = pg.sql(
        "WITH firsts AS (SELECT epoch, min(n) AS first FROM transitions WHERE epoch IS NOT NULL GROUP BY epoch)
         SELECT count(*) FROM transitions t JOIN firsts f ON f.epoch > t.epoch AND t.n > f.first",
    );
    let epochs = pg.sql("SELECT epoch FROM faena_leader");
    println!("events       {events:?}");
    println!(
        "jobs         {} acknowledged, {stored} stored, all succeeded, {twice} ended twice; {epochs} epochs; {late} writes of a deposed leader after a newer one's first",
        ids.len()
    );
    assert_eq!(distinct, ids.len().to_string(), "every acknowledgement names a job of its own");
    assert_eq!(stored, ids.len().to_string(), "every acknowledged job is stored");
    assert_eq!(twice, "0", "no job ended twice");
    assert_eq!(late, "0", "no deposed leader wrote after the takeover");
}
