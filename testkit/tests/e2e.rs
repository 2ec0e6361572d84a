//! Jobs run end to end on real processes: the embedded broker and Mosquitto.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_common::broker::MASTER_CLIENT_ID;
use faena_proto::grpc::master_client::MasterClient;
use faena_testkit::mosquitto::{MASTER, OBSERVER};
use faena_testkit::sim::broker_login;
use faena_testkit::{Cluster, MasterOpts, Mosquitto, Proc, bin, embedded_login, eventually};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

const KEY: &str = "test key 000";
const INPUT: &str = "This is a test";
const HASH: &str = "639183aae1bf4c9a35884cb46b09cad9175f04efd7684e7262a0ac1c2f0b4e3f";

async fn run_jobs(c: &Cluster) {
    let api = &c.api;
    let id = api.submit_ok("randomx.hash", json!({"key": KEY, "input": INPUT}), None).await;
    let job = api.wait_final(&id).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert_eq!(job["result"]["hash"], HASH);
    assert_eq!(job["attempts"], 1);

    let jobs: Vec<_> = (0..40).map(|i| json!({"kind": "noop", "params": {"payload": i}})).collect();
    let (status, body) = api.post("/api/jobs/batch", &json!({"jobs": jobs})).await;
    assert_eq!(status, 202, "{body}");
    let ids: Vec<String> =
        body["jobs"].as_array().expect("ids").iter().map(|j| j["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(ids.len(), 40);
    for (i, id) in ids.iter().enumerate() {
        let job = api.wait_final(id).await;
        assert_eq!((job["state"].as_str(), &job["result"]["payload"]), (Some("succeeded"), &json!(i)));
    }
}

#[tokio::test]
async fn end_to_end_with_the_embedded_broker() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker("w1", 2).await;
    c.add_worker("w2", 2).await;
    let workers = c.wait_workers(2).await;
    assert!(workers.iter().all(|w| w["kinds"] == json!(["noop", "randomx.hash", "randomx.mine"]) && w["slots"] == 2));
    run_jobs(&c).await;
    // The worker that hashed reports its measured RandomX speed with its next heartbeat.
    eventually("a measured hashrate", || async {
        c.api.workers().await.iter().any(|w| w["hashrate"].as_f64().unwrap_or(0.0) > 0.0).then_some(())
    })
    .await;

    // The streamed events of a job: running, progress-free noop, then the result.
    let id = c.api.submit_ok("noop", json!({"payload": "x", "delay_ms": 1000}), None).await;
    let mut events = c.api.events(&id).await;
    let mut names = vec![];
    while let Some((name, data)) = events.next().await {
        names.push(name.clone());
        if name == "succeeded" {
            assert_eq!(data["result"]["payload"], "x");
            break;
        }
    }
    assert_eq!(names.last().map(String::as_str), Some("succeeded"));
    assert!(names.contains(&"running".to_owned()), "{names:?}");

    let (status, health) = c.api.get("/healthz").await;
    assert_eq!((status.as_u16(), health["status"].as_str()), (200, Some("ok")));
    let metrics = c.api.text("/metrics").await;
    for name in [
        "faena_jobs_total{state=\"succeeded\"}",
        "faena_queue_depth{priority=\"high\"}",
        "faena_dispatch_latency_seconds_count",
        "faena_redeliveries_total",
        "faena_workers 2",
    ] {
        assert!(metrics.contains(name), "master metrics lack {name}:\n{metrics}");
    }
    let body = faena_testkit::scrape(&c.worker_metrics_url("w1")).await;
    assert!(body.contains("faena_worker_jobs_total{kind=\"noop\",outcome=\"succeeded\"}"), "{body}");
    assert!(body.contains("faena_worker_job_duration_seconds"), "{body}");
}

/// `FAENA_MASTER_THREADS` sets the master's async threads (the cores, at
/// most 4, without it), and `/metrics` says how many it runs on.
#[tokio::test]
async fn the_master_runs_on_the_async_threads_it_is_given() {
    let extra = vec![("FAENA_MASTER_THREADS".to_owned(), "3".to_owned())];
    let c = Cluster::start(MasterOpts { extra, ..MasterOpts::default() }).await;
    let metrics = c.api.text("/metrics").await;
    assert_eq!(faena_testkit::sample(&metrics, "faena_master_threads"), Some(3.0), "{metrics}");
}

#[tokio::test]
async fn end_to_end_with_mosquitto_shows_logs_and_status() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Mosquitto::start(tmp.path()).await;
    let opts = MasterOpts { broker: broker.broker(), ..MasterOpts::default() };
    // Watch everything the observer account may see, as an operator would.
    let mut sub = tokio::process::Command::new("mosquitto_sub")
        .args(broker.cli_args(OBSERVER))
        .args(["-t", "faena/#", "-v"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("mosquitto_sub");
    let mut c = Cluster::start(opts).await;
    c.add_worker("w1", 2).await;
    c.add_worker("w2", 2).await;
    c.wait_workers(2).await;
    run_jobs(&c).await;

    let mut lines = BufReader::new(sub.stdout.take().expect("stdout")).lines();
    let (mut saw_log, mut saw_status) = (false, false);
    let seen = tokio::time::timeout(faena_testkit::WAIT, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(json) = line.strip_prefix("faena/logs ") {
                let v: serde_json::Value = serde_json::from_str(json).expect("log lines are JSON");
                saw_log |= v["v"] == 1 && v["message"].is_string() && v["component"].is_string();
            }
            if line.starts_with("faena/workers/w1/status ") && line.contains("\"state\":\"online\"") {
                saw_status = true;
            }
            if saw_log && saw_status {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(seen, Ok(true), "mosquitto_sub showed log={saw_log} status={saw_status}");
    // Anonymous clients are refused by this broker.
    let anon = std::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string(), "-t", "faena/#", "-C", "1", "-W", "5"])
        .output()
        .expect("mosquitto_sub");
    assert!(!anon.status.success());
}

/// `mosquitto_sub` as `account` with client id `id`, printing topic and payload.
fn watch(broker: &Mosquitto, account: faena_testkit::mosquitto::Account, id: &str, filters: &[&str]) -> LineWatch {
    watch_with(&broker.cli_args(account), id, filters)
}

/// `mosquitto_sub` with connection arguments `cli` (host, port, account).
fn watch_with(cli: &[String], id: &str, filters: &[&str]) -> LineWatch {
    let mut cmd = tokio::process::Command::new("mosquitto_sub");
    cmd.args(cli).args(["-i", id, "-v", "-q", "1"]);
    for f in filters {
        cmd.args(["-t", f]);
    }
    let mut child = cmd.stdout(std::process::Stdio::piped()).kill_on_drop(true).spawn().expect("mosquitto_sub");
    let lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    LineWatch { _child: child, lines, seen: Vec::new() }
}

struct LineWatch {
    _child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: Vec<String>,
}

impl LineWatch {
    /// Disconnects it: the subscriber has exited when this returns.
    async fn stop(mut self) {
        let _ = self._child.kill().await;
    }

    /// Reads lines until one starts with `prefix`; returns every line so far.
    async fn until(&mut self, prefix: &str) -> &[String] {
        let found = tokio::time::timeout(faena_testkit::WAIT, async {
            while let Ok(Some(line)) = self.lines.next_line().await {
                let hit = line.starts_with(prefix);
                self.seen.push(line);
                if hit {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "no line {prefix:?} after {:?}", self.seen);
        &self.seen
    }
}

fn publish(broker: &Mosquitto, account: faena_testkit::mosquitto::Account, id: &str, topic: &str, payload: &str) {
    publish_with(broker, account, id, &["-t", topic, "-m", payload]);
}

/// A retained marker: a subscriber that connects after it was published still
/// gets it once its subscription is in place, so waiting for it waits for that.
fn mark_ready(broker: &Mosquitto, topic: &str) {
    publish_with(broker, MASTER, "acl-pub", &["-r", "-t", topic, "-m", "ready"]);
}

fn publish_with(broker: &Mosquitto, account: faena_testkit::mosquitto::Account, id: &str, args: &[&str]) {
    assert!(mosquitto_pub(&broker.cli_args(account), id, args), "mosquitto_pub {args:?}");
}

/// Runs `mosquitto_pub` with connection arguments `cli`; whether it succeeded.
fn mosquitto_pub(cli: &[String], id: &str, args: &[&str]) -> bool {
    let out = std::process::Command::new("mosquitto_pub")
        .args(cli)
        .args(["-i", id, "-q", "1"])
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("mosquitto_pub");
    out.success()
}

/// The stack's Mosquitto (dynamic security) on a running cluster: every
/// worker has an account of its own, handed out by the master. Another
/// worker's account cannot read w1's units or speak for w1, nor log in
/// under w1's client id; a live worker's login goes to no one else; a new
/// login retires the old one. The observer sees status and logs, never work
/// units, even under a worker's client id, and publishes nothing.
/// Each negative check is closed by a marker the same subscriber may see,
/// published after it: Mosquitto delivers a client's messages in order.
#[tokio::test]
async fn broker_acl_confines_each_account() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Mosquitto::start(tmp.path()).await;
    let mut c = Cluster::start(MasterOpts { broker: broker.broker(), ..MasterOpts::default() }).await;
    c.add_worker("w1", 2).await;
    c.wait_workers(1).await;

    // Someone with the cluster token gets no login for the live w1, only
    // accounts for ids of its own.
    let mut grpc = MasterClient::connect(format!("http://{}", c.addrs.grpc)).await.expect("gRPC");
    let instance = uuid::Uuid::new_v4().to_string();
    let refused = broker_login(&mut grpc, "w1", &instance, "").await.expect_err("w1 is live");
    assert_eq!(refused.code(), tonic::Code::AlreadyExists, "{refused:?}");
    let mut login = async |id: &str| {
        let (user, password) = broker_login(&mut grpc, id, &instance, "").await.expect("login").expect("an account");
        broker.login_args(&user, &password)
    };
    let intruder_cli = login("intruder").await;
    let retired_cli = login("forger").await;
    let forger_cli = login("forger").await;
    assert!(!mosquitto_pub(&retired_cli, "forger", &["-t", "faena/logs", "-m", "x"]), "a retired password worked");
    assert!(!mosquitto_pub(&intruder_cli, "w1", &["-t", "faena/logs", "-m", "x"]), "logged in under w1's client id");

    let mut admin = watch(&broker, MASTER, "acl-admin", &["faena/#"]);
    let mut intruder =
        watch_with(&intruder_cli, "intruder", &["faena/workers/w1/jobs", "faena/#", "faena/workers/intruder/jobs"]);
    // The observer connects under a worker id ("w2") to try its rights.
    let mut observer =
        watch(&broker, OBSERVER, "w2", &["faena/workers/+/jobs", "faena/workers/w2/control", "faena/logs"]);
    // Subscriptions are in place once each sees a retained status or its
    // (retained) marker, however late its mosquitto_sub connected.
    admin.until("faena/workers/w1/status ").await;
    mark_ready(&broker, "faena/workers/intruder/jobs");
    intruder.until("faena/workers/intruder/jobs ready").await;
    mark_ready(&broker, "faena/logs");
    observer.until("faena/logs ready").await;

    run_jobs(&c).await;
    admin.until("faena/workers/w1/jobs ").await;
    publish(&broker, MASTER, "acl-pub", "faena/workers/w2/control", "secret-control");

    // Another worker's account forges w1's status, then writes its own.
    assert!(mosquitto_pub(&forger_cli, "forger", &["-t", "faena/workers/w1/status", "-m", "forged"]));
    assert!(mosquitto_pub(&forger_cli, "forger", &["-t", "faena/workers/forger/status", "-m", "marker"]));
    let admin_saw = admin.until("faena/workers/forger/status marker").await;
    assert!(!admin_saw.iter().any(|l| l.contains("forged")), "a worker spoke for another: {admin_saw:?}");

    // The observer may not publish at all — not even as a worker, under its client id.
    // (At QoS 1 its listener drops it outright; at QoS 0 the ACL does.)
    let observer_cli = broker.cli_args(OBSERVER);
    for qos in ["1", "0"] {
        let _ = mosquitto_pub(&observer_cli, "acl-obs", &["-q", qos, "-t", "faena/logs", "-m", "observer-wrote"]);
        let _ =
            mosquitto_pub(&observer_cli, "w3", &["-q", qos, "-t", "faena/workers/w3/status", "-m", "observer-wrote"]);
    }
    publish(&broker, MASTER, "acl-pub", "faena/workers/intruder/jobs", "done");
    let intruder_saw = intruder.until("faena/workers/intruder/jobs done").await;
    assert!(
        !intruder_saw.iter().any(|l| l.starts_with("faena/workers/w1/") || l.starts_with("faena/logs")),
        "{intruder_saw:?}"
    );
    publish(&broker, MASTER, "acl-pub", "faena/logs", "done");
    let observer_saw = observer.until("faena/logs done").await;
    assert!(
        !observer_saw
            .iter()
            .any(|l| l.contains("/jobs ") || l.contains("secret-control") || l.contains("observer-wrote")),
        "{observer_saw:?}"
    );
    let admin_saw = admin.until("faena/logs done").await;
    assert!(!admin_saw.iter().any(|l| l.contains("observer-wrote")), "the observer published: {admin_saw:?}");
    // w1 did all this on an account of its own and still works.
    run_jobs(&c).await;
}

#[tokio::test]
async fn wrong_mqtt_credentials_are_a_clear_startup_error() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Mosquitto::start(tmp.path()).await;
    let log = tmp.path().join("master.log");
    let env = vec![
        ("FAENA_MQTT_URL".to_owned(), broker.url()),
        ("FAENA_MQTT_USERNAME".to_owned(), MASTER.username.to_owned()),
        ("FAENA_MQTT_PASSWORD".to_owned(), "wrong-password".to_owned()),
        ("FAENA_HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("FAENA_GRPC_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("FAENA_DATA_DIR".to_owned(), tmp.path().join("data").display().to_string()),
    ];
    let mut child = Proc::spawn_raw(&bin("faena-master"), &[], &env, &log);
    let status = tokio::time::timeout(faena_testkit::WAIT, child.wait()).await.expect("exits").expect("status");
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("MQTT broker refused the connection") && text.contains("FAENA_MQTT_PASSWORD"), "{text}");
    assert!(!text.contains("wrong-password"), "the password leaked into the log");

    // The same for a worker.
    let env = vec![
        ("FAENA_MQTT_URL".to_owned(), broker.url()),
        ("FAENA_MQTT_USERNAME".to_owned(), "worker".to_owned()),
        ("FAENA_MQTT_PASSWORD".to_owned(), "wrong-password".to_owned()),
        ("FAENA_CLUSTER_TOKEN".to_owned(), "t".to_owned()),
    ];
    let log = tmp.path().join("worker.log");
    let mut child = Proc::spawn_raw(&bin("faena-worker"), &[], &env, &log);
    let status = tokio::time::timeout(faena_testkit::WAIT, child.wait()).await.expect("exits").expect("status");
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("MQTT broker refused the connection"), "{text}");
}

/// The embedded broker (what `dev.sh` runs) under the same attacks: an
/// anonymous client — even one that takes the master's client id — reads
/// status and logs but no work unit or control message, and publishes
/// nothing (the drain that once stopped `dev.sh`'s worker is dropped); a
/// worker's account reads only its own units and speaks only for itself;
/// wrong passwords and borrowed client ids are refused.
#[tokio::test]
async fn the_embedded_broker_lets_no_client_act_beyond_its_role() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker("w1", 2).await;
    c.wait_workers(1).await;
    let port = c.addrs.mqtt.rsplit(':').next().expect("port").to_owned();
    let anonymous: Vec<String> = ["-h", "127.0.0.1", "-p", &port].map(str::to_owned).to_vec();
    let account = |name: &str| {
        let (user, password) = embedded_login(name);
        [anonymous.clone(), vec!["-u".into(), user, "-P".into(), password]].concat()
    };
    let master = account(MASTER_CLIENT_ID);

    let mut admin = watch_with(&master, "acl-admin", &["faena/#"]);
    let mut anon = watch_with(&anonymous, MASTER_CLIENT_ID, &["faena/#"]);
    let mut w2 = watch_with(&account("w2"), "w2", &["faena/workers/w1/jobs", "faena/workers/w2/jobs"]);
    admin.until("faena/workers/w1/status ").await;
    anon.until("faena/workers/w1/status ").await;
    assert!(mosquitto_pub(&master, "acl-pub", &["-r", "-t", "faena/workers/w2/jobs", "-m", "ready"]));
    w2.until("faena/workers/w2/jobs ready").await;

    // The attacks: accepted by the broker (QoS 1 acknowledged), dropped.
    let drain = r#"{"v":1,"action":"drain"}"#;
    assert!(mosquitto_pub(&anonymous, "vandal", &["-t", "faena/workers/w1/control", "-m", drain]));
    assert!(mosquitto_pub(&anonymous, "vandal", &["-r", "-t", "faena/junk", "-m", "retained junk"]));
    assert!(mosquitto_pub(&account("w3"), "w3", &["-t", "faena/workers/w1/status", "-m", "forged"]));
    // Refused outright: a wrong password, a worker's account under another client id.
    let wrong = [anonymous.clone(), ["-u", "w1", "-P", "guess"].map(str::to_owned).to_vec()].concat();
    assert!(!mosquitto_pub(&wrong, "w1", &["-t", "faena/logs", "-m", "x"]), "a wrong password is refused");
    assert!(!mosquitto_pub(&account("w1"), "w1-twin", &["-t", "faena/logs", "-m", "x"]), "a borrowed id is refused");

    // Nothing happened: the worker was not drained, the master not displaced.
    run_jobs(&c).await;
    admin.until("faena/workers/w1/jobs ").await;
    let workers = c.api.workers().await;
    assert!(workers.iter().any(|w| w["id"] == "w1" && w["state"] == "online"), "{workers:?}");
    assert!(mosquitto_pub(&master, "acl-pub", &["-t", "faena/logs", "-m", "done"]));
    let admin_saw = admin.until("faena/logs done").await.to_vec();
    let anon_saw = anon.until("faena/logs done").await;
    assert!(!anon_saw.iter().any(|l| l.contains("/jobs ") || l.contains("/control ")), "{anon_saw:?}");
    for bad in ["forged", "retained junk", "drain"] {
        assert!(!admin_saw.iter().any(|l| l.contains(bad)), "{bad} got through: {admin_saw:?}");
    }
    assert!(mosquitto_pub(&master, "acl-pub", &["-t", "faena/workers/w2/jobs", "-m", "done"]));
    let w2_saw = w2.until("faena/workers/w2/jobs done").await;
    assert!(!w2_saw.iter().any(|l| l.starts_with("faena/workers/w1/")), "{w2_saw:?}");
    assert!(c.master_log().contains("MQTT publish refused by the ACL"));
}

/// A worker login for a service's name (the master's dynsec admin `master`,
/// its client `faena-master`, `observer`) is refused on Mosquitto with
/// dynamic security and on the embedded broker, and the master keeps its
/// broker: it still dispatches. Before, a `BrokerLogin` for `master`
/// deleted and re-made the master's own admin account on Mosquitto.
#[tokio::test]
async fn no_worker_login_can_take_a_services_broker_account() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Mosquitto::start(tmp.path()).await;
    for c in [Cluster::start(MasterOpts { broker: broker.broker(), ..MasterOpts::default() }).await, {
        Cluster::start(MasterOpts::default()).await
    }] {
        let mut c = c;
        c.add_worker("w1", 2).await;
        c.wait_workers(1).await;
        let mut grpc = MasterClient::connect(format!("http://{}", c.addrs.grpc)).await.expect("gRPC");
        let instance = uuid::Uuid::new_v4().to_string();
        for name in ["master", "faena-master", "observer", "Master", "faena-internal-x"] {
            let refused = broker_login(&mut grpc, name, &instance, "").await.expect_err(name);
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{name}: {refused:?}");
            assert!(refused.message().contains("reserved"), "{name}: {}", refused.message());
        }
        // A worker's account is named apart from every service's.
        let (user, _) = broker_login(&mut grpc, "w9", &instance, "").await.expect("login").expect("an account");
        assert_eq!(user, "worker:w9");
        run_jobs(&c).await;
        let health = c.api.get("/healthz").await.1;
        assert_eq!(health["broker"], true, "the master kept its broker: {health}");
    }
}

/// An observer that connects with a persistent session (clean session off,
/// QoS 1) and goes away leaves no queue behind on Mosquitto: 200 such
/// sessions used to grow the broker past its memory limit, and again after
/// each restart (the queues are persisted).
#[tokio::test]
async fn an_observer_that_goes_away_leaves_no_queue_behind() {
    let tmp = tempfile::tempdir().expect("tmp");
    let broker = Mosquitto::start(tmp.path()).await;
    let mut cli = broker.cli_args(OBSERVER);
    cli.push("-c".into());
    let gone = watch_with(&cli, "obs-gone", &["faena/logs"]);
    let mut gone = gone;
    mark_ready(&broker, "faena/logs");
    gone.until("faena/logs ready").await;
    gone.stop().await;
    for n in 0..20 {
        publish(&broker, MASTER, "acl-pub", "faena/logs", &format!("while-away-{n}"));
    }
    let mut back = watch_with(&cli, "obs-gone", &["faena/logs"]);
    back.until("faena/logs ready").await;
    publish(&broker, MASTER, "acl-pub", "faena/logs", "after");
    let saw = back.until("faena/logs after").await;
    assert!(!saw.iter().any(|l| l.contains("while-away")), "a queue was kept for the absent observer: {saw:?}");
}
