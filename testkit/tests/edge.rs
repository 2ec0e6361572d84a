//! The edge in front of two masters on one PostgreSQL store: requests
//! reach the leader through it and miners a master chosen by their
//! address, each counted by its own address (127.0.0.2, …) and not the
//! edge's; when the leader is killed, the edge follows the lead to the
//! other master, and miners logging in again through it mine there.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::net::IpAddr;

use faena_testkit::cli::faena_env;
use faena_testkit::monerod::{Monerod, WALLET};
use faena_testkit::mosquitto::Mosquitto;
use faena_testkit::stratum::{Miner, mine_async};
use faena_testkit::{Api, Cluster, MasterOpts, eventually, get_json};
use serde_json::{Value, json};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

/// What the edge says of the masters it sees.
async fn edge_view(edge: &str) -> Option<Value> {
    get_json(edge, "/healthz/edge").await
}

/// A miner through `stratum` from `from`, logged in as `name`, or why not.
async fn miner(stratum: &str, from: &str, name: &str) -> Result<Miner, String> {
    let mut m = Miner::connect_from(stratum, ip(from)).await;
    m.login(name, "x").await.map(|()| m)
}

#[tokio::test]
async fn the_edge_passes_clients_on_to_the_leader_with_their_own_addresses_and_follows_a_takeover() {
    let pg = faena_store::harness::Postgres::start();
    let broker_dir = tempfile::tempdir().expect("dir");
    let mosquitto = Mosquitto::start(broker_dir.path()).await;
    let extra = [
        ("FAENA_STORE_URL", pg.url()),
        ("FAENA_LEADER_LEASE_MS", "1000".to_owned()),
        ("FAENA_STRATUM_ADDR", "127.0.0.1:0".to_owned()),
        ("FAENA_STRATUM_DIFFICULTY", "1".to_owned()),
        ("FAENA_STRATUM_MIN_DIFFICULTY", "1".to_owned()),
        ("FAENA_STRATUM_MAX_PER_ADDRESS", "1".to_owned()),
    ];
    let extra = extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    let mut c = Cluster::start(MasterOpts { broker: mosquitto.broker(), extra, ..MasterOpts::default() }).await;
    let a = c.addrs.clone();
    let (mut b_proc, b) = c.add_master("second").await;
    let (_edge_proc, edge) = c.add_edge("edge", &[&a, &b]).await;
    let seen = eventually("the edge sees both masters", || async {
        let v = edge_view(&edge.http).await?;
        (v["masters"].as_array()?.len() == 2).then_some(v)
    })
    .await;
    assert_eq!(seen["leader"], json!(a.http), "{seen}");

    // REST through the edge reaches the leader (its /healthz answers).
    let health = get_json(&edge.http, "/healthz").await.expect("the leader's health through the edge");
    assert_eq!((health["role"].clone(), health["epoch"].is_i64()), (json!("leader"), true), "{health}");
    let via_edge = Api::new(&edge.http);
    let node = Monerod::start(c.dir.path(), 1_000_000).await;
    let (status, v) =
        via_edge.post("/api/mining/sources", &json!({"kind": "daemon", "url": node.url, "wallet": WALLET})).await;
    assert_eq!(status, 201, "{v}");
    let source = v["id"].as_str().expect("id").to_owned();
    eventually("the source mines", || async {
        (via_edge.get(&format!("/api/mining/sources/{source}")).await.1["state"] == "mining").then_some(())
    })
    .await;

    // Miners through the edge are counted by their own addresses: one
    // connection each (FAENA_STRATUM_MAX_PER_ADDRESS=1), not one for all;
    // an address's connections all go to the same master.
    let stratum = edge.stratum.clone().expect("the edge serves Stratum");
    let mut first = miner(&stratum, "127.0.0.2", "rig-2").await.expect("the first miner from 127.0.0.2");
    let Err(refused) = miner(&stratum, "127.0.0.2", "rig-2b").await else {
        panic!("a second from 127.0.0.2 is let in")
    };
    assert!(refused.starts_with("Too many connections from your address"), "{refused}");
    let _third = miner(&stratum, "127.0.0.3", "rig-3").await.expect("127.0.0.3 is another address");

    // A share through the edge is verified and counted.
    let job = first.job.clone().expect("a job");
    let found = mine_async(&job, 1).await;
    assert_eq!(first.submit(&job.job_id, found[0].nonce, &found[0].hash).await, Ok("OK".into()));

    // The leader dies: the edge follows the lead to the other master, and
    // a miner logging in again through the edge mines there.
    c.master().kill9().await;
    drop(first);
    let led = eventually("the edge sees the new leader", || async {
        let v = edge_view(&edge.http).await?;
        (v["leader"] == json!(b.http)).then_some(v)
    })
    .await;
    assert_eq!(led["masters"].as_array().map(Vec::len), Some(1), "{led}");
    eventually("the source mines on the new leader", || async {
        (via_edge.get(&format!("/api/mining/sources/{source}")).await.1["state"] == "mining").then_some(())
    })
    .await;
    let mut again = eventually("a miner logs in again through the edge", || async {
        miner(&stratum, "127.0.0.2", "rig-2").await.ok()
    })
    .await;
    // Its verification budget fills from nothing as it starts: the first
    // shares may be turned away as over budget, never as invalid.
    let job = again.job.clone().expect("a job from the new leader");
    let mut shares = mine_async(&job, 40).await.into_iter();
    loop {
        let found = shares.next().expect("a share accepted before 40 were turned away");
        match again.submit(&job.job_id, found.nonce, &found.hash).await {
            Ok(ok) => break assert_eq!(ok, "OK"),
            Err(e) => assert!(e.starts_with("Server busy"), "{e}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rigs = via_edge.get("/api/mining/participants").await.1;
    let rig = rigs["participants"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "rig-2").cloned());
    assert!(rig.is_some_and(|r| r["shares"]["valid"].as_u64() >= Some(2)), "both shares counted: {rigs}");
    b_proc.terminate().await;
}

/// The CLI knows only the edge: a `submit --wait` under way when the
/// leader is killed follows the job on the new leader to its end, and a
/// submit made while nobody leads yet is asked again until one does. (It
/// is made once the edge has seen the leader gone: one the edge sent down
/// a kept connection the dead leader's close had not yet reached would be
/// `leader_lost` — "it may have been done" — which the CLI rightly leaves
/// to the user.)
#[tokio::test]
async fn the_cli_through_the_edge_rides_out_a_takeover() {
    let pg = faena_store::harness::Postgres::start();
    let broker_dir = tempfile::tempdir().expect("dir");
    let mosquitto = Mosquitto::start(broker_dir.path()).await;
    let extra = vec![("FAENA_STORE_URL".to_owned(), pg.url()), ("FAENA_LEADER_LEASE_MS".to_owned(), "1000".to_owned())];
    let mut c = Cluster::start(MasterOpts { broker: mosquitto.broker(), extra, ..MasterOpts::default() }).await;
    let a = c.addrs.clone();
    let (mut b_proc, b) = c.add_master("second").await;
    let (_edge_proc, edge) = c.add_edge("edge", &[&a, &b]).await;
    // The worker calls either master (a standby passes it on).
    c.addrs.grpc = format!("{},http://{}", a.grpc, b.grpc);
    c.add_worker("w1", 2).await;
    c.wait_workers(1).await;
    let env = [("FAENA_URL", format!("http://{}", edge.http))];
    let mut leader = c.master.take().expect("the first master");
    let slow = faena_env(
        &c,
        "no-api-token-here",
        &["submit", "noop", "-p", r#"{"delay_ms": 3000, "payload": "slow"}"#, "--wait"],
        &env,
    );
    let kill = async {
        eventually("the slow job runs", || async {
            let jobs = Api::new(&edge.http).get("/api/jobs?state=running").await.1;
            (jobs["jobs"].as_array().map(Vec::len) == Some(1)).then_some(())
        })
        .await;
        leader.kill9().await;
        eventually("the edge sees the leader gone", || async {
            let v = edge_view(&edge.http).await?;
            (v["leader"] != json!(a.http)).then_some(())
        })
        .await;
        // Asked while the lease has not run out yet: nobody leads.
        faena_env(&c, "no-api-token-here", &["submit", "noop", "-p", r#"{"payload": "during"}"#, "--wait"], &env).await
    };
    let (slow, during) = tokio::join!(slow, kill);
    slow.ok();
    assert!(slow.stdout.contains("slow"), "the slow job's result: {}", slow.stdout);
    during.ok();
    assert!(during.stdout.contains("during"), "{}", during.stdout);
    b_proc.terminate().await;
}
