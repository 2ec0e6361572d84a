//! Mining with the real world: a real `monerod` (regtest, offline, fixed
//! difficulty) as a daemon source mined by real workers, whose blocks the
//! node accepts and whose coinbases pay the configured wallet; the Stratum
//! server spoken to exactly as XMRig speaks; and a pool source against a
//! second master's Stratum server, over TLS.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use faena_proto::grpc::{self as pb, master_client::MasterClient};
use faena_proto::ids::WorkerId;
use faena_proto::jobs::decode_hex;
use faena_proto::jobs::encode_hex;
use faena_proto::mine::{MineParams, target_for_difficulty};
use faena_proto::mqtt::{Control, Payload, WorkUnit};
use faena_proto::topics::Topics;
use faena_randomx::mine::meets;
use faena_testkit::monerod::{Monerod, WALLET, Wallet};
use faena_testkit::sim::{lease, register_request, request, request_in};
use faena_testkit::stratum::hashes_at;
use faena_testkit::stratum::{Miner, mine_async};
use faena_testkit::tls::TlsFront;
use faena_testkit::{
    Cluster, Listener, MasterOpts, WAIT, embedded_login, eventually, eventually_within, free_port, sample, scrape,
};
use serde_json::{Value, json};
use tonic::transport::Channel;

fn opts(extra: &[(&str, &str)]) -> MasterOpts {
    MasterOpts { extra: extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), ..Default::default() }
}

async fn add_source(c: &Cluster, body: Value) -> String {
    let (status, v) = c.api.post("/api/mining/sources", &body).await;
    assert_eq!(status, 201, "{v}");
    assert!(v["shares"].is_object() && v["blocks"].is_array(), "{v}");
    v["id"].as_str().expect("id").to_owned()
}

async fn source(c: &Cluster, id: &str) -> Value {
    c.api.get(&format!("/api/mining/sources/{id}")).await.1
}

fn accepted(v: &Value) -> Vec<Value> {
    v["blocks"].as_array().cloned().unwrap_or_default().into_iter().filter(|b| b["accepted"] == true).collect()
}

async fn participant(c: &Cluster, name: &str) -> Option<Value> {
    let all = c.api.get("/api/mining/participants").await.1;
    all["participants"].as_array()?.iter().find(|p| p["name"] == name).cloned()
}

