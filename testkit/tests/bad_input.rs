//! Bad input gets a clear error and loses nothing: garbage on every MQTT
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]
//! topic the master and workers read, and bogus gRPC calls.

use faena_proto::grpc::master_client::MasterClient;
use faena_proto::grpc::{self as pb, result_request};
use faena_testkit::sim::request_in;
use faena_testkit::{Cluster, Listener, MasterOpts, TOKEN, embedded_login, eventually, sample, scrape};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

async fn metric(url: &str, name: &str) -> f64 {
    sample(&scrape(url).await, name).unwrap_or(0.0)
}

#[tokio::test]
async fn malformed_mqtt_messages_are_dropped_and_counted() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker("w1", 2).await;
    c.wait_workers(1).await;
    let port: u16 = c.addrs.mqtt.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    // With the master's own account: the broker lets it write every topic,
    // so the garbage reaches master and worker (the ACL is tested in e2e.rs).
    let mut options = MqttOptions::new("vandal", "127.0.0.1", port);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (user, password) = faena_testkit::embedded_login(faena_common::broker::MASTER_CLIENT_ID);
    options.set_credentials(user, password);
    let (client, mut el) = AsyncClient::new(options, 100);
    let pump = tokio::spawn(async move {
        loop {
            if el.poll().await.is_err() {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    });
    let garbage: [&[u8]; 6] =
        [b"", b"\xff\xfe\x00", b"null", b"{\"v\":2}", b"{\"v\":1,\"action\":\"explode\"}", &[b'{'; 100_000]];
    let topics = [
        "faena/workers/w1/jobs",
        "faena/workers/w1/control",
        "faena/workers/w1/status",
        "faena/master/status",
        "faena/workers/w1/status/extra",
        "faena/workers/ghost/status",
    ];
    for topic in topics {
        for payload in garbage {
            client.publish(topic, QoS::AtLeastOnce, false, payload.to_vec()).await.expect("publish");
        }
    }
    // A status that claims to be another worker is rejected too.
    let forged = json!({"v": 1, "worker_id": "w2", "instance_id": "00000000-0000-0000-0000-000000000000", "state": "offline", "slots": 1, "running": 0, "ts_ms": 0});
    client.publish("faena/workers/w1/status", QoS::AtLeastOnce, false, forged.to_string()).await.expect("publish");

    let master_metrics = c.api.url("/metrics");
    eventually("the master counted the garbage", || {
        let url = master_metrics.clone();
        async move { (metric(&url, "faena_malformed_messages_total").await >= 10.0).then_some(()) }
    })
    .await;
    let worker_metrics = c.worker_metrics_url("w1");
    eventually("the worker counted the garbage", || {
        let url = worker_metrics.clone();
        async move { (metric(&url, "faena_worker_malformed_messages_total").await >= 10.0).then_some(()) }
    })
    .await;
    // Both still work and the worker was not dropped.
    assert_eq!(c.api.workers().await.len(), 1);
    let id = c.api.submit_ok("noop", json!({"payload": "still here"}), None).await;
    assert_eq!(c.api.wait_final(&id).await["result"]["payload"], "still here");
    assert!(c.master().try_exit().await.is_none() && c.worker("w1").try_exit().await.is_none());
    assert!(c.master_log().contains("dropped a malformed MQTT message"));
    pump.abort();
}

fn request<T>(msg: T, token: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(t) = token {
        req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().expect("header"));
    }
    req
}

/// A call with the cluster token and `session`.
fn call<T>(msg: T, session: &str) -> tonic::Request<T> {
    request_in(msg, session)
}

fn caps() -> pb::Capabilities {
    pb::Capabilities { cores: 1, slots: 1, kinds: vec!["noop".into()], ..Default::default() }
}

fn lease(job: &str, attempt: u32, token: &str) -> Option<pb::Lease> {
    Some(pb::Lease { job_id: job.into(), attempt, token: token.into() })
}

fn result(worker: &str, lease: Option<pb::Lease>, output: &str) -> pb::ResultRequest {
    pb::ResultRequest {
        worker_id: worker.into(),
        lease,
        outcome: Some(result_request::Outcome::OutputJson(output.into())),
        elapsed_us: 0,
    }
}

