//! `faena-stratum-bench`: the Stratum server under simulated miners.
//!
//! A real master (release build) with its Stratum server mines a real
//! regtest `monerod` (difficulty so high no block ends the run). Simulated
//! miners speak XMRig's protocol: they log in, keep alive, and submit shares
//! with a claimed hash that meets their target, at the rate vardiff sets —
//! the master re-hashes every one (and rejects it: the bench does not spend
//! its CPU finding real shares; verifying a false share costs exactly what a
//! true one does). Reported, for 1,000 and 10,000 connections: master RSS
//! per connection, master CPU, shares verified per second and the p99
//! submit → reply time; then the verifier's throughput with miners
//! submitting as fast as their rate limit allows, light vs fast mode.
//!
//! With `XMRIG=/path/to/xmrig`, it also runs XMRig straight at monerod
//! (`--daemon`) and through Faena's Stratum server, same threads, the same
//! time, alternating, and prints the ratio of their hashrates.
//!
//! With `--hostile [N]` (default 10,000) it measures what hostile clients
//! cost honest miners instead: 50 honest miners (each from an address of
//! its own, sending real shares) alone, then beside N hostile connections
//! from 400 other addresses (idle ones that never log in, silent ones,
//! junk-share senders, readers that never read; all reconnecting when
//! dropped), on the master's default limits. Prints the honest miners'
//! accepted shares/s in both, their ratio, the master's peak RSS and what
//! was refused or banned.
//!
//! With `--replicas` it measures Stratum on two masters (a leader and a
//! standby on one PostgreSQL and Mosquitto, one verifier thread each):
//! 16 miners flat out at the leader alone, then the same 16 split over
//! both (twice, alternating), and prints the ratio of verified shares/s; then 8 honest miners
//! on the standby send real shares, the standby is killed with -9 mid-run,
//! and every share it said accepted must be in the store.
//!
//!   cargo build --release --workspace --bins
//!   ulimit -n 65536; target/release/faena-stratum-bench [--quick] [--hostile [N] | --replicas]
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use faena_proto::jobs::{decode_hex, encode_hex};
use faena_proto::stratum::{self, Incoming, LoginResult};
use faena_randomx::{Flags, Material, Mode};
use faena_testkit::monerod::{Monerod, WALLET};
use faena_testkit::process::{cpu_seconds, rss_mib};
use faena_testkit::{Cluster, MasterOpts, eventually};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Debug, Default)]
struct Tally {
    answered: AtomicU64,
    over_budget: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

fn p99(mut v: Vec<u64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[(v.len() * 99 / 100).min(v.len() - 1)] as f64 / 1000.0
}

/// One simulated miner: logs in, then submits every `every` (from `start`)
/// until `stop`, a keepalive every 60 s. Returns false if it could not log in.
async fn miner(addr: String, name: String, every: Duration, start: Instant, stop: Instant, tally: Arc<Tally>) -> bool {
    proving_miner(addr, name, every, start, stop, tally, None).await
}

/// [`miner`], first sending one real share hashed with `prove` (the
/// source key's RandomX material) when given: a connection with a share
/// accepted is no longer held to the budget of unproven connections.
async fn proving_miner(
    addr: String,
    name: String,
    every: Duration,
    start: Instant,
    stop: Instant,
    tally: Arc<Tally>,
    prove: Option<Arc<Material>>,
) -> bool {
    let Ok(tcp) = TcpStream::connect(&addr).await else { return false };
    let (rd, mut wr) = tcp.into_split();
    let mut lines = BufReader::new(rd).lines();
    let login = json!({"login": name, "pass": "x", "agent": "faena-stratum-bench", "algo": ["rx/0"]});
    if wr.write_all(stratum::request(1, "login", &login).as_bytes()).await.is_err() {
        return false;
    }
    let Ok(Some(line)) = lines.next_line().await else { return false };
    let Ok(msg) = serde_json::from_str::<Incoming>(&line) else { return false };
    let Ok(login) = serde_json::from_value::<LoginResult>(msg.result) else { return false };
    let mut job = login.job;
    let mut nonce = u32::from(decode_hex(&job.blob).unwrap_or_default().get(42).copied().unwrap_or(0)) << 24;
    let mut id = 1u64;
    if let Some(material) = prove {
        // The last nonce of its slot, which the false shares never reach.
        let (blob, last) = (decode_hex(&job.blob).unwrap_or_default(), nonce | 0x00ff_ffff);
        let hashed = tokio::task::spawn_blocking(move || {
            let mut input = blob;
            input[39..43].copy_from_slice(&last.to_le_bytes());
            material.vm().map(|mut vm| vm.hash(&input))
        });
        let Ok(Ok(hash)) = hashed.await else { return false };
        id += 1;
        let p = json!({"id": login.id, "job_id": job.job_id, "nonce": stratum::nonce_hex(last),
            "result": encode_hex(&hash), "algo": "rx/0"});
        if wr.write_all(stratum::request(id, "submit", &p).as_bytes()).await.is_err() {
            return false;
        }
        loop {
            let Ok(Some(line)) = lines.next_line().await else { return false };
            let Ok(m) = serde_json::from_str::<Incoming>(&line) else { continue };
            if m.id.as_u64() == Some(id) {
                break;
            }
        }
    }
    tokio::time::sleep_until(start.into()).await;
    let mut next = Instant::now() + every.mul_f64(rand_fraction(&name));
    let mut keepalive = Instant::now() + Duration::from_secs(60);
    while Instant::now() < stop {
        let wake = next.min(keepalive).min(stop);
        // Job notifications arrive between submits: take the newest.
        match tokio::time::timeout_at(wake.into(), lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                if let Ok(m) = serde_json::from_str::<Incoming>(&line)
                    && m.method.as_deref() == Some("job")
                    && let Ok(j) = serde_json::from_value(m.params)
                {
                    job = j;
                }
                continue;
            }
            Ok(_) => return true,
            Err(_) => {}
        }
        if Instant::now() >= keepalive {
            id += 1;
            let _ = wr.write_all(stratum::request(id, "keepalived", &json!({"id": login.id})).as_bytes()).await;
            keepalive += Duration::from_secs(60);
            continue;
        }
        if Instant::now() < next || Instant::now() >= stop {
            continue;
        }
        next += every;
        id += 1;
        nonce += 1;
        // A claimed hash that meets any target: its last 8 bytes are zero.
        let mut hash = [0x5au8; 32];
        hash[24..].fill(0);
        let p = json!({"id": login.id, "job_id": job.job_id, "nonce": stratum::nonce_hex(nonce),
            "result": encode_hex(&hash), "algo": "rx/0"});
        let sent = Instant::now();
        if wr.write_all(stratum::request(id, "submit", &p).as_bytes()).await.is_err() {
            return true;
        }
        // The answer to this submit (jobs in between are taken on the way).
        loop {
            let Ok(Some(line)) = lines.next_line().await else { return true };
            let Ok(m) = serde_json::from_str::<Incoming>(&line) else { continue };
            if m.method.as_deref() == Some("job") {
                if let Ok(j) = serde_json::from_value(m.params) {
                    job = j;
                }
                continue;
            }
            if m.id.as_u64() == Some(id) {
                tally.latencies_us.lock().unwrap().push(sent.elapsed().as_micros() as u64);
                match m.error {
                    Some(e) if e.message.starts_with("Server busy") => {
                        tally.over_budget.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => tally.answered.fetch_add(1, Ordering::Relaxed),
                };
                break;
            }
        }
    }
    true
}

/// A stable fraction in [0, 1) from a name: spreads the miners' first submits.
fn rand_fraction(name: &str) -> f64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    (h % 10_000) as f64 / 10_000.0
}

