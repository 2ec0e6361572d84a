//! Mining sources Faena does not control, played hostile by servers in the
//! test: a pool that sends a hundred jobs a second with a new seed each, a
//! daemon whose reply never ends, and one whose difficulty of 1 makes every
//! share a block. Each is bounded; the master stays up.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use faena_proto::jobs::encode_hex;
use faena_proto::stratum::{self, Job, LoginResult};
use faena_testkit::monerod::WALLET;
use faena_testkit::{Cluster, MasterOpts, eventually, sample, scrape};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

fn opts(extra: &[(&str, &str)]) -> MasterOpts {
    MasterOpts { extra: extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(), ..Default::default() }
}

fn job(n: u32, seed: u32) -> Job {
    let mut seed_hash = [0u8; 32];
    seed_hash[..4].copy_from_slice(&seed.to_le_bytes());
    Job {
        blob: "07".repeat(76),
        job_id: format!("j{n}"),
        target: "ffffff00".into(),
        algo: Some("rx/0".into()),
        height: Some(u64::from(n)),
        seed_hash: Some(encode_hex(&seed_hash)),
        id: None,
    }
}

async fn source(c: &Cluster, id: &str) -> Value {
    c.api.get(&format!("/api/mining/sources/{id}")).await.1
}

#[tokio::test]
async fn a_pool_flooding_jobs_with_new_seeds_is_paced_and_its_seeds_refused() {
    let c = Cluster::start(opts(&[])).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("stratum+tcp://{}", listener.local_addr().expect("addr"));
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let (go_on, mut phase_two) = tokio::sync::mpsc::channel::<()>(1);
    let pool = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("the master connects");
        let (rd, mut wr) = tcp.into_split();
        let mut lines = BufReader::new(rd).lines();
        let login = lines.next_line().await.expect("read").expect("a login");
        let id = serde_json::from_str::<Value>(&login).expect("JSON")["id"].clone();
        let result = LoginResult { id: "s".into(), job: job(0, 0), extensions: vec![], status: "OK".into() };
        wr.write_all(stratum::response(&id, &result).as_bytes()).await.expect("write");
        // A hundred jobs a second on the same seed, then a new seed with every job.
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(10));
        for n in 1..=300u32 {
            tick.tick().await;
            wr.write_all(stratum::job_notification(&job(n, 0)).as_bytes()).await.expect("write");
            counter.fetch_add(1, Ordering::Relaxed);
        }
        phase_two.recv().await;
        for n in 301..=400u32 {
            tick.tick().await;
            wr.write_all(stratum::job_notification(&job(n, n)).as_bytes()).await.expect("write");
            counter.fetch_add(1, Ordering::Relaxed);
        }
        // Hold the connection until the test ends.
        while lines.next_line().await.ok().flatten().is_some() {}
    });
    let (status, v) = c.api.post("/api/mining/sources", &json!({"kind": "pool", "url": url, "user": "u"})).await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    let started = std::time::Instant::now();
    eventually("300 jobs sent", || async { (sent.load(Ordering::Relaxed) == 300).then_some(()) }).await;
    let secs = started.elapsed().as_secs_f64();
    let paced = source(&c, &id).await["templates"].as_u64().expect("templates");
    assert!((paced as f64) <= secs * 5.0 + 3.0, "at most five templates a second: {paced} in {secs:.1} s");

    go_on.send(()).await.expect("phase two");
    let view = eventually("the new seeds are refused, and the source says why", || async {
        let v = source(&c, &id).await;
        let refused = v["reason"].as_str().is_some_and(|r| r.contains("changed its seed again"));
        (sent.load(Ordering::Relaxed) == 400 && refused).then_some(v)
    })
    .await;
    assert_eq!(view["state"], "mining", "{view}");
    let taken = view["templates"].as_u64().expect("templates") - paced;
    assert!(taken <= 3, "one seed change taken, the rest refused: {taken} templates for 100 new seeds");
    let verifier = c.api.get("/api/mining/verifier").await.1;
    assert!(verifier["keys"].as_array().is_some_and(|k| k.len() <= 1), "one live key: {verifier}");
    pool.abort();
}

#[derive(Clone, Default)]
struct Node {
    submitted: Arc<AtomicUsize>,
    endless: bool,
}

async fn rpc(State(node): State<Node>, body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let req: Value = serde_json::from_slice(&body).unwrap_or_default();
    let method = req["method"].as_str().unwrap_or_default();
    if node.endless {
        // A reply that never ends: 1 MiB chunks for ever.
        let chunk = bytes::Bytes::from(vec![b' '; 1 << 20]);
        let stream = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
        return axum::response::Response::new(Body::from_stream(stream));
    }
    let result = match method {
        "get_info" => json!({"height": 10, "top_block_hash": "aa".repeat(32)}),
        "get_block_template" => json!({
            "blockhashing_blob": "07".repeat(76), "blocktemplate_blob": "07".repeat(120),
            "seed_hash": "11".repeat(32), "difficulty": 1, "height": 10,
        }),
        "submit_block" => {
            node.submitted.fetch_add(1, Ordering::Relaxed);
            json!({"status": "OK"})
        }
        "get_block_header_by_height" => json!({"block_header": {"hash": "bb".repeat(32), "nonce": 0}}),
        _ => json!({}),
    };
    axum::Json(json!({"jsonrpc": "2.0", "id": "0", "result": result})).into_response()
}

async fn fake_node(node: Node) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let app = Router::new().route("/json_rpc", post(rpc)).with_state(node);
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

#[tokio::test]
async fn a_daemon_whose_reply_never_ends_is_cut_off() {
    let c = Cluster::start(opts(&[])).await;
    let url = fake_node(Node { endless: true, ..Node::default() }).await;
    let (status, v) = c.api.post("/api/mining/sources", &json!({"kind": "daemon", "url": url, "wallet": WALLET})).await;
    assert_eq!(status, 201, "{v}");
    let id = v["id"].as_str().expect("id").to_owned();
    let v = eventually("the source says why", || async {
        let v = source(&c, &id).await;
        v["reason"].as_str().is_some_and(|r| r.contains("larger than")).then_some(v)
    })
    .await;
    assert_eq!(v["state"], "error", "{v}");
}

#[tokio::test]
async fn a_daemon_that_makes_every_share_a_block_is_not_flooded() {
    let mut c = Cluster::start(opts(&[("FAENA_WORKER_SHARE_DIFFICULTY", "1"), ("FAENA_DAEMON_POLL_MS", "200")])).await;
    let node = Node::default();
    let url = fake_node(node.clone()).await;
    for w in ["b1", "b2"] {
        c.add_worker_with(w, 1, &[("FAENA_RANDOMX_THREADS", "1")]).await;
    }
    c.wait_workers(2).await;
    let (status, v) = c.api.post("/api/mining/sources", &json!({"kind": "daemon", "url": url, "wallet": WALLET})).await;
    assert_eq!(status, 201, "{v}");
    let started = std::time::Instant::now();
    eventually("blocks are throttled", || async {
        let metrics = scrape(&c.api.url("/metrics")).await;
        let throttled = sample(&metrics, "faena_mining_shares_total{verdict=\"block_throttled\"}").unwrap_or(0.0);
        (throttled >= 20.0).then_some(())
    })
    .await;
    let submitted = node.submitted.load(Ordering::Relaxed) as f64;
    let allowed = 10.0 + started.elapsed().as_secs_f64() + 1.0;
    assert!(submitted <= allowed, "{submitted} blocks submitted in {:?}; at most {allowed}", started.elapsed());
    assert!(submitted >= 1.0, "blocks are still submitted");
}
