//! `faena-web-bench`: many concurrent Socket.IO sessions (the real
//! socket.io client, from node), each asking a question and receiving only
//! its own answer, through a real master, two workers and the fake AI server.
//!
//! `cargo run --release -p faena-testkit --bin faena-web-bench -- [sessions]` (default 1000)
//!
//! Prints connect time, the latency of streamed chunks (fake server → the
//! session's socket) and of whole answers, events a session got that were
//! not its own (must be 0), and the master's memory before and after.
#![allow(clippy::expect_used, clippy::panic, clippy::unwrap_used)]

use std::path::PathBuf;

use faena_testkit::{Cluster, FakeAi, MasterOpts};

/// Resident and peak memory of a process, in MiB, from /proc.
fn memory_mib(pid: i32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[tokio::main]
async fn main() {
    let sessions: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1000);
    let fake = FakeAi::start().await;
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repo").join("web");
    let opts = MasterOpts {
        extra: vec![
            ("FAENA_WEB_DIR".into(), web.display().to_string()),
            // Every simulated browser comes from 127.0.0.1: lift the per-address limits.
            ("FAENA_WEB_SESSIONS_PER_ADDRESS".into(), (sessions * 2).to_string()),
            ("FAENA_WEB_ASKS_PER_MINUTE".into(), (sessions * 100).to_string()),
        ],
        heartbeat_ms: 2000,
        ..MasterOpts::default()
    };
    let mut c = Cluster::start(opts).await;
    let base = fake.gemini_base();
    for id in ["w1", "w2"] {
        let env = [("GEMINI_BASE_URL", base.as_str()), ("GEMINI_API_KEY", "bench"), ("FAENA_AI_SLOTS", "256")];
        c.add_worker_with(id, 1, &env).await;
    }
    c.wait_workers(2).await;
    let pid = c.master().pid();
    let before = memory_mib(pid);
    let out = tokio::process::Command::new("node")
        .arg(web.join("tests/sessions-bench.mjs"))
        .arg(format!("http://{}", c.addrs.http))
        .arg(sessions.to_string())
        .output()
        .await
        .expect("node runs (scripts install it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let after = memory_mib(pid);
    let r: serde_json::Value = serde_json::from_str(stdout.trim()).expect("measurements");
    println!("faena-web-bench: {sessions} concurrent Socket.IO sessions, one question each, 2 workers");
    println!(
        "connect: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r["connect_ms"]["p50"].as_f64().unwrap_or(0.0),
        r["connect_ms"]["p99"].as_f64().unwrap_or(0.0),
        r["connect_ms"]["max"].as_f64().unwrap_or(0.0)
    );
    println!(
        "streamed chunk, fake server -> session socket: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        r["chunk_ms"]["p50"].as_f64().unwrap_or(0.0),
        r["chunk_ms"]["p99"].as_f64().unwrap_or(0.0),
        r["chunk_ms"]["max"].as_f64().unwrap_or(0.0)
    );
    println!(
        "whole answer (ask -> done): p50 {:.1} ms, p99 {:.1} ms; all {} answered in {:.2} s",
        r["answer_ms"]["p50"].as_f64().unwrap_or(0.0),
        r["answer_ms"]["p99"].as_f64().unwrap_or(0.0),
        sessions,
        r["all_answered_s"].as_f64().unwrap_or(0.0)
    );
    println!("events a session got for another session's job: {}", r["foreign_events"]);
    println!("master memory: {:.1} MiB resident before, {:.1} MiB after ({:.1} MiB peak)", before.0, after.0, after.1);
}
