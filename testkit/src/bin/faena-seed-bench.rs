//! `faena-seed-bench`: mining across a RandomX seed change. A regtest
//! `monerod` chain is grown to just before the first key change (block
//! 2113, the first height whose seed is block 2048's hash; monerod announces
//! it as `next_seed_hash` from height 2049), then a master and two workers
//! in fast mode mine it across the switch, once with the next key built
//! ahead (`FAENA_RANDOMX_AHEAD=true`, the default) and once built at the
//! switch (`false`, the reference), in the same run.
//!
//! `cargo run --release -p faena-testkit --bin faena-seed-bench` (or
//! `scripts/bench-seed.sh`); env: `DIFFICULTY` of the node's blocks (2000),
//! `START` height mining starts from (2070), `ROUNDS` of each (1),
//! `VERIFY_MODE` of the master's share verifier (fast).
//!
//! Per run it prints each worker's hashing gap: the longest time between
//! two of its progress reports (about one a second while it hashes) from the
//! switch on, against the longest in the 30 s before it; the stale shares at
//! the switch; and the verifier: what it hashed the new key's shares with
//! at the switch, and how long after it its dataset for the new key was ready.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use faena_testkit::monerod::{Monerod, WALLET};
use faena_testkit::{Cluster, MasterOpts};
use serde_json::{Value, json};

/// The first height of the second seed epoch.
const SWITCH: u64 = 2048 + 64 + 1;

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for entry in std::fs::read_dir(from).expect("readable") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

struct Run {
    /// Per worker: (longest gap before the switch, longest gap from it), s.
    gaps: BTreeMap<String, (f64, f64)>,
    stale: u64,
    /// The verifier's keys at the switch.
    verifier: String,
    /// Seconds from the switch until the verifier hashed the new key in fast mode.
    verifier_fast: Option<f64>,
}

async fn source(c: &Cluster) -> Value {
    c.api.get("/api/mining/sources").await.1["sources"][0].clone()
}

