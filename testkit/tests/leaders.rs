//! Two masters on one PostgreSQL store and one Mosquitto: one leads, the
//! other stands by and forwards; pausing the leader under load hands the
//! lead over, and the old leader, woken, steps down by itself.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::collections::HashSet;

use faena_testkit::mosquitto::{Mosquitto, OBSERVER};
use faena_testkit::process::signal;
use faena_testkit::{Api, Cluster, Listener, MasterOpts, eventually, get_json};
use serde_json::{Value, json};

async fn health(http: &str) -> Option<Value> {
    get_json(http, "/healthz").await
}

/// Submits a job through `http` until one attempt is acknowledged (a
/// takeover may refuse or drop a few): its id.
async fn submit(http: &str, n: usize) -> String {
    let client = faena_testkit::http();
    eventually(&format!("job {n} acknowledged"), || {
        let client = client.clone();
        async move {
            let body = json!({"kind": "noop", "params": {"delay_ms": 20}});
            let resp = client.post(format!("http://{http}/api/jobs")).json(&body).send().await.ok()?;
            if resp.status() != 202 {
                return None;
            }
            let v: Value = resp.json().await.ok()?;
            v["id"].as_str().map(str::to_owned)
        }
    })
    .await
}

#[tokio::test]
async fn a_paused_leader_is_replaced_and_steps_down_when_it_wakes() {
    let pg = faena_store::harness::Postgres::start();
    let broker_dir = tempfile::tempdir().expect("dir");
    let mosquitto = Mosquitto::start(broker_dir.path()).await;
    // The default lease (3 s): the store commits each renewal with an
    // fsync, and a 1 s lease could run out on a busy disk while the new
    // leader is already chosen, handing the lead back to the old one.
    let lease = [
        ("FAENA_STORE_URL".to_owned(), pg.url()),
        ("FAENA_LOG".to_owned(), "info,faena_master::leader=debug".to_owned()),
    ];
    let opts = MasterOpts { broker: mosquitto.broker(), extra: lease.to_vec(), ..MasterOpts::default() };
    let mut c = Cluster::start(opts).await;
    let a = c.addrs.clone();
    let first = health(&a.http).await.expect("the first master answers");
    assert_eq!(first["role"], "leader", "{first}");
    let (mut standby, b) = c.add_master("second").await;
    let second = health(&b.http).await.expect("the second master answers");
    assert_eq!(second["role"], "standby", "{second}");

    // The worker, the page's requests and the CLI know only the standby:
    // it forwards everything to the leader.
    let via_b = Api::new(&b.http);
    c.addrs.grpc = b.grpc.clone();
    c.add_worker("w1", 4).await;
    c.wait_workers(1).await;
    let mut ids = Vec::new();
    for n in 0..60 {
        ids.push(submit(&b.http, n).await);
    }
    eventually("some jobs done through the standby", || {
        let api = via_b.clone();
        let id = ids[10].clone();
        async move { (api.job(&id).await["state"] == "succeeded").then_some(()) }
    })
    .await;

    // The leader stops (SIGSTOP) with work in flight; more is submitted
    // through the standby, which takes the lead once the lease runs out.
    let old = c.master().pid();
    assert!(signal(old, "STOP"), "the leader is stopped");
    for n in 60..120 {
        ids.push(submit(&b.http, n).await);
    }
    let led = eventually("the standby leads", || {
        let http = b.http.clone();
        async move { health(&http).await.filter(|h| h["role"] == "leader") }
    })
    .await;
    let new_epoch = led["epoch"].as_i64().expect("an epoch");
    let old_epoch = first["epoch"].as_i64().expect("an epoch");
    assert!(new_epoch > old_epoch, "{led}");

    // Woken, the old leader finds its lease gone and steps down: it starts
    // again as a standby. (Should the new leader's lease run out meanwhile,
    // a store that stalls longer than the lease, the old one may lead
    // again, but only under a newer epoch than the new leader's.)
    assert!(signal(old, "CONT"), "the old leader is woken");
    eventually("the old leader stands by", || {
        let http = a.http.clone();
        async move {
            let h = health(&http).await?;
            (h["role"] == "standby" || h["epoch"].as_i64().is_some_and(|e| e > new_epoch)).then_some(())
        }
    })
    .await;

    // The retained master status names the leader the store has (the new
    // one: not the old one's last will, which the broker sends when the
    // old one's connection ends).
    let observer = format!("mqtt://127.0.0.1:{}", mosquitto.observer_port);
    let login = Some((OBSERVER.username.to_owned(), OBSERVER.password.to_owned()));
    let status = eventually("the retained status names the leader", || {
        let lease = pg.sql("SELECT epoch || ' ' || name FROM faena_leader");
        let (observer, login) = (observer.clone(), login.clone());
        async move {
            let (epoch, leader) = lease.split_once(' ')?;
            let epoch: i64 = epoch.parse().ok()?;
            let mut l = Listener::start_with(&observer, "leaders-observer", "faena/master/status", login).await;
            let (_, payload) =
                tokio::time::timeout(std::time::Duration::from_secs(2), l.messages.recv()).await.ok()??;
            let s: Value = serde_json::from_slice(&payload).ok()?;
            let named = s["state"] == "online" && s["leader"] == leader && s["epoch"].as_i64() == Some(epoch);
            named.then_some(s)
        }
    })
    .await;
    assert!(status["epoch"].as_i64() >= Some(new_epoch), "{status}");

    // Every acknowledged job ends, once; through either master.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    for id in &ids {
        loop {
            let job = get_json(&a.http, &format!("/api/jobs/{id}")).await;
            if job.as_ref().is_some_and(|j| j["state"] == "succeeded") {
                break;
            }
            // The cluster shows both masters' and the worker's logs as it drops.
            assert!(tokio::time::Instant::now() <= deadline, "job {id} never succeeded: {job:?}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len());
    let twice = pg.sql("SELECT count(*) FROM (SELECT job_id FROM transitions WHERE state = 'succeeded' GROUP BY job_id HAVING count(*) > 1) d");
    assert_eq!(twice, "0", "no job ended twice");
    // Nothing of the deposed leader's was written after the takeover.
    let late = pg.sql(&format!(
        "SELECT count(*) FROM transitions WHERE epoch = {old_epoch} AND n > (SELECT min(n) FROM transitions WHERE epoch = {new_epoch})"
    ));
    assert_eq!(late, "0", "the deposed leader wrote nothing after the takeover");
    assert!(c.master_log().contains("no longer leads"), "the old leader said why it stood down");
    standby.terminate().await;
}
