//! `randomx.mine` through the whole system: one job split across two real
//! workers, every share re-hashed by the master and by this test, the
//! finished ranges covering the requested range exactly; and a forging
//! worker whose shares are rejected until it is quarantined.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;

use faena_proto::grpc::master_client::MasterClient;
use faena_proto::grpc::{self as pb};
use faena_proto::jobs::encode_hex;
use faena_proto::mine::{MineOutput, MineParams};
use faena_proto::mqtt::{Payload, WorkUnit};
use faena_randomx::mine::meets;
use faena_randomx::{Flags, Material, Mode};
use faena_testkit::api::is_final;
use faena_testkit::sim::{request, request_in};
use faena_testkit::{Cluster, Listener, MasterOpts, WAIT, eventually, sample, scrape};
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::Channel;

/// How long a mining job may take before the test fails: hashing in light
/// mode is bound by CPU (a few seconds here, much longer on a busy machine),
/// and this is only a failure limit — the tests wait on the job's events.
const MINE_WAIT: std::time::Duration = std::time::Duration::from_secs(240);

/// Every nonce of the range whose hash meets the target, computed here.
fn expected_shares(params: &Value) -> BTreeSet<(u32, String)> {
    let work = serde_json::from_value::<MineParams>(params.clone()).expect("params").work().expect("valid");
    let material = Arc::new(Material::build(Flags::detect(), Mode::Light, &work.key, 1).expect("material"));
    let mut vm = material.vm().expect("vm");
    (work.start..(work.end() as u32))
        .filter_map(|nonce| {
            let hash = vm.hash(&work.input(nonce));
            meets(&hash, work.target).then(|| (nonce, encode_hex(&hash)))
        })
        .collect()
}

#[tokio::test]
async fn a_mining_job_is_split_across_workers_and_every_share_verifies() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    for id in ["m1", "m2"] {
        c.add_worker_with(id, 1, &[("FAENA_RANDOMX_THREADS", "1")]).await;
    }
    c.wait_workers(2).await;
    let params = json!({
        "key": encode_hex(b"faena mining test"),
        "blob": "0707".repeat(38),
        "difficulty": 12,
        "nonce_start": 4_000_000_000u32,
        "nonce_count": 256,
    });
    // A job that would have the master re-hash a share per nonce is refused
    // at the door, with what to change.
    let costly = json!({"key": "6b", "blob": "00".repeat(76), "difficulty": 1, "nonce_count": 1_000_000});
    let (status, body) = c.api.post("/api/jobs", &json!({"kind": "randomx.mine", "params": costly})).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("the limit is 10000") && message.contains("difficulty to at least 100"), "{message}");
    let mut capped = costly.clone();
    capped["max_shares"] = json!(50);
    let (status, body) = c.api.post("/api/jobs", &json!({"kind": "randomx.mine", "params": capped})).await;
    assert_eq!(status, 202, "with max_shares it is bounded: {body}");
    let capped_id = body["id"].as_str().expect("id").to_owned();
    assert_eq!(c.api.cancel(&capped_id).await.0, 200);

    let id = c.api.submit_ok("randomx.mine", params.clone(), None).await;
    let mut events = c.api.events(&id).await;
    let expected = tokio::task::spawn_blocking({
        let params = params.clone();
        move || expected_shares(&params)
    });
    let mut progress = Vec::new();
    let done = tokio::time::timeout(MINE_WAIT, async {
        while let Some((name, data)) = events.next().await {
            match name.as_str() {
                "progress" => progress.push(data),
                n if is_final(n) => return name,
                _ => {}
            }
        }
        String::new()
    })
    .await;
    assert_eq!(done.as_deref(), Ok("succeeded"));
    let job = c.api.job(&id).await;
    let out: MineOutput = serde_json::from_value(job["result"].clone()).expect("mine output");

    // The finished ranges cover the requested range exactly once.
    let mut next = 4_000_000_000u64;
    for r in &out.ranges {
        assert_eq!((u64::from(r.start), r.hashes), (next, r.count), "no gap, no overlap, all hashed: {:?}", out.ranges);
        next += r.count;
    }
    assert_eq!(next, 4_000_000_256);
    assert_eq!(out.hashes, 256);
    let workers: BTreeSet<&str> = out.ranges.iter().map(|r| r.worker.as_str()).collect();
    assert_eq!(workers, BTreeSet::from(["m1", "m2"]), "both workers took part");
    assert_eq!(out.invalid_shares, 0);

    // Every share is real, and none was missed.
    let found: BTreeSet<(u32, String)> = out.shares.iter().map(|s| (s.nonce, s.hash.clone())).collect();
    let expected = expected.await.expect("hashed");
    assert!(!expected.is_empty(), "difficulty 12 over 256 nonces has shares");
    assert_eq!(found, expected);
    assert_eq!(
        out.workers.iter().map(|w| u64::from(w.shares)).sum::<u64>(),
        expected.len() as u64,
        "shares are credited to the workers that found them"
    );

    // Watchers saw the job's aggregated progress, per worker.
    let last = &progress.last().expect("progress events")["data"];
    assert!(last["hashes"].as_u64().unwrap_or(0) > 0, "{last}");
    assert!(last["workers"].as_array().is_some_and(|w| !w.is_empty()), "{last}");
    let verified = sample(&scrape(&c.api.url("/metrics")).await, "faena_shares_total{verdict=\"valid\"}");
    assert_eq!(verified, Some(expected.len() as f64), "the master re-hashed each share once");
    // Each unit is a job of its own, recorded under the mining job.
    let unit = &c.api.history(&id).await;
    assert!(unit.iter().any(|t| t["detail"] == "split into units"), "{unit:?}");
}

