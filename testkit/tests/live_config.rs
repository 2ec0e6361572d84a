//! Live configuration against real processes: a change made with the CLI
//! reaches running workers (same instance, new slots in effect for the next
//! dispatch, RandomX threads, log level, AI order and model), a setting a
//! worker cannot apply is refused with the reason, a forged or replayed
//! message on the broker changes nothing, and the configuration survives a
//! master restart.

#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_proto::mqtt::{Payload, WorkerStatus};
use faena_proto::secret::Secret;
use faena_proto::settings::{ClusterConfig, SignedConfig};
use faena_testkit::cli::{self, Out};
use faena_testkit::custom::Scripted;
use faena_testkit::{Cluster, FakeAi, Listener, MasterOpts, embedded_login, eventually, sample, scrape};
use reqwest::StatusCode;
use serde_json::{Value, json};

const API_TOKEN: &str = "live-config-api-token";

async fn faena(c: &Cluster, args: &[&str]) -> Out {
    cli::faena(c, API_TOKEN, args).await
}

/// A metric of worker `id`, once it reads `want`.
async fn worker_metric(c: &mut Cluster, id: &str, name: &str, want: f64) {
    let url = c.worker_metrics_url(id);
    eventually(&format!("{id}: {name} = {want}"), || {
        let url = url.clone();
        async move { (sample(&scrape(&url).await, name) == Some(want)).then_some(()) }
    })
    .await;
}

/// Publishes `payload` on the config topic with the master's own broker
/// account: a broker account that may publish there is still not the master.
async fn publish_config(c: &Cluster, payload: Vec<u8>) {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let port: u16 = c.addrs.mqtt.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    // A client id of its own each time, so the previous forger's teardown
    // (its event loop dropped mid-disconnect) cannot race this connection
    // under the same id: CI once saw the second one aborted.
    let mut options = MqttOptions::new(format!("forger-{}", uuid::Uuid::new_v4().simple()), "127.0.0.1", port);
    let (user, password) = embedded_login("faena-master");
    options.set_credentials(user, password);
    let (client, mut el) = AsyncClient::new(options, 10);
    client.publish("faena/config", QoS::AtLeastOnce, false, payload).await.expect("publish");
    loop {
        match el.poll().await.expect("broker") {
            Event::Incoming(Packet::PubAck(_)) => break,
            _ => continue,
        }
    }
    let _ = client.disconnect().await;
}

