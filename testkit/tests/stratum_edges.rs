//! The Stratum server against hostile clients, over real TCP from distinct
//! loopback addresses (127.0.0.2, …), mining a real regtest `monerod`: a
//! silent miner is dropped at its idle time, connections are capped per
//! address, and junk shares ban the address across reconnects without
//! touching another miner's record.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::net::IpAddr;

use faena_proto::jobs::decode_hex;
use faena_testkit::monerod::{Monerod, WALLET};
use faena_testkit::stratum::{Miner, mine_async};
use faena_testkit::{Cluster, MasterOpts, eventually, sample, scrape};
use serde_json::{Value, json};

fn opts(extra: &[(&str, &str)]) -> MasterOpts {
    MasterOpts { extra: extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), ..Default::default() }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// A master with a Stratum server mining a regtest node; its Stratum address.
async fn pool(extra: &[(&str, &str)]) -> (Cluster, Monerod, String) {
    let mut all = vec![
        ("FAENA_STRATUM_ADDR", "127.0.0.1:0"),
        ("FAENA_STRATUM_DIFFICULTY", "1"),
        ("FAENA_STRATUM_MIN_DIFFICULTY", "1"),
        ("FAENA_TEMPLATE_REFRESH_SECS", "3600"),
    ];
    all.extend_from_slice(extra);
    let c = Cluster::start(opts(&all)).await;
    let node = Monerod::start(c.dir.path(), 1_000_000).await;
    let (status, v) =
        c.api.post("/api/mining/sources", &json!({"kind": "daemon", "url": node.url, "wallet": WALLET})).await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    eventually("the source has work", || async {
        (c.api.get(&format!("/api/mining/sources/{id}")).await.1["state"] == "mining").then_some(())
    })
    .await;
    let stratum = c.addrs.stratum.clone().expect("the Stratum server listens");
    (c, node, stratum)
}

async fn participant(c: &Cluster, name: &str) -> Option<Value> {
    let all = c.api.get("/api/mining/participants").await.1;
    all["participants"].as_array()?.iter().find(|p| p["name"] == name).cloned()
}

#[tokio::test]
async fn a_silent_miner_is_dropped_at_its_idle_time_while_jobs_and_retargets_flow() {
    // The retarget tick comes every second (the share interval) and lowers
    // a silent miner's difficulty after four; idle after 6 s. Each tick used
    // to start the idle wait again, so a silent miner stayed for ever.
    let (_c, _node, stratum) = pool(&[
        ("FAENA_SHARE_INTERVAL_MS", "1000"),
        ("FAENA_STRATUM_IDLE_SECS", "6"),
        ("FAENA_STRATUM_DIFFICULTY", "64"),
    ])
    .await;
    let mut idle = Miner::connect_from(&stratum, ip("127.0.0.2")).await;
    idle.login("rig-idle", "x").await.expect("login");
    let started = std::time::Instant::now();
    let mut jobs = 0;
    while let Some(msg) = idle.read().await {
        assert_eq!(msg.method.as_deref(), Some("job"), "only jobs until it is dropped: {msg:?}");
        jobs += 1;
    }
    assert!(jobs >= 1, "vardiff sent lower difficulties while it waited");
    assert!(started.elapsed().as_secs() < 30, "dropped at its idle time, not later: {:?}", started.elapsed());
}