async fn run(chain: &Path, ahead: bool, difficulty: u64, verify_mode: &str) -> Run {
    let dir = tempfile::Builder::new().prefix("faena-seed-").tempdir().expect("temp dir");
    copy_dir(chain, &dir.path().join("monerod"));
    let node = Monerod::start(dir.path(), difficulty).await;
    let extra =
        vec![("FAENA_SHARE_INTERVAL_MS".into(), "1000".into()), ("FAENA_VERIFY_MODE".into(), verify_mode.into())];
    let mut c = Cluster::start(MasterOpts { extra, ..MasterOpts::default() }).await;
    let ahead_env = if ahead { "true" } else { "false" };
    for id in ["w1", "w2"] {
        let env = [("FAENA_RANDOMX_MODE", "fast"), ("FAENA_RANDOMX_THREADS", "1"), ("FAENA_RANDOMX_AHEAD", ahead_env)];
        c.add_worker_with(id, 1, &env).await;
    }
    c.wait_workers(2).await;
    let (status, body) =
        c.api.post("/api/mining/sources", &json!({"kind": "daemon", "url": node.url, "wallet": WALLET})).await;
    assert!(status.is_success(), "{body}");
    let job = loop {
        if let Some(j) = source(&c).await["job_id"].as_str() {
            break j.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let started = Instant::now();
    let mut events = c.api.events(&job).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let recorder = tokio::spawn(async move {
        while let Some((name, data)) = events.next().await {
            // The job's own progress (all units together) names no worker.
            if name == "progress"
                && let Some(w) = data["worker"].as_str().filter(|w| !w.is_empty())
            {
                let _ = tx.send((started.elapsed().as_secs_f64(), w.to_owned()));
            }
        }
    });
    let (mut switch, mut stale_at, mut verifier, mut verifier_fast) = (None, 0, String::new(), None);
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut last_height = 0;
    loop {
        assert!(Instant::now() < deadline, "the chain did not pass the switch in 30 minutes");
        let s = source(&c).await;
        let height = s["height"].as_u64().unwrap_or(0);
        if height != last_height {
            println!("  [{:>6.1} s] mining height {height}", started.elapsed().as_secs_f64());
            last_height = height;
        }
        if switch.is_none() && height >= SWITCH {
            switch = Some(started.elapsed().as_secs_f64());
            stale_at = s["shares"]["stale"].as_u64().unwrap_or(0);
            verifier = c.api.get("/api/mining/verifier").await.1["keys"].to_string();
        }
        if let Some(t) = switch
            && verifier_fast.is_none()
        {
            let keys = c.api.get("/api/mining/verifier").await.1["keys"].clone();
            if keys[0]["hashing"] == "fast" && keys.as_array().is_some_and(|k| k.len() == 1) {
                verifier_fast = Some(started.elapsed().as_secs_f64() - t);
            }
        }
        // The verifier's dataset is waited for up to 4 minutes after the switch.
        let fast_or_light = verifier_fast.is_some()
            || verify_mode != "fast"
            || switch.is_some_and(|t| started.elapsed().as_secs_f64() > t + 240.0);
        if let Some(t) = switch
            && (height >= SWITCH + 3 && started.elapsed().as_secs_f64() > t + 60.0 && fast_or_light)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stale = source(&c).await["shares"]["stale"].as_u64().unwrap_or(0).saturating_sub(stale_at);
    recorder.abort();
    let switch = switch.expect("switched");
    let mut reports: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    while let Ok((t, w)) = rx.try_recv() {
        reports.entry(w).or_default().push(t);
    }
    let longest = |times: &[f64], from: f64, to: f64| {
        let inside: Vec<f64> = times.iter().copied().filter(|t| (from..=to).contains(t)).collect();
        let mut edges = vec![from];
        edges.extend(inside);
        edges.push(to);
        edges.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
    };
    let end = started.elapsed().as_secs_f64();
    let gaps = reports
        .iter()
        .map(|(w, times)| (w.clone(), (longest(times, switch - 30.0, switch), longest(times, switch, end))))
        .collect();
    let master = c.master_log();
    let near = [SWITCH - 1, SWITCH].map(|h| format!("height={h}"));
    let wanted = |l: &&str| {
        l.contains("verifier ready")
            || (l.contains("new block template") && near.iter().any(|h| l.ends_with(h.as_str())))
    };
    for line in master.lines().filter(wanted) {
        println!("  master: {}", line.chars().take(180).collect::<String>());
    }
    for id in ["w1", "w2"] {
        let log = c.worker_log(id);
        for line in log.lines().filter(|l| l.contains("RandomX key initialised") || l.contains("next key")) {
            println!("  {id}: {}", line.chars().skip(28).take(160).collect::<String>());
        }
    }
    drop(c);
    node.stop().await;
    Run { gaps, stale, verifier, verifier_fast }
}

#[tokio::main]
async fn main() {
    let difficulty: u64 = env("DIFFICULTY", 2000);
    let start: u64 = env("START", 2070);
    let rounds: usize = env("ROUNDS", 1);
    let verify_mode: String = env("VERIFY_MODE", "fast".to_owned());
    let dir = tempfile::Builder::new().prefix("faena-seed-chain-").tempdir().expect("temp dir");
    println!("growing a regtest chain to height {start} (difficulty 1) ...");
    let node = Monerod::start(dir.path(), 1).await;
    while node.height().await < start {
        let n = (start - node.height().await).min(250);
        node.generate(n).await;
    }
    node.stop().await;
    let chain = dir.path().join("monerod");
    let mut rows = Vec::new();
    for round in 0..rounds {
        // Alternating order between rounds.
        let order = if round % 2 == 0 { [true, false] } else { [false, true] };
        for ahead in order {
            println!("round {} with the next key built {}:", round + 1, if ahead { "ahead" } else { "at the switch" });
            let r = run(&chain, ahead, difficulty, &verify_mode).await;
            rows.push((ahead, r));
        }
    }
    println!();
    println!(
        "| next key built | worker | longest hashing gap, 30 s before the switch | longest hashing gap from the switch | stale shares at the switch |"
    );
    println!("|---|---|---|---|---|");
    for (ahead, r) in &rows {
        for (w, (before, after)) in &r.gaps {
            let how = if *ahead { "ahead" } else { "at the switch" };
            println!("| {how} | {w} | {before:.1} s | {after:.1} s | {} |", r.stale);
        }
    }
    for (ahead, r) in &rows {
        let how = if *ahead { "ahead" } else { "at the switch" };
        let fast = r.verifier_fast.map_or("never".to_owned(), |s| format!("{s:.1} s after the switch"));
        println!("verifier ({how}, {verify_mode} mode): at the switch {}; the new key in fast mode {fast}", r.verifier);
    }
}
