//! `faena-ai-bench`: `ai.query` throughput against slots and workers, and
//! what a streamed chunk costs on its way to a watcher.
//!
//! `cargo run --release -p faena-testkit --bin faena-ai-bench -- [delay ms] [seconds per config]`
//! (env `LATENCY_ONLY=1` skips part 1, `GAP_MS` sets the chunk spacing, default 5)
//!
//! 1. Throughput: the local fake Gemini server answers every query after a
//!    fixed delay; for each (workers, AI slots) it runs enough distinct,
//!    uncached queries for a few seconds and prints jobs/s against the ideal
//!    `workers × slots / delay`.
//! 2. Chunk latency: one query streams chunks 5 ms apart, each stamped by
//!    the fake server with its send time; an SSE client of the master notes
//!    when each arrives. The difference is the whole path — fake server →
//!    worker (HTTP, SSE parsing) → gRPC → master → SSE → client — so it
//!    bounds what the master adds per chunk from above.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::time::Instant;

use faena_testkit::api::is_final;
use faena_testkit::{Cluster, FakeAi, MasterOpts, eventually, sample};
use serde_json::json;

async fn succeeded(c: &Cluster) -> u64 {
    sample(&c.api.text("/metrics").await, "faena_jobs_total{state=\"succeeded\"}").unwrap_or(0.0) as u64
}

async fn cluster(fake: &FakeAi, workers: usize, slots: u32) -> Cluster {
    let mut c = Cluster::start(MasterOpts { heartbeat_ms: 2000, ..MasterOpts::default() }).await;
    let (base, slots) = (fake.gemini_base(), slots.to_string());
    for i in 0..workers {
        let openai = fake.openai_base();
        let env = [
            ("GEMINI_BASE_URL", base.as_str()),
            ("GEMINI_API_KEY", "bench"),
            ("OPENAI_BASE_URL", openai.as_str()),
            ("FAENA_AI_SLOTS", slots.as_str()),
        ];
        c.add_worker_with(&format!("ai-{i}"), 1, &env).await;
    }
    c.wait_workers(workers).await;
    c
}

async fn throughput(fake: &FakeAi, workers: usize, slots: u32, delay_ms: u64, secs: u64) {
    let c = cluster(fake, workers, slots).await;
    let ideal = workers as f64 * f64::from(slots) / (delay_ms as f64 / 1000.0);
    let jobs = ((ideal * secs as f64) as usize).max(workers * slots as usize * 2);
    let script = json!({"delay_ms": delay_ms, "chunks": ["ok"]});
    let batch: Vec<_> = (0..jobs)
        .map(|i| {
            json!({"kind": "ai.query", "params": {"prompt": format!("[[fake {script}]] q{workers}-{slots}-{i}"),
                   "provider": "gemini", "cache": false}})
        })
        .collect();
    let before = succeeded(&c).await;
    let started = Instant::now();
    for chunk in batch.chunks(1000) {
        let (status, body) = c.api.post("/api/jobs/batch", &json!({"jobs": chunk})).await;
        assert!(status.is_success(), "{body}");
    }
    let target = before + jobs as u64;
    eventually("all answers", || async { (succeeded(&c).await >= target).then_some(()) }).await;
    let rate = jobs as f64 / started.elapsed().as_secs_f64();
    println!(
        "{workers} worker(s) x {slots:>2} AI slots, {delay_ms} ms answers: {jobs:>5} jobs {rate:>8.1} jobs/s, ideal {ideal:>7.1} -> {:>5.1} %",
        100.0 * rate / ideal
    );
}

async fn chunk_latency(fake: &FakeAi, chunks: usize, provider: &str) {
    let c = cluster(fake, 1, 1).await;
    let pieces: Vec<String> = (0..chunks).map(|i| format!("c{i} ")).collect();
    let gap: u64 = std::env::var("GAP_MS").ok().and_then(|g| g.parse().ok()).unwrap_or(5);
    let script = json!({"chunks": pieces, "gap_ms": gap, "stamp": true});
    let params = json!({"prompt": format!("[[fake {script}]] latency"), "provider": provider, "cache": false});
    // Watch a job submitted behind a blocker, so the watcher is in place before it starts.
    let blocker = c
        .api
        .submit_ok(
            "ai.query",
            json!({"prompt": "[[fake {\"delay_ms\": 500}]] wait", "provider": "gemini", "cache": false}),
            None,
        )
        .await;
    let id = c.api.submit_ok("ai.query", params, None).await;
    let mut events = c.api.events(&id).await;
    let mut latencies = Vec::new();
    while let Some((name, data)) = events.next().await {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as f64;
        if name == "progress" {
            let text = data["data"]["text"].as_str().unwrap_or_default();
            if let Some(sent) = text.split("<t:").nth(1).and_then(|t| t.trim_end_matches('>').parse::<f64>().ok()) {
                latencies.push((now - sent) / 1000.0);
            }
        }
        if is_final(&name) {
            break;
        }
    }
    c.api.wait_final(&blocker).await;
    assert_eq!(latencies.len(), chunks, "every chunk arrived");
    latencies.sort_by(f64::total_cmp);
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "chunk latency ({provider}), fake server -> worker -> master -> SSE client, {chunks} chunks {gap} ms apart: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        p(0.5),
        p(0.9),
        p(0.99),
        p(1.0)
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let delay_ms = args.first().copied().unwrap_or(200);
    let secs = args.get(1).copied().unwrap_or(4);
    let fake = FakeAi::start().await;
    println!("faena-ai-bench: answers after {delay_ms} ms, ~{secs} s per configuration");
    let configs: &[(usize, u32)] =
        if std::env::var("LATENCY_ONLY").is_ok() { &[] } else { &[(1, 1), (1, 4), (1, 16), (2, 16), (2, 64)] };
    for &(workers, slots) in configs {
        throughput(&fake, workers, slots, delay_ms, secs).await;
    }
    chunk_latency(&fake, 400, "gemini").await;
    chunk_latency(&fake, 400, "openai").await;
}
