//! What people pick a queue for, through the REST API against a real
//! master: delayed jobs, unique keys and dependencies — across a master
//! restart — per-job timeouts and retry policies, and clear refusals.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_proto::mqtt::Control;
use faena_testkit::custom::Scripted;
use faena_testkit::{Cluster, MasterOpts, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

const KIND: &str = "x.step";

fn step(extra: Value) -> Value {
    let mut body = json!({"kind": KIND, "params": {}});
    body.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
    body
}

async fn submit(c: &Cluster, extra: Value) -> (StatusCode, Value) {
    c.api.post("/api/jobs", &step(extra)).await
}

async fn state(c: &Cluster, id: &str) -> String {
    c.api.job(id).await["state"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn delayed_jobs_unique_keys_and_parents_hold_across_a_master_restart() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    let mut w = Scripted::start(&c, "s1", &[KIND], 1).await;

    // A key held for ten minutes: the second submit gets the first job.
    let daily = json!({"unique_key": "report:2026-11-24", "unique_for": 600});
    let (status, first) = submit(&c, daily.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{first}");
    let (status, again) = submit(&c, daily.clone()).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!((&again["id"], &again["duplicate"]), (&first["id"], &json!(true)), "{again}");
    let u = w.next_unit().await;
    w.complete(&u, json!({"n": "daily"})).await.expect("taken");

    // A pipeline in one batch: d runs after a (now) and e (in a few seconds).
    let batch = json!({"jobs": [
        step(json!({})),
        step(json!({"run_after_ms": 6_000})),
        step(json!({"after": [0, 1]})),
    ]});
    let (status, made) = c.api.post("/api/jobs/batch", &batch).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{made}");
    let ids: Vec<String> = made["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().into()).collect();
    let states: Vec<&str> = made["jobs"].as_array().unwrap().iter().map(|j| j["state"].as_str().unwrap()).collect();
    // s1's one slot is free again: a takes it, and the answer says so.
    assert_eq!(states, ["running", "scheduled", "waiting"], "{made}");
    let (a, e, d) = (&ids[0], &ids[1], &ids[2]);
    let view = c.api.job(e).await;
    assert!(view["run_at"].is_string(), "a scheduled job shows its time: {view}");
    assert!(view["options"]["run_at_ms"].is_u64(), "{view}");
    let unit = w.next_unit().await;
    assert_eq!(unit.job_id.to_string(), *a);
    w.complete(&unit, json!({"n": "a"})).await.expect("taken");
    c.api.wait_final(a).await;
    assert_eq!(state(&c, d).await, "waiting", "e has not run yet");
    let listed = c.api.get("/api/jobs?state=waiting").await.1;
    assert_eq!(listed["jobs"][0]["id"], json!(d), "{listed}");

    // The master dies with e scheduled and d waiting on a parent that
    // succeeded before it died and one that has not run.
    drop(w);
    c.master().kill9().await;
    c.restart_master().await;
    assert_eq!((state(&c, e).await, state(&c, d).await), ("scheduled".into(), "waiting".into()));
    let (status, still) = submit(&c, daily).await;
    assert_eq!((status, &still["id"]), (StatusCode::OK, &first["id"]), "the key holds across the restart: {still}");

    let mut w = Scripted::start(&c, "s2", &[KIND], 1).await;
    let unit = w.next_unit().await;
    assert_eq!(unit.job_id.to_string(), *e, "e runs at its time");
    w.complete(&unit, json!({"n": "e"})).await.expect("taken");
    let unit = w.next_unit().await;
    assert_eq!(unit.job_id.to_string(), *d);
    let parents = unit.parents.clone().expect("d is told its parents' results");
    assert_eq!(
        (parents.get(a.as_str()), parents.get(e.as_str())),
        (Some(&json!({"n": "a"})), Some(&json!({"n": "e"})))
    );
    w.complete(&unit, json!({"n": "d"})).await.expect("taken");
    assert_eq!(c.api.wait_final(d).await["state"], "succeeded");
    let history = c.api.history(e).await;
    let ran = history.iter().filter(|t| t["state"] == "running").count();
    assert_eq!(ran, 1, "e fired once: {history:?}");
    assert_eq!(w.pending_units(), 0);
}

#[tokio::test]
async fn a_timed_out_attempt_is_cancelled_and_its_dependents_fail() {
    let c = Cluster::start(MasterOpts::default()).await;
    let mut w = Scripted::start(&c, "s1", &[KIND], 2).await;
    let retry = json!({"max_attempts": 2, "backoff": {"initial_ms": 200, "max_ms": 200}});
    let (_, slow) = submit(&c, json!({"timeout_ms": 300, "retry": retry})).await;
    let slow = slow["id"].as_str().expect("id").to_owned();
    let (status, child) = submit(&c, json!({"after": [slow]})).await;
    assert_eq!((status, child["state"].as_str()), (StatusCode::ACCEPTED, Some("waiting")), "{child}");
    let child = child["id"].as_str().expect("id").to_owned();
    for attempt in 1..=2 {
        let unit = w.next_unit().await;
        assert_eq!((unit.job_id.to_string(), unit.attempt), (slow.clone(), attempt));
        match w.next_control().await {
            Control::Cancel { job_id, attempt: a } => assert_eq!((job_id.to_string(), a), (slow.clone(), attempt)),
            other => panic!("expected a cancel, got {other:?}"),
        }
    }
    let failed = c.api.wait_final(&slow).await;
    assert_eq!(
        (failed["state"].as_str(), failed["error_code"].as_str()),
        (Some("failed"), Some("timeout")),
        "{failed}"
    );
    // The retry backed off between the attempts: read from the job's
    // history, not caught in its 200 ms window by polling (a loaded
    // machine's poll can miss it).
    let history = c.api.history(&slow).await;
    let states: Vec<&str> = history.iter().filter_map(|t| t["state"].as_str()).collect();
    let runs: Vec<usize> = states.iter().enumerate().filter(|(_, s)| **s == "running").map(|(i, _)| i).collect();
    assert_eq!(runs.len(), 2, "two attempts: {states:?}");
    assert!(states[runs[0]..runs[1]].contains(&"scheduled"), "backed off between them: {states:?}");
    let child = c.api.wait_final(&child).await;
    assert_eq!(child["error_code"], "dependency_failed", "{child}");

    // A scheduled job is cancelled like any other.
    let (_, later) = submit(&c, json!({"run_after_ms": 3_600_000})).await;
    let later = later["id"].as_str().expect("id").to_owned();
    assert_eq!(c.api.cancel(&later).await.0, StatusCode::OK);
    assert_eq!(state(&c, &later).await, "cancelled");
}

#[tokio::test]
async fn options_that_cannot_hold_are_refused_clearly() {
    let c = Cluster::start(MasterOpts::default()).await;
    let stranger = uuid::Uuid::now_v7().to_string();
    for (extra, says) in [
        (json!({"run_at": "2026-11-24T10:00:00Z", "run_after_ms": 5}), "not both"),
        (json!({"run_at": "tomorrow"}), "RFC 3339"),
        (json!({"run_after_ms": 400u64 * 24 * 3_600_000}), "days ahead"),
        (json!({"after": [stranger]}), "unknown"),
        (json!({"after": [0]}), "index 0"),
        (json!({"timeout_ms": 5}), "timeout_ms"),
        (json!({"unique_for": 60}), "needs a unique_key"),
        (json!({"unique_key": ""}), "unique_key"),
        (json!({"group": "no spaces"}), "group"),
        (json!({"retry": {"max_attempts": 0}}), "max_attempts"),
        (json!({"retry": {"max_attempts": 3, "backoff": {"jitter": 3}}}), "jitter"),
    ] {
        let (status, err) = submit(&c, extra.clone()).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_option")),
            "{extra}: {err}"
        );
        assert!(err["error"]["message"].as_str().is_some_and(|m| m.contains(says)), "{extra}: {err}");
    }
    let cycle = json!({"jobs": [step(json!({"after": [1]})), step(json!({"after": [0]}))]});
    let (status, err) = c.api.post("/api/jobs/batch", &cycle).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert!(err["error"]["message"].as_str().is_some_and(|m| m.contains("cycle")), "{err}");
    let mine =
        json!({"kind": "randomx.mine", "params": {"key": "00", "blob": "0707", "difficulty": 1}, "run_after_ms": 10});
    let (status, err) = c.api.post("/api/jobs", &mine).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let listed = c.api.get("/api/jobs").await.1;
    assert_eq!(listed["jobs"], json!([]), "nothing was made: {listed}");
    let _: Value = listed;
}

#[tokio::test]
async fn a_groups_limits_hold_its_jobs_back_and_outlive_a_restart() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    let limits = json!({"max_running": 1, "rate": "100/s", "weight": 2});
    let (status, group) = c.api.put("/api/groups/tenant-a", &limits).await;
    assert_eq!(status, StatusCode::OK, "{group}");
    assert_eq!((group["max_running"].as_u64(), group["weight"].as_u64()), (Some(1), Some(2)), "{group}");
    let mut w = Scripted::start(&c, "s1", &[KIND], 4).await;
    for _ in 0..3 {
        assert_eq!(submit(&c, json!({"group": "tenant-a"})).await.0, StatusCode::ACCEPTED);
    }
    let (_, other) = submit(&c, json!({"group": "tenant-b"})).await;
    let first = w.next_unit().await;
    let second = w.next_unit().await;
    assert!(
        [&first, &second].iter().any(|u| u.job_id.to_string() == other["id"].as_str().unwrap()),
        "b is not held back by a's limit"
    );
    let groups = eventually("a held back at max_running", || async {
        let all = c.api.get("/api/groups").await.1;
        let a = all["groups"].as_array()?.iter().find(|g| g["name"] == "tenant-a")?.clone();
        (a["held"] == json!(true) && a["running"] == json!(1) && a["queued"] == json!(2)).then_some(all)
    })
    .await;
    assert!(groups["groups"].as_array().unwrap().iter().any(|g| g["name"] == "tenant-b"), "{groups}");
    let metrics = c.api.text("/metrics").await;
    assert!(metrics.contains(r#"faena_group_jobs{group="tenant-a",state="queued"} 2"#), "{metrics}");
    assert_eq!(w.pending_units(), 0, "a's other jobs wait");

    // The limits are stored: a restarted master keeps them.
    drop(w);
    c.master().kill9().await;
    c.restart_master().await;
    let (status, again) = c.api.get("/api/groups/tenant-a").await;
    assert_eq!(
        (status, &again["max_running"], &again["rate"]),
        (StatusCode::OK, &json!(1), &json!("100/s")),
        "{again}"
    );
    assert_eq!(c.api.delete("/api/groups/tenant-a").await.0, StatusCode::OK);

    for (body, says) in [
        (json!({"rate": "0/s"}), "never run"),
        (json!({"rate": "fast"}), "N/s"),
        (json!({"max_running": 0}), "max_running"),
        (json!({"weight": 0}), "weight"),
    ] {
        let (status, err) = c.api.put("/api/groups/tenant-a", &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {err}");
        assert!(err["error"]["message"].as_str().is_some_and(|m| m.contains(says)), "{body}: {err}");
    }
    let (status, err) = c.api.put("/api/groups/no%20spaces", &json!({})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_group")), "{err}");
}

/// Moves schedule `name`'s last firing back to `at_ms`, in whichever store
/// the cluster's master uses (stopped).
fn set_last_firing(c: &Cluster, name: &str, at_ms: u64) {
    match &c.store {
        Some(pg) => {
            pg.sql(&format!("UPDATE schedule_firings SET at_ms = {at_ms} WHERE name = '{name}'"));
        }
        None => {
            let db = rusqlite::Connection::open(c.dir.path().join("data/faena.db")).expect("the store");
            let n = db
                .execute(
                    "UPDATE schedule_firings SET at_ms = ?1 WHERE name = ?2",
                    rusqlite::params![at_ms as i64, name],
                )
                .expect("update");
            assert_eq!(n, 1);
        }
    }
}

async fn fired(c: &Cluster, name: &str) -> Vec<Value> {
    c.api.get(&format!("/api/jobs?schedule={name}")).await.1["jobs"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_schedule_catches_up_once_across_restarts_and_refuses_what_cannot_hold() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    let body = json!({"name": "hourly-report", "cron": "0 * * * *", "timezone": "Europe/Madrid",
        "job": {"kind": KIND, "params": {"report": "sales"}, "priority": "low"}, "catch_up": "all"});
    let (status, made) = c.api.post("/api/schedules", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert!(made["next_run_at"].is_string() && made["overlap"] == "skip", "{made}");
    assert_eq!(c.api.post("/api/schedules", &body).await.0, StatusCode::CONFLICT);
    let (status, patched) = c.api.patch("/api/schedules/hourly-report", &json!({"overlap": "allow"})).await;
    assert_eq!((status, patched["overlap"].as_str()), (StatusCode::OK, Some("allow")), "{patched}");
    for (bad, says) in [
        (json!({"name": "x", "cron": "0 0 31 2 *", "job": {"kind": "noop"}}), "never fires"),
        (json!({"name": "x", "cron": "every hour", "job": {"kind": "noop"}}), "cron"),
        (json!({"name": "x", "cron": "0 * * * *", "timezone": "Mars/Base", "job": {"kind": "noop"}}), "IANA"),
        (json!({"name": "x", "cron": "0 * * * *", "job": {"kind": "nope"}}), "job"),
        (json!({"cron": "0 * * * *", "job": {"kind": "noop"}}), "name"),
        (json!({"name": "x", "cron": "0 * * * *", "job": {"kind": "noop"}, "overlap": "sometimes"}), "overlap"),
    ] {
        let (status, err) = c.api.post("/api/schedules", &bad).await;
        assert_eq!(
            (status, err["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_schedule")),
            "{bad}: {err}"
        );
        assert!(err["error"]["message"].as_str().is_some_and(|m| m.contains(says)), "{bad}: {err}");
    }

    // Down for three hours: three firings were missed, each made once.
    let hour = 3_600_000;
    let now = faena_proto::mqtt::now_ms();
    c.master().kill9().await;
    set_last_firing(&c, "hourly-report", now - now % hour - 3 * hour);
    c.restart_master().await;
    let jobs = eventually("three caught-up firings", || async {
        Some(fired(&c, "hourly-report").await).filter(|j| j.len() == 3)
    })
    .await;
    assert!(jobs.iter().all(|j| j["priority"] == "low" && j["options"]["schedule"] == "hourly-report"), "{jobs:?}");
    c.master().kill9().await;
    c.restart_master().await;
    assert_eq!(c.api.get("/api/schedules").await.1["schedules"][0]["name"], "hourly-report");
    assert_eq!(fired(&c, "hourly-report").await.len(), 3, "each firing happened once");
    assert_eq!(c.api.delete("/api/schedules/hourly-report").await.0, StatusCode::OK);
    assert_eq!(c.api.get("/api/schedules/hourly-report").await.0, StatusCode::NOT_FOUND);
}