#[tokio::test]
async fn connections_are_capped_per_address_and_refused_with_a_reason() {
    let (c, _node, stratum) = pool(&[("FAENA_STRATUM_MAX_PER_ADDRESS", "3")]).await;
    let mut kept = Vec::new();
    for n in 0..3 {
        let mut m = Miner::connect_from(&stratum, ip("127.0.0.3")).await;
        m.login(&format!("rig-{n}"), "x").await.expect("within the address's limit");
        kept.push(m);
    }
    let mut over = Miner::connect_from(&stratum, ip("127.0.0.3")).await;
    let said = over.read().await.and_then(|m| m.error).expect("told why");
    assert!(said.message.starts_with("Too many connections from your address"), "{}", said.message);
    assert!(over.read().await.is_none(), "and closed");
    // Another address is not affected, nor are the three kept.
    let mut other = Miner::connect_from(&stratum, ip("127.0.0.4")).await;
    other.login("rig-other", "x").await.expect("another address");
    assert_eq!(kept[0].keepalive().await.expect("still connected").result["status"], "KEEPALIVED");
    // A place comes free when a connection ends.
    drop(kept.pop());
    eventually("the freed place is taken", || async {
        let mut m = Miner::connect_from(&stratum, ip("127.0.0.3")).await;
        m.login("rig-again", "x").await.ok()
    })
    .await;
    let metrics = scrape(&c.api.url("/metrics")).await;
    let refused = sample(&metrics, "faena_stratum_refused_total{reason=\"too_many\"}");
    assert!(refused >= Some(1.0), "refusals are counted: {refused:?}");
}

#[tokio::test]
async fn junk_shares_ban_the_address_across_reconnects_and_touch_no_one_elses_record() {
    let (c, _node, stratum) = pool(&[("FAENA_STRATUM_INVALID_LIMIT", "4")]).await;

    // An honest miner with real shares under its name.
    let mut victim = Miner::connect_from(&stratum, ip("127.0.0.5")).await;
    victim.login("victim", "x").await.expect("login");
    let job = victim.job.clone().expect("a job");
    let found = mine_async(&job, 2).await;
    for f in &found {
        assert_eq!(victim.submit(&job.job_id, f.nonce, &f.hash).await, Ok("OK".into()));
    }
    let before = eventually("the victim's record", || async { participant(&c, "victim").await }).await;
    assert_eq!(before["shares"]["invalid"], 0, "{before}");

    // An attacker sends three junk shares a connection, under the victim's
    // name and under a made-up one, and reconnects each time.
    let attacker = ip("127.0.0.6");
    let mut banned = false;
    for round in 0..6 {
        let mut m = Miner::connect_from(&stratum, attacker).await;
        let name = if round % 2 == 0 { "victim" } else { "made-up-name" };
        match m.login(name, "x").await {
            Ok(()) => {}
            Err(e) if e.starts_with("IP Address currently banned") => {
                banned = true;
                break;
            }
            Err(e) => panic!("login: {e}"),
        }
        let j = m.job.clone().expect("a job");
        let top = u32::from(decode_hex(&j.blob).expect("blob")[42]) << 24;
        for n in 0..3u32 {
            match m.submit(&j.job_id, top | n, &[0x11; 32]).await {
                Err(e) if e.starts_with("IP Address currently banned") => banned = true,
                Err(e) => assert!(e.starts_with("Invalid share"), "{e}"),
                Ok(s) => panic!("a junk share was taken: {s}"),
            }
            if banned {
                break;
            }
        }
        if banned {
            break;
        }
    }
    assert!(banned, "the address was banned although each connection stayed under the limit");
    // Banned at the door now, before a word.
    let mut again = Miner::connect_from(&stratum, attacker).await;
    let said = again.read().await.and_then(|m| m.error).expect("told why");
    assert!(said.message.starts_with("IP Address currently banned"), "{}", said.message);
    // The honest miner keeps mining, and no junk is on its record or anyone's.
    assert_eq!(victim.keepalive().await.expect("still connected").result["status"], "KEEPALIVED");
    let after = participant(&c, "victim").await.expect("still there");
    assert_eq!(after["shares"]["invalid"], 0, "no junk on another miner's record: {after}");
    assert_eq!(after["shares"]["valid"], 2, "{after}");
    assert!(participant(&c, "made-up-name").await.is_none(), "a participant appears on its first valid share");
}

