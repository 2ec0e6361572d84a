//! TLS between nodes: certificates from `scripts/make-certs.sh`; gRPC and
//! the embedded broker served over TLS; workers and the master on mqtts to
//! Mosquitto; plain-text clients and clients that trust another CA refused.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::path::Path;

use faena_proto::grpc::master_client::MasterClient;
use faena_proto::grpc::{self as pb};
use faena_testkit::sim::request;
use faena_testkit::tls::make_certs;
use faena_testkit::{Cluster, MasterOpts, Mosquitto, Proc, bin};
use serde_json::json;
use tonic::transport::Channel;

fn tls_env(certs: &Path, grpc: &str) -> Vec<(String, String)> {
    vec![
        ("FAENA_MASTER_URL".into(), format!("https://{grpc}")),
        ("FAENA_TLS_CA_FILE".into(), certs.join("ca.pem").display().to_string()),
    ]
}

async fn add_tls_worker(c: &mut Cluster, id: &str, env: &[(String, String)]) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    c.add_worker_with(id, 1, &env).await;
}

#[tokio::test]
async fn a_master_with_a_certificate_speaks_only_tls_to_its_workers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = make_certs(dir.path());
    let identity = [
        ("FAENA_TLS_CERT_FILE".to_owned(), certs.join("master.pem").display().to_string()),
        ("FAENA_TLS_KEY_FILE".to_owned(), certs.join("master.key").display().to_string()),
    ];
    let mut c = Cluster::start(MasterOpts { extra: identity.to_vec(), ..MasterOpts::default() }).await;
    assert!(c.addrs.mqtt.starts_with("mqtts://127.0.0.1:"), "{}", c.addrs.mqtt);

    let env = tls_env(&certs, &c.addrs.grpc);
    add_tls_worker(&mut c, "w1", &env).await;
    c.wait_workers(1).await;
    let id = c.api.submit_ok("noop", json!({"payload": "sealed"}), None).await;
    let job = c.api.wait_final(&id).await;
    assert_eq!((job["state"].as_str(), job["result"]["payload"].as_str()), (Some("succeeded"), Some("sealed")));

    // Plain text gets nowhere: gRPC over h2c fails, MQTT gets no CONNACK.
    let channel = Channel::from_shared(format!("http://{}", c.addrs.grpc)).expect("url").connect().await;
    if let Ok(channel) = channel {
        let register = pb::RegisterRequest { worker_id: "plain".into(), ..Default::default() };
        let e = MasterClient::new(channel).register(request(register)).await.expect_err("plain gRPC");
        assert!(matches!(e.code(), tonic::Code::Unavailable | tonic::Code::Internal | tonic::Code::Unknown), "{e:?}");
    }
    let port: u16 = c.addrs.mqtt.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
    let (_client, mut el) = rumqttc::AsyncClient::new(rumqttc::MqttOptions::new("plain", "127.0.0.1", port), 10);
    assert!(el.poll().await.is_err(), "a plain MQTT client was let in");

    // A worker that trusts another CA stops at once, saying why.
    let other = make_certs(&dir.path().join("other"));
    let log = dir.path().join("stranger.log");
    let mut env = vec![
        ("FAENA_WORKER_ID".to_owned(), "stranger".to_owned()),
        ("FAENA_MQTT_URL".to_owned(), c.addrs.mqtt.clone()),
        ("FAENA_CLUSTER_TOKEN".to_owned(), c.token.clone()),
    ];
    env.extend(tls_env(&other, &c.addrs.grpc));
    let mut stranger = Proc::spawn_raw(&bin("faena-worker"), &[], &env, &log);
    let status = tokio::time::timeout(faena_testkit::WAIT, stranger.wait()).await.expect("exits").expect("status");
    assert!(!status.success());
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(said.contains("TLS with the master failed") && said.contains("FAENA_TLS_CA_FILE"), "{said}");
    assert_eq!(c.api.workers().await.len(), 1);
}

#[tokio::test]
async fn master_and_workers_reach_mosquitto_over_mqtts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = make_certs(dir.path());
    let mosquitto = Mosquitto::start_tls(dir.path(), &certs).await;
    let url = mosquitto.url();
    assert!(url.starts_with("mqtts://"), "{url}");
    let ca = ("FAENA_TLS_CA_FILE".to_owned(), certs.join("ca.pem").display().to_string());
    let broker = mosquitto.broker();
    let mut c = Cluster::start(MasterOpts { broker, extra: vec![ca.clone()], ..MasterOpts::default() }).await;
    assert_eq!(c.addrs.mqtt, url);
    c.add_worker_with("w1", 1, &[(ca.0.as_str(), ca.1.as_str())]).await;
    c.wait_workers(1).await;
    let id = c.api.submit_ok("noop", json!({"payload": "over mqtts"}), None).await;
    assert_eq!(c.api.wait_final(&id).await["result"]["payload"], "over mqtts");
    assert!(c.master_log().contains("connected to the MQTT broker"));
}