#[tokio::test]
async fn forged_shares_are_rejected_and_the_forger_quarantined() {
    let c = Cluster::start(MasterOpts { heartbeat_ms: 60_000, ..MasterOpts::default() }).await;
    // A worker of our own making: it listens for its units and lies about them.
    let login = Some(faena_testkit::embedded_login("forger"));
    let mut units = Listener::start_with(&c.addrs.mqtt, "forger", "faena/workers/forger/jobs", login).await;
    let channel = Channel::from_shared(format!("http://{}", c.addrs.grpc)).expect("url").connect().await.expect("grpc");
    let mut grpc = MasterClient::new(channel);
    let instance = uuid::Uuid::new_v4().to_string();
    let register = || pb::RegisterRequest {
        worker_id: "forger".into(),
        instance_id: instance.clone(),
        capabilities: Some(pb::Capabilities {
            cores: 2,
            slots: 1,
            kinds: vec!["randomx.mine".into()],
            ..Default::default()
        }),
        running: vec![],
    };
    let session = grpc.register(request(register())).await.expect("registers").into_inner().session;

    let params = json!({"key": "6b6579", "blob": "00".repeat(76), "difficulty": 1000, "nonce_count": 1_000_000});
    let id = c.api.submit_ok("randomx.mine", params, None).await;
    let (_, payload) = tokio::time::timeout(WAIT, units.messages.recv()).await.expect("a unit").expect("unit");
    let unit = WorkUnit::decode(&payload).expect("a work unit");
    let lease = Some(pb::Lease {
        job_id: unit.job_id.to_string(),
        attempt: unit.attempt,
        token: unit.token.as_str().to_owned(),
    });
    let start = unit.params["nonce_start"].as_u64().expect("start") as u32;
    let progress =
        |json: String| pb::ProgressRequest { worker_id: "forger".into(), lease: lease.clone(), progress_json: json };

    // A payload that is not what a mining unit reports is refused outright.
    let shape = progress(json!({"hashes": "many"}).to_string());
    let e = grpc.report_progress(request_in(shape, &session)).await.expect_err("shape");
    assert_eq!(e.code(), Code::InvalidArgument);
    // Forged shares: made-up hashes in range, real-looking ones out of range.
    let forged: Vec<Value> = (0..11u32)
        .map(|i| {
            let nonce = if i < 6 { start + i } else { start.wrapping_sub(i) };
            json!({"nonce": nonce, "hash": "00".repeat(32)})
        })
        .collect();
    let report = json!({"hashes": 100, "hashrate": 50.0, "shares": forged}).to_string();
    grpc.report_progress(request_in(progress(report), &session)).await.expect("accepted, shares rejected");

    let forger = eventually("the forger is quarantined", || async {
        let w = c.api.workers().await.into_iter().find(|w| w["id"] == "forger")?;
        (w["state"] == "quarantined").then_some(w)
    })
    .await;
    assert_eq!(forger["invalid_shares"], 11);
    let job = c.api.job(&id).await;
    assert_eq!(job["state"], "running");
    assert_eq!(job["progress"]["shares"], 0, "no forged share was accepted: {job}");
    assert_eq!(job["progress"]["workers"][0]["invalid_shares"], 11, "{job}");
    let invalid = sample(&scrape(&c.api.url("/metrics")).await, "faena_shares_total{verdict=\"invalid\"}");
    assert_eq!(invalid, Some(11.0));
    assert!(c.master_log().contains("invalid share rejected"));

    // Registering again does not lift the quarantine (FAENA_QUARANTINE_SECS):
    // not as the same instance, and another is refused while this one lives.
    grpc.register(request_in(register(), &session)).await.expect("registers again");
    let w = c.api.workers().await;
    assert_eq!(w[0]["state"], "quarantined", "{w:?}");
    let twin = pb::RegisterRequest { instance_id: uuid::Uuid::new_v4().to_string(), ..register() };
    let e = grpc.register(request(twin)).await.expect_err("a second instance of a live id");
    assert_eq!(e.code(), Code::AlreadyExists);
    assert_eq!(c.api.cancel(&id).await.0, reqwest::StatusCode::OK);
}