#[tokio::test]
async fn bogus_grpc_calls_are_rejected_with_clear_errors() {
    let c = Cluster::start(MasterOpts { heartbeat_ms: 60_000, ..MasterOpts::default() }).await;
    let channel =
        Channel::from_shared(format!("http://{}", c.addrs.grpc)).expect("url").connect().await.expect("connect");
    let mut grpc = MasterClient::new(channel).max_encoding_message_size(64 * 1024 * 1024);
    let instance = uuid::Uuid::new_v4().to_string();
    let register = |worker: &str, caps: Option<pb::Capabilities>| pb::RegisterRequest {
        worker_id: worker.into(),
        instance_id: instance.clone(),
        capabilities: caps,
        running: vec![],
    };

    let e = grpc.register(request(register("fake", Some(caps())), None)).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let e = grpc.register(request(register("fake", Some(caps())), Some("wrong"))).await.expect_err("wrong token");
    assert_eq!((e.code(), e.message()), (Code::Unauthenticated, "wrong cluster token"));
    let e = grpc.register(request(register("a/b", Some(caps())), Some(TOKEN))).await.expect_err("bad id");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = grpc.register(request(register("fake", None), Some(TOKEN))).await.expect_err("no caps");
    assert_eq!(e.code(), Code::InvalidArgument);
    let login = |worker: &str, instance: &str| pb::BrokerLoginRequest {
        worker_id: worker.into(),
        instance_id: instance.into(),
    };
    let e = grpc.broker_login(request(login("fake", &instance), None)).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
    for (worker, inst) in [("a/b", instance.as_str()), ("faena/#", instance.as_str()), ("fake", "not-a-uuid")] {
        let e = grpc.broker_login(request(login(worker, inst), Some(TOKEN))).await.expect_err("bad login request");
        assert_eq!(e.code(), Code::InvalidArgument, "{worker} {inst}: {e:?}");
    }
    let unknown_kind = pb::Capabilities { kinds: vec!["teleport".into()], ..caps() };
    let e = grpc.register(request(register("fake", Some(unknown_kind)), Some(TOKEN))).await.expect_err("no known kind");
    assert!(e.message().contains("no job kind"), "{e:?}");
    // Every list and string a registration carries is bounded.
    let many_kinds = pb::Capabilities { kinds: (0..65).map(|n| format!("x.k{n}")).collect(), ..caps() };
    let long_version = pb::Capabilities { version: "v".repeat(65), ..caps() };
    let many_providers = pb::Capabilities { ai_providers: vec!["gemini".into(); 9], ..caps() };
    for (what, bloated) in [("kinds", many_kinds), ("version", long_version), ("providers", many_providers)] {
        let e = grpc.register(request(register("fake", Some(bloated)), Some(TOKEN))).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "{what}: {e:?}");
        assert!(e.message().contains("capabilities too large"), "{what}: {e:?}");
    }

    let job = c.api.submit_ok("noop", json!({"payload": 1}), None).await;
    // What goes over the broker to "fake" (as anyone who can read its topic sees it).
    let mut wire =
        Listener::start_with(&c.addrs.mqtt, "wire", "faena/workers/fake/jobs", Some(embedded_login("faena-master")))
            .await;
    // Not registered yet: the worker is told to register.
    let e = grpc
        .submit_result(request(result("fake", lease(&job, 1, "t"), "{}"), Some(TOKEN)))
        .await
        .expect_err("unregistered");
    assert_eq!(e.code(), Code::Aborted);
    let session = grpc.register(request(register("fake", Some(caps())), Some(TOKEN))).await.expect("registers");
    let session = session.into_inner().session;
    // Another instance under the live worker's id is refused: it cannot
    // knock the worker off (and cost its jobs an attempt).
    let usurper =
        pb::RegisterRequest { instance_id: uuid::Uuid::new_v4().to_string(), ..register("fake", Some(caps())) };
    let e = grpc.register(request(usurper, Some(TOKEN))).await.expect_err("the id is in use");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    assert!(e.message().contains("in use by another live instance"), "{e:?}");
    // The same instance may register again — with its session only (its
    // instance id is no secret: it is in its status).
    let e = grpc.register(request(register("fake", Some(caps())), Some(TOKEN))).await.expect_err("no session");
    assert_eq!(e.code(), Code::AlreadyExists, "{e:?}");
    let again = grpc.register(call(register("fake", Some(caps())), &session)).await.expect("the same instance may");
    let old = session;
    let session = again.into_inner().session;
    assert_ne!(old, session, "a registration gets a session of its own");
    // The job was dispatched to "fake" on its jobs topic; its token travelled only there.
    c.api.wait_running(&job).await;
    let (_, unit) = wire.messages.recv().await.expect("the unit");
    let unit: serde_json::Value = serde_json::from_slice(&unit).expect("a unit");
    let taken = lease(&job, unit["attempt"].as_u64().expect("attempt") as u32, unit["token"].as_str().expect("token"));

    // A unit read off the wire is not enough: without the session of the
    // registration holding it, its lease submits nothing and fetches nothing.
    let output = r#"{"payload": "forged"}"#;
    let e =
        grpc.submit_result(request(result("fake", taken.clone(), output), Some(TOKEN))).await.expect_err("no session");
    assert!(e.code() == Code::Aborted && e.message().contains("current session"), "{e:?}");
    let e = grpc.submit_result(call(result("fake", taken.clone(), output), &old)).await.expect_err("an older session");
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    let steal = pb::SecretRequest { worker_id: "fake".into(), lease: taken.clone(), name: "api_key".into() };
    let e = grpc.fetch_secret(request(steal, Some(TOKEN))).await.expect_err("no session");
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    let beat = pb::HeartbeatRequest { worker_id: "fake".into(), instance_id: instance.clone(), ..Default::default() };
    let e = grpc.heartbeat(request(beat, Some(TOKEN))).await.expect_err("no session");
    assert_eq!(e.code(), Code::Aborted, "{e:?}");

    let unknown = uuid::Uuid::now_v7().to_string();
    let e = grpc
        .submit_result(call(result("fake", lease(&unknown, 1, "t"), "{}"), &session))
        .await
        .expect_err("unknown job");
    assert_eq!(e.code(), Code::NotFound);
    let e = grpc
        .submit_result(call(result("fake", lease(&job, 1, "forged"), "{}"), &session))
        .await
        .expect_err("wrong token");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = grpc
        .submit_result(call(result("fake", lease(&job, 2, "forged"), "{}"), &session))
        .await
        .expect_err("wrong attempt");
    assert!(e.code() == Code::FailedPrecondition && e.message().contains("current attempt is 1"), "{e:?}");
    let e = grpc.submit_result(call(result("fake", lease("nope", 1, "t"), "{}"), &session)).await.expect_err("bad id");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = grpc.submit_result(call(result("fake", None, "{}"), &session)).await.expect_err("no lease");
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = grpc
        .submit_result(call(result("fake", lease(&job, 1, "forged"), "not json"), &session))
        .await
        .expect_err("bad json");
    assert_eq!(e.code(), Code::InvalidArgument);
    let huge = format!("\"{}\"", "x".repeat(6 * 1024 * 1024));
    let e = grpc
        .submit_result(call(result("fake", lease(&job, 1, "forged"), &huge), &session))
        .await
        .expect_err("oversized");
    assert!(matches!(e.code(), Code::ResourceExhausted | Code::OutOfRange), "{e:?}");
    let e = grpc
        .report_progress(call(
            pb::ProgressRequest {
                worker_id: "fake".into(),
                lease: lease(&job, 1, "forged"),
                progress_json: "{}".into(),
            },
            &session,
        ))
        .await
        .expect_err("stale progress");
    assert_eq!(e.code(), Code::FailedPrecondition);
    let e = grpc
        .fetch_secret(call(
            pb::SecretRequest { worker_id: "fake".into(), lease: lease(&job, 1, "forged"), name: "key".into() },
            &session,
        ))
        .await
        .expect_err("stale secret fetch");
    assert_eq!(e.code(), Code::FailedPrecondition);

    // None of it hurt: the job is still running, the master healthy and counting.
    assert_eq!(c.api.job(&job).await["state"], "running");
    grpc.submit_result(call(result("fake", taken, r#"{"payload": 1}"#), &session)).await.expect("the holder's result");
    assert_eq!(c.api.wait_final(&job).await["result"]["payload"], 1);
    assert_eq!(c.api.get("/healthz").await.0, 200);
    assert!(metric(&c.api.url("/metrics"), "faena_rejected_callbacks_total").await >= 10.0);
    let log = c.master_log();
    assert!(!log.contains(TOKEN), "the cluster token leaked into the log");
}

#[tokio::test]
async fn results_in_one_call_are_answered_each_on_its_own_and_bounded() {
    let c = Cluster::start(MasterOpts { heartbeat_ms: 60_000, ..MasterOpts::default() }).await;
    let channel =
        Channel::from_shared(format!("http://{}", c.addrs.grpc)).expect("url").connect().await.expect("connect");
    let mut grpc = MasterClient::new(channel);
    let mut wire =
        Listener::start_with(&c.addrs.mqtt, "wire", "faena/workers/fake/jobs", Some(embedded_login("faena-master")))
            .await;
    let register = pb::RegisterRequest {
        worker_id: "fake".into(),
        instance_id: uuid::Uuid::new_v4().to_string(),
        capabilities: Some(pb::Capabilities { slots: 2, ..caps() }),
        running: vec![],
    };
    let session = grpc.register(request(register, Some(TOKEN))).await.expect("registers").into_inner().session;
    let (a, b) =
        (c.api.submit_ok("noop", json!({"payload": "a"}), None).await, c.api.submit_ok("noop", json!({}), None).await);
    let mut leases = std::collections::HashMap::new();
    for _ in 0..2 {
        let (_, unit) = wire.messages.recv().await.expect("a unit");
        let unit: serde_json::Value = serde_json::from_slice(&unit).expect("a unit");
        let job = unit["job_id"].as_str().expect("job id").to_owned();
        leases.insert(
            job.clone(),
            lease(&job, unit["attempt"].as_u64().expect("attempt") as u32, unit["token"].as_str().expect("token")),
        );
    }
    let many = |results: Vec<pb::ResultRequest>| call(pb::ResultsRequest { results }, &session);

    // Over the bound, or another worker's among them: the whole call is
    // refused and nothing in it taken.
    let e = grpc.submit_results(many(vec![result("fake", leases[&a].clone(), "{}"); 257])).await.expect_err("too many");
    assert!(e.code() == Code::InvalidArgument && e.message().contains("at most 256"), "{e:?}");
    let mixed = vec![result("fake", leases[&a].clone(), "{}"), result("other", leases[&b].clone(), "{}")];
    let e = grpc.submit_results(many(mixed)).await.expect_err("two workers");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    let forged = vec![result("fake", leases[&a].clone(), "{}")];
    let e = grpc.submit_results(request(pb::ResultsRequest { results: forged }, Some(TOKEN))).await;
    let statuses = e.expect("answered").into_inner().statuses;
    assert_eq!(statuses[0].code, Code::Aborted as i32, "no session: {statuses:?}");
    assert_eq!(c.api.job(&a).await["state"], "running");

    // Each result answered on its own, in order: a's taken, the rest refused
    // as SubmitResult would refuse them, b still running.
    let unknown = uuid::Uuid::now_v7().to_string();
    let results = vec![
        result("fake", lease(&b, 1, "forged"), "{}"),
        result("fake", leases[&a].clone(), r#"{"payload": "a"}"#),
        result("fake", leases[&b].clone(), "not json"),
        result("fake", lease(&unknown, 1, "t"), "{}"),
        result("fake", None, "{}"),
    ];
    let statuses = grpc.submit_results(many(results)).await.expect("answered").into_inner().statuses;
    let codes: Vec<_> = statuses.iter().map(|s| Code::from_i32(s.code)).collect();
    assert_eq!(
        codes,
        [Code::FailedPrecondition, Code::Ok, Code::InvalidArgument, Code::NotFound, Code::InvalidArgument],
        "{statuses:?}"
    );
    assert!(statuses[2].message.contains("not JSON"), "{statuses:?}");
    assert_eq!(c.api.wait_final(&a).await["result"]["payload"], "a");
    assert_eq!(c.api.job(&b).await["state"], "running");

    // A repeated result is a duplicate; b's goes through with it.
    let results =
        vec![result("fake", leases[&a].clone(), r#"{"payload": "a"}"#), result("fake", leases[&b].clone(), "{}")];
    let statuses = grpc.submit_results(many(results)).await.expect("answered").into_inner().statuses;
    assert_eq!((statuses[0].code, statuses[0].duplicate, statuses[1].code, statuses[1].duplicate), (0, true, 0, false));
    assert_eq!(c.api.wait_final(&b).await["state"], "succeeded");
    let empty = grpc.submit_results(many(vec![])).await.expect("an empty call is answered");
    assert!(empty.into_inner().statuses.is_empty());
}
