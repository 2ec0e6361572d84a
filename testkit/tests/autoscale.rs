//! The autoscaler — its own process, the only one with the Docker socket,
//! reaching the master through its API with the API token — against a
//! stand-in for the Docker Engine API (the real wire format on a Unix
//! socket) that starts and stops real workers as a swarm would: a burst of slow jobs scales 1 -> 3, every job finishes once;
//! the idle cluster goes back to 1, the workers on the removed slots drained
//! before the count is lowered (and one Swarm keeps takes work again); each
//! decision counted and on the dashboard. (`scripts/e2e-swarm.sh` does the same on a real swarm.)
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use faena_testkit::{Api, Cluster, MasterOpts, Proc, bin, eventually, repo, run_node, sample, scrape};
use serde_json::{Value, json};
use tokio::sync::mpsc;

type Engine = Arc<Mutex<(u64, Value)>>;

const TOKEN: &str = "scale-me-token";

/// The Engine API's service read and update; each update's replica count
/// goes to the returned channel.
fn fake_engine(socket: &std::path::Path) -> mpsc::UnboundedReceiver<u32> {
    let listener = tokio::net::UnixListener::bind(socket).expect("bind the socket");
    let spec = json!({"Name": "faena_worker", "Mode": {"Replicated": {"Replicas": 1}}});
    let (tx, rx) = mpsc::unbounded_channel();
    let app =
        axum::Router::new()
            .route(
                "/services/{name}",
                get(|Path(_): Path<String>, State((s, _)): State<(Engine, mpsc::UnboundedSender<u32>)>| async move {
                    let s = s.lock().expect("lock");
                    axum::Json(json!({"ID": "svc", "Version": {"Index": s.0}, "Spec": s.1}))
                }),
            )
            .route(
                "/services/{id}/update",
                post(
                    |State((s, tx)): State<(Engine, mpsc::UnboundedSender<u32>)>,
                     axum::Json(spec): axum::Json<Value>| async move {
                        let mut s = s.lock().expect("lock");
                        let to = spec["Mode"]["Replicated"]["Replicas"].as_u64().expect("replicas") as u32;
                        *s = (s.0 + 1, spec);
                        let _ = tx.send(to);
                        axum::Json(json!({"Warnings": null}))
                    },
                ),
            )
            .with_state((Arc::new(Mutex::new((1, spec))), tx));
    tokio::spawn(async move { axum::serve(listener, app).await });
    rx
}

async fn next_update(rx: &mut mpsc::UnboundedReceiver<u32>) -> u32 {
    tokio::time::timeout(faena_testkit::WAIT, rx.recv()).await.expect("a scale decision in time").expect("engine up")
}

#[tokio::test]
async fn the_autoscaler_scales_up_on_queue_wait_and_back_down_draining_first() {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("docker.sock");
    let mut updates = fake_engine(&socket);
    let settings = [
        ("FAENA_AUTOSCALE", "1:3"),
        ("FAENA_AUTOSCALE_WAIT_MS", "500"),
        ("FAENA_AUTOSCALE_COOLDOWN_SECS", "2"),
        ("FAENA_AUTOSCALE_SETTLE_SECS", "60"),
        ("FAENA_AUTOSCALE_EVERY_MS", "200"),
        ("FAENA_AUTOSCALE_DRAIN_MS", "1500"),
    ];
    let extra = vec![("FAENA_WEB_DIR".into(), repo().join("web").display().to_string())];
    let mut c = Cluster::start_with_api_token(MasterOpts { extra, ..MasterOpts::default() }, TOKEN).await;

    // The API the autoscaler uses is the API: without the token, nothing.
    let anyone = Api::new(&c.addrs.http);
    let drain = json!({"workers": ["worker-1"], "for_ms": 60000});
    assert_eq!(anyone.put("/api/workers/draining", &drain).await.0, 401);
    assert_eq!(anyone.get("/api/load").await.0, 401);
    let (status, v) = c.api.put("/api/workers/draining", &json!({"workers": ["worker-1"], "for_ms": 0})).await;
    assert_eq!(status, 400, "{v}");
    let (status, v) = c.api.put("/api/autoscaler", &json!({"service": "x"})).await;
    assert_eq!(status, 400, "{v}");

    let mut env: Vec<(String, String)> = settings.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
    env.push(("FAENA_DOCKER_SOCKET".into(), socket.display().to_string()));
    env.push(("FAENA_URL".into(), format!("http://{}", c.addrs.http)));
    let token_file = dir.path().join("api-token");
    std::fs::write(&token_file, TOKEN).expect("token file");
    env.push(("FAENA_API_TOKEN_FILE".into(), token_file.display().to_string()));
    let log = dir.path().join("autoscaler.log");
    let _scaler = Proc::spawn(&bin("faena-autoscaler"), &[], &env, &log).await;
    c.add_worker("worker-1", 1).await;
    c.wait_workers(1).await;

    // A burst one worker would take 6 s over: it waits past 500 ms.
    let mut burst = Vec::new();
    for i in 0..6 {
        burst.push(c.api.submit_ok("noop", json!({"delay_ms": 1000, "payload": i}), None).await);
    }
    assert_eq!(next_update(&mut updates).await, 3, "up to MAX: 5 waiting need 5 more, MAX is 3");
    // Swarm starts the new tasks.
    for id in ["worker-2", "worker-3"] {
        c.add_worker(id, 1).await;
    }
    for id in &burst {
        assert_eq!(c.api.wait_final(id).await["state"], "succeeded");
        let succeeded = c.api.history(id).await.iter().filter(|t| t["state"] == "succeeded").count();
        assert_eq!(succeeded, 1, "job {id} finished once");
    }

    // Idle for the cool-down: back to MIN, the removed slots drained first.
    assert_eq!(next_update(&mut updates).await, 1);
    let workers = c.api.workers().await;
    let state = |id: &str| workers.iter().find(|w| w["id"] == id).map(|w| w["state"].clone());
    assert_eq!(
        (state("worker-2"), state("worker-3")),
        (Some(json!("draining")), Some(json!("draining"))),
        "{workers:?}"
    );
    assert_eq!(state("worker-1"), Some(json!("online")));
    // Swarm stops one of the two (on a multi-node swarm it may keep a
    // drained one): the one it kept takes work again after twice the drain time.
    c.worker("worker-3").terminate().await;
    eventually("the drained worker Swarm kept is online again", || async {
        let workers = c.api.workers().await;
        workers.iter().any(|w| w["id"] == "worker-2" && w["state"] == "online").then_some(())
    })
    .await;
    c.worker("worker-2").terminate().await;
    c.wait_workers(1).await;
    // Nothing waits: no new decision.
    let metrics = scrape(&c.api.url("/metrics")).await;
    assert_eq!(sample(&metrics, "faena_autoscale_decisions_total{direction=\"up\"}"), Some(1.0));
    assert_eq!(sample(&metrics, "faena_autoscale_decisions_total{direction=\"down\"}"), Some(1.0));
    let log = eventually("the decisions in the autoscaler's log", || async {
        let log = std::fs::read_to_string(dir.path().join("autoscaler.log")).unwrap_or_default();
        (log.matches("autoscaler scaled the worker service").count() == 2).then_some(log)
    })
    .await;
    assert!(log.contains("waiting, the longest") && log.contains("workers were idle for 2 s"), "{log}");
    assert!(updates.try_recv().is_err(), "no further decision");
    // The dashboard shows both decisions with their reasons.
    let shots = faena_testkit::target_dir().join("screenshots").join("web");
    run_node(&c, "dashboard-autoscale.mjs", &[TOKEN, &shots.display().to_string()]).await;
}
