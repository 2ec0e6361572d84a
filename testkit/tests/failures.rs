//! Crashes and restarts: a killed worker, a killed master, a restarted
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]
//! broker, and a worker told to stop. Nothing accepted is lost and every job
//! has exactly one outcome.

use faena_testkit::{Cluster, MasterOpts, Mosquitto, eventually, sample, scrape};
use serde_json::{Value, json};

/// Waits until the worker itself reports a running unit (not only the master).
async fn wait_running_on(c: &mut Cluster, worker: &str) {
    c.wait_worker_running(worker, 1.0, "the worker runs the unit").await;
}

fn count(history: &[Value], state: &str) -> usize {
    history.iter().filter(|t| t["state"] == state).count()
}

#[tokio::test]
async fn a_killed_worker_s_job_finishes_once_on_another() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker("w1", 1).await;
    c.add_worker("w2", 1).await;
    c.wait_workers(2).await;
    let id = c.api.submit_ok("noop", json!({"payload": "survivor", "delay_ms": 1500}), None).await;
    let first = c.api.wait_running(&id).await;
    c.worker(&first).kill9().await;

    let job = c.api.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["payload"], "survivor");
    assert_ne!(job["worker"], json!(first));
    assert_eq!(job["attempts"], 2);
    let history = c.api.history(&id).await;
    assert_eq!(count(&history, "succeeded"), 1, "{history:?}");
    assert!(history.iter().any(|t| t["detail"].as_str().is_some_and(|d| d.contains(&first))), "{history:?}");
    let workers = c.wait_workers(1).await;
    assert_ne!(workers[0]["id"], json!(first));
    assert!(c.api.text("/metrics").await.contains("faena_redeliveries_total 1"));
}

#[tokio::test]
async fn a_killed_master_loses_nothing_and_duplicates_nothing() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker("w1", 1).await;
    c.wait_workers(1).await;
    let mut ids = vec![];
    for i in 0..5 {
        ids.push(c.api.submit_ok("noop", json!({"payload": i, "delay_ms": 400}), None).await);
    }
    wait_running_on(&mut c, "w1").await;
    c.master().kill9().await;
    c.restart_master().await;

    for (i, id) in ids.iter().enumerate() {
        let job = c.api.wait_final(id).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(job["result"]["payload"], json!(i));
        let history = c.api.history(id).await;
        assert_eq!(count(&history, "succeeded"), 1, "{history:?}");
    }
    // The job that was running when the master died was adopted, not run again.
    assert_eq!(c.api.job(&ids[0]).await["attempts"], 1, "{:?}", c.api.history(&ids[0]).await);
    c.wait_workers(1).await;
}

#[tokio::test]
async fn workers_reconnect_after_the_broker_restarts() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut broker = Mosquitto::start(tmp.path()).await;
    let opts = MasterOpts { broker: broker.broker(), ..MasterOpts::default() };
    let mut c = Cluster::start(opts).await;
    c.add_worker("w1", 2).await;
    c.wait_workers(1).await;
    let before = c.api.submit_ok("noop", json!({"payload": "before"}), None).await;
    assert_eq!(c.api.wait_final(&before).await["state"], "succeeded");

    broker.kill9().await;
    let during = c.api.submit_ok("noop", json!({"payload": "during"}), None).await;
    broker.restart().await;
    let after = c.api.submit_ok("noop", json!({"payload": "after"}), None).await;
    for (id, payload) in [(&during, "during"), (&after, "after")] {
        let job = c.api.wait_final(id).await;
        assert_eq!(
            (job["state"].as_str(), job["result"]["payload"].as_str()),
            (Some("succeeded"), Some(payload)),
            "{job}"
        );
        assert_eq!(count(&c.api.history(id).await, "succeeded"), 1);
    }
    let (status, health) = c.api.get("/healthz").await;
    assert_eq!(status, 200, "{health}");
    // The restarted broker forgot w1's account: w1 got a new one from the master.
    let said = c.worker_log("w1");
    assert!(said.contains("asking the master for a new one"), "{said}");
    assert!(c.master_log().matches("broker login handed out").count() >= 2, "{}", c.master_log());
}

