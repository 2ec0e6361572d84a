//! Stratum on every master, two masters on one PostgreSQL store and a real
//! monerod: a miner on the standby is seated by the leader (no two miners
//! anywhere share a slot), its shares are verified by the standby (the
//! leader re-hashes none of them) and counted in the store before they are
//! said accepted; a block it finds is submitted by the leader; the leader's
//! views show its work. Killing the standby loses no accepted share, frees
//! its seats, and its miner mines on the leader.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_proto::jobs::decode_hex;
use faena_proto::mine::target_for_difficulty;
use faena_randomx::mine::meets;
use faena_testkit::monerod::{Monerod, WALLET};
use faena_testkit::mosquitto::Mosquitto;
use faena_testkit::stratum::{Miner, mine_async};
use faena_testkit::{Api, Cluster, MasterOpts, WAIT, eventually, sample, scrape};
use serde_json::{Value, json};

async fn login(stratum: &str, name: &str) -> Option<Miner> {
    let mut m = Miner::connect(stratum).await;
    m.login(name, "x").await.ok().map(|()| m)
}

fn participant(view: &Value, name: &str) -> Option<Value> {
    view["participants"].as_array()?.iter().find(|p| p["name"] == name).cloned()
}

/// Shares the master at `api` re-hashed and found valid.
async fn verified(api: &Api) -> f64 {
    sample(&scrape(&api.url("/metrics")).await, "faena_shares_total{verdict=\"valid\"}").unwrap_or(0.0)
}