struct Run {
    miners: usize,
    every: Duration,
    secs: u64,
}

/// A master with `extra` (after the harness's light-mode defaults: it
/// wins) mining `node` as a daemon source.
async fn mining(node: &Monerod, extra: &[(&str, &str)]) -> Cluster {
    let opts = MasterOpts {
        extra: extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        ..Default::default()
    };
    let c = Cluster::start(opts).await;
    let (status, v) =
        c.api.post("/api/mining/sources", &json!({"kind": "daemon", "url": node.url, "wallet": WALLET})).await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    eventually("the source has work", || async {
        (c.api.get(&format!("/api/mining/sources/{id}")).await.1["state"] == "mining").then_some(())
    })
    .await;
    c
}

async fn master(node: &Monerod, mode: &str, budget: &str) -> (Cluster, String) {
    let extra = [
        ("FAENA_STRATUM_ADDR", "127.0.0.1:0"),
        ("FAENA_VERIFY_MODE", mode),
        ("FAENA_VERIFY_BUDGET", budget),
        ("FAENA_STRATUM_INVALID_LIMIT", "4000000000"),
        ("FAENA_STRATUM_DIFFICULTY", "1000"),
        ("FAENA_STRATUM_RATE", "20"),
        // Every simulated miner is on 127.0.0.1 and sends false shares:
        // neither the per-address caps nor bans are what this measures.
        ("FAENA_STRATUM_MAX_CONNECTIONS", "20000"),
        ("FAENA_STRATUM_MAX_PER_ADDRESS", "20000"),
        ("FAENA_STRATUM_ADDRESS_BUDGET", "1"),
        ("FAENA_LOG", "error"),
    ];
    let c = mining(node, &extra).await;
    // The master prepares its verifier for the source's key (in fast mode a
    // 2 GiB dataset): the clock starts once it has measured itself.
    let deadline = Instant::now() + Duration::from_secs(600);
    while c.api.get("/api/mining/verifier").await.1["capacity"].is_null() {
        assert!(Instant::now() < deadline, "the verifier did not get ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stratum = c.addrs.stratum.clone().expect("stratum");
    (c, stratum)
}

async fn run(c: &mut Cluster, stratum: &str, r: &Run, label: &str) {
    let pid = c.master().pid();
    let rss0 = rss_mib(pid);
    let tally = Arc::new(Tally::default());
    let start = Instant::now() + Duration::from_secs(2) + Duration::from_millis(r.miners as u64 * 2);
    let stop = start + Duration::from_secs(r.secs);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..r.miners {
        let (addr, t) = (stratum.to_owned(), tally.clone());
        tasks.spawn(miner(addr, format!("sim-{i}"), r.every, start, stop, t));
    }
    tokio::time::sleep_until(start.into()).await;
    let rss1 = rss_mib(pid);
    let cpu0 = cpu_seconds(pid);
    let mut logged = 0;
    while let Some(ok) = tasks.join_next().await {
        logged += usize::from(ok.unwrap_or(false));
    }
    let cpu = cpu_seconds(pid) - cpu0;
    let secs = r.secs as f64;
    let answered = tally.answered.load(Ordering::Relaxed);
    let over = tally.over_budget.load(Ordering::Relaxed);
    let view = c.api.get("/api/mining/verifier").await.1;
    println!(
        "{label:<34} miners {logged:>6}/{:<6} RSS {rss0:>6.0}→{rss1:>6.0} MiB ({:>5.1} KiB/conn)  CPU {:>4.0}%  verified {:>6.1}/s  over budget {:>6.1}/s  p99 {:>7.1} ms  capacity {:>6.1}/s",
        r.miners,
        (rss1 - rss0) * 1024.0 / r.miners as f64,
        cpu / secs * 100.0,
        answered as f64 / secs,
        over as f64 / secs,
        p99(std::mem::take(&mut *tally.latencies_us.lock().unwrap())),
        view["capacity"].as_f64().unwrap_or(0.0),
    );
}

/// XMRig's hashrate (10 s average, H/s) from its HTTP API after `secs`.
async fn xmrig(bin: &str, args: &[&str], secs: u64) -> f64 {
    let port = faena_testkit::free_port();
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .args(["-t", "1", "--randomx-mode=fast", "--donate-level=0", "--no-color", "--http-host=127.0.0.1"])
        .arg(format!("--http-port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("xmrig");
    let url = format!("http://127.0.0.1:{port}/2/summary");
    // Dataset first (about 20 s), then the measured window.
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(secs + 120);
    while samples.len() < secs as usize / 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let Ok(resp) = faena_testkit::http().get(&url).send().await else { continue };
        let Ok(v) = resp.json::<serde_json::Value>().await else { continue };
        if let Some(h) = v["hashrate"]["total"][0].as_f64().filter(|h| *h > 0.0) {
            samples.push(h);
        }
    }
    let _ = child.kill().await;
    // The first sample still has the warm-up in it.
    let steady: Vec<f64> = samples.iter().skip(1).copied().collect();
    if steady.is_empty() { 0.0 } else { steady.iter().sum::<f64>() / steady.len() as f64 }
}

/// Miners flat out at `addrs` (dealt out in turn) for `secs`: shares
/// verified, and turned away over budget, per second, all masters together.
async fn flat_out(addrs: &[String], miners: usize, secs: u64, prove: &Arc<Material>) -> (f64, f64) {
    let tally = Arc::new(Tally::default());
    let start = Instant::now() + Duration::from_secs(3);
    let stop = start + Duration::from_secs(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..miners {
        let (addr, t) = (addrs[i % addrs.len()].clone(), tally.clone());
        let (every, prove) = (Duration::from_millis(50), Some(prove.clone()));
        tasks.spawn(proving_miner(addr, format!("flat-{i}"), every, start, stop, t, prove));
    }
    let logged = tasks.join_all().await.into_iter().filter(|ok| *ok).count();
    assert_eq!(logged, miners, "every miner logged in");
    let per_sec = |n: &AtomicU64| n.load(Ordering::Relaxed) as f64 / secs as f64;
    (per_sec(&tally.answered), per_sec(&tally.over_budget))
}

/// Miners flat out in the replicas mode: far more than two verifier
/// threads take, few enough that turning the rest away costs little.
const FLAT: usize = 16;

/// Two masters on one store: verification across both against one, and a
/// standby killed under honest miners loses none of the shares it accepted.
async fn replicas_mode(node: &Monerod, secs: u64) {
    use faena_testkit::hostile::{self, Counts, Honest};
    let pg = faena_store::harness::Postgres::start();
    let broker_dir = tempfile::tempdir().expect("dir");
    let mosquitto = faena_testkit::mosquitto::Mosquitto::start(broker_dir.path()).await;
    let extra = [
        ("FAENA_STORE_URL", pg.url()),
        ("FAENA_STRATUM_ADDR", "127.0.0.1:0".into()),
        ("FAENA_VERIFY_MODE", "light".into()),
        ("FAENA_VERIFY_THREADS", "1".into()),
        ("FAENA_VERIFY_BUDGET", "1.0".into()),
        ("FAENA_STRATUM_INVALID_LIMIT", "4000000000".into()),
        ("FAENA_STRATUM_DIFFICULTY", "1".into()),
        ("FAENA_STRATUM_MIN_DIFFICULTY", "1".into()),
        ("FAENA_SHARE_INTERVAL_MS", "1000".into()),
        ("FAENA_STRATUM_RATE", "20".into()),
        ("FAENA_STRATUM_MAX_CONNECTIONS", "20000".into()),
        ("FAENA_STRATUM_MAX_PER_ADDRESS", "20000".into()),
        ("FAENA_STRATUM_ADDRESS_BUDGET", "1".into()),
        ("FAENA_TEMPLATE_REFRESH_SECS", "3600".into()),
        ("FAENA_LOG", "error".into()),
    ];
    let extra = extra.iter().map(|(k, v)| ((*k).to_owned(), v.to_string())).collect();
    let c = Cluster::start(MasterOpts { broker: mosquitto.broker(), extra, ..Default::default() }).await;
    let (status, v) =
        c.api.post("/api/mining/sources", &json!({"kind": "daemon", "url": node.url, "wallet": WALLET})).await;
    assert_eq!(status, 201, "{v}");
    while c.api.get("/api/mining/verifier").await.1["capacity"].is_null() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (mut standby, b) = c.add_master("second").await;
    let leader = c.addrs.stratum.clone().expect("stratum");
    let second = b.stratum.clone().expect("stratum");
    // The standby serves miners once its feed from the leader is open.
    let probe = eventually("the standby seats miners", || async {
        let mut m = faena_testkit::stratum::Miner::connect(&second).await;
        m.login("probe", "x").await.ok().map(|()| m)
    })
    .await;
    let key = decode_hex(probe.job.and_then(|j| j.seed_hash).as_deref().unwrap_or_default()).expect("a seed");
    let prove = Arc::new(Material::build(Flags::detect(), Mode::Light, &key, 1).expect("RandomX material"));
    println!("# {FLAT} miners flat out (20 shares/s each), one verifier thread per master, light mode; 2 rounds");
    let capacity = c.api.get("/api/mining/verifier").await.1["capacity"].as_f64().unwrap_or(0.0);
    println!("(the leader's verifier measured itself at {capacity:.1} shares/s)");
    let (mut ones, mut twos) = (0.0, 0.0);
    for round in 0..2 {
        let (one, busy) = flat_out(std::slice::from_ref(&leader), FLAT, secs, &prove).await;
        println!("round {round}: one master (the leader)      verified {one:>6.1} shares/s, over budget {busy:>6.1}/s");
        let (two, busy) = flat_out(&[leader.clone(), second.clone()], FLAT, secs, &prove).await;
        println!("round {round}: two masters (leader+standby) verified {two:>6.1} shares/s, over budget {busy:>6.1}/s");
        (ones, twos) = (ones + one, twos + two);
    }
    println!("two masters / one: {:.2}", twos / f64::max(ones, 1e-9));

    println!("# 8 honest miners on the standby, real shares 4/s each; the standby killed with -9 mid-run");
    let addr: std::net::SocketAddr = second.parse().expect("addr");
    let mut miners = Vec::new();
    for m in 0..8u8 {
        let local = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2 + m));
        miners.push(Honest::connect(addr, local, &format!("honest-{m}")).await.expect("an honest miner logs in"));
    }
    let per = 4 * secs as u32;
    let jobs: Vec<_> = miners.iter().map(|m| (m.login.job.clone(), 0u32, per)).collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let shares = tokio::task::spawn_blocking(move || hostile::real_shares(&jobs, threads)).await.expect("hashed");
    let counts = Arc::new(Counts::default());
    let start = Instant::now() + Duration::from_secs(1);
    let mut honest = tokio::task::JoinSet::new();
    for (k, (mut m, s)) in miners.into_iter().zip(shares).enumerate() {
        let counts = counts.clone();
        let first = start + Duration::from_millis(250).mul_f64(k as f64 / 8.0);
        honest.spawn(async move { m.submit_all(&s, Duration::from_millis(250), first, &counts).await });
    }
    tokio::time::sleep_until((start + Duration::from_secs(secs / 2)).into()).await;
    standby.kill9().await;
    honest.join_all().await;
    let accepted = counts.accepted_shares.load(Ordering::Relaxed);
    let stored: u64 = pg
        .sql("SELECT coalesce(sum(valid), 0) FROM participants WHERE name LIKE 'honest-%'")
        .trim()
        .parse()
        .expect("a count");
    println!(
        "standby killed: {accepted} shares accepted by it, {stored} in the store, {} lost (rejected {}: {:?})",
        accepted.saturating_sub(stored),
        counts.rejected_shares.load(Ordering::Relaxed),
        counts.last_rejection.lock().unwrap().clone(),
    );
    assert!(stored >= accepted, "an accepted share is missing from the store");
}

/// Honest miners alone, then beside `n` hostile connections.
async fn hostile_mode(node: &Monerod, n: usize, secs: u64) {
    use faena_testkit::hostile::{self, Counts, Honest, Hostile};
    const HONEST: usize = 50;
    let every = Duration::from_secs(5);
    let extra = [
        ("FAENA_STRATUM_ADDR", "127.0.0.1:0"),
        ("FAENA_STRATUM_DIFFICULTY", "1"),
        ("FAENA_STRATUM_MIN_DIFFICULTY", "1"),
        ("FAENA_SHARE_INTERVAL_MS", "5000"),
        ("FAENA_TEMPLATE_REFRESH_SECS", "3600"),
        ("FAENA_LOG", "error"),
    ];
    let mut c = mining(node, &extra).await;
    let addr: std::net::SocketAddr = c.addrs.stratum.clone().expect("stratum").parse().expect("addr");
    let pid = c.master().pid();
    let per_phase = secs / every.as_secs();
    let mut miners = Vec::new();
    for m in 0..HONEST {
        let local = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2 + m as u8));
        miners.push(Honest::connect(addr, local, &format!("honest-{m}")).await.expect("an honest miner logs in"));
    }
    // Real shares for both phases, hashed here once (light mode, all cores).
    let jobs: Vec<_> = miners.iter().map(|m| (m.login.job.clone(), 0u32, 2 * per_phase as u32)).collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let shares = tokio::task::spawn_blocking(move || hostile::real_shares(&jobs, threads)).await.expect("hashed");
    let mut rates = Vec::new();
    let rss0 = rss_mib(pid);
    let mut peak = rss0;
    for (phase, attackers) in [("alone", 0usize), ("under attack", n)] {
        let counts = Arc::new(Counts::default());
        let hostile_counts = Arc::new(Counts::default());
        let start = Instant::now() + Duration::from_secs(if attackers > 0 { 20 } else { 1 });
        let stop = start + Duration::from_secs(secs);
        let mut attack = tokio::task::JoinSet::new();
        for i in 0..attackers {
            let what = [Hostile::Idle, Hostile::Idle, Hostile::Silent, Hostile::Junk, Hostile::SlowReader][i % 5];
            attack.spawn(hostile::hostile(addr, hostile::address(i, 25), what, i, stop, hostile_counts.clone()));
        }
        let offset = if attackers > 0 { per_phase as usize } else { 0 };
        let mut honest = tokio::task::JoinSet::new();
        for (k, (mut m, s)) in std::mem::take(&mut miners).into_iter().zip(shares.iter()).enumerate() {
            let (counts, s) = (counts.clone(), s[offset..offset + per_phase as usize].to_vec());
            // Spread over the interval, as real miners' shares are.
            let first = start + every.mul_f64(k as f64 / HONEST as f64);
            honest.spawn(async move {
                m.submit_all(&s, every, first, &counts).await;
                (k, m)
            });
        }
        while Instant::now() < stop {
            peak = peak.max(rss_mib(pid));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut back: Vec<_> = Vec::new();
        while let Some(m) = honest.join_next().await {
            back.push(m.expect("honest miner"));
        }
        back.sort_by_key(|(k, _)| *k);
        miners = back.into_iter().map(|(_, m)| m).collect();
        attack.abort_all();
        let rate = counts.accepted_shares.load(Ordering::Relaxed) as f64 / secs as f64;
        rates.push(rate);
        println!(
            "{phase:<13} honest accepted {rate:>6.2} shares/s (rejected {}: {:?})  hostile connections made {}  refused {}",
            counts.rejected_shares.load(Ordering::Relaxed),
            counts.last_rejection.lock().unwrap().clone(),
            hostile_counts.connected.load(Ordering::Relaxed),
            hostile_counts.refused.load(Ordering::Relaxed),
        );
    }
    let metrics = c.api.text("/metrics").await;
    let refused: Vec<String> = ["too_many", "full", "banned", "ban"]
        .iter()
        .map(|r| {
            let v = faena_testkit::sample(&metrics, &format!("faena_stratum_refused_total{{reason=\"{r}\"}}"))
                .unwrap_or(0.0);
            format!("{r} {v:.0}")
        })
        .collect();
    println!("honest under attack / alone: {:.3}", rates[1] / rates[0].max(1e-9));
    println!("master RSS {rss0:.0} MiB before, {peak:.0} MiB at its peak; refused: {}", refused.join(", "));
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let dir = tempfile::Builder::new().prefix("faena-stratum-bench-").tempdir().expect("dir");
    let node = Monerod::start(dir.path(), 1_000_000_000_000).await;
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--hostile") {
        let n = args.get(at + 1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
        hostile_mode(&node, n, if quick { 30 } else { 60 }).await;
        return;
    }
    let secs = if quick { 20 } else { 60 };
    if args.iter().any(|a| a == "--replicas") {
        replicas_mode(&node, if quick { 10 } else { 30 }).await;
        return;
    }

    let (mut c, stratum) = master(&node, "light", "0.8").await;
    println!("# miners submit at their vardiff rate (one share per 30 s); light-mode verifier");
    for miners in [1_000usize, 10_000] {
        let r = Run { miners, every: Duration::from_secs(30), secs };
        run(&mut c, &stratum, &r, &format!("{miners} miners, 1 share/30 s")).await;
    }
    println!("# throughput: 64 miners as fast as their rate limit allows (20/s each), budget = full capacity");
    drop(c);
    for mode in ["light", "fast"] {
        let (mut c, stratum) = master(&node, mode, "1.0").await;
        let r = Run { miners: 64, every: Duration::from_millis(50), secs: if quick { 15 } else { 30 } };
        run(&mut c, &stratum, &r, &format!("64 miners flat out, {mode}")).await;
    }

    if let Ok(bin) = std::env::var("XMRIG") {
        let (mut c, stratum) = master(&node, "light", "0.8").await;
        let _ = c.master().pid();
        let daemon = node.url.trim_start_matches("http://").to_owned();
        let window = if quick { 40 } else { 90 };
        println!("# XMRig 1 thread, fast mode: straight at monerod (--daemon) vs through Faena's Stratum server");
        let mut solo = Vec::new();
        let mut via = Vec::new();
        for round in 0..2 {
            let s = xmrig(&bin, &["-o", &daemon, "--daemon", "-u", WALLET, "-a", "rx/0"], window).await;
            let f = xmrig(&bin, &["-o", &stratum, "-u", "bench-rig", "-p", "x", "-a", "rx/0"], window).await;
            println!("  round {round}: solo {s:.1} H/s, through Faena {f:.1} H/s ({:.1} %)", f / s * 100.0);
            solo.push(s);
            via.push(f);
        }
        let (s, f) = (solo.iter().sum::<f64>(), via.iter().sum::<f64>());
        println!("XMRig through Faena / solo: {:.1} %", f / s * 100.0);
    }
}