/// The unit outlasts two heartbeats (500 ms each here), the silence after
/// which a master drops a worker and refuses its results: the worker's
/// heartbeats go on while it drains.
#[tokio::test]
async fn sigterm_lets_a_worker_finish_its_unit_then_exit() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker("w1", 1).await;
    c.wait_workers(1).await;
    let id = c.api.submit_ok("noop", json!({"payload": "drained", "delay_ms": 2500}), None).await;
    wait_running_on(&mut c, "w1").await;
    let status = c.worker("w1").terminate().await;
    assert!(status.success(), "worker exit: {status:?}");
    let job = c.api.job(&id).await;
    assert_eq!(
        (job["state"].as_str(), job["worker"].as_str(), job["attempts"].as_u64()),
        (Some("succeeded"), Some("w1"), Some(1)),
        "{job}"
    );
    c.wait_workers(0).await;
}

#[tokio::test]
async fn a_worker_past_its_drain_timeout_hands_its_unit_back() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker_with("slow", 1, &[("FAENA_DRAIN_TIMEOUT_MS", "200")]).await;
    c.wait_workers(1).await;
    let id = c.api.submit_ok("noop", json!({"payload": "handed", "delay_ms": 60_000}), None).await;
    wait_running_on(&mut c, "slow").await;
    assert!(c.worker("slow").terminate().await.success());
    let job = eventually("the job is queued again", || async {
        let job = c.api.job(&id).await;
        (job["state"] == "queued").then_some(job)
    })
    .await;
    let history = c.api.history(&id).await;
    assert_eq!(job["attempts"], 0, "a handed-back unit is not a used attempt: {job} {history:?}");
    c.add_worker("fresh", 1).await;
    // The unit is long; cancel it once it has moved, to keep the test short.
    eventually("the job runs on the new worker", || async {
        (c.api.job(&id).await["worker"] == "fresh").then_some(())
    })
    .await;
    assert_eq!(c.api.cancel(&id).await.0, 200);
}

#[tokio::test]
async fn sigterm_stops_the_master_cleanly_and_queued_jobs_wait_for_it() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    let ids = [
        c.api.submit_ok("noop", json!({"payload": "a"}), Some("low")).await,
        c.api.submit_ok("noop", json!({"payload": "b"}), None).await,
        c.api.submit_ok("noop", json!({"payload": "c"}), Some("high")).await,
    ];
    let status = c.master().terminate().await;
    assert!(status.success(), "master exit: {status:?}");
    assert!(c.master_log().contains("faena-master stopped"));
    // A clean stop is no error (rumqttd once logged every one at ERROR).
    assert!(!c.master_log().contains(" ERROR "), "{}", c.master_log());
    c.restart_master().await;
    let positions: Vec<u64> = futures::future::join_all(ids.iter().map(|id| c.api.job(id)))
        .await
        .iter()
        .map(|j| j["position"].as_u64().expect("still queued"))
        .collect();
    assert_eq!(positions, [2, 1, 0], "priority order survives the restart");
    c.add_worker("w1", 1).await;
    for (id, payload) in ids.iter().zip(["a", "b", "c"]) {
        assert_eq!(c.api.wait_final(id).await["result"]["payload"], payload);
    }
    assert!(c.worker("w1").terminate().await.success());
    assert!(c.master().terminate().await.success());
    for log in [c.master_log(), c.worker_log("w1")] {
        assert!(!log.contains(" ERROR "), "{log}");
    }
}

