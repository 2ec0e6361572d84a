//! The Python worker (`examples/python-worker`) against a real master: the
//! contract spoken by a worker in another language — with the embedded
//! broker and with Mosquitto (its own account from the master) — through
//! results, bad params, progress, cancel, kill -9 mid-job and drain.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_testkit::mosquitto::Mosquitto;
use faena_testkit::{Cluster, MasterOpts, eventually};
use serde_json::{Value, json};

/// `lines` lines of three words each.
fn text(lines: usize) -> String {
    (0..lines).map(|i| format!("word {i} here\n")).collect()
}

async fn progress_seen(c: &Cluster, id: &str) -> Value {
    let mut events = c.api.events(id).await;
    loop {
        let (name, data) = events.next().await.expect("the job's events");
        assert!(!faena_testkit::api::is_final(&name), "job {id} ended before any progress: {data}");
        if name == "progress" {
            return data;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_with_the_embedded_broker() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_python_worker("py-1", 2, &[]).await;
    let workers = c.wait_workers(1).await;
    assert_eq!(workers[0]["kinds"], json!(["x.wordcount"]), "{}", workers[0]);

    // A result, exactly as the kind defines it.
    let id = c.api.submit_ok("x.wordcount", json!({"text": "one two\nthree\n\nfour  five six"}), None).await;
    let job = c.api.wait_final(&id).await;
    assert_eq!((job["state"].as_str(), &job["result"]), (Some("succeeded"), &json!({"words": 6, "lines": 4})), "{job}");
    assert_eq!(job["worker"], "py-1");

    // Bad params fail the job at once, with the worker's reason.
    for (params, says) in [(json!({"txt": "a"}), "params must be"), (json!({"text": "a", "pace_ms": -1}), "pace_ms")] {
        let id = c.api.submit_ok("x.wordcount", params, None).await;
        let job = c.api.wait_final(&id).await;
        assert_eq!((job["state"].as_str(), job["attempts"].as_u64()), (Some("failed"), Some(1)), "{job}");
        assert!(job["error"].as_str().is_some_and(|e| e.contains(says)), "{job}");
    }

    // Progress streams; cancel stops it mid-way and frees the slot.
    let long = c.api.submit_ok("x.wordcount", json!({"text": text(40), "pace_ms": 2000}), None).await;
    let first = progress_seen(&c, &long).await;
    // Two lines a step (a twentieth of 40); the first step may pass before
    // the events stream is open, so the first seen is some early step.
    let (done, total) = (first["data"]["done"].as_u64().unwrap_or(0), first["data"]["total"].as_u64());
    assert!(done % 2 == 0 && (2..40).contains(&done) && total == Some(40), "{first}");
    let (status, body) = c.api.cancel(&long).await;
    assert!(status.is_success(), "{body}");
    assert_eq!(c.api.wait_final(&long).await["state"], "cancelled");
    eventually("py-1 stopped the cancelled job", || {
        let seen = c.worker_log("py-1").contains(&format!("job {long} cancelled by the master"));
        async move { seen.then_some(()) }
    })
    .await;

    // kill -9 mid-job: the unit goes to the other worker, and is done once.
    c.add_python_worker("py-2", 1, &[]).await;
    c.wait_workers(2).await;
    let drill = c.api.submit_ok("x.wordcount", json!({"text": text(20), "pace_ms": 300}), Some("high")).await;
    progress_seen(&c, &drill).await;
    let victim = c.api.job(&drill).await["worker"].as_str().expect("a worker").to_owned();
    c.worker(&victim).kill9().await;
    let job = c.api.wait_final(&drill).await;
    assert_eq!(
        (job["state"].as_str(), &job["result"]),
        (Some("succeeded"), &json!({"words": 60, "lines": 20})),
        "{job}"
    );
    assert_ne!(job["worker"].as_str(), Some(victim.as_str()));
    assert_eq!(job["attempts"], 2, "{job}");

    // SIGTERM drains: the running job finishes, then the worker goes offline.
    let survivor = if victim == "py-1" { "py-2" } else { "py-1" };
    let last = c.api.submit_ok("x.wordcount", json!({"text": text(20), "pace_ms": 100}), None).await;
    progress_seen(&c, &last).await;
    let status = c.worker(survivor).terminate().await;
    assert!(status.success(), "{survivor} exited with {status}");
    let job = c.api.job(&last).await;
    assert_eq!((job["state"].as_str(), job["worker"].as_str()), (Some("succeeded"), Some(survivor)), "{job}");
    eventually("the drained worker is offline", || {
        let api = c.api.clone();
        async move { api.workers().await.iter().all(|w| w["state"] != "online").then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_with_mosquitto_and_its_own_account() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let broker = Mosquitto::start(tmp.path()).await;
    let mut c = Cluster::start(MasterOpts { broker: broker.broker(), ..Default::default() }).await;
    c.add_python_worker("py-m", 1, &[]).await;
    c.wait_workers(1).await;
    let id = c.api.submit_ok("x.wordcount", json!({"text": "a b c"}), None).await;
    assert_eq!(c.api.wait_final(&id).await["result"], json!({"words": 3, "lines": 1}));

    // Killed mid-job and started again under the same id: it gets a new
    // account, and the unit comes back to it once the master saw it die.
    let drill = c.api.submit_ok("x.wordcount", json!({"text": text(20), "pace_ms": 300}), None).await;
    progress_seen(&c, &drill).await;
    c.worker("py-m").kill9().await;
    c.workers.clear();
    c.add_python_worker("py-m", 1, &[]).await;
    let job = c.api.wait_final(&drill).await;
    assert_eq!(
        (job["state"].as_str(), &job["result"]),
        (Some("succeeded"), &json!({"words": 60, "lines": 20})),
        "{job}"
    );
    assert_eq!(job["attempts"], 2, "{job}");
    let log = c.worker_log("py-m");
    assert!(!log.contains(&c.token), "the worker logged the cluster token");
}

/// A master that restarts while the Python worker drains: the worker's
/// heartbeats meet a master that does not know it, it registers again
/// with its lease, and its result is taken, the job's one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_drains_through_a_master_restart() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_python_worker("py-d", 1, &[]).await;
    c.wait_workers(1).await;
    let id = c.api.submit_ok("x.wordcount", json!({"text": text(20), "pace_ms": 150}), None).await;
    progress_seen(&c, &id).await;
    c.restart_master_while_draining("py-d").await;
    let job = c.api.wait_final(&id).await;
    assert_eq!(
        (job["state"].as_str(), job["worker"].as_str(), job["attempts"].as_u64(), &job["result"]),
        (Some("succeeded"), Some("py-d"), Some(1), &json!({"words": 60, "lines": 20})),
        "{job} {:?}",
        c.api.history(&id).await
    );
    let status = c.worker("py-d").wait_exit().await;
    assert!(status.success(), "py-d exited with {status}");
    assert!(c.worker_log("py-d").matches("registered with master").count() >= 2, "{}", c.worker_log("py-d"));
}