/// The default verifier (`auto`: fast mode on this machine) on a machine
/// loaded by two hashing workers: its 2 GiB dataset takes a long while to
/// build, and until then every share used to come back "not verified within
/// the time limit" — no block submitted, nothing credited. Shares now verify
/// in light mode until the dataset is ready: blocks within a minute.
#[tokio::test]
async fn the_default_verifier_submits_blocks_while_its_dataset_builds() {
    let mut c = Cluster::start(opts(&[("FAENA_VERIFY_MODE", "auto"), ("FAENA_DAEMON_POLL_MS", "200")])).await;
    // 100 hashes a block on average: two light-mode threads find one in
    // seconds, so the minute measures the verifier, not the luck of a
    // block's time (at 200, a sometimes-slow pair misses it now and then).
    let node = Monerod::start(c.dir.path(), 100).await;
    for id in ["load-1", "load-2"] {
        c.add_worker_with(id, 1, &[("FAENA_RANDOMX_THREADS", "1")]).await;
    }
    c.wait_workers(2).await;
    let (status, v) =
        c.api.post("/api/mining/sources", &json!({"kind": "daemon", "url": node.url, "wallet": WALLET})).await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    let started = std::time::Instant::now();
    let saw_light = std::sync::atomic::AtomicBool::new(false);
    let blocks = eventually("a block accepted", || {
        let (c, id, saw_light) = (&c, &id, &saw_light);
        async move {
            let verifier = c.api.get("/api/mining/verifier").await.1;
            if verifier["keys"].as_array().is_some_and(|k| k.iter().any(|k| k["hashing"] == "light")) {
                saw_light.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let v = c.api.get(&format!("/api/mining/sources/{id}")).await.1;
            let accepted = v["blocks"].as_array()?.iter().filter(|b| b["accepted"] == true).count();
            (accepted >= 1).then_some(accepted)
        }
    })
    .await;
    let took = started.elapsed();
    let verifier = c.api.get("/api/mining/verifier").await.1;
    assert_eq!(verifier["mode"], "fast", "the default on this machine: {verifier}");
    assert!(saw_light.into_inner(), "shares were verified in light mode while the dataset built: {verifier}");
    assert!(blocks >= 1 && took.as_secs() < 60, "a block within a minute, not after the dataset: {took:?} {verifier}");
    assert!(!c.master_log().contains("not verified within the time limit"), "no share was lost to the verifier");
}

/// The preface a forwarder (a standby, the edge) starts a connection with
/// names the miner only with the cluster's signature, and only first: a
/// miner cannot claim another address, forged or after it has spoken.
#[tokio::test]
async fn a_miner_cannot_claim_an_address_with_a_forwarders_preface() {
    use faena_common::signing::vouch;
    use faena_proto::secret::Secret;
    let (_c, _node, stratum) = pool(&[]).await;
    let refused = |mut m: Miner| async move {
        let said = m.read().await.and_then(|r| r.error).expect("told why");
        assert!(said.message.starts_with("Unauthenticated"), "{}", said.message);
        assert!(m.read().await.is_none(), "and closed");
    };
    let forged = vouch(&Secret::new("not-the-token"), ip("127.0.0.9"));
    let mut m = Miner::connect_from(&stratum, ip("127.0.0.7")).await;
    m.send_raw(&format!("faena-client {forged}\n")).await;
    refused(m).await;
    // A real signature, but after the miner spoke.
    let signed = vouch(&Secret::new(faena_testkit::TOKEN), ip("127.0.0.9"));
    let mut m = Miner::connect_from(&stratum, ip("127.0.0.7")).await;
    let unknown = m.call("hello", json!({})).await.and_then(|r| r.error).expect("an unknown method");
    assert!(unknown.message.starts_with("Unsupported method"), "{}", unknown.message);
    m.send_raw(&format!("faena-client {signed}\n")).await;
    refused(m).await;
    // Signed and first, it is taken: the connection is then 127.0.0.9's.
    let mut m = Miner::connect_from(&stratum, ip("127.0.0.7")).await;
    m.send_raw(&format!("faena-client {signed}\n")).await;
    m.login("rig-9", "x").await.expect("a forwarded miner logs in");
}