#[tokio::test]
async fn a_killed_workers_range_is_mined_by_the_others() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    for id in ["m1", "m2"] {
        c.add_worker_with(id, 1, &[("FAENA_RANDOMX_THREADS", "1")]).await;
    }
    c.wait_workers(2).await;
    let params = json!({"key": "6b696c6c", "blob": "11".repeat(76), "difficulty": 1000, "nonce_count": 600});
    let id = c.api.submit_ok("randomx.mine", params, None).await;
    let mut events = c.api.events(&id).await;
    let m2_working = tokio::time::timeout(WAIT, async {
        while let Some((name, data)) = events.next().await {
            if name == "progress" && data["worker"] == "m2" {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(m2_working, Ok(true), "m2 reported progress on its unit");
    c.worker("m2").kill9().await;
    let mut lost = false;
    let end = tokio::time::timeout(MINE_WAIT, async {
        while let Some((name, data)) = events.next().await {
            lost |= name == "requeued" && data["reason"].as_str().is_some_and(|r| r.contains("unit was lost"));
            if is_final(&name) {
                return name;
            }
        }
        String::new()
    })
    .await;
    assert_eq!(end.as_deref(), Ok("succeeded"));
    assert!(lost, "watchers were told the unit was lost and its range split again");
    let out: MineOutput = serde_json::from_value(c.api.job(&id).await["result"].clone()).expect("output");
    let mut next = 0;
    for r in &out.ranges {
        assert_eq!((u64::from(r.start), r.hashes), (next, r.count), "{:?}", out.ranges);
        next += r.count;
    }
    assert_eq!(next, 600, "the whole range was mined despite the loss");
}

/// A worker told to stop hands its mining unit back at once, however long
/// its drain may last: the range is the master's to split again, and the
/// worker stops instead of mining on (once up to its drain timeout).
#[tokio::test]
async fn a_stopping_worker_hands_its_mining_unit_back_at_once() {
    let mut c = Cluster::start(MasterOpts::default()).await;
    c.add_worker_with("m1", 1, &[("FAENA_RANDOMX_THREADS", "1")]).await;
    c.add_worker_with("m2", 1, &[("FAENA_RANDOMX_THREADS", "1"), ("FAENA_DRAIN_TIMEOUT_MS", "600000")]).await;
    c.wait_workers(2).await;
    // Far more nonces than the test will wait for.
    let params =
        json!({"key": "73746f70", "blob": "22".repeat(76), "difficulty": 1_000_000, "nonce_count": 100_000_000});
    let id = c.api.submit_ok("randomx.mine", params, None).await;
    let units = eventually("m2 mines a unit", || async {
        let (_, list) = c.api.get(&format!("/api/jobs?parent={id}&worker=m2")).await;
        let running = list["jobs"].as_array()?.iter().find(|u| u["state"] == "running")?.clone();
        Some(running["id"].as_str()?.to_owned())
    })
    .await;
    // The store says running once the dispatch commits; the unit reaches
    // m2 just after. Stopped before it arrives, m2 has nothing to hand back.
    c.wait_worker_running("m2", 1.0, "m2 holds the unit").await;
    let status = c.worker("m2").terminate().await;
    assert!(status.success(), "m2 exit: {status:?}");
    assert!(c.worker_log("m2").contains("handing mining units back now"), "{}", c.worker_log("m2"));
    let history = c.api.history(&units).await;
    let handed = history.iter().any(|t| t.to_string().contains("worker m2 is shutting down"));
    assert!(handed, "m2's unit was handed back, not finished: {history:?}");
    assert_eq!(c.api.job(&id).await["state"], "running", "the job goes on with m1");
    assert_eq!(c.api.cancel(&id).await.0, reqwest::StatusCode::OK);
}
