//! Queueing when every worker is busy, priorities, cancellation, backpressure.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_testkit::{Cluster, MasterOpts};
use serde_json::json;

#[tokio::test]
async fn jobs_wait_for_busy_workers_and_positions_count_down() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker("w1", 1).await;
    c.add_worker("w2", 1).await;
    c.wait_workers(2).await;
    // Both workers stay busy until the test cancels their jobs, so the
    // positions below do not depend on how fast the machine is.
    let mut blockers = vec![];
    let mut positions = vec![];
    for _ in 0..2 {
        let (status, body) = c.api.submit("noop", json!({"delay_ms": 600_000}), None).await;
        assert_eq!(status, 202);
        blockers.push(body["id"].as_str().expect("id").to_owned());
        positions.push(body["position"].as_u64().expect("position"));
    }
    for id in &blockers {
        c.api.wait_running(id).await;
    }
    let mut ids = vec![];
    for _ in 0..4 {
        let (status, body) = c.api.submit("noop", json!({"delay_ms": 300}), None).await;
        assert_eq!(status, 202);
        ids.push(body["id"].as_str().expect("id").to_owned());
        positions.push(body["position"].as_u64().expect("position"));
    }
    // Two start at once (no prefetch: one unit per slot); the rest queue behind them.
    assert_eq!(positions, [0, 0, 0, 1, 2, 3]);
    let last = ids.last().expect("ids").clone();
    assert_eq!(c.api.job(&last).await["state"], "queued");
    let mut events = c.api.events(&last).await;
    for id in &blockers {
        assert_eq!(c.api.cancel(id).await.0, 200);
    }
    let mut seen = vec![];
    while let Some((name, data)) = events.next().await {
        match name.as_str() {
            "queued" => seen.push(data["position"].as_u64().expect("position")),
            "succeeded" => break,
            "running" => {}
            other => panic!("unexpected event {other}: {data}"),
        }
    }
    assert!(seen.len() >= 2 && seen.windows(2).all(|w| w[0] > w[1]), "positions should count down: {seen:?}");
    for id in &ids {
        assert_eq!(c.api.wait_final(id).await["state"], "succeeded");
    }
}

#[tokio::test]
async fn priority_then_age_decides_the_order() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker("w1", 1).await;
    c.wait_workers(1).await;
    // The blocker runs until cancelled, once everything else is queued.
    let blocker = c.api.submit_ok("noop", json!({"delay_ms": 600_000}), None).await;
    c.api.wait_running(&blocker).await;
    let low = c.api.submit_ok("noop", json!({"delay_ms": 20}), Some("low")).await;
    let normal1 = c.api.submit_ok("noop", json!({"delay_ms": 20}), None).await;
    let high = c.api.submit_ok("noop", json!({"delay_ms": 20}), Some("high")).await;
    let normal2 = c.api.submit_ok("noop", json!({"delay_ms": 20}), Some("normal")).await;
    assert_eq!(c.api.job(&low).await["position"], 3);
    assert_eq!(c.api.job(&high).await["position"], 0);
    assert_eq!(c.api.cancel(&blocker).await.0, 200);
    let mut started = vec![];
    for id in [&blocker, &low, &normal1, &high, &normal2] {
        c.api.wait_final(id).await;
        let history = c.api.history(id).await;
        let at = history.iter().find(|t| t["state"] == "running").and_then(|t| t["at_ms"].as_u64()).expect("ran");
        started.push((at, id.clone()));
    }
    started.sort();
    let order: Vec<&String> = started.iter().map(|s| &s.1).collect();
    assert_eq!(order, vec![&blocker, &high, &normal1, &normal2, &low]);
}

#[tokio::test]
async fn cancel_reaches_queued_and_running_jobs() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker("w1", 1).await;
    c.wait_workers(1).await;
    let running = c.api.submit_ok("noop", json!({"delay_ms": 600_000}), None).await;
    let queued = c.api.submit_ok("noop", json!({}), None).await;
    c.api.wait_running(&running).await;

    let (status, body) = c.api.cancel(&queued).await;
    assert_eq!((status.as_u16(), &body["state"]), (200, &json!("cancelled")));
    let (status, body) = c.api.cancel(&queued).await;
    assert_eq!((status.as_u16(), &body["error"]["code"]), (409, &json!("already_finished")));

    let (status, _) = c.api.cancel(&running).await;
    assert_eq!(status, 200);
    assert_eq!(c.api.wait_final(&running).await["state"], "cancelled");
    // The worker has one slot: a new job can only run if the cancel stopped the old one.
    let next = c.api.submit_ok("noop", json!({"payload": "after"}), None).await;
    assert_eq!(c.api.wait_final(&next).await["state"], "succeeded");
    let metrics = faena_testkit::scrape(&c.worker_metrics_url("w1")).await;
    assert!(metrics.contains("faena_worker_jobs_total{kind=\"noop\",outcome=\"cancelled\"} 1"), "{metrics}");

    let (status, body) = c.api.cancel("01a1fccf-e426-7533-886f-eda89031b98a").await;
    assert_eq!((status.as_u16(), &body["error"]["code"]), (404, &json!("not_found")));
}

#[tokio::test]
async fn a_full_queue_answers_429_and_bad_requests_400() {
    // A small body limit for the oversized request below.
    let extra = vec![("FAENA_MAX_BODY_BYTES".to_owned(), "65536".to_owned())];
    let c = Cluster::start(MasterOpts { queue_capacity: 3, extra, ..MasterOpts::default() }).await;
    for _ in 0..3 {
        c.api.submit_ok("noop", json!({}), None).await;
    }
    let (status, body) = c.api.submit("noop", json!({}), None).await;
    assert_eq!((status.as_u16(), &body["error"]["code"]), (429, &json!("queue_full")), "{body}");
    let (status, _) = c.api.post("/api/jobs/batch", &json!({"jobs": [{"kind": "noop"}]})).await;
    assert_eq!(status, 429);

    let bad = [
        (json!({"kind": "bitcoin.mine"}), "unknown job kind"),
        (json!({"kind": "noop", "params": {"delay_ms": "soon"}}), "delay_ms"),
        (json!({"kind": "randomx.hash", "params": {"key": "k"}}), "input"),
        (json!({"kind": "noop", "priority": "urgent"}), "priority"),
        (json!({"params": {}}), "kind"),
    ];
    for (body, needle) in bad {
        let (status, answer) = c.api.post("/api/jobs", &body).await;
        assert_eq!(status, 400, "{body} -> {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(needle), "{body} -> {message}");
    }
    let (status, answer) = c.api.post_raw("/api/jobs", b"{not json".to_vec()).await;
    assert_eq!((status.as_u16(), &answer["error"]["code"]), (400, &json!("bad_json")));
    let (status, answer) = c.api.post("/api/jobs/batch", &json!({"jobs": [{"kind": "noop"}, {"kind": "nope"}]})).await;
    assert_eq!(status, 400);
    assert!(answer["error"]["message"].as_str().unwrap_or_default().starts_with("jobs[1]"), "{answer}");
    let (status, answer) = c.api.post_refused("/api/jobs", vec![b' '; 200 * 1024]).await;
    assert_eq!((status.as_u16(), &answer["error"]["code"]), (413, &json!("bad_body")), "{answer}");
    let (status, answer) = c.api.get("/api/jobs/not-a-uuid").await;
    assert_eq!((status.as_u16(), &answer["error"]["code"]), (400, &json!("bad_id")));
}