#[tokio::test]
async fn a_daemon_source_mined_by_two_workers_finds_blocks_the_node_accepts() {
    // A fixed share difficulty: after the restart below, the workers' speed
    // is not known again until they report it, and the size a share would
    // get meanwhile (the Stratum start difficulty) takes light-mode workers
    // minutes — a race with the test's wait, not what it checks.
    let mut c = Cluster::start(opts(&[("FAENA_DAEMON_POLL_MS", "200"), ("FAENA_WORKER_SHARE_DIFFICULTY", "25")])).await;
    // A block is 100 hashes on average; two light-mode threads beside the
    // other suites make some 10 a second, and the time for three blocks
    // has a long tail (once 55 s for two at 200), so their wait is longer
    // than an event's.
    let node = Monerod::start(c.dir.path(), 100).await;
    let wallet = Wallet::create(c.dir.path(), &node).await;
    for id in ["d1", "d2"] {
        c.add_worker_with(id, 1, &[("FAENA_RANDOMX_THREADS", "1")]).await;
    }
    c.wait_workers(2).await;
    for bad in [
        json!({"kind": "daemon", "url": "ftp://node", "wallet": wallet.address}),
        json!({"kind": "daemon", "url": node.url, "wallet": "not-an-address"}),
        json!({"kind": "pool", "url": "http://pool:3333", "user": "x"}),
        json!({"kind": "solo", "url": node.url}),
    ] {
        let (status, v) = c.api.post("/api/mining/sources", &bad).await;
        assert_eq!(status, 400, "{bad} → {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    let start = node.height().await;
    let id = add_source(&c, json!({"kind": "daemon", "url": node.url, "wallet": wallet.address})).await;

    let view = eventually_within("three blocks accepted", 3 * WAIT, || async {
        let v = source(&c, &id).await;
        (accepted(&v).len() >= 3).then_some(v)
    })
    .await;
    assert_eq!(view["kind"], "daemon");
    let blocks = accepted(&view);
    for b in &blocks {
        let height = b["height"].as_u64().expect("height");
        let header = node.header(height).await;
        assert_eq!(header["hash"], b["hash"], "the node's block at {height} is the one Faena reported");
        assert!(["d1", "d2"].contains(&b["participant"].as_str().unwrap_or_default()), "{b}");
    }
    assert!(node.height().await >= start + blocks.len() as u64, "the chain grew by Faena's blocks");
    let paid = wallet.coinbase_heights().await;
    for b in &blocks {
        assert!(paid.contains(&b["height"].as_u64().unwrap()), "block {b} pays the configured wallet ({paid:?})");
    }
    for w in ["d1", "d2"] {
        let p = eventually(&format!("{w} has verified shares"), || async {
            participant(&c, w).await.filter(|p| p["shares"]["valid"].as_u64() > Some(0))
        })
        .await;
        assert_eq!(p["kind"], "worker");
        assert_eq!(p["source"], id.as_str());
        assert!(p["hashrate"]["1m"].as_f64() > Some(0.0), "{p}");
    }

    // A block found elsewhere: the template moves to the new tip at once
    // and the units mining the old one are retired (their late shares: the
    // next test).
    let before = source(&c, &id).await;
    node.generate(1).await;
    let tip = node.height().await;
    eventually("the source mines on top of the block found elsewhere", || async {
        let v = source(&c, &id).await;
        let moved = v["height"].as_u64() >= Some(tip) && v["templates"].as_u64() > before["templates"].as_u64();
        (moved && v["retired_units"].as_u64() > before["retired_units"].as_u64()).then_some(())
    })
    .await;

    // Durable: after a restart the source is back, with its blocks, and
    // mines on (its workers' shares are verified and counted again).
    c.master().terminate().await;
    c.restart_master().await;
    let after = source(&c, &id).await;
    assert!(accepted(&after).len() >= 3, "the blocks survive the restart: {after}");
    let valid = after["shares"]["valid"].as_u64().unwrap_or(0);
    eventually("the source resumes after a restart", || async {
        let v = source(&c, &id).await;
        (v["state"] == "mining" && v["shares"]["valid"].as_u64() > Some(valid)).then_some(())
    })
    .await;
    let p = participant(&c, "d1").await.expect("tallies survive the restart");
    assert!(p["shares"]["valid"].as_u64() > Some(0), "{p}");

    let (status, _) = c.api.get("/api/mining/sources").await;
    assert_eq!(status, 200);
    let del =
        faena_testkit::http().delete(c.api.url(&format!("/api/mining/sources/{id}"))).send().await.expect("delete");
    assert_eq!(del.status(), 204);
    assert_eq!(c.api.get(&format!("/api/mining/sources/{id}")).await.0, 404);
}

#[tokio::test]
async fn the_stratum_server_speaks_xmrigs_protocol_and_polices_its_miners() {
    let c = Cluster::start(opts(&[
        ("FAENA_STRATUM_ADDR", "127.0.0.1:0"),
        ("FAENA_STRATUM_PASSWORD", "let-me-mine"),
        ("FAENA_STRATUM_DIFFICULTY", "1"),
        ("FAENA_STRATUM_MIN_DIFFICULTY", "1"),
        // Vardiff aims at a share a minute, so the dozen shares below are
        // far faster however slowly a loaded machine verifies and commits
        // them (aiming at one a second, it took shares under 0.67 s apart).
        ("FAENA_SHARE_INTERVAL_MS", "60000"),
        ("FAENA_STRATUM_INVALID_LIMIT", "4"),
        ("FAENA_STALE_GRACE_MS", "120000"),
        ("FAENA_DAEMON_POLL_MS", "200"),
        // The whole verification budget for this one address: the dozen
        // quick shares below would otherwise outrun a quarter of what a
        // slow machine measures (the budgets have tests of their own).
        ("FAENA_VERIFY_BUDGET", "1"),
        ("FAENA_STRATUM_ADDRESS_BUDGET", "1"),
        // Only the block found elsewhere moves the template (a slow machine
        // would otherwise see the minute's refresh expire the login job).
        ("FAENA_TEMPLATE_REFRESH_SECS", "3600"),
    ]))
    .await;
    // monerod itself hashes what `generateblocks` makes (light mode, tens of
    // hashes a second): a low network difficulty keeps that quick.
    let network = 200;
    let node = Monerod::start(c.dir.path(), network).await;
    let stratum = c.addrs.stratum.clone().expect("the Stratum server listens");
    let id = add_source(&c, json!({"kind": "daemon", "url": node.url, "wallet": WALLET})).await;
    eventually("the source has work", || async { (source(&c, &id).await["state"] == "mining").then_some(()) }).await;

    // Before login, and with the wrong password: refused.
    let mut m = Miner::connect(&stratum).await;
    let early = m.call("submit", json!({"id": "x", "job_id": "1", "nonce": "00000000", "result": "00"})).await;
    assert!(early.and_then(|r| r.error).is_some_and(|e| e.message.starts_with("Unauthenticated")));
    let mut m = Miner::connect(&stratum).await;
    assert!(m.login("rig-a", "wrong").await.is_err_and(|e| e.starts_with("Unauthenticated")));

    let mut a = Miner::connect(&stratum).await;
    a.login("rig-a", "let-me-mine").await.expect("login");
    for ext in ["algo", "nicehash", "keepalive"] {
        assert!(a.extensions.iter().any(|e| e == ext), "{:?}", a.extensions);
    }
    let job = a.job.clone().expect("a job at login");
    assert_eq!(job.algo.as_deref(), Some("rx/0"));
    assert!(job.height.is_some() && job.seed_hash.is_some());
    let slot_a = decode_hex(&job.blob).unwrap()[42];
    let mut b = Miner::connect(&stratum).await;
    b.login("rig-b", "let-me-mine").await.expect("login");
    let slot_b = decode_hex(&b.job.clone().unwrap().blob).unwrap()[42];
    assert!(slot_a != 0 && slot_b != 0 && slot_a != slot_b, "disjoint slices: {slot_a} {slot_b}");

    let ka = a.keepalive().await.expect("answer");
    assert_eq!(ka.result["status"], "KEEPALIVED");
    a.send_raw("this is not json\n").await;
    let err = a.answer(0).await.and_then(|r| r.error).expect("an error");
    assert!(err.message.contains("Malformed"), "{}", err.message);
    let unknown = a.call("mining.subscribe", json!([])).await.and_then(|r| r.error).expect("an error");
    assert!(unknown.message.contains("Unsupported method"), "{}", unknown.message);
    assert_eq!(a.keepalive().await.expect("still connected").result["status"], "KEEPALIVED");

    // Shares, leaving out any that would be a block (and move the template).
    let block = target_for_difficulty(network);
    let found: Vec<_> = mine_async(&job, 16).await.into_iter().filter(|f| !meets(&f.hash, block)).take(12).collect();
    assert_eq!(found.len(), 12);
    assert_eq!(a.submit(&job.job_id, found[0].nonce, &found[0].hash).await, Ok("OK".into()));
    assert_eq!(a.submit(&job.job_id, found[0].nonce, &found[0].hash).await, Err("Duplicate share".into()));
    let mut forged = found[1].hash;
    forged[0] ^= 0xff;
    let e = a.submit(&job.job_id, found[1].nonce, &forged).await.expect_err("forged");
    assert!(e.contains("Invalid share"), "{e}");
    let outside = found[1].nonce ^ 0x4000_0000;
    assert_eq!(a.submit(&job.job_id, outside, &found[1].hash).await, Err("Nonce outside your slice".into()));
    assert_eq!(a.submit("no-such-job", found[1].nonce, &found[1].hash).await, Err("Invalid job id".into()));

    // Vardiff: shares far faster than one a minute move the target up.
    for f in &found[2..10] {
        assert_eq!(a.submit(&job.job_id, f.nonce, &f.hash).await, Ok("OK".into()));
    }
    let harder = loop {
        let j = a.next_job().await;
        if j.target != job.target {
            break j;
        }
    };
    assert!(
        faena_proto::mine::parse_target(&harder.target).unwrap()
            < faena_proto::mine::parse_target(&job.target).unwrap()
    );

    // A block found elsewhere: a share for the old job is taken as stale.
    node.generate(1).await;
    let new_height = node.height().await;
    loop {
        let j = a.next_job().await;
        if j.height >= Some(new_height) {
            break;
        }
    }
    assert_eq!(a.submit(&job.job_id, found[10].nonce, &found[10].hash).await, Ok("OK".into()));
    let p = eventually("rig-a's tally", || async { participant(&c, "rig-a").await }).await;
    assert_eq!(p["kind"], "stratum");
    assert_eq!(p["shares"]["valid"], 9, "{p}");
    assert_eq!(p["shares"]["stale"], 1, "{p}");
    assert_eq!(p["shares"]["invalid"], 3, "{p}");
    assert!(source(&c, &id).await["miners"].as_u64() >= Some(2));
    let metrics = scrape(&c.api.url("/metrics")).await;
    for (series, least) in [
        ("faena_mining_shares_total{verdict=\"valid\"}", 9.0),
        ("faena_mining_shares_total{verdict=\"stale\"}", 1.0),
        ("faena_mining_shares_total{verdict=\"invalid\"}", 3.0),
        ("faena_stratum_connections", 2.0),
    ] {
        assert!(sample(&metrics, series).is_some_and(|v| v >= least), "{series} ≥ {least} in\n{metrics}");
    }

    // A line past the limit closes the connection.
    let mut long = Miner::connect(&stratum).await;
    long.send_raw(&format!("{}\n", "x".repeat(20_000))).await;
    assert!(long.read().await.and_then(|r| r.error).is_some_and(|e| e.message.contains("Line too long")));
    assert!(long.read().await.is_none(), "closed");

    // Past the invalid-share limit the address is banned.
    let mut bad = Miner::connect(&stratum).await;
    bad.login("rig-bad", "let-me-mine").await.expect("login");
    let bj = bad.job.clone().unwrap();
    let top = u32::from(decode_hex(&bj.blob).unwrap()[42]) << 24;
    let mut last = Ok(String::new());
    for n in 0..5u32 {
        last = bad.submit(&bj.job_id, top | n, &[0x11; 32]).await;
    }
    assert!(last.is_err_and(|e| e.starts_with("IP Address currently banned")));
    let mut again = Miner::connect(&stratum).await;
    assert!(again.login("rig-bad", "let-me-mine").await.is_err_and(|e| e.starts_with("IP Address currently banned")));
}

#[tokio::test]
async fn a_pool_source_sends_only_verified_shares_upstream_and_fails_over() {
    // The pool: a second master mining a node, with its Stratum server on a fixed port.
    let pool_port = free_port();
    let pool_addr = format!("127.0.0.1:{pool_port}");
    let mut pool = Cluster::start(opts(&[
        ("FAENA_STRATUM_ADDR", &pool_addr),
        ("FAENA_STRATUM_DIFFICULTY", "40"),
        ("FAENA_STRATUM_MIN_DIFFICULTY", "10"),
        ("FAENA_DAEMON_POLL_MS", "200"),
    ]))
    .await;
    let node = Monerod::start(pool.dir.path(), 100_000).await;
    let up = add_source(&pool, json!({"kind": "daemon", "url": node.url, "wallet": WALLET})).await;
    eventually("the pool has work", || async { (source(&pool, &up).await["state"] == "mining").then_some(()) }).await;

    // The pool's TLS port (a terminator with a private CA, which Faena is
    // told to trust), and an impostor whose certificate no one trusts.
    let front = TlsFront::start(pool.dir.path(), &pool_addr).await;
    let impostor_dir = tempfile::tempdir().expect("dir");
    let impostor = TlsFront::start(impostor_dir.path(), &pool_addr).await;

    // Faena behind it: the first URL is dead, the second is the pool over TLS.
    let ca = front.ca_file.display().to_string();
    let mut c = Cluster::start(opts(&[("SSL_CERT_FILE", &ca)])).await;
    c.add_worker_with("p1", 1, &[("FAENA_RANDOMX_THREADS", "1")]).await;
    c.wait_workers(1).await;
    let bad =
        add_source(&c, json!({"kind": "pool", "url": format!("stratum+ssl://{}", impostor.addr), "user": "u"})).await;
    let refused = eventually("a certificate no one vouches for is refused", || async {
        let v = source(&c, &bad).await;
        (v["state"] == "error").then_some(v)
    })
    .await;
    assert!(refused["reason"].as_str().is_some_and(|r| r.contains("TLS") && r.contains("certificate")), "{refused}");
    let del = faena_testkit::http().delete(c.api.url(&format!("/api/mining/sources/{bad}"))).send().await;
    assert_eq!(del.expect("delete").status(), 204);
    let dead = format!("stratum+tcp://127.0.0.1:{}", free_port());
    let urls = json!([dead, format!("stratum+ssl://{}", front.addr)]);
    let id = add_source(&c, json!({"kind": "pool", "url": urls, "user": "faena-behind", "pass": "x"})).await;
    let v = eventually("shares accepted upstream", || async {
        let v = source(&c, &id).await;
        (v["shares"]["upstream_accepted"].as_u64() >= Some(3)).then_some(v)
    })
    .await;
    assert_eq!(v["kind"], "pool");
    assert_eq!(v["shares"]["upstream_rejected"], 0, "{v}");
    let seen = eventually("the pool counts Faena's shares", || async {
        participant(&pool, "faena-behind").await.filter(|p| p["shares"]["valid"].as_u64() >= Some(3))
    })
    .await;
    assert_eq!(seen["shares"]["invalid"], 0, "only verified shares went upstream: {seen}");
    assert_eq!(seen["kind"], "stratum");

    // The pool goes away and comes back: Faena reconnects and goes on.
    let before = v["shares"]["upstream_accepted"].as_u64().unwrap();
    pool.master().terminate().await;
    eventually("the pool is seen gone", || async { (source(&c, &id).await["state"] != "mining").then_some(()) }).await;
    pool.restart_master().await;
    eventually("shares flow again after the reconnect", || async {
        let v = source(&c, &id).await;
        (v["state"] == "mining" && v["shares"]["upstream_accepted"].as_u64() > Some(before + 1)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_workers_shares_sent_after_its_unit_was_retired_count_as_stale() {
    // A worker spoken by hand, so the order is certain: it holds a unit,
    // the template moves on (the node takes a block from elsewhere), the
    // unit is cancelled, and only then does its report arrive.
    let c = Cluster::start(opts(&[
        ("FAENA_WORKER_SHARE_DIFFICULTY", "1"),
        ("FAENA_DAEMON_POLL_MS", "200"),
        ("FAENA_STALE_GRACE_MS", "120000"),
        ("FAENA_TEMPLATE_REFRESH_SECS", "3600"),
    ]))
    .await;
    let node = Monerod::start(c.dir.path(), 100).await;
    let me = WorkerId::parse("by-hand").expect("id");
    let login = Some(embedded_login("by-hand"));
    let mut mqtt = Listener::start_with(&c.addrs.mqtt, "by-hand", "faena/workers/by-hand/#", login).await;
    let channel = Channel::from_shared(format!("http://{}", c.addrs.grpc)).expect("url").connect().await.expect("gRPC");
    let mut grpc = MasterClient::new(channel);
    let instance = uuid::Uuid::new_v4().to_string();
    let register = register_request(me.as_str(), &instance, "randomx.mine");
    let session = grpc.register(request(register)).await.expect("registers").into_inner().session;
    let id = add_source(&c, json!({"kind": "daemon", "url": node.url, "wallet": WALLET})).await;

    let (jobs, control) = (Topics::default().worker_jobs(&me), Topics::default().worker_control(&me));
    let unit = loop {
        let (topic, payload) = tokio::time::timeout(WAIT, mqtt.messages.recv()).await.expect("a unit").expect("open");
        if topic == jobs {
            break WorkUnit::decode(&payload).expect("a work unit");
        }
    };
    let params: MineParams = serde_json::from_value(unit.params.clone()).expect("mining params");
    let work = params.work().expect("a unit's work");
    // Its lease stays live through heartbeats until the cancel.
    let held = vec![lease(&unit)];
    let hb = pb::HeartbeatRequest { worker_id: me.to_string(), instance_id: instance, running: held, hashrate: 1.0 };
    let beat = {
        let mut grpc = grpc.clone();
        let session = session.clone();
        let mut every = tokio::time::interval(std::time::Duration::from_millis(300));
        tokio::spawn(async move {
            loop {
                every.tick().await;
                let _ = grpc.heartbeat(request_in(hb.clone(), &session)).await;
            }
        })
    };
    let share = |nonce: u32, hash: [u8; 32]| json!({"nonce": nonce, "hash": encode_hex(&hash)});
    let report = |shares: Vec<Value>| pb::ProgressRequest {
        worker_id: me.to_string(),
        lease: Some(lease(&unit)),
        progress_json: json!({"hashes": 2, "hashrate": 1.0, "shares": shares}).to_string(),
    };
    // Two nonces whose hashes are no block at the node's difficulty (100):
    // a share that was one would move the chain itself, and the template
    // the late share belongs to would be two behind, not just replaced.
    let candidates: Vec<u32> = (work.start..work.start + 16).collect();
    let hashes = hashes_at(&params.blob, &params.key, &candidates).await;
    let block_target = target_for_difficulty(100);
    let mut plain = candidates.iter().zip(&hashes).filter(|(_, h)| !meets(h, block_target));
    let ((&first, &h1), (&second, &h2)) = (plain.next().expect("a nonce"), plain.next().expect("another"));
    grpc.report_progress(request_in(report(vec![share(first, h1)]), &session)).await.expect("a live unit's progress");
    eventually("the live share counts", || async {
        participant(&c, "by-hand").await.filter(|p| p["shares"]["valid"] == 1)
    })
    .await;

    node.generate(1).await;
    loop {
        let (topic, payload) = tokio::time::timeout(WAIT, mqtt.messages.recv()).await.expect("a cancel").expect("open");
        if topic == control
            && matches!(Control::decode(&payload), Ok(Control::Cancel { job_id, .. }) if job_id == unit.job_id)
        {
            break;
        }
    }
    // Found before the cancel arrived, sent after: refused as a unit (it
    // is over), counted as a stale share — once, however often it is sent.
    for _ in 0..2 {
        let e = grpc
            .report_progress(request_in(report(vec![share(second, h2)]), &session))
            .await
            .expect_err("the unit is retired");
        assert!(e.message().contains("retired"), "{e:?}");
    }
    let p = eventually("the late share counts as stale", || async {
        participant(&c, "by-hand").await.filter(|p| p["shares"]["stale"].as_u64() > Some(0))
    })
    .await;
    assert_eq!((p["shares"]["valid"].as_u64(), p["shares"]["stale"].as_u64()), (Some(1), Some(1)), "{p}");
    assert_eq!(source(&c, &id).await["shares"]["stale"], 1);
    beat.abort();
}

#[tokio::test]
async fn the_stratum_server_limits_what_one_connection_may_cost() {
    let c = Cluster::start(opts(&[
        ("FAENA_STRATUM_ADDR", "127.0.0.1:0"),
        ("FAENA_STRATUM_DIFFICULTY", "1"),
        ("FAENA_STRATUM_MIN_DIFFICULTY", "1"),
        ("FAENA_STRATUM_RATE", "1"),
        ("FAENA_STRATUM_LOGIN_SECS", "1"),
        ("FAENA_STRATUM_IDLE_SECS", "2"),
        // 1 % of the verifier's capacity: the floor, one share a second.
        ("FAENA_VERIFY_BUDGET", "0.01"),
        ("FAENA_STRATUM_INVALID_LIMIT", "1000"),
        ("FAENA_TEMPLATE_REFRESH_SECS", "3600"),
    ]))
    .await;
    let node = Monerod::start(c.dir.path(), 100).await;
    let stratum = c.addrs.stratum.clone().expect("the Stratum server listens");
    let id = add_source(&c, json!({"kind": "daemon", "url": node.url, "wallet": WALLET})).await;
    eventually("the source has work", || async { (source(&c, &id).await["state"] == "mining").then_some(()) }).await;

    // Connected and never logs in: dropped after the login time, unanswered.
    let mut quiet = Miner::connect(&stratum).await;
    assert!(quiet.read().await.is_none(), "closed without a word");
    // Logged in, then silent: dropped after the idle time.
    let mut idle = Miner::connect(&stratum).await;
    idle.login("rig-idle", "x").await.expect("login");
    while let Some(msg) = idle.read().await {
        assert_eq!(msg.method.as_deref(), Some("job"), "only jobs until it is dropped: {msg:?}");
    }

    // Past the verification budget a share is answered at once, not queued.
    // The budget's bucket holds 2 s of it; more shares than that, sent at
    // once from as many addresses (each its own quota and request rate),
    // overdraw it however fast the verifier hashes the ones let through.
    let (_, verifier) = c.api.get("/api/mining/verifier").await;
    let budget = verifier["budget"].as_f64().expect("a budget");
    let rigs = (2.0 * budget).ceil() + 2.0;
    assert!(rigs < 100.0, "the budget is the floor, not {budget}");
    let rigs = rigs as u8;
    let mut busy = Vec::new();
    for n in 0..rigs {
        let mut m = Miner::connect_from(&stratum, [127, 0, 0, 10 + n].into()).await;
        m.login(&format!("rig-busy-{n}"), "x").await.expect("login");
        busy.push(m);
    }
    let answers = futures::future::join_all(busy.iter_mut().map(|m| async move {
        let job = m.job.clone().expect("a job");
        let top = u32::from(decode_hex(&job.blob).expect("blob")[42]) << 24;
        m.submit(&job.job_id, top, &[0x11; 32]).await
    }))
    .await;
    assert!(answers.iter().any(|a| a.as_ref().is_err_and(|e| e.starts_with("Server busy"))), "{answers:?}");

    // Requests past the rate (1 a second, bursts of 4) are refused, and a
    // connection that keeps on is cut off.
    let mut flood = Miner::connect(&stratum).await;
    flood.login("rig-flood", "x").await.expect("login");
    let (mut refused, mut closed) = (0, false);
    for _ in 0..40 {
        match flood.keepalive().await {
            Some(m) if m.error.as_ref().is_some_and(|e| e.message.starts_with("Too many requests")) => refused += 1,
            Some(m) => assert_eq!(m.result["status"], "KEEPALIVED", "{m:?}"),
            None => {
                closed = true;
                break;
            }
        }
    }
    assert!(refused > 0 && closed, "refused {refused} times, closed: {closed}");
    let metrics = scrape(&c.api.url("/metrics")).await;
    let over = sample(&metrics, "faena_mining_shares_total{verdict=\"over_budget\"}");
    assert!(over >= Some(1.0), "over-budget shares are counted: {over:?}");
}