#[tokio::test]
async fn a_frozen_worker_loses_its_job_and_its_late_result_is_ignored() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker("frozen", 1).await;
    c.add_worker("healthy", 1).await;
    c.wait_workers(2).await;
    // A filler occupies one worker until the test job has landed on the other.
    let filler = c.api.submit_ok("noop", json!({"delay_ms": 600_000}), None).await;
    let on = c.api.wait_running(&filler).await;
    let (victim, other) = if on == "frozen" { ("healthy", "frozen") } else { ("frozen", "healthy") };
    let id = c.api.submit_ok("noop", json!({"payload": "once", "delay_ms": 1500}), None).await;
    wait_running_on(&mut c, victim).await;
    assert_eq!(c.api.cancel(&filler).await.0, 200);
    // SIGSTOP keeps its connections open: only missed heartbeats reveal it.
    let pid = c.worker(victim).pid();
    assert!(faena_testkit::process::signal(pid, "STOP"), "the worker is stopped");
    let job = c.api.wait_final(&id).await;
    assert_eq!(
        (job["state"].as_str(), job["worker"].as_str(), job["attempts"].as_u64()),
        (Some("succeeded"), Some(other), Some(2))
    );
    let history = c.api.history(&id).await;
    assert!(
        history.iter().any(|t| t["detail"].as_str().is_some_and(|d| d.contains("missed its heartbeats"))),
        "{history:?}"
    );
    // Thawed, the old worker finishes its unit; the master must ignore that result.
    assert!(faena_testkit::process::signal(pid, "CONT"), "the worker is woken");
    c.wait_workers(2).await;
    let zombie = c.worker_metrics_url(victim);
    let master = c.api.url("/metrics");
    eventually("the stale attempt is rejected or revoked", || {
        let (zombie, master) = (zombie.clone(), master.clone());
        async move {
            let revoked = scrape(&zombie).await.contains("outcome=\"cancelled\"");
            let rejected = sample(&scrape(&master).await, "faena_rejected_callbacks_total").unwrap_or(0.0) > 0.0;
            (revoked || rejected).then_some(())
        }
    })
    .await;
    let again = c.api.history(&id).await;
    assert_eq!(count(&again, "succeeded"), 1, "{again:?}");
    assert_eq!(c.api.job(&id).await["worker"], json!(other));
}

#[tokio::test]
async fn a_frozen_master_keeps_its_workers_and_their_jobs_when_it_wakes() {
    // A long leader lease: on PostgreSQL too, the freeze costs no term.
    let opts = MasterOpts { extra: vec![("FAENA_LEADER_LEASE_MS".into(), "30000".into())], ..MasterOpts::default() };
    let mut c = Cluster::start(opts).await;
    c.add_worker("w1", 1).await;
    c.wait_workers(1).await;
    // The unit runs for 2 s, twice the 1 s in which a silent worker or lease
    // is lost (heartbeat 500 ms); the master sleeps through nearly all of it.
    let id = c.api.submit_ok("noop", json!({"payload": "kept", "delay_ms": 2000}), None).await;
    wait_running_on(&mut c, "w1").await;
    let pid = c.master().pid();
    assert!(faena_testkit::process::signal(pid, "STOP"), "the master is stopped");
    // The worker goes on heartbeating into the frozen master, and its
    // result waits for it.
    c.wait_worker_running("w1", 0.0, "the worker finishes its unit").await;
    assert!(faena_testkit::process::signal(pid, "CONT"), "the master is woken");
    // Awake, it hears what the worker sent meanwhile before it counts the
    // silence: the worker and its lease are kept and the job ends once.
    let job = c.api.wait_final(&id).await;
    assert_eq!((job["state"].as_str(), job["attempts"].as_u64()), (Some("succeeded"), Some(1)), "{job}");
    let history = c.api.history(&id).await;
    assert_eq!(count(&history, "queued"), 1, "{history:?}");
    let log = c.master_log();
    assert!(!log.contains("missed its heartbeats"), "{log}");
    assert_eq!(sample(&c.api.text("/metrics").await, "faena_redeliveries_total"), Some(0.0));
}

/// A master that restarts while a worker drains is told of the unit still
/// running there: the worker registers again with its lease, and its
/// result is taken, the job's one attempt.
#[tokio::test]
async fn a_draining_worker_registers_again_with_a_restarted_master() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker("w1", 1).await;
    c.wait_workers(1).await;
    let id = c.api.submit_ok("noop", json!({"payload": "drained", "delay_ms": 3000}), None).await;
    wait_running_on(&mut c, "w1").await;
    c.restart_master_while_draining("w1").await;
    let job = c.api.wait_final(&id).await;
    assert_eq!(
        (job["state"].as_str(), job["worker"].as_str(), job["attempts"].as_u64()),
        (Some("succeeded"), Some("w1"), Some(1)),
        "{job} {:?}",
        c.api.history(&id).await
    );
    let status = c.worker("w1").wait_exit().await;
    assert!(status.success(), "worker exit: {status:?}");
    assert!(c.worker_log("w1").matches("registered with the master").count() >= 2, "{}", c.worker_log("w1"));
}
