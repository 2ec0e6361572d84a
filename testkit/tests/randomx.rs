//! RandomX in fast mode through the whole system: a worker builds the 2 GiB
//! dataset on all its threads (reporting `initialising` meanwhile) and then
//! answers with RandomX's published hash; a second worker of the same
//! machine maps that dataset instead of building its own. The slowest
//! test: about half a minute of dataset initialisation.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_testkit::{Cluster, Listener, MasterOpts};
use serde_json::{Value, json};

const DATASET_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

#[tokio::test]
async fn a_fast_mode_worker_reports_initialising_then_hashes_correctly() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    // Shared datasets live in memory: a tmpfs where the machine has one.
    let share = ShareTmp::new(&c);
    let fast =
        [("FAENA_RANDOMX_MODE", "fast"), ("FAENA_RANDOMX_THREADS", "2"), ("FAENA_RANDOMX_SHARE_DIR", share.path())];
    c.add_worker_with("fast", 1, &fast).await;
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

    // A second worker of this machine: two jobs at once, one slot each, so
    // each worker gets one; the second maps the first's dataset.
    let second = c.add_worker_with("fast2", 1, &fast).await;
    c.wait_workers(2).await;
    // Each job long enough (200 hashes) that the first worker is still busy
    // when the second job is dispatched.
    let mut inputs = vec![json!("This is a test")];
    inputs.extend((1..200).map(|i| json!(format!("input {i}"))));
    let job = json!({"kind": "randomx.hash", "params": {"key": "test key 000", "inputs": inputs}});
    let (status, body) = c.api.post("/api/jobs/batch", &json!({"jobs": [job, job]})).await;
    assert_eq!(status, 202, "{body}");
    let mut ran_on = Vec::new();
    for j in body["jobs"].as_array().expect("jobs") {
        let job = c.api.wait_final(j["id"].as_str().expect("id")).await;
        assert_eq!(
            job["result"]["hashes"][0], "639183aae1bf4c9a35884cb46b09cad9175f04efd7684e7262a0ac1c2f0b4e3f",
            "{job}"
        );
        ran_on.push(job["worker"].as_str().unwrap_or_default().to_owned());
    }
    ran_on.sort();
    assert_eq!(ran_on, ["fast", "fast2"], "one job on each worker");
    let log = c.worker_log("fast2");
    assert!(log.contains("RandomX key attached"), "{log}");
    assert!(!log.contains("RandomX key initialised"), "the second worker built nothing: {log}");
    assert_eq!(share.datasets(), 1, "one dataset for the machine");

    // The last worker to stop removes it; nothing is left behind.
    c.workers[second].terminate().await;
    assert_eq!(share.datasets(), 1, "still mapped by the first");
    c.workers[0].terminate().await;
    assert_eq!(share.datasets(), 0, "nobody maps it any more: removed");
}

/// A share directory for the test, in `/dev/shm` where there is one.
struct ShareTmp(std::path::PathBuf);

impl ShareTmp {
    fn new(c: &Cluster) -> Self {
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { c.dir.path().to_path_buf() };
        let name = c.dir.path().file_name().and_then(|n| n.to_str()).unwrap_or("x").to_owned();
        Self(base.join(format!("faena-test-rx-{name}")))
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("utf-8 path")
    }

    /// Finished datasets in it.
    fn datasets(&self) -> usize {
        std::fs::read_dir(&self.0)
            .map(|d| d.flatten().filter(|e| e.file_name().to_str().is_some_and(|n| !n.contains('.'))).count())
            .unwrap_or(0)
    }
}

impl Drop for ShareTmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
