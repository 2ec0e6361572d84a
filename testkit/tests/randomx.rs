//! RandomX in fast mode through the whole system: a worker builds the 2 GiB
//! dataset on all its threads (reporting `initialising` meanwhile) and then
//! answers with RandomX's published hash. The slowest test: about half a
//! minute of dataset initialisation.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_testkit::{Cluster, Listener, MasterOpts};
use serde_json::{Value, json};

const DATASET_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

#[tokio::test]
async fn a_fast_mode_worker_reports_initialising_then_hashes_correctly() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker_with("fast", 1, &[("FAENA_RANDOMX_MODE", "fast"), ("FAENA_RANDOMX_THREADS", "2")]).await;
    let workers = c.wait_workers(1).await;
    assert_eq!(workers[0]["randomx_modes"], json!(["fast"]));

    let mut status = Listener::start(&c.addrs.mqtt, "observer", "faena/workers/fast/status").await;
    let id = c.api.submit_ok("randomx.hash", json!({"key": "test key 000", "input": "This is a test"}), None).await;
    // Building the dataset takes about half a minute here; allow a much
    // slower machine before calling it a failure.
    let saw = tokio::time::timeout(DATASET_WAIT, async {
        let mut initialising = false;
        while let Some((_, payload)) = status.messages.recv().await {
            let v: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            let state = v["state"].as_str().unwrap_or_default();
            initialising |= state == "initialising";
            if initialising && state == "online" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(saw, Ok(true), "the status showed initialising, then online");
    let job = c.api.wait_final(&id).await;
    assert_eq!(job["result"]["hash"], "639183aae1bf4c9a35884cb46b09cad9175f04efd7684e7262a0ac1c2f0b4e3f", "{job}");
    // The dataset is kept: a second job with the same key needs no new one.
    let again = c
        .api
        .submit_ok("randomx.hash", json!({"key": "test key 000", "inputs": ["Lorem ipsum dolor sit amet"]}), None)
        .await;
    let job = c.api.wait_final(&again).await;
    assert_eq!(job["result"]["hashes"], json!(["300a0adb47603dedb42228ccb2b211104f4da45af709cd7547cd049e9489c969"]));
    let log = std::fs::read_to_string(c.dir.path().join("worker-fast.log")).unwrap_or_default();
    assert_eq!(log.matches("RandomX key initialised").count(), 1, "{log}");
}