fn reported(view: &Value, worker: &str) -> u64 {
    view["reported"][worker]["version"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_reach_running_workers_and_survive_a_restart() {
    let fake = FakeAi::start().await;
    let mut c = Cluster::start_with_api_token(MasterOpts::default(), API_TOKEN).await;
    let gemini = fake.gemini_base();
    c.add_worker_with("w1", 1, &[("FAENA_RANDOMX_THREADS", "2")]).await;
    c.wait_workers(1).await;
    let statuses = Listener::start(&c.addrs.mqtt, "status-watch", "faena/workers/w1/status").await;
    let mut configs = Listener::start(&c.addrs.mqtt, "config-watch", "faena/config").await;

    // Nothing set yet: version 0, and every worker runs its own flags.
    let view = faena(&c, &["config", "get", "--json"]).await.ok().json();
    assert_eq!((view["version"].as_u64(), reported(&view, "w1")), (Some(0), 0), "{view}");
    let unset = faena(&c, &["config", "get", "worker.slots"]).await;
    assert_eq!(unset.code, 3, "an unset key: {}", unset.stderr);

    // One slot busy, two jobs waiting.
    let long = json!({"delay_ms": 600_000});
    let jobs: Vec<String> =
        futures::future::join_all((0..3).map(|_| c.api.submit_ok("noop", long.clone(), None))).await;
    eventually("one job running", || async {
        let views = futures::future::join_all(jobs.iter().map(|j| c.api.job(j))).await;
        (views.iter().filter(|v| v["state"] == "running").count() == 1).then_some(())
    })
    .await;

    // A worker that does not take live configuration (it never reports
    // one) is shown so and not waited for.
    let _scripted = Scripted::start(&c, "scripted", &["x.none"], 1).await;

    // Three slots for w1, live: the waiting jobs start on the same process.
    let set = faena(
        &c,
        &["config", "set", "worker.slots=3", "worker.randomx_threads=1", "--worker", "w1", "--wait", "--json"],
    )
    .await;
    let view = set.ok().json();
    assert_eq!((view["version"].as_u64(), reported(&view, "w1")), (Some(1), 1), "{view}");
    assert_eq!(view["workers"]["w1"], json!({"worker.slots": 3, "worker.randomx_threads": 1}), "{view}");
    // What the live values replaced, said by the worker, the API and the CLI.
    let overrides = json!([
        {"key": "worker.randomx_threads", "value": 1, "own": "FAENA_RANDOMX_THREADS=2"},
        {"key": "worker.slots", "value": 3, "own": "FAENA_WORKER_SLOTS=1"},
    ]);
    assert_eq!(view["reported"]["w1"]["overrides"], overrides, "{view}");
    let said =
        "worker.randomx_threads=1 (overrides FAENA_RANDOMX_THREADS=2), worker.slots=3 (overrides FAENA_WORKER_SLOTS=1)";
    let log = c.worker_log("w1");
    assert!(log.contains(&format!("live configuration v1 in effect: {said}")), "{log}");
    let shown = faena(&c, &["config", "get", "--wait-workers", "1"]).await.ok().stdout.clone();
    assert!(shown.contains(&format!("live configuration v1 in effect on w1: {said}")), "{shown}");
    for j in &jobs {
        assert_eq!(c.api.wait_running(j).await, "w1");
    }
    worker_metric(&mut c, "w1", "faena_worker_running", 3.0).await;
    worker_metric(&mut c, "w1", "faena_worker_randomx_threads", 1.0).await;
    let w1 = c.api.workers().await.into_iter().find(|w| w["id"] == "w1").unwrap();
    assert_eq!((w1["slots"].as_u64(), w1["config"]["version"].as_u64()), (Some(3), Some(1)), "{w1}");
    let scripted = c.api.workers().await.into_iter().find(|w| w["id"] == "scripted").unwrap();
    assert!(scripted["config"].is_null() && view["reported"].get("scripted").is_none(), "{scripted} {view}");
    assert!(c.worker("w1").try_exit().await.is_none(), "the worker was not restarted");
    let (mut statuses, mut seen) = (statuses, Vec::new());
    eventually("w1's status with version 1", || {
        while let Ok((_, p)) = statuses.messages.try_recv() {
            seen.push(WorkerStatus::decode(&p).expect("status"));
        }
        let found = seen.iter().any(|s| s.config_version == 1 && s.slots == 3);
        async move { found.then_some(()) }
    })
    .await;
    assert!(seen.windows(2).all(|w| w[0].instance_id == w[1].instance_id), "one instance throughout");

    // Fewer slots: nothing running stops; the next dispatch counts 1.
    faena(&c, &["config", "set", "worker.slots=1", "--worker", "w1", "--wait"]).await.ok();
    for j in &jobs {
        assert!(c.api.cancel(j).await.0.is_success());
    }
    worker_metric(&mut c, "w1", "faena_worker_running", 0.0).await;
    let (a, b) = (c.api.submit_ok("noop", long.clone(), None).await, c.api.submit_ok("noop", long.clone(), None).await);
    c.api.wait_running(&a).await;
    let waiting = c.api.job(&b).await;
    assert_eq!(waiting["state"], "queued", "one slot: the second waits ({waiting})");
    for j in [&a, &b] {
        assert!(c.api.cancel(j).await.0.is_success());
    }

    // A worker that joins later gets the configuration when it registers.
    c.add_worker_with("ai1", 1, &[("GEMINI_BASE_URL", gemini.as_str()), ("GEMINI_API_KEY", "live-config-key")]).await;
    c.wait_workers(3).await;
    let view = faena(&c, &["config", "get", "--json"]).await.ok().json();
    assert_eq!(reported(&view, "ai1"), view["version"].as_u64().unwrap(), "{view}");

    // The AI settings: a model for gemini is asked from the next query on;
    // an order naming only a provider this worker lacks is refused, with why.
    faena(&c, &["config", "set", "ai.model.gemini=gemini-live-model", "--wait"]).await.ok();
    let q = c.api.submit_ok("ai.query", json!({"prompt": "hi"}), None).await;
    let answered = c.api.wait_final(&q).await;
    assert_eq!(answered["state"], "succeeded", "{answered}");
    let asked = fake.requests().await.pop().expect("a request");
    assert!(asked.path.contains("/models/gemini-live-model:"), "{}", asked.path);
    let refused = faena(&c, &["config", "set", "ai.providers=openai", "--worker", "ai1", "--wait", "--json"]).await;
    assert_eq!(refused.code, 4, "a refusal exits 4: {}", refused.stdout);
    assert!(refused.stderr.contains("ai.providers") && refused.stderr.contains("none of openai"), "{}", refused.stderr);
    let ai1 = c.api.workers().await.into_iter().find(|w| w["id"] == "ai1").unwrap();
    assert_eq!(ai1["config"]["refused"][0]["key"], "ai.providers", "{ai1}");

    // What cannot change live, or is not a setting, is refused by the master.
    for (arg, code) in [("ai.model.local=other.gguf", 2), ("worker.log_level=loud", 2), ("worker.colour=3", 2)] {
        let out = faena(&c, &["config", "set", arg]).await;
        assert_eq!(out.code, code, "{arg}: {}", out.stderr);
    }
    let (status, body) = c.api.put("/api/config", &json!({"settings": {"worker.slots": 2}, "version": 1})).await;
    assert_eq!(status, StatusCode::CONFLICT, "a change made against an old version: {body}");

    // A forged document (signed with another token) and a genuine old one
    // replayed: the worker takes neither; the log level it is given next
    // shows it says so.
    faena(&c, &["config", "set", "worker.log_level=debug", "--worker", "w1", "--wait"]).await.ok();
    let mut first = None;
    let first = eventually("the first published version", || {
        while let Ok((_, p)) = configs.messages.try_recv() {
            let signed = SignedConfig::decode(&p).expect("signed config");
            let doc: ClusterConfig = serde_json::from_str(&signed.doc).expect("doc");
            if doc.version == 1 {
                first = Some(p.to_vec());
            }
        }
        let found = first.clone();
        async move { found }
    })
    .await;
    let mut forged = ClusterConfig { version: 99, ..Default::default() };
    forged.all.insert("worker.slots".into(), json!(64));
    let forged = faena_common::signing::seal(&Secret::new("not-the-cluster-token"), &forged);
    publish_config(&c, forged.encode()).await;
    publish_config(&c, first).await;
    worker_metric(&mut c, "w1", "faena_worker_malformed_messages_total", 1.0).await;
    eventually("the replay noticed", || async {
        c.worker_log("w1").contains("is not newer than version").then_some(())
    })
    .await;
    assert!(c.worker_log("w1").contains("did not sign"), "the forgery is logged");
    let w1 = c.api.workers().await.into_iter().find(|w| w["id"] == "w1").unwrap();
    let current = faena(&c, &["config", "get", "--json"]).await.ok().json()["version"].as_u64().unwrap();
    assert_eq!((w1["slots"].as_u64(), w1["config"]["version"].as_u64()), (Some(1), Some(current)), "{w1}");

    // A master killed and started again keeps the configuration (stored
    // before the change was answered); workers register again and run it.
    c.master().kill9().await;
    c.restart_master().await;
    let view = eventually("both workers report the version again", || async {
        let (status, view) = c.api.get("/api/config").await;
        (status == StatusCode::OK && reported(&view, "w1") == current && reported(&view, "ai1") == current)
            .then_some(view)
    })
    .await;
    assert_eq!(view["version"].as_u64(), Some(current), "{view}");
    assert_eq!(view["workers"]["w1"]["worker.slots"], 1, "{view}");
    let value = faena(&c, &["config", "get", "worker.slots", "--worker", "w1"]).await;
    assert_eq!(value.ok().stdout.trim(), "1");

    // Unset: the workers go back to their own flags.
    faena(&c, &["config", "unset", "worker.slots", "worker.randomx_threads", "--worker", "w1", "--wait"]).await.ok();
    worker_metric(&mut c, "w1", "faena_worker_randomx_threads", 2.0).await;
}

/// What a worker reports it overrides is bounded: at most 128 entries, each
/// value JSON of at most 1 KiB; a report past that is refused whole, and a
/// good one shows in `GET /api/config`.
#[tokio::test]
async fn reported_overrides_are_bounded() {
    use faena_proto::grpc::{self as pb, master_client::MasterClient};
    use faena_testkit::sim::{request, request_in};
    let c = Cluster::start_with_api_token(MasterOpts::default(), API_TOKEN).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", c.addrs.grpc)).expect("url").connect().await;
    let mut grpc = MasterClient::new(channel.expect("grpc"));
    let instance = uuid::Uuid::new_v4().to_string();
    let register = pb::RegisterRequest {
        worker_id: "ov".into(),
        instance_id: instance.clone(),
        capabilities: Some(pb::Capabilities { cores: 1, slots: 1, kinds: vec!["noop".into()], ..Default::default() }),
        running: vec![],
    };
    let session = grpc.register(request(register)).await.expect("registers").into_inner().session;
    let over = |key: &str, value_json: &str| pb::ConfigOverride {
        key: key.into(),
        value_json: value_json.into(),
        own: "FAENA_WORKER_SLOTS=1".into(),
    };
    let report = |overrides: Vec<pb::ConfigOverride>| pb::ConfigReport {
        worker_id: "ov".into(),
        instance_id: instance.clone(),
        version: 0,
        slots: 0,
        ai_slots: 0,
        refused: vec![],
        overrides,
    };
    let too_many = (0..129).map(|n| over(&format!("k{n}"), "1")).collect();
    let e = grpc.report_config(request_in(report(too_many), &session)).await.expect_err("129 overrides");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    for bad in ["not json", &format!("\"{}\"", "x".repeat(1100))] {
        let e = grpc.report_config(request_in(report(vec![over("worker.slots", bad)]), &session)).await;
        assert_eq!(e.expect_err("a bad value").code(), tonic::Code::InvalidArgument);
    }
    let good = (0..128).map(|n| over(&format!("k{n}"), "3")).collect();
    grpc.report_config(request_in(report(good), &session)).await.expect("128 overrides");
    let view = faena(&c, &["config", "get", "--json"]).await.ok().json();
    let shown = view["reported"]["ov"]["overrides"].as_array().map_or(0, Vec::len);
    assert_eq!(shown, 128, "{view}");
    assert_eq!(view["reported"]["ov"]["overrides"][0]["value"], json!(3));
}
