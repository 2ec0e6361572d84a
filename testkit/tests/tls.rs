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

/// `curl` (the real one) against the master's web port: its exit code and what it printed.
async fn curl(args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--noproxy", "*"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("curl runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The SHA-256 of a certificate's public key (base64), as chromium pins one.
fn spki_pin(cert: &Path) -> String {
    let script = format!(
        "openssl x509 -in '{}' -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        cert.display()
    );
    let out = std::process::Command::new("bash").args(["-c", &script]).output().expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test]
async fn the_web_port_serves_https_and_wss_with_the_masters_certificate() {
    const API_TOKEN: &str = "web-tls-api-token";
    let dir = tempfile::tempdir().expect("temp dir");
    let certs = make_certs(dir.path());
    let ca = certs.join("ca.pem").display().to_string();
    let extra = vec![
        ("FAENA_WEB_TLS".to_owned(), "true".to_owned()),
        ("FAENA_TLS_CERT_FILE".to_owned(), certs.join("master.pem").display().to_string()),
        ("FAENA_TLS_KEY_FILE".to_owned(), certs.join("master.key").display().to_string()),
        ("FAENA_WEB_DIR".to_owned(), faena_testkit::repo().join("web").display().to_string()),
    ];
    let c = Cluster::start_with_api_token(MasterOpts { extra, ..MasterOpts::default() }, API_TOKEN).await;
    let base = format!("https://{}", c.addrs.http);
    let auth = format!("Authorization: Bearer {API_TOKEN}");

    // curl trusting the cluster CA: health, and a job through the API.
    let (code, body) =
        curl(&["--cacert", &ca, "-o", "/dev/null", "-w", "%{http_code}", &format!("{base}/healthz")]).await;
    assert_eq!((code, body.as_str()), (0, "200"));
    let job = r#"{"kind": "noop", "params": {"payload": "sealed"}}"#;
    let submit = format!("{base}/api/jobs");
    let headers = ["-H", &auth, "-H", "content-type: application/json"];
    let (code, body) = curl(&[&["--cacert", &ca, "-d", job][..], &headers[..], &[submit.as_str()][..]].concat()).await;
    assert_eq!(code, 0, "{body}");
    assert!(body.contains("\"id\""), "{body}");
    // The token and bodies never cross in the clear: plain HTTP gets no answer,
    // and a client that trusts another CA stops at the handshake.
    let (code, body) =
        curl(&["-o", "/dev/null", "-w", "%{http_code}", &format!("http://{}/healthz", c.addrs.http)]).await;
    assert!(code != 0 && body != "200", "plain HTTP answered: {code} {body}");
    let other = make_certs(&dir.path().join("other"));
    let (code, _) = curl(&["--cacert", &other.join("ca.pem").display().to_string(), &format!("{base}/healthz")]).await;
    assert_eq!(code, 60, "curl: the peer's certificate cannot be authenticated with the given CA");

    // The CLI, trusting the CA it is given.
    let out = tokio::process::Command::new(bin("faena"))
        .args(["--url", &base, "--ca-file", &ca, "list"])
        .env("FAENA_API_TOKEN", API_TOKEN)
        .env("HOME", dir.path())
        .kill_on_drop(true)
        .output()
        .await
        .expect("faena runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said} {}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("noop"), "{said}");

    // Chromium: the page over https, Socket.IO over wss.
    let shots = faena_testkit::target_dir().join("screenshots").join("web");
    let pin = spki_pin(&certs.join("master.pem"));
    faena_testkit::run_node_at(&base, "https.mjs", &[API_TOKEN, &pin, &shots.display().to_string()]).await;
}