/// Waits until the leader has renewed its lease `n` times.
async fn renewals(pg: &faena_store::harness::Postgres, n: usize) {
    let mut seen = std::collections::HashSet::new();
    let renewed = tokio::time::timeout(WAIT, async {
        while seen.len() <= n {
            seen.insert(pg.sql("SELECT expires_at FROM faena_leader"));
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    assert!(renewed.await.is_ok(), "the leader renews its lease");
}

#[tokio::test]
async fn a_standby_verifies_its_own_miners_and_the_leader_seats_them_and_submits_their_blocks() {
    let pg = faena_store::harness::Postgres::start();
    let broker_dir = tempfile::tempdir().expect("dir");
    let mosquitto = Mosquitto::start(broker_dir.path()).await;
    let extra = [
        ("FAENA_STORE_URL", pg.url()),
        ("FAENA_LEADER_LEASE_MS", "1000".to_owned()),
        ("FAENA_STRATUM_ADDR", "127.0.0.1:0".to_owned()),
        ("FAENA_STRATUM_DIFFICULTY", "1".to_owned()),
        ("FAENA_STRATUM_MIN_DIFFICULTY", "1".to_owned()),
        ("FAENA_VERIFY_BUDGET", "1".to_owned()),
        ("FAENA_STRATUM_ADDRESS_BUDGET", "1".to_owned()),
        ("FAENA_STALE_GRACE_MS", "120000".to_owned()),
        ("FAENA_DAEMON_POLL_MS", "200".to_owned()),
        ("FAENA_TEMPLATE_REFRESH_SECS", "3600".to_owned()),
    ];
    let extra = extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    let c = Cluster::start(MasterOpts { broker: mosquitto.broker(), extra, ..MasterOpts::default() }).await;
    let leader_stratum = c.addrs.stratum.clone().expect("the leader's Stratum");
    let (mut b_proc, b) = c.add_master("second").await;
    let standby_stratum = b.stratum.clone().expect("the standby's Stratum");
    let network = 200;
    let node = Monerod::start(c.dir.path(), network).await;
    let (status, v) =
        c.api.post("/api/mining/sources", &json!({"kind": "daemon", "url": node.url, "wallet": WALLET})).await;
    assert_eq!(status, 201, "{v}");
    let source = v["id"].as_str().expect("id").to_owned();
    let view = || async { c.api.get(&format!("/api/mining/sources/{source}")).await.1 };
    eventually("the source mines", || async { (view().await["state"] == "mining").then_some(()) }).await;

    // One miner on each master: the standby mirrors the leader's work
    // (once its feed is open) and both are seated by the leader.
    let mut on_leader = login(&leader_stratum, "rig-a").await.expect("a miner on the leader");
    let mut on_standby =
        eventually("a miner logs in on the standby", || async { login(&standby_stratum, "rig-b").await }).await;
    let (ja, jb) = (on_leader.job.clone().expect("a job"), on_standby.job.clone().expect("a job"));
    assert_eq!((ja.height, &ja.seed_hash), (jb.height, &jb.seed_hash), "the same work on both masters");
    let (slot_a, slot_b) = (decode_hex(&ja.blob).unwrap()[42], decode_hex(&jb.blob).unwrap()[42]);
    assert!(slot_a != 0 && slot_b != 0 && slot_a != slot_b, "the leader gave distinct slots: {slot_a} {slot_b}");
    assert_eq!(view().await["miners"], 2, "the leader counts the standby's miner");

    // The standby looks at the lease four times a lease: seeing the same
    // leader again is no reason to open its feed again.
    renewals(&pg, 4).await;
    let metrics = scrape(&c.api.url("/metrics")).await;
    let feeds = ["faena_pool_feeds_total", "faena_pool_followers"].map(|m| sample(&metrics, m));
    assert_eq!(feeds, [Some(1.0), Some(1.0)], "one feed, opened once and open");

    // Its shares are verified on the standby, not the leader, and counted.
    let before = verified(&c.api).await;
    let block = target_for_difficulty(network);
    let found: Vec<_> = mine_async(&jb, 12).await.into_iter().filter(|f| !meets(&f.hash, block)).take(4).collect();
    for f in &found {
        assert_eq!(on_standby.submit(&jb.job_id, f.nonce, &f.hash).await, Ok("OK".into()));
    }
    let stored = || pg.sql("SELECT valid FROM participants WHERE name = 'rig-b'").trim().parse::<u64>().unwrap_or(0);
    assert_eq!(stored(), found.len() as u64, "accepted means in the store");
    let rigs = eventually("the leader's views show the standby's miner", || async {
        let rigs = c.api.get("/api/mining/participants").await.1;
        participant(&rigs, "rig-b").filter(|p| p["shares"]["valid"] == found.len()).map(|_| rigs)
    })
    .await;
    assert!(participant(&rigs, "rig-b").unwrap()["hashrate"]["1m"].as_f64() > Some(0.0), "{rigs}");
    assert_eq!(verified(&c.api).await, before, "the leader re-hashed none of the standby's shares");
    assert!(view().await["shares"]["valid"].as_u64() >= Some(found.len() as u64));

    // A block found on the standby: the leader submits it, the node takes it,
    // and the standby's miner gets the next template.
    let height = node.height().await;
    let block_job = faena_proto::stratum::Job { target: faena_proto::stratum::target_hex(network), ..jb.clone() };
    let hit = mine_async(&block_job, 1).await.pop().expect("a block");
    assert_eq!(on_standby.submit(&jb.job_id, hit.nonce, &hit.hash).await, Ok("OK".into()));
    let blocks = eventually("the leader records the block", || async {
        let v = view().await;
        let blocks = v["blocks"].as_array()?.clone();
        blocks.iter().any(|b| b["accepted"] == true && b["participant"] == "rig-b").then_some(blocks)
    })
    .await;
    assert!(node.height().await > height, "the chain grew: {blocks:?}");
    // (Jobs at a new difficulty for the same block may come first.)
    let next = tokio::time::timeout(WAIT, async {
        loop {
            let next = on_standby.next_job().await;
            if next.height > jb.height {
                break next;
            }
        }
    });
    assert!(next.await.is_ok(), "the standby's miner is sent the next block's template");

    // The standby dies: nothing it accepted is lost, its seat is free again,
    // and its miner mines on the leader.
    let accepted = stored();
    assert_eq!(accepted, found.len() as u64 + 1);
    b_proc.kill9().await;
    drop(on_standby);
    eventually("the leader frees the standby's seats", || async { (view().await["miners"] == 1).then_some(()) }).await;
    let followers = sample(&scrape(&c.api.url("/metrics")).await, "faena_pool_followers");
    assert_eq!(followers, Some(0.0), "nobody follows");
    assert_eq!(stored(), accepted, "every share the standby accepted is in the store");
    let mut again = login(&leader_stratum, "rig-b").await.expect("rig-b on the leader");
    let job = again.job.clone().expect("a job");
    let f = mine_async(&job, 8).await.into_iter().find(|f| !meets(&f.hash, block)).expect("a share");
    assert_eq!(again.submit(&job.job_id, f.nonce, &f.hash).await, Ok("OK".into()));
    assert_eq!(stored(), accepted + 1, "counting goes on from where it was");
    on_leader.keepalive().await.expect("the leader's own miner never noticed");
}

/// The masters' internal routes answer only the cluster's masters, and a
/// leader takes at most 64 followers' feeds at once.
#[tokio::test]
async fn only_the_clusters_masters_may_follow_and_no_more_than_64() {
    let c = Cluster::start(MasterOpts::default()).await;
    let key = faena_common::signing::peer_key(&faena_proto::secret::Secret::new(c.token.clone()));
    let http = faena_testkit::http();
    let feed = |name: String, key: String| {
        let (http, url) = (http.clone(), c.api.url("/internal/pool/feed"));
        async move {
            let req = http.post(url).header("x-faena-peer", key).json(&json!({"replica": name, "seats": []}));
            req.send().await.expect("an answer")
        }
    };
    for wrong in ["", "not-the-key", &faena_common::signing::peer_key(&faena_proto::secret::Secret::new("another"))] {
        let resp = feed("m".into(), wrong.to_owned()).await;
        assert_eq!(resp.status(), 401, "{wrong:?}");
    }
    let (status, v) = c.api.post("/internal/pool/seats", &json!({"replica": "m"})).await;
    assert_eq!(
        (status.as_u16(), v["error"]["code"].clone()),
        (401, json!("unauthorized")),
        "the API token is not the key"
    );
    let mut open = Vec::new();
    for n in 0..64 {
        let resp = feed(format!("master-{n}"), key.clone()).await;
        assert_eq!(resp.status(), 200);
        open.push(resp);
    }
    let over = feed("master-64".into(), key.clone()).await;
    assert_eq!(over.status(), 503);
    let v: Value = over.json().await.expect("json");
    assert_eq!(v["error"]["code"], "too_many_replicas", "{v}");
    // A feed opened again by the same master replaces its last one.
    let again = feed("master-3".into(), key.clone()).await;
    assert_eq!(again.status(), 200);
    let metrics = scrape(&c.api.url("/metrics")).await;
    let feeds = ["faena_pool_followers", "faena_pool_feeds_total"].map(|m| sample(&metrics, m));
    assert_eq!(feeds, [Some(64.0), Some(65.0)], "64 follow; one of them opened its feed twice");
    // A follower that went away makes room.
    drop(open.pop());
    eventually("a closed feed makes room", || async {
        (feed("master-64".into(), key.clone()).await.status() == 200).then_some(())
    })
    .await;
}
