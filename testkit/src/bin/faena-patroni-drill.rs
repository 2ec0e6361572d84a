//! `faena-patroni-drill`: the store's own failover under a master.
//!
//! `cargo run --release -p faena-testkit --bin faena-patroni-drill -- [jobs acknowledged before the kill=500]`
//!
//! A real Patroni pair (Debian's `patroni` and `etcd-server`, everything
//! on loopback, synchronous replication) holds the store; a master reaches
//! it through a libpq multi-host URL (`target_session_attrs=read-write`),
//! a worker runs its jobs, and jobs are submitted steadily. Then the
//! primary's node dies (`kill -9` of its Patroni and its PostgreSQL): the
//! replica is promoted, the master reconnects to it, and the drill prints
//! how long the store was gone for the master's clients, and checks that
//! every job acknowledged before the kill (and after) is there and ended
//! once.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use faena_testkit::{Cluster, MasterOpts, free_port};
use serde_json::{Value, json};

const SUPERUSER_PASSWORD: &str = "drill-superuser";
const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

/// A command run as the `postgres` account when this runs as root
/// (PostgreSQL refuses root): the process itself, not a `runuser` in
/// front of it, so that killing it kills it.
fn as_postgres(program: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(program);
    if is_root() {
        let id = |flag: &str| {
            let out = Command::new("id").args([flag, "postgres"]).output().expect("id");
            String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().expect("the postgres account")
        };
        c.uid(id("-u")).gid(id("-g")).env("HOME", "/var/lib/postgresql");
    }
    c
}

/// One Patroni node: its ports and directory.
struct Node {
    name: String,
    pg_port: u16,
    api_port: u16,
    dir: PathBuf,
    patroni: Option<std::process::Child>,
}

impl Node {
    fn config(&self, etcd: u16) -> String {
        let d = self.dir.display();
        format!(
            "scope: faena-drill
name: {name}
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  hosts: 127.0.0.1:{etcd}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 1
    retry_timeout: 4
    synchronous_mode: true
    postgresql:
      use_pg_rewind: false
      parameters:
        synchronous_commit: 'on'
        fsync: 'on'
        max_wal_senders: 5
        max_replication_slots: 5
        wal_level: replica
        hot_standby: 'on'
  initdb:
    - encoding: UTF8
    - auth-host: scram-sha-256
    - auth-local: trust
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {d}/data
  bin_dir: {PG_BIN}
  pgpass: {d}/pgpass
  authentication:
    superuser:
      username: postgres
      password: {SUPERUSER_PASSWORD}
    replication:
      username: replicator
      password: drill-replicator
  parameters:
    unix_socket_directories: '{d}'
",
            name = self.name,
            api = self.api_port,
            pg = self.pg_port,
        )
    }

    fn start(&mut self, etcd: u16) {
        let file = self.dir.join("patroni.yml");
        std::fs::write(&file, self.config(etcd)).expect("patroni.yml");
        let log = std::fs::File::create(self.dir.join("patroni.log")).expect("log");
        let child = as_postgres("patroni")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("patroni (apt-get install patroni)");
        self.patroni = Some(child);
    }

    /// What its REST API says of it: 200 on `/primary` while it leads.
    async fn is(&self, what: &str) -> bool {
        let url = format!("http://127.0.0.1:{}/{what}", self.api_port);
        faena_testkit::http().get(url).send().await.is_ok_and(|r| r.status() == 200)
    }

