//! Acting on jobs: `PATCH /api/jobs/{id}` moves a waiting job as its new
//! priority says (a bounded number of times) and a running mining job's
//! later units follow it;
//! `POST /api/jobs/{id}/retry` runs a failed or cancelled job again as a new
//! job linked both ways, once.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_proto::jobs::encode_hex;
use faena_testkit::{Cluster, MasterOpts, eventually};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn position(c: &Cluster, id: &str) -> u64 {
    c.api.job(id).await["position"].as_u64().expect("a queued job has a position")
}

async fn reprioritise(c: &Cluster, id: &str, priority: &str) -> (StatusCode, Value) {
    c.api.patch(&format!("/api/jobs/{id}"), &json!({"priority": priority})).await
}

#[tokio::test]
async fn a_new_priority_moves_queued_jobs_and_a_mining_jobs_later_units() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    // No worker runs noop yet: these wait, in submission order.
    let a = c.api.submit_ok("noop", json!({}), None).await;
    let b = c.api.submit_ok("noop", json!({}), None).await;
    let low = c.api.submit_ok("noop", json!({}), Some("low")).await;
    let mut watch = c.api.events(&low).await;
    assert_eq!(watch.next().await.expect("snapshot"), ("queued".into(), json!({"type": "queued", "position": 2})));

    let (status, moved) = reprioritise(&c, &low, "high").await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!((moved["priority"].as_str(), moved["position"].as_u64()), (Some("high"), Some(0)), "{moved}");
    assert_eq!((position(&c, &a).await, position(&c, &b).await), (1, 2));
    assert_eq!(watch.next().await.expect("moved"), ("queued".into(), json!({"type": "queued", "position": 0})));
    // Back to normal: among equals, by age.
    assert_eq!(reprioritise(&c, &low, "normal").await.0, StatusCode::OK);
    assert_eq!(position(&c, &low).await, 2);
    let history = c.api.history(&low).await;
    let notes: Vec<&str> = history.iter().filter_map(|t| t["detail"].as_str()).collect();
    assert_eq!(notes, ["priority high (was low)", "priority normal (was high)"], "{history:?}");
    let queued = c.api.get("/api/jobs?priority=normal&state=queued").await.1;
    assert_eq!(queued["jobs"].as_array().map(Vec::len), Some(3), "{queued}");

    // Refusals say why.
    for (body, code) in [
        (json!({"priority": "urgent"}), "bad_json"),
        (json!({}), "bad_json"),
        (json!({"priority": "high", "state": "done"}), "bad_json"),
    ] {
        let (status, err) = c.api.patch(&format!("/api/jobs/{a}"), &body).await;
        assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some(code)), "{body}: {err}");
    }
    // Each change is history: a job changes priority a bounded number of times.
    for n in 0..100 {
        let to = if n % 2 == 0 { "high" } else { "normal" };
        assert_eq!(reprioritise(&c, &a, to).await.0, StatusCode::OK, "change {}", n + 1);
    }
    let (status, err) = reprioritise(&c, &a, "low").await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("too_many_changes")), "{err}");
    assert_eq!(c.api.job(&a).await["priority"], "normal");
    let changes = c
        .api
        .history(&a)
        .await
        .iter()
        .filter(|t| t["detail"].as_str().is_some_and(|d| d.starts_with("priority")))
        .count();
    assert_eq!(changes, 100);
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(reprioritise(&c, &unknown.to_string(), "high").await.0, StatusCode::NOT_FOUND);
    assert_eq!(c.api.cancel(&b).await.0, StatusCode::OK);
    let (status, err) = reprioritise(&c, &b, "high").await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_finished")), "{err}");

    // A job on a worker keeps its priority; a mining job's remaining range does not.
    c.add_worker_with("m1", 1, &[("FAENA_RANDOMX_THREADS", "1")]).await;
    c.wait_workers(1).await;
    let running = c.api.submit_ok("noop", json!({"delay_ms": 600_000}), Some("high")).await;
    c.api.wait_running(&running).await;
    let (status, err) = reprioritise(&c, &running, "low").await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("running")), "{err}");
    assert!(err["error"]["message"].as_str().is_some_and(|m| m.contains("running on a worker")), "{err}");
    assert_eq!(c.api.cancel(&running).await.0, StatusCode::OK);
    for id in [&a, &low] {
        c.api.wait_final(id).await;
    }

    let params = json!({
        "key": encode_hex(b"faena priority test"),
        "blob": "0707".repeat(38),
        "difficulty": 1_000_000,
        "nonce_count": 4_000_000,
    });
    let mine = c.api.submit_ok("randomx.mine", params, Some("low")).await;
    let units = |c: &Cluster| {
        let mine = mine.clone();
        let api = c.api.clone();
        async move { api.get(&format!("/api/jobs?parent={mine}&limit=500")).await.1["jobs"].as_array().cloned() }
    };
    let first = eventually("the mining job's first unit", || async { units(&c).await.filter(|u| !u.is_empty()) }).await;
    assert!(first.iter().all(|u| u["priority"] == "low"), "{first:?}");
    // A unit's id stands for its mining job.
    let (status, moved) = reprioritise(&c, first[0]["id"].as_str().expect("unit id"), "high").await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!((moved["id"].as_str(), moved["priority"].as_str()), (Some(mine.as_str()), Some("high")), "{moved}");
    assert_eq!(moved["state"], "running");
    // A worker that joins now takes a unit of what is left: carved at the new priority.
    c.add_worker_with("m2", 1, &[("FAENA_RANDOMX_THREADS", "1")]).await;
    let later =
        eventually("a unit carved after the change", || async { units(&c).await.filter(|u| u.len() > first.len()) })
            .await;
    // Newest first: the units carved after the change.
    let after = &later[..later.len() - first.len()];
    assert!(after.iter().all(|u| u["priority"] == "high"), "{later:?}");
    assert_eq!(c.api.job(after[0]["id"].as_str().expect("id")).await["parent"], json!(mine));
    assert_eq!(c.api.cancel(&mine).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_failed_or_cancelled_job_is_retried_once_as_a_new_linked_job() {
    let opts = MasterOpts { extra: vec![("FAENA_NO_WORKER_TIMEOUT_MS".into(), "300".into())], ..MasterOpts::default() };
    let mut c = Cluster::start(opts).await;
    // Fails: no worker runs ai.query.
    let failed = c.api.submit_ok("ai.query", json!({"prompt": "anyone?"}), Some("low")).await;
    assert_eq!(c.api.wait_final(&failed).await["state"], "failed");

    let (status, again) = c.api.post(&format!("/api/jobs/{failed}/retry"), &json!({"priority": "high"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{again}");
    assert_eq!(again["retry_of"], json!(failed));
    let retry = again["id"].as_str().expect("the new job's id").to_owned();
    assert_ne!(retry, failed);
    let new = c.api.job(&retry).await;
    assert_eq!((new["kind"].as_str(), new["priority"].as_str()), (Some("ai.query"), Some("high")), "{new}");
    assert_eq!(new["retry_of"], json!(failed), "{new}");
    assert_eq!(c.api.job(&failed).await["retried_as"], json!(retry));
    let history = c.api.history(&retry).await;
    assert_eq!(history[0]["detail"], format!("retry of job {failed}"), "{history:?}");
    // Once: the new job is the one to retry next.
    let (status, err) = c.api.post(&format!("/api/jobs/{failed}/retry"), &json!({})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("already_retried")), "{err}");
    assert!(err["error"]["message"].as_str().is_some_and(|m| m.contains(&retry)), "{err}");
    assert_eq!(c.api.wait_final(&retry).await["retry_of"], json!(failed));

    // A cancelled job keeps its priority and parameters, and runs this time
    // (behind one that holds w1's only slot until it is cancelled).
    c.add_worker("w1", 1).await;
    c.wait_workers(1).await;
    let blocker = c.api.submit_ok("noop", json!({"delay_ms": 600_000}), None).await;
    c.api.wait_running(&blocker).await;
    let cancelled = c.api.submit_ok("noop", json!({"payload": "twice"}), Some("low")).await;
    assert_eq!(c.api.cancel(&cancelled).await.0, StatusCode::OK);
    let (status, again) = c.api.post_raw(&format!("/api/jobs/{cancelled}/retry"), Vec::new()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "an empty body keeps everything: {again}");
    assert_eq!(c.api.cancel(&blocker).await.0, StatusCode::OK);
    let done = c.api.wait_final(again["id"].as_str().expect("id")).await;
    assert_eq!((done["state"].as_str(), done["priority"].as_str()), (Some("succeeded"), Some("low")), "{done}");
    assert_eq!(done["result"]["payload"], "twice", "{done}");

    // What cannot be retried, and why.
    let (status, err) = c.api.post(&format!("/api/jobs/{}/retry", done["id"].as_str().unwrap()), &json!({})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("not_retryable")), "{err}");
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(c.api.post(&format!("/api/jobs/{unknown}/retry"), &json!({})).await.0, StatusCode::NOT_FOUND);
    let (status, err) = c.api.post(&format!("/api/jobs/{failed}/retry"), &json!({"priority": "now"})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_json")), "{err}");
}
