//! `GET /api/jobs`: newest first, each filter, keyset pages that a job
//! submitted mid-walk does not shift, and clear 400s for bad queries.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::collections::HashSet;

use faena_testkit::{Cluster, MasterOpts};
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn list(c: &Cluster, query: &str) -> (Vec<Value>, Option<String>) {
    let (status, body) = c.api.get(&format!("/api/jobs?{query}")).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    let jobs = body["jobs"].as_array().expect("a jobs array").clone();
    (jobs, body["next_cursor"].as_str().map(str::to_owned))
}

fn ids(jobs: &[Value]) -> Vec<String> {
    jobs.iter().map(|j| j["id"].as_str().expect("an id").to_owned()).collect()
}

#[tokio::test]
async fn jobs_list_newest_first_filtered_and_paged() {
    let opts = MasterOpts { extra: vec![("FAENA_NO_WORKER_TIMEOUT_MS".into(), "500".into())], ..MasterOpts::default() };
    let mut c = Cluster::start(opts).await;
    c.add_worker("w1", 1).await;
    c.wait_workers(1).await;

    // 5 normal and 2 high jobs that succeed on w1, in this order.
    let mut submitted = Vec::new();
    for (i, priority) in ["normal", "normal", "high", "normal", "high", "normal", "normal"].into_iter().enumerate() {
        let id = c.api.submit_ok("noop", json!({"payload": i}), Some(priority)).await;
        c.api.wait_final(&id).await;
        submitted.push(id);
    }
    // One no worker runs: it fails once nobody offered ai.query for 500 ms.
    let failed = c.api.submit_ok("ai.query", json!({"prompt": "anyone?"}), None).await;
    assert_eq!(c.api.wait_final(&failed).await["state"], "failed");
    // One that holds w1's only slot, and one queued behind it, cancelled.
    let running = c.api.submit_ok("noop", json!({"delay_ms": 600_000}), None).await;
    c.api.wait_running(&running).await;
    let cancelled = c.api.submit_ok("noop", json!({}), Some("low")).await;
    assert_eq!(c.api.cancel(&cancelled).await.0, StatusCode::OK);
    submitted.extend([failed.clone(), running.clone(), cancelled.clone()]);
    let newest_first: Vec<String> = submitted.iter().rev().cloned().collect();

    // Everything, newest first, no result in a listing, and no further page.
    let (all, next) = list(&c, "").await;
    assert_eq!(ids(&all), newest_first);
    assert_eq!(next, None);
    assert!(all.iter().all(|j| j.get("result").is_none() && j["created_at"].is_string()), "{all:?}");

    // Each filter.
    let only = |jobs: &[Value], want: &[&String]| ids(jobs) == want.iter().map(|s| (*s).clone()).collect::<Vec<_>>();
    let (jobs, _) = list(&c, "state=failed").await;
    assert!(only(&jobs, &[&failed]) && jobs[0]["error"].as_str().is_some_and(|e| e.contains("ai.query")), "{jobs:?}");
    let (jobs, _) = list(&c, "state=running").await;
    assert!(only(&jobs, &[&running]) && jobs[0]["worker"] == "w1", "{jobs:?}");
    assert!(only(&list(&c, "state=cancelled").await.0, &[&cancelled]));
    assert_eq!(list(&c, "state=succeeded").await.0.len(), 7);
    assert!(only(&list(&c, "kind=ai.query").await.0, &[&failed]));
    assert!(only(&list(&c, "priority=high").await.0, &[&submitted[4], &submitted[2]]));
    assert!(only(&list(&c, "priority=low&state=cancelled").await.0, &[&cancelled]));
    let (on_w1, _) = list(&c, "worker=w1").await;
    assert_eq!(on_w1.len(), 8, "7 succeeded and 1 running on w1: {on_w1:?}");
    assert!(list(&c, "worker=nobody").await.0.is_empty());
    // `since`: milliseconds since 1970, or RFC 3339.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis();
    assert!(list(&c, &format!("since={}", now_ms + 3_600_000)).await.0.is_empty());
    assert_eq!(list(&c, "since=2000-01-01T00:00:00Z").await.0.len(), submitted.len());

    // Pages of 3: their concatenation is the whole list, whatever is
    // submitted meanwhile (a new job lands before the first page, not in
    // the ones being walked).
    let (mut walked, mut cursor) = list(&c, "limit=3").await;
    assert_eq!(walked.len(), 3);
    let newcomer = c.api.submit_ok("noop", json!({}), None).await;
    while let Some(at) = cursor {
        let (page, next) = list(&c, &format!("limit=3&cursor={at}")).await;
        assert!(!page.is_empty() && page.len() <= 3);
        walked.extend(page);
        cursor = next;
    }
    assert_eq!(ids(&walked), newest_first);
    assert_eq!(ids(&walked).into_iter().collect::<HashSet<_>>().len(), walked.len(), "no job twice");
    assert_eq!(ids(&list(&c, "limit=1").await.0), vec![newcomer]);
    // Filters and pages combine.
    let (first, cursor) = list(&c, "state=succeeded&limit=4").await;
    let (rest, end) = list(&c, &format!("state=succeeded&limit=4&cursor={}", cursor.expect("a second page"))).await;
    assert_eq!((first.len(), rest.len(), end), (4, 3, None));

    // Bad queries are refused, saying what is wrong.
    for (query, says) in [
        ("state=bogus", "state: \"bogus\" is not one of queued, running, succeeded, failed, cancelled"),
        ("priority=urgent", "priority: \"urgent\" is not one of high, normal, low"),
        ("kind=nope", "unknown job kind"),
        ("limit=0", "limit: 0 is not within 1..=500"),
        ("limit=501", "limit: 501 is not within 1..=500"),
        ("limit=many", "limit"),
        ("cursor=abc", "cursor: not a cursor this API gave"),
        ("since=yesterday", "since: \"yesterday\" is neither"),
        ("color=blue", "unknown field `color`"),
    ] {
        let (status, body) = c.api.get(&format!("/api/jobs?{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_query", "{query}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains(says)), "{query}: {body}");
    }
}

/// With a retention of 100 jobs, 600 finished ones leave 100 to 125 in the
/// store (it drops generations of 25): the oldest are deleted (their
/// history with them) while the master runs, counted in `faena_store_pruned_jobs_total`, and the
/// store's size is in `faena_store_bytes`.
#[tokio::test]
async fn finished_jobs_beyond_the_retention_are_deleted() {
    let extra = vec![("FAENA_RETENTION_JOBS".to_owned(), "100".to_owned())];
    let mut c = Cluster::start(MasterOpts { extra, ..MasterOpts::default() }).await;
    c.add_worker("w1", 4).await;
    c.wait_workers(1).await;
    // A hundred at a time, each hundred finished before the next: a
    // generation out of retention then holds only finished jobs, and none
    // is moved (a slow machine would otherwise prune while the first jobs
    // still run, and move those instead of deleting them).
    let mut ids = Vec::new();
    for batch in 0..6 {
        let jobs: Vec<Value> =
            (0..100).map(|i| json!({"kind": "noop", "params": {"payload": batch * 100 + i}})).collect();
        let (status, body) = c.api.post("/api/jobs/batch", &json!({"jobs": jobs})).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        ids.extend(body["jobs"].as_array().expect("jobs").iter().map(|j| j["id"].as_str().expect("id").to_owned()));
        let done = (batch + 1) as f64 * 100.0;
        faena_testkit::eventually("the hundred finished", || async {
            let metrics = faena_testkit::scrape(&c.api.url("/metrics")).await;
            let ok = faena_testkit::sample(&metrics, "faena_jobs_total{state=\"succeeded\"}").unwrap_or(0.0);
            (ok >= done).then_some(())
        })
        .await;
    }
    let (first, last) = (ids[0].clone(), ids[599].clone());
    // All but the newest 100 and at most a generation more (in a store of
    // shards, each shard's generations hold its share, and none ends
    // exactly at the 500th job).
    faena_testkit::eventually("the oldest are deleted", || async {
        let metrics = faena_testkit::scrape(&c.api.url("/metrics")).await;
        let pruned = faena_testkit::sample(&metrics, "faena_store_pruned_jobs_total").unwrap_or(0.0);
        (pruned >= 475.0).then_some(())
    })
    .await;
    assert_eq!(c.api.get(&format!("/api/jobs/{first}")).await.0, StatusCode::NOT_FOUND, "the first job is gone");
    assert_eq!(c.api.get(&format!("/api/jobs/{last}")).await.1["state"], "succeeded", "the newest is kept");
    let (kept, _) = list(&c, "limit=500").await;
    assert!((100..=125).contains(&kept.len()), "the newest 100, and at most a generation more: {}", kept.len());
    let metrics = faena_testkit::scrape(&c.api.url("/metrics")).await;
    assert!(faena_testkit::sample(&metrics, "faena_store_bytes").is_some_and(|b| b > 0.0), "the store's size is shown");
}