    /// The node dies: its Patroni and its PostgreSQL, with SIGKILL.
    fn kill9(&mut self) {
        if let Some(mut p) = self.patroni.take() {
            let _ = p.kill();
            let _ = p.wait();
        }
        // Its PostgreSQL outlives it: kill the postmaster by its pid file.
        let pid = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).unwrap_or_default();
        if let Some(pid) = pid.lines().next().filter(|p| !p.is_empty()) {
            let _ = Command::new("kill").args(["-9", pid]).stderr(Stdio::null()).status();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
        let _ = as_postgres(&format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

fn psql(port: u16, sql: &str) -> Option<String> {
    let out = Command::new(format!("{PG_BIN}/psql"))
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-d",
            "faena",
            "-X",
            "-A",
            "-t",
            "-c",
            sql,
        ])
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

async fn until<T>(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn dir_for_postgres(path: &Path) {
    std::fs::create_dir_all(path).expect("dir");
    if is_root() {
        let _ = Command::new("chown").args(["-R", "postgres"]).arg(path).status();
    }
}

#[tokio::main]
async fn main() {
    let before_kill = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500usize);
    let root = tempfile::Builder::new().prefix("faena-patroni-").tempdir_in("/tmp").expect("dir");
    dir_for_postgres(root.path());
    let etcd_port = free_port();
    let etcd_peer = free_port();
    let etcd_dir = root.path().join("etcd");
    let etcd_log = std::fs::File::create(root.path().join("etcd.log")).expect("log");
    let mut etcd = tokio::process::Command::new("etcd")
        .args(["--name", "e1", "--data-dir"])
        .arg(&etcd_dir)
        .args(["--listen-client-urls", &format!("http://127.0.0.1:{etcd_port}")])
        .args(["--advertise-client-urls", &format!("http://127.0.0.1:{etcd_port}")])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{etcd_peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{etcd_peer}")])
        .args(["--initial-cluster", &format!("e1=http://127.0.0.1:{etcd_peer}")])
        .stdout(etcd_log.try_clone().expect("log"))
        .stderr(etcd_log)
        .kill_on_drop(true)
        .spawn()
        .expect("etcd (apt-get install etcd-server)");
    let mut nodes: Vec<Node> = (1..=2)
        .map(|i| {
            let dir = root.path().join(format!("pg{i}"));
            dir_for_postgres(&dir);
            Node { name: format!("pg{i}"), pg_port: free_port(), api_port: free_port(), dir, patroni: None }
        })
        .collect();
    let started = Instant::now();
    nodes[0].start(etcd_port);
    until("the first node leads", Duration::from_secs(90), async || nodes[0].is("primary").await.then_some(())).await;
    nodes[1].start(etcd_port);
    until("the second node replicates synchronously", Duration::from_secs(90), async || {
        nodes[1].is("synchronous").await.then_some(())
    })
    .await;
    println!(
        "faena-patroni-drill: Patroni pair up in {:.1} s (etcd 127.0.0.1:{etcd_port}, PostgreSQL 127.0.0.1:{} and :{}, synchronous)",
        started.elapsed().as_secs_f64(),
        nodes[0].pg_port,
        nodes[1].pg_port
    );
    let created = Command::new(format!("{PG_BIN}/psql"))
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &nodes[0].pg_port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            "CREATE DATABASE faena",
        ])
        .output()
        .expect("psql");
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));

    let url = format!(
        "postgres://postgres:{SUPERUSER_PASSWORD}@127.0.0.1:{},127.0.0.1:{}/faena?target_session_attrs=read-write&sslmode=disable",
        nodes[0].pg_port, nodes[1].pg_port
    );
    let opts = MasterOpts { extra: vec![("FAENA_STORE_URL".to_owned(), url)], ..MasterOpts::default() };
    let mut c = Cluster::start(opts).await;
    c.add_worker("w1", 8).await;
    c.wait_workers(1).await;

    // Jobs one after another, each timed; acknowledged ones kept.
    let acknowledged = Arc::new(parking_lot::Mutex::new(Vec::<(Instant, String)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (acknowledged, stop, http) = (acknowledged.clone(), stop.clone(), c.addrs.http.clone());
        tokio::spawn(async move {
            let client = faena_common::tls::http_client().timeout(Duration::from_secs(30)).build().expect("client");
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body = json!({"kind": "noop", "params": {"delay_ms": 5}});
                let sent = client.post(format!("http://{http}/api/jobs")).json(&body).send().await;
                if let Ok(resp) = sent
                    && resp.status() == 202
                    && let Ok(v) = resp.json::<Value>().await
                    && let Some(id) = v["id"].as_str()
                {
                    acknowledged.lock().push((Instant::now(), id.to_owned()));
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    until("jobs acknowledged before the kill", Duration::from_secs(120), async || {
        (acknowledged.lock().len() >= before_kill).then_some(())
    })
    .await;

    let before = acknowledged.lock().len();
    let killed = Instant::now();
    nodes[0].kill9();
    println!("primary pg1 killed (Patroni and PostgreSQL, -9) after {before} jobs acknowledged");
    until("the replica is promoted", Duration::from_secs(120), async || nodes[1].is("primary").await.then_some(()))
        .await;
    let promoted = killed.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    let back = loop {
        if let Some(at) =
            acknowledged.lock().iter().find(|(at, _)| *at > killed).map(|(at, _)| at.duration_since(killed))
        {
            break at;
        }
        if Instant::now() > deadline {
            let log = c.master_log();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "no job acknowledged after the failover; the master's log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Some more after the failover, then the load stops.
    until("jobs acknowledged after the failover", Duration::from_secs(60), async || {
        (acknowledged.lock().iter().filter(|(at, _)| *at > killed).count() >= 100).then_some(())
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = load.await;

    let ids: Vec<String> = acknowledged.lock().iter().map(|(_, id)| id.clone()).collect();
    let port = nodes[1].pg_port;
    psql(port, "CREATE TABLE drill_acknowledged (id uuid PRIMARY KEY)").expect("on the new primary");
    for chunk in ids.chunks(500) {
        let values = chunk.iter().map(|id| format!("('{id}')")).collect::<Vec<_>>().join(",");
        psql(port, &format!("INSERT INTO drill_acknowledged VALUES {values}")).expect("insert");
    }
    let settled = Instant::now() + Duration::from_secs(120);
    loop {
        let left = psql(
            port,
            "SELECT count(*) FROM drill_acknowledged a LEFT JOIN jobs j ON j.id = a.id WHERE j.state IS DISTINCT FROM 'succeeded'",
        );
        if left.as_deref() == Some("0") {
            break;
        }
        if Instant::now() > settled {
            // What became of each job left, for whoever reads the failure.
            let jobs = psql(
                port,
                "SELECT a.id, j.state, j.attempts, j.worker FROM drill_acknowledged a LEFT JOIN jobs j ON j.id = a.id WHERE j.state IS DISTINCT FROM 'succeeded'",
            );
            let history = psql(
                port,
                "SELECT t.job_id, t.at, t.state, t.attempt, t.worker, t.detail, t.epoch FROM transitions t JOIN drill_acknowledged a ON a.id = t.job_id JOIN jobs j ON j.id = a.id WHERE j.state IS DISTINCT FROM 'succeeded' ORDER BY t.job_id, t.n",
            );
            panic!(
                "acknowledged jobs not succeeded after 120 s (id|state|attempts|worker):\n{}\ntheir history:\n{}\nthe worker's log:\n{}",
                jobs.unwrap_or_default(),
                history.unwrap_or_default(),
                c.worker_log("w1")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let twice = psql(
        port,
        "SELECT count(*) FROM (SELECT job_id FROM transitions WHERE state = 'succeeded' GROUP BY job_id HAVING count(*) > 1) d",
    )
    .expect("reads");
    println!(
        "recovery     replica promoted after {:.1} s; the master acknowledged a job again after {:.1} s (Patroni ttl 10 s)",
        promoted.as_secs_f64(),
        back.as_secs_f64()
    );
    println!("jobs         {} acknowledged ({before} before the kill), all succeeded, {twice} ended twice", ids.len());
    // A group whose COMMIT the kill left unanswered, and what the master
    // found when it asked (not every kill lands on one).
    let log = c.master_log();
    let asked: Vec<&str> = log.lines().filter(|l| l.contains("COMMIT went unanswered")).collect();
    println!(
        "unanswered   {} group(s) whose COMMIT went unanswered{}",
        asked.len(),
        asked.iter().map(|l| format!("\n  {l}")).collect::<String>()
    );
    assert_eq!(twice, "0", "no job ended twice");
    drop(c);
    let _ = etcd.kill().await;
}
