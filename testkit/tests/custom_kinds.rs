//! Custom kinds (`x.<name>`) through every path a built-in kind takes:
//! validation, queueing by priority, dispatch only to workers that offer
//! the kind, opaque progress and output, SSE, cancel, retry, listing.

use faena_proto::mqtt::Control;
use faena_testkit::custom::Scripted;
use faena_testkit::{Cluster, MasterOpts};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_kinds_take_every_path() {
    let mut c = Cluster::start(MasterOpts::default()).await;

    // Names are checked where they enter; a bad one is a clear 400.
    for bad in ["x.", "x.Upper", "x.a..b", "bitcoin.mine"] {
        let (status, body) = c.api.submit(bad, json!({}), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_job", "{body}");
    }

    // A Rust worker runs the built-in kinds only: the custom job waits and says why.
    c.add_worker("rust-1", 2).await;
    c.wait_workers(1).await;
    let params = json!({"text": "one two\nthree", "nested": [1, {"deep": null}]});
    let first = c.api.submit_ok("x.echo", params.clone(), None).await;
    let view = c.api.job(&first).await;
    assert_eq!((view["state"].as_str(), view["kind"].as_str()), (Some("queued"), Some("x.echo")), "{view}");
    assert!(view["waiting"].as_str().is_some_and(|w| w.contains("x.echo")), "{view}");

    // The worker that offers it gets it, with the params exactly as given.
    let mut w = Scripted::start(&c, "py-like", &["x.echo", "x.other"], 1).await;
    let unit = w.next_unit().await;
    assert_eq!((unit.job_id.to_string(), unit.kind.as_str(), &unit.params), (first.clone(), "x.echo", &params));

    // Progress and output are opaque JSON: the master passes them on as sent.
    let mut events = c.api.events(&first).await;
    w.progress(&unit, json!({"percent": 50, "note": "half"})).await.expect("progress accepted");
    let progress = loop {
        let (name, data) = events.next().await.expect("an event");
        if name == "progress" {
            break data;
        }
    };
    assert_eq!(progress["data"], json!({"percent": 50, "note": "half"}), "{progress}");
    w.complete(&unit, json!({"words": 3, "anything": ["at", "all"]})).await.expect("result accepted");
    let done = c.api.wait_final(&first).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"], json!({"words": 3, "anything": ["at", "all"]}));
    assert_eq!(done["worker"], "py-like");

    // Params up to the body limit (8 MiB) travel whole; over it is a 413.
    let big = json!({"text": "a ".repeat(3 << 20)});
    let big_id = c.api.submit_ok("x.echo", big.clone(), None).await;
    let unit = w.next_unit().await;
    assert!(unit.job_id.to_string() == big_id && unit.params == big, "6 MiB of params arrived changed");
    w.complete(&unit, json!({"words": 3 << 20})).await.expect("result accepted");
    assert_eq!(c.api.wait_final(&big_id).await["result"]["words"], 3 << 20);
    // Refused unread: the server may reset the connection before the
    // client has sent it all, so it is asked on fresh connections.
    let huge = json!({"kind": "x.echo", "params": {"text": "a".repeat(9 << 20)}}).to_string().into_bytes();
    let (status, body) = c.api.post_refused("/api/jobs", huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");

    // Priority: with its one slot busy, a high job queued after a low one runs first.
    let busy = c.api.submit_ok("x.echo", json!(1), None).await;
    let busy_unit = w.next_unit().await;
    let low = c.api.submit_ok("x.echo", json!("low"), Some("low")).await;
    let high = c.api.submit_ok("x.other", json!("high"), Some("high")).await;
    assert_eq!(c.api.job(&high).await["position"], 0);
    w.complete(&busy_unit, json!(null)).await.expect("result accepted");
    assert_eq!(c.api.wait_final(&busy).await["state"], "succeeded");
    let next = w.next_unit().await;
    assert_eq!(next.job_id.to_string(), high, "the high-priority job goes first");
    w.complete(&next, json!("ok")).await.expect("result accepted");
    let after = w.next_unit().await;
    assert_eq!(after.job_id.to_string(), low);

    // Cancel reaches the worker on its control topic, as for a built-in kind.
    let (status, body) = c.api.cancel(&low).await;
    assert!(status.is_success(), "{body}");
    match w.next_control().await {
        Control::Cancel { job_id, .. } => assert_eq!(job_id.to_string(), low),
        other => panic!("expected a cancel, got {other:?}"),
    }
    assert_eq!(c.api.wait_final(&low).await["state"], "cancelled");

    // A failure, then a retry: a new job of the same kind, linked both ways.
    let failing = c.api.submit_ok("x.echo", json!({"fail": true}), None).await;
    let unit = w.next_unit().await;
    w.fail(&unit, "the text was not UTF-8", false).await.expect("failure accepted");
    let failed = c.api.wait_final(&failing).await;
    assert_eq!((failed["state"].as_str(), failed["error"].as_str()), (Some("failed"), Some("the text was not UTF-8")));
    let (status, body) = c.api.post(&format!("/api/jobs/{failing}/retry"), &json!({"priority": "high"})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let retry = body["id"].as_str().expect("retry id").to_owned();
    let unit = w.next_unit().await;
    assert_eq!((unit.job_id.to_string(), &unit.params), (retry.clone(), &json!({"fail": true})));
    w.complete(&unit, json!({"words": 0})).await.expect("result accepted");
    let retried = c.api.wait_final(&retry).await;
    assert_eq!((retried["kind"].as_str(), retried["retry_of"].as_str()), (Some("x.echo"), Some(failing.as_str())));

    // The README's retry without a body, as curl sends it: no type needed.
    // A body that is not JSON is still refused.
    let failing = c.api.submit_ok("x.echo", json!({"fail": "again"}), None).await;
    let unit = w.next_unit().await;
    w.fail(&unit, "no", false).await.expect("failure accepted");
    c.api.wait_final(&failing).await;
    let url = c.api.url(&format!("/api/jobs/{failing}/retry"));
    let typed = faena_testkit::http().post(&url).header("content-type", "text/plain").body("again").send().await;
    assert_eq!(typed.expect("POST").status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "a body must say it is JSON");
    let out = std::process::Command::new("curl").args(["-sS", "-X", "POST", &url]).output().expect("curl runs");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("a JSON answer");
    let retry = body["id"].as_str().unwrap_or_else(|| panic!("a retry with no body was refused: {body}")).to_owned();
    let unit = w.next_unit().await;
    assert_eq!((unit.job_id.to_string(), &unit.params), (retry.clone(), &json!({"fail": "again"})));
    w.complete(&unit, json!({"words": 0})).await.expect("result accepted");
    assert_eq!(c.api.wait_final(&retry).await["retry_of"].as_str(), Some(failing.as_str()));

    // Listing filters by a custom kind like any other.
    let (status, list) = c.api.get("/api/jobs?kind=x.other").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let ids: Vec<&str> = list["jobs"].as_array().expect("jobs").iter().filter_map(|j| j["id"].as_str()).collect();
    assert_eq!(ids, vec![high.as_str()]);

    // The Rust worker never got any of them.
    assert!(!c.worker_log("rust-1").contains("x.echo"), "a worker that does not offer x.echo was sent one");
    assert_eq!(w.pending_units(), 0);
    let workers = c.api.workers().await;
    let offered = workers.iter().find(|v| v["id"] == "py-like").expect("listed");
    assert!(offered.to_string().contains("x.other"), "{offered}");

    // A restarted master keeps custom jobs: queued ones run when a worker offers the kind.
    let queued = c.api.submit_ok("x.later", json!({"keep": "me"}), None).await;
    drop(w);
    c.master().terminate().await;
    c.restart_master().await;
    assert_eq!(c.api.job(&queued).await["state"], "queued");
    let mut late = Scripted::start(&c, "late", &["x.later"], 1).await;
    let unit = late.next_unit().await;
    assert_eq!((unit.job_id.to_string(), &unit.params), (queued.clone(), &json!({"keep": "me"})));
    late.complete(&unit, json!(true)).await.expect("result accepted");
    assert_eq!(c.api.wait_final(&queued).await["result"], json!(true));
}

/// A client that makes up 2,000 kinds no worker offers cannot use up the
/// namespace: past 1,024 it is told to start a worker first, and a worker
/// that then joins with a new kind still gets its jobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_kinds_cannot_use_up_the_namespace() {
    let c = Cluster::start(MasterOpts { queue_capacity: 10_000, ..MasterOpts::default() }).await;
    let jobs: Vec<_> = (0..1000).map(|n| json!({"kind": format!("x.made-up-{n}"), "params": {}})).collect();
    let (status, body) = c.api.post("/api/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let mut refused = 0;
    for n in 1000..2000 {
        let (status, body) = c.api.submit(&format!("x.made-up-{n}"), json!({}), None).await;
        if status == StatusCode::BAD_REQUEST {
            assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("start a worker")), "{body}");
            refused += 1;
        }
    }
    assert_eq!(refused, 2000 - faena_proto::kind::MAX_UNOFFERED_KINDS, "the rest are refused, with the reason");
    let mut w = Scripted::start(&c, "newcomer", &["x.brand-new"], 1).await;
    let id = c.api.submit_ok("x.brand-new", json!({"n": 1}), None).await;
    let unit = w.next_unit().await;
    assert_eq!(unit.job_id.to_string(), id);
    w.complete(&unit, json!({"ok": true})).await.expect("result");
    assert_eq!(c.api.wait_final(&id).await["state"], "succeeded");
}

/// A worker that registers `unit_batches` gets the units of one submission
/// in few messages; one that does not gets a message a unit, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_reading_worker_gets_several_units_a_message() {
    let c = Cluster::start(MasterOpts::default()).await;
    let mut batched = Scripted::start_with(&c, "batched", &["x.many"], 64, true).await;
    let mut single = Scripted::start(&c, "single", &["x.one"], 64).await;
    let jobs: Vec<_> =
        (0..40).map(|i| json!({"kind": if i % 2 == 0 { "x.many" } else { "x.one" }, "params": {"i": i}})).collect();
    let (status, body) = c.api.post("/api/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for w in [&mut batched, &mut single] {
        let mut seen = Vec::new();
        for _ in 0..20 {
            let unit = w.next_unit().await;
            seen.push(unit.params["i"].as_u64().expect("i"));
            w.complete(&unit, json!({})).await.expect("result accepted");
        }
        let parity = if w.id == "batched" { 0 } else { 1 };
        assert!(seen.iter().all(|i| i % 2 == parity), "{}: only its kind: {seen:?}", w.id);
        assert_eq!(w.pending_units(), 0, "{}: each unit once", w.id);
    }
    assert_eq!(single.unit_messages, 20, "a message a unit to a worker that did not ask for batches");
    assert!(batched.unit_messages < 20, "20 units in {} messages", batched.unit_messages);
    let ids: Vec<&str> = body["jobs"].as_array().expect("ids").iter().filter_map(|j| j["id"].as_str()).collect();
    assert_eq!(ids.len(), 40);
    for id in ids {
        assert_eq!(c.api.wait_final(id).await["state"], "succeeded");
    }
}
